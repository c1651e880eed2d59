"""``DataLoader``: minibatches of a dataset as NumPy arrays.

A dataset with a ``get_batch`` method (``ArrayDataset``, a ``Subset`` of one) is batched by
slicing or fancy indexing its arrays, one call per batch; any other dataset is read item by
item and the items are stacked by ``collate_fn``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .._random import default_rng

__all__ = ["DataLoader", "default_collate"]


def default_collate(items: Sequence[Any]) -> Any:
    """Stack a list of samples into a batch: tuples column by column (``[(x, y), ...] ->
    (X, Y)``), arrays and numbers with ``np.stack``."""
    if not items:
        raise ValueError("cannot collate an empty list of samples")
    first = items[0]
    if isinstance(first, tuple):
        if any(not isinstance(it, tuple) or len(it) != len(first) for it in items):
            raise ValueError("samples differ in structure: every item must be a tuple of the same length")
        return tuple(default_collate([it[k] for it in items]) for k in range(len(first)))
    try:
        return np.stack([np.asarray(it) for it in items])
    except ValueError as exc:
        raise ValueError(f"cannot stack samples of different shapes into a batch: {exc}") from None


class DataLoader:
    """Iterate over ``dataset`` in minibatches.

    Parameters
    ----------
    dataset : Dataset
        Anything with ``__getitem__`` and ``__len__`` (or a ``get_batch`` method: fast path).
    batch_size : int, default 1
    shuffle : bool, default False
        A new order every epoch.
    drop_last : bool, default False
        Drop the last, smaller batch (the course's run 5 uses it).
    seed : int, optional
        The order of epoch ``e`` is the permutation drawn from ``default_rng([seed, e])``:
        reproducible, and the same after resuming at epoch ``e`` (see :meth:`set_epoch`).
        Without a seed, fastmlp's global generator (:func:`fastmlp.seed`) is used.
    collate_fn : callable, optional
        Turns a list of samples into a batch (default :func:`default_collate`). Giving one
        forces the item-by-item path.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmlp.data import ArrayDataset
    >>> loader = DataLoader(ArrayDataset(np.zeros((10, 2)), np.arange(10)), batch_size=4)
    >>> [len(y) for _, y in loader]
    [4, 4, 2]
    """

    def __init__(self, dataset: Any, batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
                 seed: int | None = None, collate_fn: Callable[[list[Any]], Any] | None = None):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"dataset needs __len__ and __getitem__, got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError("collate_fn must be callable")
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = None if seed is None else int(seed)
        self.collate_fn = collate_fn
        self.epoch = 0

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of epoch ``epoch`` on the next pass (``fit`` calls this)."""
        self.epoch = int(epoch)

    def order(self) -> np.ndarray | None:
        """The sample order of the current epoch (None: unshuffled)."""
        if not self.shuffle:
            return None
        n = len(self.dataset)
        rng = np.random.default_rng([self.seed, self.epoch]) if self.seed is not None else default_rng()
        return rng.permutation(n)

    def __iter__(self) -> Iterator[Any]:
        n = len(self.dataset)
        order = self.order()
        self.epoch += 1
        fast = self.collate_fn is None and hasattr(self.dataset, "get_batch")
        collate = self.collate_fn or default_collate
        stop = (n // self.batch_size) * self.batch_size if self.drop_last else n
        for a in range(0, stop, self.batch_size):
            b = min(a + self.batch_size, n)
            index: Any = slice(a, b) if order is None else order[a:b]
            if fast:
                yield self.dataset.get_batch(index)
            else:
                ids = range(a, b) if order is None else order[a:b]
                yield collate([self.dataset[int(i)] for i in ids])

    def __repr__(self) -> str:
        return (f"DataLoader({self.dataset!r}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, seed={self.seed})")
