"""Unit tests of ingest's pieces: completeness, decoding, commit-then-ack, metrics."""

from __future__ import annotations

import json

from mqttspool.batch import encode as encode_batch
from mqttspool.ingest.completeness import completeness, explain
from mqttspool.ingest.consumer import IngestConsumer
from mqttspool.ingest.decode import Decoder
from mqttspool.ingest.store import (
    StoredState,
    StoreError,
    StoreRefusedError,
    StreamCounts,
    WriteBatch,
)
from mqttspool.mqtt import Delivery
from mqttspool.reading import StoredReading
from mqttspool.runner import WakingQueue
from mqttspool.wire.payload import render_payload
from mqttspool.wire.snapshot import Snapshot


def test_gaps_are_explained_oldest_first_while_the_counters_cover_them() -> None:
    gaps = explain([(10, 12), (3, 4), (20, 20)], budget=3)
    assert [(g.first, g.last, g.explained) for g in gaps] == [
        (3, 4, True),
        (10, 12, False),  # 3 more do not fit in the 1 left
        (20, 20, True),
    ]


def test_an_epoch_without_a_snapshot_has_every_gap_unexplained() -> None:
    state = StoredState(
        streams=[StreamCounts("a", "e1", 4, 1, 1, 6), StreamCounts("b", "e1", 1, 0, 7, 7)],
        gaps={"e1": [(3, 4)]},
        snapshots={},
        undecodable=0,
    )
    [report] = completeness(state)
    assert (report.devices, report.received, report.duplicates, report.last_seq) == (
        ("a", "b"),
        5,
        1,
        7,
    )
    assert (report.missing, report.unexplained, report.accounted) == (2, 2, None)


def test_snapshot_counts_dead_letters_and_every_drop_reason() -> None:
    state = StoredState(
        streams=[StreamCounts("a", "e1", 4, 0, 1, 7)],
        gaps={"e1": [(2, 3), (5, 5)]},
        snapshots={"e1": Snapshot("a", "e1", {"overflow": 1, "purged": 1}, 1)},
        undecodable=0,
    )
    [report] = completeness(state)
    assert (report.missing, report.unexplained, report.accounted) == (3, 0, 3)


def _payload(seq: int) -> bytes:
    row = StoredReading(seq, "edge-01", "s", "m", 2.5, "%", 1_795_992_144_377_000, False)
    return render_payload(row, "abcd", replay=False)


def test_decoder_sorts_readings_snapshots_and_undecodable() -> None:
    batch = WriteBatch()
    decoder = Decoder("mqttspool")
    decoder.add(batch, "mqttspool/edge-01/s/m", _payload(7))
    decoder.add(batch, "mqttspool/edge-01/status", b"online")
    snap = {"device": "edge-01", "epoch": "abcd", "dead_letters": 1, "dropped": {"x": 2}}
    decoder.add(batch, "mqttspool/edge-01/spool", json.dumps(snap).encode())
    decoder.add(batch, "mqttspool/edge-01/batch", b"\x78\x9c")
    decoder.add(batch, "mqttspool/edge-01/s/m", b"{not json")
    assert [(r.id, r.seq, r.value, r.unit) for r in batch.rows] == [("edge-01:abcd:7", 7, 2.5, "%")]
    assert batch.snapshots == [Snapshot("edge-01", "abcd", {"x": 2}, 1)]
    assert [(u.topic, u.reason) for u in batch.undecodable] == [
        ("mqttspool/edge-01/batch", "batch payload is a truncated zlib stream"),
        (
            "mqttspool/edge-01/s/m",
            "payload is not valid JSON (Expecting property name enclosed in double quotes"
            " at column 2)",
        ),
    ]


def test_snapshot_without_epoch_is_quarantined() -> None:
    batch = WriteBatch()
    payload = b'{"device": "a", "dropped": {}, "dead_letters": 0}'
    Decoder("mqttspool").add(batch, "mqttspool/a/spool", payload)
    assert [u.reason for u in batch.undecodable] == ["epoch: must be 1-32 characters [0-9a-f]"]


class _Source:
    def __init__(self, deliveries: list[Delivery]) -> None:
        self.messages: WakingQueue[Delivery] = WakingQueue()
        for d in deliveries:
            self.messages.put(d)
        self.acked: list[int] = []

    def ack(self, delivery: Delivery) -> None:
        self.acked.append(delivery.mid)


class _Store:
    name = "fake"

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.batches: list[WriteBatch] = []

    def write(self, batch: WriteBatch) -> int:
        if self.fail:
            raise StoreError("fake", "disk full")
        self.batches.append(batch)
        return len(batch.rows) - 1

    def state(self) -> StoredState:
        return StoredState([], {}, {}, 0)

    def close(self) -> None:
        pass


def _deliveries() -> list[Delivery]:
    return [Delivery(1, mid, 1, "mqttspool/edge-01/s/m", _payload(mid), False) for mid in (5, 6)]


def test_a_batch_is_acknowledged_after_the_commit() -> None:
    source, store = _Source(_deliveries()), _Store(fail=False)
    consumer = IngestConsumer(source, store, Decoder("mqttspool"), 10, 0.01)
    assert consumer.step(wait=0.1) == 2
    assert len(store.batches) == 1 and len(store.batches[0].rows) == 2
    assert source.acked == [5, 6]
    assert (consumer.totals.new_rows, consumer.totals.duplicates) == (1, 1)


