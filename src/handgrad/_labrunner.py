"""The grader's child process: runs one untrusted lab submission under the lab's rules.

Started by :mod:`handgrad.labgrade` as ``python -m handgrad._labrunner CONFIG_JSON``.
It points file descriptor 1 at standard error, caps its own address space, loads
MNIST without the validation and test labels, forgets every module that is
neither NumPy nor the standard library and refuses to import new ones, and only
then executes the submission. It reports on a private pipe (``result_fd`` in the
config) as JSON lines: per-epoch training loss and validation probabilities, the
test predictions, or the reason for a rejection. The parent scores the
predictions; this process never holds the labels it is scored on.

None of this stops a submission that sets out to cheat: see "The grader" in
``docs/lab.md``.
"""

from __future__ import annotations

import base64
import copy
import inspect
import json
import os
import resource
import sys
import sysconfig
import time
import types
from typing import Any, TextIO

import numpy as np

CONTRACT = {
    "__init__": ["self", "input_size", "hidden_size", "output_size", "lr"],
    "forward": ["self", "X"],
    "backward": ["self", "X", "y", "probs"],
    "train_step": ["self", "X", "y"],
    "predict": ["self", "X"],
}
INIT_DEFAULTS = {"input_size": 784, "hidden_size": 128, "output_size": 10, "lr": 0.01}
#: Accepted weight shapes: either orientation of each matrix, any shape of each bias.
WEIGHT_SHAPES = {"W1": ((784, 128), (128, 784)), "W2": ((128, 10), (10, 128))}
BIAS_SIZES = {"b1": 128, "b2": 10}
#: How arrays travel on the result pipe: little-endian raw bytes, base64 in the JSON line.
PROBS_DTYPE = np.dtype("<f4")
LABELS_DTYPE = np.dtype("<i8")


class Rejected(Exception):
    """The submission broke a rule; the message is the one-line reason."""


# -- what may be imported -----------------------------------------------------------------


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def _library_dirs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(stdlib, third_party)`` directories of this interpreter and, in a venv, its base."""
    schemes = [
        sysconfig.get_paths(),
        sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix}),
    ]
    stdlib = {_real(s[key]) for s in schemes for key in ("stdlib", "platstdlib") if key in s}
    third = {_real(s[key]) for s in schemes for key in ("purelib", "platlib") if key in s}
    return tuple(sorted(stdlib)), tuple(sorted(third))


STDLIB_DIRS, THIRD_PARTY_DIRS = _library_dirs()


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root + os.sep) for root in roots)


def _from_stdlib(spec: Any) -> bool:
    """True for a built-in or frozen module, or one whose files lie in the standard library.

    ``sys.stdlib_module_names`` misses private modules such as
    ``_sysconfigdata__linux_x86_64-linux-gnu``, so the decision rests on where the
    module comes from; anything in ``site-packages`` (a venv's lies inside
    ``platstdlib``) is third-party.
    """
    origin = getattr(spec, "origin", None)
    if origin in ("built-in", "frozen"):
        return True
    if origin and getattr(spec, "has_location", False):
        places = [origin]
    else:  # a namespace package: its directories
        places = list(getattr(spec, "submodule_search_locations", None) or [])
    if not places:
        return False
    for place in map(_real, places):
        parts = place.split(os.sep)
        if not _under(place, STDLIB_DIRS) or _under(place, THIRD_PARTY_DIRS):
            return False
        if "site-packages" in parts or "dist-packages" in parts:
            return False
    return True


def _allowed_module(name: str, module: Any) -> bool:
    if name.partition(".")[0] == "numpy":
        return True
    spec = getattr(module, "__spec__", None)
    if spec is None:  # made at run time (typing.io, ...): judge by name
        top = name.partition(".")[0]
        return top in sys.stdlib_module_names or top in sys.builtin_module_names
    return _from_stdlib(spec)


_IMPORT_MACHINERY = ("importlib", "_frozen_importlib", "_frozen_importlib_external")


def _requested_by_numpy() -> bool:
    """True when the import statement being served is in NumPy's own code."""
    frame = sys._getframe(2)
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if frame.f_code.co_filename != __file__ and name.partition(".")[0] not in _IMPORT_MACHINERY:
            return name == "numpy" or name.startswith("numpy.")
        frame = frame.f_back  # type: ignore[assignment]
    return False


