from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handgrad.images import ImageError, load_image, preprocess_digit, resize_area


def test_resize_area_keeps_the_mean_and_shape() -> None:
    img = np.random.default_rng(0).random((37, 53))
    small = resize_area(img, 20, 11)
    assert small.shape == (20, 11)
    assert small.mean() == pytest.approx(img.mean(), rel=1e-12)


def test_dark_digit_on_light_paper_becomes_mnist_style() -> None:
    paper = np.ones((200, 120))
    paper[30:150, 70:85] = 0.1  # a dark vertical stroke, far from the centre ("1")
    out = preprocess_digit(paper)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out[0].max() == 0 and out[:, 0].max() == 0  # black background
    assert out.max() == 255
    ys, _ = np.nonzero(out)
    assert ys.max() - ys.min() + 1 == 20  # tallest side scaled to 20 pixels
    mass = out.astype(float)
    cy = (np.arange(28)[:, None] * mass).sum() / mass.sum()
    cx = (np.arange(28)[None, :] * mass).sum() / mass.sum()
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_blank_image_is_refused() -> None:
    with pytest.raises(ImageError, match="blank"):
        preprocess_digit(np.ones((30, 30)))
    with pytest.raises(ImageError, match=r"2-D grayscale image, got shape \(2, 3, 3\)"):
        preprocess_digit(np.ones((2, 3, 3)))


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ImageError, match=r"notes\.png: not a readable image"):
        load_image(path)
    assert issubclass(ImageError, ValueError)  # code catching ValueError keeps working
