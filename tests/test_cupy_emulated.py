"""The whole ``CupyBackend`` against the NumPy reference, on the CPU.

The backend's Python logic (launch configuration, argument order and types, fallbacks, the
optimizer over the arena, training steps of an MLP) drives the real kernels of
``cupy_kernels.cu``, compiled for the CPU (``cuda_emu``), with NumPy arrays standing in for CuPy
arrays. The cases are those of the generic suite, imported from ``test_backends_vs_reference``
(not copied): each runs here twice, with the backend's default launch shapes and with tiny,
odd ones (grids far smaller than the data, blocks of 37 threads, 5x3 reduction blocks).
"""

from __future__ import annotations

import pytest

# The generic cases, collected again in this module, where `backend` is the emulated backend.
from cupy_emu_backend import TINY_LAUNCH, emulated_backend
from test_backends_vs_reference import (  # noqa: F401
    test_activation,
    test_activation_non_contiguous_input,
    test_dense,
    test_loss,
    test_optimizer_step,
    test_prelu,
    test_prelu_at_the_kink,
    test_train_step,
)

from fastmlp.backends import _REGISTRY, _instances

LAUNCHES = {"default_launch": {}, "tiny_launch": TINY_LAUNCH}


@pytest.fixture(scope="module", params=sorted(LAUNCHES))
def emulated(request):
    return emulated_backend(f"cupy_emulated_{request.param}", **LAUNCHES[request.param])


@pytest.fixture
def backend(emulated, monkeypatch):
    """The emulated backend, registered under its name so that ``model.to(name)`` finds it."""
    monkeypatch.setitem(_REGISTRY, emulated.name, ("tests.cupy_emu_backend:emulated_backend", "tests only"))
    monkeypatch.setitem(_instances, emulated.name, emulated)
    return emulated
