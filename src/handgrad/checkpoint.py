"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is a model file (:func:`handgrad.load` and ``handgrad evaluate`` read
it as one) that also holds, in its header and its ``extra/*`` arrays: the optimizer's
and scheduler's state, the epoch and step, the history, the state of every random
generator the run draws from (shuffling, augmentation, dropout), the callbacks'
state, the unfinished epoch's sample order and sums, and the run's settings.
:class:`TrainingCheckpoint` writes it (atomically) after every epoch and when the
run is interrupted; ``fit(..., resume=load_checkpoint(path))`` continues it.

>>> import numpy as np
>>> from handgrad import nn, optim
>>> from handgrad.train import fit
>>> from handgrad.checkpoint import TrainingCheckpoint, load_checkpoint
>>> x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
>>> y = (x[:, 0] > 0).astype(np.int64)
>>> def run(epochs, callbacks=(), resume=None):
...     model = nn.Sequential(nn.Linear(4, 2, rng=np.random.default_rng(1)))
...     opt = optim.Adam(model.parameters(), lr=0.01)
...     fit(model, nn.CrossEntropyLoss(), opt, (x, y), epochs=epochs,
...                  batch_size=16, rng=0, callbacks=callbacks, resume=resume)
...     return model
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
>>> _ = run(2, [TrainingCheckpoint(path)])             # stops after epoch 2 of 4
>>> resumed = run(4, resume=load_checkpoint(path))     # epochs 3 and 4
>>> straight = run(4)
>>> all(np.array_equal(a, b) for a, b in zip(resumed.state_dict().values(),
...                                           straight.state_dict().values()))
True
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handgrad.callbacks import Callback
from handgrad.nn.module import Module
from handgrad.serialization import ModelFileError, read_file, write_file

KIND = "handgrad-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ModelFileError):
    """A checkpoint is damaged, not a checkpoint, or does not fit the run resuming it."""


# -- plain data <-> JSON + arrays --------------------------------------------------------


def _encode(value: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    """JSON for ``value``, moving every array (and NumPy scalar, to keep its type) to
    ``arrays``; tuples and dicts with non-string keys survive the round trip."""
    if isinstance(value, np.ndarray) or isinstance(value, np.generic):
        key = f"a{len(arrays)}"
        arrays[key] = np.array(value)
        return {"__array__": key, "scalar": isinstance(value, np.generic)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, arrays, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, arrays, where) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, arrays, f"{where}.{k}") for k, v in value.items()}
        return {
            "__items__": [
                [_encode(k, arrays, where), _encode(v, arrays, f"{where}[{k!r}]")]
                for k, v in value.items()
            ]
        }
    raise TypeError(f"cannot checkpoint {where}: a {type(value).__name__} is not plain data")


def _decode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"__array__", "scalar"}:
        array = arrays[value["__array__"]]  # KeyError: a damaged file
        return array[()] if value["scalar"] else array
    if set(value) == {"__tuple__"}:
        return tuple(_decode(v, arrays) for v in value["__tuple__"])
    if set(value) == {"__items__"}:
        return {_decode(k, arrays): _decode(v, arrays) for k, v in value["__items__"]}
    return {k: _decode(v, arrays) for k, v in value.items()}


def _qualname(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _module_generators(model: Module) -> dict[str, np.random.Generator]:
    """The generators the model's layers draw from (dropout), by layer name."""
    return {
        name: m.__dict__["rng"]
        for name, m in model.named_modules()
        if isinstance(m.__dict__.get("rng"), np.random.Generator)
    }


# -- the state ---------------------------------------------------------------------------


@dataclass
class TrainingState:
    """A checkpoint read back by :func:`load_checkpoint`; pass it as ``fit(resume=...)``.

    ``model`` is the network rebuilt from the file (its weights included);
    ``settings`` the dict the run stored (the command line's options, for
    ``handgrad train --resume``); ``epoch`` and ``step`` where the run stopped
    (``step > 0``: inside that epoch).
    """

    path: Path
    model: Module
    epoch: int
    step: int
    history: dict[str, list[float]]
    settings: dict[str, Any]
    state: dict[str, Any] = field(repr=False)

    def restore(
        self, trainer: Any, scheduler: Any, callbacks: list[Callback], n_samples: int
    ) -> None:
        """Put the run back as it was (called by :func:`handgrad.fit`)."""
        state, where = self.state, self.path
        model, optimizer = trainer.model, trainer.optimizer
        if _qualname(optimizer) != state["optimizer_class"]:
            raise CheckpointError(
                f"{where}: the run used {state['optimizer_class']}, this one "
                f"{_qualname(optimizer)}: resume with the same optimizer"
            )
        saved_sched = state["scheduler_class"]
        if (scheduler is None) != (saved_sched is None) or (
            scheduler is not None and _qualname(scheduler) != saved_sched
        ):
            raise CheckpointError(
                f"{where}: the run used scheduler {saved_sched}, this one "
                f"{None if scheduler is None else _qualname(scheduler)}"
            )
        progress = state["progress"]
        if progress is not None and len(progress["order"]) != n_samples:
            raise CheckpointError(
                f"{where}: the run trained on {len(progress['order'])} samples, this one on "
                f"{n_samples}: resume with the same data"
            )
        try:
            model.load_state_dict(self.model.state_dict(), strict=True)
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            trainer.generator.bit_generator.state = state["generator"]
            layers = _module_generators(model)
            for name, saved in state["module_generators"].items():
                if name in layers:
                    layers[name].bit_generator.state = saved
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"{where}: does not fit this run ({type(exc).__name__}: {exc})"
            ) from exc
        saved_callbacks = list(state["callbacks"])
        for cb in callbacks:
            for i, (name, cb_state) in enumerate(saved_callbacks):
                if name == _qualname(cb):
                    cb.load_state_dict(cb_state)
                    del saved_callbacks[i]
                    break
        trainer.history.history = {k: list(v) for k, v in self.history.items()}
        trainer.epoch = self.epoch
        trainer.step = self.step
        if progress is not None:
            trainer.order = np.asarray(progress["order"], dtype=np.intp)
            trainer.epoch_lr = float(progress["lr"])
            trainer.epoch_sums = tuple(progress["sums"])
            trainer.epoch_start = float(progress["seconds"])


def save_checkpoint(
    path: str | os.PathLike[str],
    trainer: Any,
    scheduler: Any = None,
    callbacks: list[Callback] | None = None,
    settings: dict[str, Any] | None = None,
) -> Path:
    """Write the state of the run ``trainer`` describes to ``path``, atomically."""
    import time

    arrays: dict[str, np.ndarray] = {}
    mid_epoch = trainer.order is not None and 0 < trainer.step < trainer.steps_per_epoch
    if mid_epoch:
        progress = {
            "order": trainer.order,
            "lr": trainer.epoch_lr,
            "sums": list(trainer.epoch_sums),
            "seconds": time.perf_counter() - trainer.epoch_start,
        }
        epoch, step = trainer.epoch, trainer.step
    else:
        progress = None
        finished = trainer.order is not None and trainer.step >= trainer.steps_per_epoch
        epoch, step = trainer.epoch + (1 if finished else 0), 0
    stateful = [(cb, cb.state_dict()) for cb in callbacks or ()]
    state = {
        "optimizer_class": _qualname(trainer.optimizer),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler_class": None if scheduler is None else _qualname(scheduler),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "generator": trainer.generator.bit_generator.state,
        "module_generators": {
            name: g.bit_generator.state for name, g in _module_generators(trainer.model).items()
        },
        "callbacks": [[_qualname(cb), s] for cb, s in stateful if s is not None],
        "progress": progress,
    }
    header = {
        "kind": KIND,
        "version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "step": step,
        "history": trainer.history.history,
        "settings": settings or {},
        "state": _encode(state, arrays, "the run's state"),
    }
    json.dumps(header)  # a TypeError here names what is not JSON, before writing
    return write_file(trainer.model, path, metadata={"checkpoint": header}, extras=arrays)


def load_checkpoint(path: str | os.PathLike[str], custom_objects: Any = None) -> TrainingState:
    """Read a checkpoint written by :class:`TrainingCheckpoint`.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ModelFileError
        If the file is damaged or not a model file (:class:`CheckpointError`, a
        subclass, if it is a model file but not a checkpoint).
    """
    model, header, arrays = read_file(path, custom_objects)
    ckpt = header.get("metadata", {}).get("checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND:
        raise CheckpointError(
            f"{path}: a model file, not a training checkpoint (write one with "
            "handgrad train --checkpoint PATH, or the TrainingCheckpoint callback)"
        )
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {ckpt.get('version')!r} is not supported "
            f"(this handgrad reads version {CHECKPOINT_VERSION})"
        )
    try:
        state = _decode(ckpt["state"], arrays)
        epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        history = {str(k): [float(v) for v in vs] for k, vs in dict(ckpt["history"]).items()}
        settings = dict(ckpt["settings"])
        missing = {"optimizer", "generator", "callbacks", "progress", "module_generators"}
        missing -= set(state)
        if missing:
            raise KeyError(f"no {', '.join(sorted(missing))}")
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint ({type(exc).__name__}: {exc})") from exc
    if epoch < 0 or step < 0 or (step > 0) != (state["progress"] is not None):
        raise CheckpointError(f"{path}: damaged checkpoint (epoch {epoch}, step {step})")
    return TrainingState(Path(path), model, epoch, step, history, settings, state)


class TrainingCheckpoint(Callback):
    """Write a checkpoint to ``path`` after every epoch and when the run is interrupted.

    Parameters
    ----------
    path : str or PathLike
        Where; replaced atomically each time.
    scheduler : optional
        The learning-rate scheduler whose state is saved too; default: the one ``fit``
        steps (built there when ``fit`` was given a function that builds it).
    settings : dict, optional
        JSON-able settings of the run stored with it (``handgrad train`` keeps its
        options there, for ``--resume``).
    every_epoch : bool
        Write after every epoch (default), or only when the run is interrupted.
    """

    runs_last = True  # after early stopping etc. have updated their state

    def __init__(
        self,
        path: str | os.PathLike[str],
        scheduler: Any = None,
        settings: dict[str, Any] | None = None,
        every_epoch: bool = True,
    ) -> None:
        self.path = Path(path)
        self.scheduler = scheduler
        self.settings = settings
        self.every_epoch = every_epoch
        self.written: Path | None = None

    def _callbacks(self) -> list[Callback]:
        return [cb for cb in self.trainer.callbacks if cb is not self]

    def save(self) -> Path:
        scheduler = self.scheduler if self.scheduler is not None else self.trainer.scheduler
        self.written = save_checkpoint(
            self.path, self.trainer, scheduler, self._callbacks(), self.settings
        )
        return self.written

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        # Not after a divergence: fit rolled the weights and the optimizer back to
        # the epoch's start, which is the previous epoch's checkpoint, while this
        # epoch's position (its batch, its losses) would say otherwise.
        if self.every_epoch and not self.trainer.history.diverged:
            self.save()

    def on_train_end(self) -> None:
        if self.trainer.interrupted:
            self.save()
