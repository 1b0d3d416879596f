"""What a benchmark result ran on: the git commit and the versions of the packages it measured.

Every results JSON under ``bench/results/`` carries ``commit`` and ``versions`` from here, so that a
committed result can be checked against the code it describes. Benchmarks import it with
``sys.path.insert(0, <repo>/bench)``.
"""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PACKAGES = ("torch", "transformers", "trillium-kvcompress", "trillium-models", "trillium-engine")


def git_commit() -> str:
    """``HEAD``'s hash, with ``+dirty`` when tracked files differ from it (``unknown`` outside git)."""
    run = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if run.returncode != 0:
        return "unknown"
    dirty = subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--", "libs", "services", "bench"], cwd=REPO, capture_output=True
    )
    return run.stdout.strip() + ("+dirty" if dirty.returncode == 1 else "")


def package_versions(names: tuple[str, ...] = DEFAULT_PACKAGES) -> dict[str, str]:
    """``{package: version}`` for ``names`` (``missing`` if not installed), plus Python's."""
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    out["python"] = platform.python_version()
    return out
