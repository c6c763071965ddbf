"""The training loop: ``fit``, ``evaluate``, ``predict`` and ``predict_proba``.

Data are plain arrays, and every function here takes them the same way (the input
policy, also in the README's "What fit and predict take"):

- integer images (MNIST's ``uint8``) are pixels 0..255: they stay integer in memory
  and become floats in ``[0, 1]`` one batch at a time, so memory stays flat;
- float input is used as given, cast to the model's dtype: it is never rescaled, and
  when it looks like 0..255 pixels (whole numbers from 0 to 255, the largest above 1)
  a :class:`PixelScaleWarning` says so, once per call;
- labels are integer class indices (a loss that takes probabilities also takes
  float targets of the scores' shape); float labels holding whole numbers, as read
  from a CSV file, are refused with the cast that fixes them.

A ``transform=`` replaces the first two rules. ``model(x)`` and ``model.forward(x)``
are the layers themselves: they take float input in the model's dtype and convert
nothing.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handgrad import _fit_setup, _threads
from handgrad._random import as_generator
from handgrad.callbacks import Callback
from handgrad.data.batches import index_batches, num_batches
from handgrad.nn.functional import softmax
from handgrad.nn.loss import Loss
from handgrad.nn.module import Module
from handgrad.optim.lr_scheduler import ReduceLROnPlateau

Transform = Callable[[np.ndarray], np.ndarray]


@dataclass
class History:
    """Per-epoch logs returned by :func:`fit` (Keras style: ``history["val_loss"]``).

    ``history`` maps ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``,
    ``lr`` and ``seconds`` to one value per completed epoch. ``stop_reason`` says
    why training ended early (early stopping, time limit, non-finite loss), or
    is None.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    stop_reason: str | None = None

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    @property
    def epochs(self) -> int:
        return len(self.history.get("loss", []))

    @property
    def diverged(self) -> bool:
        """True when the divergence guard stopped the run (a NaN or infinite loss,
        weights or optimizer state)."""
        return (self.stop_reason or "").startswith("non-finite")

    def append(self, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))


@dataclass
class Trainer:
    """What callbacks can see and steer while :func:`fit` runs."""

    model: Module
    loss: Loss
    optimizer: Any
    epochs: int
    steps_per_epoch: int
    history: History
    scheduler: Any = None  # the learning-rate scheduler fit steps (TrainingCheckpoint saves it)
    start_time: float = field(default_factory=time.perf_counter)
    epoch: int = 0
    stop_training: bool = False  # finish the current epoch, then stop
    stop_now: bool = False  # stop after the current batch
    last_eval_seconds: float = 0.0
    val_size: int = 0  # validation samples evaluated after every epoch
    # Where the run is, for a checkpoint (handgrad.checkpoint) taken at any step:
    generator: np.random.Generator | None = None  # shuffling, augmentation
    step: int = 0  # steps done in the current epoch
    interrupted: bool = False  # stopped by interrupt(): a resumable pause, not an end
    order: np.ndarray | None = None  # this epoch's sample order
    epoch_lr: float = 0.0  # the learning rate this epoch's logs report
    epoch_sums: tuple[float, int, int, int] = (0.0, 0, 0, 0)  # loss sum, seen, correct, counted
    epoch_start: float = 0.0  # perf_counter() when this epoch began
    callbacks: list[Callback] = field(default_factory=list)

    def request_stop(self, reason: str, immediately: bool = False) -> None:
        if self.history.stop_reason is None:
            self.history.stop_reason = reason
        self.stop_training = True
        self.stop_now = self.stop_now or immediately

    def interrupt(self, reason: str) -> None:
        """Pause the run at the end of the current step, to be resumed from a checkpoint.

        Unlike :meth:`request_stop`, an unfinished epoch is left unfinished: it is
        neither logged nor validated, and a resumed run completes it. Called after the
        last step of an epoch (or between epochs), the epoch ends as usual first.
        """
        self.history.stop_reason = reason
        self.interrupted = True
        self.stop_training = True
        self.stop_now = self.stop_now or self.step < self.steps_per_epoch


def model_dtype(model: Module) -> np.dtype:
    """The dtype of the model's parameters (float32 for a parameter-free model)."""
    for param in model.parameters():
        return param.dtype
    return np.dtype(np.float32)


class PixelScaleWarning(UserWarning):
    """Float input that looks like 0..255 pixels, used unscaled (see :func:`default_transform`)."""


