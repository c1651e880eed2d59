"""Compile gate: the real ``cupy_kernels.cu`` compiled by NVRTC, the compiler CuPy uses, with
the options CuPy itself assembles, for every GPU architecture CUDA 13 supports that we list.

No GPU is needed: CuPy imports without a device, and its NVRTC wrapper and option assembly
(``cupy._core.core.assemble_cupy_compiler_options``) work without one. What CuPy adds at
compile time on a device is replicated from ``cupy/cuda/compiler.py``: ``-ftz=true``,
``-arch=sm_XX`` (CuPy compiles straight to a cubin) and ``--device-as-default-execution-space``.
Every name expression must resolve to a lowered (mangled) name present in the cubin.

Skipped when CuPy or NVRTC is missing, except in CI (``CI=true``) or with
``FASTMLP_REQUIRE_NVRTC=1``, where a missing compiler is a failure (``.ci/steps/cupy.sh``
installs it).
"""

from __future__ import annotations

import os

import pytest

from fastmlp.backends.cupy_backend import KERNEL_SOURCE, NAME_EXPRESSIONS

ARCHS = ("75", "80", "86", "89", "90", "100", "120")
REQUIRED = os.environ.get("FASTMLP_REQUIRE_NVRTC", "") == "1" or os.environ.get("CI", "") == "true"


@pytest.fixture(scope="module")
def nvrtc():
    try:
        from cupy._core import core
        from cupy.cuda import compiler
        from cupy_backends.cuda.libs import nvrtc as lib

        version = lib.getVersion()
    except Exception as exc:  # ImportError, or NVRTC's shared library not found
        if REQUIRED:
            pytest.fail(f"NVRTC through CuPy is required here but unavailable: {exc!r}")
        pytest.skip(f"CuPy/NVRTC unavailable: {exc!r}")
    return core, compiler, lib, version


def cupy_options(core, arch: str) -> tuple[str, ...]:
    """The options cupy.RawModule(code=..., options=()) compiles with on an sm_<arch> device."""
    return core.assemble_cupy_compiler_options(()) + ("-ftz=true", f"-arch=sm_{arch}",
                                                      "--device-as-default-execution-space")


@pytest.mark.parametrize("arch", ARCHS)
def test_kernels_compile_with_nvrtc(nvrtc, arch):
    core, compiler, lib, version = nvrtc
    if int(arch) not in lib.getSupportedArchs():
        pytest.fail(f"NVRTC {version} does not support sm_{arch}")
    prog = compiler._NVRTCProgram(KERNEL_SOURCE.read_text(), KERNEL_SOURCE.name,
                                  name_expressions=list(NAME_EXPRESSIONS), method="cubin")
    try:
        cubin, mapping = prog.compile(cupy_options(core, arch))
    except compiler.CompileException as exc:
        pytest.fail(f"NVRTC {version} failed for sm_{arch}:\n{exc}")
    assert set(mapping) == set(NAME_EXPRESSIONS)
    for expr, lowered in mapping.items():
        assert lowered and lowered.encode() in cubin, f"{expr} -> {lowered!r} not in the sm_{arch} cubin"


def test_compile_errors_are_reported(nvrtc):
    """The gate can fail: a broken kernel is a CompileException naming the error."""
    core, compiler, _, _ = nvrtc
    bad = KERNEL_SOURCE.read_text() + "\ntemplate <typename T> __global__ void broken(T* x) { x[0] = undeclared; }\n"
    prog = compiler._NVRTCProgram(bad, "broken.cu", name_expressions=["broken<float>"], method="cubin")
    with pytest.raises(compiler.CompileException, match="undeclared"):
        prog.compile(cupy_options(core, "75"))
