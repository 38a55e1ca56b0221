"""Clock-sync detection: marker file, adjtimex state, fake."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes.clock import FakeClockSync

from mqttspool import timekeeping
from mqttspool.timekeeping import SystemClockSync, adjtimex_state, clock_is_synchronized


def test_adjtimex_reports_a_kernel_state() -> None:
    state = adjtimex_state()
    assert state in (0, 1, 2, 3, 4, 5)  # TIME_OK .. TIME_ERROR on Linux


def test_marker_file_means_synchronized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "synchronized"
    monkeypatch.setattr(timekeeping, "adjtimex_state", lambda: 5)
    sync = SystemClockSync(marker)
    assert sync.is_synchronized() is False
    marker.touch()
    assert sync.is_synchronized() is True


@pytest.mark.parametrize(("state", "synced"), [(0, True), (1, True), (4, True), (5, False)])
def test_adjtimex_time_error_means_unsynchronized(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: int, synced: bool
) -> None:
    monkeypatch.setattr(timekeeping, "adjtimex_state", lambda: state)
    assert SystemClockSync(tmp_path / "absent").is_synchronized() is synced


def test_no_source_assumes_synchronized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timekeeping, "adjtimex_state", lambda: None)
    assert SystemClockSync(tmp_path / "absent").is_synchronized() is True


def test_fake_clock_sync_flips() -> None:
    sync = FakeClockSync()
    assert sync.is_synchronized() is False
    sync.synced = True
    assert sync.is_synchronized() is True
    assert sync.calls == 2


@pytest.mark.parametrize(
    ("marker_exists", "state", "synced"),
    [(False, 5, False), (False, 0, True), (False, None, True), (True, 5, True)],
)
def test_the_one_rule_takes_its_sources_as_parameters(
    tmp_path: Path, marker_exists: bool, state: int | None, synced: bool
) -> None:
    marker = tmp_path / "synchronized"
    if marker_exists:
        marker.touch()
    assert clock_is_synchronized(marker, kernel_state=lambda: state) is synced


def test_system_clock_sync_and_the_rule_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sampler's SystemClockSync and enqueue's default call read the same sources."""
    monkeypatch.setattr(timekeeping, "SYNC_MARKER_PATH", tmp_path / "synchronized")
    monkeypatch.setattr(timekeeping, "adjtimex_state", lambda: 5)
    assert SystemClockSync().is_synchronized() is clock_is_synchronized() is False
    (tmp_path / "synchronized").touch()
    assert SystemClockSync().is_synchronized() is clock_is_synchronized() is True
