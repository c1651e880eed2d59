"""Speed of the cpp backend as ratios measured in one run (the machine is shared and changes:
absolute times mean little, ratios taken in the same run do).

Workloads (issue 6): the training step (ReLU MLP, cross-entropy, Adam) of
A 784-128-10 batch 64, B 784-256-256-10 batch 128, C 784-1024-1024-10 batch 512; each optimizer
step on 10M parameters (GB/s of counted traffic); activations forward+backward on 10M elements.
Baselines: fastmlp's NumPy reference, a hand-written in-place NumPy step (matmul into
preallocated outputs, Adam with ``out=`` ufuncs), PyTorch eager with ``Adam(fused=True)`` and
the numba backend, each skipped when absent.

Run: ``python benchmarks/cpp_ratios.py [--quick] [--only steps|optim|act]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastmlp
from fastmlp.backends import backends

WORKLOADS = {"A": ([784, 128, 10], 64), "B": ([784, 256, 256, 10], 128), "C": ([784, 1024, 1024, 10], 512)}


def race(fns: dict, min_time=0.5, rounds=7):
    """Seconds per call of each function: the best block of `rounds`, the contenders' blocks
    interleaved (a load spike on the shared machine then hits all of them, not one)."""
    per_call = {}
    for name, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        fn()
        per_call[name] = max(time.perf_counter() - t0, 1e-7)
    counts = {name: max(1, int(min_time / rounds / t)) for name, t in per_call.items()}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(counts[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / counts[name])
    return best


# ---------------------------------------------------------------------------- in-place NumPy
class InplaceNumpyStep:
    """A well-written NumPy step: flat arenas, matmul into preallocated outputs, in-place
    ReLU and softmax, Adam with ``out=`` ufuncs. The baseline fastmlp did not tune."""

    def __init__(self, sizes, batch, dtype=np.float32, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, seed=0):
        rng = np.random.default_rng(seed)
        shapes = [(o, i) for i, o in zip(sizes[:-1], sizes[1:])]
        total = sum(o * i + o for o, i in shapes)
        self.p = np.empty(total, dtype)
        self.g = np.zeros(total, dtype)
        self.m = np.zeros(total, dtype)
        self.v = np.zeros(total, dtype)
        self.tmp = np.empty(total, dtype)
        self.W, self.b, self.dW, self.db = [], [], [], []
        off = 0
        for o, i in shapes:
            bound = 1 / np.sqrt(i)
            self.p[off:off + o * i] = rng.uniform(-bound, bound, o * i)
            self.W.append(self.p[off:off + o * i].reshape(o, i))
            self.dW.append(self.g[off:off + o * i].reshape(o, i))
            off += o * i
            self.p[off:off + o] = rng.uniform(-bound, bound, o)
            self.b.append(self.p[off:off + o])
            self.db.append(self.g[off:off + o])
            off += o
        self.A = [np.empty((batch, o), dtype) for o, _ in shapes]
        self.dA = [np.empty((batch, i), dtype) for _, i in shapes]
        self.rows = np.arange(batch)
        self.lr, self.betas, self.eps, self.t = lr, betas, eps, 0

    def __call__(self, X, y):
        L = len(self.W)
        inp = X
        for k in range(L):
            np.matmul(inp, self.W[k].T, out=self.A[k])
            self.A[k] += self.b[k]
            if k < L - 1:
                np.maximum(self.A[k], 0, out=self.A[k])
            inp = self.A[k]
        P = self.A[-1]
        P -= P.max(axis=1, keepdims=True)
        np.exp(P, out=P)
        P /= P.sum(axis=1, keepdims=True)
        loss = -np.log(P[self.rows, y]).mean()
        P[self.rows, y] -= 1
        P /= X.shape[0]
        G = P
        for k in range(L - 1, -1, -1):
            inp = X if k == 0 else self.A[k - 1]
            np.matmul(G.T, inp, out=self.dW[k])
            G.sum(axis=0, out=self.db[k])
            if k > 0:
                np.matmul(G, self.W[k], out=self.dA[k])
                self.dA[k] *= inp > 0
                G = self.dA[k]
        self.t += 1
        b1, b2 = self.betas
        m, v, g, tmp = self.m, self.v, self.g, self.tmp
        m *= b1
        np.multiply(g, 1 - b1, out=tmp)
        m += tmp
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v += tmp
        np.divide(v, 1 - b2**self.t, out=tmp)
        np.sqrt(tmp, out=tmp)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= self.lr / (1 - b1**self.t)
        self.p -= tmp
        return loss


def torch_step(sizes, batch, X, y):
    import torch

    torch.manual_seed(0)
    layers = []
    for i, o in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(i, o), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    ce = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = ce(model(Xt), yt)
        loss.backward()
        opt.step()

    return step


def fastmlp_step(backend, sizes, batch, X, y):
    model = fastmlp.MLP(sizes[0], sizes[1:-1], sizes[-1], activation="relu", rng=0).to(backend)
    opt = fastmlp.optim.Adam(model.parameters(), lr=1e-3)
    loss = fastmlp.CrossEntropyLoss()
    return lambda: model.train_step(X, y, loss, opt)


def available(name):
    info = backends().get(name)
    return info is not None and info.available


def bench_steps(min_time):
    print("training step (ReLU MLP, cross-entropy, Adam), float32; us per step and speed-up of cpp")
    have_torch = True
    try:
        import torch  # noqa: F401
    except ImportError:
        have_torch = False
    for key, (sizes, batch) in WORKLOADS.items():
        rng = np.random.default_rng(0)
        X = rng.standard_normal((batch, sizes[0])).astype(np.float32)
        y = rng.integers(0, sizes[-1], batch)
        fns = {"cpp": fastmlp_step("cpp", sizes, batch, X, y)}
        step = InplaceNumpyStep(sizes, batch)
        fns["numpy in-place"] = lambda step=step, X=X, y=y: step(X, y)
        fns["numpy reference"] = fastmlp_step("numpy", sizes, batch, X, y)
        if available("numba"):
            fns["numba"] = fastmlp_step("numba", sizes, batch, X, y)
        if have_torch:
            fns["torch fused Adam"] = torch_step(sizes, batch, X, y)
        times = race(fns, min_time * len(fns))
        cpp = times["cpp"]
        cells = ", ".join(f"{k} {v * 1e6:,.0f} ({v / cpp:.2f}x)" for k, v in times.items())
        print(f"  {key} {'-'.join(map(str, sizes))} batch {batch}: {cells}")


OPT_TRAFFIC = {  # arrays read + written per element (p, g, state...)
    "sgd_step": (dict(momentum=0.9), 3, 2), "momentum_step": ({}, 3, 2), "adagrad_step": ({}, 3, 2),
    "rmsprop_step": ({}, 3, 2), "adam_step": ({}, 4, 3), "adamax_step": ({}, 4, 3),
    "nadam_step": ({}, 4, 3), "adadelta_step": ({}, 4, 3),
}
STATE = {"sgd_step": 1, "momentum_step": 1, "adagrad_step": 1, "rmsprop_step": 3, "adam_step": 3,
         "adamax_step": 2, "nadam_step": 2, "adadelta_step": 2}


def stream_gbs(min_time, n=10_000_000):
    """The memory stream of this run: NumPy ``c = a + b`` (2R+1W) on n float32, GB/s (one
    thread: a floor for the machine's bandwidth, not its peak)."""
    a, b, c = (np.ones(n, np.float32) for _ in range(3))
    return 3 * 4 * n / race({"add": lambda: np.add(a, b, out=c)}, min_time)["add"] / 1e9


def bench_optim(min_time, n=10_000_000):
    be = fastmlp.get_backend("cpp")
    ref = fastmlp.get_backend("numpy")
    stream = stream_gbs(min_time, n)
    print(f"optimizer steps on {n:,} float32 parameters: GB/s of counted traffic (reads + writes); "
          f"stream (NumPy a+b) {stream:.1f} GB/s")
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    for op, (hyper, reads, writes) in OPT_TRAFFIC.items():
        states = [np.zeros(n, np.float32) for _ in range(STATE[op])]
        if op == "rmsprop_step":
            states[1] = states[2] = None
        if op == "adam_step":
            states[2] = None
        extra = {"mu_product": 0.9} if op == "nadam_step" else {}
        counter = iter(range(1, 10**9))

        def call(backend, op=op, states=states, extra=extra, hyper=hyper, counter=counter):
            return lambda: getattr(backend, op)(p, g, *states, lr=1e-6, step=next(counter), **extra, **hyper)

        res = race({"cpp": call(be), "ref": call(ref)}, min_time)
        t, t_ref = res["cpp"], res["ref"]
        gbs = (reads + writes) * 4 * n / t / 1e9
        print(f"  {op:15s} {gbs:6.1f} GB/s ({reads}R+{writes}W, {gbs / stream:.2f}x stream), "
              f"{t_ref / t:5.1f}x the reference")


ACTS = {"relu": (), "leaky_relu": (), "elu": (), "gelu": (), "mish": (), "tanh": (), "sigmoid": (),
        "softplus": (), "silu": ()}


def bench_act(min_time, n=10_000_000):
    be = fastmlp.get_backend("cpp")
    rng = np.random.default_rng(0)
    Z = rng.standard_normal(n).astype(np.float32)
    dY = rng.standard_normal(n).astype(np.float32)
    try:
        import torch

        tz, tdy = torch.from_numpy(Z), torch.from_numpy(dY)
        torch_fb = {
            "relu": lambda: torch.ops.aten.threshold_backward(tdy, torch.relu(tz), 0),
            "leaky_relu": lambda: torch.ops.aten.leaky_relu_backward(tdy, torch.nn.functional.leaky_relu(tz), 0.01, False),
            "elu": lambda: torch.ops.aten.elu_backward(tdy, 1.0, 1.0, 1.0, False, torch.nn.functional.elu(tz)),
            "gelu": lambda: torch.ops.aten.gelu_backward(tdy, tz) if torch.nn.functional.gelu(tz) is not None else None,
            "mish": lambda: torch.ops.aten.mish_backward(tdy, tz) if torch.nn.functional.mish(tz) is not None else None,
            "tanh": lambda: torch.ops.aten.tanh_backward(tdy, torch.tanh(tz)),
            "sigmoid": lambda: torch.ops.aten.sigmoid_backward(tdy, torch.sigmoid(tz)),
            "softplus": lambda: torch.ops.aten.softplus_backward(tdy, tz, 1.0, 20.0) if torch.nn.functional.softplus(tz) is not None else None,
            "silu": lambda: torch.ops.aten.silu_backward(tdy, tz) if torch.nn.functional.silu(tz) is not None else None,
        }
    except ImportError:
        torch_fb = {}
    stream = stream_gbs(min_time, n)
    print(f"activation forward+backward on {n:,} float32 elements: ms, GB/s (fwd 1R+1W, bwd 3R+1W); "
          f"stream (NumPy a+b) {stream:.1f} GB/s")
    for name in ACTS:
        fwd, bwd = getattr(be, f"{name}_forward"), getattr(be, f"{name}_backward")

        # a fixed beta (softplus, silu): no d(beta), as the layer calls it and as aten computes
        kw = {"param_grad": False} if name in ("softplus", "silu") else {}

        def fb(fwd=fwd, bwd=bwd, kw=kw):
            Y = fwd(Z)
            bwd(dY, Z, Y, **kw)

        fns = {"cpp": fb}
        if name in torch_fb:
            fns["torch"] = torch_fb[name]
        res = race(fns, min_time * len(fns))
        t = res["cpp"]
        gbs = 6 * 4 * n / t / 1e9
        line = f"  {name:11s} cpp {t * 1e3:6.1f} ms ({gbs:5.1f} GB/s, {gbs / stream:.2f}x stream)"
        if "torch" in res:
            tt = res["torch"]
            line += f", torch aten {tt * 1e3:6.1f} ms ({tt / t:.2f}x)"
        print(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter timings")
    ap.add_argument("--only", choices=["steps", "optim", "act"])
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for every library (BLAS, torch, fastmlp loops); default: theirs")
    args = ap.parse_args()
    if args.threads:
        be = fastmlp.get_backend("cpp")
        be._C.blas_set_num_threads(args.threads)
        be.set_num_threads(args.threads)
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            pass
        print(f"threads: {args.threads} (set OPENBLAS_NUM_THREADS too: NumPy's BLAS reads it at import)")
    min_time = 0.3 if args.quick else 1.0
    if args.only in (None, "steps"):
        bench_steps(min_time)
    if args.only in (None, "optim"):
        bench_optim(min_time)
    if args.only in (None, "act"):
        bench_act(min_time)


if __name__ == "__main__":
    main()
