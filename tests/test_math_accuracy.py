"""The transcendental activations of every backend far beyond the random inputs of the
generic suite (``test_backends_vs_reference``): every magnitude from tiny to saturation, and the
special values, against float64 NumPy and the ``math`` module.

The fast backends replace libm's scalar calls with vectorisable approximations (numba's
``_expf``/``_tanhd``/..., the C++ backend's ``vexp``/``vtanh``/...); a formula that is right
for inputs of order one can still cancel near 0 (``1 - 2 / (e^{2x} + 1)`` for tanh,
``e^x - 1`` for ELU) or lose NaN, which random normal inputs rarely show. The reference runs
the same checks, so the expected values are known to be right.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from helpers import backend_params, to_host

from fastmlp.backends import get_backend
from fastmlp.backends.base import FUSED_ACTIVATIONS


@pytest.fixture(params=backend_params(include_reference=True))
def backend(request):
    return get_backend(request.param)


def _points(backend, full: int) -> int:
    """Without numba's JIT the kernels run as Python, one element at a time: a coarser grid of
    the same range keeps that run short."""
    no_jit = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
    return full // 50 + 1 if backend.name == "numba" and no_jit else full


def _forward(backend, name, x, *hyper):
    with np.errstate(over="ignore", invalid="ignore"):
        return to_host(backend, getattr(backend, f"{name}_forward")(backend.asarray(x), *hyper))


def _erf64(x):
    return np.frompyfunc(math.erf, 1, 1)(x).astype(np.float64)


def _assert_close(name, got, expected, x, atol, rtol):
    err = np.abs(got.astype(np.float64) - expected)
    bad = err > atol + rtol * np.abs(expected)
    worst = f"worst at x={x[np.argmax(err)]}: {err.max():.3g}"
    assert not bad.any(), f"{name}: {bad.sum()} values off, {worst}"


def test_float32_over_the_whole_range(backend):
    """Every magnitude from 1e-8 to 100, then saturation and the special values, float32."""
    mag = np.geomspace(1e-8, 100, _points(backend, 200_001))
    x = np.concatenate([-mag[::-1], [0.0], mag]).astype(np.float32)
    x64 = x.astype(np.float64)
    sigmoid = 1 / (1 + np.exp(-x64))
    cases = [
        ("tanh", (), np.tanh(x64), 1e-7, 3e-7),
        ("sigmoid", (), sigmoid, 1e-7, 3e-7),
        ("elu", (), np.where(x64 > 0, x64, np.expm1(np.minimum(x64, 0))), 1e-7, 3e-7),
        ("mish", (), x64 * np.tanh(np.logaddexp(0, x64)), 1e-7, 5e-7),
        ("gelu", ("tanh",), 0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3))), 1e-6, 1e-6),
        # erf: 5.4e-7 absolute (1.4e-7 in exact arithmetic), times |z| / 2
        ("gelu", (), 0.5 * x64 * (1 + _erf64(x64 / np.sqrt(2))), 5e-7, 6e-7),
        ("softplus", (), np.where(x64 > 20, x64, np.logaddexp(0, x64)), 1e-7, 3e-7),
        ("log_sigmoid", (), -np.logaddexp(0, -x64), 1e-7, 3e-7),
        ("silu", (), x64 * sigmoid, 1e-7, 5e-7),
    ]
    for name, hyper, expected, atol, rtol in cases:
        _assert_close(f"{name}{hyper}", _forward(backend, name, x, *hyper), expected, x, atol, rtol)
    # the backward of exact GELU: Phi(z) + z phi(z)
    with np.errstate(over="ignore"):
        got = to_host(backend, backend.gelu_backward(*(backend.asarray(a) for a in (np.ones_like(x), x, x))))
    expected = 0.5 * (1 + _erf64(x64 / np.sqrt(2))) + x64 * np.exp(-0.5 * x64 * x64) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=3e-7, atol=4e-7, err_msg="gelu_backward")
    _assert_special_values(backend, np.float32)


def test_float64_over_the_whole_range(backend):
    """Every magnitude from 1e-12 to 700 within 2e-15 relative (the tolerance table's float64
    forward tolerance is 1e-12; gelu also 1e-15 absolute), then the special values."""
    mag = np.geomspace(1e-12, 700, _points(backend, 100_001))
    x = np.concatenate([-mag[::-1], [0.0], mag])
    tanh = np.array([math.tanh(v) for v in x])
    expm1 = np.array([math.expm1(v) for v in np.minimum(x, 0)])
    sigmoid = np.array([1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v)) for v in x])
    log_sigmoid = np.array([min(v, 0.0) - math.log1p(math.exp(-abs(v))) for v in x])
    gelu = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    # gelu: 1 + erf(z / sqrt 2) cancels for z < 0 (in the reference too): erf's 4e-16 absolute
    for name, expected, atol in (("tanh", tanh, 1e-300), ("elu", np.where(x > 0, x, expm1), 1e-300),
                                 ("sigmoid", sigmoid, 1e-300), ("log_sigmoid", log_sigmoid, 1e-300),
                                 ("gelu", gelu, 1e-15)):
        _assert_close(name, _forward(backend, name, x), expected, x, atol, 2e-15)
    _assert_special_values(backend, np.float64)


def _assert_special_values(backend, dtype):
    """NaN stays NaN (also through the fused dense activation), +-inf saturate, and tanh keeps
    the sign of zero. The
    C++ backend flushes denormals to zero inside its kernels (FtzGuard), so the smallest
    denormal may come back as itself or as 0."""
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype)
    ln2 = dtype(np.log(2))
    expected = {
        "tanh": [np.nan, 1, -1, 0, -0.0],
        "sigmoid": [np.nan, 1, 0, 0.5, 0.5],
        "elu": [np.nan, np.inf, -1, 0, -0.0],
        "gelu": [np.nan, np.inf, np.nan, 0, -0.0],
        "softplus": [np.nan, np.inf, 0, ln2, ln2],
        "log_sigmoid": [np.nan, 0, -np.inf, -ln2, -ln2],
    }
    for name, want in expected.items():
        got = _forward(backend, name, special)
        np.testing.assert_array_equal(got, np.array(want, dtype), err_msg=name)
        if name == "tanh":  # odd: tanh(-0) = -0, as NumPy's
            assert np.signbit(got[4]) and not np.signbit(got[3]), "tanh(-0) must be -0"
    for name, hyper in (("mish", ()), ("gelu", ("tanh",)), ("selu", ()), ("silu", ()), ("relu", ()),
                        ("leaky_relu", ())):
        assert np.isnan(_forward(backend, name, special[:1], *hyper)[0]), f"{name}(nan)"
    # and through the dense layer's fused activation (max(z, 0) written as z > 0 ? z : 0 gave 0)
    X, W = np.array([[np.nan, -1.0, 2.0]], dtype), np.eye(3, dtype=dtype)
    for act in FUSED_ACTIVATIONS:
        Y = to_host(backend, backend.dense_forward(backend.asarray(X), backend.asarray(W), None, act))
        assert np.isnan(Y).all(), f"dense_forward {act}: {Y}"
    tiny = np.array([np.finfo(dtype).smallest_subnormal], dtype)
    assert _forward(backend, "tanh", tiny)[0] in (tiny[0], 0.0)
