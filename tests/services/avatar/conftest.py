"""A real avatar service on loopback, serving the shipped avatar assets."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from trillium.avatar.service.app import AVATARS_DIR_ENV, build_definition
from trillium.avatar.v1 import avatar_pb2_grpc
from trillium.servicekit.background import BackgroundService
from trillium.servicekit.settings import ServiceSettings

ASSETS = Path(__file__).resolve().parents[3] / "assets" / "avatars"
DEFAULT_AVATAR = "procedural-head"


@pytest.fixture(scope="module")
def service():
    previous = os.environ.get(AVATARS_DIR_ENV)
    os.environ[AVATARS_DIR_ENV] = str(ASSETS)
    settings = ServiceSettings(port=0, metrics_port=-1, drain_seconds=0, grace_seconds=1)
    try:
        with BackgroundService(build_definition(settings), settings) as running:
            running.wait_ready()
            yield running
    finally:
        if previous is None:
            os.environ.pop(AVATARS_DIR_ENV, None)
        else:
            os.environ[AVATARS_DIR_ENV] = previous


@pytest.fixture(scope="module")
def stub(service):
    # no BDP probing: the flow-control window stays small, so a slow reader back-pressures the server
    channel = grpc.insecure_channel(service.target, options=[("grpc.http2.bdp_probe", 0)])
    yield avatar_pb2_grpc.AvatarServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def metric(service):
    def read(name: str, **labels: str) -> float:
        return service.runtime.registry.get_sample_value(name, labels) or 0.0

    return read
