from __future__ import annotations

import numpy as np
import pytest

from handgrad.metrics import accuracy, classification_report, confusion_matrix, precision_recall_f1


def test_confusion_matrix_and_scores_by_hand() -> None:
    y_true = np.array([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 2])
    cm = confusion_matrix(y_true, y_pred)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 1], [0, 0, 1]])
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    s = precision_recall_f1(cm)
    np.testing.assert_allclose(s.precision, [1.0, 2 / 3, 0.5])
    np.testing.assert_allclose(s.recall, [0.5, 2 / 3, 1.0])
    np.testing.assert_allclose(s.f1, [2 / 3, 2 / 3, 2 / 3])
    np.testing.assert_array_equal(s.support, [2, 3, 1])


def test_classes_never_predicted_score_zero_not_nan() -> None:
    cm = confusion_matrix(np.array([0, 1]), np.array([0, 0]), num_classes=3)
    s = precision_recall_f1(cm)
    assert np.all(np.isfinite(s.f1))
    assert s.precision[1] == 0.0 and s.recall[2] == 0.0


def test_report_lists_every_class_and_the_accuracy() -> None:
    text = classification_report(np.array([0, 1, 1]), np.array([0, 1, 0]))
    lines = text.splitlines()
    assert any(line.split()[0] == "0" for line in lines if line.strip())
    assert "accuracy" in text and "0.6667" in text and "macro avg" in text


def test_bad_labels_are_named() -> None:
    with pytest.raises(ValueError, match="y_true has 2 labels but y_pred has 3"):
        accuracy(np.array([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(TypeError, match="integer class labels"):
        confusion_matrix(np.array([0.0, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), num_classes=2)
