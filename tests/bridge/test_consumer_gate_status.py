"""The paused state of the consumer gate is visible in ``status`` (from the daemon's heartbeat)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqttspool.cli.app import status_document
from mqttspool.config import load_config
from mqttspool.health import Heartbeat, heartbeat_path, write_heartbeat
from mqttspool.spool import open_spool


@pytest.mark.parametrize(
    ("state", "paused", "shown"),
    [
        ("running", "no_subscribers", "no_subscribers"),
        ("running", "consumer_offline", "consumer_offline"),
        ("running", None, None),
        ("stopped", "no_subscribers", None),  # a stopped daemon holds nothing back
    ],
)
def test_status_shows_why_a_running_daemon_holds_readings_back(
    tmp_path: Path, state: str, paused: str | None, shown: str | None
) -> None:
    settings = load_config(None, environ={"MQTTSPOOL_SPOOL__PATH": str(tmp_path / "spool.db")})
    open_spool(settings.spool).close()
    beat = Heartbeat(state=state, pid=1, wall_us=0, readings_paused=paused)
    write_heartbeat(heartbeat_path(settings.spool.path), beat)
    assert status_document(settings)["readings_paused"] == shown


def test_status_without_a_daemon_says_nothing_is_held_back(tmp_path: Path) -> None:
    settings = load_config(None, environ={"MQTTSPOOL_SPOOL__PATH": str(tmp_path / "spool.db")})
    open_spool(settings.spool).close()
    assert status_document(settings)["readings_paused"] is None
