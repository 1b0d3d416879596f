"""In-memory datasets available offline: scikit-learn digits and Fashion-MNIST (Debian package)."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_ENV = "TRILLIUM_FASHION_MNIST_DIR"
"""Environment variable overriding where the Fashion-MNIST idx files are read from."""
FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Install location of Debian's ``dataset-fashion-mnist`` package."""


@dataclass
class ArrayDataset:
    """Inputs ``x: [N, ...]`` (float32) and integer labels ``y: [N]`` in ``[0, num_classes)``."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} rows but y has {self.y.shape[0]}")
        if self.y.dim() != 1:
            raise ValueError(f"y must be 1-D, got shape {tuple(self.y.shape)}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= self.num_classes):
            raise ValueError(f"y must lie in [0, {self.num_classes})")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension."""
        return tuple(self.x.shape[1:])

    def subset(self, indices: np.ndarray | torch.Tensor) -> ArrayDataset:
        """The rows at ``indices`` (a client's shard)."""
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return ArrayDataset(self.x[index], self.y[index], self.num_classes)

    @staticmethod
    def concat(parts: list[ArrayDataset]) -> ArrayDataset:
        """All rows of ``parts`` stacked (the pooled data of a centralised baseline)."""
        if not parts:
            raise ValueError("parts must not be empty")
        return ArrayDataset(
            torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]), parts[0].num_classes
        )


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = round(len(y) * test_fraction)
    return order[n_test:], order[:n_test]


DIGITS_MEAN_STD = (0.3053, 0.3760)
"""Pixel mean and std of scikit-learn digits scaled to [0, 1] (all 1,797 images)."""
FASHION_MNIST_MEAN_STD = (0.2860, 0.3530)
"""Pixel mean and std of the Fashion-MNIST training images scaled to [0, 1]."""


def load_digits(
    test_fraction: float = 0.25, seed: int = 0, normalise: bool = True
) -> tuple[ArrayDataset, ArrayDataset]:
    """scikit-learn's bundled 8×8 digits as ``x: [N, 1, 8, 8]`` (standardised, or in [0, 1] with
    ``normalise=False``); a seeded train/test split."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    if normalise:
        x = (x - DIGITS_MEAN_STD[0]) / DIGITS_MEAN_STD[1]
    y = bunch.target.astype(np.int64)
    train, test = _split(x, y, test_fraction, seed)
    to_ds = lambda idx: ArrayDataset(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]), 10)  # noqa: E731
    return to_ds(train), to_ds(test)


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzip-compressed) IDX file: 2 zero bytes, a type byte, a rank byte, big-endian dims."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"path {path} is not an unsigned-byte IDX file")
    rank = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    offset = 4 + 4 * rank
    data = np.frombuffer(raw, dtype=np.uint8, offset=offset)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"path {path}: header says {dims} but holds {data.size} values")
    return data.reshape(dims)


def fashion_mnist_dir() -> Path:
    """Where Fashion-MNIST is read from (the environment override or the Debian install path)."""
    return Path(os.environ.get(FASHION_MNIST_ENV, FASHION_MNIST_DEFAULT_DIR))


def fashion_mnist_available(root: Path | None = None) -> bool:
    """Whether the four Fashion-MNIST idx files exist under ``root``."""
    root = root or fashion_mnist_dir()
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    names += ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    return all((root / name).is_file() for name in names)


def load_fashion_mnist(
    root: Path | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    normalise: bool = True,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Fashion-MNIST (60k train / 10k test, ``x: [N, 1, 28, 28]``, standardised or in [0, 1] with
    ``normalise=False``), optionally subsampled with a seeded draw.

    Raises ``FileNotFoundError`` when the files are absent (install ``dataset-fashion-mnist``).
    """
    root = root or fashion_mnist_dir()
    if not fashion_mnist_available(root):
        raise FileNotFoundError(f"Fashion-MNIST idx files not found under root={root}")
    rng = np.random.default_rng(seed)

    def load(prefix: str, limit: int | None) -> ArrayDataset:
        images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        index = np.arange(len(labels))
        if limit is not None and limit < len(labels):
            index = np.sort(rng.choice(len(labels), size=limit, replace=False))
        x = torch.from_numpy(images[index].astype(np.float32) / 255.0)[:, None]
        if normalise:
            x = (x - FASHION_MNIST_MEAN_STD[0]) / FASHION_MNIST_MEAN_STD[1]
        return ArrayDataset(x, torch.from_numpy(labels[index]), 10)

    return load("train", max_train), load("t10k", max_test)
