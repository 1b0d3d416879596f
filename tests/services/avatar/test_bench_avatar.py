"""The avatar latency and lip-sync benchmarks run end to end in tiny configurations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trillium.avatar.core.speech_data import espeak_available

REPO = Path(__file__).resolve().parents[3]
BENCH = REPO / "bench" / "avatar"


def run_script(name: str, out_dir: Path, *args: str) -> dict:
    command = [sys.executable, str(BENCH / name), "--quick", "--out-dir", str(out_dir), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out_dir / "avatar.json").read_text())


def test_latency_bench_streams_speech_over_grpc_and_writes_results(tmp_path):
    (tmp_path / "avatar.json").write_text(json.dumps({"rows": [{"renderer": "native"}]}))
    result = run_script("latency.py", tmp_path, "--threads", "1")
    assert result["rows"] == [{"renderer": "native"}]  # other sections are kept
    latency = result["latency"]
    assert result["meta"]["latency"]["quick"] is True
    assert latency["audio_seconds"] == pytest.approx(0.8)
    configs = {c["name"]: c for c in latency["configs"]}
    assert {c["pace"] for c in configs.values()} == {"realtime", "burst"}
    assert {c["sample_rate"] for c in configs.values()} == {16_000, 48_000}
    assert max(c["streams"] for c in configs.values()) == 2
    for config in configs.values():
        assert config["errors"] == []
        # 0.8 s of speech at 10 fps: frames 0..7 per stream, all delivered (the client reads at once)
        assert config["frames_expected"] == 8 * config["streams"]
        assert config["frames_received"] + config["frames_dropped"] == config["frames_expected"]
        assert config["frames_missing"] == config["frames_dropped"]
        frame = config["frame_latency_ms"]
        # causality: no frame arrives before the input that completes it was sent (checks the replay)
        assert 0 < frame["min"] <= frame["p50"] <= frame["p90"] <= frame["p99"] <= frame["max"]
        assert config["first_frame_ms_mean"] >= config["first_frame_floor_ms"]
        assert config["direct_ms"] > 0 and config["jpeg_bytes_mean"] > 0
        if config["pace"] == "realtime":
            # 80 ms chunks: frame 0 needs audio to 280 ms (160 + 80 ms model look-ahead, one keyframe)
            assert config["first_frame_floor_ms"] == 240.0
            assert config["av_lag_ms"]["p50"] > 280
        else:
            assert config["first_frame_floor_ms"] == 0.0 and config["av_lag_ms"] == {}
    assert latency["cold_first_frame_ms"] > 0
    assert (tmp_path / "avatar-latency.png").stat().st_size > 1000


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_lipsync_bench_scores_the_model_against_baselines(tmp_path):
    lipsync = run_script("lipsync.py", tmp_path)["lipsync"]
    for split in ("heldout_sentences", "heldout_voices"):
        scores = lipsync[split]
        assert scores["frames"] > 100
        assert scores["constant_mean"]["pearson_mean_mouth"] == 0.0  # undefined for a constant track
        assert scores["model"]["pearson_mean_mouth"] > scores["energy_regression"]["pearson_mean_mouth"]
        assert scores["model"]["lip_vertex_error_mm"] < scores["constant_mean"]["lip_vertex_error_mm"]
        assert 0 < scores["mse_ratio_vs_constant_mean"] < 1
    assert (tmp_path / "avatar-lipsync.png").stat().st_size > 1000
