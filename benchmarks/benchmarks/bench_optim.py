"""Each optimizer's fused in-place step over a flat arena of 1M and 10M parameters."""

from __future__ import annotations

import time

import numpy as np

import fastmlp
from fastmlp.bench import InplaceNumpyMLP
from fastmlp.optim import OPTIMIZERS

from .common import BACKENDS, BASELINE, XPBenchmark, skip

SIZES = {"1M": (1000, 999), "10M": (10000, 999)}  # Linear(in, out): in*out + out parameters


class OptimizerStep(XPBenchmark):
    params = [BACKENDS, sorted(OPTIMIZERS), list(SIZES)]
    param_names = ["backend", "optimizer", "size"]

    def setup(self, backend, optimizer, size):
        super().setup(backend, optimizer, size)
        out_f, in_f = SIZES[size]
        if backend == BASELINE:
            if optimizer != "adam":
                skip("the in-place NumPy baseline implements Adam only")
            net = InplaceNumpyMLP((in_f, out_f), batch=1)
            net.g[...] = np.random.default_rng(0).standard_normal(net.g.size).astype(net.g.dtype) * 1e-3
            self.n, self.itemsize, self.states = net.p.size, net.p.itemsize, 2
            self.run = net._adam
        else:
            layer = fastmlp.Linear(in_f, out_f, rng=0).to(backend=backend)
            kwargs = {"momentum": 0.9} if optimizer == "sgd" else {}
            opt = fastmlp.optim.get_optimizer(optimizer, layer.parameters(), lr=1e-3, **kwargs)
            arena = layer.weight.arena
            arena.grad[...] = self.random(arena.grad.shape, arena.grad.dtype.name, scale=1e-3)
            self.n, self.itemsize = arena.size, arena.data.dtype.itemsize
            self.run = opt.step
            self.run()  # warm-up, allocates the state buffers
            self.states = len(opt.flat_state())
        self.run()

    def time_step(self, backend, optimizer, size):
        self.run()
        self.sync()

    def track_bandwidth(self, backend, optimizer, size):
        """Bytes moved: parameters read and written, gradients read, each state read and written."""
        t0 = time.perf_counter()
        self.run()
        self.sync()
        moved = (3 + 2 * self.states) * self.n * self.itemsize
        return moved / (time.perf_counter() - t0) / 1e9

    track_bandwidth.unit = "GB/s"
