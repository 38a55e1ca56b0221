"""The ingest storage contract: the same tests against SQLite and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mqttspool.errors import ConfigError
from mqttspool.ingest.completeness import completeness
from mqttspool.ingest.store import (
    ROWS_PER_STATEMENT,
    IngestRow,
    PostgresStore,
    SqlStore,
    StoreError,
    StoreRefusedError,
    Undecodable,
    WriteBatch,
    open_store,
    redact_url,
)
from mqttspool.wire.snapshot import Snapshot

Opener = Callable[[], SqlStore]


def row(seq: int, device: str = "edge-01", epoch: str = "e1") -> IngestRow:
    """A reading row with a consistent id."""
    return IngestRow(
        id=f"{device}:{epoch}:{seq}",
        device=device,
        epoch=epoch,
        seq=seq,
        sensor="s",
        metric="m",
        value=float(seq),
        unit="°C",
        ts_us=1_795_992_144_377_000 + seq,
        time_synced=True,
        replay=False,
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens (and reopens) one fresh database of the backend under test."""
    db = (
        str(tmp_path / "ingest.db")
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    opened: list[SqlStore] = []

    def open_() -> SqlStore:
        opened.append(open_store(db))
        return opened[-1]

    yield open_
    for store in opened:
        store.close()


class TestStoreContract:
    """Every backend: each id once, duplicates counted, one transaction per write."""

    def test_each_id_is_stored_once_and_repeats_are_counted(self, opener: Opener) -> None:
        store = opener()
        assert store.write(WriteBatch(rows=[row(1), row(2), row(2)])) == 2
        assert store.write(WriteBatch(rows=[row(2), row(3)])) == 1
        [stream] = store.state().streams
        assert (stream.received, stream.duplicates, stream.first_seq, stream.last_seq) == (
            3,
            2,
            1,
            3,
        )

    def test_batches_larger_than_one_statement(self, opener: Opener) -> None:
        store = opener()
        n = ROWS_PER_STATEMENT * 2 + 7
        assert store.write(WriteBatch(rows=[row(i) for i in range(1, n + 1)])) == n
        assert store.write(WriteBatch(rows=[row(i) for i in range(1, n + 1)])) == 0
        [stream] = store.state().streams
        assert (stream.received, stream.duplicates) == (n, n)

    def test_gaps_are_per_epoch_across_devices(self, opener: Opener) -> None:
        store = opener()
        rows = [row(1, "a"), row(2, "b"), row(5, "a"), row(9, "b"), row(3, "a", "e2")]
        store.write(WriteBatch(rows=rows))
        state = store.state()
        assert state.gaps == {"e1": [(3, 4), (6, 8)]}
        assert [(s.device, s.epoch, s.received) for s in state.streams] == [
            ("a", "e1", 2),
            ("b", "e1", 2),
            ("a", "e2", 1),
        ]

    def test_latest_snapshot_per_epoch_and_undecodable_kept(self, opener: Opener) -> None:
        store = opener()
        store.write(WriteBatch(snapshots=[Snapshot("a", "e1", {"overflow": 1}, 0)]))
        store.write(
            WriteBatch(
                snapshots=[Snapshot("a", "e1", {"overflow": 3, "purged": 1}, 2)],
                undecodable=[Undecodable("p/a/s/m", "not JSON", b"\xff\x00")],
            )
        )
        state = store.state()
        assert state.snapshots == {"e1": Snapshot("a", "e1", {"overflow": 3, "purged": 1}, 2)}
        assert state.undecodable == 1

    def test_a_failed_write_stores_nothing(self, opener: Opener) -> None:
        store = opener()
        broken = row(2)
        object.__setattr__(broken, "sensor", None)  # violates NOT NULL inside the transaction
        with pytest.raises(StoreRefusedError, match="write refused"):
            store.write(WriteBatch(rows=[row(1), broken], snapshots=[Snapshot("a", "e1", {}, 0)]))
        assert store.write(WriteBatch(rows=[row(1)])) == 1
        state = store.state()
        assert state.snapshots == {}
        assert state.streams[0].duplicates == 0

    def test_state_survives_reopening(self, opener: Opener) -> None:
        store = opener()
        snap = Snapshot("edge-01", "e1", {}, 2)
        store.write(WriteBatch(rows=[row(1), row(4)], snapshots=[snap]))
        store.close()
        reopened = opener()
        assert reopened.write(WriteBatch(rows=[row(1)])) == 0
        [report] = completeness(reopened.state())
        assert (report.received, report.duplicates, report.missing, report.unexplained) == (
            2,
            1,
            2,
            0,
        )

    @pytest.mark.parametrize(
        ("field", "value"),
        [("seq", 2**64), ("seq", 2**63), ("unit", "a\x00b"), ("epoch", "e\x00"), ("ts_us", 2**64)],
    )
    def test_a_value_the_database_cannot_hold_is_refused_not_stored(
        self, opener: Opener, field: str, value: object
    ) -> None:
        store = opener()
        bad = row(2)
        object.__setattr__(bad, field, value)
        try:
            store.write(WriteBatch(rows=[row(1), bad]))
        except StoreRefusedError as exc:
            assert "write refused" in str(exc)
            refused = True
        else:
            refused = False
        # SQLite holds NUL in text; PostgreSQL refuses it. Neither holds 2^63 in a BIGINT.
        postgres = isinstance(store, PostgresStore)
        assert refused == (field in ("seq", "ts_us") or postgres)
        assert store.write(WriteBatch(rows=[row(1)])) == int(refused)  # the connection works

    def test_the_quarantine_keeps_the_newest_and_the_first_bytes(self, opener: Opener) -> None:
        store = opener()
        store.quarantine_max = 3
        for i in range(5):
            bad = Undecodable(f"p/a\x00/{i}", f"reason {i}\x00", bytes([i]) * 5000)
            store.write(WriteBatch(undecodable=[bad]))
        assert store.state().undecodable == 3
        cur = store.conn.cursor()
        cur.execute("SELECT topic, reason, size, payload FROM ingest_quarantine ORDER BY id")
        kept = [(t, r, n, bytes(p)) for t, r, n, p in cur.fetchall()]
        store.conn.rollback()
        assert kept == [(f"p/a?/{i}", f"reason {i}?", 5000, bytes([i]) * 1024) for i in (2, 3, 4)]

    def test_a_snapshot_cannot_take_over_another_devices_epoch(self, opener: Opener) -> None:
        store = opener()
        store.write(WriteBatch(rows=[row(1), row(5)], snapshots=[Snapshot("edge-01", "e1", {}, 0)]))
        store.write(WriteBatch(snapshots=[Snapshot("rogue", "e1", {"overflow": 3}, 0)]))
        store.write(WriteBatch(snapshots=[Snapshot("rogue", "e9", {"overflow": 3}, 0)]))
        state = store.state()
        assert state.snapshots["e1"] == Snapshot("edge-01", "e1", {}, 0)
        [report] = completeness(state)  # e9 has no readings of "rogue": explains nothing
        assert (report.epoch, report.missing, report.unexplained) == ("e1", 3, 3)

    def test_state_rereads_only_the_epochs_written_since(self, opener: Opener) -> None:
        store = opener()
        store.write(WriteBatch(rows=[row(1), row(2, epoch="e2")]))
        assert len(store.state().streams) == 2
        other = opener()  # another writer: its rows are not this store's to re-read
        other.write(WriteBatch(rows=[row(3)]))
        store.write(WriteBatch(rows=[row(5, epoch="e2")]))
        counts = {s.epoch: (s.received, s.last_seq) for s in store.state().streams}
        assert counts == {"e1": (1, 1), "e2": (2, 5)}  # e1 was not rescanned
        assert store.state().gaps == {"e2": [(3, 4)]}
        fresh = {s.epoch: (s.received, s.last_seq) for s in opener().state().streams}
        assert fresh == {"e1": (2, 3), "e2": (2, 5)}


def test_postgres_url_password_is_never_shown() -> None:
    assert redact_url("postgresql://ingest:s3cret@db.example:5432/tele") == (
        "postgresql://ingest:********@db.example:5432/tele"
    )
    with pytest.raises(StoreError) as err:
        open_store("postgresql://ingest:s3cret@127.0.0.1:1/tele")
    assert "s3cret" not in str(err.value)
    assert "postgresql://ingest:********@127.0.0.1:1/tele" in str(err.value)


def test_missing_psycopg_is_a_config_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys  # noqa: PLC0415

    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes `import psycopg` fail
    with pytest.raises(ConfigError) as err:
        open_store("postgresql://127.0.0.1/x")
    assert err.value.problems == [
        (
            "ingest.db",
            "PostgreSQL needs psycopg, which is not installed: pip install 'mqttspool[postgres]'",
        )
    ]
