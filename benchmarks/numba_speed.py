"""The numba backend's speed, as ratios measured in one run (issue 5's workloads).

    python benchmarks/numba_speed.py [--quick] [--dtype float32]

Workloads, each timed in this one process after warm-up (JIT compilation excluded), median
of repeated calls:

- training step (forward, softmax cross-entropy, backward, Adam) of the standard models
  A 784-128-10 batch 64, B 784-256-256-10 batch 128, C 784-1024-1024-10 batch 512:
  ``numba`` (``model.train_step``, one kernel call) against the reference ``numpy``
  backend, the hand-written in-place NumPy step (``fastmlp.bench.InplaceNumpyMLP``) and,
  when torch is importable, PyTorch eager with ``Adam(fused=True)``;
- every optimizer step on 10M parameters, in GB/s of counted traffic (each array read or
  written once per element: p r+w, g r, each state r+w) and against the reference;
- each activation forward+backward on 10M elements: GB/s of counted traffic (forward reads
  Z, writes Y; backward reads dY and what the derivative needs, writes dZ) and the ratio
  to the reference;
- the memory stream (``a = b + s c`` through numba) on the same arrays, the roofline for
  the GB/s figures.

The machines are shared and differ from day to day: only the ratios of one run mean
anything. Not a test (no assertion); the asv suites live beside this file.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

import numpy as np

import fastmlp
from fastmlp.backends import get_backend

MODELS = {"A 784-128-10 b64": ((784, 128, 10), 64), "B 784-256-256-10 b128": ((784, 256, 256, 10), 128),
          "C 784-1024-1024-10 b512": ((784, 1024, 1024, 10), 512)}


STAT = statistics.median  # --stat min: the least disturbed call, on a busy shared machine


def median_time(fn, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return STAT(times)


def batch(widths, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, widths[0])).astype(dtype), rng.integers(0, widths[-1], n)


def fastmlp_step(backend, widths, n, dtype):
    X, y = batch(widths, n, dtype)
    model = fastmlp.MLP(widths[0], list(widths[1:-1]), widths[-1], dtype=dtype, rng=0).to(backend)
    opt = fastmlp.optim.Adam(model.parameters())
    loss = fastmlp.CrossEntropyLoss()
    return lambda: model.train_step(X, y, loss, opt)


def inplace_numpy_step(widths, n, dtype):
    try:
        from fastmlp.bench import InplaceNumpyMLP
    except ImportError:
        return None
    X, y = batch(widths, n, dtype)
    net = InplaceNumpyMLP(widths, n, dtype)
    return lambda: net.step(X, y)


def torch_step(widths, n, dtype):
    try:
        import torch
    except ImportError:
        return None
    X, y = batch(widths, n, dtype)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(torch.nn.Linear(a, b, dtype=getattr(torch, dtype)))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), fused=True)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    lossf = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=False)
        loss = lossf(model(Xt), yt)
        loss.backward()
        opt.step()
        return loss

    return step


def train_steps(dtype, repeat):
    print(f"\n== training step (forward + cross-entropy + backward + Adam), {dtype}, {STAT.__name__} of {repeat}")
    print(f"{'model':<26}{'numpy ref':>12}{'inplace np':>12}{'torch fused':>12}{'numba':>12}"
          f"{'vs inplace':>11}{'vs torch':>10}{'vs ref':>8}")
    for name, (widths, n) in MODELS.items():
        t = {"ref": median_time(fastmlp_step("numpy", widths, n, dtype), repeat)}
        for key, make in (("inplace", inplace_numpy_step), ("torch", torch_step)):
            fn = make(widths, n, dtype)
            t[key] = median_time(fn, repeat) if fn is not None else float("nan")
        t["numba"] = median_time(fastmlp_step("numba", widths, n, dtype), repeat)
        us = {k: v * 1e6 for k, v in t.items()}
        print(f"{name:<26}{us['ref']:>10.0f}us{us['inplace']:>10.0f}us{us['torch']:>10.0f}us{us['numba']:>10.0f}us"
              f"{t['inplace'] / t['numba']:>10.2f}x{t['torch'] / t['numba']:>9.2f}x{t['ref'] / t['numba']:>7.2f}x")


OPTIMIZERS = [("sgd_step", 1, dict(momentum=0.9)), ("momentum_step", 1, {}), ("adagrad_step", 1, {}),
              ("rmsprop_step", 3, dict(centered=True, momentum=0.9)), ("adam_step", 2, {}),
              ("adam_step amsgrad", 3, dict(amsgrad=True)), ("adamax_step", 2, {}), ("nadam_step", 2, {}),
              ("adadelta_step", 2, {})]


def stream_call(n, dtype):
    """(call, bytes): a numba triad over three fresh n-arrays, the memory-stream roofline.
    The momentum kernel with beta = 0 and no decay is one: m = g, p = p - scale m."""
    K = importlib.import_module("fastmlp.backends._numba_kernels")
    a, b, c = (np.ones(n, dtype) for _ in range(3))
    coef = np.array([0, 0, 1, 0, 1e-3, 0], dtype)
    return (lambda: K.momentum_step(a, b, c, coef)), 5 * n * np.dtype(dtype).itemsize


def stream(n, dtype, repeat):
    call, nbytes = stream_call(n, dtype)
    return nbytes / median_time(call, repeat) / 1e9


def paired(fn, ref_fn, repeat):
    """Median times of ``fn`` and ``ref_fn`` called alternately, so both see the same machine
    (the memory bandwidth of a shared machine changes from second to second)."""
    fn(), ref_fn()
    a, b = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        ref_fn()
        a.append(t1 - t0)
        b.append(time.perf_counter() - t1)
    return statistics.median(a), statistics.median(b)


def optimizer_steps(dtype, repeat, n=10_000_000):
    ref, nb = get_backend("numpy"), get_backend("numba")
    stream_fn, stream_bytes = stream_call(n, dtype)
    print(f"\n== optimizer step on {n / 1e6:.0f}M parameters, {dtype}: GB/s of counted traffic; 'of stream': "
          "against a numba triad timed alternately with the numba step")
    print(f"{'op':<22}{'numpy GB/s':>12}{'numba GB/s':>12}{'vs ref':>8}{'stream GB/s':>13}{'of stream':>11}")
    rng = np.random.default_rng(0)
    g = rng.standard_normal(n).astype(dtype)
    for label, n_state, hyper in OPTIMIZERS:
        op = label.split()[0]
        names = {"sgd_step": 1, "momentum_step": 1, "adagrad_step": 1, "rmsprop_step": 3, "adam_step": 3,
                 "adamax_step": 2, "nadam_step": 2, "adadelta_step": 2}[op]
        extra = {"mu_product": 0.5} if op == "nadam_step" else {}
        res = {}
        for be in (ref, nb):
            p = rng.standard_normal(n).astype(dtype)
            st = [np.zeros(n, dtype) for _ in range(names)]
            if op == "rmsprop_step" and not hyper.get("centered"):
                st[1] = None
            if op == "adam_step" and not hyper.get("amsgrad"):
                st[2] = None
            step = [0]

            def call(be=be, p=p, st=st, step=step, op=op, extra=extra, hyper=hyper):
                step[0] += 1
                getattr(be, op)(p, g, *st, lr=1e-3, step=step[0], **extra, **hyper)

            if be is nb:
                res["numba"], t_stream = paired(call, stream_fn, repeat)
            else:
                res["numpy"] = median_time(call, repeat)
        traffic = (3 + 2 * n_state) * n * np.dtype(dtype).itemsize  # p r+w, g r, state r+w
        gb = {k: traffic / v / 1e9 for k, v in res.items()}
        gbs_stream = stream_bytes / t_stream / 1e9
        print(f"{label:<22}{gb['numpy']:>12.1f}{gb['numba']:>12.1f}{res['numpy'] / res['numba']:>7.2f}x"
              f"{gbs_stream:>13.1f}{gb['numba'] / gbs_stream:>10.2f}x")


ACTIVATIONS = [("relu", ()), ("leaky_relu", ()), ("elu", ()), ("selu", ()), ("sigmoid", ()), ("tanh", ()),
               ("gelu", ()), ("gelu", ("tanh",)), ("silu", ()), ("softplus", ()), ("mish", ()),
               ("softsign", ()), ("log_sigmoid", ())]
_READS_Y_ONLY = {"relu", "sigmoid", "tanh"}


def activations(dtype, repeat, n=10_000_000):
    ref, nb = get_backend("numpy"), get_backend("numba")
    gbs_stream = stream(n, dtype, repeat)
    stream_fn, stream_bytes = stream_call(n, dtype)
    print(f"\n== activation forward + backward on {n / 1e6:.0f}M elements, {dtype}: GB/s of counted traffic "
          f"(stream {gbs_stream:.1f} GB/s)")
    print("(the op allocates its outputs: first-touch page faults of two fresh 10M arrays are in the op's "
          "time; 'kernel' times the two kernels alone on preallocated outputs, alternately with the stream)")
    print(f"{'activation':<18}{'numpy ms':>10}{'numba ms':>10}{'vs ref':>8}{'numba GB/s':>12}{'of stream':>11}"
          f"{'kernel GB/s':>13}{'of stream':>11}")
    K = importlib.import_module("fastmlp.backends._numba_kernels")
    rng = np.random.default_rng(0)
    Z = (rng.standard_normal(n) * 2).astype(dtype)
    dY = rng.standard_normal(n).astype(dtype)
    Yk, dZk = np.empty_like(Z), np.empty_like(Z)
    for name, hyper in ACTIVATIONS:
        res = {}
        for be in (ref, nb):
            def call(be=be, name=name, hyper=hyper):
                Y = getattr(be, f"{name}_forward")(Z, *hyper)
                getattr(be, f"{name}_backward")(dY, Z, Y, *hyper)

            res[be.name] = median_time(call, repeat, warmup=1)
        kernel_time = None
        if name in ("relu", "leaky_relu", "sigmoid", "tanh", "softsign"):
            fwd, bwd = getattr(K, f"{name}_forward"), getattr(K, f"{name}_backward")
            extra = (np.dtype(dtype).type(0.01),) if name == "leaky_relu" else ()

            def kernels(fwd=fwd, bwd=bwd, extra=extra):
                fwd(Z, Yk, *extra)
                bwd(dY, Z, Yk, dZk, *extra)

            kernel_time, t_stream = paired(kernels, stream_fn, repeat)
        traffic = (2 + 3) * n * np.dtype(dtype).itemsize  # fwd: Z r, Y w; bwd: dY r, Z or Y r, dZ w
        gb = traffic / res["numba"] / 1e9
        label = name + (f"({hyper[0]})" if hyper else "")
        line = (f"{label:<18}{res['numpy'] * 1e3:>10.1f}{res['numba'] * 1e3:>10.1f}{res['numpy'] / res['numba']:>7.2f}x"
                f"{gb:>12.1f}{gb / gbs_stream:>10.2f}x")
        if kernel_time is not None:
            gk = traffic / kernel_time / 1e9
            line += f"{gk:>13.1f}{gk / (stream_bytes / t_stream / 1e9):>10.2f}x"
        print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--only", choices=["train", "optim", "act"], default=None)
    parser.add_argument("--stat", choices=["median", "min"], default="median",
                        help="statistic of the repeated calls (min: the least disturbed one)")
    args = parser.parse_args()
    global STAT
    STAT = min if args.stat == "min" else statistics.median
    print(get_backend("numba").describe())
    if args.only in (None, "train"):
        train_steps(args.dtype, args.repeat)
    if args.only in (None, "optim"):
        optimizer_steps(args.dtype, max(5, args.repeat // 4))
    if args.only in (None, "act"):
        activations(args.dtype, max(3, args.repeat // 5))


if __name__ == "__main__":
    main()
