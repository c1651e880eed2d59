"""The backend contract and the NumPy reference.

Every op of fastmlp is a method of :class:`Backend`, written once, plainly, against
``self.xp`` (NumPy here; CuPy for the GPU backend). This body *is* the definition of each op:
a fast backend subclasses :class:`Backend` (through ``NumpyBackend``), overrides what it
accelerates, and calls ``super()`` for any case its kernel does not cover.

Conventions
-----------
- Names: ``X`` input, ``W`` weight of shape ``(out, in)``, ``b`` bias, ``Z`` pre-activation,
  ``Y`` output, ``dY`` gradient of the loss with respect to ``Y``, and so on.
- Activation ops: ``<name>_forward(Z, *hyper) -> Y`` and ``<name>_backward(dY, Z, Y, *hyper)
  -> dZ``; an activation with a trainable parameter returns ``(dZ, dparam)`` from its
  backward (``dparam`` is None when ``param_grad=False``).
- Loss ops: ``<name>_loss(output, target, ..., reduction, need_grad) -> (value, grad)``; with
  ``reduction="none"`` the gradient is that of the sum of the per-element losses.
- Optimizer ops: ``<name>_step(p, g, *state, *hyper, step)`` update ``p`` and every state
  array **in place**, in one pass, and return None. ``step`` counts from 1.
- Arrays arrive validated by the layers, losses and optimizers (shape, dtype, device); ops
  compute in the dtype of their array arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

__all__ = ["Backend", "FUSED_ACTIVATIONS", "SELU_ALPHA", "SELU_SCALE", "op"]

# Activations the dense ops fuse into their epilogue: their derivative is a function of the
# output Y alone, so the backward needs no pre-activation.
FUSED_ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh")

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

# Below this |z| the sinc derivative uses its Taylor series, avoiding the cancellation in
# (z cos z - sin z) / z**2.
_SINC_SERIES_BOUND = 0.1


def op(fn: Callable) -> Callable:
    """Mark a :class:`Backend` method as an op of the dispatch API."""
    fn.__fastmlp_op__ = True  # type: ignore[attr-defined]
    return fn


class Backend:
    """The contract every backend implements, and the NumPy reference of every op.

    Attributes
    ----------
    name : str
        Registry name.
    xp : module
        The array module (``numpy`` or ``cupy``).
    device : str
        ``"cpu"`` or ``"gpu"``.
    dtypes : tuple of str
        Floating dtypes the backend runs.
    is_reference : bool
        True only for the NumPy reference itself (every op is then "native").
    """

    name: ClassVar[str] = "reference"
    xp: Any = np
    device: ClassVar[str] = "cpu"
    dtypes: ClassVar[tuple[str, ...]] = ("float32", "float64")
    is_reference: ClassVar[bool] = False

    # ------------------------------------------------------------------ utilities
    @classmethod
    def op_names(cls) -> tuple[str, ...]:
        """Names of every op of the contract, in definition order."""
        return tuple(
            name for name, fn in vars(Backend).items() if getattr(fn, "__fastmlp_op__", False)
        )

    def describe(self) -> str:
        """One line for the backend report (versions, threads)."""
        return f"numpy {np.__version__}"

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """`x` as an array of this backend's device (copied only when needed)."""
        return self.xp.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        """`x` as a NumPy array on the host."""
        return np.asarray(x)

    def all_finite(self, x: Any) -> bool:
        """True if ``x`` holds no NaN or Inf (the input checks of ``fastmlp._validate``)."""
        return bool(self.xp.isfinite(x).all())

    def empty(self, shape: Any, dtype: Any) -> Any:
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape: Any, dtype: Any) -> Any:
        return self.xp.zeros(shape, dtype=dtype)

    def erf(self, x: Any) -> Any:
        """Elementwise error function, exact to the dtype (NumPy has none; ``math.erf``)."""
        return np.frompyfunc(math.erf, 1, 1)(x).astype(x.dtype)

    def __repr__(self) -> str:
        return f"<fastmlp backend {self.name!r} on {self.device}>"

    # ------------------------------------------------------------------ dense
    @op
    def dense_forward(self, X, W, b=None, activation: str = "identity"):
        """Fused dense layer: ``Y = act(X W^T + b)`` (the course's ``Z = X W^T + b``).

        Parameters
        ----------
        X : (N, in) array
        W : (out, in) array
        b : (out,) array or None
        activation : one of ``FUSED_ACTIVATIONS``

        Returns
        -------
        Y : (N, out) array, newly allocated, dtype of ``X``.
        """
        Z = X @ W.T
        if b is not None:
            Z += b
        return self._fused_forward(Z, activation)

    @op
    def dense_backward(self, dY, X, W, Y, activation: str = "identity", dW=None, db=None,
                       need_dX: bool = True):
        """Backward of :meth:`dense_forward`.

        ``dZ = dY * act'(Y)``, ``dW = dZ^T X``, ``db = sum_n dZ``, ``dX = dZ W``.

        Parameters
        ----------
        dY, Y : (N, out) arrays
        X : (N, in) array
        W : (out, in) array
        dW : (out, in) array, optional
            Written in place (overwritten, not accumulated) when given.
        db : (out,) array, optional
            Written in place when given; when None, no bias gradient is computed.
        need_dX : bool
            When False, ``dX`` is not computed and None is returned for it.

        Returns
        -------
        (dX, dW, db)
        """
        dZ = self._fused_backward(dY, Y, activation)
        if dW is None:
            dW = dZ.T @ X
        else:
            self.xp.matmul(dZ.T, X, out=dW)
        if db is not None:
            db[...] = dZ.sum(axis=0)
        dX = dZ @ W if need_dX else None
        return dX, dW, db

    def _fused_forward(self, Z, activation: str):
        if activation == "identity":
            return Z
        if activation in ("relu", "sigmoid", "tanh"):
            return getattr(self, f"{activation}_forward")(Z)
        raise ValueError(f"activation {activation!r} cannot be fused; fused: {FUSED_ACTIVATIONS}")

    def _fused_backward(self, dY, Y, activation: str):
        if activation == "identity":
            return dY
        if activation in ("relu", "sigmoid", "tanh"):
            # relu'(z) = [y > 0], sigmoid' = y(1-y), tanh' = 1-y^2: Y suffices, Z is not read.
            return getattr(self, f"{activation}_backward")(dY, Y, Y)
        raise ValueError(f"activation {activation!r} cannot be fused; fused: {FUSED_ACTIVATIONS}")

    # ------------------------------------------------------------------ activations
    @op
    def identity_forward(self, Z):
        """``y = z`` (returns ``Z`` itself)."""
        return Z

    @op
    def identity_backward(self, dY, Z, Y):
        """``dz = dy`` (returns ``dY`` itself)."""
        return dY

    @op
    def sigmoid_forward(self, Z):
        """``sigma(z) = 1 / (1 + e^{-z})``, computed with ``e = e^{-|z|}`` as ``1 / (1 + e)`` for
        ``z >= 0`` and ``e / (1 + e)`` below: no overflow, and a few ulp relative everywhere
        (``exp(-log(1 + e^{-z}))`` lost ~17 ulp in the tail, as ``exp`` scales the log's error)."""
        xp = self.xp
        e = xp.exp(-xp.abs(Z))
        s = 1 / (1 + e)
        return xp.where(Z >= 0, s, e * s)

    @op
    def sigmoid_backward(self, dY, Z, Y):
        """``sigma'(z) = sigma(z) (1 - sigma(z))``, from ``Y``."""
        return dY * Y * (1 - Y)

    @op
    def tanh_forward(self, Z):
        """``tanh(z) = (e^z - e^{-z}) / (e^z + e^{-z})``."""
        return self.xp.tanh(Z)

    @op
    def tanh_backward(self, dY, Z, Y):
        """``tanh'(z) = 1 - tanh(z)^2``, from ``Y``."""
        return dY * (1 - Y * Y)

    @op
    def relu_forward(self, Z):
        """``relu(z) = max(0, z)``."""
        return self.xp.maximum(Z, 0)

    @op
    def relu_backward(self, dY, Z, Y):
        """``relu'(z) = 1 if z > 0 else 0`` (0 at the kink, as PyTorch). Reads ``Y`` (y > 0 iff z > 0)."""
        return self.xp.where(Y > 0, dY, 0).astype(dY.dtype, copy=False)

    @op
    def leaky_relu_forward(self, Z, negative_slope: float = 0.01):
        """``leaky_relu(z) = z if z > 0 else slope * z``."""
        return self.xp.where(Z > 0, Z, Z * negative_slope)

    @op
    def leaky_relu_backward(self, dY, Z, Y, negative_slope: float = 0.01):
        """Derivative ``1 if z > 0 else slope``."""
        return self.xp.where(Z > 0, dY, dY * negative_slope)

    @op
    def elu_forward(self, Z, alpha: float = 1.0):
        """``elu(z) = z if z > 0 else alpha (e^z - 1)``."""
        return self.xp.where(Z > 0, Z, alpha * self.xp.expm1(self.xp.minimum(Z, 0)))

    @op
    def elu_backward(self, dY, Z, Y, alpha: float = 1.0):
        """Derivative ``1 if z > 0 else alpha e^z`` (PyTorch: the test is ``z > 0``)."""
        return self.xp.where(Z > 0, dY, dY * alpha * self.xp.exp(self.xp.minimum(Z, 0)))

    @op
    def prelu_forward(self, Z, alpha):
        """``prelu(z) = max(0, z) + alpha min(0, z)``, computed as ``z if z > 0 else alpha z``
        (PyTorch's test, so NaN gives NaN); ``alpha`` of shape (1,) or (features,)."""
        return self.xp.where(Z > 0, Z, alpha * Z)

    @op
    def prelu_backward(self, dY, Z, Y, alpha, param_grad: bool = True):
        """``dz = dy if z > 0 else alpha dy`` (PyTorch: the slope at z = 0 and -0 is alpha);
        ``dalpha = sum (0 if z > 0 else dy z)`` (= ``sum dy min(0, z)``) over every axis that
        ``alpha`` is broadcast along, accumulated in float64 (a sum over the whole batch nearly
        cancels). Returns ``(dZ, dalpha)``."""
        xp = self.xp
        dZ = xp.where(Z > 0, dY, alpha * dY)
        if not param_grad:
            return dZ, None
        contrib = xp.where(Z > 0, 0, dY * Z)
        if alpha.size == 1:
            dalpha = contrib.sum(dtype=xp.float64).reshape(alpha.shape)
        else:
            dalpha = contrib.reshape(-1, alpha.size).sum(axis=0, dtype=xp.float64).reshape(alpha.shape)
        return dZ, dalpha.astype(dY.dtype, copy=False)

    @op
    def softplus_forward(self, Z, beta: float = 1.0, threshold: float = 20.0):
        """Parametric softplus ``(1/beta) log(1 + e^{beta z})``; linear where ``beta z > threshold``
        (PyTorch's rule)."""
        xp = self.xp
        bz = beta * Z
        return xp.where(bz > threshold, Z, xp.logaddexp(0, bz) / beta)

    @op
    def softplus_backward(self, dY, Z, Y, beta: float = 1.0, threshold: float = 20.0,
                          param_grad: bool = True):
        """``d/dz = sigma(beta z)``;
        ``d/dbeta = (z sigma(beta z) - softplus_beta(z)) / beta`` (0 in the linear region).
        Returns ``(dZ, dbeta)`` with ``dbeta`` of shape (1,), accumulated in float64."""
        xp = self.xp
        bz = beta * Z
        linear = bz > threshold
        s = self.sigmoid_forward(bz)
        dZ = xp.where(linear, dY, dY * s)
        if not param_grad:
            return dZ, None
        dbeta = xp.where(linear, 0, dY * (Z * s - Y) / beta).sum(dtype=xp.float64)
        return dZ, dbeta.reshape(1).astype(dY.dtype, copy=False)

    @op
    def softsign_forward(self, Z):
        """``softsign(z) = z / (1 + |z|)``."""
        return Z / (1 + self.xp.abs(Z))

    @op
    def softsign_backward(self, dY, Z, Y):
        """Derivative ``1 / (1 + |z|)^2``."""
        d = 1 + self.xp.abs(Z)
        return dY / (d * d)

    @op
    def log_sigmoid_forward(self, Z):
        """``log sigma(z) = -log(1 + e^{-z})``."""
        return -self.xp.logaddexp(0, -Z)

    @op
    def log_sigmoid_backward(self, dY, Z, Y):
        """Derivative ``1 - sigma(z) = sigma(-z)``."""
        return dY * self.sigmoid_forward(-Z)

    @op
    def silu_forward(self, Z, beta: float = 1.0):
        """Swish ``z sigma(beta z)`` (SiLU when ``beta = 1``)."""
        return Z * self.sigmoid_forward(beta * Z)

    @op
    def silu_backward(self, dY, Z, Y, beta: float = 1.0, param_grad: bool = True):
        """``d/dz = s + beta z s (1 - s)``, ``d/dbeta = z^2 s (1 - s)`` with ``s = sigma(beta z)``.
        Returns ``(dZ, dbeta)`` with ``dbeta`` of shape (1,), accumulated in float64."""
        xp = self.xp
        s = self.sigmoid_forward(beta * Z)
        ds = s * (1 - s)
        dZ = dY * (s + beta * Z * ds)
        if not param_grad:
            return dZ, None
        return dZ, (dY * Z * Z * ds).sum(dtype=xp.float64).reshape(1).astype(dY.dtype, copy=False)

    @op
    def mish_forward(self, Z):
        """``mish(z) = z tanh(softplus(z))``."""
        return Z * self.xp.tanh(self.xp.logaddexp(0, Z))

    @op
    def mish_backward(self, dY, Z, Y):
        """Derivative ``tanh(sp) + z sigma(z) (1 - tanh(sp)^2)`` with ``sp = softplus(z)``."""
        t = self.xp.tanh(self.xp.logaddexp(0, Z))
        return dY * (t + Z * self.sigmoid_forward(Z) * (1 - t * t))

    @op
    def gelu_forward(self, Z, approximate: str = "none"):
        """Exact ``z Phi(z) = z/2 (1 + erf(z / sqrt 2))``, or with ``approximate="tanh"``
        ``z/2 (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))``."""
        if approximate == "tanh":
            k = math.sqrt(2 / math.pi)
            return 0.5 * Z * (1 + self.xp.tanh(k * (Z + 0.044715 * Z**3)))
        return 0.5 * Z * (1 + self.erf(Z * (1 / math.sqrt(2))))

    @op
    def gelu_backward(self, dY, Z, Y, approximate: str = "none"):
        """Exact: ``Phi(z) + z phi(z)``; tanh form: ``0.5 (1 + t) + 0.5 z (1 - t^2) k (1 + 3c z^2)``."""
        xp = self.xp
        if approximate == "tanh":
            k, c = math.sqrt(2 / math.pi), 0.044715
            t = xp.tanh(k * (Z + c * Z**3))
            return dY * (0.5 * (1 + t) + 0.5 * Z * (1 - t * t) * k * (1 + 3 * c * Z * Z))
        cdf = 0.5 * (1 + self.erf(Z * (1 / math.sqrt(2))))
        pdf = xp.exp(-0.5 * Z * Z) * (1 / math.sqrt(2 * math.pi))
        return dY * (cdf + Z * pdf)

    @op
    def selu_forward(self, Z):
        """``selu(z) = scale (z if z > 0 else alpha (e^z - 1))`` with the constants of
        Klambauer et al. (2017)."""
        return SELU_SCALE * self.elu_forward(Z, SELU_ALPHA)

    @op
    def selu_backward(self, dY, Z, Y):
        """Derivative ``scale (1 if z > 0 else alpha e^z)``."""
        return SELU_SCALE * self.elu_backward(dY, Z, Y, SELU_ALPHA)

    @op
    def sinc_forward(self, Z, normalized: bool = False):
        """``sinc(z) = sin(z) / z`` with value 1 at 0; ``normalized`` gives ``sin(pi z)/(pi z)``."""
        xp = self.xp
        return xp.sinc(Z if normalized else Z * (1 / math.pi)).astype(Z.dtype, copy=False)

    @op
    def sinc_backward(self, dY, Z, Y, normalized: bool = False):
        """``d/du sin(u)/u = (cos u - sin(u)/u) / u``, by its Taylor series
        ``-u/3 + u^3/30 - u^5/840 + u^7/45360`` where ``|u| < 0.1``; ``u = pi z`` when normalized
        (times ``pi``)."""
        xp = self.xp
        scale = math.pi if normalized else 1.0
        u = Z * scale
        small = xp.abs(u) < _SINC_SERIES_BOUND
        safe = xp.where(small, 1, u)
        direct = (xp.cos(safe) - xp.sin(safe) / safe) / safe
        u2 = u * u
        series = u * (-1 / 3 + u2 * (1 / 30 + u2 * (-1 / 840 + u2 / 45360)))
        return dY * (scale * xp.where(small, series, direct))

    @op
    def step_forward(self, Z):
        """Heaviside step ``1 if z > 0 else 0`` (0 at 0, like ``relu'``)."""
        return (Z > 0).astype(Z.dtype)

    @op
    def step_backward(self, dY, Z, Y):
        """The step's derivative is 0 everywhere it exists: no gradient flows through it."""
        return self.xp.zeros_like(dY)

    @op
    def softmax_forward(self, Z):
        """``softmax(z)_i = e^{z_i - max z} / sum_j e^{z_j - max z}`` along the last axis."""
        E = self.xp.exp(Z - Z.max(axis=-1, keepdims=True))
        return E / E.sum(axis=-1, keepdims=True)

    @op
    def softmax_backward(self, dY, Z, Y):
        """``dz = y * (dy - sum_j dy_j y_j)`` along the last axis."""
        return Y * (dY - (dY * Y).sum(axis=-1, keepdims=True))

    @op
    def log_softmax_forward(self, Z):
        """``log_softmax(z)_i = z_i - max z - log sum_j e^{z_j - max z}`` along the last axis."""
        S = Z - Z.max(axis=-1, keepdims=True)
        return S - self.xp.log(self.xp.exp(S).sum(axis=-1, keepdims=True))

    @op
    def log_softmax_backward(self, dY, Z, Y):
        """``dz = dy - softmax(z) * sum_j dy_j``, with ``softmax(z) = e^y``."""
        return dY - self.xp.exp(Y) * dY.sum(axis=-1, keepdims=True)

    # ------------------------------------------------------------------ losses
    @staticmethod
    def _reduce(L, reduction: str, count: int):
        if reduction == "mean":
            return L.sum() / count, 1.0 / count
        if reduction == "sum":
            return L.sum(), 1.0
        return L, 1.0

    @op
    def mse_loss(self, output, target, reduction: str = "mean", need_grad: bool = True):
        """``L = (output - target)^2`` per element, reduced; ``dL/doutput = 2 (output - target) * r``
        with ``r = 1/numel`` for ``mean``, 1 otherwise."""
        D = output - target
        value, r = self._reduce(D * D, reduction, D.size)
        return value, (D * (2 * r) if need_grad else None)

    @op
    def l1_loss(self, output, target, reduction: str = "mean", need_grad: bool = True):
        """``L = |output - target|``; gradient ``sign(output - target)`` (0 at 0, as PyTorch)."""
        D = output - target
        value, r = self._reduce(self.xp.abs(D), reduction, D.size)
        return value, (self.xp.sign(D) * r if need_grad else None)

    @op
    def huber_loss(self, output, target, reduction: str = "mean", delta: float = 1.0,
                   need_grad: bool = True):
        """``L = d^2/2 if |d| <= delta else delta (|d| - delta/2)``, ``d = output - target``;
        gradient ``d`` clipped to ``[-delta, delta]``."""
        xp = self.xp
        D = output - target
        A = xp.abs(D)
        L = xp.where(A <= delta, 0.5 * D * D, delta * (A - 0.5 * delta))
        value, r = self._reduce(L, reduction, D.size)
        return value, (xp.clip(D, -delta, delta) * r if need_grad else None)

    @op
    def cross_entropy_loss(self, logits, target, reduction: str = "mean",
                           label_smoothing: float = 0.0, need_grad: bool = True):
        """Softmax and cross-entropy in one op, from logits ``(N, C)``.

        ``L_n = -sum_c q_nc log softmax(z_n)_c`` where ``q`` is the one-hot of integer labels
        ``(N,)`` or the given class probabilities ``(N, C)``, smoothed as
        ``q = (1 - ls) q + ls / C``. ``mean`` divides by ``N``. Gradient
        ``(softmax(z) - q) * r``.
        """
        xp = self.xp
        N, C = logits.shape
        logp = self.log_softmax_forward(logits)
        if target.ndim == 1:
            Q = xp.zeros_like(logits)
            Q[xp.arange(N), target] = 1
        else:
            Q = target.astype(logits.dtype, copy=False)
        if label_smoothing:
            Q = Q * (1 - label_smoothing) + label_smoothing / C
        L = -(Q * logp).sum(axis=1)
        value, r = self._reduce(L, reduction, N)
        if not need_grad:
            return value, None
        return value, (xp.exp(logp) - Q) * r

    @op
    def nll_loss(self, logp, target, reduction: str = "mean", need_grad: bool = True):
        """Negative log-likelihood from log-probabilities ``(N, C)`` and labels ``(N,)``:
        ``L_n = -logp[n, t_n]``; gradient ``-onehot(t) * r``."""
        xp = self.xp
        N = logp.shape[0]
        rows = xp.arange(N)
        value, r = self._reduce(-logp[rows, target], reduction, N)
        if not need_grad:
            return value, None
        G = xp.zeros_like(logp)
        G[rows, target] = -r
        return value, G

    @op
    def bce_with_logits_loss(self, logits, target, reduction: str = "mean",
                             need_grad: bool = True):
        """Binary cross-entropy from logits, stable form
        ``L = max(z, 0) - z t + log(1 + e^{-|z|})``; gradient ``(sigma(z) - t) * r``."""
        xp = self.xp
        L = xp.maximum(logits, 0) - logits * target + xp.logaddexp(0, -xp.abs(logits))
        value, r = self._reduce(L, reduction, L.size)
        return value, ((self.sigmoid_forward(logits) - target) * r if need_grad else None)

    @op
    def bce_loss(self, prob, target, reduction: str = "mean", need_grad: bool = True):
        """Binary cross-entropy ``L = -(t log p + (1 - t) log(1 - p))`` with each log clamped to
        ``>= -100``; gradient ``(p - t) / max(p (1 - p), 1e-12) * r`` (PyTorch's rules)."""
        xp = self.xp
        with np.errstate(divide="ignore"):
            logp = xp.maximum(xp.log(prob), -100)
            log1mp = xp.maximum(xp.log1p(-prob), -100)
        L = -(target * logp + (1 - target) * log1mp)
        value, r = self._reduce(L, reduction, L.size)
        if not need_grad:
            return value, None
        return value, (prob - target) / xp.maximum(prob * (1 - prob), 1e-12) * r

    # ------------------------------------------------------------------ optimizers
    @op
    def sgd_step(self, p, g, momentum_buffer, lr: float, step: int, momentum: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        """PyTorch SGD, in place.

        ``g <- g + wd p``; with momentum: ``buf <- g`` at step 1, else
        ``buf <- mu buf + (1 - dampening) g``; ``g <- g + mu buf`` (Nesterov) or ``g <- buf``;
        then ``p <- p - lr g``. ``momentum_buffer`` is None when ``momentum == 0``.
        """
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            if step == 1:
                momentum_buffer[...] = g
            else:
                momentum_buffer *= momentum
                momentum_buffer += (1 - dampening) * g
            g = g + momentum * momentum_buffer if nesterov else momentum_buffer
        p -= lr * g

    @op
    def momentum_step(self, p, g, m, lr: float, step: int, beta: float = 0.9,
                      bias_correction: bool = True, nesterov: bool = False,
                      weight_decay: float = 0.0):
        """The course's momentum: an exponentially weighted average of the gradients.

        ``m_t = beta m_{t-1} + (1 - beta) g_t``; update ``u = m_t`` or, with Nesterov,
        ``u = beta m_t + (1 - beta) g_t`` (the look-ahead gradient approximated by the current
        one, as NAdam and PyTorch's Nesterov SGD do); with bias correction ``u / (1 - beta^t)``;
        ``theta_t = theta_{t-1} - alpha u``. ``g`` first gets ``+ wd p``.
        """
        if weight_decay:
            g = g + weight_decay * p
        m *= beta
        m += (1 - beta) * g
        u = beta * m + (1 - beta) * g if nesterov else m
        scale = lr / (1 - beta**step) if bias_correction else lr
        p -= scale * u

    @op
    def adagrad_step(self, p, g, state_sum, lr: float, step: int, lr_decay: float = 0.0,
                     weight_decay: float = 0.0, eps: float = 1e-10, eps_root: float = 0.0):
        """PyTorch Adagrad, with the course's epsilon inside the root as ``eps_root``.

        ``g <- g + wd p``; ``s <- s + g^2``;
        ``p <- p - lr / (1 + (t - 1) lr_decay) * g / (sqrt(s + eps_root) + eps)``.
        """
        xp = self.xp
        if weight_decay:
            g = g + weight_decay * p
        clr = lr / (1 + (step - 1) * lr_decay)
        state_sum += g * g
        p -= clr * g / (xp.sqrt(state_sum + eps_root) + eps)

    @op
    def rmsprop_step(self, p, g, square_avg, grad_avg, momentum_buffer, lr: float, step: int,
                     alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                     momentum: float = 0.0, centered: bool = False,
                     bias_correction: bool = False, eps_root: float = 0.0):
        """PyTorch RMSprop plus the course's bias correction and ``eps_root``.

        ``v <- alpha v + (1 - alpha) g^2``; centered: ``a <- alpha a + (1 - alpha) g`` and
        ``v~ = v - a^2``; with bias correction ``v`` and ``a`` are divided by ``1 - alpha^t``;
        ``d = sqrt(v~ + eps_root) + eps``; ``buf <- mu buf + g / d`` and ``p <- p - lr buf``
        (momentum), else ``p <- p - lr g / d``. ``grad_avg`` is None unless centered,
        ``momentum_buffer`` None unless ``momentum > 0``.
        """
        xp = self.xp
        if weight_decay:
            g = g + weight_decay * p
        square_avg *= alpha
        square_avg += (1 - alpha) * g * g
        c = 1 / (1 - alpha**step) if bias_correction else 1.0
        v = square_avg * c
        if centered:
            grad_avg *= alpha
            grad_avg += (1 - alpha) * g
            a = grad_avg * c
            v = v - a * a
        denom = xp.sqrt(v + eps_root) + eps
        if momentum:
            momentum_buffer *= momentum
            momentum_buffer += g / denom
            p -= lr * momentum_buffer
        else:
            p -= lr * g / denom

    @staticmethod
    def _weight_decay(p, g, lr: float, weight_decay: float, decoupled: bool):
        """L2 penalty ``g + wd p`` (a new array), or decoupled decay ``p <- p (1 - lr wd)`` in
        place (Loshchilov & Hutter); returns the gradient to use."""
        if not weight_decay:
            return g
        if decoupled:
            p *= 1 - lr * weight_decay
            return g
        return g + weight_decay * p

    @op
    def adam_step(self, p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, lr: float, step: int,
                  beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                  weight_decay: float = 0.0, amsgrad: bool = False,
                  decoupled_weight_decay: bool = False, eps_root: float = 0.0):
        """PyTorch Adam / AdamW, with the course's ``eps_root``.

        Weight decay: ``p <- p (1 - lr wd)`` (decoupled, AdamW) or ``g <- g + wd p``.
        ``m <- b1 m + (1 - b1) g``; ``v <- b2 v + (1 - b2) g^2``; AMSGrad: ``vmax <- max(vmax, v)``
        and ``v`` below means ``vmax``;
        ``p <- p - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t) + eps_root) + eps)``.
        ``max_exp_avg_sq`` is None unless ``amsgrad``.
        """
        xp = self.xp
        g = self._weight_decay(p, g, lr, weight_decay, decoupled_weight_decay)
        exp_avg *= beta1
        exp_avg += (1 - beta1) * g
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * g * g
        v = exp_avg_sq
        if amsgrad:
            xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            v = max_exp_avg_sq
        bc1 = 1 - beta1**step
        bc2 = 1 - beta2**step
        p -= (lr / bc1) * exp_avg / (xp.sqrt(v / bc2 + eps_root) + eps)

    @op
    def adamax_step(self, p, g, exp_avg, exp_inf, lr: float, step: int, beta1: float = 0.9,
                    beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0):
        """PyTorch Adamax (Adam with the infinity norm).

        ``g <- g + wd p``; ``m <- b1 m + (1 - b1) g``; ``u <- max(b2 u, |g| + eps)``;
        ``p <- p - lr / (1 - b1^t) * m / u``.
        """
        xp = self.xp
        if weight_decay:
            g = g + weight_decay * p
        exp_avg *= beta1
        exp_avg += (1 - beta1) * g
        xp.maximum(exp_inf * beta2, xp.abs(g) + eps, out=exp_inf)
        p -= (lr / (1 - beta1**step)) * exp_avg / exp_inf

    @staticmethod
    def nadam_mu(step: int, beta1: float, momentum_decay: float) -> float:
        """NAdam's momentum schedule ``mu_t = b1 (1 - 0.5 * 0.96^(t psi))``."""
        return beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))

    @op
    def nadam_step(self, p, g, exp_avg, exp_avg_sq, lr: float, step: int, mu_product: float,
                   beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                   weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                   decoupled_weight_decay: bool = False):
        """PyTorch NAdam (Dozat 2016: Adam with Nesterov momentum).

        ``mu_t = b1 (1 - 0.5 * 0.96^(t psi))``; ``mu_product = prod_{i<=t} mu_i`` (given, it is
        the optimizer's scalar state, already including ``mu_t``);
        ``m <- b1 m + (1 - b1) g``; ``v <- b2 v + (1 - b2) g^2``;
        ``d = sqrt(v / (1 - b2^t)) + eps``;
        ``p <- p - lr (1 - mu_t) / (1 - mu_product) g / d
                 - lr mu_{t+1} / (1 - mu_product mu_{t+1}) m / d``.
        """
        xp = self.xp
        g = self._weight_decay(p, g, lr, weight_decay, decoupled_weight_decay)
        mu = self.nadam_mu(step, beta1, momentum_decay)
        mu_next = self.nadam_mu(step + 1, beta1, momentum_decay)
        exp_avg *= beta1
        exp_avg += (1 - beta1) * g
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * g * g
        denom = xp.sqrt(exp_avg_sq / (1 - beta2**step)) + eps
        p -= (lr * (1 - mu) / (1 - mu_product)) * g / denom
        p -= (lr * mu_next / (1 - mu_product * mu_next)) * exp_avg / denom

    @op
    def adadelta_step(self, p, g, square_avg, acc_delta, lr: float, step: int, rho: float = 0.9,
                      eps: float = 1e-6, weight_decay: float = 0.0):
        """PyTorch Adadelta (Zeiler 2012; the course's slide, its typo corrected: the second
        average is of the squared *updates*).

        ``s <- rho s + (1 - rho) g^2``; ``delta = sqrt(D + eps) / sqrt(s + eps) g``;
        ``D <- rho D + (1 - rho) delta^2``; ``p <- p - lr delta``.
        """
        xp = self.xp
        if weight_decay:
            g = g + weight_decay * p
        square_avg *= rho
        square_avg += (1 - rho) * g * g
        delta = xp.sqrt(acc_delta + eps) / xp.sqrt(square_avg + eps) * g
        acc_delta *= rho
        acc_delta += (1 - rho) * delta * delta
        p -= lr * delta

    # ------------------------------------------------------------------ whole step
    @op
    def train_step(self, model, X, target, loss, optimizer) -> float:
        """One training step: forward, loss, backward, optimizer step. Returns the loss value.

        The reference is the plain composition; a backend may run it as one native call.
        Arguments are already validated by ``model.train_step``.
        """
        output = model.forward(X)
        value, grad = loss.value_and_grad(output, target, backend=self)
        model.backward(grad, need_input_grad=False)
        optimizer.step()
        return value
