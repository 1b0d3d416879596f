"""The demo end to end: a coordinator process and `trillium-fl-client` processes on loopback."""

from __future__ import annotations

from trillium.federated.service.demo import run_demo
from trillium.federated.v1 import coordinator_pb2 as pb


def test_demo_runs_fedcfa_with_client_processes_and_prints_accuracy(tmp_path, redis_server):
    lines: list[str] = []
    summaries = run_demo(
        num_clients=2, rounds=2, data_dir=str(tmp_path), redis_url=redis_server.url, timeout_seconds=240,
        print_fn=lines.append,
    )  # fmt: skip
    assert [s.round for s in summaries] == [1, 2]
    assert all(s.outcome == pb.ROUND_OUTCOME_COMPLETED and s.updates_accepted == 2 for s in summaries)
    assert all(0.0 <= s.metrics["accuracy"] <= 1.0 for s in summaries)
    assert lines[0].startswith("run ") and "fedcfa, 2 clients, 2 rounds" in lines[0]
    assert [line.split(":")[0] for line in lines[1:3]] == ["round 1", "round 2"]
    assert f"accuracy {summaries[-1].metrics['accuracy']:.4f}" in lines[2]
    assert "RUN_STATE_COMPLETED" in lines[-1]
    assert (tmp_path / "federated" / "runs").is_dir()
