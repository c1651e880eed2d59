"""The ``cupy`` backend's contract, without a GPU: availability and its reasons, arrays never
crossing devices, lazy compilation, explicit NumPy scalars at every launch, fallbacks to the
reference, the backend report, and a model moved to the backend and back."""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest
from cupy_emu_backend import emu_module, emulated_backend
from helpers import assert_matches

import fastmlp
from fastmlp.backends import _REGISTRY, BackendUnavailableError, _instances, backends, get_backend
from fastmlp.backends.cupy_backend import CupyBackend

REF = get_backend("numpy")


def _fake_cupy(get_count):
    runtime = types.SimpleNamespace(getDeviceCount=get_count)
    return types.SimpleNamespace(__version__="14.0.0", cuda=types.SimpleNamespace(runtime=runtime))


def test_unavailable_without_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    with pytest.raises(ImportError, match="CuPy is not installed"):
        CupyBackend()


def test_unavailable_without_driver_or_device(monkeypatch):
    def no_driver():
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(no_driver))
    with pytest.raises(RuntimeError, match="no CUDA device answers: cudaErrorInsufficientDriver"):
        CupyBackend()
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(lambda: 0))
    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        CupyBackend()


def test_registry_reports_the_reason_and_raises_when_required(fresh_dispatch):
    fresh_dispatch.setitem(sys.modules, "cupy", None)
    info = backends()["cupy"]
    assert not info.available and "CuPy is not installed" in info.reason
    assert "pip install 'fastmlp[cupy]'" in info.reason and "cupy-cuda12x" in info.reason  # the hint, once
    fresh_dispatch.setenv("FASTMLP_BACKEND", "cupy")
    with pytest.raises(BackendUnavailableError, match="CuPy is not installed"):
        fastmlp.get_backend()


def test_importing_the_backend_module_imports_no_cupy():
    code = "import sys, fastmlp.backends.cupy_backend; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class _HostArray:
    """Stands for cupy.ndarray: a NumPy array is not one."""


def test_numpy_array_reaching_the_gpu_backend_is_an_error():
    be = CupyBackend(xp=types.SimpleNamespace(ndarray=_HostArray),
                     module_factory=lambda *a: pytest.fail("no kernel may be built for a rejected call"))
    x = np.ones((2, 3), np.float32)
    for call in (lambda: be.relu_forward(x), lambda: be.dense_forward(x, x, None, "relu"),
                 lambda: be.adam_step(x, x, x, x, None, 0.1, 1), lambda: be.softmax_forward(x),
                 lambda: be.mse_loss(x, x)):
        with pytest.raises(TypeError, match="never cross devices"):
            call()


def test_kernels_compile_once_on_first_use():
    calls = []

    def factory(code, exprs):
        calls.append(len(exprs))
        return emu_module(code, exprs)

    be = CupyBackend(xp=np, module_factory=factory, name="counted", device="cpu")
    assert calls == []
    be.relu_forward(np.ones(3, np.float32))
    be.tanh_forward(np.ones(3))
    be.sgd_step(np.ones(3), np.ones(3), None, 0.1, 1)
    assert len(calls) == 1


class _Recording:
    """A module whose kernels check that every scalar argument is an explicit NumPy scalar."""

    def __init__(self, module):
        self.module, self.launched = module, set()

    def get_function(self, name):
        kernel = self.module.get_function(name)

        def launch(grid, block, args, **kw):
            for i, a in enumerate(args):
                assert a is None or isinstance(a, (np.ndarray, np.generic)), (
                    f"{name} argument {i} is a Python {type(a).__name__}: CuPy would pass it as a 64-bit value")
            self.launched.add(name.split("<")[0])
            return kernel(grid, block, args, **kw)

        return launch


