"""``mqttspool ingest`` end to end: real mosquitto, real ``drain``, SQLite and PostgreSQL.

Every test ends with the exact set of ids in the database and the report's
duplicate and gap counts.
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from support.broker import MosquittoBroker
from support.daemon import Daemon, mqttspool_env, run_cli, spool_with_backlog, wait_until

from mqttspool.reading import StoredReading
from mqttspool.wire.payload import render_payload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
SUBSCRIBED = r"ingest: subscribed to \$share/"


def ids_in(db: str) -> list[str]:
    """Every stored id (SQLite path or PostgreSQL URL), sorted, repeats kept."""
    if db.startswith("postgresql://"):
        import psycopg  # noqa: PLC0415

        with psycopg.connect(db) as conn:
            return sorted(str(r[0]) for r in conn.execute("SELECT id FROM ingest_reading"))
    with sqlite3.connect(db) as conn:
        return sorted(str(r[0]) for r in conn.execute("SELECT id FROM ingest_reading"))


def count_in(db: str) -> int:
    """Rows stored so far (0 before the table exists)."""
    try:
        return len(ids_in(db))
    except sqlite3.OperationalError:
        return 0


def report(env: Mapping[str, str], db: str) -> tuple[int, list[dict[str, object]]]:
    """``ingest --report --json``: exit code and the epoch rows."""
    done = run_cli(["ingest", "--db", db, "--report", "--json"], env)
    assert done.stderr == "", done.stderr
    epochs: list[dict[str, object]] = json.loads(done.stdout)["epochs"]
    return done.returncode, epochs


def epoch_of(spool: Path) -> str:
    """The spool's epoch (from ``status --json``)."""
    done = run_cli(["status", "--json"], mqttspool_env(spool, 1))
    epoch: str = json.loads(done.stdout)["epoch"]
    return epoch


def _duplicates(env: Mapping[str, str], db: str) -> int:
    epochs = report(env, db)[1]
    return int(str(epochs[0]["duplicates"])) if epochs else 0


@pytest.fixture
def ingest_factory(
    broker: MosquittoBroker,
) -> Iterator[Callable[..., Daemon]]:
    """Start ``mqttspool ingest`` processes (waits for the SUBACK); all stopped at teardown."""
    started: list[Daemon] = []

    def start(db: str, client_id: str = "ingest-a", **settings: object) -> Daemon:
        env = mqttspool_env(Path("unused.db"), broker.port, ingest__client_id=client_id, **settings)
        daemon = Daemon(env, ("ingest", "--db", db))
        started.append(daemon)
        daemon.wait_log(SUBSCRIBED, timeout=15, count=1)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


