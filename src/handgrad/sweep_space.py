"""The search space of ``handgrad sweep``: which values each hyper-parameter may take,
and the settings every trial shares.

Five parameters (:data:`PARAMS`), each a :class:`Range` (sampled on a log scale), a
:class:`Choice` of values, or one fixed value (a choice of one). They come from the
command line's text (:func:`parse_spec`: ``"1e-4:1e-1"``, ``"64,128,256"``,
``"0.01"``) or from a JSON or TOML file (:func:`load_space`), and every value is
checked here, before a sweep starts, with a one-line reason. No Optuna needed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handgrad._argtypes import layer_sizes
from handgrad.recipes import OPTIMIZERS, SCHEDULES

if TYPE_CHECKING:
    import optuna

__all__ = [
    "LABELS",
    "PARAMS",
    "Choice",
    "Range",
    "SearchSpace",
    "Settings",
    "SweepError",
    "load_space",
    "parse_spec",
]

#: The hyper-parameters a sweep searches, in the order tables show them.
PARAMS = ("lr", "batch_size", "hidden", "optimizer", "weight_decay")
#: Their names in tables and progress lines.
LABELS = {"batch_size": "batch", "weight_decay": "weight decay"}


class SweepError(ValueError):
    """A sweep that cannot start as asked: a bad search space, storage or study."""


@dataclass(frozen=True)
class Range:
    """Values from ``low`` to ``high``, sampled uniformly on a log scale (or linearly)."""

    low: float
    high: float
    log: bool = True


@dataclass(frozen=True)
class Choice:
    """One of ``values`` (a single value: fixed, not searched)."""

    values: tuple[Any, ...]


Spec = Range | Choice


def _value(name: str, raw: Any) -> Any:
    """One value of parameter ``name``, checked: text from the command line or a file,
    or a number (a list of sizes for ``hidden``) from a file."""
    if name == "hidden":
        if isinstance(raw, list) and all(type(v) is int for v in raw):
            raw = ",".join(map(str, raw))
        elif type(raw) is int:
            raw = str(raw)
        try:
            return ",".join(map(str, layer_sizes(str(raw))))
        except Exception as exc:  # argparse.ArgumentTypeError: a one-line reason
            raise SweepError(f"hidden: {exc}") from None
    if name == "optimizer":
        if not isinstance(raw, str) or raw not in OPTIMIZERS:
            raise SweepError(
                f"unknown optimizer {raw!r}; choose from {', '.join(sorted(OPTIMIZERS))}"
            )
        return raw
    integer = name == "batch_size"
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise SweepError(f"{name}: expected a number, got {raw!r}")
    try:
        value = float(raw)
    except ValueError:
        raise SweepError(f"{name}: expected a number, got {raw!r}") from None
    if integer and value != int(value):
        raise SweepError(f"{name}: expected a whole number, got {raw!r}")
    low = 1 if integer else 0.0
    if not math.isfinite(value) or value < low or (name == "lr" and value == 0):
        need = "at least 1" if integer else "above 0" if name == "lr" else "0 or more"
        raise SweepError(f"{name} must be {need}, got {raw!r}")
    return int(value) if integer else value


def _range(name: str, low: Any, high: Any, log: bool = True) -> Range:
    if name in ("hidden", "optimizer"):
        raise SweepError(f"{name} takes a list of choices, not a range")
    lo, hi = _value(name, low), _value(name, high)
    if not lo < hi:
        raise SweepError(
            f"{name}: empty range {low}:{high} (its low end must be below its high end)"
        )
    if log and lo <= 0:
        raise SweepError(
            f"{name}: the range {low}:{high} is searched on a log scale, so its low end must be "
            "above 0 (to include 0, give choices instead, e.g. 0,1e-5,1e-4)"
        )
    return Range(lo, hi, bool(log))


def _choice(name: str, values: Sequence[Any]) -> Choice:
    checked = tuple(dict.fromkeys(_value(name, v) for v in values))  # in order, no repeats
    if not checked:
        raise SweepError(f"{name}: no values given")
    return Choice(checked)


def parse_spec(name: str, text: str) -> Spec:
    """``"1e-4:1e-1"`` -> a log-scale :class:`Range`; ``"64,128"`` -> a :class:`Choice`;
    ``"0.01"`` -> one fixed value. ``hidden`` takes one architecture, ``"256,128"``.

    >>> parse_spec("lr", "1e-4:1e-1")
    Range(low=0.0001, high=0.1, log=True)
    >>> parse_spec("batch_size", "64, 128")
    Choice(values=(64, 128))
    >>> parse_spec("hidden", "256,128")
    Choice(values=('256,128',))
    >>> parse_spec("weight_decay", "0:1e-3")
    Traceback (most recent call last):
    ...
    handgrad.sweep_space.SweepError: weight_decay: the range 0:1e-3 is searched on a log scale, ...
    """
    text = text.strip()
    if name == "hidden":
        return _choice(name, [text])
    if ":" in text:
        low, _, high = text.partition(":")
        return _range(name, low.strip(), high.strip())
    items = [item.strip() for item in text.split(",")]
    if "" in items:
        raise SweepError(f"{name}: {text!r} has an empty value (a stray comma?)")
    return _choice(name, items)


def _from_file(name: str, raw: Any) -> Spec:
    if isinstance(raw, dict):
        extra = set(raw) - {"low", "high", "log"}
        if extra or not {"low", "high"} <= set(raw):
            raise SweepError(f"{name}: a range is {{low, high, log}}, got keys {sorted(raw)}")
        if not isinstance(raw.get("log", True), bool):
            raise SweepError(f"{name}: log must be true or false, got {raw['log']!r}")
        return _range(name, raw["low"], raw["high"], raw.get("log", True))
    if isinstance(raw, list):
        return _choice(name, raw)
    if isinstance(raw, str):
        return parse_spec(name, raw)
    return _choice(name, [raw])


def load_space(path: str | os.PathLike[str]) -> dict[str, Spec]:
    """The search space of a JSON or TOML file: each of :data:`PARAMS` (``batch-size`` and
    ``weight-decay`` spelt either way) maps to a list of choices, a ``{low, high, log}``
    range, one fixed value, or the command line's text (``"1e-4:1e-1"``)::

        lr = {low = 1e-4, high = 0.1}
        batch_size = [64, 128, 256]
        hidden = [128, "256,128", [512, 256]]   # each one architecture
        optimizer = ["adam", "sgd"]
        weight_decay = [0, 1e-5, 1e-4]
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"--space {file}: cannot read it: {exc}") from None
    try:
        if file.suffix == ".json":
            data = json.loads(text)
        elif file.suffix == ".toml":
            import tomllib  # Python 3.11+

            data = tomllib.loads(text)
        else:
            raise SweepError(f"--space {file}: give a .json or .toml file")
    except ImportError:
        raise SweepError(f"--space {file}: TOML needs Python 3.11 or later; use JSON") from None
    except ValueError as exc:  # json.JSONDecodeError, tomllib.TOMLDecodeError
        if isinstance(exc, SweepError):
            raise
        raise SweepError(f"--space {file}: not valid {file.suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise SweepError(
            f"--space {file}: expected a table of parameters, got {type(data).__name__}"
        )
    space: dict[str, Spec] = {}
    for key, raw in data.items():
        name = str(key).replace("-", "_")
        if name not in PARAMS:
            raise SweepError(f"--space {file}: unknown parameter {key!r}; use {', '.join(PARAMS)}")
        try:
            space[name] = _from_file(name, raw)
        except SweepError as exc:
            raise SweepError(f"--space {file}: {exc}") from None
    return space


