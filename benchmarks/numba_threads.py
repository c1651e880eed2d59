"""The numba backend's thread policy, measured: the figures of docs/numba.md, "Thread policy".

    python benchmarks/numba_threads.py [--only threshold|collapse] [--dtype float32]
    NUMBA_THREADING_LAYER=workqueue python benchmarks/numba_threads.py --only threshold

- ``threshold``: the cost of an empty parallel region on numba's threading layer, then per
  size 2^12 ... 2^22 the serial kernel against the parallel driver (the pace bypassed), µs per
  call, interleaved, best of 15 blocks: where the driver starts to win
  (``NumbaBackend.parallel_min_size``);
- ``collapse``: an op called right after a numba ``np.dot`` GEMM (SciPy's OpenBLAS, whose idle
  workers spin after it), and without the GEMM: the serial kernel, the driver forced, and the
  paced choice the backend ships, ms per op, median (best) of 15, the three interleaved.

Not a test: the machines are shared and only the ratios of one run mean anything.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time

import numba
import numpy as np

from fastmlp.backends import get_backend

NB = get_backend("numba")
NBM = importlib.import_module("fastmlp.backends.numba_backend")
K = importlib.import_module("fastmlp.backends._numba_kernels")
SHIPPED = (NB.parallel_min_size, NBM._Pace.parallel, NBM._Pace.record, NBM._parallel_threads)


def use(mode: str) -> None:
    """Make the backend run its serial kernels, its drivers (``parallel``, also on the
    workqueue layer, timings kept out of the paces), or what it ships (``paced``)."""
    threshold, choose, record, threads = SHIPPED
    forced = mode == "parallel"
    type(NB).parallel_min_size = {"serial": 1 << 62, "parallel": 1}.get(mode, threshold)
    NBM._Pace.parallel = (lambda self: True) if forced else choose
    NBM._Pace.record = (lambda self, parallel, rate: None) if forced else record
    NBM._parallel_threads = (lambda: 2) if forced else threads


def best(op, modes=("serial", "parallel"), reps: int = 15) -> dict:
    """Best seconds per call of ``op`` in each mode, in interleaved blocks of ~10 ms."""
    for mode in modes:
        use(mode)
        op()
    start = time.perf_counter()
    op()
    inner = max(1, int(0.01 / max(time.perf_counter() - start, 1e-7)))
    out = dict.fromkeys(modes, float("inf"))
    for _ in range(reps):
        for mode in modes:
            use(mode)
            start = time.perf_counter()
            for _ in range(inner):
                op()
            out[mode] = min(out[mode], (time.perf_counter() - start) / inner)
    use("paced")
    return out


def ops(n: int, dtype: str) -> dict:
    """label -> call of the backend's op on n elements."""
    rng = np.random.default_rng(0)
    Z, dY = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    p, g = Z.copy(), dY.copy()
    m, v = np.zeros(n, dtype), np.zeros(n, dtype)
    return {"relu f+b": lambda: NB.relu_backward(dY, Z, NB.relu_forward(Z)),
            "tanh f+b": lambda: NB.tanh_backward(dY, Z, NB.tanh_forward(Z)),
            "adam": lambda: NB.adam_step(p, g, m, v, None, lr=1e-6, step=3),
            "sgd momentum": lambda: NB.sgd_step(p, g, m, lr=1e-6, step=3, momentum=0.9)}


def threshold(dtype: str) -> None:
    one = np.empty(1, np.float32)
    zero = np.float32(0)

    def region():
        K.parallel_activation_forward(1, K.ACT_STEP, one, one, zero, zero, one[:0])

    print(f"threading layer {NBM._threading_layer()}, {numba.get_num_threads()} threads: "
          f"one-iteration region {best(region, ('paced',))['paced'] * 1e6:.1f} µs")
    for k in range(12, 23):
        cells = []
        for label, op in ops(1 << k, dtype).items():
            t = best(op)
            cells.append(f"{label} {t['serial'] * 1e6:8.1f} / {t['parallel'] * 1e6:8.1f}")
        print(f"2^{k:<3} serial / parallel µs: " + " | ".join(cells), flush=True)


def collapse(dtype: str) -> None:
    rng = np.random.default_rng(0)
    X, W = rng.standard_normal((512, 784)).astype(dtype), rng.standard_normal((1024, 784)).astype(dtype)
    cases = {f"adam {n / 1e6:g}M": ops(n, dtype)["adam"] for n in (1_860_000, 10_000_000)}
    cases["relu f+b 10M"] = ops(10_000_000, dtype)["relu f+b"]
    print(f"load average {os.getloadavg()[0]:.2f}")
    for gemm in (True, False):
        for label, op in cases.items():
            t = {"serial": [], "parallel": [], "paced": []}
            for _ in range(15):
                for mode, times in t.items():
                    use(mode)
                    op()
                    if gemm:
                        NB.dense_forward(X, W, None, "identity")
                    start = time.perf_counter()
                    op()
                    times.append(time.perf_counter() - start)
            cells = " | ".join(f"{m} {np.median(v) * 1e3:6.2f} ({min(v) * 1e3:6.2f})" for m, v in t.items())
            where = "after a GEMM" if gemm else "no GEMM"
            print(f"{label:13} {where:12} ms median (best): {cells}", flush=True)
    use("paced")
    print(f"load average {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["threshold", "collapse"], default=None)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()
    if args.only in (None, "threshold"):
        threshold(args.dtype)
    if args.only in (None, "collapse"):
        collapse(args.dtype)


if __name__ == "__main__":
    main()
