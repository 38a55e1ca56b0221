"""The ``mqttspool`` command line (see DESIGN.md, Command line).

Exit codes: 0 success, 1 failure (or some input rejected), 2 configuration
error. Global options work before and after the subcommand.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mqttspool.cli import runtime
from mqttspool.errors import ConfigError, MqttspoolError
from mqttspool.logsetup import setup_logging
from mqttspool.settings_source import GLOBAL_OPTIONS

if TYPE_CHECKING:
    from mqttspool.cli.enqueue import EnqueueResult
    from mqttspool.config import Settings
    from mqttspool.spool import Spool

# Start-up cost: this module imports only the standard library and light
# mqttspool modules; pydantic (config, reading), peewee (spool) and paho are
# imported inside the handlers, so `mqttspool health` stays fast (see
# mqttspool/health.py). ruff: PLC0415 is expected in this file.

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_CONFIG = 2

Handler = Callable[[argparse.Namespace, "Settings"], int]

ENQUEUE_EXAMPLE = (
    """'{"sensor":"bme280","metric":"temperature","value":21.37,"unit":"°C","""
    """"ts":"2026-11-26T00:40:00Z"}'"""
)
ENQUEUE_FORMAT = f"""\
line format: one JSON object per line; "sensor", "metric" and "value" (a finite
number) are required; "unit" (at most 16 characters), "device" (default:
device.id), "ts" (ISO 8601 with a timezone; default: now) and "time_synced"
(default: this machine's clock sync state) are optional. Example:

  echo {ENQUEUE_EXAMPLE} | mqttspool enqueue

Bad lines are reported as "line N: reason" and the good ones stored
(exit 0: all stored, 1: some rejected)."""

# What each command uses beyond the settings tree (mqttspool.config.USES_*): load_config
# checks exactly that, before the command opens anything. Unlisted commands use everything.
_BROKER, _INGEST_METRICS = "broker", "ingest-metrics"
COMMAND_USES: dict[str, frozenset[str]] = {
    "enqueue": frozenset(),
    "status": frozenset(),
    "dead-letters": frozenset(),
    "health": frozenset(),
    "sensors": frozenset(),
    "drain": frozenset({_BROKER}),
    "watch": frozenset({_BROKER}),
    "ingest": frozenset({_BROKER, _INGEST_METRICS}),  # not run's [metrics]: ingest has its own
}


def _global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    # On subparsers the defaults are suppressed so a value given before the
    # subcommand is not overwritten by the subparser's default.
    default: Any = None if top else argparse.SUPPRESS
    helps = {"-c": "TOML config file", "--log-level": "override log.level"}
    for flags, choices in GLOBAL_OPTIONS.items():
        parser.add_argument(
            *flags,
            choices=choices,
            metavar=None if choices else "FILE",
            default=default,
            help=helps.get(flags[0], "override log.format"),
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="mqttspool",
        description="Store-and-forward telemetry bridge: sensors -> SQLite spool -> MQTT.",
        formatter_class=_one_line_help,
    )
    from mqttspool import __version__  # noqa: PLC0415 - importlib.metadata is slow to import

    parser.add_argument("--version", action="version", version=f"mqttspool {__version__}")
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _global_options(p, top=False)
        p.set_defaults(handler=handler)
        return p

    _add_spool_commands(add)
    runtime.register(add)  # commands that talk to a broker, sensors or the daemon
    return parser


def _one_line_help(prog: str) -> argparse.HelpFormatter:
    """Help column close to the command names, so each command's help fits on one line."""
    return argparse.HelpFormatter(prog, max_help_position=18)


