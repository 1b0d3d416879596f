"""The markdown summary and the plot of ``bench-kv-text`` (``kv-text.md``, ``kv-text.png``)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def averages(rows: list[dict]) -> dict[tuple[str, str, str, float], float]:
    """``(impl, policy, protocol, budget) -> accuracy`` averaged over tasks and lengths (equal weight)."""
    cells: dict[tuple, list[float]] = defaultdict(list)
    for row in rows:
        cells[(row["impl"], row["policy"], row["protocol"], row["budget"])].append(row["accuracy"])
    return {key: sum(v) / len(v) for key, v in cells.items()}


def full_average(rows: list[dict]) -> float:
    cells = {(r["task"], r["context_tokens"]): r["accuracy_full"] for r in rows}
    return sum(cells.values()) / len(cells) if cells else 0.0


def _best(avg: dict, impl: str, protocol: str, budget: float) -> tuple[float, str] | None:
    """``(accuracy, policy)`` of the best non-random policy of ``impl`` at ``budget``."""
    candidates = [
        (value, name)
        for (i, name, p, b), value in avg.items()
        if i == impl and p == protocol and b == budget and name != "random"
    ]
    return max(candidates, default=None)


def goal_checks(rows: list[dict]) -> list[dict]:
    """The issue's goals: our SnapKV within 1 point of kvpress's at every budget; the best Trillium
    policy above the best kvpress press at 20%, on average over tasks and lengths."""
    avg = averages(rows)
    budgets = sorted({b for *_, b in avg})
    checks = []
    for protocol in sorted({p for _, _, p, _ in avg}):
        for label in ("snapkv", "snapkv@w64"):
            for budget in budgets:
                ours = avg.get(("trillium", label, protocol, budget))
                theirs = avg.get(("kvpress", "snapkv", protocol, budget))
                if ours is None or theirs is None:
                    continue
                checks.append(
                    {
                        "goal": f"{protocol}: trillium {label} within 1 point of kvpress snapkv "
                        f"at {budget:.0%}",
                        "value": ours,
                        "target": theirs,
                        "met": abs(ours - theirs) <= 0.01 + 1e-9,
                    }
                )
        best = {
            impl: max(
                (
                    (v, name)
                    for (i, name, p, b), v in avg.items()
                    if i == impl and p == protocol and b == 0.2 and name != "random"
                ),
                default=None,
            )
            for impl in ("trillium", "kvpress")
        }
        if best["trillium"] and best["kvpress"]:
            checks.append(
                {
                    "goal": f"{protocol}: best trillium ({best['trillium'][1]}) above best kvpress "
                    f"({best['kvpress'][1]}) at 20%",
                    "value": best["trillium"][0],
                    "target": best["kvpress"][0],
                    "met": best["trillium"][0] > best["kvpress"][0],
                }
            )
    return checks


def _table(avg: dict, protocol: str, budgets: list[float]) -> list[str]:
    names = sorted({(i, n) for i, n, p, _ in avg if p == protocol})
    lines = [
        "| impl | policy | " + " | ".join(f"{b:.0%}" for b in budgets) + " |",
        "|---|---|" + "---|" * len(budgets),
    ]
    for impl, name in names:
        cells = [
            f"{100 * avg[(impl, name, protocol, b)]:.1f}" if (impl, name, protocol, b) in avg else "–"
            for b in budgets
        ]
        lines.append(f"| {impl} | {name} | " + " | ".join(cells) + " |")
    return lines


def _task_table(rows: list[dict], protocol: str, budget: float) -> list[str]:
    tasks = sorted({r["task"] for r in rows})
    cells: dict[tuple, list[float]] = defaultdict(list)
    full: dict[str, dict] = defaultdict(dict)
    for r in rows:
        full[r["task"]][r["context_tokens"]] = r["accuracy_full"]
        if r["protocol"] == protocol and r["budget"] == budget:
            cells[(r["impl"], r["policy"], r["task"])].append(r["accuracy"])
    lines = ["| impl | policy | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    lines.append(
        "| – | full cache | "
        + " | ".join(f"{100 * sum(full[t].values()) / len(full[t]):.1f}" for t in tasks)
        + " |"
    )
    for impl, name in sorted({(i, n) for i, n, _ in cells}):
        values = [cells.get((impl, name, t)) for t in tasks]
        lines.append(
            f"| {impl} | {name} | "
            + " | ".join(f"{100 * sum(v) / len(v):.1f}" if v else "–" for v in values)
            + " |"
        )
    return lines


def write_report(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    avg = averages(rows)
    budgets = sorted({b for *_, b in avg})
    protocols = sorted({p for _, _, p, _ in avg})
    full = full_average(rows)
    figure, axes = plt.subplots(1, len(protocols), figsize=(7 * len(protocols), 5), squeeze=False)
    colours = plt.get_cmap("tab20").colors
    for axis, protocol in zip(axes[0], protocols):
        names = sorted({(i, n) for i, n, p, _ in avg if p == protocol})
        for index, (impl, name) in enumerate(names):
            points = [
                (b, avg[(impl, name, protocol, b)]) for b in budgets if (impl, name, protocol, b) in avg
            ]
            axis.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                "--" if impl == "kvpress" else "-",
                marker="o",
                color=colours[index % len(colours)],
                label=f"{impl}:{name}",
            )
        axis.axhline(full, color="black", lw=1, label="full cache")
        axis.set_title(f"SmolLM2-135M, RULER-style suite, protocol {protocol}")
        axis.set_xlabel("KV budget (fraction kept)")
        axis.set_ylabel("accuracy (mean over tasks and lengths)")
        axis.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    figure.savefig(out.with_suffix(".png"), dpi=110)

    lengths = ", ".join(f"{k}: {v[0]}-{v[1]}" for k, v in result["prompt_tokens"].items())
    parts = [
        f"# kv-text (SmolLM2-135M-Instruct; commit {result['commit'][:12]}; kvpress: {result['kvpress']})",
        "",
        f"{result['per_cell']} samples per (task, length), seed {result['seed']}; prompt tokens per target "
        f"{lengths}. Scoring: {result['scoring']}. Full cache: {100 * full:.1f} on average.",
        "",
        "## Goals",
        "",
        "| goal | value | target | met |",
        "|---|---|---|---|",
    ]
    for check in goal_checks(rows):
        parts.append(
            f"| {check['goal']} | {100 * check['value']:.1f} | {100 * check['target']:.1f} | "
            f"{'yes' if check['met'] else '**no**'} |"
        )
    for protocol in protocols:
        parts += [
            "",
            f"## Protocol {protocol}: accuracy (%), mean over tasks and lengths",
            "",
            *_table(avg, protocol, budgets),
            "",
            f"## Protocol {protocol}, 20%: accuracy (%) per task",
            "",
            *_task_table(rows, protocol, 0.2),
        ]
    overhead = result.get("compression_overhead", {})
    if overhead:
        longest = max(int(k.split("@")[-2]) for k in overhead)
        parts += [
            "",
            f"## Compression time / prefill time at {longest} tokens",
            "",
            "| policy | protocol | share |",
            "|---|---|---|",
        ]
        for key, value in sorted(overhead.items()):
            name, target, protocol = key.rsplit("@", 2)
            if int(target) == longest:
                parts.append(f"| {name} | {protocol} | {100 * value:.1f}% |")
    out.with_suffix(".md").write_text("\n".join(parts) + "\n")
