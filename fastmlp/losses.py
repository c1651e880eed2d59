"""Loss functions with the definitions and defaults of ``torch.nn.functional``.

``loss(output, target)`` returns the value (a float for ``mean``/``sum``, an array for
``none``); ``loss.value_and_grad(output, target)`` returns the value and ``dL/d(output)``,
ready for ``model.backward``. With ``reduction="none"`` the gradient is that of the *sum* of
the per-sample losses (as if backpropagating ``loss.sum()``).

Every loss checks its inputs first (shapes, label range, probabilities in [0, 1]) and raises
``FloatingPointError`` if the value is NaN or infinite.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._validate import as_labels, check_name
from .backends import get_backend

__all__ = [
    "Loss", "MSELoss", "L1Loss", "HuberLoss", "CrossEntropyLoss", "NLLLoss",
    "BCEWithLogitsLoss", "BCELoss", "LOSSES", "get_loss",
]

_REDUCTIONS = ("mean", "sum", "none")


def check_scalar_loss(loss: Any, who: str) -> None:
    """Training differentiates one number: ``reduction="none"`` (a value per sample) is refused
    with a clear error, as PyTorch's ``backward`` refuses a non-scalar loss."""
    if getattr(loss, "reduction", "mean") == "none":
        raise ValueError(f"{who} needs a scalar loss: reduction='mean' or 'sum', got 'none'")


