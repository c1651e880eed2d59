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
    The widest build of the cpp kernels to load: ``auto`` (default: the AVX-512 build on a CPU
    that has AVX-512 F/DQ/BW/VL, else the AVX2+FMA build on one with those, else the portable
    SSE2 one), ``avx512``, ``avx2``, or ``portable`` (always the portable build).
"""

from __future__ import annotations

import os
from functools import cache

__all__ = ["CPP_ISAS", "backend_request", "cpp_isa", "num_threads", "output_cache_bytes", "reset"]


@cache
def backend_request() -> str:
    """The raw, stripped value of ``FASTMLP_BACKEND`` (``""`` when unset)."""
    return os.environ.get("FASTMLP_BACKEND", "").strip()


def _integer(name: str, minimum: int) -> int | None:
    """The variable ``name`` as an int of at least ``minimum``, or None when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be a {kind} integer, got {raw!r}")
    return value


@cache
def num_threads() -> int | None:
    """``FASTMLP_NUM_THREADS`` as a positive int, or None when unset."""
    return _integer("FASTMLP_NUM_THREADS", 1)


CPP_ISAS = ("auto", "avx512", "avx2", "portable")  # "auto", then the builds widest first


@cache
def cpp_isa() -> str:
    """``FASTMLP_CPP_ISA``: the widest build of the cpp backend to use, ``"auto"`` (default:
    the widest this CPU runs), ``"avx512"``, ``"avx2"`` or ``"portable"``."""
    raw = os.environ.get("FASTMLP_CPP_ISA", "").strip().lower() or "auto"
    if raw not in CPP_ISAS:
        raise ValueError(f"FASTMLP_CPP_ISA must be one of {', '.join(CPP_ISAS)}; got {raw!r}")
    return raw


@cache
def output_cache_bytes() -> int:
    """``FASTMLP_OUTPUT_CACHE_MB`` in bytes (default 256 MiB; 0: no cache)."""
    mb = _integer("FASTMLP_OUTPUT_CACHE_MB", 0)
    return (256 if mb is None else mb) << 20


def reset() -> None:
    """Forget every cached value, so the next use reads the environment again."""
    backend_request.cache_clear()
    num_threads.cache_clear()
    cpp_isa.cache_clear()
    output_cache_bytes.cache_clear()
