"""Losses: values from their definitions (computed independently here), reductions, and
clear errors for bad targets or non-finite values."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastmlp


def test_cross_entropy_of_uniform_logits_is_log_classes():
    out = np.zeros((4, 10))
    assert fastmlp.CrossEntropyLoss()(out, np.arange(4)) == pytest.approx(math.log(10))


def test_cross_entropy_value_from_definition_with_label_smoothing():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3, 4))
    y = np.array([0, 3, 1])
    ls = 0.2
    total = 0.0
    for n in range(3):
        logsum = math.log(sum(math.exp(v) for v in z[n]))
        for c in range(4):
            q = (1 - ls) * (c == y[n]) + ls / 4
            total += -q * (z[n, c] - logsum)
    loss = fastmlp.CrossEntropyLoss(label_smoothing=ls)
    assert loss(z, y) == pytest.approx(total / 3, rel=1e-12)
    assert fastmlp.CrossEntropyLoss(reduction="sum", label_smoothing=ls)(z, y) == pytest.approx(total, rel=1e-12)
    per = fastmlp.CrossEntropyLoss(reduction="none", label_smoothing=ls)(z, y)
    assert per.shape == (3,) and per.sum() == pytest.approx(total, rel=1e-12)


def test_cross_entropy_with_probability_targets_equals_labels_when_one_hot():
    z = np.random.default_rng(1).standard_normal((5, 3))
    y = np.array([0, 2, 1, 1, 0])
    assert fastmlp.CrossEntropyLoss()(z, np.eye(3)[y]) == pytest.approx(fastmlp.CrossEntropyLoss()(z, y))


def test_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[1000.0, 0.0], [-1000.0, 0.0]])
    v, g = fastmlp.CrossEntropyLoss().value_and_grad(z, np.array([0, 1]))
    assert v == pytest.approx(0.0, abs=1e-12) and np.isfinite(g).all()


def test_nll_after_log_softmax_equals_cross_entropy():
    z = np.random.default_rng(2).standard_normal((6, 4))
    y = np.array([0, 1, 2, 3, 0, 1])
    logp = fastmlp.LogSoftmax().forward(z)
    assert fastmlp.NLLLoss()(logp, y) == pytest.approx(fastmlp.CrossEntropyLoss()(z, y), rel=1e-12)


def test_mse_l1_huber_values_from_definitions():
    out = np.array([[0.0, 2.0], [1.0, -3.0]])
    tgt = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert fastmlp.MSELoss()(out, tgt) == pytest.approx((1 + 4 + 0 + 9) / 4)
    assert fastmlp.L1Loss(reduction="sum")(out, tgt) == pytest.approx(1 + 2 + 0 + 3)
    # huber delta 1: 0.5*1, 1*(2-0.5), 0, 1*(3-0.5)
    assert fastmlp.HuberLoss()(out, tgt) == pytest.approx((0.5 + 1.5 + 0 + 2.5) / 4)


def test_bce_losses_from_definitions_and_clamping():
    z = np.array([[-2.0, 0.5, 3.0]])
    t = np.array([[0.0, 1.0, 1.0]])
    p = 1 / (1 + np.exp(-z))
    expected = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
    assert fastmlp.BCEWithLogitsLoss()(z, t) == pytest.approx(expected, rel=1e-12)
    assert fastmlp.BCELoss()(p, t) == pytest.approx(expected, rel=1e-12)
    # log(0) is clamped at -100, as PyTorch does
    assert fastmlp.BCELoss()(np.array([[0.0]]), np.array([[1.0]])) == pytest.approx(100.0)


def test_value_and_grad_returns_the_same_value():
    z = np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 0])
    loss = fastmlp.CrossEntropyLoss()
    v, g = loss.value_and_grad(z, y)
    assert v == loss(z, y) and g.dtype == np.float32 and g.shape == z.shape


def test_label_errors():
    z = np.zeros((3, 4))
    ce = fastmlp.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), got values in \[0, 4\]"):
        ce(z, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        ce(z, np.array([0, 1, -1]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        ce(z, np.array([0, 1]))
    with pytest.raises(ValueError, match="whole numbers"):
        ce(z, np.array([0.5, 1, 2]))
    with pytest.raises(TypeError, match="integers"):
        ce(z, np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match=r"probability targets must lie in \[0, 1\]"):
        ce(z, np.full((3, 4), 2.0))


def test_shape_and_value_errors():
    with pytest.raises(ValueError, match="differs from output shape"):
        fastmlp.MSELoss()(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(TypeError, match="floating"):
        fastmlp.MSELoss()(np.zeros((2, 3), dtype=int), np.zeros((2, 3)))
    with pytest.raises(FloatingPointError, match="NaN"):
        fastmlp.MSELoss()(np.zeros((2, 3)), np.full((2, 3), np.nan))
    with pytest.raises(FloatingPointError, match="diverged"):
        fastmlp.MSELoss()(np.array([[np.inf]]), np.zeros((1, 1)))
    with pytest.raises(ValueError, match="probabilities"):
        fastmlp.BCELoss()(np.array([[1.5]]), np.array([[1.0]]))
    with pytest.raises(ValueError, match="targets must lie"):
        fastmlp.BCEWithLogitsLoss()(np.array([[1.5]]), np.array([[2.0]]))
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        fastmlp.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match="unknown loss"):
        fastmlp.get_loss("hinge")
    with pytest.raises(ValueError, match="label_smoothing"):
        fastmlp.CrossEntropyLoss(label_smoothing=1.5)
