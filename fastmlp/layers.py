"""Layers and models: ``Linear``, one class per activation, ``Sequential`` and ``MLP``.

Backpropagation is explicit (no autograd tape): ``forward`` keeps what ``backward`` needs, and
``backward(dY)`` writes every parameter gradient (overwriting it, so ``zero_grad`` is optional
between steps) and returns ``dL/dX``. Every parameter of a model lives in one flat buffer (see
:mod:`fastmlp._arena`), every gradient in another.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from . import init as _init
from ._arena import Arena, Parameter, pack
from ._random import resolve_rng
from ._validate import as_batch, check_finite, check_name, is_float_dtype
from .backends import get_backend
from .losses import check_scalar_loss

__all__ = [
    "Module", "Linear", "Activation", "Sequential", "MLP", "ACTIVATIONS", "get_activation",
    "Identity", "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softplus", "Softsign",
    "LogSigmoid", "SiLU", "Swish", "Mish", "GELU", "SELU", "Sinc", "Step", "Softmax",
    "LogSoftmax",
]


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if not is_float_dtype(dt):
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dt}")
    return dt


class Module:
    """Base class of every layer and model.

    Subclasses implement ``forward(X)`` and ``backward(dY)``; parameters are declared with
    :meth:`_register` and packed into one arena by :meth:`_build_arena`.
    """

    training: bool

    def __init__(self) -> None:
        self.training = True
        self._params: OrderedDict[str, Parameter] = OrderedDict()
        self._backend_name: str | None = None
        self._arena: Arena | None = None

    # -- parameters
    def _register(self, name: str, value: np.ndarray) -> Parameter:
        p = Parameter(name, value)
        self._params[name] = p
        return p

    def children(self) -> list[tuple[str, Module]]:
        """Direct sub-modules as ``(name, module)``."""
        return []

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(qualified name, Parameter)`` pairs, PyTorch-style names (``"0.weight"``)."""
        for name, p in self._params.items():
            yield prefix + name, p
        for cname, child in self.children():
            yield from child.named_parameters(f"{prefix}{cname}.")

    def parameters(self) -> list[Parameter]:
        """Every trainable parameter, in order."""
        return [p for _, p in self.named_parameters()]

    def _build_arena(self, dtype: Any, backend_name: str | None = None) -> None:
        params = self.parameters()
        backend = get_backend(backend_name) if backend_name else get_backend("numpy")
        arena = pack(params, dtype, backend, backend_name) if params else None
        self._set_arena(arena, np.dtype(dtype))

    def _set_arena(self, arena: Arena | None, dtype: np.dtype) -> None:
        # a container's arena replaces its children's: they read their dtype from it
        self._arena, self._dtype = arena, dtype
        for _, child in self.children():
            child._set_arena(arena, dtype)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the model's parameters."""
        if self._arena is not None:
            return np.dtype(self._arena.dtype)
        return np.dtype(getattr(self, "_dtype", np.float32))

    @property
    def backend(self):
        """The backend this module runs on: the one given to :meth:`to`, else the current one."""
        return get_backend(self._backend_name)

    def zero_grad(self) -> None:
        """Set every gradient to 0 (one fill of the gradient arena)."""
        arenas = {id(p.arena): p.arena for p in self.parameters() if p.arena is not None}
        for arena in arenas.values():
            arena.grad.fill(0)

    # -- mode
    def train(self, mode: bool = True) -> Module:
        """Set training mode (recursively) and return self."""
        self.training = bool(mode)
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode and return self."""
        return self.train(False)

    # -- placement
    def to(self, backend: str | None = None, dtype: Any = None) -> Module:
        """Move the module's parameters to ``backend``'s device and/or cast them to ``dtype``,
        in place (one new arena), and return self. ``backend`` also pins the backend that
        ``forward``/``backward`` use; without it the current backend is used."""
        if backend is not None:
            get_backend(backend)  # fail now, with the reason, if unavailable
        new_backend = backend if backend is not None else self._backend_name
        new_dtype = _check_dtype(dtype) if dtype is not None else self.dtype
        self._set_backend_name(new_backend)
        if self.parameters():
            self._build_arena(new_dtype, new_backend)
        else:
            self._set_arena(None, new_dtype)
        return self

    def _set_backend_name(self, name: str | None) -> None:
        self._backend_name = name
        for _, child in self.children():
            child._set_backend_name(name)

    # -- state
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Host copies of every parameter, keyed ``"0.weight"``, ``"0.bias"``, ..."""
        be = self.backend if self._backend_name else get_backend("numpy")
        return OrderedDict((k, np.array(be.to_numpy(p.data))) for k, p in self.named_parameters())

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Copy arrays into the parameters (cast to the model's dtype).

        Raises KeyError for missing or unexpected keys (``strict``), ValueError for a shape
        mismatch or non-finite values; nothing is written unless every entry is valid.
        """
        named = dict(self.named_parameters())
        missing = [k for k in named if k not in state_dict]
        unexpected = [k for k in state_dict if k not in named]
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict mismatch: missing keys {missing}, unexpected keys {unexpected}")
        staged = []
        for k, p in named.items():
            if k not in state_dict:
                continue
            v = np.asarray(state_dict[k])
            if v.shape != p.shape:
                raise ValueError(f"state_dict[{k!r}] has shape {v.shape}, expected {p.shape}")
            if v.dtype.kind not in "fiu" or not np.isfinite(v).all():
                raise ValueError(f"state_dict[{k!r}] must be finite real numbers")
            staged.append((p, v))
        be = self.backend if self._backend_name else get_backend("numpy")
        for p, v in staged:
            p.data[...] = be.asarray(v.astype(p.dtype))

    # -- running
    def forward(self, X):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dY, need_input_grad: bool = True):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, X):
        return self.forward(X)

    def extra_repr(self) -> str:
        return ""

    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable) that rebuild this layer."""
        return {}

    def save(self, path, optimizer=None, metadata=None):
        """Save to one ``.npz`` file (see :func:`fastmlp.io.save`); ``fastmlp.load(path)``
        reads it back. Pass ``optimizer`` to resume training exactly later."""
        from .io import save

        return save(self, path, optimizer=optimizer, metadata=metadata)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


# ---------------------------------------------------------------------------- Linear
class Linear(Module):
    """Fully connected layer ``y = x W^T + b`` (the course's ``Z = X W^T + b``).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    dtype : "float32" or "float64"
    rng : int, numpy Generator or None
        Source of the initial weights: PyTorch's default, ``W ~ kaiming_uniform(a = sqrt 5)``
        (that is ``U(+-1/sqrt(in))``) and ``b ~ U(+-1/sqrt(in))``, drawn one after the other
        from one generator (an int seeds it; None: the global one of :func:`fastmlp.seed`).

    Attributes
    ----------
    weight : Parameter, shape (out_features, in_features)
    bias : Parameter, shape (out_features,), or None
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: Any = "float32", rng=None):
        super().__init__()
        for n, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{n} must be a positive integer, got {v!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        rng = resolve_rng(rng)  # one generator: an int seeding weight and bias apart drew b from W's numbers
        W = np.empty((self.out_features, self.in_features))
        _init.kaiming_uniform_(W, a=math.sqrt(5), rng=rng)
        self.weight = self._register("weight", W)
        self.bias: Parameter | None = None
        if bias:
            bound = 1 / math.sqrt(self.in_features)
            self.bias = self._register("bias", _init.uniform_(np.empty(self.out_features), -bound, bound, rng))
        self._dtype = _check_dtype(dtype)
        self._build_arena(self._dtype)
        self._X = self._Y = None
        self._activation = "identity"

    def forward(self, X, activation: str = "identity"):
        """``Y = act(X W^T + b)``; ``activation`` is one of ``FUSED_ACTIVATIONS`` (used by
        ``Sequential`` to fuse the next layer into the GEMM epilogue)."""
        be = self.backend
        X = as_batch(X, self.dtype, be, self.in_features)
        b = self.bias.data if self.bias is not None else None
        Y = be.dense_forward(X, self.weight.data, b, activation)
        self._X, self._Y, self._activation = X, Y, activation
        return Y

    def backward(self, dY, need_input_grad: bool = True):
        """Writes ``weight.grad = dZ^T X`` and ``bias.grad = sum_n dZ``; returns ``dX = dZ W``."""
        if self._X is None:
            raise RuntimeError("backward() called before forward()")
        be = self.backend
        dY = _check_grad(dY, self._Y, be)
        db = self.bias.grad if self.bias is not None else None
        dX, _, _ = be.dense_backward(dY, self._X, self.weight.data, self._Y, self._activation,
                                     self.weight.grad, db, need_input_grad)
        return dX

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None}


def _check_grad(dY, Y, be):
    """``dY`` must match the output it is the gradient of: same shape, cast to its dtype."""
    if not hasattr(dY, "shape") or tuple(dY.shape) != tuple(Y.shape):
        raise ValueError(
            f"gradient has shape {tuple(getattr(dY, 'shape', ()))}, expected the forward output's {tuple(Y.shape)}"
        )
    if isinstance(dY, np.ndarray) and be.device != "cpu":
        raise TypeError("a NumPy gradient was passed to a GPU backend: move it first")
    dY = be.xp.ascontiguousarray(be.xp.asarray(dY, dtype=Y.dtype))
    check_finite(dY, "gradient", be)  # a NaN here would reach every weight at the next step
    return dY


# ---------------------------------------------------------------------------- activations
class Activation(Module):
    """An elementwise (or last-axis) activation layer calling ``<op>_forward``/``<op>_backward``.

    Subclasses set ``op`` (the op name), ``fused`` (True if the dense op can fuse it) and
    override :meth:`_args` to pass their hyper-parameters.
    """

    op: ClassVar[str] = "identity"
    fused: ClassVar[bool] = False
    #: attribute names of the hyper-parameters, passed to the ops in this order
    hyper: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self._Z = self._Y = None

    def _args(self) -> tuple:
        return tuple(getattr(self, h) for h in self.hyper)

    def forward(self, X):
        be = self.backend
        Z = X if isinstance(X, be.xp.ndarray) and is_float_dtype(X.dtype) else be.xp.asarray(X, dtype=self.dtype)
        Y = getattr(be, f"{self.op}_forward")(Z, *self._args())
        self._Z, self._Y = Z, Y
        return Y

    def backward(self, dY, need_input_grad: bool = True):
        if self._Z is None:
            raise RuntimeError("backward() called before forward()")
        be = self.backend
        dY = _check_grad(dY, self._Y, be)
        return getattr(be, f"{self.op}_backward")(dY, self._Z, self._Y, *self._args())

    def config(self) -> dict[str, Any]:
        return {h: getattr(self, h) for h in self.hyper}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())


class Identity(Activation):
    """``y = z``: a linear (no) activation."""

    op, fused = "identity", True


class Sigmoid(Activation):
    """``sigma(z) = 1 / (1 + e^{-z})``."""

    op, fused = "sigmoid", True


class Tanh(Activation):
    """``tanh(z)``."""

    op, fused = "tanh", True


class ReLU(Activation):
    """``max(0, z)``; derivative 0 at 0."""

    op, fused = "relu", True


class LeakyReLU(Activation):
    """``z if z > 0 else negative_slope * z``."""

    op, hyper = "leaky_relu", ("negative_slope",)

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)


class ELU(Activation):
    """``z if z > 0 else alpha (e^z - 1)``."""

    op, hyper = "elu", ("alpha",)

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = float(alpha)


class _ParametricActivation(Activation):
    """An activation with one trainable parameter array, whose gradient the op returns."""

    param_name: ClassVar[str] = "weight"

    def backward(self, dY, need_input_grad: bool = True):
        if self._Z is None:
            raise RuntimeError("backward() called before forward()")
        be = self.backend
        dY = _check_grad(dY, self._Y, be)
        p = self._params.get(self.param_name)
        dZ, dparam = getattr(be, f"{self.op}_backward")(
            dY, self._Z, self._Y, *self._args(), param_grad=p is not None
        )
        if p is not None:
            p.grad[...] = dparam
        return dZ


class PReLU(_ParametricActivation):
    """``max(0, z) + alpha min(0, z)`` with a trainable ``alpha`` (He et al. 2015).

    Parameters
    ----------
    num_parameters : int
        1 (one alpha shared by all features) or the number of features (one per feature).
    init : float
        Initial alpha (PyTorch: 0.25).
    """

    op = "prelu"

    def __init__(self, num_parameters: int = 1, init: float = 0.25, dtype: Any = "float32"):
        super().__init__()
        if isinstance(num_parameters, bool) or not isinstance(num_parameters, (int, np.integer)) or num_parameters < 1:
            raise ValueError(f"num_parameters must be a positive integer, got {num_parameters!r}")
        self.num_parameters = int(num_parameters)
        self.init = float(init)
        self.weight = self._register("weight", np.full(self.num_parameters, self.init))
        self._build_arena(_check_dtype(dtype))

    def forward(self, X):
        if self.num_parameters > 1 and X.shape[-1] != self.num_parameters:
            raise ValueError(f"PReLU has {self.num_parameters} alphas but the input has {X.shape[-1]} features")
        return super().forward(X)

    def _args(self):
        return (self.weight.data,)

    def config(self):
        return {"num_parameters": self.num_parameters, "init": self.init}


class _TrainableBeta(_ParametricActivation):
    """A ``beta`` hyper-parameter that is a trainable parameter of shape (1,) when
    ``trainable=True`` and a plain float otherwise."""

    param_name = "beta"

    def _init_beta(self, beta: float, trainable: bool, dtype: Any) -> None:
        self.trainable = bool(trainable)
        self._beta = float(beta)
        if self.trainable:
            self._register("beta", np.array([self._beta]))
            self._build_arena(_check_dtype(dtype))

    @property
    def beta(self) -> float:
        p = self._params.get("beta")
        return float(p.data[0]) if p is not None else self._beta

    def config(self):
        return {**super().config(), "trainable": self.trainable}


class Softplus(_TrainableBeta):
    """Parametric softplus ``(1/beta) log(1 + e^{beta z})``, linear where ``beta z > threshold``.

    ``trainable=True`` learns ``beta`` (the parametric softplus of Xie et al., "Smooth
    Adversarial Training", as in the course).
    """

    op, hyper = "softplus", ("beta", "threshold")

    def __init__(self, beta: float = 1.0, threshold: float = 20.0, trainable: bool = False,
                 dtype: Any = "float32"):
        super().__init__()
        self.threshold = float(threshold)
        self._init_beta(beta, trainable, dtype)


class Softsign(Activation):
    """``z / (1 + |z|)``."""

    op = "softsign"


class LogSigmoid(Activation):
    """``log sigma(z) = -log(1 + e^{-z})``."""

    op = "log_sigmoid"


class SiLU(_TrainableBeta):
    """Swish ``z sigma(beta z)``; SiLU for ``beta = 1``; ``trainable=True`` learns ``beta``."""

    op, hyper = "silu", ("beta",)

    def __init__(self, beta: float = 1.0, trainable: bool = False, dtype: Any = "float32"):
        super().__init__()
        self._init_beta(beta, trainable, dtype)


Swish = SiLU


class Mish(Activation):
    """``z tanh(softplus(z))`` (Misra 2019)."""

    op = "mish"


class GELU(Activation):
    """``z Phi(z)``; ``approximate="tanh"`` for the tanh approximation."""

    op, hyper = "gelu", ("approximate",)

    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = check_name("GELU approximation", approximate, ("none", "tanh"))


class SELU(Activation):
    """``scale (z if z > 0 else alpha (e^z - 1))``, self-normalising constants."""

    op = "selu"


class Sinc(Activation):
    """``sin(z)/z`` (1 at 0); ``normalized=True`` gives ``sin(pi z)/(pi z)``."""

    op, hyper = "sinc", ("normalized",)

    def __init__(self, normalized: bool = False):
        super().__init__()
        self.normalized = bool(normalized)


class Step(Activation):
    """Heaviside step ``1 if z > 0 else 0``. Its gradient is zero everywhere: a network of
    steps cannot learn by gradient descent (the course's reason for smooth activations)."""

    op = "step"


class Softmax(Activation):
    """Softmax along the last axis."""

    op = "softmax"


class LogSoftmax(Activation):
    """Log-softmax along the last axis (pair it with ``NLLLoss``)."""

    op = "log_softmax"


ACTIVATIONS: dict[str, type[Activation]] = {
    "identity": Identity, "linear": Identity, "sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU,
    "leaky_relu": LeakyReLU, "elu": ELU, "prelu": PReLU, "softplus": Softplus,
    "softsign": Softsign, "log_sigmoid": LogSigmoid, "silu": SiLU, "swish": SiLU, "mish": Mish,
    "gelu": GELU, "selu": SELU, "sinc": Sinc, "step": Step, "softmax": Softmax,
    "log_softmax": LogSoftmax,
}
_CLASS_NAMES = {cls: name for name, cls in reversed(ACTIVATIONS.items())}


def get_activation(name: str, **kwargs: Any) -> Activation:
    """An activation layer by name (``"relu"``, ``"leaky_relu"``, ``"swish"``, ...)."""
    check_name("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name](**kwargs)


# ---------------------------------------------------------------------------- containers
class Sequential(Module):
    """Layers applied in order; every parameter in one flat arena of ``dtype``.

    A ``Linear`` followed by an identity, ReLU, sigmoid or tanh layer runs as one fused dense
    op (bias and activation in the GEMM epilogue).

    Parameters
    ----------
    *layers : Module
        Their current parameter values are copied into the new arena.
    dtype : "float32" or "float64"
    """

    def __init__(self, *layers: Module, dtype: Any = "float32"):
        super().__init__()
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layer {i} is a {type(layer).__name__}, not a fastmlp Module")
        self.layers = list(layers)
        self._dtype = _check_dtype(dtype)
        self._build_arena(self._dtype)
        self._plan = self._make_plan()
        self._out = None

    def children(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def _make_plan(self) -> list[tuple[Module, Activation | None]]:
        plan, i = [], 0
        while i < len(self.layers):
            layer = self.layers[i]
            nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
            if isinstance(layer, Linear) and isinstance(nxt, Activation) and nxt.fused:
                plan.append((layer, nxt))
                i += 2
            else:
                plan.append((layer, None))
                i += 1
        return plan

    @property
    def in_features(self) -> int | None:
        first = next((lay for lay in self.layers if isinstance(lay, Linear)), None)
        return first.in_features if first is not None else None

    @property
    def out_features(self) -> int | None:
        last = next((lay for lay in reversed(self.layers) if isinstance(lay, Linear)), None)
        return last.out_features if last is not None else None

    def forward(self, X):
        """Run every layer; ``X`` is ``(N, in_features)`` (cast to the model's dtype)."""
        X = as_batch(X, self.dtype, self.backend, self.in_features)
        for layer, act in self._plan:
            X = layer.forward(X, act.op) if act is not None else layer.forward(X)
        self._out = X
        return X

    def backward(self, dY, need_input_grad: bool = True):
        """Backpropagate ``dY = dL/d(output)``: fills every gradient and returns ``dL/dX``
        (None when ``need_input_grad=False``, which skips the first layer's input GEMM)."""
        if self._out is None:
            raise RuntimeError("backward() called before forward()")
        dY = _check_grad(dY, self._out, self.backend)
        last = len(self._plan) - 1
        for i in range(last, -1, -1):
            layer, _ = self._plan[i]
            dY = layer.backward(dY, need_input_grad or i > 0)
        return dY

    def train_step(self, X, target, loss, optimizer) -> float:
        """One training step (forward, loss, backward, optimizer step); returns the loss value.

        Runs as one native call where the backend has one, else as the composition."""
        check_scalar_loss(loss, "train_step")
        be = self.backend
        X = as_batch(X, self.dtype, be, self.in_features)
        return float(be.train_step(self, X, target, loss, optimizer))

    def predict_proba(self, X):
        """Class probabilities: softmax of the outputs (or the outputs themselves if the last
        layer is already a Softmax; ``exp`` after a LogSoftmax; for a single output unit,
        ``[1 - p, p]`` with ``p = sigmoid(output)`` unless it is already a Sigmoid)."""
        be = self.backend
        out = self.forward(X)
        last = self.layers[-1]
        if out.shape[1] == 1:
            p = out if isinstance(last, Sigmoid) else be.sigmoid_forward(out)
            return be.to_numpy(be.xp.concatenate([1 - p, p], axis=1))
        if isinstance(last, Softmax):
            return be.to_numpy(out)
        if isinstance(last, LogSoftmax):
            return be.to_numpy(be.xp.exp(out))
        return be.to_numpy(be.softmax_forward(out))

    def predict(self, X):
        """Predicted class labels (int64, host): the argmax over outputs, or ``output > 0``
        (``> 0.5`` after a Sigmoid) for a single output unit."""
        be = self.backend
        out = self.forward(X)
        if out.shape[1] == 1:
            thr = 0.5 if isinstance(self.layers[-1], Sigmoid) else 0.0
            return be.to_numpy(out[:, 0] > thr).astype(np.int64)
        return be.to_numpy(out.argmax(axis=1)).astype(np.int64)

    def summary(self) -> str:
        """A table of layers, output widths and parameter counts, with the total."""
        rows, width = [], self.in_features
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Linear):
                width = layer.out_features
            n = sum(p.size for p in layer.parameters())
            rows.append((f"{i}: {layer!r}", f"(N, {width})", f"{n:,}"))
        total = sum(p.size for p in self.parameters())
        w0 = max(len(r[0]) for r in rows + [("layer", "", "")])
        lines = [f"{'layer':<{w0}}  {'output':>12}  {'params':>12}", "-" * (w0 + 28)]
        lines += [f"{a:<{w0}}  {b:>12}  {c:>12}" for a, b, c in rows]
        lines += ["-" * (w0 + 28),
                  f"total parameters: {total:,}  dtype: {self.dtype}  backend: {self._backend_name or 'current'}"]
        return "\n".join(lines)

    def layer_configs(self) -> list[dict[str, Any]]:
        """``[{"type": "linear", ...}, {"type": "relu"}, ...]``: enough to rebuild the model."""
        out = []
        for layer in self.layers:
            if isinstance(layer, Linear):
                out.append({"type": "linear", **layer.config()})
            elif isinstance(layer, Activation):
                out.append({"type": _CLASS_NAMES[type(layer)], **layer.config()})
            else:
                raise TypeError(f"cannot describe layer {layer!r}")
        return out

    @classmethod
    def from_layer_configs(cls, configs: list[Mapping[str, Any]], dtype: Any = "float32") -> Sequential:
        """Rebuild a model from :meth:`layer_configs` (weights are initialised, not loaded)."""
        layers: list[Module] = []
        for c in configs:
            c = dict(c)
            kind = c.pop("type", None)
            if kind == "linear":
                layers.append(Linear(**c))
            elif kind in ACTIVATIONS:
                layers.append(get_activation(kind, **c))
            else:
                raise ValueError(f"unknown layer type {kind!r}")
        return cls(*layers, dtype=dtype)

    def extra_repr(self) -> str:
        return ", ".join(repr(layer) for layer in self.layers)


class MLP(Sequential):
    """A multilayer perceptron: ``Linear -> activation`` for each hidden width, then a final
    ``Linear`` (logits, unless ``output_activation`` is given).

    Parameters
    ----------
    in_features : int
    hidden : list of int
        Hidden layer widths, e.g. ``[128]`` or ``[256, 256]``.
    out_features : int
    activation : str
        Any name of :data:`ACTIVATIONS` (``"relu"``, ``"sigmoid"``, ``"leaky_relu"`` ...).
    dtype : "float32" or "float64"
    bias : bool
    output_activation : str, optional
        E.g. ``"sigmoid"`` for the course's sigmoid + MSE network.
    activation_kwargs : dict, optional
        Passed to each hidden activation (``{"negative_slope": 0.1}``).
    rng : int, numpy Generator or None
        Source of the initial weights: one generator draws every layer in turn (an int seeds
        it; None: the global one of :func:`fastmlp.seed`).

    Examples
    --------
    >>> model = MLP(784, [128], 10, activation="relu")
    >>> [k for k in model.state_dict()]
    ['0.weight', '0.bias', '2.weight', '2.bias']
    """

    def __init__(self, in_features: int, hidden: list[int] | tuple[int, ...], out_features: int,
                 activation: str = "relu", dtype: Any = "float32", bias: bool = True,
                 output_activation: str | None = None,
                 activation_kwargs: Mapping[str, Any] | None = None, rng=None):
        if isinstance(hidden, (int, np.integer)):
            hidden = [int(hidden)]
        kwargs = dict(activation_kwargs or {})
        check_name("activation", activation, ACTIVATIONS)
        widths = [in_features, *hidden]
        rng = resolve_rng(rng)  # one generator for all layers: an int per layer gave them all the same weights
        layers: list[Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers.append(Linear(a, b, bias=bias, dtype=dtype, rng=rng))
            layers.append(get_activation(activation, **kwargs))
        layers.append(Linear(widths[-1], out_features, bias=bias, dtype=dtype, rng=rng))
        if output_activation is not None:
            layers.append(get_activation(output_activation))
        super().__init__(*layers, dtype=dtype)
