"""The model loader under hostile input: forged headers and sizes, random and mutated
bytes (hypothesis). Only ModelFileError comes out (FileNotFoundError for a missing
path), naming the file, in one line; forged sizes are refused before they are allocated,
which tracemalloc (it sees NumPy's allocations) measures."""

from __future__ import annotations

import io
import json
import re
import struct
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handgrad import _npz, serialization
from handgrad.nn import BatchNorm1d, Conv2d, LayerNorm, Linear, Module, Sequential
from handgrad.recipes import build_mlp
from handgrad.serialization import (
    ModelFileError,
    load,
    load_metadata,
    load_state,
    planned_arrays,
    read_file,
    save,
    write_file,
)
from tests.cases import MODULE_CASES

# A forged file may make the loader allocate no more than this (the valid files here
# are a few KB; the forgeries ask for gigabytes).
PEAK_LIMIT = 16 << 20
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LINEAR = "handgrad.nn.layers.Linear"
SEQUENTIAL = "handgrad.nn.module.Sequential"
LOADERS: dict[str, Callable[[Path], Any]] = {
    "load": load,
    "read_file": read_file,
    "load_metadata": load_metadata,
    "load_state": lambda p: load_state(Linear(2, 2, rng=0), p),
}


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    """Yield a list that holds, after the block, the peak bytes traced within it."""
    result: list[int] = []
    tracemalloc.start()
    try:
        yield result
    finally:
        result.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def refused(path: Path, loader: Callable[[Path], Any] = load) -> ModelFileError:
    """The ModelFileError ``loader`` raises for ``path``, checked to name it in one line."""
    with pytest.raises(ModelFileError) as info:
        loader(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    return info.value


def loads_or_refuses(path: Path, loader: Callable[[Path], Any] = load) -> None:
    """The only outcomes a fuzzed file may have: a result, or a ModelFileError naming it."""
    try:
        loader(path)
    except ModelFileError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc), str(exc)


# -- forging files ----------------------------------------------------------------------


