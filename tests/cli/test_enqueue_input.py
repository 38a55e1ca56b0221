"""enqueue on hostile input: every line stored or reported, bounded memory.

Black-box: ``python -m mqttspool enqueue`` as a subprocess; rows are read back from the spool.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqttspool.cli.enqueue import MAX_LINE_BYTES, input_lines
from mqttspool.config import SpoolConfig
from mqttspool.errors import ReadingError
from mqttspool.reading import StoredReading
from mqttspool.spool import open_spool

GOOD = b'{"sensor":"s","metric":"t","value":1}'


def env_for(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQTTSPOOL_")}
    return env | {"MQTTSPOOL_SPOOL__PATH": str(tmp_path / "spool.db"), "MQTTSPOOL_DEVICE__ID": "e1"}


def enqueue(tmp_path: Path, data: bytes, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mqttspool", "enqueue", *(args or ("-",))],
        input=data,
        env=env_for(tmp_path),
        capture_output=True,
        timeout=60,
        check=False,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def line_reports(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [x for x in proc.stderr.splitlines() if x.startswith("line")]


def rows(tmp_path: Path) -> list[StoredReading]:
    spool = open_spool(SpoolConfig(path=str(tmp_path / "spool.db")))
    try:
        return spool.rows_after(0, 1_000_000)
    finally:
        spool.close()


def reading(value: object, **fields: str) -> bytes:
    extra = "".join(f',"{k}":"{v}"' for k, v in fields.items())
    return f'{{"sensor":"s","metric":"t","value":{value}{extra}}}'.encode()


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (reading("9" * 400), "value: must be a finite number (got an integer of 400 digits)"),
        (reading("1" * 5001), "value: must be a finite number (got an integer of 5001 digits)"),
        (
            reading(1, ts="9999-12-31T23:59:59-01:00"),
            "ts: out of range: the time in UTC must lie in years 1..9999"
            ' (got "9999-12-31T23:59:59-01:00")',
        ),
        (
            reading(1, ts="0001-01-01T00:00:00+01:00"),
            "ts: out of range: the time in UTC must lie in years 1..9999"
            ' (got "0001-01-01T00:00:00+01:00")',
        ),
        (b"[" * 60_000, "not valid JSON (nested too deeply)"),
        (b"[" * 100_000, f"line too long (100000 bytes, limit {MAX_LINE_BYTES})"),
        (
            reading("1e999"),
            "value: must be a finite number (NaN and infinity are rejected) (got inf)",
        ),
    ],
    ids=["400-digits", "5001-digits", "ts-year-10000", "ts-year-0", "nested", "nested-long", "inf"],
)
def test_a_crashing_line_is_reported_and_the_others_stored(
    tmp_path: Path, bad: bytes, reason: str
) -> None:
    proc = enqueue(tmp_path, GOOD + b"\n" + bad + b"\n" + reading(2) + b"\n")
    assert proc.returncode == 1
    assert line_reports(proc) == [f"line 2: {reason}"]
    assert proc.stderr.splitlines()[-1] == "stored 2 reading(s), rejected 1 line(s)"
    assert [r.value for r in rows(tmp_path)] == [1.0, 2.0]


def test_bad_line_in_the_second_batch_loses_no_good_line(tmp_path: Path) -> None:
    lines = [reading(i) for i in range(1, 3000)]
    lines[2500] = reading("9" * 400)  # line 2501 of 2,999
    proc = enqueue(tmp_path, b"\n".join(lines) + b"\n")
    assert proc.returncode == 1
    assert line_reports(proc) == [
        "line 2501: value: must be a finite number (got an integer of 400 digits)"
    ]
    stored = [int(r.value) for r in rows(tmp_path)]
    assert stored == [i for i in range(1, 3000) if i != 2501]  # all 2,998


@pytest.mark.parametrize("source", ["stdin", "file"])
def test_invalid_utf8_is_rejected_the_same_from_file_and_stdin(tmp_path: Path, source: str) -> None:
    data = GOOD + b"\n" + reading(2, unit="\xff").replace(b"\xc3\xbf", b"\xff") + b"\n"
    data += reading(3) + b"\n"
    if source == "file":
        (tmp_path / "in.jsonl").write_bytes(data)
        proc = enqueue(tmp_path, b"", str(tmp_path / "in.jsonl"))
    else:
        proc = enqueue(tmp_path, data)
    assert proc.returncode == 1
    assert line_reports(proc) == ["line 2: not valid UTF-8 (byte 0xff at column 46)"]
    assert [(r.value, r.unit) for r in rows(tmp_path)] == [(1.0, None), (3.0, None)]


def test_crlf_line_endings_are_accepted(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + reading(1, unit="C") + b"\r\n\r\n" + reading(2, unit="C") + b"\r\n"
    proc = enqueue(tmp_path, data)
    assert proc.returncode == 0, proc.stderr
    assert line_reports(proc) == []
    assert [(r.value, r.unit) for r in rows(tmp_path)] == [(1.0, "C"), (2.0, "C")]


UNSAFE_NAMES = ["+", "#", "a/b", "/", "a\\u0000b", "", "a+", "x#", "a b", "a\\nb"]


def test_topic_unsafe_names_are_rejected_naming_the_field(tmp_path: Path) -> None:
    template = '{{"device":"{device}","sensor":"{sensor}","metric":"{metric}","value":1}}'
    lines, expected = [], []
    for field in ("device", "sensor", "metric"):
        for name in UNSAFE_NAMES:
            doc = {"device": "e1", "sensor": "s", "metric": "t"} | {field: name}
            lines.append(template.format(**doc).encode())
            shown = json.dumps(json.loads(f'"{name}"'), ensure_ascii=False)
            expected.append(
                f"line {len(lines)}: {field}: String should match pattern"
                f" '^[A-Za-z0-9_-]{{1,64}}$' (got {shown})"
            )
    proc = enqueue(tmp_path, b"\n".join([*lines, GOOD]) + b"\n")
    assert proc.returncode == 1
    assert line_reports(proc) == expected
    assert len(rows(tmp_path)) == 1


def test_a_key_cannot_forge_a_report_line(tmp_path: Path) -> None:
    proc = enqueue(tmp_path, b'{"sensor":"s","metric":"t","value":1,"x\\nline 9: ok":1}\n')
    assert proc.returncode == 1
    assert line_reports(proc) == ["line 1: 'x\\nline 9: ok': unknown field"]


# A launcher between pytest and enqueue: Linux carries a process's peak RSS
# across exec, so a child forked straight from pytest (hundreds of MB) would
# report pytest's peak. The launcher is small, and reports its child's peak
# (wait4, not RUSAGE_CHILDREN, which is the maximum over every child ever waited for).
MEASURE = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_pid, status, usage = os.wait4(child.pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def feed_and_measure(tmp_path: Path, chunks: Iterator[bytes]) -> tuple[int, str, float]:
    """Run enqueue with ``chunks`` on stdin; exit code, stderr and its peak RSS in MB."""
    proc = subprocess.Popen(
        [sys.executable, "-c", MEASURE, sys.executable, "-m", "mqttspool", "enqueue", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env_for(tmp_path) | {"MQTTSPOOL_SPOOL__SYNCHRONOUS": "normal"},
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin = proc.stdin

    def feed() -> None:
        with stdin:
            for chunk in chunks:
                stdin.write(chunk)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    err = proc.stderr.read()  # until enqueue exits: stdout holds one short line
    out = proc.stdout.read()
    returncode = proc.wait(timeout=60)
    feeder.join(10)
    return returncode, err.decode(), int(out) / 1024


def test_a_10_mb_line_is_rejected_without_reading_it_whole(tmp_path: Path) -> None:
    big = b'{"sensor":"s","metric":"t","value":1,"unit":"' + b"x" * 10_000_000 + b'"}'
    huge = b"y" * 100_000_000  # 100 MB: whole, it would triple the child's memory
    parts = [GOOD + b"\n", big + b"\n", huge + b"\n", reading(2) + b"\n"]
    code, err, peak_mb = feed_and_measure(tmp_path, iter(parts))
    assert code == 1
    assert [x for x in err.splitlines() if x.startswith("line")] == [
        f"line 2: line too long ({len(big)} bytes, limit {MAX_LINE_BYTES})",
        f"line 3: line too long (100000000 bytes, limit {MAX_LINE_BYTES})",
    ]
    assert err.splitlines()[-1] == "stored 2 reading(s), rejected 2 line(s)"
    assert [r.value for r in rows(tmp_path)] == [1.0, 2.0]
    assert peak_mb < 100, f"peak RSS {peak_mb:.0f} MB"


def test_a_long_input_streams_in_bounded_memory(tmp_path: Path) -> None:
    """200k lines (not 1M: ~2.5 s instead of ~12 s on a shared Pi-class core).

    Batches of 2,000 are stored and dropped, so memory does not grow with N;
    the peak stays near the interpreter's own ~45 MB.
    """
    n = 200_000
    line = b'{"sensor":"s","metric":"t","value":1.5,"unit":"C"}\n'
    code, err, peak_mb = feed_and_measure(tmp_path, (line * 1000 for _ in range(n // 1000)))
    assert code == 0, err
    assert err.splitlines()[-1] == f"stored {n} reading(s), rejected 0 line(s)"
    spool = open_spool(SpoolConfig(path=str(tmp_path / "spool.db")))
    try:
        assert spool.depth() == n
    finally:
        spool.close()
    assert peak_mb < 150, f"peak RSS {peak_mb:.0f} MB"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"abcd\nabcde\n", [(1, "abcd"), (2, "too long (5 bytes")]),
        (b"abcd\r\nabcdef\r\n", [(1, "abcd"), (2, "too long (6 bytes")]),
        (b"abcdefghij\nab", [(1, "too long (10 bytes"), (2, "ab")]),
        (b"ab\n\n  \nabcdefgh", [(1, "ab"), (4, "too long (8 bytes")]),
        (b"abcd\r", [(1, "abcd")]),
    ],
)
def test_input_lines_limit_counts_bytes_without_the_line_ending(
    data: bytes, expected: list[tuple[int, str]]
) -> None:
    got = [
        (n, f"{text}" if isinstance(text, ReadingError) else text)
        for n, text in input_lines(io.BytesIO(data), limit=4)
    ]
    assert [n for n, _ in got] == [n for n, _ in expected]
    for (_, text), (_, want) in zip(got, expected, strict=True):
        assert text == want or text.startswith(f"line {want}")


def test_an_unreadable_input_is_an_error_naming_it(tmp_path: Path) -> None:
    proc = enqueue(tmp_path, b"", str(tmp_path))
    assert proc.returncode == 1
    last = proc.stderr.splitlines()[-1]
    assert last == f"mqttspool: error: cannot read {tmp_path}: Is a directory"


def test_a_read_failing_midway_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    proc = enqueue(tmp_path, b"", "/proc/self/mem")  # reading offset 0 fails with EIO
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        "mqttspool: error: cannot read /proc/self/mem: Input/output error"
    )
    assert "Traceback" not in proc.stderr
