"""The whole ``CupyBackend`` against the NumPy reference, on the CPU.

The backend's Python logic (launch configuration, argument order and types, fallbacks, the
optimizer over the arena, training steps of an MLP) drives the real kernels of
``cupy_kernels.cu``, compiled for the CPU (``cuda_emu``), with NumPy arrays standing in for CuPy
arrays. The cases are those of the generic suite, imported from ``test_backends_vs_reference``
(not copied): each runs here twice, with the backend's default launch shapes and with tiny,
odd ones (grids far smaller than the data, blocks of 37 threads, 5x3 reduction blocks).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

# The generic cases, collected again in this module, where `backend` is the emulated backend.
import test_backends_vs_reference as generic
from cupy_emu_backend import TINY_LAUNCH, emulated_backend
from helpers import DTYPES, assert_matches
from test_backends_vs_reference import (  # noqa: F401
    ACTIVATION_CASES,
    OPTIMIZERS,
    PARAM_ACTIVATIONS,
    SHAPES,
    _dev,
    _rand,
    test_activation_non_contiguous_input,
    test_dense,
    test_loss,
    test_optimizer_step,
    test_prelu,
)

import fastmlp
from fastmlp.backends import _REGISTRY, _instances, get_backend
from fastmlp.backends.numpy_backend import NumpyBackend

REF = get_backend("numpy")
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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(ACTIVATION_CASES))
def test_activation(backend, name, shape, dtype):
    """The generic ``test_activation`` with a reproducible seed.

    The generic test seeds with ``hash((name, shape))``, which changes with every process
    (``PYTHONHASHSEED``). For softplus and silu the trainable-beta gradient is a float32 sum of
    130 x 1031 terms that can cancel down to ~0.3; there the float32 reference itself differs
    from the same sum done in float64 by up to 11x ``TOL["float32"]["backward"]`` (3 of 120
    random draws), so any backend that does not round exactly like NumPy fails such a draw now
    and then. Same body, seed ``crc32(name, shape)``.
    """
    rng = np.random.default_rng(zlib.crc32(f"{name}{shape}".encode()))
    Z = _rand(rng, shape, dtype)
    dY = _rand(rng, shape, dtype, 1.0)
    for hyper in ACTIVATION_CASES[name]:
        fwd, bwd = f"{name}_forward", f"{name}_backward"
        Y_ref = getattr(REF, fwd)(Z.copy(), *hyper)
        Y = getattr(backend, fwd)(_dev(backend, Z), *hyper)
        assert_matches(Y, Y_ref, dtype, "forward", backend, f"{fwd}{hyper}")
        ref = getattr(REF, bwd)(dY.copy(), Z.copy(), Y_ref.copy(), *hyper)
        out = getattr(backend, bwd)(_dev(backend, dY), _dev(backend, Z), _dev(backend, Y_ref), *hyper)
        if name in PARAM_ACTIVATIONS:
            assert_matches(out[0], ref[0], dtype, "backward", backend, f"{bwd}{hyper} dZ")
            assert_matches(out[1], ref[1], dtype, "backward", backend, f"{bwd}{hyper} dbeta")
        else:
            assert_matches(out, ref, dtype, "backward", backend, f"{bwd}{hyper}")


# Training configurations where the float32 reference itself leaves TOL["float32"]["step"] when
# dL/dlogits moves by one ulp (see test_ulp_chaotic_configurations_are_chaotic): 18x to 1433x.
ULP_CHAOTIC = {("RMSprop", "leaky_relu"), ("Adam", "leaky_relu"), ("AdamW", "leaky_relu"),
               ("Adamax", "leaky_relu"), ("NAdam", "leaky_relu")}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "leaky_relu", "gelu"])
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: f"{o[0]}{o[1]}")
def test_train_step(backend, opt, activation, dtype):
    """The generic ``test_train_step`` (20 steps, parameters and every optimizer state), except
    the float32 configurations that no backend can meet unless it rounds exactly like NumPy."""
    if dtype == "float32" and (opt[0], activation) in ULP_CHAOTIC:
        pytest.skip("float32 leaky_relu with an adaptive optimizer: the reference itself moves 18x-1433x "
                    "past TOL when dL/dlogits changes by one ulp (test_ulp_chaotic_configurations_are_chaotic)")
    generic.test_train_step(backend, opt, activation, dtype)


class _UlpNoisyReference(NumpyBackend):
    """The reference with every cross-entropy gradient moved by one ulp, up or down."""

    name = "numpy_ulp_noisy"
    is_reference = False

    def cross_entropy_loss(self, logits, target, **kw):
        value, grad = super().cross_entropy_loss(logits, target, **kw)
        if grad is not None:
            up = np.random.default_rng(grad.size).random(grad.shape) < 0.5
            grad = np.nextafter(grad, np.where(up, np.inf, -np.inf).astype(grad.dtype))
        return value, grad


def _train(backend_name, opt, activation):
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((37, 13)), rng.integers(0, 4, 37)
    model = fastmlp.MLP(13, [17, 9], 4, activation=activation, dtype="float32", rng=1).to(backend_name)
    optimizer = getattr(fastmlp.optim, opt[0])(model.parameters(), **opt[1])
    for _ in range(20):
        model.train_step(X, y, fastmlp.CrossEntropyLoss(), optimizer)
    return model.state_dict()


def test_ulp_chaotic_configurations_are_chaotic(monkeypatch):
    """Why ULP_CHAOTIC is skipped above: the reference against itself with dL/dlogits one ulp
    away leaves the tolerance for exactly those configurations, and stays well inside it for a
    neighbour that is run (SGD with momentum, same activation). If the generic test's data or
    tolerance change so that this no longer holds, this test fails: then drop the skip."""
    noisy = _UlpNoisyReference()
    monkeypatch.setitem(_REGISTRY, noisy.name, ("tests", "tests only"))
    monkeypatch.setitem(_instances, noisy.name, noisy)
    rtol, atol = generic.TOL["float32"]["step"]

    def excess(opt, activation):
        a, b = _train("numpy", opt, activation), _train(noisy.name, opt, activation)
        return max(float(np.max(np.abs(a[k] - b[k]) / (atol + rtol * np.abs(a[k])))) for k in a)

    for opt in OPTIMIZERS:
        if (opt[0], "leaky_relu") in ULP_CHAOTIC and opt[1] != {"lr": 0.01, "amsgrad": True}:
            assert excess(opt, "leaky_relu") > 5, opt
    assert excess(("SGD", {"lr": 0.1, "momentum": 0.9}), "leaky_relu") < 0.5
