"""Two clients with one client id (e.g. two Pis left on the same device.id).

An MQTT 5 broker may end the older connection with DISCONNECT 0x8E "Session
taken over"; the publisher reports that as its own failure kind and the bridge
logs an error naming the client id and what to change. mosquitto 2.0.11 closes
the old socket without a reason code instead: the bridge sees a network loss,
and its throttled disconnect line says what frequent losses may mean.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from support.broker import MosquittoBroker
from support.daemon import append_backlog, wait_until
from support.strict_broker import StrictBroker

from bridge.test_strict_broker import bridge_running, strict_settings
from mqttspool.config import BrokerConfig
from mqttspool.mqtt import Connected, Disconnected, Event, FailureKind, MqttPublisher, Publisher
from mqttspool.spool import open_spool

pytestmark = pytest.mark.integration

CLIENT_ID = "mqttspool-edge-01"


def next_event(pub: Publisher, wanted: type[Event], timeout: float = 10.0) -> Event:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in pub.events():
            if isinstance(event, wanted):
                return event
        pub.wait(0.05)
    raise AssertionError(f"no {wanted.__name__} event within {timeout} s")


def first_loses_to_second(host: str, port: int) -> Disconnected:
    """Connect two publishers with one client id; the first one's Disconnected event."""
    cfg = BrokerConfig(host=host, port=port)
    first = MqttPublisher(cfg, CLIENT_ID, None)
    second = MqttPublisher(cfg, CLIENT_ID, None)
    try:
        first.connect()
        next_event(first, Connected)
        second.connect()
        next_event(second, Connected)
        event = next_event(first, Disconnected)
        assert isinstance(event, Disconnected)
        return event
    finally:
        first.close()
        second.close()


def test_session_taken_over_is_its_own_failure_kind() -> None:
    with StrictBroker() as broker:
        event = first_loses_to_second(broker.host, broker.port)
    assert (event.kind, event.reason_code) == (FailureKind.SESSION_TAKEN_OVER, 0x8E)
    assert event.reason == "Session taken over"
    assert event.kind.configuration


def test_mosquitto_takeover_is_reported_by_what_the_broker_sent(broker: MosquittoBroker) -> None:
    event = first_loses_to_second(broker.host, broker.port)
    if event.reason_code == 0x8E:  # a mosquitto that sends the reason code
        assert event.kind is FailureKind.SESSION_TAKEN_OVER
    else:  # mosquitto 2.0.11: the socket just closes
        assert (event.kind, event.reason_code) == (FailureKind.NETWORK, 0x80)


def test_bridge_logs_the_takeover_as_an_error_naming_the_client_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with StrictBroker() as broker:
        cfg = strict_settings(tmp_path, broker.port)
        spool = open_spool(cfg.spool)
        append_backlog(spool, 5)
        intruder = MqttPublisher(cfg.broker, CLIENT_ID, None)
        try:
            with (
                caplog.at_level(logging.WARNING, logger="mqttspool.bridge"),
                bridge_running(cfg, spool) as bridge,
            ):
                wait_until(lambda: bridge.connected, 10, "the bridge to connect")
                intruder.connect()
                wait_until(lambda: bool(takeover_lines(caplog)), 10, "the takeover error")
        finally:
            intruder.close()
            spool.close()
    (line, *_) = takeover_lines(caplog)
    assert line.levelname == "ERROR"
    assert line.getMessage().startswith(
        f"broker 127.0.0.1:{broker.port} took the session of client id '{CLIENT_ID}' over"
        " (Session taken over): another client connected with the same client id"
    )
    assert "broker.client_id" in line.getMessage() and "device.id" in line.getMessage()


def takeover_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "took the session" in r.getMessage()]
