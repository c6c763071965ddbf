"""``handgrad sweep``: search hyper-parameters with Optuna, print the best trials, save the
best model."""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from handgrad._argtypes import fraction, non_negative_int, positive_int
from handgrad.cli._common import CommandError, check_output_file, check_outputs

SWEEP_EPILOG = """\
examples:
  handgrad sweep --trials 20                    # the default search space, 5 epochs a trial
  handgrad sweep --trials 40 --n-jobs 2 --plots sweep-plots/
  handgrad sweep --lr 1e-3:3e-2 --optimizer adam --hidden 128 256,128 --epochs 10
  handgrad sweep --space space.toml --study-name wide --trials 50

several machines, one study (each runs the same command; --trials is the study's total):
  handgrad sweep --storage postgresql://user:password@db-host/sweeps --study-name mnist \\
      --trials 200 --n-jobs 4

A search-space value is a range LOW:HIGH (searched on a log scale), choices A,B,C or
one fixed value; --hidden takes one or more architectures, each comma-separated sizes.
A --space file (JSON or TOML) gives the same keys (lr, batch_size, hidden, optimizer,
weight_decay); options given on the command line replace its entries.

The study is kept in --storage: running the same command again continues it up to
--trials, and a study refuses a command with another search space, settings or data.
"""


def _spec(name: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        from handgrad.sweep_space import SweepError, parse_spec

        try:
            return parse_spec(name, text)
        except SweepError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{name}: ")) from None

    parse.__name__ = "value"
    return parse


def _study_name(text: str) -> str:
    """A study name that can also name the best model's file (``NAME-best.npz``)."""
    if not text.strip() or text.startswith("-") or "/" in text or "\0" in text:
        raise argparse.ArgumentTypeError(
            f"expected a name such as mnist-sweep (not empty, no '/', not starting with '-'), "
            f"got {text!r}"
        )
    return text


def add_sweep_parser(sub: Any) -> None:
    """Register ``handgrad sweep`` on the command line's subparsers."""
    p = sub.add_parser(
        "sweep",
        help="search hyper-parameters with Optuna: the best trials, figures, the best model",
        description="Search the learning rate, batch size, hidden sizes, optimizer and weight "
        "decay of the MLP with Optuna (TPE sampler, median pruning): train one model per "
        "trial, score it by validation accuracy, print the best trials, save the best model.",
        epilog=SWEEP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("search space (a range LOW:HIGH, choices A,B,C, or one value)")
    g.add_argument("--lr", type=_spec("lr"), metavar="SPEC", help="default: 1e-4:1e-1")
    g.add_argument(
        "--batch-size", type=_spec("batch_size"), metavar="SPEC", help="default: 64,128,256"
    )
    g.add_argument(
        "--hidden",
        type=_spec("hidden"),
        nargs="+",
        metavar="SIZES",
        help="architectures to choose from, each comma-separated hidden sizes "
        "(default: 128 256 512 256,128)",
    )
    g.add_argument(
        "--optimizer", type=_spec("optimizer"), metavar="NAMES", help="default: adam,adamw,sgd"
    )
    g.add_argument(
        "--weight-decay",
        type=_spec("weight_decay"),
        metavar="SPEC",
        help="default: 0,1e-5,1e-4,1e-3 (a range is searched on a log scale, so above 0)",
    )
    g.add_argument(
        "--space",
        type=Path,
        metavar="FILE",
        help="a JSON or TOML file with the search space; the options above replace its entries",
    )
    g = p.add_argument_group("the sweep")
    g.add_argument(
        "--trials",
        type=positive_int,
        default=20,
        help="trials in the study, counted over all its processes and machines (default: 20)",
    )
    g.add_argument(
        "--n-jobs",
        type=positive_int,
        default=1,
        metavar="N",
        help="worker processes on this machine, each trial on one BLAS thread (default: 1)",
    )
    g.add_argument(
        "--storage",
        default="handgrad-sweep.journal",
        metavar="PATH|URL",
        help="where the study lives: a journal file (default: handgrad-sweep.journal) or a "
        "database URL that several machines share (postgresql://..., mysql+pymysql://..., "
        "sqlite:///sweep.db)",
    )
    g.add_argument(
        "--study-name",
        type=_study_name,
        default="handgrad-sweep",
        metavar="NAME",
        help="the study to create, or to continue if the storage has it (default: handgrad-sweep)",
    )
    g.add_argument(
        "--no-prune",
        action="store_true",
        help="train every trial for all its epochs (default: a third of the way through, stop "
        "a trial whose validation accuracy is below the median of the completed trials' at "
        "that epoch, once 5 have completed)",
    )
    g.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the sampler, the validation split and every trial's training (default: 0)",
    )
    g = p.add_argument_group("training, the same for every trial")
    g.add_argument(
        "--epochs", type=positive_int, default=5, help="epochs of each trial (default: 5)"
    )
    from handgrad.recipes import SCHEDULES

    g.add_argument(
        "--schedule", choices=list(SCHEDULES), default="onecycle", help="default: onecycle"
    )
    g.add_argument("--label-smoothing", type=fraction, default=0.1, help="default: 0.1 (0 = none)")
    g.add_argument(
        "--val-fraction",
        type=fraction,
        default=0.1,
        help="share of the training data held out to score the trials (default: 0.1)",
    )
    g.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory with the four MNIST-format files (default: the shipped MNIST)",
    )
    g.add_argument("--download", action="store_true", help="download MNIST if it is not found")
    g = p.add_argument_group("output")
    g.add_argument(
        "--output",
        "-o",
        type=Path,
        default=None,
        help="where to save the best trial's model (default: STUDY-NAME-best.npz)",
    )
    g.add_argument("--no-save", action="store_true", help="do not save the best model")
    g.add_argument(
        "--plots",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the optimisation history, parameter importance and every trial's "
        "validation curve as PNGs into DIR (default: no plots)",
    )
    g.add_argument("--top", type=positive_int, default=10, help="trials in the table (default: 10)")
    g.add_argument("--quiet", "-q", action="store_true", help="no line per trial")
    # Not an option: every trial runs on one BLAS thread (main() sets it, and restores it).
    p.set_defaults(func=cmd_sweep, threads=1)


