"""The one module that reads the environment.

Every variable is read lazily, on first use, and cached: changing ``os.environ`` after the
first read has no effect (call :func:`reset` in tests). No other module reads ``os.environ``.

Variables
---------
FASTMLP_BACKEND
    Backend selection, see :mod:`fastmlp.backends` (``auto``, one name, or ``a,b,c``).
FASTMLP_NUM_THREADS
    Thread count for the native backends' own loops (default: let the backend decide).
FASTMLP_CPP_ISA
    Which build of the cpp kernels to load: ``auto`` (default: the AVX2+FMA build on a CPU that
    has them, else the portable one) or ``portable`` (always the portable SSE2 build).
"""

from __future__ import annotations

import os
from functools import cache

__all__ = ["backend_request", "cpp_isa", "num_threads", "reset"]


@cache
def backend_request() -> str:
    """The raw, stripped value of ``FASTMLP_BACKEND`` (``""`` when unset)."""
    return os.environ.get("FASTMLP_BACKEND", "").strip()


@cache
def num_threads() -> int | None:
    """``FASTMLP_NUM_THREADS`` as a positive int, or None when unset."""
    raw = os.environ.get("FASTMLP_NUM_THREADS", "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"FASTMLP_NUM_THREADS must be a positive integer, got {raw!r}") from None
    if n < 1:
        raise ValueError(f"FASTMLP_NUM_THREADS must be a positive integer, got {raw!r}")
    return n


@cache
def cpp_isa() -> str:
    """``FASTMLP_CPP_ISA``: ``"auto"`` (default) or ``"portable"``."""
    raw = os.environ.get("FASTMLP_CPP_ISA", "").strip().lower() or "auto"
    if raw not in ("auto", "portable"):
        raise ValueError(f"FASTMLP_CPP_ISA must be 'auto' or 'portable', got {raw!r}")
    return raw


def reset() -> None:
    """Forget every cached value, so the next use reads the environment again."""
    backend_request.cache_clear()
    num_threads.cache_clear()
    cpp_isa.cache_clear()
