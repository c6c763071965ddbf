"""The command line: a one-epoch run on a small MNIST-format slice, the other commands, errors."""

from __future__ import annotations

import argparse
import subprocess
import sys
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import handgrad
import handgrad.data
import handgrad.train
from handgrad import cli
from handgrad._install import install_hint
from handgrad.cli import main
from handgrad.data import load_mnist, payload_sha256, write_idx
from handgrad.data import mnist as mnist_mod
from handgrad.data.mnist import MNIST_FILES
from handgrad.recipes import build_mlp
from handgrad.serialization import save
from tests.test_data_download import FakeMirrors, closed_port_url
from tests.test_data_idx import write_fake_mnist


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


def _run(argv: list[str], timeout: float = 120) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "handgrad", *argv], capture_output=True, text=True, timeout=timeout
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
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    assert code == 0
    lines = sub.read_text().splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == 51 and lines[1].startswith("1,")
    # no labels in the test CSV: the confusion matrix and mistakes are the validation set's
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "confusion_matrix.png",
        "first_layer_weights.png",
        "predictions.png",
        "training_curves.png",
    ]
    argv = ["kaggle", str(tmp_path / "train.csv"), str(tmp_path / "test.csv"), "--plots", "p"]
    assert main([*argv, "--val-fraction", "0"]) == 2


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
        # values that used to pass argparse and fail later (or never)
        (["train", "--lr", "inf"], "--lr: must be a positive finite number, got inf"),
        (["train", "--lr", "nan"], "--lr: must be a positive finite number, got nan"),
        (["train", "--weight-decay", "-1"], "--weight-decay: must be a finite number, 0 or more"),
        (["train", "--weight-decay", "nan"], "--weight-decay: must be a finite number"),
        (["train", "--time-limit", "inf"], "--time-limit: must be a positive finite number"),
        (["train", "--seed", "-1"], "--seed: must be 0 or more, got -1"),
        (["train", "--hidden", "100000000"], "layer sizes must be at most 10000"),
        (["kaggle", "a.csv", "b.csv", "--hidden", "64,20000"], "got 20000"),
        (["gradcheck", "--seed", "-3"], "--seed: must be 0 or more"),
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


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_help_is_friendly(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(["train"], capsys)
    assert "--hidden" in text and "--data-dir" in text and "--plots" in text
    for argv in ([], ["train"]):
        text = _help(argv, capsys)
        examples = [line for line in text.splitlines() if line.startswith("  handgrad ")]
        assert 3 <= len(examples) <= 5, text
        assert "HANDGRAD_DEBUG=1" in text
    text = " ".join(_help(["train"], capsys).split())  # undo the line wrapping
    assert "step: x0.1 every third of the epochs" in text and "constant: --lr throughout" in text
    assert "(default:kaggle-mlp.npz,or" in "".join(_help(["kaggle"], capsys).split())


def test_every_option_states_its_default() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name in ("train", "evaluate", "predict", "kaggle", "gradcheck"):
        for action in sub.choices[name]._actions:
            flag = isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction))
            if not action.option_strings or flag:
                continue
            if "default" not in (action.help or ""):
                missing.append(f"{name} {action.option_strings[0]}")
    assert missing == []


# -- one line on stderr and exit code 2, never a traceback ------------------------------------


