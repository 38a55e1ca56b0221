"""The one loop runner: waits, wake-ups, stop requests and the error policy (fake clock)."""

from __future__ import annotations

import logging
import threading

import pytest

from mqttspool.runner import ErrorPolicy, Runner, StopRequest, Wakeup, WakingQueue


class FakeTime:
    """A clock that advances only when the loop waits; records every wait."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def wait(self, timeout: float) -> None:
        self.waits.append(timeout)
        self.now += timeout


def test_the_loop_waits_exactly_the_delay_each_step_returned() -> None:
    t = FakeTime()
    delays = iter([2.5, 0.0, 7.0, None])
    seen: list[float] = []

    def step(now: float) -> float | None:
        seen.append(now)
        return next(delays)

    runner = Runner("test", step, wait=t.wait, clock=t.clock)
    runner.run()
    assert t.waits == [2.5, 0.0, 7.0]
    assert seen == [100.0, 102.5, 102.5, 109.5]  # each step gets the time after the wait
    assert runner.steps == 4
    assert runner.error is None


def test_a_wait_is_capped_by_max_wait_and_never_negative() -> None:
    t = FakeTime()
    delays = iter([1e9, -3.0, None])
    runner = Runner("test", lambda now: next(delays), wait=t.wait, clock=t.clock, max_wait=60.0)
    runner.run()
    assert t.waits == [60.0, 0.0]


def test_a_wake_up_ends_the_wait_early() -> None:
    stepped = threading.Semaphore(0)

    def step(now: float) -> float:
        stepped.release()
        return 3600.0

    runner = Runner("test", step)
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        assert stepped.acquire(timeout=5)  # first step, then a one-hour wait
        runner.wake()
        assert stepped.acquire(timeout=5)  # the wake-up ended the wait: a second step
    finally:
        runner.stop()
        thread.join(5)
    assert not thread.is_alive()


def test_a_wake_that_arrives_during_the_step_is_not_lost() -> None:
    wakeup = Wakeup()
    calls = []

    def step(now: float) -> float | None:
        calls.append(now)
        if len(calls) == 1:
            wakeup.wake()  # e.g. a PUBACK arrives while the step runs
            return 3600.0
        return None

    done = threading.Event()
    runner = Runner("test", step, wait=wakeup.wait, wake=wakeup.wake, finish=done.set)
    thread = threading.Thread(target=runner.run)
    thread.start()
    assert done.wait(5)  # the wait returned at once instead of after an hour
    thread.join(5)
    assert len(calls) == 2


def test_a_stop_request_ends_the_wait_and_the_loop_then_finish_and_close_run() -> None:
    stepped = threading.Event()
    order: list[str] = []

    def step(now: float) -> float:
        stepped.set()
        return 3600.0

    runner = Runner(
        "test",
        step,
        finish=lambda: order.append("finish"),
        close=lambda: order.append("close"),
    )
    thread = threading.Thread(target=runner.run)
    thread.start()
    assert stepped.wait(5)
    runner.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert runner.steps == 1
    assert order == ["finish", "close"]


def test_a_stop_requested_before_the_start_runs_no_step() -> None:
    stop = StopRequest()
    stop.set()
    runner = Runner("test", lambda now: pytest.fail("stepped"), stop=stop)
    runner.run()
    assert runner.steps == 0


def test_one_stop_request_wakes_every_loop_sharing_it() -> None:
    stop = StopRequest()
    runners = [Runner(f"r{i}", lambda now: 3600.0, stop=stop) for i in range(2)]
    threads = [threading.Thread(target=r.run) for r in runners]
    for thread in threads:
        thread.start()
    stop.set()
    for thread in threads:
        thread.join(5)
    assert [t.is_alive() for t in threads] == [False, False]


def test_a_retried_error_is_counted_logged_once_per_interval_and_waits_retry_s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = FakeTime()
    outcomes: list[object] = [ValueError("a"), ValueError("b"), ValueError("c"), 5.0, None]

    def step(now: float) -> float | None:
        got = outcomes.pop(0)
        if isinstance(got, Exception):
            raise got
        return got  # type: ignore[return-value]

    policy = ErrorPolicy(retry_s=1.0, log_interval_s=60.0)
    runner = Runner("sampling", step, policy, wait=t.wait, clock=t.clock)
    with caplog.at_level(logging.ERROR, logger="mqttspool.runner"):
        runner.run()
    assert t.waits == [1.0, 1.0, 1.0, 5.0]
    assert (runner.failures, runner.steps, runner.error) == (3, 2, None)
    assert [r.getMessage() for r in caplog.records] == [
        "sampling failed (1 time(s) since the last message); retrying in 1s"
    ]


def test_a_fatal_error_ends_the_loop_recorded_for_the_supervisor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class GoneError(Exception):
        pass

    t = FakeTime()
    closed = []
    finished = []
    outcomes: list[object] = [ValueError("retried"), GoneError("spool /x was deleted")]

    def step(now: float) -> float | None:
        raise outcomes.pop(0)  # type: ignore[misc]

    policy = ErrorPolicy(fatal=(GoneError,), retry_s=0.5, expected=(GoneError,))
    runner = Runner(
        "bridge",
        step,
        policy,
        wait=t.wait,
        clock=t.clock,
        finish=lambda: finished.append(1),
        close=lambda: closed.append(1),
    )
    with caplog.at_level(logging.ERROR, logger="mqttspool.runner"):
        runner.run()
    assert isinstance(runner.error, GoneError)
    assert (runner.failures, t.waits, finished, closed) == (1, [0.5], [], [1])
    assert caplog.records[-1].getMessage() == "bridge stopped: spool /x was deleted"


def test_without_retry_every_error_is_fatal_and_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = Runner("bridge", lambda now: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="mqttspool.runner"):
        runner.run()
    assert isinstance(runner.error, ZeroDivisionError)
    assert caplog.records[-1].getMessage() == "bridge stopped by an unexpected error"
    assert caplog.records[-1].exc_info is not None


def test_an_error_in_finish_is_recorded_and_close_still_runs() -> None:
    closed = []

    def finish() -> None:
        raise KeyError("missing")

    runner = Runner(
        "bridge",
        lambda now: None,
        finish=finish,
        close=lambda: closed.append(1),
    )
    runner.run()
    assert isinstance(runner.error, KeyError)
    assert closed == [1]


def test_a_propagating_policy_raises_the_fatal_error_to_the_caller() -> None:
    closed = []
    runner = Runner(
        "drain",
        lambda now: 1 / 0,
        ErrorPolicy(propagate=True),
        close=lambda: closed.append(1),
    )
    with pytest.raises(ZeroDivisionError):
        runner.run()
    assert closed == [1]


def test_a_waking_queue_wakes_its_consumer_on_every_put() -> None:
    q: WakingQueue[str] = WakingQueue()
    woken = []
    q.on_put = lambda: woken.append(1)
    q.put("connected")
    q.put_nowait("subscribed")
    assert (q.get_nowait(), q.get_nowait(), len(woken)) == ("connected", "subscribed", 2)
