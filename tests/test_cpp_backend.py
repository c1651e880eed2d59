"""The cpp backend beyond the generic suite (tests/test_backends_vs_reference.py, which checks
every op against the reference): its bindings' validation (explicit cases and hypothesis
fuzzing: exceptions only, never a crash), the one-call training step on every loss,
activation and optimizer configuration it runs natively, fallbacks, threads, flush-to-zero.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import TOL, assert_matches, assert_runs_match

import fastmlp
from fastmlp.backends import backends, get_backend
from fastmlp.backends.numpy_backend import NumpyBackend

_INFO = backends()["cpp"]
pytestmark = pytest.mark.skipif(not _INFO.available, reason=f"cpp unavailable: {_INFO.reason}")

REF = get_backend("numpy")
F32, F64 = np.float32, np.float64


@pytest.fixture(scope="module")
def cpp():
    return get_backend("cpp")


@pytest.fixture(scope="module")
def C(cpp):
    return cpp._C


# ---------------------------------------------------------------------------- install, report
def test_available_when_the_build_is_strict():
    """CI sets FASTMLP_STRICT_BUILD=1: the extension must then have been built and load."""
    if os.environ.get("FASTMLP_STRICT_BUILD", "") not in ("1", "true", "yes", "on"):
        pytest.skip("FASTMLP_STRICT_BUILD is not set")
    assert _INFO.available, _INFO.reason


def test_import_does_not_load_the_extension():
    code = textwrap.dedent("""
        import sys, fastmlp
        fastmlp.MLP(4, [3], 2).to("numpy").forward([[1.0, 2.0, 3.0, 4.0]])
        assert "fastmlp._C" not in sys.modules, "import fastmlp loaded the extension"
        fastmlp.get_backend("cpp")
        assert "fastmlp._C" in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_every_op_is_native(cpp):
    assert _INFO.reference_ops == (), f"ops still on the reference: {_INFO.reference_ops}"
    assert set(_INFO.native_ops) == set(type(cpp).op_names())
    assert "OpenBLAS" in _INFO.reason


# ---------------------------------------------------------------------------- validation
def _z(shape, dtype=F32):
    return np.zeros(shape, dtype)


def test_bindings_reject_bad_arguments(C):
    a, b = _z((3, 4)), _z((3, 4))
    with pytest.raises(TypeError, match="float32 or float64"):
        C.relu_forward(_z((3, 4), np.int64), b)
    with pytest.raises(TypeError, match="expected float32"):
        C.relu_forward(a, _z((3, 4), F64))
    with pytest.raises(ValueError, match="shape"):
        C.relu_forward(a, _z((4, 3)))
    with pytest.raises(ValueError, match="C-contiguous"):
        C.relu_forward(_z((3, 8))[:, ::2], b)
    ro = _z((3, 4))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        C.relu_forward(a, ro)
    with pytest.raises(ValueError, match="overlaps"):
        C.relu_forward(a, a)
    with pytest.raises(TypeError, match="NumPy array"):
        C.relu_forward([1.0, 2.0], b)
    with pytest.raises(TypeError):
        C.relu_forward(a)  # wrong arity: pybind11's TypeError


def test_dense_bindings_reject_bad_arguments(C):
    X, W, b, Y = _z((5, 3)), _z((4, 3)), _z(4), _z((5, 4))
    with pytest.raises(ValueError, match="W has shape"):
        C.dense_forward(X, _z((4, 2)), b, Y, 0)
    with pytest.raises(ValueError, match="b has shape"):
        C.dense_forward(X, W, _z(5), Y, 0)
    with pytest.raises(ValueError, match="Y has shape"):
        C.dense_forward(X, W, b, _z((5, 5)), 0)
    with pytest.raises(ValueError, match="activation code"):
        C.dense_forward(X, W, b, Y, 99)
    with pytest.raises(ValueError, match="at least 1"):
        C.dense_forward(_z((0, 3)), W, b, _z((0, 4)), 0)
    with pytest.raises(ValueError, match="fused"):
        C.dense_backward(Y, X, W, Y, 9, _z((4, 3)), None, None)
    dW = _z((4, 3))
    with pytest.raises(ValueError, match="overlaps"):
        C.dense_backward(Y, X, W, Y, 0, dW, dW.reshape(-1)[:4], None)


