"""`trillium-avatar`: Real-time 3D Gaussian-splatting talking avatars."""

from __future__ import annotations

from collections.abc import Sequence

from trillium.avatar.service.app import build_definition
from trillium.servicekit.cli import service_main


def main(argv: Sequence[str] | None = None) -> int:
    return service_main("avatar", "Real-time 3D Gaussian-splatting talking avatars.", build_definition, argv)
