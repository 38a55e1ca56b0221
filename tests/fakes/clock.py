"""Fake clocks for tests and benchmarks: time moves only when told to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeClock:
    """A clock for tests: time moves only when told to."""

    wall: int = 1_790_000_000_000_000
    mono: int = 1_000_000_000
    boot: str = "fake-boot"

    def wall_us(self) -> int:
        """The fake wall time."""
        return self.wall

    def mono_ns(self) -> int:
        """The fake monotonic time."""
        return self.mono

    def boot_id(self) -> str:
        """The fake boot id."""
        return self.boot

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds``."""
        self.wall += int(seconds * 1_000_000)
        self.mono += int(seconds * 1_000_000_000)


@dataclass
class FakeClockSync:
    """A clock-sync check for tests: flip ``synced``."""

    synced: bool = False
    calls: int = 0

    def is_synchronized(self) -> bool:
        """The value of ``synced``."""
        self.calls += 1
        return self.synced
