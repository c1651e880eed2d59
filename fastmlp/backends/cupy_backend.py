"""The ``cupy`` backend: hand-written CUDA kernels (``cupy_kernels.cu``) launched through CuPy.

Arrays live on the GPU (``xp = cupy``); GEMMs go to cuBLAS through ``cupy.matmul``; everything
around them (the dense epilogue, activation backward fused with the bias gradient, softmax with
cross-entropy, the losses, every optimizer step over the flat arena) is one kernel of
``cupy_kernels.cu``, compiled with NVRTC by ``cupy.RawModule`` on first use.

The backend is available only when CuPy imports and a CUDA device answers; otherwise the
registry reports the exact reason (CuPy missing, no driver, no device).

The same class runs without a GPU in the tests: constructed with ``xp=numpy`` and a module
factory that compiles the same ``.cu`` for the CPU (``tests/cuda_emu``), it drives the very
same kernels through the very same launch code, so its launch configurations, argument order
and dtype handling are checked against the reference in CI.

Rules every kernel call follows:

- every array handed to a kernel is an array of ``xp`` (a NumPy array reaching the CuPy backend
  is a ``TypeError``: arrays never cross devices silently), C-contiguous (inputs are copied if
  needed; documented per op), of the kernel's dtype;
- every scalar is an explicit NumPy scalar (``np.float32``/``np.float64`` for reals, ``np.int64``
  for sizes, ``np.int32`` for flags): CuPy would pass a Python float as a double;
- a case no kernel covers (a dtype other than float32/float64, an unfused activation in a dense
  op, a broadcast target, a non-contiguous buffer to update in place) runs the inherited
  reference on the same device.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .base import FUSED_ACTIVATIONS
from .numpy_backend import NumpyBackend

__all__ = ["CupyBackend", "KERNEL_SOURCE", "KERNELS", "NAME_EXPRESSIONS", "ACTIVATION_CODES"]

KERNEL_SOURCE = Path(__file__).with_name("cupy_kernels.cu")

#: every kernel of ``cupy_kernels.cu``, each a template over float and double
KERNELS: tuple[str, ...] = (
    "dense_forward", "dense_backward", "activation_forward", "activation_backward",
    "prelu_forward", "prelu_backward", "softmax_forward", "log_softmax_forward",
    "softmax_backward", "log_softmax_backward", "cross_entropy_loss", "mse_loss", "l1_loss",
    "huber_loss", "bce_with_logits_loss", "bce_loss", "nll_loss", "sgd_step", "momentum_step",
    "adagrad_step", "rmsprop_step", "adam_step", "adamax_step", "nadam_step", "adadelta_step",
)
_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
#: the ``name_expressions`` handed to ``cupy.RawModule``: ``"dense_forward<float>"``, ...
NAME_EXPRESSIONS: tuple[str, ...] = tuple(f"{k}<{t}>" for k in KERNELS for t in _CTYPES.values())


def _read_activation_codes(source: str) -> dict[str, int]:
    """``{"relu": 1, ...}`` from the ``ActivationCode`` enum of the kernel source."""
    codes = {m.group(1).lower(): int(m.group(2)) for m in re.finditer(r"ACT_(\w+)\s*=\s*(\d+)", source)}
    if not codes:
        raise RuntimeError(f"no ActivationCode enum found in {KERNEL_SOURCE}")
    return codes


ACTIVATION_CODES: dict[str, int] = _read_activation_codes(KERNEL_SOURCE.read_text())

# Launch shapes. Elementwise kernels are grid-stride loops (any grid is correct); row kernels
# run one block per row; dense_backward uses (32 columns) x (8 rows) blocks.
BLOCK = 256
ROW_BLOCK = 128
DENSE_BACKWARD_BLOCK = (32, 8)
MAX_GRID = 4096


def _import_cupy():
    """CuPy with a CUDA device, or an ImportError / RuntimeError saying exactly what is missing."""
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(f"CuPy is not installed ({exc})") from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, driver too old, no device
        raise RuntimeError(f"CuPy {cupy.__version__} is installed but no CUDA device answers: {exc}") from exc
    if count < 1:
        raise RuntimeError(f"CuPy {cupy.__version__} is installed but sees no CUDA device")
    return cupy


def _raw_module(code: str, name_expressions: tuple[str, ...]):
    """``cupy.RawModule`` for the kernel source (NVRTC; compiled and cached by CuPy on first use)."""
    import cupy

    return cupy.RawModule(code=code, options=(), name_expressions=list(name_expressions))


class CupyBackend(NumpyBackend):
    """Hand-written CUDA kernels through CuPy; cuBLAS for the GEMMs.

    Parameters
    ----------
    xp : module, optional
        The array module. Default: ``cupy`` (and the backend is unavailable without a device).
        The tests pass ``numpy`` together with ``module_factory`` to run the kernels on the CPU.
    module_factory : callable ``(code, name_expressions) -> module``, optional
        Builds the kernel module; default ``cupy.RawModule``. Called once, on first use.
    name, device : str, optional
        Override the registry name and device label (the emulated backend in the tests).
    block, row_block, max_grid : int
        Threads per block for elementwise kernels, threads per row for row kernels, and the
        largest grid launched (grid-stride loops cover the rest).
    """

    name = "cupy"
    device = "gpu"
    is_reference = False

    def __init__(self, xp: Any = None, module_factory: Callable[..., Any] | None = None, *,
                 name: str | None = None, device: str | None = None, block: int = BLOCK,
                 row_block: int = ROW_BLOCK, max_grid: int = MAX_GRID,
                 dense_backward_block: tuple[int, int] = DENSE_BACKWARD_BLOCK):
        if xp is None:
            xp = _import_cupy()
            module_factory = module_factory or _raw_module
        elif module_factory is None:
            raise ValueError("a custom xp needs a module_factory that builds the kernels for it")
        for label, v in (("block", block), ("row_block", row_block), ("max_grid", max_grid)):
            if not 1 <= int(v) <= (1024 if label != "max_grid" else 2**31 - 1):
                raise ValueError(f"{label} out of range: {v}")
        if dense_backward_block[0] * dense_backward_block[1] > 1024:
            raise ValueError("dense_backward_block has more than 1024 threads")
        self.xp = xp
        if name is not None:
            self.name = name
        if device is not None:
            self.device = device
        self.block, self.row_block, self.max_grid = int(block), int(row_block), int(max_grid)
        self.dense_backward_block = tuple(int(v) for v in dense_backward_block)
        self._module_factory = module_factory
        self._module = None
        self._functions: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing
    def describe(self) -> str:
        if self.xp is np:
            return f"CUDA kernels emulated on the CPU (numpy {np.__version__})"
        cp = self.xp
        try:
            dev = cp.cuda.Device()
            props = cp.cuda.runtime.getDeviceProperties(dev.id)
            gpu = f"{props['name'].decode()} (sm_{dev.compute_capability})"
        except Exception as exc:  # pragma: no cover - needs a GPU
            gpu = f"device query failed: {exc}"
        return f"cupy {cp.__version__}, CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}, {gpu}"

    def to_numpy(self, x: Any) -> np.ndarray:
        """``x`` copied to the host (NumPy arrays and scalars pass through)."""
        if isinstance(x, (np.ndarray, np.generic, int, float)):
            return np.asarray(x)
        return self.xp.asnumpy(x)

    def erf(self, x: Any) -> Any:
        if self.xp is np:
            return super().erf(x)
        from cupyx.scipy.special import erf  # pragma: no cover - needs a GPU

        return erf(x)  # pragma: no cover

    def kernel(self, name: str, dtype: Any):
        """The compiled kernel ``name<float>`` or ``name<double>`` (compiles the module once)."""
        dtype = np.dtype(dtype)
        key = (name, dtype.char)
        fn = self._functions.get(key)
        if fn is None:
            with self._lock:
                if self._module is None:
                    self._module = self._module_factory(KERNEL_SOURCE.read_text(), NAME_EXPRESSIONS)
                fn = self._module.get_function(f"{name}<{_CTYPES[dtype]}>")
                self._functions[key] = fn
        return fn

    def _grid(self, n: int, per_block: int) -> int:
        return max(1, min(self.max_grid, -(-n // per_block)))

    def _elementwise(self, name: str, dtype, n: int, args: tuple) -> None:
        """Launch a grid-stride kernel over ``n`` elements (nothing to do when ``n == 0``)."""
        if n:
            self.kernel(name, dtype)((self._grid(n, self.block),), (self.block,), args)

    def _rows(self, name: str, dtype, rows: int, cols: int, args: tuple) -> None:
        """Launch a one-block-per-row kernel (rows and cols >= 1)."""
        threads = min(self.row_block, 32 * -(-cols // 32))
        self.kernel(name, dtype)((min(rows, self.max_grid),), (threads,), args)

    def _on_device(self, *arrays) -> bool:
        """True when every array is a float32/float64 array of ``xp`` of one dtype (a case the
        kernels cover); TypeError for a NumPy array on the GPU backend (never a hidden copy)."""
        dtype = None
        for a in arrays:
            if a is None:
                continue
            if not isinstance(a, self.xp.ndarray):
                if isinstance(a, np.ndarray):
                    raise TypeError(
                        f"a NumPy array reached the {self.name!r} backend; move it to the device first "
                        "(backend.asarray(x)): arrays never cross devices silently"
                    )
                return False
            if dtype is None:
                dtype = a.dtype
            if a.dtype != dtype or a.dtype not in _CTYPES:
                return False
        return True

    def _c(self, a):
        """``a`` C-contiguous (a copy only when it is not)."""
        return a if a is None or a.flags.c_contiguous else self.xp.ascontiguousarray(a)

    @staticmethod
    def _writable(*arrays) -> bool:
        return all(a is None or a.flags.c_contiguous for a in arrays)

    # ------------------------------------------------------------------ dense
    def dense_forward(self, X, W, b=None, activation: str = "identity"):
        """``Y = act(X W^T + b)``: cuBLAS GEMM, then the ``dense_forward`` epilogue kernel in
        place over the GEMM output. Non-contiguous inputs are read by cuBLAS as they are."""
        if (activation not in FUSED_ACTIVATIONS or not self._on_device(X, W, b) or X.ndim != 2
                or W.ndim != 2 or (b is not None and b.shape != (W.shape[0],))):
            return super().dense_forward(X, W, b, activation)
        Z = self.xp.matmul(X, W.T)
        rows, cols = Z.shape
        T = Z.dtype.type
        self._elementwise("dense_forward", Z.dtype, rows * cols,
                          (Z, self._c(b), np.int64(rows), np.int64(cols),
                           np.int32(ACTIVATION_CODES[activation]), T(0), T(0)))
        return Z

    def dense_backward(self, dY, X, W, Y, activation: str = "identity", dW=None, db=None,
                       need_dX: bool = True):
        """``dZ = dY * act'(Y)`` and ``db = sum_n dZ`` in one kernel (``dense_backward``), then
        ``dW = dZ^T X`` (into ``dW``) and ``dX = dZ W`` by cuBLAS."""
        if (activation not in FUSED_ACTIVATIONS or not self._on_device(dY, X, W, Y, dW, db)
                or dY.ndim != 2 or dY.shape != Y.shape or (db is not None and db.shape != (dY.shape[1],))):
            return super().dense_backward(dY, X, W, Y, activation, dW, db, need_dX)
        xp = self.xp
        rows, cols = dY.shape
        if activation == "identity" and db is None:
            dZ = dY
        else:
            dZ = xp.empty((rows, cols), dtype=dY.dtype)
            db_out = db if db is None or db.flags.c_contiguous else xp.empty(cols, dtype=db.dtype)
            if cols:
                bx, by = self.dense_backward_block
                self.kernel("dense_backward", dY.dtype)(
                    (self._grid(cols, bx),), (bx, by),
                    (self._c(dY), self._c(Y), dZ, db_out, np.int64(rows), np.int64(cols),
                     np.int32(ACTIVATION_CODES[activation])))
            if db_out is not db:
                db[...] = db_out
        if dW is None:
            dW = dZ.T @ X
        else:
            xp.matmul(dZ.T, X, out=dW)
        dX = dZ @ W if need_dX else None
        return dX, dW, db

    # ------------------------------------------------------------------ activations
    def _act_forward(self, Z, act: str, h1: float = 0.0, h2: float = 0.0):
        """``activation_forward`` over ``Z`` (copied if not contiguous); None if not covered."""
        if not self._on_device(Z):
            return None
        Z = self._c(Z)
        Y = self.xp.empty_like(Z)
        T = Z.dtype.type
        self._elementwise("activation_forward", Z.dtype, Z.size,
                          (Z, Y, np.int64(Z.size), np.int32(ACTIVATION_CODES[act]), T(h1), T(h2)))
        return Y

    def _act_backward(self, dY, Z, Y, act: str, h1: float = 0.0, h2: float = 0.0,
                      param_grad: bool = False):
        """``activation_backward``: ``(dZ, per-element d/dparam or None)``; None if not covered."""
        if not self._on_device(dY, Z, Y) or not dY.shape == Z.shape == Y.shape:
            return None
        dY, Z, Y = self._c(dY), self._c(Z), self._c(Y)
        dZ = self.xp.empty_like(dY)
        contrib = self.xp.empty_like(dY) if param_grad else None
        T = dY.dtype.type
        self._elementwise("activation_backward", dY.dtype, dY.size,
                          (dY, Z, Y, dZ, contrib, np.int64(dY.size), np.int32(ACTIVATION_CODES[act]),
                           T(h1), T(h2)))
        return dZ, contrib

    def _forward(self, op: str, Z, act: str, *hyper):
        Y = self._act_forward(Z, act, *hyper)
        return getattr(super(), op)(Z, *hyper) if Y is None else Y

    def sigmoid_forward(self, Z):
        return self._forward("sigmoid_forward", Z, "sigmoid")

    def sigmoid_backward(self, dY, Z, Y):
        out = self._act_backward(dY, Z, Y, "sigmoid")
        return super().sigmoid_backward(dY, Z, Y) if out is None else out[0]

    def tanh_forward(self, Z):
        return self._forward("tanh_forward", Z, "tanh")

    def tanh_backward(self, dY, Z, Y):
        out = self._act_backward(dY, Z, Y, "tanh")
        return super().tanh_backward(dY, Z, Y) if out is None else out[0]

    def relu_forward(self, Z):
        return self._forward("relu_forward", Z, "relu")

    def relu_backward(self, dY, Z, Y):
        out = self._act_backward(dY, Z, Y, "relu")
        return super().relu_backward(dY, Z, Y) if out is None else out[0]

    def leaky_relu_forward(self, Z, negative_slope: float = 0.01):
        Y = self._act_forward(Z, "leaky_relu", negative_slope)
        return super().leaky_relu_forward(Z, negative_slope) if Y is None else Y

    def leaky_relu_backward(self, dY, Z, Y, negative_slope: float = 0.01):
        out = self._act_backward(dY, Z, Y, "leaky_relu", negative_slope)
        return super().leaky_relu_backward(dY, Z, Y, negative_slope) if out is None else out[0]

    def elu_forward(self, Z, alpha: float = 1.0):
        Y = self._act_forward(Z, "elu", alpha)
        return super().elu_forward(Z, alpha) if Y is None else Y

    def elu_backward(self, dY, Z, Y, alpha: float = 1.0):
        out = self._act_backward(dY, Z, Y, "elu", alpha)
        return super().elu_backward(dY, Z, Y, alpha) if out is None else out[0]

    def prelu_forward(self, Z, alpha):
        """``prelu_forward`` kernel; ``alpha`` of size 1 or ``Z.shape[-1]``."""
        if (not self._on_device(Z, alpha) or Z.ndim < 1 or Z.size == 0
                or alpha.size not in (1, Z.shape[-1])):
            return super().prelu_forward(Z, alpha)
        Z, alpha = self._c(Z), self._c(alpha)
        Y = self.xp.empty_like(Z)
        self._elementwise("prelu_forward", Z.dtype, Z.size,
                          (Z, alpha, Y, np.int64(Z.size), np.int64(alpha.size)))
        return Y

    def prelu_backward(self, dY, Z, Y, alpha, param_grad: bool = True):
        """``prelu_backward`` kernel (dZ and the per-element ``dY min(0, z)``), then the sum over
        every axis ``alpha`` is broadcast along."""
        if (not self._on_device(dY, Z, Y, alpha) or dY.shape != Z.shape or Z.ndim < 1 or Z.size == 0
                or alpha.size not in (1, Z.shape[-1])):
            return super().prelu_backward(dY, Z, Y, alpha, param_grad)
        dY, Z, alpha = self._c(dY), self._c(Z), self._c(alpha)
        dZ = self.xp.empty_like(dY)
        contrib = self.xp.empty_like(dY) if param_grad else None
        self._elementwise("prelu_backward", dY.dtype, dY.size,
                          (dY, Z, alpha, dZ, contrib, np.int64(dY.size), np.int64(alpha.size)))
        if not param_grad:
            return dZ, None
        if alpha.size == 1:
            return dZ, contrib.sum().reshape(alpha.shape)
        return dZ, contrib.reshape(-1, alpha.size).sum(axis=0).reshape(alpha.shape)

    def softplus_forward(self, Z, beta: float = 1.0, threshold: float = 20.0):
        Y = self._act_forward(Z, "softplus", beta, threshold)
        return super().softplus_forward(Z, beta, threshold) if Y is None else Y

    def softplus_backward(self, dY, Z, Y, beta: float = 1.0, threshold: float = 20.0,
                          param_grad: bool = True):
        out = self._act_backward(dY, Z, Y, "softplus", beta, threshold, param_grad)
        if out is None:
            return super().softplus_backward(dY, Z, Y, beta, threshold, param_grad)
        dZ, contrib = out
        return dZ, (contrib.sum().reshape(1) if param_grad else None)

    def softsign_forward(self, Z):
        return self._forward("softsign_forward", Z, "softsign")

    def softsign_backward(self, dY, Z, Y):
        out = self._act_backward(dY, Z, Y, "softsign")
        return super().softsign_backward(dY, Z, Y) if out is None else out[0]

    def log_sigmoid_forward(self, Z):
        return self._forward("log_sigmoid_forward", Z, "log_sigmoid")

    def log_sigmoid_backward(self, dY, Z, Y):
        out = self._act_backward(dY, Z, Y, "log_sigmoid")
        return super().log_sigmoid_backward(dY, Z, Y) if out is None else out[0]

    def silu_forward(self, Z, beta: float = 1.0):
        Y = self._act_forward(Z, "silu", beta)
        return super().silu_forward(Z, beta) if Y is None else Y

    def silu_backward(self, dY, Z, Y, beta: float = 1.0, param_grad: bool = True):
        out = self._act_backward(dY, Z, Y, "silu", beta, 0.0, param_grad)
        if out is None:
            return super().silu_backward(dY, Z, Y, beta, param_grad)
        dZ, contrib = out
        return dZ, (contrib.sum().reshape(1) if param_grad else None)

    def mish_forward(self, Z):
        return self._forward("mish_forward", Z, "mish")

    def mish_backward(self, dY, Z, Y):
        out = self._act_backward(dY, Z, Y, "mish")
        return super().mish_backward(dY, Z, Y) if out is None else out[0]

    def gelu_forward(self, Z, approximate: str = "none"):
        Y = None
        if approximate in ("none", "tanh"):
            Y = self._act_forward(Z, "gelu_tanh" if approximate == "tanh" else "gelu")
        return super().gelu_forward(Z, approximate) if Y is None else Y

    def gelu_backward(self, dY, Z, Y, approximate: str = "none"):
        out = None
        if approximate in ("none", "tanh"):
            out = self._act_backward(dY, Z, Y, "gelu_tanh" if approximate == "tanh" else "gelu")
        return super().gelu_backward(dY, Z, Y, approximate) if out is None else out[0]

    def selu_forward(self, Z):
        return self._forward("selu_forward", Z, "selu")

    def selu_backward(self, dY, Z, Y):
        out = self._act_backward(dY, Z, Y, "selu")
        return super().selu_backward(dY, Z, Y) if out is None else out[0]

    def sinc_forward(self, Z, normalized: bool = False):
        Y = self._act_forward(Z, "sinc_normalized" if normalized else "sinc")
        return super().sinc_forward(Z, normalized) if Y is None else Y

    def sinc_backward(self, dY, Z, Y, normalized: bool = False):
        out = self._act_backward(dY, Z, Y, "sinc_normalized" if normalized else "sinc")
        return super().sinc_backward(dY, Z, Y, normalized) if out is None else out[0]

    def step_forward(self, Z):
        return self._forward("step_forward", Z, "step")

    def step_backward(self, dY, Z, Y):
        out = self._act_backward(dY, Z, Y, "step")
        return super().step_backward(dY, Z, Y) if out is None else out[0]

    def _row_op(self, op: str, arrays, out_like):
        """Run a one-block-per-row kernel along the last axis; None if not covered."""
        if not self._on_device(*arrays) or any(a.shape != out_like.shape for a in arrays):
            return None
        if out_like.ndim < 1 or out_like.size == 0:
            return None
        cols = out_like.shape[-1]
        rows = out_like.size // cols
        out = self.xp.empty(out_like.shape, dtype=out_like.dtype)
        self._rows(op, out_like.dtype, rows, cols,
                   (*(self._c(a) for a in arrays), out, np.int64(rows), np.int64(cols)))
        return out

    def softmax_forward(self, Z):
        Y = self._row_op("softmax_forward", (Z,), Z)
        return super().softmax_forward(Z) if Y is None else Y

    def softmax_backward(self, dY, Z, Y):
        dZ = self._row_op("softmax_backward", (dY, Y), dY)
        return super().softmax_backward(dY, Z, Y) if dZ is None else dZ

    def log_softmax_forward(self, Z):
        Y = self._row_op("log_softmax_forward", (Z,), Z)
        return super().log_softmax_forward(Z) if Y is None else Y

    def log_softmax_backward(self, dY, Z, Y):
        dZ = self._row_op("log_softmax_backward", (dY, Y), dY)
        return super().log_softmax_backward(dY, Z, Y) if dZ is None else dZ

    # ------------------------------------------------------------------ losses
    def _labels(self, target, rows: int, cols: int):
        """Integer labels as contiguous int64 on the device, checked to lie in [0, cols)
        (the reference would raise IndexError; a kernel must never read past a row)."""
        xp = self.xp
        if not isinstance(target, xp.ndarray):
            if isinstance(target, np.ndarray):
                self._on_device(target)  # raises the device error
            return None
        if target.ndim != 1 or target.shape[0] != rows or target.dtype.kind not in "iu":
            return None
        t = xp.ascontiguousarray(target.astype(np.int64, copy=False))
        if rows and (int(t.min()) < 0 or int(t.max()) >= cols):
            raise IndexError(f"labels must lie in [0, {cols}), got values in [{int(t.min())}, {int(t.max())}]")
        return t

    @staticmethod
    def _reduced(L, reduction: str, count: int):
        if reduction == "mean":
            return L.sum() / count
        if reduction == "sum":
            return L.sum()
        return L

    def cross_entropy_loss(self, logits, target, reduction: str = "mean",
                           label_smoothing: float = 0.0, need_grad: bool = True):
        """Softmax and cross-entropy fused in the ``cross_entropy_loss`` kernel (one block per
        row: the per-row loss and, with ``need_grad``, the gradient)."""
        xp = self.xp
        if (reduction not in ("mean", "sum", "none") or not self._on_device(logits)
                or logits.ndim != 2 or logits.size == 0):
            return super().cross_entropy_loss(logits, target, reduction, label_smoothing, need_grad)
        rows, cols = logits.shape
        labels = probs = None
        if getattr(target, "ndim", 0) == 1:
            labels = self._labels(target, rows, cols)
            if labels is None:
                return super().cross_entropy_loss(logits, target, reduction, label_smoothing, need_grad)
        else:
            if not isinstance(target, xp.ndarray) or target.shape != logits.shape:
                self._on_device(target)
                return super().cross_entropy_loss(logits, target, reduction, label_smoothing, need_grad)
            probs = xp.ascontiguousarray(target.astype(logits.dtype, copy=False))
        T = logits.dtype.type
        L = xp.empty(rows, dtype=logits.dtype)
        G = xp.empty((rows, cols), dtype=logits.dtype) if need_grad else None
        r = 1.0 / rows if reduction == "mean" else 1.0
        self._rows("cross_entropy_loss", logits.dtype, rows, cols,
                   (self._c(logits), labels, probs, L, G, np.int64(rows), np.int64(cols),
                    T(label_smoothing), T(r)))
        return self._reduced(L, reduction, rows), G

    def _pointwise_loss(self, op: str, out, target, reduction: str, need_grad: bool, *hyper):
        """A pointwise loss kernel: per-element value (then summed) and gradient; None if not covered."""
        xp = self.xp
        if reduction not in ("mean", "sum", "none") or not self._on_device(out):
            return None
        if not isinstance(target, xp.ndarray):
            self._on_device(target)
            return None
        if target.shape != out.shape or target.dtype.kind not in "fiub":
            return None
        target = xp.ascontiguousarray(target.astype(out.dtype, copy=False))
        out = self._c(out)
        T = out.dtype.type
        L = xp.empty_like(out)
        G = xp.empty_like(out) if need_grad else None
        r = 1.0 / out.size if reduction == "mean" else 1.0
        self._elementwise(op, out.dtype, out.size,
                          (out, target, L, G, np.int64(out.size), *(T(h) for h in hyper), T(r)))
        return self._reduced(L, reduction, out.size), G

    def mse_loss(self, output, target, reduction: str = "mean", need_grad: bool = True):
        res = self._pointwise_loss("mse_loss", output, target, reduction, need_grad)
        return super().mse_loss(output, target, reduction, need_grad) if res is None else res

    def l1_loss(self, output, target, reduction: str = "mean", need_grad: bool = True):
        res = self._pointwise_loss("l1_loss", output, target, reduction, need_grad)
        return super().l1_loss(output, target, reduction, need_grad) if res is None else res

    def huber_loss(self, output, target, reduction: str = "mean", delta: float = 1.0,
                   need_grad: bool = True):
        res = self._pointwise_loss("huber_loss", output, target, reduction, need_grad, delta)
        return super().huber_loss(output, target, reduction, delta, need_grad) if res is None else res

    def bce_with_logits_loss(self, logits, target, reduction: str = "mean", need_grad: bool = True):
        res = self._pointwise_loss("bce_with_logits_loss", logits, target, reduction, need_grad)
        return super().bce_with_logits_loss(logits, target, reduction, need_grad) if res is None else res

    def bce_loss(self, prob, target, reduction: str = "mean", need_grad: bool = True):
        res = self._pointwise_loss("bce_loss", prob, target, reduction, need_grad)
        return super().bce_loss(prob, target, reduction, need_grad) if res is None else res

    def nll_loss(self, logp, target, reduction: str = "mean", need_grad: bool = True):
        """``nll_loss`` kernel: per-row value and the one-hot gradient, written whole."""
        xp = self.xp
        if (reduction not in ("mean", "sum", "none") or not self._on_device(logp) or logp.ndim != 2
                or logp.size == 0):
            return super().nll_loss(logp, target, reduction, need_grad)
        rows, cols = logp.shape
        labels = self._labels(target, rows, cols)
        if labels is None:
            return super().nll_loss(logp, target, reduction, need_grad)
        T = logp.dtype.type
        L = xp.empty(rows, dtype=logp.dtype)
        G = xp.empty((rows, cols), dtype=logp.dtype) if need_grad else None
        r = 1.0 / rows if reduction == "mean" else 1.0
        self._elementwise("nll_loss", logp.dtype, rows * cols,
                          (self._c(logp), labels, L, G, np.int64(rows), np.int64(cols), T(r)))
        return self._reduced(L, reduction, rows), G

    # ------------------------------------------------------------------ optimizers
    def _step_ok(self, p, g, *state) -> bool:
        """The fused step covers ``p``, ``g`` and the state: one float dtype, one size, all
        contiguous on the device (the arena's slices always are)."""
        arrays = (p, g, *state)
        return (self._on_device(*arrays) and self._writable(*arrays)
                and all(a is None or a.size == p.size for a in arrays))

    def sgd_step(self, p, g, momentum_buffer, lr: float, step: int, momentum: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        """``sgd_step`` kernel: one pass over ``p``, ``g`` and the momentum buffer."""
        buf = momentum_buffer if momentum else None
        if not self._step_ok(p, g, buf):
            return super().sgd_step(p, g, momentum_buffer, lr, step, momentum, dampening, nesterov,
                                    weight_decay)
        T = p.dtype.type
        self._elementwise("sgd_step", p.dtype, p.size,
                          (p, g, buf, np.int64(p.size), T(lr), T(momentum), T(1 - dampening),
                           T(weight_decay), np.int32(bool(nesterov)), np.int32(step == 1)))

    def momentum_step(self, p, g, m, lr: float, step: int, beta: float = 0.9,
                      bias_correction: bool = True, nesterov: bool = False,
                      weight_decay: float = 0.0):
        """``momentum_step`` kernel; the bias correction ``lr / (1 - beta^t)`` is computed here."""
        if not self._step_ok(p, g, m):
            return super().momentum_step(p, g, m, lr, step, beta, bias_correction, nesterov, weight_decay)
        T = p.dtype.type
        scale = lr / (1 - beta**step) if bias_correction else lr
        self._elementwise("momentum_step", p.dtype, p.size,
                          (p, g, m, np.int64(p.size), T(scale), T(beta), T(1 - beta), T(weight_decay),
                           np.int32(bool(nesterov))))

    def adagrad_step(self, p, g, state_sum, lr: float, step: int, lr_decay: float = 0.0,
                     weight_decay: float = 0.0, eps: float = 1e-10, eps_root: float = 0.0):
        """``adagrad_step`` kernel; ``clr = lr / (1 + (t - 1) lr_decay)`` is computed here."""
        if not self._step_ok(p, g, state_sum):
            return super().adagrad_step(p, g, state_sum, lr, step, lr_decay, weight_decay, eps, eps_root)
        T = p.dtype.type
        clr = lr / (1 + (step - 1) * lr_decay)
        self._elementwise("adagrad_step", p.dtype, p.size,
                          (p, g, state_sum, np.int64(p.size), T(clr), T(weight_decay), T(eps), T(eps_root)))

    def rmsprop_step(self, p, g, square_avg, grad_avg, momentum_buffer, lr: float, step: int,
                     alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                     momentum: float = 0.0, centered: bool = False,
                     bias_correction: bool = False, eps_root: float = 0.0):
        """``rmsprop_step`` kernel; unused buffers are passed as NULL."""
        avg = grad_avg if centered else None
        buf = momentum_buffer if momentum else None
        if not self._step_ok(p, g, square_avg, avg, buf):
            return super().rmsprop_step(p, g, square_avg, grad_avg, momentum_buffer, lr, step, alpha, eps,
                                        weight_decay, momentum, centered, bias_correction, eps_root)
        T = p.dtype.type
        c = 1 / (1 - alpha**step) if bias_correction else 1.0
        self._elementwise("rmsprop_step", p.dtype, p.size,
                          (p, g, square_avg, avg, buf, np.int64(p.size), T(lr), T(alpha), T(1 - alpha), T(eps),
                           T(weight_decay), T(momentum), T(c), T(eps_root)))

    def adam_step(self, p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, lr: float, step: int,
                  beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                  weight_decay: float = 0.0, amsgrad: bool = False,
                  decoupled_weight_decay: bool = False, eps_root: float = 0.0):
        """``adam_step`` kernel (Adam, AdamW, AMSGrad); bias corrections computed here."""
        vmax = max_exp_avg_sq if amsgrad else None
        if not self._step_ok(p, g, exp_avg, exp_avg_sq, vmax):
            return super().adam_step(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, step, beta1, beta2, eps,
                                     weight_decay, amsgrad, decoupled_weight_decay, eps_root)
        T = p.dtype.type
        self._elementwise("adam_step", p.dtype, p.size,
                          (p, g, exp_avg, exp_avg_sq, vmax, np.int64(p.size), T(lr / (1 - beta1**step)),
                           T(beta1), T(1 - beta1), T(beta2), T(1 - beta2), T(eps), T(weight_decay),
                           T(1 - lr * weight_decay), T(1 - beta2**step), T(eps_root),
                           np.int32(bool(decoupled_weight_decay))))

    def adamax_step(self, p, g, exp_avg, exp_inf, lr: float, step: int, beta1: float = 0.9,
                    beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0):
        """``adamax_step`` kernel."""
        if not self._step_ok(p, g, exp_avg, exp_inf):
            return super().adamax_step(p, g, exp_avg, exp_inf, lr, step, beta1, beta2, eps, weight_decay)
        T = p.dtype.type
        self._elementwise("adamax_step", p.dtype, p.size,
                          (p, g, exp_avg, exp_inf, np.int64(p.size), T(lr / (1 - beta1**step)), T(beta1),
                           T(1 - beta1), T(beta2), T(eps), T(weight_decay)))

    def nadam_step(self, p, g, exp_avg, exp_avg_sq, lr: float, step: int, mu_product: float,
                   beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                   weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                   decoupled_weight_decay: bool = False):
        """``nadam_step`` kernel; the momentum schedule's coefficients are computed here."""
        if not self._step_ok(p, g, exp_avg, exp_avg_sq):
            return super().nadam_step(p, g, exp_avg, exp_avg_sq, lr, step, mu_product, beta1, beta2, eps,
                                      weight_decay, momentum_decay, decoupled_weight_decay)
        T = p.dtype.type
        mu = self.nadam_mu(step, beta1, momentum_decay)
        mu_next = self.nadam_mu(step + 1, beta1, momentum_decay)
        c_grad = lr * (1 - mu) / (1 - mu_product)
        c_avg = lr * mu_next / (1 - mu_product * mu_next)
        self._elementwise("nadam_step", p.dtype, p.size,
                          (p, g, exp_avg, exp_avg_sq, np.int64(p.size), T(c_grad), T(c_avg), T(beta1),
                           T(1 - beta1), T(beta2), T(1 - beta2), T(eps), T(weight_decay),
                           T(1 - lr * weight_decay), T(1 - beta2**step),
                           np.int32(bool(decoupled_weight_decay))))

    def adadelta_step(self, p, g, square_avg, acc_delta, lr: float, step: int, rho: float = 0.9,
                      eps: float = 1e-6, weight_decay: float = 0.0):
        """``adadelta_step`` kernel."""
        if not self._step_ok(p, g, square_avg, acc_delta):
            return super().adadelta_step(p, g, square_avg, acc_delta, lr, step, rho, eps, weight_decay)
        T = p.dtype.type
        self._elementwise("adadelta_step", p.dtype, p.size,
                          (p, g, square_avg, acc_delta, np.int64(p.size), T(lr), T(rho), T(1 - rho), T(eps),
                           T(weight_decay)))
