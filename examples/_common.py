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


def report(name: str, model, train, test, history) -> None:
    """Print the final training and test accuracies, as the notebooks do."""
    tr = 100 * fastmlp.accuracy(model, train)
    te = 100 * fastmlp.accuracy(model, test)
    print(f"{name}: train accuracy {tr:.2f}%, test accuracy {te:.2f}%")
    return tr, te