def looks_like_0_255(x: np.ndarray) -> bool:
    """True for float values that look like unscaled pixels: whole numbers from 0 to
    255, the largest above 1 (what ``uint8`` images become with ``astype(float)``, or
    a CSV file's pixel columns read as floats). Scaled pixels stay within [0, 1],
    standardised ones, ``(x - mean) / std``, have a negative background, and
    measurements (Iris's 5.1 cm) are not whole numbers."""
    if x.size == 0 or not np.issubdtype(x.dtype, np.floating):
        return False
    top = float(x.max())
    return bool(1.0 < top <= 255.0 and float(x.min()) >= 0.0 and np.array_equal(x, np.round(x)))


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside this module."""
    frame: Any = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    return level


def default_transform(dtype: np.dtype) -> Transform:
    """The input policy of :func:`fit`, :func:`evaluate` and :func:`predict`: integer
    images -> floats in ``[0, 1]`` (divided by 255); float arrays -> ``dtype``, as
    they are.

    Float batches that look like 0..255 pixels (:func:`looks_like_0_255`) are still
    used as they are, but the first one raises a :class:`PixelScaleWarning`: a
    network fed 0..255 inputs starts with huge activations and trains badly, without
    an error. Silence it with ``warnings.simplefilter("ignore", PixelScaleWarning)``
    when the range is intended, or pass your own ``transform``.
    """
    scale = dtype.type(1.0 / 255.0)
    warned = False

    def transform(x: np.ndarray) -> np.ndarray:
        nonlocal warned
        if x.dtype.kind in "iu":  # np.integer
            return x.astype(dtype) * scale
        if not warned and looks_like_0_255(x):
            warned = True
            warnings.warn(
                f"the input is {x.dtype} with values from {float(x.min()):g} to "
                f"{float(x.max()):g}: it looks like 0..255 pixels, and float input is used "
                "as given, unscaled. Divide it by 255 (x / 255), or pass the integer "
                "(uint8) images, which are scaled to [0, 1]",
                PixelScaleWarning,
                stacklevel=_caller_stacklevel(),
            )
        return x.astype(dtype, copy=False)

    return transform


class _Scaled:
    """:func:`default_transform` for integer training batches, into buffers kept
    across steps (one per batch shape): fit's batch is used up before the next
    step writes over it. The same numbers as ``x.astype(dtype) * (1 / 255)``; 4-10%
    of an MNIST epoch from uint8 images went to allocating the two arrays that makes."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype, self.scale = dtype, dtype.type(1.0 / 255.0)
        self.buffers: dict[tuple[int, ...], np.ndarray] = {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.buffers.get(x.shape)
        if out is None:
            out = self.buffers[x.shape] = np.empty(x.shape, self.dtype)
        return np.multiply(x, self.scale, out=out, dtype=self.dtype)


def _check_data(x: np.ndarray, y: np.ndarray, name: str) -> None:
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise TypeError(f"{name} must be a pair of numpy arrays (x, y)")
    if len(x) != len(y):
        raise ValueError(f"{name}: x has {len(x)} samples but y has {len(y)}")
    if len(x) == 0:
        raise ValueError(f"{name} is empty")
    if np.issubdtype(x.dtype, np.floating) and not all_finite(x):
        raise ValueError(f"{name}: x contains NaN or infinite values")


def _n_correct(scores: np.ndarray, y: np.ndarray) -> int | None:
    if scores.ndim != 2 or y.ndim != 1 or y.dtype.kind not in "iu":  # not np.integer
        return None
    return int(np.count_nonzero(scores.argmax(axis=1) == y))


def all_finite(x: np.ndarray) -> bool:
    """True when no element of the float array ``x`` is NaN or infinite.

    One pass, no temporary: the sum of finite numbers is NaN or infinite only when
    it overflows, so only then are the elements checked one by one (a whole MNIST
    training set: 11 ms instead of 17 ms for ``np.isfinite(x).all()``)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if math.isfinite(float(np.sum(x))):
            return True
    flat = x.reshape(-1)
    chunk = 1 << 16
    return all(bool(np.isfinite(flat[i : i + chunk]).all()) for i in range(0, flat.size, chunk))


def _state_arrays(state: Any) -> list[np.ndarray]:
    """The float arrays in an optimizer's ``state`` (a mapping of mappings in
    handgrad; a duck-typed optimizer's may hold arrays directly)."""
    if isinstance(state, np.ndarray):
        return [state] if state.dtype.kind == "f" else []
    if isinstance(state, Mapping):
        return [a for value in state.values() for a in _state_arrays(value)]
    return []


def _finite_state(model: Module, optimizer: Any) -> bool:
    """True when every weight, buffer and optimizer state array is finite."""
    arrays = [p.data for p in model.parameters()]
    arrays += [b for _, b in model.named_buffers() if b.dtype.kind == "f"]
    arrays += _state_arrays(getattr(optimizer, "state", None))
    return all(all_finite(a) for a in arrays)


class _Snapshot:
    """Where this run's current epoch began (or where a resumed run picked it up):
    the weights, buffers, optimizer and schedule state the divergence guard restores.

    Taken once per epoch, it costs nothing per step: the guard checks one number a
    step, the loss (a non-finite gradient makes the weights non-finite, and so the
    next step's loss), and the whole state once at the end of each epoch."""

    def __init__(self, model: Module, optimizer: Any, scheduler: Any) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.state = model.state_dict()
        self.optimizer_state: Any = None
        self.scheduler_state: Any = None
        self.where = ""

    def take(self, where: str) -> None:
        for name, p in self.model.named_parameters():
            np.copyto(self.state[name], p.data)
        for name, buf in self.model.named_buffers():
            np.copyto(self.state[name], buf)
        if hasattr(self.optimizer, "state_dict"):  # copies: a few weight-sized arrays
            self.optimizer_state = self.optimizer.state_dict()
        if hasattr(self.scheduler, "state_dict"):
            self.scheduler_state = self.scheduler.state_dict()
        self.where = where

    def restore(self) -> None:
        # strict=False: state_dict names a shared parameter once, under its first name
        self.model.load_state_dict(self.state, strict=False)
        if self.optimizer_state is not None:
            self.optimizer.load_state_dict(self.optimizer_state)
        if self.scheduler_state is not None:
            self.scheduler.load_state_dict(self.scheduler_state)


def _roll_back(trainer: Trainer, snapshot: _Snapshot, problem: str, where: str) -> None:
    """Restore ``snapshot`` and stop the run at once, saying why. A divergence says
    more than any stop asked for before it, and a rolled-back run is not resumable."""
    snapshot.restore()
    trainer.interrupted, trainer.history.stop_reason = False, None
    trainer.request_stop(
        f"{problem} at {where}: stopped; the weights are restored to those at "
        f"{snapshot.where} (try a lower learning rate)",
        immediately=True,
    )


def fit(
    model: Module,
    loss: Loss,
    optimizer: Any,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    rng: np.random.Generator | int | None = None,
    scheduler: Any = None,
    scheduler_interval: str = "epoch",
    callbacks: Sequence[Callback] = (),
    transform: Transform | None = None,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    eval_batch_size: int = 2000,
    initial_epoch: int = 0,
    resume: Any = None,
    validation_split: float = 0.0,
    verbose: int | str = "auto",
    scheduler_monitor: str = "val_loss",
    threads: int | None = None,
) -> History:
    """Train ``model`` with mini-batches, shuffling every epoch from ``rng``.

    Parameters
    ----------
    model, loss, optimizer
        The network, a :class:`~handgrad.nn.loss.Loss`, and an optimizer built
        from ``model.parameters()``.
    train, val : (x, y)
        Training data and optional validation data. ``x``: integer images are scaled
        to ``[0, 1]``, float input is used as given (a :class:`PixelScaleWarning` when
        it looks like 0..255 pixels); ``y``: integer class indices for the
        classification losses (float labels are refused with the cast that fixes
        them). See the module docstring.
    validation_split : float
        Keras's: hold out the *last* ``N - floor(N * (1 - validation_split))`` samples
        of ``train`` for validation, as they stand (taken before any shuffling, so the
        same ones every run, and nothing is drawn from ``rng``). Data sorted by class
        needs a shuffled or stratified split instead
        (:func:`handgrad.data.train_val_split`) passed as ``val``. Refused together
        with ``val``.
    epochs, batch_size : int
        Passes over the data, samples per step (the last batch may be smaller).
    rng : numpy.random.Generator or int
        Shuffling order, and augmentation. The same seed, on the same machine with the
        same NumPy/BLAS build and the same thread counts, gives the same run, bit for
        bit. A different BLAS thread count (``handgrad.set_blas_threads``,
        ``OPENBLAS_NUM_THREADS``) changes the order in which the matrix products add
        their terms, so the weights differ in their last bits (after one MNIST epoch of
        the 784-128-10 network, 71% of them, by up to 3e-6) and training grows the
        differences (after 15 epochs: 89% of them, some by 0.77; test accuracy 98.25%
        against 98.21%). ``handgrad.set_num_threads`` does not change results:
        the convolution kernels split every batch into the same chunks on any number
        of threads and add the chunks' sums in chunk order.
    scheduler : optional
        A learning-rate scheduler, stepped once per epoch or once per batch
        (``scheduler_interval="batch"``, e.g. for ``OneCycleLR``); or a function
        ``(optimizer, steps_per_epoch) -> scheduler`` that fit calls with its own steps
        per epoch (``ceil(training samples / batch_size)``), for the per-step schedules:
        ``lambda opt, steps_per_epoch: OneCycleLR(opt, max_lr=0.01, epochs=10,
        steps_per_epoch=steps_per_epoch)``. A ``OneCycleLR`` built for another number of
        steps per epoch, or too short for the run, is refused before the first step.
        A ``ReduceLROnPlateau`` is stepped after every epoch with the logged metric
        ``scheduler_monitor`` names (default ``"val_loss"``; ``"loss"`` without
        validation data).
    callbacks : sequence of Callback
        Progress bar, early stopping, checkpoints, CSV log, time limit...
    verbose : {"auto", 0, 1, 2}
        Keras's: 0 silent, 1 a progress bar over each epoch's batches (when stderr is
        a terminal) and one line per epoch on stdout, 2 the epoch lines only.
        ``"auto"``: 1 in interactive use (stdout a terminal, or a Jupyter kernel), 0
        otherwise (a script's output redirected to a file or a pipe, a test suite).
        A :class:`~handgrad.callbacks.ProgressBar` among ``callbacks`` replaces it.
    transform : callable, optional
        Applied to each batch of ``x``; default (:func:`default_transform`): integers ->
        ``[0, 1]`` floats, floats as given, in the model's dtype.
    augment : callable, optional
        ``augment(xb, rng) -> xb``, e.g. :class:`~handgrad.augment.Augment`: applied
        to each *training* batch after ``transform``, drawing from fit's own
        generator (after that epoch's shuffle), so augmented runs stay reproducible.
        Never applied to validation data. Image augmentations need image-shaped
        batches, ``(N, H, W)`` or ``(N, C, H, W)``, from ``transform``.
    threads : int, optional
        Compute on this many threads: an MLP's matrix products on ``threads`` BLAS
        threads, a convolutional network's kernels on ``threads`` handgrad threads
        (BLAS on one inside each). Default: what the command line uses, measured in
        the README's "Threads": an MLP on one BLAS thread (unless ``OPENBLAS_NUM_THREADS``
        / ``OMP_NUM_THREADS`` or ``handgrad.set_blas_threads`` chose), a convolutional
        network on a handgrad thread per core (unless ``handgrad.set_num_threads``
        chose). The counts before come back when fit returns. See
        :func:`handgrad.threads`.
    initial_epoch : int
        The epoch to start at (Keras's meaning): ``epochs`` is the index of the last
        epoch, so ``initial_epoch=5, epochs=8`` trains three epochs, numbered 6-8.
    resume : handgrad.checkpoint.TrainingState, optional
        Continue the run a :class:`~handgrad.checkpoint.TrainingCheckpoint` saved
        (:func:`~handgrad.checkpoint.load_checkpoint`): its weights, optimizer and
        scheduler state, generators, callbacks' state, history, and the epoch and
        step it stopped at, mid-epoch included. Give the same data, ``batch_size``,
        optimizer, scheduler and thread counts and the run ends bit for bit as an
        uninterrupted one would.

    Returns
    -------
    History
        Per-epoch ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr``, ``seconds``.
    """
    x, y = train
    _check_data(x, y, "train")
    if val is not None:
        _check_data(val[0], val[1], "val")
    (x, y), split = _fit_setup.split_validation(x, y, validation_split, val is not None)
    val = split if split is not None else val
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if scheduler_interval not in ("epoch", "batch"):
        raise ValueError(
            f"scheduler_interval must be 'epoch' or 'batch', got {scheduler_interval!r}"
        )
    if augment is not None and not callable(augment):
        raise TypeError(
            f"augment must be callable as augment(x, rng), got {type(augment).__name__}"
        )
    if int(initial_epoch) < 0:
        raise ValueError(f"initial_epoch must be >= 0, got {initial_epoch}")
    generator = as_generator(rng)
    prep = transform or default_transform(model_dtype(model))
    # integer images by default: scaled into fit's own buffer, not two new arrays a step
    # (not for augment, which may keep a batch: the buffer holds only the current one)
    plain = transform is None and augment is None and x.dtype.kind in "iu"
    batch_x = _Scaled(model_dtype(model)) if plain else prep
    n = len(x)
    steps = num_batches(n, int(batch_size))
    scheduler = _fit_setup.build_scheduler(scheduler, optimizer, steps)
    callbacks = _fit_setup.with_progress(callbacks, verbose)
    history = History()
    trainer = Trainer(model, loss, optimizer, int(epochs), steps, history, scheduler)
    trainer.val_size = 0 if val is None else len(val[0])
    trainer.generator = generator
    trainer.epoch = int(initial_epoch)
    # Callbacks that record the run (checkpoints) see it after the others have acted.
    callbacks = sorted(callbacks, key=lambda cb: bool(getattr(cb, "runs_last", False)))
    trainer.callbacks = callbacks
    for cb in callbacks:
        cb.set_trainer(trainer)
    for cb in callbacks:
        cb.on_train_begin()
    if resume is not None:  # a handgrad.checkpoint.TrainingState: weights, optimizer, ...
        resume.restore(trainer, scheduler, callbacks, n)
    resumed = trainer.order is not None  # inside an epoch: finish it first
    if scheduler is not None:
        steps_left = max(0, (int(epochs) - trainer.epoch) * steps - trainer.step)
        _fit_setup.check_scheduler(
            scheduler, scheduler_interval, scheduler_monitor, val is not None, steps, steps_left
        )
    plateau = isinstance(scheduler, ReduceLROnPlateau)  # stepped with a metric, per epoch

    # BLAS and handgrad threads for this model (handgrad._threads), restored after
    with _threads.for_run(model, threads):
        if not _finite_state(model, optimizer):
            raise ValueError(
                "the model's weights or buffers, or the optimizer's state, hold NaN or "
                "infinite values before training: nothing to train from"
            )
        snapshot = _Snapshot(model, optimizer, scheduler)
        for epoch in range(trainer.epoch, int(epochs)):
            trainer.epoch = epoch
            if not resumed:
                trainer.step = 0
            model.train()
            for cb in callbacks:
                cb.on_epoch_begin(epoch)
            if resumed:
                resumed = False
                order, lr = trainer.order, trainer.epoch_lr
                total_loss, seen, correct, counted = trainer.epoch_sums
                t0 = time.perf_counter() - trainer.epoch_start  # seconds already spent
            else:
                lr = float(optimizer.param_groups[0]["lr"])
                t0 = time.perf_counter()
                order = generator.permutation(n)
                total_loss, seen, correct, counted = 0.0, 0, 0, 0
            assert order is not None
            trainer.order, trainer.epoch_lr, trainer.epoch_start = order, lr, t0
            snapshot.take(
                f"batch {trainer.step} of epoch {epoch + 1}, where this run resumed"
                if trainer.step
                else f"the start of epoch {epoch + 1}"
            )
            for step, idx in enumerate(
                index_batches(order, batch_size, start=trainer.step), start=trainer.step
            ):
                xb, yb = batch_x(x[idx]), y[idx]
                if augment is not None:
                    xb = augment(xb, generator)
                # A diverging run overflows somewhere in the step; the loss check
                # below catches it and says so once, instead of NumPy's warnings.
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    scores = model.forward(xb)
                    value = loss.forward(scores, yb)
                    if not math.isfinite(value):
                        # A non-finite gradient (or update) made the weights
                        # non-finite a step ago, or the loss itself overflowed.
                        cause = (
                            ""
                            if _finite_state(model, optimizer)
                            else (f", after the update of batch {step} made the weights non-finite")
                        )
                        _roll_back(
                            trainer,
                            snapshot,
                            f"non-finite loss ({value})",
                            f"epoch {epoch + 1}, batch {step + 1}{cause}",
                        )
                        break
                    optimizer.zero_grad()
                    model.backward_params(loss.backward())  # dL/dx of the data is never used
                optimizer.step()
                if scheduler is not None and scheduler_interval == "batch":
                    scheduler.step()
                total_loss += value * len(idx)
                seen += len(idx)
                hits = _n_correct(scores, yb)
                if hits is not None:
                    correct += hits
                    counted += len(idx)
                trainer.step = step + 1
                trainer.epoch_sums = (total_loss, seen, correct, counted)
                for cb in callbacks:
                    cb.on_train_batch_end(step, {"loss": value, "size": len(idx)})
                if trainer.stop_now:
                    break
            if not history.diverged and not _finite_state(model, optimizer):
                # the last update went non-finite, or one whose loss never showed it
                _roll_back(
                    trainer,
                    snapshot,
                    "non-finite weights or optimizer state",
                    f"the end of epoch {epoch + 1} (after batch {trainer.step})",
                )
            if seen == 0 or (trainer.interrupted and trainer.step < steps):
                break  # an interrupted epoch stays open for a resumed run to finish
            logs = {"loss": total_loss / seen}
            if counted:
                logs["accuracy"] = correct / counted
            if val is not None:
                t_eval = time.perf_counter()
                logs.update(
                    {
                        f"val_{k}": v
                        for k, v in evaluate(
                            model, loss, *val, batch_size=eval_batch_size, transform=prep
                        ).items()
                    }
                )
                trainer.last_eval_seconds = time.perf_counter() - t_eval
            logs["lr"] = lr
            logs["seconds"] = time.perf_counter() - t0
            history.append(logs)
            if plateau:
                scheduler.step(_monitored(logs, scheduler_monitor))
            elif scheduler is not None and scheduler_interval == "epoch":
                scheduler.step()
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if trainer.stop_training:
                break
        for cb in callbacks:
            cb.on_train_end()
        model.eval()
        model.clear_cache()  # the last batch's activations: a trained model holds its weights
        loss.clear_cache()
    if history.diverged:
        warnings.warn(str(history.stop_reason), RuntimeWarning, stacklevel=2)
    return history


def _monitored(logs: dict[str, float], monitor: str) -> float:
    if monitor not in logs:
        raise KeyError(
            f"ReduceLROnPlateau: scheduler_monitor={monitor!r} is not among the epoch's "
            f"logs {sorted(logs)}"
        )
    return float(logs[monitor])


def _batches(x: np.ndarray, batch_size: int) -> Iterable[slice]:
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(x), batch_size):
        yield slice(start, start + batch_size)


