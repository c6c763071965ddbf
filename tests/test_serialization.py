"""Saved models: round trip, atomic writes, refusal of pickle and of damaged or foreign files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handgrad import _atomic, serialization
from handgrad.nn.layers import Linear
from handgrad.nn.module import Module, Sequential
from handgrad.nn.parameter import Parameter
from handgrad.recipes import build_mlp
from handgrad.serialization import ModelFileError, load, load_metadata, load_state, save
from tests.conftest import umask


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


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002], ids=oct)
def test_saved_file_has_the_mode_a_plain_open_gives(tmp_path: Path, mask: int) -> None:
    with umask(mask):
        path = save(_model(), tmp_path / "m.npz")
        (tmp_path / "plain").write_bytes(b"")  # what open() gives, for comparison
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "plain").stat().st_mode & 0o777 == 0o666 & ~mask
    # Replacing an existing file gives the same mode, not the old file's or 0600.
    path.chmod(0o600)
    with umask(mask):
        save(_model(), path)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_save_leaves_the_old_file_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    path = tmp_path / "m.npz"
    save(_model(), path)
    before = path.read_bytes()

    def broken_savez(fh: Any, **arrays: Any) -> None:
        fh.write(b"PK\x03\x04 half a file")
        raise error

    monkeypatch.setattr(serialization.np, "savez", broken_savez)
    with pytest.raises(type(error)):
        save(_model(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


@pytest.mark.parametrize("error", [ValueError("bad data"), KeyboardInterrupt()])
def test_atomic_open_abandons_the_file_on_any_exception(
    tmp_path: Path, error: BaseException
) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(type(error)), _atomic.atomic_open(target) as fh:
        fh.write(b"new, half written")
        assert Path(fh.name).parent == tmp_path and Path(fh.name).exists()
        raise error
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    # No target yet: a failure leaves nothing at all.
    with pytest.raises(type(error)), _atomic.atomic_open(tmp_path / "new.bin") as fh:
        raise error
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    assert _atomic.atomic_write(tmp_path / "new.bin", lambda f: f.write(b"x")).read_bytes() == b"x"


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
    with pytest.raises(
        ModelFileError,
        match=r"evil\.npz: array 'state/weight' holds pickled Python objects; handgrad never "
        r"loads pickle",
    ):
        load(path)


NOT_NPZ = r"m\.npz: not a handgrad model file: not a \.npz \(zip\) archive"
DAMAGED_NPZ = r"m\.npz: not a valid \.npz archive: damaged or truncated"


DAMAGE_MESSAGES = {
    "random": NOT_NPZ + r" \(the file starts with 0x00",
    "png": NOT_NPZ + r" \(the file starts with 0x89504e47\)",
    "npy": NOT_NPZ + r" \(the file starts with 0x934e554d\)",
    "text": NOT_NPZ + r" \(the file starts with 0x74686973\)",
    "empty": NOT_NPZ + r" \(an empty file\)",
    "truncate": DAMAGED_NPZ + r" \(BadZipFile: File is not a zip file\)",
    "flip": DAMAGED_NPZ + r" \(BadZipFile: Bad CRC-32",
    "pickled": r"m\.npz: array 'state/[^']+' holds pickled Python objects; handgrad never loads",
}


@pytest.mark.parametrize("damage", DAMAGE_MESSAGES)
def test_damaged_files_give_a_clear_error(tmp_path: Path, damage: str) -> None:
    path = save(_model(), tmp_path / "m.npz")
    data = path.read_bytes()
    if damage == "random":
        path.write_bytes(b"\x00" + np.random.default_rng(0).bytes(4000))
    elif damage == "png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(100))
    elif damage == "npy":
        with open(path, "wb") as fh:  # a file object: np.save would append .npy to a name
            np.save(fh, np.zeros(3))
    elif damage == "text":
        path.write_bytes(b"this is not a model" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # corrupt bytes inside the stored arrays: the zip CRC catches it
        mid = len(data) // 2
        path.write_bytes(
            data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 64]) + data[mid + 64 :]
        )
    else:  # a sound .npz, but one weight is an object array: loading it would unpickle
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
        key = next(k for k in arrays if k.startswith("state/"))
        arrays[key] = np.array([object()], dtype=object)
        np.savez(path, **arrays)
    with pytest.raises(ModelFileError, match=DAMAGE_MESSAGES[damage]) as info:
        load(path)
    # The pickle message only for a real .npz holding objects, never for junk.
    assert ("pickle" in str(info.value)) == (damage == "pickled")


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
    with pytest.raises(
        ModelFileError, match=r"refusing to build 'os\.system': it is not a handgrad\.nn class"
    ):
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


# -- hand-made headers ----------------------------------------------------------------

LINEAR = "handgrad.nn.layers.Linear"


def _valid_header() -> dict[str, Any]:
    return {
        "format": "handgrad-model",
        "version": 1,
        "dtype": "float32",
        "metadata": {},
        "architecture": {"class": LINEAR, "args": [2, 2], "kwargs": {}},
    }


def _write_model_file(path: Path, header: Any, **extra: np.ndarray) -> Path:
    """A model file written the way :func:`save` does: header JSON plus ``state/*`` arrays."""
    state = {f"state/{k}": v for k, v in Linear(2, 2, rng=0).state_dict().items()}
    np.savez(path, __handgrad__=np.array(json.dumps(header)), **state, **extra)
    return path


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda h: h.update({key: value})


def _arch(**changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda h: h["architecture"].update(changes)


def _drop(key: str, arch: bool = False) -> Callable[[dict[str, Any]], None]:
    return lambda h: (h["architecture"] if arch else h).pop(key)


def _nested(bad_layer: Any) -> Callable[[dict[str, Any]], None]:
    layers = [{"__module__": {"class": LINEAR, "args": [2, 2]}}, {"__module__": bad_layer}]
    return _set("architecture", {"class": "handgrad.nn.module.Sequential", "args": layers})


MALFORMED_HEADERS = {
    "no architecture": (_drop("architecture"), r"the header has no 'architecture'"),
    "architecture a string": (
        _set("architecture", LINEAR),
        r"architecture: expected an object with 'class', 'args' and 'kwargs', got str",
    ),
    "architecture a list": (_set("architecture", [LINEAR]), r"architecture: expected an object"),
    "no class": (_drop("class", arch=True), r"architecture: no 'class'"),
    "class not a string": (_arch(**{"class": 7}), r"architecture\.class: expected a string"),
    "kwargs a list": (_arch(kwargs=[2, 2]), r"architecture\.kwargs: expected an object, got list"),
    "kwargs a string": (_arch(kwargs="bias=True"), r"architecture\.kwargs: expected an object"),
    "args an object": (_arch(args={"in": 2}), r"architecture\.args: expected a list, got dict"),
    "junk in architecture": (_arch(junk=1), r"architecture: unknown key\(s\) 'junk'"),
    "junk in header": (_set("junk", [1, 2]), r"unknown header key\(s\) 'junk'"),
    "unknown class": (
        _arch(**{"class": "handgrad.nn.layers.NoSuchLayer"}),
        r"'handgrad\.nn\.layers\.NoSuchLayer' is not a handgrad Module",
    ),
    "unknown module": (
        _arch(**{"class": "handgrad.nn.nosuchmodule.Linear"}),
        r"architecture: unknown class 'handgrad\.nn\.nosuchmodule\.Linear'",
    ),
    "not a Module": (
        _arch(**{"class": "handgrad.nn.parameter.Parameter"}),
        r"is not a handgrad Module",
    ),
    "outside handgrad.nn": (  # importing handgrad.__main__ would run the command line
        _arch(**{"class": "handgrad.__main__.main"}),
        r"refusing to build 'handgrad\.__main__\.main': it is not a handgrad\.nn class",
    ),
    "too few args": (
        _arch(args=[2]),
        r"architecture\(Linear\): Linear refused the saved arguments \(TypeError",
    ),
    "args of the wrong type": (
        _arch(args=["two", "two"]),
        r"Linear refused the saved arguments \(ValueError",
    ),
    "unknown kwarg": (_arch(kwargs={"bogus": 1}), r"unexpected keyword argument 'bogus'"),
    "bad dtype value": (
        _arch(kwargs={"dtype": {"__dtype__": "nonsense"}}),
        r"architecture\(Linear\)\.kwargs\['dtype'\]: unknown dtype 'nonsense'",
    ),
    "unknown tagged value": (
        _arch(kwargs={"dtype": {"__pickle__": "x"}}),
        r"kwargs\['dtype'\]: unknown value",
    ),
    "nested kwargs a list": (
        _nested({"class": LINEAR, "args": [2, 2], "kwargs": [1]}),
        r"architecture\(Sequential\)\.args\[1\]\.kwargs: expected an object, got list",
    ),
    "nested not an object": (
        _nested("Linear"),
        r"architecture\(Sequential\)\.args\[1\]: expected an object",
    ),
    "header dtype not floating": (_set("dtype", "int32"), r"header 'dtype' must be the name"),
    "header dtype nonsense": (_set("dtype", ["float32"]), r"header 'dtype' must be the name"),
    "metadata a list": (_set("metadata", [1]), r"header 'metadata' must be an object, got list"),
    "version a string": (_set("version", "1"), r"model format version '1' is not supported"),
    "version true": (_set("version", True), r"model format version True is not supported"),
}


def test_the_valid_hand_made_header_loads(tmp_path: Path) -> None:
    model = load(_write_model_file(tmp_path / "x.npz", _valid_header()))
    assert isinstance(model, Linear) and model.weight.data.dtype == np.float32


@pytest.mark.parametrize("case", MALFORMED_HEADERS)
def test_malformed_header_names_file_and_problem(tmp_path: Path, case: str) -> None:
    change, message = MALFORMED_HEADERS[case]
    header = _valid_header()
    change(header)
    path = _write_model_file(tmp_path / "hand-made.npz", header)
    with pytest.raises(ModelFileError, match=message) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    "header", [[1, 2], "handgrad-model", {"format": "other", "version": 1}, {"version": 1}]
)
def test_header_that_is_not_a_handgrad_object(tmp_path: Path, header: Any) -> None:
    path = _write_model_file(tmp_path / "x.npz", header)
    with pytest.raises(ModelFileError, match=r"x\.npz: not a handgrad model file \(format"):
        load(path)


def test_extra_arrays_are_refused(tmp_path: Path) -> None:
    path = _write_model_file(tmp_path / "x.npz", _valid_header(), junk=np.zeros(2))
    with pytest.raises(ModelFileError, match=r"x\.npz: unexpected array\(s\) 'junk'"):
        load(path)


@pytest.mark.parametrize("config", [[LINEAR], {"class": LINEAR, "kwargs": [1]}, {"args": []}])
def test_module_from_config_raises_model_file_error(config: Any) -> None:
    with pytest.raises(ModelFileError, match=r"^architecture"):
        serialization.module_from_config(config)


# -- the user's own layers: an explicit allow-list --------------------------------------


class Scale(Module):
    """A user's layer: ``y = s * x`` with one learned scale."""

    def __init__(self, init: float = 2.0) -> None:
        super().__init__()
        self.s = Parameter(np.array([init], dtype=np.float32))

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x * self.s.data

    def backward(self, dout: np.ndarray) -> np.ndarray:  # not needed here
        raise NotImplementedError


def _custom_model() -> Sequential:
    model = Sequential(Linear(3, 2, rng=0), Sequential(Scale(0.5)))
    model[1][0].s.data[...] = 3.0  # a trained value, not the constructor's
    return model


def test_custom_layer_needs_the_allow_list(tmp_path: Path) -> None:
    model = _custom_model()
    path = save(model, tmp_path / "custom.npz")
    with pytest.raises(ModelFileError) as info:
        load(path)
    message = str(info.value)
    assert f"refusing to build '{__name__}.Scale'" in message
    assert "handgrad.load(path, custom_objects=[Scale])" in message

    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    for allow in ([Scale], (Scale,), {"Scale": Scale}, {f"{__name__}.Scale": Scale}):
        restored = load(path, custom_objects=allow)
        assert type(restored[1][0]) is Scale
        assert np.array_equal(restored[1][0].s.data, [3.0])
        assert np.array_equal(restored(x), model(x))


def test_allow_list_matches_by_bare_name_and_admits_nothing_else(tmp_path: Path) -> None:
    path = save(_custom_model(), tmp_path / "custom.npz")
    # Saved from one module, loaded where the class lives elsewhere: the bare name matches.
    renamed = type("Scale", (Scale,), {"__module__": "somewhere.else"})
    assert type(load(path, custom_objects=[renamed])[1][0]) is renamed
    # An allow-list of other classes does not open the door to the file's own choice.
    other = type("Other", (Scale,), {})
    with pytest.raises(ModelFileError, match="custom_objects=\\[Scale\\]"):
        load(path, custom_objects=[other])
    header, _, _ = serialization._read(path)
    header["architecture"]["args"][1]["__module__"]["class"] = "os.system"
    with pytest.raises(ModelFileError, match=r"refusing to build 'os\.system'"):
        serialization.module_from_config(header["architecture"], [Scale])


def test_a_bare_name_never_replaces_a_handgrad_class_and_must_be_unambiguous(
    tmp_path: Path,
) -> None:
    """A user's class that happens to be called ``Linear`` used to be built where the
    file names ``handgrad.nn.layers.Linear`` (then "unexpected keys"); two classes
    sharing the file's bare name were picked between silently."""
    path = save(_custom_model(), tmp_path / "custom.npz")
    mine = type("Linear", (Scale,), {"__module__": "mylayers"})
    restored = load(path, custom_objects=[mine, Scale])
    assert type(restored[0]) is Linear and type(restored[1][0]) is Scale
    first = type("Scale", (Scale,), {"__module__": "one.place"})
    second = type("Scale", (Scale,), {"__module__": "another.place"})
    with pytest.raises(ModelFileError, match="matches more than one class of custom_objects"):
        load(path, custom_objects=[first, second])
    assert type(load(path, custom_objects=Scale)[1][0]) is Scale  # one class, not a list


@pytest.mark.parametrize("bad", [[len], [np.ndarray], {"Scale": 3}, ["Scale"]])
def test_allow_list_holds_module_classes_only(tmp_path: Path, bad: Any) -> None:
    path = save(_custom_model(), tmp_path / "custom.npz")
    with pytest.raises(TypeError, match=r"not a Module subclass: pass the classes themselves"):
        load(path, custom_objects=bad)
