"""Weight initialisers, in place, with PyTorch's names and formulas (``torch.nn.init``).

Each function fills a NumPy array (or a :class:`~fastmlp.layers.Parameter`'s ``.data``) in
place and returns it. Values are drawn on the host from ``rng`` (an int seed, a
``numpy.random.Generator``, or None for the generator of :func:`fastmlp.seed`), so a seed gives
the same weights on every backend. ``fan_in``/``fan_out`` of a ``(out, in)`` weight are ``in``
and ``out``, as in PyTorch. The names without the trailing underscore are aliases.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._random import resolve_rng

__all__ = [
    "calculate_gain",
    "constant_", "zeros_", "ones_", "normal_", "uniform_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
    "lecun_uniform_", "lecun_normal_", "orthogonal_",
    "constant", "zeros", "ones", "normal", "uniform",
    "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
    "lecun_uniform", "lecun_normal", "orthogonal",
]


def _array(tensor: Any) -> np.ndarray:
    arr = tensor if isinstance(tensor, np.ndarray) else getattr(tensor, "data", tensor)
    if not isinstance(arr, np.ndarray):
        raise TypeError(
            f"fastmlp.init fills host NumPy arrays; got {type(arr).__name__} "
            "(initialise before moving a model to a device)"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"fastmlp.init needs a floating array, got dtype {arr.dtype}")
    return arr


def _fill(tensor: Any, values: np.ndarray) -> Any:
    _array(tensor)[...] = values
    return tensor


def _fans(arr: np.ndarray) -> tuple[int, int]:
    if arr.ndim < 2:
        raise ValueError(f"fan in and fan out need an array of at least 2 dims, got shape {arr.shape}")
    receptive = int(np.prod(arr.shape[2:])) if arr.ndim > 2 else 1
    return arr.shape[1] * receptive, arr.shape[0] * receptive


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """Recommended gain for a nonlinearity (``torch.nn.init.calculate_gain``):
    linear/sigmoid 1, tanh 5/3, relu sqrt 2, leaky_relu ``sqrt(2 / (1 + a^2))``, selu 3/4."""
    if nonlinearity in ("linear", "identity", "sigmoid", "conv1d", "conv2d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        a = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + a * a))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def constant_(tensor: Any, val: float) -> Any:
    """Fill with ``val``."""
    return _fill(tensor, val)


def zeros_(tensor: Any) -> Any:
    """Fill with 0 (the course's cautionary case: every unit of a layer then learns the same)."""
    return _fill(tensor, 0.0)


def ones_(tensor: Any) -> Any:
    """Fill with 1."""
    return _fill(tensor, 1.0)


def normal_(tensor: Any, mean: float = 0.0, std: float = 1.0, rng=None) -> Any:
    """Draw from ``N(mean, std^2)``."""
    arr = _array(tensor)
    return _fill(tensor, resolve_rng(rng).normal(mean, std, arr.shape))


def uniform_(tensor: Any, a: float = 0.0, b: float = 1.0, rng=None) -> Any:
    """Draw from ``U(a, b)``."""
    arr = _array(tensor)
    return _fill(tensor, resolve_rng(rng).uniform(a, b, arr.shape))


def xavier_uniform_(tensor: Any, gain: float = 1.0, rng=None) -> Any:
    """Glorot uniform: ``U(-a, a)``, ``a = gain sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = _fans(_array(tensor))
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -a, a, rng)


def xavier_normal_(tensor: Any, gain: float = 1.0, rng=None) -> Any:
    """Glorot normal: ``N(0, std^2)``, ``std = gain sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = _fans(_array(tensor))
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng)


def _kaiming_std(tensor, a, mode, nonlinearity) -> float:
    fan_in, fan_out = _fans(_array(tensor))
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor: Any, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", rng=None) -> Any:
    """He uniform: ``U(-bound, bound)``, ``bound = gain sqrt(3 / fan)``. With ``a = sqrt 5`` this
    is PyTorch's default ``Linear`` weight: ``bound = 1 / sqrt(fan_in)``."""
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound, rng)


def kaiming_normal_(tensor: Any, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", rng=None) -> Any:
    """He normal: ``N(0, std^2)``, ``std = gain / sqrt(fan)``."""
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity), rng)


def lecun_uniform_(tensor: Any, rng=None) -> Any:
    """LeCun uniform: ``U(-a, a)``, ``a = sqrt(3 / fan_in)`` (variance ``1 / fan_in``)."""
    fan_in, _ = _fans(_array(tensor))
    a = math.sqrt(3.0 / fan_in)
    return uniform_(tensor, -a, a, rng)


def lecun_normal_(tensor: Any, rng=None) -> Any:
    """LeCun normal: ``N(0, 1 / fan_in)`` (the init SELU expects)."""
    fan_in, _ = _fans(_array(tensor))
    return normal_(tensor, 0.0, 1.0 / math.sqrt(fan_in), rng)


def orthogonal_(tensor: Any, gain: float = 1.0, rng=None) -> Any:
    """(Semi-)orthogonal matrix from the QR of a Gaussian matrix, signs fixed by ``diag(R)``
    (Saxe et al. 2013), times ``gain``."""
    arr = _array(tensor)
    if arr.ndim < 2:
        raise ValueError(f"orthogonal_ needs at least 2 dims, got shape {arr.shape}")
    rows, cols = arr.shape[0], arr.size // arr.shape[0]
    flat = resolve_rng(rng).normal(0.0, 1.0, (rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return _fill(tensor, gain * q.reshape(arr.shape))


constant, zeros, ones, normal, uniform = constant_, zeros_, ones_, normal_, uniform_
xavier_uniform, xavier_normal = xavier_uniform_, xavier_normal_
kaiming_uniform, kaiming_normal = kaiming_uniform_, kaiming_normal_
lecun_uniform, lecun_normal, orthogonal = lecun_uniform_, lecun_normal_, orthogonal_
