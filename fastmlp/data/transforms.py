"""Transforms: scale to [0, 1], flatten, normalize, one-hot, and their composition.

Each transform works on one sample (``t(x)``) and on a whole batch whose first axis indexes
the samples (``t.batch(X)``), so a :class:`~fastmlp.data.DataLoader` over an
:class:`~fastmlp.data.ArrayDataset` applies it once per batch, with no per-sample Python loop.
Any plain callable also works as a transform; it is then applied sample by sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["Transform", "Compose", "ToFloat", "Flatten", "Normalize", "OneHot", "apply_batch"]


class Transform:
    """Base class: ``__call__`` for one sample, ``batch`` for a stack of samples.

    Elementwise transforms only define ``__call__`` (the default ``batch`` calls it on the
    whole stack); shape-changing ones override both.
    """

    def __call__(self, x: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def batch(self, X: Any) -> Any:
        """Apply to a batch ``X`` whose first axis indexes samples."""
        return self(X)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def apply_batch(transform: Callable[[Any], Any] | None, X: Any) -> Any:
    """Apply ``transform`` to a batch: its ``batch`` method if it has one, else sample by
    sample, stacking the results."""
    if transform is None:
        return X
    if isinstance(transform, Transform) or hasattr(transform, "batch"):
        return transform.batch(X)
    return np.stack([np.asarray(transform(x)) for x in X])


class Compose(Transform):
    """Apply transforms in order: ``Compose([ToFloat(), Flatten()])``."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose needs callables, got {t!r}")

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def batch(self, X):
        for t in self.transforms:
            X = apply_batch(t, X)
        return X


class ToFloat(Transform):
    """``x * scale`` as a floating array: with the default ``scale = 1/255``, 8-bit pixels
    become values in [0, 1] (what ``torchvision.transforms.ToTensor`` does in the course).

    Parameters
    ----------
    scale : float, default 1/255
    dtype : "float32" or "float64"
    """

    def __init__(self, scale: float = 1 / 255, dtype: Any = "float32"):
        self.scale = float(scale)
        self.dtype = np.dtype(dtype).name

    def __call__(self, x):
        return np.asarray(x, dtype=self.dtype) * np.asarray(self.scale, dtype=self.dtype)


class Flatten(Transform):
    """One sample to a vector (``(28, 28) -> (784,)``); a batch to ``(N, features)``."""

    def __call__(self, x):
        return np.asarray(x).reshape(-1)

    def batch(self, X):
        X = np.asarray(X)
        return X.reshape(X.shape[0], -1)


class Normalize(Transform):
    """``(x - mean) / std``, with scalars or per-feature arrays broadcast on the last axis.

    Parameters
    ----------
    mean, std : float or array
        E.g. MNIST's ``0.1307, 0.3081`` after :class:`ToFloat`.
    """

    def __init__(self, mean: Any, std: Any):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        if not np.all(np.isfinite(self.std)) or np.any(self.std <= 0):
            raise ValueError(f"std must be positive and finite, got {std!r}")

    def __call__(self, x):
        x = np.asarray(x)
        dtype = x.dtype if x.dtype.kind == "f" else np.float32
        return ((x - self.mean.astype(dtype)) / self.std.astype(dtype)).astype(dtype, copy=False)


class OneHot(Transform):
    """Integer labels to one-hot rows: ``3 -> [0, 0, 0, 1, 0, ...]`` (for MSE on class
    targets, as in the course's sigmoid + MSE network).

    Parameters
    ----------
    num_classes : int
    dtype : "float32" or "float64"
    """

    def __init__(self, num_classes: int, dtype: Any = "float32"):
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.dtype = np.dtype(dtype).name
        self._eye = np.eye(self.num_classes, dtype=self.dtype)

    def __call__(self, y):
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            if y.dtype.kind == "f" and np.all(y == np.round(y)):
                y = y.astype(np.int64)
            else:
                raise TypeError(f"OneHot needs integer labels, got dtype {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got [{y.min()}, {y.max()}]")
        return self._eye[y]