class Loss:
    """Base class: validates, calls the backend op ``<op>(output, target, reduction, ...)``.

    Parameters
    ----------
    reduction : "mean" | "sum" | "none"
    """

    op: ClassVar[str] = ""
    target_kind: ClassVar[str] = "same"  # "same": target shaped like output; "labels": class ids

    def __init__(self, reduction: str = "mean"):
        self.reduction = check_name("reduction", reduction, _REDUCTIONS)

    def _kwargs(self) -> dict[str, Any]:
        return {}

    def _prepare(self, output, target, be):
        xp = be.xp
        if not isinstance(output, xp.ndarray) or output.dtype.kind != "f":
            raise TypeError(
                f"{type(self).__name__}: output must be a floating {xp.__name__} array, got {type(output).__name__}"
            )
        if output.ndim < 1 or output.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}: output is empty (shape {tuple(output.shape)})")
        if self.target_kind == "same" or (self.target_kind == "labels_or_probs" and getattr(target, "ndim", 1) == output.ndim):
            if isinstance(target, np.ndarray) and be.device != "cpu":
                raise TypeError("target is a NumPy array but the backend is on the GPU: move it first")
            target = xp.asarray(target)
            if target.dtype.kind not in "fiub":
                raise TypeError(f"{type(self).__name__}: target must be numeric, got dtype {target.dtype}")
            if tuple(target.shape) != tuple(output.shape):
                raise ValueError(
                    f"{type(self).__name__}: target shape {tuple(target.shape)} differs from output shape {tuple(output.shape)}"
                )
            target = target.astype(output.dtype, copy=False)
            if not bool(xp.isfinite(target).all()):
                raise FloatingPointError(f"{type(self).__name__}: target contains NaN or Inf")
            return output, target
        if output.ndim != 2:
            raise ValueError(f"{type(self).__name__}: output must be (batch, classes), got shape {tuple(output.shape)}")
        return output, as_labels(target, output.shape[1], output.shape[0], be)

    def value_and_grad(self, output, target, backend=None):
        """``(value, dL/d(output))``; ``backend`` defaults to the current one."""
        be = backend if backend is not None else get_backend()
        output, target = self._prepare(output, target, be)
        value, grad = getattr(be, self.op)(output, target, reduction=self.reduction,
                                            need_grad=True, **self._kwargs())
        return self._finite(value, be), grad

    def __call__(self, output, target, backend=None):
        be = backend if backend is not None else get_backend()
        output, target = self._prepare(output, target, be)
        value, _ = getattr(be, self.op)(output, target, reduction=self.reduction,
                                         need_grad=False, **self._kwargs())
        return self._finite(value, be)

    def _finite(self, value, be):
        if self.reduction == "none":
            if not bool(be.xp.isfinite(value).all()):
                raise FloatingPointError(f"{type(self).__name__} is NaN or infinite")
            return value
        v = float(value)
        if not np.isfinite(v):
            raise FloatingPointError(
                f"{type(self).__name__} is {v}: the model diverged or its output holds NaN/Inf "
                "(lower the learning rate, or check the inputs)"
            )
        return v

    def config(self) -> dict[str, Any]:
        return {"reduction": self.reduction, **self._kwargs()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"


class MSELoss(Loss):
    """Mean squared error ``(output - target)^2`` (mean over every element)."""

    op = "mse_loss"


class L1Loss(Loss):
    """Mean absolute error ``|output - target|``."""

    op = "l1_loss"


class HuberLoss(Loss):
    """Huber loss: ``d^2/2`` for ``|d| <= delta``, ``delta (|d| - delta/2)`` beyond."""

    op = "huber_loss"

    def __init__(self, reduction: str = "mean", delta: float = 1.0):
        super().__init__(reduction)
        if not delta > 0:
            raise ValueError(f"delta must be positive, got {delta}")
        self.delta = float(delta)

    def _kwargs(self):
        return {"delta": self.delta}


class CrossEntropyLoss(Loss):
    """Cross-entropy from logits: softmax and negative log-likelihood fused.

    ``target`` is integer labels ``(N,)`` in ``[0, C)`` or class probabilities ``(N, C)``;
    ``label_smoothing`` mixes the target with the uniform distribution:
    ``q = (1 - ls) q + ls / C``. ``mean`` averages over the batch.
    """

    op = "cross_entropy_loss"
    target_kind = "labels_or_probs"

    def __init__(self, reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def _kwargs(self):
        return {"label_smoothing": self.label_smoothing}

    def _prepare(self, output, target, be):
        output, target = super()._prepare(output, target, be)
        if target.ndim == 2 and (bool((target < 0).any()) or bool((target > 1).any())):
            raise ValueError("CrossEntropyLoss: probability targets must lie in [0, 1]")
        return output, target


class NLLLoss(Loss):
    """Negative log-likelihood of integer labels, from log-probabilities (after ``LogSoftmax``)."""

    op = "nll_loss"
    target_kind = "labels"


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy from logits (sigmoid fused, numerically stable); targets in [0, 1]."""

    op = "bce_with_logits_loss"

    def _prepare(self, output, target, be):
        output, target = super()._prepare(output, target, be)
        if bool((target < 0).any()) or bool((target > 1).any()):
            raise ValueError(f"{type(self).__name__}: targets must lie in [0, 1]")
        return output, target


class BCELoss(BCEWithLogitsLoss):
    """Binary cross-entropy of probabilities (after a ``Sigmoid``); logs clamped at -100."""

    op = "bce_loss"

    def _prepare(self, output, target, be):
        output, target = super()._prepare(output, target, be)
        if bool((output < 0).any()) or bool((output > 1).any()):
            raise ValueError("BCELoss: the output must be probabilities in [0, 1] (use BCEWithLogitsLoss for logits)")
        return output, target


LOSSES: dict[str, type[Loss]] = {
    "mse": MSELoss, "l1": L1Loss, "huber": HuberLoss, "cross_entropy": CrossEntropyLoss,
    "nll": NLLLoss, "bce_with_logits": BCEWithLogitsLoss, "bce": BCELoss,
}


def get_loss(name: str, **kwargs: Any) -> Loss:
    """A loss by name: ``"cross_entropy"``, ``"mse"``, ``"nll"``, ``"bce"``, ..."""
    check_name("loss", name, LOSSES)
    return LOSSES[name](**kwargs)
