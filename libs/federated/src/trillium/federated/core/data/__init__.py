"""Offline datasets (digits, Fashion-MNIST, Simpson, FCUBE) and seeded partitioners."""

from trillium.federated.core.data.datasets import (
    ArrayDataset,
    fashion_mnist_available,
    load_digits,
    load_fashion_mnist,
    read_idx,
)
from trillium.federated.core.data.fcube import make_fcube
from trillium.federated.core.data.partition import (
    dirichlet_partition,
    group_partition,
    iid_partition,
    k_labels_partition,
    label_skew,
)
from trillium.federated.core.data.simpson import GroupedDataset, make_simpson

__all__ = [
    "ArrayDataset",
    "GroupedDataset",
    "dirichlet_partition",
    "fashion_mnist_available",
    "group_partition",
    "iid_partition",
    "k_labels_partition",
    "label_skew",
    "load_digits",
    "load_fashion_mnist",
    "make_fcube",
    "make_simpson",
    "read_idx",
]