def test_drained_readings_land_once_even_when_sent_twice(
    broker: MosquittoBroker, ingest_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    db = str(tmp_path / "ingest.db")
    spool = tmp_path / "spool.db"
    seqs = spool_with_backlog(spool, 300)
    shutil.copy(spool, tmp_path / "copy.db")  # same epoch, same seqs: the same 300 ids again
    ingest = ingest_factory(db)
    env = mqttspool_env(spool, broker.port)
    assert run_cli(["drain", "--timeout", "20"], env).returncode == 0
    assert (
        run_cli(
            ["drain", "--timeout", "20"],
            {**env, "MQTTSPOOL_SPOOL__PATH": str(tmp_path / "copy.db")},
        ).returncode
        == 0
    )
    epoch = epoch_of(tmp_path / "copy.db")
    wait_until(lambda: _duplicates(env, db) == 300, 20, "300 duplicates in the report")
    assert ids_in(db) == sorted(f"edge-01:{epoch}:{s}" for s in seqs)
    rc, [row] = report(env, db)
    assert (rc, row["received"], row["duplicates"], row["missing"]) == (0, 300, 300, 0)
    ingest.terminate()
    assert ingest.wait(15) == 0
    assert ingest.wait_log(r"ingest: \d+ message\(s\), 300 new reading\(s\), 300 duplicate", 1)


def test_two_processes_in_one_group_share_the_load_into_postgres(
    broker: MosquittoBroker,
    ingest_factory: Callable[..., Daemon],
    postgres_url: str,
    tmp_path: Path,
) -> None:
    a = ingest_factory(postgres_url, "ingest-a")
    b = ingest_factory(postgres_url, "ingest-b")
    spool = tmp_path / "spool.db"
    seqs = spool_with_backlog(spool, 1000)
    epoch = epoch_of(spool)
    env = mqttspool_env(spool, broker.port)
    assert run_cli(["drain", "--timeout", "30"], env).returncode == 0
    wait_until(lambda: count_in(postgres_url) == 1000, 30, "1000 rows in PostgreSQL")
    assert ids_in(postgres_url) == sorted(f"edge-01:{epoch}:{s}" for s in seqs)
    shares = []
    for daemon in (a, b):
        daemon.terminate()
        assert daemon.wait(15) == 0
        [line] = daemon.wait_log(r"ingest: \d+ message\(s\), \d+ new reading", 1)
        shares.append(int(line.split(" message(s), ")[1].split(" new")[0]))
    assert sum(shares) == 1000
    assert min(shares) > 0, f"one process got nothing: {shares}"
    rc, [row] = report(env, postgres_url)
    assert (rc, row["received"], row["duplicates"], row["missing"]) == (0, 1000, 0, 0)


def test_kill_9_between_receive_and_commit_loses_nothing(
    broker: MosquittoBroker, ingest_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    db = str(tmp_path / "ingest.db")
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    seqs1 = spool_with_backlog(first, 200, device="edge-01")
    seqs2 = spool_with_backlog(second, 300, device="edge-02")
    epoch1, epoch2 = epoch_of(first), epoch_of(second)
    expected = [f"edge-01:{epoch1}:{s}" for s in seqs1] + [f"edge-02:{epoch2}:{s}" for s in seqs2]
    ingest = ingest_factory(db, "ingest-a", log__level="debug")
    env = mqttspool_env(first, broker.port)
    assert run_cli(["drain", "--timeout", "20"], env).returncode == 0
    wait_until(lambda: count_in(db) == 200, 20, "the first 200 rows")
    # Hold SQLite's write lock: ingest receives the next readings but cannot commit them.
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    stored = len(ingest.wait_log("storing", 1, count=1))
    env2 = {**env, "MQTTSPOOL_SPOOL__PATH": str(second), "MQTTSPOOL_DEVICE__ID": "edge-02"}
    assert run_cli(["drain", "--timeout", "20"], env2).returncode == 0
    ingest.wait_log("storing", 10, count=stored + 1)  # a batch of them is waiting for the lock
    ingest.kill9()
    blocker.execute("ROLLBACK")
    blocker.close()
    assert count_in(db) == 200
    ingest_factory(db, "ingest-a")  # same client id: the broker resends the unacknowledged
    wait_until(lambda: count_in(db) == 500, 20, "all 500 rows after the restart")
    assert ids_in(db) == sorted(expected)
    rc, rows = report(env, db)
    assert rc == 0
    assert sorted((r["devices"], r["received"], r["missing"]) for r in rows) == [
        (["edge-01"], 200, 0),
        (["edge-02"], 300, 0),
    ]


def _publish(broker: MosquittoBroker, messages: list[tuple[str, bytes, bool]]) -> None:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        for topic, payload, retain in messages:
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def _reading(device: str, epoch: str, seq: int) -> tuple[str, bytes, bool]:
    row = StoredReading(seq, device, "s", "m", 1.5, None, 1_795_992_144_377_000, True)
    return f"mqttspool/{device}/s/m", render_payload(row, epoch, replay=True), False


def _snapshot(device: str, epoch: str, dropped: dict[str, int]) -> tuple[str, bytes, bool]:
    doc = {"device": device, "epoch": epoch, "depth": 0, "dead_letters": 0, "dropped": dropped}
    return f"mqttspool/{device}/spool", json.dumps(doc).encode(), True


def test_report_tells_explained_from_unexplained_gaps(
    broker: MosquittoBroker, ingest_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    db = str(tmp_path / "ingest.db")
    # Retained before ingest starts: it must still learn the drop counters.
    _publish(broker, [_snapshot("dev-a", "aaaa", {"overflow": 2}), _snapshot("dev-b", "bbbb", {})])
    ingest = ingest_factory(db)
    _publish(broker, [_reading("dev-a", "aaaa", s) for s in (1, 2, 3, 6, 7)])
    _publish(broker, [_reading("dev-b", "bbbb", s) for s in (1, 2, 5)])
    wait_until(lambda: count_in(db) == 8, 20, "8 rows")
    ingest.terminate()
    assert ingest.wait(15) == 0
    env = mqttspool_env(tmp_path / "unused.db", broker.port)
    rc, rows = report(env, db)
    assert rc == 1
    assert [(r["epoch"], r["missing"], r["unexplained"], r["gaps"]) for r in rows] == [
        ("aaaa", 2, 0, [{"first": 4, "last": 5, "explained": True}]),
        ("bbbb", 2, 2, [{"first": 3, "last": 4, "explained": False}]),
    ]
    text = run_cli(["ingest", "--db", db, "--report"], env)
    assert text.returncode == 1
    assert "    unexplained gap: seq 3..4 (2 reading(s))" in text.stdout.splitlines()
    assert "seq 4..5" not in text.stdout


def test_devices_hold_readings_until_ingest_subscribes(
    broker: MosquittoBroker, ingest_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    db = str(tmp_path / "ingest.db")
    spool = tmp_path / "spool.db"
    seqs = spool_with_backlog(spool, 100)
    epoch = epoch_of(spool)
    env = mqttspool_env(spool, broker.port, bridge__require_subscribers="true")
    drain = Daemon(env, ("drain", "--timeout", "30"))
    try:
        drain.wait_log("no matching subscribers", 15)  # ingest not there yet: kept, paused
        ingest_factory(db)
        assert drain.wait(30) == 0  # the probe reached ingest; the rest followed
    finally:
        drain.stop()
    wait_until(lambda: count_in(db) == 100, 20, "100 rows")
    assert ids_in(db) == sorted(f"edge-01:{epoch}:{s}" for s in seqs)
    rc, [row] = report(env, db)
    assert (rc, row["received"], row["missing"]) == (0, 100, 0)


def test_prometheus_gauge_exports_unexplained_missing(
    broker: MosquittoBroker, ingest_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = str(tmp_path / "ingest.db")
    with socket.socket() as busy:  # what `run` holds with the same config: [metrics].port
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ingest_factory(
            db,
            metrics__enabled="true",
            metrics__port=busy.getsockname()[1],
            ingest__metrics__enabled="true",
            ingest__metrics__port=port,
            ingest__status_interval=0.2,
        )
    _publish(broker, [_reading("dev-b", "bbbb", s) for s in (1, 2, 5)])
    wanted = 'mqttspool_ingest_unexplained_missing{devices="dev-b",epoch="bbbb"} 2.0'

    def scraped() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return wanted in resp.read().decode()

    wait_until(scraped, 20, wanted)
