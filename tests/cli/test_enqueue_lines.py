"""enqueue_lines in process: the sampler's clock-sync rule, failures per line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.clock import FakeClock, FakeClockSync
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mqttspool import timekeeping
from mqttspool.cli.app import main
from mqttspool.cli.enqueue import (
    BATCH_LINES,
    EnqueueResult,
    LineParser,
    enqueue_lines,
    input_lines,
)
from mqttspool.config import SpoolConfig
from mqttspool.errors import SpoolError
from mqttspool.reading import Reading, StoredReading
from mqttspool.spool import Spool, open_spool
from mqttspool.timekeeping import clock_is_synchronized

NO_TS = b'{"sensor":"s","metric":"t","value":1}\n'
WITH_TS = b'{"sensor":"s","metric":"t","value":2,"ts":"2026-11-26T00:40:00Z"}\n'


def stored_rows(path: Path) -> list[StoredReading]:
    spool = open_spool(SpoolConfig(path=str(path)))
    try:
        return spool.rows_after(0, 100_000)
    finally:
        spool.close()


def enqueue_with(tmp_path: Path, data: bytes, sync: FakeClockSync) -> list[StoredReading]:
    clock = FakeClock()
    spool = open_spool(SpoolConfig(path=str(tmp_path / "spool.db")), clock=clock)
    try:
        parser = LineParser("edge-01", clock, sync)
        result = enqueue_lines(spool, input_lines(io.BytesIO(data)), parser, io.StringIO())
        assert result.rejected == 0
        return spool.rows_after(0, 100_000)
    finally:
        spool.close()


def test_unsynced_clock_stamps_time_synced_false(tmp_path: Path) -> None:
    rows = enqueue_with(tmp_path, NO_TS + WITH_TS, FakeClockSync(False))
    assert [(r.value, r.time_synced) for r in rows] == [(1.0, False), (2.0, True)]
    assert rows[0].ts_us == FakeClock().wall  # stamped with the injected clock


def test_clock_correction_retimes_only_lines_this_machine_stamped(tmp_path: Path) -> None:
    """A line's own ``ts`` (even with ``time_synced: false``) is never rewritten."""
    clock = FakeClock()
    spool = open_spool(SpoolConfig(path=str(tmp_path / "spool.db")), clock=clock)
    own_ts = (
        b'{"sensor":"s","metric":"t","value":2,"ts":"2026-11-26T00:40:00Z","time_synced":false}\n'
    )
    try:
        parser = LineParser("edge-01", clock, FakeClockSync(False))
        enqueue_lines(spool, input_lines(io.BytesIO(NO_TS + own_ts)), parser, io.StringIO())
        before = {r.value: r.ts_us for r in spool.rows_after(0, 10)}
        corrected = spool.correct_clock(clock.boot_id(), clock.wall_us() + 10**9, clock.mono_ns())
        after = {r.value: (r.ts_us, r.time_synced) for r in spool.rows_after(0, 10)}
    finally:
        spool.close()
    assert corrected == 1
    assert after[1.0] == (before[1.0] + 10**9, True)  # stamped here: re-timed
    assert after[2.0] == (before[2.0], False)  # the producer's own time: kept


def test_synced_clock_stamps_time_synced_true(tmp_path: Path) -> None:
    rows = enqueue_with(tmp_path, NO_TS, FakeClockSync(True))
    assert [(r.value, r.time_synced) for r in rows] == [(1.0, True)]


def test_explicit_time_synced_is_kept(tmp_path: Path) -> None:
    line = b'{"sensor":"s","metric":"t","value":3,"time_synced":true}\n'
    rows = enqueue_with(tmp_path, line, FakeClockSync(False))
    assert [(r.value, r.time_synced) for r in rows] == [(3.0, True)]


def test_sync_state_is_read_again_for_each_batch(tmp_path: Path) -> None:
    class SyncsAfterFirstCheck(FakeClockSync):
        def is_synchronized(self) -> bool:
            synced = self.calls > 0
            self.calls += 1
            return synced

    rows = enqueue_with(tmp_path, NO_TS * (BATCH_LINES + 1), SyncsAfterFirstCheck())
    assert [r.time_synced for r in rows] == [False] * BATCH_LINES + [True]


