"""Figures to PNG files: learning curves, failure cases, and plain curves for the examples.

matplotlib (the ``plot`` extra) is imported inside each function, never with fastmlp, and
without pyplot: figures are drawn with ``matplotlib.figure.Figure`` and its Agg canvas, so no
display and no global state are involved.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_history", "plot_misclassified", "plot_curves"]


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("fastmlp.plot needs matplotlib: pip install 'fastmlp[plot]'") from exc
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"figures are written as PNG; give a path ending in .png, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_history(history: Any, path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw the loss curves (the epoch's mean minibatch cost, the training cost after the
    epoch, the validation cost) and the accuracy curve (training and validation, in %) side by side.

    Parameters
    ----------
    history : History
        What :func:`fastmlp.fit` returned.
    path : str or Path
        A ``.png`` file (its folder is created).
    title : str, optional
    """
    h = history.history if hasattr(history, "history") else history
    epochs = np.asarray(h["epoch"])
    if epochs.size == 0:
        raise ValueError("the history is empty: nothing to plot")
    fig = _figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, h["loss"], marker="o", ms=3, label="training (mean minibatch cost)")
    if np.isfinite(np.asarray(h.get("train_loss", []), float)).any():
        ax_loss.plot(epochs, h["train_loss"], marker="o", ms=3, label="training (after the epoch)")
    if np.isfinite(np.asarray(h["val_loss"], float)).any():
        ax_loss.plot(epochs, h["val_loss"], marker="o", ms=3, label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cost", title="Loss")
    ax_loss.legend()
    acc = 100 * np.asarray(h["accuracy"], float)
    val_acc = 100 * np.asarray(h["val_accuracy"], float)
    if np.isfinite(acc).any():
        ax_acc.plot(epochs, acc, marker="o", ms=3, label="training")
    if np.isfinite(val_acc).any():
        ax_acc.plot(epochs, val_acc, marker="o", ms=3, label="validation")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    if ax_acc.lines:
        ax_acc.legend()
    else:
        ax_acc.text(0.5, 0.5, "no accuracy (not a classification)", ha="center", va="center",
                    transform=ax_acc.transAxes)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _as_image(x: np.ndarray, shape: Sequence[int] | None) -> np.ndarray:
    x = np.asarray(x)
    if shape is not None:
        return x.reshape(shape)
    if x.ndim == 1:
        side = math.isqrt(x.size)
        if side * side != x.size:
            raise ValueError(f"cannot draw a vector of {x.size} values as a square image; pass shape=")
        return x.reshape(side, side)
    return x


def plot_misclassified(model: Any, data: Any, path: str | os.PathLike, max_images: int = 15, ncols: int = 5,
                       shape: Sequence[int] | None = None, cases: Sequence[tuple[int, int, int]] | None = None) -> Path:
    """A grid of failure cases, each image captioned ``t: <target> p: <predicted>`` as in
    the course.

    Parameters
    ----------
    model : Sequential
    data : (X, y), Dataset or DataLoader
        The images are its inputs (a flat 784 vector is drawn as 28 x 28).
    path : str or Path
        A ``.png`` file.
    max_images : int, default 15
    ncols : int, default 5
    shape : tuple, optional
        Image shape for the inputs (default: a square for vectors).
    cases : list of (index, target, predicted), optional
        Precomputed :func:`fastmlp.misclassified` output.
    """
    from .train import _as_dataset, misclassified

    if cases is None:
        cases = misclassified(model, data)
    cases = list(cases)[:max_images]
    dataset = _as_dataset(data, "data")
    n = max(len(cases), 1)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = _figure(1.6 * ncols, 1.8 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax in axes:
        ax.set_axis_off()
    if not cases:
        axes[0].text(0.5, 0.5, "no misclassified samples", ha="center", va="center")
    for ax, (i, t, p) in zip(axes, cases):
        sample = dataset[i]
        img = _as_image(sample[0] if isinstance(sample, tuple) else sample, shape)
        ax.imshow(img, cmap="binary" if img.ndim == 2 else None)
        ax.set_title(f"t: {t} p: {p}", fontsize=10, y=-0.22)
    return _save(fig, path)


def plot_curves(x: Sequence[float], series: Mapping[str, Sequence[float]], path: str | os.PathLike,
                xlabel: str = "", ylabel: str = "", title: str = "", logx: bool = False, logy: bool = False,
                points: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None) -> Path:
    """Several curves against the same ``x`` (and optional scatter ``points``) in one axes."""
    fig = _figure(7, 4.5)
    ax = fig.subplots()
    for name, (px, py) in (points or {}).items():
        ax.scatter(px, py, s=6, alpha=0.4, label=name)
    for name, ys in series.items():
        ax.plot(x, ys, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
