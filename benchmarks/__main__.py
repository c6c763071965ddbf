"""Every benchmark of the project in one command: Markdown, JSON and figures.

    python -m benchmarks                      # every suite, 1 and 2 threads (about 30 min)
    python -m benchmarks --baseline ../old    # and an older checkout beside this one
    python -m benchmarks --suites mlp,threads # some of them
    python -m benchmarks --quick --out DIR    # a tiny run in seconds (the tests use it)

Run from the repository's root. Each suite is one of the scripts beside this file,
run as a process of its own with the same arguments a reader would type (the
tables say which): ``bench_mlp.py`` (the MLP against PyTorch, scikit-learn and
the GEMM floor: Adam and SGD, float32 and float64, epoch times with the achieved
GFLOP/s against the floor's, peak memory, inference at batch 10,000, time to 97%
test accuracy), ``bench_cnn.py`` (LeNet against PyTorch and its GEMM floor, and
inference), ``bench_threads.py`` (1 against 2 threads, idle and with a busy
core), ``bench_train.py`` (``handgrad train`` at its defaults: the whole command
and its time to 97% validation accuracy) and ``bench_lab.py`` (the lab's answer
class under the grader's full-set protocol). ``--baseline DIR`` runs the code of
another checkout beside this one's in the mlp, train and lab suites, as "handgrad
before": before/after lines from one run. Within a suite the contenders
alternate, epoch by epoch, each in a process of its own; every table gives the
median, the fastest and the slowest epoch, so the machine's noise shows instead
of hiding in one number.

Writes into ``--out`` (default ``docs/benchmarks``): ``README.md`` (every table
with its command, the hardware and the versions), ``results.json`` (the same
tables as data) and one bar chart of median epoch times per timing table (when
matplotlib is installed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ._bench import hardware, installed_versions

HERE = Path(__file__).resolve().parent
SUITES = ("mlp", "cnn", "threads", "train", "lab")


@dataclass
class Run:
    """One suite run: its command, what it printed around its tables, and the tables."""

    suite: str
    title: str
    argv: list[str]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    tables: list[dict[str, list]] = field(default_factory=list)

    @property
    def command(self) -> str:
        return " ".join(["python", f"benchmarks/{self.argv[0]}", *self.argv[1:], "--markdown"])


def _mlp_runs(threads: list[int], quick: bool) -> list[Run]:
    """Adam (batch 128) and SGD (batch 64), in float32 and float64, at each thread
    count; each with inference and a convergence run."""
    if quick:
        extra = ["--rounds", "1", "--train-size", "1024", "--convergence", "2", "--infer-reps", "3"]
    else:
        extra = ["--convergence", "10"]
    runs = []
    for dtype, t in [(dtype, t) for dtype in ("float32", "float64") for t in threads]:
        for optimizer, name in (("adam", "Adam"), ("sgd", "SGD")):
            argv = ["bench_mlp.py", "--optimizer", optimizer, "--threads", str(t)]
            argv += ["--dtype", dtype] if dtype != "float32" else []
            title = f"MLP, {name}, {dtype}, {t} thread{'s' * (t > 1)}"
            runs.append(Run("mlp", title, [*argv, *extra]))
    return runs


def _runs(
    suites: list[str], threads: list[int], quick: bool, baseline: str | None = None
) -> list[Run]:
    """The runs to make, in order, with the arguments each script takes."""
    runs = []
    rounds = ["--rounds", "1"] if quick else []
    before = ["--baseline", baseline] if baseline else []
    for suite in suites:
        if suite == "mlp":
            runs += [Run(r.suite, r.title, [*r.argv, *before]) for r in _mlp_runs(threads, quick)]
        elif suite == "train":
            quick_train = ["--rounds", "1", "--epochs", "1"] if quick else []
            runs.append(
                Run(
                    "train",
                    "handgrad train at its defaults",
                    ["bench_train.py", *quick_train, *before],
                )
            )
        elif suite == "lab":
            size = ["--train-size", "1024"] if quick else []
            answer = (
                str(Path(baseline) / "src" / "handgrad" / "lab" / "answer.py") if baseline else ""
            )
            lab_before = ["--baseline", answer] if baseline else []
            runs.append(
                Run("lab", "The lab's answer class", ["bench_lab.py", *rounds, *size, *lab_before])
            )
        elif suite == "cnn":
            size = ["--train-size", "256"] if quick else []
            for t in threads:
                argv = ["bench_cnn.py", *rounds, "--threads", str(t), *size]
                runs.append(Run("cnn", f"LeNet, {t} thread{'s' * (t > 1)}", argv))
        elif suite == "threads":
            size = ["--cnn-size", "256", "--train-size", "2048"] if quick else []
            base = ["bench_threads.py", *(rounds or ["--rounds", "7"]), *size]
            runs.append(Run("threads", "1 or 2 threads, idle", base))
            runs.append(Run("threads", "1 or 2 threads, one busy core", [*base, "--load"]))
    return runs


def _parse_output(run: Run, stdout: str) -> None:
    """The Markdown tables (runs of ``|`` lines) and the lines around them: every
    line in ``run.notes``, and in each table's ``caption`` the lines since the table
    before it (the run's heading lines stay with the run, not the first table)."""
    table: list[list[str]] = []
    caption: list[str] = []
    for line in [*stdout.splitlines(), ""]:
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if table:
            head, rows = table[0], [r for r in table[1:] if not set("".join(r)) <= set("-:")]
            run.tables.append(
                {"head": head, "rows": rows, "caption": caption if run.tables else []}
            )
            table, caption = [], []
        if line.strip():
            run.notes.append(line.rstrip())
            caption.append(line.rstrip())


def _execute(run: Run, timeout: float) -> None:
    env = {**os.environ, "HANDGRAD_BENCH_MARKDOWN_ONLY": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(HERE / run.argv[0]), *run.argv[1:], "--markdown"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    run.seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{run.command} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    _parse_output(run, proc.stdout)
    for line in proc.stderr.splitlines():  # a contender whose package is missing
        if line.startswith("skipping "):
            run.notes.append(line)


def _markdown(runs: list[Run], when: str, argv: list[str], machine: dict[str, str]) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Made on {when} by `{' '.join(['python -m benchmarks', *argv])}`, from the "
        "repository's root. Each table comes from the command above it; within a table "
        "the contenders alternate epoch by epoch, each in a process of its own. Read the "
        "ratios and the medians: the fastest and slowest columns show how noisy the "
        "machine was.",
        "",
        f"- Hardware: {machine['hardware']}",
        f"- Versions: {machine['versions']}",
        "",
    ]
    for run in runs:
        lines += [f"## {run.title}", "", f"`{run.command}` ({run.seconds:.0f} s)", ""]
        captions = {line for table in run.tables for line in table.get("caption", [])}
        lines += [f"    {note}" for note in run.notes if note not in captions] + [""]
        for table in run.tables:
            if table.get("caption"):
                lines += [f"    {line}" for line in table["caption"]] + [""]
            lines.append("| " + " | ".join(table["head"]) + " |")
            lines.append("| " + " | ".join(["---"] + ["---:"] * (len(table["head"]) - 1)) + " |")
            lines += ["| " + " | ".join(row) + " |" for row in table["rows"]]
            lines.append("")
    return "\n".join(lines)


def _seconds(cell: str) -> float | None:
    try:
        return float(cell.removesuffix(" s"))
    except ValueError:
        return None


def _figures(runs: list[Run], out: Path) -> list[Path]:
    """A bar chart of median epoch times for each table that has them."""
    try:
        from handgrad.plots import _pyplot
    except ImportError:
        return []
    try:
        plt = _pyplot()
    except ImportError:
        return []
    for old in out.glob("[0-9][0-9]-*.png"):  # a previous run's, numbered otherwise
        old.unlink()
    made = []
    for i, run in enumerate(runs):
        for table in run.tables:
            if "median epoch" not in table["head"]:
                continue
            col = table["head"].index("median epoch")
            pairs = [(r[0], _seconds(r[col])) for r in table["rows"]]
            pairs = [(name, s) for name, s in pairs if s is not None]
            fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(pairs)))
            ax.barh([p[0] for p in pairs][::-1], [p[1] for p in pairs][::-1], color="#4a7ab5")
            ax.set_xlabel("median epoch (s)")
            ax.set_title(run.title)
            fig.tight_layout()
            path = out / f"{i:02d}-{run.suite}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            made.append(path)
    return made


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--suites",
        default=",".join(SUITES),
        help=f"comma-separated, of {', '.join(SUITES)} (default: all)",
    )
    p.add_argument(
        "--baseline",
        metavar="DIR",
        help="another checkout of handgrad: its code runs beside this one's in mlp, train and lab",
    )
    p.add_argument("--threads", default="1,2", help="thread counts for mlp and cnn (default: 1,2)")
    p.add_argument("--quick", action="store_true", help="one round on a few images (a smoke test)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="output directory")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds a suite may take")
    args = p.parse_args(argv)
    suites = [s for s in args.suites.split(",") if s]
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        p.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    threads = [int(t) for t in args.threads.split(",") if t]
    if args.baseline and not (Path(args.baseline) / "src" / "handgrad").is_dir():
        p.error(f"--baseline {args.baseline}: not a checkout of handgrad (no src/handgrad)")
    if not args.out.parent.is_dir():
        p.error(f"--out {args.out}: the directory {args.out.parent} does not exist")
    args.out.mkdir(exist_ok=True)
    when = datetime.date.today().isoformat()
    runs = _runs(suites, threads, args.quick, args.baseline)
    for run in runs:
        print(f"== {run.title}: {run.command}", flush=True)
        _execute(run, args.timeout)
        for table in run.tables:
            print("  " + " | ".join(table["head"]))
            for row in table["rows"]:
                print("  " + " | ".join(row))
    given = sys.argv[1:] if argv is None else argv
    machine = {"hardware": hardware(), "versions": installed_versions("torch", "scikit-learn")}
    readme = _markdown(runs, when, given, machine)
    (args.out / "README.md").write_text(readme + "\n", encoding="utf-8")
    data = {"date": when, "argv": given, **machine}
    data["runs"] = [asdict(r) | {"command": r.command} for r in runs]
    (args.out / "results.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    figures = _figures(runs, args.out)
    written = f"{args.out / 'README.md'}, {args.out / 'results.json'}"
    print(f"wrote {written} and {len(figures)} figure(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
