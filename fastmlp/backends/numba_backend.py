"""The ``numba`` backend: jitted CPU kernels for every op, and a one-call training step.

Each op validates its arguments in Python, allocates its outputs and calls the kernel of the
same name in :mod:`fastmlp.backends._numba_kernels`. What a kernel does not cover runs the
inherited NumPy reference (``super()``), case by case:

- arrays that are not NumPy ``float32``/``float64`` arrays of one dtype (float16, mixed
  dtypes, CuPy arrays ...);
- an array written in place (parameters, optimizer state, ``dW``/``db``) that is not
  C-contiguous and writeable (the reference writes through the view);
- shapes the reference broadcasts but a kernel does not (a loss target of another shape).

Read-only inputs that are not C-contiguous are copied first (documented cost, never a wrong
answer). Wrong shapes, missing state buffers and out-of-range labels raise ``ValueError``
here, before any kernel runs: a kernel never indexes out of bounds.

``train_step`` runs forward, loss, backward and the optimizer step of a ``Sequential`` of
``Linear`` layers (each followed by at most one parameter-free elementwise activation) as
one kernel call, for ``CrossEntropyLoss`` with integer labels and ``MSELoss`` (``mean`` or
``sum``) and every built-in optimizer with a single param group over the whole model; any
other combination runs the reference composition (whose ops are still this backend's
kernels). See ``docs/numba.md``.
"""

from __future__ import annotations

import functools
import math
import time
import weakref
from typing import Any

import numpy as np

try:
    import numba
except ImportError as exc:  # pragma: no cover - exercised where numba is absent
    raise ImportError("the numba backend needs numba (pip install 'fastmlp[numba]')") from exc
try:
    # numba's np.dot calls BLAS through SciPy's Cython BLAS: no SciPy, no GEMM.
    import scipy.linalg.cython_blas  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised where scipy is absent
    raise ImportError(
        "the numba backend needs SciPy: numba's np.dot calls BLAS through scipy.linalg.cython_blas "
        "(pip install 'fastmlp[numba]')"
    ) from exc

from .._validate import as_labels
from . import _numba_kernels as K
from . import _outputs
from .base import _SINC_SERIES_BOUND, FUSED_ACTIVATIONS, SELU_ALPHA, SELU_SCALE
from .numpy_backend import NumpyBackend

