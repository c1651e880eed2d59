"""Training and evaluation: ``fit``, ``History``, ``evaluate``, ``accuracy``, ``misclassified``.

``fit`` runs the course's loop: for every minibatch, forward, cost, backward and an optimizer
step (``model.train_step``, one native call where the backend has one); after every epoch, the
training and validation accuracy in evaluation mode; and it prints the course's log::

    Epoch: 001/100 | Batch 000/156 | Cost: 0.6327
    Epoch: 001/100 Train Acc.: 63.35% | Validation Acc.: 62.12%
    Time elapsed: 3.09 min
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import numpy as np

from ._progress import ProgressBar, is_terminal
from ._validate import as_labels
from .backends import get_backend, use_backend
from .data.dataset import ArrayDataset
from .data.loader import DataLoader
from .losses import Loss, check_scalar_loss, get_loss
from .optim import get_optimizer
from .optim.lr_scheduler import ReduceLROnPlateau
from .optim.optimizer import Optimizer

__all__ = ["History", "fit", "evaluate", "accuracy", "misclassified", "predict_loader"]

HISTORY_KEYS = ("epoch", "loss", "train_loss", "accuracy", "val_loss", "val_accuracy", "lr", "time")


class History:
    """Per-epoch record of a training run, as lists (``history.loss[-1]``) or rows.

    Attributes
    ----------
    epoch : list of int
        1-based epoch numbers.
    loss : list of float
        Mean of the epoch's minibatch costs, each taken before its update step (the running
        mean; free to compute).
    train_loss : list of float
        Cost over the whole training set after the epoch, in evaluation mode: what the
        course's notebooks print as ``Train Cost`` (NaN with ``eval_train=False``).
    accuracy, val_accuracy : list of float
        Fractions in [0, 1], measured after the epoch in evaluation mode over the whole
        training / validation set (NaN when not measured).
    val_loss : list of float
        Mean cost over the validation set (NaN without validation data).
    lr : list of float
        Learning rate of the first param group during the epoch.
    time : list of float
        Seconds since the start of ``fit`` at the end of each epoch.
    """

    def __init__(self, rows: Iterable[dict[str, Any]] = ()):
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
        for row in rows:
            self.append(row)

    def append(self, row: dict[str, Any]) -> None:
        """Add one epoch (missing keys are NaN)."""
        unknown = set(row) - set(HISTORY_KEYS)
        if unknown:
            raise KeyError(f"unknown history keys {sorted(unknown)}; known: {HISTORY_KEYS}")
        for k in HISTORY_KEYS:
            v = row.get(k, math.nan)
            self.history[k].append(int(v) if k == "epoch" else float(v))

    def __getattr__(self, name: str) -> list[float]:
        if name != "history" and name in HISTORY_KEYS:
            return self.history[name]
        raise AttributeError(name)

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __len__(self) -> int:
        return len(self.history["epoch"])

    def rows(self) -> list[dict[str, float]]:
        """One dict per epoch."""
        return [{k: self.history[k][i] for k in HISTORY_KEYS} for i in range(len(self))]

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists by key (JSON-serialisable except for NaN)."""
        return {k: list(v) for k, v in self.history.items()}

    @classmethod
    def from_dict(cls, d: dict[str, list[Any]]) -> History:
        """The inverse of :meth:`to_dict` (None read as NaN), e.g. from the ``history`` a
        ``ModelCheckpoint`` stores in the file's metadata, to continue it when resuming."""
        n = len(d.get("epoch", []))
        if any(len(v) != n for v in d.values()):
            raise ValueError("history lists differ in length")
        return cls({k: (math.nan if d[k][i] is None else d[k][i]) for k in d} for i in range(n))

    def best(self, key: str = "val_loss", mode: str = "auto") -> tuple[int, float]:
        """``(epoch, value)`` of the best epoch for ``key`` (min for losses, max for
        accuracies under ``mode="auto"``), ignoring NaN."""
        vals = np.asarray(self.history[key], dtype=float)
        if not np.isfinite(vals).any():
            raise ValueError(f"history has no values for {key!r}")
        mode = ("max" if "acc" in key else "min") if mode == "auto" else mode
        i = int(np.nanargmax(vals) if mode == "max" else np.nanargmin(vals))
        return self.history["epoch"][i], float(vals[i])

    def __repr__(self) -> str:
        if not len(self):
            return "History(empty)"
        last = self.rows()[-1]
        shown = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k != "epoch" and not math.isnan(v))
        return f"History({len(self)} epochs; last: {shown})"


