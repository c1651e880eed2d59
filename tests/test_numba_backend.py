"""The numba backend beyond the generic every-op suite: the one-call training step (that it
is used, what it covers, what falls back), its failure modes, flush-to-zero of optimizer
state, the fallback cases of the per-op wrappers, input checks, and the JIT cache.

Every comparison is against the NumPy reference (``helpers.TOL``), never against numba itself.
"""

from __future__ import annotations

import importlib
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

pytestmark = pytest.mark.skipif(not backends()["numba"].available,
                                reason=f"numba unavailable: {backends()['numba'].reason}")

REF = get_backend("numpy")
NB = get_backend("numba") if backends()["numba"].available else None
K = importlib.import_module("fastmlp.backends._numba_kernels") if NB is not None else None
DTYPES = ("float32", "float64")
JIT = os.environ.get("NUMBA_DISABLE_JIT", "0") in ("", "0")


# ---------------------------------------------------------------------------- report
def test_report_lists_every_op_native_but_identity():
    info = backends()["numba"]
    assert info.available and info.device == "cpu" and set(info.dtypes) == {"float32", "float64"}
    assert set(info.reference_ops) == {"identity_forward", "identity_backward"}
    assert "train_step" in info.native_ops and "adam_step" in info.native_ops
    # one op name everywhere: every native op (but the dispatching train_step) has a kernel of that name
    for op in info.native_ops:
        assert callable(getattr(K, op, None)), f"no kernel named {op}"


# ---------------------------------------------------------------------------- the fused step
def _run(backend, layers_fn, loss, opt_name, opt_kw, dtype, steps=20, X=None, y=None):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((37, 13)) if X is None else X
    y = rng.integers(0, 4, 37) if y is None else y
    model = fastmlp.Sequential(*layers_fn(), dtype=dtype).to(backend)
    opt = getattr(fastmlp.optim, opt_name)(model.parameters(), **opt_kw)
    values = [model.train_step(X, y, loss, opt) for _ in range(steps)]
    return model, opt, values


def _truth(dtype, *args, **kw):
    """For float32, the reference's run of the same steps in float64 (helpers.assert_step_matches)."""
    return _run("numpy", *args, "float64", **kw) if dtype == "float32" else None


@pytest.fixture
def fused_only(monkeypatch):
    """Make the reference composition unusable: a test passing under it ran the one-call kernel."""
    calls = []
    original = K.train_step

    def spy(*args):
        calls.append(1)
        return original(*args)

    reference = type(REF).train_step

    def forbidden(self, *args, **kwargs):
        if self is NB:
            raise AssertionError("the numba train_step fell back to the reference composition")
        return reference(self, *args, **kwargs)

    monkeypatch.setattr(K, "train_step", spy)
    monkeypatch.setattr(type(REF), "train_step", forbidden)
    return calls


def _mlp(activation, **kw):
    def layers():
        hidden = fastmlp.get_activation(activation, **kw)
        hidden2 = fastmlp.get_activation(activation, **kw)
        return [fastmlp.Linear(13, 17, rng=1), hidden, fastmlp.Linear(17, 9, rng=2), hidden2,
                fastmlp.Linear(9, 4, rng=3)]
    return layers


FUSED_ACTIVATIONS = [("identity", {}), ("relu", {}), ("sigmoid", {}), ("tanh", {}),
                     ("leaky_relu", {"negative_slope": 0.2}), ("elu", {"alpha": 0.7}), ("selu", {}),
                     ("gelu", {}), ("gelu", {"approximate": "tanh"}), ("silu", {"beta": 1.3}),
                     ("softplus", {"beta": 2.0, "threshold": 1.0}), ("mish", {}), ("softsign", {}),
                     ("log_sigmoid", {})]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", FUSED_ACTIVATIONS, ids=lambda a: f"{a[0]}{a[1]}")
def test_fused_step_every_activation(fused_only, act, dtype):
    name, kw = act
    loss = fastmlp.CrossEntropyLoss()
    ref = _run("numpy", _mlp(name, **kw), loss, "Adam", dict(lr=0.01), dtype)
    got = _run("numba", _mlp(name, **kw), loss, "Adam", dict(lr=0.01), dtype)
    assert len(fused_only) == 20
    assert_runs_match(got, ref, dtype, truth=_truth(dtype, _mlp(name, **kw), loss, "Adam", dict(lr=0.01)))


LOSSES = [("CrossEntropyLoss", dict(reduction="sum")), ("CrossEntropyLoss", dict(label_smoothing=0.1)),
          ("MSELoss", {}), ("MSELoss", dict(reduction="sum"))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES, ids=lambda lo: f"{lo[0]}{lo[1]}")
def test_fused_step_losses(fused_only, loss, dtype):
    name, kw = loss
    rng = np.random.default_rng(9)
    X = rng.standard_normal((37, 13))
    y = rng.standard_normal((37, 4)) if name == "MSELoss" else rng.integers(0, 4, 37)
    # "sum" scales the gradient by the batch size: a smaller lr keeps training stable (an
    # unstable run amplifies float32 rounding beyond any tolerance)
    opt = dict(lr=0.05 if kw.get("reduction") != "sum" else 0.002, momentum=0.9)
    ref = _run("numpy", _mlp("tanh"), getattr(fastmlp, name)(**kw), "SGD", opt, dtype, X=X, y=y)
    got = _run("numba", _mlp("tanh"), getattr(fastmlp, name)(**kw), "SGD", opt, dtype, X=X, y=y)
    assert_runs_match(got, ref, dtype, truth=_truth(dtype, _mlp("tanh"), getattr(fastmlp, name)(**kw), "SGD", opt, X=X, y=y))


