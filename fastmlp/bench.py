"""Side-by-side timing of the backends on SPEC section 12's standard models (``python -m
fastmlp bench``), the in-place NumPy baseline the asv suites also use, and the interleaved
timers that ``benchmarks/speed.py`` shares: :func:`race` (all contenders in this process) and
:func:`race_processes` (each in its own worker process).

A training step is forward, softmax cross-entropy, backward and an Adam step, the same work
``model.train_step`` does. Each backend is timed in the same run as the reference, after warm-up
steps (JIT compilation and kernel loading stay out of the timing), the backends taking turns
step by step, each in its own process so that no two BLAS thread pools share one; the figure
is the median of the timed steps.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import numpy as np

__all__ = ["STANDARD_MODELS", "InplaceNumpyMLP", "BenchResult", "make_step", "race", "race_processes", "run"]

#: name -> (layer widths, batch size), SPEC section 12
STANDARD_MODELS: dict[str, tuple[tuple[int, ...], int]] = {
    "784-128-10": ((784, 128, 10), 64),
    "784-256-256-10": ((784, 256, 256, 10), 128),
    "784-1024-1024-10": ((784, 1024, 1024, 10), 512),
    "4096-4096-4096-10": ((4096, 4096, 4096, 10), 1024),
}


def batch_data(widths: Sequence[int], batch: int, dtype: str = "float32", seed: int = 0):
    """A random input batch ``(batch, widths[0])`` and labels in ``[0, widths[-1])``."""
    rng = np.random.default_rng(seed)
    X = rng.random((batch, widths[0]), dtype=np.float64).astype(dtype)
    y = rng.integers(0, widths[-1], batch)
    return X, y


class InplaceNumpyMLP:
    """A well-written plain NumPy training step, the baseline a user could write by hand:
    ReLU MLP, softmax cross-entropy, Adam, every array preallocated and every operation
    writing into it (``matmul(..., out=)``, ufuncs with ``out=``), parameters in one flat
    buffer so Adam is a handful of whole-buffer ufunc calls.

    Parameters
    ----------
    widths : sequence of int
        ``(in, hidden..., out)``.
    batch : int
    dtype : "float32" or "float64"
    lr, betas, eps : Adam's hyper-parameters (PyTorch's defaults).
    """

    def __init__(self, widths: Sequence[int], batch: int, dtype: str = "float32", lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, seed: int = 0):
        rng = np.random.default_rng(seed)
        dt = np.dtype(dtype)
        shapes = [(o, i) for i, o in zip(widths[:-1], widths[1:])]
        sizes = [o * i + o for o, i in shapes]
        self.p = np.empty(sum(sizes), dt)
        self.g = np.zeros_like(self.p)
        self.m, self.v = np.zeros_like(self.p), np.zeros_like(self.p)
        self.tmp, self.tmp2 = np.empty_like(self.p), np.empty_like(self.p)
        self.W, self.b, self.dW, self.db = [], [], [], []
        off = 0
        for (o, i), n in zip(shapes, sizes):
            bound = 1 / np.sqrt(i)
            self.p[off:off + n] = rng.uniform(-bound, bound, n)
            self.W.append(self.p[off:off + o * i].reshape(o, i))
            self.b.append(self.p[off + o * i:off + n])
            self.dW.append(self.g[off:off + o * i].reshape(o, i))
            self.db.append(self.g[off + o * i:off + n])
            off += n
        self.A = [np.empty((batch, o), dt) for o, _ in shapes]       # layer outputs
        self.dA = [np.empty((batch, i), dt) for _, i in shapes[1:]]  # grads of hidden outputs
        self.mask = [np.empty((batch, o), bool) for o, _ in shapes[:-1]]
        self.lr, self.b1, self.b2, self.eps, self.t = lr, betas[0], betas[1], eps, 0
        self.rows = np.arange(batch)

    def step(self, X: np.ndarray, y: np.ndarray) -> float:
        """One step; returns the mean cross-entropy of the batch."""
        n_layers = len(self.W)
        inp = X
        for k in range(n_layers):
            Z = self.A[k]
            np.matmul(inp, self.W[k].T, out=Z)
            Z += self.b[k]
            if k < n_layers - 1:
                np.maximum(Z, 0, out=Z)
            inp = Z
        logits = self.A[-1]  # softmax in place: P = exp(z - max) / sum
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        N = X.shape[0]
        loss = -float(np.log(logits[self.rows[:N], y]).mean())
        logits[self.rows[:N], y] -= 1  # dZ = (P - onehot) / N
        logits /= N
        dZ = logits
        for k in range(n_layers - 1, -1, -1):
            prev = X if k == 0 else self.A[k - 1]
            np.matmul(dZ.T, prev, out=self.dW[k])
            dZ.sum(axis=0, out=self.db[k])
            if k > 0:
                dA = self.dA[k - 1]
                np.matmul(dZ, self.W[k], out=dA)
                np.greater(self.A[k - 1], 0, out=self.mask[k - 1])
                dA *= self.mask[k - 1]
                dZ = dA
        self._adam()
        return loss

    def _adam(self) -> None:
        """``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
        ``p -= lr/(1-b1^t) m / (sqrt(v/(1-b2^t)) + eps)``: whole-buffer ufuncs, no temporaries."""
        self.t += 1
        b1, b2, g, m, v, tmp, tmp2 = self.b1, self.b2, self.g, self.m, self.v, self.tmp, self.tmp2
        m *= b1
        np.multiply(g, 1 - b1, out=tmp)
        m += tmp
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v += tmp
        np.multiply(v, 1 / (1 - b2**self.t), out=tmp)
        np.sqrt(tmp, out=tmp)
        tmp += self.eps
        np.divide(m, tmp, out=tmp2)
        tmp2 *= self.lr / (1 - b1**self.t)
        self.p -= tmp2


def make_step(backend: str, widths: Sequence[int], batch: int, dtype: str = "float32", seed: int = 0):
    """A zero-argument callable doing one training step of a fresh ReLU MLP with Adam on
    ``backend`` (``"numpy_inplace"``: the :class:`InplaceNumpyMLP` baseline; ``"torch"``:
    PyTorch eager with ``Adam(fused=True)``, torch being no dependency of fastmlp)."""
    X, y = batch_data(widths, batch, dtype, seed)
    if backend == "numpy_inplace":
        net = InplaceNumpyMLP(widths, batch, dtype, seed=seed)
        return lambda: net.step(X, y)
    if backend == "torch":
        return _torch_step(X, y, widths, dtype, seed)
    from . import MLP, CrossEntropyLoss, get_backend
    from .optim import Adam

    be = get_backend(backend)
    model = MLP(widths[0], list(widths[1:-1]), widths[-1], dtype=dtype, rng=seed).to(backend=backend)
    opt = Adam(model.parameters())
    loss = CrossEntropyLoss()
    Xd, yd = be.asarray(X), be.asarray(y)
    return lambda: model.train_step(Xd, yd, loss, opt)


def _torch_step(X: np.ndarray, y: np.ndarray, widths: Sequence[int], dtype: str, seed: int):
    """PyTorch eager: the same ReLU MLP, cross-entropy and ``Adam(fused=True)``."""
    import torch

    torch.manual_seed(seed)
    layers: list = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [torch.nn.Linear(a, b, dtype=getattr(torch, dtype)), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.Adam(model.parameters(), fused=True)
    lossf = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = lossf(model(Xt), yt)
        loss.backward()
        opt.step()
        return loss

    return step


def _size_block(fn, warmup: int, target: float) -> int:
    """Call ``fn`` ``warmup`` times untimed but for the last call, which sizes a block: enough
    calls to last ``target`` seconds, at least one."""
    for _ in range(warmup - 1):
        fn()
    t0 = time.perf_counter()
    fn()
    return max(1, int(target / max(time.perf_counter() - t0, 1e-7)))


def _time_block(fn, count: int) -> float:
    """Seconds per call of ``count`` back-to-back calls of ``fn``."""
    t0 = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - t0) / count


def race(fns: dict, rounds: int = 7, min_time: float = 0.0, stat=min, warmup: int = 1) -> dict:
    """Seconds per call of each zero-argument callable of ``fns``, the contenders interleaved.

    Each contender is called ``warmup`` times untimed (JIT compilation and kernel loading stay
    out); the last of these calls sizes its block: enough calls to last ``min_time / rounds``
    seconds, at least one. Then, ``rounds`` times, every contender runs one block in turn, so a
    burst of load on a shared machine hits them all alike and the ratios stay fair.

    All contenders share this process: fair for single-threaded work, not for multi-threaded
    BLAS from different libraries (their idle threads spin and steal the cores from the next
    contender); :func:`race_processes` gives each contender its own process.

    Parameters
    ----------
    fns : dict
        name -> callable.
    rounds : int
        Timed blocks per contender.
    min_time : float
        Seconds of timed calls per contender (0: one call per block).
    stat : callable
        Of the blocks' per-call times: ``min`` (the least disturbed block) or ``statistics.median``.
    warmup : int
        Untimed calls per contender, at least 1.

    Returns
    -------
    dict
        name -> seconds per call.
    """
    counts = {name: _size_block(fn, warmup, min_time / rounds) for name, fn in fns.items()}
    blocks: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            blocks[name].append(_time_block(fn, counts[name]))
    return {name: stat(v) for name, v in blocks.items()}


def _quiesce(poll: float = 0.005, quiet_polls: int = 3, limit: float = 2.0) -> None:
    """Wait until this process's threads have burnt under a tenth of the time for ``quiet_polls``
    polls of ``poll`` seconds in a row (at most ``limit`` seconds). OpenBLAS's threads spin for a
    while after a GEMM (measured here: a 2-thread pool burns ~110 ms of CPU after its last GEMM)
    and would slow the next contender down, whichever process it runs in."""
    end, quiet = time.perf_counter() + limit, 0
    while quiet < quiet_polls and time.perf_counter() < end:
        cpu = time.process_time()  # all threads of the process
        time.sleep(poll)
        quiet = quiet + 1 if time.process_time() - cpu < poll / 10 else 0


def _worker(conn, factory, args: tuple) -> None:
    """One contender's process for :func:`race_processes`: builds ``fn = factory(*args)``, then
    serves the parent until it sends ``None`` or goes away. Requests: ``("size", warmup,
    target)`` -> :func:`_size_block`; ``("block",)`` -> :func:`_time_block` with that size.
    Replies, once its threads are idle (:func:`_quiesce`), ``("ok", value)``, or ``("error",
    traceback text)`` and the process ends."""
    try:
        fn = factory(*args)
        _quiesce()
        conn.send(("ok", None))
        count = 1
        while (msg := conn.recv()) is not None:  # idle: blocked here, not spinning
            if msg[0] == "size":
                count = value = _size_block(fn, msg[1], msg[2])
            else:
                value = _time_block(fn, count)
            _quiesce()
            conn.send(("ok", value))
    except (EOFError, KeyboardInterrupt):
        pass  # the parent went away, or Ctrl-C reached the whole process group: it cleans up
    except BaseException:
        import traceback

        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass  # the parent is gone; nobody to tell
    finally:
        conn.close()


def _reply(name: str, proc, conn):
    """The value of a worker's next reply; a RuntimeError carrying the worker's traceback if it
    failed, or its exit code if it died without a word."""
    try:
        status, value = conn.recv()
    except EOFError:
        proc.join(1)
        raise RuntimeError(f"contender {name!r}: its worker process died (exit code {proc.exitcode})") from None
    if status == "error":
        raise RuntimeError(f"contender {name!r} failed in its worker process:\n{value}")
    return value


def _stop(workers) -> None:
    """Ask every ``(process, pipe)`` worker to end, wait for it, terminate one that does not end
    within 10 s (busy in a long block), and close the pipes."""
    for _, conn in workers:
        try:
            conn.send(None)
        except OSError:
            pass  # already gone
    for proc, conn in workers:
        if proc.pid is not None:  # started
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        conn.close()


def race_processes(specs: dict, rounds: int = 7, min_time: float = 0.0, stat=min, warmup: int = 1) -> dict:
    """:func:`race` with each contender in its own process.

    Every BLAS library (NumPy's OpenBLAS, SciPy's used by numba, the cpp backend's, PyTorch's)
    keeps its own thread pool, whose idle threads spin for a while after a GEMM; in one process
    they steal the cores from the next contender. Here each contender lives in one worker process
    (``multiprocessing`` "spawn" context, one pipe each), built there by ``factory(*args)``; the
    parent asks the workers one after the other to size their block (the warm-up of
    :func:`race`), then, ``rounds`` times, each in turn to run one timed block, so the blocks
    stay interleaved in time as in :func:`race` while no two BLAS pools share a process. A worker
    answers only once its threads are idle again, so no spinning pool overlaps the next block
    (this costs wall time, ~0.1 s per block with OpenBLAS, none of the timed time). A worker
    waiting for its turn blocks on its pipe. The workers are always shut down before
    this returns or raises (error, ``KeyboardInterrupt``).

    Parameters
    ----------
    specs : dict
        name -> ``(factory, args)``: a picklable top-level callable (importable by the worker,
        e.g. :func:`make_step`) and its arguments; ``factory(*args)`` returns the zero-argument
        callable to time.
    rounds, min_time, stat, warmup
        As in :func:`race`.

    Returns
    -------
    dict
        name -> seconds per call.

    Raises
    ------
    RuntimeError
        A worker failed (the message carries its traceback) or died.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    workers: dict = {}
    try:
        for name, (factory, args) in specs.items():
            conn, child_conn = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child_conn, factory, tuple(args)),
                               name=f"race {name}", daemon=True)
            workers[name] = (proc, conn)
            proc.start()
            child_conn.close()  # the worker's end: once it exits, recv() here sees EOF
        for name, (proc, conn) in workers.items():  # built (all started together: untimed)
            _reply(name, proc, conn)
        for name, (proc, conn) in workers.items():  # warm-up and block size, one at a time
            conn.send(("size", warmup, min_time / rounds))
            _reply(name, proc, conn)
        blocks: dict[str, list[float]] = {name: [] for name in workers}
        for _ in range(rounds):
            for name, (proc, conn) in workers.items():
                conn.send(("block",))
                blocks[name].append(_reply(name, proc, conn))
        return {name: stat(v) for name, v in blocks.items()}
    finally:
        _stop(workers.values())


