"""Optimizers against independent element-by-element implementations of their formulas.

Each ``scalar_*`` function below is written straight from the optimizer's docstring (and
PyTorch's documented algorithm), one coordinate at a time in plain Python floats. The
optimizer classes, their param groups and the flat state buffers must agree with it after many
steps, in every parameter and every state buffer. Defaults are checked against a table of
PyTorch 2.x's defaults (written here, not read from PyTorch).
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

import fastmlp
from fastmlp import optim

STEPS = 15


# ---------------------------------------------------------------------------- scalar references
def scalar_sgd(p, g, s, t, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    g = g + weight_decay * p
    if momentum:
        s["momentum_buffer"] = g if t == 1 else momentum * s["momentum_buffer"] + (1 - dampening) * g
        g = g + momentum * s["momentum_buffer"] if nesterov else s["momentum_buffer"]
    return p - lr * g


def scalar_momentum(p, g, s, t, lr, beta=0.9, bias_correction=True, nesterov=False, weight_decay=0.0):
    g = g + weight_decay * p
    s["exp_avg"] = beta * s["exp_avg"] + (1 - beta) * g
    u = beta * s["exp_avg"] + (1 - beta) * g if nesterov else s["exp_avg"]
    if bias_correction:
        u = u / (1 - beta**t)
    return p - lr * u


def scalar_adagrad(p, g, s, t, lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                   eps=1e-10, eps_root=0.0):
    g = g + weight_decay * p
    s["sum"] = s["sum"] + g * g
    return p - lr / (1 + (t - 1) * lr_decay) * g / (math.sqrt(s["sum"] + eps_root) + eps)


def scalar_rmsprop(p, g, s, t, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                   bias_correction=False, eps_root=0.0):
    g = g + weight_decay * p
    s["square_avg"] = alpha * s["square_avg"] + (1 - alpha) * g * g
    c = 1 / (1 - alpha**t) if bias_correction else 1.0
    v = s["square_avg"] * c
    if centered:
        s["grad_avg"] = alpha * s["grad_avg"] + (1 - alpha) * g
        v = v - (s["grad_avg"] * c) ** 2
    d = math.sqrt(v + eps_root) + eps
    if momentum:
        s["momentum_buffer"] = momentum * s["momentum_buffer"] + g / d
        return p - lr * s["momentum_buffer"]
    return p - lr * g / d


def scalar_adam(p, g, s, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                decoupled_weight_decay=False, eps_root=0.0):
    b1, b2 = betas
    if decoupled_weight_decay:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    s["exp_avg"] = b1 * s["exp_avg"] + (1 - b1) * g
    s["exp_avg_sq"] = b2 * s["exp_avg_sq"] + (1 - b2) * g * g
    v = s["exp_avg_sq"]
    if amsgrad:
        s["max_exp_avg_sq"] = max(s["max_exp_avg_sq"], v)
        v = s["max_exp_avg_sq"]
    m_hat = s["exp_avg"] / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return p - lr * m_hat / (math.sqrt(v_hat + eps_root) + eps)


def scalar_adamw(p, g, s, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, eps_root=0.0):
    return scalar_adam(p, g, s, t, lr, betas, eps, weight_decay, amsgrad, True, eps_root)


def scalar_adamax(p, g, s, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    b1, b2 = betas
    g = g + weight_decay * p
    s["exp_avg"] = b1 * s["exp_avg"] + (1 - b1) * g
    s["exp_inf"] = max(b2 * s["exp_inf"], abs(g) + eps)
    return p - lr / (1 - b1**t) * s["exp_avg"] / s["exp_inf"]


def scalar_nadam(p, g, s, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                 decoupled_weight_decay=False):
    b1, b2 = betas
    if decoupled_weight_decay:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    prod = math.prod(b1 * (1 - 0.5 * 0.96 ** (i * momentum_decay)) for i in range(1, t + 1))
    s["exp_avg"] = b1 * s["exp_avg"] + (1 - b1) * g
    s["exp_avg_sq"] = b2 * s["exp_avg_sq"] + (1 - b2) * g * g
    d = math.sqrt(s["exp_avg_sq"] / (1 - b2**t)) + eps
    return p - lr * (1 - mu) / (1 - prod) * g / d - lr * mu_next / (1 - prod * mu_next) * s["exp_avg"] / d


def scalar_adadelta(p, g, s, t, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
    g = g + weight_decay * p
    s["square_avg"] = rho * s["square_avg"] + (1 - rho) * g * g
    delta = math.sqrt(s["acc_delta"] + eps) / math.sqrt(s["square_avg"] + eps) * g
    s["acc_delta"] = rho * s["acc_delta"] + (1 - rho) * delta * delta
    return p - lr * delta


SCALAR = {
    "SGD": scalar_sgd, "Momentum": scalar_momentum, "Adagrad": scalar_adagrad, "RMSprop": scalar_rmsprop,
    "Adam": scalar_adam, "AdamW": scalar_adamw, "Adamax": scalar_adamax, "NAdam": scalar_nadam,
    "Adadelta": scalar_adadelta,
}

# every optimizer and every variant the course or PyTorch names
CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("Momentum", dict(lr=0.1)),
    ("Momentum", dict(lr=0.1, bias_correction=False)),
    ("Momentum", dict(lr=0.1, nesterov=True, weight_decay=0.01)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.1)),
    ("Adagrad", dict(lr=0.1, eps=0.0, eps_root=1e-8)),  # the course's form
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.8, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, bias_correction=True, eps=0.0, eps_root=1e-8)),  # the course's
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, eps=0.0, eps_root=1e-8)),  # the course's form
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), decoupled_weight_decay=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, amsgrad=True, weight_decay=0.05)),
    ("Adamax", dict(lr=0.01)),
    ("Adamax", dict(lr=0.01, weight_decay=0.05)),
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.05, momentum_decay=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.95, eps=1e-5, weight_decay=0.01)),
]


def _model(dtype="float64"):
    return fastmlp.Sequential(fastmlp.Linear(3, 2, rng=0), fastmlp.Tanh(), fastmlp.Linear(2, 2, rng=1), dtype=dtype)


def _state_names(cls, kw):
    names = list(getattr(optim, cls).state_names)
    if cls == "SGD" and not kw.get("momentum"):
        names.remove("momentum_buffer")
    if cls == "RMSprop":
        if not kw.get("centered"):
            names.remove("grad_avg")
        if not kw.get("momentum"):
            names.remove("momentum_buffer")
    if cls in ("Adam", "AdamW") and not kw.get("amsgrad"):
        names.remove("max_exp_avg_sq")
    return names


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}{c[1]}")
def test_optimizer_matches_scalar_formula(case):
    cls, kw = case
    model = _model()
    opt = getattr(optim, cls)(model.parameters(), **kw)
    names = _state_names(cls, kw)
    p0 = np.concatenate([p.data.ravel() for p in model.parameters()])
    init = kw.get("initial_accumulator_value", 0.0)
    scalar_state = [{n: (init if n == "sum" else 0.0) for n in names} for _ in p0]
    p_scalar = [float(x) for x in p0]
    rng = np.random.default_rng(0)
    for t in range(1, STEPS + 1):
        g = rng.standard_normal(p0.size)
        g[::4] = 0.0
        off = 0
        for p in model.parameters():
            p.grad[...] = g[off:off + p.size].reshape(p.shape)
            off += p.size
        opt.step()
        p_scalar = [SCALAR[cls](p_scalar[i], float(g[i]), scalar_state[i], t, **kw) for i in range(p0.size)]
    got = np.concatenate([p.data.ravel() for p in model.parameters()])
    np.testing.assert_allclose(got, p_scalar, rtol=1e-12, atol=1e-14)
    flat = opt.flat_state()
    assert set(flat) == set(names), f"state buffers {set(flat)} != {set(names)}"
    for n in names:
        np.testing.assert_allclose(flat[n], [s[n] for s in scalar_state], rtol=1e-12, atol=1e-14, err_msg=n)


# PyTorch 2.x defaults (torch.optim, documented signatures), plus the course's variants.
TORCH_DEFAULTS = {
    "SGD": dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False),
    "Adagrad": dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10),
    "RMSprop": dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False),
    "Adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled_weight_decay=False),
    "AdamW": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False),
    "Adamax": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
    "NAdam": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                  decoupled_weight_decay=False),
    "Adadelta": dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0),
}
COURSE_DEFAULTS = {
    "Momentum": dict(beta=0.9, bias_correction=True, nesterov=False),
    "RMSprop": dict(bias_correction=False, eps_root=0.0),
    "Adam": dict(eps_root=0.0),
    "Adagrad": dict(eps_root=0.0),
}


@pytest.mark.parametrize("cls", sorted(TORCH_DEFAULTS))
def test_defaults_equal_pytorch(cls):
    params = inspect.signature(getattr(optim, cls)).parameters
    for k, v in TORCH_DEFAULTS[cls].items():
        assert params[k].default == v, f"{cls}.{k} default {params[k].default!r} != PyTorch's {v!r}"
    opt = getattr(optim, cls)(_model().parameters())
    for k, v in TORCH_DEFAULTS[cls].items():
        assert opt.param_groups[0][k] == v


@pytest.mark.parametrize("cls", sorted(COURSE_DEFAULTS))
def test_course_variant_defaults(cls):
    params = inspect.signature(getattr(optim, cls)).parameters
    for k, v in COURSE_DEFAULTS[cls].items():
        assert params[k].default == v


def test_param_groups_with_own_learning_rates_match_separate_optimizers():
    model_a, model_b = _model(), _model()
    rng = np.random.default_rng(1)
    lin0, lin1 = model_a.layers[0], model_a.layers[2]
    opt = optim.Adam([{"params": lin0.parameters(), "lr": 0.1}, {"params": lin1.parameters()}], lr=0.01)
    opt_b0 = optim.Adam(model_b.layers[0].parameters(), lr=0.1)
    opt_b1 = optim.Adam(model_b.layers[2].parameters(), lr=0.01)
    for _ in range(5):
        g = rng.standard_normal(sum(p.size for p in model_a.parameters()))
        for m in (model_a, model_b):
            m.parameters()[0].arena.grad[...] = g
        opt.step()
        opt_b0.step()
        opt_b1.step()
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_adagrad_starts_each_group_at_its_own_accumulator():
    """``initial_accumulator_value`` per param group, as torch.optim.Adagrad: s_0 = that
    value, so after g = 1 the step is lr / (sqrt(s_0 + 1) + eps)."""
    model = _model("float64")
    first, second = model.layers[0].parameters(), model.layers[2].parameters()
    opt = optim.Adagrad([{"params": first}, {"params": second, "initial_accumulator_value": 5.0}],
                        lr=0.1, initial_accumulator_value=0.5)
    for p in model.parameters():
        p.grad[...] = 1.0
    before = [p.data.copy() for p in model.parameters()]
    opt.step()
    for p, b in zip(model.parameters(), before):
        s0 = 5.0 if any(p is q for q in second) else 0.5
        np.testing.assert_allclose(b - p.data, 0.1 / (np.sqrt(s0 + 1.0) + 1e-10), rtol=1e-12, err_msg=p.name)
        np.testing.assert_array_equal(opt.flat_state()["sum"][p.offset:p.offset + p.size], s0 + 1.0)


def test_weight_decay_skipping_biases_through_groups():
    model = _model()
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = optim.SGD([{"params": weights, "weight_decay": 0.5}, {"params": biases}], lr=0.1)
    for p in model.parameters():
        p.grad[...] = 0
    before = [p.data.copy() for p in model.parameters()]
    opt.step()
    for (n, p), b in zip(model.named_parameters(), before):
        expected = b * (1 - 0.1 * 0.5) if n.endswith("weight") else b
        np.testing.assert_allclose(p.data, expected, rtol=1e-15, err_msg=n)


def test_one_group_over_a_model_is_one_kernel_call(monkeypatch):
    from fastmlp.backends import get_backend

    model = fastmlp.MLP(6, [5, 4], 3, dtype="float64")
    opt = optim.Adam(model.parameters())
    be = get_backend()
    calls = []
    original = type(be).adam_step
    monkeypatch.setattr(type(be), "adam_step", lambda self, p, *a, **k: calls.append(p.size) or original(self, p, *a, **k))
    opt.step()
    assert calls == [sum(p.size for p in model.parameters())]


def test_state_dict_round_trip_resumes_exactly():
    rng = np.random.default_rng(2)
    grads = [rng.standard_normal(sum(p.size for p in _model().parameters())) for _ in range(6)]

    def run(split):
        model = _model()
        opt = optim.NAdam(model.parameters(), lr=0.01, weight_decay=0.01)
        for i, g in enumerate(grads):
            if i == split:
                sd_model, sd_opt = model.state_dict(), opt.state_dict()
                model = _model()
                model.load_state_dict(sd_model)
                opt = optim.NAdam(model.parameters(), lr=0.5)
                opt.load_state_dict(sd_opt)
            model.parameters()[0].arena.grad[...] = g
            opt.step()
        return np.concatenate([p.data.ravel() for p in model.parameters()])

    np.testing.assert_array_equal(run(3), run(-1))


def test_optimizer_rejects_bad_hyper_parameters():
    params = _model().parameters()
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD(params, lr=-1)
    with pytest.raises(ValueError, match="beta1"):
        optim.Adam(params, betas=(1.0, 0.999))
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(params, momentum=0.0, nesterov=True)
    with pytest.raises(TypeError, match="unknown hyper-parameters"):
        optim.Adam([{"params": params, "momentum": 0.9}])
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([])
    with pytest.raises(ValueError, match="more than one param group"):
        optim.SGD([{"params": params}, {"params": params[:1]}])
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.get_optimizer("adamm", params)
    with pytest.raises(ValueError, match="divides by eps at the first step"):  # its step 1 was 1e5 g
        optim.RMSprop(params, centered=True, bias_correction=True)
    with pytest.raises(ValueError, match="divides by eps"):
        optim.RMSprop([{"params": params, "centered": True}], bias_correction=True)


def test_get_optimizer_names_the_course_variants():
    params = _model().parameters()
    assert optim.get_optimizer("amsgrad", params).param_groups[0]["amsgrad"] is True
    nesterov = optim.get_optimizer("nesterov", _model().parameters(), lr=0.1)
    assert nesterov.param_groups[0]["nesterov"] and nesterov.param_groups[0]["momentum"] == 0.9
    assert isinstance(optim.get_optimizer("momentum", _model().parameters()), optim.Momentum)
