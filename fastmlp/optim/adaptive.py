"""Per-coordinate adaptive learning rates: ``Adagrad``, ``RMSprop``, ``Adadelta``."""

from __future__ import annotations

from typing import Any

from .optimizer import Optimizer, check_range

__all__ = ["Adagrad", "RMSprop", "Adadelta"]


class Adagrad(Optimizer):
    """Adagrad (Duchi et al. 2011), as ``torch.optim.Adagrad``.

    ``s_t = s_{t-1} + g_t^2``, ``theta_t = theta_{t-1} - lr_t g_t / (sqrt(s_t + eps_root) + eps)``
    with ``lr_t = lr / (1 + (t - 1) lr_decay)``. The course writes
    ``theta_t = theta_{t-1} - alpha g_t / sqrt(sum g^2 + eps)``: ``eps=0, eps_root=1e-8``.

    Parameters
    ----------
    lr : float, default 1e-2
    lr_decay : float, default 0
    weight_decay : float, default 0
    initial_accumulator_value : float, default 0
    eps : float, default 1e-10 (outside the root)
    eps_root : float, default 0 (inside the root)
    """

    state_names = ("sum",)

    def __init__(self, params: Any, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, eps_root: float = 0.0):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, eps_root=eps_root))

    def _validate_group(self, group):
        super()._validate_group(group)
        for k in ("lr_decay", "initial_accumulator_value", "eps", "eps_root"):
            check_range(k, group[k])

    def _state_fill(self, name, group):
        return group["initial_accumulator_value"] if name == "sum" else 0.0

    def _update(self, be, group, arena, a, b):
        s = self._buffer(arena, "sum")[a:b]
        be.adagrad_step(arena.data[a:b], arena.grad[a:b], s, group["lr"], group["step"],
                        group["lr_decay"], group["weight_decay"], group["eps"], group["eps_root"])


class RMSprop(Optimizer):
    """RMSprop (Hinton 2012), as ``torch.optim.RMSprop``, plus the course's variants.

    ``v_t = alpha v_{t-1} + (1 - alpha) g_t^2``; ``centered`` subtracts the squared running mean
    of the gradients; ``bias_correction=True`` (course) divides the averages by
    ``1 - alpha^t``; ``theta_t = theta_{t-1} - lr g_t / (sqrt(v_t + eps_root) + eps)``, or
    through a momentum buffer ``b_t = mu b_{t-1} + g_t / (...)``. The course's form is
    ``alpha=beta_2, eps=0, eps_root=1e-8, bias_correction=True``.

    Parameters
    ----------
    lr : float, default 1e-2
    alpha : float, default 0.99
    eps : float, default 1e-8
    weight_decay, momentum : float, default 0
    centered : bool, default False
    bias_correction : bool, default False
        Not with ``centered`` (ValueError): the first step would divide by ``eps``.
    eps_root : float, default 0
    """

    state_names = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, params: Any, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 bias_correction: bool = False, eps_root: float = 0.0):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered,
                                      bias_correction=bias_correction, eps_root=eps_root))

    def _validate_group(self, group):
        super()._validate_group(group)
        check_range("alpha", group["alpha"], 0.0, 1.0, high_open=True)
        for k in ("eps", "momentum", "eps_root"):
            check_range(k, group[k])
        if group["centered"] and group["bias_correction"]:
            # at t = 1 both corrected averages are exact, v = g^2 and m = g, so the centred
            # variance v - m^2 is 0 and the step lr g / eps (1e5 g): refuse the pair
            raise ValueError("RMSprop: centered=True with bias_correction=True divides by eps at the "
                             "first step (the corrected centred variance is exactly 0); use one of them")

    def _update(self, be, group, arena, a, b):
        ga = self._buffer(arena, "grad_avg")[a:b] if group["centered"] else None
        mb = self._buffer(arena, "momentum_buffer")[a:b] if group["momentum"] else None
        be.rmsprop_step(arena.data[a:b], arena.grad[a:b], self._buffer(arena, "square_avg")[a:b],
                        ga, mb, group["lr"], group["step"], group["alpha"], group["eps"],
                        group["weight_decay"], group["momentum"], group["centered"],
                        group["bias_correction"], group["eps_root"])


class Adadelta(Optimizer):
    """Adadelta (Zeiler 2012), as ``torch.optim.Adadelta``.

    ``s_t = rho s_{t-1} + (1 - rho) g_t^2``;
    ``Delta_t = sqrt(D_{t-1} + eps) / sqrt(s_t + eps) g_t``;
    ``D_t = rho D_{t-1} + (1 - rho) Delta_t^2`` (squared *updates*: the course's slide writes
    squared parameters, a typo); ``theta_t = theta_{t-1} - lr Delta_t``.

    Parameters
    ----------
    lr : float, default 1.0
    rho : float, default 0.9
    eps : float, default 1e-6
    weight_decay : float, default 0
    """

    state_names = ("square_avg", "acc_delta")

    def __init__(self, params: Any, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay))

    def _validate_group(self, group):
        super()._validate_group(group)
        check_range("rho", group["rho"], 0.0, 1.0)
        check_range("eps", group["eps"])

    def _update(self, be, group, arena, a, b):
        be.adadelta_step(arena.data[a:b], arena.grad[a:b], self._buffer(arena, "square_avg")[a:b],
                         self._buffer(arena, "acc_delta")[a:b], group["lr"], group["step"],
                         group["rho"], group["eps"], group["weight_decay"])
