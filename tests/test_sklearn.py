"""handgrad.sklearn: scikit-learn's own estimator checks, and the estimators at work in
Pipeline, GridSearchCV and cross_val_score, with DataFrames and string labels."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip(
    "sklearn", reason="handgrad.sklearn needs scikit-learn: pip install -e '.[sklearn]'"
)

from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import handgrad
from handgrad.data import load_mnist
from handgrad.sklearn import MLPClassifier, MLPRegressor
from handgrad.train import predict_proba

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread() -> Iterator[None]:
    """Tiny matrix products run fastest on one BLAS thread, on a busy machine above all."""
    with handgrad.threads(1):  # restored after the module, and not kept as a user's choice
        yield


# -- scikit-learn's estimator checks ----------------------------------------------------

# The checks fit many tiny data sets: 50 epochs instead of 200 keep them at seconds.
# The defaults (float32), and float64 with early stopping (a validation split, the
# best weights restored).
CHECKED = [
    MLPClassifier(max_iter=50),
    MLPRegressor(max_iter=50),
    MLPClassifier(max_iter=50, dtype="float64", early_stopping=True, learning_rate_init=0.01),
    MLPRegressor(max_iter=50, dtype="float64", early_stopping=True, learning_rate_init=0.01),
]

FLOAT32_ONE_ROW = (
    "float32 only: a row predicted alone and in a batch may differ in the last bit "
    "(about 1e-7; the BLAS computes one row another way), and this check compares "
    "them with rtol=1e-7, below float32's resolution (1.2e-7). It passes in float64, "
    "and passes on this machine's OpenBLAS in float32 too; other BLAS builds may not."
)


def expected_failures(estimator: Any) -> dict[str, str]:
    """check name -> why it may fail; every other check must pass."""
    if estimator.dtype == "float64":
        return {}
    return {
        "check_methods_subset_invariance": FLOAT32_ONE_ROW,
        "check_methods_sample_order_invariance": FLOAT32_ONE_ROW,
    }


@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failures, xfail_strict=False)
def test_sklearn_estimator_checks(estimator: Any, check: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# -- on real MNIST ------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """600 training and 1000 test images of the real MNIST, as (N, 784) uint8 rows."""
    d = load_mnist()
    return (
        d.x_train[:600].reshape(-1, 784),
        d.y_train[:600],
        d.x_test[:1000].reshape(-1, 784),
        d.y_test[:1000],
    )


def _pipeline(**params: Any) -> Pipeline:
    mlp = MLPClassifier(max_iter=20, random_state=0, **params)
    return Pipeline([("scale", StandardScaler()), ("mlp", mlp)])


def test_pipeline_with_standard_scaler_learns_mnist(mnist: Any) -> None:
    x, y, x_test, y_test = mnist
    with pytest.warns(ConvergenceWarning, match="max_iter=20"):
        pipe = _pipeline(hidden_layer_sizes=(64,), learning_rate_init=0.01).fit(x, y)
    mlp = pipe.named_steps["mlp"]
    assert mlp.n_iter_ == 20 == len(mlp.loss_curve_)
    assert mlp.loss_curve_[-1] < 0.1 * mlp.loss_curve_[0]
    assert list(mlp.classes_) == list(range(10))
    assert pipe.score(x_test, y_test) > 0.78  # measured 0.817 (chance: 0.1)


def test_grid_search_two_parameters_two_jobs(mnist: Any) -> None:
    x, y, x_test, y_test = mnist
    grid = {
        "mlp__hidden_layer_sizes": [(32,), (64,)],
        "mlp__learning_rate_init": [1e-3, 1e-2],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(_pipeline(), grid, cv=3, n_jobs=2).fit(x, y)
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 4 and np.all(scores > 0.65)  # measured 0.72-0.81
    # the larger learning rate wins at 20 epochs, for either width
    assert search.best_params_["mlp__learning_rate_init"] == 1e-2
    assert search.best_score_ == scores.max() > 0.78
    assert search.score(x_test, y_test) > 0.78


def test_cross_val_score(mnist: Any) -> None:
    x, y, _, _ = mnist
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(_pipeline(learning_rate_init=0.01), x, y, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.7)


def test_dataframe_and_string_labels(mnist: Any) -> None:
    pd = pytest.importorskip("pandas")
    x, y, x_test, y_test = mnist
    names = np.array(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )
    frame = pd.DataFrame(x / 255.0, columns=[f"px{i}" for i in range(784)])
    clf = MLPClassifier((32,), max_iter=30, learning_rate_init=0.01, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(frame, pd.Series(names[y]))
    assert list(clf.feature_names_in_) == list(frame.columns) and clf.n_features_in_ == 784
    assert list(clf.classes_) == sorted(names)  # sorted, as scikit-learn sorts them
    test = pd.DataFrame(x_test / 255.0, columns=frame.columns)
    predicted = clf.predict(test)
    assert predicted.dtype == object and set(predicted) <= set(names)
    assert np.mean(predicted == names[y_test]) > 0.78  # measured 0.834
    proba = clf.predict_proba(test)  # columns in the order of classes_
    assert np.array_equal(clf.classes_[proba.argmax(axis=1)], predicted)
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(test.rename(columns={"px0": "other"}))


# -- the estimator's own contract ----------------------------------------------------


def _blobs(n: int = 120, spread: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Three classes in 2-D around (0, 2), (2, -1), (-2, -1), in turn."""
    y = np.arange(n) % 3
    centres = np.array([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]])
    return centres[y] + spread * np.random.default_rng(0).standard_normal((n, 2)), y


