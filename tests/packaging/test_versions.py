"""Versions have one source of truth, each package's pyproject.toml: the libraries' `__version__` and the
README's package table follow it."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIBRARIES = {
    "kvcompress": "trillium.kvcompress",
    "engine": "trillium.engine",
    "models": "trillium.models",
    "avatar": "trillium.avatar.core",
    "federated": "trillium.federated.core",
}


@pytest.mark.parametrize("folder", sorted(LIBRARIES))
def test_library_version_matches_pyproject(folder: str) -> None:
    declared = tomllib.loads((REPO / "libs" / folder / "pyproject.toml").read_text())["project"]["version"]
    assert importlib.import_module(LIBRARIES[folder]).__version__ == declared


def test_readme_package_table_matches_every_pyproject() -> None:
    declared = {}
    for pyproject in [*REPO.glob("libs/*/pyproject.toml"), *REPO.glob("services/*/pyproject.toml")]:
        project = tomllib.loads(pyproject.read_text())["project"]
        declared[project["name"]] = project["version"]
    readme = (REPO / "README.md").read_text()
    listed = dict(re.findall(r"^\| `(trillium-[a-z-]+)` \| ([0-9.]+) \|", readme, re.M))
    assert listed == declared