__all__ = ["NumbaBackend"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_FUSED_CODES = {"identity": K.ACT_IDENTITY, "relu": K.ACT_RELU, "sigmoid": K.ACT_SIGMOID,
                "tanh": K.ACT_TANH}
# activation code -> (op name, the names of its forward and backward kernels in K, looked up at
# each call)
_ACTIVATIONS = {getattr(K, f"ACT_{name.upper()}"): (name, f"{name}_forward", f"{name}_backward")
                for name in ("identity", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "selu", "gelu", "silu",
                             "softplus", "mish", "softsign", "log_sigmoid", "sinc", "step")}


def _native(*arrays: Any) -> bool:
    """True when every non-None argument is a NumPy float32/float64 array, all of one dtype."""
    dtype = None
    for a in arrays:
        if a is None:
            continue
        if type(a) is not np.ndarray or a.dtype not in _FLOATS:
            return False
        if dtype is None:
            dtype = a.dtype
        elif a.dtype != dtype:
            return False
    return dtype is not None


def _writable(*arrays: Any) -> bool:
    """True when every non-None argument can be written in place by a kernel."""
    return all(a is None or (a.flags.c_contiguous and a.flags.writeable) for a in arrays)


def _c(a: np.ndarray) -> np.ndarray:
    """``a`` itself when C-contiguous, else a C-contiguous copy (0-d stays 0-d, unlike
    ``np.ascontiguousarray``)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _flat(a: np.ndarray) -> np.ndarray:
    """A 1-D C-contiguous view of a C-contiguous array (a copy of any other)."""
    return _c(a).reshape(-1)


def _same_shape(what: str, *arrays: np.ndarray) -> None:
    shape = arrays[0].shape
    for a in arrays[1:]:
        if a.shape != shape:
            raise ValueError(f"{what}: arrays of shapes {[x.shape for x in arrays]} must have one shape")


# a size-0 array per dtype: the "none" of a kernel's optional array argument (never written)
_EMPTIES = {d: np.empty(0, d) for d in _FLOATS}


def _empty(dtype) -> np.ndarray:
    return _EMPTIES[np.dtype(dtype)]


def _consts(dtype, *values: float) -> np.ndarray:
    return np.array(values, dtype=dtype)


_GELU_CONSTS = (1 / math.sqrt(2), 1 / math.sqrt(2 * math.pi), math.sqrt(2 / math.pi), 0.044715)


# ---------------------------------------------------------------------------- thread policy
@functools.cache
def _threading_layer() -> str:
    """The threading layer numba chose for this process (its threads start here, if not yet)."""
    numba.get_num_threads()
    return numba.threading_layer()


def _parallel_threads() -> int:
    """Threads a parallel driver may use: numba's count for the calling thread
    (``NUMBA_NUM_THREADS``, ``numba.set_num_threads``), or 1 on the ``workqueue`` layer, whose
    parallel region costs ~100 µs and which aborts the process when two Python threads enter
    parallel code at once (docs/numba.md, "Thread policy")."""
    if _threading_layer() == "workqueue":
        return 1
    return numba.get_num_threads()


def _chunk(size: int, rows: int | None, threads: int) -> int:
    """Chunk length of a parallel driver: size / threads elements rounded up to whole cache
    lines (64 elements), or rows / threads rows."""
    if rows is None:
        return -(-size // (64 * threads)) * 64
    return -(-rows // threads)


class _Pace:
    """Whether one kind of call (op, dtype, size class) runs its parallel driver.

    A parallel region waits for every thread it wakes. When the other core is busy (another
    process, or BLAS worker threads spinning after a GEMM), the woken thread waits for a
    scheduler time slice, milliseconds: a 1.86M Adam step then took 6-12 ms in parallel against
    1.3 ms serial (docs/numba.md). So each path's time per element is kept, the faster path
    runs, and the slower one is timed again after 2, 4, 8 ... 256 calls: a collapse costs a few
    calls, and a recovery is found within 256.
    """

    __slots__ = ("rate", "left", "wait")

    def __init__(self) -> None:
        self.rate = [0.0, 0.0]  # seconds per element of the serial and the parallel path; 0: not timed
        self.left = 0  # calls of the faster path before the slower one is timed again
        self.wait = 2

    def parallel(self) -> bool:
        """The path of the next call (True: the parallel driver)."""
        serial, parallel = self.rate
        if not (serial and parallel):
            return not parallel  # time the parallel path first, then the serial one
        faster = parallel < serial
        if self.left:
            self.left -= 1
            return faster
        self.left, self.wait = self.wait, min(2 * self.wait, 256)
        return not faster

    def record(self, parallel: bool, rate: float) -> None:
        """Account a call of that path that took ``rate`` seconds per element."""
        serial, par = self.rate
        before = par < serial
        old = self.rate[parallel]
        # the faster path's time is smoothed (one slow call does not flip the choice alone); a
        # re-timing of the slower path replaces its time, so a recovery is taken at once
        self.rate[parallel] = (old + rate) / 2 if old and before == parallel else rate
        if (self.rate[1] < self.rate[0]) != before:  # the ranking flipped: confirm it soon
            self.left, self.wait = 2, 4


# ---------------------------------------------------------------------------- optimizer coefficients
# Each builds the coefficient array ``c`` of the kernel of the same name (layout in
# _numba_kernels.py) from the op's arguments, in float64, then cast to the dtype, as the
# reference's Python scalars are.
_TINY = {dt: float(np.finfo(dt).tiny) for dt in _FLOATS}  # smallest normal number, the flush threshold


def _tiny(dtype) -> float:
    return _TINY[np.dtype(dtype)]


def _sgd_coefficients(dtype, lr, step, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    return _consts(dtype, lr, weight_decay, momentum, 1 - dampening, bool(nesterov), step == 1, _tiny(dtype))


def _momentum_coefficients(dtype, lr, step, beta=0.9, bias_correction=True, nesterov=False,
                           weight_decay=0.0):
    scale = lr / (1 - beta**step) if bias_correction else lr
    return _consts(dtype, weight_decay, beta, 1 - beta, bool(nesterov), scale, _tiny(dtype))


def _adagrad_coefficients(dtype, lr, step, lr_decay=0.0, weight_decay=0.0, eps=1e-10, eps_root=0.0):
    return _consts(dtype, weight_decay, lr / (1 + (step - 1) * lr_decay), eps_root, eps)


def _rmsprop_coefficients(dtype, lr, step, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                          centered=False, bias_correction=False, eps_root=0.0):
    bc = 1 / (1 - alpha**step) if bias_correction else 1.0
    return _consts(dtype, weight_decay, alpha, 1 - alpha, bc, bool(centered), eps_root, eps, momentum, lr,
                   _tiny(dtype))


def _adam_coefficients(dtype, lr, step, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                       amsgrad=False, decoupled_weight_decay=False, eps_root=0.0):
    decay = 1 - lr * weight_decay if (weight_decay and decoupled_weight_decay) else 1.0
    l2 = weight_decay if (weight_decay and not decoupled_weight_decay) else 0.0
    return _consts(dtype, decay, l2, beta1, 1 - beta1, beta2, 1 - beta2, bool(amsgrad),
                   lr / (1 - beta1**step), 1 / (1 - beta2**step), eps_root, eps, _tiny(dtype))


def _adamax_coefficients(dtype, lr, step, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    return _consts(dtype, weight_decay, beta1, 1 - beta1, beta2, eps, lr / (1 - beta1**step), _tiny(dtype))


def _nadam_coefficients(dtype, lr, step, mu_product, beta1=0.9, beta2=0.999, eps=1e-8,
                        weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False):
    mu = NumpyBackend.nadam_mu(step, beta1, momentum_decay)
    mu_next = NumpyBackend.nadam_mu(step + 1, beta1, momentum_decay)
    decay = 1 - lr * weight_decay if (weight_decay and decoupled_weight_decay) else 1.0
    l2 = weight_decay if (weight_decay and not decoupled_weight_decay) else 0.0
    cg = lr * (1 - mu) / (1 - mu_product)
    cm = lr * mu_next / (1 - mu_product * mu_next)
    return _consts(dtype, decay, l2, beta1, 1 - beta1, beta2, 1 - beta2, 1 / (1 - beta2**step), eps, cg, cm,
                   _tiny(dtype))


def _adadelta_coefficients(dtype, lr, step, rho=0.9, eps=1e-6, weight_decay=0.0):
    return _consts(dtype, weight_decay, rho, 1 - rho, eps, lr, _tiny(dtype))


# ---------------------------------------------------------------------------- the fused step's plan
# activation op name -> (kernel code, hyper-parameters (h0, h1) from the layer)
def _activation_code(layer) -> tuple[int, float, float] | None:
    op = getattr(type(layer), "op", None)
    if not isinstance(op, str) or layer.parameters():
        return None  # not an activation, or a trainable one (PReLU, trainable beta)
    if op in _FUSED_CODES:
        return _FUSED_CODES[op], 0.0, 0.0
    if op == "leaky_relu":
        return K.ACT_LEAKY_RELU, layer.negative_slope, 0.0
    if op == "elu":
        return K.ACT_ELU, layer.alpha, 1.0
    if op == "selu":
        return K.ACT_SELU, SELU_ALPHA, SELU_SCALE
    if op == "gelu":
        return K.ACT_GELU, (1.0 if layer.approximate == "tanh" else 0.0), 0.0
    if op == "silu":
        return K.ACT_SILU, layer.beta, 0.0
    if op == "softplus":
        return K.ACT_SOFTPLUS, layer.beta, layer.threshold
    if op == "mish":
        return K.ACT_MISH, 0.0, 0.0
    if op == "softsign":
        return K.ACT_SOFTSIGN, 0.0, 0.0
    if op == "log_sigmoid":
        return K.ACT_LOG_SIGMOID, 0.0, 0.0
    return None


def _is_linear(layer) -> bool:
    return hasattr(layer, "weight") and hasattr(layer, "in_features") and hasattr(layer, "out_features")


# activation codes whose hyper-parameters come from the layer (read again at every step)
_TUNED = (K.ACT_LEAKY_RELU, K.ACT_ELU, K.ACT_GELU, K.ACT_SILU, K.ACT_SOFTPLUS)


class _Plan:
    """What ``train_step`` needs of a model, built once per (model, arena, layers, batch size):
    the kernel's layer table and buffers, and the last (loss, optimizer) pair checked against
    it, so a step repeats none of the checks whose answer cannot have changed."""

    __slots__ = ("arena", "layer_list", "N", "layers", "hyper", "consts", "Zbuf", "Ybuf", "D0", "D1",
                 "output", "tuned", "pair")

    def __init__(self, arena, layer_list, N, layers, hyper, Zbuf, Ybuf, D0, D1, output, tuned):
        self.arena, self.layer_list, self.N = arena, layer_list, N
        self.layers, self.hyper = layers, hyper
        self.consts = _consts(Ybuf.dtype, *_GELU_CONSTS)
        self.Zbuf, self.Ybuf, self.D0, self.D1 = Zbuf, Ybuf, D0, D1
        self.output = output  # the last layer's output buffer: what the loss checks the target against
        self.tuned = tuned  # (row, layer) of the activations with hyper-parameters
        self.pair = None  # _Pair of the last (loss, optimizer) that passed the checks

    def fits(self, arena, layer_list, N) -> bool:
        return self.arena is arena and self.N == N and self.layer_list == layer_list


class _Pair:
    """A (loss, optimizer) pair checked against a plan: the loss code and the optimizer's
    coefficient builder, valid while the optimizer's single param group is the same list."""

    __slots__ = ("loss", "optimizer", "params", "n_params", "loss_code", "build")

    def __init__(self, loss, optimizer, params, loss_code, build):
        self.loss, self.optimizer, self.params, self.n_params = loss, optimizer, params, len(params)
        self.loss_code, self.build = loss_code, build

    def fits(self, loss, optimizer) -> bool:
        if self.loss is not loss or self.optimizer is not optimizer:
            return False
        groups = optimizer.param_groups
        return len(groups) == 1 and groups[0]["params"] is self.params and len(self.params) == self.n_params


def _build_plan(N: int, arena, layer_list) -> _Plan | None:
    if type(arena.data) is not np.ndarray or arena.dtype not in _FLOATS:
        return None
    layers = layer_list
    rows, hyper, tuned, i = [], [], [], 0
    while i < len(layers):
        lin = layers[i]
        if not _is_linear(lin):
            return None
        act = (K.ACT_IDENTITY, 0.0, 0.0)
        if i + 1 < len(layers) and not _is_linear(layers[i + 1]):
            act = _activation_code(layers[i + 1])
            if act is None:
                return None
            if act[0] in _TUNED:
                tuned.append((len(rows), layers[i + 1]))
            i += 1
        i += 1
        w, b = lin.weight, lin.bias
        if w.arena is not arena or (b is not None and b.arena is not arena):
            return None
        rows.append([w.offset, b.offset if b is not None else -1, lin.in_features, lin.out_features, act[0]])
        hyper.append(act[1:])
    for r0, r1 in zip(rows[:-1], rows[1:]):
        if r0[3] != r1[2]:
            return None
    dtype = arena.dtype
    z_total = y_total = 0
    for r in rows:
        needs_z = r[4] not in (K.ACT_IDENTITY, K.ACT_RELU, K.ACT_SIGMOID, K.ACT_TANH)
        r.append(z_total if needs_z else -1)
        z_total += N * r[3] if needs_z else 0
        r.append(y_total)
        y_total += N * r[3]
    width = max(r[3] for r in rows)
    Ybuf = np.empty(y_total, dtype)
    n_out = rows[-1][3]
    return _Plan(arena, list(layer_list), N, np.array(rows, dtype=np.int64),
                 np.array(hyper, dtype=dtype).reshape(-1, 2), np.empty(z_total, dtype), Ybuf,
                 np.empty(N * width, dtype), np.empty(N * width, dtype),
                 Ybuf[rows[-1][6]:].reshape(N, n_out), tuned)


class NumbaBackend(NumpyBackend):
    """CPU backend running ``@njit`` kernels (fused loops, BLAS for the GEMMs).

    Serial kernels, and for the standalone elementwise ops (activations, optimizer steps) on
    large arrays parallel drivers over numba's threads (``NUMBA_NUM_THREADS``,
    ``numba.set_num_threads``), chosen per call: see :attr:`parallel_min_size` and
    :class:`_Pace`. ``train_step`` and the dense ops stay serial; the GEMMs run on SciPy's
    OpenBLAS with its own thread pool (``OPENBLAS_NUM_THREADS``). See ``docs/numba.md`` for the
    thread policy and measurements.
    """

    name = "numba"
    is_reference = False
    #: elements from which the standalone elementwise ops (activations, optimizer steps) may
    #: run their parallel driver over numba's threads (the pace decides, per call); below it
    #: the serial kernel wins every op measured (docs/numba.md "Thread policy").
    #: ``train_step`` and the dense ops stay serial.
    parallel_min_size: int = 1 << 15

    def __init__(self) -> None:
        self._plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._paces: dict = {}  # ((op, variant, dtype), size class) -> _Pace

    def describe(self) -> str:
        import scipy

        threads = f"{_threading_layer()} layer, {_parallel_threads()} thread(s) for the elementwise ops"
        versions = f"numpy {np.__version__}, scipy {scipy.__version__} BLAS"
        return f"numba {numba.__version__} ({threads}), {versions}"

    def all_finite(self, x) -> bool:
        """One pass of the ``all_finite`` kernel for a C-contiguous float32/64 array (5 us where
        the reference's ``isfinite(x).all()``, a mask then a reduction, takes 9 on a 64 x 784
        batch); the reference for anything else."""
        if type(x) is np.ndarray and x.dtype in _FLOATS and x.flags.c_contiguous:
            return bool(K.all_finite(x.reshape(-1)))
        return super().all_finite(x)

    # ------------------------------------------------------------------ dense
    def dense_forward(self, X, W, b=None, activation: str = "identity"):
        if activation not in FUSED_ACTIVATIONS:
            raise ValueError(f"activation {activation!r} cannot be fused; fused: {FUSED_ACTIVATIONS}")
        if not _native(X, W, b) or X.ndim != 2 or W.ndim != 2 or X.size == 0 or W.size == 0:
            return super().dense_forward(X, W, b, activation)
        N, Kin = X.shape
        M = W.shape[0]
        if W.shape[1] != Kin:
            raise ValueError(f"dense_forward: X is {X.shape} but W is {W.shape}; expected W of shape (out, {Kin})")
        if b is not None and b.shape != (M,):
            raise ValueError(f"dense_forward: bias of shape {b.shape}, expected ({M},)")
        Y = _outputs.empty((N, M), X.dtype)
        bias = _c(b) if b is not None else _empty(X.dtype)
        K.dense_forward(_c(X), _c(W), bias, _FUSED_CODES[activation], Y)
        return Y

    def dense_backward(self, dY, X, W, Y, activation: str = "identity", dW=None, db=None,
                       need_dX: bool = True):
        if activation not in FUSED_ACTIVATIONS:
            raise ValueError(f"activation {activation!r} cannot be fused; fused: {FUSED_ACTIVATIONS}")
        if (not _native(dY, X, W, Y, dW, db) or not _writable(dW, db) or X.ndim != 2 or W.ndim != 2
                or X.size == 0 or W.size == 0):
            return super().dense_backward(dY, X, W, Y, activation, dW, db, need_dX)
        N, Kin = X.shape
        M = W.shape[0]
        if W.shape[1] != Kin or dY.shape != (N, M) or Y.shape != (N, M):
            raise ValueError(
                f"dense_backward: shapes dY {dY.shape}, X {X.shape}, W {W.shape}, Y {Y.shape} do not agree"
            )
        if dW is not None and dW.shape != (M, Kin):
            raise ValueError(f"dense_backward: dW has shape {dW.shape}, expected {(M, Kin)}")
        if db is not None and db.shape != (M,):
            raise ValueError(f"dense_backward: db has shape {db.shape}, expected ({M},)")
        dtype = X.dtype
        dW_out = dW if dW is not None else _outputs.empty((M, Kin), dtype)
        dX = _outputs.empty((N, Kin), dtype) if need_dX else np.empty((0, 0), dtype)
        K.dense_backward(_c(dY), _c(X), _c(W),
                         _c(Y), _FUSED_CODES[activation], _outputs.empty((N, M), dtype),
                         dW_out, db if db is not None else _empty(dtype), dX)
        return (dX if need_dX else None), dW_out, db

    # ------------------------------------------------------------------ activations
    def _run(self, key, kernel, args, driver, dargs, size: int, rows: int | None = None):
        """``kernel(*args)``, or ``driver(chunk, *dargs)`` over numba's threads (chunks of
        elements, or of ``rows`` rows): from :attr:`parallel_min_size` elements, with two
        threads or more, when the :class:`_Pace` of ``key`` (the op, its variant and dtype) and
        the size class finds the driver the faster."""
        if size < self.parallel_min_size:
            return kernel(*args)
        threads = _parallel_threads()
        if threads < 2:
            return kernel(*args)
        key = (key, size.bit_length())
        pace = self._paces.get(key)
        if pace is None:
            pace = self._paces[key] = _Pace()
        parallel = pace.parallel()
        start = time.perf_counter()
        out = driver(_chunk(size, rows, threads), *dargs) if parallel else kernel(*args)
        pace.record(parallel, (time.perf_counter() - start) / size)
        return out

    def _forward(self, Z, code: int, h0: float = 0.0, h1: float = 0.0, consts=None):
        """The activation ``code`` of ``Z`` into a new array: its kernel, or the parallel driver
        (``K.parallel_activation_forward``), with the hyper-parameters ``h0, h1`` and constants
        ``consts`` (the kernels' common arguments, see _numba_kernels.py)."""
        name, forward, _ = _ACTIVATIONS[code]
        kernel = getattr(K, forward)
        Z = _c(Z)
        Y = _outputs.empty(Z.shape, Z.dtype)
        t = Z.dtype.type
        args = (Z.reshape(-1), Y.reshape(-1), t(h0), t(h1), _empty(Z.dtype) if consts is None else consts)
        if Z.size < self.parallel_min_size:  # the common case, without the pace
            kernel(*args)
        else:
            self._run((name, Z.dtype.char), kernel, args, K.parallel_activation_forward, (code, *args), Z.size)
        return Y

    def _backward(self, dY, Z, Y, code: int, h0: float = 0.0, h1: float = 0.0, consts=None,
                  need_param: bool = False):
        """``(dZ, d_param)`` of the activation ``code`` as in :meth:`_forward`; ``d_param``: the
        float64 parameter gradient of silu and softplus when ``need_param``."""
        name, _, backward = _ACTIVATIONS[code]
        kernel = getattr(K, backward)
        _same_shape(backward, dY, Z, Y)
        dZ = _outputs.empty(dY.shape, dY.dtype)
        t = dY.dtype.type
        args = (_flat(dY), _flat(Z), _flat(Y), dZ.reshape(-1), t(h0), t(h1),
                _empty(dY.dtype) if consts is None else consts, need_param)
        if dY.size < self.parallel_min_size:
            return dZ, kernel(*args)
        return dZ, self._run((name, need_param, dY.dtype.char), kernel, args, K.parallel_activation_backward,
                             (code, *args), dY.size)

    def sigmoid_forward(self, Z):
        if not _native(Z):
            return super().sigmoid_forward(Z)
        return self._forward(Z, K.ACT_SIGMOID)

    def sigmoid_backward(self, dY, Z, Y):
        if not _native(dY, Z, Y):
            return super().sigmoid_backward(dY, Z, Y)
        return self._backward(dY, Z, Y, K.ACT_SIGMOID)[0]

    def tanh_forward(self, Z):
        if not _native(Z):
            return super().tanh_forward(Z)
        return self._forward(Z, K.ACT_TANH)

    def tanh_backward(self, dY, Z, Y):
        if not _native(dY, Z, Y):
            return super().tanh_backward(dY, Z, Y)
        return self._backward(dY, Z, Y, K.ACT_TANH)[0]

    def relu_forward(self, Z):
        if not _native(Z):
            return super().relu_forward(Z)
        return self._forward(Z, K.ACT_RELU)

    def relu_backward(self, dY, Z, Y):
        if not _native(dY, Z, Y):
            return super().relu_backward(dY, Z, Y)
        return self._backward(dY, Z, Y, K.ACT_RELU)[0]

    def leaky_relu_forward(self, Z, negative_slope: float = 0.01):
        if not _native(Z):
            return super().leaky_relu_forward(Z, negative_slope)
        return self._forward(Z, K.ACT_LEAKY_RELU, negative_slope)

    def leaky_relu_backward(self, dY, Z, Y, negative_slope: float = 0.01):
        if not _native(dY, Z, Y):
            return super().leaky_relu_backward(dY, Z, Y, negative_slope)
        return self._backward(dY, Z, Y, K.ACT_LEAKY_RELU, negative_slope)[0]

    def elu_forward(self, Z, alpha: float = 1.0):
        if not _native(Z):
            return super().elu_forward(Z, alpha)
        return self._forward(Z, K.ACT_ELU, alpha, 1.0)

    def elu_backward(self, dY, Z, Y, alpha: float = 1.0):
        if not _native(dY, Z, Y):
            return super().elu_backward(dY, Z, Y, alpha)
        return self._backward(dY, Z, Y, K.ACT_ELU, alpha, 1.0)[0]

    def prelu_forward(self, Z, alpha):
        if not _native(Z, alpha) or Z.ndim == 0 or alpha.size not in (1, Z.shape[-1]):
            return super().prelu_forward(Z, alpha)
        Z = _c(Z)
        Y = _outputs.empty(Z.shape, Z.dtype)
        C = Z.shape[-1]
        args = (Z.reshape(-1, C), _flat(alpha), Y.reshape(-1, C))
        self._run((K.prelu_forward, Z.dtype.char), K.prelu_forward, args, K.parallel_prelu_forward, args, Z.size,
                  args[0].shape[0])
        return Y

    def prelu_backward(self, dY, Z, Y, alpha, param_grad: bool = True):
        if not _native(dY, Z, Y, alpha) or Z.ndim == 0 or alpha.size not in (1, Z.shape[-1]):
            return super().prelu_backward(dY, Z, Y, alpha, param_grad)
        _same_shape("prelu_backward", dY, Z)
        C = Z.shape[-1]
        dZ = _outputs.empty(dY.shape, dY.dtype)
        dalpha = np.zeros(alpha.size, np.float64)
        args = (_c(dY).reshape(-1, C), _c(Z).reshape(-1, C), _flat(alpha), dZ.reshape(-1, C), dalpha,
                bool(param_grad))
        self._run((K.prelu_backward, bool(param_grad), dZ.dtype.char), K.prelu_backward, args, K.parallel_prelu_backward,
                  args, dZ.size, args[0].shape[0])
        if not param_grad:
            return dZ, None
        return dZ, dalpha.astype(dY.dtype).reshape(alpha.shape)

    def softplus_forward(self, Z, beta: float = 1.0, threshold: float = 20.0):
        if not _native(Z):
            return super().softplus_forward(Z, beta, threshold)
        return self._forward(Z, K.ACT_SOFTPLUS, beta, threshold)

    def softplus_backward(self, dY, Z, Y, beta: float = 1.0, threshold: float = 20.0,
                          param_grad: bool = True):
        if not _native(dY, Z, Y):
            return super().softplus_backward(dY, Z, Y, beta, threshold, param_grad)
        dZ, acc = self._backward(dY, Z, Y, K.ACT_SOFTPLUS, beta, threshold, need_param=bool(param_grad))
        return dZ, (np.array([acc], dY.dtype) if param_grad else None)

    def softsign_forward(self, Z):
        if not _native(Z):
            return super().softsign_forward(Z)
        return self._forward(Z, K.ACT_SOFTSIGN)

    def softsign_backward(self, dY, Z, Y):
        if not _native(dY, Z, Y):
            return super().softsign_backward(dY, Z, Y)
        return self._backward(dY, Z, Y, K.ACT_SOFTSIGN)[0]

    def log_sigmoid_forward(self, Z):
        if not _native(Z):
            return super().log_sigmoid_forward(Z)
        return self._forward(Z, K.ACT_LOG_SIGMOID)

    def log_sigmoid_backward(self, dY, Z, Y):
        if not _native(dY, Z, Y):
            return super().log_sigmoid_backward(dY, Z, Y)
        return self._backward(dY, Z, Y, K.ACT_LOG_SIGMOID)[0]

    def silu_forward(self, Z, beta: float = 1.0):
        if not _native(Z):
            return super().silu_forward(Z, beta)
        return self._forward(Z, K.ACT_SILU, beta)

    def silu_backward(self, dY, Z, Y, beta: float = 1.0, param_grad: bool = True):
        if not _native(dY, Z, Y):
            return super().silu_backward(dY, Z, Y, beta, param_grad)
        dZ, acc = self._backward(dY, Z, Y, K.ACT_SILU, beta, need_param=bool(param_grad))
        return dZ, (np.array([acc], dY.dtype) if param_grad else None)

    def mish_forward(self, Z):
        if not _native(Z):
            return super().mish_forward(Z)
        return self._forward(Z, K.ACT_MISH)

    def mish_backward(self, dY, Z, Y):
        if not _native(dY, Z, Y):
            return super().mish_backward(dY, Z, Y)
        return self._backward(dY, Z, Y, K.ACT_MISH)[0]

    def gelu_forward(self, Z, approximate: str = "none"):
        if not _native(Z):
            return super().gelu_forward(Z, approximate)
        tanh, consts = approximate == "tanh", _consts(Z.dtype, *_GELU_CONSTS)
        return self._forward(Z, K.ACT_GELU, 1.0 if tanh else 0.0, consts=consts)

    def gelu_backward(self, dY, Z, Y, approximate: str = "none"):
        if not _native(dY, Z, Y):
            return super().gelu_backward(dY, Z, Y, approximate)
        tanh, consts = approximate == "tanh", _consts(dY.dtype, *_GELU_CONSTS)
        return self._backward(dY, Z, Y, K.ACT_GELU, 1.0 if tanh else 0.0, consts=consts)[0]

    def selu_forward(self, Z):
        if not _native(Z):
            return super().selu_forward(Z)
        return self._forward(Z, K.ACT_SELU, SELU_ALPHA, SELU_SCALE)

    def selu_backward(self, dY, Z, Y):
        if not _native(dY, Z, Y):
            return super().selu_backward(dY, Z, Y)
        return self._backward(dY, Z, Y, K.ACT_SELU, SELU_ALPHA, SELU_SCALE)[0]

    def sinc_forward(self, Z, normalized: bool = False):
        if not _native(Z):
            return super().sinc_forward(Z, normalized)
        scale = math.pi if normalized else 1.0
        return self._forward(Z, K.ACT_SINC, scale)

    def sinc_backward(self, dY, Z, Y, normalized: bool = False):
        if not _native(dY, Z, Y):
            return super().sinc_backward(dY, Z, Y, normalized)
        consts = _consts(dY.dtype, math.pi if normalized else 1.0, _SINC_SERIES_BOUND, 1 / 3, 1 / 30,
                         1 / 840, 1 / 45360)
        return self._backward(dY, Z, Y, K.ACT_SINC, consts=consts)[0]

    def step_forward(self, Z):
        if not _native(Z):
            return super().step_forward(Z)
        return self._forward(Z, K.ACT_STEP)

    def step_backward(self, dY, Z, Y):
        if not _native(dY, Z, Y):
            return super().step_backward(dY, Z, Y)
        return self._backward(dY, Z, Y, K.ACT_STEP)[0]

    def _rows(self, kernel, driver, log: bool, *arrays):
        """Run a last-axis kernel on ``(rows, C)`` views, or above the threshold its parallel
        ``driver`` (``log``: the log-softmax kernel); returns the new output."""
        C = arrays[0].shape[-1]
        rows = [_c(a).reshape(-1, C) for a in arrays]
        out = _outputs.empty(arrays[0].shape, arrays[0].dtype)
        rows.append(out.reshape(-1, C))
        self._run((kernel, out.dtype.char), kernel, rows, driver, (log, *rows), out.size, rows[0].shape[0])
        return out

    def softmax_forward(self, Z):
        if not _native(Z) or Z.ndim == 0 or Z.size == 0:
            return super().softmax_forward(Z)
        return self._rows(K.softmax_forward, K.parallel_softmax_forward, False, Z)

    def softmax_backward(self, dY, Z, Y):
        if not _native(dY, Z, Y) or Y.ndim == 0 or Y.size == 0:
            return super().softmax_backward(dY, Z, Y)
        _same_shape("softmax_backward", dY, Z, Y)
        return self._rows(K.softmax_backward, K.parallel_softmax_backward, False, dY, Z, Y)

    def log_softmax_forward(self, Z):
        if not _native(Z) or Z.ndim == 0 or Z.size == 0:
            return super().log_softmax_forward(Z)
        return self._rows(K.log_softmax_forward, K.parallel_softmax_forward, True, Z)

    def log_softmax_backward(self, dY, Z, Y):
        if not _native(dY, Z, Y) or Y.ndim == 0 or Y.size == 0:
            return super().log_softmax_backward(dY, Z, Y)
        _same_shape("log_softmax_backward", dY, Z, Y)
        return self._rows(K.log_softmax_backward, K.parallel_softmax_backward, True, dY, Z, Y)

    # ------------------------------------------------------------------ losses
    @staticmethod
    def _scale(reduction: str, count: int) -> float:
        return 1.0 / count if reduction == "mean" else 1.0

    @staticmethod
    def _value(total: float, L, reduction: str, count: int, dtype):
        if reduction == "mean":
            return dtype.type(total / count)
        if reduction == "sum":
            return dtype.type(total)
        return L

    def _elementwise_loss(self, kernel, output, target, reduction, need_grad, *hyper):
        dtype = output.dtype
        O, T = _flat(output), _flat(target)
        L = _outputs.empty(output.shape, dtype) if reduction not in ("mean", "sum") else None
        G = _outputs.empty(output.shape, dtype) if need_grad else None
        r = dtype.type(self._scale(reduction, output.size))
        total = kernel(O, T, *hyper, r, bool(need_grad),
                       L.reshape(-1) if L is not None else _empty(dtype),
                       G.reshape(-1) if G is not None else _empty(dtype))
        return self._value(total, L, reduction, output.size, dtype), G

    def mse_loss(self, output, target, reduction: str = "mean", need_grad: bool = True):
        if not _native(output, target) or output.shape != target.shape or output.size == 0:
            return super().mse_loss(output, target, reduction, need_grad)
        return self._elementwise_loss(K.mse_loss, output, target, reduction, need_grad)

    def l1_loss(self, output, target, reduction: str = "mean", need_grad: bool = True):
        if not _native(output, target) or output.shape != target.shape or output.size == 0:
            return super().l1_loss(output, target, reduction, need_grad)
        return self._elementwise_loss(K.l1_loss, output, target, reduction, need_grad)

    def huber_loss(self, output, target, reduction: str = "mean", delta: float = 1.0,
                   need_grad: bool = True):
        if not _native(output, target) or output.shape != target.shape or output.size == 0:
            return super().huber_loss(output, target, reduction, delta, need_grad)
        return self._elementwise_loss(K.huber_loss, output, target, reduction, need_grad,
                                      output.dtype.type(delta))

    def bce_with_logits_loss(self, logits, target, reduction: str = "mean", need_grad: bool = True):
        if not _native(logits, target) or logits.shape != target.shape or logits.size == 0:
            return super().bce_with_logits_loss(logits, target, reduction, need_grad)
        return self._elementwise_loss(K.bce_with_logits_loss, logits, target, reduction, need_grad)

    def bce_loss(self, prob, target, reduction: str = "mean", need_grad: bool = True):
        if not _native(prob, target) or prob.shape != target.shape or prob.size == 0:
            return super().bce_loss(prob, target, reduction, need_grad)
        # the kernel takes (P, T, r, floor, ...): pass floor through the hyper slot order
        dtype = prob.dtype
        L = _outputs.empty(prob.shape, dtype) if reduction not in ("mean", "sum") else None
        G = _outputs.empty(prob.shape, dtype) if need_grad else None
        r = dtype.type(self._scale(reduction, prob.size))
        total = K.bce_loss(_flat(prob), _flat(target), r, _consts(dtype, -100.0, 1e-12), bool(need_grad),
                           L.reshape(-1) if L is not None else _empty(dtype),
                           G.reshape(-1) if G is not None else _empty(dtype))
        return self._value(total, L, reduction, prob.size, dtype), G

    @staticmethod
    def _labels(target, N: int, C: int, op: str):
        """``target`` as contiguous int64 labels in [0, C), checked before any kernel runs."""
        y = np.ascontiguousarray(target, dtype=np.int64)
        if y.shape != (N,):
            raise ValueError(f"{op}: labels of shape {y.shape}, expected ({N},)")
        if N and not K.labels_in_range(y, C):
            raise ValueError(f"{op}: labels must lie in [0, {C}), got values in [{int(y.min())}, {int(y.max())}]")
        return y

    def cross_entropy_loss(self, logits, target, reduction: str = "mean",
                           label_smoothing: float = 0.0, need_grad: bool = True):
        ok = _native(logits) and logits.ndim == 2 and logits.size > 0 and isinstance(target, np.ndarray)
        probs = ok and target.ndim == 2
        if probs:
            ok = _native(logits, target) and target.shape == logits.shape
        elif ok:
            ok = target.ndim == 1 and target.dtype.kind in "iu"
        if not ok:
            return super().cross_entropy_loss(logits, target, reduction, label_smoothing, need_grad)
        N, C = logits.shape
        dtype = logits.dtype
        X = _c(logits)
        if probs:
            labels, P = np.empty(0, np.int64), _c(target)
        else:
            labels, P = self._labels(target, N, C, "cross_entropy_loss"), X
        L = _outputs.empty(N, dtype) if reduction not in ("mean", "sum") else None
        G = _outputs.empty((N, C), dtype) if need_grad else None
        r = dtype.type(self._scale(reduction, N))
        total = K.cross_entropy_loss(X, labels, P, probs, dtype.type(label_smoothing), r, bool(need_grad),
                                     L if L is not None else _empty(dtype),
                                     G if G is not None else np.empty((0, 0), dtype))
        return self._value(total, L, reduction, N, dtype), G

    def nll_loss(self, logp, target, reduction: str = "mean", need_grad: bool = True):
        if (not _native(logp) or logp.ndim != 2 or logp.size == 0 or not isinstance(target, np.ndarray)
                or target.dtype.kind not in "iu"):
            return super().nll_loss(logp, target, reduction, need_grad)
        N, C = logp.shape
        dtype = logp.dtype
        labels = self._labels(target, N, C, "nll_loss")
        L = _outputs.empty(N, dtype) if reduction not in ("mean", "sum") else None
        G = _outputs.empty((N, C), dtype) if need_grad else None
        r = dtype.type(self._scale(reduction, N))
        total = K.nll_loss(_c(logp), labels, r, bool(need_grad),
                           L if L is not None else _empty(dtype), G if G is not None else np.empty((0, 0), dtype))
        return self._value(total, L, reduction, N, dtype), G

    # ------------------------------------------------------------------ optimizers
    @staticmethod
    def _step_arrays(op: str, p, g, states, needed):
        """Validate and flatten (p, g, state...) for a kernel; None if the reference must run.

        ``needed[i]`` says whether ``states[i]`` is used by this configuration; unused ones
        may be None and are passed as empty arrays."""
        if not _native(p, g, *states) or not _writable(p, *states):
            return None
        if g.shape != p.shape:
            raise ValueError(f"{op}: gradient of shape {g.shape}, parameters of shape {p.shape}")
        flat = []
        for i, (s, need) in enumerate(zip(states, needed)):
            if need and s is None:
                raise ValueError(f"{op}: state buffer {i} is required by this configuration but is None")
            if s is not None and s.size != p.size:
                raise ValueError(f"{op}: state buffer {i} has {s.size} elements, parameters {p.size}")
            flat.append(s.reshape(-1) if s is not None else _empty(p.dtype))
        return p.reshape(-1), _flat(g), flat

    def _step(self, code: int, kernel, p, g, states, c) -> None:
        """``kernel(p, g, *states, c)``, or above the threshold ``parallel_optimizer_step`` with
        the optimizer's ``code`` (states padded with empty arrays to three)."""
        if p.size < self.parallel_min_size:
            kernel(p, g, *states, c)
            return
        pad = (_empty(p.dtype),) * (3 - len(states))
        self._run((kernel, p.dtype.char), kernel, (p, g, *states, c), K.parallel_optimizer_step,
                  (code, p, g, *states, *pad, c), p.size)

    def sgd_step(self, p, g, momentum_buffer, lr: float, step: int, momentum: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        arrays = self._step_arrays("sgd_step", p, g, [momentum_buffer], [bool(momentum)])
        if arrays is None:
            return super().sgd_step(p, g, momentum_buffer, lr, step, momentum, dampening, nesterov, weight_decay)
        pf, gf, (buf,) = arrays
        c = _sgd_coefficients(p.dtype, lr, step, momentum, dampening, nesterov, weight_decay)
        self._step(K.OPT_SGD, K.sgd_step, pf, gf, (buf,), c)

    def momentum_step(self, p, g, m, lr: float, step: int, beta: float = 0.9,
                      bias_correction: bool = True, nesterov: bool = False,
                      weight_decay: float = 0.0):
        arrays = self._step_arrays("momentum_step", p, g, [m], [True])
        if arrays is None:
            return super().momentum_step(p, g, m, lr, step, beta, bias_correction, nesterov, weight_decay)
        pf, gf, (mf,) = arrays
        c = _momentum_coefficients(p.dtype, lr, step, beta, bias_correction, nesterov, weight_decay)
        self._step(K.OPT_MOMENTUM, K.momentum_step, pf, gf, (mf,), c)

    def adagrad_step(self, p, g, state_sum, lr: float, step: int, lr_decay: float = 0.0,
                     weight_decay: float = 0.0, eps: float = 1e-10, eps_root: float = 0.0):
        arrays = self._step_arrays("adagrad_step", p, g, [state_sum], [True])
        if arrays is None:
            return super().adagrad_step(p, g, state_sum, lr, step, lr_decay, weight_decay, eps, eps_root)
        pf, gf, (sf,) = arrays
        c = _adagrad_coefficients(p.dtype, lr, step, lr_decay, weight_decay, eps, eps_root)
        self._step(K.OPT_ADAGRAD, K.adagrad_step, pf, gf, (sf,), c)

    def rmsprop_step(self, p, g, square_avg, grad_avg, momentum_buffer, lr: float, step: int,
                     alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                     momentum: float = 0.0, centered: bool = False,
                     bias_correction: bool = False, eps_root: float = 0.0):
        arrays = self._step_arrays("rmsprop_step", p, g, [square_avg, grad_avg, momentum_buffer],
                                   [True, bool(centered), bool(momentum)])
        if arrays is None:
            return super().rmsprop_step(p, g, square_avg, grad_avg, momentum_buffer, lr, step, alpha, eps,
                                        weight_decay, momentum, centered, bias_correction, eps_root)
        pf, gf, (sq, ga, mb) = arrays
        c = _rmsprop_coefficients(p.dtype, lr, step, alpha, eps, weight_decay, momentum, centered,
                                  bias_correction, eps_root)
        self._step(K.OPT_RMSPROP, K.rmsprop_step, pf, gf, (sq, ga, mb), c)

    def adam_step(self, p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, lr: float, step: int,
                  beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                  weight_decay: float = 0.0, amsgrad: bool = False,
                  decoupled_weight_decay: bool = False, eps_root: float = 0.0):
        arrays = self._step_arrays("adam_step", p, g, [exp_avg, exp_avg_sq, max_exp_avg_sq],
                                   [True, True, bool(amsgrad)])
        if arrays is None:
            return super().adam_step(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, step, beta1, beta2, eps,
                                     weight_decay, amsgrad, decoupled_weight_decay, eps_root)
        pf, gf, (m, v, vmax) = arrays
        c = _adam_coefficients(p.dtype, lr, step, beta1, beta2, eps, weight_decay, amsgrad,
                               decoupled_weight_decay, eps_root)
        self._step(K.OPT_ADAM, K.adam_step, pf, gf, (m, v, vmax), c)

    def adamax_step(self, p, g, exp_avg, exp_inf, lr: float, step: int, beta1: float = 0.9,
                    beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0):
        arrays = self._step_arrays("adamax_step", p, g, [exp_avg, exp_inf], [True, True])
        if arrays is None:
            return super().adamax_step(p, g, exp_avg, exp_inf, lr, step, beta1, beta2, eps, weight_decay)
        pf, gf, (m, u) = arrays
        c = _adamax_coefficients(p.dtype, lr, step, beta1, beta2, eps, weight_decay)
        self._step(K.OPT_ADAMAX, K.adamax_step, pf, gf, (m, u), c)

    def nadam_step(self, p, g, exp_avg, exp_avg_sq, lr: float, step: int, mu_product: float,
                   beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                   weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                   decoupled_weight_decay: bool = False):
        arrays = self._step_arrays("nadam_step", p, g, [exp_avg, exp_avg_sq], [True, True])
        if arrays is None:
            return super().nadam_step(p, g, exp_avg, exp_avg_sq, lr, step, mu_product, beta1, beta2, eps,
                                      weight_decay, momentum_decay, decoupled_weight_decay)
        pf, gf, (m, v) = arrays
        c = _nadam_coefficients(p.dtype, lr, step, mu_product, beta1, beta2, eps, weight_decay,
                                momentum_decay, decoupled_weight_decay)
        self._step(K.OPT_NADAM, K.nadam_step, pf, gf, (m, v), c)

    def adadelta_step(self, p, g, square_avg, acc_delta, lr: float, step: int, rho: float = 0.9,
                      eps: float = 1e-6, weight_decay: float = 0.0):
        arrays = self._step_arrays("adadelta_step", p, g, [square_avg, acc_delta], [True, True])
        if arrays is None:
            return super().adadelta_step(p, g, square_avg, acc_delta, lr, step, rho, eps, weight_decay)
        pf, gf, (s, d) = arrays
        c = _adadelta_coefficients(p.dtype, lr, step, rho, eps, weight_decay)
        self._step(K.OPT_ADADELTA, K.adadelta_step, pf, gf, (s, d), c)

    # ------------------------------------------------------------------ whole step
    def _plan_for(self, model, X):
        """The cached plan of ``model`` for this batch, or None if it cannot be fused."""
        arena = getattr(model, "_arena", None)
        layers = getattr(model, "layers", None)
        if arena is None or type(layers) is not list or X.dtype != arena.dtype:
            return None
        if arena.backend_name is not None and arena.backend_name != self.name:
            return None
        try:
            plan = self._plans.get(model)
        except TypeError:  # not weak-referenceable
            return None
        if plan is None or not plan.fits(arena, layers, X.shape[0]):
            plan = _build_plan(X.shape[0], arena, layers)
            if plan is None:
                return None
            self._plans[model] = plan
        return plan

    @staticmethod
    def _pair_for(plan, model, loss, optimizer):
        """The plan's checked (loss, optimizer) pair, or None if the pair cannot be fused."""
        pair = plan.pair
        if pair is not None and pair.fits(loss, optimizer):
            return pair
        codes = {"CrossEntropyLoss": K.LOSS_CROSS_ENTROPY, "MSELoss": K.LOSS_MSE}
        build = _OPTIMIZERS.get(type(optimizer).__name__)
        if type(loss).__name__ not in codes or build is None or not type(optimizer).__module__.startswith("fastmlp.optim"):
            return None
        groups = getattr(optimizer, "param_groups", None)
        if not groups or len(groups) != 1:
            return None
        gp, params = groups[0]["params"], model.parameters()
        if len(gp) != len(params) or {id(p) for p in gp} != {id(p) for p in params}:
            return None
        plan.pair = _Pair(loss, optimizer, gp, codes[type(loss).__name__], build)
        return plan.pair

    def train_step(self, model, X, target, loss, optimizer) -> float:
        """Forward, loss, backward and optimizer step as one kernel call (``train_step`` in
        ``_numba_kernels``) when the model, loss and optimizer are covered (see the module
        docstring); otherwise the reference composition. Gradients are left in the model's
        ``.grad`` as after ``backward``. Layers do not keep the step's activations (call
        ``forward`` again before a separate ``backward``)."""
        fused = self._fused_call(model, X, target, loss, optimizer)
        if fused is None:
            return super().train_step(model, X, target, loss, optimizer)
        return fused

    def _fused_call(self, model, X, target, loss, optimizer):
        if type(X) is not np.ndarray or X.ndim != 2 or X.dtype not in _FLOATS:
            return None
        plan = self._plan_for(model, X)
        if plan is None:
            return None
        pair = self._pair_for(plan, model, loss, optimizer)
        if pair is None or loss.reduction not in ("mean", "sum"):
            return None
        if not (X.flags.c_contiguous and X.flags.writeable):
            X = np.array(X, order="C")  # the kernel's layer-input variable has one (writable) type
        for row, layer in plan.tuned:  # hyper-parameters are read at every step, like the layers do
            _, plan.hyper[row, 0], plan.hyper[row, 1] = _activation_code(layer)
        N, dtype, C = X.shape[0], X.dtype, plan.output.shape[1]
        if pair.loss_code == K.LOSS_CROSS_ENTROPY:
            if not (type(target) is np.ndarray and target.dtype == np.int64 and target.shape == (N,)):
                # other label types and probability targets: the loss's own checks and conversions
                _, target = loss._prepare(plan.output, target, self)
                if target.ndim != 1:
                    return None
            elif not K.labels_in_range(target, C):
                as_labels(target, C, N, self)  # raises the reference's ValueError
            labels, T = _c(target), np.empty((0, 0), dtype)
            ls, count = dtype.type(loss.label_smoothing), N
        else:
            _, target = loss._prepare(plan.output, target, self)  # shape, type, finiteness
            labels, T = np.empty(0, np.int64), np.ascontiguousarray(target, dtype=dtype)
            ls, count = dtype.type(0.0), N * C
        r = dtype.type(1.0 / count if loss.reduction == "mean" else 1.0)
        group = optimizer.param_groups[0]
        saved_step, saved_mu = group["step"], group.get("mu_product")
        group["step"] += 1
        optimizer._before_group_step(group)
        opt, s1, s2, s3, c = pair.build(optimizer, group, plan.arena)
        total = K.train_step(X, labels, T, pair.loss_code, ls, r, plan.layers, plan.hyper, plan.consts,
                             plan.arena.data, plan.arena.grad, plan.Zbuf, plan.Ybuf, plan.D0, plan.D1,
                             opt, s1, s2, s3, c)
        value = total / count if loss.reduction == "mean" else total
        if not math.isfinite(value):
            group["step"] = saved_step  # nothing was updated: undo the step count, then raise
            if saved_mu is not None:
                group["mu_product"] = saved_mu
            loss._finite(value, self)
        return float(dtype.type(value))


# ---------------------------------------------------------------------------- the fused step's optimizers
# optimizer class name -> builder (optimizer, group, arena) -> (kernel code, s1, s2, s3, c): the
# state buffers (empty when unused) and the coefficients of the step about to run.
def _sgd(opt, group, arena):
    dt = arena.dtype
    s1 = opt._buffer(arena, "momentum_buffer") if group["momentum"] else _empty(dt)
    c = _sgd_coefficients(dt, group["lr"], group["step"], group["momentum"], group["dampening"],
                          group["nesterov"], group["weight_decay"])
    return K.OPT_SGD, s1, _empty(dt), _empty(dt), c


def _momentum(opt, group, arena):
    dt = arena.dtype
    c = _momentum_coefficients(dt, group["lr"], group["step"], group["beta"], group["bias_correction"],
                               group["nesterov"], group["weight_decay"])
    return K.OPT_MOMENTUM, opt._buffer(arena, "exp_avg"), _empty(dt), _empty(dt), c


def _adagrad(opt, group, arena):
    dt = arena.dtype
    s1 = opt._buffer(arena, "sum")
    c = _adagrad_coefficients(dt, group["lr"], group["step"], group["lr_decay"], group["weight_decay"],
                              group["eps"], group["eps_root"])
    return K.OPT_ADAGRAD, s1, _empty(dt), _empty(dt), c


def _rmsprop(opt, group, arena):
    dt = arena.dtype
    s2 = opt._buffer(arena, "grad_avg") if group["centered"] else _empty(dt)
    s3 = opt._buffer(arena, "momentum_buffer") if group["momentum"] else _empty(dt)
    c = _rmsprop_coefficients(dt, group["lr"], group["step"], group["alpha"], group["eps"],
                              group["weight_decay"], group["momentum"], group["centered"],
                              group["bias_correction"], group["eps_root"])
    return K.OPT_RMSPROP, opt._buffer(arena, "square_avg"), s2, s3, c


def _adam(opt, group, arena):
    dt = arena.dtype
    b1, b2 = group["betas"]
    s3 = opt._buffer(arena, "max_exp_avg_sq") if group["amsgrad"] else _empty(dt)
    c = _adam_coefficients(dt, group["lr"], group["step"], b1, b2, group["eps"], group["weight_decay"],
                           group["amsgrad"], group["decoupled_weight_decay"], group["eps_root"])
    return K.OPT_ADAM, opt._buffer(arena, "exp_avg"), opt._buffer(arena, "exp_avg_sq"), s3, c


def _adamax(opt, group, arena):
    dt = arena.dtype
    b1, b2 = group["betas"]
    c = _adamax_coefficients(dt, group["lr"], group["step"], b1, b2, group["eps"], group["weight_decay"])
    return K.OPT_ADAMAX, opt._buffer(arena, "exp_avg"), opt._buffer(arena, "exp_inf"), _empty(dt), c


def _nadam(opt, group, arena):
    dt = arena.dtype
    b1, b2 = group["betas"]
    c = _nadam_coefficients(dt, group["lr"], group["step"], group["mu_product"], b1, b2, group["eps"],
                            group["weight_decay"], group["momentum_decay"], group["decoupled_weight_decay"])
    return K.OPT_NADAM, opt._buffer(arena, "exp_avg"), opt._buffer(arena, "exp_avg_sq"), _empty(dt), c


def _adadelta(opt, group, arena):
    dt = arena.dtype
    c = _adadelta_coefficients(dt, group["lr"], group["step"], group["rho"], group["eps"], group["weight_decay"])
    return K.OPT_ADADELTA, opt._buffer(arena, "square_avg"), opt._buffer(arena, "acc_delta"), _empty(dt), c


_OPTIMIZERS = {"SGD": _sgd, "Momentum": _momentum, "Adagrad": _adagrad, "RMSprop": _rmsprop, "Adam": _adam,
               "AdamW": _adam, "Adamax": _adamax, "NAdam": _nadam, "Adadelta": _adadelta}