OPTIMIZERS = [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.5, dampening=0.3)),
    ("Momentum", dict(lr=0.1, nesterov=True, weight_decay=0.01)),
    ("Momentum", dict(lr=0.1, bias_correction=False)),
    ("Adagrad", dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1, eps=0.0, eps_root=1e-8)),
    ("RMSprop", dict(lr=0.002, momentum=0.5, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.01, bias_correction=True, eps=0.0, eps_root=1e-8)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, eps=0.0, eps_root=1e-8)),
    ("AdamW", dict(lr=0.01, amsgrad=True)),
    ("Adamax", dict(lr=0.01, weight_decay=0.05)),
    ("NAdam", dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True)),
    ("Adadelta", dict(lr=1.0, rho=0.95, weight_decay=0.01)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: f"{o[0]}{o[1]}")
def test_fused_step_optimizers(fused_only, opt, dtype):
    name, kw = opt
    loss = fastmlp.CrossEntropyLoss()
    # RMSprop's g / sqrt(v) turns the last-bit differences of tiny gradient entries (another
    # BLAS, another summation order) into O(1e-5) absolute differences of its momentum buffer
    # after ~20 float32 steps: the float64 run (truth) then judges both float32 runs
    ref = _run("numpy", _mlp("relu"), loss, name, kw, dtype)
    got = _run("numba", _mlp("relu"), loss, name, kw, dtype)
    assert_runs_match(got, ref, dtype, truth=_truth(dtype, _mlp("relu"), loss, name, kw))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_step_without_bias_and_one_layer(fused_only, dtype):
    def no_bias():
        return [fastmlp.Linear(13, 6, bias=False, rng=1), fastmlp.ReLU(), fastmlp.Linear(6, 4, bias=False, rng=2)]

    def one_layer():
        return [fastmlp.Linear(13, 4, rng=1), fastmlp.Sigmoid()]

    for layers in (no_bias, one_layer):
        loss = fastmlp.CrossEntropyLoss()
        assert_runs_match(_run("numba", layers, loss, "Adam", {}, dtype), _run("numpy", layers, loss, "Adam", {}, dtype),
                          dtype, truth=_truth(dtype, layers, loss, "Adam", {}))


def test_fused_step_follows_learning_rate_changes(fused_only):
    """lr is read at every step (schedulers): the kernel's coefficients are rebuilt each call."""
    out = []
    for backend in ("numpy", "numba"):
        model = fastmlp.Sequential(*_mlp("relu")()).to(backend)
        opt = fastmlp.optim.Adam(model.parameters(), lr=0.1)
        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((8, 13)), rng.integers(0, 4, 8)
        for step in range(6):
            opt.param_groups[0]["lr"] = 0.1 / (step + 1)
            model.train_step(X, y, fastmlp.CrossEntropyLoss(), opt)
        out.append(model.state_dict())
    for k in out[0]:
        assert_matches(out[1][k], out[0][k], "float32", "step", None, k)


@pytest.mark.parametrize("activation, attribute, value", [(lambda: fastmlp.LeakyReLU(0.1), "negative_slope", 0.5),
                                                        (lambda: fastmlp.GELU(), "approximate", "tanh")],
                         ids=["leaky_relu", "gelu"])
def test_fused_step_reads_activation_hyper_parameters_at_every_step(fused_only, activation, attribute, value):
    out = []
    for backend in ("numpy", "numba"):
        model = fastmlp.Sequential(fastmlp.Linear(13, 17, rng=1), activation(),
                                   fastmlp.Linear(17, 4, rng=2), dtype="float64").to(backend)
        opt = fastmlp.optim.SGD(model.parameters(), lr=0.5)
        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((8, 13)) * 3, rng.integers(0, 4, 8)
        model.train_step(X, y, fastmlp.CrossEntropyLoss(), opt)
        setattr(model.layers[1], attribute, value)
        model.train_step(X, y, fastmlp.CrossEntropyLoss(), opt)
        out.append(model.state_dict())
    assert len(fused_only) == 2
    for k in out[0]:
        assert_matches(out[1][k], out[0][k], "float64", "step", None, k)


FALLBACKS = {
    "prelu": (lambda: [fastmlp.Linear(13, 6, rng=1), fastmlp.PReLU(), fastmlp.Linear(6, 4, rng=2)],
              "CrossEntropyLoss", {}),
    "trainable_silu": (lambda: [fastmlp.Linear(13, 6, rng=1), fastmlp.SiLU(trainable=True),
                                fastmlp.Linear(6, 4, rng=2)], "CrossEntropyLoss", {}),
    "two_activations": (lambda: [fastmlp.Linear(13, 6, rng=1), fastmlp.ReLU(), fastmlp.Tanh(),
                                 fastmlp.Linear(6, 4, rng=2)], "CrossEntropyLoss", {}),
    "softmax_nll": (lambda: [fastmlp.Linear(13, 4, rng=1), fastmlp.LogSoftmax()], "NLLLoss", {}),
    "bce": (lambda: [fastmlp.Linear(13, 4, rng=1)], "BCEWithLogitsLoss", {}),
    "reduction_none_is_refused_by_both": None,
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [k for k, v in FALLBACKS.items() if v is not None])
def test_uncovered_models_fall_back_to_the_reference_composition(monkeypatch, case, dtype):
    layers, loss_name, kw = FALLBACKS[case]
    calls = []
    original = K.train_step
    monkeypatch.setattr(K, "train_step", lambda *a: calls.append(1) or original(*a))
    rng = np.random.default_rng(2)
    X = rng.standard_normal((37, 13))
    y = rng.integers(0, 2, (37, 4)).astype(float) if loss_name == "BCEWithLogitsLoss" else rng.integers(0, 4, 37)
    loss = getattr(fastmlp, loss_name)(**kw)
    ref = _run("numpy", layers, loss, "Adam", dict(lr=0.01), dtype, X=X, y=y)
    got = _run("numba", layers, loss, "Adam", dict(lr=0.01), dtype, X=X, y=y)
    assert calls == []
    assert_runs_match(got, ref, dtype, truth=_truth(dtype, layers, loss, "Adam", dict(lr=0.01), X=X, y=y))


