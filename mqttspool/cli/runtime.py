"""Subcommands that need the broker, sensors or the daemon: run, drain, watch, health.

Handlers import their heavy modules lazily so ``mqttspool health`` (run by
Docker every few seconds) stays cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mqttspool.config import Settings
    from mqttspool.mqtt import Received, Subscriber
    from mqttspool.service import DrainResult
    from mqttspool.watch import WatchTracker

MAX_WAIT_S = 3600.0  # watch without --timeout: nothing is due, only arrivals wake it
Handler = Callable[[argparse.Namespace, "Settings"], int]
Add = Callable[[str, Handler, str], argparse.ArgumentParser]


def register(add: Add) -> None:
    """Add the runtime subcommands to the parser."""
    add("run", exclusive(cmd_run), "sample sensors and forward the spool until SIGTERM")
    p = add(
        "drain",
        existing_spool(exclusive(cmd_drain)),
        "publish the backlog and exit when the spool is empty",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="give up after S s (default: reconnect until empty, but give up on a broker"
        " not reached in the first 30 s)",
    )
    p = add("watch", cmd_watch, "subscribe and print readings, flagging duplicates and gaps")
    p.add_argument("--topic", default=None, metavar="T", help="filter (default: {prefix}/#)")
    p.add_argument("--json", action="store_true", help="one JSON object per reading")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="stop after S s")
    add("health", cmd_health, "exit 0 while the daemon runs and is healthy")
    from mqttspool.ingest import cli as ingest_cli  # noqa: PLC0415
    from mqttspool.sensors import cli as sensors_cli  # noqa: PLC0415

    sensors_cli.register(add)
    ingest_cli.register(add)


def exclusive(handler: Handler) -> Handler:
    """``handler`` run while holding the spool's single-instance lock (``run``, ``drain``)."""

    def locked(args: argparse.Namespace, settings: Settings) -> int:
        from mqttspool.spool.ownership import SpoolLock  # noqa: PLC0415

        with SpoolLock(settings.spool.path):
            return handler(args, settings)

    return locked


def require_spool(path: str) -> None:
    """Raise SpoolError unless a spool exists at ``path`` (nothing is created).

    A spool whose salvage a power cut interrupted counts as existing: its file
    may be missing until ``run`` or ``drain`` finishes the salvage (``<path>.salvage``).
    """
    from mqttspool.errors import SpoolError  # noqa: PLC0415
    from mqttspool.spool import classify_file  # noqa: PLC0415
    from mqttspool.spool.salvage import intent_path  # noqa: PLC0415

    spool = Path(path)
    if classify_file(spool) == "missing" and not intent_path(spool).exists():
        raise SpoolError(
            path, "no spool here (missing file); nothing was created. Check spool.path"
        )


def existing_spool(handler: Handler) -> Handler:
    """``handler`` run only on a spool that exists: a typo'd path must not start a new one."""

    def checked(args: argparse.Namespace, settings: Settings) -> int:
        require_spool(settings.spool.path)
        return handler(args, settings)

    return checked


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """``mqttspool run``."""
    from mqttspool.service import Service  # noqa: PLC0415 - lazy, see module doc

    return Service(settings).run()


def cmd_drain(args: argparse.Namespace, settings: Settings) -> int:
    """``mqttspool drain [--timeout S]``: 0 when empty; 1 on timeout, interruption, dead letters.

    SIGINT and SIGTERM (SIGINT too when it was inherited as ignored, as with a
    shell's ``cmd &``) stop it gracefully: what is acknowledged is settled and it
    says how far it got.
    """
    from mqttspool.runner import StopRequest  # noqa: PLC0415
    from mqttspool.service import drain  # noqa: PLC0415

    stop = StopRequest()  # wakes the drain loop at once, not on its next timer
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    result = drain(settings, args.timeout, stop=stop)
    dead = ""
    if result.dead_lettered:
        dead = (
            f", {result.dead_lettered} rejected by the broker and moved to the dead-letter"
            " table (see `mqttspool dead-letters list`)"
        )
    if result.remaining == 0 and not result.dead_lettered:
        if not result.sent and not result.connected:
            print(f"nothing to drain: spool {settings.spool.path} is empty")
        else:
            print(f"drained: {result.sent} reading(s) published, spool empty")
        return 0
    if result.remaining == 0:
        print(f"drained with rejections: {result.sent} published{dead}", file=sys.stderr)
        return 1
    remain = "remain" if result.interrupted else "reading(s) remain"
    why = _why_stopped(args, settings, result)
    print(f"{why}: {result.sent} published{dead}, {result.remaining} {remain}", file=sys.stderr)
    return 1


