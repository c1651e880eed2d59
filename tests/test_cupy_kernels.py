"""Every kernel of ``cupy_kernels.cu``, run on the CPU through the emulation (``cuda_emu``),
against the NumPy reference.

Launched directly (not through the backend) with grids deliberately smaller than the data,
odd block sizes, sizes from 0 to a few thousand, and in-place aliasing where a kernel allows
it. Also the launcher's own contract: arguments converted as CuPy converts them, and a wrong
count, scalar type or array dtype rejected before anything runs.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu.emu import kernels_needing_threads
from cupy_emu_backend import emu_module
from helpers import DTYPES, assert_matches
from test_backends_vs_reference import ACTIVATION_CASES

from fastmlp.backends import get_backend
from fastmlp.backends.cupy_backend import ACTIVATION_CODES, KERNEL_SOURCE, KERNELS, NAME_EXPRESSIONS

REF = get_backend("numpy")
SIZES = [0, 1, 2, 7, 255, 256, 257, 1031, 3001]
# (grid, block): one thread; a prime block smaller than a warp; grids far smaller than the data
LAUNCHES = [(1, 1), (2, 37), (3, 64), (5, 256), (1, 1024)]
CT = {"float32": "float", "float64": "double"}


@pytest.fixture(scope="module")
def module():
    return emu_module(KERNEL_SOURCE.read_text(), NAME_EXPRESSIONS)


def k(module, name, dtype):
    return module.get_function(f"{name}<{CT[str(np.dtype(dtype))]}>")


def rand(rng, shape, dtype, scale=2.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _act_code(name, hyper):
    """(activation code, h1, h2) for an op name and its positional hyper-parameters."""
    if name == "gelu":
        return ACTIVATION_CODES["gelu_tanh" if hyper == ("tanh",) else "gelu"], 0.0, 0.0
    if name == "sinc":
        return ACTIVATION_CODES["sinc_normalized" if hyper == (True,) else "sinc"], 0.0, 0.0
    defaults = {"leaky_relu": (0.01,), "elu": (1.0,), "softplus": (1.0, 20.0), "silu": (1.0,)}
    h = tuple(hyper) or defaults.get(name, ())
    h = h + (0.0,) * (2 - len(h))
    return ACTIVATION_CODES[name], h[0], h[1]


ELEMENTWISE = sorted(set(ACTIVATION_CASES) - {"softmax", "log_softmax"})


def test_kernel_list_matches_source():
    """The backend's kernel list is exactly the kernels of the .cu file, and every activation
    op has a code."""
    src = KERNEL_SOURCE.read_text()
    import re

    assert tuple(re.findall(r"__global__ void (\w+)\(", src)) == KERNELS
    assert set(ELEMENTWISE) <= set(ACTIVATION_CODES)


@pytest.mark.parametrize("launch", LAUNCHES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_activation_kernels(module, name, dtype, launch):
    grid, block = launch
    T = np.dtype(dtype).type
    fwd, bwd = k(module, "activation_forward", dtype), k(module, "activation_backward", dtype)
    for hyper in ACTIVATION_CASES[name]:
        code, h1, h2 = _act_code(name, hyper)
        for n in SIZES:
            rng = np.random.default_rng(n)
            Z, dY = rand(rng, n, dtype), rand(rng, n, dtype, 1.0)
            Y_ref = getattr(REF, f"{name}_forward")(Z.copy(), *hyper)
            Y = np.full_like(Z, np.nan)
            fwd((grid,), (block,), (Z, Y, np.int64(n), np.int32(code), T(h1), T(h2)))
            assert_matches(Y, Y_ref, dtype, "forward", what=f"{name}{hyper} forward n={n}")
            ref = getattr(REF, f"{name}_backward")(dY.copy(), Z.copy(), Y_ref.copy(), *hyper)
            dZ_ref = ref[0] if isinstance(ref, tuple) else ref
            dZ = np.full_like(Z, np.nan)
            dparam = np.full_like(Z, np.nan) if name in ("softplus", "silu") else None
            bwd((grid,), (block,), (dY, Z, Y_ref, dZ, dparam, np.int64(n), np.int32(code), T(h1), T(h2)))
            assert_matches(dZ, dZ_ref, dtype, "backward", what=f"{name}{hyper} backward n={n}")
            if dparam is not None:
                assert_matches(dparam.sum().reshape(1), ref[1], dtype, "backward", what=f"{name} dbeta n={n}")
            # in place: Y over Z, dZ over dY
            Zc = Z.copy()
            fwd((grid,), (block,), (Zc, Zc, np.int64(n), np.int32(code), T(h1), T(h2)))
            assert_matches(Zc, Y_ref, dtype, "forward", what=f"{name} in place")
            dYc = dY.copy()
            bwd((grid,), (block,), (dYc, Z, Y_ref, dYc, None, np.int64(n), np.int32(code), T(h1), T(h2)))
            assert_matches(dYc, dZ_ref, dtype, "backward", what=f"{name} backward in place")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["identity", "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("shape", [(0, 5), (1, 1), (3, 7), (65, 33), (2, 3001)], ids=str)
def test_dense_kernels(module, shape, activation, dtype):
    """dense_forward in place over the GEMM output; dense_backward with its bias reduction over
    blocks of every shape, with and without db, and with dZ written over dY."""
    rows, cols = shape
    rng = np.random.default_rng(rows * 7 + cols)
    T = np.dtype(dtype).type
    Z, b = rand(rng, shape, dtype), rand(rng, cols, dtype)
    code = np.int32(ACTIVATION_CODES[activation])
    for grid, block in [(1, 1), (2, 37), (7, 256)]:
        for bias in (b, None):
            Y = Z.copy()
            k(module, "dense_forward", dtype)((grid,), (block,), (Y, bias, np.int64(rows), np.int64(cols), code, T(0), T(0)))
            Zb = Z + bias if bias is not None else Z
            assert_matches(Y, REF._fused_forward(Zb.copy(), activation), dtype, "forward", what="dense_forward")
    Y = REF._fused_forward(Z.copy(), activation)
    dY = rand(rng, shape, dtype, 1.0)
    dZ_ref = REF._fused_backward(dY.copy(), Y, activation)
    for grid, block in [(1, (1, 1)), (1, (32, 8)), (2, (5, 3)), (3, (7, 1)), (1, (1, 9)), (4, (32, 32))]:
        dZ, db = np.full_like(dY, np.nan), np.full(cols, np.nan, dtype)
        k(module, "dense_backward", dtype)((grid,), block, (dY, Y, dZ, db, np.int64(rows), np.int64(cols), code))
        assert_matches(dZ, dZ_ref, dtype, "backward", what=f"dZ {block}")
        assert_matches(db, dZ_ref.sum(axis=0), dtype, "backward", what=f"db {block}")
        dYc = dY.copy()
        k(module, "dense_backward", dtype)((grid,), block, (dYc, Y, dYc, None, np.int64(rows), np.int64(cols), code))
        assert_matches(dYc, dZ_ref, dtype, "backward", what=f"dZ over dY {block}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (4, 3001), (300, 7), (33, 129)], ids=str)
def test_row_kernels(module, shape, dtype):
    """softmax and log_softmax, forward and backward, one block per row, blocks of any size,
    fewer blocks than rows; forward written over its input."""
    rows, cols = shape
    rng = np.random.default_rng(rows + cols)
    Z, dY = rand(rng, shape, dtype, 4.0), rand(rng, shape, dtype, 1.0)
    n = (np.int64(rows), np.int64(cols))
    # 1024 threads only on few rows: every barrier is a switch through every thread
    launches = [(1, 1), (2, 19), (3, 32), (5, 128)] + ([(1, 1024)] if rows <= 4 else [])
    for grid, block in launches:
        for name in ("softmax", "log_softmax"):
            Y_ref = getattr(REF, f"{name}_forward")(Z.copy())
            Y = np.full_like(Z, np.nan)
            k(module, f"{name}_forward", dtype)((grid,), (block,), (Z, Y, *n))
            assert_matches(Y, Y_ref, dtype, "forward", what=f"{name} {block}")
            Zc = Z.copy()
            k(module, f"{name}_forward", dtype)((grid,), (block,), (Zc, Zc, *n))
            assert_matches(Zc, Y_ref, dtype, "forward", what=f"{name} in place")
            dZ = np.full_like(Z, np.nan)
            k(module, f"{name}_backward", dtype)((grid,), (block,), (dY, Y_ref, dZ, *n))
            assert_matches(dZ, getattr(REF, f"{name}_backward")(dY, Z, Y_ref), dtype, "backward", what=f"{name} bwd")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (64, 10), (3, 2049)], ids=str)
@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_cross_entropy_kernel(module, shape, ls, dtype):
    rows, cols = shape
    rng = np.random.default_rng(cols)
    T = np.dtype(dtype).type
    logits = rand(rng, shape, dtype, 3.0)
    labels = rng.integers(0, cols, rows)
    probs = rng.dirichlet(np.ones(cols), rows).astype(dtype)
    for target, lab, pr in ((labels, labels.astype(np.int64), None), (probs, None, probs)):
        v_ref, g_ref = REF.cross_entropy_loss(logits, target, reduction="none", label_smoothing=ls)
        for grid, block in [(1, 1), (2, 37), (4, 256)]:
            L, G = np.full(rows, np.nan, dtype), np.full_like(logits, np.nan)
            k(module, "cross_entropy_loss", dtype)(
                (grid,), (block,), (logits, lab, pr, L, G, np.int64(rows), np.int64(cols), T(ls), T(1)))
            assert_matches(L, v_ref, dtype, "forward", what="per-row loss")
            assert_matches(G, g_ref, dtype, "backward", what="gradient")
            k(module, "cross_entropy_loss", dtype)(
                (grid,), (block,), (logits, lab, pr, L, None, np.int64(rows), np.int64(cols), T(ls), T(0.5)))
            assert_matches(L, v_ref, dtype, "forward", what="per-row loss without gradient")


POINTWISE = [("mse_loss", ()), ("l1_loss", ()), ("huber_loss", (0.7,)), ("bce_with_logits_loss", ()), ("bce_loss", ())]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POINTWISE, ids=lambda c: c[0])
def test_pointwise_loss_kernels(module, case, dtype):
    op, hyper = case
    T = np.dtype(dtype).type
    for n in SIZES:
        rng = np.random.default_rng(n)
        out, target = rand(rng, n, dtype), rand(rng, n, dtype)
        if op.startswith("bce"):
            target = rng.integers(0, 2, n).astype(dtype)
        if op == "bce_loss":
            out = REF.sigmoid_forward(out)
            out[::7] = 0.0  # log(0) is clamped at -100
        kw = {"delta": hyper[0]} if hyper else {}
        v_ref, g_ref = getattr(REF, op)(out, target, reduction="none", **kw)
        for grid, block in [(1, 1), (3, 37)]:
            L, G = np.full_like(out, np.nan), np.full_like(out, np.nan)
            k(module, op, dtype)((grid,), (block,), (out, target, L, G, np.int64(n), *(T(h) for h in hyper), T(1)))
            assert_matches(L, v_ref, dtype, "forward", what=f"{op} n={n}")
            assert_matches(G, g_ref, dtype, "backward", what=f"{op} grad n={n}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_nll_kernel_writes_the_whole_gradient(module, dtype):
    rng = np.random.default_rng(0)
    for rows, cols in [(1, 1), (7, 3), (50, 1031)]:
        logp = REF.log_softmax_forward(rand(rng, (rows, cols), dtype))
        t = rng.integers(0, cols, rows)
        v_ref, g_ref = REF.nll_loss(logp, t, reduction="sum")
        L, G = np.full(rows, np.nan, dtype), np.full_like(logp, np.nan)
        k(module, "nll_loss", dtype)((3,), (37,), (logp, t.astype(np.int64), L, G, np.int64(rows), np.int64(cols),
                                                   np.dtype(dtype).type(1)))
        assert_matches(L.sum(), v_ref, dtype, "forward", what="value")
        assert_matches(G, g_ref, dtype, "backward", what="gradient")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 1000, 3001])
def test_prelu_kernels(module, n, dtype):
    rng = np.random.default_rng(n)
    T64 = np.int64
    for n_alpha in (1, 7):
        rows = n // n_alpha if n_alpha > 1 else n
        shape = (rows, n_alpha) if n_alpha > 1 else (n,)
        Z, dY = rand(rng, shape, dtype), rand(rng, shape, dtype, 1.0)
        alpha = rng.uniform(0.05, 0.5, n_alpha).astype(dtype)
        Y = np.full_like(Z, np.nan)
        k(module, "prelu_forward", dtype)((2,), (37,), (Z, alpha, Y, T64(Z.size), T64(n_alpha)))
        assert_matches(Y, REF.prelu_forward(Z, alpha), dtype, "forward", what="prelu")
        dZ_ref, da_ref = REF.prelu_backward(dY, Z, Y, alpha)
        dZ, contrib = np.full_like(Z, np.nan), np.full_like(Z, np.nan)
        k(module, "prelu_backward", dtype)((2,), (37,), (dY, Z, alpha, dZ, contrib, T64(Z.size), T64(n_alpha)))
        assert_matches(dZ, dZ_ref, dtype, "backward", what="prelu dZ")
        assert_matches(contrib.reshape(-1, n_alpha).sum(axis=0).reshape(alpha.shape), da_ref, dtype, "backward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 37, 3001])
def test_optimizer_kernels_every_state(module, n, dtype):
    """Each optimizer kernel for 3 steps with a grid of 2 blocks of 37 threads; every state
    buffer compared (the backend-level suite covers every hyper-parameter set)."""
    T = np.dtype(dtype).type
    rng = np.random.default_rng(n)
    cases = {
        "adam_step": (3, lambda p, g, s, t: REF.adam_step(p, g, *s, lr=0.01, step=t, amsgrad=True, weight_decay=0.1),
                      lambda t: (T(0.01 / (1 - 0.9**t)), T(0.9), T(0.1), T(0.999), T(1 - 0.999), T(1e-8), T(0.1),
                                 T(1 - 0.001), T(1 - 0.999**t), T(0), np.int32(0))),
        "rmsprop_step": (3, lambda p, g, s, t: REF.rmsprop_step(p, g, *s, lr=0.01, step=t, centered=True, momentum=0.9),
                         lambda t: (T(0.01), T(0.99), T(1 - 0.99), T(1e-8), T(0), T(0.9), T(1), T(0))),
        "adadelta_step": (2, lambda p, g, s, t: REF.adadelta_step(p, g, *s, lr=1.0, step=t),
                          lambda t: (T(1.0), T(0.9), T(1 - 0.9), T(1e-6), T(0))),
    }
    for name, (n_state, ref_step, scalars) in cases.items():
        p_ref = rand(rng, n, dtype, 1.0)
        s_ref = [np.zeros(n, dtype) for _ in range(n_state)]
        p, s = p_ref.copy(), [x.copy() for x in s_ref]
        for t in range(1, 4):
            g = rand(rng, n, dtype, 1.0)
            g_before = g.copy()
            ref_step(p_ref, g.copy(), s_ref, t)
            k(module, name, dtype)((2,), (37,), (p, g, *s, np.int64(n), *scalars(t)))
            assert np.array_equal(g, g_before), "the gradient must not be written"
        assert_matches(p, p_ref, dtype, "step", what=f"{name} p")
        for i in range(n_state):
            assert_matches(s[i], s_ref[i], dtype, "step", what=f"{name} state {i}")


# ---------------------------------------------------------------------------- the launcher
def test_threaded_kernels_are_found_in_the_source():
    src = KERNEL_SOURCE.read_text()
    needing = kernels_needing_threads(src) & set(KERNELS)
    assert needing == {"dense_backward", "softmax_forward", "log_softmax_forward", "softmax_backward",
                       "log_softmax_backward", "cross_entropy_loss"}


def test_launcher_rejects_what_cupy_would_pass_wrongly(module):
    fwd = k(module, "activation_forward", "float32")
    Z = np.ones(4, np.float32)
    Y = np.empty_like(Z)
    good = (Z, Y, np.int64(4), np.int32(1), np.float32(0), np.float32(0))
    fwd((1,), (4,), good)
    with pytest.raises(TypeError, match="takes 6 arguments"):
        fwd((1,), (4,), good[:5])
    with pytest.raises(TypeError, match="CuPy would pass float64"):  # a Python float is a double
        fwd((1,), (4,), good[:4] + (0.0, np.float32(0)))
    with pytest.raises(TypeError, match="CuPy would pass int64"):  # a Python int is a long long
        fwd((1,), (4,), good[:3] + (1,) + good[4:])
    with pytest.raises(TypeError, match="expected an array of float32, got float64"):
        fwd((1,), (4,), (Z.astype(np.float64),) + good[1:])
    with pytest.raises(TypeError, match="expected a int64 scalar"):
        fwd((1,), (4,), good[:2] + (None,) + good[3:])
    with pytest.raises(ValueError, match="not C-contiguous"):
        fwd((1,), (4,), (np.ones(8, np.float32)[::2],) + good[1:])
    Y.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fwd((1,), (4,), good)
    with pytest.raises(ValueError, match="more than 1024"):
        fwd((1,), (33, 32), good)
    with pytest.raises(ValueError, match=">= 1"):
        fwd((0,), (4,), good)
    # a Python int where CuPy's int64 is right, and None for an optional pointer, are accepted
    bwd = k(module, "activation_backward", "float64")
    x = np.ones(3)
    bwd((1,), (3,), (x, x, x, np.empty(3), None, 3, np.int32(0), np.float64(0), 0.0))


def test_serial_launch_of_a_syncing_kernel_is_an_error(module):
    """A kernel that reaches __syncthreads without the threaded launcher is reported, never run
    silently wrong."""
    kern = k(module, "softmax_forward", "float64")
    kern.threaded = False
    try:
        with pytest.raises(RuntimeError, match="__syncthreads"):
            kern((1,), (4,), (np.ones((2, 3)), np.empty((2, 3)), np.int64(2), np.int64(3)))
    finally:
        kern.threaded = True


def test_emulation_catches_barrier_bugs():
    """The fiber schedule makes a missing __syncthreads fail every time, and reports a barrier
    that only part of a block reaches (tests/cuda_emu/canary.cu)."""
    from cuda_emu.emu import EmuModule

    path = KERNEL_SOURCE.parents[2] / "tests" / "cuda_emu" / "canary.cu"
    exprs = ["block_sum_barrier<double>", "divergent_barrier<double>"]
    mod = EmuModule(path.read_text(), exprs, path)
    kern = mod.get_function("block_sum_barrier<double>")
    out = np.zeros(1)
    x1, x2 = np.arange(1.0, 33.0), np.arange(100.0, 132.0)
    kern((1,), (32,), (x1, out, np.int32(1)))
    assert out[0] == x1.sum()
    kern((1,), (32,), (x2, out, np.int32(1)))
    assert out[0] == x2.sum()
    kern((1,), (32,), (x1, out, np.int32(0)))  # no barrier: thread 0 sums its own x1[0] and stale x2[1:]
    assert out[0] == x1[0] + x2[1:].sum() != x1.sum()
    with pytest.raises(RuntimeError, match="some threads of a block but not all"):
        mod.get_function("divergent_barrier<double>")((1,), (8,), (np.zeros(8),))
