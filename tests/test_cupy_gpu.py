"""GPU-only tests of the ``cupy`` backend: real CuPy against the reference and against the CPU
emulation of the same kernels. Marked ``gpu``; without a CUDA device they are skipped (with the
reason), never passed. ``tests/gpu/run.sh`` runs them, and everything else, on a GPU machine.

The generic suite (``test_backends_vs_reference.py``) also runs on ``cupy`` as soon as it is
available, which covers every op against the reference there.
"""

from __future__ import annotations

import numpy as np
import pytest
from cupy_emu_backend import emulated_backend
from helpers import DTYPES, assert_matches

import fastmlp
from fastmlp.backends import backends, get_backend

pytestmark = pytest.mark.gpu
REF = get_backend("numpy")


@pytest.fixture(scope="module")
def gpu():
    info = backends()["cupy"]
    if not info.available:
        pytest.skip(f"no CUDA device: {info.reason}")
    return get_backend("cupy")


@pytest.fixture(scope="module")
def emu():
    return emulated_backend("cupy_emulated_vs_gpu")


def test_describes_the_device(gpu):
    assert "cupy" in gpu.describe() and "sm_" in gpu.describe()


def test_host_arrays_are_refused(gpu):
    with pytest.raises(TypeError, match="never cross devices"):
        gpu.relu_forward(np.ones(3, np.float32))
    model = fastmlp.MLP(4, [3], 2).to("cupy")
    with pytest.raises(TypeError):
        model.forward(np.ones((2, 4), np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_matches_the_emulator(gpu, emu, dtype):
    """The same kernels on the GPU and on the CPU emulation, same inputs."""
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((257, 1031)).astype(dtype) * 2
    dY = rng.standard_normal(Z.shape).astype(dtype)
    Zg, dYg = gpu.asarray(Z), gpu.asarray(dY)
    for act, hyper in [("relu", ()), ("gelu", ()), ("gelu", ("tanh",)), ("mish", ()), ("sinc", ()),
                       ("elu", (0.5,)), ("softmax", ()), ("log_softmax", ())]:
        Y_e = getattr(emu, f"{act}_forward")(Z, *hyper)
        Y_g = getattr(gpu, f"{act}_forward")(Zg, *hyper)
        assert_matches(Y_g, Y_e, dtype, "forward", gpu, f"{act}_forward")
        dZ_e = getattr(emu, f"{act}_backward")(dY, Z, Y_e, *hyper)
        dZ_g = getattr(gpu, f"{act}_backward")(dYg, Zg, gpu.asarray(Y_e), *hyper)
        assert_matches(dZ_g, dZ_e, dtype, "backward", gpu, f"{act}_backward")
    labels = rng.integers(0, Z.shape[1], Z.shape[0])
    v_e, g_e = emu.cross_entropy_loss(Z, labels, label_smoothing=0.1)
    v_g, g_g = gpu.cross_entropy_loss(Zg, gpu.asarray(labels), label_smoothing=0.1)
    assert_matches(v_g, v_e, dtype, "forward", gpu, "cross_entropy value")
    assert_matches(g_g, g_e, dtype, "backward", gpu, "cross_entropy grad")
    p, m, v = (rng.standard_normal(10**6).astype(dtype) for _ in range(3))
    v = np.abs(v)
    pg, mg, vg = gpu.asarray(p), gpu.asarray(m), gpu.asarray(v)
    g = rng.standard_normal(p.size).astype(dtype)
    emu.adam_step(p, g, m, v, None, 1e-3, 3, weight_decay=0.01, decoupled_weight_decay=True)
    gpu.adam_step(pg, gpu.asarray(g), mg, vg, None, 1e-3, 3, weight_decay=0.01, decoupled_weight_decay=True)
    for name, a, e in (("p", pg, p), ("m", mg, m), ("v", vg, v)):
        assert_matches(a, e, dtype, "step", gpu, f"adam {name}")


def test_training_on_the_device(gpu):
    """A model on the GPU: the arena in device memory, batches moved once per step, 20 steps
    against the reference (float64: cuBLAS sums in its own order), then back to the host."""
    import cupy

    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((64, 20)), rng.integers(0, 5, 64)

    def run(name):
        model = fastmlp.MLP(20, [32, 16], 5, activation="relu", dtype="float64", rng=1).to(name)
        opt = fastmlp.optim.Adam(model.parameters(), lr=1e-2)
        be = get_backend(name)
        losses = [model.train_step(be.asarray(X), be.asarray(y), fastmlp.CrossEntropyLoss(), opt) for _ in range(20)]
        return model, losses

    m_ref, l_ref = run("numpy")
    m_gpu, l_gpu = run("cupy")
    assert isinstance(m_gpu._arena.data, cupy.ndarray)
    np.testing.assert_allclose(l_gpu, l_ref, rtol=1e-9)
    m_gpu.to("numpy")
    for (k, a), (_, e) in zip(m_gpu.state_dict().items(), m_ref.state_dict().items()):
        assert_matches(a, e, "float64", "step", None, k)