def test_two_param_groups_fall_back(monkeypatch):
    calls = []
    original = K.train_step
    monkeypatch.setattr(K, "train_step", lambda *a: calls.append(1) or original(*a))
    out = []
    for backend in ("numpy", "numba"):
        model = fastmlp.Sequential(*_mlp("relu")()).to(backend)
        p = model.parameters()
        opt = fastmlp.optim.SGD([{"params": p[:2], "lr": 0.1}, {"params": p[2:], "lr": 0.01}], momentum=0.9)
        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((8, 13)), rng.integers(0, 4, 8)
        for _ in range(5):
            model.train_step(X, y, fastmlp.CrossEntropyLoss(), opt)
        out.append(model.state_dict())
    assert calls == []
    for k in out[0]:
        assert_matches(out[1][k], out[0][k], "float32", "step", None, k)


def test_fused_step_with_probability_targets_falls_back():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 13))
    y = rng.dirichlet(np.ones(4), 8)
    loss = fastmlp.CrossEntropyLoss()
    ref = _run("numpy", _mlp("relu"), loss, "Adam", {}, "float64", X=X, y=y, steps=5)
    got = _run("numba", _mlp("relu"), loss, "Adam", {}, "float64", X=X, y=y, steps=5)
    assert_runs_match(got, ref, "float64")


def test_fused_step_non_finite_loss_raises_and_updates_nothing():
    for backend in ("numpy", "numba"):
        model = fastmlp.Sequential(*_mlp("identity")(), dtype="float64").to(backend)
        model.layers[-1].weight.data[...] = 1e308  # the logits overflow to +-inf: the loss is nan
        opt = fastmlp.optim.NAdam(model.parameters())
        before = {k: v.copy() for k, v in model.state_dict().items()}
        X, y = np.full((4, 13), 100.0), np.array([0, 1, 2, 3])
        with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="CrossEntropyLoss"):
            model.train_step(X, y, fastmlp.CrossEntropyLoss(), opt)
        assert opt.param_groups[0]["step"] == 0 and opt.param_groups[0]["mu_product"] == 1.0, backend
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(v, before[k], err_msg=f"{backend}: {k} changed")


def test_fused_step_rejects_bad_labels_before_any_kernel(monkeypatch):
    monkeypatch.setattr(K, "train_step", lambda *a: pytest.fail("kernel reached"))
    model = fastmlp.Sequential(*_mlp("relu")()).to("numba")
    opt = fastmlp.optim.Adam(model.parameters())
    X = np.ones((3, 13))
    for labels in ([0, 4, 1], [0, 1, -1]):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
            model.train_step(X, np.array(labels), fastmlp.CrossEntropyLoss(), opt)
    with pytest.raises(ValueError, match="shape"):
        model.train_step(X, np.ones((3, 5)), fastmlp.MSELoss(), opt)
    assert opt.param_groups[0]["step"] == 0


def test_fused_step_input_copied_when_read_only():
    model = fastmlp.Sequential(*_mlp("relu")()).to("numba")
    ref = fastmlp.Sequential(*_mlp("relu")()).to("numpy")
    X = np.random.default_rng(0).standard_normal((5, 13)).astype(np.float32)
    X.setflags(write=False)
    y = np.array([0, 1, 2, 3, 0])
    for m in (model, ref):
        m.train_step(X, y, fastmlp.CrossEntropyLoss(), fastmlp.optim.SGD(m.parameters(), lr=0.1))
    for k in model.state_dict():
        assert_matches(model.state_dict()[k], ref.state_dict()[k], "float32", "step", None, k)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fused_step_non_finite_input_raises_before_anything_changes(bad):
    model = fastmlp.Sequential(*_mlp("relu")()).to("numba")
    opt = fastmlp.optim.Adam(model.parameters())
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 13)), rng.integers(0, 4, 6)
    model.train_step(X, y, fastmlp.CrossEntropyLoss(), opt)  # the plan and the pair are cached
    before = {k: v.copy() for k, v in model.state_dict().items()}
    state = {k: v.copy() for k, v in opt.flat_state().items()}
    X[3, 5] = bad
    with pytest.raises(FloatingPointError, match="X contains NaN or Inf"):
        model.train_step(X, y, fastmlp.CrossEntropyLoss(), opt)
    assert opt.param_groups[0]["step"] == 1
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    for k, v in opt.flat_state().items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)


def test_fused_step_rechecks_a_new_loss_optimizer_or_label_type(monkeypatch):
    """The checks the fused step caches per (model, loss, optimizer) follow every change: a
    new loss, a new optimizer, a param group edited in place, labels of another dtype."""
    calls = []
    original = K.train_step
    monkeypatch.setattr(K, "train_step", lambda *a: calls.append(1) or original(*a))
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((9, 13)), rng.integers(0, 4, 9)
    targets = [y, y.astype(np.int32), y.astype(np.float64), rng.standard_normal((9, 4)), y]
    out = []
    for backend in ("numpy", "numba"):
        model = fastmlp.Sequential(*_mlp("tanh")(), dtype="float64").to(backend)
        adam = fastmlp.optim.Adam(model.parameters(), lr=0.01)
        losses = [fastmlp.CrossEntropyLoss(), fastmlp.CrossEntropyLoss(reduction="sum"),
                  fastmlp.CrossEntropyLoss(label_smoothing=0.2), fastmlp.MSELoss(), fastmlp.CrossEntropyLoss()]
        values = [model.train_step(X, t, lo, adam) for t, lo in zip(targets, losses)]
        sgd = fastmlp.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        values += [model.train_step(X, y, losses[0], sgd) for _ in range(2)]
        sgd.param_groups[0]["params"].pop()  # the group no longer covers the model: reference composition
        values.append(model.train_step(X, y, losses[0], sgd))
        out.append((model, values))
    assert len(calls) == 7
    np.testing.assert_allclose(out[1][1], out[0][1], *TOL["float64"]["step"])
    for k, v in out[1][0].state_dict().items():
        assert_matches(v, out[0][0].state_dict()[k], "float64", "step", None, k)


