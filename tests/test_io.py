"""model.save / fastmlp.load: round trips, exact resume, refusal of bad files, atomic writes."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import fastmlp
from fastmlp import MLP, Sequential, fit
from fastmlp.io import ModelFileError, load_checkpoint
from fastmlp.optim import Adam, RMSprop


def data(n=96, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    return X, y


def test_round_trip_gives_identical_predictions(tmp_path):
    X, y = data()
    model = MLP(6, [10, 7], 3, activation="leaky_relu", activation_kwargs={"negative_slope": 0.2}, rng=0)
    fit(model, (X, y), epochs=2, batch_size=16, verbose=0)
    path = model.save(tmp_path / "m.npz")
    loaded = fastmlp.load(path)
    assert loaded.layer_configs() == model.layer_configs()
    assert loaded.dtype == model.dtype
    np.testing.assert_array_equal(loaded.forward(X), model.forward(X))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2
        np.testing.assert_array_equal(v1, v2)


def test_round_trip_float64_and_trainable_activation(tmp_path):
    X, y = data()
    model = Sequential(fastmlp.Linear(6, 5, rng=1), fastmlp.PReLU(5), fastmlp.Linear(5, 3, rng=2),
                       dtype="float64")
    fit(model, (X, y), epochs=2, batch_size=16, verbose=0)
    alpha = model.state_dict()["1.weight"]
    assert not np.allclose(alpha, 0.25)  # it trained
    loaded = fastmlp.load(model.save(tmp_path / "p.npz"))
    assert loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded.state_dict()["1.weight"], alpha)
    np.testing.assert_array_equal(loaded.forward(X), model.forward(X))


@pytest.mark.parametrize("make_opt", [lambda p: Adam(p, lr=0.01), lambda p: RMSprop(p, lr=0.01, momentum=0.9)])
def test_resumed_run_continues_exactly(tmp_path, make_opt):
    X, y = data(128)
    full = MLP(6, [12], 3, rng=3)
    fit(full, (X, y), optimizer=make_opt(full.parameters()), epochs=4, batch_size=16, seed=11, verbose=0)

    part = MLP(6, [12], 3, rng=3)
    opt = make_opt(part.parameters())
    fit(part, (X, y), optimizer=opt, epochs=2, batch_size=16, seed=11, verbose=0)
    part.save(tmp_path / "half.npz", optimizer=opt, metadata={"epoch": 2})
    del part, opt

    ck = load_checkpoint(tmp_path / "half.npz")
    assert ck.metadata == {"epoch": 2}
    assert type(ck.optimizer).__name__ == type(make_opt(MLP(1, [1], 1).parameters())).__name__
    fit(ck.model, (X, y), optimizer=ck.optimizer, epochs=4, initial_epoch=ck.metadata["epoch"], batch_size=16,
        seed=11, verbose=0)
    for a, b in zip(full.state_dict().values(), ck.model.state_dict().values()):
        np.testing.assert_array_equal(a, b)


def _saved(tmp_path):
    model = MLP(6, [5], 3, rng=0)
    opt = Adam(model.parameters())
    fit(model, data(), optimizer=opt, epochs=1, batch_size=32, verbose=0)  # allocates Adam's moments
    return model, model.save(tmp_path / "m.npz", optimizer=opt)


def _rewrite(src, dst, change):
    """Copy an .npz, letting ``change(name, array)`` replace arrays (config kept as is)."""
    with np.load(src, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays = {k: change(k, v) for k, v in arrays.items()}
    np.savez(dst, **arrays)
    return dst


def test_truncated_file_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    raw = path.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 30, 100):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(raw[:cut])
        with pytest.raises(ModelFileError, match="truncated|corrupt"):
            fastmlp.load(bad)


def test_changed_shape_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    bad = _rewrite(path, tmp_path / "shape.npz",
                   lambda k, v: np.zeros((5, 7), v.dtype) if k == "param.0.weight" else v)
    with pytest.raises(ModelFileError, match="param.0.weight.*shape"):
        fastmlp.load(bad)


def test_changed_values_are_refused(tmp_path):
    _, path = _saved(tmp_path)
    bad = _rewrite(path, tmp_path / "vals.npz", lambda k, v: v + 1 if k == "param.0.bias" else v)
    with pytest.raises(ModelFileError, match="altered"):
        fastmlp.load(bad)


def test_consistently_altered_config_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    config = json.loads(arrays["__fastmlp__"].tobytes())
    config["model"]["layers"][0]["out_features"] = 4  # the arrays no longer fit the architecture
    arrays["__fastmlp__"] = np.frombuffer(json.dumps(config).encode(), np.uint8)
    np.savez(tmp_path / "cfg.npz", **arrays)
    with pytest.raises(ModelFileError, match="altered or is corrupt"):  # the config digest
        fastmlp.load(tmp_path / "cfg.npz")
    config.pop("digest")
    config["format_version"] = 1  # an older file has no digest: the shape check still catches it
    arrays["__fastmlp__"] = np.frombuffer(json.dumps(config).encode(), np.uint8)
    np.savez(tmp_path / "cfg1.npz", **arrays)
    with pytest.raises(ModelFileError, match="shape"):
        fastmlp.load(tmp_path / "cfg1.npz")


def test_pickle_bearing_file_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["param.0.bias"] = np.array([{"evil": 1}, None], dtype=object)
    np.savez(tmp_path / "pickle.npz", **arrays)
    with pytest.raises(ModelFileError, match="pickle"):
        fastmlp.load(tmp_path / "pickle.npz")


def test_foreign_and_missing_files_are_refused(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ModelFileError, match="config"):
        fastmlp.load(tmp_path / "other.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ModelFileError):
        fastmlp.load(tmp_path / "single.npy")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ModelFileError):
        fastmlp.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError):
        fastmlp.load(tmp_path / "nope.npz")


def test_file_holds_no_pickle_and_a_json_config(tmp_path):
    _, path = _saved(tmp_path)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    assert "__fastmlp__.npy" in names and "param.0.weight.npy" in names and "optim.0.exp_avg.npy" in names
    with np.load(path, allow_pickle=False) as npz:
        config = json.loads(npz["__fastmlp__"].tobytes())
    assert config["fastmlp_version"] == fastmlp.__version__
    assert config["model"]["dtype"] == "float32"
    assert config["model"]["layers"][1] == {"type": "relu"}
    assert config["optimizer"]["class"] == "adam"


def test_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    model, path = _saved(tmp_path)
    before = path.read_bytes()

    def broken_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    other = MLP(6, [5], 3, rng=99)
    with pytest.raises(OSError, match="disk full"):
        other.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temporary left behind
    monkeypatch.undo()
    np.testing.assert_array_equal(fastmlp.load(path).predict(np.ones((2, 6))), model.predict(np.ones((2, 6))))


def test_save_rejects_bad_arguments(tmp_path):
    model = MLP(6, [5], 3)
    with pytest.raises(TypeError, match="JSON"):
        model.save(tmp_path / "m.npz", metadata={"f": object()})
    with pytest.raises(IsADirectoryError):
        model.save(tmp_path)
    foreign = Adam(MLP(6, [5], 3).parameters())
    with pytest.raises(ValueError, match="not the model's"):
        model.save(tmp_path / "m.npz", optimizer=foreign)


@pytest.mark.parametrize("name", list(fastmlp.backends()))
def test_round_trip_on_every_backend(tmp_path, name):
    info = fastmlp.backends()[name]
    if not info.available:
        pytest.skip(f"backend {name} unavailable: {info.reason}")
    X = fastmlp.get_backend(name).asarray(data()[0])  # on the backend's device
    model = MLP(6, [5], 3, rng=0).to(backend=name)
    loaded = fastmlp.load(model.save(tmp_path / "m.npz"), backend=name)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def _rewrite_config(src, dst, change):
    """Copy an .npz, letting ``change(config)`` edit the parsed JSON config in place (arrays kept)."""
    with np.load(src, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    config = json.loads(arrays["__fastmlp__"].tobytes())
    change(config)
    arrays["__fastmlp__"] = np.frombuffer(json.dumps(config).encode(), np.uint8)
    np.savez(dst, **arrays)
    return dst


def _set_activation(config):
    config["model"]["layers"][1] = {"type": "tanh"}


def _set_dtype(config):
    config["model"]["dtype"] = "float64"


def _set_metadata(config):
    config["metadata"] = {"epoch": 99}


def _set_lr(config):
    config["optimizer"]["param_groups"][0]["lr"] = 0.5


def _drop_digest(config):
    del config["digest"]


@pytest.mark.parametrize("change", [_set_activation, _set_dtype, _set_metadata, _set_lr, _drop_digest])
def test_altered_config_is_refused_naming_the_file(tmp_path, change):
    """Editing the JSON config and re-saving with np.savez must not give a different model silently."""
    _, path = _saved(tmp_path)
    bad = _rewrite_config(path, tmp_path / f"{change.__name__}.npz", change)
    with pytest.raises(ModelFileError, match="altered or is corrupt") as info:
        load_checkpoint(bad)
    assert str(bad) in str(info.value)
    with pytest.raises(ModelFileError, match="altered or is corrupt"):
        fastmlp.load(bad)


def test_digest_ignores_key_order_and_whitespace(tmp_path):
    """The digest is over the config's content: re-serialising the same JSON still loads."""
    model, path = _saved(tmp_path)

    def reformat(src, dst):
        with np.load(src, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        config = json.loads(arrays["__fastmlp__"].tobytes())
        text = json.dumps(dict(reversed(list(config.items()))), indent=2)
        arrays["__fastmlp__"] = np.frombuffer(text.encode(), np.uint8)
        np.savez(dst, **arrays)
        return dst

    loaded = fastmlp.load(reformat(path, tmp_path / "same.npz"))
    X = data()[0]
    np.testing.assert_array_equal(loaded.forward(X), model.forward(X))


def test_config_records_format_version_and_digest(tmp_path):
    _, path = _saved(tmp_path)
    with np.load(path, allow_pickle=False) as npz:
        config = json.loads(npz["__fastmlp__"].tobytes())
    assert config["format_version"] == fastmlp.io.FORMAT_VERSION == 2
    assert config["digest"].startswith("sha256:") and len(config["digest"]) == len("sha256:") + 64


def test_version_1_file_without_digest_still_loads(tmp_path):
    """Files written before the config digest (format version 1) keep loading, arrays still checked."""
    model, path = _saved(tmp_path)

    def to_v1(config):
        config["format_version"] = 1
        del config["digest"]

    old = _rewrite_config(path, tmp_path / "v1.npz", to_v1)
    ck = load_checkpoint(old)
    X = data()[0]
    np.testing.assert_array_equal(ck.model.forward(X), model.forward(X))
    assert ck.optimizer is not None
    bad = _rewrite(old, tmp_path / "v1bad.npz", lambda k, v: v + 1 if k == "param.0.bias" else v)
    with pytest.raises(ModelFileError, match="altered"):
        fastmlp.load(bad)


@pytest.mark.parametrize("version", [3, "2", None])
def test_unknown_format_version_is_refused(tmp_path, version):
    _, path = _saved(tmp_path)
    bad = _rewrite_config(path, tmp_path / "ver.npz", lambda c: c.update(format_version=version))
    with pytest.raises(ModelFileError, match="format version"):
        fastmlp.load(bad)


def test_save_into_a_missing_folder_names_the_folder(tmp_path):
    model = MLP(6, [5], 3)
    with pytest.raises(FileNotFoundError, match="the folder .*missing.* does not exist"):
        model.save(tmp_path / "missing" / "m.npz")
    assert list(tmp_path.iterdir()) == []
