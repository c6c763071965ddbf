"""Cases for every loss and the important options, with their PyTorch twins."""

from __future__ import annotations

from typing import Any

import numpy as np

from handgrad.nn import losses as L
from handgrad.nn.loss import Loss
from tests.cases import LossCase

N, C = 6, 5
WEIGHTS = np.array([0.5, 1.0, 2.0, 1.5, 0.7])


def scores(rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((N, C)) * 2


def classes(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, C, size=N)


def classes_some_ignored(rng: np.random.Generator) -> np.ndarray:
    t = classes(rng)
    t[[1, 4]] = -100
    return t


def probabilities(rng: np.random.Generator) -> np.ndarray:
    p = rng.random((N, C))
    return p / p.sum(axis=1, keepdims=True)


def log_probs(rng: np.random.Generator) -> np.ndarray:
    z = scores(rng)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def unit(rng: np.random.Generator) -> np.ndarray:
    return rng.random((N, C))


def regression(rng: np.random.Generator) -> np.ndarray:
    """Targets at least 0.05 away from the scores made from the same seed (no kinks)."""
    d = rng.standard_normal((N, C))
    return d + np.where(d >= 0, 0.05, -0.05)


def _fn(name: str, **kwargs: Any) -> Any:
    def make(loss: Loss) -> Any:
        import torch

        fn = getattr(torch.nn.functional, name)
        extra = {
            k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()
        }

        def apply(x: Any, t: Any) -> Any:
            for k, v in extra.items():
                if hasattr(v, "to") and k in ("weight", "pos_weight"):
                    extra[k] = v.to(x.dtype)
            return fn(x, t, **extra)

        return apply

    return make


def _torch_focal(gamma: float, alpha: np.ndarray | None) -> Any:
    """PyTorch has no multiclass focal loss: this is its definition written with torch ops."""

    def make(loss: Loss) -> Any:
        import torch

        def apply(x: Any, t: Any) -> Any:
            logp = torch.log_softmax(x, dim=1)
            lt = logp.gather(1, t[:, None])[:, 0]
            a = torch.as_tensor(alpha, dtype=x.dtype)[t] if alpha is not None else 1.0
            return (-a * (1 - lt.exp()) ** gamma * lt).mean()

        return apply

    return make


def _huber_scores(rng: np.random.Generator) -> np.ndarray:
    # Differences on both sides of delta = 0.5, kept 0.05 away from +-0.5 and 0.
    mag = rng.choice([0.2, 0.3, 0.8, 1.5], size=(N, C))
    return mag * rng.choice([-1.0, 1.0], size=(N, C))


def _zeros(rng: np.random.Generator) -> np.ndarray:
    return np.zeros((N, C))


def _margin_scores(rng: np.random.Generator) -> np.ndarray:
    # Values on a grid of 0.3 so margin - x_y + x_i (margin 1) is never within 0.1 of 0.
    return rng.integers(-6, 7, size=(N, C)) * 0.3


LOSS_CASES = [
    LossCase("CrossEntropy", L.CrossEntropyLoss, scores, classes, _fn("cross_entropy")),
    LossCase(
        "CrossEntropy-sum",
        lambda: L.CrossEntropyLoss(reduction="sum"),
        scores,
        classes,
        _fn("cross_entropy", reduction="sum"),
    ),
    LossCase("CrossEntropy-probs", L.CrossEntropyLoss, scores, probabilities, _fn("cross_entropy")),
    LossCase(
        "CrossEntropy-smoothing",
        lambda: L.CrossEntropyLoss(label_smoothing=0.1),
        scores,
        classes,
        _fn("cross_entropy", label_smoothing=0.1),
    ),
    LossCase(
        "CrossEntropy-probs-smoothing",
        lambda: L.CrossEntropyLoss(label_smoothing=0.2),
        scores,
        probabilities,
        _fn("cross_entropy", label_smoothing=0.2),
    ),
    LossCase(
        "CrossEntropy-weight",
        lambda: L.CrossEntropyLoss(weight=WEIGHTS),
        scores,
        classes,
        _fn("cross_entropy", weight=WEIGHTS),
    ),
    LossCase(
        "CrossEntropy-weight-smoothing-ignore",
        lambda: L.CrossEntropyLoss(weight=WEIGHTS, label_smoothing=0.1),
        scores,
        classes_some_ignored,
        _fn("cross_entropy", weight=WEIGHTS, label_smoothing=0.1),
    ),
    LossCase(
        "CrossEntropy-ignore",
        L.CrossEntropyLoss,
        scores,
        classes_some_ignored,
        _fn("cross_entropy"),
    ),
    LossCase(
        "CrossEntropy-3d",
        L.CrossEntropyLoss,
        lambda r: r.standard_normal((3, C, 4)),
        lambda r: r.integers(0, C, size=(3, 4)),
        _fn("cross_entropy"),
    ),
    LossCase("NLL", L.NLLLoss, log_probs, classes, _fn("nll_loss")),
    LossCase(
        "NLL-weight-ignore",
        lambda: L.NLLLoss(weight=WEIGHTS),
        log_probs,
        classes_some_ignored,
        _fn("nll_loss", weight=WEIGHTS),
    ),
    LossCase(
        "BCEWithLogits", L.BCEWithLogitsLoss, scores, unit, _fn("binary_cross_entropy_with_logits")
    ),
    LossCase(
        "BCEWithLogits-posweight-sum",
        lambda: L.BCEWithLogitsLoss(reduction="sum", pos_weight=WEIGHTS),
        scores,
        unit,
        _fn("binary_cross_entropy_with_logits", reduction="sum", pos_weight=WEIGHTS),
    ),
    LossCase("MSE", L.MSELoss, _zeros, regression, _fn("mse_loss")),
    LossCase(
        "MSE-sum",
        lambda: L.MSELoss(reduction="sum"),
        scores,
        unit,
        _fn("mse_loss", reduction="sum"),
    ),
    LossCase("L1", L.L1Loss, _zeros, regression, _fn("l1_loss")),
    LossCase(
        "Huber-0.5",
        lambda: L.HuberLoss(delta=0.5),
        _huber_scores,
        lambda r: np.zeros((N, C)),
        _fn("huber_loss", delta=0.5),
    ),
    LossCase("MultiMargin", L.MultiMarginLoss, _margin_scores, classes, _fn("multi_margin_loss")),
    LossCase(
        "MultiMargin-p2-weight",
        lambda: L.MultiMarginLoss(p=2, weight=WEIGHTS),
        _margin_scores,
        classes,
        _fn("multi_margin_loss", p=2, weight=WEIGHTS),
    ),
    LossCase("Focal", L.FocalLoss, scores, classes, _torch_focal(2.0, None)),
    LossCase(
        "Focal-alpha-gamma1.5",
        lambda: L.FocalLoss(gamma=1.5, alpha=WEIGHTS),
        scores,
        classes,
        _torch_focal(1.5, WEIGHTS),
    ),
]
