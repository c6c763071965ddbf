"""Plots of a training run, written as PNG files (matplotlib, imported lazily, headless).

Install with ``pip install "handgrad[plots]"``. Nothing here is imported by the core.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from handgrad._install import install_hint

        raise ImportError(f"plots need matplotlib: {install_hint('plots')}") from exc
    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return target


def plot_history(history: dict[str, list[float]], path: str | os.PathLike[str]) -> Path:
    """Loss and accuracy per epoch, training vs validation, side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, label, style in ((metric, "train", "-o"), (f"val_{metric}", "validation", "-s")):
            values = history.get(key)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=label, markersize=3)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(metric)
        ax.set_title(metric.capitalize())
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(
    cm: np.ndarray, path: str | os.PathLike[str], class_names: list[str] | None = None
) -> Path:
    """Heatmap of a confusion matrix with the counts written in each cell."""
    plt = _pyplot()
    k = cm.shape[0]
    names = class_names or [str(i) for i in range(k)]
    fig, ax = plt.subplots(figsize=(5.2, 4.6), layout="constrained")
    shown = np.log1p(cm)  # log scale, so off-diagonal mistakes stay visible
    im = ax.imshow(shown, cmap="Blues")
    threshold = shown.max() / 2 if shown.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(int(cm[i, j])),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if shown[i, j] > threshold else "black",
            )
    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"Confusion matrix (accuracy {acc:.2%})")
    fig.colorbar(im, ax=ax, fraction=0.046, label="log(1 + count)")
    return _save(fig, path)


def plot_predictions(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    path: str | os.PathLike[str],
    columns: int = 8,
) -> Path:
    """A grid of images titled with their predictions; mistakes in red with the true label."""
    plt = _pyplot()
    n = len(images)
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(columns * 1.1, rows * 1.25), layout="constrained"
    )
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i].reshape(28, 28) if images[i].size == 784 else images[i], cmap="gray_r")
        ok = y_true[i] == y_pred[i]
        title = f"{y_pred[i]}" if ok else f"{y_pred[i]} (true {y_true[i]})"
        ax.set_title(title, fontsize=8, color="black" if ok else "red")
    fig.suptitle("Test predictions (mistakes in red)", fontsize=10)
    return _save(fig, path)


def plot_first_layer(
    weight: np.ndarray,
    path: str | os.PathLike[str],
    image_shape: tuple[int, ...] = (28, 28),
    max_units: int = 64,
) -> Path:
    """Each first-layer unit's input weights drawn as an image: a 784-wide
    ``Linear`` row as 28x28, or a convolution's filter as ``(KH, KW)``."""
    plt = _pyplot()
    units = min(weight.shape[0], max_units)
    columns = 8
    rows = math.ceil(units / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(columns * 0.9, rows * 0.9), layout="constrained"
    )
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < units:
            w = weight[i].reshape(image_shape)
            lim = float(np.abs(w).max()) or 1.0
            ax.imshow(w, cmap="RdBu_r", vmin=-lim, vmax=lim)
    what = "units" if tuple(image_shape) == (28, 28) else "filters"
    fig.suptitle(f"First-layer weights ({units} of {weight.shape[0]} {what})", fontsize=10)
    return _save(fig, path)
