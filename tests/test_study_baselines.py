"""``handgrad study baselines``: the ordering of the baselines, k chosen on validation,
and a k-nearest-neighbour search that is exact and stays within its chunk's memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from handgrad.cli import main
from handgrad.studies import Context, Report, run_study
from handgrad.studies.baselines import choose_k, knn_vote, nearest_centroid, nearest_neighbours
from tests._studies import one_blas_thread, run_command  # noqa: F401

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return run_study("baselines", Context(seed=0, quick=True, out=tmp_path_factory.mktemp("b")))


def test_baselines_are_ordered(report: Report) -> None:
    acc = report.numbers["accuracy"]
    assert acc["majority"] < 0.15  # the floor: the most frequent digit, about 11%
    assert acc["majority"] < acc["centroid"] < acc["softmax"] < acc["mlp"]
    assert acc["centroid"] > 0.75
    assert acc["knn"] > acc["softmax"]  # no training, and still better than a linear model
    assert acc["mlp"] > 0.85


def test_k_is_the_best_on_validation(report: Report) -> None:
    val = report.numbers["val_accuracy"]
    assert sorted(val) == [1, 3, 5, 7, 9]
    assert val[report.numbers["k"]] == max(val.values())
    assert report.numbers["k"] == min(k for k in val if val[k] == max(val.values()))


def test_command_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "baselines", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("majority class", "nearest centroid", "k-nearest neighbours (k = ", "MLP"):
        assert name in out
    assert "validation accuracy" in out
    assert (tmp_path / "baselines.png").read_bytes()[:4] == b"\x89PNG"
    assert "| method | test accuracy | time | peak memory |" in (tmp_path / "report.md").read_text()


def test_nearest_neighbours_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    train, queries = rng.random((500, 20)), rng.random((70, 20))
    brute = np.argsort(((queries[:, None, :] - train[None]) ** 2).sum(-1), axis=1)[:, :7]
    np.testing.assert_array_equal(nearest_neighbours(train, queries, 7, chunk=16), brute)


def test_knn_search_memory_is_bounded_by_the_chunk() -> None:
    rng = np.random.default_rng(1)
    train = rng.random((30000, 784), dtype=np.float32)  # 94 MB, allocated before tracing
    queries = rng.random((1000, 784), dtype=np.float32)
    peaks = {}
    for chunk in (32, 128):
        tracemalloc.start()
        try:
            nearest_neighbours(train, queries, 9, chunk=chunk)
            peaks[chunk] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # a chunk's float32 distances and argpartition's int64 indices and copy: ~20 bytes per
    # (query, training image); unchunked, the distances alone would be 1000 * 30000 * 4
    assert peaks[128] < 128 * 30000 * 24  # 92 MB, against 120 MB for the distances
    assert peaks[32] < 0.3 * peaks[128]  # the peak follows the chunk, not the query count


def test_votes_and_centroids() -> None:
    labels = np.array([[1, 2, 2, 1, 0]])
    assert knn_vote(labels, 4, 3).tolist() == [1]  # 2-2 tie: the nearest neighbour decides
    assert knn_vote(labels, 3, 3).tolist() == [2]
    near = np.array([[0, 1, 1], [2, 2, 2]])  # labels of each validation image's neighbours
    assert choose_k(near, np.array([0, 2]), ks=(1, 3)) == {1: 1.0, 3: 0.5}
    x = np.array([[0.0, 0.0], [0.0, 1.0], [5.0, 5.0], [5.0, 6.0]])
    y = np.array([3, 3, 7, 7])
    assert nearest_centroid(x, y, np.array([[1.0, 1.0], [4.0, 4.0]])).tolist() == [3, 7]