def test_same_random_state_same_bits_and_rng_kinds() -> None:
    x, y = _blobs()
    params = {"hidden_layer_sizes": (8,), "max_iter": 5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = MLPClassifier(random_state=3, **params).fit(x, y)
        b = MLPClassifier(random_state=3, **params).fit(x, y)
        c = MLPClassifier(random_state=4, **params).fit(x, y)
        state = np.random.RandomState(0)
        d = MLPClassifier(random_state=state, **params).fit(x, y)
        e = d.fit(x, y)  # a RandomState advances: the second fit starts elsewhere
        f = MLPClassifier(random_state=np.random.default_rng(0), **params).fit(x, y)
        g = MLPClassifier(random_state=0, **params).fit(x, y)
    assert a.loss_curve_ == b.loss_curve_ and a.loss_curve_ != c.loss_curve_
    for pa, pb in zip(a.model_.parameters(), b.model_.parameters(), strict=True):
        assert pa.data.tobytes() == pb.data.tobytes()
    assert e.loss_curve_ != g.loss_curve_
    assert f.n_iter_ == 5
    with pytest.raises(ValueError, match="random_state"):
        MLPClassifier(random_state="seed").fit(x, y)


def test_save_the_network_with_handgrad(tmp_path: Path) -> None:
    x, y = _blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((8, 8), activation="tanh", max_iter=20, random_state=0).fit(x, y)
    handgrad.save(clf.model_, tmp_path / "mlp.npz")
    loaded = handgrad.load(tmp_path / "mlp.npz")
    expected = clf.predict_proba(x)
    assert np.array_equal(predict_proba(loaded, x.astype(np.float32)), expected)
    # scikit-learn's way: parameters, not weights
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and not hasattr(twin, "model_")
    assert twin.set_params(alpha=0.5).alpha == 0.5


def test_pickles_and_partial_fit_continues_bit_for_bit() -> None:
    x, y = _blobs()
    clf = MLPClassifier((8,), random_state=0)
    for _ in range(3):
        clf.partial_fit(x, y, classes=[0, 1, 2])
    copy = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(copy.predict_proba(x), clf.predict_proba(x))
    clf.partial_fit(x, y)
    copy.partial_fit(x, y)  # the optimizer's moments and the generator came along
    assert clf.loss_curve_ == copy.loss_curve_ and clf.n_iter_ == 4
    assert np.array_equal(copy.predict_proba(x), clf.predict_proba(x))


def test_partial_fit_and_warm_start() -> None:
    x, y = _blobs()
    clf = MLPClassifier((8,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(x, y)
    clf.partial_fit(x[y < 2], y[y < 2], classes=[0, 1, 2])  # a class may come later
    assert list(clf.classes_) == [0, 1, 2] and clf.predict_proba(x).shape == (120, 3)
    with pytest.raises(ValueError, match="not in classes_"):
        clf.partial_fit(x, y + 1)
    clf.partial_fit(x, y, classes=[2, 1, 0])  # the same classes, in any order
    with pytest.raises(ValueError, match=r"classes=\[0, 1, 2, 5\] is not the same as on"):
        clf.partial_fit(x, y, classes=[0, 1, 2, 5])  # scikit-learn refuses it too
    warm = MLPClassifier((8,), max_iter=5, warm_start=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warm.fit(x, y)
        first = warm.model_
        warm.fit(x, y)
    assert warm.model_ is first and warm.n_iter_ == 10 == len(warm.loss_curve_)
    with pytest.raises(ValueError, match="warm_start"):
        warm.fit(x[y < 2], y[y < 2])


def test_early_stopping_keeps_the_best_epoch() -> None:
    x, y = _blobs(300, spread=1.5)  # overlapping classes: the validation score wavers
    params = {"early_stopping": True, "learning_rate_init": 0.01, "random_state": 0}
    clf = MLPClassifier((16,), max_iter=500, **params).fit(x, y)
    scores = clf.validation_scores_
    best = int(np.argmax(scores)) + 1  # measured: epoch 9 of 19, 0.9
    assert len(scores) == clf.n_iter_ == best + 10 and clf.best_loss_ is None
    assert clf.best_validation_score_ == max(scores) > 0.8
    # the weights are those after the best epoch: what a run stopped there ends with
    with pytest.warns(ConvergenceWarning):
        short = MLPClassifier((16,), max_iter=best, **params).fit(x, y)
    for kept, stopped in zip(clf.model_.parameters(), short.model_.parameters(), strict=True):
        assert kept.data.tobytes() == stopped.data.tobytes()


def test_stops_when_the_training_loss_stalls_else_warns() -> None:
    x, y = _blobs()
    clf = MLPClassifier((8,), tol=0.5, n_iter_no_change=2, max_iter=100, random_state=0)
    clf.fit(x, y)  # no loss gain of 0.5 for 2 epochs: stops, without a warning
    assert clf.n_iter_ < 100 and clf.best_loss_ == min(clf.loss_curve_)
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        MLPClassifier((8,), max_iter=3, random_state=0).fit(x, y)


def test_alpha_shrinks_the_weights_not_the_biases() -> None:
    """With a huge alpha the weights go to zero and the network predicts the class
    frequencies, which the output biases learn: they are not penalised."""
    x, _ = _blobs()
    y = np.repeat([0, 1, 2], [72, 24, 24])  # frequencies 0.6, 0.2, 0.2 (if the biases
    # were penalised too, they would go to zero and the probabilities to 1/3 each)

    def fitted(alpha: float) -> MLPClassifier:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            params = {"learning_rate_init": 0.05, "max_iter": 100, "random_state": 0}
            return MLPClassifier((8,), alpha=alpha, **params).fit(x, y)

    def weight_norm(clf: MLPClassifier) -> float:
        named = clf.model_.named_parameters()
        return sum(float(np.square(p.data).sum()) for n, p in named if n.endswith("weight"))

    free, penalised = fitted(0.0), fitted(1000.0)
    assert weight_norm(penalised) < 0.05 * weight_norm(free)  # measured 0.30 against 11.6
    mean_proba = penalised.predict_proba(x).mean(axis=0)  # measured 0.65, 0.17, 0.18
    np.testing.assert_allclose(mean_proba, [0.6, 0.2, 0.2], atol=0.1)


def test_regressor_fits_one_and_several_targets() -> None:
    gen = np.random.default_rng(0)
    x = gen.uniform(-1, 1, size=(200, 3))
    y = np.stack([x[:, 0] * x[:, 1], np.sin(2 * x[:, 2])], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one = MLPRegressor((32, 32), learning_rate_init=0.01, max_iter=200, random_state=0)
        two = clone(one).fit(x, y)
        one.fit(x, y[:, 1])
    assert one.predict(x).shape == (200,) and one.predict(x).dtype == np.float64
    assert two.predict(x).shape == (200, 2) and two.n_outputs_ == 2
    assert one.score(x, y[:, 1]) > 0.95 and two.score(x, y) > 0.95  # measured 0.999, 0.996


def test_dtype_float32_by_default_or_as_x() -> None:
    x, y = _blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = {
            (dtype, x_dtype): MLPClassifier((4,), max_iter=1, dtype=dtype).fit(x.astype(x_dtype), y)
            for dtype in ("float32", "float64", None)
            for x_dtype in (np.float32, np.float64, np.int64)
        }
    for (dtype, x_dtype), clf in fitted.items():
        expected = dtype or (np.float32 if x_dtype == np.float32 else np.float64)
        assert all(p.dtype == expected for p in clf.model_.parameters())
        assert clf.predict_proba(x).dtype == expected


def test_parameters_are_checked_in_fit() -> None:
    x, y = _blobs()
    for bad in (
        {"solver": "lbfgs"},
        {"activation": "softplus"},
        {"hidden_layer_sizes": (0,)},
        {"dtype": "float16"},
        {"early_stopping": True, "validation_fraction": 1.0},
    ):
        clf = MLPClassifier(**bad)  # scikit-learn's rule: __init__ only stores
        with pytest.raises(ValueError):
            clf.fit(x, y)
    with pytest.raises(ValueError, match="1 class"):
        MLPClassifier().fit(x, np.zeros(len(x)))


def test_verbose_prints_handgrads_epoch_lines(capsys: pytest.CaptureFixture[str]) -> None:
    x, y = _blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier((8,), max_iter=2, verbose=True, random_state=0).fit(x, y)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]


# -- imports and docs ---------------------------------------------------------------


def test_without_scikit_learn_the_import_error_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import handgrad\n"
        "try:\n    import handgrad.sklearn\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "needs scikit-learn" in out.stdout and "[sklearn]" in out.stdout


def test_readme_pipeline_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's scikit-learn example runs as written and prints the accuracy its
    comment shows (to 0.005: another BLAS build may change the last bits)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### With scikit-learn", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    (shown,) = re.findall(r"# test accuracy (0\.\d+)", code)
    monkeypatch.chdir(tmp_path)  # the example saves a file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        exec(compile(code, str(ROOT / "README.md"), "exec"), {})
    (printed,) = re.findall(r"test accuracy (0\.\d+)", capsys.readouterr().out)
    assert abs(float(printed) - float(shown)) < 0.005, (printed, shown)
    assert (tmp_path / "mnist-sklearn.npz").is_file()
