"""The round engine: client registry, run lifecycle, rounds with deadline and quorum, checkpoints.

One run at a time. A round (numbered from 1; the strategy sees ``round - 1``, the library's 0-based
convention) selects ``max(int(N·fraction), min_clients)`` connected clients (Flower's rule), waits
until every selected client reported or the round deadline passed, and completes when at least
``min_clients`` accepted updates arrived; otherwise it is recorded as a timeout and retried with a
fresh selection (up to ``max_round_attempts``). A completed round is aggregated, evaluated on the
dataset's test split, checkpointed to disk (atomic) and recorded in Redis, in that order, before the
next round starts — so a restarted coordinator resumes after the last completed round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from trillium.federated.core.client import evaluate_model
from trillium.federated.core.data.datasets import ArrayDataset
from trillium.federated.core.simulation import sample_clients
from trillium.federated.core.strategies import Strategy
from trillium.federated.core.types import ClientInstruction, ClientResult, ModelState, clone_state
from trillium.federated.service.checkpoint import CheckpointStore, RoundCheckpoint, write_json_atomic
from trillium.federated.service.metrics import CoordinatorMetrics
from trillium.federated.service.run_config import RunSpec, load_dataset, make_model
from trillium.federated.service.updates import UpdateRejectedError, build_result, expected_extra_shapes
from trillium.federated.service.wire import (
    WEIGHTS_PAYLOAD,
    PackedPayload,
    pack_payload,
    strategy_payload_name,
    update_extras_name,
)
from trillium.federated.v1 import coordinator_pb2 as pb
from trillium.servicekit.errors import FailedPreconditionError, NotFoundError, ValidationError
from trillium.servicekit.parameters import to_parameter_map
from trillium.servicekit.redis_store import SessionStore, StoreUnavailableError

log = logging.getLogger(__name__)

COORDINATOR_RECORD = "coordinator"
"""Session id of the Redis hash that names the active run (``trillium:federated:v1:{s:coordinator}:meta``)."""
TERMINAL_STATES = (pb.RUN_STATE_COMPLETED, pb.RUN_STATE_STOPPED, pb.RUN_STATE_FAILED)


@dataclass(frozen=True)
class CoordinatorOptions:
    """Coordinator settings beyond the shared service settings (env ``TRILLIUM_FL_<NAME>``)."""

    heartbeat_seconds: float = 5.0
    client_timeout_factor: float = 3.0
    keep_checkpoints: int = 3
    max_round_attempts: int = 3
    max_update_bytes: int = 1 << 30
    chunk_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if self.heartbeat_seconds <= 0:
            raise ValueError(f"heartbeat_seconds: must be positive, got {self.heartbeat_seconds}")
        if self.client_timeout_factor < 1:
            raise ValueError(f"client_timeout_factor: must be >= 1, got {self.client_timeout_factor}")
        if self.keep_checkpoints < 1 or self.max_round_attempts < 1:
            raise ValueError("keep_checkpoints, max_round_attempts: must be >= 1")
        if not 1 << 20 <= self.chunk_bytes <= 4 << 20:
            raise ValueError(f"chunk_bytes: must be 1-4 MiB, got {self.chunk_bytes}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CoordinatorOptions:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, default in cls().__dict__.items():
            raw = env.get(f"TRILLIUM_FL_{name.upper()}")
            if raw:
                try:
                    values[name] = type(default)(raw)
                except ValueError as error:
                    raise ValueError(f"TRILLIUM_FL_{name.upper()}: {error}") from None
        return cls(**values)


@dataclass
class ClientRecord:
    client_id: str
    name: str
    num_examples: int
    last_seen: float


@dataclass
class RoundState:
    """The round in progress; ``payloads`` are packed once and streamed to every selected client."""

    number: int
    selected: list[str]
    instructions: dict[str, ClientInstruction]
    payloads: list[PackedPayload]
    started: float
    deadline: float
    results: dict[str, ClientResult] = field(default_factory=dict)
    rejected: int = 0
    closed: bool = False
    all_reported: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Run:
    run_id: str
    spec: RunSpec
    strategy: Strategy
    weights: ModelState
    state: int = pb.RUN_STATE_RUNNING
    completed_rounds: int = 0
    summaries: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    current: RoundState | None = None
    task: asyncio.Task | None = None
    completing: asyncio.Task | None = None


class RoundFailedError(RuntimeError):
    pass


def summary_proto(summary: Mapping[str, Any]) -> pb.RoundSummary:
    return pb.RoundSummary(**summary)


class Coordinator:
    """All coordinator state; methods run on the server's event loop (torch work goes to threads)."""

    def __init__(
        self,
        data_dir: Path,
        metrics: CoordinatorMetrics,
        options: CoordinatorOptions | None = None,
        sessions: SessionStore | None = None,
    ) -> None:
        self.options = options or CoordinatorOptions()
        self.store = CheckpointStore(Path(data_dir), self.options.keep_checkpoints)
        self.metrics = metrics
        self.sessions = sessions
        self.clients: dict[str, ClientRecord] = {}
        self.runs: dict[str, Run] = {}
        self.active: Run | None = None
        self._test_sets: dict[str, ArrayDataset] = {}
        self.resumed = False

    # ------------------------------------------------------------------ clients

    def connected_clients(self) -> list[str]:
        horizon = time.monotonic() - self.options.heartbeat_seconds * self.options.client_timeout_factor
        connected = sorted(cid for cid, record in self.clients.items() if record.last_seen >= horizon)
        self.metrics.clients_connected.set(len(connected))
        return connected

    def register_client(self, request: pb.RegisterClientRequest) -> pb.RegisterClientResponse:
        if len(request.client_name) > 128:
            raise ValidationError("client_name", "must be at most 128 characters")
        if request.num_examples < 0:
            raise ValidationError("num_examples", f"must be >= 0, got {request.num_examples}")
        client_id = f"c-{uuid.uuid4().hex[:16]}"
        self.clients[client_id] = ClientRecord(
            client_id, request.client_name, request.num_examples, time.monotonic()
        )
        log.info("client registered", extra={"client_id": client_id, "client_name": request.client_name})
        self.connected_clients()
        return pb.RegisterClientResponse(
            client_id=client_id, heartbeat_interval_seconds=self.options.heartbeat_seconds
        )

    def _touch(self, client_id: str) -> ClientRecord:
        record = self.clients.get(client_id)
        if record is None:
            raise NotFoundError(f"unknown client {client_id!r}; register again", field="client_id")
        record.last_seen = time.monotonic()
        return record

    def heartbeat(self, client_id: str) -> pb.HeartbeatResponse:
        self._touch(client_id)
        self.connected_clients()
        run = self.active
        response = pb.HeartbeatResponse(
            action=pb.CLIENT_ACTION_WAIT, next_heartbeat_seconds=self.options.heartbeat_seconds
        )
        if run is None:
            return response
        response.run_id = run.run_id
        response.round = run.completed_rounds + 1
        if run.state in TERMINAL_STATES:
            response.action = pb.CLIENT_ACTION_FINISH
            response.round = run.completed_rounds
        elif self._owes_update(run, client_id):
            response.action = pb.CLIENT_ACTION_TRAIN
        return response

    @staticmethod
    def _owes_update(run: Run, client_id: str) -> bool:
        current = run.current
        return (
            current is not None
            and not current.closed
            and client_id in current.instructions
            and client_id not in current.results
        )

    # ------------------------------------------------------------------ tasks and updates

    def task_for(self, request: pb.PullTaskRequest) -> tuple[pb.TaskHeader, list[PackedPayload]]:
        """The header and payloads of the client's task for the current round."""
        self._touch(request.client_id)
        run = self._run(request.run_id)
        if run is not self.active or run.state != pb.RUN_STATE_RUNNING or run.current is None:
            raise FailedPreconditionError(f"run {run.run_id} has no open round", field="run_id")
        current = run.current
        if request.round != current.number or current.closed:
            raise FailedPreconditionError(
                f"round {request.round} is not open; the current round is {current.number}", field="round"
            )
        instruction = current.instructions.get(request.client_id)
        if instruction is None:
            raise FailedPreconditionError(f"not selected for round {current.number}", field="client_id")
        deadline = Timestamp()
        deadline.FromNanoseconds(int(current.deadline * 1e9))
        header = pb.TaskHeader(
            run_id=run.run_id,
            round=current.number,
            strategy=run.spec.strategy,
            config=to_parameter_map({**instruction.config, **run.spec.model_config()}),
            payloads=[pb.Payload(name=p.name, blob=p.header) for p in current.payloads],
            deadline=deadline,
        )
        return header, current.payloads

    def check_update_header(self, header: pb.UpdateHeader) -> None:
        """Cheap checks before the payload is read: run, client, round, selection, duplicates."""
        run = self.active
        if run is None or header.run_id != run.run_id:
            raise UpdateRejectedError(f"run_id: {header.run_id!r} is not the active run")
        if header.client_id not in self.clients:
            raise UpdateRejectedError(f"client_id: unknown client {header.client_id!r}")
        self._touch(header.client_id)
        current = run.current
        if (
            current is None
            or header.round < current.number
            or (header.round == current.number and current.closed)
        ):
            open_round = current.number if current is not None and not current.closed else "none"
            raise UpdateRejectedError(
                f"round: round {header.round} is closed (open round: {open_round})", "late"
            )
        if header.round > current.number:
            raise UpdateRejectedError(
                f"round: round {header.round} has not started (current: {current.number})"
            )
        if header.client_id not in current.instructions:
            raise UpdateRejectedError(
                f"client_id: {header.client_id} was not selected for round {current.number}"
            )
        if header.client_id in current.results:
            raise UpdateRejectedError(
                f"client_id: {header.client_id} already reported for round {current.number}"
            )

    def accept_update(
        self, header: pb.UpdateHeader, payloads: Mapping[str, Any], nbytes: int
    ) -> pb.PushUpdateResponse:
        """Validate and record one update; a rejection is logged and answered, never raised."""
        try:
            self.check_update_header(header)
            run = self.active
            assert run is not None and run.current is not None
            test = self._test_sets[run.spec.dataset]
            expected = expected_extra_shapes(
                run.spec.strategy, run.weights, test.input_shape, test.num_classes
            )
            extras_name = update_extras_name(run.spec.strategy)
            result = build_result(
                payloads,
                header.num_examples,
                header.metrics,
                run.weights,
                expected,
                extras_payload=extras_name,
            )
        except UpdateRejectedError as rejection:
            return self.reject_update(header, rejection)
        current = run.current
        current.results[header.client_id] = result
        self.metrics.client_updates_total.labels("accepted").inc()
        self.metrics.client_update_bytes.observe(nbytes)
        self.metrics.client_update_seconds.observe(time.monotonic() - current.started)
        log.info("update accepted", extra={"client_id": header.client_id, "round": current.number})
        if set(current.results) == set(current.instructions):
            current.all_reported.set()
        return pb.PushUpdateResponse(accepted=True, round=current.number)

    def reject_update(self, header: pb.UpdateHeader, rejection: UpdateRejectedError) -> pb.PushUpdateResponse:
        run = self.active
        current = run.current if run is not None else None
        if current is not None and header.round == current.number and not current.closed:
            current.rejected += 1
        self.metrics.client_updates_total.labels(rejection.result).inc()
        log.warning(
            "update dropped: %s",
            rejection.reason,
            extra={"client_id": header.client_id, "round": header.round, "result": rejection.result},
        )
        return pb.PushUpdateResponse(accepted=False, reason=rejection.reason, round=header.round)

    # ------------------------------------------------------------------ runs

    def _run(self, run_id: str) -> Run:
        if not run_id:
            if self.active is None:
                raise NotFoundError("no run has been started", field="run_id")
            return self.active
        run = self.runs.get(run_id)
        if run is None:
            raise NotFoundError(f"unknown run {run_id!r}", field="run_id")
        return run

    def status(self, run_id: str = "") -> pb.RunStatus:
        run = self._run(run_id)
        finished = run.state in TERMINAL_STATES
        return pb.RunStatus(
            run_id=run.run_id,
            state=run.state,
            config=run.spec.to_proto(),
            current_round=run.completed_rounds if finished else run.completed_rounds + 1,
            clients_connected=len(self.connected_clients()),
            rounds=[summary_proto(s) for s in run.summaries],
            message=run.message,
        )

    async def start_run(self, config: pb.RunConfig) -> pb.RunStatus:
        if self.active is not None and self.active.state == pb.RUN_STATE_RUNNING:
            raise FailedPreconditionError(
                f"run {self.active.run_id} is still running; stop it first", field="config"
            )
        spec = RunSpec.from_proto(config)
        run_id = f"run-{uuid.uuid4().hex[:12]}"
        test = await asyncio.to_thread(self._test_set, spec.dataset)
        initial = make_model(spec.model, test, seed=spec.seed)
        run = Run(run_id, spec, spec.build_strategy(), clone_state(initial.state_dict()))
        await asyncio.to_thread(self._write_run_record, run)
        self.store.write_active_run(run_id)
        await self._record_in_redis(run)
        self._launch(run)
        log.info(
            "run started", extra={"run_id": run_id, "strategy": spec.strategy, "rounds": spec.num_rounds}
        )
        return self.status(run_id)

    async def stop_run(self, run_id: str, reason: str) -> pb.RunStatus:
        run = self._run(run_id)
        if run.state != pb.RUN_STATE_RUNNING:
            raise FailedPreconditionError(f"run {run.run_id} is not running", field="run_id")
        await self._cancel(run)
        await self._finish(run, pb.RUN_STATE_STOPPED, reason or "stopped by an operator")
        return self.status(run.run_id)

    def _launch(self, run: Run) -> None:
        self.runs[run.run_id] = run
        self.active = run
        run.task = asyncio.create_task(self._drive(run), name=f"run-{run.run_id}")

    async def _drive(self, run: Run) -> None:
        try:
            while run.completed_rounds < run.spec.num_rounds:
                await self._play_round(run)
        except asyncio.CancelledError:
            self._abort_open_round(run)
            raise
        except Exception as error:  # the run fails, the server lives on
            log.exception("run %s failed", run.run_id)
            self._abort_open_round(run)
            await self._finish(run, pb.RUN_STATE_FAILED, str(error))
            return
        await self._finish(run, pb.RUN_STATE_COMPLETED, f"completed {run.completed_rounds} rounds")

    def _abort_open_round(self, run: Run) -> None:
        current = run.current
        if current is not None and not current.closed:
            current.closed = True
            self.metrics.rounds_total.labels("aborted").inc()
            run.summaries.append(self._summary(current, pb.ROUND_OUTCOME_ABORTED, {}))

    async def _finish(self, run: Run, state: int, message: str) -> None:
        run.state, run.message = state, message
        run.current = None
        self.metrics.clients_selected.set(0)
        log.info(
            "run finished", extra={"run_id": run.run_id, "state": pb.RunState.Name(state), "detail": message}
        )
        await asyncio.to_thread(self._write_run_record, run)
        await self._record_in_redis(run)

    async def _wait_for_clients(self, run: Run) -> list[str]:
        waited = False
        while len(connected := self.connected_clients()) < run.spec.min_clients:
            if not waited:
                log.info("waiting for %d clients (%d connected)", run.spec.min_clients, len(connected))
                waited = True
            await asyncio.sleep(min(0.2, self.options.heartbeat_seconds))
        return connected

    async def _play_round(self, run: Run) -> None:
        number = run.completed_rounds + 1
        for attempt in range(self.options.max_round_attempts):
            connected = await self._wait_for_clients(run)
            rng = np.random.default_rng([run.spec.seed, number, attempt])
            selected = sample_clients(connected, run.spec.fraction_fit, run.spec.min_clients, rng)
            current = self._open_round(run, number, selected)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(current.all_reported.wait(), run.spec.round_timeout_seconds)
            current.closed = True
            missing = sorted(set(selected) - set(current.results))
            if missing:
                log.warning("round %d: no update from %s before the deadline", number, missing)
            if len(current.results) >= run.spec.min_clients:
                # Shielded: a stop or shutdown waits for the checkpoint rather than tearing it.
                run.completing = asyncio.ensure_future(self._complete_round(run, current))
                await asyncio.shield(run.completing)
                return
            log.warning(
                "round %d timed out with %d of %d required updates (attempt %d)",
                number,
                len(current.results),
                run.spec.min_clients,
                attempt + 1,
            )
            self.metrics.rounds_total.labels("timeout").inc()
            run.summaries.append(self._summary(current, pb.ROUND_OUTCOME_TIMEOUT, {}))
        raise RoundFailedError(f"round {number} timed out {self.options.max_round_attempts} times")

    def _open_round(self, run: Run, number: int, selected: list[str]) -> RoundState:
        instructions = run.strategy.configure_round(number - 1, run.weights, selected)
        blob_prefix = f"{run.run_id}-r{number}"
        payloads = [
            pack_payload(WEIGHTS_PAYLOAD, run.weights, f"{blob_prefix}-weights", self.options.chunk_bytes)
        ]
        shared_payload = next(iter(instructions.values())).payload
        if shared_payload:
            payloads.append(
                pack_payload(
                    strategy_payload_name(run.spec.strategy),
                    shared_payload,
                    f"{blob_prefix}-strategy",
                    self.options.chunk_bytes,
                )
            )
        started = time.monotonic()
        current = RoundState(
            number, selected, instructions, payloads, started, time.time() + run.spec.round_timeout_seconds
        )
        run.current = current
        self.metrics.current_round.set(number)
        self.metrics.clients_selected.set(len(selected))
        log.info("round %d started", number, extra={"run_id": run.run_id, "selected": selected})
        return current

    async def _complete_round(self, run: Run, current: RoundState) -> None:
        weights, metrics, aggregation_seconds = await asyncio.to_thread(self._aggregate, run, current)
        summary = self._summary(current, pb.ROUND_OUTCOME_COMPLETED, metrics)
        checkpoint = RoundCheckpoint(
            run.run_id,
            current.number,
            weights,
            run.strategy.state_dict(),
            {
                "spec": run.spec.to_json(),
                "summaries": [*run.summaries, summary],
                "client_examples": {cid: r.num_examples for cid, r in sorted(current.results.items())},
                "selection_seed": [run.spec.seed, current.number],
            },
        )
        await asyncio.to_thread(self.store.save, checkpoint)
        run.weights = weights
        run.summaries.append(summary)
        run.completed_rounds = current.number
        await self._record_in_redis(run)
        self.metrics.aggregation_seconds.observe(aggregation_seconds)
        self.metrics.rounds_total.labels("completed").inc()
        self.metrics.round_duration_seconds.observe(summary["duration_seconds"])
        if "accuracy" in metrics:
            self.metrics.global_accuracy.set(metrics["accuracy"])
        log.info(
            "round %d completed",
            current.number,
            extra={
                "run_id": run.run_id,
                "accuracy": metrics.get("accuracy"),
                "updates": len(current.results),
            },
        )

    def _aggregate(self, run: Run, current: RoundState) -> tuple[ModelState, dict[str, float], float]:
        started = time.perf_counter()
        weights = run.strategy.aggregate(current.number - 1, run.weights, current.results)
        aggregation_seconds = time.perf_counter() - started
        test = self._test_set(run.spec.dataset)
        model = make_model(run.spec.model, test, seed=None)
        model.load_state_dict(weights)
        metrics = run.strategy.evaluate(
            current.number - 1, weights, lambda _r, _w: evaluate_model(model, test)
        )
        train_losses = [r.metrics["loss"] for r in current.results.values() if "loss" in r.metrics]
        if train_losses:
            metrics["train_loss"] = float(np.mean(train_losses))
        return weights, metrics, aggregation_seconds

    @staticmethod
    def _summary(current: RoundState, outcome: int, metrics: Mapping[str, float]) -> dict[str, Any]:
        return {
            "round": current.number,
            "outcome": outcome,
            "clients_selected": len(current.selected),
            "updates_accepted": len(current.results),
            "updates_rejected": current.rejected,
            "duration_seconds": time.monotonic() - current.started,
            "metrics": dict(metrics),
        }

    def _test_set(self, dataset: str) -> ArrayDataset:
        if dataset not in self._test_sets:
            self._test_sets[dataset] = load_dataset(dataset)[1]
        return self._test_sets[dataset]

    # ------------------------------------------------------------------ durability

    def _write_run_record(self, run: Run) -> None:
        write_json_atomic(
            self.store.run_dir(run.run_id) / "run.json",
            {
                "run_id": run.run_id,
                "spec": run.spec.to_json(),
                "state": run.state,
                "message": run.message,
                "completed_rounds": run.completed_rounds,
            },
        )

    async def _record_in_redis(self, run: Run) -> None:
        """Round state in Redis (best effort: the disk checkpoint is authoritative)."""
        if self.sessions is None:
            return
        try:
            await self.sessions.put_meta(
                run.run_id,
                {
                    "state": pb.RunState.Name(run.state),
                    "completed_rounds": run.completed_rounds,
                    "num_rounds": run.spec.num_rounds,
                    "strategy": run.spec.strategy,
                    "checkpoint": str(self.store.round_dir(run.run_id, run.completed_rounds)),
                },
                timeout=2.0,
            )
            await self.sessions.put_meta(COORDINATOR_RECORD, {"active_run_id": run.run_id}, timeout=2.0)
        except StoreUnavailableError as error:
            log.warning("could not record run %s in Redis: %s", run.run_id, error)

    async def _active_run_id(self) -> str | None:
        """The disk pointer first (written before Redis, so never behind it), else Redis's record."""
        on_disk = self.store.read_active_run()
        if on_disk is not None or self.sessions is None:
            return on_disk
        try:
            meta = await self.sessions.get_meta(COORDINATOR_RECORD, timeout=2.0)
        except StoreUnavailableError as error:
            log.warning("Redis unavailable while resuming (%s)", error)
            return None
        return meta.get("active_run_id") or None if meta else None

    async def resume(self) -> Run | None:
        """Reload the active run from its last checkpoint and continue it if it was running."""
        try:
            return await self._resume()
        finally:
            self.resumed = True

    async def _resume(self) -> Run | None:
        run_id = await self._active_run_id()
        record_path = self.store.run_dir(run_id) / "run.json" if run_id else None
        if record_path is None or not record_path.is_file():
            return None
        record = json.loads(await asyncio.to_thread(record_path.read_text))
        spec = RunSpec.from_json(record["spec"])
        test = await asyncio.to_thread(self._test_set, spec.dataset)
        strategy = spec.build_strategy()
        checkpoint = await asyncio.to_thread(self.store.load, run_id)
        if checkpoint is not None:
            strategy.load_state_dict(checkpoint.strategy)
            weights = OrderedDict(checkpoint.weights)
            completed, summaries = checkpoint.completed_rounds, list(checkpoint.state.get("summaries", []))
        else:
            weights, completed, summaries = (
                clone_state(make_model(spec.model, test, seed=spec.seed).state_dict()),
                0,
                [],
            )
        run = Run(
            run_id,
            spec,
            strategy,
            weights,
            int(record["state"]),
            completed,
            summaries,
            record.get("message", ""),
        )
        await self._warn_on_redis_mismatch(run)
        self.runs[run_id] = run
        self.active = run
        if run.state == pb.RUN_STATE_RUNNING:
            log.info("resuming run %s after round %d", run_id, completed)
            self._launch(run)
        return run

    async def _warn_on_redis_mismatch(self, run: Run) -> None:
        if self.sessions is None:
            return
        try:
            meta = await self.sessions.get_meta(run.run_id, timeout=2.0)
        except StoreUnavailableError:
            return
        if meta and int(meta.get("completed_rounds", run.completed_rounds)) != run.completed_rounds:
            log.warning(
                "Redis says run %s completed %s rounds, the disk checkpoint %d; resuming from the disk",
                run.run_id,
                meta.get("completed_rounds"),
                run.completed_rounds,
            )

    @staticmethod
    async def _cancel(run: Run) -> None:
        """Stop the run's task, after any round completion (aggregate + checkpoint) in progress."""
        if run.completing is not None:
            await asyncio.gather(run.completing, return_exceptions=True)
        if run.task is not None and not run.task.done():
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)

    async def close(self) -> None:
        for run in self.runs.values():
            await self._cancel(run)