def _space(args: argparse.Namespace) -> Any:
    from handgrad.sweep_space import SearchSpace, SweepError, load_space

    specs: dict[str, Any] = {}
    if args.space is not None:
        try:
            specs = load_space(args.space)
        except SweepError as exc:
            raise CommandError(str(exc)) from None
    if args.hidden is not None:  # one Choice per architecture given: merge them
        from handgrad.sweep_space import Choice

        args.hidden = Choice(tuple(dict.fromkeys(v for c in args.hidden for v in c.values)))
    for name in ("lr", "batch_size", "hidden", "optimizer", "weight_decay"):
        if getattr(args, name) is not None:
            specs[name] = getattr(args, name)
    return SearchSpace(**specs)


def _check_outputs(args: argparse.Namespace) -> None:
    if args.output is None:
        args.output = Path(f"{args.study_name}-best.npz")
    check_outputs(args)  # --output and --plots, as handgrad train checks them
    if "://" not in args.storage:
        check_output_file(Path(args.storage), "--storage", "handgrad-sweep.journal")


def cmd_sweep(args: argparse.Namespace) -> int:
    space = _space(args)
    _check_outputs(args)
    from handgrad import sweep  # needs optuna: an ImportError with the install hint

    try:
        settings = sweep.Settings(
            epochs=args.epochs,
            schedule=args.schedule,
            label_smoothing=args.label_smoothing,
            val_fraction=args.val_fraction,
            seed=args.seed,
        )
        start = time.perf_counter()
        data = sweep.SweepData.load(args.data_dir, settings, download=args.download)
        with tempfile.TemporaryDirectory(prefix="handgrad-sweep-") as models:
            job = sweep.Job(
                storage=args.storage,
                study_name=args.study_name,
                trials=args.trials,
                space=space,
                settings=settings,
                data_dir=args.data_dir,
                prune=not args.no_prune,
                models_dir=Path(models),
                quiet=args.quiet,
            )
            return _run(args, sweep, job, data, start)
    except sweep.SweepError as exc:
        raise CommandError(str(exc)) from None


