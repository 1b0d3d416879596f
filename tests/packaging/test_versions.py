"""Each library reports the version its pyproject.toml declares (one source of truth)."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIBRARIES = {
    "kvcompress": "trillium.kvcompress",
    "models": "trillium.models",
    "avatar": "trillium.avatar.core",
    "federated": "trillium.federated.core",
}


@pytest.mark.parametrize("folder", sorted(LIBRARIES))
def test_library_version_matches_pyproject(folder: str) -> None:
    declared = tomllib.loads((REPO / "libs" / folder / "pyproject.toml").read_text())["project"]["version"]
    assert importlib.import_module(LIBRARIES[folder]).__version__ == declared
