"""``watch``'s loop sleeps until a message, a status line, the deadline or a stop arrives."""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pytest

from mqttspool.cli.runtime import MAX_WAIT_S, _WatchPrinter
from mqttspool.config import BrokerConfig
from mqttspool.mqtt import Received, Subscriber
from mqttspool.watch import WatchTracker


def _subscriber() -> Subscriber:
    # Never started: nothing connects.
    return Subscriber(BrokerConfig(host="127.0.0.1", port=1), "watch-test", "t/#")


def test_a_subscriber_wakes_its_loop_on_every_message_and_status_line() -> None:
    sub = _subscriber()
    woken: list[str] = []
    sub.messages.on_put = lambda: woken.append("message")
    sub.status.on_put = lambda: woken.append("status")
    msg = mqtt.MQTTMessage(topic=b"t/x")
    msg.payload = b"hello"
    sub._on_message(sub._client, None, msg)
    sub.status.put("connected")
    assert woken == ["message", "status"]
    assert sub.messages.get_nowait().payload == b"hello"


def test_watch_sleeps_until_the_deadline_and_ends_there(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sub = _subscriber()
    printer = _WatchPrinter(sub, "t", WatchTracker(), as_json=False, deadline=110.0)
    sub.status.put("connected to 127.0.0.1:1")
    assert printer.step(100.0) == pytest.approx(10.0)  # not a 0.2 s poll
    assert capsys.readouterr().err == "# connected to 127.0.0.1:1\n"
    assert printer.step(110.0) is None


def test_watch_without_a_timeout_waits_for_arrivals_only() -> None:
    printer = _WatchPrinter(_subscriber(), "t", WatchTracker(), as_json=False, deadline=None)
    assert printer.step(100.0) == MAX_WAIT_S


def test_a_flood_of_messages_is_printed_in_bursts_so_a_stop_is_seen(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sub = _subscriber()
    printer = _WatchPrinter(sub, "t", WatchTracker(), as_json=False, deadline=None)
    for i in range(printer.BURST + 1):
        sub.messages.put(Received(f"t/status{i}", b"x", retain=False))
    assert printer.step(100.0) == 0.0  # more queued: the runner checks for a stop, steps again
    assert printer.step(100.0) == MAX_WAIT_S
    assert len(capsys.readouterr().out.splitlines()) == printer.BURST + 1


def test_after_a_stop_watch_prints_what_had_already_arrived(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sub = _subscriber()
    printer = _WatchPrinter(sub, "t", WatchTracker(), as_json=False, deadline=None)
    for i in range(3):
        sub.messages.put(Received(f"t/status{i}", b"x", retain=False))
    printer.flush()
    assert capsys.readouterr().out.splitlines() == [f"# t/status{i}: x" for i in range(3)]