@dataclass(frozen=True)
class SearchSpace:
    """What a sweep searches. The defaults make ``handgrad sweep`` worth running on MNIST."""

    lr: Spec = Range(1e-4, 1e-1)
    batch_size: Spec = Choice((64, 128, 256))
    hidden: Spec = Choice(("128", "256", "512", "256,128"))
    optimizer: Spec = Choice(("adam", "adamw", "sgd"))
    weight_decay: Spec = Choice((0.0, 1e-5, 1e-4, 1e-3))

    def searched(self) -> list[str]:
        """The parameters with more than one possible value."""
        return [n for n in PARAMS if not _fixed(getattr(self, n))]

    def fixed(self) -> dict[str, Any]:
        return {n: s.values[0] for n in PARAMS if _fixed(s := getattr(self, n))}

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Every parameter's value for ``trial``: suggested, or fixed."""
        params = self.fixed()
        for name in self.searched():
            spec = getattr(self, name)
            if isinstance(spec, Choice):
                params[name] = trial.suggest_categorical(name, spec.values)
            elif name == "batch_size":
                params[name] = trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
            else:
                params[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
        return params

    def describe(self) -> str:
        parts = []
        for name in PARAMS:
            spec = getattr(self, name)
            label = LABELS.get(name, name)
            if isinstance(spec, Range):
                parts.append(f"{label} {spec.low:g}..{spec.high:g}{' (log)' if spec.log else ''}")
            elif len(spec.values) > 1:
                parts.append(f"{label} {' | '.join(show(name, v) for v in spec.values)}")
        fixed = ", ".join(f"{LABELS.get(n, n)} {show(n, v)}" for n, v in self.fixed().items())
        return "; ".join(parts) + (f"; fixed: {fixed}" if fixed else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            n: asdict(getattr(self, n)) | {"kind": type(getattr(self, n)).__name__} for n in PARAMS
        }


def _fixed(spec: Spec) -> bool:
    return isinstance(spec, Choice) and len(spec.values) == 1


def show(name: str, value: Any) -> str:
    """``value`` of parameter ``name`` as tables print it (three digits for rates)."""
    if name in ("lr", "weight_decay"):
        return f"{value:.3g}"
    return str(value)


@dataclass(frozen=True)
class Settings:
    """What every trial of a study shares (``handgrad train``'s options of the same names)."""

    epochs: int = 5
    schedule: str = "onecycle"
    label_smoothing: float = 0.1
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise SweepError(f"epochs must be at least 1, got {self.epochs}")
        if self.schedule not in SCHEDULES:
            raise SweepError(f"unknown schedule {self.schedule!r}; choose from {list(SCHEDULES)}")
        if not 0 < self.val_fraction < 1:
            raise SweepError(
                f"val_fraction must be in (0, 1): trials are scored on it, got {self.val_fraction}"
            )
