"""Federated benchmark: FedCFA (arXiv 2412.18904) against FedAvg, FedProx and SCAFFOLD.

Experiments, every strategy with the same seeds, model initialisation and client data:

* Simpson's paradox (5 clients, one trend each; pooled test accuracy; centralised = ceiling);
* scikit-learn digits and Fashion-MNIST (when the Debian package is installed) under Dirichlet
  label skew α ∈ {0.1, 0.5}: accuracy per round and rounds to reach FedAvg's final accuracy;
* aggregation time against the number of clients (10..1000) and the model size.

Writes ``<out>/federated.json`` as ``{"rows": [...], "scale": {...}, "summary": [...], "settings": {...}}``
and ``<out>/federated.png`` (accuracy against round). ``--quick`` is a smoke run on tiny settings.

    python bench/federated/run.py [--quick] [--out bench/results] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trillium.federated.core import (
    FedAvg,
    FedCFA,
    FedDyn,
    FedProx,
    History,
    LocalTrainConfig,
    ModelSpec,
    Scaffold,
    SimulationConfig,
    Strategy,
    build_model,
    simulate,
    train_centralised,
    weighted_average,
    weighted_average_reference,
)
from trillium.federated.core.data import (
    ArrayDataset,
    dirichlet_partition,
    fashion_mnist_available,
    group_partition,
    load_digits,
    load_fashion_mnist,
    make_simpson,
)
from trillium.federated.core.types import ClientResult

REFERENCE_SGD = LocalTrainConfig(lr=0.01, momentum=0.9, weight_decay=5e-4)
"""FedCFA's reference-code SGD, used by every strategy (batch size and epochs set per task)."""
SIMPSON_SHIFT, SIMPSON_SCALE = 4.0, 3.0
"""Fixed input scaling of the Simpson data: the generator's centre (μ_k = 0..8) and spread."""


@dataclass(frozen=True)
class Task:
    """One dataset × partition with its model and local training settings."""

    dataset: str
    partition: str
    rounds: int
    spec: ModelSpec
    local: LocalTrainConfig
    mean_batch: int
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run."""

    seeds: tuple[int, ...]
    simpson_samples: int
    simpson_rounds: int
    image_clients: int
    digits_rounds: int
    alphas: tuple[float, ...]
    fashion_train: int
    fashion_test: int
    fashion_rounds: int
    fashion_seeds: int
    scale_clients: tuple[int, ...]
    scale_params: tuple[int, ...]
    strategies: tuple[str, ...]


def settings_for(quick: bool, seeds: tuple[int, ...], strategies: tuple[str, ...]) -> Settings:
    """Tiny settings for ``--quick``, a few CPU minutes otherwise."""
    if quick:
        return Settings(
            seeds=seeds[:1],
            simpson_samples=200,
            simpson_rounds=2,
            image_clients=3,
            digits_rounds=2,
            alphas=(0.5,),
            fashion_train=0,
            fashion_test=0,
            fashion_rounds=0,
            fashion_seeds=0,
            scale_clients=(5, 10),
            scale_params=(1_000,),
            strategies=strategies,
        )
    return Settings(
        seeds=seeds,
        simpson_samples=2000,
        simpson_rounds=20,
        image_clients=10,
        digits_rounds=20,
        alphas=(0.1, 0.5),
        fashion_train=3000,
        fashion_test=2000,
        fashion_rounds=12,
        fashion_seeds=1,
        scale_clients=(10, 100, 1000),
        scale_params=(10_000, 100_000, 1_000_000),
        strategies=strategies,
    )


def make_strategy(
    name: str, local: LocalTrainConfig, num_clients: int, mean_batch: int, seed: int
) -> Strategy:
    """Strategies at their papers' default hyperparameters (FedProx μ = 0.01, SCAFFOLD η_g = 1)."""
    factories: dict[str, Callable[[], Strategy]] = {
        "fedavg": lambda: FedAvg(local=local, seed=seed),
        "fedprox": lambda: FedProx(mu=0.01, local=local, seed=seed),
        "scaffold": lambda: Scaffold(num_clients=num_clients, local=local, seed=seed),
        "feddyn": lambda: FedDyn(num_clients=num_clients, alpha=0.01, local=local, seed=seed),
        "fedcfa": lambda: FedCFA(mean_batch=mean_batch, local=local, seed=seed),
    }
    if name not in factories:
        raise ValueError(f"strategy must be one of {sorted(factories)}, got {name!r}")
    return factories[name]()


def history_rows(history: History, strategy: str, task: Task, seed: int) -> list[dict]:
    """One row per recorded round."""
    return [
        {
            "strategy": strategy,
            "dataset": task.dataset,
            "partition": task.partition,
            "round": record.round,
            "accuracy": record.accuracy,
            "loss": record.loss,
            "seed": seed,
            "seconds": record.seconds,
        }
        for record in history.records
    ]


