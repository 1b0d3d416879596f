"""SIGTERM on a real server process: health goes NOT_SERVING, the in-flight stream completes,
new RPCs are refused, and the process exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from probe_service import SERVICE_NAME, STEP_SECONDS

from trillium.inference.v1 import inference_pb2, inference_pb2_grpc
from trillium.servicekit.client import open_sync_channel
from trillium.servicekit.probes import health_status

PROBE = Path(__file__).with_name("probe_service.py")


def wait_for_port(port_file: Path, process: subprocess.Popen, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text():
            return int(port_file.read_text())
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    raise TimeoutError("probe service did not start")


def test_sigterm_drains_then_exits_zero(tmp_path):
    port_file = tmp_path / "port"
    process = subprocess.Popen([sys.executable, str(PROBE), str(port_file)], stderr=subprocess.PIPE)
    try:
        target = f"127.0.0.1:{wait_for_port(port_file, process)}"
        assert health_status(target, SERVICE_NAME) == "SERVING"
        tokens = 12  # 12 x STEP_SECONDS: the stream outlives the drain period (0.5 s)
        with open_sync_channel(target) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            stream = stub.Generate(
                inference_pb2.GenerateRequest(model="slow", generation={"max_new_tokens": tokens})
            )
            first = next(stream)
            process.send_signal(signal.SIGTERM)
            time.sleep(STEP_SECONDS)
            assert health_status(target, SERVICE_NAME) == "NOT_SERVING"
            assert health_status(target) == "NOT_SERVING"
            rest = list(stream)
            assert [first.delta.index] + [r.delta.index for r in rest] == list(range(tokens))
            assert stream.code() == grpc.StatusCode.OK
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_new_rpcs_are_refused_after_the_drain(tmp_path):
    port_file = tmp_path / "port"
    process = subprocess.Popen([sys.executable, str(PROBE), str(port_file)], stderr=subprocess.PIPE)
    try:
        target = f"127.0.0.1:{wait_for_port(port_file, process)}"
        with open_sync_channel(target) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            stream = stub.Generate(
                inference_pb2.GenerateRequest(model="slow", generation={"max_new_tokens": 10})
            )
            next(stream)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5 + 2 * STEP_SECONDS)  # past the drain: the server is stopping
            try:
                stub.ListModels(inference_pb2.ListModelsRequest(), timeout=2)
                refused = None
            except grpc.RpcError as exc:
                refused = exc.code()
            assert refused == grpc.StatusCode.UNAVAILABLE
            assert len(list(stream)) == 9
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
