"""A CPU stand-in for ``cupy.RawModule``: the unchanged ``.cu`` source, compiled by g++ through
``cuda_emu.h``, launched with CuPy's calling convention.

``EmuModule(code=..., name_expressions=[...], path=...)`` compiles the source into a shared
library (cached by content hash) and ``get_function(name_expression)`` returns an
:class:`EmuKernel` called as CuPy's ``kernel(grid, block, args)``. NumPy arrays stand in for
CuPy arrays. Arguments are converted exactly as CuPy converts them (``None`` is a NULL pointer,
a Python ``int`` or ``bool`` is an ``int64``, a Python ``float`` a ``float64``, a NumPy scalar
keeps its type), then checked against the kernel's real parameter types, which the compiled
library reports: a wrong count, a wrong scalar type or a wrong array dtype raises ``TypeError``
before anything runs (CuPy itself cannot check, and a GPU would compute garbage). Stricter than
CuPy on purpose: a non-contiguous array, a read-only array for a non-const pointer, a block of
more than 1024 threads or an empty grid are errors too.

Kernels that call ``__syncthreads`` (directly or through a ``__device__`` helper; found in the
source) run each CUDA thread of a block as a fiber with its own stack, ``__syncthreads`` being a
barrier of the block (see ``cuda_emu_runtime.h`` for why fibers rather than OS threads); the
others run thread after thread.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

__all__ = ["EmuKernel", "EmuModule", "build_library", "kernels_needing_threads"]

HERE = Path(__file__).resolve().parent
HEADERS = ("cuda_emu.h", "cuda_emu_runtime.h")

_SCALARS = {
    "float32": (np.float32, ctypes.c_float),
    "float64": (np.float64, ctypes.c_double),
    "int64": (np.int64, ctypes.c_longlong),
    "int32": (np.int32, ctypes.c_int),
    "uint32": (np.uint32, ctypes.c_uint),
    "bool": (np.bool_, ctypes.c_bool),
}
_KEYWORDS = {"if", "for", "while", "switch", "return", "sizeof", "else", "do"}
_build_lock = threading.Lock()


def _function_bodies(source: str) -> dict[str, str]:
    """Name -> body text of every function defined in ``source`` (all overloads joined)."""
    source = re.sub(r"//[^\n]*|/\*.*?\*/", " ", source, flags=re.S)  # comments out
    bodies: dict[str, str] = {}
    for m in re.finditer(r"\b([A-Za-z_]\w*)\s*\([^;{}]*\)\s*\{", source):
        name = m.group(1)
        if name in _KEYWORDS:
            continue
        depth, i = 0, m.end() - 1
        while i < len(source):
            if source[i] == "{":
                depth += 1
            elif source[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        bodies[name] = bodies.get(name, "") + source[m.end():i]
    return bodies


def kernels_needing_threads(source: str) -> set[str]:
    """Names of the functions that reach ``__syncthreads`` (transitively through helpers)."""
    bodies = _function_bodies(source)
    syncing = {name for name, body in bodies.items() if "__syncthreads" in body}
    changed = True
    while changed:
        changed = False
        for name, body in bodies.items():
            if name not in syncing and any(re.search(rf"\b{re.escape(s)}\s*\(", body) for s in syncing):
                syncing.add(name)
                changed = True
    return syncing


def _base_name(expression: str) -> str:
    return expression.split("<", 1)[0].strip()


def build_library(path: Path, name_expressions: list[str], sanitize: bool = False) -> Path:
    """Compile the kernel source at ``path`` for the CPU; return the shared library's path.

    One wrapper per name expression: ``emu_launch_<i>`` (launch) and ``emu_signature_<i>``
    (parameter types). Cached under the temp directory by a hash of every input."""
    path = Path(path).resolve()
    flags = ["-std=c++17", "-fPIC", "-shared", "-pthread", "-Wall", "-Wno-unused-function"]
    flags += ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"] if sanitize else ["-O2"]
    lines = ['#include "cuda_emu.h"', f'#include "{path}"', '#include "cuda_emu_runtime.h"']
    for i, expr in enumerate(name_expressions):
        lines.append(
            f'extern "C" int emu_launch_{i}(const unsigned* g, const unsigned* b, void** a, int t) '
            f"{{ return emu::launch(&{expr}, g, b, a, t); }}"
        )
        lines.append(
            f'extern "C" const char* emu_signature_{i}() '
            f"{{ static const std::string s = emu::signature(&{expr}); return s.c_str(); }}"
        )
    unit = "\n".join(lines) + "\n"
    digest = hashlib.sha256()
    for part in [unit, path.read_text(), *((HERE / h).read_text() for h in HEADERS), " ".join(flags)]:
        digest.update(part.encode())
    out_dir = Path(tempfile.gettempdir()) / "fastmlp-cuda-emu" / digest.hexdigest()[:20]
    lib = out_dir / "libkernels.so"
    with _build_lock:
        if lib.exists():
            return lib
        out_dir.mkdir(parents=True, exist_ok=True)
        src = out_dir / "unit.cpp"
        src.write_text(unit)
        tmp = out_dir / f"libkernels.{os.getpid()}.so"
        cmd = ["g++", *flags, f"-I{HERE}", str(src), "-o", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"g++ could not compile {path.name} for the CPU:\n{' '.join(cmd)}\n{proc.stderr}")
        os.replace(tmp, lib)
    return lib


def _dim3(value, what: str) -> tuple[int, int, int]:
    dims = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if not 1 <= len(dims) <= 3 or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
        raise TypeError(f"{what} must be an int or a tuple of up to 3 ints, got {value!r}")
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    if min(dims) < 1:
        raise ValueError(f"{what} {value!r}: every dimension must be >= 1 (CUDA rejects an empty launch)")
    return dims  # type: ignore[return-value]


class EmuKernel:
    """One kernel of an :class:`EmuModule`, called like a CuPy ``RawKernel``."""

    def __init__(self, module: EmuModule, expression: str, index: int):
        lib = module._lib
        self.name = expression
        self._launch = getattr(lib, f"emu_launch_{index}")
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                 ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
        sig = getattr(lib, f"emu_signature_{index}")
        sig.restype = ctypes.c_char_p
        text = sig().decode()
        self.params: list[str] = text.split(",") if text else []
        self.threaded = _base_name(expression) in module._threaded
        self.launches = 0

    def _convert(self, i: int, arg, param: str):
        where = f"{self.name} argument {i}"
        if param.startswith("*"):
            const = param.startswith("*const ")
            dtype = np.dtype(param.split()[-1].lstrip("*"))
            if arg is None:
                return ctypes.c_void_p(None)
            if not isinstance(arg, np.ndarray):
                raise TypeError(f"{where}: expected an array of {dtype} (pointer parameter), got {type(arg).__name__}")
            if arg.dtype != dtype:
                raise TypeError(f"{where}: expected an array of {dtype}, got {arg.dtype}")
            if not arg.flags.c_contiguous:
                raise ValueError(f"{where}: the array is not C-contiguous (the kernel indexes it flat)")
            if not const and not arg.flags.writeable:
                raise ValueError(f"{where}: read-only array passed to a non-const pointer")
            return ctypes.c_void_p(arg.ctypes.data if arg.size else None)
        # by value, converted as cupy/cuda/function.pyx::_pointer does
        if arg is None or isinstance(arg, np.ndarray):
            got = "None (a NULL pointer)" if arg is None else "an array"
            raise TypeError(f"{where}: expected a {param} scalar, got {got}")
        if isinstance(arg, np.generic):
            kind = arg.dtype.name
        elif isinstance(arg, int):  # bool included: CuPy tests int first
            kind = "int64"
        elif isinstance(arg, float):
            kind = "float64"
        else:
            raise TypeError(f"{where}: unsupported type {type(arg).__name__}")
        if kind != param:
            raise TypeError(f"{where}: the kernel takes {param}, CuPy would pass {kind} ({arg!r})")
        return _SCALARS[param][1](arg.item() if isinstance(arg, np.generic) else arg)

    def __call__(self, grid, block, args, shared_mem: int = 0, stream=None) -> None:
        g, b = _dim3(grid, "grid"), _dim3(block, "block")
        if b[0] * b[1] * b[2] > 1024:
            raise ValueError(f"block {block!r} has more than 1024 threads")
        if not isinstance(args, tuple):
            raise TypeError(f"{self.name}: args must be a tuple, got {type(args).__name__}")
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments ({', '.join(self.params)}), got {len(args)}")
        values = [self._convert(i, a, p) for i, (a, p) in enumerate(zip(args, self.params))]
        kernel_params = (ctypes.c_void_p * max(len(values), 1))()
        for i, v in enumerate(values):
            kernel_params[i] = ctypes.cast(ctypes.pointer(v), ctypes.c_void_p)
        rc = self._launch((ctypes.c_uint * 3)(*g), (ctypes.c_uint * 3)(*b), kernel_params, int(self.threaded))
        self.launches += 1
        if rc == 2:
            raise RuntimeError(f"{self.name}: __syncthreads() reached in a kernel run without threads")
        if rc == 3:
            raise RuntimeError(f"{self.name}: __syncthreads() reached by some threads of a block but not all")
        if rc != 0:
            raise RuntimeError(f"{self.name}: launch failed ({rc})")


class EmuModule:
    """``cupy.RawModule(code=..., name_expressions=...)`` on the CPU.

    Parameters
    ----------
    code : str
        The kernel source (used to find the kernels that need threads).
    name_expressions : sequence of str
        The kernels to export, as for CuPy (``"dense_forward<float>"``).
    path : path
        The file holding ``code`` (g++ includes it, so errors point into it).
    sanitize : bool
        Build with AddressSanitizer (the process must preload libasan).
    """

    def __init__(self, code: str, name_expressions, path, options=(), sanitize: bool = False):
        self.name_expressions = list(name_expressions)
        if Path(path).read_text() != code:
            raise ValueError(f"code differs from the content of {path}")
        self._threaded = kernels_needing_threads(code)
        self.library = build_library(Path(path), self.name_expressions, sanitize)
        self._lib = ctypes.CDLL(str(self.library))
        self._kernels: dict[str, EmuKernel] = {}

    def get_function(self, name: str) -> EmuKernel:
        if name not in self._kernels:
            if name not in self.name_expressions:
                raise KeyError(f"{name!r} is not one of the module's name expressions")
            self._kernels[name] = EmuKernel(self, name, self.name_expressions.index(name))
        return self._kernels[name]
