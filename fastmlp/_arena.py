"""The flat parameter arena.

Every parameter of a model lives in one contiguous buffer per dtype, every gradient in another;
layers hold views into them. So an optimizer step is one fused kernel over the whole model,
zeroing the gradients is one fill, and a data-parallel all-reduce would be one call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["Arena", "Parameter", "pack", "segments"]


class Parameter:
    """A named trainable array: ``data`` and ``grad`` are views into an :class:`Arena`.

    Attributes
    ----------
    name : str
        Name inside its layer (``"weight"``, ``"bias"``, ``"beta"``).
    data, grad : array
        Views of the arena's flat buffers, in the parameter's shape.
    arena : Arena
    offset : int
        Start of the parameter in the arena's flat buffers.
    """

    __slots__ = ("name", "data", "grad", "arena", "offset")

    def __init__(self, name: str, data: Any):
        self.name = name
        self.data = data
        self.grad = None
        self.arena: Arena | None = None
        self.offset = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def dtype(self):
        return self.data.dtype

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, shape={self.shape}, dtype={self.dtype})"


class Arena:
    """Two flat buffers of one dtype on one device: ``data`` (values) and ``grad``.

    ``backend_name`` is the backend the arena was placed for (None: host memory, usable by
    whichever CPU backend is current).
    """

    __slots__ = ("data", "grad", "backend_name", "__weakref__")

    def __init__(self, data: Any, grad: Any, backend_name: str | None):
        self.data = data
        self.grad = grad
        self.backend_name = backend_name

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def dtype(self):
        return self.data.dtype


def pack(params: list[Parameter], dtype: Any, backend, backend_name: str | None) -> Arena:
    """Copy ``params`` into one new arena of ``dtype`` on ``backend``'s device and rebind each
    parameter's ``data``/``grad`` as views of it (gradients start at zero)."""
    dtype = np.dtype(dtype)
    total = sum(p.size for p in params)
    data = backend.zeros((total,), dtype)
    grad = backend.zeros((total,), dtype)
    arena = Arena(data, grad, backend_name)
    offset = 0
    for p in params:
        shape, n = p.shape, p.size
        src = p.data
        if not isinstance(src, backend.xp.ndarray):
            src = backend.asarray(backend.to_numpy(src) if not isinstance(src, np.ndarray) else src)
        data[offset:offset + n] = src.reshape(-1).astype(dtype, copy=False)
        p.data = data[offset:offset + n].reshape(shape)
        p.grad = grad[offset:offset + n].reshape(shape)
        p.arena = arena
        p.offset = offset
        offset += n
    return arena


def segments(params: Iterable[Parameter]) -> list[tuple[Arena, int, int]]:
    """Group ``params`` into maximal contiguous ``(arena, start, stop)`` ranges.

    A whole model gives one range per arena, so the caller issues one kernel call."""
    by_arena: dict[int, tuple[Arena, list[tuple[int, int]]]] = {}
    for p in params:
        if p.arena is None:
            raise ValueError(f"parameter {p.name!r} belongs to no arena")
        entry = by_arena.setdefault(id(p.arena), (p.arena, []))
        entry[1].append((p.offset, p.offset + p.size))
    out: list[tuple[Arena, int, int]] = []
    for arena, ranges in by_arena.values():
        ranges.sort()
        start, stop = ranges[0]
        for a, b in ranges[1:]:
            if a < stop:
                raise ValueError("a parameter appears twice in the same parameter list")
            if a == stop:
                stop = b
            else:
                out.append((arena, start, stop))
                start, stop = a, b
        out.append((arena, start, stop))
    return out
