"""Datasets, DataLoader, splits, transforms, CSVImageDataset and the bundled data."""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources

import numpy as np
import pytest
from helpers import shared_data

from fastmlp.data import (
    ArrayDataset,
    Compose,
    CSVImageDataset,
    DataLoader,
    Flatten,
    Normalize,
    OneHot,
    Subset,
    ToFloat,
    default_collate,
    random_split,
    train_val_test_split,
)
from fastmlp.datasets import load_mnist, load_xor


# ---------------------------------------------------------------------------- ArrayDataset
def test_array_dataset_items_and_validation():
    X = np.arange(12).reshape(6, 2)
    ds = ArrayDataset(X, np.arange(6) % 2)
    assert len(ds) == 6
    x, y = ds[-1]
    assert x.tolist() == [10, 11] and y == 1
    assert ArrayDataset(X)[2].tolist() == [4, 5]
    with pytest.raises(ValueError, match="samples"):
        ArrayDataset(X, np.arange(5))
    with pytest.raises(IndexError):
        ds[6]
    with pytest.raises(TypeError):
        ds[1.5]
    with pytest.raises(TypeError, match="numeric"):
        ArrayDataset(np.array(["a", "b"]))
    with pytest.raises(ValueError):
        ArrayDataset(np.zeros((0, 3)))


class CountingDataset(ArrayDataset):
    calls = 0

    def __getitem__(self, index):
        CountingDataset.calls += 1
        return super().__getitem__(index)


