"""Seeded numpy partitioners: each returns one index array per client (disjoint, shuffled)."""

from __future__ import annotations

import numpy as np


def _check_clients(num_clients: int, num_items: int) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if num_items < num_clients:
        raise ValueError(f"cannot split {num_items} items over num_clients={num_clients}")


def iid_partition(num_items: int, num_clients: int, seed: int = 0) -> list[np.ndarray]:
    """IID_K: a random permutation cut into ``num_clients`` near-equal parts."""
    _check_clients(num_clients, num_items)
    order = np.random.default_rng(seed).permutation(num_items)
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def dirichlet_partition(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    *,
    min_size: int | None = None,
    seed: int = 0,
    max_attempts: int = 1000,
) -> list[np.ndarray]:
    """Hetero-Dirichlet label skew (Yurochkin et al. 2019, arXiv 1905.12022; FedLab ``hetero_dir``).

    Per class: shuffle its indices, draw ``p ~ Dir_J(α)``, zero ``p_j`` for clients already holding
    ``≥ N/J`` samples, renormalise, cut at ``cumsum(p)·n_k``. Retry until every client holds
    ``≥ min_size`` (default: number of classes). Smaller ``α`` means stronger skew.
    """
    labels = np.asarray(labels)
    _check_clients(num_clients, len(labels))
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    classes = np.unique(labels)
    min_size = len(classes) if min_size is None else min_size
    if min_size * num_clients > len(labels):
        raise ValueError(f"min_size={min_size} × num_clients={num_clients} exceeds {len(labels)} items")
    rng = np.random.default_rng(seed)
    cap = len(labels) / num_clients
    for _ in range(max_attempts):
        shards: list[list[int]] = [[] for _ in range(num_clients)]
        for cls in classes:
            idx = rng.permutation(np.flatnonzero(labels == cls))
            p = rng.dirichlet(np.full(num_clients, alpha))
            p = np.where(np.array([len(s) for s in shards]) >= cap, 0.0, p)
            p = p / p.sum() if p.sum() > 0 else np.full(num_clients, 1.0 / num_clients)
            cuts = (np.cumsum(p) * len(idx)).astype(int)[:-1]
            for shard, piece in zip(shards, np.split(idx, cuts)):
                shard.extend(piece.tolist())
        if min(len(s) for s in shards) >= min_size:
            return [rng.permutation(np.asarray(s, dtype=np.int64)) for s in shards]
    raise ValueError(f"no partition with min_size={min_size} after max_attempts={max_attempts}; raise alpha")


def k_labels_partition(
    labels: np.ndarray, num_clients: int, labels_per_client: int, seed: int = 0
) -> list[np.ndarray]:
    """Pathological "#C = k" skew (NIID-Bench, arXiv 2102.02079): each client holds k distinct labels.

    Labels are dealt round-robin over a seeded label permutation, so with ``num_clients·k ≥ #labels``
    every label has a holder; each label's samples are split evenly among its holders.
    """
    labels = np.asarray(labels)
    _check_clients(num_clients, len(labels))
    classes = np.unique(labels)
    if not 1 <= labels_per_client <= len(classes):
        raise ValueError(f"labels_per_client must be in [1, {len(classes)}], got {labels_per_client}")
    if num_clients * labels_per_client < len(classes):
        raise ValueError("num_clients × labels_per_client must cover every label")
    rng = np.random.default_rng(seed)
    order = rng.permutation(classes)
    held = [
        {order[(i * labels_per_client + j) % len(classes)] for j in range(labels_per_client)}
        for i in range(num_clients)
    ]
    shards: list[list[int]] = [[] for _ in range(num_clients)]
    for cls in classes:
        holders = [i for i in range(num_clients) if cls in held[i]]
        idx = rng.permutation(np.flatnonzero(labels == cls))
        for holder, piece in zip(holders, np.array_split(idx, len(holders))):
            shards[holder].extend(piece.tolist())
    return [rng.permutation(np.asarray(s, dtype=np.int64)) for s in shards]


def group_partition(groups: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """One client per distinct value of ``groups`` (Simpson clients, FCUBE octant pairs), sorted by value."""
    groups = np.asarray(groups)
    if groups.size == 0:
        raise ValueError("groups must not be empty")
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.flatnonzero(groups == g)) for g in np.unique(groups)]


def label_skew(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> float:
    """Mean total-variation distance between each client's label histogram and the global one (0..1)."""
    labels = np.asarray(labels)
    global_hist = np.bincount(labels, minlength=num_classes) / len(labels)
    distances = []
    for part in parts:
        hist = np.bincount(labels[part], minlength=num_classes) / max(len(part), 1)
        distances.append(0.5 * np.abs(hist - global_hist).sum())
    return float(np.mean(distances))
