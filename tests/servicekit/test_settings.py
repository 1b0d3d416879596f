"""Settings come from the environment and are overridden by flags; bad values name the field."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from trillium.servicekit.settings import ServiceSettings


def parse(argv: list[str], env: dict[str, str]) -> ServiceSettings:
    parser = argparse.ArgumentParser()
    ServiceSettings.add_arguments(parser)
    return ServiceSettings.from_args(parser.parse_args(argv), env)


def test_defaults_are_loopback_and_documented_ports():
    settings = ServiceSettings.from_env({})
    assert (settings.host, settings.port, settings.metrics_port) == ("127.0.0.1", 50051, 9090)
    assert settings.health_port == -1 and not settings.tls_enabled


def test_environment_is_read_and_typed():
    env = {
        "TRILLIUM_PORT": "6000",
        "TRILLIUM_DRAIN_SECONDS": "1.5",
        "TRILLIUM_AUTH_TOKENS": "a, b,,c",
        "TRILLIUM_TLS_REQUIRE_CLIENT_AUTH": "false",
        "REDIS_URL": "redis://10.0.0.1:6379/0",
    }
    settings = ServiceSettings.from_env(env)
    assert settings.port == 6000 and settings.drain_seconds == 1.5
    assert settings.auth_tokens == ("a", "b", "c")
    assert settings.redis_url == "redis://10.0.0.1:6379/0"


def test_flags_override_environment():
    settings = parse(["--port", "7000", "--log-format", "text"], {"TRILLIUM_PORT": "6000"})
    assert settings.port == 7000 and settings.log_format == "text"


def test_token_file_adds_tokens(tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text("# clients\nfirst\n\nsecond\n")
    settings = ServiceSettings.from_env(
        {"TRILLIUM_AUTH_TOKEN_FILE": str(token_file), "TRILLIUM_AUTH_TOKENS": "x"}
    )
    assert settings.all_auth_tokens() == ("x", "first", "second")


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"TRILLIUM_PORT": "http"}, "TRILLIUM_PORT"),
        ({"TRILLIUM_PORT": "70000"}, "port"),
        ({"TRILLIUM_TLS_CERT_FILE": "cert.pem"}, "tls_key_file"),
        ({"TRILLIUM_TLS_REQUIRE_CLIENT_AUTH": "yes"}, "tls_client_ca_file"),
        ({"TRILLIUM_TLS_REQUIRE_CLIENT_AUTH": "maybe"}, "TRILLIUM_TLS_REQUIRE_CLIENT_AUTH"),
        ({"TRILLIUM_LOG_FORMAT": "xml"}, "log_format"),
        ({"TRILLIUM_MAX_MESSAGE_BYTES": "0"}, "max_message_bytes"),
    ],
)
def test_bad_values_name_the_field(env, field):
    with pytest.raises(ValueError, match=field):
        ServiceSettings.from_env(env)


def test_readme_documents_every_setting():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for f in fields(ServiceSettings):
        assert f"`{ServiceSettings.env_name(f.name)}`" in readme, f.name
        assert f"`--{f.name.replace('_', '-')}`" in readme, f.name
