"""Where a sweep lives: its Optuna storage and study, the sampler and pruner, and the
count of trials that every worker, on any machine, keeps to.

A storage is a journal file (one machine, any number of processes, no server) or a
database URL that several machines share. A study remembers the search space,
settings and data it was made with, and refuses a worker that brings others.
``trials`` counts the study's trials across all its workers: a worker takes the count
and asks for a new trial under a file lock, so the processes of one machine together
run exactly ``trials``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    import optuna
    from optuna.trial import FrozenTrial, TrialState
except ImportError as _exc:  # pragma: no cover - depends on the environment
    from handgrad._install import install_hint

    raise ImportError(f"handgrad sweep needs optuna: {install_hint('sweep')}") from _exc

from handgrad.sweep_space import SearchSpace, Settings, SweepError

__all__ = [
    "Job",
    "fail_orphans",
    "load_study",
    "open_storage",
    "open_study",
    "prune_epoch",
    "ranked",
    "storage_label",
    "trial_lock",
    "trials_taken",
]

_ATTR = "handgrad_sweep"  # the study's user attribute holding what it was made with
# Trials that use up the budget: finished or under way. Failed ones (interrupted,
# crashed) do not, so the same command run again completes the study.
_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def storage_label(spec: str) -> str:
    """``spec`` fit to print: a database URL's password hidden."""
    if "://" not in spec:
        return spec
    try:
        from sqlalchemy.engine import make_url

        return make_url(spec).render_as_string(hide_password=True)
    except Exception:
        return spec.split("@")[-1]


# The pip packages of SQLAlchemy's database drivers, by module name.
_DRIVERS = {
    "psycopg": "psycopg[binary]",  # postgresql:// in SQLAlchemy 2.1, postgresql+psycopg://
    "psycopg2": "psycopg2-binary",  # postgresql:// before 2.1, postgresql+psycopg2://
    "pymysql": "pymysql",  # mysql+pymysql://
    "MySQLdb": "mysqlclient",  # mysql://
}


def _check_journal(spec: str) -> None:
    """Refuse an existing file that is not a journal (optuna would fail on it later,
    at whichever call first reads it), naming the file and the line."""
    path = Path(spec)
    if not path.is_file() or path.stat().st_size == 0:
        return
    line_no = 0
    try:
        with path.open("rb") as f:
            for line in f:
                line_no += 1  # named in the error below
                if line.strip():
                    record = json.loads(line)
                    if not isinstance(record, dict) or "op_code" not in record:
                        raise ValueError("a record without an op_code")
    except (ValueError, UnicodeDecodeError) as exc:
        detail = " ".join(str(exc).split())[:100]
        raise SweepError(
            f"--storage {spec}, line {line_no}: not a sweep journal ({detail}); give a new "
            "file name, or the journal an earlier sweep wrote"
        ) from None


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """A journal file for a path, a database for a URL (``sqlite:///sweep.db``,
    ``postgresql://user:password@host/db``, ``mysql+pymysql://...``)."""
    if "://" not in spec:
        _check_journal(spec)
        try:
            from optuna.storages.journal import JournalFileBackend
        except ImportError:  # optuna < 4.0
            from optuna.storages import JournalFileStorage as JournalFileBackend

        with warnings.catch_warnings():  # experimental in optuna 3
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return optuna.storages.JournalStorage(JournalFileBackend(spec))
            except OSError as exc:
                raise SweepError(
                    f"--storage {spec}: cannot open it: {exc.strerror or exc}"
                ) from None
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
                # optuna replays the file's records: anything else is not a journal
                detail = " ".join(str(exc).split())[:120] or type(exc).__name__
                raise SweepError(
                    f"--storage {spec}: not a sweep journal ({type(exc).__name__}: {detail}); "
                    "give a new file name, or the journal an earlier sweep wrote"
                ) from None
    engine: dict[str, Any] = {}
    if spec.startswith(("postgresql", "mysql")):  # an unreachable server fails in seconds
        engine["connect_args"] = {"connect_timeout": 10}
    try:
        return optuna.storages.RDBStorage(spec, engine_kwargs=engine)
    except Exception as exc:  # a driver missing, a server down, a bad URL: one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        missing = getattr(exc.__cause__, "name", None)  # SQLAlchemy's driver, not installed
        if isinstance(exc, ImportError) and missing:
            package = _DRIVERS.get(missing, missing)
            reason = f"its driver, {missing}, is not installed (pip install {shlex.quote(package)})"
        raise SweepError(f"--storage {storage_label(spec)}: cannot open it: {reason}") from None


