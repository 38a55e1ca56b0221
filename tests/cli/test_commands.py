"""The foundation commands as subprocesses: enqueue, status, dead-letters, global options."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.daemon import clean_env, run_cli
from support.spooltools import all_seqs, dead_letter

from mqttspool.config import SpoolConfig
from mqttspool.spool import open_spool


def run(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = clean_env(
        MQTTSPOOL_SPOOL__PATH=str(tmp_path / "spool.db"), MQTTSPOOL_DEVICE__ID="edge-01"
    )
    return run_cli(list(args), env, stdin=stdin, cwd=tmp_path)


def status(tmp_path: Path) -> dict[str, object]:
    proc = run(tmp_path, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


def test_contract_example(tmp_path: Path) -> None:
    proc = run(
        tmp_path, "enqueue", "-", stdin='{"sensor":"s","metric":"t","value":1}\n{"value":"x"}\n'
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert [x for x in lines if x.startswith("line ")] == ["line 2: sensor: field required"]
    assert "stored 1 reading(s), rejected 1 line(s)" in lines[-1]
    text = run(tmp_path, "status")
    assert text.returncode == 0
    assert "depth:        1" in text.stdout.splitlines()
    doc = status(tmp_path)
    assert list(doc) == [
        "device",
        "epoch",
        "depth",
        "oldest_age_seconds",
        "dead_letters",
        "dropped",
        "last_publish",
        "spool_path",
        "readings_paused",
    ]
    assert doc["device"] == "edge-01"
    assert doc["depth"] == 1
    assert doc["dead_letters"] == 0
    assert doc["dropped"] == {}
    assert doc["last_publish"] is None
    assert doc["spool_path"] == str(tmp_path / "spool.db")
    assert isinstance(doc["oldest_age_seconds"], float)
    assert 0 <= doc["oldest_age_seconds"] < 60  # ts defaulted to now
    spool = open_spool(SpoolConfig(path=str(tmp_path / "spool.db")))
    try:
        assert doc["epoch"] == spool.epoch
        (row,) = spool.rows_after(0, 10)
        assert (row.seq, row.device, row.sensor, row.metric, row.value) == (
            1,
            "edge-01",
            "s",
            "t",
            1.0,
        )
    finally:
        spool.close()


def test_enqueue_all_good_exits_0_and_skips_blank_lines(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        '\n{"sensor":"a","metric":"t","value":1.5,"unit":"C","ts":"2026-11-26T00:40:00Z"}\n'
        "   \n"
        '{"device":"other","sensor":"b","metric":"h","value":2,"time_synced":false,'
        '"ts":"2026-11-26T01:40:00+01:00"}\n\n'
    )
    proc = run(tmp_path, "enqueue", str(src))
    assert proc.returncode == 0, proc.stderr
    assert "stored 2 reading(s), rejected 0 line(s)" in proc.stderr
    spool = open_spool(SpoolConfig(path=str(tmp_path / "spool.db")))
    try:
        rows = spool.rows_after(0, 10)
    finally:
        spool.close()
    assert [(r.seq, r.device, r.sensor, r.value, r.unit, r.time_synced) for r in rows] == [
        (1, "edge-01", "a", 1.5, "C", True),
        (2, "other", "b", 2.0, None, False),
    ]
    assert rows[0].ts_us == rows[1].ts_us  # both are 00:40 UTC


def test_enqueue_reports_every_bad_line_with_its_number(tmp_path: Path) -> None:
    stdin = "\n".join(
        [
            '{"sensor":"s","metric":"t","value":1}',  # 1 ok
            "",  # 2 blank
            '{"sensor":"s","metric":"t","value":1,"ts":"2026-11-26T00:40:00"}',  # 3 naive
            "not json",  # 4
            "[1, 2]",  # 5
            '{"sensor":"a/b","metric":"t","value":1}',  # 6
            '{"sensor":"s","metric":"t","value":1,"colour":1}',  # 7
            '{"sensor":"s","metric":"t"}',  # 8
            '{"sensor":"s","metric":"t","value":2}',  # 9 ok
        ]
    )
    proc = run(tmp_path, "enqueue", "-", stdin=stdin + "\n")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("line ")]
    assert [e.split(":")[0] for e in errors] == [
        "line 3",
        "line 4",
        "line 5",
        "line 6",
        "line 7",
        "line 8",
    ]
    assert errors[0].startswith("line 3: ts: ")
    assert "must include a timezone" in errors[0]
    assert errors[1].startswith("line 4: not valid JSON")
    assert errors[2] == "line 5: must be a JSON object"
    assert errors[3].startswith("line 6: sensor: ")
    assert errors[4] == "line 7: colour: unknown field"
    assert errors[5] == "line 8: value: field required"
    assert "stored 2 reading(s), rejected 6 line(s)" in proc.stderr
    assert status(tmp_path)["depth"] == 2


@pytest.mark.parametrize(
    "args",
    [
        ["--log-level", "debug", "status"],
        ["status", "--log-level", "debug"],
        ["--log-format", "json", "status", "--log-level", "debug"],
        ["status", "--log-format", "json", "--json"],
    ],
)
def test_global_options_before_and_after_the_subcommand(tmp_path: Path, args: list[str]) -> None:
    run(tmp_path, "enqueue", "-", stdin='{"sensor":"s","metric":"t","value":1}\n')
    proc = run(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert "depth:" in proc.stdout or json.loads(proc.stdout)["depth"] == 1


def test_log_level_debug_is_applied_from_either_position(tmp_path: Path) -> None:
    stdin = '{"sensor":"s","metric":"t","value":1}\n'
    before = run(
        tmp_path, "--log-level", "debug", "--log-format", "json", "enqueue", "-", stdin=stdin
    )
    after = run(
        tmp_path, "enqueue", "-", "--log-format", "json", "--log-level", "error", stdin=stdin
    )
    assert before.returncode == after.returncode == 0
    # "created spool" is logged at info on the first run; at error level nothing is.
    created = [json.loads(x) for x in before.stderr.splitlines() if x.startswith("{")]
    assert any(d["msg"].startswith("created spool") for d in created)
    assert not any(x.startswith("{") for x in after.stderr.splitlines())


def test_dead_letters_list_requeue_purge(tmp_path: Path) -> None:
    run(
        tmp_path,
        "enqueue",
        "-",
        stdin="".join(
            f'{{"sensor":"s","metric":"t","value":{i},"ts":"2026-11-26T00:40:00Z"}}\n'
            for i in range(4)
        ),
    )
    spool = open_spool(SpoolConfig(path=str(tmp_path / "spool.db")))
    try:
        dead_letter(spool, 1, 0x87, "not authorized")
        dead_letter(spool, 2, 0x97, "quota exceeded")
        dead_letter(spool, 3, 0x87, "not authorized")
    finally:
        spool.close()

    listed = run(tmp_path, "dead-letters", "list")
    assert listed.returncode == 0
    rows = listed.stdout.splitlines()
    assert len(rows) == 3
    assert rows[0].startswith("1\tedge-01/s/t\t0.0\t0x87 not authorized\t")
    assert rows[1].startswith("2\tedge-01/s/t\t1.0\t0x97 quota exceeded\t")
    assert "3 dead letter(s)" in listed.stderr
    as_json = [
        json.loads(x) for x in run(tmp_path, "dead-letters", "list", "--json").stdout.splitlines()
    ]
    assert [(d["seq"], d["code"], d["reason"], d["ts"]) for d in as_json] == [
        (1, 0x87, "not authorized", "2026-11-26T00:40:00.000Z"),
        (2, 0x97, "quota exceeded", "2026-11-26T00:40:00.000Z"),
        (3, 0x87, "not authorized", "2026-11-26T00:40:00.000Z"),
    ]

    nothing = run(tmp_path, "dead-letters", "requeue")
    assert nothing.returncode == 2
    assert "give SEQ... or --all" in nothing.stderr

    not_dead = run(tmp_path, "dead-letters", "requeue", "4", "99", "3")
    assert not_dead.returncode == 1
    assert not_dead.stdout == "requeued 1 reading(s) (same seq, same id)\n"  # seq 3
    assert not_dead.stderr == (
        "mqttspool: dead-letters requeue: not a dead letter: 4 99"
        " (see `mqttspool dead-letters list`)\n"
    )
    assert run(tmp_path, "dead-letters", "purge", "99").returncode == 1
    assert status(tmp_path)["dead_letters"] == 2

    requeued = run(tmp_path, "dead-letters", "requeue", "2")
    assert requeued.returncode == 0
    assert requeued.stdout == "requeued 1 reading(s) (same seq, same id)\n"
    purged = run(tmp_path, "dead-letters", "purge", "1")
    assert purged.stdout == "purged 1 dead letter(s) (counted as dropped, reason purged)\n"
    doc = status(tmp_path)
    assert (doc["depth"], doc["dead_letters"], doc["dropped"]) == (3, 0, {"purged": 1})
    assert run(tmp_path, "dead-letters", "requeue", "--all").stdout.startswith("requeued 0 ")
    spool = open_spool(SpoolConfig(path=str(tmp_path / "spool.db")))
    try:
        assert all_seqs(spool) == [2, 3, 4]  # original seqs, so the same ids
    finally:
        spool.close()
    assert run(tmp_path, "dead-letters", "purge", "--all").stdout.startswith("purged 0 ")
    assert run(tmp_path, "dead-letters", "list").stdout == ""


@pytest.mark.parametrize("command", [["enqueue", "-"], ["status"], ["dead-letters", "list"]])
def test_not_a_spool_file_exits_1_naming_the_file(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"precious data, not a database\n" * 10)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    proc = run(tmp_path, *command, stdin='{"sensor":"s","metric":"t","value":1}\n')
    assert proc.returncode == 1
    assert str(path) in proc.stderr
    assert "is not an mqttspool spool" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spool.db"]


def test_enqueue_drop_newest_reports_lines_not_stored(tmp_path: Path) -> None:
    env_line = "".join(f'{{"sensor":"s","metric":"t","value":{i}}}\n' for i in range(5))
    proc = subprocess.run(
        [sys.executable, "-m", "mqttspool", "enqueue", "-"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("MQTTSPOOL_")}
        | {
            "MQTTSPOOL_SPOOL__PATH": str(tmp_path / "spool.db"),
            "MQTTSPOOL_SPOOL__MAX_ROWS": "3",
            "MQTTSPOOL_SPOOL__OVERFLOW": "drop_newest",
        },
        input=env_line,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    refused = [x for x in proc.stderr.splitlines() if x.startswith("line")]
    assert len(refused) == 1
    assert refused[0] == (
        "lines 4-5: not stored: reason max_rows (spool.max_rows = 3 reached;"
        " spool.overflow = drop_newest)"
    )
    assert status(tmp_path)["dropped"] == {"max_rows": 2}