def npy(descr: Any, shape: tuple[int, ...], data: bytes = b"", fortran: bool = False) -> bytes:
    """A .npy member with a hand-written header: it may claim anything."""
    text = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    pad = -(10 + len(text) + 1) % 64
    header = (text + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def header(architecture: Any, **changes: Any) -> dict[str, Any]:
    return {
        "format": "handgrad-model",
        "version": 1,
        "dtype": "float32",
        "metadata": {},
        "architecture": architecture,
        **changes,
    }


def linear(n_in: Any, n_out: Any) -> dict[str, Any]:
    return {"class": LINEAR, "args": [n_in, n_out], "kwargs": {}}


def small_state() -> dict[str, np.ndarray]:
    return {f"state/{k}": v for k, v in Linear(2, 2, rng=0).state_dict().items()}


def write(path: Path, head: Any, **arrays: np.ndarray) -> Path:
    """A model file as save() lays it out, with any header and arrays."""
    np.savez(path, __handgrad__=np.array(json.dumps(head)), **arrays)
    return path


def write_members(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def header_member(head: Any) -> bytes:
    text = json.dumps(head)
    return npy(f"<U{len(text)}", (), text.encode("utf-32-le"))


def valid_bytes(tmp_path: Path) -> bytes:
    model = build_mlp(6, [5], 3, batch_norm=True, rng=0)
    return save(model, tmp_path / "valid.npz", metadata={"seed": 2**127 + 1}).read_bytes()


# -- the forgeries of issue 11, each refused before it costs memory ---------------------


def _huge_linear(tmp_path: Path) -> Path:  # 966 bytes that asked for 4.6 GB
    return write(tmp_path / "m.npz", header(linear(20000, 20000)), **small_state())


def _float_sizes(tmp_path: Path) -> Path:  # Linear(1, 3e8): 5.7 GB
    return write(tmp_path / "m.npz", header(linear(1, 3e8)), **small_state())


def _nested_huge(tmp_path: Path) -> Path:
    inner = {"class": SEQUENTIAL, "args": [{"__module__": linear(2, 2)}], "kwargs": {}}
    arch = {"class": SEQUENTIAL, "args": [{"__module__": inner}, {"__module__": linear(9**9, 9)}]}
    return write(tmp_path / "m.npz", header(arch), **small_state())


def _huge_batchnorm(tmp_path: Path) -> Path:
    arch = {"class": "handgrad.nn.normalization.BatchNorm1d", "args": [10**9], "kwargs": {}}
    return write(tmp_path / "m.npz", header(arch), **small_state())


def _huge_layernorm(tmp_path: Path) -> Path:
    arch = {"class": "handgrad.nn.normalization.LayerNorm", "args": [[30000, 30000]]}
    return write(tmp_path / "m.npz", header(arch), **small_state())


def _huge_conv(tmp_path: Path) -> Path:
    arch = {"class": "handgrad.nn.conv.Conv2d", "args": [1000, 1000, 100], "kwargs": {}}
    return write(tmp_path / "m.npz", header(arch), **small_state())


def _unicode_extra(tmp_path: Path) -> Path:  # dtype U500000000: 7.6 GB
    members = {"__handgrad__.npy": header_member(header(linear(2, 2)))}
    members["extra/x.npy"] = npy("<U500000000", (), b"abcd")
    return write_members(tmp_path / "m.npz", members)


def _unicode_header(tmp_path: Path) -> Path:
    return write_members(tmp_path / "m.npz", {"__handgrad__.npy": npy("<U500000000", ())})


def _huge_count(tmp_path: Path) -> Path:  # 10^12 elements: a bare MemoryError
    members = {"__handgrad__.npy": header_member(header(linear(2, 2)))}
    members["state/weight.npy"] = npy("<f4", (10**6, 10**6), bytes(16))
    return write_members(tmp_path / "m.npz", members)


def _shape_too_small(tmp_path: Path) -> Path:  # more data than the header says
    members = {"__handgrad__.npy": header_member(header(linear(2, 2)))}
    members["state/weight.npy"] = npy("<f4", (2,), bytes(64))
    return write_members(tmp_path / "m.npz", members)


def _object_state(tmp_path: Path) -> Path:
    members = {"__handgrad__.npy": header_member(header(linear(2, 2)))}
    members["state/weight.npy"] = npy("|O", (1,), b"\x80\x04N.")
    return write_members(tmp_path / "m.npz", members)


def _string_state(tmp_path: Path) -> Path:
    members = {"__handgrad__.npy": header_member(header(linear(2, 2)))}
    members["state/weight.npy"] = npy("|S4", (1,), b"abcd")
    return write_members(tmp_path / "m.npz", members)


def _record_extra(tmp_path: Path) -> Path:
    members = {"__handgrad__.npy": header_member(header(linear(2, 2)))}
    members["extra/r.npy"] = npy([("a", "<f4")], (1,), bytes(4))
    return write_members(tmp_path / "m.npz", members)


def _nested_400(tmp_path: Path) -> Path:  # RecursionError
    # written by hand: json.dumps itself cannot nest this deep
    opening = f'{{"__module__": {{"class": "{SEQUENTIAL}", "args": ['
    arch = opening * 400 + json.dumps({"__module__": linear(2, 2)}) + "]}}" * 400
    text = json.dumps(header(None)).replace('"architecture": null', f'"architecture": {arch}')
    return write_members(tmp_path / "m.npz", {"__handgrad__.npy": header_member_text(text)})


def _deep_json(tmp_path: Path) -> Path:  # nested lists far past the recursion limit
    text = json.dumps(header(linear(2, 2)))
    text = text[:-1] + ', "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}"
    return write_members(tmp_path / "m.npz", {"__handgrad__.npy": header_member_text(text)})


def header_member_text(text: str) -> bytes:
    return npy(f"<U{len(text)}", (), text.encode("utf-32-le"))


def _many_modules(tmp_path: Path) -> Path:
    relu = {"__module__": {"class": "handgrad.nn.activations.ReLU"}}
    arch = {"class": SEQUENTIAL, "args": [relu] * 10_001, "kwargs": {}}
    return write(tmp_path / "m.npz", header(arch))


def _long_integer(tmp_path: Path) -> Path:  # a bare ValueError
    text = json.dumps(header(linear(2, 2))).replace('"metadata": {}', '"metadata": ' + "9" * 5000)
    return write_members(tmp_path / "m.npz", {"__handgrad__.npy": header_member_text(text)})


def _encrypted(tmp_path: Path) -> Path:  # RuntimeError
    path = tmp_path / "m.npz"
    data = bytearray(valid_bytes(tmp_path))
    for signature, flag_at in ((b"PK\x01\x02", 8), (b"PK\x03\x04", 6)):
        at = data.find(signature)
        data[at + flag_at] |= 1
    path.write_bytes(bytes(data))
    return path


def _compression_method(tmp_path: Path) -> Path:  # NotImplementedError
    path = tmp_path / "m.npz"
    data = bytearray(valid_bytes(tmp_path))
    for signature, method_at in ((b"PK\x01\x02", 10), (b"PK\x03\x04", 8)):
        at = data.find(signature)
        data[at + method_at] = 99
    path.write_bytes(bytes(data))
    return path


def _declared_deflate(tmp_path: Path) -> Path:  # a 2 GB member, by its zip entry
    members = {"__handgrad__.npy": header_member(header(linear(2, 2)))}
    members["extra/bomb.npy"] = npy("<f8", (2**28,))
    path = write_members(tmp_path / "m.npz", members, zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    # The unpacked size, in both headers: 2 GB from a few hundred bytes.
    for signature, size_at in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        at = data.rfind(signature)
        data[at + size_at : at + size_at + 4] = struct.pack("<I", 2**31)
    path.write_bytes(bytes(data))
    return path


def _junk_member(tmp_path: Path) -> Path:  # refused by its name, never decompressed
    members = {"__handgrad__.npy": header_member(header(linear(2, 2)))}
    members["junk.npy"] = npy("<f8", (2**20,), bytes(8 << 20))
    return write_members(tmp_path / "m.npz", members, zipfile.ZIP_DEFLATED)


def _duplicate_member(tmp_path: Path) -> Path:
    path = write(tmp_path / "m.npz", header(linear(2, 2)), **small_state())
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "a") as zf:
        zf.writestr("state/weight.npy", npy("<f4", (2, 2), bytes(16)))
    return path


def _bool_weights(tmp_path: Path) -> Path:  # 63 KB that built an 8000x8000 float128 (4 GB)
    members = {"__handgrad__.npy": header_member(header(linear(3000, 3000)))}
    members["state/weight.npy"] = npy("|b1", (3000, 3000), bytes(9_000_000))
    members["state/bias.npy"] = npy("<f4", (3000,), bytes(12_000))
    return write_members(tmp_path / "m.npz", members, zipfile.ZIP_DEFLATED)


def _float128_layer(tmp_path: Path) -> Path:
    arch = {"class": LINEAR, "args": [2, 2], "kwargs": {"dtype": {"__dtype__": "float128"}}}
    return write(tmp_path / "m.npz", header(arch), **small_state())


def _inflated_header(tmp_path: Path) -> Path:  # 131 KB whose header parsed into 843 MB
    text = json.dumps(header(linear(2, 2), metadata={"pad": " " * (3 << 20)}))
    members = {"__handgrad__.npy": npy(f"<U{len(text)}", (), text.encode("utf-32-le"))}
    members.update({k + ".npy": _npy_of(v) for k, v in small_state().items()})
    return write_members(tmp_path / "m.npz", members, zipfile.ZIP_DEFLATED)


def _npy_of(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


FORGERIES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "Linear(20000, 20000)": (
        _huge_linear,
        r"architecture\(Linear\): this Linear needs a 'weight' of shape \(20000, 20000\) "
        r"\(400,000,000 numbers\), and the file stores no array of that shape: refusing",
    ),
    "Linear(1, 3e8)": (_float_sizes, r"needs a 'weight' of shape \(300000000, 1\)"),
    "nested Linear(9**9, 9)": (
        _nested_huge,
        r"architecture\(Sequential\)\.args\[1\]\(Linear\): this Linear needs a 'weight'",
    ),
    "BatchNorm1d(1e9)": (_huge_batchnorm, r"this BatchNorm1d needs a 'weight' of shape"),
    "LayerNorm((30000, 30000))": (_huge_layernorm, r"this LayerNorm needs a 'weight' of shape"),
    "Conv2d(1000, 1000, 100)": (
        _huge_conv,
        r"this Conv2d needs a 'weight' of shape \(1000, 1000, 100, 100\)",
    ),
    "extra dtype U500000000": (
        _unicode_extra,
        r"array 'extra/x' has dtype '<U500000000'; it may hold bool, int, unsigned int, float "
        r"or complex",
    ),
    "header dtype U500000000": (
        _unicode_header,
        r"array '__handgrad__' claims shape \(\) of <U500000000 \(2,000,000,000 bytes\), but "
        r"the archive holds 0 bytes",
    ),
    "10^12 elements": (
        _huge_count,
        r"array 'state/weight' claims shape \(1000000, 1000000\) of float32 "
        r"\(4,000,000,000,000 bytes\), but the archive holds 16 bytes",
    ),
    "shape smaller than data": (_shape_too_small, r"claims shape \(2,\) of float32 \(8 bytes\)"),
    "object array": (_object_state, r"array 'state/weight' holds pickled Python objects"),
    "bytes array": (
        _string_state,
        r"array 'state/weight' has dtype '\|S4'; it may hold bool, int, unsigned int or float$",
    ),
    "record extra": (_record_extra, r"array 'extra/r' has dtype"),
    "400 nested Sequentials": (
        _nested_400,
        r"the header is nested more than 100 levels deep",
    ),
    "100,000 nested lists": (_deep_json, r"the header is nested more than 100 levels deep"),
    "10,001 modules": (_many_modules, r"the architecture has more than 10,000 modules"),
    "5,000-digit integer": (_long_integer, r"damaged header \(Exceeds the limit \(4300 digits\)"),
    "encrypted flag": (_encrypted, r"member '[^']+' is encrypted; handgrad's files never are"),
    "compression method 99": (
        _compression_method,
        r"uses compression method 99, which handgrad does not read",
    ),
    "2 GB deflate member": (
        _declared_deflate,
        r"its arrays declare 2,147,4\d\d,\d\d\d bytes unpacked, from a file of \d+ bytes: "
        r"refusing to decompress them",
    ),
    "bool weights for a float layer": (
        _bool_weights,
        r"this Linear needs a 'weight' of shape \(3000, 3000\) \(9,000,000 numbers\), and "
        r"the file stores no float array of that shape",
    ),
    "float128 layer": (_float128_layer, r"dtype float128 is not one handgrad computes in"),
    "header inflating past the file": (
        _inflated_header,
        r"the header declares 3,14\d,\d\d\d characters, more than a file of [\d,]+ bytes "
        r"holds uncompressed: refusing to inflate it",
    ),
    "junk member": (_junk_member, r"unexpected array\(s\) 'junk'"),
    "duplicate member": (_duplicate_member, r"member 'state/weight\.npy' appears twice"),
}


# Found wrong only when the architecture is built (load, read_file).
BUILT_ONLY = {case for case, (_, message) in FORGERIES.items() if "needs a" in message}
BUILT_ONLY |= {"10,001 modules", "float128 layer"}


@pytest.mark.parametrize("case", FORGERIES)
def test_forgery_is_refused_before_allocating(tmp_path: Path, case: str) -> None:
    make, message = FORGERIES[case]
    path = make(tmp_path)
    with peak_memory() as peak:
        error = refused(path)
    assert peak[0] < PEAK_LIMIT, f"{case}: peak {peak[0]:,} bytes"
    assert re.search(message, str(error)), str(error)


@pytest.mark.parametrize("case", FORGERIES)
@pytest.mark.parametrize("loader", ["read_file", "load_metadata", "load_state"])
def test_every_loader_refuses_the_forgeries(tmp_path: Path, case: str, loader: str) -> None:
    path = FORGERIES[case][0](tmp_path)
    with peak_memory() as peak:
        if loader != "read_file" and case in BUILT_ONLY:
            loads_or_refuses(path, LOADERS[loader])  # only load/read_file build layers
        else:
            refused(path, LOADERS[loader])
    assert peak[0] < PEAK_LIMIT


def test_a_real_deflate_bomb_is_refused_before_decompressing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member that truly inflates 40 MB from 40 KB, against a 1 MB allowance."""
    monkeypatch.setattr(_npz, "DEFLATE_ALLOWANCE", 1 << 20)
    members = {"__handgrad__.npy": header_member(header(linear(2, 2)))}
    members["extra/zeros.npy"] = npy("<f8", (5 << 20,), bytes(40 << 20))
    path = write_members(tmp_path / "m.npz", members, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    with peak_memory() as peak:
        refused(path)
    assert peak[0] < 4 << 20  # not the 40 MB


def test_a_compressed_model_within_the_allowance_loads(tmp_path: Path) -> None:
    model = build_mlp(6, [5], 3, rng=0)
    arrays = {f"state/{k}": v for k, v in model.state_dict().items()}
    head = np.array(json.dumps(header(serialization.module_config(model))))
    np.savez_compressed(tmp_path / "c.npz", __handgrad__=head, **arrays)
    x = np.ones((2, 6), np.float32)
    np.testing.assert_array_equal(load(tmp_path / "c.npz")(x), model(x))


def test_checkpoint_metadata_keeps_128_bit_integers(tmp_path: Path) -> None:
    state = np.random.default_rng(7).bit_generator.state
    path = write_file(
        Linear(2, 2, rng=0),
        tmp_path / "c.npz",
        metadata={"rng": state},
        extras={"opt/m": np.ones(3), "step": np.array(4), "mask": np.array([True])},
    )
    _, head, extras = read_file(path)
    assert head["metadata"]["rng"] == state
    assert head["metadata"]["rng"]["state"]["state"] > 2**64
    assert sorted(extras) == ["mask", "opt/m", "step"]
    assert load_metadata(path) == {"rng": state}


def test_extras_count_towards_the_size_bound(tmp_path: Path) -> None:
    members = {"__handgrad__.npy": header_member(header(linear(2, 2)))}
    members["extra/a.npy"] = npy("<f8", (10**9,), bytes(8))
    with peak_memory() as peak:
        refused(write_members(tmp_path / "m.npz", members))
    assert peak[0] < PEAK_LIMIT


# -- non-finite weights ---------------------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("key", ["1.weight", "2.running_var"])
def test_non_finite_weights_are_refused(tmp_path: Path, value: float, key: str) -> None:
    """A NaN weight loaded and evaluated at 9.80%, exit 0, no warning."""
    model = build_mlp(4, [3], 2, batch_norm=True, rng=0)
    path = save(model, tmp_path / "nan.npz")
    state = {f"state/{k}": v for k, v in model.state_dict().items()}
    state[f"state/{key}"] = state[f"state/{key}"].copy()
    state[f"state/{key}"].flat[1] = value
    write(path, serialization._read(path)[0], **state)
    kind = "parameter" if key.endswith("weight") else "buffer"
    message = rf"{kind} '{key}' holds 1 non-finite value\(s\) \(NaN or inf\)"
    assert re.search(message, str(refused(path)))
    fresh = build_mlp(4, [3], 2, batch_norm=True, rng=1)
    before = fresh.state_dict()
    refused(path, lambda p: load_state(fresh, p))
    for k, v in fresh.state_dict().items():  # left as it was
        np.testing.assert_array_equal(v, before[k])


def test_a_finite_float64_that_overflows_float32_is_refused(tmp_path: Path) -> None:
    model = Linear(2, 2, rng=0)
    state = {f"state/{k}": v.astype(np.float64) for k, v in model.state_dict().items()}
    state["state/weight"][0, 0] = 1e300
    path = write(tmp_path / "big.npz", header(linear(2, 2)), **state)
    assert "parameter 'weight' holds 1 non-finite value" in str(refused(path))


def test_the_cli_prints_one_line_for_a_nan_model(tmp_path: Path, capsys: Any) -> None:
    from handgrad.cli import main

    model = build_mlp(784, [4], 10, rng=0)
    model[1].weight.data[0, 0] = np.nan
    path = save(model, tmp_path / "nan.npz")
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"handgrad evaluate: error: {path}: parameter '1.weight' holds 1 non-finite value(s) "
        "(NaN or inf) among 3,136: the model would only output NaN; refusing to load it "
        "(retrain, or load an earlier checkpoint)"
    ]


# -- the architecture plan agrees with the constructors -----------------------------------


def _own_shapes(module: Module) -> dict[str, tuple[int, ...]]:
    own = {k: p.shape for k, p in module._parameters.items() if p is not None}
    own.update({k: tuple(b.shape) for k, b in module._buffers.items()})
    return own


@pytest.mark.parametrize("case", MODULE_CASES, ids=str)
def test_plan_matches_every_case_module(case: Any) -> None:
    """Every handgrad.nn layer that allocates is planned, and planned exactly."""
    for _, module in case.make(np.random.default_rng(0)).named_modules():
        args, kwargs = module.__dict__["_init_args"]
        plan = planned_arrays(type(module), args, kwargs)
        own = _own_shapes(module)
        if plan is None:
            assert not own, f"{type(module).__name__} allocates {own} but has no plan"
        else:
            assert plan == own


sizes = st.integers(min_value=-2, max_value=6)
flags = st.sampled_from([True, False, 0, 1, "", "yes", None])


@FUZZ
@given(
    data=st.data(),
    cls=st.sampled_from([Linear, Conv2d, BatchNorm1d, LayerNorm]),
)
def test_plan_matches_the_constructor(data: st.DataObject, cls: type[Module]) -> None:
    if cls is Linear:
        args: list[Any] = [data.draw(sizes), data.draw(sizes | st.floats(-1, 6)), data.draw(flags)]
    elif cls is Conv2d:
        kernel = sizes | st.tuples(sizes, sizes) | st.lists(sizes, max_size=3)
        args = [data.draw(sizes), data.draw(sizes), data.draw(kernel)]
        args += [1, 0, 1, data.draw(st.integers(-1, 3)), data.draw(flags)]
    elif cls is BatchNorm1d:
        args = [data.draw(sizes), 1e-5, 0.1, data.draw(flags), data.draw(flags)]
    else:
        shape = sizes | st.lists(sizes, max_size=3) | st.tuples(sizes, sizes)
        args = [data.draw(shape), 1e-5, data.draw(flags), data.draw(flags)]
    plan = planned_arrays(cls, args)
    try:
        module = cls(*args)
    except Exception:
        assert plan == {}  # refused by the constructor: nothing planned, nothing allocated
        return
    assert plan == _own_shapes(module)


# -- hypothesis: random bytes, mutated files, forged architectures -------------------------


@settings(FUZZ, max_examples=150)
@given(data=st.binary(max_size=2000), magic=st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06"]))
def test_random_bytes(tmp_path: Path, data: bytes, magic: bytes) -> None:
    path = tmp_path / "random.npz"
    path.write_bytes(magic + data)
    for loader in LOADERS.values():
        refused(path, loader)


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return valid_bytes(tmp_path_factory.mktemp("valid"))


@settings(FUZZ, max_examples=200)
@given(
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.none() | st.integers(0, 10**6),
)
def test_mutated_model_files(
    tmp_path: Path, valid_file: bytes, flips: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(valid_file)
    for at, byte in flips:
        data[at % len(data)] = byte
    if cut is not None:
        data = data[: cut % len(data)]
    path = tmp_path / "mutated.npz"
    path.write_bytes(bytes(data))
    with peak_memory() as peak:
        for loader in LOADERS.values():
            loads_or_refuses(path, loader)
    assert peak[0] < PEAK_LIMIT


def _mutate_zip_fields(data: bytearray, draw: Callable[[Any], Any]) -> None:
    """Overwrite a field of a zip record (sizes, flags, methods, offsets, name lengths)."""
    starts = [i for i in range(len(data) - 4) if data[i : i + 2] == b"PK" and data[i + 2] < 9]
    at = draw(st.sampled_from(starts)) + draw(st.integers(4, 46))
    width = draw(st.sampled_from([1, 2, 4]))
    value = draw(st.integers(0, 2 ** (8 * width) - 1) | st.sampled_from([0, 2**31, 2**32 - 1]))
    if at + width <= len(data):
        data[at : at + width] = (value % 2 ** (8 * width)).to_bytes(width, "little")


@settings(FUZZ, max_examples=120)
@given(data=st.data())
def test_forged_zip_fields(tmp_path: Path, valid_file: bytes, data: st.DataObject) -> None:
    raw = bytearray(valid_file)
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate_zip_fields(raw, data.draw)
    path = tmp_path / "forged.npz"
    path.write_bytes(bytes(raw))
    with peak_memory() as peak:
        for loader in LOADERS.values():
            loads_or_refuses(path, loader)
    assert peak[0] < PEAK_LIMIT


CLASSES = [
    LINEAR,
    SEQUENTIAL,
    "handgrad.nn.conv.Conv2d",
    "handgrad.nn.normalization.BatchNorm1d",
    "handgrad.nn.normalization.BatchNorm2d",
    "handgrad.nn.normalization.LayerNorm",
    "handgrad.nn.layers.Dropout",
    "handgrad.nn.layers.Unflatten",
    "handgrad.nn.pooling.MaxPool2d",
    "handgrad.nn.pooling.AdaptiveAvgPool2d",
    "handgrad.nn.activations.ReLU",
    "handgrad.nn.fused.ConvMaxPool",
    "handgrad.nn.layers.NoSuch",
    "os.system",
]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 5)
    | st.sampled_from([20000, 3 * 10**8, 2**40, 10**100])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5)
)


def _values(modules: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        json_scalars
        | st.builds(lambda m: {"__module__": m}, modules)
        | st.builds(lambda d: {"__dtype__": d}, st.sampled_from(["float32", "U9999999", "O"])),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.builds(lambda v: {"__tuple__": v}, st.lists(inner, max_size=3))
            | st.builds(
                lambda v, d: {"__array__": v, "dtype": d},
                st.lists(inner, max_size=3),
                st.sampled_from(["float32", "int8", "U500000000", "V8"]),
            )
        ),
        max_leaves=8,
    )


architectures = st.deferred(
    lambda: st.fixed_dictionaries(
        {"class": st.sampled_from(CLASSES)},
        optional={
            "args": st.lists(_values(architectures), max_size=4),
            "kwargs": st.dictionaries(
                st.sampled_from(["bias", "dtype", "affine", "groups", "stride", "p"]),
                _values(architectures),
                max_size=2,
            ),
        },
    )
)


@settings(FUZZ, max_examples=200)
@given(arch=architectures, dtype=st.sampled_from(["float32", "float64", None]))
def test_forged_architectures(tmp_path: Path, arch: dict[str, Any], dtype: str | None) -> None:
    path = write(tmp_path / "arch.npz", header(arch, dtype=dtype), **small_state())
    with peak_memory() as peak:
        loads_or_refuses(path)
    assert peak[0] < PEAK_LIMIT


def test_a_missing_path_is_file_not_found(tmp_path: Path) -> None:
    for loader in LOADERS.values():
        with pytest.raises(FileNotFoundError, match="model file not found"):
            loader(tmp_path / "absent.npz")
    with pytest.raises(FileNotFoundError, match="is a directory, not a model file"):
        load(tmp_path)


def test_a_model_nested_within_the_limit_loads(tmp_path: Path) -> None:
    model: Module = Linear(2, 2, rng=0)
    for _ in range(30):
        model = Sequential(model)
    x = np.ones((1, 2), np.float32)
    np.testing.assert_array_equal(load(save(model, tmp_path / "deep.npz"))(x), model(x))


@pytest.mark.parametrize(
    ("extras", "metadata", "message"),
    [
        (
            {"names": np.array(["a"])},
            {},
            r"extra 'names': a model file's extra arrays hold numbers",
        ),
        ({"objects": np.array([None])}, {}, r"extra arrays hold numbers, not object"),
        ({"bad\nname": np.ones(1)}, {}, r"not a printable name"),
        ({}, {"deep": json.loads("[" * 120 + "]" * 120)}, r"nested more than 100 levels"),
    ],
)
def test_write_file_refuses_what_read_file_would(
    tmp_path: Path, extras: dict[str, np.ndarray], metadata: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModelFileError, match=message):
        write_file(Linear(2, 2, rng=0), tmp_path / "w.npz", metadata, extras)
    assert not list(tmp_path.iterdir())


def test_a_header_longer_than_the_limit_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serialization, "MAX_HEADER_CHARS", 100)
    path = write(tmp_path / "m.npz", header(linear(2, 2)), **small_state())
    message = r"the header declares \d+ characters, more than the 100 a model file's header may"
    assert re.search(message, str(refused(path)))
