"""Layers and models: the flat arena, the model API, fusion, and clear errors for bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastmlp
from fastmlp import ACTIVATIONS


def test_every_parameter_is_a_view_of_one_flat_buffer():
    model = fastmlp.MLP(784, [128], 10, activation="prelu")
    params = model.parameters()
    arena = params[0].arena
    assert all(p.arena is arena for p in params)
    assert arena.data.ndim == 1 and arena.data.flags.c_contiguous and arena.data.dtype == np.float32
    assert arena.size == sum(p.size for p in params) == 784 * 128 + 128 + 1 + 128 * 10 + 10
    for p in params:
        assert np.shares_memory(p.data, arena.data) and np.shares_memory(p.grad, arena.grad)
    arena.data[:] = 3.0
    assert all(np.all(p.data == 3.0) for p in params)
    arena.grad[:] = 1.0
    model.zero_grad()
    assert not arena.grad.any()


def test_state_dict_keys_follow_pytorch():
    model = fastmlp.MLP(4, [8, 6], 3, activation="prelu")
    assert list(model.state_dict()) == [
        "0.weight", "0.bias", "1.weight", "2.weight", "2.bias", "3.weight", "4.weight", "4.bias"]
    assert model.state_dict()["0.weight"].shape == (8, 4)
    sd = model.state_dict()
    sd["0.weight"][:] = 0  # a copy: the model is untouched
    assert model.layers[0].weight.data.any()


def test_load_state_dict_round_trip_and_errors():
    a, b = fastmlp.MLP(4, [5], 3, rng=0), fastmlp.MLP(4, [5], 3, rng=1)
    b.load_state_dict(a.state_dict())
    X = np.random.default_rng(0).standard_normal((6, 4))
    np.testing.assert_array_equal(a.forward(X), b.forward(X))
    sd = a.state_dict()
    with pytest.raises(KeyError, match="missing keys"):
        b.load_state_dict({k: v for k, v in sd.items() if k != "0.bias"})
    with pytest.raises(ValueError, match="shape"):
        b.load_state_dict({**sd, "0.weight": np.zeros((4, 5))})
    bad = {**sd, "2.bias": np.array([np.nan, 0, 0])}
    before = b.state_dict()
    with pytest.raises(ValueError, match="finite"):
        b.load_state_dict(bad)
    for k, v in b.state_dict().items():  # nothing was written
        np.testing.assert_array_equal(v, before[k])


def test_default_linear_init_matches_pytorch_bounds():
    fastmlp.seed(0)
    layer = fastmlp.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    assert layer.weight.shape == (300, 400) and layer.bias.shape == (300,)
    for p in (layer.weight.data, layer.bias.data):
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.95 * bound
    # U(-b, b) has variance b^2 / 3
    assert abs(layer.weight.data.var() - bound**2 / 3) < 0.05 * bound**2 / 3


def test_seed_gives_identical_models():
    fastmlp.seed(42)
    a = fastmlp.MLP(10, [7], 3)
    fastmlp.seed(42)
    b = fastmlp.MLP(10, [7], 3)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(x, y, err_msg=k)
    c = fastmlp.MLP(10, [7], 3)
    assert not np.array_equal(a.state_dict()["0.weight"], c.state_dict()["0.weight"])


def test_an_int_rng_seeds_one_stream_for_the_whole_model():
    """rng=0 gives the same model twice, and its layers (and a layer's weight and bias) draw
    different numbers: the int seeds one generator, not one per layer or per tensor."""
    a, b = fastmlp.MLP(8, [8, 8], 8, rng=0), fastmlp.MLP(8, [8, 8], 8, rng=0)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(x, y, err_msg=k)
    sd = a.state_dict()
    W0, W2, W4 = (sd[f"{i}.weight"] for i in (0, 2, 4))
    assert not np.allclose(W0, W2) and not np.allclose(W2, W4)
    bound = np.sqrt(8)  # W ~ U(+-1/sqrt(8)); scaled to U(+-1) the bias is no prefix of W
    assert not np.allclose(sd["0.bias"] * bound, (W0.ravel() * bound)[:8], atol=0.05)
    big = fastmlp.MLP(784, [256, 256], 10, rng=0).state_dict()
    assert abs(np.corrcoef(big["2.weight"].ravel()[:2560], big["4.weight"].ravel())[0, 1]) < 0.1  # was 0.99999999
    layer = fastmlp.Linear(5, 5, rng=1)
    assert not np.allclose(layer.bias.data, layer.weight.data.ravel()[:5])


def test_float64_model_computes_in_float64():
    model = fastmlp.MLP(5, [4], 3, activation="elu", dtype="float64", rng=0)
    X = np.random.default_rng(0).standard_normal((2, 5))
    out = model.forward(X)
    assert out.dtype == np.float64
    W0, b0 = model.layers[0].weight.data, model.layers[0].bias.data
    W2, b2 = model.layers[2].weight.data, model.layers[2].bias.data
    Z = X @ W0.T + b0
    H = np.where(Z > 0, Z, np.expm1(np.minimum(Z, 0)))
    np.testing.assert_allclose(out, H @ W2.T + b2, rtol=1e-14)


def test_to_dtype_recasts_the_arena():
    model = fastmlp.MLP(5, [4], 3, rng=0)
    w = model.state_dict()["0.weight"]
    model.to(dtype="float64")
    assert model.dtype == np.float64 and all(p.dtype == np.float64 for p in model.parameters())
    assert model.parameters()[0].arena.data.dtype == np.float64
    np.testing.assert_array_equal(model.state_dict()["0.weight"], w.astype(np.float64))
    assert model.forward(np.ones((1, 5))).dtype == np.float64
    with pytest.raises(TypeError, match="float32"):
        model.to(dtype="int32")


def test_to_backend_pins_the_backend():
    model = fastmlp.MLP(5, [4], 3).to("numpy")
    assert model.backend.name == "numpy" and all(layer.backend.name == "numpy" for layer in model.layers)
    with pytest.raises(ValueError, match="unknown fastmlp backend"):
        model.to("nope")


def test_dense_and_activation_are_fused(monkeypatch):
    from fastmlp.backends import get_backend

    be = get_backend("numpy")
    calls = []
    original = type(be).dense_forward
    monkeypatch.setattr(type(be), "dense_forward",
                        lambda self, X, W, b=None, activation="identity": calls.append(activation) or original(self, X, W, b, activation))
    fastmlp.MLP(4, [5, 5], 2, activation="tanh").to("numpy").forward(np.ones((2, 4)))
    assert calls == ["tanh", "tanh", "identity"]
    calls.clear()
    fastmlp.MLP(4, [5], 2, activation="gelu").to("numpy").forward(np.ones((2, 4)))
    assert calls == ["identity", "identity"]


@pytest.mark.parametrize("name", sorted(set(ACTIVATIONS) - {"prelu"}))
def test_every_activation_builds_an_mlp_that_trains_by_hand(name):
    rng = np.random.default_rng(0)
    model = fastmlp.MLP(6, [8], 3, activation=name, rng=0)
    X = rng.standard_normal((16, 6))
    y = rng.integers(0, 3, 16)
    loss = fastmlp.CrossEntropyLoss()
    opt = fastmlp.optim.SGD(model.parameters(), lr=0.1)
    out = model.forward(X)
    value, grad = loss.value_and_grad(out, y)
    model.zero_grad()
    dX = model.backward(grad)
    assert dX.shape == X.shape and np.isfinite(dX).all()
    first = model.layers[0].weight
    before = first.data.copy()
    opt.step()
    # the step's gradient is zero, so nothing reaches the first layer; everything else learns
    assert np.array_equal(before, first.data) == (name == "step")


def test_predict_and_predict_proba():
    model = fastmlp.MLP(3, [4], 5, rng=0)
    X = np.random.default_rng(0).standard_normal((7, 3))
    proba = model.predict_proba(X)
    assert proba.shape == (7, 5) and np.allclose(proba.sum(1), 1)
    np.testing.assert_array_equal(model.predict(X), proba.argmax(1))
    assert model.predict(X).dtype == np.int64
    binary = fastmlp.MLP(3, [4], 1, rng=0)
    p = binary.predict_proba(X)
    assert p.shape == (7, 2) and np.allclose(p.sum(1), 1)
    np.testing.assert_array_equal(binary.predict(X), (binary.forward(X)[:, 0] > 0).astype(int))
    after_softmax = fastmlp.Sequential(fastmlp.Linear(3, 4, rng=0), fastmlp.Softmax())
    np.testing.assert_allclose(after_softmax.predict_proba(X), after_softmax.forward(X))


def test_summary_lists_layers_and_total():
    text = fastmlp.MLP(784, [128], 10).summary()
    assert "Linear(in_features=784, out_features=128, bias=True)" in text
    assert "total parameters: 101,770" in text and "float32" in text


def test_train_and_eval_modes():
    model = fastmlp.MLP(3, [4], 2)
    assert model.eval() is model and not any(layer.training for layer in model.layers)
    assert model.train().training and all(layer.training for layer in model.layers)


def test_layer_configs_rebuild_the_architecture():
    model = fastmlp.Sequential(fastmlp.Linear(3, 4), fastmlp.LeakyReLU(0.2), fastmlp.Linear(4, 4),
                               fastmlp.Softplus(beta=2.0, trainable=True), fastmlp.Linear(4, 2, bias=False),
                               fastmlp.GELU("tanh"))
    configs = model.layer_configs()
    assert configs[1] == {"type": "leaky_relu", "negative_slope": 0.2}
    rebuilt = fastmlp.Sequential.from_layer_configs(configs)
    rebuilt.load_state_dict(model.state_dict())
    X = np.random.default_rng(0).standard_normal((3, 3))
    np.testing.assert_array_equal(rebuilt.forward(X), model.forward(X))


def test_swish_is_silu_and_aliases_resolve():
    assert fastmlp.Swish is fastmlp.SiLU
    assert isinstance(fastmlp.get_activation("swish"), fastmlp.SiLU)
    assert isinstance(fastmlp.get_activation("linear"), fastmlp.Identity)


# ---------------------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors():
    model = fastmlp.MLP(4, [3], 2)
    with pytest.raises(ValueError, match="4 features per sample, expected|has 5 features per sample, expected 4"):
        model.forward(np.ones((2, 5)))
    with pytest.raises(ValueError, match="must be 2-D"):
        model.forward(np.ones(4))
    with pytest.raises(ValueError, match="empty batch"):
        model.forward(np.ones((0, 4)))
    with pytest.raises(TypeError, match="real numbers"):
        model.forward(np.ones((2, 4), dtype=complex))
    with pytest.raises(TypeError, match="real numbers"):
        model.forward(np.array([["a"] * 4]))
    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        model.forward(np.array([[1.0, np.nan, 0.0, 0.0]]))
    with pytest.raises(RuntimeError, match="before forward"):
        fastmlp.MLP(4, [3], 2).backward(np.ones((2, 2)))
    model.forward(np.ones((2, 4)))
    with pytest.raises(ValueError, match="expected the forward output's"):
        model.backward(np.ones((3, 2)))


def test_integer_and_non_contiguous_input_are_accepted_as_documented():
    model = fastmlp.MLP(4, [3], 2, rng=0)
    X = np.arange(16, dtype=np.int64).reshape(2, 8)[:, ::2]
    assert not X.flags.c_contiguous
    np.testing.assert_allclose(model.forward(X), model.forward(np.ascontiguousarray(X, dtype=np.float32)))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown activation 'relu6'"):
        fastmlp.MLP(4, [3], 2, activation="relu6")
    with pytest.raises(ValueError, match="in_features must be a positive integer"):
        fastmlp.Linear(0, 3)
    with pytest.raises(TypeError, match="dtype"):
        fastmlp.MLP(4, [3], 2, dtype="float16")
    with pytest.raises(TypeError, match="not a fastmlp Module"):
        fastmlp.Sequential(fastmlp.Linear(2, 2), "relu")
    with pytest.raises(ValueError, match="GELU approximation"):
        fastmlp.GELU("erf")
    with pytest.raises(ValueError, match="PReLU has 3 alphas"):
        fastmlp.PReLU(3).forward(np.ones((2, 4), dtype=np.float32))


def test_train_step_is_forward_loss_backward_step():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    a, b = fastmlp.MLP(4, [5], 3, rng=0), fastmlp.MLP(4, [5], 3, rng=0)
    loss = fastmlp.CrossEntropyLoss()
    oa, ob = fastmlp.optim.Adam(a.parameters()), fastmlp.optim.Adam(b.parameters())
    for _ in range(3):
        va = a.train_step(X, y, loss, oa)
        value, grad = loss.value_and_grad(b.forward(X), y)
        b.backward(grad)
        ob.step()
        assert va == pytest.approx(value, rel=1e-6)
    for (k, x), (_, z) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(x, z, err_msg=k)
    with pytest.raises(ValueError, match="labels must lie in \\[0, 3\\)"):
        a.train_step(X, np.full(8, 3), loss, oa)