def test_loader_fast_path_has_no_per_item_loop():
    X = np.random.default_rng(0).random((103, 4))
    y = np.arange(103)
    ds = CountingDataset(X, y, transform=Compose([ToFloat(scale=2.0), Flatten()]))
    CountingDataset.calls = 0
    batches = list(DataLoader(ds, batch_size=10, shuffle=True, seed=1))
    assert CountingDataset.calls == 0
    assert [len(b[1]) for b in batches] == [10] * 10 + [3]
    seen = np.concatenate([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(103))
    Xb, yb = batches[0]
    np.testing.assert_allclose(Xb, (2.0 * X[yb]).astype(np.float32))
    assert Xb.dtype == np.float32


def test_loader_unshuffled_drop_last_and_len():
    ds = ArrayDataset(np.arange(10).reshape(10, 1), np.arange(10))
    loader = DataLoader(ds, batch_size=4)
    assert len(loader) == 3
    assert [b[1].tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    dl = DataLoader(ds, batch_size=4, drop_last=True)
    assert len(dl) == 2 and [len(b[1]) for b in dl] == [4, 4]


def test_loader_shuffle_seed_is_reproducible_and_changes_per_epoch():
    ds = ArrayDataset(np.arange(50).reshape(50, 1), np.arange(50))
    a = DataLoader(ds, batch_size=50, shuffle=True, seed=7)
    b = DataLoader(ds, batch_size=50, shuffle=True, seed=7)
    e0a, e1a = next(iter(a))[1], next(iter(a))[1]
    e0b = next(iter(b))[1]
    np.testing.assert_array_equal(e0a, e0b)
    assert not np.array_equal(e0a, e1a)
    assert sorted(e0a.tolist()) == list(range(50))
    b.set_epoch(1)
    np.testing.assert_array_equal(next(iter(b))[1], e1a)


def test_loader_generic_dataset_and_collate():
    class Plain:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full(3, i), i

    batches = list(DataLoader(Plain(), batch_size=2))
    assert batches[0][0].shape == (2, 3) and batches[-1][1].tolist() == [4]
    custom = list(DataLoader(Plain(), batch_size=5, collate_fn=lambda items: len(items)))
    assert custom == [5]
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(Plain(), batch_size=0)
    with pytest.raises(TypeError):
        DataLoader(42)
    with pytest.raises(ValueError, match="different shapes"):
        default_collate([np.zeros(2), np.zeros(3)])


def test_subset_keeps_the_fast_path():
    ds = ArrayDataset(np.arange(20).reshape(20, 1), np.arange(20))
    sub = Subset(ds, [5, 3, 9])
    assert len(sub) == 3 and sub[1][1] == 3
    assert hasattr(sub, "get_batch")
    assert next(iter(DataLoader(sub, batch_size=3)))[1].tolist() == [5, 3, 9]

    class Plain:
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return i

    assert not hasattr(Subset(Plain(), [0]), "get_batch")
    with pytest.raises(IndexError):
        Subset(ds, [20])


# ---------------------------------------------------------------------------- splits
def test_random_split_fractions_and_counts():
    ds = ArrayDataset(np.arange(10).reshape(10, 1), np.arange(10))
    parts = random_split(ds, [0.5, 0.3, 0.2], seed=0)
    assert [len(p) for p in parts] == [5, 3, 2]
    allidx = np.concatenate([p.indices for p in parts])
    assert sorted(allidx.tolist()) == list(range(10))
    assert [len(p) for p in random_split(ds, [0.34, 0.33, 0.33], seed=0)] == [4, 3, 3]
    with pytest.raises(ValueError, match="sum"):
        random_split(ds, [3, 3])
    with pytest.raises(ValueError):
        random_split(ds, [0.5, 0.6])


def test_train_val_test_split_defaults_to_80_15_5():
    ds = ArrayDataset(np.arange(200).reshape(200, 1), np.arange(200))
    tr, va, te = train_val_test_split(ds, seed=1)
    assert (len(tr), len(va), len(te)) == (160, 30, 10)
    assert len(set(tr.indices) | set(va.indices) | set(te.indices)) == 200
    tr, va, te = train_val_test_split(ds, shuffle=False)
    assert tr.indices[0] == 0 and te.indices[-1] == 199 and va.indices[0] == 160


# ---------------------------------------------------------------------------- transforms
def test_transforms_item_and_batch_agree():
    X = np.random.default_rng(0).integers(0, 256, (4, 3, 3)).astype(np.uint8)
    t = Compose([ToFloat(), Flatten(), Normalize(0.5, 0.25)])
    batch = t.batch(X)
    assert batch.shape == (4, 9) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[2], t(X[2]), rtol=1e-6)
    np.testing.assert_allclose(batch[0], (X[0].reshape(-1) / 255 - 0.5) / 0.25, rtol=1e-5)
    oh = OneHot(4)
    assert oh(2).tolist() == [0, 0, 1, 0]
    assert oh(np.array([0, 3])).shape == (2, 4)
    with pytest.raises(ValueError, match="lie in"):
        oh(np.array([4]))
    with pytest.raises(TypeError):
        oh(np.array([0.5]))
    with pytest.raises(ValueError):
        Normalize(0, 0)


def test_plain_callable_transform_falls_back_per_item():
    ds = ArrayDataset(np.arange(6).reshape(3, 2), np.arange(3), transform=lambda x: x[::-1].copy())
    Xb, _ = next(iter(DataLoader(ds, batch_size=3)))
    assert Xb.tolist() == [[1, 0], [3, 2], [5, 4]]


# ---------------------------------------------------------------------------- CSVImageDataset
def _write_pngs(folder, n=3):
    from PIL import Image

    folder.mkdir()
    rows = ["Class Label,File Name"]
    for i in range(n):
        Image.fromarray(np.full((28, 28), i * 40, np.uint8), mode="L").save(folder / f"{i}.png")
        rows.append(f"{i},{i}.png")
    return rows


def test_csv_image_dataset_reads_and_batches(tmp_path):
    pytest.importorskip("PIL")
    rows = _write_pngs(tmp_path / "img")
    (tmp_path / "a.csv").write_text("\n".join(rows) + "\n")
    ds = CSVImageDataset(tmp_path / "a.csv", tmp_path / "img", transform=Compose([ToFloat(), Flatten()]))
    assert len(ds) == 3
    x, y = ds[2]
    assert x.shape == (784,) and y == 2 and np.allclose(x, 80 / 255)
    X, Y = next(iter(DataLoader(ds, batch_size=3)))
    assert X.shape == (3, 784) and Y.tolist() == [0, 1, 2]


def test_csv_image_dataset_errors(tmp_path):
    pytest.importorskip("PIL")
    rows = _write_pngs(tmp_path / "img")
    csv = tmp_path / "a.csv"
    with pytest.raises(FileNotFoundError, match="CSV"):
        CSVImageDataset(csv, tmp_path / "img")
    csv.write_text("\n".join([*rows, "1,missing.png"]) + "\n")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        CSVImageDataset(csv, tmp_path / "img")
    csv.write_text("\n".join([*rows, "x,0.png"]) + "\n")
    with pytest.raises(ValueError, match="line 5.*not an integer"):
        CSVImageDataset(csv, tmp_path / "img")
    csv.write_text("\n".join([*rows, "1,0.png,extra"]) + "\n")
    with pytest.raises(ValueError, match="3 fields"):
        CSVImageDataset(csv, tmp_path / "img")
    csv.write_text("label,file\n1,0.png\n")
    with pytest.raises(ValueError, match="no column 'Class Label'"):
        CSVImageDataset(csv, tmp_path / "img")
    assert len(CSVImageDataset(csv, tmp_path / "img", label_column="label", file_column="file")) == 1
    (tmp_path / "img" / "bad.png").write_bytes(b"not a png at all")
    csv.write_text("Class Label,File Name\n1,bad.png\n")
    ds = CSVImageDataset(csv, tmp_path / "img")
    with pytest.raises(ValueError, match="cannot read image .*bad.png"):
        ds[0]


def test_course_loader_subset():
    pytest.importorskip("PIL")
    folder = shared_data("stat453-L09-custom-dataloader")
    ds = CSVImageDataset(folder / "mnist_train.csv", folder / "mnist_train")
    assert len(ds) == 256
    img, label = ds[0]
    assert img.shape == (28, 28) and img.dtype == np.uint8 and label == 5
    hist = np.bincount(ds.labels, minlength=10).tolist()
    assert hist == [25, 21, 21, 25, 28, 15, 31, 35, 36, 19]


# ---------------------------------------------------------------------------- bundled data
def test_bundled_files_are_package_data():
    root = resources.files("fastmlp.datasets").joinpath("_data")
    names = {p.name for p in root.iterdir()}
    assert {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz", "xor.csv"} <= names
    # decompressed content is byte-exact with the original LeCun files (published MD5)
    raw = gzip.decompress(root.joinpath("t10k-labels-idx1-ubyte.gz").read_bytes())
    assert hashlib.md5(raw).hexdigest() == "27ae3e4e09519cfbb04c329615203637"


def test_load_mnist():
    X, y = load_mnist("test")
    assert X.shape == (10000, 784) and X.dtype == np.float32 and y.dtype == np.int64
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert 0.0 == X.min() and X.max() == 1.0
    assert abs(X.mean() - 0.132515) < 1e-5
    Xtr, ytr = load_mnist("train", flatten=False, scale=False)
    assert Xtr.shape == (60000, 28, 28) and Xtr.dtype == np.uint8
    assert np.bincount(ytr).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert not Xtr.flags.writeable
    with pytest.raises(ValueError, match="split"):
        load_mnist("validation")


def test_load_xor_matches_course_file():
    X, y = load_xor()
    assert X.shape == (750, 2) and X.dtype == np.float64
    assert np.bincount(y).tolist() == [376, 374]
    assert -2.1 < X.min() and X.max() < 2.2


def test_read_idx_rejects_bad_headers():
    from fastmlp.datasets._loaders import read_idx

    good = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([1, 2, 3])
    assert read_idx(good).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="magic"):
        read_idx(b"\x01" + good[1:])
    with pytest.raises(ValueError, match="bytes"):
        read_idx(good[:-1])
