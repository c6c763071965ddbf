"""The command line: a one-epoch run on a small MNIST-format slice, the other commands, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from handgrad.cli import main
from handgrad.data import load_mnist, write_idx


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3000 training and 500 test images of the real MNIST, in an MNIST-format directory."""
    d = load_mnist()
    out = tmp_path_factory.mktemp("mnist-slice")
    write_idx(out / "train-images-idx3-ubyte.gz", d.x_train[:3000])
    write_idx(out / "train-labels-idx1-ubyte.gz", d.y_train[:3000].astype(np.uint8))
    write_idx(out / "t10k-images-idx3-ubyte", d.x_test[:500])  # uncompressed works too
    write_idx(out / "t10k-labels-idx1-ubyte", d.y_test[:500].astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def trained(small_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    out = tmp_path_factory.mktemp("run")
    model = out / "model.npz"
    plots = out / "plots"
    argv = [
        "train",
        "--data-dir",
        str(small_mnist),
        "--epochs",
        "2",
        "--output",
        str(model),
        "--plots",
        str(plots),
        "--seed",
        "1",
    ]
    code, text = _run(argv)
    assert code == 0, text
    return model, plots, text


def _run(argv: list[str]) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "handgrad", *argv], capture_output=True, text=True, timeout=120
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_train_on_a_small_slice_reports_accuracy_and_saves(trained: tuple[Path, Path, str]) -> None:
    model, plots, text = trained
    lines = text.splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 2
    summary = next(line for line in lines if line.startswith("test accuracy"))
    accuracy = float(summary.split()[2].rstrip("%")) / 100
    assert accuracy > 0.85  # 2 epochs on 2700 images
    assert "peak memory" in summary and model.exists()
    assert sorted(p.name for p in plots.iterdir()) == [
        "confusion_matrix.png",
        "first_layer_weights.png",
        "predictions.png",
        "training_curves.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots.iterdir())


def test_evaluate_prints_report(trained: tuple[Path, Path, str], small_mnist: Path) -> None:
    code, text = _run(["evaluate", str(trained[0]), "--data-dir", str(small_mnist)])
    assert code == 0, text
    assert "test accuracy" in text and "confusion matrix" in text and "macro avg" in text


def test_predict_reads_an_image(trained: tuple[Path, Path, str], tmp_path: Path) -> None:
    from PIL import Image

    d = load_mnist()
    # A test digit drawn dark on light paper, upscaled and off-centre, like a photo of a drawing.
    digit = d.x_test[0]
    paper = np.full((140, 180), 255, np.uint8)
    paper[20:132, 10:122] = 255 - np.kron(digit, np.ones((4, 4), np.uint8))
    Image.fromarray(paper).save(tmp_path / "digit.png")
    code, text = _run(["predict", str(trained[0]), str(tmp_path / "digit.png")])
    assert code == 0, text
    assert text.split(": ")[1].startswith(str(d.y_test[0]))


def test_kaggle_writes_a_submission(tmp_path: Path) -> None:
    d = load_mnist()
    rows = [",".join(["label"] + [f"pixel{i}" for i in range(784)])]
    rows += [",".join(map(str, [d.y_train[i], *d.x_train[i].ravel()])) for i in range(600)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    test_rows = [",".join(f"pixel{i}" for i in range(784))]
    test_rows += [",".join(map(str, d.x_test[i].ravel())) for i in range(50)]
    (tmp_path / "test.csv").write_text("\n".join(test_rows) + "\n")
    sub = tmp_path / "submission.csv"
    code = main(
        [
            "kaggle",
            str(tmp_path / "train.csv"),
            str(tmp_path / "test.csv"),
            "--epochs",
            "1",
            "--submission",
            str(sub),
            "--no-save",
            "--quiet",
        ]
    )
    assert code == 0
    lines = sub.read_text().splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == 51 and lines[1].startswith("1,")


@pytest.mark.parametrize(
    "options",
    [["--optimizer", name] for name in ("sgd", "adam", "adamw", "rmsprop", "adagrad", "lion")]
    + [["--schedule", name] for name in ("cosine", "step", "constant")]
    + [
        [
            "--hidden",
            "32,16",
            "--activation",
            "gelu",
            "--batch-norm",
            "--dropout",
            "0.1",
            "--dtype",
            "float64",
            "--patience",
            "2",
            "--time-limit",
            "30",
        ]
    ],
    ids=lambda o: "-".join(o).replace("--", ""),
)
def test_every_optimizer_schedule_and_option_trains(
    options: list[str], small_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data-dir", str(small_mnist), "--epochs", "2", "--no-save", *options]
    assert main(argv) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    # 42 steps on 2,700 images: far above chance (10%) is what a short run must show
    assert float(summary.split()[2].rstrip("%")) > 50.0, summary


def test_gradcheck_command_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "CrossEntropyLoss" in out and "BatchNorm1d" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--epochs", "0"], "must be at least 1"),
        (["train", "--hidden", "12,x"], "comma-separated layer sizes"),
        (["train", "--optimizer", "nope"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_missing_files_exit_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--data-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["evaluate", str(tmp_path / "missing.npz")]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_help_is_friendly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--hidden" in text and "--data-dir" in text and "--plots" in text
