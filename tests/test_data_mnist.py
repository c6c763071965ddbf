"""MNIST: the shipped copy, verification, and where the files are looked for."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from handgrad.cli import main
from handgrad.data import (
    DataError,
    MNISTData,
    find_mnist,
    load_mnist,
    payload_sha256,
    to_float_images,
    verify_mnist,
    write_idx,
)
from handgrad.data import mnist as mnist_mod
from handgrad.data.mnist import MNIST_FILES, MNIST_SHA256
from tests.test_data_idx import write_fake_mnist


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $HANDGRAD_DATA, an empty cache under tmp_path; returns tmp_path."""
    monkeypatch.delenv("HANDGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture(scope="module")
def shipped() -> MNISTData:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("HANDGRAD_DATA", raising=False)
        return load_mnist()


# -- the shipped copy -----------------------------------------------------------


def test_shipped_copy_loads(shipped: MNISTData) -> None:
    x_train, y_train, x_test, y_test = shipped
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28) and x_test.dtype == np.uint8
    assert y_train.shape == (60000,) and y_train.dtype == np.int64
    assert y_test.shape == (10000,) and y_test.dtype == np.int64
    for y in (y_train, y_test):
        assert y.min() == 0 and y.max() == 9
    # Well-known facts about MNIST that a mangled file would not reproduce.
    np.testing.assert_array_equal(
        np.bincount(y_train), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert y_test[:5].tolist() == [7, 2, 1, 0, 4]
    assert x_train.max() == 255 and x_train[:, 0, 0].max() == 0  # corners are background


def test_shipped_copy_found_without_arguments(isolated: Path) -> None:
    assert find_mnist() == mnist_mod.SHIPPED_DIR
    assert mnist_mod.SHIPPED_DIR == Path(mnist_mod.__file__).parent / "mnist"


def test_shipped_copy_verifies() -> None:
    assert verify_mnist(mnist_mod.SHIPPED_DIR) == mnist_mod.SHIPPED_DIR


def test_hashes_match_the_shipped_readme() -> None:
    readme = (mnist_mod.SHIPPED_DIR / "README.md").read_text()
    for name in MNIST_FILES:
        assert f"| {name} |" in readme and MNIST_SHA256[name] in readme


def test_verify_reports_mismatch_and_missing(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    (tmp_path / MNIST_FILES[3]).unlink()
    with pytest.raises(DataError, match=r"MNIST verification failed") as info:
        verify_mnist(tmp_path)
    message = str(info.value)
    assert f"expected sha256 {MNIST_SHA256[MNIST_FILES[0]]}, got " in message
    assert f"{MNIST_FILES[3]}: missing" in message


def test_to_float_images(shipped: MNISTData) -> None:
    batch = shipped.x_train[:64]
    before = batch.copy()
    out = to_float_images(batch)
    assert out.shape == (64, 784) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out, batch.reshape(64, -1) / 255.0, rtol=1e-7)
    np.testing.assert_array_equal(batch, before)
    out64 = to_float_images(batch, dtype=np.float64, flatten=False)
    assert out64.shape == (64, 28, 28) and out64.dtype == np.float64
    np.testing.assert_allclose(out64, batch / 255.0, rtol=1e-15)


def test_to_float_images_rejects_non_uint8() -> None:
    with pytest.raises(TypeError, match=r"expects uint8 pixels.*got dtype float32"):
        to_float_images(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(TypeError, match=r"needs a floating-point dtype, got int32"):
        to_float_images(np.zeros((2, 4), dtype=np.uint8), dtype=np.int32)


# -- search order ---------------------------------------------------------------


def test_explicit_dir_beats_env_var(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, env = isolated / "explicit", isolated / "env"
    write_fake_mnist(explicit, n_train=11)
    write_fake_mnist(env / "mnist", n_train=13)
    monkeypatch.setenv("HANDGRAD_DATA", str(env))
    assert find_mnist(explicit) == explicit
    assert len(load_mnist(explicit).x_train) == 11


def test_env_var_beats_shipped_copy(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_mnist(isolated / "env" / "mnist", n_train=13)
    monkeypatch.setenv("HANDGRAD_DATA", str(isolated / "env"))
    assert find_mnist() == isolated / "env" / "mnist"
    assert len(load_mnist().x_train) == 13


def test_env_var_may_name_the_mnist_directory_itself(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_fake_mnist(isolated / "flat", gz=False)
    monkeypatch.setenv("HANDGRAD_DATA", str(isolated / "flat"))
    assert find_mnist() == isolated / "flat"


def test_env_var_without_files_is_an_error(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDGRAD_DATA", str(isolated / "nowhere"))
    with pytest.raises(DataError, match=r"\$HANDGRAD_DATA is .*nowhere.*\(missing in"):
        find_mnist()


def test_incomplete_explicit_dir_does_not_fall_through(isolated: Path) -> None:
    write_fake_mnist(isolated / "partial")
    (isolated / "partial" / MNIST_FILES[2]).unlink()
    with pytest.raises(
        DataError, match=r"partial is missing t10k-images-idx3-ubyte\.gz \(gzip-compressed or not"
    ):
        find_mnist(isolated / "partial")


def test_shipped_copy_beats_cache(isolated: Path) -> None:
    write_fake_mnist(isolated / "cache" / "handgrad" / "mnist")
    assert find_mnist() == mnist_mod.SHIPPED_DIR


def test_cache_used_when_shipped_copy_missing(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mnist_mod, "SHIPPED_DIR", isolated / "not-shipped")
    cache = isolated / "cache" / "handgrad" / "mnist"
    write_fake_mnist(cache, n_train=17)
    assert mnist_mod.cache_dir() == cache
    assert len(load_mnist().x_train) == 17


def test_cache_defaults_to_home(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(isolated / "home"))
    assert mnist_mod.cache_dir() == isolated / "home" / ".cache" / "handgrad" / "mnist"


def test_nothing_found_says_where_to_put_files(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mnist_mod, "SHIPPED_DIR", isolated / "not-shipped")
    with pytest.raises(DataError, match=r"MNIST not found") as info:
        load_mnist()
    message = str(info.value)
    for needle in ("not-shipped", str(isolated / "cache"), "HANDGRAD_DATA", "--data-dir"):
        assert needle in message
    assert "download=True" in message


def test_partial_raw_and_gz_mix_counts_as_complete(isolated: Path) -> None:
    write_fake_mnist(isolated / "mix", gz=False)
    raw = isolated / "mix" / MNIST_FILES[0].removesuffix(".gz")
    write_idx(isolated / "mix" / MNIST_FILES[0], np.zeros((12, 28, 28), dtype=np.uint8))
    raw.unlink()
    assert load_mnist(isolated / "mix").x_train.max() == 0


# -- other label sets and memory --------------------------------------------------


def _letters(directory: Path) -> None:
    """EMNIST-letters-like: the four MNIST file names, labels 1..26."""
    write_fake_mnist(directory)
    write_idx(directory / MNIST_FILES[1], (np.arange(12) * 5 % 26 + 1).astype(np.uint8))
    write_idx(directory / MNIST_FILES[3], np.array([26, 1, 2, 3, 4], dtype=np.uint8))


def test_other_label_sets_need_num_classes(isolated: Path) -> None:
    _letters(isolated / "letters")
    # The default stays 0..9: the lab and `handgrad evaluate` assume ten classes.
    with pytest.raises(
        DataError,
        match=r"train-labels-idx1-ubyte\.gz: labels must be in 0\.\.9, found 11 at index 2 "
        r"\(8 out of range in all\) \(num_classes=None accepts other class indices\)",
    ):
        load_mnist(isolated / "letters")
    data = load_mnist(isolated / "letters", num_classes=None)
    # Letters are 1..26 (0 unused), so the inferred class count max + 1 is 27.
    assert data.y_train.dtype == np.int64 and int(data.y_train.max()) + 1 == 27
    assert data.y_test.tolist() == [26, 1, 2, 3, 4]
    assert len(load_mnist(isolated / "letters", num_classes=27).y_train) == 12
    with pytest.raises(
        DataError, match=r"train-labels.*labels must be in 0\.\.25, found 26 at index 5"
    ):
        load_mnist(isolated / "letters", num_classes=26)


def test_negative_labels_are_refused_even_without_a_class_count(isolated: Path) -> None:
    write_fake_mnist(isolated / "neg")
    write_idx(isolated / "neg" / MNIST_FILES[3], np.array([0, 1, -1, 2, 3], dtype=np.int8))
    with pytest.raises(DataError, match=r"labels must be in 0\.\.65535, found -1 at index 2"):
        load_mnist(isolated / "neg", num_classes=None)


def test_loading_mnist_peaks_at_about_the_size_of_the_arrays(isolated: Path) -> None:
    tracemalloc.start()
    try:
        data = load_mnist()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    total = sum(arr.nbytes for arr in data)  # 55.4 MB; reading via bytes peaked at 114 MB
    assert peak < 1.1 * total, f"peak {peak / 1e6:.1f} MB for {total / 1e6:.1f} MB of arrays"


# -- implausible labels, and what the command line says when memory runs out ------


def _huge_label_dir(directory: Path) -> Path:
    write_fake_mnist(directory)
    labels = np.arange(12, dtype=np.int32) % 10
    labels[7] = 2**31 - 1  # IDX labels may be stored as int32
    write_idx(directory / MNIST_FILES[1], labels)
    return directory


def test_implausible_label_is_refused_naming_file_and_value(isolated: Path) -> None:
    directory = _huge_label_dir(isolated / "huge")
    with pytest.raises(
        DataError,
        match=r"train-labels-idx1-ubyte\.gz: labels must be in 0\.\.65535, found 2147483647 at "
        r"index 7 \(1 out of range in all\): a class index of 65536 or more is implausible",
    ):
        load_mnist(directory, num_classes=None)
    labels = np.arange(12, dtype=np.int32) % 10
    labels[3] = mnist_mod.MAX_CLASSES - 1  # the largest accepted
    write_idx(directory / MNIST_FILES[1], labels)
    assert load_mnist(directory, num_classes=None).y_train.max() == 65535


def test_cli_refuses_a_huge_label_instead_of_running_out_of_memory(
    isolated: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # It built 2**31 outputs and said "out of memory ... (try smaller --hidden sizes)".
    monkeypatch.delenv("HANDGRAD_DEBUG", raising=False)
    directory = _huge_label_dir(isolated / "huge")
    argv = ["train", "--data-dir", str(directory), "--epochs", "1", "--no-save", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"handgrad train: error: {directory / MNIST_FILES[1]}: labels must be in 0..65535, "
        "found 2147483647 at index 7"
    )
    assert "--hidden" not in err and err.count("\n") == 1


class _NumpyWithoutMemory:
    """``numpy`` whose ``empty`` fails as a too-large allocation does."""

    def __getattr__(self, name: str) -> object:
        return getattr(np, name)

    @staticmethod
    def empty(*args: object, **kwargs: object) -> np.ndarray:
        raise MemoryError("Unable to allocate 1.00 TiB for an array with shape (1099511627776,)")


def test_cli_memory_error_while_loading_blames_the_data_not_hidden(
    isolated: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_fake_mnist(isolated / "d")
    monkeypatch.delenv("HANDGRAD_DEBUG", raising=False)
    monkeypatch.setattr("handgrad.data.idx.np", _NumpyWithoutMemory())
    argv = ["train", "--data-dir", str(isolated / "d"), "--epochs", "1", "--batch-size", "4"]
    assert main([*argv, "--no-save"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(
        "handgrad train: error: out of memory: Unable to allocate 1.00 TiB for an array with "
        "shape (1099511627776,) (while loading the data: is it the data you meant?)"
    )
    assert "--hidden" not in err


def test_cli_memory_error_while_building_the_model_names_hidden(
    isolated: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def build_mlp(*args: object, **kwargs: object) -> None:
        raise MemoryError("Unable to allocate 4.00 GiB")

    write_fake_mnist(isolated / "d")
    monkeypatch.delenv("HANDGRAD_DEBUG", raising=False)
    monkeypatch.setattr("handgrad.recipes.build_mlp", build_mlp)
    argv = ["train", "--data-dir", str(isolated / "d"), "--epochs", "1", "--batch-size", "4"]
    assert main([*argv, "--no-save"]) == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .startswith(
            "handgrad train: error: out of memory: Unable to allocate 4.00 GiB (while building the "
            "model: try smaller --hidden sizes)"
        )
    )


def test_payload_hash_of_an_unreadable_file_is_a_data_error(tmp_path: Path) -> None:
    # verify_mnist and download_mnist hash what is there: a raw FileNotFoundError before.
    with pytest.raises(DataError, match=r"nope\.gz: cannot read: No such file or directory"):
        payload_sha256(tmp_path / "nope.gz")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(b"x" * 1000)[:-9])
    with pytest.raises(DataError, match=r"cut\.gz: corrupt gzip stream"):
        payload_sha256(tmp_path / "cut.gz")
