"""The command line: ``python -m fastmlp info | train | bench`` (or the ``fastmlp`` script).

``train`` with no option trains a 784-256-10 ReLU MLP with Adam on the bundled MNIST and prints
the course's log and the test accuracy.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def _int_at_least(low: int, what: str):
    """An argparse type: an int >= ``low``, else an error naming ``what``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "a non-negative integer")


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _prepare_output(text: str, kind: str) -> None:
    """Make an output path of ``train`` usable before training: raise ``ValueError`` if it is not.

    ``kind="file"``: the file's folder is created if missing; the path must not be a folder.
    ``kind="dir"``: the folder itself is created if missing. Either way the folder must be
    writable (a temporary file is created there and removed), and an existing file writable.
    """
    import os
    import tempfile
    from pathlib import Path

    path = Path(text)
    if kind == "file" and path.is_dir():
        raise ValueError(f"{text} is a folder; give a file name in it")
    folder = path if kind == "dir" else path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ValueError(f"cannot use {text}: {folder} exists and is not a folder") from None
    except OSError as exc:
        raise ValueError(f"cannot create the folder {folder} for {text}: {exc.strerror or exc}") from None
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write to the folder {folder}: {exc.strerror or exc}") from None
    if kind == "file" and path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"cannot overwrite {text}: permission denied")


def _prepare_outputs(args: argparse.Namespace) -> None:
    """Check ``train``'s output paths (--save, --csv-log, --plot) once the options are parsed and
    before any data is loaded: create their folders (as ``--plot`` always did for its own, but
    only after training), and stop with a usage error (exit status 2) naming the option if one
    cannot be written, so that a long run never ends by failing to write its result."""
    error = args.usage_error  # train's parser.error (build_parser)
    for option, text, kind in (("--save", args.save, "file"), ("--csv-log", args.csv_log, "file"),
                               ("--plot", args.plot, "dir")):
        if text is None:
            continue
        if not text:
            error(f"argument {option}: expected a path, got ''")
        try:
            _prepare_output(text, kind)
        except ValueError as exc:
            error(f"argument {option}: {exc}")
    if args.plot is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            error("argument --plot: needs matplotlib: pip install 'fastmlp[plot]'")


# the default of train's --val-size: 10 % of the training samples, at most this many
_VAL_FRACTION, _VAL_MAX = 0.1, 5000


def default_val_size(n_train: int) -> int:
    """``train``'s default validation size: 10 % of the ``n_train`` training samples (rounded
    down, like ``validation_split=0.1`` in Keras), at most 5000. The full MNIST (60000) holds out
    5000; ``--subset 5000`` holds out 500; the XOR data (600 training points) 60."""
    return min(_VAL_MAX, int(_VAL_FRACTION * n_train))


