"""``enqueue`` says exactly which readings the spool's bounds cost: lines, seqs, counts, why."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fakes.clock import FakeClock, FakeClockSync
from support.daemon import mqttspool_env, run_cli

from mqttspool.cli import enqueue
from mqttspool.cli.enqueue import EnqueueResult, LineParser, enqueue_lines, input_lines
from mqttspool.config import SpoolConfig
from mqttspool.spool import open_spool

BOUND = "reason max_rows (spool.max_rows = 5 reached; spool.overflow = {})"


def lines(values: range) -> bytes:
    return "".join(f'{{"sensor":"s","metric":"m","value":{v}}}\n' for v in values).encode()


def run_enqueue(
    tmp_path: Path, data: bytes, overflow: str = "drop_oldest"
) -> tuple[EnqueueResult, list[str], list[float]]:
    cfg = SpoolConfig.model_validate(
        {"path": str(tmp_path / "s.db"), "max_rows": 5, "overflow": overflow, "min_free_bytes": 0}
    )
    spool = open_spool(cfg, FakeClock())
    errors = io.StringIO()
    try:
        parser = LineParser("d", FakeClock(), FakeClockSync(True))
        result = enqueue_lines(spool, input_lines(io.BytesIO(data)), parser, errors)
        values = [r.value for r in spool.rows_after(0, 100)]
    finally:
        spool.close()
    return result, errors.getvalue().splitlines(), values


def test_one_batch_over_max_rows_names_the_oldest_lines_as_dropped(tmp_path: Path) -> None:
    result, out, values = run_enqueue(tmp_path, lines(range(1, 9)))
    assert values == [4.0, 5.0, 6.0, 7.0, 8.0]
    why = BOUND.format("drop_oldest")
    assert out == [f"lines 1-3: dropped: the batch alone is over the bound, kept its newest: {why}"]
    assert (result.stored, result.dropped, result.dropped_queued) == (5, 3, 0)
    assert result.summary()[0] == (
        "dropped 3 reading(s) at the spool's bounds (reason max_rows: 3): 3 line(s) of this"
        " input, 0 reading(s) queued before it; see spool.max_rows, spool.min_free_bytes and"
        " spool.overflow"
    )


def test_drop_newest_names_the_newest_lines_as_not_stored(tmp_path: Path) -> None:
    result, out, values = run_enqueue(tmp_path, lines(range(1, 9)), "drop_newest")
    assert values == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert out == [f"lines 6-8: not stored: {BOUND.format('drop_newest')}"]
    assert (result.stored, result.dropped) == (5, 3)


def test_later_batches_evicting_earlier_lines_and_queued_rows_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_enqueue(tmp_path, lines(range(100, 102)))  # seqs 1-2, queued before
    monkeypatch.setattr(enqueue, "BATCH_LINES", 3)
    data = lines(range(1, 4)) + b"not json\n" + lines(range(4, 9))  # line 4 is rejected
    result, out, values = run_enqueue(tmp_path, data)
    assert values == [4.0, 5.0, 6.0, 7.0, 8.0]
    why = BOUND.format("drop_oldest")
    assert out[0].startswith("line 4: ")
    assert out[1:] == [  # batch 2 (lines 5-7) evicts seqs 1-3, batch 3 (lines 8-9) seqs 4-5
        f"dropped 2 reading(s) queued before this input (among seqs 1-3) to make room: {why}",
        f"line 1: dropped to make room for later lines: {why}",
        f"lines 2-3: dropped to make room for later lines: {why}",
    ]
    assert (result.stored, result.rejected, result.dropped, result.dropped_queued) == (5, 1, 3, 2)
    assert result.summary() == [
        "dropped 5 reading(s) at the spool's bounds (reason max_rows: 5): 3 line(s) of this"
        " input, 2 reading(s) queued before it; see spool.max_rows, spool.min_free_bytes and"
        " spool.overflow",
        "stored 5 reading(s), rejected 1 line(s), dropped 3 line(s)",
    ]


def test_the_command_opens_its_summary_with_the_drops_and_exits_1(tmp_path: Path) -> None:
    env = mqttspool_env(tmp_path / "s.db", 1, spool__max_rows=5)
    result = run_cli(["enqueue", "-"], env, stdin=lines(range(1, 9)).decode())
    assert result.returncode == 1
    ours = [x for x in result.stderr.splitlines() if " mqttspool." not in x]
    assert ours[0].startswith("lines 1-3: dropped: ")
    assert ours[1].startswith("dropped 3 reading(s) at the spool's bounds (reason max_rows: 3)")
    assert ours[2] == "stored 5 reading(s), rejected 0 line(s), dropped 3 line(s)"
