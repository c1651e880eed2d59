"""Large op outputs, reused once nothing references them (the native CPU backends' allocator).

glibc serves an allocation above 32 MiB (the ceiling of its adaptive mmap threshold) with fresh
pages from the kernel, every time: the first write to each page faults and the kernel zeroes it.
For the 40 MB outputs of an activation on 10M float32 that is about 40 % of the op (ReLU
forward + backward, numba: 0.4x the memory stream into fresh outputs, 0.85x into reused ones,
docs/numba.md). Below that size malloc already reuses freed memory (its threshold rises to the
size of the last block freed), so only outputs of at least :data:`MIN_BYTES` come from here.

The cache keeps flat byte buffers and hands out views of them. A view, its slices, a
``memoryview`` of it all hold a reference to the buffer, so a buffer is free exactly when the
cache holds its only reference (``sys.getrefcount``): an array a caller still uses is never
handed out again. The buffers, in use or free, total at most ``FASTMLP_OUTPUT_CACHE_MB``
(default 256; 0 turns the cache off); past that, outputs are plain ``np.empty``. Like
``torch.cuda.empty_cache``, :func:`empty_cache` gives the free buffers back to the system.
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

from .. import _config

__all__ = ["MIN_BYTES", "cached_bytes", "empty", "empty_cache"]

#: Outputs smaller than this are plain ``np.empty``: glibc's largest mmap threshold (32 MiB).
MIN_BYTES = 32 << 20

_lock = threading.Lock()
_buffers: list[np.ndarray] = []  # flat uint8 buffers, least recently used first


def _refs(buffers: list, i: int) -> int:
    """``sys.getrefcount`` of ``buffers[i]``, counted always from this same code."""
    buf = buffers[i]
    return sys.getrefcount(buf)


# _refs of a buffer only its list holds, measured rather than assumed (the interpreter's own
# temporaries differ between versions)
_FREE_REFS = _refs([np.empty(1, np.uint8)], 0)


def empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype``, as ``np.empty``; at
    :data:`MIN_BYTES` and above, a view of a cached buffer nothing else references."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    limit = _config.output_cache_bytes()
    with _lock:
        buf = _take(nbytes)
        if buf is None and _make_room(nbytes, limit):
            buf = np.empty(nbytes, np.uint8)
            _buffers.append(buf)
    if buf is None:  # no room: every cached buffer is in use
        return np.empty(shape, dtype)
    return buf.view(dtype).reshape(shape)


def _take(nbytes: int) -> np.ndarray | None:
    """A free buffer of exactly ``nbytes``, moved to the most recently used end, or None."""
    for i in range(len(_buffers)):
        if _buffers[i].nbytes == nbytes and _refs(_buffers, i) == _FREE_REFS:
            buf = _buffers.pop(i)
            _buffers.append(buf)
            return buf
    return None


def _make_room(nbytes: int, limit: int) -> bool:
    """Drop free buffers, least recently used first, until ``nbytes`` more fit in ``limit``;
    whether they fit."""
    total = sum(b.nbytes for b in _buffers)
    i = 0
    while total + nbytes > limit and i < len(_buffers):
        if _refs(_buffers, i) == _FREE_REFS:
            total -= _buffers.pop(i).nbytes
        else:
            i += 1
    return total + nbytes <= limit


def empty_cache() -> int:
    """Give the free cached buffers back to the system (those still referenced stay).

    Returns
    -------
    int
        The bytes released.
    """
    with _lock:
        before = sum(b.nbytes for b in _buffers)
        _make_room(0, 0)  # room for nothing in nothing: every free buffer goes
        return before - sum(b.nbytes for b in _buffers)


def cached_bytes() -> int:
    """The bytes the cache holds, its buffers in use and free."""
    with _lock:
        return sum(b.nbytes for b in _buffers)
