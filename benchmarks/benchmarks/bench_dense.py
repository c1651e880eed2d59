"""The fused dense layer ``Y = relu(X W^T + b)`` and its backward."""

from __future__ import annotations

import time

import numpy as np

from .common import BACKENDS, BASELINE, XPBenchmark

SHAPES = {"64x784->128": (64, 784, 128), "512x1024->1024": (512, 1024, 1024), "1024x4096->4096": (1024, 4096, 4096)}


class Dense(XPBenchmark):
    params = [BACKENDS, list(SHAPES)]
    param_names = ["backend", "shape"]

    def setup(self, backend, shape):
        super().setup(backend, shape)
        n, i, o = SHAPES[shape]
        self.flops = 2 * n * i * o
        X, W, b = self.random((n, i)), self.random((o, i), seed=1, scale=0.05), self.random((o,), seed=2)
        dY = self.random((n, o), seed=3)
        if backend == BASELINE:
            Y, dW, db, dX = np.empty((n, o), np.float32), np.empty_like(W), np.empty_like(b), np.empty_like(X)
            mask, dZ = np.empty((n, o), bool), np.empty((n, o), np.float32)

            def fwd():
                np.matmul(X, W.T, out=Y)
                np.add(Y, b, out=Y)
                np.maximum(Y, 0, out=Y)

            def bwd():
                np.greater(Y, 0, out=mask)
                np.multiply(dY, mask, out=dZ)
                np.matmul(dZ.T, X, out=dW)
                dZ.sum(axis=0, out=db)
                np.matmul(dZ, W, out=dX)
        else:
            be = self.be
            Y = be.dense_forward(X, W, b, "relu")
            dW, db = be.zeros(W.shape, W.dtype), be.zeros(b.shape, b.dtype)

            def fwd():
                return be.dense_forward(X, W, b, "relu")

            def bwd():
                return be.dense_backward(dY, X, W, Y, "relu", dW, db, True)
        self.fwd, self.bwd = fwd, bwd
        fwd(), bwd()  # warm-up

    def time_forward(self, backend, shape):
        self.fwd()
        self.sync()

    def time_backward(self, backend, shape):
        self.bwd()
        self.sync()

    def track_forward_gflops(self, backend, shape):
        t0 = time.perf_counter()
        self.fwd()
        self.sync()
        return self.flops / (time.perf_counter() - t0) / 1e9

    track_forward_gflops.unit = "GFLOP/s"
