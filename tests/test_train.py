"""fit, History, evaluate, accuracy, callbacks, schedulers, misclassified and the plots."""

from __future__ import annotations

import csv
import io
import math
import re

import numpy as np
import pytest

import fastmlp
from fastmlp import MLP, EarlyStopping, History, ModelCheckpoint, fit
from fastmlp.callbacks import CSVLogger
from fastmlp.data import ArrayDataset, DataLoader, OneHot
from fastmlp.optim import SGD, lr_scheduler


def blobs(n=300, seed=0):
    """Three well-separated Gaussian blobs in 2-D."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    y = rng.integers(0, 3, n)
    X = centers[y] + rng.normal(0, 0.6, (n, 2))
    return X.astype(np.float32), y


def test_fit_learns_and_logs_like_the_course():
    X, y = blobs()
    model = MLP(2, [16], 3, rng=0)
    buf = io.StringIO()
    hist = fit(model, (X[:240], y[:240]), val=(X[240:], y[240:]), epochs=3, batch_size=32, lr=0.05,
               optimizer="sgd", seed=0, file=buf, log_every=4)
    text = buf.getvalue()
    assert re.search(r"^Epoch: 001/003 \| Batch 000/008 \| Cost: \d\.\d{4}$", text, re.M)
    assert re.search(r"^Epoch: 001/003 \| Batch 004/008 \| Cost: \d\.\d{4}$", text, re.M)
    assert re.search(r"^Epoch: 003/003 Train Acc\.: \d+\.\d\d% \| Validation Acc\.: \d+\.\d\d%$", text, re.M)
    assert re.search(r"^Time elapsed: \d+\.\d\d min$", text, re.M)
    assert "\r" not in text  # not a terminal: no progress bar
    assert isinstance(hist, History) and len(hist) == 3
    assert hist.epoch == [1, 2, 3]
    assert hist.loss[-1] < hist.loss[0]
    assert hist.val_accuracy[-1] > 0.9 and hist.accuracy[-1] > 0.9
    ev = fastmlp.evaluate(model, (X[240:], y[240:]), loss="cross_entropy")
    assert ev["accuracy"] == pytest.approx(hist.val_accuracy[-1])
    assert ev["loss"] == pytest.approx(hist.val_loss[-1], rel=1e-5)


def test_epoch_cost_is_the_mean_of_the_batch_costs():
    X, y = blobs(64)
    model = MLP(2, [8], 3, rng=1)
    costs = []

    # recompute by hand with the same order: an unshuffled loader and plain SGD
    ref = MLP(2, [8], 3, rng=1)
    opt = SGD(ref.parameters(), lr=0.1)
    loss = fastmlp.CrossEntropyLoss()
    for Xb, yb in DataLoader(ArrayDataset(X, y), batch_size=16):
        costs.append(ref.train_step(Xb, yb, loss, opt) * len(yb))
    hist = fit(model, DataLoader(ArrayDataset(X, y), batch_size=16), optimizer="sgd", lr=0.1, epochs=1,
               verbose=0)
    assert hist.loss[0] == pytest.approx(sum(costs) / 64, rel=1e-6)
    for a, b in zip(model.parameters(), ref.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_progress_bar_only_on_a_terminal():
    X, y = blobs(64)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    fit(MLP(2, [4], 3, rng=0), (X, y), epochs=1, batch_size=16, file=tty, log_every=0)
    assert "\r" in tty.getvalue() and "[" in tty.getvalue()
    plain = io.StringIO()
    fit(MLP(2, [4], 3, rng=0), (X, y), epochs=1, batch_size=16, file=plain, log_every=0)
    assert "\r" not in plain.getvalue()
    quiet = Tty()
    fit(MLP(2, [4], 3, rng=0), (X, y), epochs=1, batch_size=16, file=quiet, verbose=0)
    assert quiet.getvalue() == ""


def test_regression_has_no_accuracy():
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(-1, 1)
    model = MLP(1, [8], 1, activation="tanh", rng=0)
    buf = io.StringIO()
    hist = fit(model, (x, x**2), loss="mse", epochs=2, batch_size=16, file=buf, log_every=0)
    assert math.isnan(hist.accuracy[-1])
    assert "Train Cost:" in buf.getvalue()


def test_one_hot_targets_with_mse_give_accuracy():
    X, y = blobs(120)
    ds = ArrayDataset(X, y, target_transform=OneHot(3))
    model = MLP(2, [16], 3, output_activation="sigmoid", rng=0)
    hist = fit(model, ds, loss="mse", optimizer="sgd", lr=1.0, epochs=5, batch_size=20, verbose=0)
    assert hist.accuracy[-1] > 0.8
    assert fastmlp.accuracy(model, ds) == pytest.approx(hist.accuracy[-1])


def test_scheduler_steps_once_per_epoch():
    X, y = blobs(64)
    model = MLP(2, [4], 3, rng=0)
    opt = SGD(model.parameters(), lr=0.1)
    hist = fit(model, (X, y), optimizer=opt, epochs=4, batch_size=16, verbose=0,
               scheduler=lr_scheduler.StepLR(opt, step_size=2, gamma=0.5))
    assert hist.lr == pytest.approx([0.1, 0.1, 0.05, 0.05])
    model2 = MLP(2, [4], 3, rng=0)
    hist2 = fit(model2, (X, y), optimizer="sgd", lr=0.2, epochs=3, batch_size=16, verbose=0,
                scheduler=lambda o: lr_scheduler.ExponentialLR(o, gamma=0.5))
    assert hist2.lr == pytest.approx([0.2, 0.1, 0.05])


@pytest.mark.parametrize("patience, stopped", [(0, 2), (1, 2), (2, 3), (3, 4)])
def test_early_stopping_waits_patience_epochs_as_keras(patience, stopped):
    """Epoch 1 sets the best; training stops after ``patience`` epochs without improvement
    (Keras's count: patience=2 on a flat metric stops after epoch 3; 0 and 1 both stop at the
    first epoch that does not improve)."""
    from types import SimpleNamespace

    es = EarlyStopping(monitor="loss", patience=patience)
    state = SimpleNamespace(stop=False, model=None)
    es.on_train_begin(state)
    epoch = 0
    while not state.stop and epoch < 10:
        es.on_epoch_end(epoch, {"loss": 0.5 if epoch == 0 else 1.0}, state)
        epoch += 1
    assert es.stopped_epoch == stopped and epoch == stopped and es.best_epoch == 1


def test_early_stopping_stops_and_restores():
    X, y = blobs(90)
    model = MLP(2, [8], 3, rng=0)
    # a learning rate of 1e-12 hardly moves the loss: it stops within a few epochs
    es = EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    hist = fit(model, (X, y), optimizer="sgd", lr=1e-12, epochs=20, batch_size=30, verbose=0, callbacks=[es],
               shuffle=False)
    assert len(hist) <= 4 and es.stopped_epoch == len(hist)
    with pytest.raises(ValueError, match="val="):
        fit(model, (X, y), epochs=1, verbose=0, callbacks=[EarlyStopping()])
    with pytest.raises(ValueError):
        EarlyStopping(mode="sideways")


def test_model_checkpoint_and_csv_logger(tmp_path):
    X, y = blobs(90)
    model = MLP(2, [8], 3, rng=0)
    ck = ModelCheckpoint(tmp_path / "ck-{epoch:02d}.npz", monitor="loss")
    log = CSVLogger(tmp_path / "log.csv")
    fit(model, (X, y), epochs=3, batch_size=30, verbose=0, callbacks=[ck, log])
    assert sorted(p.name for p in tmp_path.glob("ck-*.npz")) == ["ck-01.npz", "ck-02.npz", "ck-03.npz"]
    ckpt = fastmlp.io.load_checkpoint(tmp_path / "ck-03.npz")
    assert ckpt.metadata["epoch"] == 3 and ckpt.optimizer is not None
    np.testing.assert_array_equal(ckpt.model.predict(X), model.predict(X))
    past = History.from_dict(ckpt.metadata["history"])
    assert past.epoch == [1, 2, 3] and math.isnan(past.val_loss[0])
    resumed = fit(ckpt.model, (X, y), optimizer=ckpt.optimizer, epochs=4, initial_epoch=3, batch_size=30,
                  verbose=0, history=past)
    assert resumed is past and resumed.epoch == [1, 2, 3, 4]
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert len(rows) == 3 and rows[2]["epoch"] == "3" and rows[0]["val_loss"] == ""
    best = ModelCheckpoint(tmp_path / "best.npz", monitor="accuracy", save_best_only=True)
    fit(model, (X, y), epochs=2, batch_size=30, verbose=0, callbacks=[best])
    assert (tmp_path / "best.npz").exists() and 1 <= len(best.saved) <= 2


def test_misclassified_lists_the_failures():
    X, y = blobs(60)
    model = MLP(2, [8], 3, rng=0)
    fit(model, (X, y), epochs=3, batch_size=10, verbose=0)
    wrong = fastmlp.misclassified(model, (X, y))
    pred = model.predict(X)
    assert [i for i, _, _ in wrong] == np.flatnonzero(pred != y).tolist()
    for i, t, p in wrong:
        assert t == y[i] and p == pred[i]
    assert fastmlp.accuracy(model, (X, y)) == pytest.approx(1 - len(wrong) / len(y))


def test_accuracy_and_misclassified_reject_labels_the_model_cannot_output():
    X = blobs(6)[0]
    model = MLP(2, [4], 3, rng=0)
    for fn in (fastmlp.accuracy, fastmlp.misclassified, lambda m, d: fastmlp.evaluate(m, d, loss="cross_entropy")):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got values in \[-1, 7\]"):
            fn(model, (X, np.array([0, 1, 2, 3, 7, -1])))
        with pytest.raises(ValueError, match="whole numbers"):
            fn(model, (X, np.array([0.5, 1.2, 0, 1, 2, 0])))
        with pytest.raises(ValueError, match=r"4 columns; the model has 3 outputs|shape \(6, 4\) differs"):
            fn(model, (X, np.eye(4)[[0, 1, 2, 0, 1, 2]]))
    binary = MLP(2, [4], 1, rng=0)  # one output unit: labels 0 and 1
    assert 0 <= fastmlp.accuracy(binary, (X, np.array([0, 1, 1, 0, 1, 0]))) <= 1
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        fastmlp.accuracy(binary, (X, np.array([0, 1, 2, 0, 1, 0])))


def test_every_reduction_evaluates_to_the_mean_cost_and_none_cannot_train():
    from fastmlp.losses import CrossEntropyLoss

    X, y = blobs(30)
    model = MLP(2, [4], 3, rng=0)
    per_sample = CrossEntropyLoss(reduction="none")(model.forward(X), y)
    for reduction in ("mean", "sum", "none"):  # batches of 7: 7, 7, 7, 7, 2
        got = fastmlp.evaluate(model, (X, y), loss=CrossEntropyLoss(reduction=reduction), batch_size=7)["loss"]
        assert got == pytest.approx(float(np.mean(per_sample)), rel=1e-6), reduction
    opt = fastmlp.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="fit needs a scalar loss"):
        fit(model, (X, y), loss=CrossEntropyLoss(reduction="none"), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="train_step needs a scalar loss"):
        model.train_step(X, y, CrossEntropyLoss(reduction="none"), opt)
    assert np.isfinite(model.train_step(X, y, CrossEntropyLoss(reduction="sum"), opt))


def test_backward_rejects_a_gradient_with_nan_or_inf():
    X, _ = blobs(5)
    model = MLP(2, [4], 3, rng=0)
    model.forward(X)
    for bad in (np.nan, np.inf):
        dY = np.ones((5, 3))
        dY[2, 1] = bad
        with pytest.raises(FloatingPointError, match="gradient contains NaN or Inf"):
            model.backward(dY)
    assert np.all(np.isfinite(model.parameters()[0].grad))


def test_fit_rejects_bad_arguments():
    X, y = blobs(20)
    model = MLP(2, [4], 3)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, (X, y), epochs=0)
    with pytest.raises(TypeError, match="train"):
        fit(model, X)
    with pytest.raises(ValueError, match="unknown optimizer"):
        fit(model, (X, y), optimizer="sgdd", verbose=0)
    with pytest.raises(ValueError, match="labels must lie"):
        fit(model, (X, y + 5), verbose=0)
    with pytest.raises(ValueError, match="features"):
        fit(MLP(3, [4], 3), (X, y), verbose=0)


def test_history_api():
    h = History()
    h.append({"epoch": 1, "loss": 0.5, "val_loss": 0.6})
    h.append({"epoch": 2, "loss": 0.4, "val_loss": 0.7})
    assert h.best("val_loss") == (1, 0.6) and h["loss"] == [0.5, 0.4]
    assert math.isnan(h.accuracy[0])
    with pytest.raises(KeyError):
        h.append({"bogus": 1})


def test_plots_write_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    from fastmlp import plot

    rng = np.random.default_rng(0)
    X = rng.random((40, 16)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    model = MLP(16, [8], 3, rng=0)
    hist = fit(model, (X, y), epochs=2, batch_size=8, verbose=0, val=(X, y))
    p = plot.plot_history(hist, tmp_path / "h.png")
    q = plot.plot_misclassified(model, (X, y), tmp_path / "sub" / "m.png")
    for path in (p, q):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="png"):
        plot.plot_history(hist, tmp_path / "h.jpg")


def test_import_fastmlp_stays_light():
    import subprocess
    import sys

    code = ("import sys, fastmlp; heavy = [m for m in ('matplotlib', 'PIL', 'numba', 'cupy') if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_float64_model_computes_in_float64():
    """Regression: the layers of a float64 Sequential used to keep the float32 dtype of the
    arena they were built with, and cast their inputs to float32."""
    rng = np.random.default_rng(0)
    X = rng.random((7, 5))
    model = MLP(5, [6], 3, dtype="float64", rng=0)
    assert all(layer.dtype == np.float64 for layer in model.layers)
    sd = model.state_dict()
    ref = np.maximum(X @ sd["0.weight"].T + sd["0.bias"], 0) @ sd["2.weight"].T + sd["2.bias"]
    np.testing.assert_allclose(model.forward(X), ref, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("name", list(fastmlp.backends()))
def test_fit_runs_on_every_backend(name):
    info = fastmlp.backends()[name]
    if not info.available:
        pytest.skip(f"backend {name} unavailable: {info.reason}")
    X, y = blobs(120)
    ref = MLP(2, [16], 3, rng=0)
    model = MLP(2, [16], 3, rng=0).to(backend=name)
    h_ref = fit(ref, (X, y), optimizer="sgd", lr=0.1, epochs=2, batch_size=20, seed=0, verbose=0)
    h = fit(model, (X, y), optimizer="sgd", lr=0.1, epochs=2, batch_size=20, seed=0, verbose=0)
    np.testing.assert_allclose(h.loss, h_ref.loss, rtol=1e-4)
    assert h.accuracy[-1] == pytest.approx(h_ref.accuracy[-1], abs=0.02)
