"""The course's own experiments (REFERENCE_RESULTS.md) on the real data of ``../shared/data``.

Run 2 for five epochs (the per-epoch cost against the notebook's curve), run 5 (the CSV + PNG
loader subset) end to end, run 6 (XOR: a linear hidden layer stalls, a ReLU one learns).
The full 100-epoch runs 1-4 are scripts in ``examples/``.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import shared_data

import fastmlp
from fastmlp import MLP, fit, init
from fastmlp.data import ArrayDataset, Compose, CSVImageDataset, DataLoader, Flatten, ToFloat
from fastmlp.datasets import load_mnist, load_xor


def idx_mnist(split: str):
    """MNIST read from ``../shared/data/mnist`` (not the bundled copy: the test reads the
    reference data itself), scaled to [0, 1] and flattened."""
    import gzip

    prefix = "train" if split == "train" else "t10k"
    folder = shared_data("mnist")
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz") as fh:
        X = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz") as fh:
        y = np.frombuffer(fh.read(), np.uint8, offset=8)
    return (X / np.float32(255)).astype(np.float32), y.astype(np.int64)


def course_init(model, seed: int):
    """The notebooks' initialisation: weights ~ N(0, 0.1), biases 0."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, fastmlp.Linear):
            init.normal_(layer.weight, 0.0, 0.1, rng=rng)
            init.zeros_(layer.bias)
    return model


# notebook's per-epoch "Train Cost" of run 2: the cost over the whole training set after each
# epoch, whose sum over the 600 batches it divided by 599 instead of 600
RUN2_NOTEBOOK = np.array([0.4979, 0.3758, 0.3306, 0.3041, 0.2873])
RUN2_TRUE_MEAN = RUN2_NOTEBOOK * 599 / 600


@pytest.mark.slow
def test_run2_softmax_cross_entropy_first_five_epochs():
    X, y = idx_mnist("train")
    X_test, y_test = idx_mnist("test")
    np.testing.assert_array_equal(load_mnist("test")[1], y_test)  # the bundled copy is the same data
    model = course_init(MLP(784, [100], 10, activation="sigmoid", rng=0), seed=0)
    hist = fit(model, (X, y), loss="cross_entropy", optimizer="sgd", lr=0.1, epochs=5, batch_size=100,
               shuffle=True, seed=1, verbose=0)
    costs = np.array(hist.train_loss)
    assert np.all(np.abs(costs - RUN2_TRUE_MEAN) <= 0.015), f"costs {costs.round(4)} vs course {RUN2_TRUE_MEAN.round(4)}"
    assert np.all(np.diff(costs) < 0)
    assert fastmlp.accuracy(model, (X_test, y_test)) >= 0.91


def test_run5_csv_png_loader_subset():
    pytest.importorskip("PIL")
    root = shared_data("stat453-L09-custom-dataloader")
    t = Compose([ToFloat(), Flatten()])

    def split(name):
        return CSVImageDataset(root / f"mnist_{name}.csv", root / f"mnist_{name}", transform=t, cache=True)

    train, valid, test = split("train"), split("valid"), split("test")
    loader = DataLoader(train, batch_size=64, shuffle=True, drop_last=True, seed=0)
    assert len(loader) == 4
    model = MLP(784, [100], 10, activation="sigmoid", rng=0)
    hist = fit(model, loader, optimizer="sgd", lr=0.1, epochs=100, val=valid, verbose=0)
    assert len(hist) == 100 and hist.loss[-1] < hist.loss[0] / 3
    # course: train 91.80, valid 74.61, test 75.00 (band 75 +- 4)
    assert hist.accuracy[-1] >= 0.85
    assert 0.71 <= fastmlp.accuracy(model, test) <= 0.79
    assert 0.65 <= hist.val_accuracy[-1] <= 0.85


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_run6_xor_linear_stalls_relu_learns(seed):
    shared_data("stat453-L09-xor", "xor.csv")
    X, y = load_xor()
    raw = np.genfromtxt(shared_data("stat453-L09-xor", "xor.csv"), delimiter=",", skip_header=1)
    np.testing.assert_array_equal(raw[:, :2], X)  # the bundled copy is the course's file
    costs = {}
    for act in ("linear", "relu"):
        model = MLP(2, [50], 2, activation=act, rng=seed)
        hist = fit(model, ArrayDataset(X, y), optimizer="sgd", lr=0.1, epochs=25, batch_size=len(X), verbose=0)
        costs[act] = hist.loss[-1]
    assert costs["linear"] >= 0.69  # course: stalls at 0.6927
    assert costs["relu"] <= 0.45  # course: falls to about 0.359