def _one_error_line(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Untrained models for 28x28 and 14x14 images: enough to check shapes and errors."""
    out = tmp_path_factory.mktemp("models")
    paths = {}
    for side in (28, 14):
        paths[f"{side}"] = save(build_mlp(side * side, [8], 10, rng=0), out / f"m{side}.npz")
    return paths


def test_unreadable_and_blank_images_exit_2(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(np.full((30, 30), 255, np.uint8)).save(tmp_path / "blank.png")
    assert main(["predict", str(models["28"]), str(tmp_path / "notes.png")]) == 2
    _one_error_line(capsys, "notes.png: not a readable image")
    assert main(["predict", str(models["28"]), str(tmp_path / "blank.png")]) == 2
    _one_error_line(capsys, "blank.png: the image looks blank")


def test_model_and_data_of_different_sizes_exit_2(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_fake_mnist(tmp_path / "small", size=(14, 14))
    assert main(["evaluate", str(models["28"]), "--data-dir", str(tmp_path / "small")]) == 2
    _one_error_line(
        capsys, "model expects 784 input features", "the data has 196 input features (14x14"
    )
    (tmp_path / "digit.png").write_bytes(b"")  # never read: the sizes are checked first
    assert main(["predict", str(models["14"]), str(tmp_path / "digit.png")]) == 2
    _one_error_line(capsys, "model expects 196 input features", "784 input features (28x28")


@pytest.mark.parametrize(
    ("module", "argv"),
    [("matplotlib", ["train", "--plots", "{tmp}/plots"]), ("PIL", ["predict", "{model}", "x.png"])],
)
def test_missing_optional_package_exits_2_before_any_work(
    module: str,
    argv: list[str],
    small_mnist: Path,
    models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    argv = [a.format(tmp=tmp_path, model=models["28"]) for a in argv]
    if argv[0] == "train":
        argv += ["--data-dir", str(small_mnist), "--output", str(tmp_path / "m.npz")]
    assert main(argv) == 2
    # the command that installs the extra for this copy (a checkout here), and the packages
    _one_error_line(capsys, install_hint("cli"), "pip install tqdm matplotlib pillow")
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing saved


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--output", "{tmp}"], "is a directory"),
        (["--output", "{tmp}/afile/model.npz"], "afile is a file, not a directory"),
        (["--plots", "{tmp}/afile"], "--plots {tmp}/afile: exists and is not a directory"),
        (["--no-save", "--plots", "{tmp}/afile/plots"], "afile is a file, not a directory"),
    ],
)
def test_bad_output_paths_exit_2_before_training(
    options: list[str],
    message: str,
    small_mnist: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "afile").write_text("mine")
    argv = ["train", "--data-dir", str(small_mnist), *options]
    if "--output" not in options:
        argv += ["--output", str(tmp_path / "model.npz")]
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    _one_error_line(capsys, message.format(tmp=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing trained or saved


def _kaggle_csv(path: Path, n: int, labels: bool) -> Path:
    header = ["label"] * labels + [f"pixel{i}" for i in range(784)]
    rows = np.random.default_rng(0).integers(0, 256, (n, 784 + labels))
    if labels:
        rows[:, 0] %= 10
    path.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]) + "\n")
    return path


def test_kaggle_refuses_empty_train_and_labelled_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = _kaggle_csv(tmp_path / "train.csv", 40, labels=True)
    empty = _kaggle_csv(tmp_path / "empty.csv", 0, labels=True)
    test = _kaggle_csv(tmp_path / "test.csv", 5, labels=False)
    common = ["--epochs", "1", "--no-save", "--quiet", "--submission", str(tmp_path / "s.csv")]
    assert main(["kaggle", str(empty), str(test), *common]) == 2
    _one_error_line(capsys, f"{empty}: no data rows after the header")
    assert main(["kaggle", str(train), str(train), *common]) == 2
    _one_error_line(capsys, f"{train}: has a label column", "looks like the training file")
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (ValueError("x must be 2-D"), "error: x must be 2-D (HANDGRAD_DEBUG=1"),
        (OSError(28, "No space left on device", "/data/m.npz"), "/data/m.npz: No space left"),
        (MemoryError("Unable to allocate 584. GiB"), "out of memory: Unable to allocate 584. GiB"),
        (ModuleNotFoundError("No module named 'tqdm'"), f"tqdm': {install_hint('cli')}"),
    ],
    ids=["ValueError", "OSError", "MemoryError", "ImportError"],
)
def test_user_facing_exceptions_are_one_line_and_debug_shows_them(
    exc: Exception,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fail(args: Any) -> int:
        raise exc

    monkeypatch.setattr(cli, "cmd_gradcheck", fail)
    monkeypatch.delenv("HANDGRAD_DEBUG", raising=False)
    assert main(["gradcheck"]) == 2
    assert _one_error_line(capsys, message).startswith("handgrad gradcheck: error: ")
    monkeypatch.setenv("HANDGRAD_DEBUG", "1")
    with pytest.raises(type(exc)):
        main(["gradcheck"])


def test_bugs_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def buggy(args: Any) -> int:
        raise TypeError("unsupported operand type(s)")

    monkeypatch.setattr(cli, "cmd_gradcheck", buggy)
    monkeypatch.delenv("HANDGRAD_DEBUG", raising=False)
    with pytest.raises(TypeError):
        main(["gradcheck"])


# -- a run that diverges ---------------------------------------------------------------------


def test_non_finite_loss_is_said_plainly_not_saved_and_exits_1(
    small_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model.npz"
    argv = ["train", "--data-dir", str(small_mnist), "--lr", "1e30", "--optimizer", "sgd"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main([*argv, "--epochs", "3", "--output", str(model)])
    assert code == 1
    assert [str(w.message) for w in caught] == []  # no warning from fit or NumPy leaks out
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Warning" not in captured.err
    line, saved = captured.err.strip().splitlines()
    assert line.startswith("handgrad train: training stopped: non-finite")
    assert "lower learning rate" in line
    assert saved == "handgrad train: the model was not saved" and not model.exists()
    assert "test accuracy" in captured.out and "nan" not in captured.out


def _one_error_line_of(err: str) -> str:
    assert "Traceback" not in err and "Warning" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- memory --------------------------------------------------------------------------------


def test_train_drops_the_unsplit_training_set(
    small_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Training keeps only the split copies: the loaded x_train (47 MB of MNIST) must be freed.
    loaded: list[weakref.ref[np.ndarray]] = []
    real_load, real_fit = handgrad.data.load_mnist, handgrad.train.fit

    def load_mnist(*args: Any, **kwargs: Any) -> Any:
        data = real_load(*args, **kwargs)
        loaded.append(weakref.ref(data.x_train))
        return data

    def fit(*args: Any, **kwargs: Any) -> Any:
        assert loaded and loaded[0]() is None, "the unsplit training images are still alive"
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(handgrad.data, "load_mnist", load_mnist)
    monkeypatch.setattr(handgrad.train, "fit", fit)
    argv = ["train", "--data-dir", str(small_mnist), "--epochs", "1", "--no-save", "--quiet"]
    assert main(argv) == 0
    assert loaded


# -- --download, against a local HTTP server: no real network --------------------------------


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMirrors]:
    """A fake MNIST mirror on 127.0.0.1 as the only mirror; nothing found locally."""
    for scheme in ("http", "https", "all"):
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)
    monkeypatch.setenv("no_proxy", "*")
    write_fake_mnist(tmp_path / "source")
    files = {name: (tmp_path / "source" / name).read_bytes() for name in MNIST_FILES}
    hashes = {name: payload_sha256(tmp_path / "source" / name) for name in MNIST_FILES}
    monkeypatch.setattr(mnist_mod, "MNIST_SHA256", hashes)
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("HANDGRAD_DATA", str(tmp_path / "data"))  # empty: must download
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    server = FakeMirrors()
    monkeypatch.setattr(mnist_mod, "DEFAULT_MIRRORS", (server.serve("m1", files),))
    yield server
    server.close()


def test_download_option_fetches_mnist(
    mirror: FakeMirrors, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--epochs", "1", "--val-fraction", "0", "--no-save", "--quiet"]
    assert main(argv) == 2  # not found, and no --download: nothing fetched
    _one_error_line(capsys, "holds all four MNIST files", "--download on the command line")
    assert mirror.requests == []
    assert main([*argv, "--download"]) == 0
    assert sorted(mirror.requests) == sorted(f"/m1/{name}" for name in MNIST_FILES)
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(MNIST_FILES)
    assert "test accuracy" in capsys.readouterr().out


def test_failed_download_does_not_suggest_downloading(
    mirror: FakeMirrors,
    models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(mnist_mod, "DEFAULT_MIRRORS", (closed_port_url(),))
    assert main(["evaluate", str(models["28"]), "--download"]) == 2
    line = _one_error_line(capsys, "could not download a good copy from any mirror", "refused")
    assert "--download" not in line and "load_mnist(download=True)" not in line


def test_threads_are_pinned_for_the_command_and_restored(
    small_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handgrad import _blas

    seen: list[int] = []
    state = {"threads": 2}

    def fake_set(n: int) -> bool:
        seen.append(n)
        state["threads"] = n
        return True

    monkeypatch.setattr(_blas, "set_blas_threads", fake_set)
    monkeypatch.setattr(_blas, "blas_threads", lambda: state["threads"])
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    argv = ["train", "--data-dir", str(small_mnist), "--epochs", "1", "--no-save", "-q"]
    assert main(argv) == 0
    assert seen == [1, 2]  # one thread by default, then back to what it was
    seen.clear()
    assert main([*argv, "--threads", "2"]) == 0
    assert seen == [2, 2]
    seen.clear()
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert main(argv) == 0
    assert seen == []  # the user's environment decides


def test_time_limit_covers_the_whole_command(small_mnist: Path, tmp_path: Path) -> None:
    import time

    argv = ["train", "--data-dir", str(small_mnist), "--epochs", "500", "--batch-size", "16"]
    start = time.perf_counter()
    code = main([*argv, "--time-limit", "2.5", "--output", str(tmp_path / "m.npz"), "-q"])
    elapsed = time.perf_counter() - start
    assert code == 0 and (tmp_path / "m.npz").exists()
    assert elapsed < 2.5


def test_an_mnist_format_set_with_26_classes_trains_and_evaluates(
    tmp_path: Path, small_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # EMNIST letters in the standard four file names: labels 0..25
    rng = np.random.default_rng(0)
    letters = tmp_path / "letters"
    letters.mkdir()
    for images, labels, n in (
        ("train-images", "train-labels", 520),
        ("t10k-images", "t10k-labels", 52),
    ):
        write_idx(letters / f"{images}-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(letters / f"{labels}-idx1-ubyte.gz", (np.arange(n) % 26).astype(np.uint8))
    model = tmp_path / "letters.npz"
    argv = ["train", "--data-dir", str(letters), "--epochs", "1", "-q", "--output", str(model)]
    assert main(argv) == 0
    assert handgrad.load(model)[-1].out_features == 26
    assert main(["evaluate", str(model), "--data-dir", str(letters)]) == 0
    report = capsys.readouterr().out
    assert "test accuracy" in report and "   25 " in report  # a row for the last class
    ten = tmp_path / "digits.npz"
    assert (
        main(["train", "--data-dir", str(small_mnist), "--epochs", "1", "-q", "-o", str(ten)]) == 0
    )
    capsys.readouterr()
    assert main(["evaluate", str(ten), "--data-dir", str(letters)]) == 2
    _one_error_line(capsys, "labels go up to 25 but the model has 10 outputs")
