"""The input policy of fit / predict / evaluate / model(x), the labels the losses take,
early stopping's patience, the command line's refusals of bad sizes and paths, its
install hints, and what is reproducible bit for bit."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import handgrad
from handgrad import _install
from handgrad.callbacks import Callback, EarlyStopping
from handgrad.cli import main
from handgrad.data import load_mnist
from handgrad.nn.losses import CrossEntropyLoss, FocalLoss, NLLLoss
from handgrad.optim import SGD, Adam
from handgrad.recipes import build_lenet, build_mlp
from handgrad.train import PixelScaleWarning, evaluate, fit, predict, predict_proba

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist_slice() -> tuple[np.ndarray, np.ndarray]:
    d = load_mnist()
    return d.x_train[:512], d.y_train[:512]


def _pixel_warnings(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, PixelScaleWarning)]


# -- images: integers are scaled, floats used as given, with a warning for 0..255 -------


def test_float_images_in_0_255_warn_in_fit_predict_and_evaluate(
    mnist_slice: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = mnist_slice
    x255 = x.astype(np.float32)  # what x.astype(float) or a CSV's pixel columns give
    model = build_mlp(784, [16], 10, rng=0)
    loss = CrossEntropyLoss()
    for call in (
        lambda: fit(model, loss, Adam(model.parameters()), (x255, y), epochs=1, rng=0),
        lambda: predict(model, x255),
        lambda: evaluate(model, loss, x255, y),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        (warning,) = _pixel_warnings(caught)  # once per call, not once per batch
        assert "looks like 0..255 pixels" in str(warning.message)
        assert "Divide it by 255" in str(warning.message)
        assert warning.filename == __file__  # points at the caller's line


@pytest.mark.parametrize(
    "x",
    [
        pytest.param("uint8", id="uint8 images: scaled"),
        pytest.param("scaled", id="floats in [0, 1]"),
        pytest.param("standardised", id="standardised, negative background"),
        pytest.param("measurements", id="positive floats that are not whole (Iris)"),
    ],
)
def test_other_inputs_do_not_warn(x: str, mnist_slice: tuple[np.ndarray, np.ndarray]) -> None:
    images = mnist_slice[0][:64]
    arrays = {
        "uint8": images,
        "scaled": images.astype(np.float32) / 255,
        "standardised": (images.astype(np.float32) - 33.3) / 78.6,
        "measurements": np.random.default_rng(0).uniform(0.1, 7.9, (64, 784)).astype(np.float32),
    }
    model = build_mlp(784, [8], 10, rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PixelScaleWarning)
        predict(model, arrays[x])


def test_a_custom_transform_replaces_the_policy(
    mnist_slice: tuple[np.ndarray, np.ndarray],
) -> None:
    model = build_mlp(784, [8], 10, rng=0)
    x255 = mnist_slice[0][:64].astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PixelScaleWarning)
        got = predict_proba(model, x255, transform=lambda b: b * np.float32(1 / 255))
    np.testing.assert_array_equal(got, predict_proba(model, mnist_slice[0][:64]))


def test_model_call_refuses_integer_images_and_names_predict(
    mnist_slice: tuple[np.ndarray, np.ndarray],
) -> None:
    x = mnist_slice[0][:8]
    model = build_mlp(784, [8], 10, rng=0, dtype=np.float64)
    with pytest.raises(TypeError) as info:
        model(x)
    message = str(info.value)
    assert "converts nothing" in message and "x.astype(np.float64) / 255" in message
    assert "handgrad.train.predict(model, x)" in message
    # ...and predict is exactly model(x) on the scaled images
    model.eval()
    np.testing.assert_array_equal(predict(model, x), model(x / 255.0).argmax(axis=1))


def test_lenet_model_call_names_predict_too(mnist_slice: tuple[np.ndarray, np.ndarray]) -> None:
    model = build_lenet((28, 28), 10, rng=0)
    with pytest.raises(TypeError, match=r"handgrad\.train\.predict"):
        model(mnist_slice[0][:2])


# -- labels: integer class indices; float labels name the cast that fixes them ---------


SCORES = np.zeros((6, 10), np.float32)
WHOLE = np.array([0.0, 3.0, 9.0, 1.0, 1.0, 2.0])  # a CSV label column read as float64


@pytest.mark.parametrize("loss", [CrossEntropyLoss(), NLLLoss(), FocalLoss()], ids=type)
def test_float_class_labels_name_the_cast(loss: object) -> None:
    with pytest.raises(TypeError) as info:
        loss(SCORES, WHOLE)  # type: ignore[operator]
    message = str(info.value)
    assert "expects integer class indices of shape (6,)" in message
    assert "got float64 labels of shape (6,)" in message
    assert "convert them with y.astype(int)" in message
    assert "targets of shape (6, 10)" not in message  # not mistaken for probabilities


def test_a_float_label_column_and_fractional_labels() -> None:
    with pytest.raises(TypeError, match=r"y\.reshape\(-1\)\.astype\(int\)"):
        CrossEntropyLoss()(SCORES, WHOLE[:, None])  # df[["label"]].to_numpy()
    with pytest.raises(TypeError, match="not whole numbers"):
        CrossEntropyLoss()(SCORES, WHOLE + 0.5)
    # probabilities in the scores' shape are still taken, and give the indices' loss
    one_hot = np.eye(10)[WHOLE.astype(int)]
    assert CrossEntropyLoss()(SCORES, one_hot) == CrossEntropyLoss()(SCORES, WHOLE.astype(int))


def test_fit_with_float_labels_says_to_cast(mnist_slice: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = mnist_slice
    model = build_mlp(784, [8], 10, rng=0)
    with pytest.raises(TypeError, match=r"y\.astype\(int\)"):
        fit(model, CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), (x, y.astype(float)))


# -- EarlyStopping: Keras's patience -------------------------------------------------


class _Scripted(Callback):
    def __init__(self, values: list[float]) -> None:
        self.values = values

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        logs["val_loss"] = self.values[epoch]


@pytest.mark.parametrize(
    ("patience", "epochs_run"),
    [(0, 2), (1, 2), (2, 3), (3, 4), (4, 5)],
)
def test_early_stopping_stops_after_patience_epochs_without_improvement(
    patience: int, epochs_run: int
) -> None:
    # best at epoch 1, never better afterwards: patience=1 stops after epoch 2, the first
    # epoch without improvement ("has not improved for this many epochs")
    x, y = np.zeros((8, 2), np.float32), np.zeros(8, np.int64)
    model = build_mlp(2, [2], 2, rng=0)
    history = fit(
        model,
        CrossEntropyLoss(),
        SGD(model.parameters(), lr=1e-3),
        (x, y),
        val=(x, y),
        epochs=6,
        rng=0,
        callbacks=[_Scripted([1.0, 2.0, 2.0, 2.0, 2.0, 2.0]), EarlyStopping(patience=patience)],
    )
    assert history.epochs == epochs_run
    if epochs_run < 6:
        wait = epochs_run - 1
        assert f"did not improve for {wait} epoch{'s' if wait > 1 else ''}" in str(
            history.stop_reason
        )


# -- the command line ------------------------------------------------------------------


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize("hidden", ["128,,64", "128,", ",64", ""])
def test_empty_hidden_sizes_are_refused(hidden: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--hidden", hidden])
    assert info.value.code == 2
    assert "which has an empty size" in _error(capsys)


def test_a_batch_larger_than_the_training_set_is_named(
    small_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data-dir", str(small_mnist), "--epochs", "1", "--no-save", "--quiet"]
    # one step an epoch ends near chance: the failure names the batch size, not the rate
    assert main([*argv, "--batch-size", "100000000"]) == 1
    err = capsys.readouterr().err
    assert "--batch-size 100,000,000 makes every epoch a single step" in err
    assert "learning rate" not in err
    assert err.splitlines()[0] == (
        "handgrad train: warning: --batch-size 100,000,000 is larger than the 2,700 training "
        "samples: every epoch is a single step on all 2,700 of them, so training learns "
        "little per epoch (use at most 2,700; 32 to 512 is usual)"
    )
    main([*argv, "--batch-size", "2700"])
    assert "is larger than" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--output", "{missing}/sub/model.npz"],
        ["train", "--no-save", "--plots", "{missing}/plots"],
        ["train", "--checkpoint", "{missing}/run.npz", "--output", "{missing}/../m.npz"],
        ["kaggle", "{csv}", "{csv}", "--submission", "{missing}/submission.csv"],
        ["kaggle", "{csv}", "{csv}", "--output", "{missing}/sub/m.npz"],
        ["explain", "--tiny", "--plot", "{missing}/layers.png"],
        ["study", "baselines", "--quick", "--out", "{missing}/out"],
        ["lab", "start", "{missing}/sub/neural_network.py"],
        ["lab", "export", "{missing}/neural_network.py"],
    ],
    ids=lambda a: f"{a[0]} {a[-2]}",
)
def test_outputs_in_missing_directories_are_refused_before_any_work(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "train.csv"
    csv.write_text("label," + ",".join(f"pixel{i}" for i in range(4)) + "\n1,0,0,0,0\n")
    missing = tmp_path / "missing"
    argv = [a.format(missing=missing, csv=csv) for a in argv]
    assert main(argv) == 2
    assert f"the directory {missing} does not exist" in _error(capsys)
    assert not missing.exists()  # nothing created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.csv"]


def test_a_directory_given_as_a_model_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["evaluate"], ["predict"]):
        extra = [str(tmp_path / "digit.png")] if command == ["predict"] else []
        assert main([*command, str(tmp_path), *extra]) == 2
        assert f"{tmp_path} is a directory, not a model file" in _error(capsys)


def test_predict_reads_every_image_before_printing_any(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    model = handgrad.save(build_mlp(784, [8], 10, rng=0), tmp_path / "m.npz")
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    Image.fromarray(digit).save(tmp_path / "one.png")
    (tmp_path / "notes.png").write_text("not an image")
    good, missing = str(tmp_path / "one.png"), str(tmp_path / "gone.png")
    argv = ["predict", str(model), good, missing, good, str(tmp_path / "notes.png")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no prediction printed before the failure
    assert captured.err.count("\n") == 1
    assert "nothing predicted; 2 of 4 images cannot be read" in captured.err
    assert f"{missing}: not found" in captured.err and "notes.png: not a readable" in captured.err
    assert main(["predict", str(model), good, good]) == 0
    assert capsys.readouterr().out.count(f"{good}: ") == 2


# -- install hints: the command that works for this copy -------------------------------


def test_install_hints_name_the_command_for_this_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_install, "source_checkout", lambda: None)  # from a package index
    assert _install.install_hint("cli") == (
        'pip install "handgrad[cli]" (or: pip install tqdm matplotlib pillow)'
    )
    monkeypatch.setattr(_install, "source_checkout", lambda: (Path("/src/my hg"), True))
    assert _install.install_command("plots") == "pip install -e '/src/my hg[plots]'"
    monkeypatch.setattr(_install, "source_checkout", lambda: (Path("/src/hg"), False))
    assert _install.fix_hints('plots need matplotlib: pip install "handgrad[plots]"') == (
        "plots need matplotlib: pip install '/src/hg[plots]' (or: pip install matplotlib)"
    )


def test_the_librarys_own_import_errors_name_the_command_for_this_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Called from Python, not through the command line, ``handgrad.plots`` and
    ``handgrad.images`` said ``pip install "handgrad[...]"``, which fails for a source
    checkout."""
    import handgrad.images
    import handgrad.plots

    monkeypatch.setattr(_install, "source_checkout", lambda: (Path("/src/hg"), True))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=re.escape("pip install -e '/src/hg[plots]'")):
        handgrad.plots._pyplot()
    with pytest.raises(ImportError, match=re.escape("pip install -e '/src/hg[cli]'")):
        handgrad.images.load_image(tmp_path / "digit.png")


