"""TLS and mTLS over real loopback gRPC with certificates made by openssl for the test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from probe_service import SERVICE_NAME, probe_definition

from trillium.inference.v1 import inference_pb2, inference_pb2_grpc
from trillium.servicekit.background import BackgroundService
from trillium.servicekit.client import open_sync_channel
from trillium.servicekit.probes import health_status
from trillium.servicekit.settings import ServiceSettings
from trillium.servicekit.tls import channel_credentials

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=d,
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            f"{name}.pem",
            cwd=d,
        )
    return d


def list_models(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    with open_sync_channel(target, credentials) as channel:
        try:
            inference_pb2_grpc.InferenceServiceStub(channel).ListModels(
                inference_pb2.ListModelsRequest(), timeout=5
            )
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_tls_server_accepts_clients_that_trust_its_ca(pki):
    settings = ServiceSettings(
        port=0,
        metrics_port=-1,
        drain_seconds=0,
        tls_cert_file=str(pki / "server.pem"),
        tls_key_file=str(pki / "server.key"),
    )
    with BackgroundService(probe_definition(), settings) as service:
        assert list_models(service.target, channel_credentials(str(pki / "ca.pem"))) == grpc.StatusCode.OK
        assert list_models(service.target, None) == grpc.StatusCode.UNAVAILABLE  # plaintext client


def test_mtls_rejects_clients_without_a_certificate_and_serves_plaintext_health(pki):
    settings = ServiceSettings(
        port=0,
        metrics_port=-1,
        health_port=0,
        drain_seconds=0,
        tls_cert_file=str(pki / "server.pem"),
        tls_key_file=str(pki / "server.key"),
        tls_client_ca_file=str(pki / "ca.pem"),
        tls_require_client_auth=True,
    )
    with BackgroundService(probe_definition(), settings) as service:
        service.wait_ready()
        with_cert = channel_credentials(str(pki / "ca.pem"), str(pki / "client.pem"), str(pki / "client.key"))
        assert list_models(service.target, with_cert) == grpc.StatusCode.OK
        assert (
            list_models(service.target, channel_credentials(str(pki / "ca.pem")))
            == grpc.StatusCode.UNAVAILABLE
        )
        # Kubelet probes cannot present certificates: the health-only port is plaintext.
        health_target = f"127.0.0.1:{service.runtime.health_port}"
        assert health_status(health_target, SERVICE_NAME) == "SERVING"


def test_missing_certificate_file_names_the_setting(pki, tmp_path):
    settings = ServiceSettings(
        port=0,
        metrics_port=-1,
        tls_cert_file=str(tmp_path / "missing.pem"),
        tls_key_file=str(pki / "server.key"),
    )
    with pytest.raises(ValueError, match="tls_cert_file"):
        BackgroundService(probe_definition(), settings)
