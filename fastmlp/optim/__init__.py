"""Optimizers (PyTorch's names, defaults and formulas, plus the course's variants),
learning-rate schedulers (:mod:`fastmlp.optim.lr_scheduler`) and gradient clipping."""

from . import lr_scheduler
from .adam import Adam, Adamax, AdamW, NAdam
from .adaptive import Adadelta, Adagrad, RMSprop
from .clip import clip_grad_norm_, clip_grad_value_
from .optimizer import Optimizer
from .sgd import SGD, Momentum

OPTIMIZERS = {
    "sgd": SGD, "momentum": Momentum, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam,
    "adamw": AdamW, "adamax": Adamax, "nadam": NAdam, "adadelta": Adadelta,
}


def get_optimizer(name: str, params, **kwargs) -> Optimizer:
    """An optimizer by name (``"sgd"``, ``"adam"``, ``"amsgrad"`` is ``adam`` with
    ``amsgrad=True``, ``"nesterov"`` is ``sgd`` with Nesterov momentum 0.9)."""
    from .._validate import check_name

    if name == "amsgrad":
        return Adam(params, amsgrad=True, **kwargs)
    if name == "nesterov":
        kwargs.setdefault("momentum", 0.9)
        return SGD(params, nesterov=True, **kwargs)
    check_name("optimizer", name, [*OPTIMIZERS, "amsgrad", "nesterov"])
    return OPTIMIZERS[name](params, **kwargs)


__all__ = [
    "Optimizer", "SGD", "Momentum", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "Adamax",
    "NAdam", "OPTIMIZERS", "get_optimizer", "lr_scheduler", "clip_grad_norm_", "clip_grad_value_",
]