def test_optimizer_bindings_reject_bad_arguments(C):
    p, g, m, v = _z(10), _z(10), _z(10), _z(10)
    with pytest.raises(ValueError, match="elements"):
        C.adam_step(p, g, m, _z(9), None, 0.1, 1, 0.9, 0.999, 1e-8, 0.0, False, False, 0.0)
    with pytest.raises(TypeError, match="expected float32"):
        C.adam_step(p, g, m, _z(10, F64), None, 0.1, 1, 0.9, 0.999, 1e-8, 0.0, False, False, 0.0)
    with pytest.raises(TypeError, match="must be an array"):
        C.adam_step(p, g, m, v, None, 0.1, 1, 0.9, 0.999, 1e-8, 0.0, True, False, 0.0)  # amsgrad needs vmax
    with pytest.raises(ValueError, match="overlap"):
        C.adam_step(p, g, m, m, None, 0.1, 1, 0.9, 0.999, 1e-8, 0.0, False, False, 0.0)
    with pytest.raises(ValueError, match="step counts from 1"):
        C.sgd_step(p, g, None, 0.1, 0, 0.0, 0.0, False, 0.0)
    ro = _z(10)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        C.momentum_step(p, g, ro, 0.1, 1, 0.9, True, False, 0.0)


def test_loss_bindings_reject_bad_labels(C):
    Z = _z((4, 3))
    with pytest.raises(ValueError, match="outside"):
        C.cross_entropy_loss(Z, np.array([0, 1, 3, 0]), None, 0.0, 1.0, None, None)
    with pytest.raises(ValueError, match="outside"):
        C.nll_loss(Z, np.array([0, -1, 2, 0]), 1.0, None, None)
    with pytest.raises(TypeError, match="int64"):
        C.cross_entropy_loss(Z, np.array([0, 1, 2, 0], np.int32), None, 0.0, 1.0, None, None)
    with pytest.raises(ValueError, match="exactly one"):
        C.cross_entropy_loss(Z, None, None, 0.0, 1.0, None, None)


def _train_args(n_params=20, N=2):
    X = _z((N, 3))
    layers = np.array([[0, 3, 4, 0, 12, 1], [0, 4, 2, 16, -1, 0]], np.int64)
    return dict(X=X, labels=np.zeros(N, np.int64), target=None, layers=layers,
                layer_hyper=np.zeros((2, 2)), loss_kind=0, mean=True, loss_h=0.0,
                params=_z(n_params), grads=_z(n_params), opt_kind=0,
                opt_hyper=np.array([0.1, 0, 0, 0, 0, 0, 0, 0.0]), step=1, state0=None, state1=None,
                state2=None)


def test_train_step_binding_rejects_bad_plans(C):
    C.train_step(**_train_args(24))  # valid: 3*4 + 4 + 4*2 weights and biases
    with pytest.raises(ValueError, match="outside the arena"):
        C.train_step(**_train_args(20))
    bad = _train_args(24)
    bad["layers"] = np.array([[0, 5, 4, 0, 12, 1], [0, 4, 2, 16, -1, 0]], np.int64)
    with pytest.raises(ValueError, match="expects 5 inputs"):
        C.train_step(**bad)
    bad = _train_args(24)
    bad["labels"] = np.array([0, 2])
    with pytest.raises(ValueError, match="outside"):
        C.train_step(**bad)
    bad = _train_args(24)
    bad["opt_kind"] = 4
    with pytest.raises(ValueError, match="state buffer"):
        C.train_step(**bad)
    bad = _train_args(24)
    bad["grads"] = bad["params"]
    with pytest.raises(ValueError, match="overlap"):
        C.train_step(**bad)


# ---------------------------------------------------------------------------- fuzzing
hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")

# binding -> argument kinds: A array, O array or None, f float, i int, b bool
SIGNATURES = {
    "relu_forward": "AA", "gelu_forward": "AAb", "softplus_forward": "AAff", "leaky_relu_forward": "AAf",
    "relu_backward": "AAAA", "softplus_backward": "AAAAffb", "silu_backward": "AAAAfb",
    "prelu_forward": "AAA", "prelu_backward": "AAAAO", "softmax_forward": "AA", "log_softmax_backward": "AAA",
    "dense_forward": "AAOAi", "dense_backward": "AAAAiAOO",
    "mse_loss": "AAfOO", "huber_loss": "AAffOO", "cross_entropy_loss": "AOOffOO", "nll_loss": "AAfOO",
    "sgd_step": "AAOfiffbf", "adam_step": "AAAAOfifffbbf", "rmsprop_step": "AAAOOfiffffbbf",
    "adadelta_step": "AAAAfifff", "nadam_step": "AAAAfiffffffb",
}


