"""Input checks shared by layers, losses and optimizers: each raises a clear Python exception
(naming what was wrong and what was expected) before any kernel runs."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_batch", "as_labels", "check_finite", "check_name", "is_float_dtype"]


def is_float_dtype(dtype: Any) -> bool:
    return np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.float64))


def check_name(kind: str, name: str, known) -> str:
    """Return ``name`` if it is one of ``known``, else raise ValueError listing them."""
    if name not in known:
        raise ValueError(f"unknown {kind} {name!r}; expected one of: {', '.join(sorted(known))}")
    return name


def _host_or_device(x: Any, backend) -> Any:
    xp = backend.xp
    if isinstance(x, xp.ndarray):
        return x
    if backend.device != "cpu" and isinstance(x, np.ndarray):
        raise TypeError(
            f"a NumPy array was passed to the {backend.name!r} backend on {backend.device}; "
            "move it first (backend.asarray(x)): arrays never cross devices silently"
        )
    return x


def as_batch(X: Any, dtype: Any, backend, n_features: int | None = None, name: str = "X") -> Any:
    """``X`` as a C-contiguous ``(N, features)`` array of ``dtype`` on ``backend``'s device.

    Real numeric input (float, int, uint) is cast to ``dtype``; a non-contiguous array is copied.
    Rejected with an exception: other dtypes (bool, complex, object, str), a wrong number of
    dimensions or features, an empty batch, NaN or Inf.
    """
    X = _host_or_device(X, backend)
    xp = backend.xp
    if not hasattr(X, "dtype"):
        X = np.asarray(X)
    kind = np.dtype(X.dtype).kind
    if kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers (float or int), got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (batch, features), got shape {tuple(X.shape)}; "
            "reshape a single sample with x.reshape(1, -1)"
        )
    if X.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(X.shape)})")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features per sample, expected {n_features}")
    X = xp.ascontiguousarray(xp.asarray(X, dtype=dtype))
    check_finite(X, name, backend)
    return X


def check_finite(X: Any, name: str, backend) -> None:
    """Raise FloatingPointError if ``X`` holds NaN or Inf."""
    if not backend.all_finite(X):
        raise FloatingPointError(f"{name} contains NaN or Inf")


def as_labels(y: Any, n_classes: int, n_samples: int, backend, name: str = "target") -> Any:
    """Integer class labels ``(N,)`` in ``[0, n_classes)`` as int64 on ``backend``'s device."""
    y = _host_or_device(y, backend)
    if not hasattr(y, "dtype"):
        y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n_samples:
        raise ValueError(f"{name} labels must have shape ({n_samples},), got {tuple(y.shape)}")
    kind = np.dtype(y.dtype).kind
    if kind == "f":
        if not bool(backend.xp.all(y == backend.xp.round(y))):
            raise ValueError(f"{name} labels must be whole numbers, got non-integral floats")
    elif kind not in "iu":
        raise TypeError(f"{name} labels must be integers, got dtype {y.dtype}")
    y = backend.xp.asarray(y).astype(np.int64, copy=False)
    if n_samples and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(
            f"{name} labels must lie in [0, {n_classes}), got values in "
            f"[{int(y.min())}, {int(y.max())}]"
        )
    return y
