"""Fixtures for the coordinator tests: a real Redis, a coordinator on a background loop, client threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from trillium.common.v1 import values_pb2
from trillium.federated.service.app import build_definition
from trillium.federated.service.client_runtime import ClientReport, FederatedClient, load_client_data
from trillium.federated.service.coordinator import CoordinatorOptions
from trillium.federated.v1 import coordinator_pb2 as pb
from trillium.federated.v1 import coordinator_pb2_grpc
from trillium.servicekit.background import BackgroundService
from trillium.servicekit.client import bearer_metadata, open_sync_channel
from trillium.servicekit.settings import ServiceSettings
from trillium.servicekit.testing import RedisServer

CLIENT_TOKEN = "client-token"
ADMIN_TOKEN = "admin-token"
CLIENT_MD = bearer_metadata(CLIENT_TOKEN)
ADMIN_MD = bearer_metadata(ADMIN_TOKEN)


def run_config(**overrides) -> pb.RunConfig:
    """A small valid FedAvg run on digits; ``strategy_parameters`` given as plain scalars."""
    parameters = overrides.pop("strategy_parameters", {})
    values = {
        "strategy": "fedavg", "num_rounds": 2, "fraction_fit": 1.0, "min_clients": 1,
        "round_timeout_seconds": 20.0, "model": "mlp", "dataset": "digits", "seed": 3,
        "local_epochs": 1, "batch_size": 32, "learning_rate": 0.05,
    }  # fmt: skip
    values.update(overrides)
    config = pb.RunConfig(**values)
    for key, value in parameters.items():
        kind = "flag" if isinstance(value, bool) else "integer" if isinstance(value, int) else "number"
        config.strategy_parameters[key].CopyFrom(values_pb2.ParameterValue(**{kind: value}))
    return config


@dataclass
class Coordinator:
    service: BackgroundService
    data_dir: Path
    stub: coordinator_pb2_grpc.CoordinatorStub

    @property
    def engine(self):
        return self.service.runtime.coordinator

    def start(self, config: pb.RunConfig) -> pb.RunStatus:
        return self.stub.StartRun(pb.StartRunRequest(config=config), metadata=ADMIN_MD, timeout=30)

    def status(self, run_id: str = "") -> pb.RunStatus:
        return self.stub.GetRunStatus(pb.GetRunStatusRequest(run_id=run_id), metadata=CLIENT_MD, timeout=10)

    def wait_for(self, predicate: Callable[[pb.RunStatus], bool], timeout: float = 90.0) -> pb.RunStatus:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached within {timeout}s; last status:\n{status}")
            time.sleep(0.1)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.service.runtime.registry.get_sample_value(name, labels or {})


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def start_coordinator(tmp_path: Path, redis_server: RedisServer) -> Iterator[Callable[..., Coordinator]]:
    started: list[BackgroundService] = []

    def start(data_dir: Path | None = None, **options) -> Coordinator:
        data_dir = data_dir or tmp_path / "coordinator"
        settings = ServiceSettings(
            port=0, metrics_port=-1, drain_seconds=0, grace_seconds=1, redis_url=redis_server.url,
            data_dir=str(data_dir), auth_tokens=(CLIENT_TOKEN,), admin_tokens=(ADMIN_TOKEN,),
        )  # fmt: skip
        options = {"heartbeat_seconds": 0.2, **options}
        service = BackgroundService(build_definition(settings, CoordinatorOptions(**options)), settings)
        started.append(service)
        service.wait_ready()
        stub = coordinator_pb2_grpc.CoordinatorStub(open_sync_channel(service.target))
        return Coordinator(service, data_dir, stub)

    yield start
    for service in started:
        service.stop()


@dataclass
class ClientThreads:
    """In-process clients, each on its own thread, sharing one stop flag."""

    target: str
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    reports: dict[int, ClientReport] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)

    def add(
        self,
        index: int,
        num_clients: int,
        client_class: type = FederatedClient,
        partition: str = "dirichlet:0.5",
        **kwargs,
    ) -> None:
        data = load_client_data("digits", partition, index, num_clients, seed=0)

        def body() -> None:
            try:
                with client_class(self.target, CLIENT_TOKEN, data, "digits", name=f"client-{index}",
                                  should_stop=self.stop.is_set, **kwargs) as client:  # fmt: skip
                    self.reports[index] = client.report
                    client.run(max_seconds=120)
            except BaseException as error:  # surfaced by join()
                self.errors.append(error)

        thread = threading.Thread(target=body, name=f"fl-client-{index}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self, timeout: float = 120.0) -> dict[int, ClientReport]:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.stop.set()
        for thread in self.threads:
            thread.join(10)
        if self.errors:
            raise self.errors[0]
        assert not any(t.is_alive() for t in self.threads), "a client thread did not finish"
        return self.reports


@pytest.fixture
def client_threads() -> Iterator[Callable[[str], ClientThreads]]:
    pools: list[ClientThreads] = []

    def make(target: str) -> ClientThreads:
        pools.append(ClientThreads(target))
        return pools[-1]

    yield make
    for pool in pools:
        pool.stop.set()
        for thread in pool.threads:
            thread.join(10)


@pytest.fixture
def fl() -> SimpleNamespace:
    """Shared helpers for the test modules (importlib mode: test modules cannot import conftest)."""
    return SimpleNamespace(
        run_config=run_config,
        CLIENT_MD=CLIENT_MD,
        ADMIN_MD=ADMIN_MD,
        CLIENT_TOKEN=CLIENT_TOKEN,
        ADMIN_TOKEN=ADMIN_TOKEN,
    )
