"""The coordinator load benchmark runs (few clients, one round) with no errors and no rejections."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_concurrent_clients_complete_a_round_without_errors(tmp_path):
    out = tmp_path / "load.json"
    script = REPO / "bench" / "federated" / "concurrency.py"
    command = [
        sys.executable,
        str(script),
        "--clients",
        "6",
        "--rounds",
        "1",
        "--deadline",
        "240",
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=400)
    result = json.loads(out.read_text())
    assert result["run_state"] == "RUN_STATE_COMPLETED"
    assert result["rounds_completed"] == 1 and result["updates_accepted"] == 6
    assert result["client_errors"] == 0 and result["updates_rejected"] == 0
    assert result["clients_finished"] == 6
