"""``ingest`` checks everything before it creates anything, and has its own metrics port."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon import mqttspool_env, run_cli

from mqttspool.config import IngestConfig


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other process (``run``'s metrics) listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_ingest_metrics_default_to_their_own_port() -> None:
    assert (IngestConfig().metrics.enabled, IngestConfig().metrics.port) == (False, 9109)


def test_a_busy_ingest_metrics_port_fails_before_the_database_is_created(
    tmp_path: Path, busy_port: int
) -> None:
    db = tmp_path / "ingest.db"
    env = mqttspool_env(
        tmp_path / "unused.db",
        1,
        ingest__metrics__enabled="true",
        ingest__metrics__port=busy_port,
    )
    done = run_cli(["ingest", "--db", str(db)], env, timeout=30)
    assert done.returncode == 2, done.stderr
    assert f"ingest.metrics.port: cannot listen on 127.0.0.1:{busy_port}" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("db", "message"),
    [
        ("{tmp}/missing-dir/ingest.db", "ingest.db: directory {tmp}/missing-dir does not exist"),
        ("postgresql://user@127.0.0.1:1", "names no database"),
        ("mysql://user@host/db", "use a SQLite path or postgresql://"),
    ],
)
def test_a_bad_database_setting_fails_before_anything_is_created(
    tmp_path: Path, db: str, message: str
) -> None:
    env = mqttspool_env(tmp_path / "unused.db", 1)
    done = run_cli(["ingest", "--db", db.format(tmp=tmp_path)], env, timeout=30)
    assert done.returncode == 2, done.stderr
    assert message.format(tmp=tmp_path) in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_state_topic_under_the_prefix_fails_before_anything_is_created(tmp_path: Path) -> None:
    env = mqttspool_env(tmp_path / "unused.db", 1, ingest__state_topic="mqttspool/ingest/state")
    done = run_cli(["ingest", "--db", str(tmp_path / "ingest.db")], env, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "ingest.state_topic: 'mqttspool/ingest/state' lies under topics.prefix" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
