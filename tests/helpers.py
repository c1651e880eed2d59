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


def assert_step_matches(actual, expected, dtype, what: str = "", truth=None):
    """A result of several training steps (a parameter, gradient, optimizer state or the list of
    loss values) against the reference run's: :func:`assert_matches` with ``TOL[dtype]["step"]``,
    or, in float32 given ``truth`` (the same steps run by the reference in float64), at least as
    accurate as the float32 reference. Two float32 runs whose sums round in another order drift
    apart step by step, and an entry that cancels (0.003 in a gradient of scale 5) then moves
    by more than the tolerance in both runs alike: measured, the float32 reference itself is
    3e-6 away from the float64 run there. Accepted in that case:
    ``max|actual - truth| <= 2 max|expected - truth| + 8 eps32 max|truth|``; a fault of the
    backend is far larger than the reference's own rounding."""
    a, e = np.asarray(actual), np.asarray(expected)
    rtol, atol = TOL[str(dtype)]["step"]
    if truth is None or str(dtype) != "float32" or a.shape != e.shape or a.dtype != e.dtype \
            or np.allclose(a, e, rtol=rtol, atol=atol):
        assert_matches(a, e, dtype, "step", None, what)
        return
    a, e, t = (np.asarray(x, dtype=np.float64) for x in (a, e, truth))
    assert t.shape == a.shape, f"{what}: the float64 run has shape {t.shape}, not {a.shape}"
    err, ref_err = np.abs(a - t).max(), np.abs(e - t).max()
    bound = 2 * ref_err + 8 * np.finfo(np.float32).eps * np.abs(t).max()
    assert err <= bound, (f"{what}: beyond the float32 step tolerance, and {err:.3g} away from the float64 "
                          f"run where the float32 reference is {ref_err:.3g} away (bound {bound:.3g})")


@pytest.fixture
def fresh_dispatch(monkeypatch):
    """Forget loaded backends and the cached environment before and after a test."""
    _reset_for_tests()
    yield monkeypatch
    _reset_for_tests()


def assert_runs_match(got, ref, dtype, truth=None, grads=True):
    """Two training runs, each ``(model, optimizer, loss values)``, after the same steps: the
    backend's ``got`` against the reference's ``ref``, through :func:`assert_step_matches`
    (``truth``: the reference's run in float64, for float32): loss values, parameters, their
    gradients (``grads``), the optimizer's param groups (step counts included) and state."""
    (m, o, v), (m_ref, o_ref, v_ref) = got, ref
    t_model, t_opt, t_values = truth if truth is not None else (None, None, None)
    assert_step_matches(v, v_ref, dtype, "loss values", t_values)
    t_state = t_model.state_dict() if truth is not None else {}
    for (k, a), (_, e) in zip(m.state_dict().items(), m_ref.state_dict().items()):
        assert_step_matches(a, e, dtype, k, t_state.get(k))
    if grads:
        t_params = t_model.parameters() if truth is not None else [None] * len(m_ref.parameters())
        for p, q, t in zip(m.parameters(), m_ref.parameters(), t_params):
            assert_step_matches(p.grad, q.grad, dtype, f"grad of {p.name}", None if t is None else t.grad)
    s, s_ref = o.state_dict(), o_ref.state_dict()
    assert s["param_groups"] == s_ref["param_groups"]
    s_truth = t_opt.state_dict()["state"] if truth is not None else {}
    for i in s_ref["state"]:
        assert set(s["state"][i]) == set(s_ref["state"][i])
        for k in s_ref["state"][i]:
            assert_step_matches(s["state"][i][k], s_ref["state"][i][k], dtype, f"param {i} state {k}",
                                s_truth.get(i, {}).get(k))