def test_an_unreachable_database_acknowledges_nothing_and_retries_the_same_messages() -> None:
    source, store = _Source(_deliveries()), _Store(fail=True)
    consumer = IngestConsumer(source, store, Decoder("mqttspool"), 10, 0.01)
    states: list[bool] = []
    consumer.on_db_state = states.append
    assert consumer.step(wait=0.1) == 0
    assert (source.acked, consumer.db_ok, [d.mid for d in consumer.pending]) == ([], False, [5, 6])
    store.fail = False
    assert consumer.step(wait=0.1) == 2
    assert (source.acked, consumer.db_ok, consumer.pending, states) == (
        [5, 6],
        True,
        [],
        [False, True],
    )


def test_the_consumer_sleeps_until_a_message_or_its_status_line_not_in_short_polls() -> None:
    from mqttspool.ingest.consumer import _Loop  # noqa: PLC0415

    t = [100.0]
    source, store = _Source([]), _Store(fail=False)
    consumer = IngestConsumer(source, store, Decoder("mqttspool"), 10, 0.0, clock=lambda: t[0])
    loop = _Loop(consumer, status_interval=60.0)
    assert loop.step(t[0]) == 60.0  # idle: nothing due before the status line
    for d in _deliveries():
        source.messages.put(d)
    t[0] += 1.0
    assert loop.step(t[0]) == 0.0  # a batch stored: step again at once for more
    assert source.acked == [5, 6]
    assert loop.step(t[0]) == 59.0


def test_messages_arriving_while_the_database_is_down_do_not_hurry_the_retry() -> None:
    from mqttspool.ingest.consumer import _Loop  # noqa: PLC0415

    t = [100.0]
    source, store = _Source(_deliveries()), _Store(fail=True)
    consumer = IngestConsumer(source, store, Decoder("mqttspool"), 10, 0.0, clock=lambda: t[0])
    loop = _Loop(consumer, status_interval=60.0)
    assert loop.step(t[0]) == consumer.retry_s == 2.0  # failed: retry in 2 s
    store.fail = False
    t[0] += 0.5  # woken by another message
    assert loop.step(t[0]) == 1.5  # not retried yet
    assert (source.acked, store.batches) == ([], [])
    t[0] += 1.5
    assert loop.step(t[0]) == 0.0  # retried on time: stored and acknowledged
    assert source.acked == [5, 6]


def test_metrics_export_unexplained_missing_per_epoch() -> None:
    import prometheus_client  # noqa: PLC0415 - the optional extra (in dev)

    from mqttspool.ingest.metrics import IngestCollector  # noqa: PLC0415

    consumer = IngestConsumer(_Source([]), _Store(False), Decoder("mqttspool"), 10, 0.01)
    consumer.reports = completeness(
        StoredState([StreamCounts("a", "e1", 3, 0, 1, 6)], {"e1": [(2, 4)]}, {}, 0)
    )
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(consumer))
    text = prometheus_client.generate_latest(registry).decode()
    assert 'mqttspool_ingest_unexplained_missing{devices="a",epoch="e1"} 3.0' in text
    assert 'mqttspool_ingest_missing{devices="a",epoch="e1"} 3.0' in text


def test_the_real_batch_decoder_round_trips_through_ingest() -> None:
    """The real mqttspool.batch codec end to end through ingest's decoder."""

    rows = [
        StoredReading(seq, "edge-01", "s", "m", float(seq), "%", 1_795_992_144_377_000, True)
        for seq in (7, 8, 10)
    ]
    payload = encode_batch(rows, "edge-01", "abcd", [True, True, False])
    batch = WriteBatch()
    Decoder("mqttspool").add(batch, "mqttspool/edge-01/batch", payload)
    assert batch.undecodable == []
    assert [(r.id, r.value, r.unit, r.replay) for r in batch.rows] == [
        ("edge-01:abcd:7", 7.0, "%", True),
        ("edge-01:abcd:8", 8.0, "%", True),
        ("edge-01:abcd:10", 10.0, "%", False),
    ]


class _PickyStore(_Store):
    """Refuses any write holding a row with seq 13, as PostgreSQL refuses bigint overflow."""

    def write(self, batch: WriteBatch) -> int:
        if any(r.seq == 13 for r in batch.rows):
            raise StoreRefusedError("fake", "write refused: bigint out of range")
        self.batches.append(batch)
        return len(batch.rows)


def test_a_message_the_database_refuses_is_quarantined_and_the_rest_stored() -> None:
    topic = "mqttspool/edge-01/s/m"
    deliveries = [Delivery(1, mid, 1, topic, _payload(mid), False) for mid in (12, 13, 14)]
    source, store = _Source(deliveries), _PickyStore(fail=False)
    consumer = IngestConsumer(source, store, Decoder("mqttspool"), 10, 0.01)
    assert consumer.step(wait=0.1) == 3
    assert source.acked == [12, 13, 14]
    assert [[r.seq for r in b.rows] for b in store.batches] == [[12], [], [14]]
    [quarantined] = [u for b in store.batches for u in b.undecodable]
    assert (quarantined.topic, quarantined.reason, quarantined.payload) == (
        topic,
        "refused by the database: write refused: bigint out of range",
        _payload(13),
    )
    assert (consumer.totals.new_rows, consumer.totals.undecodable) == (2, 1)
