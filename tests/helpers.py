"""Shared test helpers: the one tolerance table, backend parametrisation, comparisons.

Every backend is compared with the NumPy reference (never with itself) through
:func:`assert_matches`, which checks type, shape and dtype before values.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fastmlp.backends import _reset_for_tests, backends

# The one tolerance table: (rtol, atol) by dtype and kind of result.
#  forward  - elementwise and dense outputs, loss values
#  backward - gradients (one more reduction or GEMM than the forward)
#  step     - parameters and optimizer state after several fused steps
TOL = {
    "float32": {"forward": (1e-5, 1e-6), "backward": (1e-4, 1e-5), "step": (1e-4, 1e-6)},
    "float64": {"forward": (1e-12, 1e-13), "backward": (1e-10, 1e-12), "step": (1e-10, 1e-12)},
}

DTYPES = ("float32", "float64")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """``../shared/data/<parts>`` beside the repository, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):  # CI has ../shared beside the clone: a skip there would hide a real gap
            pytest.fail(f"real data {path} is absent in CI")
        pytest.skip(f"real data {path} is absent (../shared/data sits beside the repository in CI)")
    return path


def backend_params(include_reference: bool = False):
    """pytest params for every registered backend; unavailable ones are skipped with their reason."""
    out = []
    for name, info in backends().items():
        if name == "numpy" and not include_reference:
            continue
        marks = [] if info.available else [pytest.mark.skip(reason=f"{name} unavailable: {info.reason}")]
        out.append(pytest.param(name, marks=marks, id=name))
    if not out:
        out.append(pytest.param(None, marks=pytest.mark.skip(reason="no backend besides the reference is registered"), id="none"))
    return out


def to_host(backend, x):
    """A backend's result as a NumPy array (None and scalars pass through)."""
    if x is None:
        return None
    if isinstance(x, (float, int)):
        return np.asarray(x)
    return np.asarray(backend.to_numpy(x))


def assert_matches(actual, expected, dtype, kind: str = "forward", backend=None, what: str = ""):
    """``actual`` (from ``backend``) equals the reference ``expected`` within ``TOL[dtype][kind]``,
    with the same shape and dtype."""
    if expected is None:
        assert actual is None, f"{what}: expected None, got {type(actual).__name__}"
        return
    assert actual is not None, f"{what}: got None"
    a = to_host(backend, actual) if backend is not None else np.asarray(actual)
    e = np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != reference {e.shape}"
    if e.dtype.kind == "f" and e.ndim > 0:
        assert a.dtype == e.dtype, f"{what}: dtype {a.dtype} != reference {e.dtype}"
    rtol, atol = TOL[str(dtype)][kind]
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=what)


@pytest.fixture
def fresh_dispatch(monkeypatch):
    """Forget loaded backends and the cached environment before and after a test."""
    _reset_for_tests()
    yield monkeypatch
    _reset_for_tests()
