"""asv suites of the ``cupy`` backend, beside the NumPy reference for ratios.

Shaped like scipy's ``XPBenchmark``: parametrised over backend names; ``setup`` raises
``NotImplementedError`` (asv's skip) with the reason when a backend is unavailable, and makes
one warm-up call so that NVRTC compilation (and CuPy's kernel cache) stays out of the timing.
Every timed GPU call ends with a device synchronisation: CUDA launches are asynchronous.

Workloads (SPEC section 12): the training step of the standard models, each optimizer step on
1M and 10M parameters, each activation forward+backward on 10M elements, dense forward and
backward. Without a GPU every ``cupy`` case is skipped with its reason.
"""

from __future__ import annotations

import numpy as np

import fastmlp
from fastmlp.backends import backends, get_backend

BACKENDS = ["numpy", "cupy"]


def _backend(name):
    info = backends()[name]
    if not info.available:
        raise NotImplementedError(f"{name} unavailable: {info.reason}")
    return get_backend(name)


def _sync(be):
    if be.device == "gpu":
        be.xp.cuda.Device().synchronize()


class TrainStep:
    """One ``model.train_step`` (forward, cross-entropy, backward, Adam) on a batch already on
    the device."""

    params = (BACKENDS, ["784-128-10/64", "784-256-256-10/128", "784-1024-1024-10/512",
                         "4096-4096-4096-10/1024"])
    param_names = ["backend", "model"]
    timeout = 300

    def setup(self, backend, model):
        be = _backend(backend)
        dims, batch = model.split("/")
        sizes = [int(s) for s in dims.split("-")]
        rng = np.random.default_rng(0)
        self.model = fastmlp.MLP(sizes[0], sizes[1:-1], sizes[-1], rng=0).to(backend)
        self.opt = fastmlp.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loss = fastmlp.CrossEntropyLoss()
        self.X = be.asarray(rng.standard_normal((int(batch), sizes[0])).astype(np.float32))
        self.y = be.asarray(rng.integers(0, sizes[-1], int(batch)))
        self.be = be
        self.time_train_step(backend, model)

    def time_train_step(self, backend, model):
        self.model.train_step(self.X, self.y, self.loss, self.opt)
        _sync(self.be)


class OptimizerStep:
    """One fused optimizer step over a flat float32 arena."""

    params = (BACKENDS, ["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamax", "nadam", "adadelta"],
              [10**6, 10**7])
    param_names = ["backend", "optimizer", "n"]

    def setup(self, backend, optimizer, n):
        be = _backend(backend)
        rng = np.random.default_rng(0)
        self.be = be
        self.p = be.asarray(rng.standard_normal(n).astype(np.float32))
        self.g = be.asarray(rng.standard_normal(n).astype(np.float32))
        z = lambda: be.zeros((n,), np.float32)  # noqa: E731
        self.call = {
            "sgd": lambda: be.sgd_step(self.p, self.g, self.s[0], 1e-3, 2, momentum=0.9),
            "momentum": lambda: be.momentum_step(self.p, self.g, self.s[0], 1e-3, 2),
            "adagrad": lambda: be.adagrad_step(self.p, self.g, self.s[0], 1e-3, 2),
            "rmsprop": lambda: be.rmsprop_step(self.p, self.g, self.s[0], None, None, 1e-3, 2),
            "adam": lambda: be.adam_step(self.p, self.g, self.s[0], self.s[1], None, 1e-3, 2),
            "adamax": lambda: be.adamax_step(self.p, self.g, self.s[0], self.s[1], 1e-3, 2),
            "nadam": lambda: be.nadam_step(self.p, self.g, self.s[0], self.s[1], 1e-3, 2, mu_product=0.8),
            "adadelta": lambda: be.adadelta_step(self.p, self.g, self.s[0], self.s[1], 1.0, 2),
        }[optimizer]
        self.s = [z(), z()]
        self.time_step(backend, optimizer, n)

    def time_step(self, backend, optimizer, n):
        self.call()
        _sync(self.be)


class Activation:
    """Forward and backward of an activation on 10M float32 elements."""

    params = (BACKENDS, ["relu", "sigmoid", "tanh", "gelu", "silu", "mish", "softmax"])
    param_names = ["backend", "activation"]

    def setup(self, backend, activation):
        be = _backend(backend)
        rng = np.random.default_rng(0)
        self.be = be
        self.Z = be.asarray(rng.standard_normal((10_000, 1000)).astype(np.float32))
        self.dY = be.asarray(rng.standard_normal((10_000, 1000)).astype(np.float32))
        self.time_forward_backward(backend, activation)

    def time_forward_backward(self, backend, activation):
        be = self.be
        Y = getattr(be, f"{activation}_forward")(self.Z)
        getattr(be, f"{activation}_backward")(self.dY, self.Z, Y)
        _sync(be)

    def track_bandwidth(self, backend, activation):
        """GB/s moved by forward (read Z, write Y) + backward (read dY, Z, Y, write dZ)."""
        import time

        start = time.perf_counter()
        for _ in range(5):
            self.time_forward_backward(backend, activation)
        seconds = (time.perf_counter() - start) / 5
        return 6 * self.Z.nbytes / seconds / 1e9

    track_bandwidth.unit = "GB/s"


class Dense:
    """``dense_forward`` and ``dense_backward`` (relu fused), batch 1024, 4096 -> 4096."""

    params = (BACKENDS,)
    param_names = ["backend"]

    def setup(self, backend):
        be = _backend(backend)
        rng = np.random.default_rng(0)
        self.be = be
        self.X = be.asarray(rng.standard_normal((1024, 4096)).astype(np.float32))
        self.W = be.asarray((rng.standard_normal((4096, 4096)) * 0.01).astype(np.float32))
        self.b = be.asarray(np.zeros(4096, np.float32))
        self.dW, self.db = be.zeros((4096, 4096), np.float32), be.zeros((4096,), np.float32)
        self.Y = be.dense_forward(self.X, self.W, self.b, "relu")
        self.time_forward(backend)

    def time_forward(self, backend):
        self.be.dense_forward(self.X, self.W, self.b, "relu")
        _sync(self.be)

    def time_backward(self, backend):
        self.be.dense_backward(self.Y, self.X, self.W, self.Y, "relu", self.dW, self.db)
        _sync(self.be)

    def track_forward_gflops(self, backend):
        import time

        start = time.perf_counter()
        for _ in range(3):
            self.time_forward(backend)
        return 2 * 1024 * 4096 * 4096 / ((time.perf_counter() - start) / 3) / 1e9

    track_forward_gflops.unit = "GFLOP/s"