def _add_spool_commands(add: Callable[[str, Handler, str], argparse.ArgumentParser]) -> None:
    """Commands that only read or write the spool file."""
    p = add("enqueue", cmd_enqueue, "store JSON-lines readings from FILE or stdin")
    p.add_argument("file", nargs="?", default="-", help="input file, '-' for stdin (default)")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = ENQUEUE_FORMAT
    p = add("status", cmd_status, "show the spool's depth, age, dead letters and drops")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = add("check-config", cmd_check_config, "validate and print the effective configuration")
    p.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    p = add("dead-letters", cmd_dead_letters, "inspect and recover readings the broker rejected")
    dl = p.add_subparsers(dest="dl_action", metavar="ACTION", required=True)
    dl_list = dl.add_parser("list", help="list rejected readings")
    dl_list.add_argument("--json", action="store_true", help="one JSON object per line")
    for action, text in (
        ("requeue", "move back into the queue (same seq, same id)"),
        ("purge", "delete for good (counted as dropped, reason purged)"),
    ):
        a = dl.add_parser(action, help=text)
        a.add_argument("--all", action="store_true", help="every dead letter")
        a.add_argument("seqs", nargs="*", type=int, metavar="SEQ")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code.

    A reader that goes away early (``mqttspool check-config --json | head -c
    300``) is not an error worth a traceback: the rest of the output is
    discarded and the exit code is 1.
    """
    try:
        code = _main(argv)
        sys.stdout.flush()  # inside the try: a closed pipe fails here, not at exit
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit cannot fail again
        os.close(devnull)
        return EXIT_FAIL
    return code


def _main(argv: list[str] | None) -> int:
    from mqttspool.config import (  # noqa: PLC0415 - see top
        USES_EVERYTHING,
        config_path_from,
        load_config,
    )

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level or "info", args.log_format or "text")
    try:
        uses = COMMAND_USES.get(args.command, USES_EVERYTHING)
        settings = load_config(config_path_from(args.config, _environ()), uses=uses)
    except ConfigError as exc:
        print(f"mqttspool: {exc}", file=sys.stderr)
        # Docker reserves health-check exit code 2; for health a bad config is "unhealthy".
        return EXIT_FAIL if args.command == "health" else EXIT_CONFIG
    setup_logging(args.log_level or settings.log.level, args.log_format or settings.log.format)
    try:
        return int(args.handler(args, settings))
    except ConfigError as exc:
        print(f"mqttspool: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except MqttspoolError as exc:
        print(f"mqttspool: error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


def _environ() -> dict[str, str]:
    return dict(os.environ)


# ------------------------------------------------------------------ enqueue


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    """Validate JSON lines and store the good ones; exit 1 if any line was rejected or dropped.

    The input rules and limits are in :mod:`mqttspool.cli.enqueue`.
    """
    from mqttspool.cli import enqueue  # noqa: PLC0415 - see top
    from mqttspool.spool import open_spool  # noqa: PLC0415
    from mqttspool.timekeeping import SystemClock, SystemClockSync  # noqa: PLC0415

    spool = open_spool(settings.spool)
    result = enqueue.EnqueueResult()
    try:
        with enqueue.open_input(args.file) as stream:
            parser = enqueue.LineParser(settings.device.id, SystemClock(), SystemClockSync())
            enqueue.enqueue_lines(spool, enqueue.input_lines(stream), parser, sys.stderr, result)
    except OSError as exc:  # a read failing midway: EIO, a vanished network mount
        _report_early_stop(result)
        raise MqttspoolError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    except MqttspoolError:
        _report_early_stop(result)
        raise
    finally:
        spool.close()
    for line in result.summary():
        print(line, file=sys.stderr)
    return EXIT_OK if result.rejected == 0 and result.dropped == 0 else EXIT_FAIL


def _report_early_stop(result: EnqueueResult) -> None:
    if result.last_line:
        print(
            f"stopped after line {result.last_line}: stored {result.stored} reading(s),"
            f" rejected {result.rejected} line(s); later lines were not read",
            file=sys.stderr,
        )


# ------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print depth, oldest age, dead letters, drops, last publish, epoch."""
    doc = status_document(settings)
    if args.json:
        print(json.dumps(doc, sort_keys=False))
        return EXIT_OK
    age = doc["oldest_age_seconds"]
    print(f"spool:        {doc['spool_path']}")
    print(f"device:       {doc['device']}")
    print(f"epoch:        {doc['epoch'] or '-'}")
    print(f"depth:        {doc['depth']}")
    print(f"oldest age:   {'-' if age is None else f'{age:.1f} s'}")
    print(f"dead letters: {doc['dead_letters']}")
    dropped = ", ".join(f"{k}={v}" for k, v in doc["dropped"].items()) or "none"
    print(f"dropped:      {dropped}")
    print(f"last publish: {doc['last_publish'] or 'never'}")
    if doc["readings_paused"]:
        print(f"paused:       readings held back ({doc['readings_paused']})")
    return EXIT_OK