def test_every_launch_passes_explicit_numpy_scalars():
    recorder = {}

    def factory(code, exprs):
        recorder["m"] = _Recording(emu_module(code, exprs))
        return recorder["m"]

    be = CupyBackend(xp=np, module_factory=factory, name="recorded", device="cpu")
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        X, W, b = (rng.standard_normal(s).astype(dtype) for s in ((5, 4), (3, 4), (3,)))
        Y = be.dense_forward(X, W, b, "tanh")
        be.dense_backward(np.ones_like(Y), X, W, Y, "tanh", np.empty_like(W), np.empty_like(b))
        for act in ("relu", "gelu", "sinc"):
            Z = be.__getattribute__(f"{act}_forward")(X)
            be.__getattribute__(f"{act}_backward")(X, X, Z)
        be.softplus_backward(X, X, X, 2.0, 20.0)
        alpha = np.full(4, 0.2, dtype)
        be.prelu_backward(X, X, be.prelu_forward(X, alpha), alpha)
        for op in ("softmax", "log_softmax"):
            be.__getattribute__(f"{op}_backward")(X, X, be.__getattribute__(f"{op}_forward")(X))
        be.cross_entropy_loss(X, np.array([0, 1, 2, 3, 0]), label_smoothing=0.1)
        be.nll_loss(X, np.array([0, 1, 2, 3, 0]))
        for loss in ("mse_loss", "l1_loss", "bce_with_logits_loss"):
            be.__getattribute__(loss)(X, np.zeros_like(X))
        be.huber_loss(X, X * 0, delta=0.5)
        be.bce_loss(np.full_like(X, 0.3), np.zeros_like(X))
        p, g = rng.standard_normal(9).astype(dtype), rng.standard_normal(9).astype(dtype)
        z = [np.zeros(9, dtype) for _ in range(3)]
        be.sgd_step(p, g, z[0], 0.1, 2, momentum=0.9)
        be.momentum_step(p, g, z[0], 0.1, 2)
        be.adagrad_step(p, g, z[0], 0.1, 2)
        be.rmsprop_step(p, g, z[0], z[1], z[2], 0.1, 2, centered=True, momentum=0.5)
        be.adam_step(p, g, z[0], z[1], z[2], 0.1, 2, amsgrad=True)
        be.adamax_step(p, g, z[0], z[1], 0.1, 2)
        be.nadam_step(p, g, z[0], z[1], 0.1, 2, mu_product=0.8)
        be.adadelta_step(p, g, z[0], z[1], 1.0, 2)
    from fastmlp.backends.cupy_backend import KERNELS

    assert recorder["m"].launched == set(KERNELS), "every kernel was launched by some op"


def test_uncovered_cases_run_the_reference_on_the_same_device():
    be = emulated_backend("fallbacks")
    Z16 = np.linspace(-2, 2, 10).astype(np.float16)
    np.testing.assert_array_equal(be.relu_forward(Z16), REF.relu_forward(Z16))
    Z = np.linspace(-2, 2, 12).reshape(3, 4)
    assert_matches(be.gelu_forward(Z, "none"), REF.gelu_forward(Z), "float64")
    with pytest.raises(ValueError, match="cannot be fused"):
        be.dense_forward(Z, np.ones((2, 4)), None, "gelu")
    p = np.ones(10)[::2]  # a non-contiguous parameter view: updated in place by the reference
    be.sgd_step(p, np.ones(5), None, 0.5, 1)
    np.testing.assert_array_equal(p, 0.5)


def test_bad_labels_raise_before_any_kernel():
    be = emulated_backend("labels")
    logits = np.zeros((3, 4))
    with pytest.raises(IndexError, match="labels must lie in"):
        be.cross_entropy_loss(logits, np.array([0, 4, 1]))
    with pytest.raises(IndexError, match="labels must lie in"):
        be.nll_loss(logits, np.array([-1, 0, 1]))


@pytest.fixture
def registered(monkeypatch):
    be = emulated_backend("cupy_emulated_model")
    monkeypatch.setitem(_REGISTRY, be.name, ("tests.cupy_emu_backend:emulated_backend", "tests only"))
    monkeypatch.setitem(_instances, be.name, be)
    return be


def test_report_lists_native_and_reference_ops(registered):
    info = backends()[registered.name]
    assert info.available and "emulated" in info.reason
    assert set(info.reference_ops) == {"identity_forward", "identity_backward", "train_step"}
    assert {"dense_forward", "dense_backward", "cross_entropy_loss", "adam_step"} <= set(info.native_ops)


def test_model_to_the_backend_and_back(registered):
    model = fastmlp.MLP(6, [5], 3, activation="tanh", rng=3)
    before = model.state_dict()
    model.to(registered.name)
    assert model._arena.backend_name == registered.name
    X = np.random.default_rng(1).standard_normal((4, 6))
    out = model.forward(X)
    model.to("numpy")
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    assert_matches(out, model.forward(X), "float32", "forward", what="same output on both backends")
