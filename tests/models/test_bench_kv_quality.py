"""The kv-quality harness runs end to end on a quickly trained av-tiny and writes the promised rows."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import trillium.kvcompress
import trillium.models

REPO = Path(__file__).resolve().parents[2]


def test_harness_writes_rows_per_impl_policy_budget_and_family(tmp_path):
    model_dir = tmp_path / "av-tiny"
    subprocess.run(
        [sys.executable, "-m", "trillium.models.av_tiny.train", "--quick", "--out", str(model_dir)],
        check=True,
        capture_output=True,
    )
    harness = REPO / "bench" / "kv_quality" / "run.py"
    command = [
        sys.executable,
        str(harness),
        "--model",
        str(model_dir),
        "--per-family",
        "1",
        "--budgets",
        "1.0,0.2",
        "--policies",
        "snapkv,acckv",
        "--no-kvpress",
        "--out-dir",
        str(tmp_path / "out"),
    ]
    subprocess.run(command, check=True, capture_output=True)
    result = json.loads((tmp_path / "out" / "kv-quality.json").read_text())
    rows = result["rows"]
    for row in rows:
        assert {"impl", "protocol", "policy", "budget", "family", "accuracy", "accuracy_full", "n"} <= set(
            row
        )
        assert 0.0 <= row["accuracy"] <= 1.0
    keys = {(r["policy"], r["budget"], r["family"], r["protocol"]) for r in rows}
    for policy in ("snapkv", "acckv", "random"):
        for budget in (1.0, 0.2):
            for protocol in ("A", "B", "C"):
                assert (policy, budget, "overall", protocol) in keys
    for protocol in ("A", "B", "C"):  # budget 1.0 keeps everything: each protocol equals the full cache
        lossless = [
            r for r in rows if r["budget"] == 1.0 and r["protocol"] == protocol and r["impl"] == "trillium"
        ]
        assert lossless and all(abs(r["accuracy"] - r["accuracy_full"]) < 1e-9 for r in lossless)
    families = {r["family"] for r in rows if r["policy"] == "snapkv"}
    assert "overall" in families and len(families) >= 3
    full = [r for r in rows if r["policy"] == "full"]
    assert all(r["accuracy"] == r["accuracy_full"] for r in full)
    assert result["kvpress"].startswith("skipped")
    # Question-agnostic protocol: the policy compresses the context only, so the cache holding the
    # kept context plus the uncompressed question is larger than the budget (compressing the whole
    # prompt would give round(0.2 * L) / L, within 0.01 of 0.2 for these prompts of 200+ tokens).
    assert result["protocols"]["A"].startswith("question-agnostic") and set(result["protocols"]) == {
        "A",
        "B",
        "C",
    }
    snap = {p["protocol"]: p for p in result["perf"] if p["policy"] == "snapkv" and p["budget"] == 0.2}
    assert 0.21 < snap["A"]["kv_bytes_ratio"] < 0.5
    assert 0.19 <= snap["B"]["kv_bytes_ratio"] <= 0.21  # the whole prompt compressed to the budget
    assert result["commit"] and result["versions"]["trillium-kvcompress"] == trillium.kvcompress.__version__
    assert len(result["observations"]["cross_modal_share"]) > 0
    assert result["frames"] == [7, 11, 15] and result["prompt_tokens"][0] > 200
    assert result["name"] == "kv-quality"
    digest = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert result["model_sha256"] == digest[:12] and result["models_version"] == trillium.models.__version__
    assert (tmp_path / "out" / "kv-quality.md").read_text().startswith("# kv-quality (")
    for name in ("kv-quality.png", "kv-quality-observations.png", "kv-quality.md"):
        assert (tmp_path / "out" / name).stat().st_size > 0