@st.composite
def _array(draw, base_shape, base_dtype):
    dtype = draw(st.sampled_from([base_dtype] * 4 + [np.float32, np.float64, np.int64, np.bool_, np.int32]))
    shape = draw(st.sampled_from([base_shape] * 3 + [(), (0,), (1,), (3,), (2, 3), (3, 2), (1, 1), (2, 2, 2), (7,)]))
    arr = np.asarray(draw(st.integers(-3, 3)) * np.ones(shape)).astype(dtype)
    kind = draw(st.sampled_from(["plain"] * 6 + ["strided", "readonly", "list"]))
    if kind == "strided" and arr.ndim >= 1 and arr.size:
        arr = np.repeat(arr, 2, axis=-1)[..., ::2]
    elif kind == "readonly":
        arr.flags.writeable = False
    elif kind == "list":
        return arr.tolist()
    return arr


@st.composite
def _call(draw):
    name = draw(st.sampled_from(sorted(SIGNATURES)))
    base_shape = draw(st.sampled_from([(1,), (5,), (2, 3), (3, 3), (4, 1)]))
    base_dtype = draw(st.sampled_from([np.float32, np.float64]))
    args = []
    shared = []
    for kind in SIGNATURES[name]:
        if kind in "AO":
            if kind == "O" and draw(st.booleans()):
                args.append(None)
                continue
            if shared and draw(st.integers(0, 9)) == 0:
                args.append(draw(st.sampled_from(shared)))  # the same array twice: aliasing
                continue
            a = draw(_array(base_shape, base_dtype))
            shared.append(a)
            args.append(a)
        elif kind == "f":
            args.append(draw(st.sampled_from([0.0, 0.5, 1.0, -1.0, 1e-8, 0.9])))
        elif kind == "i":
            args.append(draw(st.integers(-2, 20)))
        else:
            args.append(draw(st.booleans()))
    return name, args


@hypothesis.settings(max_examples=400, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(_call())
def test_fuzz_bindings_raise_never_crash(C, call):
    """Random dtypes, shapes, sizes, strides, read-only and aliased arrays: each call either
    runs or raises TypeError/ValueError (a crash would take the test process down)."""
    name, args = call
    try:
        getattr(C, name)(*args)
    except (TypeError, ValueError):
        pass


@hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
@hypothesis.given(n=st.integers(1, 40), k=st.integers(1, 40), m=st.integers(1, 40),
                  act=st.integers(0, 3), dtype=st.sampled_from([np.float32, np.float64]),
                  bias=st.booleans(), need_dx=st.booleans())
def test_fuzz_dense_sizes_against_reference(C, cpp, n, k, m, act, dtype, bias, need_dx):
    """Valid calls of any size give the reference's answer."""
    rng = np.random.default_rng(n * 10_000 + k * 100 + m)
    name = ("identity", "relu", "sigmoid", "tanh")[act]
    X, W = rng.standard_normal((n, k)).astype(dtype), rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype) if bias else None
    dY = rng.standard_normal((n, m)).astype(dtype)
    Y = cpp.dense_forward(X, W, b, name)
    assert_matches(Y, REF.dense_forward(X, W, b, name), np.dtype(dtype).name, "forward")
    db = np.empty(m, dtype) if bias else None
    dX, dW, db = cpp.dense_backward(dY, X, W, Y, name, None, db, need_dx)
    rX, rW, rb = REF.dense_backward(dY, X, W, Y, name, None, np.empty(m, dtype) if bias else None, need_dx)
    for a, e in ((dX, rX), (dW, rW), (db, rb)):
        assert_matches(a, e, np.dtype(dtype).name, "backward")


