"""TLS and mTLS credentials for servers and channels (grpc's ``ssl_*_credentials``)."""

from __future__ import annotations

from pathlib import Path

import grpc

from trillium.servicekit.settings import ServiceSettings


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {path!r}: {exc.strerror}") from None


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials:
    """Server credentials from the settings' PEM files; mTLS when client auth is required."""
    if not settings.tls_enabled:
        raise ValueError("tls_cert_file: TLS is not configured")
    key = _read(settings.tls_key_file, "tls_key_file")
    chain = _read(settings.tls_cert_file, "tls_cert_file")
    client_ca = (
        _read(settings.tls_client_ca_file, "tls_client_ca_file") if settings.tls_client_ca_file else None
    )
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=client_ca,
        require_client_auth=settings.tls_require_client_auth,
    )


def channel_credentials(
    ca_file: str = "", cert_file: str = "", key_file: str = ""
) -> grpc.ChannelCredentials:
    """Client credentials: verify the server with ``ca_file``; present a certificate for mTLS."""
    if bool(cert_file) != bool(key_file):
        raise ValueError("cert_file, key_file: give both or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, "ca_file") if ca_file else None,
        private_key=_read(key_file, "key_file") if key_file else None,
        certificate_chain=_read(cert_file, "cert_file") if cert_file else None,
    )
