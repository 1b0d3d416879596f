"""`trillium-inference`: Multimodal LLM generation with per-request KV-cache compression."""

from __future__ import annotations

from collections.abc import Sequence

from trillium.inference.client.cli import ask_main
from trillium.inference.service.app import build_definition
from trillium.inference.service.settings import InferenceSettings
from trillium.servicekit.cli import service_main


def main(argv: Sequence[str] | None = None) -> int:
    return service_main(
        "inference",
        "Multimodal LLM generation with per-request KV-cache compression.",
        build_definition,
        argv,
        {"ask": ("ask a running server one question (streams the answer)", ask_main)},
        extra_settings=InferenceSettings,
    )
