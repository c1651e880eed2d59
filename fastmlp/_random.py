"""Global seeding and ``rng=`` argument handling.

Initial weights are always drawn on the host with NumPy's PCG64, whatever the backend, so the
same seed gives the same initial weights on every backend.
"""

from __future__ import annotations

import numpy as np

__all__ = ["default_rng", "resolve_rng", "seed"]

_global = np.random.default_rng()


def seed(n: int) -> None:
    """Seed fastmlp's global random generator (initial weights, shuffling without a seed).

    Parameters
    ----------
    n : int
        Non-negative seed; ``fastmlp.seed(n)`` then building the same model twice gives
        identical weights, on every backend.
    """
    global _global
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"seed must be a non-negative integer, got {n!r}")
    _global = np.random.default_rng(int(n))


def default_rng() -> np.random.Generator:
    """The global generator that :func:`seed` resets."""
    return _global


def resolve_rng(rng: int | np.random.Generator | None) -> np.random.Generator:
    """``rng`` argument -> Generator: None uses the global one, an int seeds a new one."""
    if rng is None:
        return _global
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be None, a non-negative int or a numpy Generator, got {rng!r}")
