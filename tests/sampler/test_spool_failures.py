"""A sampling round lost to SpoolCorruptError is counted after salvage,
and a spool file that vanished stops the sampler instead of being written on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from fakes.clock import FakeClock, FakeClockSync
from support.spooltools import read_meta

from mqttspool.config import SpoolConfig
from mqttspool.counters import Counters
from mqttspool.errors import SpoolCorruptError, SpoolGoneError
from mqttspool.reading import Reading
from mqttspool.sampler import Sampler, SamplerThread
from mqttspool.sensors.base import BaseSensor, Measurement
from mqttspool.spool import AppendResult, Spool, open_spool, recover_spool


class ThreeValues(BaseSensor):
    """One sensor that returns three measurements per round."""

    def read(self) -> list[Measurement]:
        return [Measurement(m, 1.0, "u") for m in ("a", "b", "c")]


class FailingSpool(Spool):
    """The real spool, except that append raises ``error`` (SQLite found the file corrupt)."""

    error: Exception

    def append(
        self, readings: Sequence[Reading], clock_stamped: bool | Sequence[bool] = False
    ) -> AppendResult:
        raise self.error


def _failing(tmp_path: Path, error: Exception) -> FailingSpool:
    cfg = SpoolConfig(path=str(tmp_path / "spool.db"), min_free_bytes=0)
    real = open_spool(cfg, FakeClock())
    real.close()
    spool = FailingSpool(real.path, cfg, FakeClock(), real.epoch)
    spool.error = error
    return spool


def _sampler(spool: Spool) -> Sampler:
    clock = FakeClock()
    return Sampler(
        [ThreeValues("sim", 10)], "edge-01", spool, Counters(), clock, FakeClockSync(True)
    )


def test_a_round_lost_to_corruption_is_counted_by_the_salvage(tmp_path: Path) -> None:
    spool = _failing(tmp_path, SpoolCorruptError(tmp_path / "spool.db", "malformed"))
    thread = SamplerThread(_sampler(spool))
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(thread.error, SpoolCorruptError)

    recovered = recover_spool(spool.config, FakeClock())  # what the service does next
    try:
        assert recovered.stats().dropped == {"corrupt": 3}
    finally:
        recovered.close()
    again = recover_spool(spool.config, FakeClock())  # counted once, not at every salvage
    try:
        assert again.stats().dropped == {"corrupt": 3}
    finally:
        again.close()


def test_a_vanished_spool_stops_the_sampler(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = _failing(tmp_path, SpoolGoneError(path, "was deleted while open", 7))
    thread = SamplerThread(_sampler(spool))
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(thread.error, SpoolGoneError)
    assert thread.error.stranded == 7
    assert read_meta(spool, "dropped.spool_error") is None  # not written on as if it were fine


@pytest.fixture(autouse=True)
def _no_leftover_counts(tmp_path: Path) -> None:
    """Each test starts with nothing noted for its path (the note is process-wide)."""
    from mqttspool.spool.salvage import _take_lost_to_corruption  # noqa: PLC0415

    _take_lost_to_corruption(tmp_path / "spool.db")
