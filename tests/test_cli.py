"""python -m fastmlp info | train | bench, in a subprocess as a user runs them."""

from __future__ import annotations

import csv
import os
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


# ---------------------------------------------------------------------------- output paths
def test_save_and_csv_log_create_missing_folders(tmp_path):
    out = run("train", "--subset", "300", "--epochs", "1", "--hidden", "8", "--quiet",
              "--save", "models/run1/m.npz", "--csv-log", "logs/deep/h.csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    model = fastmlp.load(tmp_path / "models" / "run1" / "m.npz")
    assert model.layer_configs()[0]["out_features"] == 8
    assert len(list(csv.DictReader(open(tmp_path / "logs" / "deep" / "h.csv")))) == 1


@pytest.mark.parametrize("option, value, says", [
    ("--save", "afile/m.npz", "afile exists and is not a folder"),
    ("--save", "afile/deeper/m.npz", "cannot create the folder"),
    ("--save", ".", "is a folder"),
    ("--csv-log", "afile/h.csv", "afile exists and is not a folder"),
    ("--plot", "afile", "afile exists and is not a folder"),
])
def test_unusable_output_path_fails_before_training(tmp_path, option, value, says):
    (tmp_path / "afile").write_text("a file, not a folder")
    out = run("train", "--subset", "300", "--epochs", "1", "--hidden", "8", option, value, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "usage: python -m fastmlp train" in out.stderr
    assert f"error: argument {option}: " in out.stderr and says in out.stderr
    assert out.stdout == ""  # nothing loaded, nothing trained
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_output_path_without_permission_fails_before_training(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for value in ("locked/m.npz", "locked/sub/m.npz"):
            out = run("train", "--subset", "300", "--epochs", "1", "--save", value, cwd=tmp_path)
            assert out.returncode == 2 and "error: argument --save:" in out.stderr, out.stderr
            assert out.stdout == ""
    finally:
        locked.chmod(0o755)


def test_output_paths_are_checked_only_after_all_options_parse(tmp_path):
    out = run("train", "--save", "a/m.npz", "--plot", "b", "--csv-log", "c/h.csv", "--epochs", "zero",
              cwd=tmp_path)
    assert out.returncode == 2
    assert list(tmp_path.iterdir()) == []  # a usage error leaves no folders behind


# ---------------------------------------------------------------------------- --val-size
def test_default_val_size_is_ten_percent_at_most_5000():
    from fastmlp.__main__ import default_val_size

    assert default_val_size(60000) == 5000  # the full MNIST keeps the documented 55000/5000 split
    assert default_val_size(50000) == 5000
    assert default_val_size(5000) == 500
    assert default_val_size(600) == 60  # XOR
    assert default_val_size(9) == 0  # too few for a validation set: none


@pytest.mark.parametrize("argv, sizes", [
    ([], (55000, 5000, 10000)),
    (["--subset", "5000"], (4500, 500, 10000)),
    (["--dataset", "xor"], (540, 60, 150)),
    (["--dataset", "xor", "--val-size", "0"], (600, 0, 150)),
    (["--subset", "2000", "--val-size", "1500"], (500, 1500, 10000)),
])
def test_validation_split(argv, sizes):
    from fastmlp.__main__ import _load_data, build_parser

    (X, _), val, (X_test, _) = _load_data(build_parser().parse_args(["train", *argv]))
    assert (len(X), 0 if val is None else len(val[0]), len(X_test)) == sizes


def test_explicit_val_size_too_large_is_an_error():
    out = run("train", "--dataset", "xor", "--val-size", "600")
    assert out.returncode != 0
    assert "--val-size 600 leaves no training samples of 600" in out.stderr


def test_xor_with_default_options_runs():
    out = run("train", "--dataset", "xor")
    assert out.returncode == 0, out.stderr
    assert "xor (540 train, 60 validation, 150 test)" in out.stdout
    assert "Epoch: 008/008 Train Acc.:" in out.stdout
    # REFERENCE_RESULTS run 6: a ReLU hidden layer learns XOR (cost <= 0.45 in the course's setup)
    costs = [float(ln.rsplit("Cost: ", 1)[1]) for ln in out.stdout.splitlines() if "Cost: " in ln]
    assert costs[-1] < 0.45 < costs[0]
    assert float(out.stdout.split("Test accuracy: ")[1].split("%")[0]) > 90


def test_documented_quick_run_subset_5000_runs():
    out = run("train", "--subset", "5000", "--epochs", "1", "--log-every", "0")  # docs/usage.md
    assert out.returncode == 0, out.stderr
    assert "mnist (4500 train, 500 validation, 10000 test)" in out.stdout
    assert float(out.stdout.split("Test accuracy: ")[1].split("%")[0]) > 75
