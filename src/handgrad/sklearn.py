"""scikit-learn estimators built on handgrad: :class:`MLPClassifier` and :class:`MLPRegressor`.

They take scikit-learn's parameters (``hidden_layer_sizes``, ``alpha``, ``max_iter``,
``early_stopping``, ...), pass its ``check_estimator``, and drop into a ``Pipeline``,
``GridSearchCV`` or ``cross_val_score``. Underneath is handgrad's public API and
nothing else: ``nn.Sequential`` holds ``nn.Linear`` layers and activations from
:data:`~handgrad.recipes.ACTIVATIONS`, an optimizer from
:data:`~handgrad.recipes.OPTIMIZERS` trains it, :func:`handgrad.train.fit` runs
the epochs with an :class:`~handgrad.callbacks.EarlyStopping` callback, and
:func:`handgrad.train.predict_proba` predicts. The trained network is ``est.model_``,
an ``nn.Sequential`` that ``handgrad.save(est.model_, path)`` writes.

Two differences from ``handgrad.train.fit``: ``X`` is used as numbers (integer
images are *not* divided by 255; put a scaler in front, as scikit-learn users do),
and the network computes in ``dtype``: float32 by default, as everywhere in handgrad
(about twice as fast as float64 on MNIST); ``dtype="float64"`` computes as
scikit-learn does with float64 data, and ``dtype=None`` follows ``X`` as scikit-learn's
own ``MLPClassifier`` does.

This module imports scikit-learn; ``import handgrad`` does not import this module.
Install it with ``pip install "handgrad[sklearn]"``.
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    from handgrad._install import install_hint

    raise ImportError(f"handgrad.sklearn needs scikit-learn: {install_hint('sklearn')}") from exc

from handgrad.callbacks import Callback, EarlyStopping
from handgrad.data.split import train_val_split
from handgrad.nn import CrossEntropyLoss, Linear, Module, MSELoss, Sequential
from handgrad.nn.init import xavier_uniform
from handgrad.nn.loss import Loss
from handgrad.recipes import ACTIVATIONS, OPTIMIZERS
from handgrad.train import fit, model_dtype, predict, predict_proba, predict_scores

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names, on top of handgrad's own (recipes.ACTIVATIONS)
_ALIASES = {"logistic": "sigmoid"}


def _as_given(x: np.ndarray) -> np.ndarray:
    """The batch transform: X is already validated and cast to the model's dtype."""
    return x