# ---------------------------------------------------------------------------- training step
def _run(backend, layers_fn, loss, make_opt, X, target, dtype, steps=20):
    model = fastmlp.Sequential(*layers_fn(), dtype=dtype).to(backend)
    opt = make_opt(model.parameters())
    values = [model.train_step(X, target, loss, opt) for _ in range(steps)]
    return model, opt, values


@pytest.fixture
def no_reference_step(monkeypatch):
    """Make the reference composition fail, to prove the native step ran."""
    def boom(self, *args, **kwargs):
        raise AssertionError("the reference train_step ran instead of the native one")

    monkeypatch.setattr(NumpyBackend, "train_step", boom)


L = fastmlp
ACTIVATION_LAYERS = {
    "elu": lambda: L.ELU(0.7), "selu": L.SELU, "softsign": L.Softsign, "log_sigmoid": L.LogSigmoid,
    "mish": L.Mish, "gelu_tanh": lambda: L.GELU("tanh"), "sinc": lambda: L.Sinc(True), "step": L.Step,
    "softplus": lambda: L.Softplus(2.0, 5.0), "silu": lambda: L.SiLU(1.5), "leaky_relu": lambda: L.LeakyReLU(0.2),
    "relu_after_tanh": lambda: L.ReLU(),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", sorted(ACTIVATION_LAYERS))
def test_train_step_activations(act, dtype, no_reference_step):
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((29, 6)), rng.integers(0, 3, 29)

    def layers():
        extra = [L.Tanh()] if act == "relu_after_tanh" else []  # a fused activation standing alone
        return [L.Linear(6, 8, rng=2), *extra, ACTIVATION_LAYERS[act](), L.Linear(8, 3, bias=False, rng=3)]

    def make(params):
        return L.optim.Adam(params, lr=0.01)

    assert_runs_match(_run("cpp", layers, L.CrossEntropyLoss(), make, X, y, dtype),
                      *_reference_runs(layers, L.CrossEntropyLoss(), make, X, y, dtype))


def _reference_runs(layers_fn, loss, make_opt, X, target, dtype):
    """``ref, dtype, truth`` for helpers.assert_runs_match: the reference run in ``dtype`` and,
    for float32, in float64."""
    truth = _run_reference(layers_fn, loss, make_opt, X, target, "float64") if dtype == "float32" else None
    return _run_reference(layers_fn, loss, make_opt, X, target, dtype), dtype, truth


def _run_reference(layers_fn, loss, make_opt, X, target, dtype):
    # the reference composition, unaffected by the no_reference_step fixture
    model = fastmlp.Sequential(*layers_fn(), dtype=dtype).to("numpy")
    opt = make_opt(model.parameters())
    values = []
    for _ in range(20):
        Xb = np.ascontiguousarray(X, dtype=model.dtype)
        out = model.forward(Xb)
        value, grad = loss.value_and_grad(out, target, backend=REF)
        model.backward(grad, need_input_grad=False)
        opt.step()
        values.append(value)
    return model, opt, values


LOSSES = {
    "ce_probs_smoothing": (lambda: L.CrossEntropyLoss(label_smoothing=0.1), "probs"),
    "ce_sum": (lambda: L.CrossEntropyLoss(reduction="sum"), "labels"),
    "mse": (L.MSELoss, "float"),
    "mse_sum": (lambda: L.MSELoss(reduction="sum"), "float"),
    "l1": (L.L1Loss, "float"),
    "huber": (lambda: L.HuberLoss(delta=0.3), "float"),
    "bce_with_logits": (L.BCEWithLogitsLoss, "binary"),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_train_step_losses(name, dtype, no_reference_step):
    make_loss, kind = LOSSES[name]
    rng = np.random.default_rng(2)
    X = rng.standard_normal((31, 5))
    if kind == "probs":
        target = rng.dirichlet(np.ones(4), 31)
    elif kind == "labels":
        target = rng.integers(0, 4, 31)
    elif kind == "binary":
        target = rng.integers(0, 2, (31, 4)).astype(float)
    else:
        target = rng.standard_normal((31, 4))

    def layers():
        return [L.Linear(5, 7, rng=4), L.Sigmoid(), L.Linear(7, 4, rng=5)]

    def make(params):  # "sum" scales the gradient by the batch size
        return L.optim.SGD(params, lr=0.05 / (31 if name.endswith("sum") else 1), momentum=0.5)

    assert_runs_match(_run("cpp", layers, make_loss(), make, X, target, dtype),
                      *_reference_runs(layers, make_loss(), make, X, target, dtype))


OPTIMIZER_CONFIGS = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("Momentum", dict(lr=0.05, nesterov=True, weight_decay=0.01)),
    ("Momentum", dict(lr=0.05, bias_correction=False)),
    ("Adagrad", dict(lr=0.05, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.1)),
    ("Adagrad", dict(lr=0.05, eps=0.0, eps_root=1e-8)),
    # RMSprop's first steps divide by sqrt(0.01 g^2): the update is +-10 lr whatever |g|, so the
    # sign of a near-zero gradient (float rounding) decides it; a small lr keeps runs comparable
    ("RMSprop", dict(lr=1e-3, momentum=0.9, weight_decay=0.01)),
    ("RMSprop", dict(lr=1e-3, centered=True)),
    ("RMSprop", dict(lr=1e-3, bias_correction=True, eps=0.0, eps_root=1e-8)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, eps=0.0, eps_root=1e-8)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("Adamax", dict(lr=0.01, weight_decay=0.05)),
    ("NAdam", dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True)),
    ("NAdam", dict(lr=0.01, weight_decay=0.05)),
    ("Adadelta", dict(lr=1.0, rho=0.95, weight_decay=0.05)),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opt", OPTIMIZER_CONFIGS, ids=lambda o: f"{o[0]}{o[1]}")
def test_train_step_optimizers(opt, dtype, no_reference_step):
    name, kw = opt
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((33, 9)), rng.integers(0, 5, 33)

    def layers():
        return [L.Linear(9, 11, rng=6), L.ReLU(), L.Linear(11, 7, rng=7), L.Tanh(), L.Linear(7, 5, rng=8)]

    def make(params):
        return getattr(L.optim, name)(params, **kw)

    assert_runs_match(_run("cpp", layers, L.CrossEntropyLoss(), make, X, y, dtype),
                      *_reference_runs(layers, L.CrossEntropyLoss(), make, X, y, dtype))


def test_train_step_falls_back_for_what_it_does_not_cover(monkeypatch):
    calls = []
    original = NumpyBackend.train_step
    monkeypatch.setattr(NumpyBackend, "train_step",
                        lambda self, *a: calls.append(1) or original(self, *a))
    X, y = np.ones((4, 3)), np.array([0, 1, 0, 1])
    cases = [
        (L.Sequential(L.Linear(3, 4), L.PReLU(), L.Linear(4, 2)), L.CrossEntropyLoss()),  # trainable activation
        (L.Sequential(L.Linear(3, 2), L.LogSoftmax()), L.NLLLoss()),  # loss not fused
        (L.Sequential(L.Linear(3, 2), L.Softmax()), L.CrossEntropyLoss()),  # softmax is not elementwise
    ]
    for model, loss in cases:
        model.to("cpp")
        opt = L.optim.SGD(model.parameters(), lr=0.1)
        model.train_step(X, y, loss, opt)
    model = L.MLP(3, [4], 2).to("cpp")
    params = model.parameters()
    opt = L.optim.SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.01}], lr=0.1)  # two groups
    model.train_step(X, y, L.CrossEntropyLoss(), opt)
    assert len(calls) == 4


