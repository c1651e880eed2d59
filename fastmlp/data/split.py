"""Splitting a dataset: ``random_split`` (PyTorch's) and ``train_val_test_split`` (the
course's 80/15/5)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._random import resolve_rng
from .dataset import Subset

__all__ = ["random_split", "train_val_test_split"]


def _lengths(n: int, lengths: Sequence[float]) -> list[int]:
    lengths = list(lengths)
    if not lengths:
        raise ValueError("lengths must not be empty")
    if any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or v < 0
           for v in lengths):
        raise ValueError(f"lengths must be non-negative numbers, got {lengths}")
    if all(isinstance(v, (int, np.integer)) for v in lengths):
        if sum(lengths) != n:
            raise ValueError(f"lengths {lengths} sum to {sum(lengths)}, but the dataset has {n} samples")
        return [int(v) for v in lengths]
    if not math.isclose(sum(lengths), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions {lengths} must sum to 1")
    counts = [int(math.floor(n * f)) for f in lengths]
    # as PyTorch: hand the remainder out one by one, round-robin from the first split
    for i in range(n - sum(counts)):
        counts[i % len(counts)] += 1
    return counts


def random_split(dataset: Any, lengths: Sequence[float], seed: int | np.random.Generator | None = None) -> list[Subset]:
    """Split ``dataset`` into non-overlapping random subsets.

    Parameters
    ----------
    dataset : Dataset
    lengths : sequence of int or of float
        Sizes summing to ``len(dataset)``, or fractions summing to 1 (the remainder of the
        rounding goes to the first splits, one sample each, as in PyTorch).
    seed : int, Generator or None
        None uses fastmlp's global generator (:func:`fastmlp.seed`).

    Returns
    -------
    list of Subset
    """
    n = len(dataset)
    counts = _lengths(n, lengths)
    perm = resolve_rng(seed).permutation(n)
    out, start = [], 0
    for c in counts:
        out.append(Subset(dataset, perm[start:start + c]))
        start += c
    return out


def train_val_test_split(dataset: Any, fractions: Sequence[float] = (0.8, 0.15, 0.05), shuffle: bool = True,
                         seed: int | np.random.Generator | None = None) -> tuple[Subset, Subset, Subset]:
    """Split into training, validation and test sets, 80/15/5 by default ("usually a good
    idea", as the course says; the test set is for one final, unbiased estimate).

    Parameters
    ----------
    dataset : Dataset
    fractions : (train, val, test), summing to 1
    shuffle : bool, default True
        False keeps the order: the first 80 % train, the next 15 % validate, the last 5 % test.
    seed : int, Generator or None
    """
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, val, test), got {fractions!r}")
    n = len(dataset)
    counts = _lengths(n, fractions)
    if counts[0] == 0:
        raise ValueError(f"a dataset of {n} samples leaves no training samples with fractions {fractions}")
    idx = resolve_rng(seed).permutation(n) if shuffle else np.arange(n)
    a, b = counts[0], counts[0] + counts[1]
    return Subset(dataset, idx[:a]), Subset(dataset, idx[a:b]), Subset(dataset, idx[b:])