def test_cli_uses_the_shared_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real command, in process, with the kernel saying TIME_ERROR and no marker file."""
    monkeypatch.setattr(timekeeping, "adjtimex_state", lambda: 5)
    monkeypatch.setattr(timekeeping, "SYNC_MARKER_PATH", tmp_path / "synchronized")
    for key in [k for k in os.environ if k.startswith("MQTTSPOOL_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MQTTSPOOL_SPOOL__PATH", str(tmp_path / "spool.db"))
    stdin = io.TextIOWrapper(io.BytesIO(NO_TS))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["enqueue", "-"]) == 0
    (tmp_path / "synchronized").touch()  # timesyncd's marker: synchronized
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(NO_TS)))
    assert main(["enqueue", "-"]) == 0
    assert "stored 1 reading(s), rejected 0 line(s)" in capsys.readouterr().err
    assert [r.time_synced for r in stored_rows(tmp_path / "spool.db")] == [False, True]


def test_black_box_matches_this_machines_clock_state(tmp_path: Path) -> None:
    """A subprocess stamps what the sampler's rule says here (unsynced in most containers)."""
    expected = clock_is_synchronized()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQTTSPOOL_")}
    env["MQTTSPOOL_SPOOL__PATH"] = str(tmp_path / "spool.db")
    proc = subprocess.run(
        [sys.executable, "-m", "mqttspool", "enqueue", "-"],
        input=NO_TS,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert [r.time_synced for r in stored_rows(tmp_path / "spool.db")] == [expected]


def test_an_unexpected_error_costs_only_its_line(tmp_path: Path) -> None:
    """The safety net: a defect in validation is reported as that line's reason."""

    class BrokenOnTwo(LineParser):
        def parse_stamped(self, text: str) -> tuple[Reading, bool]:
            if '"value":2' in text:
                raise RuntimeError("a bug")
            return super().parse_stamped(text)

    clock = FakeClock()
    spool = open_spool(SpoolConfig(path=str(tmp_path / "spool.db")), clock=clock)
    errors = io.StringIO()
    try:
        parser = BrokenOnTwo("edge-01", clock, FakeClockSync(True))
        data = NO_TS + WITH_TS + NO_TS
        result = enqueue_lines(spool, input_lines(io.BytesIO(data)), parser, errors)
        assert [r.value for r in spool.rows_after(0, 10)] == [1.0, 1.0]
    finally:
        spool.close()
    assert (result.stored, result.rejected, result.last_line) == (2, 1, 3)
    assert errors.getvalue() == "line 2: rejected: unexpected RuntimeError\n"


def test_a_failing_spool_stops_the_run_and_says_how_far_it_got(tmp_path: Path) -> None:
    class FailingSpool:
        def append(self, readings: list[Reading], clock_stamped: list[bool]) -> None:
            raise SpoolError(tmp_path / "spool.db", "disk I/O error")

    result = EnqueueResult()
    parser = LineParser("edge-01", FakeClock(), FakeClockSync(True))
    lines = input_lines(io.BytesIO(NO_TS * (BATCH_LINES + 5)))
    with pytest.raises(SpoolError, match="disk I/O error"):
        enqueue_lines(FailingSpool(), lines, parser, io.StringIO(), result)  # type: ignore[arg-type]
    assert (result.stored, result.rejected, result.last_line) == (0, 0, BATCH_LINES)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["9" * 400, "2026-11-26T00:40:00Z", "9999-12-31T23:59:59-01:00"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
docs = st.fixed_dictionaries(
    {"sensor": st.sampled_from(["s", "+", ""]) | st.text(max_size=4)},
    optional={
        "metric": st.sampled_from(["t", "a/b"]),
        "value": json_values,
        "ts": json_values,
        "unit": json_values,
        "device": json_values,
        "time_synced": json_values,
    },
)
lines = (
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b""))
    | docs.map(lambda d: json.dumps(d, allow_nan=True).encode())
    | st.just(b"[" * 5000)
)


@pytest.fixture
def shared_spool(tmp_path: Path) -> Iterator[Spool]:
    """One spool for every example (creating one per example costs fsyncs)."""
    config = SpoolConfig(path=str(tmp_path / "spool.db"), synchronous="normal")
    spool = open_spool(config, clock=FakeClock())
    yield spool
    spool.close()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.lists(lines, max_size=12))
@example(data=[b"\xef\xbb\xbf"])  # a BOM alone is a blank line
@example(data=[b'{"sensor": "s", "metric": "t", "value": 1, "device": ["\\u0085\\u2028"]}'])
def test_every_line_is_stored_or_reported(shared_spool: Spool, data: list[bytes]) -> None:
    """Whatever the bytes: no exception, and each non-blank line is counted exactly once."""
    before = shared_spool.depth()
    errors = io.StringIO()
    parser = LineParser("edge-01", FakeClock(), FakeClockSync(False))
    result = enqueue_lines(shared_spool, input_lines(io.BytesIO(b"\n".join(data))), parser, errors)
    assert shared_spool.depth() - before == result.stored
    # A byte-order mark opening the input is not content (enqueue drops it first).
    texts = [
        line.removeprefix(b"\xef\xbb\xbf") if n == 1 else line for n, line in enumerate(data, 1)
    ]
    non_blank = [n for n, line in enumerate(texts, 1) if line.strip() not in (b"", b"\r")]
    reported = [int(x.split(":")[0].removeprefix("line ")) for x in errors.getvalue().splitlines()]
    assert result.stored + result.rejected == len(non_blank)
    assert len(reported) == result.rejected and set(reported) <= set(non_blank)
