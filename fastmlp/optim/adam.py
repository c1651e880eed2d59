"""The Adam family: ``Adam`` (and AMSGrad), ``AdamW``, ``Adamax``, ``NAdam``."""

from __future__ import annotations

from typing import Any

from ..backends.base import Backend
from .optimizer import Optimizer, check_range

__all__ = ["Adam", "AdamW", "Adamax", "NAdam"]


def _check_betas(group):
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair, got {betas!r}")
    for i, beta in enumerate(betas):
        check_range(f"beta{i + 1}", beta, 0.0, 1.0, high_open=True)
    group["betas"] = (float(betas[0]), float(betas[1]))
    check_range("eps", group["eps"])


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), as ``torch.optim.Adam``; ``amsgrad=True`` is AMSGrad
    (Reddi et al. 2018).

    ``m_t = b1 m_{t-1} + (1 - b1) g_t``, ``v_t = b2 v_{t-1} + (1 - b2) g_t^2``,
    ``m^_t = m_t / (1 - b1^t)``, ``v^_t = v_t / (1 - b2^t)`` (AMSGrad: the running max of
    ``v``), ``theta_t = theta_{t-1} - lr m^_t / (sqrt(v^_t + eps_root) + eps)``. The course's
    form ``alpha m^ / sqrt(v^ + eps)`` is ``eps=0, eps_root=1e-8``.

    Parameters
    ----------
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0 (L2, added to the gradient; decoupled if
        ``decoupled_weight_decay``, which makes this AdamW)
    amsgrad : bool, default False
    eps_root : float, default 0
    """

    state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 decoupled_weight_decay: bool = False, eps_root: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, decoupled_weight_decay=decoupled_weight_decay,
                                      eps_root=eps_root))

    def _validate_group(self, group):
        super()._validate_group(group)
        _check_betas(group)
        check_range("eps_root", group["eps_root"])

    def _update(self, be, group, arena, a, b):
        b1, b2 = group["betas"]
        vmax = self._buffer(arena, "max_exp_avg_sq")[a:b] if group["amsgrad"] else None
        be.adam_step(arena.data[a:b], arena.grad[a:b], self._buffer(arena, "exp_avg")[a:b],
                     self._buffer(arena, "exp_avg_sq")[a:b], vmax, group["lr"], group["step"],
                     b1, b2, group["eps"], group["weight_decay"], group["amsgrad"],
                     group["decoupled_weight_decay"], group["eps_root"])


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019), as ``torch.optim.AdamW``: Adam with decoupled weight
    decay ``theta <- theta (1 - lr wd)`` before the Adam update. Default ``weight_decay=1e-2``."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 eps_root: float = 0.0):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, True, eps_root)


class Adamax(Optimizer):
    """Adamax (Kingma & Ba 2015, section 7), as ``torch.optim.Adamax``.

    ``m_t = b1 m_{t-1} + (1 - b1) g_t``, ``u_t = max(b2 u_{t-1}, |g_t| + eps)``,
    ``theta_t = theta_{t-1} - lr / (1 - b1^t) m_t / u_t``.

    Parameters
    ----------
    lr : float, default 2e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0
    """

    state_names = ("exp_avg", "exp_inf")

    def __init__(self, params: Any, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _validate_group(self, group):
        super()._validate_group(group)
        _check_betas(group)

    def _update(self, be, group, arena, a, b):
        b1, b2 = group["betas"]
        be.adamax_step(arena.data[a:b], arena.grad[a:b], self._buffer(arena, "exp_avg")[a:b],
                       self._buffer(arena, "exp_inf")[a:b], group["lr"], group["step"], b1, b2,
                       group["eps"], group["weight_decay"])


class NAdam(Optimizer):
    """NAdam (Dozat 2016: Adam with Nesterov momentum), as ``torch.optim.NAdam``.

    ``mu_t = b1 (1 - 0.5 * 0.96^(t psi))`` with ``psi = momentum_decay``; the update mixes the
    current gradient and the first moment with look-ahead weights (see
    :meth:`fastmlp.backends.base.Backend.nadam_step`).

    Parameters
    ----------
    lr : float, default 2e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0
    momentum_decay : float, default 4e-3
    decoupled_weight_decay : bool, default False
    """

    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params: Any, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _validate_group(self, group):
        super()._validate_group(group)
        _check_betas(group)
        check_range("momentum_decay", group["momentum_decay"])

    def _init_group_state(self, group):
        group["mu_product"] = 1.0

    def _before_group_step(self, group):
        group["mu_product"] *= Backend.nadam_mu(group["step"], group["betas"][0], group["momentum_decay"])

    def _group_scalars(self, group):
        return {"mu_product": group["mu_product"]}

    def _scalar_names(self):
        return ("mu_product",)

    def _update(self, be, group, arena, a, b):
        b1, b2 = group["betas"]
        be.nadam_step(arena.data[a:b], arena.grad[a:b], self._buffer(arena, "exp_avg")[a:b],
                      self._buffer(arena, "exp_avg_sq")[a:b], group["lr"], group["step"],
                      group["mu_product"], b1, b2, group["eps"], group["weight_decay"],
                      group["momentum_decay"], group["decoupled_weight_decay"])
