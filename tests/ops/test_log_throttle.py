"""The one log throttle: one line per key per interval, counting what it held back."""

from __future__ import annotations

from mqttspool.logthrottle import LogThrottle


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_event_logs_then_holds_back_until_the_interval_passed() -> None:
    clock = Ticks()
    throttle = LogThrottle(30.0, clock)
    assert throttle.note("disk_full", 5) == 5
    assert throttle.note("disk_full", 2) == 0
    clock.now += 29.9
    assert throttle.note("disk_full") == 0
    clock.now += 0.1
    assert throttle.note("disk_full") == 4  # 2 + 1 held back, plus this one


def test_keys_are_independent_and_reset_logs_at_once() -> None:
    clock = Ticks()
    throttle = LogThrottle(60.0, clock)
    assert throttle.note("tls") == 1
    assert throttle.note("network") == 1
    assert throttle.note("tls") == 0
    throttle.reset("tls")
    assert throttle.note("tls") == 1


def test_flush_returns_what_was_never_logged() -> None:
    throttle = LogThrottle(60.0, Ticks())
    throttle.note("x")
    throttle.note("x", 7)
    assert throttle.flush("x") == 7
    assert throttle.flush("x") == 0
