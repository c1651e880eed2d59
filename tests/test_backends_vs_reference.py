"""Every op of every backend against the NumPy reference.

Forward and backward, float32 and float64, shapes from one element to more than a thread
chunk, non-contiguous input, in-place updates, and the whole training step. A backend that
registers gets all of this for free; nothing here compares a backend with itself.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from helpers import DTYPES, assert_matches, assert_runs_match, backend_params, to_host

import fastmlp
from fastmlp.backends import get_backend
from fastmlp.backends.base import FUSED_ACTIVATIONS

REF = get_backend("numpy")

# (rows, cols): one element, odd sizes, and more elements than one block / thread chunk.
SHAPES = [(1, 1), (1, 7), (3, 5), (17, 33), (130, 1031)]

# activation op -> hyper-parameter tuples to try (positional, after Z / dY, Z, Y)
ACTIVATION_CASES = {
    "identity": [()],
    "sigmoid": [()],
    "tanh": [()],
    "relu": [()],
    "leaky_relu": [(), (0.2,)],
    "elu": [(), (0.5,)],
    "softsign": [()],
    "log_sigmoid": [()],
    "mish": [()],
    "gelu": [(), ("tanh",)],
    "selu": [()],
    "sinc": [(), (True,)],
    "step": [()],
    "softmax": [()],
    "log_softmax": [()],
    "softplus": [(), (2.0, 20.0), (0.5, 1.0)],
    "silu": [(), (1.7,)],
}
PARAM_ACTIVATIONS = {"softplus", "silu"}  # backward returns (dZ, dbeta)


def _rand(rng, shape, dtype, scale=2.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _dev(be, x):
    return None if x is None else be.asarray(x)


@pytest.fixture(params=backend_params())
def backend(request):
    return get_backend(request.param)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(ACTIVATION_CASES))
def test_activation(backend, name, shape, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{name}{shape}".encode()))  # fixed across runs
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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("shared", [True, False], ids=["shared_alpha", "per_feature"])
def test_prelu(backend, shape, dtype, shared):
    rng = np.random.default_rng(7)
    Z, dY = _rand(rng, shape, dtype), _rand(rng, shape, dtype, 1.0)
    alpha = rng.uniform(0.05, 0.5, 1 if shared else shape[1]).astype(dtype)
    Y_ref = REF.prelu_forward(Z, alpha)
    assert_matches(backend.prelu_forward(_dev(backend, Z), _dev(backend, alpha)), Y_ref, dtype, "forward", backend)
    dZ_ref, da_ref = REF.prelu_backward(dY, Z, Y_ref, alpha)
    dZ, da = backend.prelu_backward(_dev(backend, dY), _dev(backend, Z), _dev(backend, Y_ref), _dev(backend, alpha))
    assert_matches(dZ, dZ_ref, dtype, "backward", backend, "dZ")
    assert_matches(da, da_ref, dtype, "backward", backend, "dalpha")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shared", [True, False], ids=["shared_alpha", "per_feature"])
def test_prelu_at_the_kink(backend, dtype, shared):
    """PyTorch's PReLU at its kink (SPEC §4): ``y = z if z > 0 else alpha z``,
    ``dz = dy if z > 0 else alpha dy``, ``dalpha = sum (0 if z > 0 else dy z)``, so z = 0 and
    z = -0.0 take the slope alpha, not 1. Expected values from the formula, not from another
    backend; the reference is held to them too. Alphas are powers of two, so every product is
    exact."""
    Z = np.array([0.0, -0.0, 1e-3, -1e-3], dtype)  # one column each: the columns' alphas differ
    slope_is_one = np.array([False, False, True, False])  # z > 0
    dY = np.array([[1.5, -2.0, 0.75, 3.0], [-0.5, 4.0, -1.25, 2.0], [2.0, 0.5, 1.0, -1.0]], dtype)
    Zm = np.broadcast_to(Z, dY.shape).copy()
    alpha = np.array([0.25] if shared else [0.25, 0.5, 2.0, 0.125], dtype)
    a = np.broadcast_to(alpha, Z.shape)
    Y_want = np.broadcast_to(np.where(slope_is_one, Z, a * Z), dY.shape)
    dZ_want = np.where(slope_is_one, dY, a * dY)
    # only z = -1e-3 contributes (dy * 0 = 0 at z = +-0), summed in float64 as every backend does
    contrib = np.where(slope_is_one, 0.0, dY.astype(np.float64) * Zm.astype(np.float64))
    da_want = (contrib.sum(keepdims=True)[0] if shared else contrib.sum(axis=0)).astype(dtype)
    for be in (REF, backend):
        Y = to_host(be, be.prelu_forward(_dev(be, Zm), _dev(be, alpha)))
        np.testing.assert_array_equal(Y, Y_want, err_msg=f"{be.name} prelu_forward")
        dZ, da = be.prelu_backward(_dev(be, dY), _dev(be, Zm), _dev(be, Y_want.copy()), _dev(be, alpha))
        np.testing.assert_array_equal(to_host(be, dZ), dZ_want, err_msg=f"{be.name} prelu_backward dZ")
        assert_matches(da, da_want, dtype, "backward", be, f"{be.name} prelu_backward dalpha")
        dZ, da = be.prelu_backward(_dev(be, dY), _dev(be, Zm), _dev(be, Y_want.copy()), _dev(be, alpha),
                                   param_grad=False)
        np.testing.assert_array_equal(to_host(be, dZ), dZ_want, err_msg=f"{be.name} prelu_backward dZ, no dalpha")
        assert da is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "sigmoid", "gelu", "softmax"])
def test_activation_non_contiguous_input(backend, name, dtype):
    rng = np.random.default_rng(3)
    big = _rand(rng, (40, 66), dtype)
    Z = big[::2, 1::2]  # strided view
    assert not Z.flags.c_contiguous
    Y_ref = getattr(REF, f"{name}_forward")(np.ascontiguousarray(Z))
    Y = getattr(backend, f"{name}_forward")(_dev(backend, Z))
    assert_matches(Y, Y_ref, dtype, "forward", backend, name)
    assert_matches(to_host(backend, _dev(backend, big)), big, dtype, "forward", backend, "input untouched")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", FUSED_ACTIVATIONS)
@pytest.mark.parametrize("dims", [(1, 1, 1), (3, 5, 7), (64, 129, 33), (257, 100, 300)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_dense(backend, dims, activation, dtype, bias):
    n, k, m = dims
    rng = np.random.default_rng(n * 1000 + m)
    X, W = _rand(rng, (n, k), dtype, 1.0), _rand(rng, (m, k), dtype, 0.3)
    b = _rand(rng, (m,), dtype, 0.3) if bias else None
    dY = _rand(rng, (n, m), dtype, 1.0)
    Y_ref = REF.dense_forward(X, W, b, activation)
    Y = backend.dense_forward(_dev(backend, X), _dev(backend, W), _dev(backend, b), activation)
    assert_matches(Y, Y_ref, dtype, "forward", backend, "Y")
    dX_ref, dW_ref, db_ref = REF.dense_backward(dY, X, W, Y_ref, activation, None, np.zeros(m, dtype) if bias else None)
    # gradients written in place into the given buffers, which start as garbage
    dW = _dev(backend, np.full((m, k), 7.0, dtype))
    db = _dev(backend, np.full((m,), 7.0, dtype)) if bias else None
    dX, dW_out, db_out = backend.dense_backward(
        _dev(backend, dY), _dev(backend, X), _dev(backend, W), _dev(backend, Y_ref), activation, dW, db)
    assert dW_out is dW and db_out is db, "dense_backward must write dW/db in place and return them"
    assert_matches(dX, dX_ref, dtype, "backward", backend, "dX")
    assert_matches(dW, dW_ref, dtype, "backward", backend, "dW")
    assert_matches(db, db_ref, dtype, "backward", backend, "db")
    dX_none, _, _ = backend.dense_backward(
        _dev(backend, dY), _dev(backend, X), _dev(backend, W), _dev(backend, Y_ref), activation, dW, db, need_dX=False)
    assert dX_none is None


LOSS_CASES = [
    ("mse_loss", "same", {}),
    ("l1_loss", "same", {}),
    ("huber_loss", "same", {"delta": 0.7}),
    ("cross_entropy_loss", "labels", {}),
    ("cross_entropy_loss", "labels", {"label_smoothing": 0.1}),
    ("cross_entropy_loss", "probs", {}),
    ("nll_loss", "labels", {}),
    ("bce_with_logits_loss", "binary", {}),
    ("bce_loss", "binary_prob", {}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (67, 10), (300, 33)], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", LOSS_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_loss(backend, case, reduction, shape, dtype):
    op, kind, kw = case
    rng = np.random.default_rng(11)
    out = _rand(rng, shape, dtype)
    if kind == "same":
        target = _rand(rng, shape, dtype)
    elif kind == "labels":
        target = rng.integers(0, shape[1], shape[0])
    elif kind == "probs":
        target = rng.dirichlet(np.ones(shape[1]), shape[0]).astype(dtype)
    else:
        target = rng.integers(0, 2, shape).astype(dtype)
    if op == "nll_loss":
        out = REF.log_softmax_forward(out)
    if kind == "binary_prob":
        out = REF.sigmoid_forward(out)
    v_ref, g_ref = getattr(REF, op)(out, target, reduction=reduction, **kw)
    v, g = getattr(backend, op)(_dev(backend, out), _dev(backend, target), reduction=reduction, **kw)
    assert_matches(v, v_ref, dtype, "forward", backend, "value")
    assert_matches(g, g_ref, dtype, "backward", backend, "grad")
    v2, g2 = getattr(backend, op)(_dev(backend, out), _dev(backend, target), reduction=reduction,
                                  need_grad=False, **kw)
    assert g2 is None
    assert_matches(v2, v_ref, dtype, "forward", backend, "value without grad")


# optimizer op -> (state buffer names, hyper-parameter sets)
OPTIMIZER_CASES = {
    "sgd_step": (["momentum_buffer"], [dict(momentum=0.0), dict(momentum=0.9, dampening=0.1, weight_decay=0.01),
                                      dict(momentum=0.9, nesterov=True)]),
    "momentum_step": (["m"], [dict(), dict(bias_correction=False), dict(nesterov=True, weight_decay=0.01)]),
    "adagrad_step": (["state_sum"], [dict(), dict(lr_decay=0.01, weight_decay=0.1, eps=0.0, eps_root=1e-8)]),
    "rmsprop_step": (["square_avg", "grad_avg", "momentum_buffer"],
                     [dict(), dict(centered=True, momentum=0.9, weight_decay=0.01),
                      dict(bias_correction=True, eps=0.0, eps_root=1e-8)]),
    "adam_step": (["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
                  [dict(), dict(amsgrad=True, weight_decay=0.1), dict(decoupled_weight_decay=True, weight_decay=0.1),
                   dict(eps=0.0, eps_root=1e-8)]),
    "adamax_step": (["exp_avg", "exp_inf"], [dict(), dict(weight_decay=0.05)]),
    "nadam_step": (["exp_avg", "exp_avg_sq"], [dict(), dict(weight_decay=0.05, decoupled_weight_decay=True)]),
    "adadelta_step": (["square_avg", "acc_delta"], [dict(), dict(weight_decay=0.05, rho=0.95)]),
}


def _optimizer_state(op, names, hyper, n, dtype):
    """Fresh zero state; buffers the configuration does not use are None."""
    state = {}
    for s in names:
        unused = (
            (s == "momentum_buffer" and not hyper.get("momentum"))
            or (s == "grad_avg" and not hyper.get("centered"))
            or (s == "max_exp_avg_sq" and not hyper.get("amsgrad"))
        )
        state[s] = None if unused else np.zeros(n, dtype)
    return state


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 1000, 70_001])
@pytest.mark.parametrize("op", sorted(OPTIMIZER_CASES))
def test_optimizer_step(backend, op, n, dtype):
    """20 fused steps of the backend against 20 reference steps on identical copies: the
    parameters and every state buffer, updated in place."""
    names, hypers = OPTIMIZER_CASES[op]
    for hyper in hypers:
        rng = np.random.default_rng(n)
        p_ref = _rand(rng, n, dtype, 1.0)
        st_ref = _optimizer_state(op, names, hyper, n, dtype)
        p = _dev(backend, p_ref)
        st = {k: _dev(backend, v) for k, v in st_ref.items()}
        ids = {k: id(v) for k, v in st.items()}
        p_id = id(p)
        mu_product = 1.0
        lr = 1.0 if op == "adadelta_step" else 0.01
        for step in range(1, 21):
            g = _rand(rng, n, dtype, 1.0)
            g[::5] = 0  # some coordinates see no gradient (dead units)
            extra = {}
            if op == "nadam_step":
                mu_product *= REF.nadam_mu(step, 0.9, 4e-3)
                extra["mu_product"] = mu_product
            args_ref = [st_ref[k] for k in names]
            getattr(REF, op)(p_ref, g.copy(), *args_ref, lr=lr, step=step, **extra, **hyper)
            g_dev = _dev(backend, g)
            result = getattr(backend, op)(p, g_dev, *[st[k] for k in names], lr=lr, step=step, **extra, **hyper)
            assert result is None
            assert_matches(g_dev, g, dtype, "forward", backend, "gradient must not be modified")
        assert id(p) == p_id and all(id(st[k]) == ids[k] for k in st)
        assert_matches(p, p_ref, dtype, "step", backend, f"{op}{hyper} params")
        for k in names:
            assert_matches(st[k], st_ref[k], dtype, "step", backend, f"{op}{hyper} state {k}")


# eps=1e-3 for the adaptive optimizers conditions the comparison: with eps=1e-8, a coordinate
# whose gradient is near the float32 noise floor (a leaky_relu unit that is negative for the whole
# batch) gets a normalised step g/sqrt(v) that one ulp in dL/dlogits flips, and the float32
# reference against itself moved 7x-140x past TOL["float32"]["step"] in 20 steps. Defaults are
# covered by test_optimizer_step on well-conditioned gradients.
OPTIMIZERS = [
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1)),
    ("Momentum", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.05, eps=1e-3)),
    ("RMSprop", dict(lr=0.01, centered=True, eps=1e-3)),
    ("Adam", dict(lr=0.01, eps=1e-3)),
    ("Adam", dict(lr=0.01, amsgrad=True, eps=1e-3)),
    ("AdamW", dict(lr=0.01, eps=1e-3)),
    ("Adamax", dict(lr=0.01, eps=1e-3)),
    ("NAdam", dict(lr=0.01, eps=1e-3)),
    ("Adadelta", dict(lr=1.0)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "leaky_relu", "gelu"])
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: f"{o[0]}{o[1]}")
def test_train_step(backend, opt, activation, dtype):
    """20 training steps (forward, loss, backward, fused optimizer step) on the backend against
    the reference composition: the parameters and every optimizer state buffer."""
    name, kw = opt
    rng = np.random.default_rng(5)
    X = rng.standard_normal((37, 13))
    y = rng.integers(0, 4, 37)

    def run(backend_name, dtype):
        model = fastmlp.MLP(13, [17, 9], 4, activation=activation, dtype=dtype, rng=1).to(backend_name)
        optimizer = getattr(fastmlp.optim, name)(model.parameters(), **kw)
        loss = fastmlp.CrossEntropyLoss()
        be = get_backend(backend_name)  # batches move to the backend's device once (a GPU refuses host arrays)
        Xb, yb = be.asarray(X), be.asarray(y)
        values = [model.train_step(Xb, yb, loss, optimizer) for _ in range(20)]
        return model, optimizer, values

    truth = run("numpy", "float64") if dtype == "float32" else None
    assert_runs_match(run(backend.name, dtype), run("numpy", dtype), dtype, truth, grads=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (64, 784), (64 * 784 + 3,)], ids=str)
def test_all_finite(backend, shape, dtype):
    """The input checks' ``all_finite`` (an override in the cpp and numba backends) against
    the reference: the largest value and a denormal are finite; NaN, +Inf, -Inf at the first,
    a middle and the last position are not, contiguous or not."""
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    info = np.finfo(dtype)
    if flat.size:
        flat[0], flat[-1] = info.max, info.tiny / 4
    assert backend.all_finite(_dev(backend, x)) is REF.all_finite(x) is True
    for bad in (np.nan, np.inf, -np.inf):
        for pos in {0, flat.size // 2, flat.size - 1} if flat.size else ():
            y = x.copy()
            y.reshape(-1)[pos] = bad
            assert backend.all_finite(_dev(backend, y)) is REF.all_finite(y) is False
            assert backend.all_finite(_dev(backend, y.reshape(-1)[::-1])) is False  # not contiguous

