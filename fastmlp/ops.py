"""The functional dispatch API: every op of :class:`fastmlp.backends.base.Backend`, called on
the current backend (see :func:`fastmlp.get_backend`).

``fastmlp.ops.relu_forward(Z)`` is ``fastmlp.get_backend().relu_forward(Z)``. Each function
carries the docstring of the reference op: its formula, shapes, and what it writes in place.
The list of ops is :data:`OPS`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .backends import get_backend
from .backends.base import Backend

OPS: tuple[str, ...] = Backend.op_names()


def _dispatcher(name: str) -> Callable[..., Any]:
    reference = getattr(Backend, name)

    @functools.wraps(reference)
    def dispatch(*args: Any, **kwargs: Any) -> Any:
        return getattr(get_backend(), name)(*args, **kwargs)

    dispatch.__module__ = __name__
    dispatch.__qualname__ = name
    return dispatch


globals().update({_name: _dispatcher(_name) for _name in OPS})

__all__ = ["OPS", *OPS]