def test_train_step_non_finite_loss_changes_nothing():
    model = L.MLP(3, [4], 2, activation="relu").to("cpp")
    state = model.state_dict()
    state["0.weight"] = np.full((4, 3), 1e30)
    model.load_state_dict(state)
    opt = L.optim.Adam(model.parameters(), lr=0.1)
    before = model.state_dict()
    with pytest.raises(FloatingPointError):
        model.train_step(np.full((2, 3), 1e6), np.array([[1.0, 0.0], [0.0, 1.0]]), L.MSELoss(), opt)
    assert opt.param_groups[0]["step"] == 0
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


# ---------------------------------------------------------------------------- threads, FTZ
def test_threads_give_the_reference_results(cpp):
    n = 400_001  # > 2 x the 131072-element grain: the loops split over 2 threads
    rng = np.random.default_rng(4)
    Z, dY = rng.standard_normal(n).astype(F32), rng.standard_normal(n).astype(F32)
    p, g = rng.standard_normal(n).astype(F32), rng.standard_normal(n).astype(F32)
    before = cpp.get_num_threads()
    try:
        cpp.set_num_threads(2)
        assert cpp.get_num_threads() == 2
        assert_matches(cpp.gelu_forward(Z), REF.gelu_forward(Z), "float32")
        dZ, db = cpp.softplus_backward(dY, Z, REF.softplus_forward(Z, 1.5), 1.5)
        rZ, rb = REF.softplus_backward(dY, Z, REF.softplus_forward(Z, 1.5), 1.5)
        assert_matches(dZ, rZ, "float32", "backward")
        np.testing.assert_allclose(db, rb, rtol=1e-3)  # a sum of 400k terms: float32 reference order
        state = [np.zeros(n, F32) for _ in range(2)]
        ref_p, ref_state = p.copy(), [np.zeros(n, F32) for _ in range(2)]
        for step in range(1, 4):
            cpp.adam_step(p, g, *state, None, lr=0.01, step=step)
            REF.adam_step(ref_p, g, *ref_state, None, lr=0.01, step=step)
        assert_matches(p, ref_p, "float32", "step")
        cpp.set_num_threads(1)
        assert_matches(cpp.gelu_forward(Z), REF.gelu_forward(Z), "float32")
    finally:
        cpp.set_num_threads(before)
    with pytest.raises(ValueError):
        cpp.set_num_threads(0)


