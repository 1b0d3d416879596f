"""Service settings from environment variables, overridden by command-line flags.

Every field has an environment variable ``TRILLIUM_<FIELD>`` (upper case) and a flag
``--<field-with-dashes>``; ``REDIS_URL`` is read without the prefix, as is conventional. Flags win
over the environment, which wins over the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


class EnvSettings:
    """Environment variables and flags for a frozen dataclass of settings (one per field).

    :class:`ServiceSettings` holds what every service shares; a service adds its own dataclass
    (e.g. the inference engine's limits) with the same mixin and passes it to ``service_main``.
    """

    @classmethod
    def env_name(cls, name: str) -> str:
        return f"TRILLIUM_{name.upper()}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Any:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(cls.env_name(f.name))
            if raw is not None and raw != "":
                values[f.name] = _parse(f, raw, cls.env_name(f.name))
        values.update(overrides)
        return cls(**values)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add one flag per field; unset flags keep the environment's value."""
        for f in fields(cls):
            flag = "--" + f.name.replace("_", "-")
            help_text = f"{f.metadata.get('help', '')} (env {cls.env_name(f.name)})"
            if f.type in ("bool", bool):
                parser.add_argument(
                    flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
                )
            else:
                parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_text)

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Any:
        overrides: dict[str, Any] = {}
        for f in fields(cls):
            raw = getattr(args, f.name, None)
            if raw is not None:
                overrides[f.name] = raw if isinstance(raw, bool) else _parse(f, str(raw), "--" + f.name)
        return cls.from_env(env, **overrides)


@dataclass(frozen=True)
class ServiceSettings(EnvSettings):
    """Runtime configuration shared by every Trillium service."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to bind; 0.0.0.0 in containers"})
    port: int = field(default=50051, metadata={"help": "gRPC port (0 picks a free one)"})
    health_port: int = field(
        default=-1,
        metadata={"help": "separate plaintext health-only port for kubelet probes under mTLS (-1: off)"},
    )
    metrics_host: str = field(default="", metadata={"help": "address of /metrics (default: same as host)"})
    metrics_port: int = field(default=9090, metadata={"help": "Prometheus /metrics port (0: free, -1: off)"})
    auth_tokens: tuple[str, ...] = field(
        default=(), metadata={"help": "accepted bearer tokens, comma-separated (empty: auth off)"}
    )
    auth_token_file: str = field(
        default="", metadata={"help": "file with one accepted bearer token per line"}
    )
    admin_tokens: tuple[str, ...] = field(default=(), metadata={"help": "tokens allowed on admin methods"})
    tls_cert_file: str = field(default="", metadata={"help": "PEM server certificate chain (enables TLS)"})
    tls_key_file: str = field(default="", metadata={"help": "PEM private key for the certificate"})
    tls_client_ca_file: str = field(
        default="", metadata={"help": "PEM CA bundle to verify client certificates"}
    )
    tls_require_client_auth: bool = field(
        default=False, metadata={"help": "require client certificates (mTLS)"}
    )
    max_message_bytes: int = field(default=64 * MiB, metadata={"help": "max gRPC message size, both ways"})
    max_concurrent_rpcs: int = field(
        default=256, metadata={"help": "beyond this RPCs get RESOURCE_EXHAUSTED"}
    )
    drain_seconds: float = field(
        default=5.0, metadata={"help": "NOT_SERVING time before stopping on SIGTERM"}
    )
    grace_seconds: float = field(default=30.0, metadata={"help": "time in-flight RPCs get to finish on stop"})
    keepalive_seconds: float = field(default=30.0, metadata={"help": "HTTP/2 keepalive ping interval"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"})
    log_format: str = field(default="json", metadata={"help": "json or text"})
    redis_url: str = field(
        default="", metadata={"help": "Redis URL (env REDIS_URL); empty starts the embedded server"}
    )
    session_ttl_seconds: int = field(default=1800, metadata={"help": "idle time after which sessions expire"})
    data_dir: str = field(default="", metadata={"help": "directory for local state (default: a temp dir)"})

    def __post_init__(self) -> None:
        for name in ("port", "metrics_port", "health_port"):
            value = getattr(self, name)
            if not -1 <= value <= 65535:
                raise ValueError(f"{name}: {value} is not a port number")
        if self.port < 0:
            raise ValueError("port: the gRPC port must be 0 or a port number")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file, tls_key_file: give both or neither")
        if self.tls_require_client_auth and not self.tls_client_ca_file:
            raise ValueError("tls_client_ca_file: needed when tls_require_client_auth is set")
        if self.log_format not in ("json", "text"):
            raise ValueError(f"log_format: must be 'json' or 'text', got {self.log_format!r}")
        if self.max_message_bytes <= 0 or self.max_concurrent_rpcs <= 0:
            raise ValueError("max_message_bytes, max_concurrent_rpcs: must be positive")
        if self.drain_seconds < 0 or self.grace_seconds < 0:
            raise ValueError("drain_seconds, grace_seconds: must not be negative")

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert_file)

    def all_auth_tokens(self) -> tuple[str, ...]:
        """Tokens from ``auth_tokens`` plus those in ``auth_token_file``."""
        tokens = list(self.auth_tokens)
        if self.auth_token_file:
            lines = Path(self.auth_token_file).read_text().splitlines()
            tokens += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        return tuple(tokens)

    @classmethod
    def env_name(cls, name: str) -> str:
        return "REDIS_URL" if name == "redis_url" else f"TRILLIUM_{name.upper()}"

    def replace(self, **changes: Any) -> ServiceSettings:
        return dataclasses.replace(self, **changes)


def _parse(f: dataclasses.Field, raw: str, source: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    return raw
