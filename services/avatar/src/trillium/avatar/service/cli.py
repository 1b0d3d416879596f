"""`trillium-avatar`: real-time 3D Gaussian-splatting talking avatars (`serve`, `fit`)."""

from __future__ import annotations

from collections.abc import Sequence

from trillium.avatar.service.app import build_definition
from trillium.servicekit.cli import service_main


def fit(argv: list[str]) -> int:
    from trillium.avatar.core.fit_cli import main as fit_main

    return fit_main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    commands = {"fit": ("fit an avatar's Gaussians to multi-view images (see `fit --help`)", fit)}
    return service_main(
        "avatar", "Real-time 3D Gaussian-splatting talking avatars.", build_definition, argv, commands
    )
