"""The benchmark script runs and reports every contender it can import (a tiny run)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_mlp.py"


def test_bench_mlp_reports_each_contender() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "2", "--train-size", "1024", "--markdown"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if "|" in line}
    expected = {"handgrad", "GEMM floor"}
    for module, name in (("torch", "PyTorch"), ("sklearn", "scikit-learn")):
        if importlib.util.find_spec(module) is not None:
            expected.add(name)
        else:
            assert f"skipping {name}" in proc.stderr
    assert expected <= set(rows), proc.stdout
    assert "| handgrad | " in rows["handgrad"] and "1.00x" in rows["handgrad"]
    accuracy = float(rows["handgrad"].split("|")[7].strip().rstrip("%"))
    assert accuracy > 70  # two epochs on 1,024 images
