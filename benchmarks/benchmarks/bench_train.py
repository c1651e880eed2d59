"""A whole training step (forward, cross-entropy, backward, Adam) of SPEC section 12's models."""

from __future__ import annotations

from fastmlp.bench import STANDARD_MODELS, make_step

from .common import BACKENDS, XPBenchmark


def _flops(widths, batch) -> float:
    """Forward ``2 N in out`` per layer, backward ``4 N in out`` (dW and dX), minus the first
    layer's dX, which is not computed."""
    mults = sum(i * o for i, o in zip(widths[:-1], widths[1:]))
    return 6 * batch * mults - 2 * batch * widths[0] * widths[1]


class TrainStep(XPBenchmark):
    params = [BACKENDS, list(STANDARD_MODELS)]
    param_names = ["backend", "model"]

    def setup(self, backend, model):
        super().setup(backend, model)
        self.widths, self.batch = STANDARD_MODELS[model]
        self.step = make_step(backend, self.widths, self.batch)
        self.step()  # warm-up

    def time_train_step(self, backend, model):
        self.step()
        self.sync()

    def peakmem_train_step(self, backend, model):
        self.step()

    def track_gflops(self, backend, model):
        import time

        t0 = time.perf_counter()
        self.step()
        self.sync()
        return _flops(self.widths, self.batch) / (time.perf_counter() - t0) / 1e9

    track_gflops.unit = "GFLOP/s"
