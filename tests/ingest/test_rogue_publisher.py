"""A rogue publisher cannot stop ``mqttspool ingest`` (real mosquitto, SQLite and PostgreSQL).

Every hostile message below is published under the prefix, and a good reading
right behind it. After each: the good reading is stored exactly once, the
hostile one is quarantined (or, for SQL metacharacters in a unit, stored
verbatim), and the ingest process is still running. Retained spool snapshots
that would crash a parser are published BEFORE ingest starts and again after
a restart, so they reach it at subscribe time.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from support.broker import MosquittoBroker
from support.daemon import Daemon, mqttspool_env, wait_until

from mqttspool.reading import StoredReading
from mqttspool.wire.batch import encode
from mqttspool.wire.payload import render_payload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
SUBSCRIBED = r"ingest: subscribed to \$share/"
P = "mqttspool"
DEV = "edge-01"
EPOCH = "ab12"
BIG = 2**64
DEEP = b"[" * 100_000 + b"]" * 100_000


def reading(seq: int, **changes: Any) -> bytes:
    doc = json.loads(render_payload(_row(seq), EPOCH, False))
    doc.update(changes)
    return json.dumps(doc, ensure_ascii=False).encode()


def _row(seq: int, unit: str | None = "%") -> StoredReading:
    return StoredReading(seq, DEV, "s", "m", 1.5, unit, 1_795_992_144_377_000, True)


def batch_doc(**changes: Any) -> bytes:
    doc = json.loads(zlib.decompress(encode([_row(900_001)], DEV, EPOCH, [False])))
    doc.update(changes)
    return zlib.compress(json.dumps(doc, ensure_ascii=False).encode())


def snapshot(**changes: Any) -> bytes:
    doc = {"device": DEV, "epoch": EPOCH, "depth": 0, "oldest_age_seconds": None,
           "dead_letters": 0, "dropped": {}, "last_publish": None}  # fmt: skip
    doc.update(changes)
    return json.dumps(doc).encode()


READING_T, BATCH_T, SPOOL_T = f"{P}/{DEV}/s/m", f"{P}/{DEV}/batch", f"{P}/{DEV}/spool"
LONG = "d" * 10_000
# (name, topic, payload, retained); expected outcome: quarantined, unless named "stored".
ROGUES: list[tuple[str, str, bytes, bool]] = [
    ("reading: invalid JSON", READING_T, b'{"id":', False),
    ("batch: invalid JSON", BATCH_T, zlib.compress(b'{"v":'), False),
    ("snapshot: invalid JSON (retained)", f"{P}/r1/spool", b"{", True),
    ("reading: bad UTF-8", READING_T, b'{"id":"\xff\xfe"}', False),
    ("batch: bad UTF-8", BATCH_T, zlib.compress(b'{"v":"\xff"}'), False),
    ("snapshot: bad UTF-8 (retained)", f"{P}/r2/spool", b'{"device":"\xc3"}', True),
    ("reading: 100k nesting", READING_T, DEEP, False),
    ("batch: 100k nesting", BATCH_T, zlib.compress(DEEP), False),
    ("snapshot: 100k nesting (retained)", f"{P}/r3/spool", DEEP, True),
    ("reading: seq 2^64", READING_T, reading(BIG, id=f"{DEV}:{EPOCH}:{BIG}"), False),
    ("batch: seq_delta 2^64", BATCH_T, batch_doc(seq_delta=[BIG]), False),
    ("batch: ts_delta 2^64", BATCH_T, batch_doc(ts_delta=[BIG]), False),
    ("batch: stream 2^64", BATCH_T, batch_doc(stream=[BIG]), False),
    ("batch: time_synced 2^64", BATCH_T, batch_doc(time_synced=[BIG]), False),
    ("batch: value 2^64 (a float: stored)", BATCH_T, batch_doc(value=[BIG]), False),
    ("snapshot: dead_letters 2^64 (retained)", f"{P}/r4/spool", snapshot(dead_letters=BIG), True),
    ("snapshot: depth 2^64", SPOOL_T, snapshot(depth=BIG), False),
    ("snapshot: dropped.x 2^64", SPOOL_T, snapshot(dropped={"x": BIG}), False),
    ("reading: NUL in device", READING_T, reading(1, device="a\x00"), False),
    ("reading: NUL in sensor", READING_T, reading(1, sensor="s\x00"), False),
    ("reading: NUL in metric", READING_T, reading(1, metric="m\x00"), False),
    ("reading: NUL in unit", READING_T, reading(1, unit="%\x00"), False),
    ("reading: NUL in epoch (id)", READING_T, reading(1, id=f"{DEV}:a\x00:1"), False),
    ("reading: NUL in ts", READING_T, reading(1, ts="2026-11-26T00:40:00\x00Z"), False),
    ("batch: NUL in device", BATCH_T, batch_doc(device="e\x00"), False),
    ("batch: NUL in epoch", BATCH_T, batch_doc(epoch="a\x00"), False),
    ("batch: NUL in sensor", BATCH_T, batch_doc(streams=[["s\x00", "m", "%"]]), False),
    ("batch: NUL in unit", BATCH_T, batch_doc(streams=[["s", "m", "\x00"]]), False),
    ("snapshot: NUL in device", SPOOL_T, snapshot(device="e\x00"), False),
    ("snapshot: NUL in epoch", SPOOL_T, snapshot(epoch="a\x00"), False),
    ("snapshot: NUL in spool_path", SPOOL_T, snapshot(spool_path="/\x00"), False),
    ("snapshot: NUL in a drop reason", SPOOL_T, snapshot(dropped={"x\x00": 1}), False),
    ("batch: zlib bomb (1 GiB of zeros)", BATCH_T, zlib.compress(b"0" * 2**30, 9), False),
    ("reading: 10 kB device id", f"{P}/{LONG}/s/m", reading(1, device=LONG), False),
    ("snapshot: 10 kB device id", f"{P}/{LONG}/spool", snapshot(device=LONG), False),
    ("reading: SQL in device", f"{P}/x/s/m", reading(1, device="x'; DROP TABLE t;--"), False),
    ("reading: SQL in unit (stored)", READING_T, reading(800_001, unit="'); DROP--"), False),
    ("reading: device != topic", f"{P}/edge-02/s/m", reading(2), False),
    ("snapshot: another device's epoch", f"{P}/edge-02/spool", snapshot(), False),
]


class Rogue:
    """A plain MQTT client that publishes whatever it is given (QoS 1)."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published(), topic[:80]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def query(db: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on the SQLite file or PostgreSQL URL."""
    if db.startswith("postgresql://"):
        import psycopg  # noqa: PLC0415

        with psycopg.connect(db) as conn:
            return [tuple(r) for r in conn.execute(sql.replace("?", "%s"), params)]
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql, params))


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ingest.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def rogue(broker: MosquittoBroker) -> Iterator[Rogue]:
    client = Rogue(broker.port)
    yield client
    client.close()


