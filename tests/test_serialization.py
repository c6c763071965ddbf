"""Saved models: round trip, atomic writes, refusal of pickle and of damaged or foreign files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from handgrad import serialization
from handgrad.nn.layers import Linear
from handgrad.nn.module import Sequential
from handgrad.recipes import build_mlp
from handgrad.serialization import ModelFileError, load, load_metadata, load_state, save


def _model(dtype: type = np.float32) -> Sequential:
    model = build_mlp(
        12, [8, 6], 3, activation="gelu", dropout=0.2, batch_norm=True, rng=3, dtype=dtype
    )
    rng = np.random.default_rng(1)
    model.train()
    for _ in range(3):  # move the batch-norm running statistics off their defaults
        model.forward(rng.standard_normal((16, 12)).astype(dtype))
    return model.eval()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_gives_an_equal_model(tmp_path: Path, dtype: type) -> None:
    model = _model(dtype)
    path = save(model, tmp_path / "m.npz", metadata={"accuracy": 0.5})
    loaded = load(path)
    assert repr(loaded) == repr(model)
    x = np.random.default_rng(2).standard_normal((5, 12)).astype(dtype)
    out = loaded.eval().forward(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, model.forward(x))
    for (k1, v1), (k2, v2) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k1 == k2
        np.testing.assert_array_equal(v1, v2)
    assert load_metadata(path) == {"accuracy": 0.5}


def test_a_failed_save_leaves_the_old_file_and_no_debris(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "m.npz"
    save(_model(), path)
    before = path.read_bytes()

    def broken_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(serialization.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save(_model(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_pickled_payload_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    header = {
        "format": "handgrad-model",
        "version": 1,
        "dtype": "float32",
        "metadata": {},
        "architecture": serialization.module_config(Linear(2, 2, rng=0)),
    }
    np.savez(
        path,
        __handgrad__=np.array(json.dumps(header)),
        **{"state/weight": np.array([object()], dtype=object)},
    )
    with pytest.raises(ModelFileError, match="pickle"):
        load(path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "flip"])
def test_damaged_files_give_a_clear_error(tmp_path: Path, damage: str) -> None:
    path = save(_model(), tmp_path / "m.npz")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"this is not a model" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # corrupt bytes inside the stored arrays: the zip CRC catches it
        mid = len(data) // 2
        path.write_bytes(
            data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 64]) + data[mid + 64 :]
        )
    with pytest.raises(ModelFileError, match=r"m\.npz"):
        load(path)


def test_a_file_without_a_header_is_not_a_model(tmp_path: Path) -> None:
    np.savez(tmp_path / "plain.npz", weight=np.zeros(3))
    with pytest.raises(ModelFileError, match="not a handgrad model"):
        load(tmp_path / "plain.npz")


def test_only_handgrad_classes_are_built(tmp_path: Path) -> None:
    header = {
        "format": "handgrad-model",
        "version": 1,
        "dtype": None,
        "metadata": {},
        "architecture": {"class": "os.system", "args": ["echo hacked"], "kwargs": {}},
    }
    np.savez(tmp_path / "x.npz", __handgrad__=np.array(json.dumps(header)))
    with pytest.raises(ModelFileError, match="only handgrad classes"):
        load(tmp_path / "x.npz")


def test_weights_for_another_architecture_are_refused(tmp_path: Path) -> None:
    path = save(_model(), tmp_path / "m.npz")
    other = build_mlp(12, [8, 5], 3, rng=0)
    with pytest.raises(ModelFileError, match="do not fit this architecture"):
        load_state(other, path)
    same = build_mlp(12, [8, 6], 3, activation="gelu", dropout=0.2, batch_norm=True, rng=9)
    load_state(same, path)


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load("does/not/exist.npz")
