"""Saved models: one ``.npz`` file of arrays plus a JSON config; never a pickle.

Layout of the file (an uncompressed NumPy ``.npz`` archive):

``__fastmlp__``
    The config, UTF-8 JSON bytes in a ``uint8`` array: format name and version, the fastmlp
    version, the architecture (``Sequential.layer_configs()``, activation parameters included)
    and dtype, the shape, dtype and SHA-256 of every other array, the optimizer's class,
    hyper-parameters and step counts (when saved), free-form metadata, and ``"digest"``:
    ``"sha256:<hex>"`` of the rest of the config (see below).
``param.<name>``
    Each parameter, by its ``state_dict`` key (``param.0.weight``).
``optim.<i>.<buffer>``
    The optimizer state of parameter ``i`` (``optim.0.exp_avg``), when saved.

Integrity: every array's bytes are covered by its SHA-256 in the config, and the config is covered
by ``"digest"``, the SHA-256 of its canonical JSON form (every key but ``"digest"``, keys sorted,
no whitespace, ASCII). The config lists every array by name with its shape, dtype and SHA-256,
so this one digest covers the architecture, dtype, optimizer, metadata, and every array's name,
dtype, shape and bytes: changing any of them (an activation ``"relu"`` -> ``"tanh"``, the dtype,
a bias value), even in a file re-written with ``np.savez``, makes :func:`load` refuse the file.
It is a checksum against corruption and accidental or naive edits, not a signature: whoever
rewrites a file on purpose can recompute it.

Format versions: version 2 (written since this digest was added) must carry a valid digest.
Version 1 files, written by earlier fastmlp releases, have no ``"digest"``; they still load, with
their arrays checked against their SHA-256 as before, but their config is not covered. A version
this fastmlp does not know (newer) is refused.

Writing goes to a temporary file in the same folder, which replaces the target with
``os.replace`` only once complete: a crash mid-save leaves the old file intact. Reading uses
``allow_pickle=False`` and checks everything before building anything; a truncated, altered or
foreign file raises :class:`ModelFileError`, whose message names the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ModelFileError", "Checkpoint", "save", "load", "load_checkpoint", "FORMAT", "FORMAT_VERSION"]

FORMAT = "fastmlp-model"
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)  # version 1: no config digest (see the module docstring)
_CONFIG_KEY = "__fastmlp__"
_DIGEST_KEY = "digest"


class ModelFileError(ValueError):
    """A model file that is not a valid fastmlp file: truncated, altered, or foreign."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns.

    Attributes
    ----------
    model : Sequential
    optimizer : Optimizer or None
        Rebuilt over ``model.parameters()`` with its saved state, or None if none was saved.
    metadata : dict
        What was passed to :func:`save` (``ModelCheckpoint`` stores ``epoch`` and ``history``).
    """

    model: Any
    optimizer: Any
    metadata: dict[str, Any]


def _sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _describe(arr: np.ndarray) -> dict[str, Any]:
    return {"shape": list(arr.shape), "dtype": arr.dtype.name, "sha256": _sha256(arr)}


def _config_digest(config: dict[str, Any]) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of ``config`` without its ``"digest"`` entry.

    ``config`` must be parsed JSON (what ``json.loads`` returns), so that :func:`save` and
    :func:`_read` hash exactly the same text.
    """
    body = {k: v for k, v in config.items() if k != _DIGEST_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


def _optimizer_part(model, optimizer) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from .optim import OPTIMIZERS

    names = {cls: name for name, cls in OPTIMIZERS.items()}
    cls = type(optimizer)
    if cls not in names:
        raise TypeError(f"cannot save optimizer {cls.__name__}: not one of fastmlp's ({', '.join(OPTIMIZERS)})")
    position = {id(p): i for i, p in enumerate(model.parameters())}
    groups_index = []
    for g in optimizer.param_groups:
        idx = [position.get(id(p)) for p in g["params"]]
        if any(i is None for i in idx):
            raise ValueError("the optimizer holds parameters that are not the model's; cannot save them together")
        groups_index.append(idx)
    sd = optimizer.state_dict()
    arrays: dict[str, np.ndarray] = {}
    state_json: dict[str, dict[str, Any]] = {}
    for i, entry in sd["state"].items():
        scalars = {}
        for name, value in entry.items():
            if isinstance(value, np.ndarray):
                arrays[f"optim.{i}.{name}"] = value
            else:
                scalars[name] = _jsonable(value)
        state_json[str(i)] = scalars
    groups = [{k: _jsonable(v) for k, v in g.items()} for g in sd["param_groups"]]
    config = {"class": names[cls], "param_groups": groups, "model_params": groups_index, "state": state_json}
    return config, arrays


def save(model: Any, path: str | os.PathLike, optimizer: Any = None, metadata: dict[str, Any] | None = None) -> Path:
    """Save ``model`` (and optionally ``optimizer``) to one ``.npz`` file, atomically.

    Parameters
    ----------
    model : Sequential (e.g. MLP)
    path : str or Path
        Used as given (``.npz`` is the convention); the folder must exist (``FileNotFoundError``
        naming it otherwise).
    optimizer : Optimizer, optional
        Saved with its state (moments, step counts, hyper-parameters), so that training
        resumed with :func:`load_checkpoint` continues exactly as an uninterrupted run.
    metadata : dict, optional
        JSON-serialisable extras (epoch, history, notes).

    Returns
    -------
    Path
        The file written.
    """
    from . import __version__

    if not hasattr(model, "layer_configs"):
        raise TypeError(f"only Sequential models (MLP, Sequential) can be saved, got {type(model).__name__}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name such as {path / 'model.npz'}")
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save to {path}: the folder {folder} does not exist")
    arrays: dict[str, np.ndarray] = {}
    for name, value in model.state_dict().items():
        arrays[f"param.{name}"] = np.ascontiguousarray(value)
    config: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastmlp_version": __version__,
        "model": {"class": type(model).__name__, "dtype": model.dtype.name, "layers": model.layer_configs()},
        "optimizer": None,
        "metadata": metadata or {},
    }
    if optimizer is not None:
        config["optimizer"], opt_arrays = _optimizer_part(model, optimizer)
        arrays.update(opt_arrays)
    config["arrays"] = {k: _describe(v) for k, v in arrays.items()}
    try:
        # round-tripped, so that the digest is computed from exactly what load() will parse
        config = json.loads(json.dumps(config, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be JSON-serialisable (finite numbers, str, lists, dicts): {exc}") from exc
    config[_DIGEST_KEY] = _config_digest(config)
    blob = json.dumps(config, allow_nan=False).encode("utf-8")
    arrays[_CONFIG_KEY] = np.frombuffer(blob, dtype=np.uint8)
    _atomic_savez(path, arrays)
    return path


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    folder = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------- reading
def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Open, parse and validate the whole file; return (config, arrays)."""
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    bad = f"{path} is not a valid fastmlp model file"
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ModelFileError(f"{bad}: it is not a complete .npz archive (truncated or corrupt?): {exc}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ModelFileError(f"{bad}: it holds a single array, not an .npz archive")
    with npz:
        arrays: dict[str, np.ndarray] = {}
        for key in npz.files:
            try:
                arrays[key] = npz[key]
            except ValueError as exc:
                if "pickle" in str(exc).lower():
                    raise ModelFileError(f"{bad}: array {key!r} holds pickled Python objects; refused") from exc
                raise ModelFileError(f"{bad}: array {key!r} cannot be read: {exc}") from exc
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise ModelFileError(f"{bad}: array {key!r} is corrupt or truncated: {exc}") from exc
    raw = arrays.pop(_CONFIG_KEY, None)
    if raw is None:
        raise ModelFileError(f"{bad}: no {_CONFIG_KEY!r} config (not written by fastmlp.save)")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFileError(f"{bad}: the config array has dtype {raw.dtype}, shape {raw.shape}")
    try:
        config = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{bad}: the config is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(f"{bad}: unknown format {config.get('format') if isinstance(config, dict) else None!r}")
    version = config.get("format_version")
    if type(version) is not int or version not in _READABLE_VERSIONS:
        raise ModelFileError(
            f"{bad}: format version {version!r}; this fastmlp reads versions "
            f"{', '.join(map(str, _READABLE_VERSIONS))} (a newer fastmlp may have written it)"
        )
    if version >= 2:
        try:
            expected = _config_digest(config)
        except ValueError as exc:  # NaN or Infinity in the JSON: never written by save()
            raise ModelFileError(f"{path} was altered or is corrupt: its config cannot be checked: {exc}") from exc
        if config.get(_DIGEST_KEY) != expected:
            what = "has no digest" if _DIGEST_KEY not in config else "does not match its digest"
            raise ModelFileError(
                f"{path} was altered or is corrupt: its config (architecture, dtype, array list) {what}; "
                f"refusing to build a model from it"
            )
    described = config.get("arrays")
    if not isinstance(described, dict):
        raise ModelFileError(f"{bad}: the config lists no arrays")
    missing, extra = sorted(set(described) - set(arrays)), sorted(set(arrays) - set(described))
    if missing or extra:
        raise ModelFileError(f"{bad}: arrays missing {missing}, unexpected {extra}")
    for key, arr in arrays.items():
        want = described[key]
        if list(arr.shape) != want.get("shape") or arr.dtype.name != want.get("dtype"):
            raise ModelFileError(
                f"{bad}: array {key!r} has shape {tuple(arr.shape)} and dtype {arr.dtype}, the config says "
                f"{tuple(want.get('shape') or ())} and {want.get('dtype')}"
            )
        if arr.dtype.kind != "f":
            raise ModelFileError(f"{bad}: array {key!r} is not floating point ({arr.dtype})")
        if _sha256(arr) != want.get("sha256"):
            raise ModelFileError(f"{bad}: array {key!r} was altered (checksum mismatch)")
    return config, arrays


def _build_model(config: dict[str, Any], arrays: dict[str, np.ndarray], path: Path):
    from .layers import Sequential

    spec = config.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("layers"), list):
        raise ModelFileError(f"{path}: the config has no model architecture")
    try:
        model = Sequential.from_layer_configs(spec["layers"], dtype=spec.get("dtype", "float32"))
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path}: the saved architecture cannot be rebuilt: {exc}") from exc
    params = {k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")}
    expected = {k: p.shape for k, p in model.named_parameters()}
    if set(params) != set(expected):
        raise ModelFileError(
            f"{path}: parameters {sorted(params)} do not match the architecture's {sorted(expected)}"
        )
    for k, shape in expected.items():
        if tuple(params[k].shape) != tuple(shape):
            raise ModelFileError(f"{path}: parameter {k!r} has shape {params[k].shape}, the architecture needs {shape}")
    try:
        model.load_state_dict(params)
    except (KeyError, ValueError) as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    return model


def load(path: str | os.PathLike, backend: str | None = None):
    """Load a model saved by :func:`save` (or ``model.save``).

    Parameters
    ----------
    path : str or Path
    backend : str, optional
        Move the model to this backend (default: host memory, the current backend).

    Returns
    -------
    Sequential
        With the saved architecture, dtype and parameters.

    Raises
    ------
    FileNotFoundError
    ModelFileError
        Truncated, altered (a changed config, array, shape or checksum), pickle-bearing, or
        not a fastmlp file. Nothing is built from a file that fails any check. Files of format
        version 1 (older fastmlp) still load, without the config digest (see the module
        docstring).
    """
    return load_checkpoint(path, backend=backend, with_optimizer=False).model


def load_checkpoint(path: str | os.PathLike, backend: str | None = None, with_optimizer: bool = True) -> Checkpoint:
    """Load a model, its optimizer (if saved) and metadata, to resume training.

    ``fit(ckpt.model, ..., optimizer=ckpt.optimizer, initial_epoch=ckpt.metadata["epoch"],
    seed=<the same seed>)`` then continues exactly as the uninterrupted run would have.
    """
    path = Path(path)
    config, arrays = _read(path)
    model = _build_model(config, arrays, path)
    if backend is not None:
        model.to(backend=backend)
    optimizer = None
    if with_optimizer and config.get("optimizer") is not None:
        optimizer = _build_optimizer(config["optimizer"], arrays, model, path)
    metadata = config.get("metadata") or {}
    return Checkpoint(model, optimizer, metadata)


def _build_optimizer(spec: dict[str, Any], arrays: dict[str, np.ndarray], model, path: Path):
    from .optim import OPTIMIZERS

    try:
        cls = OPTIMIZERS[spec["class"]]
        params = model.parameters()
        groups = [{"params": [params[i] for i in idx]} for idx in spec["model_params"]]
        optimizer = cls(groups)
        state: dict[int, dict[str, Any]] = {}
        for i, scalars in spec["state"].items():
            entry = dict(scalars)
            prefix = f"optim.{i}."
            entry.update({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
            state[int(i)] = entry
        groups_sd = []
        for g in spec["param_groups"]:
            g = {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
            groups_sd.append(g)
        optimizer.load_state_dict({"state": state, "param_groups": groups_sd})
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: the saved optimizer state cannot be restored: {exc}") from exc
    return optimizer
