"""The render benchmark's smoke mode writes well-formed results."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from trillium.avatar.core import native_available

BENCH = Path(__file__).resolve().parents[2] / "bench" / "avatar" / "render_fps.py"


def test_quick_benchmark_writes_rows_and_plot(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("render_fps", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--quick", "--out-dir", str(tmp_path), "--threads", "1", "--no-progress"])
    result = json.loads((tmp_path / "avatar-render.json").read_text())
    rows = result["rows"]
    renderers = ("native", "torch") if native_available() else ("torch",)
    assert {(r["renderer"], r["gaussians"]) for r in rows} == {(b, n) for b in renderers for n in (100, 200)}
    required = {
        "renderer",
        "gaussians",
        "width",
        "height",
        "fps",
        "fps_reference",
        "max_abs_err_vs_reference",
    }
    for row in rows:
        assert required <= set(row)
        assert row["fps"] > 0 and row["fps_reference"] > 0
        assert row["max_abs_err_vs_reference"] < 1e-5
    assert (tmp_path / "avatar-render.png").stat().st_size > 1000
