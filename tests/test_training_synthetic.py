"""A small MLP trained with every optimizer (and variant) on a fixed synthetic problem
lowers its loss, by ``train_step`` and by hand."""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp
from fastmlp import optim


def blobs(n=240, seed=0):
    """Three Gaussian blobs in 2-D, labels 0..2 (fixed)."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 2.0], [-2.0, -1.0], [2.0, -1.0]])
    y = np.arange(n) % 3
    X = centers[y] + rng.standard_normal((n, 2)) * 0.7
    return X.astype(np.float32), y


CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("Momentum", dict(lr=0.1)),
    ("Momentum", dict(lr=0.1, nesterov=True)),
    ("Adagrad", dict(lr=0.05)),
    ("Adagrad", dict(lr=0.05, eps=0.0, eps_root=1e-8)),
    ("RMSprop", dict(lr=0.005)),
    ("RMSprop", dict(lr=0.005, bias_correction=True, eps=0.0, eps_root=1e-8)),
    ("RMSprop", dict(lr=0.005, centered=True, momentum=0.5)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("Adamax", dict(lr=0.02)),
    ("NAdam", dict(lr=0.01)),
    ("Adadelta", dict(lr=1.0)),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}{c[1]}")
def test_every_optimizer_lowers_the_loss(case, dtype):
    name, kw = case
    X, y = blobs()
    model = fastmlp.MLP(2, [16], 3, activation="tanh", dtype=dtype, rng=0)
    opt = getattr(optim, name)(model.parameters(), **kw)
    loss = fastmlp.CrossEntropyLoss()
    first = loss(model.forward(X), y)
    for _ in range(150):
        model.train_step(X, y, loss, opt)
    last = loss(model.forward(X), y)
    assert last < 0.6 * first, f"{name}{kw}: loss {first:.4f} -> {last:.4f}"
    assert (model.predict(X) == y).mean() > 0.85


def test_training_by_hand_matches_the_course_loop():
    """forward, loss, backward, step, as the course writes it, with MSE on one-hot targets and
    sigmoid outputs (the course's first network)."""
    X, y = blobs(seed=1)
    model = fastmlp.MLP(2, [10], 3, activation="sigmoid", output_activation="sigmoid", rng=1)
    opt = optim.SGD(model.parameters(), lr=0.5)
    loss = fastmlp.MSELoss()
    onehot = np.eye(3, dtype=np.float32)[y]
    history = []
    for _ in range(300):
        opt.zero_grad()
        out = model.forward(X)
        value, grad = loss.value_and_grad(out, onehot)
        model.backward(grad)
        opt.step()
        history.append(value)
    assert history[-1] < 0.5 * history[0]
    assert (model.predict(X) == y).mean() > 0.85
