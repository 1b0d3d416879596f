"""The combined avatar results file, ``bench/results/avatar.json``.

Schema: ``{"rows": [...], "lipsync": {...}, "latency": {...}, "meta": {"render": ..., ...}}``.
``rows`` come from ``render_fps.py`` (renderer, gaussians, width, height, fps, fps_reference,
max_abs_err_vs_reference, ...), ``latency`` from ``latency.py`` and ``lipsync`` from ``lipsync.py``.
Each script replaces only its own sections, so they can run separately or in any order.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS_NAME = "avatar.json"


def merge_results(out_dir: Path, sections: dict, meta_key: str, meta: dict) -> Path:
    """Replace ``sections`` (e.g. ``{"rows": rows}``) and ``meta[meta_key]`` in ``out_dir/avatar.json``."""
    path = out_dir / RESULTS_NAME
    current = json.loads(path.read_text()) if path.is_file() else {}
    current.update(sections)
    current.setdefault("meta", {})[meta_key] = meta
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(current, indent=2) + "\n")
    tmp.replace(path)
    return path
