"""The ``cpp`` backend: C++17 kernels in ``csrc/``, bound with pybind11 as ``fastmlp._C``.

GEMMs run on OpenBLAS (``scipy_cblas_sgemm``/``dgemm`` from the scipy-openblas32 wheel); the
bias, the activations, the losses and every optimizer update are hand-written loops that GCC
vectorises (``csrc/*.h``). :meth:`CppBackend.train_step` runs a whole training step of a
``Sequential`` of ``Linear`` and activation layers as one native call that releases the GIL.

Every op overrides the reference; an op falls back to the reference (``super()``) for what its
kernel does not cover: a dtype other than float32/float64, mixed dtypes, an empty array,
broadcasting, an array written in place that is not C-contiguous, and (for ``train_step``)
the model, loss and optimizer combinations listed in :meth:`CppBackend.train_step`. Inputs
that are not C-contiguous are copied; outputs are allocated here. The bindings re-validate
every argument (dtype, shape, contiguity, aliasing) and raise before touching memory.

Threads: one pool (``csrc/pool.h``), as many threads as the cores of the process (at most 4)
unless ``FASTMLP_NUM_THREADS`` or :meth:`CppBackend.set_num_threads` says otherwise. OpenBLAS
(this backend's own copy) runs at one thread: the pool splits each GEMM itself (by rows of the
batch, or by output units for dW), and the elementwise loops and optimizer steps by chunks, so
no second pool spins beside it (docs/cpp.md: Threads).
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.util
import math
import os
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from .. import _config
from . import _outputs
from .base import FUSED_ACTIVATIONS, Backend
from .numpy_backend import NumpyBackend

__all__ = ["CppBackend"]

# Activation codes of csrc/activations.h (enum class Act).
_ACT = {
    "identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "leaky_relu": 4, "elu": 5, "selu": 6,
    "softsign": 7, "log_sigmoid": 8, "mish": 9, "gelu": 10, "gelu_tanh": 11, "sinc": 12,
    "step": 13, "softplus": 14, "silu": 15,
}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_REDUCTIONS = ("mean", "sum", "none")


def _load_extension(isa: str = "auto"):
    """Import the kernels after loading the OpenBLAS they link against (no rpath: see setup.py).

    The widest build this CPU runs, up to ``isa``: ``fastmlp._C_avx512`` (AVX-512 F/DQ/BW/VL),
    ``fastmlp._C_avx2`` (AVX2 and FMA), else the portable ``fastmlp._C`` (SSE2). ``isa`` is
    ``"auto"`` (the widest), ``"avx512"``, ``"avx2"`` or ``"portable"``, a ceiling: a build the
    CPU cannot run, or that was not built (an old compiler), is passed over.
    """
    if isa not in _config.CPP_ISAS:
        raise ValueError(f"isa must be one of {', '.join(_config.CPP_ISAS)}; got {isa!r}")
    if importlib.util.find_spec("fastmlp._C") is None:
        raise ImportError(
            "the C++ extension fastmlp._C is not built (no C++17 compiler at install time?); "
            "reinstall with one: pip install -e . (FASTMLP_STRICT_BUILD=1 shows the build error)"
        )
    package = Path(__file__).resolve().parents[1]
    libs = sorted(package.glob("libscipy_openblas*.so*"))
    if not libs:
        try:
            import scipy_openblas32
        except ImportError:
            raise ImportError(
                "libscipy_openblas is neither beside fastmlp._C nor installed: pip install 'fastmlp[cpp]'"
            ) from None
        libs = [Path(scipy_openblas32.get_lib_dir()) / f"lib{scipy_openblas32.get_library()}.so"]
    ctypes.CDLL(str(libs[0]), mode=ctypes.RTLD_GLOBAL)
    portable = importlib.import_module("fastmlp._C")
    builds = _config.CPP_ISAS[1:]  # widest first
    for width in builds[builds.index("avx512" if isa == "auto" else isa):-1]:  # the last is portable
        name = f"fastmlp._C_{width}"
        if portable.cpu_supports(width) and importlib.util.find_spec(name) is not None:
            return importlib.import_module(name)
    return portable


def _contig(x):
    return np.ascontiguousarray(x)


def _floats(*arrays) -> bool:
    """True if every array is a non-empty NumPy float32/float64 array of one dtype."""
    first = arrays[0]
    if not isinstance(first, np.ndarray) or first.dtype not in _FLOATS:
        return False
    return all(isinstance(a, np.ndarray) and a.dtype == first.dtype and a.size > 0 for a in arrays)


def _same_shape(*arrays) -> bool:
    return all(a.shape == arrays[0].shape for a in arrays)


def _writable(dtype, *arrays) -> bool:
    """Arrays written in place: None, or C-contiguous writeable NumPy arrays of ``dtype``."""
    return all(
        a is None
        or (isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable)
        for a in arrays
    )


class CppBackend(NumpyBackend):
    """C++ kernels (``csrc/``) on OpenBLAS; see the module docstring for what falls back."""

    name = "cpp"
    is_reference = False

    def __init__(self, isa: str | None = None) -> None:
        """``isa``: the widest build to use (``"auto"``, ``"avx512"``, ``"avx2"`` or
        ``"portable"``, the SSE2 build on any CPU); default: ``FASTMLP_CPP_ISA`` (``auto``)."""
        self._C = _load_extension(isa or _config.cpp_isa())
        threads = _config.num_threads()
        if threads is None:  # the cores this process may use, at most 4 (docs/cpp.md: Threads)
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            threads = max(1, min(cores or 1, 4))
        self._C.set_num_threads(threads)
        self._C.blas_set_num_threads(1)  # the pool splits the GEMMs: one pool, not two (csrc/pool.h)
        self._plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._covering: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def describe(self) -> str:
        return (
            f"{self._C.__name__} (C++17, pybind11, {self._C.isa}), {self._C.get_num_threads()} pool thread(s), "
            f"OpenBLAS {self._C.blas_get_num_threads()} thread(s): {self._C.blas_config()}"
        )

    def all_finite(self, x) -> bool:
        """One vectorised pass over the bits (``_C.all_finite``) for a C-contiguous float32/64
        array; the reference's ``isfinite(x).all()`` (a temporary mask, then a reduction: 7 us
        where this takes about 2 on a 64 x 784 batch) for anything else."""
        if isinstance(x, np.ndarray) and x.dtype in _FLOATS and x.flags.c_contiguous:
            return bool(self._C.all_finite(x))
        return super().all_finite(x)

    def set_num_threads(self, n: int) -> None:
        """Threads of the backend's pool: the GEMMs, the elementwise loops and the optimizer
        steps are split over them (1: everything on the calling thread)."""
        self._C.set_num_threads(int(n))

    def get_num_threads(self) -> int:
        return int(self._C.get_num_threads())

    # ------------------------------------------------------------------ dense
    def dense_forward(self, X, W, b=None, activation: str = "identity"):
        ok = (activation in FUSED_ACTIVATIONS and _floats(X, W) and X.ndim == 2 and W.ndim == 2
              and X.shape[1] == W.shape[1] and (b is None or (_floats(X, b) and b.shape == (W.shape[0],))))
        if not ok:
            return super().dense_forward(X, W, b, activation)
        X, W = _contig(X), _contig(W)
        b = None if b is None else _contig(b)
        Y = _outputs.empty((X.shape[0], W.shape[0]), X.dtype)
        self._C.dense_forward(X, W, b, Y, _ACT[activation])
        return Y

    def dense_backward(self, dY, X, W, Y, activation: str = "identity", dW=None, db=None,
                       need_dX: bool = True):
        ok = (activation in FUSED_ACTIVATIONS and _floats(dY, X, W, Y) and X.ndim == 2 and W.ndim == 2
              and X.shape[1] == W.shape[1] and dY.shape == Y.shape == (X.shape[0], W.shape[0])
              and _writable(X.dtype, dW, db)
              and (dW is None or dW.shape == W.shape) and (db is None or db.shape == (W.shape[0],)))
        if not ok:
            return super().dense_backward(dY, X, W, Y, activation, dW, db, need_dX)
        dY, X, W, Y = _contig(dY), _contig(X), _contig(W), _contig(Y)
        if dW is None:
            dW = _outputs.empty(W.shape, X.dtype)
        dX = _outputs.empty(X.shape, X.dtype) if need_dX else None
        self._C.dense_backward(dY, X, W, Y, _ACT[activation], dW, db, dX)
        return dX, dW, db

    # ------------------------------------------------------------------ activations
    def _unary(self, kernel, Z, *hyper):
        Z = _contig(Z)
        Y = _outputs.empty(Z.shape, Z.dtype)
        kernel(Z, Y, *hyper)
        return Y

    def _binary(self, kernel, dY, Z, Y, *hyper):
        dY, Z, Y = _contig(dY), _contig(Z), _contig(Y)
        dZ = _outputs.empty(dY.shape, dY.dtype)
        out = kernel(dY, Z, Y, dZ, *hyper)
        return dZ, out

    def identity_forward(self, Z):
        """``y = z``: returns ``Z`` itself (no kernel: there is no work)."""
        return Z

    def identity_backward(self, dY, Z, Y):
        """``dz = dy``: returns ``dY`` itself."""
        return dY

    def sigmoid_forward(self, Z):
        if not _floats(Z):
            return super().sigmoid_forward(Z)
        return self._unary(self._C.sigmoid_forward, Z)

    def sigmoid_backward(self, dY, Z, Y):
        if not (_floats(dY, Z, Y) and _same_shape(dY, Z, Y)):
            return super().sigmoid_backward(dY, Z, Y)
        return self._binary(self._C.sigmoid_backward, dY, Z, Y)[0]

    def tanh_forward(self, Z):
        if not _floats(Z):
            return super().tanh_forward(Z)
        return self._unary(self._C.tanh_forward, Z)

    def tanh_backward(self, dY, Z, Y):
        if not (_floats(dY, Z, Y) and _same_shape(dY, Z, Y)):
            return super().tanh_backward(dY, Z, Y)
        return self._binary(self._C.tanh_backward, dY, Z, Y)[0]

    def relu_forward(self, Z):
        if not _floats(Z):
            return super().relu_forward(Z)
        return self._unary(self._C.relu_forward, Z)

    def relu_backward(self, dY, Z, Y):
        if not (_floats(dY, Z, Y) and _same_shape(dY, Z, Y)):
            return super().relu_backward(dY, Z, Y)
        return self._binary(self._C.relu_backward, dY, Z, Y)[0]

    def leaky_relu_forward(self, Z, negative_slope: float = 0.01):
        if not _floats(Z):
            return super().leaky_relu_forward(Z, negative_slope)
        return self._unary(self._C.leaky_relu_forward, Z, float(negative_slope))

    def leaky_relu_backward(self, dY, Z, Y, negative_slope: float = 0.01):
        if not (_floats(dY, Z, Y) and _same_shape(dY, Z, Y)):
            return super().leaky_relu_backward(dY, Z, Y, negative_slope)
        return self._binary(self._C.leaky_relu_backward, dY, Z, Y, float(negative_slope))[0]

    def elu_forward(self, Z, alpha: float = 1.0):
        if not _floats(Z):
            return super().elu_forward(Z, alpha)
        return self._unary(self._C.elu_forward, Z, float(alpha))

    def elu_backward(self, dY, Z, Y, alpha: float = 1.0):
        if not (_floats(dY, Z, Y) and _same_shape(dY, Z, Y)):
            return super().elu_backward(dY, Z, Y, alpha)
        return self._binary(self._C.elu_backward, dY, Z, Y, float(alpha))[0]

    def prelu_forward(self, Z, alpha):
        ok = (_floats(Z, alpha) and Z.ndim >= 1 and alpha.ndim == 1
              and alpha.size in (1, Z.shape[-1]))
        if not ok:
            return super().prelu_forward(Z, alpha)
        Z, alpha = _contig(Z), _contig(alpha)
        Y = _outputs.empty(Z.shape, Z.dtype)
        self._C.prelu_forward(Z, alpha, Y)
        return Y

    def prelu_backward(self, dY, Z, Y, alpha, param_grad: bool = True):
        ok = (_floats(dY, Z, alpha) and _same_shape(dY, Z) and Z.ndim >= 1 and alpha.ndim == 1
              and alpha.size in (1, Z.shape[-1]))
        if not ok:
            return super().prelu_backward(dY, Z, Y, alpha, param_grad)
        dY, Z, alpha = _contig(dY), _contig(Z), _contig(alpha)
        dZ = _outputs.empty(dY.shape, dY.dtype)
        dalpha = _outputs.empty(alpha.shape, alpha.dtype) if param_grad else None
        self._C.prelu_backward(dY, Z, alpha, dZ, dalpha)
        return dZ, dalpha

    def softplus_forward(self, Z, beta: float = 1.0, threshold: float = 20.0):
        if not _floats(Z):
            return super().softplus_forward(Z, beta, threshold)
        return self._unary(self._C.softplus_forward, Z, float(beta), float(threshold))

    def softplus_backward(self, dY, Z, Y, beta: float = 1.0, threshold: float = 20.0,
                          param_grad: bool = True):
        if not (_floats(dY, Z, Y) and _same_shape(dY, Z, Y)):
            return super().softplus_backward(dY, Z, Y, beta, threshold, param_grad)
        dZ, dbeta = self._binary(self._C.softplus_backward, dY, Z, Y, float(beta), float(threshold),
                                 bool(param_grad))
        return dZ, (np.array([dbeta], dY.dtype) if param_grad else None)

    def softsign_forward(self, Z):
        if not _floats(Z):
            return super().softsign_forward(Z)
        return self._unary(self._C.softsign_forward, Z)

    def softsign_backward(self, dY, Z, Y):
        if not (_floats(dY, Z, Y) and _same_shape(dY, Z, Y)):
            return super().softsign_backward(dY, Z, Y)
        return self._binary(self._C.softsign_backward, dY, Z, Y)[0]

    def log_sigmoid_forward(self, Z):
        if not _floats(Z):
            return super().log_sigmoid_forward(Z)
        return self._unary(self._C.log_sigmoid_forward, Z)

    def log_sigmoid_backward(self, dY, Z, Y):
        if not (_floats(dY, Z, Y) and _same_shape(dY, Z, Y)):
            return super().log_sigmoid_backward(dY, Z, Y)
        return self._binary(self._C.log_sigmoid_backward, dY, Z, Y)[0]

    def silu_forward(self, Z, beta: float = 1.0):
        if not _floats(Z):
            return super().silu_forward(Z, beta)
        return self._unary(self._C.silu_forward, Z, float(beta))

    def silu_backward(self, dY, Z, Y, beta: float = 1.0, param_grad: bool = True):
        if not (_floats(dY, Z, Y) and _same_shape(dY, Z, Y)):
            return super().silu_backward(dY, Z, Y, beta, param_grad)
        dZ, dbeta = self._binary(self._C.silu_backward, dY, Z, Y, float(beta), bool(param_grad))
        return dZ, (np.array([dbeta], dY.dtype) if param_grad else None)

    def mish_forward(self, Z):
        if not _floats(Z):
            return super().mish_forward(Z)
        return self._unary(self._C.mish_forward, Z)

    def mish_backward(self, dY, Z, Y):
        if not (_floats(dY, Z, Y) and _same_shape(dY, Z, Y)):
            return super().mish_backward(dY, Z, Y)
        return self._binary(self._C.mish_backward, dY, Z, Y)[0]

    def gelu_forward(self, Z, approximate: str = "none"):
        if not _floats(Z) or approximate not in ("none", "tanh"):
            return super().gelu_forward(Z, approximate)
        return self._unary(self._C.gelu_forward, Z, approximate == "tanh")

    def gelu_backward(self, dY, Z, Y, approximate: str = "none"):
        if not (_floats(dY, Z, Y) and _same_shape(dY, Z, Y)) or approximate not in ("none", "tanh"):
            return super().gelu_backward(dY, Z, Y, approximate)
        return self._binary(self._C.gelu_backward, dY, Z, Y, approximate == "tanh")[0]

    def selu_forward(self, Z):
        if not _floats(Z):
            return super().selu_forward(Z)
        return self._unary(self._C.selu_forward, Z)

    def selu_backward(self, dY, Z, Y):
        if not (_floats(dY, Z, Y) and _same_shape(dY, Z, Y)):
            return super().selu_backward(dY, Z, Y)
        return self._binary(self._C.selu_backward, dY, Z, Y)[0]

    def sinc_forward(self, Z, normalized: bool = False):
        if not _floats(Z):
            return super().sinc_forward(Z, normalized)
        return self._unary(self._C.sinc_forward, Z, bool(normalized))

    def sinc_backward(self, dY, Z, Y, normalized: bool = False):
        if not (_floats(dY, Z, Y) and _same_shape(dY, Z, Y)):
            return super().sinc_backward(dY, Z, Y, normalized)
        return self._binary(self._C.sinc_backward, dY, Z, Y, bool(normalized))[0]

    def step_forward(self, Z):
        if not _floats(Z):
            return super().step_forward(Z)
        return self._unary(self._C.step_forward, Z)

    def step_backward(self, dY, Z, Y):
        if not (_floats(dY, Z, Y) and _same_shape(dY, Z, Y)):
            return super().step_backward(dY, Z, Y)
        return self._binary(self._C.step_backward, dY, Z, Y)[0]

    def softmax_forward(self, Z):
        if not (_floats(Z) and Z.ndim >= 1):
            return super().softmax_forward(Z)
        return self._unary(self._C.softmax_forward, Z)

    def softmax_backward(self, dY, Z, Y):
        if not (_floats(dY, Y) and _same_shape(dY, Y) and dY.ndim >= 1):
            return super().softmax_backward(dY, Z, Y)
        dY, Y = _contig(dY), _contig(Y)
        dZ = _outputs.empty(dY.shape, dY.dtype)
        self._C.softmax_backward(dY, Y, dZ)
        return dZ

    def log_softmax_forward(self, Z):
        if not (_floats(Z) and Z.ndim >= 1):
            return super().log_softmax_forward(Z)
        return self._unary(self._C.log_softmax_forward, Z)

    def log_softmax_backward(self, dY, Z, Y):
        if not (_floats(dY, Y) and _same_shape(dY, Y) and dY.ndim >= 1):
            return super().log_softmax_backward(dY, Z, Y)
        dY, Y = _contig(dY), _contig(Y)
        dZ = _outputs.empty(dY.shape, dY.dtype)
        self._C.log_softmax_backward(dY, Y, dZ)
        return dZ

    # ------------------------------------------------------------------ losses
    def _loss(self, kernel, output, target, reduction, need_grad, count, *extra, L_shape=None):
        """Call a loss kernel: (output, target, r, *extra, L, G) -> sum of the losses."""
        mean = reduction == "mean"
        r = 1.0 / count if mean else 1.0
        L = _outputs.empty(L_shape if L_shape is not None else output.shape, output.dtype) if reduction == "none" else None
        G = _outputs.empty(output.shape, output.dtype) if need_grad else None
        total = kernel(output, target, r, *extra, L, G)
        if reduction == "none":
            return L, G
        return output.dtype.type(total / count if mean else total), G

    def _same_loss(self, op, output, target, reduction, need_grad, *extra):
        if not (_floats(output, target) and _same_shape(output, target) and reduction in _REDUCTIONS):
            return None
        output, target = _contig(output), _contig(target)
        return self._loss(getattr(self._C, op), output, target, reduction, need_grad, output.size, *extra)

    def mse_loss(self, output, target, reduction: str = "mean", need_grad: bool = True):
        out = self._same_loss("mse_loss", output, target, reduction, need_grad)
        return out if out is not None else super().mse_loss(output, target, reduction, need_grad)

    def l1_loss(self, output, target, reduction: str = "mean", need_grad: bool = True):
        out = self._same_loss("l1_loss", output, target, reduction, need_grad)
        return out if out is not None else super().l1_loss(output, target, reduction, need_grad)

    def huber_loss(self, output, target, reduction: str = "mean", delta: float = 1.0,
                   need_grad: bool = True):
        out = self._same_loss("huber_loss", output, target, reduction, need_grad, float(delta))
        return out if out is not None else super().huber_loss(output, target, reduction, delta, need_grad)

    def bce_with_logits_loss(self, logits, target, reduction: str = "mean", need_grad: bool = True):
        out = self._same_loss("bce_with_logits_loss", logits, target, reduction, need_grad)
        return out if out is not None else super().bce_with_logits_loss(logits, target, reduction, need_grad)

    def bce_loss(self, prob, target, reduction: str = "mean", need_grad: bool = True):
        out = self._same_loss("bce_loss", prob, target, reduction, need_grad)
        return out if out is not None else super().bce_loss(prob, target, reduction, need_grad)

    @staticmethod
    def _labels(target, n):
        """Integer labels as contiguous int64 (N,), or None when they are not that."""
        if isinstance(target, np.ndarray) and target.ndim == 1 and target.shape[0] == n and target.dtype.kind in "iu":
            return np.ascontiguousarray(target, dtype=np.int64)
        return None

    def cross_entropy_loss(self, logits, target, reduction: str = "mean",
                           label_smoothing: float = 0.0, need_grad: bool = True):
        ok = _floats(logits) and logits.ndim == 2 and reduction in _REDUCTIONS
        labels = probs = None
        if ok and getattr(target, "ndim", 0) == 1:
            labels = self._labels(target, logits.shape[0])
            ok = labels is not None
        elif ok:
            ok = isinstance(target, np.ndarray) and target.shape == logits.shape and target.dtype.kind in "fiu"
            if ok:
                probs = np.ascontiguousarray(target, dtype=logits.dtype)
        if not ok:
            return super().cross_entropy_loss(logits, target, reduction, label_smoothing, need_grad)
        logits = _contig(logits)

        def kernel(Z, _t, r, L, G):
            return self._C.cross_entropy_loss(Z, labels, probs, float(label_smoothing), r, L, G)

        return self._loss(kernel, logits, None, reduction, need_grad, logits.shape[0], L_shape=(logits.shape[0],))

    def nll_loss(self, logp, target, reduction: str = "mean", need_grad: bool = True):
        labels = self._labels(target, logp.shape[0]) if _floats(logp) and logp.ndim == 2 else None
        if labels is None or reduction not in _REDUCTIONS:
            return super().nll_loss(logp, target, reduction, need_grad)
        logp = _contig(logp)
        return self._loss(self._C.nll_loss, logp, labels, reduction, need_grad, logp.shape[0],
                          L_shape=(logp.shape[0],))

    # ------------------------------------------------------------------ optimizers
    @staticmethod
    def _step_ok(p, g, *state) -> bool:
        """p and the state are written in place: they must be C-contiguous and writeable; g is
        read (copied if strided)."""
        return (_floats(p, g) and _same_shape(p, g) and _writable(p.dtype, p, *state)
                and all(s is None or s.shape == p.shape for s in state))

    def sgd_step(self, p, g, momentum_buffer, lr: float, step: int, momentum: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        buf = momentum_buffer if momentum else None
        if not self._step_ok(p, g, buf):
            return super().sgd_step(p, g, momentum_buffer, lr, step, momentum, dampening, nesterov, weight_decay)
        self._C.sgd_step(p, _contig(g), buf, float(lr), int(step), float(momentum), float(dampening),
                         bool(nesterov), float(weight_decay))

    def momentum_step(self, p, g, m, lr: float, step: int, beta: float = 0.9,
                      bias_correction: bool = True, nesterov: bool = False, weight_decay: float = 0.0):
        if not (self._step_ok(p, g, m) and m is not None):
            return super().momentum_step(p, g, m, lr, step, beta, bias_correction, nesterov, weight_decay)
        self._C.momentum_step(p, _contig(g), m, float(lr), int(step), float(beta), bool(bias_correction),
                              bool(nesterov), float(weight_decay))

    def adagrad_step(self, p, g, state_sum, lr: float, step: int, lr_decay: float = 0.0,
                     weight_decay: float = 0.0, eps: float = 1e-10, eps_root: float = 0.0):
        if not (self._step_ok(p, g, state_sum) and state_sum is not None):
            return super().adagrad_step(p, g, state_sum, lr, step, lr_decay, weight_decay, eps, eps_root)
        self._C.adagrad_step(p, _contig(g), state_sum, float(lr), int(step), float(lr_decay),
                             float(weight_decay), float(eps), float(eps_root))

    def rmsprop_step(self, p, g, square_avg, grad_avg, momentum_buffer, lr: float, step: int,
                     alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                     momentum: float = 0.0, centered: bool = False,
                     bias_correction: bool = False, eps_root: float = 0.0):
        ga = grad_avg if centered else None
        mb = momentum_buffer if momentum else None
        if not (self._step_ok(p, g, square_avg, ga, mb) and square_avg is not None):
            return super().rmsprop_step(p, g, square_avg, grad_avg, momentum_buffer, lr, step, alpha, eps,
                                        weight_decay, momentum, centered, bias_correction, eps_root)
        self._C.rmsprop_step(p, _contig(g), square_avg, ga, mb, float(lr), int(step), float(alpha), float(eps),
                             float(weight_decay), float(momentum), bool(centered), bool(bias_correction),
                             float(eps_root))

    def adam_step(self, p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, lr: float, step: int,
                  beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                  weight_decay: float = 0.0, amsgrad: bool = False,
                  decoupled_weight_decay: bool = False, eps_root: float = 0.0):
        vmax = max_exp_avg_sq if amsgrad else None
        if not (self._step_ok(p, g, exp_avg, exp_avg_sq, vmax) and exp_avg is not None and exp_avg_sq is not None):
            return super().adam_step(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, step, beta1, beta2, eps,
                                     weight_decay, amsgrad, decoupled_weight_decay, eps_root)
        self._C.adam_step(p, _contig(g), exp_avg, exp_avg_sq, vmax, float(lr), int(step), float(beta1),
                          float(beta2), float(eps), float(weight_decay), bool(amsgrad),
                          bool(decoupled_weight_decay), float(eps_root))

    def adamax_step(self, p, g, exp_avg, exp_inf, lr: float, step: int, beta1: float = 0.9,
                    beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0):
        if not (self._step_ok(p, g, exp_avg, exp_inf) and exp_avg is not None and exp_inf is not None):
            return super().adamax_step(p, g, exp_avg, exp_inf, lr, step, beta1, beta2, eps, weight_decay)
        self._C.adamax_step(p, _contig(g), exp_avg, exp_inf, float(lr), int(step), float(beta1), float(beta2),
                            float(eps), float(weight_decay))

    def nadam_step(self, p, g, exp_avg, exp_avg_sq, lr: float, step: int, mu_product: float,
                   beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                   weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                   decoupled_weight_decay: bool = False):
        if not (self._step_ok(p, g, exp_avg, exp_avg_sq) and exp_avg is not None and exp_avg_sq is not None):
            return super().nadam_step(p, g, exp_avg, exp_avg_sq, lr, step, mu_product, beta1, beta2, eps,
                                      weight_decay, momentum_decay, decoupled_weight_decay)
        self._C.nadam_step(p, _contig(g), exp_avg, exp_avg_sq, float(lr), int(step), float(mu_product),
                           float(beta1), float(beta2), float(eps), float(weight_decay), float(momentum_decay),
                           bool(decoupled_weight_decay))

    def adadelta_step(self, p, g, square_avg, acc_delta, lr: float, step: int, rho: float = 0.9,
                      eps: float = 1e-6, weight_decay: float = 0.0):
        if not (self._step_ok(p, g, square_avg, acc_delta) and square_avg is not None and acc_delta is not None):
            return super().adadelta_step(p, g, square_avg, acc_delta, lr, step, rho, eps, weight_decay)
        self._C.adadelta_step(p, _contig(g), square_avg, acc_delta, float(lr), int(step), float(rho),
                              float(eps), float(weight_decay))

    # ------------------------------------------------------------------ whole step
    def train_step(self, model, X, target, loss, optimizer) -> float:
        """One training step as one native call (``_C.train_step``, GIL released).

        Native when: ``model`` is a ``Sequential`` of ``Linear`` layers and parameter-free
        elementwise activations (identity, relu, sigmoid, tanh, leaky_relu, elu, selu,
        softsign, log_sigmoid, mish, gelu, sinc, step, softplus and silu with a fixed beta),
        all its parameters in one host arena of float32/float64; ``loss`` is
        ``CrossEntropyLoss`` (labels or probabilities), ``MSELoss``, ``L1Loss``, ``HuberLoss``
        or ``BCEWithLogitsLoss`` with ``reduction="mean"`` or ``"sum"``; ``optimizer`` is one of
        fastmlp's nine (exact class) with one param group covering the whole arena. Anything
        else runs the reference composition. Afterwards the parameters, gradients, optimizer
        state and step count are those of the reference; the layers' forward caches are not
        refreshed (call ``forward`` before an explicit ``backward``).
        """
        plan = self._train_plan(model)
        spec = _loss_spec(loss) if plan is not None else None
        arena = plan[0] if plan is not None else None
        opt = _optimizer_spec(optimizer, arena, self._covers(optimizer, arena)) if spec is not None else None
        if opt is None or not isinstance(X, np.ndarray) or X.dtype != arena.data.dtype:
            return super().train_step(model, X, target, loss, optimizer)
        _, layers, layer_hyper, width = plan
        kind, mean, h = spec
        fake = np.empty((X.shape[0], width), arena.data.dtype)
        _, target = loss._prepare(fake, target, self)
        labels = probs = None
        if kind == 0 and target.ndim == 1:
            labels = np.ascontiguousarray(target, dtype=np.int64)
        else:
            probs = np.ascontiguousarray(target, dtype=arena.data.dtype)
        opt_kind, hyper, states, group, step = opt
        value, finite = self._C.train_step(
            np.ascontiguousarray(X), labels, probs, layers, layer_hyper, kind, mean, h, arena.data,
            arena.grad, opt_kind, hyper, step, *states)
        if not finite:
            loss._finite(value, self)  # raises FloatingPointError, as the reference
        group["step"] = step
        optimizer._before_group_step(group)
        return float(value)

    def _covers(self, optimizer, arena) -> bool:
        """:func:`_covers_arena`, cached per optimizer while its groups and arena are unchanged."""
        groups = optimizer.param_groups
        key = (arena, len(groups), id(groups[0]["params"]), len(groups[0]["params"]))
        cached = self._covering.get(optimizer)
        if cached is not None and cached[0] == key:
            return cached[1]
        ok = _covers_arena(optimizer, arena)
        self._covering[optimizer] = (key, ok)
        return ok

    def _train_plan(self, model):
        """``(arena, layers (L, 6) int64, hyper (L, 2) float64, output width)`` for a model
        the native step supports, else None. Cached per model and arena."""
        from ..layers import Activation, Linear

        arena = getattr(model, "_arena", None)
        steps = getattr(model, "_plan", None)
        if arena is None or steps is None or not isinstance(arena.data, np.ndarray) or arena.data.dtype not in _FLOATS:
            return None
        cached = self._plans.get(model)
        if cached is not None and cached[0] is arena and cached[1] == len(steps):
            return cached[2]
        rows, hyper = [], []
        width = None
        for layer, act in steps:
            if isinstance(layer, Linear):
                if act is not None and act.op not in FUSED_ACTIVATIONS:
                    return None
                params = [layer.weight] + ([layer.bias] if layer.bias is not None else [])
                if any(p.arena is not arena for p in params):
                    return None
                b_off = layer.bias.offset if layer.bias is not None else -1
                rows.append([0, layer.in_features, layer.out_features, layer.weight.offset, b_off,
                             _ACT[act.op if act is not None else "identity"]])
                hyper.append([0.0, 0.0])
                width = layer.out_features
            elif isinstance(layer, Activation) and act is None and not layer._params and width is not None:
                code_h = _activation_code(layer.op, layer._args())
                if code_h is None:
                    return None
                rows.append([1, width, width, 0, -1, code_h[0]])
                hyper.append(list(code_h[1]))
            else:
                return None
        plan = (arena, np.array(rows, np.int64), np.array(hyper, np.float64), width)
        self._plans[model] = (arena, len(steps), plan)
        return plan


def _activation_code(op: str, args: tuple) -> tuple[int, tuple[float, float]] | None:
    """(code, (h1, h2)) of a standalone activation layer for the native step, or None."""
    if op == "gelu":
        return (_ACT["gelu_tanh"] if args[0] == "tanh" else _ACT["gelu"]), (0.0, 0.0)
    if op == "sinc":
        return _ACT["sinc"], ((math.pi if args[0] else 1.0), 0.0)
    if op not in _ACT:
        return None
    vals = [float(a) for a in args] + [0.0, 0.0]
    return _ACT[op], (vals[0], vals[1])


def _loss_spec(loss) -> tuple[int, bool, float] | None:
    """(kind, mean, hyper) of csrc/train_step.h's LossSpec, or None if not native."""
    from ..losses import BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, MSELoss

    if loss.reduction not in ("mean", "sum"):
        return None
    mean = loss.reduction == "mean"
    kind = type(loss)
    if kind is CrossEntropyLoss:
        return 0, mean, loss.label_smoothing
    if kind is MSELoss:
        return 1, mean, 0.0
    if kind is L1Loss:
        return 2, mean, 0.0
    if kind is HuberLoss:
        return 3, mean, loss.delta
    if kind is BCEWithLogitsLoss:
        return 4, mean, 0.0
    return None


