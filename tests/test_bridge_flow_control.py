"""MQTT 5 flow control: every QoS 1 message counts against the broker's Receive Maximum.

Runs the real bridge (paho publisher) against :class:`support.strict_broker.StrictBroker`,
which disconnects a client with 0x93 as soon as it has more unacknowledged QoS 1
messages than the Receive Maximum it announced.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from daemon import append_backlog, wait_until
from support.strict_broker import StrictBroker

from mqttspool.bridge import Bridge, BridgeThread
from mqttspool.config import Settings, load_config
from mqttspool.counters import Counters
from mqttspool.service import make_bridge
from mqttspool.spool import Spool, open_spool
from mqttspool.timekeeping import SystemClock


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
    assert topics["mqttspool/edge-01/bench/value/state"] == 200
    assert topics["mqttspool/edge-01/status"] >= 1