def _run(args: argparse.Namespace, sweep: Any, job: Any, data: Any, start: float) -> int:
    from handgrad.sweep_report import counts, table

    study = sweep.open_study(job, data.fingerprint)
    where = f"study {job.study_name!r} in {sweep.storage_label(job.storage)}"
    taken = sweep.trials_taken(study)
    args.n_jobs = max(1, min(args.n_jobs, job.trials - taken))  # as run_sweep will
    processes = f"{args.n_jobs} process{'es' if args.n_jobs > 1 else ''}"
    print(
        f"{where}: {taken} of {job.trials} trials so far; {processes} on this machine\n"
        f"search: {job.space.describe()}\n"
        f"each trial: {job.settings.epochs} epochs on {len(data.train[0]):,} images, "
        f"{job.settings.schedule} schedule, scored by accuracy on {len(data.val[0]):,} "
        "held-out images",
        flush=True,
    )
    try:
        study = sweep.run_sweep(job, data, n_jobs=args.n_jobs)
    except KeyboardInterrupt:
        done = sweep.trials_taken(sweep.load_study(job))
        print(
            f"handgrad sweep: interrupted: {done} of {job.trials} trials done in {where} (the "
            "interrupted ones are marked failed); the same command continues the study",
            file=sys.stderr,
        )
        return 128 + (sweep.stop_signal() or 2)  # 130 for Ctrl-C, 143 for SIGTERM
    print(f"\n{counts(study)}; this command ran {time.perf_counter() - start:.0f} s")
    if not sweep.ranked(study):
        print("handgrad sweep: no trial completed: no model to save", file=sys.stderr)
        return 1
    print(table(study, job.space, top=args.top))
    model, best, retrained = sweep.best_model(job, data, study)
    _report_best(args, sweep, job, data, model, best, retrained)
    if args.plots is not None:
        _plots(args.plots, study)
    return 0


def _report_best(
    args: argparse.Namespace, sweep: Any, job: Any, data: Any, model: Any, best: Any, again: bool
) -> None:
    import numpy as np

    from handgrad.serialization import save
    from handgrad.train import predict

    params = job.space.fixed() | best.params
    x_test, y_test = data.test
    test_acc = float(np.mean(predict(model, x_test) == y_test))
    where = (
        "trained again from its parameters: it ran on another machine or in an earlier run"
        if again
        else "its model kept from the sweep"
    )
    print(
        f"\nbest: trial {best.number}, val accuracy {best.value:.2%}, test accuracy "
        f"{test_acc:.2%} on {len(y_test):,} images ({where})"
    )
    if again:
        val = float(np.mean(predict(model, data.val[0]) == data.val[1]))
        if val != best.value:
            print(
                f"handgrad sweep: warning: trained again, trial {best.number} scores "
                f"{val:.2%} on validation, not its {best.value:.2%} (another machine or BLAS "
                "build adds in another order)",
                file=sys.stderr,
            )
    print(f"the same model: {shlex.join(sweep.train_command(params, job.settings, args.data_dir))}")
    if args.no_save:
        return
    metadata = {
        "sweep": {"study": job.study_name, "storage": sweep.storage_label(job.storage)},
        "trial": best.number,
        "params": params,
        "val_accuracy": best.value,
        "test_accuracy": test_acc,
        "command": [sweep.storage_label(a) for a in sys.argv[1:]],  # no password
    }
    save(model, args.output, metadata=metadata)
    print(f"saved {args.output}")


def _plots(directory: Path, study: Any) -> None:
    from handgrad.sweep_report import plot_curves, plot_history, plot_importance

    paths = [
        plot_history(study, directory / "optimization_history.png"),
        plot_curves(study, directory / "val_curves.png"),
    ]
    try:
        paths.append(plot_importance(study, directory / "param_importances.png"))
    except (ValueError, RuntimeError, ImportError) as exc:  # too few trials, one value...
        print(f"no parameter-importance plot: {exc}", file=sys.stderr)
    for path in paths:
        print(f"plot: {path}")
