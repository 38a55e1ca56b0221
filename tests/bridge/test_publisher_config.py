"""Publisher configuration: TLS context, file checks, client id, secrets."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from support.certs import CertBundle

from mqttspool.config import BrokerConfig, TlsConfig
from mqttspool.errors import ConfigError
from mqttspool.mqtt import (
    FailureKind,
    MqttPublisher,
    Will,
    _tls_context,
    client_id_for,
    kind_for_connack,
    kind_for_disconnect,
    kind_for_exception,
)


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
    assert client_id_for(BrokerConfig().client_id, "edge-01") == "mqttspool-edge-01"
    assert client_id_for(BrokerConfig(client_id="custom").client_id, "edge-01") == "custom"


def test_password_never_in_repr(tmp_path: Path) -> None:
    cfg = BrokerConfig(username="u", password="s3cr3t-value")  # type: ignore[arg-type]
    publisher = MqttPublisher(cfg, "c", Will("t/status", b"offline"))
    assert "s3cr3t-value" not in repr(cfg)
    assert "s3cr3t-value" not in repr(publisher.config)


# ------------------------------------------------------------ failure kinds


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (0x86, FailureKind.NOT_AUTHORIZED),  # bad user name or password
        (0x87, FailureKind.NOT_AUTHORIZED),
        (0x85, FailureKind.NOT_AUTHORIZED),  # client identifier not valid
        (0x84, FailureKind.PROTOCOL),  # unsupported protocol version
        (0x88, FailureKind.REFUSED),  # server unavailable
        (0x89, FailureKind.REFUSED),  # server busy
        (0x80, FailureKind.REFUSED),
    ],
)
def test_connack_reason_codes_map_to_kinds(code: int, kind: FailureKind) -> None:
    assert kind_for_connack(code) is kind


@pytest.mark.parametrize(
    ("code", "from_broker", "kind"),
    [
        (0x8E, True, FailureKind.SESSION_TAKEN_OVER),
        (0x93, True, FailureKind.PROTOCOL),  # receive maximum exceeded
        (0x82, True, FailureKind.PROTOCOL),
        (0x87, True, FailureKind.NOT_AUTHORIZED),
        (0x8B, True, FailureKind.REFUSED),  # server shutting down
        (0x00, True, FailureKind.REFUSED),  # the broker ended it without saying why
        (0x8D, True, FailureKind.TIMEOUT),
        (0x8D, False, FailureKind.TIMEOUT),  # paho's own keepalive gave up
        (0x80, False, FailureKind.NETWORK),  # socket lost
        (0x82, False, FailureKind.PROTOCOL),
        (0x00, False, FailureKind.CLOSED),  # our own disconnect()
    ],
)
def test_disconnect_reason_codes_map_to_kinds(
    code: int, from_broker: bool, kind: FailureKind
) -> None:
    assert kind_for_disconnect(code, from_broker) is kind


def test_paho_reason_code_objects_map_by_value() -> None:
    rc = ReasonCode(PacketTypes.CONNACK, "Bad user name or password")
    assert kind_for_connack(int(rc.value)) is FailureKind.NOT_AUTHORIZED
    rc = ReasonCode(PacketTypes.DISCONNECT, "Session taken over")
    assert kind_for_disconnect(int(rc.value), True) is FailureKind.SESSION_TAKEN_OVER
    rc = ReasonCode(PacketTypes.DISCONNECT, "Receive maximum exceeded")
    assert kind_for_disconnect(int(rc.value), True) is FailureKind.PROTOCOL


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ssl.SSLCertVerificationError("certificate verify failed"), FailureKind.TLS),
        (ssl.SSLError("wrong version number"), FailureKind.TLS),
        (TimeoutError("timed out"), FailureKind.TIMEOUT),
        (ConnectionRefusedError(111, "Connection refused"), FailureKind.NETWORK),
        (OSError(-2, "Name or service not known"), FailureKind.NETWORK),
    ],
)
def test_connect_exceptions_map_to_kinds(exc: BaseException, kind: FailureKind) -> None:
    assert kind_for_exception(exc) is kind


def test_configuration_kinds_carry_a_hint_and_transient_ones_do_not() -> None:
    configuration = {k for k in FailureKind if k.configuration}
    assert configuration == {
        FailureKind.TLS,
        FailureKind.NOT_AUTHORIZED,
        FailureKind.SESSION_TAKEN_OVER,
        FailureKind.PROTOCOL,
    }
    assert all(k.hint for k in configuration)
    assert not any(k.hint for k in set(FailureKind) - configuration)
    assert "broker.client_id" in FailureKind.SESSION_TAKEN_OVER.hint
    assert "broker.username" in FailureKind.NOT_AUTHORIZED.hint


def test_one_client_factory_and_one_client_id_rule() -> None:
    """Every paho client is built, authenticated and secured in ``new_client`` alone."""
    package = Path(__file__).resolve().parents[2] / "mqttspool"
    sources = {p: p.read_text(encoding="utf-8") for p in package.rglob("*.py")}

    def places(needle: str) -> list[str]:
        return sorted(
            p.relative_to(package).as_posix()
            for p, text in sources.items()
            for _ in range(text.count(needle))
        )

    assert places("mqtt.Client(") == []  # built as mqttspool.mqtt.fastack.Client
    assert places("callback_api_version=") == ["mqtt/client.py"]
    assert places(".username_pw_set(") == ["mqtt/client.py"]
    assert places(".tls_set_context(") == ["mqtt/client.py"]
    assert places("def client_id_for(") == ["mqtt/client.py"]


def test_ingest_client_id_is_stable_per_group_and_host() -> None:
    assert client_id_for("", "ingest", "g1", "host-a") == "mqttspool-ingest-g1-host-a"
    assert client_id_for("mine", "ingest", "g1", "host-a") == "mine"