class _ImportBlocker:
    """A meta-path finder that refuses any module outside NumPy and the standard library.

    NumPy's own imports pass (``numpy.testing`` may ask for ``psutil``); any other
    module must be built in or come from the standard library's directories.
    """

    def __init__(self) -> None:
        self.blocked: list[str] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        top = name.partition(".")[0]
        if top == "numpy" or _requested_by_numpy():
            return None  # the usual finders take it from here
        spec = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        if spec is None and top in sys.stdlib_module_names:
            return None  # a standard module this build lacks: the usual ModuleNotFoundError
        if spec is not None and _from_stdlib(spec):
            return spec
        self.blocked.append(top)
        raise ImportError(
            f"import of {name!r} is not allowed in the lab (NumPy and the standard library only)"
        )


def _sandbox() -> _ImportBlocker:
    """Forget the grader's own modules (``__main__``, handgrad, ...) and block new ones."""
    for name, module in list(sys.modules.items()):
        if not _allowed_module(name, module):
            del sys.modules[name]
    blocker = _ImportBlocker()
    sys.meta_path.insert(0, blocker)
    return blocker


# -- the protocol with the parent ---------------------------------------------------------


def encode_array(a: np.ndarray, dtype: np.dtype) -> str:
    """``a`` as base64 of its raw bytes in ``dtype`` (the shape travels separately)."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def decode_array(text: Any, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`encode_array`; ValueError unless it holds exactly ``shape``."""
    if not isinstance(text, str):
        raise ValueError(f"expected base64 text, got {type(text).__name__}")
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"{len(raw)} bytes do not hold a {dtype} array of shape {shape}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def split_indices(
    y_train: np.ndarray, train_size: int | None, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """``(train_idx, val_idx, rng)`` into MNIST's training set; parent and child agree.

    ``rng`` is left where the split left it: the child shuffles the epochs with it.
    """
    from handgrad.data import stratified_split

    rng = np.random.default_rng(seed)
    keep = np.arange(len(y_train))
    if train_size:
        keep = rng.permutation(len(y_train))[:train_size]
    val = np.zeros(0, dtype=np.int64)
    if val_fraction > 0:
        tr, va = stratified_split(y_train[keep], val_fraction, rng)
        keep, val = keep[tr], keep[va]
    return keep, val, rng


def _emit(out: TextIO, **record: Any) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pixels(images: np.ndarray) -> np.ndarray:
    """A fresh ``(N, 784)`` float32 array in [0, 1]: the submission may write into it."""
    x = images.reshape(len(images), -1).astype(np.float32)
    x /= np.float32(255)  # in place: one float copy of the images at a time
    return x


# -- running the submission ---------------------------------------------------------------


