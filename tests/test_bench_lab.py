"""benchmarks/bench_lab.py times the lab's answer against a baseline file (a tiny run)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_lab.py"
BASELINE = ROOT / "tests" / "lab_files" / "correct_sgd.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _markdown_rows(stdout: str) -> tuple[list[str], dict[str, list[str]]]:
    """The head and the rows (keyed by their first cell) of the one Markdown table."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    head, rule, *rows = ([cell.strip() for cell in line.strip()[1:-1].split("|")] for line in lines)
    assert set(rule) <= {"---", "---:"}, rule
    return head, {row[0]: row[1:] for row in rows}


def test_bench_lab_times_the_answer_against_a_baseline() -> None:
    proc = _run("--train-size", "1024", "--rounds", "2", "--markdown", "--baseline", str(BASELINE))
    assert proc.returncode == 0, proc.stderr
    assert "batch 64, 1,024 images, 2 epochs each, 1 BLAS thread" in proc.stdout
    assert f"baseline: {BASELINE}" in proc.stdout
    assert re.search(r"^Hardware: .*, \d+ cores, ", proc.stdout, re.MULTILINE), proc.stdout
    head, rows = _markdown_rows(proc.stdout)
    assert head == [
        "contender",
        "median epoch",
        "fastest",
        "slowest",
        "all epochs",
        "vs answer",
        "test accuracy",
    ]
    assert list(rows) == ["answer", "baseline"]
    for name, (median, fastest, slowest, total, ratio, accuracy) in rows.items():
        times = [float(cell.removesuffix(" s")) for cell in (fastest, median, slowest)]
        assert all(re.fullmatch(r"\d+\.\d{3} s", c) for c in (median, fastest, slowest)), name
        assert 0 < times[0] <= times[1] <= times[2], (name, times)
        assert re.fullmatch(r"\d+\.\d\d s", total) and re.fullmatch(r"\d+\.\d\dx", ratio), name
        assert re.fullmatch(r"\d+\.\d\d%", accuracy), (name, accuracy)
    assert rows["answer"][4] == "1.00x"
    # two epochs on 1,024 images: Adam learns a good deal, SGD at lr 0.01 far less
    assert float(rows["answer"][5].rstrip("%")) > 75
    assert float(rows["baseline"][5].rstrip("%")) < float(rows["answer"][5].rstrip("%"))


def test_bench_lab_refuses_a_round_count_below_one() -> None:
    proc = _run("--rounds", "0")
    assert proc.returncode == 2
    assert "--rounds must be at least 1" in proc.stderr