def predict_scores(
    model: Module, x: np.ndarray, *, batch_size: int = 2000, transform: Transform | None = None
) -> np.ndarray:
    """Raw model outputs for ``x``, computed in evaluation mode, batch by batch."""
    prep = transform or default_transform(model_dtype(model))
    was_training = model.training
    model.eval()
    try:
        outs = [model.forward(prep(x[s])) for s in _batches(x, batch_size)]
    finally:
        model.train(was_training)
        model.clear_cache()  # the last batch's activations are not the caller's to hold
    return np.concatenate(outs, axis=0)


def predict_proba(
    model: Module, x: np.ndarray, *, batch_size: int = 2000, transform: Transform | None = None
) -> np.ndarray:
    """Class probabilities: softmax of the model's scores. Shape ``(N, C)``."""
    return softmax(predict_scores(model, x, batch_size=batch_size, transform=transform), axis=1)


def predict(
    model: Module, x: np.ndarray, *, batch_size: int = 2000, transform: Transform | None = None
) -> np.ndarray:
    """Predicted class labels (argmax of the scores), int64 ``(N,)``."""
    return predict_scores(model, x, batch_size=batch_size, transform=transform).argmax(axis=1)


def evaluate(
    model: Module,
    loss: Loss,
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int = 2000,
    transform: Transform | None = None,
) -> dict[str, float]:
    """Mean loss (and accuracy for class labels) over ``(x, y)``, in evaluation mode."""
    _check_data(x, y, "evaluate")
    prep = transform or default_transform(model_dtype(model))
    was_training = model.training
    model.eval()
    total, correct, counted = 0.0, 0, 0
    try:
        for s in _batches(x, batch_size):
            scores = model.forward(prep(x[s]))
            yb = y[s]
            value = loss.forward(scores, yb)
            total += value * (len(yb) if loss.reduction == "mean" else 1)
            hits = _n_correct(scores, yb)
            if hits is not None:
                correct += hits
                counted += len(yb)
    finally:
        model.train(was_training)
        model.clear_cache()
        loss.clear_cache()
    result = {"loss": total / len(x) if loss.reduction == "mean" else total}
    if counted:
        result["accuracy"] = correct / counted
    return result
