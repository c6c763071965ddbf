"""Saving and loading models: one ``.npz`` with the architecture (JSON) and the state dict.

Nothing in a model file is ever executed or unpickled: arrays are read with
``allow_pickle=False`` and the architecture is a JSON description of
constructor arguments, rebuilt only from classes inside ``handgrad.nn`` and
from the user's own classes passed explicitly to :func:`load` as
``custom_objects`` (an allow-list, as Keras calls it): a file can name any
class, but only the ones the caller handed over are ever built. Files are
written to a temporary file in the same directory and then renamed over the
target, so an interrupted save never leaves a half-written model behind.

A model file is untrusted input, and reading one costs memory in proportion to
the file, never to what it claims. Before any layer is built or any array
decompressed, the loader checks the zip's member names, each array's ``.npy``
header (read without its data: a numeric dtype, a sane shape, and a size equal
to what the zip declares), the header string's length, the JSON's nesting
depth and the number of modules, the sum of the declared sizes against the
file's own size, and every weight and buffer that a ``handgrad.nn`` layer of
the architecture would allocate against the arrays actually stored: a
``Linear(20000, 20000)`` is refused, not allocated, when the file holds no
20000x20000 weight. Every problem with the file's content is a
:class:`ModelFileError` naming the file and the problem.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handgrad._argtypes import input_file_error
from handgrad._atomic import atomic_write
from handgrad._npz import MAX_NAME_CHARS, ArchiveError, CheckedNpz, NotAnArchive
from handgrad.nn.module import Module

FORMAT = "handgrad-model"
VERSION = 1
HEADER_KEY = "__handgrad__"
STATE_PREFIX = "state/"
# Arrays beside the weights that a model does not need, e.g. a training checkpoint's
# optimizer state (handgrad.checkpoint): load() ignores them.
EXTRA_PREFIX = "extra/"
# Constructor arguments that only shape the *initial* weights: the saved state
# replaces those weights, so they are not needed (and not JSON) to rebuild.
INIT_ONLY_ARGS = frozenset({"rng", "weight_init", "bias_init"})
_HEADER_KEYS = frozenset({"format", "version", "architecture", "dtype", "metadata"})
_PREFIXES = (STATE_PREFIX, EXTRA_PREFIX)

# -- limits on what a file may ask of the loader (and handgrad._npz's on the archive) ----
# The header is one unicode string (4 bytes a character in the .npy).
MAX_HEADER_CHARS = 1 << 24
# A compressed header may inflate to this many bytes (1 Mi characters) whatever the file's size.
HEADER_FLOOR_BYTES = 4 << 20
# Nesting of the header's JSON (each nested module takes three levels).
MAX_JSON_DEPTH = 100
# Modules in one architecture.
MAX_MODULES = 10_000
# dtype kinds an array may have: state (weights, buffers) and extras (e.g. optimizer state).
_STATE_KINDS = "biuf"
_EXTRA_KINDS = "biufc"
_TOO_DEEP = (
    f"is nested more than {MAX_JSON_DEPTH} levels deep (a handgrad model nests a few): refusing it"
)


class ModelFileError(ValueError):
    """A model file is damaged, not a handgrad model, or does not fit the model."""


CustomObjects = Mapping[str, type[Module]] | Iterable[type[Module]]


def _allow_list(custom_objects: CustomObjects | None) -> dict[str, type[Module]]:
    """``{name: class}``: each class under its full ``module.QualName`` and its bare name."""
    if custom_objects is None:
        return {}
    pairs: Iterable[tuple[str, Any]]
    if isinstance(custom_objects, Mapping):
        pairs = custom_objects.items()
    else:  # custom_objects=Scale: one class, not a list
        classes: Iterable[Any] = (
            [custom_objects] if isinstance(custom_objects, type) else custom_objects
        )
        pairs = ((getattr(c, "__qualname__", repr(c)), c) for c in classes)
    allowed: dict[str, type[Module]] = {}
    for name, cls in pairs:
        if not (isinstance(cls, type) and issubclass(cls, Module)):
            raise TypeError(
                f"custom_objects holds {cls!r:.60}, not a Module subclass: pass the classes "
                "themselves, e.g. custom_objects=[MyLayer] or {'MyLayer': MyLayer}"
            )
        allowed[name] = cls
        allowed[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return allowed


# -- architecture <-> JSON -------------------------------------------------------


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, Module):
        return {"__module__": module_config(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return {"__dtype__": np.dtype(value).name}
    if isinstance(value, (list, tuple)):
        items = [_encode(v, where) for v in value]
        return items if isinstance(value, list) else {"__tuple__": items}
    if isinstance(value, np.ndarray):
        return {"__array__": value.tolist(), "dtype": value.dtype.name}
    raise ModelFileError(
        f"cannot save {where}: a {type(value).__name__} is not part of the JSON architecture"
    )


def _plain_dtype(name: Any, where: str, kinds: str = "biufc") -> np.dtype:
    """The dtype a file names: a plain numeric one (no strings, objects, records or
    sub-arrays, which could hide a huge allocation or a pickle)."""
    try:
        dt = np.dtype(name) if isinstance(name, str) else None
    except (TypeError, ValueError, SyntaxError):
        dt = None
    if dt is None or dt.kind not in kinds or dt.fields is not None or dt.subdtype is not None:
        raise ModelFileError(f"{where}: unknown dtype {name!r:.80}")
    return dt


def _decode(value: Any, where: str, allowed: dict[str, type[Module]], ctx: _BuildContext) -> Any:
    if isinstance(value, list):
        return [_decode(v, f"{where}[{i}]", allowed, ctx) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    keys = set(value)
    if keys == {"__module__"}:
        return _build(value["__module__"], where, allowed, ctx)
    if keys == {"__dtype__"} and isinstance(value["__dtype__"], str):
        # a layer's dtype: a float handgrad computes in (float128 would take 16 bytes a weight)
        dt = _plain_dtype(value["__dtype__"], where, kinds="f")
        if dt.itemsize > 8:
            raise ModelFileError(f"{where}: dtype {dt} is not one handgrad computes in")
        return dt.type
    if keys == {"__tuple__"} and isinstance(value["__tuple__"], list):
        return tuple(
            _decode(v, f"{where}[{i}]", allowed, ctx) for i, v in enumerate(value["__tuple__"])
        )
    if keys == {"__array__", "dtype"}:
        dtype = _plain_dtype(value["dtype"], where)
        try:
            with np.errstate(all="ignore"):
                return np.array(value["__array__"], dtype=dtype)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ModelFileError(f"{where}: bad array ({exc})") from exc
    raise ModelFileError(f"{where}: unknown value {value!r:.80}")


def module_config(module: Module) -> dict[str, Any]:
    """JSON-able description of ``module``: its class and constructor arguments."""
    cls = type(module)
    args, kwargs = module.__dict__.get("_init_args", ((), {}))
    name = f"{cls.__module__}.{cls.__qualname__}"
    return {
        "class": name,
        "args": [_encode(a, f"{name} argument {i}") for i, a in enumerate(args)],
        "kwargs": {
            k: _encode(v, f"{name} argument {k!r}")
            for k, v in kwargs.items()
            if k not in INIT_ONLY_ARGS
        },
    }


def module_from_config(
    config: dict[str, Any], custom_objects: CustomObjects | None = None
) -> Module:
    """Rebuild a module from :func:`module_config` output.

    Classes come from ``handgrad.nn`` or from ``custom_objects`` (see :func:`load`);
    nothing else is imported. The configuration is checked as a whole before any
    layer is built (its nesting, its number of modules, every class and argument);
    weights are built as the constructors make them. :func:`load` also checks the
    sizes against the file's stored arrays first: use it for a file you did not write.

    Raises
    ------
    ModelFileError
        Saying where in the configuration and what is wrong: a missing or
        unknown key, a value of the wrong type, a class outside ``handgrad.nn``,
        or arguments the class refuses.
    """
    allowed = _allow_list(custom_objects)
    _check_depth(config, "architecture")
    _build(config, "architecture", allowed, _BuildContext(dry=True))
    return _build(config, "architecture", allowed, _BuildContext(dry=False))


def _check_depth(value: Any, where: str) -> None:
    """Refuse JSON nested deeper than :data:`MAX_JSON_DEPTH` (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise ModelFileError(f"{where} {_TOO_DEEP}")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children)