def _why_stopped(args: argparse.Namespace, settings: Settings, result: DrainResult) -> str:
    broker = settings.broker.address()
    if result.interrupted:
        return "interrupted"
    reason = f": {result.last_failure}" if result.last_failure else ""
    if result.connected:
        return f"drain timed out after {args.timeout:g} s (broker {broker}{reason})"
    from mqttspool.service import DRAIN_CONNECT_S  # noqa: PLC0415

    waited = DRAIN_CONNECT_S if args.timeout is None else args.timeout
    return f"drain gave up: broker {broker} not reached in {waited:g} s{reason}"


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    """``mqttspool health``: 0 healthy, 1 not (the rules: :mod:`mqttspool.health`)."""
    from mqttspool.health import check_health  # noqa: PLC0415

    health = check_health(settings.spool.path)
    print(("healthy: " if health.ok else "unhealthy: ") + health.reason)
    return 0 if health.ok else 1


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    """``mqttspool watch``: print readings until Ctrl-C (or --timeout), then a summary."""
    from mqttspool.mqtt import Subscriber  # noqa: PLC0415
    from mqttspool.runner import ErrorPolicy, Runner, StopRequest  # noqa: PLC0415
    from mqttspool.watch import WatchTracker  # noqa: PLC0415

    topic = args.topic or f"{settings.topics.prefix}/#"
    client_id = f"mqttspool-watch-{settings.device.id}-{os.getpid()}"
    sub = Subscriber(settings.broker, client_id, topic)
    tracker = WatchTracker()
    # A stop request, not KeyboardInterrupt: SIGINT may arrive ignored (a shell's
    # `cmd &`, some init systems), and an exception raised inside print() or paho's
    # calls is not a clean way to stop.
    stop = StopRequest()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    printer = _WatchPrinter(sub, settings.topics.prefix, tracker, args.json, deadline)
    # Asleep until a message, a status line or the stop request arrives (or --timeout).
    runner = Runner("watch", printer.step, ErrorPolicy(propagate=True), stop=stop)
    sub.messages.on_put = sub.status.on_put = runner.wake
    sub.start()
    try:
        runner.run()
    finally:
        sub.stop()
    printer.flush()  # what paho received before the disconnect (a stop ends the wait at once)
    _print_summary(tracker.summary(), args.json)
    return 0


class _WatchPrinter:
    """``watch``'s step: print what arrived; end at the deadline."""

    BURST = 1000  # messages per step, so a flood cannot delay a stop request

    def __init__(
        self,
        sub: Subscriber,
        prefix: str,
        tracker: WatchTracker,
        as_json: bool,
        deadline: float | None,
    ) -> None:
        self.sub, self.prefix, self.tracker = sub, prefix, tracker
        self.as_json, self.deadline = as_json, deadline

    def step(self, now: float) -> float | None:
        """Print status lines and messages; seconds until the deadline (None: reached)."""
        if self._print(self.BURST) == self.BURST:
            return 0.0  # more may be queued: step again at once
        if self.deadline is None:
            return MAX_WAIT_S
        return None if now >= self.deadline else self.deadline - now

    def flush(self) -> None:
        """After the end: print what had arrived (a stop ends the wait, not the output)."""
        self._print(self.sub.messages.qsize())

    def _print(self, limit: int) -> int:
        """Print the status lines and up to ``limit`` messages; how many were printed."""
        _print_status(self.sub.status)
        for done in range(limit):
            try:
                msg = self.sub.messages.get_nowait()
            except queue.Empty:
                return done
            _print_message(msg, self.prefix, self.tracker, self.as_json)
        return limit


def _print_message(msg: Received, prefix: str, tracker: WatchTracker, as_json: bool) -> None:
    from mqttspool.errors import ReadingError  # noqa: PLC0415
    from mqttspool.watch import format_observation, observation_json  # noqa: PLC0415
    from mqttspool.wire import TopicKind, classify_topic, decode  # noqa: PLC0415

    if classify_topic(msg.topic, prefix) not in (TopicKind.READING, TopicKind.BATCH):
        # Status, spool snapshot, Home Assistant state: shown as they are.
        print(f"# {msg.topic}: {msg.payload[:500].decode(errors='replace')}", flush=True)
        return
    try:
        decoded = decode(msg.topic, msg.payload, prefix)
    except ReadingError as exc:
        tracker.invalid += 1
        print(f"# {msg.topic}: not a valid message: {exc}", file=sys.stderr)
        return
    if decoded.kind is TopicKind.BATCH:
        print(f"# {msg.topic}: batch of {len(decoded.readings)} reading(s)", flush=True)
    for obs in tracker.account(decoded.readings):
        print(observation_json(obs) if as_json else format_observation(obs), flush=True)


def _print_status(status: queue.SimpleQueue[str]) -> None:
    while True:
        try:
            print(f"# {status.get_nowait()}", file=sys.stderr, flush=True)
        except queue.Empty:
            return


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"summary": summary}), flush=True)
        return
    print(
        f"# summary: {summary['received']} received, {summary['duplicates']} duplicate(s),"
        f" {summary['invalid']} invalid",
        file=sys.stderr,
    )
    for epoch, st in summary["epochs"].items():
        print(
            f"#   epoch {epoch} ({', '.join(st['devices'])}): {st['unique']} unique,"
            f" seq {st['first_seq']}..{st['last_seq']},"
            f" {st['missing']} missing {st['missing_ranges'] or ''}",
            file=sys.stderr,
        )
