"""``handgrad train --model lenet|cnn`` and the commands that use a saved CNN, on a slice of
MNIST; the full-accuracy runs, reduced, as slow tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import handgrad
from handgrad import _parallel
from handgrad.cli import main
from handgrad.data import load_mnist
from handgrad.serialization import load
from tests.test_cli import _run


def _accuracy(text: str) -> float:
    summary = next(line for line in text.splitlines() if line.startswith("test accuracy"))
    return float(summary.split()[2].rstrip("%")) / 100


@pytest.fixture(scope="module")
def lenet_run(
    small_mnist: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, str]:
    out = tmp_path_factory.mktemp("lenet")
    model, plots = out / "lenet.npz", out / "plots"
    argv = ["train", "--model", "lenet", "--data-dir", str(small_mnist), "--epochs", "2"]
    code, text = _run([*argv, "--output", str(model), "--plots", str(plots), "--threads", "2"])
    assert code == 0, text
    return model, plots, text


def test_lenet_trains_saves_and_plots(lenet_run: tuple[Path, Path, str]) -> None:
    model, plots, text = lenet_run
    lines = text.splitlines()
    assert lines[0].startswith("model: lenet (conv 32 3x3, pool, conv 64 3x3, pool, fc 128")
    assert "augmented" not in lines[0]
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2 and all(line.endswith(" s") for line in epochs)  # epoch time shown
    assert _accuracy(text) > 0.90  # 2 epochs on 2,700 images
    assert sorted(p.name for p in plots.iterdir()) == [
        "confusion_matrix.png",
        "first_layer_weights.png",  # the 32 3x3 filters of the first convolution
        "predictions.png",
        "training_curves.png",
    ]
    net = load(model)
    assert [type(m).__name__ for m in net][:5] == [
        "Flatten",
        "Unflatten",
        "Conv2d",
        "ReLU",
        "MaxPool2d",
    ]


def test_evaluate_and_predict_a_saved_cnn(
    lenet_run: tuple[Path, Path, str],
    small_mnist: Path,
    tmp_path: Path,
) -> None:
    from PIL import Image

    code, text = _run(["evaluate", str(lenet_run[0]), "--data-dir", str(small_mnist)])
    assert code == 0, text
    assert "test accuracy" in text and "confusion matrix" in text
    assert abs(float(text.split()[2].rstrip("%")) / 100 - _accuracy(lenet_run[2])) < 1e-9
    d = load_mnist()
    Image.fromarray(255 - d.x_test[3]).save(tmp_path / "digit.png")  # dark on light
    code, text = _run(["predict", str(lenet_run[0]), str(tmp_path / "digit.png")])
    assert code == 0, text
    assert text.split(": ")[1].startswith(str(d.y_test[3]))


def test_cnn_trains_with_augmentation_by_default(small_mnist: Path) -> None:
    argv = ["train", "--model", "cnn", "--data-dir", str(small_mnist), "--epochs", "1"]
    code, text = _run([*argv, "--no-save", "--val-fraction", "0"])
    assert code == 0, text
    assert text.startswith("model: cnn (") and "augmented" in text.splitlines()[0]
    assert _accuracy(text) > 0.5  # one epoch of 3,000 images, one-cycle, augmented
    code, text = _run([*argv, "--no-save", "--no-augment", "--val-fraction", "0"])
    assert code == 0 and "augmented" not in text.splitlines()[0], text


def test_mlp_options_are_refused_for_a_cnn(
    small_mnist: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for option in (["--hidden", "64"], ["--dropout", "0.2"], ["--batch-norm"]):
        argv = ["train", "--model", "lenet", "--data-dir", str(small_mnist), *option]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{option[0]} is for --model mlp" in err and len(err.splitlines()) == 1


def test_augment_applies_to_the_mlp_too(small_mnist: Path) -> None:
    argv = ["train", "--data-dir", str(small_mnist), "--epochs", "1", "--no-save", "--augment"]
    code, text = _run(argv)
    assert code == 0 and "augmented" in text.splitlines()[0], text


def test_threads_are_restored_after_an_in_process_run(
    small_mnist: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = handgrad.get_num_threads()
    argv = ["train", "--model", "lenet", "--data-dir", str(small_mnist), "--epochs", "1"]
    assert main([*argv, "--no-save", "--quiet", "--threads", "2", "--val-fraction", "0"]) == 0
    assert handgrad.get_num_threads() == before
    assert _parallel._threads == before


def test_evaluate_and_predict_a_cnn_that_starts_with_a_convolution(
    small_mnist: Path, tmp_path: Path
) -> None:
    """No Flatten/Unflatten in front: the command adds the channel axis itself."""
    from PIL import Image

    from handgrad import nn, save

    rng = np.random.default_rng(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, rng=rng), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(4, 10, rng=rng),
    )  # fmt: skip
    save(model, tmp_path / "conv-first.npz")
    code, text = _run(
        ["evaluate", str(tmp_path / "conv-first.npz"), "--data-dir", str(small_mnist)]
    )
    assert code == 0 and "test accuracy" in text, text
    Image.fromarray(255 - load_mnist().x_test[0]).save(tmp_path / "digit.png")
    code, text = _run(["predict", str(tmp_path / "conv-first.npz"), str(tmp_path / "digit.png")])
    assert code == 0, text
    model = nn.Sequential(nn.Conv2d(3, 4, 3, rng=rng), nn.Flatten())
    save(model, tmp_path / "rgb.npz")
    code, text = _run(["evaluate", str(tmp_path / "rgb.npz"), "--data-dir", str(small_mnist)])
    assert code == 2 and "expects 3-channel images" in text, text


def test_kaggle_trains_an_augmented_cnn_on_flat_rows(tmp_path: Path) -> None:
    d = load_mnist()
    rows = [",".join(["label"] + [f"pixel{i}" for i in range(784)])]
    rows += [",".join(map(str, [d.y_train[i], *d.x_train[i].ravel()])) for i in range(300)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    test_rows = [",".join(f"pixel{i}" for i in range(784))]
    test_rows += [",".join(map(str, d.x_test[i].ravel())) for i in range(10)]
    (tmp_path / "test.csv").write_text("\n".join(test_rows) + "\n")
    sub = tmp_path / "submission.csv"
    argv = ["kaggle", str(tmp_path / "train.csv"), str(tmp_path / "test.csv"), "--model", "cnn"]
    code, text = _run([*argv, "--epochs", "1", "--submission", str(sub), "--no-save"])
    assert code == 0 and "augmented" in text, text
    assert len(sub.read_text().splitlines()) == 11


def test_kaggle_trains_a_lenet_on_flat_rows(tmp_path: Path) -> None:
    d = load_mnist()
    rows = [",".join(["label"] + [f"pixel{i}" for i in range(784)])]
    rows += [",".join(map(str, [d.y_train[i], *d.x_train[i].ravel()])) for i in range(400)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    test_rows = [",".join(f"pixel{i}" for i in range(784))]
    test_rows += [",".join(map(str, d.x_test[i].ravel())) for i in range(20)]
    (tmp_path / "test.csv").write_text("\n".join(test_rows) + "\n")
    sub = tmp_path / "submission.csv"
    argv = ["kaggle", str(tmp_path / "train.csv"), str(tmp_path / "test.csv"), "--model", "lenet"]
    code, text = _run([*argv, "--epochs", "1", "--submission", str(sub), "--no-save"])
    assert code == 0, text
    assert len(sub.read_text().splitlines()) == 21


# -- the accuracy runs, reduced (the full ones are documented commands: docs/cnn.md) --------


@pytest.mark.slow
def test_lenet_one_epoch_on_full_mnist() -> None:
    """The full run (``--epochs 3``) reached 99.2%+; one epoch must reach 98.5%."""
    code, text = _run(["train", "--model", "lenet", "--epochs", "1", "--no-save"])
    assert code == 0, text
    assert _accuracy(text) >= 0.985, text


@pytest.mark.slow
def test_cnn_two_epochs_on_full_mnist() -> None:
    """The full run (20 epochs) reached 99.6%+; two augmented epochs must reach 99.0%."""
    # about 70 s on the idle 2-core machine; the bar is accuracy, so a busy machine
    # (a CI neighbour) gets room rather than a timeout
    code, text = _run(["train", "--model", "cnn", "--epochs", "2", "--no-save"], timeout=600)
    assert code == 0, text
    assert _accuracy(text) >= 0.99, text


def test_saved_cnn_predictions_survive_a_round_trip(lenet_run: tuple[Path, Path, str]) -> None:
    from handgrad.train import predict

    net = load(lenet_run[0])
    x = load_mnist().x_test[:64]
    again = load(lenet_run[0])
    np.testing.assert_array_equal(predict(net, x), predict(again, x))