@dataclass
class _Planned:
    """Stands for a module in the dry run: built only once the whole plan is checked."""

    cls: type[Module]


@dataclass
class _BuildContext:
    """One pass over an architecture: a dry run that builds nothing and lists the
    arrays each ``handgrad.nn`` layer would allocate, or the real construction."""

    dry: bool
    modules: int = 0
    # (where, class name, array name, shape) of every array a planned layer allocates
    planned: list[tuple[str, str, str, tuple[int, ...]]] = field(default_factory=list)
    # the real construction: numbers built so far, and the arrays already counted
    built: int = 0
    seen: set[int] = field(default_factory=set)
    budget: int | None = None  # numbers the file stores, when known


def _build(config: Any, where: str, allowed: dict[str, type[Module]], ctx: _BuildContext) -> Any:
    if not isinstance(config, dict):
        raise ModelFileError(
            f"{where}: expected an object with 'class', 'args' and 'kwargs', "
            f"got {type(config).__name__}"
        )
    if "class" not in config:
        raise ModelFileError(f"{where}: no 'class'")
    unknown = sorted(set(config) - {"class", "args", "kwargs"})
    if unknown:
        raise ModelFileError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")
    path, args, kwargs = config["class"], config.get("args", []), config.get("kwargs", {})
    if not isinstance(path, str):
        raise ModelFileError(f"{where}.class: expected a string, got {type(path).__name__}")
    if not isinstance(args, list):
        raise ModelFileError(f"{where}.args: expected a list, got {type(args).__name__}")
    if not isinstance(kwargs, dict):
        raise ModelFileError(f"{where}.kwargs: expected an object, got {type(kwargs).__name__}")
    ctx.modules += 1
    if ctx.modules > MAX_MODULES:
        raise ModelFileError(
            f"{where}: the architecture has more than {MAX_MODULES:,} modules: refusing it"
        )
    cls = _resolve(path, where, allowed)
    cls_name = cls.__name__
    where = f"{where}({cls_name})"
    args = [_decode(a, f"{where}.args[{i}]", allowed, ctx) for i, a in enumerate(args)]
    kwargs = {k: _decode(v, f"{where}.kwargs[{k!r}]", allowed, ctx) for k, v in kwargs.items()}
    if ctx.dry:
        _plan(cls, args, kwargs, where, ctx)
        return _Planned(cls)
    try:
        module = cls(*args, **kwargs)
    except Exception as exc:
        # The arguments come from a file: whatever the constructor objects to
        # (TypeError, ValueError, ...) means the file is malformed.
        raise ModelFileError(
            f"{where}: {cls_name} refused the saved arguments ({type(exc).__name__}: {exc})"
        ) from exc
    _count_built(module, where, ctx)
    return module


