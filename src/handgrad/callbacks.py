"""Callbacks for :func:`handgrad.train.fit`, with Keras's hooks and names.

A callback sees the running :class:`~handgrad.train.Trainer` as ``self.trainer``
(model, optimizer, history) and may stop training through
``self.trainer.request_stop(reason)``.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from handgrad.train import Trainer


class Callback:
    """Base class: override any of the hooks."""

    trainer: Trainer

    def set_trainer(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self) -> None: ...

    def on_epoch_begin(self, epoch: int) -> None: ...

    def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None: ...

    def on_train_end(self) -> None: ...

    def state_dict(self) -> dict[str, Any] | None:
        """What a checkpoint must keep of this callback to resume exactly (None: nothing)."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, when a run resumes."""


def _better(mode: str, value: float, best: float, min_delta: float) -> bool:
    if mode == "min":
        return value < best - min_delta
    return value > best + min_delta


def _mode(monitor: str, mode: str) -> str:
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
    return mode


def _monitored(logs: dict[str, float], monitor: str, who: str) -> float:
    if monitor not in logs:
        raise KeyError(
            f"{who} monitors {monitor!r} but the epoch logs only have {sorted(logs)} "
            "(val_* metrics need validation data)"
        )
    return float(logs[monitor])


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Keras's rule: training stops at the end of the ``patience``-th epoch in a row
    without improvement, so ``patience=1`` stops after the first epoch that does not
    improve and ``patience=3`` after the third (``patience=0`` acts as 1). With
    ``restore_best_weights=True`` the model ends with the weights of its best epoch.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = False,
    ) -> None:
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = abs(float(min_delta))
        self.mode = _mode(monitor, mode)
        self.restore_best_weights = restore_best_weights
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        self.best_state: dict[str, np.ndarray] | None = None
        self.wait = 0

    def on_train_begin(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch, self.best_state, self.wait = -1, None, 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        value = _monitored(logs, self.monitor, "EarlyStopping")
        if _better(self.mode, value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_state = self.trainer.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.trainer.request_stop(
                f"early stopping: {self.monitor} did not improve for {self.wait} "
                f"epoch{'s' if self.wait > 1 else ''} "
                f"(best {self.best:.6g} at epoch {self.best_epoch + 1})"
            )

    def on_train_end(self) -> None:
        # An interrupted run is paused, not over: its checkpoint keeps the last weights.
        if self.restore_best_weights and self.best_state is not None:
            if not self.trainer.interrupted:
                self.trainer.model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_state = state["best_state"]


class ModelCheckpoint(Callback):
    """Save the model (atomically) after an epoch: every epoch, or only when
    ``monitor`` improves (``save_best_only=True``)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        monitor: str = "val_loss",
        save_best_only: bool = True,
        mode: str = "auto",
    ) -> None:
        self.path = path
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.mode = _mode(monitor, mode)
        self.best = math.inf if self.mode == "min" else -math.inf

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        from handgrad.serialization import save

        if self.save_best_only:
            value = _monitored(logs, self.monitor, "ModelCheckpoint")
            if not _better(self.mode, value, self.best, 0.0):
                return
            self.best = value
        save(self.trainer.model, self.path, metadata={"epoch": epoch + 1, "logs": logs})


class TimeLimit(Callback):
    """Stop cleanly before ``seconds`` of wall time have passed.

    After every batch it checks whether one more batch plus the end-of-epoch
    validation still fits (with a 50% safety factor), so the run ends inside the
    limit rather than after it. Before the first validation has been timed, its
    cost is estimated from the training speed.

    Parameters
    ----------
    seconds : float
        The limit.
    margin : float
        Seconds to keep free for work after training (testing, saving).
    start : float, optional
        A ``time.perf_counter()`` reading the limit counts from (e.g. when the
        program started); default: when training begins.
    """

    # A validation sample costs a forward pass, a training sample a forward and
    # a backward pass of about twice its cost: half is a safe estimate.
    EVAL_COST = 0.5

    def __init__(self, seconds: float, margin: float = 0.0, start: float | None = None) -> None:
        if not seconds > 0 or not math.isfinite(seconds):
            raise ValueError(f"time limit must be a positive number of seconds, got {seconds}")
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0 seconds, got {margin}")
        self.seconds = float(seconds)
        self.margin = float(margin)
        self.fixed_start = start
        self.start = 0.0
        self.last = 0.0
        self.slowest_batch = 0.0
        self.slowest_per_sample = 0.0

    def on_train_begin(self) -> None:
        self.last = time.perf_counter()
        self.start = self.last if self.fixed_start is None else self.fixed_start
        self.slowest_batch = self.slowest_per_sample = 0.0

    def on_epoch_begin(self, epoch: int) -> None:
        self.last = time.perf_counter()

    def _eval_estimate(self) -> float:
        if self.trainer.last_eval_seconds > 0:
            return self.trainer.last_eval_seconds
        return self.EVAL_COST * self.slowest_per_sample * self.trainer.val_size

    def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        now = time.perf_counter()
        took = now - self.last
        self.last = now
        self.slowest_batch = max(self.slowest_batch, took)
        self.slowest_per_sample = max(self.slowest_per_sample, took / max(1.0, logs["size"]))
        needed = 1.5 * (self.slowest_batch + self._eval_estimate()) + self.margin
        if now - self.start + needed > self.seconds:
            self.trainer.request_stop(
                f"time limit: stopped after {now - self.start:.1f} s to stay inside "
                f"{self.seconds:g} s",
                immediately=True,
            )


class ProgressBar(Callback):
    """A tqdm bar over each epoch's batches (only on a terminal) and one line per epoch.

    ``quiet=True`` prints nothing; ``bar=False`` only the epoch lines (``fit``'s
    ``verbose=2``). Without tqdm installed, only the epoch lines.
    """

    def __init__(self, quiet: bool = False, file: IO[str] | None = None, bar: bool = True) -> None:
        self.quiet = quiet
        self.file = file
        self.bar = bar
        self._bar: Any = None

    def _stream(self) -> IO[str]:
        return self.file if self.file is not None else sys.stdout

    def on_epoch_begin(self, epoch: int) -> None:
        if self.quiet or not self.bar or not getattr(sys.stderr, "isatty", lambda: False)():
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(
            total=self.trainer.steps_per_epoch,
            initial=self.trainer.step,  # a resumed epoch starts part done
            leave=False,
            unit="batch",
            desc=f"epoch {epoch + 1}/{self.trainer.epochs}",
            file=sys.stderr,
        )

    def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if batch % 20 == 0:
                self._bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self._close()
        if self.quiet:
            return
        parts = [f"epoch {epoch + 1:>{len(str(self.trainer.epochs))}}/{self.trainer.epochs}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in logs:
                parts.append(f"{key} {logs[key]:.4f}")
        parts.append(f"lr {logs['lr']:.3g}")
        parts.append(f"{logs['seconds']:.1f} s")
        print("  ".join(parts), file=self._stream(), flush=True)

    def on_train_end(self) -> None:
        self._close()


class CSVLogger(Callback):
    """Append one row of the epoch's logs to a CSV file after every epoch (Keras's callback).

    The first row is the header: ``epoch`` (numbered from 1, as handgrad's epoch
    lines; Keras counts from 0), then the logs' keys in the order ``fit`` logs them
    (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr``, ``seconds``).
    Each row is written with one call, flushed and synced before training goes on,
    so a crash leaves every finished epoch's row and at most one torn last line,
    which the next run that appends drops.

    Parameters
    ----------
    filename : str or PathLike
    separator : str
        Between the columns.
    append : bool
        Add to an existing file (its header is kept, and a value it has no column for
        is left out with a warning); False: start a new one, replacing any old file
        when the first epoch ends.

    A run resumed from a checkpoint (``fit(resume=...)``, ``handgrad train --resume``)
    continues its own file whatever ``append`` says: the rows the checkpoint counted
    are kept and rows written after it (an epoch that ran again after the crash) are
    replaced, so each epoch appears once.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from handgrad import nn, optim
    >>> from handgrad.callbacks import CSVLogger
    >>> from handgrad.train import fit
    >>> x = np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)
    >>> y = (x[:, 0] > 0).astype(np.int64)
    >>> model = nn.Sequential(nn.Linear(2, 2, rng=0))
    >>> path = os.path.join(tempfile.mkdtemp(), "log.csv")
    >>> _ = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1),
    ...         (x, y), epochs=2, rng=0, callbacks=[CSVLogger(path)])
    >>> print(open(path).read().splitlines()[0])
    epoch,loss,accuracy,lr,seconds
    >>> len(open(path).read().splitlines())
    3
    """

    def __init__(
        self, filename: str | os.PathLike[str], separator: str = ",", append: bool = False
    ) -> None:
        if not separator or "\n" in separator or "\r" in separator:
            raise ValueError(
                f"separator must be a non-empty string without newlines, got {separator!r}"
            )
        self.filename = Path(filename)
        self.separator = separator
        self.append = append
        self.keys: list[str] | None = None  # the columns after "epoch", once known
        self.rows = 0  # data rows in the file, this run's and any appended to
        self._resume: dict[str, Any] | None = None

    def on_train_begin(self) -> None:
        from handgrad._argtypes import output_file_problem

        # before the first epoch trains, not when its row is written
        problem = output_file_problem(self.filename, "log.csv")
        if problem:
            raise ValueError(f"CSVLogger: {self.filename}: {problem}")
        self.keys, self.rows, self._resume = None, 0, None

    def state_dict(self) -> dict[str, Any]:
        return {"keys": self.keys, "rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = dict(state)

    def _lines(self) -> list[str]:
        """The file's complete lines (a torn last line, without its newline, is left out)."""
        try:
            text = self.filename.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [line + "\n" for line in text.split("\n")[:-1]]

    def _rewrite(self, lines: list[str]) -> None:
        from handgrad._atomic import atomic_write

        data = "".join(lines).encode("utf-8")
        atomic_write(self.filename, lambda fh: fh.write(data))

    def _start(self, logs: dict[str, float]) -> None:
        """Decide the columns and put the file in the state the first new row extends."""
        resume, self._resume = self._resume, None
        if resume is not None and resume["keys"] is not None:
            kept = self._lines()[: 1 + int(resume["rows"])]
            if kept and kept[0].rstrip("\n").split(self.separator)[1:] == resume["keys"]:
                self.keys, self.rows = list(resume["keys"]), len(kept) - 1
                self._rewrite(kept)
                return
        if self.append:
            lines = self._lines()
            if lines:
                self.keys = lines[0].rstrip("\n").split(self.separator)[1:]
                self.rows = len(lines) - 1
                if self.filename.stat().st_size != sum(len(ln.encode("utf-8")) for ln in lines):
                    self._rewrite(lines)  # drop a torn last line
                return
        self.keys, self.rows = list(logs), 0
        self._rewrite([self.separator.join(["epoch", *self.keys]) + "\n"])

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.keys is None:
            self._start(logs)
            left_out = [k for k in logs if k not in (self.keys or ())]
            if left_out:
                warnings.warn(
                    f"CSVLogger: {self.filename} has no column for {left_out}; "
                    "left out of every row",
                    stacklevel=2,
                )
        assert self.keys is not None
        cells = [str(epoch + 1)]
        cells += [repr(float(logs[k])) if k in logs else "NA" for k in self.keys]
        row = (self.separator.join(cells) + "\n").encode("utf-8")
        with open(self.filename, "ab") as fh:
            fh.write(row)
            fh.flush()
            os.fsync(fh.fileno())
        self.rows += 1
