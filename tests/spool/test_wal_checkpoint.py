"""The WAL checkpoint threshold is counted in the spool file's real pages.

Every checkpoint costs a pair of fsyncs; a threshold in 4 KiB pages applied to a
spool of 512-byte pages made the drain checkpoint eight times as often.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mqttspool.config import SpoolConfig
from mqttspool.spool import open_spool, schema
from mqttspool.spool.headroom import (
    RESERVE_BYTES,
    WAL_FRAME_HEADER,
    WAL_MAX_BYTES,
    Reserve,
    wal_pages,
)


@pytest.mark.parametrize("page_size", [512, 1024, 4096, 65536])
def test_the_wal_budget_in_bytes_does_not_depend_on_the_page_size(page_size: int) -> None:
    frame = page_size + WAL_FRAME_HEADER
    pages = wal_pages(RESERVE_BYTES, page_size)
    assert pages * frame <= WAL_MAX_BYTES < (pages + 1) * frame


def test_small_pages_get_proportionally_more_of_them() -> None:
    assert wal_pages(RESERVE_BYTES, 512) == WAL_MAX_BYTES // 536 == 7641
    assert wal_pages(RESERVE_BYTES, 4096) == WAL_MAX_BYTES // 4120 == 994


@pytest.mark.parametrize("page_size", [512, 4096])
def test_the_wal_stays_within_half_a_small_reserve(page_size: int) -> None:
    reserve = 1 << 20
    pages = wal_pages(reserve, page_size)
    assert pages * (page_size + WAL_FRAME_HEADER) <= reserve // 2
    assert (pages + 1) * (page_size + WAL_FRAME_HEADER) > reserve // 2


def _autocheckpoint(path: Path) -> int:
    spool = open_spool(SpoolConfig(path=str(path)))
    try:
        return int(spool.db.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0])
    finally:
        spool.close()


def test_a_new_spool_checkpoints_by_its_own_small_pages(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    pages = _autocheckpoint(path)
    assert schema.page_size(path) == schema.PAGE_SIZE == 512
    assert pages == wal_pages(Reserve(path).size, 512)


def test_a_spool_with_4k_pages_keeps_its_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    monkeypatch.setattr(schema, "PAGE_SIZE", 4096)  # as spools were created before 512
    open_spool(SpoolConfig(path=str(path))).close()
    monkeypatch.undo()
    pages = _autocheckpoint(path)
    assert schema.page_size(path) == 4096
    assert pages == wal_pages(Reserve(path).size, 4096)
