"""Hyper-parameter sweeps on Optuna: the objective, the study, the workers.

A sweep trains the MLP of ``handgrad train`` once per *trial*, with the learning
rate, batch size, hidden sizes, optimizer and weight decay an Optuna sampler
suggests, and scores each trial by its validation accuracy after the last epoch.
Everything else is shared by every trial and fixed for the study
(:class:`Settings`): epochs, schedule, label smoothing, the validation split and
the seed. Every trial trains from the same ``numpy.random.default_rng(seed)`` as
``handgrad train --seed`` does, so a trial's model is, bit for bit, the one that
``handgrad train`` with its options gives (:func:`train_command`), and trials differ
by their hyper-parameters only, not by luck.

The study lives in an Optuna storage, a journal file or a database that several
machines share (:mod:`handgrad.sweep_study`, which also keeps the count of trials).
The search space is :mod:`handgrad.sweep_space`, the table and figures
:mod:`handgrad.sweep_report`.

Needs optuna: ``pip install "handgrad[sweep]"``. ``import handgrad`` does not import it.
"""

from __future__ import annotations

import copy
import hashlib
import os
import socket
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import optuna
    from optuna.trial import FrozenTrial, TrialState
except ImportError as _exc:  # pragma: no cover - depends on the environment
    from handgrad._install import install_hint

    raise ImportError(f"handgrad sweep needs optuna: {install_hint('sweep')}") from _exc

from handgrad.callbacks import Callback
from handgrad.sweep_space import (
    LABELS,
    PARAMS,
    Choice,
    Range,
    SearchSpace,
    Settings,
    SweepError,
    show,
)
from handgrad.sweep_study import (
    Job,
    fail_orphans,
    load_study,
    open_storage,
    open_study,
    prune_epoch,
    ranked,
    storage_label,
    trial_lock,
    trials_taken,
)

__all__ = [
    "PARAMS",
    "Choice",
    "Job",
    "Range",
    "ReportToTrial",
    "SearchSpace",
    "Settings",
    "SweepData",
    "SweepError",
    "best_model",
    "fail_orphans",
    "open_storage",
    "open_study",
    "prune_epoch",
    "ranked",
    "run_sweep",
    "run_worker",
    "stop_signal",
    "storage_label",
    "train_command",
    "train_trial",
    "trials_taken",
]


@dataclass
class SweepData:
    """The training and validation split every trial uses, and the generator after the
    split (each trial starts from a copy of it, as ``handgrad train`` would)."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    rng: np.random.Generator
    fingerprint: str
    test: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def split(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        settings: Settings,
        test: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> SweepData:
        from handgrad.data import train_val_split

        digest = hashlib.blake2b(digest_size=16)
        for a in (x, y):
            digest.update(f"{a.dtype.str}{a.shape}".encode())
            digest.update(np.ascontiguousarray(a).data)
        rng = np.random.default_rng(settings.seed)
        x_train, y_train, x_val, y_val = train_val_split(x, y, settings.val_fraction, rng)
        return cls((x_train, y_train), (x_val, y_val), rng, digest.hexdigest(), test)

    @classmethod
    def load(cls, data_dir: Path | None, settings: Settings, download: bool = False) -> SweepData:
        """MNIST, or the MNIST-format dataset in ``data_dir`` with any number of classes."""
        from handgrad.data import load_mnist

        d = load_mnist(data_dir, download=download, num_classes=None)
        return cls.split(d.x_train, d.y_train, settings, (d.x_test, d.y_test))


class ReportToTrial(Callback):
    """Report each epoch's ``val_accuracy`` to an Optuna trial (``trial.report``) and stop
    training, as the pruner decides (``trial.should_prune()``), after that epoch."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.pruned_at: int | None = None  # the epoch (from 1) after which it was pruned

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.trial.report(float(logs["val_accuracy"]), step=epoch + 1)
        if self.trial.should_prune():
            self.pruned_at = epoch + 1
            self.trainer.request_stop(f"pruned after epoch {epoch + 1}")


