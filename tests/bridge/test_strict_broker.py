"""The real bridge (paho publisher) against :class:`support.strict_broker.StrictBroker`.

* MQTT 5 flow control: the strict broker disconnects a client with 0x93 as soon
  as it has more unacknowledged QoS 1 messages than the Receive Maximum it
  announced, so every message the bridge sends must count against the window.
* A broker that stops sending PUBACK: the strict broker keeps the connection
  alive (it answers PINGREQ), so keepalive never notices; only
  ``bridge.ack_timeout`` does.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support.daemon import append_backlog, wait_until
from support.strict_broker import StrictBroker

from mqttspool.bridge import Bridge, BridgeThread
from mqttspool.config import Settings, load_config
from mqttspool.counters import Counters
from mqttspool.service import make_bridge
from mqttspool.spool import Spool, open_spool
from mqttspool.timekeeping import SystemClock

pytestmark = pytest.mark.integration


def strict_settings(tmp_path: Path, port: int, **bridge: object) -> Settings:
    cfg = load_config(None, environ={})
    cfg.device.id = "edge-01"
    cfg.spool.path = str(tmp_path / "spool.db")
    cfg.broker.host = "127.0.0.1"
    cfg.broker.port = port
    cfg.bridge.reconnect_min = 0.1
    cfg.bridge.reconnect_max = 0.5
    for key, value in bridge.items():
        setattr(cfg.bridge, key, value)
    return cfg


@contextmanager
def bridge_running(cfg: Settings, spool: Spool) -> Iterator[Bridge]:
    bridge, publisher = make_bridge(cfg, spool, SystemClock(), Counters())
    thread = BridgeThread(bridge, publisher.wake)
    thread.start()
    try:
        yield bridge
    finally:
        thread.stop()
        thread.join(15)
        assert not thread.is_alive()
        assert thread.error is None, thread.error


def reading_seqs(broker: StrictBroker) -> Counter[int]:
    """How often each reading seq reached the broker."""
    seqs: Counter[int] = Counter()
    for topic, payload in list(broker.published):
        if topic.startswith("mqttspool/edge-01/bench/value") and not topic.endswith("/state"):
            seqs[json.loads(payload)["seq"]] += 1
    return seqs


def test_control_messages_share_the_receive_maximum_window(tmp_path: Path) -> None:
    with StrictBroker(receive_maximum=4) as broker:
        cfg = strict_settings(tmp_path, broker.port)
        cfg.homeassistant.discovery = True  # discovery + a retained state per fresh reading
        spool = open_spool(cfg.spool)
        seqs = append_backlog(spool, 200)  # fresh readings: each also updates HA state
        with bridge_running(cfg, spool):
            wait_until(lambda: set(reading_seqs(broker)) == set(seqs), 30, "all 200 readings")
            wait_until(lambda: spool.depth() == 0, 10, "an empty spool")
        spool.close()
    topics = Counter(topic for topic, _ in broker.published)
    assert broker.violations == 0
    assert broker.max_inflight <= 4
    assert broker.connects == 1
    assert sum(reading_seqs(broker).values()) == 200  # no resends: the link never broke
    assert topics["homeassistant/sensor/edge-01_bench_value/config"] == 1
    # A state update still waiting for room is replaced by a newer one (retained: only
    # the latest counts); the last one sent is the newest reading.
    states = [p for t, p in broker.published if t == "mqttspool/edge-01/bench/value/state"]
    assert 1 <= len(states) <= 200
    assert json.loads(states[-1])["value"] == 199.0
    assert topics["mqttspool/edge-01/status"] >= 1


def test_broker_that_never_acks_is_dropped_and_everything_resent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with StrictBroker(receive_maximum=10) as broker:
        broker.acking = False
        cfg = strict_settings(tmp_path, broker.port, ack_timeout=1.0)
        spool = open_spool(cfg.spool)
        seqs = append_backlog(spool, 50)
        with (
            caplog.at_level(logging.WARNING, logger="mqttspool.bridge"),
            bridge_running(cfg, spool) as bridge,
        ):
            wait_until(lambda: bridge.unacked_since() is not None, 10, "messages in flight")
            stalled_since = bridge.unacked_since()
            assert stalled_since is not None and stalled_since <= time.monotonic()
            wait_until(lambda: broker.connects >= 2, 10, "a reconnect after the timeout")
            assert spool.depth() == 50  # nothing acknowledged, nothing lost
            broker.acking = True
            wait_until(lambda: spool.depth() == 0, 20, "an empty spool once acks flow")
            wait_until(lambda: bridge.unacked_since() is None, 5, "nothing in flight")
        spool.close()
    assert set(reading_seqs(broker)) == set(seqs)
    lines = [r.getMessage() for r in caplog.records if "has not acknowledged" in r.getMessage()]
    assert lines, "the ack timeout was not logged"
    assert lines[0].startswith(f"broker 127.0.0.1:{broker.port} has not acknowledged 10 message(s)")
    assert "(bridge.ack_timeout 1 s)" in lines[0]
