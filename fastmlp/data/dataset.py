"""Datasets: anything with ``__getitem__`` and ``__len__``; arrays in memory; a subset.

A dataset may also offer ``get_batch(index)`` (an index array or a slice) returning a whole
batch at once: :class:`~fastmlp.data.DataLoader` then batches it without a per-item loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .transforms import apply_batch

__all__ = ["Dataset", "ArrayDataset", "Subset"]


@runtime_checkable
class Dataset(Protocol):
    """The dataset protocol (as ``torch.utils.data.Dataset``): ``len(ds)`` samples, and
    ``ds[i]`` is one sample, usually ``(x, y)``."""

    def __getitem__(self, index: int) -> Any: ...

    def __len__(self) -> int: ...


def _check_index(i: Any, n: int) -> int:
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"dataset index must be an integer, got {type(i).__name__}")
    i = int(i)
    if not -n <= i < n:
        raise IndexError(f"index {i} is out of range for a dataset of {n} samples")
    return i + n if i < 0 else i


class ArrayDataset:
    """Samples held in arrays: ``ds[i] = (transform(X[i]), target_transform(y[i]))``.

    Parameters
    ----------
    X : array, shape (N, ...)
        Inputs; any shape whose first axis indexes samples (images ``(N, 28, 28)`` too).
    y : array, shape (N, ...), optional
        Targets (class labels ``(N,)`` or values ``(N, k)``). Without ``y``, ``ds[i]`` is
        ``x`` alone.
    transform, target_transform : callable, optional
        Applied to each sample; a :class:`~fastmlp.data.transforms.Transform` is applied to
        whole batches by the loader's fast path.

    Examples
    --------
    >>> import numpy as np
    >>> ds = ArrayDataset(np.zeros((5, 3)), np.arange(5))
    >>> len(ds), ds[2][1]
    (5, 2)
    """

    def __init__(self, X: Any, y: Any = None, transform: Callable | None = None,
                 target_transform: Callable | None = None):
        X = np.asarray(X)
        if X.ndim < 1 or X.shape[0] == 0:
            raise ValueError(f"X must hold at least one sample, got shape {X.shape}")
        if X.dtype == object or X.dtype.kind not in "fiub":
            raise TypeError(f"X must be numeric, got dtype {X.dtype}")
        if y is not None:
            y = np.asarray(y)
            if y.ndim < 1 or y.shape[0] != X.shape[0]:
                raise ValueError(f"X has {X.shape[0]} samples but y has shape {y.shape}")
            if y.dtype == object or y.dtype.kind not in "fiub":
                raise TypeError(f"y must be numeric, got dtype {y.dtype}")
        for name, t in (("transform", transform), ("target_transform", target_transform)):
            if t is not None and not callable(t):
                raise TypeError(f"{name} must be callable, got {t!r}")
        self.X, self.y = X, y
        self.transform, self.target_transform = transform, target_transform

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def __getitem__(self, index: int):
        i = _check_index(index, len(self))
        x = self.X[i] if self.transform is None else self.transform(self.X[i])
        if self.y is None:
            return x
        y = self.y[i] if self.target_transform is None else self.target_transform(self.y[i])
        return x, y

    def get_batch(self, index: Any):
        """The batch ``index`` (a slice or an integer array), transforms applied batch-wise."""
        X = apply_batch(self.transform, self.X[index])
        if self.y is None:
            return X
        return X, apply_batch(self.target_transform, self.y[index])

    def __repr__(self) -> str:
        ys = "" if self.y is None else f", y{tuple(self.y.shape)} {self.y.dtype}"
        return f"ArrayDataset(X{tuple(self.X.shape)} {self.X.dtype}{ys})"


class Subset:
    """The samples ``indices`` of ``dataset``, in that order (what :func:`random_split`
    returns). Keeps the fast batch path when the parent has one."""

    def __init__(self, dataset: Any, indices: Any):
        self.dataset = dataset
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise TypeError("Subset indices must be a 1-D sequence of integers")
        n = len(dataset)
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"Subset indices out of range for a dataset of {n} samples")
        self.indices = np.where(idx < 0, idx + n, idx)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, index: int):
        return self.dataset[int(self.indices[_check_index(index, len(self))])]

    def __getattr__(self, name: str):
        # expose get_batch only when the parent has one (hasattr() is the loader's test)
        if name == "get_batch" and hasattr(self.dataset, "get_batch"):
            return lambda index: self.dataset.get_batch(self.indices[index])
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"Subset({len(self)} of {self.dataset!r})"
