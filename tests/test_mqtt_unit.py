"""Publisher configuration: TLS context, file checks, client id, secrets."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
from support.certs import CertBundle

from mqttspool.config import BrokerConfig, TlsConfig
from mqttspool.errors import ConfigError
from mqttspool.mqtt import MqttPublisher, Will, _tls_context, client_id_for


def test_tls_verifies_certificate_and_hostname_by_default(certs: CertBundle) -> None:
    cfg = BrokerConfig(tls=TlsConfig(enabled=True, ca_file=str(certs.ca_cert)))
    ctx = _tls_context(cfg)
    assert ctx.check_hostname is True
    assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_tls_insecure_is_explicit_and_warns(
    certs: CertBundle, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = BrokerConfig(
        host="broker.example",
        tls=TlsConfig(enabled=True, ca_file=str(certs.ca_cert), insecure=True),
    )
    with caplog.at_level(logging.WARNING, logger="mqttspool.mqtt"):
        ctx = _tls_context(cfg)
    assert ctx.check_hostname is False
    assert ctx.verify_mode == ssl.CERT_REQUIRED  # the CA is still checked
    assert "broker broker.example:1883: TLS hostname verification is OFF" in caplog.text


def test_unreadable_tls_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    cfg = BrokerConfig(tls=TlsConfig(enabled=True, ca_file=str(missing)))
    with pytest.raises(ConfigError) as info:
        MqttPublisher(cfg, "c", None)
    (path, message), *_ = info.value.problems
    assert path == "broker.tls.ca_file"
    assert str(missing) in message


def test_client_id_defaults_to_device() -> None:
    assert client_id_for(BrokerConfig(), "edge-01") == "mqttspool-edge-01"
    assert client_id_for(BrokerConfig(client_id="custom"), "edge-01") == "custom"


def test_password_never_in_repr(tmp_path: Path) -> None:
    cfg = BrokerConfig(username="u", password="s3cr3t-value")  # type: ignore[arg-type]
    publisher = MqttPublisher(cfg, "c", Will("t/status", b"offline"))
    assert "s3cr3t-value" not in repr(cfg)
    assert "s3cr3t-value" not in repr(publisher.config)