def _call(where: str, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, with ``sys.exit`` in submission code named as such."""
    try:
        return fn(*args)
    except SystemExit as exc:
        raise Rejected(f"submission called sys.exit({exc.code!r}) {where}") from None


def _load_submission(path: str, blocker: _ImportBlocker) -> type:
    with open(path, encoding="utf-8") as f:
        source = f.read()
    module = types.ModuleType("submission")
    module.__file__ = path
    try:
        _call("at import", exec, compile(source, path, "exec"), module.__dict__)
    except ImportError as exc:
        if blocker.blocked:
            raise Rejected(
                f"submission imports {blocker.blocked[-1]!r}, which is not allowed "
                "(NumPy and the standard library only)"
            ) from exc
        raise Rejected(f"submission failed to import: {exc}") from exc
    except (MemoryError, Rejected):
        raise
    except Exception as exc:
        raise Rejected(f"submission raised {type(exc).__name__} on import: {exc}") from exc
    cls = module.__dict__.get("NeuralNetwork")
    if not isinstance(cls, type):
        raise Rejected("submission defines no class NeuralNetwork")
    return cls


def _check_signatures(cls: type) -> None:
    for method, expected in CONTRACT.items():
        fn = getattr(cls, method, None)
        if fn is None or not callable(fn):
            raise Rejected(f"NeuralNetwork has no method {method}()")
        params = list(inspect.signature(fn).parameters.values())
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if names[: len(expected)] != expected:
            raise Rejected(
                f"NeuralNetwork.{method} must take ({', '.join(expected)}), "
                f"got ({', '.join(names)})"
            )
        if method == "__init__":
            for p in params:
                if p.name in INIT_DEFAULTS and p.default != INIT_DEFAULTS[p.name]:
                    raise Rejected(
                        f"NeuralNetwork.__init__ default {p.name}={p.default!r}, "
                        f"expected {INIT_DEFAULTS[p.name]!r}"
                    )


def _check_weights(model: Any) -> None:
    """W1, b1, W2, b2 are arrays of the lab's 784 -> 128 -> 10 network."""
    for name in ("W1", "b1", "W2", "b2"):
        if not isinstance(getattr(model, name, None), np.ndarray):
            raise Rejected(f"NeuralNetwork has no numpy array attribute {name}")
    for name, shapes in WEIGHT_SHAPES.items():
        shape = getattr(model, name).shape
        if shape not in shapes:
            raise Rejected(
                f"NeuralNetwork.{name} has shape {shape}, expected {shapes[0]} or {shapes[1]} "
                "(the lab's network is 784 -> 128 -> 10)"
            )
    for name, size in BIAS_SIZES.items():
        if getattr(model, name).size != size:
            raise Rejected(
                f"NeuralNetwork.{name} has {getattr(model, name).size} elements, expected "
                f"{size} (the lab's network is 784 -> 128 -> 10)"
            )


def _check_probs(probs: Any, n: int, where: str) -> np.ndarray:
    if not isinstance(probs, np.ndarray):
        raise Rejected(f"{where} returned {type(probs).__name__}, expected a numpy array")
    if probs.shape != (n, 10):
        raise Rejected(f"{where} returned shape {probs.shape}, expected ({n}, 10)")
    if not np.issubdtype(probs.dtype, np.floating):
        raise Rejected(f"{where} returned dtype {probs.dtype}, expected floating probabilities")
    if not np.all(np.isfinite(probs)):
        raise Rejected(f"{where}: probabilities contain NaN/inf (softmax overflow?)")
    if probs.min() < -1e-6 or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise Rejected(f"{where}: probabilities are negative or rows do not sum to 1")
    return probs


def _check_loss(loss: Any, where: str) -> float:
    try:
        value = float(loss)
    except (TypeError, ValueError):
        raise Rejected(f"{where} returned {type(loss).__name__}, expected a scalar loss") from None
    if np.ndim(loss) != 0:
        raise Rejected(f"{where} returned an array of shape {np.shape(loss)}, expected a scalar")
    if not np.isfinite(value):
        raise Rejected(f"{where} returned a non-finite loss ({value})")
    return value


def _check_labels(pred: Any, n: int, where: str) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.shape != (n,) or not np.issubdtype(pred.dtype, np.integer):
        raise Rejected(
            f"predict returned shape {pred.shape} dtype {pred.dtype}{where}, expected ({n},) ints"
        )
    return pred


def _check_contract(model: Any, x: np.ndarray, y: np.ndarray) -> None:
    """Run the contract checks on a copy, so the graded run starts untouched.

    ``x`` and ``y`` are the submission's to keep: copies of the grader's data.
    """
    _check_weights(model)
    trial = _call("in __deepcopy__", copy.deepcopy, model)
    before = {n: getattr(trial, n).copy() for n in ("W1", "b1", "W2", "b2")}
    probs = _check_probs(_call("in forward", trial.forward, x), len(x), "forward")
    _check_loss(_call("in backward", trial.backward, x, y, probs), "backward")
    unchanged = [n for n in before if np.array_equal(before[n], getattr(trial, n))]
    if unchanged:
        raise Rejected(f"backward did not update {', '.join(unchanged)}")
    _check_loss(_call("in train_step", trial.train_step, x, y), "train_step")
    _check_labels(_call("in predict", trial.predict, x), len(x), "")


def run(cfg: dict[str, Any], out: TextIO) -> None:
    """Train and test the submission; report on ``out``. Holds no validation/test labels."""
    from handgrad.data import load_mnist

    data = load_mnist(cfg.get("data_dir"))
    train_idx, val_idx, rng = split_indices(
        data.y_train, cfg.get("train_size"), cfg["val_fraction"], cfg["seed"]
    )
    y_train = data.y_train[train_idx]
    val_images = data.x_train[val_idx] if len(val_idx) else None  # uint8, no labels
    test_images = data.x_test
    train_images = data.x_train[train_idx]
    del data, train_idx, val_idx  # the labels we are scored on go here
    x_train = _pixels(train_images)
    del train_images

    blocker = _sandbox()
    start = time.perf_counter()
    cls = _load_submission(cfg["path"], blocker)
    _check_signatures(cls)
    model = _call("in __init__", cls)
    _check_contract(model, x_train[:64].copy(), y_train[:64].copy())
    bs = cfg["batch_size"]
    for epoch in range(cfg["epochs"]):
        t0 = time.perf_counter()
        order = rng.permutation(len(y_train))
        total = 0.0
        for s in range(0, len(order), bs):
            idx = order[s : s + bs]  # fancy indexing: each batch is a fresh copy
            loss = _call("in train_step", model.train_step, x_train[idx], y_train[idx])
            total += _check_loss(loss, "train_step") * len(idx)
        record: dict[str, Any] = {"event": "epoch", "epoch": epoch + 1}
        record["train_loss"] = total / len(order)
        if val_images is not None:
            probs = _call("in forward", model.forward, _pixels(val_images))
            probs = _check_probs(probs, len(val_images), "forward (validation)")
            record["val_probs"] = encode_array(probs, PROBS_DTYPE)
        record["seconds"] = time.perf_counter() - t0
        _emit(out, **record)
    n = len(test_images)
    pred = _call("in predict", model.predict, _pixels(test_images))
    pred = _check_labels(pred, n, f" on the {n} test images")
    _emit(
        out,
        event="done",
        predictions=encode_array(pred, LABELS_DTYPE),
        seconds=time.perf_counter() - start,
        peak_mb=_peak_mb(),
    )


def main() -> None:
    cfg = json.loads(sys.argv[1])
    out = os.fdopen(int(cfg["result_fd"]), "w")
    os.set_inheritable(out.fileno(), False)
    sys.stdout.flush()
    os.dup2(2, 1)  # whatever the submission writes to fd 1 goes to stderr, not to the parent
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core files from a crash
    limit = int(cfg["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from handgrad.data import DataError

    try:
        run(cfg, out)
    except DataError as exc:
        _emit(out, event="error", reason=str(exc))
    except Rejected as exc:
        _emit(out, event="rejected", reason=str(exc))
    except MemoryError:
        _emit(out, event="rejected", reason=f"memory limit exceeded ({cfg['memory_mb']} MB)")
    except SystemExit as exc:  # from submission code the calls above do not wrap (a thread, ...)
        _emit(out, event="rejected", reason=f"submission called sys.exit({exc.code!r})")
    except BaseException as exc:  # the submission crashed: report it, never a traceback
        _emit(out, event="rejected", reason=f"submission raised {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
