"""Gradient descent with momentum: PyTorch's ``SGD`` and the course's ``Momentum``."""

from __future__ import annotations

from typing import Any

from .optimizer import Optimizer, check_range

__all__ = ["SGD", "Momentum"]


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD`` (PyTorch 2.x).

    ``g <- g + wd p``; with momentum ``mu``: ``b_1 = g_1``,
    ``b_t = mu b_{t-1} + (1 - dampening) g_t``; ``g <- g + mu b_t`` (Nesterov) or
    ``g <- b_t``; ``theta <- theta - lr g``.

    Parameters
    ----------
    params : parameters, a model, or param groups
    lr : float, default 1e-3
    momentum : float, default 0
    dampening : float, default 0
    weight_decay : float, default 0
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening = 0``.
    """

    state_names = ("momentum_buffer",)

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _validate_group(self, group):
        super()._validate_group(group)
        check_range("momentum", group["momentum"])
        check_range("dampening", group["dampening"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _update(self, be, group, arena, a, b):
        buf = self._buffer(arena, "momentum_buffer")[a:b] if group["momentum"] else None
        be.sgd_step(arena.data[a:b], arena.grad[a:b], buf, group["lr"], group["step"],
                    group["momentum"], group["dampening"], group["nesterov"], group["weight_decay"])


class Momentum(Optimizer):
    """The course's momentum: an exponentially weighted average of the gradients, with bias
    correction.

    ``m_t = beta m_{t-1} + (1 - beta) g_t``, ``m^_t = m_t / (1 - beta^t)``,
    ``theta_t = theta_{t-1} - alpha m^_t``. With ``nesterov=True`` the step uses
    ``beta m_t + (1 - beta) g_t`` (Sutskever et al. 2013, in Dozat's form). Without bias
    correction the effective learning rate is ``alpha (1 - beta)`` (the course's point).

    Parameters
    ----------
    lr : float, default 1e-3
    beta : float in [0, 1), default 0.9
    bias_correction : bool, default True
    nesterov : bool, default False
    weight_decay : float, default 0 (added to the gradient)
    """

    state_names = ("exp_avg",)

    def __init__(self, params: Any, lr: float = 1e-3, beta: float = 0.9,
                 bias_correction: bool = True, nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, beta=beta, bias_correction=bias_correction,
                                      nesterov=nesterov, weight_decay=weight_decay))

    def _validate_group(self, group):
        super()._validate_group(group)
        check_range("beta", group["beta"], 0.0, 1.0, high_open=True)

    def _update(self, be, group, arena, a, b):
        be.momentum_step(arena.data[a:b], arena.grad[a:b], self._buffer(arena, "exp_avg")[a:b],
                         group["lr"], group["step"], group["beta"], group["bias_correction"],
                         group["nesterov"], group["weight_decay"])