# ---------------------------------------------------------------------------- flush to zero
FTZ_CASES = {
    "sgd_step": (1, dict(momentum=0.5)),
    "momentum_step": (1, dict(beta=0.5)),
    "rmsprop_step": (3, dict(alpha=0.5, centered=True, momentum=0.5)),
    "adam_step": (3, dict(beta1=0.5, beta2=0.5, amsgrad=False)),
    "adamax_step": (2, dict(beta1=0.5)),
    "nadam_step": (2, dict(beta1=0.5, beta2=0.5)),
    "adadelta_step": (2, dict(rho=0.5)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", sorted(FTZ_CASES))
def test_dead_units_leave_no_denormals_in_the_state(op, dtype):
    """After one real gradient, 1,200 zero gradients decay the state past the smallest normal
    number (with rate 0.5: 2^-1200 < 1e-308): the kernels flush it to zero, so later steps never
    run on denormals; the parameters still equal the reference's."""
    n_state, hyper = FTZ_CASES[op]
    n = 33
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(n).astype(dtype)
    g1 = rng.standard_normal(n).astype(dtype)
    runs = {}
    for be in (REF, NB):
        p = p0.copy()
        state = [np.zeros(n, dtype) for _ in range(n_state)]
        if op == "adam_step":
            state[2] = None
        mu_product = 1.0
        for step in range(1, 1201):
            g = g1 if step == 1 else np.zeros(n, dtype)
            extra = {}
            if op == "nadam_step":
                mu_product *= REF.nadam_mu(step, hyper["beta1"], 4e-3)
                extra["mu_product"] = mu_product
            with np.errstate(all="ignore"):
                getattr(be, op)(p, g, *state, lr=0.01, step=step, **extra, **hyper)
        runs[be.name] = (p, state)
    tiny = np.finfo(dtype).tiny
    for s in runs["numba"][1]:
        if s is not None:
            assert not np.any((s != 0) & (np.abs(s) < tiny)), f"{op}: denormals left in the state"
    assert_matches(runs["numba"][0], runs["numpy"][0], dtype, "step", None, f"{op} params")
    for a, e in zip(runs["numba"][1], runs["numpy"][1]):
        if e is not None:
            assert_matches(a, e, dtype, "step", None, f"{op} state")


# ---------------------------------------------------------------------------- float32 and float64 approximations
def _edge_values(dtype):
    """Zero and -0, denormals, tiny and huge magnitudes, +-inf, NaN, and each value next to the
    switch points of the kernels' piecewise formulas with its two neighbours: tanh's series
    (0.3), expm1's (0.35), log1p's branch (e^-|z| = sqrt 2 - 1 at |z| = 0.8814), the softplus
    thresholds of the cases below (20, 10, 2: threshold / beta), mish's linear part (20), the
    range of the float32 exp (87.3, 88.03; 13.2 and 6.6 inside erf and the GELU pdf), where 1 + erf
    rounds to 0 (5.5), float64's exp range (708, 745)."""
    fi = np.finfo(dtype)
    points = [fi.smallest_subnormal, fi.tiny, 1e-30, 1e-8, 1e-4, 0.3, 0.35, 0.8813736, 1.0, 2.0, 5.5,
              6.6, 10.0, 13.2, 20.0, 40.0, 87.33654, 88.02969, 100.0, 708.4, 745.2, 1e4, 1e30]
    v = np.array(points, dtype)
    v = np.concatenate([v, np.nextafter(v, np.inf), np.nextafter(v, 0)])
    v = v[v <= fi.max]
    return np.concatenate([[0.0, -0.0, np.nan, np.inf, -np.inf, fi.max, -fi.max], v, -v]).astype(dtype)


EDGE_CASES = [("sigmoid", ()), ("tanh", ()), ("elu", ()), ("elu", (0.5,)), ("selu", ()), ("softsign", ()),
              ("mish", ()), ("gelu", ()), ("gelu", ("tanh",)), ("silu", ()), ("silu", (1.7,)),
              ("softplus", ()), ("softplus", (2.0, 20.0)), ("softplus", (0.5, 1.0)), ("log_sigmoid", ())]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", EDGE_CASES, ids=lambda c: f"{c[0]}{c[1]}")
def test_activation_edge_values(case, dtype):
    """Forward and backward on the edge values against the reference, within TOL: NaN where the
    reference has NaN, the same infinities, the same saturation and linear regions."""
    name, hyper = case
    Z = _edge_values(dtype)
    dY = np.resize(np.array([1.0, -0.5, 2.0], dtype), Z.shape)
    param = {"param_grad": False} if name in ("softplus", "silu") else {}
    with np.errstate(all="ignore"):
        Y_ref = getattr(REF, f"{name}_forward")(Z, *hyper)
        Y = getattr(NB, f"{name}_forward")(Z, *hyper)
        dZ_ref = getattr(REF, f"{name}_backward")(dY, Z, Y_ref, *hyper, **param)
        dZ = getattr(NB, f"{name}_backward")(dY, Z, Y_ref, *hyper, **param)
    if param:
        (dZ, _), (dZ_ref, _) = dZ, dZ_ref
    assert_matches(Y, Y_ref, dtype, "forward", None, f"{name}{hyper} forward")
    assert_matches(dZ, dZ_ref, dtype, "backward", None, f"{name}{hyper} backward")


def _sigmoid64(x):
    return np.exp(-np.logaddexp(0.0, -x))


@pytest.mark.parametrize("name", ["silu", "softplus"])
def test_param_grad_accurate_where_terms_cancel(name):
    """float32 d(beta) of silu and softplus against its float64 value on the same float32
    inputs, where each term cancels (beta z up to the linear threshold: s -> 1, y -> z): within
    1e-6, across several blocks of terms (1000 elements, a partial last block)."""
    rng = np.random.default_rng(3)
    beta, threshold = 1.3, 20.0
    Z = rng.uniform(-10, 15, 1000).astype(np.float32)
    dY = rng.uniform(0.5, 1.5, Z.size).astype(np.float32)  # one sign: no cancellation in the sum itself
    hyper = (beta,) if name == "silu" else (beta, threshold)
    Y = getattr(NB, f"{name}_forward")(Z, *hyper)
    _, got = getattr(NB, f"{name}_backward")(dY, Z, Y, *hyper)
    z, d, y, b = Z.astype(np.float64), dY.astype(np.float64), Y.astype(np.float64), float(np.float32(beta))
    if name == "silu":
        exact = (d * z * z * _sigmoid64(b * z) * _sigmoid64(-b * z)).sum()
    else:
        exact = np.where(b * z > threshold, 0.0, d * (z * _sigmoid64(b * z) - y) / b).sum()
    np.testing.assert_allclose(got[0], exact, rtol=1e-6)  # the float32 reference: 5.7e-6 off on silu


# ---------------------------------------------------------------------------- per-op fallbacks and checks
def test_non_contiguous_parameters_update_in_place_through_the_reference():
    rng = np.random.default_rng(0)
    base = rng.standard_normal(40).astype(np.float32)
    base_ref = base.copy()
    g = rng.standard_normal(20).astype(np.float32)
    m, v = np.zeros(20, np.float32), np.zeros(20, np.float32)
    NB.adam_step(base[::2], g, m, v, None, lr=0.1, step=1)
    REF.adam_step(base_ref[::2], g, np.zeros(20, np.float32), np.zeros(20, np.float32), None, lr=0.1, step=1)
    assert_matches(base, base_ref, "float32", "step", None, "strided parameters")


def test_float16_runs_the_reference():
    Z = np.linspace(-2, 2, 11).astype(np.float16)
    Y = NB.relu_forward(Z)
    assert Y.dtype == np.float16
    np.testing.assert_array_equal(Y, REF.relu_forward(Z))
    p, g = np.ones(4, np.float16), np.ones(4, np.float16)
    NB.sgd_step(p, g, None, lr=0.5, step=1)
    np.testing.assert_array_equal(p, np.full(4, 0.5, np.float16))


@pytest.mark.parametrize("dtype", DTYPES)
def test_read_only_inputs(dtype):
    rng = np.random.default_rng(1)
    X, W, b = rng.standard_normal((5, 3)).astype(dtype), rng.standard_normal((4, 3)).astype(dtype), np.ones(4, dtype)
    for a in (X, W, b):
        a.setflags(write=False)
    assert_matches(NB.dense_forward(X, W, b, "tanh"), REF.dense_forward(X, W, b, "tanh"), dtype)
    assert_matches(NB.gelu_forward(X), REF.gelu_forward(X), dtype)


def test_bad_shapes_and_labels_raise_before_any_kernel():
    f = np.float32
    X, W = np.ones((4, 3), f), np.ones((2, 5), f)
    with pytest.raises(ValueError, match="dense_forward"):
        NB.dense_forward(X, W)
    with pytest.raises(ValueError, match="bias"):
        NB.dense_forward(X, np.ones((2, 3), f), np.ones(3, f))
    with pytest.raises(ValueError, match="dW has shape"):
        NB.dense_backward(np.ones((4, 2), f), X, np.ones((2, 3), f), np.ones((4, 2), f), dW=np.ones((3, 2), f))
    with pytest.raises(ValueError, match="cannot be fused"):
        NB.dense_forward(X, np.ones((2, 3), f), None, "gelu")
    logits = np.zeros((3, 4), f)
    for op in ("cross_entropy_loss", "nll_loss"):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
            getattr(NB, op)(logits, np.array([0, 1, 4]))
        with pytest.raises(ValueError, match=r"labels must lie"):
            getattr(NB, op)(logits, np.array([0, -1, 2]))
    p = np.ones(5, f)
    with pytest.raises(ValueError, match="required"):
        NB.adam_step(p, np.ones(5, f), np.zeros(5, f), np.zeros(5, f), None, lr=0.1, step=1, amsgrad=True)
    with pytest.raises(ValueError, match="elements"):
        NB.adam_step(p, np.ones(5, f), np.zeros(4, f), np.zeros(5, f), None, lr=0.1, step=1)
    with pytest.raises(ValueError, match="gradient of shape"):
        NB.sgd_step(p, np.ones(4, f), None, lr=0.1, step=1)
    with pytest.raises(ValueError, match="one shape"):
        NB.tanh_backward(np.ones(3, f), np.ones(3, f), np.ones(4, f))
    np.testing.assert_array_equal(p, np.ones(5, f))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward_without_buffers(dtype):
    """dW=None allocates, db=None computes no bias gradient, as the reference does."""
    rng = np.random.default_rng(4)
    X, W = rng.standard_normal((6, 5)).astype(dtype), rng.standard_normal((3, 5)).astype(dtype)
    Y = REF.dense_forward(X, W, None, "sigmoid")
    dY = rng.standard_normal((6, 3)).astype(dtype)
    got, ref = NB.dense_backward(dY, X, W, Y, "sigmoid"), REF.dense_backward(dY, X, W, Y, "sigmoid")
    assert got[2] is None and ref[2] is None
    assert_matches(got[0], ref[0], dtype, "backward")
    assert_matches(got[1], ref[1], dtype, "backward")


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_on_3d_and_0d_inputs(dtype):
    rng = np.random.default_rng(6)
    Z = rng.standard_normal((2, 3, 5)).astype(dtype)
    for name in ("softmax", "log_softmax", "elu", "mish"):
        assert_matches(getattr(NB, f"{name}_forward")(Z), getattr(REF, f"{name}_forward")(Z), dtype, what=name)
    alpha = rng.uniform(0.1, 0.3, 5).astype(dtype)
    assert_matches(NB.prelu_forward(Z, alpha), REF.prelu_forward(Z, alpha), dtype)
    z0 = np.asarray(-0.5, dtype)
    assert_matches(NB.sigmoid_forward(z0), REF.sigmoid_forward(z0), dtype)


# ---------------------------------------------------------------------------- parallel drivers
NBM = importlib.import_module("fastmlp.backends.numba_backend") if NB is not None else None
CHUNK, ROWS = 7, 3  # forced chunks: several on small arrays, the last one partial
DRIVERS = ("parallel_activation_forward", "parallel_activation_backward", "parallel_optimizer_step",
           "parallel_prelu_forward", "parallel_prelu_backward", "parallel_softmax_forward",
           "parallel_softmax_backward")


def _spy(monkeypatch, names):
    """Count the calls of the kernels ``names`` (still running them)."""
    calls = {name: 0 for name in names}
    for name in names:
        original = getattr(K, name)

        def spy(*args, _original=original, _name=name):
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(K, name, spy)
    return calls


@pytest.fixture
def parallel(monkeypatch):
    """Every standalone op takes its parallel driver, in chunks of CHUNK elements or ROWS rows;
    returns the drivers' call counts."""
    monkeypatch.setattr(type(NB), "parallel_min_size", 0)
    monkeypatch.setattr(NBM, "_parallel_threads", lambda: 2)
    monkeypatch.setattr(NBM, "_chunk", lambda size, rows, threads: CHUNK if rows is None else ROWS)
    monkeypatch.setattr(NBM._Pace, "parallel", lambda self: True)
    return _spy(monkeypatch, DRIVERS)


PAR_ACTIVATIONS = [("relu", ()), ("leaky_relu", (0.2,)), ("elu", (0.5,)), ("selu", ()), ("sigmoid", ()),
                   ("tanh", ()), ("gelu", ()), ("gelu", ("tanh",)), ("silu", (1.7,)),
                   ("softplus", (2.0, 1.0)), ("mish", ()), ("softsign", ()), ("log_sigmoid", ()),
                   ("sinc", (True,)), ("step", ()), ("softmax", ()), ("log_softmax", ())]
# one element; one whole chunk; 8 chunks + 5; (10, 13): 4 chunks of rows, the last one row
PAR_SHAPES = [(1,), (CHUNK,), (8 * CHUNK + 5,), (10, 13)]


def _check_activation(name, hyper, Z, dY, dtype):
    Y_ref = getattr(REF, f"{name}_forward")(np.ascontiguousarray(Z), *hyper)
    assert_matches(getattr(NB, f"{name}_forward")(Z, *hyper), Y_ref, dtype, "forward", None, name)
    ref = getattr(REF, f"{name}_backward")(np.ascontiguousarray(dY), np.ascontiguousarray(Z), Y_ref, *hyper)
    got = getattr(NB, f"{name}_backward")(dY, Z, Y_ref, *hyper)
    if isinstance(ref, tuple):  # (dZ, d beta): the reduction over the chunks
        assert_matches(got[0], ref[0], dtype, "backward", None, f"{name} dZ")
        assert_matches(got[1], ref[1], dtype, "backward", None, f"{name} dbeta")
    else:
        assert_matches(got, ref, dtype, "backward", None, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", PAR_SHAPES, ids=str)
@pytest.mark.parametrize("act", PAR_ACTIVATIONS, ids=lambda a: f"{a[0]}{a[1]}")
def test_parallel_activation_matches_reference(parallel, act, shape, dtype):
    name, hyper = act
    rng = np.random.default_rng(sum(shape))
    Z = (rng.standard_normal(shape) * 2).astype(dtype)
    _check_activation(name, hyper, Z, rng.standard_normal(shape).astype(dtype), dtype)
    kind = "softmax" if name.endswith("softmax") else "activation"
    assert parallel[f"parallel_{kind}_forward"] == 1 and parallel[f"parallel_{kind}_backward"] == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_parallel_activation_non_contiguous_input(parallel, dtype):
    rng = np.random.default_rng(2)
    big = (rng.standard_normal((12, 2 * CHUNK + 3)) * 2).astype(dtype)
    dbig = rng.standard_normal((12, 17)).astype(dtype)
    kept = big.copy()
    Z, dY = big[::2, ::2], dbig[1::2, ::2]
    assert not Z.flags.c_contiguous and not dY.flags.c_contiguous
    for name, hyper in PAR_ACTIVATIONS:
        _check_activation(name, hyper, Z, dY, dtype)
    np.testing.assert_array_equal(big, kept)
    assert parallel["parallel_activation_forward"] == len(PAR_ACTIVATIONS) - 2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shared", [True, False], ids=["shared_alpha", "per_feature"])
@pytest.mark.parametrize("shape", [(1, 1), (10, 13), (101, 5)], ids=str)
def test_parallel_prelu_matches_reference(parallel, shape, shared, dtype):
    """dalpha sums each chunk of rows into its own float64 partial, then the partials."""
    rng = np.random.default_rng(shape[0])
    Z, dY = (rng.standard_normal(shape) * 2).astype(dtype), rng.standard_normal(shape).astype(dtype)
    alpha = rng.uniform(0.05, 0.5, 1 if shared else shape[1]).astype(dtype)
    Y_ref = REF.prelu_forward(Z, alpha)
    assert_matches(NB.prelu_forward(Z, alpha), Y_ref, dtype)
    for param_grad in (True, False):
        (dZ, da), (dZ_ref, da_ref) = (b.prelu_backward(dY, Z, Y_ref, alpha, param_grad) for b in (NB, REF))
        assert_matches(dZ, dZ_ref, dtype, "backward", None, "dZ")
        assert_matches(da, da_ref, dtype, "backward", None, "dalpha")
    assert parallel["parallel_prelu_forward"] == 1 and parallel["parallel_prelu_backward"] == 2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["silu", "softplus"])
def test_parallel_parameter_gradient_over_many_chunks(parallel, name, dtype):
    """d beta summed over 143 chunks equals the reference's float64 sum."""
    rng = np.random.default_rng(4)
    Z, dY = (rng.standard_normal(1000) * 3).astype(dtype), rng.standard_normal(1000).astype(dtype)
    hyper = (1.3,) if name == "silu" else (1.3, 2.0)
    _check_activation(name, hyper, Z, dY, dtype)
    assert parallel["parallel_activation_backward"] == 1


# op -> (which state slots hold an array, hyper-parameters); None slots exercise the padding
PAR_OPTIMIZERS = [
    ("sgd_step", [False], {}), ("sgd_step", [True], dict(momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("momentum_step", [True], {}), ("adagrad_step", [True], dict(lr_decay=0.01)),
    ("rmsprop_step", [True, False, False], {}),
    ("rmsprop_step", [True, True, True], dict(centered=True, momentum=0.9)),
    ("adam_step", [True, True, False], {}),
    ("adam_step", [True, True, True], dict(amsgrad=True, weight_decay=0.1)),
    ("adamax_step", [True, True], {}), ("nadam_step", [True, True], {}), ("adadelta_step", [True, True], {}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, CHUNK, 8 * CHUNK + 5])
@pytest.mark.parametrize("case", PAR_OPTIMIZERS, ids=lambda c: f"{c[0]}{c[2]}")
def test_parallel_optimizer_step_matches_reference(parallel, case, n, dtype):
    """5 steps in place: parameters and every state buffer against the reference, the same
    arrays updated, the gradient untouched."""
    op, used, hyper = case
    rng = np.random.default_rng(n)
    p = rng.standard_normal(n).astype(dtype)
    p_ref = p.copy()
    states = [np.zeros(n, dtype) if u else None for u in used]
    states_ref = [None if s is None else s.copy() for s in states]
    kept = [p] + states
    mu_product = 1.0
    for step in range(1, 6):
        g = rng.standard_normal(n).astype(dtype)
        g0 = g.copy()
        extra = {}
        if op == "nadam_step":
            mu_product *= REF.nadam_mu(step, 0.9, 4e-3)
            extra["mu_product"] = mu_product
        getattr(NB, op)(p, g, *states, lr=0.01, step=step, **extra, **hyper)
        getattr(REF, op)(p_ref, g.copy(), *states_ref, lr=0.01, step=step, **extra, **hyper)
        np.testing.assert_array_equal(g, g0)
    assert all(a is b for a, b in zip([p] + states, kept))
    assert_matches(p, p_ref, dtype, "step", None, f"{op} params")
    for s, s_ref in zip(states, states_ref):
        assert_matches(s, s_ref, dtype, "step", None, f"{op} state")
    assert parallel["parallel_optimizer_step"] == 5


def test_chunks_split_the_work_evenly_in_whole_cache_lines():
    for size in (1, 64, 65, 131_073, 10_000_001):
        chunk = NBM._chunk(size, None, 2)
        assert chunk % 64 == 0 and chunk * 2 >= size and chunk - 64 < size / 2, size
    assert NBM._chunk(10**6, 33, 2) == 17  # rows: ceil(33 / 2)
    assert NBM._chunk(10**6, 1, 2) == 1


def test_pace_runs_the_faster_path_and_notices_a_collapse_and_a_recovery():
    """Timings fed by hand: parallel twice as fast, then (a busy core) 8x slower than serial,
    then fast again. The pace follows each phase within a few calls, and timing the losing path
    again costs a few calls per phase."""
    pace = NBM._Pace()
    phases = [(0.5, 400), (8.0, 400), (0.5, 400)]  # (parallel seconds per element, calls); serial: 1.0
    chosen = []
    for parallel_rate, calls in phases:
        runs = []
        for _ in range(calls):
            parallel = pace.parallel()
            pace.record(parallel, parallel_rate if parallel else 1.0)
            runs.append(parallel)
        chosen.append(runs)
    fast, slow, again = (sum(r) for r in chosen)
    assert chosen[0][:2] == [True, False]  # both paths timed first
    assert fast > 390 and slow <= 8 and again > 140, (fast, slow, again)
    assert sum(chosen[2][257:]) >= 143 - 8  # taken at the first re-timing; then re-timings of serial only


def test_parallel_threads_follow_numba_and_refuse_workqueue(monkeypatch):
    import numba

    before = numba.get_num_threads()
    if NBM._threading_layer() != "workqueue":
        assert NBM._parallel_threads() == before
    try:
        numba.set_num_threads(1)
        assert NBM._parallel_threads() == 1
    finally:
        numba.set_num_threads(before)
    monkeypatch.setattr(NBM, "_threading_layer", lambda: "workqueue")
    assert NBM._parallel_threads() == 1


@pytest.mark.parametrize("threads", [2, 1])
def test_serial_below_the_threshold_or_with_one_thread(monkeypatch, threads):
    monkeypatch.setattr(NBM, "_parallel_threads", lambda: threads)
    monkeypatch.setattr(type(NB), "parallel_min_size", 50)
    monkeypatch.setattr(NB, "_paces", {})  # no timings left by earlier tests: the first call is parallel
    calls = _spy(monkeypatch, ["relu_forward", "parallel_activation_forward", "adam_step",
                               "parallel_optimizer_step"])
    parallel = int(threads > 1)
    # (serial kernel calls, driver calls); without the JIT the driver's own call of the kernel counts too
    for n, expected in ((49, (1, 0)), (50, (0 if parallel and JIT else 1, parallel))):
        Z = np.linspace(-1, 1, n)
        np.testing.assert_array_equal(NB.relu_forward(Z), REF.relu_forward(Z))
        p, p_ref, g = Z.copy(), Z.copy(), np.cos(Z)
        m, v, m_ref, v_ref = (np.zeros(n) for _ in range(4))
        NB.adam_step(p, g, m, v, None, lr=0.1, step=1)
        REF.adam_step(p_ref, g, m_ref, v_ref, None, lr=0.1, step=1)
        assert_matches(p, p_ref, "float64", "step")
        assert (calls["relu_forward"], calls["parallel_activation_forward"]) == expected, n
        assert (calls["adam_step"], calls["parallel_optimizer_step"]) == expected, n
        calls.update(dict.fromkeys(calls, 0))


# ---------------------------------------------------------------------------- JIT, cache, environment
def _run_python(code: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``code`` in a new Python process (which must succeed), with ``env_extra`` added to the
    environment."""
    env = {**os.environ, **(env_extra or {})}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         check=False)
    assert out.returncode == 0, out.stderr
    return out


def _python(code: str, env_extra: dict[str, str] | None = None) -> str:
    return _run_python(code, env_extra).stdout.strip()


@pytest.mark.skipif(not JIT, reason="NUMBA_DISABLE_JIT: there is nothing compiled to check")
def test_loading_the_backend_compiles_nothing_and_the_disk_cache_is_used():
    code = """
        import importlib, numpy as np, fastmlp
        be = fastmlp.get_backend("numba")
        K = importlib.import_module("fastmlp.backends._numba_kernels")
        print(len(K.relu_forward.signatures))
        be.relu_forward(np.ones(3, np.float32))
        print(sum(K.relu_forward.stats.cache_hits.values()))
    """
    _python(code)  # fill the cache if this is its first use
    compiled_at_load, hits = _python(code).split()
    assert compiled_at_load == "0"
    assert int(hits) >= 1, "the second process recompiled instead of loading the on-disk cache"


@pytest.mark.slow  # ~40 s: every transcendental kernel and driver compiled from nothing
@pytest.mark.skipif(not JIT, reason="NUMBA_DISABLE_JIT: there is nothing compiled to check")
def test_a_cold_compile_prints_no_warning(tmp_path):
    """Compiling the transcendental kernels from an empty cache, serial and parallel, both
    dtypes, warns of nothing (numba's pedantic IR check misfires on the inlined math helpers)."""
    code = """
        import importlib, numpy as np, fastmlp
        be = fastmlp.get_backend("numba")
        for parallel_from in (10**9, 1):
            type(be).parallel_min_size = parallel_from
            importlib.import_module("fastmlp.backends.numba_backend")._parallel_threads = lambda: 2
            for dt in (np.float32, np.float64):
                Z = np.linspace(-3, 3, 300).astype(dt)
                for name in ("sigmoid", "tanh", "gelu", "silu", "softplus", "elu", "mish", "log_sigmoid"):
                    getattr(be, name + "_backward")(Z, Z, getattr(be, name + "_forward")(Z))
        print("ok")
    """
    out = _run_python(code, {"NUMBA_CACHE_DIR": str(tmp_path), "NUMBA_NUM_THREADS": "2", "PYTHONWARNINGS": "default"})
    assert out.stdout.strip() == "ok"
    assert "Warning" not in out.stderr, out.stderr[:2000]


@pytest.mark.skipif(not JIT, reason="NUMBA_DISABLE_JIT: there is nothing compiled to check")
def test_parallel_drivers_use_the_disk_cache_and_leave_the_threading_layer_to_numba():
    code = """
        import importlib, numba, numpy as np, fastmlp
        be = fastmlp.get_backend("numba")
        K = importlib.import_module("fastmlp.backends._numba_kernels")
        importlib.import_module("fastmlp.backends.numba_backend")._parallel_threads = lambda: 2  # any layer
        type(be).parallel_min_size = 1
        be.relu_forward(np.ones(300, np.float32))
        be.adam_step(np.ones(300, np.float32), np.ones(300, np.float32), np.zeros(300, np.float32),
                     np.zeros(300, np.float32), None, lr=0.1, step=1)
        drivers = (K.parallel_activation_forward, K.parallel_optimizer_step)
        hits = [sum(f.stats.cache_hits.values()) for f in drivers]
        print(min(hits), numba.config.THREADING_LAYER)
    """
    _python(code, {"NUMBA_NUM_THREADS": "2"})  # fill the cache if this is its first use
    hits, layer = _python(code, {"NUMBA_NUM_THREADS": "2"}).split()
    assert int(hits) >= 1, "the second process recompiled a parallel driver instead of loading the cache"
    assert layer == os.environ.get("NUMBA_THREADING_LAYER", "default")  # numba's choice, not ours


def test_fastmlp_backend_env_selects_numba_end_to_end():
    code = """
        import numpy as np, fastmlp
        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((64, 6)), rng.integers(0, 3, 64)
        model = fastmlp.MLP(6, [16], 3)
        opt = fastmlp.optim.Adam(model.parameters(), lr=0.05)
        loss = fastmlp.CrossEntropyLoss()
        first = model.train_step(X, y, loss, opt)
        for _ in range(100):
            last = model.train_step(X, y, loss, opt)
        acc = (model.predict(X) == y).mean()
        print(fastmlp.get_backend().name, first > last, acc > 0.6)
    """
    out = _python(code, {"FASTMLP_BACKEND": "numba"}).splitlines()
    assert out == ["numba True True"]


@pytest.mark.skipif(not hasattr(fastmlp, "fit"), reason="fastmlp.fit is not on this branch yet")
def test_fit_with_fastmlp_backend_numba():
    code = """
        import numpy as np, fastmlp
        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((256, 6)), rng.integers(0, 3, 256)
        X[np.arange(256), y] += 3.0
        model = fastmlp.MLP(6, [16], 3)
        fastmlp.fit(model, (X, y), loss="cross_entropy", optimizer="adam", lr=0.01, epochs=5,
                    batch_size=32, verbose=0)
        print(fastmlp.get_backend().name, (model.predict(X) == y).mean() > 0.9)
    """
    assert _python(code, {"FASTMLP_BACKEND": "numba"}).splitlines()[-1] == "numba True"


@pytest.mark.skipif(importlib.util.find_spec("fastmlp.__main__") is None, reason="no CLI on this branch yet")
def test_cli_train_with_fastmlp_backend_numba():
    env = {**os.environ, "FASTMLP_BACKEND": "numba"}
    out = subprocess.run([sys.executable, "-m", "fastmlp", "train", "--dataset", "mnist", "--subset", "3000",
                          "--val-size", "500", "--hidden", "32", "--epochs", "2", "--lr", "0.01", "--quiet"],
                         capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    accuracy = float(out.stdout.split("Test accuracy:")[1].split("%")[0])
    assert accuracy > 80, out.stdout
