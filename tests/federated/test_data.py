"""Datasets and partitioners: shapes, Simpson/FCUBE statistics, partition properties, determinism."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from trillium.federated.core.data import (
    dirichlet_partition,
    fashion_mnist_available,
    group_partition,
    iid_partition,
    k_labels_partition,
    label_skew,
    load_digits,
    load_fashion_mnist,
    make_fcube,
    make_simpson,
    read_idx,
)

LABELS = np.repeat(np.arange(10), 60)


def _assert_disjoint_and_complete(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == len(np.unique(joined)) == n
    assert set(joined.tolist()) == set(range(n))


def test_iid_partition() -> None:
    parts = iid_partition(103, 4, seed=0)
    _assert_disjoint_and_complete(parts, 103)
    assert sorted(len(p) for p in parts) == [25, 26, 26, 26]
    assert all(np.array_equal(a, b) for a, b in zip(parts, iid_partition(103, 4, seed=0)))


@pytest.mark.parametrize("alpha", [0.1, 0.5, 5.0])
def test_dirichlet_partition_is_disjoint_complete_and_respects_min_size(alpha: float) -> None:
    parts = dirichlet_partition(LABELS, 8, alpha, seed=3)
    _assert_disjoint_and_complete(parts, len(LABELS))
    assert min(len(p) for p in parts) >= 10


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    skew = {
        alpha: np.mean(
            [label_skew(LABELS, dirichlet_partition(LABELS, 8, alpha, seed=s), 10) for s in range(3)]
        )
        for alpha in (0.1, 1.0, 100.0)
    }
    assert skew[0.1] > skew[1.0] > skew[100.0]
    assert skew[100.0] < 0.15


def test_dirichlet_is_deterministic_per_seed() -> None:
    a, b = dirichlet_partition(LABELS, 5, 0.3, seed=7), dirichlet_partition(LABELS, 5, 0.3, seed=7)
    c = dirichlet_partition(LABELS, 5, 0.3, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(len(x) == len(z) and np.array_equal(x, z) for x, z in zip(a, c))


def test_dirichlet_bad_arguments() -> None:
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_partition(LABELS, 4, 0.0)
    with pytest.raises(ValueError, match="min_size"):
        dirichlet_partition(LABELS, 4, 0.5, min_size=1000)


def test_k_labels_partition() -> None:
    parts = k_labels_partition(LABELS, 10, labels_per_client=2, seed=0)
    _assert_disjoint_and_complete(parts, len(LABELS))
    assert all(len(np.unique(LABELS[p])) == 2 for p in parts)
    assert all(np.array_equal(a, b) for a, b in zip(parts, k_labels_partition(LABELS, 10, 2, seed=0)))
    with pytest.raises(ValueError, match="labels_per_client"):
        k_labels_partition(LABELS, 10, labels_per_client=11)


def test_simpson_has_positive_local_and_negative_pooled_trend() -> None:
    simpson = make_simpson(num_clients=5, samples_per_client=2000, seed=0)
    x, y = simpson.data.x[:, 0].numpy(), simpson.data.y.numpy()
    parts = group_partition(simpson.groups)
    _assert_disjoint_and_complete(parts, 10_000)
    local = [np.corrcoef(x[p], y[p])[0, 1] for p in parts]
    assert all(c > 0.1 for c in local)
    assert np.corrcoef(x, y)[0, 1] == pytest.approx(-0.63, abs=0.03)
    rates = [y[p].mean() for p in parts]
    assert rates == sorted(rates, reverse=True)


def test_fcube_local_trends_vanish_when_pooled() -> None:
    fcube = make_fcube(8000, seed=0)
    x, y = fcube.data.x.numpy(), fcube.data.y.numpy()
    parts = group_partition(fcube.groups)
    assert len(parts) == 4
    for p in parts:
        assert abs(np.corrcoef(x[p, 1], y[p])[0, 1]) > 0.8
    assert abs(np.corrcoef(x[:, 1], y)[0, 1]) < 0.05
    assert np.array_equal(y, (x[:, 0] < 0).astype(int))


def test_digits_split_is_seeded_and_normalised() -> None:
    train, test = load_digits(seed=0)
    assert train.input_shape == (1, 8, 8) and len(train) + len(test) == 1797
    assert abs(float(train.x.mean())) < 0.05 and abs(float(train.x.std()) - 1.0) < 0.05
    again, _ = load_digits(seed=0)
    assert (train.y == again.y).all()


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_and_fashion_loader_on_a_tiny_fake(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    images = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert images.shape == (12, 28, 28) and images.dtype == np.uint8
    assert fashion_mnist_available(tmp_path)
    train, test = load_fashion_mnist(tmp_path, max_train=7, normalise=False)
    assert len(train) == 7 and len(test) == 5 and train.input_shape == (1, 28, 28)
    assert float(train.x.max()) <= 1.0
    assert not fashion_mnist_available(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        load_fashion_mnist(tmp_path / "missing")
