"""The benchmark script runs end to end on tiny settings and writes the documented JSON and PNG."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "federated" / "run.py"


def test_quick_benchmark_writes_rows_scale_and_plot(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("federated_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    module.main(["--quick", "--out", str(tmp_path), "--strategies", "fedavg", "fedcfa"])
    document = json.loads((tmp_path / "federated.json").read_text())
    assert (tmp_path / "federated.png").stat().st_size > 1000
    rows = document["rows"]
    assert {"strategy", "dataset", "partition", "round", "accuracy", "seed"} <= set(rows[0])
    assert {r["strategy"] for r in rows} == {"fedavg", "fedcfa", "centralised"}
    assert {r["dataset"] for r in rows} == {"simpson", "digits"}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    scale = document["scale"]["rows"]
    assert {r["num_clients"] for r in scale} == {5, 10}
    assert all(r["seconds"] > 0 for r in scale)
    fedavg = [s for s in document["summary"] if s["strategy"] == "fedavg"]
    assert all(s["rounds_ratio_vs_fedavg"] == [1.0] for s in fedavg)
