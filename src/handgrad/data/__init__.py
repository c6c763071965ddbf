"""Datasets: MNIST from IDX files (shipped, cached or downloaded), Kaggle CSV, toy sets, splits,
mini-batches.

Everything here needs only NumPy and the standard library. Images stay ``uint8``
in memory; :func:`to_float_images` converts a batch at a time.
"""

from handgrad.data.batches import batches, index_batches, num_batches
from handgrad.data.download import download_verified, payload_sha256
from handgrad.data.errors import DataError
from handgrad.data.idx import read_idx, write_idx
from handgrad.data.kaggle import load_kaggle_csv, write_kaggle_submission
from handgrad.data.mnist import (
    DEFAULT_MIRRORS,
    ENV_VAR,
    MNIST_FILES,
    MNIST_SHA256,
    MNISTData,
    cache_dir,
    download_mnist,
    find_mnist,
    load_idx_dataset,
    load_mnist,
    missing_files,
    verify_mnist,
)
from handgrad.data.preprocess import to_float_images
from handgrad.data.split import stratified_split, train_val_split
from handgrad.data.synthetic import make_blobs, make_moons, make_spirals, make_xor

__all__ = [
    "DEFAULT_MIRRORS",
    "ENV_VAR",
    "MNIST_FILES",
    "MNIST_SHA256",
    "DataError",
    "MNISTData",
    "batches",
    "cache_dir",
    "download_mnist",
    "download_verified",
    "find_mnist",
    "index_batches",
    "load_idx_dataset",
    "load_kaggle_csv",
    "load_mnist",
    "make_blobs",
    "make_moons",
    "make_spirals",
    "make_xor",
    "missing_files",
    "num_batches",
    "payload_sha256",
    "read_idx",
    "stratified_split",
    "to_float_images",
    "train_val_split",
    "verify_mnist",
    "write_idx",
    "write_kaggle_submission",
]