# ---------------------------------------------------------------------------- data handling
def _as_dataset(data: Any, name: str) -> Any:
    if isinstance(data, tuple) and len(data) == 2:
        return ArrayDataset(*data)
    if isinstance(data, DataLoader):
        return data.dataset
    if hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, np.ndarray):
        return data
    raise TypeError(f"{name} must be (X, y), a Dataset or a DataLoader, got {type(data).__name__}")


def _as_loader(data: Any, name: str, batch_size: int, shuffle: bool = False, seed: int | None = None,
               drop_last: bool = False) -> DataLoader:
    """``data`` as a loader: a DataLoader is used as it is; ``(X, y)`` or a dataset is wrapped."""
    if isinstance(data, DataLoader):
        return data
    return DataLoader(_as_dataset(data, name), batch_size=batch_size, shuffle=shuffle, seed=seed,
                      drop_last=drop_last)


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError("training needs (input, target) batches; the dataset yields something else")
    return batch[0], batch[1]


def _is_classification(target: np.ndarray, out_width: int) -> bool:
    """Labels ``(N,)`` of integers, or one-hot / 0-1 rows: accuracy makes sense."""
    t = np.asarray(target)
    if t.ndim == 1:
        return t.dtype.kind in "iu" or (t.dtype.kind == "f" and bool(np.all(t == np.round(t))) and out_width > 1)
    if t.ndim == 2 and t.dtype.kind in "fiub" and t.size:
        binary = bool(np.all((t == 0) | (t == 1)))
        return binary and (t.shape[1] == 1 or bool(np.all(t.sum(axis=1) == 1)))
    return False


def _labels(target: np.ndarray, out_width: int) -> np.ndarray:
    """Class ids of ``target`` against a model with ``out_width`` outputs: one-hot (or
    probability) rows give their argmax; labels must be whole numbers in ``[0, C)``, C the
    output width (2 for a single output unit), or ValueError (never a silent miscount)."""
    t = np.asarray(target)
    if t.ndim == 2 and t.shape[1] > 1:
        if t.shape[1] != out_width:
            raise ValueError(f"target rows have {t.shape[1]} columns; the model has {out_width} outputs")
        return t.argmax(axis=1)
    t = t.reshape(-1)
    return as_labels(t, max(out_width, 2), t.shape[0], get_backend("numpy"))


def _predicted(model: Any, out: Any) -> np.ndarray:
    """Class predictions from the model's output (as ``model.predict`` computes them)."""
    be = model.backend
    if out.shape[1] == 1:
        from .layers import Sigmoid

        last = model.layers[-1] if hasattr(model, "layers") else None
        thr = 0.5 if isinstance(last, Sigmoid) else 0.0
        return be.to_numpy(out[:, 0] > thr).astype(np.int64)
    return be.to_numpy(out.argmax(axis=1)).astype(np.int64)


