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


TIMING_HEAD = [
    "contender",
    "median epoch",
    "fastest",
    "slowest",
    "all epochs",
    "vs handgrad",
    "test accuracy",
]
MLP_FLOPS = 2 * (2 * 784 * 128 + 3 * 128 * 10)  # a training step's five products, per sample


def expected_contenders(stderr: str, *modules: tuple[str, str]) -> set[str]:
    """handgrad and the floor, and each contender whose package is installed (the
    others are said to be skipped)."""
    expected = {"handgrad", "GEMM floor"}
    for module, name in modules:
        if importlib.util.find_spec(module) is not None:
            expected.add(name)
        else:
            assert f"skipping {name}" in stderr
    return expected


def seconds(cell: str) -> float:
    assert re.fullmatch(r"\d+\.\d+ m?s", cell), cell
    value = float(cell.split()[0])
    return value / 1e3 if cell.endswith(" ms") else value


def mib(cell: str) -> int:
    assert re.fullmatch(r"[\d,]+ MiB", cell), cell
    return int(cell.split()[0].replace(",", ""))


def percent(cell: str) -> float:
    assert re.fullmatch(r"\d+\.\d\d%", cell), cell
    return float(cell.rstrip("%"))


def test_bench_mlp_times_training_inference_and_convergence(small_mnist: Path) -> None:
    """Every table of bench_mlp.py, with numbers that agree with each other: GFLOP/s
    is the step's matrix work over the median epoch, "x floor" the ratio of medians,
    images/s the test set over the median call; the convergence run's fresh models
    end exactly where the timed ones did after as many epochs (same seeds, one thread)."""
    argv = ["--rounds", "2", "--train-size", "1024", "--threads", "1", "--convergence", "2"]
    argv += ["--target", "0.5", "--infer-reps", "3", "--markdown"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**os.environ, "HANDGRAD_DATA": str(small_mnist)},
    )
    assert "MLP 784-128-10, Adam lr 0.001, batch 128, float32, 1,024 images" in proc.stdout
    assert_hardware_line(proc.stdout)
    expected = expected_contenders(proc.stderr, ("torch", "PyTorch"), ("sklearn", "scikit-learn"))
    (head, rows), (infer_head, infer), (conv_head, conv) = markdown_tables(proc.stdout)

    assert head == [*TIMING_HEAD, "GFLOP/s", "x floor", "peak memory"]
    assert set(rows) == expected, proc.stdout
    assert rows["handgrad"][4] == "1.00x" and rows["GEMM floor"][7] == "1.00x"
    floor = seconds(rows["GEMM floor"][0])
    for name, (med, fast, slow, _, _, accuracy, gflops, vs_floor, memory) in rows.items():
        med_s = seconds(med)
        assert 0 < seconds(fast) <= med_s <= seconds(slow), name
        assert float(gflops) > 0
        # rounded cells: the median to 1 ms, GFLOP/s to 0.1
        assert abs(float(gflops) * med_s - MLP_FLOPS * 1024 / 1e9) < 0.05 + 1e-3 * float(gflops)
        assert abs(float(vs_floor.rstrip("x")) - med_s / floor) < 0.01 + 0.002 / floor, name
        assert 30 < mib(memory) < 4000, (name, memory)
        if name == "GEMM floor":
            assert accuracy == "-"  # no model, nothing to test
        else:
            assert percent(accuracy) > 50, (name, accuracy)  # two epochs on 1,024 images

    assert "predicting the 500 test images in one call" in proc.stdout
    assert infer_head == [
        "contender",
        "median call",
        "fastest",
        "slowest",
        "images/s",
        "vs PyTorch",
        "GFLOP/s",
    ]
    assert set(infer) == expected | {"handgrad, batch_size=2000 (default)"}
    for name, (med, fast, slow, speed, vs_torch, gflops) in infer.items():
        med_s = seconds(med)
        assert 0 < seconds(fast) <= med_s <= seconds(slow), name
        images = int(speed.replace(",", ""))
        assert abs(images * med_s - 500) < 500 * 0.01 + images * 5e-6, (name, speed, med)
        assert float(gflops) > 0
        if "PyTorch" in infer:
            assert re.fullmatch(r"\d+\.\d\dx", vs_torch), vs_torch
    if "PyTorch" in infer:
        assert infer["PyTorch"][4] == "1.00x"

    assert conv_head == [
        "contender",
        "time to 50%",
        "epochs to 50%",
        "accuracy after 2 epochs",
        "peak memory",
    ]
    assert set(conv) == expected - {"GEMM floor"}
    for name, (to_target, epochs, accuracy, memory) in conv.items():
        assert epochs in ("1", "2"), (name, epochs)
        assert 0 < seconds(to_target) <= 2 * seconds(rows[name][2]) + 0.01, name  # <= 2 slowest
        assert accuracy == rows[name][5], name  # a fresh model, the same two epochs
        assert mib(memory) >= mib(rows[name][8])  # the peak so far: it only grows


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
    assert head == TIMING_HEAD
    expected = expected_contenders(proc.stderr, ("torch", "PyTorch"))
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
    writes what the full run writes into docs/benchmarks: for the MLP, Adam and SGD in
    float32 and float64, each with its training, inference and convergence tables."""
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
    assert re.search(r", \d+ cores, ", data["hardware"]) and "NumPy " in data["versions"]
    runs = {run["title"]: run for run in data["runs"]}
    mlp_titles = [
        "MLP, Adam, float32, 1 thread",
        "MLP, SGD, float32, 1 thread",
        "MLP, Adam, float64, 1 thread",
        "MLP, SGD, float64, 1 thread",
    ]
    assert list(runs) == [*mlp_titles, "1 or 2 threads, idle", "1 or 2 threads, one busy core"]
    quick = "--rounds 1 --train-size 1024 --convergence 2 --infer-reps 3 --markdown"
    assert runs["MLP, SGD, float64, 1 thread"]["command"] == (
        f"python benchmarks/bench_mlp.py --optimizer sgd --threads 1 --dtype float64 {quick}"
    )
    recipes = ["Adam lr 0.001, batch 128", "SGD lr 0.1, batch 64"]  # batch follows optimizer
    headings = [f"{recipe}, {dtype}" for dtype in ("float32", "float64") for recipe in recipes]
    for title, heading in zip(mlp_titles, headings, strict=True):
        mlp = runs[title]
        assert any(heading in note for note in mlp["notes"]), (title, mlp["notes"])
        assert any(note.startswith("Hardware: ") for note in mlp["notes"])
        training, inference, converged = mlp["tables"]
        assert training["head"][:2] == ["contender", "median epoch"]
        assert training["rows"][0][0] == "handgrad"
        floor = next(r for r in training["rows"] if r[0] == "GEMM floor")
        assert float(floor[7]) > 0 and floor[8] == "1.00x"  # the machine's GEMM rate
        assert inference["head"][4] == "images/s" and inference["caption"]
        assert all(int(r[4].replace(",", "")) > 0 for r in inference["rows"])
        assert converged["head"][1:4] == ["time to 97%", "epochs to 97%", "accuracy after 2 epochs"]
        for name, to_target, epochs, accuracy, memory in converged["rows"]:
            # two epochs on 1,024 images reach 97% on nothing
            assert (to_target, epochs) == ("not in 2 epochs", "-"), name
            assert 0 < float(accuracy.rstrip("%")) <= 100 and mib(memory) > 0
    assert {r[0] for r in runs["1 or 2 threads, idle"]["tables"][0]["rows"]} == {
        "mlp-1", "mlp-2", "lenet-1", "lenet-2"
    }  # fmt: skip
    readme = (out / "README.md").read_text()
    assert f"- Hardware: {data['hardware']}" in readme
    assert f"- Versions: {data['versions']}" in readme
    for run in runs.values():
        assert f"`{run['command']}`" in readme
    assert "| handgrad | " in readme and "| time to 97% |" in readme
    if importlib.util.find_spec("matplotlib") is not None:
        assert len(list(out.glob("*.png"))) == 6  # one per timing table


# -- handgrad train at its defaults, against another checkout -----------------------------


def test_bench_train_runs_the_command_and_a_baseline_beside_it() -> None:
    """One epoch each of this checkout's ``handgrad train`` and of a "before" checkout
    (this one again: the same run, to the bit, so the same test accuracy)."""
    root = BENCHMARKS.parent
    argv = ["--rounds", "1", "--epochs", "1", "--baseline", str(root), "--target", "0.5"]
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_train.py"), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**os.environ, "HANDGRAD_BENCH_MARKDOWN_ONLY": ""},
    )
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("handgrad train --no-save --epochs 1: 1 runs each")
    assert any(ln.startswith("handgrad before: the same benchmark on ") for ln in lines)
    rows = {ln.split()[0] + (" before" if " before " in ln else ""): ln for ln in lines[-2:]}
    assert set(rows) == {"handgrad", "handgrad before"}
    cells = {name: re.split(r"\s{2,}", row.strip()) for name, row in rows.items()}
    for name, c in cells.items():
        wall, training = float(c[1].split()[0]), float(c[2].split()[0])
        assert 0 < training < wall, (name, c)
        to_half = float(c[4].split()[0])  # 50% validation accuracy: within the one epoch
        assert 0 < to_half <= training and c[5] == "1", (name, c)
    assert cells["handgrad"][6] == cells["handgrad before"][6]  # the same code, the same run
    assert re.fullmatch(r"\d+\.\d\d%", cells["handgrad"][6])
