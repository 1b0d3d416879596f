"""Client-side helpers: channels with the same message limits as servers, and bearer tokens."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc import aio

from trillium.servicekit.settings import MiB


def channel_options(
    max_message_bytes: int = 64 * MiB, keepalive_seconds: float = 30.0
) -> list[tuple[str, int]]:
    """Options shared by servers and channels: explicit message limits and keepalive pings."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", int(keepalive_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def bearer_metadata(token: str, request_id: str = "") -> Sequence[tuple[str, str]]:
    """Call metadata carrying ``authorization: Bearer <token>`` (and an optional request id)."""
    metadata = [("authorization", f"Bearer {token}")] if token else []
    if request_id:
        metadata.append(("x-request-id", request_id))
    return metadata


def open_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None = None,
    max_message_bytes: int = 64 * MiB,
) -> aio.Channel:
    """An asyncio channel to ``target`` (plaintext unless ``credentials`` are given)."""
    options = channel_options(max_message_bytes)
    if credentials is None:
        return aio.insecure_channel(target, options=options)
    return aio.secure_channel(target, credentials, options=options)


def open_sync_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None = None,
    max_message_bytes: int = 64 * MiB,
) -> grpc.Channel:
    """A blocking channel to ``target``, for scripts and CLIs."""
    options = channel_options(max_message_bytes)
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, credentials, options=options)
