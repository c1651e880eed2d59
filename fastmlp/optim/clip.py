"""Gradient clipping, as ``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_``.

Both act on the flat gradient arena: one pass per contiguous run of parameters.
"""

from __future__ import annotations

import math
from typing import Any

from .._arena import segments
from ..backends import get_backend
from .optimizer import _as_params

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def clip_grad_norm_(parameters: Any, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scale the gradients in place so their global norm is at most ``max_norm``.

    ``total = (sum_i ||g_i||_p^p)^(1/p)`` over every gradient (``p = inf``: the max
    ``|g|``); if ``total > max_norm`` every gradient is multiplied by
    ``max_norm / (total + 1e-6)``. Returns ``total`` (before clipping).

    Raises
    ------
    RuntimeError
        If ``error_if_nonfinite`` and the norm is NaN or infinite.
    """
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"norm_type must be positive, got {norm_type}")
    runs = segments(_as_params(parameters))
    parts = []
    for arena, a, b in runs:
        xp = get_backend(arena.backend_name).xp
        g = arena.grad[a:b]
        if math.isinf(norm_type):
            parts.append(float(xp.abs(g).max()) if g.size else 0.0)
        else:
            parts.append(float((xp.abs(g.astype(xp.float64)) ** norm_type).sum()))
    total = max(parts, default=0.0) if math.isinf(norm_type) else sum(parts) ** (1 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is {total}")
    coef = float(max_norm) / (total + 1e-6)
    if coef < 1:
        for arena, a, b in runs:
            arena.grad[a:b] *= coef
    return total


def clip_grad_value_(parameters: Any, clip_value: float) -> None:
    """Clamp every gradient in place to ``[-clip_value, clip_value]``."""
    clip_value = float(clip_value)
    if not clip_value >= 0:
        raise ValueError(f"clip_value must be non-negative, got {clip_value}")
    for arena, a, b in segments(_as_params(parameters)):
        xp = get_backend(arena.backend_name).xp
        g = arena.grad[a:b]
        xp.clip(g, -clip_value, clip_value, out=g)
