"""Augmentation: exact warps, bilinear sampling against a loop, determinism, and fit's hook."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest

from handgrad.augment import (
    Augment,
    _elastic_displacements,
    _gaussian_matrix,
    affine_matrices,
    elastic_distortion,
    random_affine,
    warp_affine,
)
from handgrad.data import load_mnist
from handgrad.nn.losses import CrossEntropyLoss
from handgrad.optim import SGD, Adam
from handgrad.recipes import build_mlp
from handgrad.train import default_transform, fit

STILL: dict[str, Any] = {"max_shift": 0.0, "max_rotation": 0.0, "scale": (1.0, 1.0), "shear": 0.0}


def _reference_warp(image: np.ndarray, m: np.ndarray, fill: float) -> np.ndarray:
    """Bilinear inverse warp of one ``(H, W)`` image, one pixel at a time, as in a textbook."""
    h, w = image.shape

    def pixel(row: int, col: int) -> float:
        return float(image[row, col]) if 0 <= row < h and 0 <= col < w else fill

    out = np.empty((h, w))
    for i in range(h):
        for j in range(w):
            sx = m[0, 0] * j + m[0, 1] * i + m[0, 2]
            sy = m[1, 0] * j + m[1, 1] * i + m[1, 2]
            x0, y0 = math.floor(sx), math.floor(sy)
            fx, fy = sx - x0, sy - y0
            top = (1 - fx) * pixel(y0, x0) + fx * pixel(y0, x0 + 1)
            bottom = (1 - fx) * pixel(y0 + 1, x0) + fx * pixel(y0 + 1, x0 + 1)
            out[i, j] = (1 - fy) * top + fy * bottom
    return out


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """Eight real MNIST digits with a blank 3-pixel border, float64 in [0, 1]."""
    x = load_mnist().x_test[:200]
    border = np.ones((28, 28), dtype=bool)
    border[3:-3, 3:-3] = False
    blank = ~np.any(x[:, border], axis=1)
    return x[blank][:8].astype(np.float64) / 255.0


# -- warp_affine: exact cases and the loop reference -----------------------------------


def test_warp_matches_a_pixel_by_pixel_loop(rng: np.random.Generator) -> None:
    images = rng.normal(size=(6, 7, 9))
    m = rng.normal(size=(6, 2, 3)) * [[0.7, 0.7, 4.0]]
    m[:, :, 2] += [4.0, 3.0]  # mostly inside, partly outside the image
    m[5] = [[1, 0, 1e6], [0, 1, -1e6]]  # far outside: pure fill
    out = warp_affine(images, m, fill=0.25)
    for k in range(6):
        np.testing.assert_allclose(
            out[k], _reference_warp(images[k], m[k], 0.25), rtol=1e-12, atol=1e-12
        )
    np.testing.assert_array_equal(out[5], 0.25)


@pytest.mark.parametrize("shift", [(1, 0), (0, 2), (-3, 1), (2, -2), (0, 0)])
def test_integer_shifts_move_pixels_exactly(
    rng: np.random.Generator, shift: tuple[int, int]
) -> None:
    dx, dy = shift
    images = rng.random((3, 8, 10), dtype=np.float32)
    m = affine_matrices(8, 10, shift=shift)
    np.testing.assert_array_equal(m[0], [[1, 0, -dx], [0, 1, -dy]])
    expected = np.full_like(images, -1.0)
    rows_out, rows_in = slice(max(dy, 0), 8 + min(dy, 0)), slice(max(-dy, 0), 8 + min(-dy, 0))
    cols_out, cols_in = slice(max(dx, 0), 10 + min(dx, 0)), slice(max(-dx, 0), 10 + min(-dx, 0))
    expected[:, rows_out, cols_out] = images[:, rows_in, cols_in]
    np.testing.assert_array_equal(warp_affine(images, m, fill=-1.0), expected)


@pytest.mark.parametrize(("angle", "k"), [(90, 1), (-90, -1), (180, 2), (270, 3)])
def test_rotation_by_right_angles_is_rot90(rng: np.random.Generator, angle: int, k: int) -> None:
    # positive angles turn the content counter-clockwise on screen, as np.rot90 does
    images = rng.normal(size=(2, 3, 7, 7))
    out = warp_affine(images, affine_matrices(7, 7, angle=angle))
    np.testing.assert_allclose(out, np.rot90(images, k=k, axes=(-2, -1)), atol=1e-12)


def test_exact_quarter_turn_matrix_is_exactly_rot90(rng: np.random.Generator) -> None:
    images = rng.normal(size=(2, 5, 5))
    m = np.array([[0.0, -1.0, 4.0], [1.0, 0.0, 0.0]])  # shared by both images
    np.testing.assert_array_equal(warp_affine(images, m), np.rot90(images, axes=(1, 2)))


def test_half_pixel_shift_averages_neighbours(rng: np.random.Generator) -> None:
    images = rng.normal(size=(4, 6, 8))
    right = warp_affine(images, np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]), fill=2.0)
    np.testing.assert_allclose(right[..., :-1], (images[..., :-1] + images[..., 1:]) / 2)
    np.testing.assert_allclose(right[..., -1], (images[..., -1] + 2.0) / 2)
    down = warp_affine(images, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.5]]))
    np.testing.assert_allclose(down[:, :-1], (images[:, :-1] + images[:, 1:]) / 2)
    np.testing.assert_allclose(down[:, -1], images[:, -1] / 2)
    both = warp_affine(images, np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]]))
    quad = images[:, :-1, :-1] + images[:, :-1, 1:] + images[:, 1:, :-1] + images[:, 1:, 1:]
    np.testing.assert_allclose(both[:, :-1, :-1], quad / 4)


def test_outside_reads_fill() -> None:
    images = np.ones((2, 6, 6), dtype=np.float32)
    out = warp_affine(images, affine_matrices(6, 6, shift=(3, 0)), fill=-0.3)
    np.testing.assert_array_equal(out[:, :, :3], np.float32(-0.3))
    np.testing.assert_array_equal(out[:, :, 3:], 1.0)
    gone = warp_affine(images, affine_matrices(6, 6, shift=(100.5, -7.25)), fill=0.7)
    np.testing.assert_array_equal(gone, np.float32(0.7))


def test_affine_matrices_invert_the_forward_map() -> None:
    m = affine_matrices(
        9, 11, angle=[30.0, -12.0], scale=[1.2, 0.8], shear=[10.0, -5.0], shift=[[1.5, -2], [0, 3]]
    )
    assert m.shape == (2, 2, 3)
    theta, s, k = np.deg2rad(30.0), 1.2, np.tan(np.deg2rad(10.0))
    rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    forward = rot @ (s * np.array([[1.0, k], [0.0, 1.0]]))
    centre = np.array([5.0, 4.0])
    p_src = np.array([2.0, 7.0])
    p_out = centre + np.array([1.5, -2.0]) + forward @ (p_src - centre)
    np.testing.assert_allclose(m[0] @ np.append(p_out, 1.0), p_src, atol=1e-12)


# -- random_affine ---------------------------------------------------------------------


def test_same_seed_same_images_other_seed_others(rng: np.random.Generator) -> None:
    images = rng.integers(0, 256, size=(16, 28, 28), dtype=np.uint8)
    for f in (random_affine, elastic_distortion, Augment(elastic=(8.0, 3.0), p=0.5)):
        a = f(images, np.random.default_rng(7))
        b = f(images, np.random.default_rng(7))
        c = f(images, np.random.default_rng(8))
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_zero_magnitudes_are_the_identity(rng: np.random.Generator) -> None:
    uint8 = rng.integers(0, 256, size=(5, 9, 7), dtype=np.uint8)
    out = random_affine(uint8, rng, **STILL)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, uint8.astype(np.float32))
    floats = rng.normal(size=(5, 3, 9, 7))
    np.testing.assert_array_equal(random_affine(floats, rng, **STILL), floats)
    np.testing.assert_array_equal(elastic_distortion(floats, rng, alpha=0.0), floats)
    np.testing.assert_array_equal(Augment(**STILL)(floats, rng), floats)


def test_each_image_gets_its_own_warp_shared_by_its_channels(rng: np.random.Generator) -> None:
    image = rng.random((1, 1, 12, 12))
    batch = np.repeat(np.repeat(image, 6, axis=0), 3, axis=1)  # (6, 3, 12, 12), all alike
    for f in (random_affine, elastic_distortion):
        out = f(batch, np.random.default_rng(3))
        np.testing.assert_array_equal(out[:, 0], out[:, 2])  # channels move together
        assert len({out[i, 0].tobytes() for i in range(6)}) == 6  # images do not
        # a channel of (N, C, H, W) moves as the same image given as (N, H, W)
        np.testing.assert_array_equal(out[:, 1], f(batch[:, 1], np.random.default_rng(3)))


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.uint8, np.float32),
        (np.int64, np.float32),
        (np.bool_, np.float32),
        (np.float16, np.float16),
        (np.float32, np.float32),
        (np.float64, np.float64),
    ],
)
def test_output_dtype(dtype: type, expected: type) -> None:
    images = np.ones((2, 5, 5), dtype=dtype)
    for f in (random_affine, elastic_distortion, Augment(elastic=(2.0, 1.0))):
        assert f(images, np.random.default_rng(0)).dtype == expected
    assert warp_affine(images, np.eye(2, 3)).dtype == expected


def test_inputs_are_left_untouched(rng: np.random.Generator) -> None:
    images = rng.random((4, 2, 10, 10))
    matrices = affine_matrices(10, 10, angle=[5.0] * 4)
    before, m_before = images.copy(), matrices.copy()
    images.flags.writeable = False  # a write would raise
    matrices.flags.writeable = False
    for out in (
        warp_affine(images, matrices),
        random_affine(images, rng),
        elastic_distortion(images, rng),
        Augment(elastic=(4.0, 2.0), p=0.5)(images, rng),
        Augment(p=0.0)(images, rng),
        Augment(**STILL)(images, rng),
    ):
        assert not np.shares_memory(out, images)
    np.testing.assert_array_equal(images, before)
    np.testing.assert_array_equal(matrices, m_before)


def _centre_of_mass(images: np.ndarray) -> np.ndarray:
    """``(x, y)`` centre of mass of each ``(H, W)`` image: ``(N, 2)``."""
    h, w = images.shape[-2:]
    mass = images.sum(axis=(1, 2))
    x = (images.sum(axis=1) * np.arange(w)).sum(axis=1) / mass
    y = (images.sum(axis=2) * np.arange(h)).sum(axis=1) / mass
    return np.stack([x, y], axis=1)


def test_shifts_move_a_digit_whole_and_rotations_keep_it(digits: np.ndarray) -> None:
    mass, centre = digits.sum(axis=(1, 2)), _centre_of_mass(digits)
    shifted = random_affine(digits, np.random.default_rng(0), **(STILL | {"max_shift": 2.0}))
    drawn = np.random.default_rng(0).uniform(-2.0, 2.0, size=(len(digits), 2))  # first draws
    # bilinear interpolation reproduces linear functions, so a translation keeps
    # the mass and moves the centre of mass by exactly the shift: right and down
    np.testing.assert_allclose(shifted.sum(axis=(1, 2)), mass, rtol=1e-12)
    np.testing.assert_allclose(_centre_of_mass(shifted) - centre, drawn, atol=1e-9)
    assert np.abs(drawn).max() > 1.0
    turned = random_affine(digits, np.random.default_rng(1), **(STILL | {"max_rotation": 10.0}))
    assert not np.allclose(turned, digits)
    np.testing.assert_allclose(turned.sum(axis=(1, 2)), mass, rtol=0.005)
    # MNIST centres the mass, and the turn is about the centre: it barely moves
    np.testing.assert_allclose(_centre_of_mass(turned), centre, atol=0.3)


def test_scale_zooms_about_the_centre() -> None:
    image = np.zeros((1, 9, 9))
    image[0, 4, 4] = 1.0  # the centre pixel stays put under any zoom or turn
    out = warp_affine(image, affine_matrices(9, 9, angle=33.0, scale=2.0))
    assert out[0, 4, 4] == pytest.approx(1.0)
    assert out.sum() == pytest.approx(4.0, rel=0.05)  # twice as wide, four times the area


# -- elastic distortion ----------------------------------------------------------------


def test_elastic_fields_are_smooth_and_bounded() -> None:
    d = _elastic_displacements(50, 28, 28, np.random.default_rng(0), 34.0, 4.0, np.float64)
    assert d.shape == (50, 2, 28 * 28)
    assert np.abs(d).max() <= 34.0
    assert 0.5 < np.abs(d).max()  # moves pixels...
    step = np.abs(np.diff(d.reshape(50, 2, 28, 28), axis=-1)).max()
    assert step < 0.25 * np.abs(d).max()  # ...smoothly: neighbours move alike


def test_gaussian_blur_matrix() -> None:
    g = _gaussian_matrix(64, 4.0)
    np.testing.assert_allclose(g.sum(axis=1), 1.0)  # constant fields stay constant
    # far from the edges a row is the Gaussian itself, truncated at 4 sigma = 16 px
    offsets = np.arange(-16, 17)
    kernel = np.exp(-0.5 * (offsets / 4.0) ** 2)
    np.testing.assert_allclose(g[32, 16:49], kernel / kernel.sum(), rtol=1e-12)
    assert not g[32, :16].any() and not g[32, 49:].any()
    # at the edge the kernel folds back onto the image: d c b a | a b c d
    np.testing.assert_allclose(g[0, :16], g[32, 32:48] + g[32, 33:49], rtol=1e-12)


def test_elastic_output_stays_within_input_and_fill(digits: np.ndarray) -> None:
    out = elastic_distortion(digits, np.random.default_rng(0), fill=0.0)
    assert out.min() >= 0.0 and out.max() <= digits.max()
    assert not np.allclose(out, digits)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), digits.sum(axis=(1, 2)), rtol=0.3)


# -- Augment ---------------------------------------------------------------------------


def test_augment_with_probability(rng: np.random.Generator) -> None:
    images = rng.random((200, 8, 8)).astype(np.float32)
    out = Augment(p=0.3)(images, np.random.default_rng(0))
    chosen = np.random.default_rng(0).random(200) < 0.3  # the first draw decides who
    assert 40 < chosen.sum() < 80
    np.testing.assert_array_equal(np.all(out == images, axis=(1, 2)), ~chosen)
    np.testing.assert_array_equal(Augment(p=0.0)(images, rng), images)


def test_augment_repr_and_arguments() -> None:
    a = Augment(max_shift=1, scale=(0.8, 1.2), elastic=(30, 4), p=0.5)
    assert repr(a) == (
        "Augment(max_shift=1.0, max_rotation=10.0, scale=(0.8, 1.2), shear=0.0, "
        "elastic=(30.0, 4.0), p=0.5, fill=0.0)"
    )
    bad: list[tuple[dict[str, object], str]] = [
        ({"max_shift": -1}, "max_shift must be a finite number >= 0"),
        ({"max_rotation": float("nan")}, "max_rotation"),
        ({"scale": (1.1, 0.9)}, r"0 < low <= high, got \(1.1, 0.9\)"),
        ({"scale": (0.0, 1.0)}, "0 < low <= high"),
        ({"scale": 1.0}, "pair"),
        ({"shear": 90}, "shear"),
        ({"p": 1.5}, r"p must be a probability in \[0, 1\], got 1.5"),
        ({"p": -0.1}, "p must be a probability"),
        ({"elastic": (34.0,)}, "elastic must be None or a pair"),
        ({"elastic": (34.0, 0.0)}, "sigma must be a finite number > 0"),
        ({"elastic": (-1.0, 4.0)}, "alpha"),
        ({"fill": float("inf")}, "fill"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            Augment(**kwargs)
    with pytest.raises(ValueError, match="max_shift"):
        random_affine(np.zeros((1, 4, 4)), np.random.default_rng(0), max_shift=-2.0)


def test_shapes_and_types_are_checked() -> None:
    rng = np.random.default_rng(0)
    for f in (random_affine, elastic_distortion, Augment()):
        for shape in ((28, 28), (2, 1, 1, 28, 28), (784,)):
            with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, C, H, W\), got"):
                f(np.zeros(shape), rng)
        with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
            f(np.zeros((1, 4, 4)), 0)
        with pytest.raises(TypeError, match="integers or floats"):
            f(np.zeros((1, 4, 4), dtype=complex), rng)
    with pytest.raises(ValueError, match=r"matrices of shape \(3, 2, 3\), .*got \(2, 2, 3\)"):
        warp_affine(np.zeros((3, 4, 4)), np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        warp_affine(np.zeros((1, 4, 4)), np.full((2, 3), np.nan))


def test_fast_enough_for_every_batch() -> None:
    images = np.random.default_rng(0).random((128, 28, 28), dtype=np.float32)
    rng = np.random.default_rng(1)
    for f, limit in ((random_affine, 0.05), (elastic_distortion, 0.1)):
        f(images, rng)  # first call builds the cached grid
        best = math.inf
        for _ in range(5):
            start = time.perf_counter()
            f(images, rng)
            best = min(best, time.perf_counter() - start)
        assert best < limit, f"{f.__name__} took {best * 1e3:.1f} ms"


# -- fit's hook ------------------------------------------------------------------------


def test_fit_augments_every_training_batch_from_its_rng_and_never_validation() -> None:
    data = np.random.default_rng(0)
    x = data.integers(0, 256, size=(40, 6, 6), dtype=np.uint8)
    y = data.integers(0, 2, size=40)
    x_val = data.integers(0, 256, size=(10, 6, 6), dtype=np.uint8)
    y_val = data.integers(0, 2, size=10)
    prep = default_transform(np.dtype(np.float32))
    calls: list[tuple[np.ndarray, float]] = []

    def spy(xb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        assert rng is generator
        calls.append((xb.copy(), rng.random()))
        return xb + 10.0  # marks what the model sees

    model = build_mlp(36, [8], 2, rng=0)
    seen: list[tuple[bool, np.ndarray]] = []
    original = model.forward
    model.forward = lambda xb: (seen.append((model.training, xb.copy())), original(xb))[1]  # type: ignore[method-assign]
    generator = np.random.default_rng(3)
    fit(
        model,
        CrossEntropyLoss(),
        SGD(model.parameters(), lr=0.1),
        (x, y),
        val=(x_val, y_val),
        epochs=2,
        batch_size=16,
        rng=generator,
        augment=spy,
    )
    assert [len(b) for b, _ in calls] == [16, 16, 8] * 2
    # the shuffle, then one draw per batch: fit's own stream, in order
    replay = np.random.default_rng(3)
    for epoch in range(2):
        order = replay.permutation(40)
        for step in range(3):
            batch, drawn = calls[3 * epoch + step]
            np.testing.assert_array_equal(batch, prep(x[order[16 * step : 16 * step + 16]]))
            assert drawn == replay.random()
    training = [xb for mode, xb in seen if mode]
    evaluating = [xb for mode, xb in seen if not mode]
    assert len(training) == 6
    for xb, (batch, _) in zip(training, calls, strict=True):
        np.testing.assert_array_equal(xb, batch + 10.0)
    assert len(evaluating) == 2
    for xb in evaluating:
        np.testing.assert_array_equal(xb, prep(x_val))


def _augmented_run(seed: int, augment: Augment | None) -> dict[str, np.ndarray]:
    data = np.random.default_rng(0)
    x = data.integers(0, 256, size=(96, 8, 8), dtype=np.uint8)
    y = (x[:, :4].mean(axis=(1, 2)) > x[:, 4:].mean(axis=(1, 2))).astype(np.int64)
    model = build_mlp(64, [16], 2, dropout=0.1, rng=seed)
    fit(
        model,
        CrossEntropyLoss(),
        Adam(model.parameters(), lr=0.01),
        (x, y),
        val=(x[:20], y[:20]),
        epochs=2,
        batch_size=32,
        rng=seed,
        augment=augment,
    )
    return model.state_dict()


def test_fit_with_augment_is_reproducible() -> None:
    augment = Augment(max_shift=1.0, elastic=(4.0, 2.0), p=0.8)
    a, b = _augmented_run(1, augment), _augmented_run(1, augment)
    other, plain = _augmented_run(2, augment), _augmented_run(1, None)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], other[k]) for k in a)
    assert any(not np.array_equal(a[k], plain[k]) for k in a)


def test_fit_refuses_an_augment_it_cannot_call() -> None:
    model = build_mlp(4, [4], 2, rng=0)
    x, y = np.zeros((8, 2, 2), dtype=np.float32), np.zeros(8, dtype=np.int64)
    with pytest.raises(TypeError, match=r"augment must be callable as augment\(x, rng\)"):
        fit(model, CrossEntropyLoss(), SGD(model.parameters(), lr=0.1), (x, y), augment="flip")
