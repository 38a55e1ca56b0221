"""How often the spool reads the free space (statvfs): every second near the bound,
every ten seconds far above it, every second again once the disk was full."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from mqttspool.spool import diskfull, headroom
from mqttspool.spool.diskfull import (
    FREE_SPACE_CHECK_S,
    FREE_SPACE_MARGIN,
    FREE_SPACE_RELAXED_S,
    DiskGuard,
)

BOUND = 50 << 20


class Disk:
    """A fake statvfs and a fake monotonic clock."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.now = 1000.0
        self.reads = 0

    def free_bytes(self, directory: Path) -> int:
        self.reads += 1
        return self.free

    def reads_over(self, guard: DiskGuard, seconds: float, step: float = 0.5) -> int:
        """statvfs calls while ``guard.free_space(BOUND)`` is asked every ``step`` s."""
        before = self.reads
        end = self.now + seconds
        while self.now < end:
            guard.free_space(BOUND)
            self.now += step
        return self.reads - before


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Disk:
    fake = Disk(free=BOUND + 2 * FREE_SPACE_MARGIN)
    monkeypatch.setattr(diskfull, "free_bytes", fake.free_bytes)
    monkeypatch.setattr(diskfull, "time", SimpleNamespace(monotonic=lambda: fake.now))
    monkeypatch.setattr(headroom, "free_bytes", lambda directory: fake.free)  # not counted
    return fake


def _guard(tmp_path: Path) -> DiskGuard:
    guard = DiskGuard(tmp_path / "spool.db", db=None)
    assert guard.reserve.ensure()  # created: free space is below HOLD_BELOW_FREE
    return guard


def test_far_above_the_bound_free_space_is_read_every_ten_seconds(
    tmp_path: Path, disk: Disk
) -> None:
    guard = _guard(tmp_path)
    assert disk.reads_over(guard, 60) == 60 / FREE_SPACE_RELAXED_S


def test_near_the_bound_free_space_is_read_every_second(tmp_path: Path, disk: Disk) -> None:
    disk.free = BOUND + FREE_SPACE_MARGIN // 2
    guard = _guard(tmp_path)
    assert disk.reads_over(guard, 60) == 60 / FREE_SPACE_CHECK_S


def test_a_drop_towards_the_bound_is_seen_within_ten_seconds_then_watched_closely(
    tmp_path: Path, disk: Disk
) -> None:
    guard = _guard(tmp_path)
    assert guard.free_space(BOUND) == BOUND + 2 * FREE_SPACE_MARGIN
    disk.free = BOUND - 1  # another program filled the disk
    seen_after = 0.0
    while guard.free_space(BOUND) != BOUND - 1:
        disk.now += 0.5
        seen_after += 0.5
    assert seen_after <= FREE_SPACE_RELAXED_S
    # From the read that saw it: one a second (at +1 ... +9 s of the next 10 s).
    assert disk.reads_over(guard, 10) == 10 / FREE_SPACE_CHECK_S - 1


def test_while_the_disk_is_full_free_space_is_read_every_second(tmp_path: Path, disk: Disk) -> None:
    guard = DiskGuard(tmp_path / "spool.db", db=None, full=True)
    guard.reserve.size = 1 << 40  # it cannot be created again: the disk stays full
    assert disk.reads_over(guard, 10) == 10 / FREE_SPACE_CHECK_S
    assert guard.full