@dataclass
class BenchResult:
    model: str
    backend: str
    median_s: float
    speedup: float  # reference time / this time (> 1: faster than the reference)


def run(models: Sequence[str] | None = None, backends: Sequence[str] | None = None, repeat: int = 10,
        dtype: str = "float32", baseline: bool = True, same_process: bool = False,
        file: TextIO | None = None) -> list[BenchResult]:
    """Time a training step of each model on each available backend and print a table.

    Parameters
    ----------
    models : names of :data:`STANDARD_MODELS` (default: all but the 4096-wide one)
    backends : names (default: every registered backend; unavailable ones are listed with
        their reason and skipped)
    repeat : timed steps per (model, backend)
    baseline : also time :class:`InplaceNumpyMLP` (column ``numpy_inplace``)
    same_process : all backends in this process (:func:`race`) rather than each in its own
        worker process (:func:`race_processes`); their BLAS thread pools then fight over the cores
    """
    from .backends import backends as report

    out = file if file is not None else sys.stdout
    models = list(models) if models else [m for m in STANDARD_MODELS if not m.startswith("4096")]
    for m in models:
        if m not in STANDARD_MODELS:
            raise ValueError(f"unknown model {m!r}; choose from {', '.join(STANDARD_MODELS)}")
    info = report()
    names = list(backends) if backends else list(info)
    for n in names:
        if n not in info:
            raise ValueError(f"unknown backend {n!r}; known: {', '.join(info)}")
    usable = [n for n in names if info[n].available]
    for n in names:
        if not info[n].available:
            print(f"skipping backend {n}: {info[n].reason}", file=out)
    if "numpy" not in usable:
        usable.insert(0, "numpy")  # the reference is always measured, for the ratio
    if baseline:
        usable.append("numpy_inplace")
    where = ("all backends in this process" if same_process else
             "each backend in its own worker process")
    results: list[BenchResult] = []
    print(f"median time per training step (forward + cross-entropy + backward + Adam), {dtype}, "
          f"{repeat} timed steps after warm-up, {where}, taking turns step by step; "
          "speed-up = numpy time / backend time", file=out)
    header = f"{'model':<20} {'batch':>5}  " + "  ".join(f"{n:>22}" for n in usable)
    print(header, file=out)
    for m in models:
        widths, batch = STANDARD_MODELS[m]
        # one step per block, the backends taking turns, median of the blocks
        kw = dict(rounds=repeat, stat=statistics.median, warmup=2)
        if same_process:
            times = race({n: make_step(n, widths, batch, dtype) for n in usable}, **kw)
        else:
            times = race_processes({n: (make_step, (n, widths, batch, dtype)) for n in usable}, **kw)
        ref = times["numpy"]
        cells = []
        for n in usable:
            results.append(BenchResult(m, n, times[n], ref / times[n]))
            cells.append(f"{times[n] * 1e3:9.2f} ms ({ref / times[n]:5.2f}x)")
        print(f"{m:<20} {batch:>5}  " + "  ".join(f"{c:>22}" for c in cells), file=out, flush=True)
    return results