def train_trial(
    params: dict[str, Any], settings: Settings, data: SweepData, callbacks: Sequence[Callback] = ()
) -> tuple[Any, Any]:
    """Train one trial's MLP; return ``(model, history)``. The same steps, in the same
    order, as ``handgrad train`` (see :func:`train_command`), so the same bits."""
    from handgrad.nn.losses import CrossEntropyLoss
    from handgrad.recipes import build_mlp, make_optimizer, make_scheduler
    from handgrad.train import fit

    rng = copy.deepcopy(data.rng)
    x, y = data.train
    num_classes = int(max(y.max(), data.val[1].max())) + 1  # as handgrad train counts them
    hidden = [int(s) for s in str(params["hidden"]).split(",")]
    model = build_mlp(int(np.prod(x.shape[1:])), hidden, num_classes, rng=rng, dtype=np.float32)
    optimizer = make_optimizer(params["optimizer"], model, params["lr"], params["weight_decay"])
    batch = int(params["batch_size"])
    scheduler, interval = make_scheduler(
        settings.schedule, optimizer, lr=params["lr"], epochs=settings.epochs,
        steps_per_epoch=-(-len(x) // batch),
    )  # fmt: skip
    with warnings.catch_warnings():  # a diverging trial is scored, not warned about
        warnings.filterwarnings("ignore", message="non-finite ", category=RuntimeWarning)
        history = fit(
            model, CrossEntropyLoss(label_smoothing=settings.label_smoothing), optimizer,
            (x, y), data.val, epochs=settings.epochs, batch_size=batch, rng=rng,
            scheduler=scheduler, scheduler_interval=interval, callbacks=callbacks,
            eval_batch_size=2000, verbose=0,
        )  # fmt: skip
    return model, history


def train_command(params: dict[str, Any], settings: Settings, data_dir: Path | None) -> list[str]:
    """The ``handgrad train`` command that trains the same model as a trial, bit for bit."""
    argv = ["handgrad", "train", "--hidden", str(params["hidden"])]
    argv += ["--optimizer", params["optimizer"], "--lr", repr(float(params["lr"]))]
    argv += ["--batch-size", str(params["batch_size"]), "--epochs", str(settings.epochs)]
    if params["weight_decay"]:
        argv += ["--weight-decay", repr(float(params["weight_decay"]))]
    defaults = Settings()
    for name in ("schedule", "label_smoothing", "val_fraction", "seed"):
        if getattr(settings, name) != getattr(defaults, name):
            argv += ["--" + name.replace("_", "-"), str(getattr(settings, name))]
    return argv + (["--data-dir", str(data_dir)] if data_dir is not None else [])


class _Interrupt(Callback):
    """SIGINT or SIGTERM in a worker: the trial under way stops after its current step and
    is marked failed, and the worker stops (as ``handgrad train`` pauses at the end of a
    step). A second SIGINT stops at once; a second SIGTERM (the parent passing on a Ctrl-C
    that reached the whole process group already) is ignored."""

    signum: int | None = None  # the signal received, in this process

    @classmethod
    def handle(cls, signum: int, frame: Any) -> None:
        import signal

        if cls.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        cls.signum = signum

    @classmethod
    def install(cls) -> dict[int, Any]:
        """Handle both signals here; return the handlers before, to restore."""
        import signal

        cls.signum = None
        return {sig: signal.signal(sig, cls.handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    @classmethod
    def check(cls) -> None:
        if cls.signum is not None:
            raise KeyboardInterrupt

    def on_train_batch_end(self, batch: int, logs: dict[str, float]) -> None:
        if self.signum is not None:
            self.trainer.request_stop("interrupted", immediately=True)


def stop_signal() -> int | None:
    """The signal (SIGINT, SIGTERM) that stopped this process's last sweep, or None."""
    return _Interrupt.signum


def run_worker(job: Job, data: SweepData | None = None) -> int:
    """Run trials until the study holds ``job.trials``; return how many this worker ran.
    An interrupted or failed trial is marked failed (it does not count) before the
    exception goes on."""
    from handgrad._blas import set_blas_threads

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    set_blas_threads(1)  # one thread a trial: workers, not threads, use the cores
    if data is None:
        data = SweepData.load(job.data_dir, job.settings)
    study = load_study(job)
    ran = 0
    while True:
        trial = None
        try:
            with trial_lock(job):
                _Interrupt.check()
                if trials_taken(study) >= job.trials:
                    return ran
                trial = study.ask()
            _run_trial(job, study, trial, data)
        except BaseException:
            if trial is not None:
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        ran += 1


def _run_trial(job: Job, study: optuna.Study, trial: optuna.Trial, data: SweepData) -> None:
    from handgrad.nn.losses import CrossEntropyLoss
    from handgrad.serialization import save
    from handgrad.train import evaluate

    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    start = time.perf_counter()
    params = job.space.suggest(trial)
    pruning = ReportToTrial(trial)
    model, history = train_trial(params, job.settings, data, [pruning, _Interrupt()])
    _Interrupt.check()  # the trial stopped for it: failed, by the caller
    seconds = time.perf_counter() - start
    trial.set_user_attr("seconds", round(seconds, 2))
    trial.set_user_attr("epochs", history.epochs)
    shown = "  ".join(f"{LABELS.get(n, n)} {show(n, params[n])}" for n in job.space.searched())
    head = f"trial {trial.number:>3}"
    if pruning.pruned_at is not None:
        study.tell(trial, state=TrialState.PRUNED)
        if not job.quiet:
            val = history["val_accuracy"][-1]
            when = f"pruned after epoch {pruning.pruned_at}"
            print(f"{head}  {when}: val {val:.2%}  {shown}  {seconds:.1f} s", flush=True)
        return
    diverged = bool(history.stop_reason) and history.stop_reason.startswith("non-finite")
    if diverged:  # scored on the weights fit restored: those its last epoch began with
        trial.set_user_attr("note", "diverged")
        value = evaluate(model, CrossEntropyLoss(), *data.val)["accuracy"]
    else:
        value = history["val_accuracy"][-1]
    if job.models_dir is not None:
        # only a trial best so far is kept: the best one is among those
        best = ranked(study)[:1]
        if not best or value > float(best[0].value or 0.0):
            save(model, job.models_dir / f"trial-{trial.number}.npz")
    study.tell(trial, value)
    if not job.quiet:
        note = "  (diverged)" if diverged else ""
        print(f"{head}  val {value:.2%}  {shown}  {seconds:.1f} s{note}", flush=True)


def best_model(job: Job, data: SweepData, study: optuna.Study) -> tuple[Any, FrozenTrial, bool]:
    """``(model, trial, retrained)`` of the best complete trial: the model its worker saved
    in ``job.models_dir``, else trained again from its parameters (it ran on another
    machine, or in an earlier run of the command). Raises ValueError if none completed."""
    from handgrad._blas import set_blas_threads
    from handgrad.serialization import load

    trials = ranked(study)
    if not trials:
        raise ValueError("no trial completed")
    trial = trials[0]
    saved = None if job.models_dir is None else job.models_dir / f"trial-{trial.number}.npz"
    if saved is not None and saved.exists():
        return load(saved), trial, False
    set_blas_threads(1)  # as the trial ran
    model, _ = train_trial(job.space.fixed() | trial.params, job.settings, data)
    return model, trial, True


def _restore(handlers: dict[int, Any]) -> None:
    import signal

    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def _worker_process(job: Job) -> None:
    _Interrupt.install()
    try:
        run_worker(job)
    except KeyboardInterrupt:
        sys.exit(130)


def run_sweep(job: Job, data: SweepData, n_jobs: int = 1) -> optuna.Study:
    """Run the sweep in ``n_jobs`` processes of this machine (this one and ``n_jobs - 1``
    started), each trial on one BLAS thread; return the study when the budget is spent.

    Ctrl-C or SIGTERM stops every process at the end of its current step: each marks its
    trial failed (not counted), and a KeyboardInterrupt reaches the caller; the same call
    later continues the study."""
    import multiprocessing
    import signal
    import threading

    study = open_study(job, data.fingerprint)
    fail_orphans(study)
    # no more processes than trials left to run: each would load the data for nothing
    n_jobs = max(1, min(n_jobs, job.trials - trials_taken(study)))
    # Processes, not threads: a training step spends much of its time in NumPy code that
    # holds the GIL. Two 784-256-10 trials (2 MNIST epochs, BLAS on one thread) on the
    # 2-core machine took 2.6-2.9 s each one after the other, 4.1-5.1 s each as two
    # threads of one process, 2.3-3.9 s each as two processes (three runs each).
    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=_worker_process, args=(job,)) for _ in range(n_jobs - 1)]
    main = threading.current_thread() is threading.main_thread()
    handlers = _Interrupt.install() if main else {}
    try:
        for child in children:
            child.start()
        run_worker(job, data)
        while any(child.is_alive() for child in children):
            _Interrupt.check()  # a signal to this process alone: pass it on
            time.sleep(0.1)
    except KeyboardInterrupt:
        for child in children:  # each fails its trial, then stops
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.terminate()
        raise
    finally:
        _restore(handlers)
    failed = [c.exitcode for c in children if c.exitcode != 0]
    if failed:
        raise RuntimeError(
            f"{len(failed)} worker process(es) failed (exit codes {failed}); see above"
        )
    return load_study(job)