@dataclass(frozen=True)
class Job:
    """One sweep as each of its worker processes runs it."""

    storage: str
    study_name: str
    trials: int
    space: SearchSpace = field(default_factory=SearchSpace)
    settings: Settings = field(default_factory=Settings)
    data_dir: Path | None = None
    prune: bool = True
    models_dir: Path | None = None  # where a trial best so far saves its model
    quiet: bool = False

    def identity(self, fingerprint: str) -> dict[str, Any]:
        """What the study is made with; a worker with another refuses to join it."""
        made = {
            "space": self.space.to_dict(),
            "settings": asdict(self.settings),
            "data": fingerprint,
        }
        return dict(json.loads(json.dumps(made)))


def _tpe(seed: int) -> optuna.samplers.TPESampler:
    """TPE that counts the trials under way as bad ones, so that parallel workers do not
    all try the same region."""
    with warnings.catch_warnings():  # experimental in optuna 3
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


class _TrialSeededTPE(optuna.samplers.BaseSampler):
    """TPE whose draws for trial ``n`` come from ``(seed, n)``: workers started with the same
    seed (several machines, one command) do not suggest the same values, and one worker
    alone suggests the same trials on every run."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._tpe = _tpe(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        seed = int(np.random.SeedSequence([self.seed, trial.number]).generate_state(1)[0])
        self._tpe = _tpe(seed)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> Any:
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, space: Any) -> Any:
        return self._tpe.sample_relative(study, trial, space)

    def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
        return self._tpe.sample_independent(study, trial, name, dist)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._tpe.after_trial(study, trial, state, values)


def prune_epoch(epochs: int) -> int | None:
    """The epoch after which the pruner judges a trial: a third of the way through, once the
    one-cycle schedule's warm-up is over (None for a single epoch: nothing to save)."""
    at = max(1, math.ceil(epochs / 3))
    return at if at < epochs else None


def load_study(job: Job) -> optuna.Study:
    """The study, with this sweep's sampler and pruner. The pruner judges each trial once,
    after :func:`prune_epoch`: below the median of the completed trials at that epoch, it
    stops (once five have completed). Judging at every epoch would stop, late in training,
    trials that trail the median by a few images, after most of their cost is spent."""
    at = prune_epoch(job.settings.epochs) if job.prune else None
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if at is not None:
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=5, n_warmup_steps=at, interval_steps=job.settings.epochs
        )
    return optuna.load_study(
        study_name=job.study_name,
        storage=open_storage(job.storage),
        sampler=_TrialSeededTPE(job.settings.seed),
        pruner=pruner,
    )


def open_study(job: Job, fingerprint: str) -> optuna.Study:
    """Create the study, or join it if it exists and was made with the same search space,
    settings and data; anything else is a :class:`SweepError`."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    wanted = job.identity(fingerprint)
    storage = open_storage(job.storage)
    try:
        study = optuna.create_study(
            study_name=job.study_name, storage=storage, direction="maximize"
        )
        study.set_user_attr(_ATTR, wanted)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=job.study_name, storage=storage)
    where = f"study {job.study_name!r} in {storage_label(job.storage)}"
    for _ in range(100):  # another machine may have created it a moment ago
        made = study.user_attrs.get(_ATTR)
        if made is not None:
            break
        time.sleep(0.1)
    else:
        raise SweepError(f"{where} was not made by handgrad sweep; choose another --study-name")
    differ = [key for key in ("space", "settings", "data") if made.get(key) != wanted[key]]
    if differ:
        raise SweepError(
            f"{where} was made with another {' and another '.join(differ)} (settings "
            f"{made.get('settings')}); a study keeps what it was made with: give another "
            "--study-name to start a new sweep"
        )
    return load_study(job)


def trials_taken(study: optuna.Study) -> int:
    """Trials finished or under way: what ``trials`` counts."""
    return len(study.get_trials(deepcopy=False, states=_COUNTED))


@contextmanager
def trial_lock(job: Job) -> Iterator[None]:
    """Held while a worker counts the trials and asks for one: the processes of this
    machine never start more than ``trials``. (Machines do not share it: each of several
    that reach the last trial at the same moment may start one.)"""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock between processes
        yield
        return
    import tempfile

    if "://" not in job.storage:  # the journal file itself (optuna locks it its own way)
        path = Path(job.storage)
    else:  # one small file per database study, in the temporary directory
        key = hashlib.sha1(f"{job.storage}\0{job.study_name}".encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"handgrad-sweep-{key}.lock"
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """The study's complete trials, best first (the earlier trial first on a tie)."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: (-float(t.value or 0.0), t.number))


def fail_orphans(study: optuna.Study) -> int:
    """Mark failed the trials left running by a process of this machine that is gone
    (killed outright: it could not say so), so that they stop counting; return how many."""
    host, failed = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        where, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if where != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            study.tell(t.number, state=TrialState.FAIL)
            failed += 1
        except PermissionError:  # alive, another user's
            pass
    return failed
