"""Backend selection and dispatch: every row of SPEC §2's table, context nesting and
isolation, the backend report, the import-lightness promise, and the backend contract."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
from helpers import backend_params

import fastmlp
from fastmlp import backends as report
from fastmlp.backends import (
    _REGISTRY,
    BackendUnavailableError,
    get_backend,
    set_backend,
    use_backend,
)
from fastmlp.backends.base import Backend

BROKEN = ("fastmlp_no_such_module:Nothing", "pip install fastmlp[broken]")


@pytest.fixture
def with_broken(fresh_dispatch):
    """A registered backend whose import fails, to exercise the unavailable paths."""
    fresh_dispatch.setitem(_REGISTRY, "broken", BROKEN)
    return fresh_dispatch


@pytest.mark.parametrize("value", [None, "", "  ", "auto"])
def test_unset_empty_or_auto_picks_fastest_available_cpu_backend(fresh_dispatch, value):
    if value is None:
        fresh_dispatch.delenv("FASTMLP_BACKEND", raising=False)
    else:
        fresh_dispatch.setenv("FASTMLP_BACKEND", value)
    from fastmlp.backends import AUTO_ORDER

    expected = next(n for n in AUTO_ORDER if n in _REGISTRY and report()[n].available)
    backend = get_backend()
    assert backend.name == expected
    assert backend.device == "cpu"


def test_one_name_selects_that_backend(fresh_dispatch):
    fresh_dispatch.setenv("FASTMLP_BACKEND", "numpy")
    assert get_backend().name == "numpy"


def test_env_is_read_at_first_use_not_at_import(fresh_dispatch):
    fresh_dispatch.setenv("FASTMLP_BACKEND", "no-such-backend")
    # importing and building a model does not read it; the first op does
    model = fastmlp.MLP(3, [2], 2)
    with pytest.raises(ValueError, match="known backends"):
        model.forward(np.ones((1, 3)))


def test_env_is_read_once(fresh_dispatch):
    fresh_dispatch.setenv("FASTMLP_BACKEND", "numpy")
    assert get_backend().name == "numpy"
    fresh_dispatch.setenv("FASTMLP_BACKEND", "no-such-backend")
    assert get_backend().name == "numpy"  # cached


def test_one_unavailable_name_raises_with_reason_and_hint(with_broken):
    with_broken.setenv("FASTMLP_BACKEND", "broken")
    with pytest.raises(BackendUnavailableError) as info:
        get_backend()
    err = info.value
    assert isinstance(err, ImportError)
    assert "fastmlp_no_such_module" in err.reason and err.hint == BROKEN[1]
    assert "pip install fastmlp[broken]" in str(err)
    assert isinstance(err.__cause__, ImportError)


def test_list_takes_first_available_and_warns_naming_each_skipped(with_broken):
    with_broken.setenv("FASTMLP_BACKEND", "broken,numpy")
    with pytest.warns(RuntimeWarning, match=r"skipped broken \(.*fastmlp_no_such_module"):
        assert get_backend().name == "numpy"


def test_list_without_skips_does_not_warn(fresh_dispatch):
    fresh_dispatch.setenv("FASTMLP_BACKEND", "numpy,broken")
    fresh_dispatch.setitem(_REGISTRY, "broken", BROKEN)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_backend().name == "numpy"


def test_list_with_nothing_available_raises(with_broken):
    with_broken.setenv("FASTMLP_BACKEND", "broken, broken")
    with pytest.raises(BackendUnavailableError, match="none of the listed"):
        get_backend()


@pytest.mark.parametrize("value", ["torch", "numpy,torch", "NUMPY", "numpy;numba"])
def test_anything_else_is_a_value_error_listing_known_names(fresh_dispatch, value):
    fresh_dispatch.setenv("FASTMLP_BACKEND", value)
    with pytest.raises(ValueError, match="known backends: numpy"):
        get_backend()


def test_unknown_names_in_code_are_value_errors(fresh_dispatch):
    for call in (get_backend, set_backend):
        with pytest.raises(ValueError, match="unknown fastmlp backend 'nope'"):
            call("nope")
    with pytest.raises(ValueError):
        with use_backend("nope"):
            pass


def test_set_backend_sets_the_process_default(with_broken):
    assert set_backend("numpy").name == "numpy"
    assert get_backend().name == "numpy"
    with pytest.raises(BackendUnavailableError):
        set_backend("broken")
    assert get_backend().name == "numpy"


def test_use_backend_nests_and_restores(with_broken, monkeypatch):
    # a second, distinct backend object: the reference class under another name
    monkeypatch.setitem(_REGISTRY, "ref2", ("fastmlp.backends.numpy_backend:NumpyBackend", ""))
    outer = get_backend()
    with use_backend("ref2") as b1:
        assert get_backend() is b1 is get_backend("ref2")
        with use_backend("numpy") as b2:
            assert get_backend() is b2 is not b1
        assert get_backend() is b1
    assert get_backend() is outer
    with pytest.raises(BackendUnavailableError):
        with use_backend("broken"):
            pass
    assert get_backend() is outer


def test_use_backend_is_per_thread(fresh_dispatch, monkeypatch):
    monkeypatch.setitem(_REGISTRY, "ref2", ("fastmlp.backends.numpy_backend:NumpyBackend", ""))
    default = get_backend()
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def worker():
        with use_backend("ref2"):
            seen["worker"] = get_backend()
            inside.set()
            release.wait(5)

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(5)
    seen["main"] = get_backend()
    release.set()
    t.join()
    assert seen["worker"] is get_backend("ref2")
    assert seen["main"] is default


def test_use_backend_is_per_async_task(fresh_dispatch, monkeypatch):
    monkeypatch.setitem(_REGISTRY, "ref2", ("fastmlp.backends.numpy_backend:NumpyBackend", ""))
    default = get_backend()

    async def task(name, started, proceed):
        with use_backend(name):
            started.set()
            await proceed.wait()
            return get_backend()

    async def main():
        s1, s2, go = asyncio.Event(), asyncio.Event(), asyncio.Event()
        t1 = asyncio.create_task(task("ref2", s1, go))
        t2 = asyncio.create_task(task("numpy", s2, go))
        await s1.wait()
        await s2.wait()
        outside = get_backend()
        go.set()
        return await t1, await t2, outside

    b1, b2, outside = asyncio.run(main())
    assert b1 is get_backend("ref2") and b2 is get_backend("numpy") and outside is default


def test_backend_report(with_broken):
    rows = report()
    assert set(rows) == set(_REGISTRY)
    ref = rows["numpy"]
    assert ref.available and ref.device == "cpu" and set(ref.dtypes) == {"float32", "float64"}
    assert set(ref.native_ops) == set(Backend.op_names()) and ref.reference_ops == ()
    broken = rows["broken"]
    assert not broken.available and "fastmlp_no_such_module" in broken.reason and "pip install" in broken.reason


def test_report_derives_native_ops_from_the_class(fresh_dispatch, monkeypatch):
    monkeypatch.setitem(_REGISTRY, "partial", ("partial_backend_for_tests:PartialBackend", ""))
    module = type(sys)("partial_backend_for_tests")
    from fastmlp.backends.numpy_backend import NumpyBackend

    class PartialBackend(NumpyBackend):
        name = "partial"
        is_reference = False

        def relu_forward(self, Z):
            return super().relu_forward(Z)

    module.PartialBackend = PartialBackend
    monkeypatch.setitem(sys.modules, "partial_backend_for_tests", module)
    row = report()["partial"]
    assert row.native_ops == ("relu_forward",)
    assert "relu_backward" in row.reference_ops and len(row.reference_ops) == len(Backend.op_names()) - 1


def test_ops_module_dispatches_to_the_current_backend(fresh_dispatch, monkeypatch):
    from fastmlp import ops

    calls = []
    monkeypatch.setattr(type(get_backend("numpy")), "relu_forward",
                        lambda self, Z: calls.append(self.name) or np.maximum(Z, 0))
    with use_backend("numpy"):
        np.testing.assert_array_equal(ops.relu_forward(np.array([-1.0, 2.0])), [0.0, 2.0])
    assert calls == ["numpy"]
    assert set(ops.OPS) == set(Backend.op_names()) and ops.adam_step.__doc__ == Backend.adam_step.__doc__


def test_import_is_light():
    code = (
        "import sys, fastmlp\n"
        "m = fastmlp.MLP(4, [3], 2)\n"
        "heavy = [n for n in ('numba', 'cupy', 'scipy', 'fastmlp._C', 'matplotlib', 'PIL', 'torch') if n in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import fastmlp pulled in: {out.stdout.strip()}"


@pytest.mark.parametrize("name", [p.values[0] for p in backend_params(include_reference=True)])
def test_every_backend_keeps_the_base_signatures(name):
    """Contract: each op of each registered backend has the reference's parameters and
    defaults (thinc's test_ops_consistency). Checked on the class, without instantiating."""
    import importlib

    if name is None:
        pytest.skip("no backend")
    module, _, cls_name = _REGISTRY[name][0].partition(":")
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except ImportError as exc:
        pytest.skip(f"{name} cannot be imported here: {exc}")
    assert issubclass(cls, Backend)
    for op in Backend.op_names():
        base_sig = inspect.signature(getattr(Backend, op))
        sig = inspect.signature(getattr(cls, op))
        assert list(sig.parameters) == list(base_sig.parameters), f"{name}.{op} parameters differ"
        for p_name, p in base_sig.parameters.items():
            assert sig.parameters[p_name].default == p.default, f"{name}.{op}({p_name}) default differs"
            assert sig.parameters[p_name].kind == p.kind, f"{name}.{op}({p_name}) kind differs"
