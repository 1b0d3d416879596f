"""`trillium-avatar` dispatches `fit` to the fitting CLI and keeps `serve`."""

from __future__ import annotations

import subprocess
import sys

from trillium.avatar.core.asset import load_asset


def run(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from trillium.avatar.service.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_help_lists_serve_and_fit():
    result = run("--help")
    assert result.returncode == 0 and "serve" in result.stdout and "fit" in result.stdout


def test_fit_writes_a_loadable_asset(tmp_path):
    out = tmp_path / "fitted.safetensors"
    result = run(
        "fit", "--synthetic", "--out", str(out), "--iterations", "20", "--size", "16", "--no-progress"
    )
    assert result.returncode == 0, result.stderr
    assert load_asset(out).gaussians.parents.numel() > 0