def _count_built(module: Module, where: str, ctx: _BuildContext) -> None:
    """Add the arrays ``module`` holds (and its parts, unless counted) to the numbers built
    so far; refuse once they exceed what the file stores. The dry run checked every
    ``handgrad.nn`` layer beforehand: this bounds what a custom layer (or a class the
    plan does not know) builds from the file's arguments to one layer's worth."""
    arrays: list[np.ndarray] = [p.data for _, p in module.named_parameters()]
    arrays += [b for _, b in module.named_buffers() if isinstance(b, np.ndarray)]
    for array in arrays:
        if id(array) not in ctx.seen:
            ctx.seen.add(id(array))
            ctx.built += int(array.size)
    if ctx.budget is not None and ctx.built > ctx.budget:
        raise ModelFileError(
            f"{where}: the layers built so far hold {ctx.built:,} numbers, more than the "
            f"file's {ctx.budget:,} stored weights: refusing the rest"
        )


# -- the arrays a handgrad.nn layer allocates, computed from its arguments -----------------
# Each mirrors its constructor's conversions (int(), pair(), truth values), so a file's
# architecture is checked against the file's arrays before anything is allocated. A
# constructor that would refuse the arguments is left to refuse them: it does so before
# allocating. tests/test_fuzz_model.py checks each against the real constructor.