def run_task(
    task: Task,
    clients: list[ArrayDataset],
    test: ArrayDataset,
    seed: int,
    *,
    strategies: tuple[str, ...],
    progress: bool,
) -> list[dict]:
    """Every strategy plus the centralised ceiling on one task and seed."""
    model_fn = lambda: build_model(task.spec)  # noqa: E731
    config = SimulationConfig(rounds=task.rounds, seed=seed, progress=progress)
    rows = []
    for name in strategies:
        strategy = make_strategy(name, task.local, len(clients), task.mean_batch, seed)
        started = time.perf_counter()
        history = simulate(strategy, model_fn, clients, test, config)
        logging.info(
            "%s/%s seed %d %s: final %.3f (%.0f s)",
            task.dataset,
            task.partition,
            seed,
            name,
            history.final_accuracy,
            time.perf_counter() - started,
        )
        rows += history_rows(history, name, task, seed)
    pooled = ArrayDataset.concat(clients)
    central = train_centralised(
        model_fn, pooled, test, task.rounds, local=task.local, seed=seed, progress=progress
    )
    logging.info(
        "%s/%s seed %d centralised: final %.3f", task.dataset, task.partition, seed, central.final_accuracy
    )
    return rows + history_rows(central, "centralised", task, seed)


def simpson_rows(settings: Settings, progress: bool) -> list[dict]:
    """Simpson's paradox: 5 clients, MLP, 5 local epochs per round (the client-drift regime)."""
    task = Task(
        dataset="simpson",
        partition="groups",
        rounds=settings.simpson_rounds,
        spec=ModelSpec("mlp", (1,), 2, factors=16, hidden=32),
        local=dataclasses.replace(REFERENCE_SGD, batch_size=128, epochs=5),
        mean_batch=128,
        seeds=settings.seeds,
    )
    rows = []
    for seed in settings.seeds:
        train = make_simpson(samples_per_client=settings.simpson_samples, seed=seed)
        test = make_simpson(samples_per_client=settings.simpson_samples, seed=10_000 + seed)
        for grouped in (train, test):
            grouped.data.x = (grouped.data.x - SIMPSON_SHIFT) / SIMPSON_SCALE
        clients = [train.data.subset(p) for p in group_partition(train.groups, seed=seed)]
        rows += run_task(task, clients, test.data, seed, strategies=settings.strategies, progress=progress)
    return rows


def image_rows(
    dataset: str,
    train: ArrayDataset,
    test: ArrayDataset,
    settings: Settings,
    *,
    rounds: int,
    seeds: tuple[int, ...],
    mean_batch: int,
    progress: bool,
) -> list[dict]:
    """Dirichlet label skew on an image dataset with the small CNN."""
    rows = []
    for alpha in settings.alphas:
        task = Task(
            dataset=dataset,
            partition=f"dirichlet-{alpha}",
            rounds=rounds,
            spec=ModelSpec("cnn", train.input_shape, 10, factors=16, hidden=32),
            local=dataclasses.replace(REFERENCE_SGD, batch_size=32, epochs=1),
            mean_batch=mean_batch,
            seeds=seeds,
        )
        for seed in seeds:
            parts = dirichlet_partition(train.y.numpy(), settings.image_clients, alpha, seed=seed)
            clients = [train.subset(p) for p in parts]
            rows += run_task(task, clients, test, seed, strategies=settings.strategies, progress=progress)
    return rows


