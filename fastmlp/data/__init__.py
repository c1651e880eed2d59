"""Data: datasets, the ``DataLoader``, splits and transforms (SPEC section 8).

Datasets are anything with ``__getitem__`` and ``__len__``. ``ArrayDataset`` holds arrays in
memory and is batched by slicing; ``CSVImageDataset`` reads a folder of images listed in a CSV
(Pillow, imported on first use).
"""

from . import transforms
from .dataset import ArrayDataset, Dataset, Subset
from .images import CSVImageDataset
from .loader import DataLoader, default_collate
from .split import random_split, train_val_test_split
from .transforms import Compose, Flatten, Normalize, OneHot, ToFloat

__all__ = [
    "Dataset", "ArrayDataset", "Subset", "CSVImageDataset", "DataLoader", "default_collate",
    "random_split", "train_val_test_split", "transforms", "Compose", "ToFloat", "Flatten",
    "Normalize", "OneHot",
]
