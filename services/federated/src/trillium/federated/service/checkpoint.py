"""Atomic per-round checkpoints on disk: global weights, strategy state and the run's round record.

Layout under ``<root>/runs/<run_id>/``: ``round-000003/`` holds ``weights.safetensors``,
``strategy.safetensors`` (SCAFFOLD's c, FedDyn's h, FedCFA's pool) and ``state.json`` (round,
run spec, strategy scalars, round summaries, per-client sample counts); ``latest.json`` names the
newest complete round. A round directory is written under a temporary name and renamed into
place, then ``latest.json`` is replaced (temp file + ``os.replace``), so a crash at any point
leaves the previous round readable: resume never sees a half-written round.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from trillium.federated.core.types import ModelState, StrategyState

ACTIVE_RUN_FILE = "active_run.json"


@dataclass
class RoundCheckpoint:
    """Everything needed to continue a run after ``completed_rounds`` rounds."""

    run_id: str
    completed_rounds: int
    weights: ModelState
    strategy: StrategyState
    state: dict[str, Any] = field(default_factory=dict)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` via a temp file in the same directory and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}


class CheckpointStore:
    """Reads and writes round checkpoints under ``root``; keeps the newest ``keep`` rounds per run."""

    def __init__(self, root: Path, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep: must be >= 1, got {keep}")
        self.root = Path(root)
        self.keep = keep

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def round_dir(self, run_id: str, completed_rounds: int) -> Path:
        return self.run_dir(run_id) / f"round-{completed_rounds:06d}"

    def save(self, checkpoint: RoundCheckpoint) -> Path:
        """Write ``checkpoint`` atomically and point ``latest.json`` at it; returns its directory."""
        run_dir = self.run_dir(checkpoint.run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        final = self.round_dir(checkpoint.run_id, checkpoint.completed_rounds)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=run_dir))
        try:
            save_file(_contiguous(dict(checkpoint.weights)), str(staging / "weights.safetensors"))
            save_file(_contiguous(checkpoint.strategy.tensors), str(staging / "strategy.safetensors"))
            state = {
                **checkpoint.state,
                "run_id": checkpoint.run_id,
                "completed_rounds": checkpoint.completed_rounds,
                "strategy_scalars": checkpoint.strategy.scalars,
                "weight_names": list(checkpoint.weights),
            }
            (staging / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True))
            for child in staging.iterdir():
                with open(child, "rb") as handle:
                    os.fsync(handle.fileno())
            if final.exists():  # a previous attempt crashed after the rename but before latest.json
                shutil.rmtree(final)
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(run_dir)
        write_json_atomic(run_dir / "latest.json", {"completed_rounds": checkpoint.completed_rounds})
        self._prune(checkpoint.run_id, checkpoint.completed_rounds)
        return final

    def _prune(self, run_id: str, newest: int) -> None:
        for path in self.run_dir(run_id).glob("round-*"):
            try:
                number = int(path.name.removeprefix("round-"))
            except ValueError:
                continue
            if number <= newest - self.keep:
                shutil.rmtree(path, ignore_errors=True)

    def latest_round(self, run_id: str) -> int | None:
        latest = self.run_dir(run_id) / "latest.json"
        if not latest.is_file():
            return None
        return int(json.loads(latest.read_text())["completed_rounds"])

    def load(self, run_id: str, completed_rounds: int | None = None) -> RoundCheckpoint | None:
        """The checkpoint after ``completed_rounds`` (default: the latest), or None if there is none."""
        if completed_rounds is None:
            completed_rounds = self.latest_round(run_id)
            if completed_rounds is None:
                return None
        directory = self.round_dir(run_id, completed_rounds)
        if not directory.is_dir():
            return None
        state = json.loads((directory / "state.json").read_text())
        loaded = load_file(str(directory / "weights.safetensors"))
        weights: ModelState = OrderedDict((name, loaded[name]) for name in state.pop("weight_names"))
        strategy = StrategyState(
            tensors=load_file(str(directory / "strategy.safetensors")), scalars=state.pop("strategy_scalars")
        )
        state.pop("run_id", None)
        return RoundCheckpoint(run_id, int(state.pop("completed_rounds")), weights, strategy, state)

    def write_active_run(self, run_id: str) -> None:
        write_json_atomic(self.root / ACTIVE_RUN_FILE, {"run_id": run_id})

    def read_active_run(self) -> str | None:
        path = self.root / ACTIVE_RUN_FILE
        return str(json.loads(path.read_text())["run_id"]) if path.is_file() else None
