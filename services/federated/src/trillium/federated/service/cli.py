"""`trillium-coordinator`: Federated-learning coordinator."""

from __future__ import annotations

from collections.abc import Sequence

from trillium.federated.service.app import build_definition
from trillium.servicekit.cli import service_main


def main(argv: Sequence[str] | None = None) -> int:
    return service_main("coordinator", "Federated-learning coordinator.", build_definition, argv)