def predict_loader(model: Any, data: Any, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true class labels over ``data``, in the dataset's order, in evaluation
    mode (the model's mode is restored afterwards)."""
    loader = _as_loader(data, "data", batch_size)
    if isinstance(data, DataLoader) and data.shuffle:
        loader = DataLoader(data.dataset, batch_size=batch_size)
    be = model.backend
    was_training = model.training
    model.eval()
    preds, targets = [], []
    try:
        for batch in loader:
            X, y = _split_batch(batch)
            out = model.forward(X if be.device == "cpu" else be.asarray(X))
            preds.append(_predicted(model, out))
            targets.append(_labels(y, int(out.shape[1])))
    finally:
        model.train(was_training)
    return np.concatenate(preds), np.concatenate(targets)


def evaluate(model: Any, data: Any, loss: str | Loss | None = None, batch_size: int = 1024,
             compute_accuracy: bool | None = None) -> dict[str, float]:
    """Loss and accuracy of ``model`` over ``data``, in evaluation mode.

    Parameters
    ----------
    model : Sequential
    data : (X, y), Dataset or DataLoader
    loss : str or Loss, optional
        Without it, ``"loss"`` is NaN.
    batch_size : int
        Of the forward passes (memory only; the result does not depend on it).
    compute_accuracy : bool, optional
        None decides from the targets: integer labels or one-hot rows are classes.

    Returns
    -------
    dict
        ``{"loss": mean cost over samples, "accuracy": fraction correct}`` (NaN when not
        applicable). The loss is the mean per sample whatever ``loss.reduction`` is.
        Accuracy is ``(1/n) sum_i [argmax_c f(x_i)_c = y_i]``.
    """
    loss_fn = get_loss(loss) if isinstance(loss, str) else loss
    per_batch_mean = getattr(loss_fn, "reduction", "mean") == "mean"
    loader = _as_loader(data, "data", batch_size)
    be = model.backend
    was_training = model.training
    model.eval()
    total, correct, n = 0.0, 0, 0
    acc = compute_accuracy
    try:
        with use_backend(be.name):
            for batch in loader:
                X, y = _split_batch(batch)
                if be.device != "cpu":
                    X, y = be.asarray(X), be.asarray(y)
                out = model.forward(X)
                m = int(out.shape[0])
                if loss_fn is not None:  # summed over samples whatever the reduction
                    value = loss_fn(out, y, backend=be)
                    total += float(value) * m if per_batch_mean else float(be.xp.sum(value))
                if acc is None:
                    acc = _is_classification(be.to_numpy(y), int(out.shape[1]))
                if acc:
                    correct += int((_predicted(model, out) == _labels(be.to_numpy(y), int(out.shape[1]))).sum())
                n += m
    finally:
        model.train(was_training)
    return {"loss": total / n if loss_fn is not None else math.nan,
            "accuracy": correct / n if acc else math.nan}


def accuracy(model: Any, data: Any, batch_size: int = 1024) -> float:
    """Fraction of ``data`` classified correctly (argmax of the outputs against the labels
    or the one-hot rows), in evaluation mode."""
    return evaluate(model, data, batch_size=batch_size, compute_accuracy=True)["accuracy"]


def misclassified(model: Any, data: Any, batch_size: int = 1024) -> list[tuple[int, int, int]]:
    """The failure cases, as the course recommends looking at them.

    Returns
    -------
    list of (index, target, predicted)
        ``index`` is the sample's position in ``data`` (in dataset order), sorted by index.
    """
    pred, true = predict_loader(model, data, batch_size)
    wrong = np.flatnonzero(pred != true)
    return [(int(i), int(true[i]), int(pred[i])) for i in wrong]


# ---------------------------------------------------------------------------- fit
class TrainingState:
    """What callbacks see: the model, optimizer, loss, history, the current epoch (0-based),
    and ``stop`` (set it to True to end training after this epoch)."""

    def __init__(self, model, optimizer, loss, history, epochs, scheduler):
        self.model, self.optimizer, self.loss, self.history = model, optimizer, loss, history
        self.epochs, self.scheduler = epochs, scheduler
        self.epoch = 0
        self.stop = False


def _build_optimizer(model, optimizer, lr) -> Optimizer:
    if isinstance(optimizer, Optimizer):
        if lr is not None:
            for g in optimizer.param_groups:
                g["lr"] = float(lr)
        return optimizer
    if isinstance(optimizer, str):
        kwargs = {} if lr is None else {"lr": float(lr)}
        return get_optimizer(optimizer, model.parameters(), **kwargs)
    raise TypeError(f"optimizer must be a name or a fastmlp Optimizer, got {type(optimizer).__name__}")


def _check_positive_int(name: str, v: Any, allow_zero: bool = False) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer, got {v!r}")
    return int(v)


def fit(model: Any, train: Any, loss: str | Loss = "cross_entropy", optimizer: str | Optimizer = "adam",
        epochs: int = 10, val: Any = None, batch_size: int = 32, callbacks: Sequence[Any] = (),
        scheduler: Any = None, verbose: int = 1, *, lr: float | None = None, shuffle: bool = True,
        seed: int | None = None, drop_last: bool = False, log_every: int = 50, initial_epoch: int = 0,
        eval_train: bool = True, compute_accuracy: bool | None = None, history: History | None = None,
        progress: bool | None = None, file: TextIO | None = None) -> History:
    """Train ``model`` with minibatch gradient descent, the course's loop and log.

    For each epoch and each minibatch ``(X, y)``: ``out = model(X)``, the cost
    ``L = loss(out, y)``, ``dL/dout`` back through the model, one optimizer step
    (``model.train_step``). After the epoch: training and validation accuracy in evaluation
    mode, the history row, the scheduler step, the callbacks.

    Parameters
    ----------
    model : Sequential (e.g. MLP)
    train : (X, y), Dataset or DataLoader
        A DataLoader is used as given (its batch size and order); otherwise one is made with
        ``batch_size``, ``shuffle``, ``seed`` and ``drop_last``.
    loss : str or Loss, default "cross_entropy"
    optimizer : str or Optimizer, default "adam"
        A name builds the optimizer over ``model.parameters()`` (with ``lr`` if given).
    epochs : int
        Train until this epoch (counting from 0, so ``initial_epoch`` resumes a run).
    val : (X, y), Dataset or DataLoader, optional
    batch_size : int, default 32
    callbacks : sequence of Callback
        ``EarlyStopping``, ``ModelCheckpoint``, ``CSVLogger`` or your own.
    scheduler : LRScheduler, ReduceLROnPlateau, or callable(optimizer) -> scheduler, optional
        Stepped once per epoch (``ReduceLROnPlateau`` with the validation loss, else the
        training loss).
    verbose : int, default 1
        0: silent. 1: the course's log lines (every ``log_every`` batches, then the epoch's
        accuracies and the time elapsed), and a progress bar when ``file`` is a terminal.
    lr : float, optional
        Learning rate (overrides the optimizer's).
    shuffle, seed, drop_last :
        For the loader ``fit`` builds. With a ``seed``, the order of epoch ``e`` depends only
        on ``(seed, e)``, so a run resumed at ``initial_epoch`` continues exactly.
    log_every : int, default 50
        Print the batch cost every ``log_every`` batches (0: never).
    initial_epoch : int, default 0
        Epochs already done (for resuming; see :func:`fastmlp.io.load_checkpoint`).
    eval_train : bool, default True
        Measure the training cost and accuracy after each epoch with a pass over the whole
        training set in evaluation mode (the course's way); False skips that pass.
    compute_accuracy : bool, optional
        None decides from the targets (class labels or one-hot rows).
    history : History, optional
        Append to this history (when resuming) instead of a new one.
    progress : bool, optional
        Force the progress bar on or off (default: on when ``file`` is a terminal).
    file : text stream, optional
        Where the log goes (default ``sys.stdout``).

    Returns
    -------
    History
    """
    epochs = _check_positive_int("epochs", epochs)
    initial_epoch = _check_positive_int("initial_epoch", initial_epoch, allow_zero=True)
    log_every = _check_positive_int("log_every", log_every, allow_zero=True)
    _check_positive_int("batch_size", batch_size)
    if not hasattr(model, "train_step") or not hasattr(model, "parameters"):
        raise TypeError(f"fit needs a fastmlp model (Sequential/MLP), got {type(model).__name__}")
    loss_fn = get_loss(loss) if isinstance(loss, str) else loss
    if not isinstance(loss_fn, Loss) and not hasattr(loss_fn, "value_and_grad"):
        raise TypeError(f"loss must be a name or a fastmlp Loss, got {type(loss).__name__}")
    check_scalar_loss(loss_fn, "fit")
    opt = _build_optimizer(model, optimizer, lr)
    if scheduler is not None and not hasattr(scheduler, "step") and callable(scheduler):
        scheduler = scheduler(opt)
    loader = _as_loader(train, "train", batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
    train_eval = DataLoader(loader.dataset, batch_size=1024) if eval_train else None
    val_loader = _as_loader(val, "val", 1024) if val is not None else None
    callbacks = list(callbacks)
    out = file if file is not None else sys.stdout
    bar = ProgressBar(out, enabled=verbose > 0 and (is_terminal(out) if progress is None else bool(progress)))
    hist = history if history is not None else History()
    state = TrainingState(model, opt, loss_fn, hist, epochs, scheduler)
    be = model.backend
    n_batches = len(loader)
    started = time.perf_counter()

    def log(line: str) -> None:
        if verbose > 0:
            bar.clear()
            print(line, file=out, flush=True)

    with use_backend(be.name):
        for cb in callbacks:
            cb.on_train_begin(state)
        for epoch in range(initial_epoch, epochs):
            state.epoch = epoch
            for cb in callbacks:
                cb.on_epoch_begin(epoch, state)
            loader.set_epoch(epoch)
            model.train()
            lr_now = float(opt.param_groups[0]["lr"])
            total, count = 0.0, 0
            for b, batch in enumerate(loader):
                X, y = _split_batch(batch)
                if be.device != "cpu":
                    X, y = be.asarray(X), be.asarray(y)
                if compute_accuracy is None and epoch == initial_epoch and b == 0:
                    out_width = model.out_features or 1
                    compute_accuracy = _is_classification(be.to_numpy(y), out_width)
                cost = model.train_step(X, y, loss_fn, opt)
                m = int(X.shape[0])
                total += cost * m
                count += m
                if log_every and b % log_every == 0:
                    log(f"Epoch: {epoch + 1:03d}/{epochs:03d} | Batch {b:03d}/{n_batches:03d} | Cost: {cost:.4f}")
                bar.update(epoch + 1, epochs, b + 1, n_batches, total / count, started)
            bar.clear()
            if count == 0:
                raise ValueError("the training loader yielded no batch (drop_last with fewer samples than batch_size?)")
            row: dict[str, float] = {"epoch": epoch + 1, "loss": total / count, "lr": lr_now}
            if train_eval is not None:
                tr = evaluate(model, train_eval, loss_fn, compute_accuracy=compute_accuracy)
                row["train_loss"], row["accuracy"] = tr["loss"], tr["accuracy"]
            if val_loader is not None:
                v = evaluate(model, val_loader, loss_fn, compute_accuracy=compute_accuracy)
                row["val_loss"], row["val_accuracy"] = v["loss"], v["accuracy"]
            row["time"] = time.perf_counter() - started
            hist.append(row)
            log(_epoch_line(epoch + 1, epochs, hist.rows()[-1]))
            log(f"Time elapsed: {row['time'] / 60:.2f} min")
            if scheduler is not None:
                if isinstance(scheduler, ReduceLROnPlateau):
                    scheduler.step(row.get("val_loss", row["loss"]))
                else:
                    scheduler.step()
            for cb in callbacks:
                cb.on_epoch_end(epoch, hist.rows()[-1], state)
            if state.stop:
                break
        for cb in callbacks:
            cb.on_train_end(state)
    return hist


def _epoch_line(epoch: int, epochs: int, row: dict[str, float]) -> str:
    """``Epoch: 001/100 Train Acc.: 63.35% | Validation Acc.: 62.12%`` (costs instead of
    accuracies when there are none: a regression)."""
    parts = []
    if not math.isnan(row["accuracy"]):
        parts.append(f"Train Acc.: {100 * row['accuracy']:.2f}%")
    else:
        cost = row["train_loss"] if not math.isnan(row["train_loss"]) else row["loss"]
        parts.append(f"Train Cost: {cost:.4f}")
    if not math.isnan(row["val_accuracy"]):
        parts.append(f"Validation Acc.: {100 * row['val_accuracy']:.2f}%")
    elif not math.isnan(row["val_loss"]):
        parts.append(f"Validation Cost: {row['val_loss']:.4f}")
    return f"Epoch: {epoch:03d}/{epochs:03d} " + " | ".join(parts)

