"""Saving and loading models: one ``.npz`` with the architecture (JSON) and the state dict.

Nothing in a model file is ever executed or unpickled: arrays are read with
``allow_pickle=False`` and the architecture is a JSON description of
constructor arguments, rebuilt only from classes inside ``handgrad.nn`` and
from the user's own classes passed explicitly to :func:`load` as
``custom_objects`` (an allow-list, as Keras calls it): a file can name any
class, but only the ones the caller handed over are ever built. Files are
written to a temporary file in the same directory and then renamed over the
target, so an interrupted save never leaves a half-written model behind.
"""

from __future__ import annotations

import importlib
import json
import os
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from handgrad._argtypes import input_file_error
from handgrad._atomic import atomic_write
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
# A .npz is a zip archive: a local file header, or the end record of an empty one.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


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


def _decode(value: Any, where: str, allowed: dict[str, type[Module]]) -> Any:
    if isinstance(value, list):
        return [_decode(v, f"{where}[{i}]", allowed) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    keys = set(value)
    if keys == {"__module__"}:
        return _build(value["__module__"], where, allowed)
    if keys == {"__dtype__"} and isinstance(value["__dtype__"], str):
        try:
            return np.dtype(value["__dtype__"]).type
        except TypeError as exc:
            raise ModelFileError(f"{where}: unknown dtype {value['__dtype__']!r}") from exc
    if keys == {"__tuple__"} and isinstance(value["__tuple__"], list):
        return tuple(_decode(v, f"{where}[{i}]", allowed) for i, v in enumerate(value["__tuple__"]))
    if keys == {"__array__", "dtype"}:
        try:
            return np.array(value["__array__"], dtype=value["dtype"])
        except (TypeError, ValueError) as exc:
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
    nothing else is imported.

    Raises
    ------
    ModelFileError
        Saying where in the configuration and what is wrong: a missing or
        unknown key, a value of the wrong type, a class outside ``handgrad.nn``,
        or arguments the class refuses.
    """
    return _build(config, "architecture", _allow_list(custom_objects))


def _build(config: Any, where: str, allowed: dict[str, type[Module]]) -> Module:
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
    cls = _resolve(path, where, allowed)
    cls_name = cls.__name__
    where = f"{where}({cls_name})"
    args = [_decode(a, f"{where}.args[{i}]", allowed) for i, a in enumerate(args)]
    kwargs = {k: _decode(v, f"{where}.kwargs[{k!r}]", allowed) for k, v in kwargs.items()}
    try:
        return cls(*args, **kwargs)
    except Exception as exc:
        # The arguments come from a file: whatever the constructor objects to
        # (TypeError, ValueError, ...) means the file is malformed.
        raise ModelFileError(
            f"{where}: {cls_name} refused the saved arguments ({type(exc).__name__}: {exc})"
        ) from exc


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
    :func:`read_file` returns and :func:`load` ignores."""
    header = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": module_config(module),
        "dtype": _model_dtype(module),
        "metadata": metadata or {},
    }
    try:
        header_json = json.dumps(header)
    except TypeError as exc:
        raise ModelFileError(f"metadata is not JSON-serialisable: {exc}") from exc
    arrays = {STATE_PREFIX + k: v for k, v in module.state_dict().items()}
    arrays.update({EXTRA_PREFIX + k: np.asarray(v) for k, v in (extras or {}).items()})
    arrays[HEADER_KEY] = np.array(header_json)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(target, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]


def _read_arrays(file: Path) -> dict[str, np.ndarray]:
    """Every array in the ``.npz`` at ``file``, refusing pickle; ModelFileError if unreadable."""
    with open(file, "rb") as fh:
        head = fh.read(4)
    if head not in _ZIP_MAGICS:
        what = "an empty file" if not head else f"the file starts with 0x{head.hex()}"
        raise ModelFileError(
            f"{file}: not a handgrad model file: not a .npz (zip) archive ({what})"
        )
    try:
        with np.load(file, allow_pickle=False) as npz:
            arrays = {}
            for key in npz.files:
                try:
                    arrays[key] = npz[key]
                except ValueError as exc:
                    if "allow_pickle" not in str(exc):
                        raise
                    raise ModelFileError(
                        f"{file}: array {key!r} holds pickled Python objects; handgrad never "
                        "loads pickle (it can run code)"
                    ) from exc
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise ModelFileError(
            f"{file}: not a valid .npz archive: damaged or truncated ({type(exc).__name__}: {exc})"
        ) from exc
    return arrays


def _read(
    path: str | os.PathLike[str],
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(header, state, extras)`` of the model file at ``path``."""
    file = Path(path)
    if not file.is_file():
        raise input_file_error(file, "model file")
    arrays = _read_arrays(file)
    if HEADER_KEY not in arrays:
        raise ModelFileError(f"{file}: not a handgrad model file (no {HEADER_KEY} header)")
    header_array = arrays.pop(HEADER_KEY)
    if not (isinstance(header_array, np.ndarray) and header_array.dtype.kind == "U"):
        raise ModelFileError(f"{file}: damaged header (not a JSON string)")
    try:
        header = json.loads(str(header_array))
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{file}: damaged header ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{file}: not a handgrad model file (format {header!r:.60})")
    version = header.get("version")
    if version != VERSION or isinstance(version, bool):
        raise ModelFileError(
            f"{file}: model format version {version!r} is not supported "
            f"(this handgrad reads version {VERSION})"
        )
    _check_header(header, file)
    unexpected = sorted(k for k in arrays if not k.startswith((STATE_PREFIX, EXTRA_PREFIX)))
    if unexpected:
        raise ModelFileError(
            f"{file}: unexpected array(s) {', '.join(map(repr, unexpected))}: "
            f"a model file holds only {HEADER_KEY}, {STATE_PREFIX}* and {EXTRA_PREFIX}*"
        )
    state = {k[len(STATE_PREFIX) :]: v for k, v in arrays.items() if k.startswith(STATE_PREFIX)}
    extras = {k[len(EXTRA_PREFIX) :]: v for k, v in arrays.items() if k.startswith(EXTRA_PREFIX)}
    return header, state, extras


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
        Naming the file and the problem: not a ``.npz`` archive, a damaged one,
        pickled objects, a missing or malformed header or architecture, or weights
        that do not fit the architecture.
    """
    return read_file(path, custom_objects)[0]


def read_file(
    path: str | os.PathLike[str], custom_objects: CustomObjects | None = None
) -> tuple[Module, dict[str, Any], dict[str, np.ndarray]]:
    """:func:`load`, also returning the file's header and the ``extras`` of :func:`write_file`."""
    header, state, extras = _read(path)
    try:
        model = module_from_config(header["architecture"], custom_objects)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    if header.get("dtype"):
        model.to(np.dtype(header["dtype"]))
    _load_into(model, state, path)
    return model, header, extras


def load_state(module: Module, path: str | os.PathLike[str]) -> Module:
    """Load the weights saved at ``path`` into an existing ``module`` of the same architecture."""
    _, state, _ = _read(path)
    _load_into(module, state, path)
    return module


def load_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``metadata`` dict stored by :func:`save`."""
    header, _, _ = _read(path)
    return dict(header.get("metadata", {}))


def _load_into(module: Module, state: dict[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except (KeyError, ValueError) as exc:
        detail = exc.args[0] if exc.args else exc
        raise ModelFileError(
            f"{path}: saved weights do not fit this architecture: {detail}"
        ) from exc