def _positive(*values: int) -> bool:
    return all(v > 0 for v in values)


def _plan_linear(a: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    n_in, n_out = int(a["in_features"]), int(a["out_features"])
    if not _positive(n_in, n_out):
        return {}
    return {"weight": (n_out, n_in), **({"bias": (n_out,)} if a["bias"] else {})}


def _plan_conv2d(a: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    from handgrad.nn._spatial import pair

    c_in, c_out, groups = a["in_channels"], a["out_channels"], a["groups"]
    ints = (c_in, c_out, groups)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in ints):
        return {}
    c_in, c_out, groups = (int(v) for v in ints)
    if not _positive(c_in, c_out, groups) or c_in % groups or c_out % groups:
        return {}
    kh, kw = pair(a["kernel_size"], "kernel_size", "Conv2d")
    shapes: dict[str, tuple[int, ...]] = {"weight": (c_out, c_in // groups, kh, kw)}
    return {**shapes, **({"bias": (c_out,)} if a["bias"] else {})}


def _plan_batchnorm(a: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    c = int(a["num_features"])
    if not _positive(c):
        return {}
    shapes: dict[str, tuple[int, ...]] = {}
    if a["affine"]:
        shapes.update(weight=(c,), bias=(c,))
    if a["track_running_stats"]:
        shapes.update(running_mean=(c,), running_var=(c,), num_batches_tracked=())
    return shapes


def _plan_layernorm(a: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    given = a["normalized_shape"]
    shape = tuple(int(s) for s in ((given,) if isinstance(given, int) else tuple(given)))
    if not shape or not _positive(*shape):
        return {}
    affine = a["elementwise_affine"]
    return {
        **({"weight": shape} if affine else {}),
        **({"bias": shape} if affine and a["bias"] else {}),
    }


def _planners() -> dict[type[Module], Callable[[dict[str, Any]], dict[str, tuple[int, ...]]]]:
    from handgrad.nn import BatchNorm1d, BatchNorm2d, Conv2d, LayerNorm, Linear

    return {
        Linear: _plan_linear,
        Conv2d: _plan_conv2d,
        BatchNorm1d: _plan_batchnorm,
        BatchNorm2d: _plan_batchnorm,
        LayerNorm: _plan_layernorm,
    }


def planned_arrays(
    cls: type[Module], args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None
) -> dict[str, tuple[int, ...]] | None:
    """The shapes of the parameters and buffers ``cls(*args, **kwargs)`` would allocate,
    computed without allocating them; ``{}`` where the constructor would refuse the
    arguments (or allocates nothing), None for a class whose constructor handgrad does
    not know (custom layers, and subclasses of handgrad's)."""
    planner = _planners().get(cls)
    if planner is None:
        return None
    try:
        bound = inspect.signature(cls.__init__).bind(None, *args, **(kwargs or {}))
        bound.apply_defaults()
        return planner(dict(bound.arguments))
    except Exception:  # the constructor refuses these arguments, before allocating
        return {}


def _plan(
    cls: type[Module], args: list[Any], kwargs: dict[str, Any], where: str, ctx: _BuildContext
) -> None:
    shapes = planned_arrays(cls, args, kwargs)
    for name, shape in (shapes or {}).items():
        ctx.planned.append((where, cls.__name__, name, shape))


def _resolve(path: str, where: str, allowed: dict[str, type[Module]]) -> type[Module]:
    """The class a file names: the caller's by full or bare name, else one of handgrad.nn."""
    mod_name, _, cls_name = path.rpartition(".")
    handgrads = mod_name == "handgrad.nn" or mod_name.startswith("handgrad.nn.")
    cls = allowed.get(path)
    if cls is None and not handgrads:  # a bare name never stands in for handgrad's Linear
        same = {c for name, c in allowed.items() if name.rpartition(".")[2] == cls_name}
        if len(same) > 1:
            names = ", ".join(sorted(f"{c.__module__}.{c.__qualname__}" for c in same))
            raise ModelFileError(
                f"{where}: {path!r} matches more than one class of custom_objects by its "
                f"bare name ({names}): pass only the one this file was saved with"
            )
        cls = next(iter(same), None)
    if cls is not None:
        return cls
    # Only the layer modules: importing e.g. handgrad.__main__ would run the CLI.
    if not handgrads:
        raise ModelFileError(
            f"{where}: refusing to build {path!r}: it is not a handgrad.nn class, and "
            "handgrad never imports a class because a file names it. If you trust this "
            f"file and {cls_name} is your layer, pass the class: "
            f"handgrad.load(path, custom_objects=[{cls_name}])"
        )
    try:
        found = getattr(importlib.import_module(mod_name), cls_name, None)
    except (ImportError, ValueError) as exc:
        raise ModelFileError(f"{where}: unknown class {path!r} ({exc})") from exc
    if not (isinstance(found, type) and issubclass(found, Module)):
        raise ModelFileError(f"{where}: {path!r} is not a handgrad Module")
    return found


def _model_dtype(module: Module) -> str | None:
    for param in module.parameters():
        return param.dtype.name
    return None


# -- files -------------------------------------------------------------------------


def save(
    module: Module, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``module`` (architecture + state dict) to ``path`` atomically.

    ``metadata`` is any JSON-able dict (e.g. training history, accuracy) stored
    alongside and returned by :func:`load_metadata`.
    """
    return write_file(module, path, metadata)


def write_file(
    module: Module,
    path: str | os.PathLike[str],
    metadata: dict[str, Any] | None = None,
    extras: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """:func:`save`, with ``extras``: arrays stored beside the weights that
    :func:`read_file` returns and :func:`load` ignores.

    Refuses (ModelFileError, before writing) what :func:`read_file` would refuse:
    metadata that is not JSON, nested more than :data:`MAX_JSON_DEPTH` levels or
    longer than :data:`MAX_HEADER_CHARS` characters, and extras that are not
    numeric arrays (bool, int, float, complex) under printable names.
    """
    header = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": module_config(module),
        "dtype": _model_dtype(module),
        "metadata": metadata or {},
    }
    try:
        header_json = json.dumps(header)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ModelFileError(f"metadata is not JSON-serialisable: {exc}") from exc
    _check_depth(header, "the header")
    if len(header_json) > MAX_HEADER_CHARS:
        raise ModelFileError(
            f"the header (architecture and metadata) is {len(header_json):,} characters "
            f"long, more than the {MAX_HEADER_CHARS:,} a model file's header may have"
        )
    arrays = {STATE_PREFIX + k: v for k, v in module.state_dict().items()}
    for key, value in (extras or {}).items():
        array = np.asarray(value)
        name = EXTRA_PREFIX + str(key) + ".npy"
        if array.dtype.kind not in _EXTRA_KINDS or array.dtype.fields is not None:
            raise ModelFileError(
                f"extra {key!r}: a model file's extra arrays hold numbers, not {array.dtype}"
            )
        if not (isinstance(key, str) and name.isprintable() and len(name) <= MAX_NAME_CHARS):
            raise ModelFileError(f"extra {key!r:.80}: not a printable name of at most ~1000")
        arrays[EXTRA_PREFIX + key] = array
    arrays[HEADER_KEY] = np.array(header_json)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(target, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]


class _ModelFile:
    """An open model file whose every member and header were checked (see
    :class:`handgrad._npz.CheckedNpz`), its arrays not yet read: member names
    (``__handgrad__``, ``state/*``, ``extra/*``), dtypes (the header one unicode string
    of at most :data:`MAX_HEADER_CHARS`; state bool, int or float; extras numeric), and
    sizes; then the header is read and parsed."""

    def __init__(self, file: Path) -> None:
        self.file = file
        try:
            self.npz = CheckedNpz(file)
        except NotAnArchive as exc:
            raise ModelFileError(f"{file}: not a handgrad model file: {exc}") from exc
        except ArchiveError as exc:
            raise ModelFileError(f"{file}: {exc}") from exc
        try:
            self.members = self.npz.members
            self.header = self._check()
        except ArchiveError as exc:
            self.npz.close()
            raise ModelFileError(f"{file}: {exc}") from exc
        except BaseException:
            self.npz.close()
            raise

    def __enter__(self) -> _ModelFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.npz.close()

    def _check(self) -> dict[str, Any]:
        file, npz = self.file, self.npz
        if HEADER_KEY not in npz.members:
            raise ModelFileError(f"{file}: not a handgrad model file (no {HEADER_KEY} header)")
        unexpected = [n.removesuffix(".npy") for n in npz.malformed]
        unexpected += [k for k in npz.members if k != HEADER_KEY and not k.startswith(_PREFIXES)]
        if unexpected:
            raise ModelFileError(
                f"{file}: unexpected array(s) {', '.join(repr(k[:100]) for k in unexpected[:5])}"
                f"{' ...' if len(unexpected) > 5 else ''}: a model file holds only "
                f"{HEADER_KEY}, {STATE_PREFIX}* and {EXTRA_PREFIX}*"
            )
        npz.check_arrays(
            {
                k: "U"
                if k == HEADER_KEY
                else _STATE_KINDS
                if k.startswith(STATE_PREFIX)
                else _EXTRA_KINDS
                for k in npz.members
            }
        )
        member = npz.members[HEADER_KEY]
        if member.shape != ():
            raise ModelFileError(f"{file}: damaged header (not a JSON string)")
        if member.dtype.itemsize // 4 > MAX_HEADER_CHARS:
            raise ModelFileError(
                f"{file}: the header declares {member.dtype.itemsize // 4:,} characters, more "
                f"than the {MAX_HEADER_CHARS:,} a model file's header may have"
            )
        # handgrad stores the header uncompressed (4 bytes a character): a longer one
        # is a deflate bomb, whose parse would take memory out of proportion to the file
        size = file.stat().st_size
        if member.dtype.itemsize > max(size, HEADER_FLOOR_BYTES):
            raise ModelFileError(
                f"{file}: the header declares {member.dtype.itemsize // 4:,} characters, "
                f"more than a file of {size:,} bytes holds uncompressed: refusing to inflate it"
            )
        return self._parse_header(str(npz.read(HEADER_KEY)[()]))

    def _parse_header(self, text: str) -> dict[str, Any]:
        file = self.file
        try:
            header = json.loads(text)
        except RecursionError as exc:
            raise ModelFileError(f"{file}: the header {_TOO_DEEP}") from exc
        except ValueError as exc:  # JSONDecodeError, a 5,000-digit integer
            detail = " ".join(str(exc).split())[:200]
            raise ModelFileError(f"{file}: damaged header ({detail})") from exc
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ModelFileError(f"{file}: not a handgrad model file (format {header!r:.60})")
        version = header.get("version")
        if version != VERSION or isinstance(version, bool):
            raise ModelFileError(
                f"{file}: model format version {version!r:.40} is not supported "
                f"(this handgrad reads version {VERSION})"
            )
        try:
            _check_depth(header, "the header")
        except ModelFileError as exc:
            raise ModelFileError(f"{file}: {exc}") from exc
        _check_header(header, file)
        return header

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The arrays under ``prefix``, keyed without it."""
        try:
            return {
                key[len(prefix) :]: self.npz.read(key)
                for key in self.members
                if key.startswith(prefix)
            }
        except ArchiveError as exc:
            raise ModelFileError(f"{self.file}: {exc}") from exc

    def shapes(self, prefix: str) -> dict[str, tuple[int, ...]]:
        return {k[len(prefix) :]: m.shape for k, m in self.members.items() if k.startswith(prefix)}


def _open(path: str | os.PathLike[str]) -> _ModelFile:
    file = Path(path)
    if not file.is_file():
        raise input_file_error(file, "model file")
    return _ModelFile(file)


def _read(
    path: str | os.PathLike[str],
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(header, state, extras)`` of the model file at ``path``."""
    with _open(path) as mf:
        return mf.header, mf.arrays(STATE_PREFIX), mf.arrays(EXTRA_PREFIX)


def _check_header(header: dict[str, Any], file: Path) -> None:
    """The header's keys and their types (the architecture itself is checked when built)."""
    unknown = sorted(set(header) - _HEADER_KEYS)
    if unknown:
        raise ModelFileError(f"{file}: unknown header key(s) {', '.join(map(repr, unknown))}")
    if "architecture" not in header:
        raise ModelFileError(f"{file}: the header has no 'architecture'")
    dtype = header.get("dtype")
    if dtype is not None:
        try:
            ok = isinstance(dtype, str) and np.issubdtype(np.dtype(dtype), np.floating)
        except TypeError:
            ok = False
        if not ok:
            raise ModelFileError(
                f"{file}: header 'dtype' must be the name of a floating dtype or null, "
                f"got {dtype!r:.60}"
            )
    if not isinstance(header.get("metadata", {}), dict):
        raise ModelFileError(
            f"{file}: header 'metadata' must be an object, got {type(header['metadata']).__name__}"
        )


def load(path: str | os.PathLike[str], custom_objects: CustomObjects | None = None) -> Module:
    """Rebuild the model saved at ``path`` and load its weights.

    Parameters
    ----------
    path : str or PathLike
        A file written by :func:`save`.
    custom_objects : list of classes, or dict of name -> class, optional
        Your own ``Module`` subclasses that the file may use, e.g.
        ``custom_objects=[Scale]``. A class in the file is matched by its full
        name (``mylayers.Scale``) or its bare name (``Scale``, so a model saved
        from a script's ``__main__`` loads elsewhere; never in place of a
        ``handgrad.nn`` class, and not when two of them share it). Only
        ``handgrad.nn`` and these classes are ever built.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ModelFileError
        Naming the file and the problem: not a ``.npz`` archive, a damaged or
        forged one (encrypted or oddly compressed members, sizes that disagree,
        arrays of strings or objects, more than the file holds), pickled objects,
        a missing or malformed header or architecture (nested or sized beyond
        the limits above), an architecture whose layers need arrays the file does
        not store, weights that do not fit the architecture, or a NaN or infinite
        value in a floating parameter or buffer. Buffers count: a NaN in a
        BatchNorm's running mean or variance makes every prediction NaN just as
        a NaN weight does. (Integer buffers such as ``num_batches_tracked`` are
        finite by nature; a file's ``extra/*`` arrays are not checked.)

    Notes
    -----
    Memory and time stay in proportion to the file: every size is checked
    against the file before it is allocated, and compressed members may expand
    by at most ``handgrad._npz.DEFLATE_ALLOWANCE`` (256 MiB) in all. A custom layer of
    ``custom_objects`` is built as its constructor does, from the file's
    arguments, and the loader stops as soon as the layers built hold more
    numbers than the file stores.
    """
    return read_file(path, custom_objects)[0]


def read_file(
    path: str | os.PathLike[str], custom_objects: CustomObjects | None = None
) -> tuple[Module, dict[str, Any], dict[str, np.ndarray]]:
    """:func:`load`, also returning the file's header and the ``extras`` of :func:`write_file`.

    The architecture is checked against the stored arrays before any layer is built:
    each array a ``handgrad.nn`` layer would allocate must be stored in the file with
    that shape (a custom layer is checked once built: the layers built never hold more
    numbers than the file stores). Extras are checked like the weights (numbers, sizes
    within the file), not for finiteness.
    """
    with _open(path) as mf:
        model = _build_for(mf, custom_objects)
        state = mf.arrays(STATE_PREFIX)
        _load_into(model, state, mf.file)
        extras = mf.arrays(EXTRA_PREFIX)
        return model, mf.header, extras


def _build_for(mf: _ModelFile, custom_objects: CustomObjects | None) -> Module:
    """The model of ``mf``'s architecture, checked against its stored arrays first."""
    config, file = mf.header["architecture"], mf.file
    allowed = _allow_list(custom_objects)
    try:
        plan = _BuildContext(dry=True)
        _build(config, "architecture", allowed, plan)
        stored = mf.shapes(STATE_PREFIX)
        # a layer's weights are stored as floats: a bool or int8 array of the right shape
        # would let a small file make the layer allocate 8 bytes for each of its bytes
        floats = {k for k in stored if mf.members[STATE_PREFIX + k].dtype.kind == "f"}
        available = Counter(
            (shape, k in floats or math.prod(shape) <= 1) for k, shape in stored.items()
        )
        for where, cls_name, name, shape in plan.planned:
            if available[(shape, True)] > 0:
                available[(shape, True)] -= 1
                continue
            numbers = math.prod(shape)
            what = "float array" if available[(shape, False)] else "array"
            raise ModelFileError(
                f"{where}: this {cls_name} needs a {name!r} of shape {shape} ({numbers:,} "
                f"numbers), and the file stores no {what} of that shape: refusing to build it"
            )
        budget = sum(mf.members[STATE_PREFIX + k].size for k in stored)
        model = _build(config, "architecture", allowed, _BuildContext(dry=False, budget=budget))
    except ModelFileError as exc:
        raise ModelFileError(f"{file}: {exc}") from exc
    if mf.header.get("dtype"):
        model.to(np.dtype(mf.header["dtype"]))
    return model


def load_state(module: Module, path: str | os.PathLike[str]) -> Module:
    """Load the weights saved at ``path`` into an existing ``module`` of the same architecture.

    Refuses (ModelFileError, ``module`` unchanged) weights that do not fit, and
    non-finite ones, as :func:`load` does.
    """
    with _open(path) as mf:
        # shapes first, from the headers: a file's arrays are read only when they fit
        stored, wanted = mf.shapes(STATE_PREFIX), module.state_dict()
        for key, shape in stored.items():
            if key in wanted and tuple(np.shape(wanted[key])) != shape:
                raise ModelFileError(
                    f"{mf.file}: saved weights do not fit this architecture: {key!r} has "
                    f"shape {shape} in the file, {tuple(np.shape(wanted[key]))} in the model"
                )
        _load_into(module, mf.arrays(STATE_PREFIX), mf.file)
    return module


def load_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``metadata`` dict stored by :func:`save` (the file is checked as by :func:`load`;
    its arrays are not read)."""
    with _open(path) as mf:
        return dict(mf.header.get("metadata", {}))


def _check_finite(module: Module, state: Mapping[str, np.ndarray], path: Path) -> None:
    """Refuse a NaN or infinite value in a floating parameter or buffer, as it would be
    stored in ``module`` (a float64 1e300 is infinite once cast to float32)."""
    targets = {name: ("parameter", p.data.dtype) for name, p in module.named_parameters()}
    for name, buf in module.named_buffers():
        if isinstance(buf, np.ndarray):
            targets[name] = ("buffer", buf.dtype)
    for key, value in state.items():
        kind, dtype = targets.get(key, ("", None))
        if dtype is None or not np.issubdtype(dtype, np.floating):
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(np.asarray(value).astype(dtype, copy=False))
        if not finite.all():
            bad = int(finite.size - np.count_nonzero(finite))
            raise ModelFileError(
                f"{path}: {kind} {key!r} holds {bad:,} non-finite value(s) (NaN or inf) "
                f"among {finite.size:,}: the model would only output NaN; refusing to load it "
                "(retrain, or load an earlier checkpoint)"
            )


def _load_into(module: Module, state: dict[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    _check_finite(module, state, Path(path))
    try:
        module.load_state_dict(state, strict=True)
    except (KeyError, ValueError) as exc:
        detail = exc.args[0] if exc.args else exc
        raise ModelFileError(
            f"{path}: saved weights do not fit this architecture: {detail}"
        ) from exc
