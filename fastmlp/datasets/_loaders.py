"""Readers of the bundled files: MNIST in IDX format (gzip + ``np.frombuffer``), XOR as CSV."""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from .._validate import check_name

__all__ = ["data_path", "load_mnist", "load_xor", "read_idx"]

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}


def data_path(name: str):
    """A :mod:`importlib.resources` path to the bundled file ``name`` (``"xor.csv"``, ...)."""
    path = resources.files(__package__).joinpath("_data", name)
    if not path.is_file():
        raise FileNotFoundError(
            f"bundled data file {name!r} is missing from the fastmlp installation ({path}); reinstall fastmlp"
        )
    return path


def read_idx(raw: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode an uncompressed IDX file of unsigned bytes.

    The header is big-endian: ``0x00 0x00 0x08 ndim``, then ``ndim`` int32 sizes, then the
    data (``magic 2049`` for labels ``(N,)``, ``2051`` for images ``(N, rows, cols)``).
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{name}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise ValueError(f"{name}: IDX element type {raw[2]:#x} is not unsigned bytes (0x08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{name}: truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise ValueError(f"{name}: IDX says shape {shape} ({expected} bytes) but the file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


@lru_cache(maxsize=2)
def _mnist_raw(split: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name, count = _MNIST_FILES[split]
    arrays = []
    for name, ndim in ((images_name, 3), (labels_name, 1)):
        with data_path(name).open("rb") as fh, gzip.GzipFile(fileobj=fh) as gz:
            arr = read_idx(gz.read(), name)
        if arr.ndim != ndim or arr.shape[0] != count:
            raise ValueError(f"{name}: unexpected shape {arr.shape}")
        arrays.append(arr)  # frombuffer over immutable bytes: read-only
    images, labels = arrays
    if images.shape[1:] != (28, 28) or labels.max() > 9:
        raise ValueError("bundled MNIST files are corrupt (image size or label range)")
    return images, labels


def load_mnist(split: str = "train", *, flatten: bool = True, scale: bool = True,
               dtype: Any = "float32") -> tuple[np.ndarray, np.ndarray]:
    """The full MNIST handwritten digits, bundled with fastmlp (no download).

    Parameters
    ----------
    split : "train" or "test"
        60,000 training or 10,000 test images, in the original order.
    flatten : bool, default True
        Images as rows of 784 pixels ``(N, 784)``; False keeps ``(N, 28, 28)``.
    scale : bool, default True
        Pixels divided by 255 into [0, 1] as ``dtype`` (the course's preprocessing, no
        mean/std normalisation); False returns the raw read-only ``uint8`` pixels.
    dtype : "float32" or "float64"
        Of the scaled pixels.

    Returns
    -------
    X : array, (N, 784) or (N, 28, 28)
    y : int64 array, (N,)
        Labels 0-9.

    Examples
    --------
    >>> X, y = load_mnist("test")
    >>> X.shape, y[:4].tolist()
    ((10000, 784), [7, 2, 1, 0])
    """
    check_name("MNIST split", split, _MNIST_FILES)
    images, labels = _mnist_raw(split)
    X = images.reshape(images.shape[0], -1) if flatten else images
    if scale:
        X = X.astype(dtype) / np.asarray(255, dtype=dtype)
    return X, labels.astype(np.int64)


def load_xor() -> tuple[np.ndarray, np.ndarray]:
    """The course's XOR toy data (``xor.csv`` of STAT 453 L09): 750 points in the plane,
    two classes that no straight line separates.

    Returns
    -------
    X : float64 array, (750, 2)
        Columns ``x1, x2``.
    y : int64 array, (750,)
        The class label, 0 or 1.
    """
    with data_path("xor.csv").open("r", encoding="utf-8") as fh:
        data = np.loadtxt(fh, delimiter=",", skiprows=1, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != 3:
        raise ValueError(f"xor.csv: expected 3 columns, got shape {data.shape}")
    return np.ascontiguousarray(data[:, :2]), data[:, 2].astype(np.int64)