OUTCOMES: dict[tuple[str, str], str] = {}


def _start(broker: MosquittoBroker, db: str) -> Daemon:
    env = mqttspool_env(Path("unused.db"), broker.port, ingest__batch_linger="0.05")
    daemon = Daemon(env, ("ingest", "--db", db))
    daemon.wait_log(SUBSCRIBED, timeout=20)
    return daemon


def _good_behind(rogue: Rogue, db: str, seq: int, ingest: Daemon) -> None:
    rogue.send(READING_T, reading(seq))
    rid = f"{DEV}:{EPOCH}:{seq}"
    count: Callable[[], int] = lambda: query(  # noqa: E731
        db, "SELECT COUNT(*) FROM ingest_reading WHERE id = ?", rid
    )[0][0]
    wait_until(lambda: count() == 1 or ingest.proc.poll() is not None, 20, f"{rid} stored")
    assert ingest.proc.poll() is None, "\n".join(ingest.log[-30:])
    assert count() == 1


def test_no_rogue_message_stops_ingest(
    broker: MosquittoBroker, rogue: Rogue, db: str, request: pytest.FixtureRequest
) -> None:
    backend = "PostgreSQL" if db.startswith("postgresql://") else "SQLite"
    for _name, topic, payload, retained in ROGUES:
        if retained:
            rogue.send(topic, payload, retain=True)  # waiting for every ingest that subscribes
    ingest = _start(broker, db)
    request.addfinalizer(ingest.stop)
    seq = 1000
    for name, topic, payload, retained in ROGUES:
        before = query(db, "SELECT COUNT(*) FROM ingest_quarantine")[0][0]
        if not retained:
            rogue.send(topic, payload)
        seq += 1
        _good_behind(rogue, db, seq, ingest)
        OUTCOMES[(name, backend)] = _outcome(db, name, topic if retained else None, before)
    ingest.terminate()
    assert ingest.wait(15) == 0
    again = _start(broker, db)  # the retained rogues arrive again at subscribe
    request.addfinalizer(again.stop)
    _good_behind(rogue, db, seq + 1, again)
    stored = {r[0] for r in query(db, "SELECT id FROM ingest_reading")}
    good = {f"{DEV}:{EPOCH}:{s}" for s in range(1001, seq + 2)}
    extra = {f"{DEV}:{EPOCH}:800001", f"{DEV}:{EPOCH}:900001"}  # SQL unit; 2^64 as a float
    assert stored == good | extra
    [(unit,)] = query(db, "SELECT unit FROM ingest_reading WHERE seq = 800001")
    assert unit == "'); DROP--"
    print(f"\n{backend} rogue battery:")
    for (name, be), outcome in OUTCOMES.items():
        if be == backend:
            print(f"| {name} | {outcome} |")


def _outcome(db: str, name: str, retained_topic: str | None, before: int) -> str:
    """What became of the rogue: quarantined (with the reason) or stored (exactly once)."""
    if "stored" in name:
        return "stored verbatim"
    if retained_topic is not None:  # quarantined at subscribe time, before this loop
        sql = "SELECT reason FROM ingest_quarantine WHERE topic = ? ORDER BY id DESC LIMIT 1"
        wait_until(lambda: bool(query(db, sql, retained_topic)), 10, f"{name} quarantined")
        [(reason,)] = query(db, sql, retained_topic)
        return f"quarantined: {reason[:90]}"
    wait_until(
        lambda: query(db, "SELECT COUNT(*) FROM ingest_quarantine")[0][0] > before,
        10,
        f"{name} quarantined",
    )
    [(reason,)] = query(db, "SELECT reason FROM ingest_quarantine ORDER BY id DESC LIMIT 1")
    return f"quarantined: {reason[:90]}"