# Big enough that the pool splits them (one thread per 2^18 multiply-adds of a layer): the
# row, unit and column splits, the odd batch, a layer narrower than 8 units per thread
# (dW by input columns) and an activation layer between dense ones.
def POOL_LAYERS():  # a fresh list of the layers at each call
    return [L.Linear(301, 129, rng=2), L.ReLU(), L.Linear(129, 67, rng=3), L.Tanh(), L.Mish(),
            L.Linear(67, 5, rng=4)]


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pool_train_step_matches_the_reference(cpp, threads, dtype, no_reference_step):
    def make(params):
        return fastmlp.optim.Adam(params, lr=1e-3, eps=1e-3)  # eps: see TOL's note on train_step

    rng = np.random.default_rng(7)
    X, y = rng.standard_normal((67, 301)).astype(dtype), rng.integers(0, 5, 67)
    before = cpp.get_num_threads()
    try:
        cpp.set_num_threads(threads)
        run = _run("cpp", POOL_LAYERS, L.CrossEntropyLoss(), make, X, y, dtype)
    finally:
        cpp.set_num_threads(before)
    assert_runs_match(run, *_reference_runs(POOL_LAYERS, L.CrossEntropyLoss(), make, X, y, dtype))


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("n,k,m", [(1, 700, 400), (67, 301, 129), (513, 64, 6), (3, 2000, 300)])
def test_pool_dense_ops_match_the_reference(cpp, threads, n, k, m):
    rng = np.random.default_rng(8)
    X, b = rng.standard_normal((n, k)).astype(F32), rng.standard_normal(m).astype(F32)
    W = (rng.standard_normal((m, k)) / np.sqrt(k)).astype(F32)  # outputs O(1), as after init
    dY = rng.standard_normal((n, m)).astype(F32)
    before = cpp.get_num_threads()
    try:
        cpp.set_num_threads(threads)
        Y = cpp.dense_forward(X, W, b, "relu")
        dX, dW, db = cpp.dense_backward(dY, X, W, Y, "relu", None, np.empty(m, F32), True)
    finally:
        cpp.set_num_threads(before)
    # sums of up to 2,000 float32 products: the reference's BLAS (NumPy's OpenBLAS, sgemv for one
    # row) orders them differently, so the forward gets the GEMM tolerance of the backward
    assert_matches(Y, REF.dense_forward(X, W, b, "relu"), "float32", "backward")
    for a, e in zip((dX, dW, db), REF.dense_backward(dY, X, W, Y, "relu", None, np.empty(m, F32), True)):
        assert_matches(a, e, "float32", "backward")


