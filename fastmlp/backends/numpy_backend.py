"""The NumPy reference backend: :class:`~fastmlp.backends.base.Backend` exactly as written."""

from __future__ import annotations

from .base import Backend

__all__ = ["NumpyBackend"]


class NumpyBackend(Backend):
    """The reference: every op is the readable NumPy body of :class:`Backend`.

    Fast CPU backends subclass this class and override the ops they accelerate.
    """

    name = "numpy"
    is_reference = True
