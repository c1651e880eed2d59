"""Learning-rate schedulers (PyTorch's closed forms), gradient clipping, initialisers, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastmlp
from fastmlp import init, optim
from fastmlp.optim import lr_scheduler


def _opt(lr=0.1):
    return optim.SGD(fastmlp.MLP(3, [4], 2).parameters(), lr=lr)


def _lrs(sched, epochs):
    out = []
    for _ in range(epochs):
        out.append(sched.optimizer.param_groups[0]["lr"])
        sched.step()
    return out


def test_step_lr():
    s = lr_scheduler.StepLR(_opt(1.0), step_size=2, gamma=0.5)
    assert _lrs(s, 6) == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])


def test_exponential_lr():
    s = lr_scheduler.ExponentialLR(_opt(1.0), gamma=0.9)
    assert _lrs(s, 4) == pytest.approx([1, 0.9, 0.81, 0.729])


def test_cosine_annealing_lr():
    s = lr_scheduler.CosineAnnealingLR(_opt(1.0), T_max=4, eta_min=0.1)
    expected = [0.1 + 0.9 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)]
    assert _lrs(s, 5) == pytest.approx(expected)
    assert s.get_last_lr() == pytest.approx([0.1 + 0.9 * (1 + math.cos(math.pi * 5 / 4)) / 2])


def test_reduce_lr_on_plateau():
    opt = _opt(1.0)
    s = lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    lrs = []
    for metric in [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.5]:
        s.step(metric)
        lrs.append(opt.param_groups[0]["lr"])
    # better, better, bad, bad (> patience: halve), bad, bad (halve), better
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    with pytest.raises(ValueError):
        lr_scheduler.ReduceLROnPlateau(opt, mode="median")


def test_scheduler_bad_arguments():
    with pytest.raises(ValueError):
        lr_scheduler.StepLR(_opt(), step_size=0)
    with pytest.raises(TypeError):
        lr_scheduler.StepLR(object(), step_size=1)


def test_clip_grad_norm_and_value():
    model = fastmlp.MLP(3, [4], 2, dtype="float64")
    g = np.random.default_rng(0).standard_normal(model.parameters()[0].arena.size)
    arena = model.parameters()[0].arena
    arena.grad[:] = g
    total = optim.clip_grad_norm_(model, max_norm=1.0)
    assert total == pytest.approx(np.linalg.norm(g))
    assert np.linalg.norm(arena.grad) == pytest.approx(1.0, rel=1e-5)
    arena.grad[:] = g
    assert optim.clip_grad_norm_(model.parameters(), max_norm=100.0) == pytest.approx(np.linalg.norm(g))
    np.testing.assert_array_equal(arena.grad, g)  # under the limit: untouched
    assert optim.clip_grad_norm_(model, 1.0, norm_type=math.inf) == pytest.approx(np.abs(g).max())
    arena.grad[:] = g
    optim.clip_grad_value_(model, 0.5)
    np.testing.assert_array_equal(arena.grad, np.clip(g, -0.5, 0.5))
    arena.grad[0] = np.nan
    with pytest.raises(RuntimeError, match="norm"):
        optim.clip_grad_norm_(model, 1.0, error_if_nonfinite=True)


def test_clip_only_the_given_parameters():
    model = fastmlp.MLP(3, [4], 2, dtype="float64")
    arena = model.parameters()[0].arena
    arena.grad[:] = 10.0
    optim.clip_grad_value_(model.layers[2].parameters(), 1.0)
    assert np.all(model.layers[0].weight.grad == 10.0) and np.all(model.layers[2].weight.grad == 1.0)


@pytest.mark.parametrize("fn,expected_var", [
    (lambda w: init.xavier_uniform_(w, rng=0), 2 / (300 + 200)),
    (lambda w: init.xavier_normal_(w, rng=0), 2 / (300 + 200)),
    (lambda w: init.kaiming_uniform_(w, nonlinearity="relu", rng=0), 2 / 300),
    (lambda w: init.kaiming_normal_(w, nonlinearity="relu", rng=0), 2 / 300),
    (lambda w: init.lecun_uniform_(w, rng=0), 1 / 300),
    (lambda w: init.lecun_normal_(w, rng=0), 1 / 300),
    (lambda w: init.normal_(w, 0.0, 0.1, rng=0), 0.01),
    (lambda w: init.uniform_(w, -1, 1, rng=0), 1 / 3),
])
def test_initialiser_variances(fn, expected_var):
    w = np.empty((200, 300))  # (out, in): fan_in 300, fan_out 200
    assert fn(w) is w
    assert w.var() == pytest.approx(expected_var, rel=0.03)
    assert abs(w.mean()) < 0.01 * math.sqrt(expected_var) * 10


def test_constant_zeros_orthogonal():
    w = np.empty((5, 8))
    init.constant_(w, 0.3)
    assert np.all(w == 0.3)
    init.zeros_(w)
    assert not w.any()
    init.orthogonal_(w, rng=0)
    np.testing.assert_allclose(w @ w.T, np.eye(5), atol=1e-12)
    tall = init.orthogonal_(np.empty((8, 5)), gain=2.0, rng=0)
    np.testing.assert_allclose(tall.T @ tall, 4 * np.eye(5), atol=1e-12)


def test_init_on_a_parameter_and_errors():
    layer = fastmlp.Linear(3, 2)
    init.zeros_(layer.weight)
    assert not layer.weight.data.any()
    with pytest.raises(ValueError, match="at least 2 dims"):
        init.xavier_uniform_(np.empty(3))
    with pytest.raises(TypeError, match="floating"):
        init.zeros_(np.empty((2, 2), dtype=int))
    with pytest.raises(ValueError, match="nonlinearity"):
        init.calculate_gain("swish")
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))


def test_seed_and_rng_arguments():
    fastmlp.seed(3)
    a = init.normal_(np.empty(5))
    fastmlp.seed(3)
    np.testing.assert_array_equal(a, init.normal_(np.empty(5)))
    np.testing.assert_array_equal(init.normal_(np.empty(5), rng=7), init.normal_(np.empty(5), rng=np.random.default_rng(7)))
    with pytest.raises(ValueError):
        fastmlp.seed(-1)
    with pytest.raises(TypeError):
        init.normal_(np.empty(5), rng="x")