def test_this_checkout_is_recognised() -> None:
    # the tests run from a source checkout (installed editable, or on PYTHONPATH)
    found = _install.source_checkout()
    assert found is not None and found[0].resolve() == ROOT
    assert str(ROOT) in _install.install_command("cli")


def test_the_extras_match_pyproject() -> None:
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is Python 3.11+")
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for name, packages in _install.EXTRAS.items():
        assert tuple(re.split(r"[<>=!~ ;\[]", p)[0] for p in extras[name]) == packages, name


# -- reproducibility: same seed, same threads -> the same bits -----------------------


def _weights_after_training(blas_threads: int, threads: int, conv: bool = False) -> np.ndarray:
    x, y = load_mnist().x_train[:600], load_mnist().y_train[:600]
    rng = np.random.default_rng(7)
    model = build_lenet((28, 28), 10, rng=rng) if conv else build_mlp(784, [64], 10, rng=rng)
    # handgrad.threads, not the setters: those would keep the counts as the user's choice
    with handgrad.threads(threads if conv else blas_threads, model):
        fit(model, CrossEntropyLoss(), Adam(model.parameters()), (x, y), epochs=1, rng=rng)
    return np.concatenate([p.data.ravel() for p in model.parameters()])


@pytest.mark.parametrize("blas_threads", [1, 2])
def test_same_seed_and_threads_give_identical_weights(blas_threads: int) -> None:
    first = _weights_after_training(blas_threads, 1)
    second = _weights_after_training(blas_threads, 1)
    assert first.tobytes() == second.tobytes()


def test_handgrad_threads_do_not_change_a_bit_of_a_cnn() -> None:
    one = _weights_after_training(1, 1, conv=True)
    assert one.tobytes() == _weights_after_training(1, 3, conv=True).tobytes()


# -- the README's section runs -------------------------------------------------------


def test_readme_input_policy_example_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### What fit and predict take", 1)[1]
    section = re.split(r"\n##+ ", section, maxsplit=1)[0]  # up to the next heading
    (code,) = re.findall(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    exec(compile(code, str(ROOT / "README.md"), "exec"), {})
