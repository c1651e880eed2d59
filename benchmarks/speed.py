"""fastmlp's CPU backends side by side, as ratios measured in one run (issues 5 and 6).

    python benchmarks/speed.py [--quick] [--only train|optim|act|stream] [--dtype float32]
                               [--backends cpp numba] [--same-process]

Workloads, every available CPU backend (``fastmlp.backends()``; an unavailable one is skipped
with its reason) against the NumPy reference:

- the training step (forward, softmax cross-entropy, backward, Adam) of A 784-128-10 batch 64,
  B 784-256-256-10 batch 128, C 784-1024-1024-10 batch 512, also against the hand-written
  in-place NumPy step (``fastmlp.bench.InplaceNumpyMLP``, the issues' "x times the in-place
  NumPy step") and, when torch is installed, PyTorch eager with ``Adam(fused=True)``;
- every optimizer step on 10M parameters, in GB/s of counted traffic (each array read or
  written once per element: p r+w, g r, each state r+w);
- each activation forward+backward on 10M elements, in GB/s of counted traffic (forward: Z r,
  Y w; backward: dY r, Z or Y r, dZ w);
- the memory stream, the roofline of those GB/s: 4 reads + 3 writes per element like an Adam
  step (``p += g; m *= 1; v *= 1``, NumPy, one thread: a floor of the machine's bandwidth, not
  its peak), timed in the same race as each optimizer and activation row.

Every row is one race: the contenders' blocks interleaved, so a load spike on the shared
machine hits them all; each figure is the best block (JIT compilation and kernel loading happen
in the untimed warm-up). A training-step row is a :func:`fastmlp.bench.race_processes`, each
contender in its own worker process: every BLAS library (NumPy's OpenBLAS, SciPy's for numba,
the cpp backend's, PyTorch's) keeps a thread pool whose idle threads spin after a GEMM, and in
one process they steal the cores from the next contender (``--same-process`` shows it). The
optimizer and activation rows (elementwise, no BLAS) are a :func:`fastmlp.bench.race` in this
process. The machines are shared and change from minute to minute: only the ratios of one run
mean anything. When other jobs keep the cores busy, multi-threaded BLAS collapses: run with
``OPENBLAS_NUM_THREADS=1`` (and ``FASTMLP_NUM_THREADS=1``, ``OMP_NUM_THREADS=1`` for PyTorch)
there. Not a test; the asv suites live beside this file.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os

import numpy as np

import fastmlp
from fastmlp.bench import STANDARD_MODELS, make_step, race, race_processes

MODELS = {"A": "784-128-10", "B": "784-256-256-10", "C": "784-1024-1024-10"}
N = 10_000_000
#: label -> (op, state slots, slots holding an array (the rest None), hyper-parameters)
OPTIMIZERS = {
    "sgd momentum": ("sgd_step", 1, 1, dict(momentum=0.9)),
    "momentum": ("momentum_step", 1, 1, {}),
    "adagrad": ("adagrad_step", 1, 1, {}),
    "rmsprop centered mom.": ("rmsprop_step", 3, 3, dict(centered=True, momentum=0.9)),
    "adam": ("adam_step", 3, 2, {}),
    "adam amsgrad": ("adam_step", 3, 3, dict(amsgrad=True)),
    "adamax": ("adamax_step", 2, 2, {}),
    "nadam": ("nadam_step", 2, 2, dict(mu_product=0.5)),
    "adadelta": ("adadelta_step", 2, 2, {}),
}
#: label -> (activation, hyper-parameters)
ACTIVATIONS = {name: (name, {}) for name in ("relu", "leaky_relu", "elu", "selu", "sigmoid", "tanh",
                                              "gelu", "silu", "softplus", "mish", "softsign", "log_sigmoid")}
ACTIVATIONS["gelu tanh"] = ("gelu", {"approximate": "tanh"})
STREAM_ARRAYS = 7  # 4 reads + 3 writes


def cpu_backends(names: list[str] | None) -> list[str]:
    """The available CPU backends among ``names`` (default: all), the reference first; prints
    why each other one is skipped."""
    info = fastmlp.backends()
    chosen = ["numpy"]
    for name in names or info:
        if name not in info:
            raise SystemExit(f"unknown backend {name!r}; known: {', '.join(info)}")
        if not info[name].available:
            print(f"skipping backend {name}: {info[name].reason}")
        elif info[name].device != "cpu":
            print(f"skipping backend {name}: device {info[name].device}, not a CPU backend")
        elif name not in chosen:
            chosen.append(name)
    return chosen


def stream_call(n: int, dtype: str):
    """The memory stream on four fresh n-arrays: ``p += g; m *= 1; v *= 1`` (4R+3W)."""
    p, g, m, v = (np.ones(n, dtype) for _ in range(4))
    one = np.dtype(dtype).type(1)

    def call():
        np.add(p, g, out=p)
        np.multiply(m, one, out=m)
        np.multiply(v, one, out=v)

    return call


def row(label: str, times: dict, nbytes: int | None = None, stream_gbs: float | None = None,
        also: str | None = None) -> str:
    """One line: per contender ms per call (or GB/s of ``nbytes`` counted traffic and the
    fraction of the stream's GB/s), the speed-up over ``numpy`` and (``also``) over that
    contender too."""
    cells = []
    for t in times.values():
        if nbytes is None:
            cell = f"{t * 1e3:8.2f} ms {times['numpy'] / t:5.2f}x"
        else:
            gbs = nbytes / t / 1e9
            cell = f"{gbs:6.1f} GB/s {times['numpy'] / t:5.2f}x {gbs / stream_gbs:4.2f}"
        if also is not None:
            cell += f" {times[also] / t:5.2f}x"
        cells.append(f"{cell:>{cell_width(also)}}")
    tail = "" if stream_gbs is None else f"{stream_gbs:>8.1f}"
    return f"{label:<24}" + "".join(cells) + tail


def cell_width(also: str | None) -> int:
    """Characters per column: 24, 6 more for a second speed-up."""
    return 24 if also is None else 30


def header(first: str, names, stream: bool = False, also: str | None = None) -> str:
    """The column titles of a table (``stream``: with the stream column; ``also``: as :func:`row`)."""
    w = cell_width(also)
    return f"{first:<24}" + "".join(f"{n:>{w}}" for n in names) + ("  stream" if stream else "")


def run_rows(title: str, rows: dict, backends: list[str], race_kw: dict, n: int, dtype: str) -> None:
    """Race each row ``label -> (arrays of counted traffic, {backend: call})`` with the memory
    stream and print it."""
    print(f"\n== {title}, {n / 1e6:g}M elements, {dtype}: GB/s of counted traffic, speed-up over "
          "numpy, fraction of the stream (4R+3W, GB/s in the last column)")
    print(header("op", backends, stream=True))
    stream = stream_call(n, dtype)
    itemsize = np.dtype(dtype).itemsize
    for label, (arrays, calls) in rows.items():
        times = race(calls | {"stream": stream}, **race_kw)
        stream_gbs = STREAM_ARRAYS * n * itemsize / times.pop("stream") / 1e9
        print(row(label, times, arrays * n * itemsize, stream_gbs), flush=True)


def train(backends: list[str], dtype: str, race_kw: dict, same_process: bool = False) -> None:
    """The training step of the models A, B, C, each contender in its own worker process
    (``same_process``: all in this one)."""
    names = [*backends, "numpy_inplace"]
    if importlib.util.find_spec("torch") is not None:  # imported by its worker only
        names.append("torch")
    else:
        print("no torch: no PyTorch column")
    where = "all contenders in this process" if same_process else "each contender in its own process"
    print(f"\n== training step (forward + cross-entropy + backward + Adam), {dtype}, {where}: "
          "ms per step, speed-up over numpy, speed-up over numpy_inplace")
    print(header("model", names, also="numpy_inplace"))
    for key, model in MODELS.items():
        widths, batch = STANDARD_MODELS[model]
        if same_process:
            times = race({n: make_step(n, widths, batch, dtype) for n in names}, **race_kw)
        else:
            times = race_processes({n: (make_step, (n, widths, batch, dtype)) for n in names}, **race_kw)
        print(row(f"{key} {model} b{batch}", times, also="numpy_inplace"), flush=True)


def optim(backends: list[str], dtype: str, race_kw: dict, n: int = N) -> None:
    """Every optimizer step; the contenders update the same arrays in turn."""
    rng = np.random.default_rng(0)
    p, g = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    rows = {}
    for label, (op, slots, used, hyper) in OPTIMIZERS.items():
        states = [np.zeros(n, dtype) if i < used else None for i in range(slots)]
        step = itertools.count(1)

        def call(be, op=op, states=states, step=step, hyper=hyper):
            f = getattr(be, op)
            return lambda: f(p, g, *states, lr=1e-6, step=next(step), **hyper)

        rows[label] = (3 + 2 * used, {b: call(fastmlp.get_backend(b)) for b in backends})
    run_rows("optimizer step", rows, backends, race_kw, n, dtype)


def act(backends: list[str], dtype: str, race_kw: dict, n: int = N) -> None:
    """Each activation's forward + backward (the op allocating its outputs, as the layers call it)."""
    rng = np.random.default_rng(0)
    Z = (rng.standard_normal(n) * 2).astype(dtype)
    dY = rng.standard_normal(n).astype(dtype)
    rows = {}
    for label, (name, hyper) in ACTIVATIONS.items():
        # a fixed beta (softplus, silu): no d(beta), as the layer calls it
        bwd_kw = hyper | ({"param_grad": False} if name in ("softplus", "silu") else {})

        def call(be, name=name, hyper=hyper, bwd_kw=bwd_kw):
            fwd, bwd = getattr(be, f"{name}_forward"), getattr(be, f"{name}_backward")
            return lambda: bwd(dY, Z, fwd(Z, **hyper), **bwd_kw)

        rows[label] = (5, {b: call(fastmlp.get_backend(b)) for b in backends})
    run_rows("activation forward + backward", rows, backends, race_kw, n, dtype)


def main(argv: list[str] | None = None) -> None:
    """Parse the options and run the chosen workloads."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.2 s per contender (default 7 of 1 s)")
    parser.add_argument("--only", choices=["train", "optim", "act", "stream"], default=None)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--backends", nargs="+", default=None, help="default: every available CPU backend")
    parser.add_argument("--same-process", action="store_true",
                        help="training step: every contender in this process, not each in its own")
    args = parser.parse_args(argv)
    race_kw = dict(rounds=3, min_time=0.2) if args.quick else dict(rounds=7, min_time=1.0)
    # The last warm-up call sizes the blocks, and a first call compiles (numba) or initialises
    # (torch): with one warm-up call the training-step blocks were 1-5 steps instead of ~100-300.
    race_kw["warmup"] = 3
    backends = cpu_backends(args.backends)
    print(", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in
                    ("OPENBLAS_NUM_THREADS", "FASTMLP_NUM_THREADS", "OMP_NUM_THREADS")))
    for b in backends:
        print(fastmlp.get_backend(b).describe())
    if args.only == "stream":
        t = race({"stream": stream_call(N, args.dtype)}, **race_kw)["stream"]
        print(f"memory stream (4R+3W, NumPy, one thread) on {N / 1e6:g}M {args.dtype}: "
              f"{STREAM_ARRAYS * N * np.dtype(args.dtype).itemsize / t / 1e9:.1f} GB/s")
    if args.only in (None, "train"):
        train(backends, args.dtype, race_kw, args.same_process)
    for name, workload in (("optim", optim), ("act", act)):
        if args.only in (None, name):
            workload(backends, args.dtype, race_kw)


if __name__ == "__main__":
    main()