@functools.cache
def _optimizer_kinds() -> dict[type, int]:
    from ..optim import SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, Momentum, NAdam, RMSprop

    return {SGD: 0, Momentum: 1, Adagrad: 2, RMSprop: 3, Adam: 4, AdamW: 4, Adamax: 5, NAdam: 6, Adadelta: 7}


def _covers_arena(optimizer, arena) -> bool:
    """One param group whose parameters are exactly the whole arena, in one run."""
    from .._arena import segments

    if len(optimizer.param_groups) != 1:
        return False
    try:
        runs = segments(optimizer.param_groups[0]["params"])
    except ValueError:
        return False
    return len(runs) == 1 and runs[0][0] is arena and runs[0][1] == 0 and runs[0][2] == arena.size


def _optimizer_spec(optimizer, arena, covers: bool) -> tuple[int, np.ndarray, list[Any], dict, int] | None:
    """``(kind, hyper (8,), [state0, state1, state2], group, step)`` for the native step, or
    None. Hyper-parameter layout per kind (h[0] is always lr), as csrc/optimizers.h reads it:

    sgd [lr, momentum, dampening, nesterov, wd]; momentum [lr, beta, bias_correction, nesterov,
    wd]; adagrad [lr, lr_decay, wd, eps, eps_root]; rmsprop [lr, alpha, eps, wd, momentum,
    centered, bias_correction, eps_root]; adam [lr, beta1, beta2, eps, wd, amsgrad, decoupled,
    eps_root]; adamax [lr, beta1, beta2, eps, wd]; nadam [lr, mu_product (after this step),
    beta1, beta2, eps, wd, momentum_decay, decoupled]; adadelta [lr, rho, eps, wd].
    """
    code = _optimizer_kinds().get(type(optimizer))
    if code is None or not covers:
        return None
    g = optimizer.param_groups[0]
    step = g["step"] + 1
    buf = optimizer._buffer
    if code == 0:
        h = (g["lr"], g["momentum"], g["dampening"], g["nesterov"], g["weight_decay"])
        states = [buf(arena, "momentum_buffer") if g["momentum"] else None, None, None]
    elif code == 1:
        h = (g["lr"], g["beta"], g["bias_correction"], g["nesterov"], g["weight_decay"])
        states = [buf(arena, "exp_avg"), None, None]
    elif code == 2:
        h = (g["lr"], g["lr_decay"], g["weight_decay"], g["eps"], g["eps_root"])
        states = [buf(arena, "sum"), None, None]
    elif code == 3:
        h = (g["lr"], g["alpha"], g["eps"], g["weight_decay"], g["momentum"], g["centered"],
             g["bias_correction"], g["eps_root"])
        states = [buf(arena, "square_avg"), buf(arena, "grad_avg") if g["centered"] else None,
                  buf(arena, "momentum_buffer") if g["momentum"] else None]
    elif code == 4:
        b1, b2 = g["betas"]
        h = (g["lr"], b1, b2, g["eps"], g["weight_decay"], g["amsgrad"], g["decoupled_weight_decay"],
             g["eps_root"])
        states = [buf(arena, "exp_avg"), buf(arena, "exp_avg_sq"),
                  buf(arena, "max_exp_avg_sq") if g["amsgrad"] else None]
    elif code == 5:
        b1, b2 = g["betas"]
        h = (g["lr"], b1, b2, g["eps"], g["weight_decay"])
        states = [buf(arena, "exp_avg"), buf(arena, "exp_inf"), None]
    elif code == 6:
        b1, b2 = g["betas"]
        mu_product = g["mu_product"] * Backend.nadam_mu(step, b1, g["momentum_decay"])
        h = (g["lr"], mu_product, b1, b2, g["eps"], g["weight_decay"], g["momentum_decay"],
             g["decoupled_weight_decay"])
        states = [buf(arena, "exp_avg"), buf(arena, "exp_avg_sq"), None]
    else:
        h = (g["lr"], g["rho"], g["eps"], g["weight_decay"])
        states = [buf(arena, "square_avg"), buf(arena, "acc_delta"), None]
    hyper = np.zeros(8, np.float64)
    hyper[:len(h)] = h
    return code, hyper, states, g, step
