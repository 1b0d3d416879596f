"""The kv-micro benchmark runs end to end (tiny settings) and writes consistent JSON, PNG and table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_run_writes_rows_for_every_policy(tmp_path):
    script = REPO / "bench" / "kv_micro" / "run.py"
    subprocess.run(
        [sys.executable, str(script), "--quick", "--out-dir", str(tmp_path)], check=True, capture_output=True
    )
    result = json.loads((tmp_path / "kv-micro.json").read_text())
    rows = result["rows"]
    from trillium.kvcompress import list_policies

    assert {r["policy"] for r in rows} == {s.name for s in list_policies()} | {"purekv+st_sparse"}
    for row in rows:
        for key in (
            "policy",
            "budget",
            "context_tokens",
            "kv_bytes",
            "kv_bytes_full",
            "decode_ms_per_token",
            "decode_ms_per_token_full",
            "prefill_ms",
            "prefill_ms_dense",
            "compress_ms",
        ):
            assert key in row, key
        assert row["kv_bytes"] < row["kv_bytes_full"] == row["kv_bytes_dense_cache"]
        assert 0 <= row["compress_ms"] <= row["prefill_ms"]
    assert (tmp_path / "kv-micro.png").stat().st_size > 0
    assert "| snapkv |" in (tmp_path / "kv-micro.md").read_text()
