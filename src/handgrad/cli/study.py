"""``handgrad study``: the course's experiments, each one command that prints its
table, writes its figures and a Markdown report, and gives the same numbers for
the same seed."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from handgrad._argtypes import non_negative_int, output_dir_problem, positive_int
from handgrad.cli._common import CommandError

STUDY_EPILOG = """\
examples:
  handgrad study --list                 # every study, what it shows, how long it takes
  handgrad study single-neuron          # prints the table, writes study-single-neuron/
  handgrad study baselines --quick      # a reduced run, seconds instead of minutes
  handgrad study optimizers --out runs/opt --seed 1

Each study writes its figures (PNG) and report.md, with its table and the command
that made it, into --out. The same seed gives the same table, bit for bit, at the
same thread count. The figures need matplotlib: pip install "handgrad[plots]".
"""


def add_study_parser(sub: Any) -> None:
    """Register ``handgrad study`` on the command line's subparsers."""
    p = sub.add_parser(
        "study",
        help="run one of the course's experiments: a table, figures and a report",
        description="Run one of the course's experiments (baselines, sanity checks, "
        "activations, initialisation, optimizers, learning rates, ...): it prints its "
        "table and writes its figures and a Markdown report.",
        epilog=STUDY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="the study to run (see --list)")
    p.add_argument("--list", action="store_true", help="list the studies and exit")
    p.add_argument("--quick", action="store_true", help="a reduced run that takes seconds")
    p.add_argument("--out", type=Path, help="folder for figures and report.md (study-NAME)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="threads for NumPy's matrix products (default 1, unless OPENBLAS_NUM_THREADS or "
        "OMP_NUM_THREADS is set: these small networks gain little from a second thread, and "
        "lose much when another program is busy); the same seed gives the same table at the "
        "same thread count",
    )
    p.set_defaults(func=cmd_study)


def _listing() -> str:
    from handgrad.studies import STUDIES

    width = max(len(s.name) for s in STUDIES)
    lines = [f"{'study':<{width}}  {'full':>7}  {'--quick':>7}  what it shows"]
    lines += [
        f"{s.name:<{width}}  {s.full_time:>7}  {s.quick_time:>7}  {s.summary}" for s in STUDIES
    ]
    return "\n".join(lines)


def _foreign_report_problem(out: Path) -> str | None:
    """Why ``out/report.md`` must not be overwritten: it exists and is not a report of
    ``handgrad study`` (a user's own notes in ``--out .``, say), or None."""
    path = out / "report.md"
    if not path.exists():
        return None
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            head = [fh.readline() for _ in range(3)]
    except OSError:
        head = []
    if head and head[0].startswith("# ") and head[2].startswith("`handgrad study "):
        return None  # an earlier study's report: replaced, as the same command gives
    return f"{path} exists and is not a report of handgrad study; not overwriting it"


def cmd_study(args: argparse.Namespace) -> int:
    from handgrad.studies import INSTALL, Context, find, missing_packages, run_study, write_report

    if args.list:
        print(_listing())
        return 0
    if args.name is None:
        raise CommandError("which study? give its NAME, or --list to see them")
    try:
        study = find(args.name)
    except KeyError as exc:
        raise CommandError(exc.args[0]) from None
    missing = missing_packages(study)
    if missing:
        hints = "; ".join(f"{m}: {INSTALL.get(m, f'pip install {m}')}" for m in missing)
        raise CommandError(
            f"study {study.name} needs {', '.join(missing)}, not installed ({hints})"
        )
    out = args.out if args.out is not None else Path(f"study-{study.name}")
    problem = output_dir_problem(out) or _foreign_report_problem(out)
    if problem:
        raise CommandError(f"--out {out}: {problem}")

    command = ["handgrad", "study", study.name]
    command += ["--quick"] * args.quick + (["--seed", str(args.seed)] if args.seed else [])
    command += ["--threads", str(args.threads)] if args.threads else []
    report = run_study(study.name, Context(seed=args.seed, quick=args.quick, out=out))
    print(report.text(), end="")
    path = write_report(report, out, shlex.join(command))
    figures = ", ".join(p.name for p in report.figures)
    print(f"wrote {path}" + (f" and {figures}" if figures else "") + f" ({report.seconds:.1f} s)")
    return 0