def _generator(random_state: Any) -> np.random.Generator:
    """The fit's one source of randomness (initial weights, shuffling, the split).

    An int seeds it directly (``random_state=0`` draws what ``rng=0`` draws elsewhere
    in handgrad); a ``RandomState`` or ``Generator`` is a shared source, so each fit
    draws a fresh seed from it and advances it, as scikit-learn's convention has it.
    """
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**32, size=4, dtype=np.uint32))
    if isinstance(random_state, np.random.Generator):
        return np.random.default_rng(random_state.integers(0, 2**32, size=4, dtype=np.uint32))
    raise ValueError(
        "random_state must be an int, None, a numpy.random.RandomState or a "
        f"numpy.random.Generator, got {random_state!r}"
    )


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, network, training."""

    _monitor: str  # what early stopping watches in the epoch logs
    model_: Sequential
    _optim: Any

    def __init__(
        self,
        hidden_layer_sizes: int | tuple[int, ...] = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 1e-4,
        batch_size: int | str = "auto",
        learning_rate_init: float = 1e-3,
        max_iter: int = 200,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        dtype: str | None = "float32",
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype

    # -- subclasses: targets and loss ---------------------------------------------

    def _targets(
        self, y: np.ndarray, first: bool, partial: bool, classes: Any, dtype: np.dtype
    ) -> np.ndarray:
        raise NotImplementedError

    def _loss(self) -> Loss:
        raise NotImplementedError

    # -- checks (in fit, not __init__: scikit-learn's rule) ----------------------------

    def _hidden(self) -> list[int]:
        given = self.hidden_layer_sizes
        sizes = [given] if isinstance(given, (int, np.integer)) else list(given)
        if not all(isinstance(s, (int, np.integer)) and s >= 1 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive ints, got {sizes!r}")
        return [int(s) for s in sizes]

    def _check_params(self) -> None:
        activation = _ALIASES.get(self.activation, self.activation)
        if activation not in ACTIVATIONS and activation != "identity":
            choices = sorted([*ACTIVATIONS, *_ALIASES, "identity"])
            raise ValueError(f"activation must be one of {choices}, got {self.activation!r}")
        if self.solver not in OPTIMIZERS:
            raise ValueError(
                f"solver must be one of {sorted(OPTIMIZERS)} (handgrad has no lbfgs), "
                f"got {self.solver!r}"
            )
        if self.dtype is not None and np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if not (self.max_iter >= 1 and self.n_iter_no_change >= 1):
            raise ValueError("max_iter and n_iter_no_change must be >= 1")
        if not (self.alpha >= 0 and self.tol >= 0 and self.learning_rate_init > 0):
            raise ValueError("alpha and tol must be >= 0, learning_rate_init > 0")
        if self.early_stopping and not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}"
            )
        if self.batch_size != "auto" and not isinstance(self.batch_size, (int, np.integer)):
            raise ValueError(f"batch_size must be 'auto' or an int, got {self.batch_size!r}")

    def _batch(self, n: int) -> int:
        if isinstance(self.batch_size, str):  # "auto", as scikit-learn has it
            return min(200, n)
        if not 1 <= self.batch_size <= n:
            warnings.warn(
                f"batch_size {self.batch_size} is outside [1, {n}] (the training samples): "
                "it is clipped",
                UserWarning,
                stacklevel=3,
            )
        return int(np.clip(self.batch_size, 1, n))

    # -- the network and its optimizer --------------------------------------------------

    def _network(self, n_in: int, n_out: int, dtype: np.dtype) -> Sequential:
        """``[Linear -> activation] * len(hidden_layer_sizes) -> Linear``, raw scores out.

        The weights start as scikit-learn's do, Glorot-uniform: ``U(-b, b)`` with
        ``b = sqrt(6 / (fan_in + fan_out))`` (``sqrt(2 / ...)`` for the logistic),
        smaller than handgrad's He default where layers widen (0.23 against 0.77 for
        10 -> 100): what scikit-learn's default learning rate and epochs are made for.
        """
        activation = _ALIASES.get(self.activation, self.activation)
        gain = math.sqrt(1 / 3) if activation == "sigmoid" else 1.0
        init = partial(xavier_uniform, gain=gain)
        layers: list[Module] = []
        width = n_in
        for size in [*self._hidden(), n_out]:
            if layers and activation != "identity":
                layers.append(ACTIVATIONS[activation]())
            layers.append(Linear(width, size, rng=self._rng, weight_init=init, dtype=dtype))
            width = size
        return Sequential(*layers)

    def _new_optimizer(self, batch: int) -> Any:
        """``solver`` from handgrad's registry; ``alpha`` is an L2 penalty on the weights
        (not the biases), scaled as scikit-learn scales it: ``alpha / batch_size``."""
        named = list(self.model_.named_parameters())
        weights = [p for name, p in named if name.endswith("weight")]
        biases = [p for name, p in named if name.endswith("bias")]
        groups = [
            {"params": weights, "weight_decay": float(self.alpha) / batch},
            {"params": biases, "weight_decay": 0.0},
        ]
        return OPTIMIZERS[self.solver](groups, self.learning_rate_init, 0.0)

    # -- training ---------------------------------------------------------------------

    def _fit(self, X: Any, y: Any, *, partial: bool, classes: Any = None) -> Any:
        self._check_params()
        fitted = hasattr(self, "model_")
        first = not fitted or (not partial and not self.warm_start)
        if not first:
            dtype: Any = model_dtype(self.model_)  # a network keeps its dtype
        elif self.dtype is None:
            dtype = (np.float64, np.float32)  # keeps float32 X, makes the rest float64
        else:
            dtype = np.dtype(self.dtype)
        multi = isinstance(self, RegressorMixin)
        X, y = validate_data(
            self, X, y, reset=first, dtype=dtype, multi_output=multi, y_numeric=multi
        )
        dtype = X.dtype
        target = self._targets(y, first, partial, classes, dtype)
        if first:
            self._rng = _generator(self.random_state)
            n_out = len(self.classes_) if not multi else target.shape[1]
            self.model_ = self._network(X.shape[1], n_out, dtype)
            self.loss_curve_: list[float] = []
            self.n_iter_ = 0
            self.best_loss_: float | None = None
            self.validation_scores_: list[float] | None = [] if self.early_stopping else None
            self.best_validation_score_: float | None = None

        val = None
        stop_early = self.early_stopping and not partial
        if stop_early:
            X, target, x_val, y_val = train_val_split(
                X, target, self.validation_fraction, self._rng, stratify=not multi
            )
            if len(x_val) == 0:
                n = len(X)
                raise ValueError(
                    f"early_stopping needs validation samples, and validation_fraction="
                    f"{self.validation_fraction} of {n} sample{'s' * (n != 1)} leaves none: "
                    "raise it, or set early_stopping=False"
                )
            val = (x_val, y_val)
        batch = self._batch(len(X))
        if partial and hasattr(self, "_optim"):
            optimizer = self._optim  # partial_fit keeps Adam's moments from call to call
        else:
            optimizer = self._optim = self._new_optimizer(batch)

        callbacks: list[Callback] = []
        if not partial:  # stop when the monitored value stops improving by tol
            monitor = self._monitor if stop_early else "loss"
            min_delta = self.tol * (self._val_scale(val[1]) if val is not None else 1.0)
            callbacks.append(
                EarlyStopping(monitor, self.n_iter_no_change, min_delta, "auto", stop_early)
            )
        epochs = 1 if partial else int(self.max_iter)
        history = fit(
            self.model_,
            self._loss(),
            optimizer,
            (X, target),
            val,
            epochs=self.n_iter_ + epochs,
            initial_epoch=self.n_iter_,  # a warm start counts on: epoch 201/400
            batch_size=batch,
            rng=self._rng,
            callbacks=callbacks,
            transform=_as_given,
            verbose=1 if self.verbose else 0,  # fit's own display: a line per epoch
        )
        self.n_iter_ += history.epochs
        self.loss_curve_ += history["loss"]
        if self.validation_scores_ is not None and val is not None:
            self.validation_scores_ += self._val_scores(history[self._monitor], val[1])
            self.best_validation_score_ = max(self.validation_scores_)
        else:
            self.best_loss_ = min(self.loss_curve_)
        if self.verbose and history.stop_reason:
            print(history.stop_reason)
        if not partial and history.stop_reason is None:
            warnings.warn(
                f"{type(self).__name__}: max_iter={self.max_iter} epochs reached and the "
                "loss is still improving; raise max_iter",
                ConvergenceWarning,
                stacklevel=3,
            )
        return self

    def _val_scale(self, y_val: np.ndarray) -> float:
        return 1.0

    def _val_scores(self, monitored: list[float], y_val: np.ndarray) -> list[float]:
        return monitored

    def fit(self, X: Any, y: Any) -> Any:
        """Train for up to ``max_iter`` epochs (a warm start continues the network).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) (or (n_samples, n_outputs) for the regressor)
        """
        return self._fit(X, y, partial=False)

    def _checked(self, X: Any) -> np.ndarray:
        """``X`` validated against the fit (features, names) and cast to the model's dtype."""
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=model_dtype(self.model_))


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier with scikit-learn's interface, trained by handgrad.

    ``[Linear -> activation] * len(hidden_layer_sizes) -> Linear`` with a softmax
    cross-entropy loss (two outputs for two classes).

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int
        Units of each hidden layer; ``()`` gives a softmax regression.
    activation : str
        handgrad's (``relu``, ``gelu``, ``tanh``, ``sigmoid``, ...) or scikit-learn's
        (``identity``, ``logistic``, ``tanh``, ``relu``).
    solver : str
        ``adam``, ``sgd`` (momentum 0.9, Nesterov), ``adamw``, ``rmsprop``, ``adagrad``
        or ``lion``, at a constant ``learning_rate_init``.
    alpha : float
        L2 penalty on the weights, as scikit-learn's: the optimizer's weight decay
        is ``alpha / batch_size`` (decoupled for ``adamw`` and ``lion``).
    batch_size : int or "auto"
        ``"auto"`` is ``min(200, n_samples)``.
    max_iter : int
        Epochs (passes over the data) per ``fit``.
    tol, n_iter_no_change : float, int
        Stop when the training loss (with ``early_stopping``, the validation accuracy)
        has not improved by ``tol`` for ``n_iter_no_change`` epochs in a row.
    early_stopping, validation_fraction : bool, float
        Hold out a stratified ``validation_fraction`` of the data and keep the weights
        of the epoch with the best validation accuracy.
    random_state : int, None, RandomState or Generator
        Seeds the one ``numpy.random.Generator`` behind initial weights, shuffling and
        the validation split.
    verbose : bool
        Print one line per epoch (``handgrad.train.fit``'s ``verbose=1``: a progress bar
        too, on a terminal); silent otherwise, in a terminal too.
    warm_start : bool
        ``fit`` continues the previous network instead of starting a new one.
    dtype : str or None
        What the network computes in: ``"float32"`` (handgrad's default, about twice
        as fast) or ``"float64"``; None follows ``X`` as scikit-learn does
        (float32 ``X`` stays float32, anything else becomes float64). In float32 the
        probabilities of a row can differ in the last bit (1e-7) between predicting
        it alone and in a batch (the BLAS takes another path for one row).

    Attributes
    ----------
    model_ : handgrad.nn.Sequential
        The trained network; it outputs raw scores (``handgrad.save(model_, path)``).
    classes_, n_features_in_, feature_names_in_ : as in scikit-learn
    loss_curve_ : list of float
        Mean cross-entropy per epoch (the data term, without the L2 penalty).
    n_iter_ : int
        Epochs trained, over all ``fit`` (warm start) and ``partial_fit`` calls.
    best_loss_, validation_scores_, best_validation_score_ : as in scikit-learn
    """

    _monitor = "val_accuracy"

    def _targets(
        self, y: np.ndarray, first: bool, partial: bool, classes: Any, dtype: np.dtype
    ) -> np.ndarray:
        check_classification_targets(y)
        seen = np.unique(y)
        if first:
            if partial and classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            self.classes_ = np.unique(classes) if partial else seen
            if len(self.classes_) < 2:
                raise ValueError(
                    f"{type(self).__name__} needs at least two classes, got 1 class: "
                    f"{self.classes_!r}"
                )
        elif (
            partial
            and classes is not None
            and not np.array_equal(np.unique(classes), self.classes_)
        ):
            raise ValueError(
                f"classes={np.unique(classes).tolist()!r} is not the same as on the first call "
                f"to partial_fit, {self.classes_.tolist()!r}"
            )
        elif not partial and not np.array_equal(seen, self.classes_):
            raise ValueError(
                f"warm_start needs y to have the classes of the previous fit, {self.classes_!r}; "
                f"y has {seen!r}"
            )
        if not np.isin(seen, self.classes_).all():
            raise ValueError(
                f"y has classes {seen[~np.isin(seen, self.classes_)]!r} that are not in "
                f"classes_ {self.classes_!r}"
            )
        return np.searchsorted(self.classes_, y).astype(np.int64)

    def _loss(self) -> Loss:
        return CrossEntropyLoss()

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MLPClassifier:
        """One epoch over ``(X, y)``; the first call needs every class in ``classes``."""
        return self._fit(X, y, partial=True, classes=classes)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, ``(n_samples, n_classes)``, in the model's dtype."""
        X = self._checked(X)
        return predict_proba(self.model_, X, transform=_as_given)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample, from ``classes_``."""
        X = self._checked(X)
        return self.classes_[predict(self.model_, X, transform=_as_given)]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor with scikit-learn's interface, trained by handgrad.

    The same network and parameters as :class:`MLPClassifier`, with a linear output
    per target and a mean-squared-error loss (so ``loss_curve_`` is twice
    scikit-learn's, which halves it). Early stopping watches the validation R²
    (``validation_scores_``; for several targets, their variance-weighted R²).
    """

    _monitor = "val_loss"

    def _targets(
        self, y: np.ndarray, first: bool, partial: bool, classes: Any, dtype: np.dtype
    ) -> np.ndarray:
        target = np.asarray(y, dtype=dtype).reshape(len(y), -1)  # (N, n_outputs)
        if first:
            self.n_outputs_ = target.shape[1]
        elif target.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {target.shape[1]} targets, the network {self.n_outputs_}")
        return target

    def _loss(self) -> Loss:
        return MSELoss()

    def _val_scale(self, y_val: np.ndarray) -> float:
        # tol is in units of R², and 1 - R² = MSE / (mean variance of the targets)
        return float(np.var(y_val, axis=0).mean()) or 1.0

    def _val_scores(self, monitored: list[float], y_val: np.ndarray) -> list[float]:
        return [1.0 - mse / self._val_scale(y_val) for mse in monitored]

    def partial_fit(self, X: Any, y: Any) -> MLPRegressor:
        """One epoch over ``(X, y)``, continuing the network (a new one on the first call)."""
        return self._fit(X, y, partial=True)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets, float64 (as scikit-learn expects of a regressor, whatever
        ``dtype`` the network computes in): ``(n_samples,)`` for one target, else
        ``(n_samples, n_outputs)``."""
        X = self._checked(X)
        out = predict_scores(self.model_, X, transform=_as_given).astype(np.float64)
        return out.ravel() if out.shape[1] == 1 else out

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
