"""Each activation's forward and backward over 10M elements."""

from __future__ import annotations

import time

import numpy as np

from fastmlp.backends.base import Backend

from .common import BACKENDS, BASELINE, XPBenchmark, skip

ACTIVATIONS = sorted(
    name[: -len("_forward")] for name in Backend.op_names()
    if name.endswith("_forward") and name != "dense_forward" and name[: -len("_forward")] + "_backward" in Backend.op_names()
)
N = 10_000_000
EXTRA = {"prelu": lambda xp: (xp.asarray(np.array([0.25], np.float32)),)}


class ActivationForwardBackward(XPBenchmark):
    params = [BACKENDS, ACTIVATIONS]
    param_names = ["backend", "activation"]

    def setup(self, backend, activation):
        super().setup(backend, activation)
        self.Z = self.random((N // 1000, 1000))
        self.dY = self.random((N // 1000, 1000), seed=1)
        if backend == BASELINE:
            if activation != "relu":
                skip("the in-place NumPy baseline covers relu only")
            self.Y = np.empty_like(self.Z)
            self.dZ = np.empty_like(self.Z)
            self.mask = np.empty(self.Z.shape, bool)

            def fwd():
                np.maximum(self.Z, 0, out=self.Y)

            def bwd():
                np.greater(self.Z, 0, out=self.mask)
                np.multiply(self.dY, self.mask, out=self.dZ)
        else:
            f = getattr(self.be, f"{activation}_forward")
            b = getattr(self.be, f"{activation}_backward")
            extra = EXTRA.get(activation, lambda xp: ())(self.be.xp)
            self.Y = f(self.Z, *extra)

            def fwd():
                return f(self.Z, *extra)

            def bwd():
                return b(self.dY, self.Z, self.Y, *extra)
        self.fwd, self.bwd = fwd, bwd
        fwd(), bwd()  # warm-up

    def time_forward(self, backend, activation):
        self.fwd()
        self.sync()

    def time_forward_backward(self, backend, activation):
        self.fwd()
        self.bwd()
        self.sync()

    def track_bandwidth(self, backend, activation):
        """Forward reads Z and writes Y; backward reads dY, Z, Y and writes dZ: 6 arrays."""
        t0 = time.perf_counter()
        self.fwd()
        self.bwd()
        self.sync()
        return 6 * N * 4 / (time.perf_counter() - t0) / 1e9

    track_bandwidth.unit = "GB/s"
