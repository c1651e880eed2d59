"""The base of every suite, shaped like scipy's ``benchmarks/common.py::XPBenchmark``.

Each suite is parametrised over every registered backend plus ``numpy_inplace`` (a well-written
in-place NumPy baseline, where the suite has one). ``setup`` skips an unavailable backend with
its reason (``SkipNotImplemented``/``NotImplementedError``, which asv shows as n/a) and makes
one warm-up call, so JIT and kernel compilation stay out of the timings.
"""

from __future__ import annotations

import numpy as np

import fastmlp
from fastmlp.backends import known_names

try:  # asv >= 0.6 runs benchmarks through asv_runner
    from asv_runner.benchmarks.mark import SkipNotImplemented
except ImportError:  # pragma: no cover - older asv
    SkipNotImplemented = NotImplementedError

BASELINE = "numpy_inplace"
BACKENDS = [*known_names(), BASELINE]


def skip(reason: str):
    raise SkipNotImplemented(reason)


class XPBenchmark:
    """Base class: ``self.be`` is the backend (None for the in-place NumPy baseline)."""

    params: list = [BACKENDS]
    param_names: list = ["backend"]
    has_baseline = True
    timeout = 600

    def setup(self, backend, *args):
        if backend == BASELINE:
            if not self.has_baseline:
                skip("no in-place NumPy baseline for this benchmark")
            self.be = None
            return
        info = fastmlp.backends()[backend]
        if not info.available:
            skip(f"backend {backend} unavailable: {info.reason}")
        self.be = fastmlp.get_backend(backend)

    def sync(self):
        """Wait for the device (a GPU backend's kernels run asynchronously)."""
        if self.be is not None and self.be.device != "cpu":
            self.be.xp.cuda.Device().synchronize()

    def random(self, shape, dtype="float32", seed=0, scale=1.0):
        """A random array on the backend's device (on the host for the baseline)."""
        a = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)
        return a if self.be is None else self.be.asarray(a)
