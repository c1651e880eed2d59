"""Build script. The package metadata lives in pyproject.toml; this file adds the optional
native extension of the `cpp` backend, ``fastmlp._C`` (csrc/), when it can be built.

- Compiler flags are probed (``has_flag``): ``-O3``, ``-fno-math-errno`` (GCC does not
  vectorise a loop calling ``sqrt`` without it), ``-fno-trapping-math`` (lets GCC if-convert
  the branch-free math), ``-fvisibility=hidden``; ``-march=native`` only with
  ``FASTMLP_NATIVE=1`` (a wheel built with it would not run on an older CPU).
- GEMMs on OpenBLAS from the ``scipy-openblas32`` wheel (a build requirement). The extension
  is linked without an rpath (an absolute one would point into pip's deleted build-isolation
  folder; ``$ORIGIN`` fails for editable installs); the library is copied beside the extension
  and ``fastmlp/backends/cpp_backend.py`` loads it with ``ctypes.CDLL`` before importing it.
- The extension is optional: if it fails to build, the package still installs and
  ``fastmlp.backends()`` says why ``cpp`` is unavailable. ``FASTMLP_STRICT_BUILD=1`` (CI) makes
  a failed build fatal. ``FASTMLP_SANITIZE=1`` builds with AddressSanitizer and UBSan (CI runs
  the op tests under it, see .ci/steps/cpp.sh).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip() in ("1", "true", "yes", "on")


STRICT = _flag("FASTMLP_STRICT_BUILD")
NATIVE = _flag("FASTMLP_NATIVE")
SANITIZE = _flag("FASTMLP_SANITIZE")


def _say(msg: str) -> None:
    print(f"fastmlp setup: {msg}", file=sys.stderr)


def _cpp_extensions():
    """``fastmlp._C``, ``fastmlp._C_avx2`` and ``fastmlp._C_avx512`` (the same source built
    with ``-mavx2 -mfma``, and with AVX-512 at 512-bit vectors; the backend imports the widest
    this CPU runs), or [] (with the reason printed) when the build requirements are missing and
    the build is not strict."""
    try:
        import scipy_openblas32
        from pybind11.setup_helpers import Pybind11Extension
    except ImportError as exc:
        if STRICT:
            raise
        _say(f"not building the cpp backend ({exc}); install pybind11 and scipy-openblas32")
        return []
    exts = []
    variants = [("fastmlp._C", [], [])]
    if not SANITIZE:  # the sanitizer run checks the portable build only
        variants.append(("fastmlp._C_avx2", [("FASTMLP_MODULE", "_C_avx2")], ["-mavx2", "-mfma"]))
        # GCC's generic tuning keeps 256-bit vectors even with AVX-512: ask for 512 (1.3-1.7x on
        # the transcendental activations over the AVX2 build, one core of a Zen 4 EPYC)
        avx512 = ["-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl",
                  "-mprefer-vector-width=512"]
        variants.append(("fastmlp._C_avx512", [("FASTMLP_MODULE", "_C_avx512")], avx512))
    for name, macros, isa in variants:
        ext = Pybind11Extension(
            name,
            ["csrc/bindings.cpp"],
            include_dirs=["csrc", scipy_openblas32.get_include_dir()],
            library_dirs=[scipy_openblas32.get_lib_dir()],
            libraries=[scipy_openblas32.get_library()],
            define_macros=macros,
            cxx_std=17,
            depends=sorted(str(p.relative_to(HERE)) for p in (HERE / "csrc").glob("*.h")),
        )
        ext._fastmlp_openblas = Path(scipy_openblas32.get_lib_dir())  # type: ignore[attr-defined]
        ext._fastmlp_isa = isa  # type: ignore[attr-defined]
        exts.append(ext)
    return exts


def _build_ext_class():
    from setuptools.command.build_ext import build_ext

    class BuildExt(build_ext):
        """Probe the flags, build, copy libscipy_openblas beside the extension; optional
        unless FASTMLP_STRICT_BUILD=1."""

        def build_extensions(self):
            from pybind11.setup_helpers import has_flag

            wanted = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fvisibility=hidden"]
            if NATIVE:
                wanted.append("-march=native")
            if SANITIZE:  # -O1: what ASan recommends, and -O3 with sanitizers compiles for minutes
                wanted = ["-O1", "-fno-math-errno", "-fno-trapping-math", "-fsanitize=address,undefined",
                          "-fno-omit-frame-pointer", "-g"]
            flags = [f for f in wanted if has_flag(self.compiler, f)]
            _say("compile flags " + " ".join(flags))
            kept = []
            for ext in self.extensions:
                isa = getattr(ext, "_fastmlp_isa", [])
                if isa and not all(has_flag(self.compiler, f) for f in isa):
                    _say(f"not building {ext.name}: the compiler lacks {' '.join(isa)}")
                    continue
                ext.extra_compile_args += flags + isa
                if SANITIZE:
                    ext.extra_link_args += ["-fsanitize=address,undefined"]
                kept.append(ext)
            self.extensions[:] = kept
            super().build_extensions()

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as exc:  # compiler missing or failing
                if STRICT:
                    raise
                _say(f"building {ext.name} failed, the cpp backend will be unavailable: {exc}")
                return
            lib_dir = getattr(ext, "_fastmlp_openblas", None)
            if lib_dir is not None:
                target = Path(self.get_ext_fullpath(ext.name)).parent
                for lib in lib_dir.glob("libscipy_openblas*.so*"):
                    shutil.copy2(lib, target / lib.name)

        def copy_extensions_to_source(self):
            # editable installs: the extension is copied into the source tree; the library too
            super().copy_extensions_to_source()
            build_py = self.get_finalized_command("build_py")
            for ext in self.extensions:
                lib_dir = getattr(ext, "_fastmlp_openblas", None)
                package = ext.name.rpartition(".")[0]
                if lib_dir is None or not Path(self.get_ext_fullpath(ext.name)).exists():
                    continue
                target = Path(build_py.get_package_dir(package))
                for lib in lib_dir.glob("libscipy_openblas*.so*"):
                    shutil.copy2(lib, target / lib.name)

        def run(self):
            try:
                super().run()
            except Exception as exc:
                if STRICT:
                    raise
                _say(f"build_ext failed, the cpp backend will be unavailable: {exc}")

    return BuildExt


exts = _cpp_extensions()
if not exts:
    setup()
else:
    setup(ext_modules=exts, cmdclass={"build_ext": _build_ext_class()})
