"""A spool file deleted or replaced under a running daemon is detected."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fakes.clock import FakeClock

from mqttspool.config import SpoolConfig
from mqttspool.errors import SpoolError, SpoolGoneError
from mqttspool.reading import Reading
from mqttspool.spool import Spool, open_spool
from mqttspool.spool import identity as spool_identity


def _reading(i: int) -> Reading:
    return Reading(
        device="d",
        sensor="s",
        metric="m",
        value=float(i),
        ts=datetime(2026, 11, 26, tzinfo=UTC),
        time_synced=True,
    )


def _open(tmp_path: Path) -> Spool:
    return open_spool(SpoolConfig(path=str(tmp_path / "spool.db"), min_free_bytes=0), FakeClock())


def test_a_deleted_file_is_reported_with_what_it_still_holds(tmp_path: Path) -> None:
    s = _open(tmp_path)
    s.append([_reading(i) for i in range(5)])
    s.check_file()  # still there: nothing happens
    s.path.unlink()
    with pytest.raises(SpoolGoneError) as info:
        s.check_file()
    assert info.value.path == s.path
    assert info.value.stranded == 5
    assert str(info.value) == (
        f"spool {s.path}: was deleted while open; 5 queued reading(s) remain in the unlinked"
        " file and will not be delivered. Stop mqttspool, restore the file if you can"
        " (e.g. from /proc/<pid>/fd while it runs), then start it again"
    )
    s.close()


def test_a_thread_without_a_connection_counts_nothing_and_creates_no_file(
    tmp_path: Path,
) -> None:
    """The check from a thread that never opened the spool (peewee's connections are per
    thread) must not open the deleted path, which would create an empty spool there."""
    s = _open(tmp_path)
    s.append([_reading(i) for i in range(2)])
    s.path.unlink()
    errors: list[SpoolGoneError] = []

    def check() -> None:
        try:
            s.check_file()
        except SpoolGoneError as exc:
            errors.append(exc)

    worker = threading.Thread(target=check)
    worker.start()
    worker.join(10)
    [error] = errors
    assert error.stranded is None
    assert "an unknown number of queued reading(s)" in str(error)
    assert not s.path.exists()
    s.close()


def test_append_and_settle_check_on_a_timer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = _open(tmp_path)
    seqs = s.append([_reading(i) for i in range(3)]).seqs
    s.path.unlink()
    s.append([_reading(3)])  # the check is due only every FILE_CHECK_S
    monkeypatch.setattr(spool_identity, "FILE_CHECK_S", 0.0)
    with pytest.raises(SpoolGoneError) as info:
        s.append([_reading(4)])
    assert info.value.stranded == 4
    with pytest.raises(SpoolGoneError):
        s.settle(seqs)
    monkeypatch.setattr(spool_identity, "FILE_CHECK_S", 1e9)
    with pytest.raises(SpoolGoneError):  # sticky: a retry does not write on
        s.settle(seqs)
    assert s.depth() == 4
    s.close()


def test_a_replaced_file_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = _open(tmp_path)
    s.append([_reading(1)])
    s.path.unlink()
    fresh = _open(tmp_path)  # e.g. `mqttspool enqueue` created a new spool at the path
    fresh.append([_reading(2)])
    fresh.close()
    monkeypatch.setattr(spool_identity, "FILE_CHECK_S", 0.0)
    with pytest.raises(
        SpoolGoneError, match="was replaced by another file while open; an unknown number of queued"
    ):
        s.settle([1])
    s.close()


def test_a_database_error_on_a_deleted_file_says_it_was_deleted(tmp_path: Path) -> None:
    s = _open(tmp_path)
    s.append([_reading(1)])
    real = s.db

    class Broken:
        def is_closed(self) -> bool:
            return False

        def execute_sql(self, *args: object) -> object:
            raise sqlite3.OperationalError("disk I/O error")

    s.path.unlink()
    s.db = Broken()
    with pytest.raises(SpoolGoneError) as info:
        s.depth()
    assert isinstance(info.value, SpoolError)
    assert info.value.stranded is None  # the count itself failed
    s.db = real
    s.close()
