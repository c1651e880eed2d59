"""The reference's gradients against central differences, in float64.

``d/dx f(x) ~ (f(x + h) - f(x - h)) / 2h`` for every input coordinate, with points kept away
from kinks (relu, leaky_relu, elu, prelu at 0; huber and l1 at their breakpoints).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp
from fastmlp.backends import get_backend

REF = get_backend("numpy")
H = 1e-6
RTOL, ATOL = 1e-6, 1e-8


def numgrad(f, x):
    """Central differences of the scalar function ``f`` at ``x`` (float64, modified in place then restored)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + H
        fp = f()
        flat[i] = old - H
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * H)
    return g


def away_from_zero(rng, shape, low=0.1, high=2.0):
    return rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)


ACTIVATIONS = {
    "sigmoid": (), "tanh": (), "relu": (), "leaky_relu": (0.2,), "elu": (0.7,), "softsign": (),
    "log_sigmoid": (), "mish": (), "gelu": (), "selu": (), "sinc": (), "softmax": (), "log_softmax": (),
    "identity": (), "softplus": (1.5, 20.0), "silu": (1.3,),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_input_gradient(name):
    rng = np.random.default_rng(0)
    Z = away_from_zero(rng, (3, 5))
    W = rng.standard_normal((3, 5))  # L = sum(W * act(Z)) so dY = W
    hyper = ACTIVATIONS[name]
    fwd = getattr(REF, f"{name}_forward")
    out = getattr(REF, f"{name}_backward")(W, Z, fwd(Z, *hyper), *hyper)
    dZ = out[0] if isinstance(out, tuple) else out
    expected = numgrad(lambda: float((W * fwd(Z, *hyper)).sum()), Z)
    np.testing.assert_allclose(dZ, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("variant", [("gelu", ("tanh",)), ("sinc", (True,)), ("softplus", (0.5, 1.0))])
def test_activation_variants_input_gradient(variant):
    name, hyper = variant
    rng = np.random.default_rng(1)
    Z = away_from_zero(rng, (4, 6), 0.2, 3.0)
    W = rng.standard_normal(Z.shape)
    fwd = getattr(REF, f"{name}_forward")
    out = getattr(REF, f"{name}_backward")(W, Z, fwd(Z, *hyper), *hyper)
    dZ = out[0] if isinstance(out, tuple) else out
    np.testing.assert_allclose(dZ, numgrad(lambda: float((W * fwd(Z, *hyper)).sum()), Z), rtol=RTOL, atol=ATOL)


def test_sinc_gradient_near_zero_matches_series_and_direct_form():
    Z = np.array([[-0.3, -0.1001, -0.0999, -1e-3, 0.0, 1e-3, 0.0999, 0.1001, 0.3]])
    W = np.ones_like(Z)
    dZ = REF.sinc_backward(W, Z, REF.sinc_forward(Z))
    expected = numgrad(lambda: float(REF.sinc_forward(Z).sum()), Z)
    np.testing.assert_allclose(dZ, expected, rtol=1e-6, atol=1e-8)
    assert REF.sinc_forward(np.zeros((1, 1)))[0, 0] == 1.0


@pytest.mark.parametrize("name,hyper", [("softplus", (1.5, 20.0)), ("softplus", (0.7, 1.0)), ("silu", (1.3,))])
def test_activation_beta_gradient(name, hyper):
    rng = np.random.default_rng(2)
    Z = away_from_zero(rng, (4, 3), 0.1, 3.0)
    W = rng.standard_normal(Z.shape)
    fwd = getattr(REF, f"{name}_forward")
    _, dbeta = getattr(REF, f"{name}_backward")(W, Z, fwd(Z, *hyper), *hyper)
    beta = np.array([hyper[0]])
    rest = hyper[1:]
    expected = numgrad(lambda: float((W * fwd(Z, beta[0], *rest)).sum()), beta)
    np.testing.assert_allclose(dbeta, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("features", [1, 4])
def test_prelu_gradients(features):
    rng = np.random.default_rng(3)
    Z = away_from_zero(rng, (5, 4))
    W = rng.standard_normal(Z.shape)
    alpha = rng.uniform(0.1, 0.4, features)
    dZ, dalpha = REF.prelu_backward(W, Z, REF.prelu_forward(Z, alpha), alpha)
    np.testing.assert_allclose(dZ, numgrad(lambda: float((W * REF.prelu_forward(Z, alpha)).sum()), Z), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dalpha, numgrad(lambda: float((W * REF.prelu_forward(Z, alpha)).sum()), alpha), rtol=RTOL, atol=ATOL)


def test_step_gradient_is_zero_as_documented():
    Z = np.array([[-1.0, 0.5, 2.0]])
    assert np.all(REF.step_backward(np.ones_like(Z), Z, REF.step_forward(Z)) == 0)
    np.testing.assert_array_equal(numgrad(lambda: float(REF.step_forward(Z).sum()), Z), 0)


LOSSES = [
    ("mse_loss", "same", {}),
    ("l1_loss", "same", {}),
    ("huber_loss", "same", {"delta": 0.8}),
    ("cross_entropy_loss", "labels", {}),
    ("cross_entropy_loss", "labels", {"label_smoothing": 0.2}),
    ("cross_entropy_loss", "probs", {}),
    ("nll_loss", "labels", {}),
    ("bce_with_logits_loss", "binary", {}),
    ("bce_loss", "binary_prob", {}),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", LOSSES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_loss_gradient(case, reduction):
    op, kind, kw = case
    rng = np.random.default_rng(4)
    shape = (5, 4)
    out = rng.standard_normal(shape)
    if kind == "same":
        target = out + away_from_zero(rng, shape, 0.1, 1.5)  # no |d| at 0 or at huber's delta
        if op == "huber_loss":
            d = out - target
            target = np.where(np.abs(np.abs(d) - 0.8) < 0.05, target + 0.2, target)
    elif kind == "labels":
        target = rng.integers(0, 4, 5)
    elif kind == "probs":
        target = rng.dirichlet(np.ones(4), 5)
    else:
        target = rng.integers(0, 2, shape).astype(float)
    if kind == "binary_prob":
        out = rng.uniform(0.05, 0.95, shape)
    if op == "nll_loss":
        out = REF.log_softmax_forward(out)
    fn = getattr(REF, op)
    value, grad = fn(out, target, reduction=reduction, **kw)
    expected = numgrad(lambda: float(np.sum(fn(out, target, reduction=reduction, need_grad=False, **kw)[0])), out)
    np.testing.assert_allclose(grad, expected, rtol=RTOL, atol=ATOL)


def _loss_of_model(model, X, y, loss):
    return lambda: loss(model.forward(X), y)


def test_linear_gradients():
    rng = np.random.default_rng(5)
    layer = fastmlp.Linear(4, 3, dtype="float64", rng=0)
    X = rng.standard_normal((6, 4))
    T = rng.standard_normal((6, 3))
    loss = fastmlp.MSELoss()
    _, dY = loss.value_and_grad(layer.forward(X), T)
    dX = layer.backward(dY)
    f = lambda: loss(layer.forward(X), T)  # noqa: E731
    np.testing.assert_allclose(layer.weight.grad, numgrad(f, layer.weight.data), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(layer.bias.grad, numgrad(f, layer.bias.data), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dX, numgrad(f, X), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "gelu", "elu", "prelu", "silu", "mish"])
def test_three_layer_mlp_gradients(activation):
    """A whole 784-style MLP in miniature: 3 Linear layers, every weight, bias and trainable
    activation parameter, and dL/dX, against central differences of the loss."""
    rng = np.random.default_rng(6)
    kw = {"trainable": True} if activation == "silu" else {}
    model = fastmlp.MLP(5, [7, 6], 3, activation=activation, dtype="float64", rng=1, activation_kwargs=kw)
    assert sum(isinstance(layer, fastmlp.Linear) for layer in model.layers) == 3
    X = rng.standard_normal((4, 5))
    y = rng.integers(0, 3, 4)
    loss = fastmlp.CrossEntropyLoss()
    _, dY = loss.value_and_grad(model.forward(X), y)
    dX = model.backward(dY)
    f = lambda: loss(model.forward(X), y)  # noqa: E731
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, numgrad(f, p.data), rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(dX, numgrad(f, X), rtol=1e-5, atol=1e-7)


def test_trainable_softplus_in_a_model():
    rng = np.random.default_rng(7)
    model = fastmlp.Sequential(fastmlp.Linear(3, 4, rng=0), fastmlp.Softplus(beta=1.5, trainable=True),
                               fastmlp.Linear(4, 2, rng=1), dtype="float64")
    X, T = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    loss = fastmlp.MSELoss()
    _, dY = loss.value_and_grad(model.forward(X), T)
    model.backward(dY)
    f = lambda: loss(model.forward(X), T)  # noqa: E731
    beta = dict(model.named_parameters())["1.beta"]
    np.testing.assert_allclose(beta.grad, numgrad(f, beta.data), rtol=1e-5, atol=1e-8)
