"""Bundled datasets, offline: the full MNIST and the course's XOR points.

The files ship inside the package (``fastmlp/datasets/_data``) and are read with NumPy and
gzip only, so they work from an installed wheel with no network and no ``../shared``.
"""

from ._loaders import data_path, load_mnist, load_xor

__all__ = ["load_mnist", "load_xor", "data_path"]