def _random_states(num_params: int, distinct: int, seed: int) -> list[OrderedDict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    width = max(1, num_params // 4)
    shapes = {"layer.weight": (width, 3), "layer.bias": (num_params - 3 * width,)}
    return [
        OrderedDict((name, torch.randn(shape, generator=gen)) for name, shape in shapes.items())
        for _ in range(distinct)
    ]


def _best_of(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def scale_rows(settings: Settings) -> dict:
    """Server aggregation time against clients × model size (client states reused cyclically)."""
    rows = []
    for num_params in settings.scale_params:
        distinct = _random_states(num_params, 8, seed=num_params)
        for num_clients in settings.scale_clients:
            states = [distinct[i % len(distinct)] for i in range(num_clients)]
            weights = [float(1 + i % 7) for i in range(num_clients)]
            glob = distinct[0]
            results = {
                f"c{i}": ClientResult(
                    states[i],
                    int(weights[i]),
                    extras={f"delta_c/{k}": v for k, v in states[i].items()}
                    | {"mean_x": torch.zeros(4, 1, 8, 8), "mean_y": torch.zeros(4, 10)},
                )
                for i in range(num_clients)
            }
            timings = {
                "fedavg": _best_of(2, lambda: weighted_average(states, weights)),  # noqa: B023
                "scaffold": _best_of(
                    2,
                    lambda: Scaffold(num_clients=num_clients).aggregate(0, glob, results),  # noqa: B023
                ),
                "fedcfa": _best_of(2, lambda: FedCFA().aggregate(0, glob, results)),  # noqa: B023
            }
            reference = None
            if num_clients * num_params <= 20_000_000:
                reference = _best_of(2, lambda: weighted_average_reference(states, weights))  # noqa: B023
            for strategy, seconds in timings.items():
                rows.append(
                    {
                        "strategy": strategy,
                        "num_clients": num_clients,
                        "num_params": num_params,
                        "seconds": seconds,
                        "seconds_per_client": seconds / num_clients,
                        "vs_stacked_reference": None if reference is None else seconds / reference,
                    }
                )
    return {"rows": rows, "baseline": "weighted_average_reference (stack all clients, then sum)"}


def summarise(rows: list[dict]) -> list[dict]:
    """Per task × strategy: final and best accuracy (mean over seeds) and rounds to FedAvg's final."""
    runs: dict[tuple, dict[int, float]] = defaultdict(dict)
    for row in rows:
        runs[(row["dataset"], row["partition"], row["strategy"], row["seed"])][row["round"]] = row["accuracy"]
    summary = []
    for dataset, partition, strategy in sorted({key[:3] for key in runs}):
        seeds = sorted(key[3] for key in runs if key[:3] == (dataset, partition, strategy))
        finals, bests, last5, rounds_ratio, rounds_to = [], [], [], [], []
        for seed in seeds:
            curve = runs[(dataset, partition, strategy, seed)]
            final_round = max(curve)
            finals.append(curve[final_round])
            bests.append(max(curve.values()))
            last5.append(float(np.mean([curve[r] for r in sorted(curve)[-5:]])))
            fedavg = runs.get((dataset, partition, "fedavg", seed))
            if fedavg:
                target = fedavg[max(fedavg)]
                own = next((r for r in sorted(curve) if r > 0 and curve[r] >= target), None)
                base = next(r for r in sorted(fedavg) if r > 0 and fedavg[r] >= target)
                rounds_to.append(own)
                rounds_ratio.append(None if own is None else own / base)
        summary.append(
            {
                "dataset": dataset,
                "partition": partition,
                "strategy": strategy,
                "seeds": seeds,
                "final_accuracy": float(np.mean(finals)),
                "best_accuracy": float(np.mean(bests)),
                "last5_mean_accuracy": float(np.mean(last5)),
                "rounds_to_fedavg_final": rounds_to,
                "rounds_ratio_vs_fedavg": rounds_ratio,
            }
        )
    return summary


def plot(rows: list[dict], path: Path) -> None:
    """Accuracy against round, one panel per dataset × partition, mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[tuple, dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for row in rows:
        curves[(row["dataset"], row["partition"])][row["strategy"]][row["round"]].append(row["accuracy"])
    panels = sorted(curves)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        for strategy, by_round in sorted(curves[panel].items()):
            xs = sorted(by_round)
            style = "--" if strategy == "centralised" else "-"
            axis.plot(xs, [np.mean(by_round[x]) for x in xs], style, label=strategy)
        axis.set_title(f"{panel[0]} / {panel[1]}")
        axis.set_xlabel("round")
        axis.set_ylabel("test accuracy")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and write JSON + PNG; returns the written document."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--strategies", nargs="+", default=["fedavg", "fedprox", "scaffold", "fedcfa"])
    parser.add_argument("--no-fashion", action="store_true", help="skip Fashion-MNIST even if installed")
    parser.add_argument("--no-scale", action="store_true", help="skip the aggregation-time sweep")
    parser.add_argument("--progress", action="store_true", help="show tqdm bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("trillium.federated.core.strategies.fedcfa").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    settings = settings_for(args.quick, tuple(args.seeds), tuple(args.strategies))

    rows = simpson_rows(settings, args.progress)
    train, test = load_digits(seed=0)
    if args.quick:
        train, test = train.subset(np.arange(300)), test.subset(np.arange(200))
    rows += image_rows(
        "digits",
        train,
        test,
        settings,
        rounds=settings.digits_rounds,
        seeds=settings.seeds,
        mean_batch=16,
        progress=args.progress,
    )
    fashion = not args.quick and not args.no_fashion and fashion_mnist_available()
    if fashion:
        train, test = load_fashion_mnist(
            max_train=settings.fashion_train, max_test=settings.fashion_test, seed=0
        )
        seeds = settings.seeds[: settings.fashion_seeds]
        rows += image_rows(
            "fashion-mnist",
            train,
            test,
            settings,
            rounds=settings.fashion_rounds,
            seeds=seeds,
            mean_batch=64,
            progress=args.progress,
        )
    scale = {} if args.no_scale else scale_rows(settings)

    document = {
        "rows": rows,
        "scale": scale,
        "summary": summarise(rows),
        "settings": dataclasses.asdict(settings) | {"quick": args.quick, "fashion_mnist": fashion},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "federated.json").write_text(json.dumps(document, indent=1))
    plot(rows, args.out / "federated.png")
    for entry in document["summary"]:
        logging.info(
            "%-14s %-15s %-11s final %.3f last5 %.3f rounds-ratio %s",
            entry["dataset"],
            entry["partition"],
            entry["strategy"],
            entry["final_accuracy"],
            entry["last5_mean_accuracy"],
            entry["rounds_ratio_vs_fedavg"],
        )
    return document


if __name__ == "__main__":
    main()
