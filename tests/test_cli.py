"""python -m fastmlp info | train | bench, in a subprocess as a user runs them."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest

import fastmlp


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fastmlp", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_info_reports_every_backend():
    out = run("info", "--ops")
    assert out.returncode == 0, out.stderr
    assert f"fastmlp {fastmlp.__version__}" in out.stdout
    for name, info in fastmlp.backends().items():
        line = next(ln for ln in out.stdout.splitlines() if ln.startswith(name + " "))
        assert ("yes" if info.available else "no") in line
    assert "native:" in out.stdout


def test_short_train_saves_model_plots_and_log(tmp_path):
    pytest.importorskip("matplotlib")
    out = run("train", "--epochs", "1", "--subset", "2000", "--val-size", "200", "--hidden", "32",
              "--log-every", "10", "--save", "m.npz", "--plot", "figs", "--csv-log", "h.csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Epoch: 001/001 | Batch 000/015 | Cost:" in out.stdout
    assert "Epoch: 001/001 | Batch 010/015 | Cost:" in out.stdout
    assert "Epoch: 001/001 Train Acc.:" in out.stdout and "| Validation Acc.:" in out.stdout
    acc = float(out.stdout.split("Test accuracy: ")[1].split("%")[0])
    assert acc > 60
    model = fastmlp.load(tmp_path / "m.npz")
    assert [c["type"] for c in model.layer_configs()] == ["linear", "relu", "linear"]
    X, y = fastmlp.datasets.load_mnist("test")
    assert abs(100 * fastmlp.accuracy(model, (X, y)) - acc) < 0.01
    for png in ("history.png", "misclassified.png"):
        assert (tmp_path / "figs" / png).read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(open(tmp_path / "h.csv")))
    assert len(rows) == 1 and float(rows[0]["loss"]) > 0


def test_train_with_mse_and_other_options(tmp_path):
    out = run("train", "--dataset", "xor", "--hidden", "8", "--activation", "tanh", "--loss", "mse",
              "--output-activation", "sigmoid", "--optimizer", "sgd", "--lr", "0.5", "--epochs", "2",
              "--val-size", "0", "--quiet", "--dtype", "float64", "--scheduler", "cosine")
    assert out.returncode == 0, out.stderr
    assert "Test accuracy:" in out.stdout and "Epoch:" not in out.stdout


@pytest.mark.parametrize("args", [
    ["train", "--epochs", "zero"],
    ["train", "--optimizer", "sgdd"],
    ["train", "--lr", "-1"],
    ["train", "--bogus"],
    ["frobnicate"],
    [],
])
def test_bad_options_get_a_usage_error(args):
    out = run(*args)
    assert out.returncode == 2
    assert "usage:" in out.stderr and "error:" in out.stderr


@pytest.mark.parametrize("flags, where", [((), "each backend in its own worker process"),
                                          (("--same-process",), "all backends in this process")])
def test_bench_runs_side_by_side(flags, where):
    out = run("bench", "--models", "784-128-10", "--repeat", "2", *flags)
    assert out.returncode == 0, out.stderr
    assert where in out.stdout  # says how it was measured
    header = next(ln for ln in out.stdout.splitlines() if ln.startswith("model"))
    assert "numpy" in header and "numpy_inplace" in header
    row = next(ln for ln in out.stdout.splitlines() if ln.startswith("784-128-10"))
    assert "(" in row and "1.00x" in row  # the reference against itself


def test_bench_baseline_matches_the_library():
    """The in-place NumPy baseline computes the same training step as fastmlp."""
    from fastmlp.bench import InplaceNumpyMLP, batch_data

    widths, batch = (20, 16, 16, 5), 8
    X, y = batch_data(widths, batch, "float64")
    base = InplaceNumpyMLP(widths, batch, "float64", seed=3)
    model = fastmlp.MLP(20, [16, 16], 5, dtype="float64")
    model.load_state_dict({f"{2 * k}.weight": W for k, W in enumerate(base.W)}
                          | {f"{2 * k}.bias": b for k, b in enumerate(base.b)})
    opt = fastmlp.optim.Adam(model.parameters())
    for _ in range(3):
        lb = base.step(X, y)
        lm = model.train_step(X, y, fastmlp.CrossEntropyLoss(), opt)
        assert lb == pytest.approx(lm, rel=1e-10)
    for k, W in enumerate(base.W):
        np.testing.assert_allclose(model.state_dict()[f"{2 * k}.weight"], W, rtol=1e-10, atol=1e-12)
