"""Batches and topic aliases against a real mosquitto (through the fault-injecting proxy).

Every test decodes what the broker delivered (the recorder decodes batches) and
asserts exactly which ids arrived and how many duplicates; bytes on the wire are
counted at the proxy (both directions, MQTT headers and PUBACKs included).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
from support.broker import BrokerFactory, MosquittoBroker
from support.daemon import append_backlog, spool_with_backlog, wait_until
from support.proxy import ProxyFactory
from support.recorder import Recorder, RecorderFactory

from bridge.test_faults import running_bridge, settings_for
from mqttspool.batch import CONTENT_TYPE
from mqttspool.service import drain
from mqttspool.spool import open_spool

pytestmark = pytest.mark.integration

OLD_S = 3600.0  # an hour-old backlog: replay, so batches never linger


def counts(recorder: Recorder, device: str = "edge-01") -> Counter[int]:
    return Counter(int(d["seq"]) for d in recorder.data() if d["device"] == device)


def batch_messages(recorder: Recorder) -> list[int]:
    """The number of readings in each batch message received, in arrival order."""
    return [len(m.readings()) for m in recorder.messages() if m.topic.endswith("/batch")]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_backlog_drains_in_few_batches_with_every_id_once(
    tmp_path: Path,
    broker: MosquittoBroker,
    proxy_factory: ProxyFactory,
    recorder_factory: RecorderFactory,
    protocol: str,
) -> None:
    recorder = recorder_factory(broker)
    proxy = proxy_factory(broker)
    cfg = settings_for(tmp_path, proxy.port, payload="batch", max_inflight=1000)
    cfg.broker.protocol = protocol  # type: ignore[assignment]
    seqs = spool_with_backlog(Path(cfg.spool.path), 5000, age_s=OLD_S)
    with running_bridge(cfg) as (_bridge, spool):
        recorder.wait_data_ids(5000, timeout=30)
        wait_until(lambda: spool.depth() == 0, 15, "empty spool")
    assert counts(recorder) == Counter(seqs)  # every id exactly once
    sizes = batch_messages(recorder)
    assert sum(sizes) == 5000
    assert len(sizes) <= math.ceil(5000 / 1000) + 2
    first = next(m for m in recorder.messages() if m.topic == "mqttspool/edge-01/batch")
    assert (first.qos, first.retain) == (1, False)
    properties = (CONTENT_TYPE, (("encoding", "zlib"),)) if protocol == "5" else (None, ())
    assert (first.content_type, first.user_properties) == properties  # 3.1.1 has none
    assert all(d["replay"] for d in recorder.data())
    per_reading = (proxy.bytes_up + proxy.bytes_down) / 5000
    print(f"batch drain, MQTT {protocol}: {len(sizes)} messages, {per_reading:.2f} B/reading")
    assert per_reading < 20


def test_mixed_sends_live_readings_alone_and_the_backlog_in_batches(
    tmp_path: Path, broker: MosquittoBroker, recorder_factory: RecorderFactory
) -> None:
    recorder = recorder_factory(broker)
    cfg = settings_for(tmp_path, broker.port, payload="mixed", max_inflight=1000)
    spool = open_spool(cfg.spool)
    backlog = append_backlog(spool, 2000, age_s=OLD_S)
    live = append_backlog(spool, 5)
    more_backlog = append_backlog(spool, 300, age_s=OLD_S)
    spool.close()
    with running_bridge(cfg) as (_bridge, spool):
        recorder.wait_data_ids(2305, timeout=30)
        wait_until(lambda: spool.depth() == 0, 15, "empty spool")
    assert counts(recorder) == Counter(backlog + live + more_backlog)
    singles = [m.data() for m in recorder.messages() if m.topic.endswith("/bench/value")]
    assert [(d["seq"], d["replay"]) for d in singles if d] == [(s, False) for s in live]
    batched = [d for m in recorder.messages() if m.topic.endswith("/batch") for d in m.readings()]
    assert sorted(d["seq"] for d in batched) == backlog + more_backlog
    assert all(d["replay"] for d in batched)


def test_an_acl_denied_batch_dead_letters_all_its_rows(
    tmp_path: Path, broker_factory: BrokerFactory
) -> None:
    broker = broker_factory("auth")
    cfg = settings_for(tmp_path, broker.port, payload="batch", max_inflight=1000)
    cfg.broker.username = "edge-01"  # may write only mqttspool/edge-01/#
    cfg.broker.password = broker.users["edge-01"]  # type: ignore[assignment]
    spool = open_spool(cfg.spool)
    allowed = append_backlog(spool, 400, device="edge-01", age_s=OLD_S)
    denied = append_backlog(spool, 300, device="edge-02", age_s=OLD_S)
    spool.close()
    with running_bridge(cfg) as (bridge, spool):
        wait_until(lambda: spool.depth() == 0, 20, "every row settled")
        dead = spool.dead_letters()
        assert bridge.published_total == len(allowed)
    assert sorted(d.reading.seq for d in dead) == denied
    assert {d.code for d in dead} == {0x87}


def test_a_cut_mid_batch_resends_at_most_max_resend_readings(
    tmp_path: Path,
    broker: MosquittoBroker,
    proxy_factory: ProxyFactory,
    recorder_factory: RecorderFactory,
) -> None:
    recorder = recorder_factory(broker)
    proxy = proxy_factory(broker)
    cfg = settings_for(
        tmp_path,
        proxy.port,
        payload="batch",
        max_inflight=600,
        batch_max_readings=200,
        max_resend=600,
    )
    seqs = spool_with_backlog(Path(cfg.spool.path), 6000, age_s=OLD_S)
    cuts = 3
    with running_bridge(cfg) as (bridge, spool):
        for i in range(1, cuts + 1):
            target = i * 1500
            wait_until(lambda: bridge.published_total >= target, 30, "progress")  # noqa: B023
            proxy.cut()
            wait_until(lambda: bridge.connected, 15, "reconnect")
        recorder.wait_data_ids(6000, timeout=30)
        wait_until(lambda: spool.depth() == 0, 15, "empty spool")
    got = counts(recorder)
    assert set(got) == set(seqs)
    dups = sum(n - 1 for n in got.values())
    print(f"{cuts} cuts mid-batch: {dups} duplicate readings")
    assert dups <= cuts * cfg.bridge.max_resend  # a batch's readings count against max_resend


def test_topic_aliases_send_the_topic_once_per_connection(
    tmp_path: Path,
    broker: MosquittoBroker,
    proxy_factory: ProxyFactory,
    recorder_factory: RecorderFactory,
) -> None:
    recorder = recorder_factory(broker)
    proxy = proxy_factory(broker)
    proxy.capture_up = bytearray()
    cfg = settings_for(tmp_path, proxy.port, max_inflight=100)
    seqs = spool_with_backlog(Path(cfg.spool.path), 500, age_s=OLD_S)
    topic = b"mqttspool/edge-01/bench/value"
    with running_bridge(cfg) as (bridge, spool):
        recorder.wait_data_ids(500, timeout=30)
        wait_until(lambda: spool.depth() == 0, 15, "empty spool")
        assert proxy.capture_up.count(topic) == 1  # the first publish; then alias only
        proxy.cut()
        wait_until(lambda: bridge.connected, 15, "reconnect")
        more = append_backlog(spool, 50, age_s=OLD_S)
        recorder.wait_data_ids(550, timeout=30)
        wait_until(lambda: spool.depth() == 0, 15, "empty spool")
    # A new connection starts without aliases: the topic goes out once more.
    assert proxy.capture_up.count(topic) == 2
    assert counts(recorder) == Counter(seqs + more)
    assert {m.topic for m in recorder.messages() if m.data()} == {topic.decode()}


def test_drain_sends_fresh_readings_in_batch_mode_without_lingering(
    tmp_path: Path, broker: MosquittoBroker, recorder_factory: RecorderFactory
) -> None:
    recorder = recorder_factory(broker)
    cfg = settings_for(tmp_path, broker.port, payload="batch", batch_linger=3600)
    seqs = spool_with_backlog(Path(cfg.spool.path), 120)  # fresh: live, would linger an hour
    result = drain(cfg, timeout=20)
    assert (result.sent, result.remaining) == (120, 0)
    recorder.wait_data_ids(120, timeout=10)
    assert counts(recorder) == Counter(seqs)
    assert not any(d["replay"] for d in recorder.data())
