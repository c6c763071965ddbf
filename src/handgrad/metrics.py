"""Classification metrics: accuracy, confusion matrix, precision/recall/F1, a text report."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def _labels(y: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D class labels, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    return arr


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.shape[0]} labels but y_pred has {p.shape[0]}")
    return t, p


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of labels predicted exactly."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p)) if t.size else 0.0


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None
) -> np.ndarray:
    """``cm[i, j]`` = number of samples of true class ``i`` predicted as ``j``.

    Shape: ``(num_classes, num_classes)``, int64.
    """
    t, p = _pair(y_true, y_pred)
    k = (
        int(num_classes)
        if num_classes is not None
        else int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    )
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= k):
        raise ValueError(
            f"labels must lie in [0, {k}), got values in [{min(t.min(), p.min())}, "
            f"{max(t.max(), p.max())}]"
        )
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


class ClassScores(NamedTuple):
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray


def precision_recall_f1(cm: np.ndarray) -> ClassScores:
    """Per-class precision, recall, F1 and support from a confusion matrix (0 where undefined)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    return ClassScores(precision, recall, f1, support.astype(np.int64))


def classification_report(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    digits: int = 4,
) -> str:
    """A plain-text table of per-class precision, recall, F1 and support, with averages."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    scores = precision_recall_f1(cm)
    names = class_names or [str(i) for i in range(cm.shape[0])]
    width = max(12, *(len(n) for n in names))
    head = f"{'':>{width}} {'precision':>10} {'recall':>10} {'f1-score':>10} {'support':>10}"
    rows = [head, ""]
    for i, name in enumerate(names):
        rows.append(
            f"{name:>{width}} {scores.precision[i]:>10.{digits}f} {scores.recall[i]:>10.{digits}f} "
            f"{scores.f1[i]:>10.{digits}f} {scores.support[i]:>10d}"
        )
    total = int(scores.support.sum())
    acc = float(np.trace(cm) / total) if total else 0.0
    weights = scores.support / total if total else np.zeros_like(scores.precision)
    rows.append("")
    rows.append(f"{'accuracy':>{width}} {'':>10} {'':>10} {acc:>10.{digits}f} {total:>10d}")
    for label, avg in (
        ("macro avg", lambda v: float(np.mean(v))),
        ("weighted avg", lambda v: float(np.sum(v * weights))),
    ):
        p, r, f = avg(scores.precision), avg(scores.recall), avg(scores.f1)
        rows.append(
            f"{label:>{width}} {p:>10.{digits}f} {r:>10.{digits}f} {f:>10.{digits}f} {total:>10d}"
        )
    return "\n".join(rows)
