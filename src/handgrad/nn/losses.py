"""Loss functions on raw scores, with PyTorch's definitions and argument names.

Every loss returns a Python ``float`` and ``backward(dloss=1.0)`` returns the
gradient with respect to the scores, in their shape and dtype. The
classification losses work from ``log_softmax`` (log-sum-exp), so they stay
finite for logits of any size.
"""

from __future__ import annotations

import numpy as np

from handgrad.nn._validation import check_float_array
from handgrad.nn.functional import log_softmax
from handgrad.nn.loss import Loss

# -- target checks ---------------------------------------------------------------------


def _class_scores(x: object, where: str) -> tuple[np.ndarray, int]:
    """Scores ``(N, C)`` or ``(N, C, d1, ...)`` -> ``(M, C)`` rows (class axis last)."""
    arr = check_float_array(x, where)
    if arr.ndim < 2:
        raise ValueError(f"{where} expects scores of shape (N, C), got shape {arr.shape}")
    if arr.ndim > 2:
        arr = np.moveaxis(arr, 1, -1)
    return arr.reshape(-1, arr.shape[-1]), arr.shape[-1]


def _restore(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Undo :func:`_class_scores`' reshaping for a gradient."""
    if len(shape) == 2:
        return grad
    moved = (shape[0], *shape[2:], shape[1])
    return np.moveaxis(grad.reshape(moved), -1, 1)


def _not_class_indices(
    t: np.ndarray, expected: tuple[int, ...], where: str, probabilities: tuple[int, ...] = ()
) -> TypeError:
    """The error for float (or other non-integer) labels where class indices of shape
    ``expected`` belong (or probabilities of shape ``probabilities``, for a loss that
    takes them): labels read from a CSV file or a pandas column are float64 holding
    whole numbers, and the fix is one cast."""
    what = f"{where} expects integer class indices of shape {expected}"
    if probabilities:
        what += f" (or probabilities of shape {probabilities})"
    got = f"got {t.dtype} labels of shape {t.shape}"
    if not (np.issubdtype(t.dtype, np.floating) and t.size == int(np.prod(expected))):
        return TypeError(f"{what}, {got}")
    if not (np.all(np.isfinite(t)) and np.all(t == np.round(t))):
        return TypeError(f"{what}, {got}, not whole numbers: class labels are 0, 1, 2...")
    if t.shape == expected:
        cast = "y.astype(int)"
    elif len(expected) == 1:
        cast = "y.reshape(-1).astype(int)"
    else:
        cast = f"y.reshape{expected}.astype(int)"
    return TypeError(
        f"{what}, {got}: whole numbers stored as floats (as read from a CSV file or a "
        f"pandas column); convert them with {cast}"
    )


def _class_targets(
    target: object, shape: tuple[int, ...], n_classes: int, ignore_index: int | None, where: str
) -> np.ndarray:
    t = np.asarray(target)
    expected = (shape[0], *shape[2:])
    if t.dtype.kind not in "iu":  # not np.integer
        raise _not_class_indices(t, expected, where)
    if t.shape != expected:
        raise ValueError(f"{where} expects targets of shape {expected}, got {t.shape}")
    t = t.reshape(-1)
    if t.size and 0 <= t.min() and t.max() < n_classes:
        return t  # every label a class (the usual case: two reductions, no masks)
    bad = (t < 0) | (t >= n_classes)
    if ignore_index is not None:
        bad &= t != ignore_index
    if bad.any():
        raise ValueError(
            f"{where}: target {int(t[bad][0])} is out of range for {n_classes} classes "
            f"(valid: 0..{n_classes - 1})"
        )
    return t


def _kept_rows(t: np.ndarray, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows whose label is not ``ignore_index``, and (a copy of) their labels."""
    ignored = t == ignore_index
    if not ignored.any():
        return np.arange(t.size), t.copy()  # every row counts: no mask to apply
    rows = np.flatnonzero(~ignored)
    return rows, t[rows]


def _scores_and_classes(input: object, target: object, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(N, C)`` (exactly 2-D) and their integer class targets ``(N,)``."""
    x = check_float_array(input, where)
    if x.ndim != 2:
        raise ValueError(f"{where} expects scores of shape (N, C), got {x.shape}")
    return x, _class_targets(target, x.shape, x.shape[1], None, where)


def _same_shape_target(target: object, x: np.ndarray, where: str) -> np.ndarray:
    t = np.asarray(target)
    if not np.issubdtype(t.dtype, np.floating):
        raise TypeError(f"{where} expects floating-point targets, got dtype {t.dtype}")
    if t.shape != x.shape:
        raise ValueError(f"{where} expects targets of shape {x.shape} (the input's), got {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"{where}: targets contain NaN or infinite values")
    return t.astype(x.dtype, copy=False)


def _class_weight(weight: object, n_classes: int, dtype: np.dtype, where: str) -> np.ndarray | None:
    if weight is None:
        return None
    w = np.asarray(weight, dtype=dtype)
    if w.shape != (n_classes,):
        raise ValueError(f"{where}: weight must have shape ({n_classes},), got {w.shape}")
    return w


def _scale(loss: Loss, dloss: float, denom: float) -> float:
    return dloss / denom if loss.reduction == "mean" else dloss


# -- losses ------------------------------------------------------------------------------


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on logits, fused through log-sum-exp.

    With class indices ``t``, weights ``w`` (ones by default) and smoothing ``e``,
    each sample's target distribution is ``q = (1 - e) w_t onehot(t) + (e / C) w``
    and its loss ``-sum_c q_c log softmax(x)_c``; ``mean`` divides the total by
    ``sum_i w_{t_i}`` over non-ignored samples, as PyTorch does. Probability
    targets ``P`` use ``q = w * ((1 - e) P + e / C)`` and ``mean`` divides by N.
    The gradient is ``(softmax(x) * sum_c q_c - q) / denominator``.

    Shape: scores ``(N, C)`` or ``(N, C, d1, ...)``; targets ``(N, d1, ...)`` integer
    or the scores' shape (probabilities).
    """

    def __init__(
        self,
        weight: np.ndarray | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        self.weight = None if weight is None else np.asarray(weight, dtype=np.float64)
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)

    def forward(self, input: np.ndarray, target: np.ndarray) -> float:
        x, c = _class_scores(input, "CrossEntropyLoss")
        logp = log_softmax(x, axis=1)  # (M, C)
        w = _class_weight(self.weight, c, x.dtype, "CrossEntropyLoss")
        e = x.dtype.type(self.label_smoothing)
        if np.asarray(target).dtype.kind in "iu":  # np.integer
            t = _class_targets(target, input.shape, c, self.ignore_index, "CrossEntropyLoss")
            rows, tk = _kept_rows(t, self.ignore_index)
            w_t = np.ones(len(rows), x.dtype) if w is None else w[tk]
            nll = -logp[rows, tk]  # (K,)
            total = float(np.dot(w_t, nll)) * (1.0 - self.label_smoothing)
            if self.label_smoothing:
                kept = logp if len(rows) == len(logp) else logp[rows]  # (K, C)
                smooth = -(kept if w is None else kept * w).sum(axis=1)
                total += float(smooth.sum()) * self.label_smoothing / c
            denom = float(len(rows)) if w is None else float(w_t.sum())  # ones sum exactly
            self._cache = ("index", logp, rows, tk, w_t, w, input.shape, denom)
        else:
            t = np.asarray(target)
            indices = (input.shape[0], *input.shape[2:])
            if t.shape != input.shape and t.size == int(np.prod(indices)):
                # not probabilities but class labels in a float dtype (a CSV column)
                raise _not_class_indices(t, indices, "CrossEntropyLoss", input.shape)
            p = _same_shape_target(target, input, "CrossEntropyLoss")
            p2 = p if p.ndim == 2 else np.moveaxis(p, 1, -1).reshape(-1, c)
            if (p2 < 0).any() or not np.allclose(p2.sum(axis=1), 1.0, atol=1e-3):
                raise ValueError(
                    "CrossEntropyLoss: probability targets must be non-negative with rows "
                    "summing to 1 along the class axis"
                )
            q = p2 * (1 - e) + e / c
            if w is not None:
                q = q * w
            total = float(-(q * logp).sum())
            denom = float(x.shape[0])
            self._cache = ("prob", logp, q, input.shape, denom)
        return total / denom if self.reduction == "mean" else total

    def backward(self, dloss: float = 1.0) -> np.ndarray:
        cache = self._cached()
        if cache[0] == "index":
            _, logp, rows, tk, w_t, w, shape, denom = cache
            e = self.label_smoothing
            c = logp.shape[1]
            every = len(rows) == len(logp)  # no sample ignored: g is the whole gradient
            dx = np.empty_like(logp) if every else np.zeros_like(logp)
            if len(rows):
                p = np.exp(logp if every else logp[rows])  # (K, C) softmax
                w_sum = float(logp.shape[1]) if w is None else float(w.sum())
                if w is None:  # w_t is all ones: the same numbers, as scalars
                    t = logp.dtype.type
                    mass = t(1 - e) + t(e / c * w_sum)  # sum_c q_c, every sample's
                    g = p if mass == 1 else np.multiply(p, mass, out=p)
                    hit: np.ndarray | np.floating = t(1 - e)
                else:
                    mass_k = (1 - e) * w_t + e / c * w_sum  # (K,) sum_c q_c per sample
                    g = np.multiply(p, mass_k[:, None].astype(logp.dtype), out=p)
                    hit = (1 - e) * w_t
                if e:
                    g -= (e / c) * (1.0 if w is None else w)
                g[np.arange(len(rows)), tk] -= hit
                if every:
                    dx = g
                else:
                    dx[rows] = g
        else:
            _, logp, q, shape, denom = cache
            dx = np.exp(logp) * q.sum(axis=1, keepdims=True) - q
        dx *= dx.dtype.type(_scale(self, dloss, denom))
        return _restore(dx.astype(logp.dtype, copy=False), shape)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"


class NLLLoss(Loss):
    """Negative log-likelihood of log-probabilities: ``-w_t x[t]``, ``mean`` divides by
    ``sum w_t`` over non-ignored samples.

    Shape: input ``(N, C)`` log-probabilities, target ``(N,)`` integer.
    """

    def __init__(
        self, weight: np.ndarray | None = None, ignore_index: int = -100, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        self.weight = None if weight is None else np.asarray(weight, dtype=np.float64)
        self.ignore_index = int(ignore_index)

    def forward(self, input: np.ndarray, target: np.ndarray) -> float:
        x, c = _class_scores(input, "NLLLoss")
        t = _class_targets(target, input.shape, c, self.ignore_index, "NLLLoss")
        rows = np.flatnonzero(t != self.ignore_index)
        tk = t[rows]
        w = _class_weight(self.weight, c, x.dtype, "NLLLoss")
        w_t = np.ones(len(rows), x.dtype) if w is None else w[tk]
        total = float(-np.dot(w_t, x[rows, tk]))
        denom = float(w_t.sum())
        self._cache = (x.shape, x.dtype, rows, tk, w_t, input.shape, denom)
        return total / denom if self.reduction == "mean" else total

    def backward(self, dloss: float = 1.0) -> np.ndarray:
        shape2, dtype, rows, tk, w_t, shape, denom = self._cached()
        dx = np.zeros(shape2, dtype)
        dx[rows, tk] = -w_t * _scale(self, dloss, denom)
        return _restore(dx, shape)


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits: ``-[pw y log s(x) + (1 - y) log(1 - s(x))]``.

    Computed stably as ``(1 - y) x + (1 + (pw - 1) y) softplus(-x)``; gradient
    ``(1 - y) - (1 + (pw - 1) y) sigmoid(-x)``. ``pos_weight`` broadcasts over the
    last axis.

    Shape: input any, target the same shape with values in [0, 1].
    """

    def __init__(self, reduction: str = "mean", pos_weight: np.ndarray | None = None) -> None:
        super().__init__(reduction)
        self.pos_weight = None if pos_weight is None else np.asarray(pos_weight, dtype=np.float64)

    def forward(self, input: np.ndarray, target: np.ndarray) -> float:
        x = check_float_array(input, "BCEWithLogitsLoss")
        y = _same_shape_target(target, x, "BCEWithLogitsLoss")
        if (y < 0).any() or (y > 1).any():
            raise ValueError("BCEWithLogitsLoss: targets must lie in [0, 1]")
        one = x.dtype.type(1)
        lw = one if self.pos_weight is None else one + (self.pos_weight.astype(x.dtype) - one) * y
        softplus_neg = np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0)  # log(1 + e^-x), stable
        total = float(((one - y) * x + lw * softplus_neg).sum())
        self._cache = (x, y, lw)
        return total / x.size if self.reduction == "mean" else total

    def backward(self, dloss: float = 1.0) -> np.ndarray:
        x, y, lw = self._cached()
        e = np.exp(-np.abs(x))
        one = x.dtype.type(1)
        sig_neg = np.where(x >= 0, e / (one + e), one / (one + e))  # sigmoid(-x)
        dx = (one - y) - lw * sig_neg
        return dx * x.dtype.type(_scale(self, dloss, x.size))


class _Regression(Loss):
    def _diff(self, input: np.ndarray, target: np.ndarray) -> np.ndarray:
        x = check_float_array(input, type(self).__name__)
        y = _same_shape_target(target, x, type(self).__name__)
        d = x - y
        self._cache = d
        return d

    def _reduce(self, values: np.ndarray) -> float:
        total = float(values.sum())
        return total / values.size if self.reduction == "mean" else total


class MSELoss(_Regression):
    """Mean squared error ``(x - y)^2``; gradient ``2 (x - y)``. Shape: any, same for target."""

    def forward(self, input: np.ndarray, target: np.ndarray) -> float:
        d = self._diff(input, target)
        return self._reduce(d * d)

    def backward(self, dloss: float = 1.0) -> np.ndarray:
        d = self._cached()
        return d * d.dtype.type(2 * _scale(self, dloss, d.size))


class L1Loss(_Regression):
    """Mean absolute error ``|x - y|``; gradient ``sign(x - y)`` (0 at 0). Shape: any."""

    def forward(self, input: np.ndarray, target: np.ndarray) -> float:
        return self._reduce(np.abs(self._diff(input, target)))

    def backward(self, dloss: float = 1.0) -> np.ndarray:
        d = self._cached()
        return np.sign(d) * d.dtype.type(_scale(self, dloss, d.size))


class HuberLoss(_Regression):
    """``0.5 d^2`` for ``|d| < delta``, ``delta (|d| - 0.5 delta)`` beyond; ``d = x - y``.

    Gradient ``d`` inside, ``delta * sign(d)`` outside. Shape: any.
    """

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        if not delta > 0:
            raise ValueError(f"HuberLoss delta must be positive, got {delta}")
        self.delta = float(delta)

    def forward(self, input: np.ndarray, target: np.ndarray) -> float:
        d = self._diff(input, target)
        a = np.abs(d)
        t = d.dtype.type
        return self._reduce(
            np.where(a < self.delta, t(0.5) * d * d, t(self.delta) * (a - t(0.5 * self.delta)))
        )

    def backward(self, dloss: float = 1.0) -> np.ndarray:
        d = self._cached()
        g = np.clip(d, -self.delta, self.delta)
        return g * d.dtype.type(_scale(self, dloss, d.size))

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, delta={self.delta}"


class MultiMarginLoss(Loss):
    """Multiclass hinge loss (PyTorch's): ``sum_{i != y} w_y max(0, margin - x_y + x_i)^p / C``.

    Shape: input ``(N, C)``, target ``(N,)`` integer.
    """

    def __init__(
        self,
        p: int = 1,
        margin: float = 1.0,
        weight: np.ndarray | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        if p not in (1, 2):
            raise ValueError(f"MultiMarginLoss supports p=1 or p=2, got {p}")
        self.p = p
        self.margin = float(margin)
        self.weight = None if weight is None else np.asarray(weight, dtype=np.float64)

    def forward(self, input: np.ndarray, target: np.ndarray) -> float:
        x, t = _scores_and_classes(input, target, "MultiMarginLoss")
        n, c = x.shape
        rows = np.arange(n)
        z = x.dtype.type(self.margin) - x[rows, t][:, None] + x  # (N, C)
        z[rows, t] = 0  # the target class itself does not count
        active = np.maximum(z, 0)
        w = _class_weight(self.weight, c, x.dtype, "MultiMarginLoss")
        w_t = np.ones(n, x.dtype) if w is None else w[t]
        per = (active if self.p == 1 else active * active).sum(axis=1) * w_t / c
        self._cache = (active, t, w_t, c)
        total = float(per.sum())
        return total / n if self.reduction == "mean" else total

    def backward(self, dloss: float = 1.0) -> np.ndarray:
        active, t, w_t, c = self._cached()
        n = active.shape[0]
        dz = (active > 0).astype(active.dtype) if self.p == 1 else 2 * active  # (N, C)
        dz *= (w_t / c)[:, None]
        dx = dz.copy()
        dx[np.arange(n), t] -= dz.sum(axis=1)
        return dx * active.dtype.type(_scale(self, dloss, n))

    def extra_repr(self) -> str:
        return f"p={self.p}, margin={self.margin}, reduction={self.reduction!r}"


class FocalLoss(Loss):
    """Multiclass focal loss (Lin et al., 2017): ``-alpha_t (1 - p_t)^gamma log p_t``.

    With ``p = softmax(x)`` and ``l = log p_t``, the gradient w.r.t. the logits is
    ``A (p - onehot(t))`` with ``A = alpha_t [(1 - p_t)^gamma - gamma p_t (1 - p_t)^(gamma - 1) l]``
    (product rule on ``(1 - p_t)^gamma`` and ``l``, using ``dp_t/dx = p_t (onehot - p)``
    and ``dl/dx = onehot - p``). ``gamma = 0`` and no ``alpha`` is cross-entropy.
    ``mean`` averages over samples.

    Shape: input ``(N, C)``, target ``(N,)`` integer.
    """

    def __init__(
        self, gamma: float = 2.0, alpha: np.ndarray | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        if gamma < 0:
            raise ValueError(f"FocalLoss gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else np.asarray(alpha, dtype=np.float64)

    def forward(self, input: np.ndarray, target: np.ndarray) -> float:
        x, t = _scores_and_classes(input, target, "FocalLoss")
        n, c = x.shape
        logp = log_softmax(x, axis=1)
        lt = logp[np.arange(n), t]  # (N,) log p_t
        one_minus = -np.expm1(lt)  # 1 - p_t, accurate when p_t is near 1
        a = _class_weight(self.alpha, c, x.dtype, "FocalLoss")
        a_t = np.ones(n, x.dtype) if a is None else a[t]
        per = -a_t * one_minus**self.gamma * lt
        self._cache = (logp, t, lt, one_minus, a_t)
        total = float(per.sum())
        return total / n if self.reduction == "mean" else total

    def backward(self, dloss: float = 1.0) -> np.ndarray:
        logp, t, lt, one_minus, a_t = self._cached()
        n = logp.shape[0]
        g = self.gamma
        p_t = np.exp(lt)
        # (1 - p_t)^(gamma - 1) * p_t * l, taken as 0 where 1 - p_t == 0 (its limit for gamma > 0)
        safe = np.where(one_minus > 0, one_minus, 1)
        tail = np.where(one_minus > 0, safe ** (g - 1), 0) * p_t * lt
        amp = a_t * (one_minus**g - g * tail)  # (N,)
        dx = np.exp(logp)
        dx[np.arange(n), t] -= 1
        dx *= amp[:, None]
        return dx * logp.dtype.type(_scale(self, dloss, n))

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, reduction={self.reduction!r}"
