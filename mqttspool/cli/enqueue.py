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
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mqttspool.errors import MqttspoolError, ReadingError, SpoolFullError
from mqttspool.reading import Reading, from_us, load_json, validate_reading
from mqttspool.spool import AppendResult, Eviction, Spool
from mqttspool.timekeeping import Clock, ClockSync

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 65_536  # a reading is ~200 bytes; far larger input is a mistake
BATCH_LINES = 2000
_CHUNK = 65_536
_BOM = b"\xef\xbb\xbf"


class OwnRows:
    """Which seqs this input's stored lines got, as runs (seq, line, length) of consecutive both.

    Bounded by the number of batches and rejected lines, not by the input's size.
    """

    def __init__(self) -> None:
        self._runs: deque[list[int]] = deque()

    def add(self, seqs: list[int], lines: list[int]) -> None:
        """Remember that ``lines`` were stored as ``seqs`` (same order)."""
        for seq, line in zip(seqs, lines, strict=True):
            last = self._runs[-1] if self._runs else None
            if last and last[0] + last[2] == seq and last[1] + last[2] == line:
                last[2] += 1
            else:
                self._runs.append([seq, line, 1])

    def evict(self, first: int, last: int) -> list[int]:
        """Forget every row up to seq ``last``; the lines of those in ``first..last``."""
        lines: list[int] = []
        while self._runs and self._runs[0][0] <= last:
            seq, line, length = self._runs[0]
            upto = min(length, last - seq + 1)
            lines.extend(line + i for i in range(upto) if seq + i >= first)
            if upto == length:
                self._runs.popleft()
            else:
                self._runs[0] = [seq + upto, line + upto, length - upto]
        return lines


@dataclass
class EnqueueResult:
    """Running totals of one ``enqueue``; ``last_line`` is the last line read.

    ``stored`` counts lines whose reading is in the spool (a line stored and
    then dropped to make room for later lines is moved to ``dropped``);
    ``dropped`` counts this input's lines the overflow policy refused or
    deleted, ``dropped_queued`` readings that were queued before this input,
    and ``drop_reasons`` both by reason.
    """

    stored: int = 0
    rejected: int = 0
    last_line: int = 0
    dropped: int = 0
    dropped_queued: int = 0
    drop_reasons: Counter[str] = field(default_factory=Counter)
    own: OwnRows = field(default_factory=OwnRows)

    def summary(self) -> list[str]:
        """The closing lines; when readings were dropped to make room, the first says so."""
        last = f"stored {self.stored} reading(s), rejected {self.rejected} line(s)"
        if not self.drop_reasons:
            return [last]
        reasons = ", ".join(f"reason {r}: {n}" for r, n in sorted(self.drop_reasons.items()))
        total = self.dropped + self.dropped_queued
        return [
            f"dropped {total} reading(s) at the spool's bounds ({reasons}): {self.dropped}"
            f" line(s) of this input, {self.dropped_queued} reading(s) queued before it;"
            " see spool.max_rows, spool.min_free_bytes and spool.overflow",
            f"{last}, dropped {self.dropped} line(s)",
        ]


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
    lines = [lineno for lineno, _ in batch]
    first, stored = appended.first_kept, len(appended.seqs)
    for eviction in appended.evicted:
        _report_eviction(spool, eviction, result, errors)
    refused = lines[:first] + lines[first + stored :]
    if refused:
        reason = _refusal_reason(appended)
        why = (
            "not stored"
            if first == 0
            else "dropped: the batch alone is over the bound, kept its newest"
        )
        print(f"{_ranges('line', refused)}: {why}: {_why(spool, reason)}", file=errors)
        result.dropped += len(refused)
        result.drop_reasons[reason] += len(refused)
    result.own.add(appended.seqs, lines[first : first + stored])
    result.stored += stored


def _report_eviction(spool: Spool, ev: Eviction, result: EnqueueResult, errors: IO[str]) -> None:
    """Name the queued readings deleted to make room: this input's lines, then the others."""
    mine = result.own.evict(ev.first, ev.last)
    seqs = f"seq {ev.first}" if ev.first == ev.last else f"seqs {ev.first}-{ev.last}"
    why = _why(spool, ev.reason)
    others = ev.count - len(mine)
    if others:
        among = "" if others == ev.last - ev.first + 1 else "among "
        print(
            f"dropped {others} reading(s) queued before this input ({among}{seqs}) to make"
            f" room: {why}",
            file=errors,
        )
    if mine:
        print(f"{_ranges('line', mine)}: dropped to make room for later lines: {why}", file=errors)
    result.stored -= len(mine)
    result.dropped += len(mine)
    result.dropped_queued += others
    result.drop_reasons[ev.reason] += ev.count


def _refusal_reason(appended: AppendResult) -> str:
    """The reason the refused lines were counted under (evictions subtracted)."""
    refused = Counter(appended.dropped)
    refused.subtract(Counter({e.reason: e.count for e in appended.evicted}))
    return next((r for r, n in refused.items() if n > 0), "max_rows")


def _why(spool: Spool, reason: str) -> str:
    cfg = spool.config
    policy = f"spool.overflow = {cfg.overflow}"
    if reason == "max_rows":
        return f"reason max_rows (spool.max_rows = {cfg.max_rows} reached; {policy})"
    if reason == "min_free_bytes":
        return (
            f"reason min_free_bytes (less than spool.min_free_bytes = {cfg.min_free_bytes}"
            f" free on the spool's filesystem; {policy})"
        )
    return f"reason {reason} ({policy})"


def _ranges(word: str, numbers: list[int]) -> str:
    """``line 4`` / ``lines 1-3, 7, 9-12`` for sorted ``numbers``."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    plural = "s" if len(numbers) > 1 else ""
    return f"{word}{plural} {', '.join(parts)}"