def build_parser() -> argparse.ArgumentParser:
    from .backends import known_names
    from .layers import ACTIVATIONS
    from .optim import OPTIMIZERS

    parser = argparse.ArgumentParser(prog="python -m fastmlp", description="fastmlp: MLPs with hand-written kernels.")
    sub = parser.add_subparsers(dest="command", metavar="{info,train,bench}")
    sub.required = True

    info = sub.add_parser("info", help="the backend report (availability, device, dtypes, native ops)")
    info.add_argument("--ops", action="store_true", help="list each backend's native and reference ops")

    t = sub.add_parser("train", help="train an MLP (bundled MNIST by default) with the course's log",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--dataset", choices=("mnist", "xor"), default="mnist")
    t.add_argument("--hidden", type=_positive_int, nargs="+", default=[256], metavar="N",
                   help="hidden layer widths")
    names = ", ".join(sorted(ACTIVATIONS))
    t.add_argument("--activation", choices=sorted(ACTIVATIONS), default="relu", metavar="NAME",
                   help=f"hidden activation: {names}")
    t.add_argument("--loss", choices=("cross_entropy", "mse"), default="cross_entropy",
                   help="mse trains on one-hot targets (add --output-activation sigmoid for the course's run 1)")
    t.add_argument("--output-activation", choices=sorted(ACTIVATIONS), default=None, metavar="NAME",
                   help="activation after the last layer (default: none, logits)")
    t.add_argument("--optimizer", choices=sorted([*OPTIMIZERS, "amsgrad", "nesterov"]), default="adam")
    t.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate")
    t.add_argument("--scheduler", choices=("none", "cosine", "step", "exponential"), default="none",
                   help="learning-rate schedule, stepped per epoch")
    t.add_argument("--epochs", type=_positive_int, default=8)
    t.add_argument("--batch-size", type=_positive_int, default=128)
    t.add_argument("--val-size", type=_non_negative_int, default=None, metavar="N",
                   help="training samples held out (the last ones, after --subset) for the validation "
                        "accuracy, 0 for none (default: %(default)s, meaning 10%% of the training samples, "
                        "at most 5000: 5000 of MNIST's 60000, 500 of --subset 5000)")
    t.add_argument("--subset", type=_positive_int, default=None,
                   help="use only the first N training samples (quick runs)")
    t.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    t.add_argument("--backend", choices=known_names(), default=None,
                   help="backend (default: FASTMLP_BACKEND, else the fastest available)")
    t.add_argument("--seed", type=_non_negative_int, default=0, help="initial weights and shuffling")
    t.add_argument("--log-every", type=_non_negative_int, default=100, help="batches between cost lines (0: none)")
    t.add_argument("--save", metavar="PATH", default=None,
                   help="save the trained model (.npz); its folder is created if missing")
    t.add_argument("--plot", metavar="DIR", default=None,
                   help="write DIR/history.png (loss and accuracy) and DIR/misclassified.png; DIR is "
                        "created if missing")
    t.add_argument("--csv-log", metavar="PATH", default=None,
                   help="write the per-epoch history as CSV; its folder is created if missing")
    t.add_argument("--quiet", action="store_true", help="only print the final result")
    t.set_defaults(usage_error=t.error)  # for the checks made after parsing (_prepare_outputs)

    b = sub.add_parser("bench", help="time a training step of the standard models on each backend",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from .bench import STANDARD_MODELS

    b.add_argument("--models", nargs="+", choices=list(STANDARD_MODELS), default=None,
                   help="default: all but 4096-4096-4096-10 (add it explicitly, it is slow)")
    b.add_argument("--backends", nargs="+", choices=known_names(), default=None, help="default: all registered")
    b.add_argument("--repeat", type=_positive_int, default=10, help="timed steps per model and backend")
    b.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    b.add_argument("--no-baseline", action="store_true", help="skip the in-place NumPy baseline column")
    b.add_argument("--same-process", action="store_true",
                   help="time every backend in this process instead of each in its own worker process "
                        "(their BLAS thread pools then fight over the cores)")
    return parser


def cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    from . import __version__
    from .backends import backends, get_backend
    from .backends.base import Backend

    n_ops = len(Backend.op_names())
    print(f"fastmlp {__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")
    try:
        current = get_backend().name
    except Exception as exc:  # the report below shows why
        current = f"none ({exc})"
    print(f"current backend: {current}")
    print(f"{'backend':<8} {'available':<9} {'device':<6} {'dtypes':<16} {'native ops':<11} details")
    for name, row in backends().items():
        native = f"{len(row.native_ops)}/{n_ops}" if row.available else "-"
        print(f"{name:<8} {'yes' if row.available else 'no':<9} {row.device or '-':<6} "
              f"{','.join(row.dtypes) or '-':<16} {native:<11} {row.reason}")
        if args.ops and row.available:
            print(f"    native:    {', '.join(row.native_ops) or '-'}")
            print(f"    reference: {', '.join(row.reference_ops) or '-'}")
    return 0


def _load_data(args: argparse.Namespace):
    import numpy as np

    from .datasets import load_mnist, load_xor

    if args.dataset == "mnist":
        X, y = load_mnist("train", dtype=args.dtype)
        X_test, y_test = load_mnist("test", dtype=args.dtype)
    else:
        X, y = load_xor()
        perm = np.random.default_rng(args.seed).permutation(len(X))
        X, y = X[perm].astype(args.dtype), y[perm]
        X_test, y_test, X, y = X[600:], y[600:], X[:600], y[:600]
    if args.subset is not None:
        X, y = X[:args.subset], y[:args.subset]
    val = None
    val_size = default_val_size(len(X)) if args.val_size is None else args.val_size
    if val_size:
        if val_size >= len(X):
            raise SystemExit(f"error: --val-size {val_size} leaves no training samples of {len(X)}")
        X, y, val = X[:-val_size], y[:-val_size], (X[-val_size:], y[-val_size:])
    return (X, y), val, (X_test, y_test)


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import MLP, callbacks, fit, seed
    from .backends import get_backend
    from .data import ArrayDataset, OneHot
    from .optim import lr_scheduler
    from .train import accuracy

    started = time.perf_counter()
    _prepare_outputs(args)
    backend = get_backend(args.backend) if args.backend else get_backend()
    (X, y), val, (X_test, y_test) = _load_data(args)
    n_classes = int(max(y.max(), y_test.max())) + 1
    target_transform = OneHot(n_classes, args.dtype) if args.loss == "mse" else None
    train_ds = ArrayDataset(X, y, target_transform=target_transform)
    val_ds = ArrayDataset(*val, target_transform=target_transform) if val is not None else None
    test_ds = ArrayDataset(X_test, y_test, target_transform=target_transform)
    seed(args.seed)
    model = MLP(X.shape[1], args.hidden, n_classes, activation=args.activation, dtype=args.dtype,
                output_activation=args.output_activation, rng=args.seed).to(backend=backend.name)
    schedulers = {
        "none": None,
        "cosine": lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs),
        "step": lambda opt: lr_scheduler.StepLR(opt, step_size=max(1, args.epochs // 3), gamma=0.1),
        "exponential": lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.8),
    }
    cbs = [callbacks.CSVLogger(args.csv_log)] if args.csv_log else []
    verbose = 0 if args.quiet else 1
    if verbose:
        print(f"fastmlp train: {args.dataset} ({len(X)} train, {len(val[0]) if val else 0} validation, "
              f"{len(X_test)} test), MLP {'-'.join(map(str, [X.shape[1], *args.hidden, n_classes]))} "
              f"{args.activation}, {args.optimizer} lr {args.lr:g}, batch {args.batch_size}, "
              f"backend {backend.name}, {args.dtype}", flush=True)
    history = fit(model, train_ds, loss=args.loss, optimizer=args.optimizer, lr=args.lr, epochs=args.epochs,
                  val=val_ds, batch_size=args.batch_size, callbacks=cbs, scheduler=schedulers[args.scheduler],
                  verbose=verbose, seed=args.seed, log_every=args.log_every)
    test_acc = accuracy(model, test_ds)
    print(f"Test accuracy: {100 * test_acc:.2f}%")
    if args.save:
        path = model.save(args.save, metadata={"epoch": args.epochs, "test_accuracy": test_acc})
        print(f"saved model to {path}")
    if args.plot:
        from .plot import plot_history, plot_misclassified

        folder = Path(args.plot)
        p1 = plot_history(history, folder / "history.png", title=f"fastmlp on {args.dataset}")
        printed = [str(p1)]
        if args.dataset == "mnist":
            printed.append(str(plot_misclassified(model, test_ds, folder / "misclassified.png")))
        print(f"wrote {', '.join(printed)}")
    print(f"Total time (loading included): {(time.perf_counter() - started) / 60:.2f} min")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run

    run(models=args.models, backends=args.backends, repeat=args.repeat, dtype=args.dtype,
        baseline=not args.no_baseline, same_process=args.same_process)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a usage error, from argparse)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"info": cmd_info, "train": cmd_train, "bench": cmd_bench}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