def status_document(settings: Settings) -> dict[str, Any]:
    """The ``status --json`` object; a 0-byte spool reads as empty, a missing one is an error.

    Nothing is ever created: a typo'd ``spool.path`` must not look like an empty spool.
    """
    from mqttspool.spool import classify_file, open_spool, read_stats_json  # noqa: PLC0415
    from mqttspool.wire.snapshot import Snapshot  # noqa: PLC0415

    path = Path(settings.spool.path)
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    runtime.require_spool(settings.spool.path)
    if classify_file(path) in ("missing", "empty"):  # missing: a salvage is unfinished
        return {**Snapshot.empty(settings.device.id, str(path)).as_json(), "readings_paused": None}
    spool = open_spool(settings.spool, create=False)
    try:
        doc = read_stats_json(spool.stats(), settings.device.id, now_us)
    finally:
        spool.close()
    return {**doc, "readings_paused": _readings_paused(path)}


def _readings_paused(path: Path) -> str | None:
    """Why a running daemon holds readings back for a consumer (from its heartbeat), if it does."""
    from mqttspool.health import heartbeat_path, read_heartbeat  # noqa: PLC0415

    try:
        beat = read_heartbeat(heartbeat_path(path))
    except (OSError, ValueError):
        return None
    return beat.readings_paused if beat.state == "running" else None


# ------------------------------------------------------------- check-config


def cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    """Print the effective configuration with secrets masked."""
    from mqttspool.config import effective_config, to_toml  # noqa: PLC0415 - see top

    data = effective_config(settings)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(to_toml(data), end="")
    return EXIT_OK


# ------------------------------------------------------------- dead letters


def cmd_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    """``dead-letters list|requeue|purge``; never creates a spool (a wrong path is an error)."""
    from mqttspool.spool import open_spool  # noqa: PLC0415 - see top

    spool = open_spool(settings.spool, create=False)
    try:
        if args.dl_action == "list":
            return _dl_list(spool, args.json)
        if not args.all and not args.seqs:
            print(
                f"mqttspool: dead-letters {args.dl_action}: give SEQ... or --all", file=sys.stderr
            )
            return EXIT_CONFIG
        seqs, unknown = _dead_letter_seqs(spool, args)
        if seqs is None or seqs:
            if args.dl_action == "requeue":
                n = spool.requeue(seqs)
                print(f"requeued {n} reading(s) (same seq, same id)")
            else:
                n = spool.purge(seqs)
                print(f"purged {n} dead letter(s) (counted as dropped, reason purged)")
        if unknown:
            print(
                f"mqttspool: dead-letters {args.dl_action}: not a dead letter:"
                f" {' '.join(map(str, unknown))} (see `mqttspool dead-letters list`)",
                file=sys.stderr,
            )
            return EXIT_FAIL
        return EXIT_OK
    finally:
        spool.close()


def _dead_letter_seqs(spool: Spool, args: argparse.Namespace) -> tuple[list[int] | None, list[int]]:
    """The seqs to act on (None: all) and the given seqs that are not dead letters."""
    if args.all:
        return None, []
    letters = {dl.reading.seq for dl in spool.dead_letters()}
    given = list(dict.fromkeys(args.seqs))
    return [s for s in given if s in letters], [s for s in given if s not in letters]


def _dl_list(spool: Spool, as_json: bool) -> int:
    from mqttspool.reading import format_ts  # noqa: PLC0415 - see top

    letters = spool.dead_letters()
    for dl in letters:
        r = dl.reading
        if as_json:
            doc = {
                "seq": r.seq,
                "device": r.device,
                "sensor": r.sensor,
                "metric": r.metric,
                "value": r.value,
                "unit": r.unit,
                "ts": format_ts(r.ts_us),
                "code": dl.code,
                "reason": dl.reason,
                "failed_at": format_ts(dl.failed_at_us),
            }
            print(json.dumps(doc))
        else:
            print(
                f"{r.seq}\t{r.device}/{r.sensor}/{r.metric}\t{r.value}\t0x{dl.code:02X} "
                f"{dl.reason}\t{format_ts(dl.failed_at_us)}"
            )
    if not as_json:
        print(f"{len(letters)} dead letter(s)", file=sys.stderr)
    return EXIT_OK
