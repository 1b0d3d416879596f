"""The federated client runtime: register, heartbeat, pull a task, train with the library, push the update.

Blocking gRPC (one client = one process or thread). Robust to coordinator restarts: UNAVAILABLE and
DEADLINE_EXCEEDED are retried with exponential backoff for up to ``max_outage_seconds``; a
NOT_FOUND on heartbeat (the coordinator forgot us) means register again; a task whose round closed
meanwhile is skipped. Strategy state a client keeps between rounds (SCAFFOLD's ``c_i``, FedDyn's
gradient) lives in memory per run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import numpy as np

from trillium.federated.core.client import run_client
from trillium.federated.core.data.datasets import ArrayDataset
from trillium.federated.core.data.partition import dirichlet_partition, iid_partition, k_labels_partition
from trillium.federated.core.models import SplitModel
from trillium.federated.core.types import ClientInstruction, ClientResult, ModelState, TensorMap
from trillium.federated.service.run_config import load_dataset, make_model
from trillium.federated.service.wire import (
    UPDATE_WEIGHTS,
    WEIGHTS_PAYLOAD,
    PayloadReceiver,
    pack_payload,
    update_extras_name,
)
from trillium.federated.v1 import coordinator_pb2 as pb
from trillium.federated.v1 import coordinator_pb2_grpc
from trillium.servicekit.chunks import DEFAULT_CHUNK_BYTES
from trillium.servicekit.client import bearer_metadata, open_sync_channel
from trillium.servicekit.parameters import from_parameter_map

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
MAX_TASK_BYTES = 1 << 30


def parse_partition(text: str) -> tuple[str, float]:
    """``iid``, ``dirichlet:<alpha>`` or ``labels:<k>`` -> (kind, parameter)."""
    kind, _, value = text.partition(":")
    if kind == "iid" and not value:
        return kind, 0.0
    if kind in ("dirichlet", "labels") and value:
        try:
            return kind, float(value)
        except ValueError:
            pass
    raise ValueError(f"partition: expected iid, dirichlet:<alpha> or labels:<k>, got {text!r}")


def load_client_data(
    dataset: str, partition: str, client_index: int, num_clients: int, seed: int = 0
) -> ArrayDataset:
    """This client's shard of ``dataset``'s train split (every client computes the same partition)."""
    if not 0 <= client_index < num_clients:
        raise ValueError(f"client_index: must be in [0, {num_clients}), got {client_index}")
    kind, parameter = parse_partition(partition)
    train, _ = load_dataset(dataset)
    labels = train.y.numpy()
    if kind == "iid":
        parts = iid_partition(len(labels), num_clients, seed)
    elif kind == "dirichlet":
        parts = dirichlet_partition(labels, num_clients, parameter, seed=seed)
    else:
        parts = k_labels_partition(labels, num_clients, int(parameter), seed=seed)
    return train.subset(np.asarray(parts[client_index]))


def update_messages(
    header: pb.UpdateHeader, result: ClientResult, strategy: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> list[pb.PushUpdateRequest]:
    """The PushUpdate stream for ``result``: ``header`` completed with the sample count, metrics and
    payload announcements, then every chunk of the ``weights`` (and ``strategy``'s extras) blobs."""
    blob_prefix = f"{header.client_id}-r{header.round}"
    payloads = [pack_payload(UPDATE_WEIGHTS, result.weights, f"{blob_prefix}-weights", chunk_bytes)]
    if result.extras:
        extras_name = update_extras_name(strategy)
        payloads.append(pack_payload(extras_name, result.extras, f"{blob_prefix}-extras", chunk_bytes))
    full = pb.UpdateHeader()
    full.CopyFrom(header)
    full.num_examples = result.num_examples
    full.metrics.update({key: float(value) for key, value in result.metrics.items()})
    full.payloads.extend(pb.Payload(name=p.name, blob=p.header) for p in payloads)
    messages = [pb.PushUpdateRequest(header=full)]
    for payload in payloads:
        messages.extend(pb.PushUpdateRequest(chunk=chunk) for chunk in payload.chunks(chunk_bytes))
    return messages


@dataclass
class Task:
    run_id: str
    round: int
    instruction: ClientInstruction
    deadline: float


@dataclass
class ClientReport:
    """What one client did: the rounds it trained and the coordinator's answers."""

    client_id: str = ""
    rounds_trained: list[int] = field(default_factory=list)
    responses: list[pb.PushUpdateResponse] = field(default_factory=list)
    finished: bool = False
    registrations: int = 0


class FederatedClient:
    """One federated client talking to a coordinator at ``target`` with bearer ``token``."""

    def __init__(
        self,
        target: str,
        token: str,
        data: ArrayDataset,
        dataset: str,
        *,
        name: str = "",
        rpc_timeout: float = 30.0,
        max_outage_seconds: float = 120.0,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        if len(data) == 0:
            raise ValueError("data: the client's shard is empty")
        self.target, self.data, self.dataset, self.name = target, data, dataset, name
        self.metadata = bearer_metadata(token)
        self.rpc_timeout = rpc_timeout
        self.max_outage_seconds = max_outage_seconds
        self.should_stop = should_stop
        self.channel = open_sync_channel(target)
        self.stub = coordinator_pb2_grpc.CoordinatorStub(self.channel)
        self.client_id = ""
        self.report = ClientReport()
        self._models: dict[str, SplitModel] = {}
        self._client_state: dict[str, TensorMap] = {}

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> FederatedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, action: Callable[[], T]) -> T:
        """``action()`` retried with backoff while the coordinator is unreachable."""
        give_up = time.monotonic() + self.max_outage_seconds
        delay = 0.1
        while True:
            try:
                return action()
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE or time.monotonic() + delay > give_up or self.should_stop():
                    raise
                log.info("coordinator unreachable (%s); retrying in %.1fs", error.code().name, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def register(self) -> str:
        request = pb.RegisterClientRequest(client_name=self.name, num_examples=len(self.data))
        response = self._call(
            lambda: self.stub.RegisterClient(request, timeout=self.rpc_timeout, metadata=self.metadata)
        )
        self.client_id = response.client_id
        self.report.client_id = self.client_id
        self.report.registrations += 1
        log.info("registered as %s", self.client_id)
        return self.client_id

    def heartbeat(self) -> pb.HeartbeatResponse:
        request = pb.HeartbeatRequest(client_id=self.client_id)
        return self._call(
            lambda: self.stub.Heartbeat(request, timeout=self.rpc_timeout, metadata=self.metadata)
        )

    def pull_task(self, run_id: str, round_number: int) -> Task:
        request = pb.PullTaskRequest(client_id=self.client_id, run_id=run_id, round=round_number)
        return self._call(lambda: self._receive_task(request))

    def _receive_task(self, request: pb.PullTaskRequest) -> Task:
        stream: Iterator[pb.PullTaskResponse] = self.stub.PullTask(
            request, timeout=self.rpc_timeout, metadata=self.metadata
        )
        first = next(stream, None)
        if first is None or first.WhichOneof("part") != "header":
            raise ValueError("PullTask: the coordinator did not start with a TaskHeader")
        header = first.header
        receiver = PayloadReceiver(list(header.payloads), MAX_TASK_BYTES)
        for message in stream:
            receiver.add(message.chunk)
        payloads = receiver.finish()
        config = from_parameter_map(header.config, "config")
        if WEIGHTS_PAYLOAD not in payloads:
            raise ValueError(f"PullTask: the task has no {WEIGHTS_PAYLOAD!r} payload")
        weights = ModelState(payloads.pop(WEIGHTS_PAYLOAD))
        strategy_tensors = {name: t for tensors in payloads.values() for name, t in tensors.items()}
        instruction = ClientInstruction(weights, config, strategy_tensors)
        return Task(header.run_id, header.round, instruction, header.deadline.ToNanoseconds() / 1e9)

    def train(self, task: Task) -> ClientResult:
        """Local training with the library's :func:`run_client` (model rebuilt from the task's config)."""
        config = task.instruction.config
        if config.get("dataset") != self.dataset:
            raise ValueError(
                f"dataset: the run trains on {config.get('dataset')!r}, this client holds {self.dataset!r}"
            )
        model_kind = str(config["model"])
        if model_kind not in self._models:
            self._models[model_kind] = make_model(model_kind, self.data, seed=None)
        state = self._client_state.setdefault(task.run_id, {})
        return run_client(self._models[model_kind], self.data, task.instruction, state)

    def push(self, task: Task, result: ClientResult) -> pb.PushUpdateResponse:
        header = pb.UpdateHeader(client_id=self.client_id, run_id=task.run_id, round=task.round)
        messages = update_messages(header, result, str(task.instruction.config.get("strategy", "")))
        return self._call(
            lambda: self.stub.PushUpdate(iter(messages), timeout=self.rpc_timeout, metadata=self.metadata)
        )

    def run(self, max_seconds: float | None = None) -> ClientReport:
        """Loop until the coordinator says FINISH (or ``should_stop()``/``max_seconds``)."""
        end = None if max_seconds is None else time.monotonic() + max_seconds
        self.register()
        interval = 0.5
        while not self.should_stop() and (end is None or time.monotonic() < end):
            try:
                beat = self.heartbeat()
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                log.info("the coordinator does not know %s; registering again", self.client_id)
                self.register()
                continue
            interval = beat.next_heartbeat_seconds or interval
            if beat.action == pb.CLIENT_ACTION_FINISH:
                self.report.finished = True
                log.info("run %s finished; exiting", beat.run_id)
                break
            if beat.action == pb.CLIENT_ACTION_TRAIN:
                self._train_round(beat.run_id, beat.round)
                continue
            time.sleep(min(interval, 1.0) if end is None else max(0.0, min(interval, end - time.monotonic())))
        return self.report

    def _train_round(self, run_id: str, round_number: int) -> None:
        try:
            task = self.pull_task(run_id, round_number)
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                log.info("round %d is no longer open for us: %s", round_number, error.details())
                return
            raise
        if task.deadline and time.time() > task.deadline:
            log.warning("round %d: the deadline passed before training started; skipping", task.round)
            return
        result = self.train(task)
        response = self.push(task, result)
        self.report.responses.append(response)
        if response.accepted:
            self.report.rounds_trained.append(task.round)
            log.info(
                "round %d: update accepted (loss %.4f)", task.round, result.metrics.get("loss", float("nan"))
            )
        else:
            log.warning("round %d: update rejected: %s", task.round, response.reason)