def test_pool_concurrent_steps_from_python_threads(cpp):
    """Two Python threads stepping at once (the GIL is released): one job holds the pool, the
    other runs on its caller; both give the single-threaded results."""
    import threading

    rng = np.random.default_rng(9)
    X, y = rng.standard_normal((67, 301)).astype(F32), rng.integers(0, 5, 67)

    def steps(out, i):
        out[i] = _run("cpp", POOL_LAYERS, L.CrossEntropyLoss(), lambda p: fastmlp.optim.SGD(p, lr=0.1), X, y,
                      "float32", steps=30)[2]

    before = cpp.get_num_threads()
    try:
        cpp.set_num_threads(1)
        serial = {}
        steps(serial, 0)
        cpp.set_num_threads(2)
        out = {}
        workers = [threading.Thread(target=steps, args=(out, i)) for i in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        cpp.set_num_threads(before)
    for i in range(3):
        np.testing.assert_allclose(out[i], serial[0], *TOL["float32"]["step"])


def _three_steps():
    X = np.random.default_rng(10).standard_normal((67, 301)).astype(F32)
    return _run("cpp", POOL_LAYERS, L.CrossEntropyLoss(), lambda p: fastmlp.optim.SGD(p, lr=0.1), X,
                np.arange(67) % 5, "float32", steps=3)[2]


def _three_steps_in_child(conn):
    # a child that hangs prints where, and exits, rather than outliving the test
    import faulthandler

    faulthandler.dump_traceback_later(50, exit=True)
    conn.send(_three_steps())
    conn.close()


def _asan_loaded() -> bool:
    try:
        with open("/proc/self/maps") as maps:
            return "libasan" in maps.read()
    except OSError:
        return False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_pool_works_in_a_forked_child(cpp):
    """The parent's pool threads do not exist after fork(): the child builds its own."""
    import multiprocessing

    if _asan_loaded():
        # GCC 12's libasan can deadlock in pthread_create() in the child of a multithreaded
        # fork() (CPython skips its fork tests under ASan for this, gh-89363; LLVM fixed it with
        # pthread_atfork handlers, llvm-project#75290): the CI sanitizer step hung here once
        pytest.skip("fork() of a threaded process under this libasan can deadlock in libasan itself")
    before = cpp.get_num_threads()
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_three_steps_in_child, args=(send,), daemon=True)
    try:
        cpp.set_num_threads(2)
        in_parent = _three_steps()  # the parent's pool is up when it forks
        child.start()
        send.close()
        assert receive.poll(60), "the forked child gave no result within 60 s"
        in_child = receive.recv()
        child.join(60)
        assert child.exitcode == 0
    finally:
        cpp.set_num_threads(before)
        if child.is_alive():  # never leave a hung child for the interpreter's exit to wait on
            child.kill()
            child.join()
    np.testing.assert_allclose(in_child, in_parent, *TOL["float32"]["step"])


def test_native_all_finite_takes_floats_only(cpp):
    """(Its results against the reference: test_backends_vs_reference.test_all_finite.)"""
    with pytest.raises(TypeError):
        cpp._C.all_finite(np.zeros(3, np.int32))


def test_denormals_are_flushed_inside_and_restored_after(cpp):
    tiny = np.float32(1e-39)  # a float32 denormal
    assert 0 < tiny < np.finfo(F32).tiny
    p, g = np.ones(8, F32), np.zeros(8, F32)
    m, v = np.full(8, tiny), np.full(8, tiny)
    m, v = m.astype(F32), v.astype(F32)
    cpp.adam_step(p, g, m, v, None, lr=0.01, step=1)
    assert np.all(m == 0) and np.all(v == 0), "denormal state should be flushed to zero in the kernel"
    # the caller's floating-point mode is restored: NumPy still produces denormals
    assert np.float32(1e-38) * np.float32(0.1) > 0
    assert (np.array([1e-38], F32) * F32(0.1))[0] > 0


def test_vectorised_exp_accuracy(C):
    for dtype, ulps in ((F32, 2), (F64, 2)):
        z = np.linspace(-80, 80, 200_001).astype(dtype)
        y = np.empty_like(z)
        C.vexp(z, y)
        ref = np.exp(z.astype(np.float64))
        np.testing.assert_allclose(y, ref.astype(dtype), rtol=ulps * np.finfo(dtype).eps)


