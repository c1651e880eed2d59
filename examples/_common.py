"""Helpers shared by the example scripts: command-line options, output folder, the course's
initialisation. Run the examples from the repository root: ``python examples/<name>.py``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import fastmlp

OUT = Path(__file__).resolve().parents[1] / "out"


def parser(description: str, epochs: int) -> argparse.ArgumentParser:
    """Options every example takes: ``--epochs``, ``--quick`` (a seconds-long smoke run),
    ``--backend``, ``--seed`` and ``--out`` (folder of the figures, default ``out/``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--epochs", type=int, default=epochs, help=f"default {epochs}, as in the course")
    p.add_argument("--quick", action="store_true", help="a tiny run that only proves the script works")
    p.add_argument("--backend", default=None, help="fastmlp backend (default: FASTMLP_BACKEND / auto)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUT, help="folder for the figures")
    return p


def setup(args: argparse.Namespace) -> None:
    """Seed, pick the backend, create the output folder."""
    fastmlp.seed(args.seed)
    if args.backend:
        fastmlp.set_backend(args.backend)
    args.out.mkdir(parents=True, exist_ok=True)


def course_init(model, rng) -> fastmlp.Sequential:
    """The notebooks' initialisation: every weight ~ N(0, 0.1), every bias 0."""
    rng = np.random.default_rng(rng)
    for layer in model.layers:
        if isinstance(layer, fastmlp.Linear):
            fastmlp.init.normal_(layer.weight, 0.0, 0.1, rng=rng)
            fastmlp.init.zeros_(layer.bias)
    return model


def mnist(args: argparse.Namespace, one_hot: bool = False):
    """``(train, test)``: the bundled MNIST, as ``(X, y)`` pairs or, with ``one_hot``, datasets
    whose targets are one-hot rows (for the MSE runs). ``--quick``: 2,000 training images and
    one epoch."""
    from fastmlp.data import ArrayDataset, OneHot
    from fastmlp.datasets import load_mnist

    (X, y), test = load_mnist("train"), load_mnist("test")
    if args.quick:
        X, y, args.epochs = X[:2000], y[:2000], 1
    if not one_hot:
        return (X, y), test
    return ArrayDataset(X, y, target_transform=OneHot(10)), ArrayDataset(*test, target_transform=OneHot(10))


def course_fit(model, train, loss, args: argparse.Namespace, checkpoint: str) -> fastmlp.History:
    """The course's training: SGD lr 0.1, batches of 100 shuffled, ``args.epochs`` epochs, the
    log every 200 batches, the lowest-loss model saved to ``args.out / checkpoint``."""
    return fastmlp.fit(model, train, loss=loss, optimizer="sgd", lr=0.1, epochs=args.epochs, batch_size=100,
                       seed=args.seed, log_every=200,
                       callbacks=[fastmlp.ModelCheckpoint(args.out / checkpoint, monitor="loss")])


def report(name: str, model, train, test, history) -> None:
    """Print the final training and test accuracies, as the notebooks do."""
    tr = 100 * fastmlp.accuracy(model, train)
    te = 100 * fastmlp.accuracy(model, test)
    print(f"{name}: train accuracy {tr:.2f}%, test accuracy {te:.2f}%")
    return tr, te
