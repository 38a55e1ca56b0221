"""``mqttspool enqueue``: JSON-lines readings from a file or stdin into the spool.

Input rules (the same for ``enqueue FILE`` and ``enqueue -``): the input is
read as bytes, one line at a time with a size limit, so memory stays bounded
whatever arrives; a line ends at ``\\n`` (a ``\\r`` before it is dropped); each
line must be UTF-8 JSON of at most :data:`MAX_LINE_BYTES` bytes; blank lines
are skipped. Every other line is either stored or reported on stderr as
``line N: reason`` (the reason names the field), and nothing in one line can
stop the others. Good lines are stored in batches of :data:`BATCH_LINES`, one
transaction each.

A line without ``ts`` is stamped with the system clock and, unless it says
otherwise, ``time_synced`` from :func:`mqttspool.timekeeping.clock_is_synchronized`,
the rule the sampler uses (checked once per batch).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mqttspool.errors import MqttspoolError, ReadingError, SpoolFullError
from mqttspool.reading import Reading, from_us, load_json, validate_reading
from mqttspool.spool import Spool
from mqttspool.timekeeping import Clock, ClockSync

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 65_536  # a reading is ~200 bytes; far larger input is a mistake
BATCH_LINES = 2000
_CHUNK = 65_536
_BOM = b"\xef\xbb\xbf"


@dataclass
class EnqueueResult:
    """Running totals of one ``enqueue``; ``last_line`` is the last line read."""

    stored: int = 0
    rejected: int = 0
    last_line: int = 0


@contextlib.contextmanager
def open_input(name: str) -> Iterator[IO[bytes]]:
    """The input as a binary stream: stdin for ``-``, else the named file."""
    if name == "-":
        yield sys.stdin.buffer
        return
    try:
        fh = Path(name).open("rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise MqttspoolError(f"cannot read {name}: {exc.strerror}") from exc
    with fh:
        yield fh


def input_lines(
    stream: IO[bytes], limit: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, str | ReadingError]]:
    """``(line number, text)`` per non-blank line, or the reason the line is unusable.

    Never holds more than ``limit`` + 2 bytes of one line in memory: the rest
    of an over-long line is read in chunks and only counted.
    """
    lineno = 0
    while raw := stream.readline(limit + 2):
        lineno += 1
        ended = raw.endswith(b"\n")
        if not ended and len(raw) == limit + 2:
            size = len(raw) + _skip_rest_of_line(stream)
            yield lineno, ReadingError("", f"line too long ({size} bytes, limit {limit})")
            continue
        content = raw.removesuffix(b"\n").removesuffix(b"\r")
        if lineno == 1:
            content = content.removeprefix(_BOM)
        if len(content) > limit:
            yield lineno, ReadingError("", f"line too long ({len(content)} bytes, limit {limit})")
        elif content.strip():
            yield lineno, _decode(content)


def _skip_rest_of_line(stream: IO[bytes]) -> int:
    """Read and discard up to the end of the line; the bytes it had, without ``\\r\\n``."""
    size = 0
    while chunk := stream.readline(_CHUNK):
        if chunk.endswith(b"\n"):
            return size + len(chunk.removesuffix(b"\n").removesuffix(b"\r"))
        size += len(chunk)
    return size


def _decode(content: bytes) -> str | ReadingError:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = content[exc.start]
        return ReadingError("", f"not valid UTF-8 (byte 0x{bad:02x} at column {exc.start + 1})")


class LineParser:
    """Turns one line of text into a :class:`Reading`, filling in device, ts and time_synced."""

    def __init__(self, device: str, clock: Clock, sync: ClockSync) -> None:
        self.device = device
        self.clock = clock
        self.sync = sync
        self.synced = sync.is_synchronized()

    def check_sync(self) -> None:
        """Re-read the clock-sync state (once per batch: a file check and a syscall)."""
        self.synced = self.sync.is_synchronized()

    def parse(self, text: str) -> Reading:
        """Validate one line; raises :class:`ReadingError` naming the field."""
        return self.parse_stamped(text)[0]

    def parse_stamped(self, text: str) -> tuple[Reading, bool]:
        """The reading, and whether its ``ts`` was stamped here with this machine's clock.

        Only such readings may later be re-timed by the spool's clock correction: a
        ``ts`` the line carried is the producer's word and is kept as it is.
        """
        doc = load_json(text)
        if not isinstance(doc, dict):
            raise ReadingError("", "must be a JSON object")
        doc.setdefault("device", self.device)
        stamped = "ts" not in doc
        if stamped:
            # Stamped here, so the stamp is only as good as this machine's clock.
            doc["ts"] = from_us(self.clock.wall_us())
            doc.setdefault("time_synced", self.synced)
        return validate_reading(doc), stamped


def enqueue_lines(
    spool: Spool,
    lines: Iterator[tuple[int, str | ReadingError]],
    parser: LineParser,
    errors: IO[str],
    result: EnqueueResult | None = None,
) -> EnqueueResult:
    """Validate and store ``lines`` in batches; every line is counted in ``result``.

    Spool errors other than a full spool propagate; ``result`` (pass your own
    to read it afterwards) then says how far the input got.
    """
    result = EnqueueResult() if result is None else result
    batch: list[tuple[int, tuple[Reading, bool]]] = []
    for lineno, text in lines:
        result.last_line = lineno
        parsed = _parse_or_report(lineno, text, parser, errors)
        if parsed is None:
            result.rejected += 1
            continue
        batch.append((lineno, parsed))
        if len(batch) >= BATCH_LINES:
            _store(spool, batch, errors, result)
            batch = []
            parser.check_sync()
    if batch:
        _store(spool, batch, errors, result)
    return result


def _parse_or_report(
    lineno: int, text: str | ReadingError, parser: LineParser, errors: IO[str]
) -> tuple[Reading, bool] | None:
    try:
        if isinstance(text, ReadingError):
            raise text
        return parser.parse_stamped(text)
    except ReadingError as exc:
        print(f"line {lineno}: {exc}", file=errors)
    except Exception as exc:
        # The promise is "stored or reported": a defect in validation must cost
        # this line only, and say so, instead of ending the run.
        logger.debug("line %d: unexpected error", lineno, exc_info=True)
        print(f"line {lineno}: rejected: unexpected {type(exc).__name__}", file=errors)
    return None


def _store(
    spool: Spool,
    batch: list[tuple[int, tuple[Reading, bool]]],
    errors: IO[str],
    result: EnqueueResult,
) -> None:
    try:
        appended = spool.append(
            [reading for _, (reading, _) in batch],
            clock_stamped=[stamped for _, (_, stamped) in batch],
        )
    except SpoolFullError as exc:
        print(f"lines {batch[0][0]}-{batch[-1][0]}: not stored: {exc}", file=errors)
        result.rejected += len(batch)
        return
    stored = len(appended.seqs)
    # drop_newest: the last lines of the batch did not fit.
    for lineno, _ in batch[stored:]:
        print(f"line {lineno}: not stored: spool bound reached ({appended.dropped})", file=errors)
    result.stored += stored
    result.rejected += len(batch) - stored
