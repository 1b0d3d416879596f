"""The prefill micro-benchmark runs end to end in --quick mode and writes its JSON and plot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "kv_micro" / "prefill.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("kv_micro_prefill", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module at class creation
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_json_and_png(tmp_path: Path) -> None:
    result = load_bench().main(["--quick", "--out-dir", str(tmp_path), "--no-progress"])
    written = json.loads((tmp_path / "kv-micro-prefill.json").read_text())
    assert written == json.loads(json.dumps(result))
    record = written["records"][0]
    assert record["case"]["seq_len"] == 768
    assert 0.0 < record["plan_stats"]["token_density"] < 1.0
    torch_run = record["torch"]
    assert torch_run["speedup_attention"] == record["dense_s"] / torch_run["attention_s"]
    assert 0.0 <= torch_run["relative_mean_abs_error_vs_dense"] < 1.0
    png = (tmp_path / "kv-micro-prefill.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_synthetic_layout_has_whole_frames_and_text_ends() -> None:
    bench = load_bench()
    case = bench.Case(300, 32, 2, 1, 16, 10, 12, static_shots=1, shot_frames=3)
    modality, frame_index = bench.video_layout(case)
    assert modality.numel() == 300
    assert modality[:10].eq(0).all() and modality[-12:].eq(0).all()
    counts = frame_index[frame_index >= 0].bincount()
    assert counts.eq(32).all() and counts.numel() == (300 - 22) // 32
    q, k, v = bench.synthetic_qkv(case, modality, frame_index)
    assert q.shape == (1, 2, 300, 16) and k.shape == v.shape == (1, 1, 300, 16)
