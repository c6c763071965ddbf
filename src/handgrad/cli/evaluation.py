"""``handgrad evaluate``, ``predict`` and ``gradcheck``: look at a saved model, or at
the gradients of every layer."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from handgrad.cli._common import (
    CommandError,
    check_input_size,
    eval_batch,
    load_mnist_for,
    model_images,
    output_classes,
    require,
)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from handgrad.metrics import accuracy, classification_report, confusion_matrix
    from handgrad.serialization import load
    from handgrad.train import predict

    model = load(args.model)
    data = load_mnist_for(args)
    check_input_size(model, data.x_test.shape[1:], "the data has")
    classes = output_classes(model)
    if classes is not None and data.y_test.max() >= classes:
        raise CommandError(
            f"the test labels go up to {data.y_test.max()} but the model has {classes} "
            "outputs: it was trained on another dataset"
        )
    num_classes = classes or int(data.y_test.max()) + 1
    y_pred = predict(model, model_images(model, data.x_test), batch_size=eval_batch(model))
    print(f"test accuracy {accuracy(data.y_test, y_pred):.2%} on {len(y_pred)} images")
    cm = confusion_matrix(data.y_test, y_pred, num_classes=num_classes)
    print("\nconfusion matrix (rows: true, columns: predicted)")
    print("      " + " ".join(f"{j:>5d}" for j in range(cm.shape[1])))
    for i, row in enumerate(cm):
        print(f"{i:>5d} " + " ".join(f"{v:>5d}" for v in row))
    print()
    print(classification_report(data.y_test, y_pred, num_classes=num_classes))
    return 0


def _read_digits(paths: list[str]) -> np.ndarray:
    """Every image as an MNIST-style digit ``(N, 28, 28)``, all read before anything is
    printed: one missing or unreadable file fails the command with every such file
    named, instead of after half of the predictions."""
    from handgrad.images import ImageError, load_image, preprocess_digit

    digits, problems = [], []
    for path in paths:
        if not Path(path).is_file():
            kind = "is a directory" if Path(path).is_dir() else "is not a regular file"
            problems.append(f"{path}: {'not found' if not Path(path).exists() else kind}")
            continue
        try:
            digits.append(preprocess_digit(load_image(path)))
        except ImageError as exc:
            problems.append(str(exc) if path in str(exc) else f"{path}: {exc}")
    if problems:
        count = f"{len(problems)} of {len(paths)} images" if len(paths) > 1 else "the image"
        raise CommandError(f"nothing predicted; {count} cannot be read: " + "; ".join(problems))
    return np.stack(digits)


def cmd_predict(args: argparse.Namespace) -> int:
    from handgrad.serialization import load
    from handgrad.train import predict_proba

    require("PIL", "Pillow", "reading images")
    model = load(args.model)
    check_input_size(model, (28, 28), "but predict makes MNIST-style images with")
    digits = _read_digits(args.images)
    probs = predict_proba(model, model_images(model, digits), batch_size=eval_batch(model))
    for path, p in zip(args.images, probs, strict=True):
        top = np.argsort(p)[::-1][:3]
        alternatives = ", ".join(f"{k} {p[k]:.1%}" for k in top[1:])
        print(f"{path}: {top[0]} ({p[top[0]]:.1%}; then {alternatives})")
    return 0


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from handgrad.selfcheck import run_selfcheck

    rows = run_selfcheck(seed=args.seed)
    width = max(len(name) for name, _, _ in rows)
    print(f"{'case':<{width}}  {'max relative error':>18}  result")
    failed = 0
    for name, error, tensor in rows:
        ok = error < args.threshold
        failed += not ok
        print(f"{name:<{width}}  {error:>18.2e}  {'ok' if ok else 'FAIL'} ({tensor})")
    print(
        f"{len(rows) - failed} passed, {failed} failed (float64 central differences, "
        f"threshold {args.threshold:g})"
    )
    return 1 if failed else 0
