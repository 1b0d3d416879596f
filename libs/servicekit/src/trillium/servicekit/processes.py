"""Start a service's console script as a child process and learn its ports from its logs.

``make demo`` and the end-to-end tests use it; the service logs one JSON line with ``"message"``
ending in ``listening`` and its bound ``port`` and ``metrics_port`` (port 0 picks free ports).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class ServiceProcess:
    """``<command> serve --port 0 --metrics-port 0 ...`` as a child process."""

    def __init__(
        self,
        command: str,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        executable = shutil.which(command, path=str(Path(sys.executable).parent)) or shutil.which(command)
        if executable is None:
            raise FileNotFoundError(f"command: {command!r} is not installed (run `make setup`)")
        args = [
            executable,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--log-format",
            "json",
            *extra_args,
        ]
        self.command = command
        self.lines: list[str] = []
        self.port = self.metrics_port = -1
        self._listening = threading.Event()
        self.process = subprocess.Popen(
            args,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_logs, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + start_timeout
        while not self._listening.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{command} did not start:\n" + "\n".join(self.lines[-20:]))

    def _read_logs(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip())
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if str(entry.get("message", "")).endswith("listening"):
                self.port, self.metrics_port = int(entry["port"]), int(entry.get("metrics_port", -1))
                self._listening.set()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def terminate(self, timeout: float = 60.0) -> int:
        """Send SIGTERM and wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
