"""The benchmark scripts run and report every contender they can import (tiny runs)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "bench_mlp.py"
CNN_SCRIPT = BENCHMARKS / "bench_cnn.py"
MS = re.compile(r"^\d+\.\d\d$")  # a time in milliseconds, as the tables print it


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
    assert_hardware_line(proc.stdout)


def assert_hardware_line(stdout: str) -> None:
    """The CPU, its cores and NumPy's BLAS are printed with the timings."""
    line = next(line for line in stdout.splitlines() if line.startswith("Hardware: "))
    assert re.search(r", \d+ cores, ", line), line
    assert "BLAS unknown" not in line, line  # NumPy 2 names its BLAS


# -- bench_cnn.py ---------------------------------------------------------------------


def run_bench_cnn(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    """bench_cnn.py on one thread with Markdown tables, on the MNIST files in ``data``."""
    return subprocess.run(
        [sys.executable, str(CNN_SCRIPT), "--threads", "1", "--markdown", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**os.environ, "HANDGRAD_DATA": str(data)},
    )


def markdown_tables(text: str) -> list[tuple[list[str], dict[str, list[str]]]]:
    """Every Markdown table in ``text``: its head, and its rows keyed by the first cell."""
    tables: list[tuple[list[str], dict[str, list[str]]]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("| ") or (i > 0 and lines[i - 1].startswith("|")):
            continue
        block = []
        for row in lines[i:]:
            if not row.startswith("|"):
                break
            block.append([cell.strip() for cell in row.strip()[1:-1].split("|")])
        head, rule, *rows = block
        assert set(rule) <= {"---", "---:"}, block
        assert all(len(r) == len(head) for r in rows), block
        keyed = {r[0]: r[1:] for r in rows}
        assert len(keyed) == len(rows), f"repeated row names in {block}"
        tables.append((head, keyed))
    return tables


def test_bench_cnn_reports_each_contender_and_inference(small_mnist: Path) -> None:
    proc = run_bench_cnn("--rounds", "1", "--train-size", "256", data=small_mnist)
    (head, rows), (infer_head, infer_rows) = markdown_tables(proc.stdout)
    assert head == [
        "contender",
        "median epoch",
        "fastest",
        "slowest",
        "all epochs",
        "vs handgrad",
        "test accuracy",
    ]
    expected = {"handgrad", "GEMM floor"}
    if importlib.util.find_spec("torch") is not None:
        expected.add("PyTorch")
    else:
        assert "skipping PyTorch" in proc.stderr
    assert set(rows) == expected, proc.stdout
    assert rows["handgrad"][4] == "1.00x"
    assert_hardware_line(proc.stdout)
    for name, (median, fastest, slowest, total, ratio, accuracy) in rows.items():
        for cell in (median, fastest, slowest):
            assert re.fullmatch(r"\d+\.\d{3} s", cell), (name, cell)
        assert re.fullmatch(r"\d+\.\d\d s", total), (name, total)
        assert re.fullmatch(r"\d+\.\d\dx", ratio), (name, ratio)
        if name == "GEMM floor":
            assert accuracy == "-"  # no model, nothing to test
        else:
            assert 0 <= float(accuracy.rstrip("%")) <= 100, (name, accuracy)

    assert "Inference on the 500 test images in batches of 1000" in proc.stdout
    assert infer_head == ["contender", "throughput"]
    assert set(infer_rows) == expected - {"GEMM floor"}
    for name, (throughput,) in infer_rows.items():
        assert re.fullmatch(r"[\d,]+ images/s", throughput), (name, throughput)
        assert int(throughput.split()[0].replace(",", "")) > 0


def test_bench_cnn_profile_times_every_layer_in_the_order_it_runs(small_mnist: Path) -> None:
    proc = run_bench_cnn("--profile", "--batch-size", "16", "--train-size", "256", data=small_mnist)
    assert "LeNet training step, batch 16, 1 thread(s)" in proc.stdout
    (head, rows), (pieces_head, pieces) = markdown_tables(proc.stdout)
    assert head == ["layer", "ms (median of 20)"]
    # Sequential runs each Conv2d (+ ReLU) + MaxPool2d as one fused step; rows keep
    # the written indices
    forward = ["0+1+2 Conv2d+ReLU+MaxPool2d", "3+4+5 Conv2d+ReLU+MaxPool2d"]
    forward += ["6 Flatten", "7 Linear", "8 ReLU", "9 Linear"]
    assert list(rows) == [
        *(f"{layer} forward" for layer in forward),
        "loss forward+backward",
        *(f"{layer} backward" for layer in reversed(forward)),
        "Adam step",
        "whole step (sum)",
    ]
    times = {name: float(ms) for name, (ms,) in rows.items() if MS.fullmatch(ms)}
    assert len(times) == len(rows)
    whole = times.pop("whole step (sum)")
    assert whole > 0
    assert abs(sum(times.values()) - whole) <= 0.005 * len(times) + 1e-9  # rounding only

    assert "one chunk of 16 images, times 1 chunks" in proc.stdout
    assert pieces_head == ["piece", "ms per step (median of 15)"]
    parts = [
        "forward: im2col rows in pooling order",
        "forward: GEMM",
        "forward: max-pool (+ ReLU) of the slabs",
        "backward: gradient to each window's winner",
        "backward: weight-gradient GEMM",
    ]
    dx = "backward: input gradient (9 GEMMs + col2im adds)"
    assert list(pieces) == [
        *(f"Conv2d(1, 32) {p}" for p in parts),  # the first needs no input gradient
        *(f"Conv2d(32, 64) {p}" for p in [*parts, dx]),
    ]
    assert all(MS.fullmatch(ms) for (ms,) in pieces.values()), pieces


def test_bench_cnn_layouts_table(small_mnist: Path) -> None:
    proc = run_bench_cnn("--layouts", "--batch-size", "16", data=small_mnist)
    assert "Conv2d(32, 64, 3) on (16, 32, 13, 13): im2col + GEMM, one thread" in proc.stdout
    ((head, rows),) = markdown_tables(proc.stdout)
    assert head == ["layout", "ms (median of 15)"]
    assert list(rows) == [
        "NCHW memory, patch rows (C, KH, KW)",
        "NCHW memory, patch columns",
        "NHWC memory, patch rows (KH, KW, C)",
    ]
    assert all(MS.fullmatch(ms) and float(ms) > 0 for (ms,) in rows.values()), rows


def test_bench_cnn_chunks_table(small_mnist: Path) -> None:
    proc = run_bench_cnn("--chunks", "--batch-size", "16", "--train-size", "256", data=small_mnist)
    assert "LeNet training step, batch 16, 1 thread(s)" in proc.stdout
    ((head, rows),) = markdown_tables(proc.stdout)
    assert head == ["images per chunk", "ms per step (median of 30)"]
    assert list(rows) == ["8", "16", "32", "64", "128"]
    assert all(MS.fullmatch(ms) and float(ms) > 0 for (ms,) in rows.values()), rows


# -- python -m benchmarks: every suite, one command -----------------------------------


def test_the_benchmark_entry_point_writes_markdown_json_and_figures(tmp_path: Path) -> None:
    """``python -m benchmarks --quick`` (one round on a few images) runs the suites and
    writes what the full run writes into docs/benchmarks."""
    import json

    out = tmp_path / "bench"
    argv = ["--quick", "--suites", "mlp,threads", "--threads", "1", "--out", str(out)]
    subprocess.run(
        [sys.executable, "-m", "benchmarks", *argv],
        cwd=BENCHMARKS.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    data = json.loads((out / "results.json").read_text())
    runs = {run["title"]: run for run in data["runs"]}
    assert list(runs) == ["MLP, 1 thread", "1 or 2 threads, idle", "1 or 2 threads, one busy core"]
    mlp = runs["MLP, 1 thread"]
    assert mlp["command"] == (
        "python benchmarks/bench_mlp.py --rounds 1 --threads 1 --train-size 1024 --markdown"
    )
    head, rows = mlp["tables"][0]["head"], mlp["tables"][0]["rows"]
    assert head[:2] == ["contender", "median epoch"] and rows[0][0] == "handgrad"
    assert any(note.startswith("Hardware: ") for note in mlp["notes"])
    assert {r[0] for r in runs["1 or 2 threads, idle"]["tables"][0]["rows"]} == {
        "mlp-1", "mlp-2", "lenet-1", "lenet-2"
    }  # fmt: skip
    readme = (out / "README.md").read_text()
    assert f"`{mlp['command']}`" in readme and "| handgrad | " in readme
    if importlib.util.find_spec("matplotlib") is not None:
        assert len(list(out.glob("*.png"))) == 3
