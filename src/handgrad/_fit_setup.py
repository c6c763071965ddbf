"""What :func:`handgrad.train.fit` settles before its first step: the validation split,
the progress display ``verbose=`` asks for, and the learning-rate schedule (built for
fit's steps per epoch, and checked against the run)."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from handgrad.callbacks import Callback, ProgressBar

VERBOSE_CHOICES = ("auto", 0, 1, 2)


def interactive() -> bool:
    """True when a person watches the output: stdout is a terminal, or a Jupyter/IPython
    kernel's stream (whose ``isatty()`` says False)."""
    out = sys.stdout
    if out is None:
        return False
    if getattr(out, "isatty", lambda: False)():
        return True
    return type(out).__module__.split(".")[0] == "ipykernel"


def resolve_verbose(verbose: int | str) -> int:
    """``"auto"`` -> 1 in interactive use (:func:`interactive`), else 0; 0, 1, 2 as given."""
    if isinstance(verbose, bool) or verbose not in VERBOSE_CHOICES:
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
    if verbose == "auto":
        return 1 if interactive() else 0
    return int(verbose)


def with_progress(callbacks: Sequence[Callback], verbose: int | str) -> list[Callback]:
    """``callbacks`` plus the display ``verbose`` asks for: 1 a bar (on a terminal) and
    a line per epoch, 2 the lines only. A ProgressBar among the callbacks is the
    display already: none is added."""
    level = resolve_verbose(verbose)
    callbacks = list(callbacks)
    if level and not any(isinstance(cb, ProgressBar) for cb in callbacks):
        callbacks.insert(0, ProgressBar(bar=level == 1))
    return callbacks


def split_validation(
    x: np.ndarray, y: np.ndarray, validation_split: float, has_val: bool
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """Keras's ``validation_split``: the samples from ``floor(N * (1 - validation_split))``
    on validate, as they stand, before any shuffling. Views, not copies; nothing random."""
    fraction = float(validation_split)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
    if fraction == 0.0:
        return (x, y), None
    if has_val:
        raise ValueError(
            "give val= or validation_split=, not both: validation_split holds out the "
            "last part of the training data, val= is validation data of its own"
        )
    split_at = math.floor(len(x) * (1.0 - fraction))
    if split_at == 0 or split_at == len(x):
        raise ValueError(
            f"validation_split={fraction:g} of {len(x)} samples leaves "
            f"{split_at} for training and {len(x) - split_at} for validation: both need one"
        )
    return (x[:split_at], y[:split_at]), (x[split_at:], y[split_at:])


def build_scheduler(scheduler: Any, optimizer: Any, steps_per_epoch: int) -> Any:
    """A scheduler as given, or ``scheduler(optimizer, steps_per_epoch)`` when it is a
    function that builds one (fit supplies its own steps per epoch)."""
    if scheduler is None or hasattr(scheduler, "step"):
        return scheduler
    if not callable(scheduler):
        raise TypeError(
            "scheduler must be a learning-rate scheduler or a function "
            f"(optimizer, steps_per_epoch) -> scheduler, got {type(scheduler).__name__}"
        )
    built = scheduler(optimizer, steps_per_epoch)
    if not hasattr(built, "step"):
        raise TypeError(f"the scheduler function returned {type(built).__name__}, not a scheduler")
    return built


def check_scheduler(
    scheduler: Any,
    interval: str,
    monitor: str,
    has_val: bool,
    steps_per_epoch: int,
    steps_left: int,
) -> None:
    """Refuse, before the first step, a schedule that cannot fit the run: a
    ``ReduceLROnPlateau`` stepped per batch or watching validation that is not there,
    a ``OneCycleLR`` built for another number of steps per epoch, or one that would
    run out before the last of the ``steps_left`` steps."""
    from handgrad.optim.lr_scheduler import ReduceLROnPlateau

    name = type(scheduler).__name__
    if isinstance(scheduler, ReduceLROnPlateau):
        if interval != "epoch":
            raise ValueError(
                "ReduceLROnPlateau follows a metric logged once per epoch: use "
                "scheduler_interval='epoch'"
            )
        if monitor.startswith("val_") and not has_val:
            raise ValueError(
                f"ReduceLROnPlateau monitors {monitor!r} but fit has no validation data: "
                "pass val= or validation_split=, or scheduler_monitor='loss'"
            )
        logged = {"loss", "accuracy", "lr"} | ({"val_loss", "val_accuracy"} if has_val else set())
        if monitor not in logged:
            raise ValueError(
                f"ReduceLROnPlateau: scheduler_monitor={monitor!r} is not a metric fit logs "
                f"(one of {', '.join(sorted(logged))})"
            )
        return
    total = getattr(scheduler, "total_steps", None)
    if not isinstance(total, int):
        return
    own = getattr(scheduler, "steps_per_epoch", None)
    if interval != "batch":
        if own is not None:  # built with steps_per_epoch: a schedule of steps, not epochs
            raise ValueError(
                f"{name} was built for {own} steps an epoch but would be stepped once per "
                "epoch: pass scheduler_interval='batch'"
            )
        return
    if own is not None and own != steps_per_epoch:
        raise ValueError(
            f"{name} was built with steps_per_epoch={own}, but fit takes {steps_per_epoch} "
            "steps an epoch (ceil(training samples / batch_size)): pass "
            f"scheduler=lambda opt, steps_per_epoch: {name}(opt, ..., "
            "steps_per_epoch=steps_per_epoch) and fit supplies the number"
        )
    left = total - int(scheduler.last_epoch)
    if steps_left > left:
        raise ValueError(
            f"{name} has {left} of its total_steps={total} steps left, but fit will take "
            f"{steps_left} ({steps_per_epoch} an epoch): it would run out "
            f"{steps_left - left} steps before the end; build it for the whole run"
        )