# ---------------------------------------------------------------------------- both builds
@pytest.mark.parametrize("isa", ["avx512", "avx2", "portable"])
def test_every_build_matches_the_reference(isa):
    """Each build this CPU runs, fastmlp._C_avx512 (AVX-512 at 512-bit vectors),
    fastmlp._C_avx2 (AVX2+FMA) and the portable fastmlp._C (SSE2, no FMA contraction), gives
    the reference's results; ``isa`` is a ceiling, and "auto" takes the widest."""
    from fastmlp._validate import as_batch
    from fastmlp.backends.cpp_backend import CppBackend

    be = CppBackend(isa=isa)
    module = {"avx512": "fastmlp._C_avx512", "avx2": "fastmlp._C_avx2", "portable": "fastmlp._C"}[isa]
    if isa != "portable" and not be._C.cpu_supports(isa):
        assert be._C.__name__ != module
        pytest.skip(f"this CPU does not run {module}")
    if importlib.util.find_spec(module) is None:  # not built (an old compiler; the sanitizer run)
        pytest.skip(f"{module} is not built")
    assert be._C.__name__ == module
    assert be._C.isa == {"avx512": "avx512", "avx2": "avx2+fma", "portable": "sse2"}[isa]
    if isa == "avx512" or (isa == "avx2" and not be._C.cpu_supports("avx512")):
        assert CppBackend(isa="auto")._C.__name__ == module  # "auto" takes the widest
    rng = np.random.default_rng(9)
    for dtype in ("float32", "float64"):
        Z = (rng.standard_normal((130, 1031)) * 3).astype(dtype)
        dY = rng.standard_normal((130, 1031)).astype(dtype)
        for name in ("gelu", "mish", "tanh", "sigmoid", "softplus", "elu", "silu", "log_sigmoid"):
            Y = getattr(be, f"{name}_forward")(Z)
            Y_ref = getattr(REF, f"{name}_forward")(Z)
            assert_matches(Y, Y_ref, dtype, "forward", None, f"{be._C.__name__} {name}")
            out = getattr(be, f"{name}_backward")(dY, Z, Y_ref)
            ref = getattr(REF, f"{name}_backward")(dY, Z, Y_ref)
            if isinstance(ref, tuple):
                out, ref = out[0], ref[0]
            assert_matches(out, ref, dtype, "backward", None, f"{be._C.__name__} {name} backward")
        X, y = rng.standard_normal((40, 12)), rng.integers(0, 3, 40)
        runs = []
        for backend in (be, REF):
            # pinned to numpy: the reference composition's forward/backward run there, and the
            # native step reads the host arena directly
            model = L.MLP(12, [16], 3, activation="tanh", dtype=dtype, rng=3).to("numpy")
            opt = L.optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
            Xb = as_batch(X, model.dtype, backend, 12)
            values = [backend.train_step(model, Xb, y, L.CrossEntropyLoss(), opt) for _ in range(10)]
            runs.append((model, values))
        np.testing.assert_allclose(runs[0][1], runs[1][1], *TOL[dtype]["step"])
        for (k, a), (_, e) in zip(runs[0][0].state_dict().items(), runs[1][0].state_dict().items()):
            assert_matches(a, e, dtype, "step", None, f"{be._C.__name__} {k}")


def test_the_isa_variable_caps_the_build(monkeypatch):
    """``FASTMLP_CPP_ISA`` picks the widest build to load; a bad value is a clear error."""
    from fastmlp import _config
    from fastmlp.backends.cpp_backend import CppBackend

    try:
        monkeypatch.setenv("FASTMLP_CPP_ISA", "portable")
        _config.reset()
        assert CppBackend()._C.__name__ == "fastmlp._C"
        monkeypatch.setenv("FASTMLP_CPP_ISA", "AVX2 ")  # case and spaces do not matter
        _config.reset()
        assert CppBackend()._C.__name__ in ("fastmlp._C_avx2", "fastmlp._C")  # _C: a CPU without AVX2
        monkeypatch.setenv("FASTMLP_CPP_ISA", "avx1024")
        _config.reset()
        with pytest.raises(ValueError, match="FASTMLP_CPP_ISA must be one of auto, avx512, avx2, portable"):
            CppBackend()
        with pytest.raises(ValueError, match="isa must be one of auto, avx512, avx2, portable; got 'sse9'"):
            CppBackend(isa="sse9")
    finally:
        monkeypatch.undo()
        _config.reset()
