"""Callbacks for :func:`fastmlp.fit`: early stopping, checkpoints, a CSV log.

A callback subclasses :class:`Callback` and overrides any of its hooks; each receives the
:class:`~fastmlp.train.TrainingState` (model, optimizer, history, epoch, ``stop``).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .train import HISTORY_KEYS

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "CSVLogger"]


class Callback:
    """Base class: every hook does nothing."""

    def on_train_begin(self, state) -> None:
        """Before the first epoch."""

    def on_epoch_begin(self, epoch: int, state) -> None:
        """Before epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float], state) -> None:
        """After epoch ``epoch``; ``logs`` is its history row."""

    def on_train_end(self, state) -> None:
        """After the last epoch (or the early stop)."""


def _mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


def _monitored(monitor: str, logs: dict[str, float], who: str) -> float:
    if monitor not in HISTORY_KEYS:
        raise ValueError(f"{who}: cannot monitor {monitor!r}; choose one of {HISTORY_KEYS}")
    value = logs.get(monitor, math.nan)
    if math.isnan(value):
        raise ValueError(
            f"{who} monitors {monitor!r} but fit did not measure it "
            "(pass val= for 'val_*', or monitor 'loss')"
        )
    return value


class EarlyStopping(Callback):
    """Stop when the monitored metric has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor : str, default "val_loss"
        A history key: ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``.
    patience : int, default 5
    min_delta : float, default 0
        An improvement must exceed it.
    mode : "auto" | "min" | "max"
        ``auto``: max for accuracies, min for losses.
    restore_best_weights : bool, default False
        At the end, put back the parameters of the best epoch.

    Attributes
    ----------
    best : float
    best_epoch : int
        1-based.
    stopped_epoch : int or None
        1-based epoch after which training stopped.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = False):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {patience!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, abs(float(min_delta))
        self.mode = _mode(monitor, mode)
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, state) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch, self.wait, self.stopped_epoch = 0, 0, None
        self._best_state = None

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs, state) -> None:
        value = _monitored(self.monitor, logs, "EarlyStopping")
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch + 1, 0
            if self.restore_best_weights:
                self._best_state = state.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:  # as Keras: patience epochs without improvement, then stop
            self.stopped_epoch = epoch + 1
            state.stop = True

    def on_train_end(self, state) -> None:
        if self.restore_best_weights and self._best_state is not None:
            state.model.load_state_dict(self._best_state)


class ModelCheckpoint(Callback):
    """Save the model (and the optimizer, to resume) after each epoch, or only when the
    monitored metric improves.

    Parameters
    ----------
    path : str or Path
        May hold ``{epoch}`` (e.g. ``"ckpt-{epoch:03d}.npz"``); written atomically.
    monitor : str, default "val_loss"
    save_best_only : bool, default False
    mode : "auto" | "min" | "max"
    save_optimizer : bool, default True
        Store the optimizer state too, so :func:`fastmlp.io.load_checkpoint` resumes exactly.
    """

    def __init__(self, path: str | os.PathLike, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto", save_optimizer: bool = True):
        self.path = str(path)
        self.monitor, self.save_best_only = monitor, bool(save_best_only)
        self.mode = _mode(monitor, mode)
        self.save_optimizer = bool(save_optimizer)
        self.saved: list[str] = []

    def on_train_begin(self, state) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs, state) -> None:
        from .io import save

        if self.save_best_only:
            value = _monitored(self.monitor, logs, "ModelCheckpoint")
            better = value < self.best if self.mode == "min" else value > self.best
            if not better:
                return
            self.best = value
        path = self.path.format(epoch=epoch + 1, **{k: v for k, v in logs.items() if k != "epoch"})
        save(state.model, path, optimizer=state.optimizer if self.save_optimizer else None,
             metadata={"epoch": epoch + 1, "history": _json_history(state.history)})
        self.saved.append(path)


def _json_history(history) -> dict[str, list[Any]]:
    return {k: [None if isinstance(v, float) and math.isnan(v) else v for v in vals]
            for k, vals in history.to_dict().items()}


class CSVLogger(Callback):
    """Write one CSV row per epoch (the history keys), the file complete after each epoch.

    Parameters
    ----------
    path : str or Path
    append : bool, default False
        Append to an existing file (when resuming) instead of starting it afresh.
    """

    def __init__(self, path: str | os.PathLike, append: bool = False):
        self.path, self.append = Path(path), bool(append)

    def on_train_begin(self, state) -> None:
        if not (self.append and self.path.exists()):
            with open(self.path, "w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerow(HISTORY_KEYS)

    def on_epoch_end(self, epoch, logs, state) -> None:
        # opened per row: the file is complete after every epoch, even if training then fails
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerow(["" if isinstance(logs[k], float) and np.isnan(logs[k]) else logs[k]
                                     for k in HISTORY_KEYS])
