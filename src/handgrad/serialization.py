"""Saving and loading models: one ``.npz`` with the architecture (JSON) and the state dict.

Nothing in a model file is ever executed or unpickled: arrays are read with
``allow_pickle=False`` and the architecture is a JSON description of
constructor arguments, rebuilt only from classes inside the ``handgrad``
package. Files are written to a temporary file in the same directory and then
renamed over the target, so an interrupted save never leaves a half-written
model behind.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from handgrad.nn.module import Module

FORMAT = "handgrad-model"
VERSION = 1
HEADER_KEY = "__handgrad__"
STATE_PREFIX = "state/"
# Constructor arguments that only shape the *initial* weights: the saved state
# replaces those weights, so they are not needed (and not JSON) to rebuild.
INIT_ONLY_ARGS = frozenset({"rng", "weight_init", "bias_init"})


class ModelFileError(ValueError):
    """A model file is damaged, not a handgrad model, or does not fit the model."""


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


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__module__" in value:
        return module_from_config(value["__module__"])
    if "__dtype__" in value:
        return np.dtype(value["__dtype__"]).type
    if "__tuple__" in value:
        return tuple(_decode(v) for v in value["__tuple__"])
    if "__array__" in value:
        return np.array(value["__array__"], dtype=value["dtype"])
    raise ModelFileError(f"unknown value in architecture: {value!r}")


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


def module_from_config(config: dict[str, Any]) -> Module:
    """Rebuild a module from :func:`module_config` output (handgrad classes only)."""
    try:
        path = config["class"]
        mod_name, _, cls_name = str(path).rpartition(".")
        if not mod_name.startswith("handgrad."):
            raise ModelFileError(f"refusing to build {path!r}: only handgrad classes can be loaded")
        cls = getattr(importlib.import_module(mod_name), cls_name, None)
        if not (isinstance(cls, type) and issubclass(cls, Module)):
            raise ModelFileError(f"{path!r} is not a handgrad Module")
        args = [_decode(a) for a in config.get("args", [])]
        kwargs = {k: _decode(v) for k, v in config.get("kwargs", {}).items()}
        return cls(*args, **kwargs)
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, ImportError) as exc:
        raise ModelFileError(f"cannot rebuild the saved architecture: {exc}") from exc


def _model_dtype(module: Module) -> str | None:
    for param in module.parameters():
        return param.dtype.name
    return None


# -- files -------------------------------------------------------------------------


def atomic_write(path: str | os.PathLike[str], write: Any) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def save(
    module: Module, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``module`` (architecture + state dict) to ``path`` atomically.

    ``metadata`` is any JSON-able dict (e.g. training history, accuracy) stored
    alongside and returned by :func:`load_metadata`.
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
    except TypeError as exc:
        raise ModelFileError(f"metadata is not JSON-serialisable: {exc}") from exc
    arrays = {STATE_PREFIX + k: v for k, v in module.state_dict().items()}
    arrays[HEADER_KEY] = np.array(header_json)
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"model file not found: {file}")
    try:
        with np.load(file, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ModelFileError(
                f"{file}: holds pickled objects; handgrad never loads pickle (it can run code)"
            ) from exc
        raise ModelFileError(f"{file}: not a handgrad model file or damaged ({exc})") from exc
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise ModelFileError(f"{file}: not a handgrad model file or damaged ({exc})") from exc
    if HEADER_KEY not in arrays:
        raise ModelFileError(f"{file}: not a handgrad model file (no {HEADER_KEY} header)")
    try:
        header = json.loads(str(arrays.pop(HEADER_KEY)))
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{file}: damaged header ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{file}: not a handgrad model file (format {header!r:.60})")
    if header.get("version") != VERSION:
        raise ModelFileError(
            f"{file}: model format version {header.get('version')} is not supported "
            f"(this handgrad reads version {VERSION})"
        )
    state = {k[len(STATE_PREFIX) :]: v for k, v in arrays.items() if k.startswith(STATE_PREFIX)}
    return header, state


def load(path: str | os.PathLike[str]) -> Module:
    """Rebuild the model saved at ``path`` and load its weights."""
    header, state = _read(path)
    model = module_from_config(header["architecture"])
    if header.get("dtype"):
        model.to(np.dtype(header["dtype"]))
    _load_into(model, state, path)
    return model


def load_state(module: Module, path: str | os.PathLike[str]) -> Module:
    """Load the weights saved at ``path`` into an existing ``module`` of the same architecture."""
    _, state = _read(path)
    _load_into(module, state, path)
    return module


def load_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``metadata`` dict stored by :func:`save`."""
    header, _ = _read(path)
    return dict(header.get("metadata", {}))


def _load_into(module: Module, state: dict[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except (KeyError, ValueError) as exc:
        detail = exc.args[0] if exc.args else exc
        raise ModelFileError(
            f"{path}: saved weights do not fit this architecture: {detail}"
        ) from exc
