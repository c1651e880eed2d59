"""A folder of images listed in a CSV of labels and file names (the course's custom loader).

Pillow (the ``images`` extra) is imported on first use, not with fastmlp.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import _check_index

__all__ = ["CSVImageDataset"]


def _pil_image():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "CSVImageDataset needs Pillow: pip install 'fastmlp[images]'"
        ) from exc
    return Image


class CSVImageDataset:
    """Images in ``img_dir`` listed with their labels in a CSV file, as in the course::

        Class Label,File Name
        5,0.png
        8,1.png

    ``ds[i]`` is ``(transform(image), target_transform(label))`` where the image is a NumPy
    ``uint8`` array (``(H, W)`` for grayscale, ``(H, W, C)`` for colour) and the label an
    integer.

    Parameters
    ----------
    csv_path : str or Path
    img_dir : str or Path
        Folder the file names are relative to.
    transform, target_transform : callable, optional
        E.g. ``Compose([ToFloat(), Flatten()])`` for an MLP.
    label_column, file_column : str
        Column names (the course's ``"Class Label"`` and ``"File Name"`` by default).
    mode : str, optional
        Pillow mode to convert every image to (``"L"`` grayscale, ``"RGB"``); None keeps it.
    cache : bool, default False
        Keep each decoded image in memory after its first read (the transform still runs on
        every access), so later epochs do not decode the files again.

    Raises
    ------
    FileNotFoundError
        The CSV, the folder, or an image a row names does not exist (checked up front).
    ValueError
        A bad row: wrong number of fields, a label that is not an integer, an empty file name,
        a missing column, an empty CSV; or, when read, an image Pillow cannot decode.
    """

    def __init__(self, csv_path: str | os.PathLike, img_dir: str | os.PathLike,
                 transform: Callable | None = None, target_transform: Callable | None = None,
                 label_column: str = "Class Label", file_column: str = "File Name",
                 mode: str | None = None, cache: bool = False):
        self.csv_path, self.img_dir = Path(csv_path), Path(img_dir)
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        self.transform, self.target_transform, self.mode = transform, target_transform, mode
        if not self.csv_path.is_file():
            raise FileNotFoundError(f"CSV file not found: {self.csv_path}")
        if not self.img_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.img_dir}")
        names, labels = self._read_csv(label_column, file_column)
        missing = [n for n in names if not (self.img_dir / n).is_file()]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise FileNotFoundError(
                f"{self.csv_path.name} lists images missing from {self.img_dir}: "
                f"{', '.join(missing[:3])}{more}"
            )
        self.file_names = names
        self.labels = np.asarray(labels, dtype=np.int64)

    def _read_csv(self, label_column: str, file_column: str) -> tuple[list[str], list[int]]:
        with open(self.csv_path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{self.csv_path} is empty (expected a header row)")
            header = [h.strip() for h in header]
            for col in (label_column, file_column):
                if col not in header:
                    raise ValueError(f"{self.csv_path} has no column {col!r}; its columns are {header}")
            li, fi = header.index(label_column), header.index(file_column)
            names, labels = [], []
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise ValueError(f"{self.csv_path}, line {line}: {len(row)} fields, expected {len(header)}: {row}")
                raw_label, name = row[li].strip(), row[fi].strip()
                try:
                    label = int(raw_label)
                except ValueError:
                    raise ValueError(f"{self.csv_path}, line {line}: label {raw_label!r} is not an integer") from None
                if not name:
                    raise ValueError(f"{self.csv_path}, line {line}: empty file name")
                if Path(name).is_absolute() or ".." in Path(name).parts:
                    raise ValueError(f"{self.csv_path}, line {line}: file name {name!r} leaves the image folder")
                names.append(name)
                labels.append(label)
        if not names:
            raise ValueError(f"{self.csv_path} lists no images")
        return names, labels

    def __len__(self) -> int:
        return len(self.file_names)

    def load_image(self, index: int) -> np.ndarray:
        """The image of sample ``index`` as a NumPy array (no transform)."""
        i = _check_index(index, len(self))
        if self._cache is not None and i in self._cache:
            return self._cache[i].copy()
        Image = _pil_image()
        path = self.img_dir / self.file_names[i]
        try:
            with Image.open(path) as img:
                if self.mode is not None:
                    img = img.convert(self.mode)
                arr = np.asarray(img).copy()
        except FileNotFoundError:
            raise FileNotFoundError(f"image file not found: {path}") from None
        except (OSError, SyntaxError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError
            raise ValueError(f"cannot read image {path}: {exc}") from exc
        if self._cache is not None:
            self._cache[i] = arr
            return arr.copy()
        return arr

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        i = _check_index(index, len(self))
        x = self.load_image(i)
        if self.transform is not None:
            x = self.transform(x)
        y: Any = self.labels[i]
        if self.target_transform is not None:
            y = self.target_transform(y)
        return x, y

    def __repr__(self) -> str:
        return f"CSVImageDataset({len(self)} images, csv={str(self.csv_path)!r}, img_dir={str(self.img_dir)!r})"
