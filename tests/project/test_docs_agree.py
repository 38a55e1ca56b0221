"""The config examples, scripts and .gitignore agree with the README and with what the code does."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
HEADINGS = {line.lstrip("#").strip() for line in README.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("config", sorted((REPO / "config").glob("*.toml")), ids=lambda p: p.name)
def test_config_comments_point_at_sections_that_exist(config: Path) -> None:
    text = config.read_text(encoding="utf-8")
    for section in re.findall(r'"([^"]+)" in the (?:docs|README)', text.replace("\n# ", " ")):
        assert section in HEADINGS, f"{config.name} points at a missing README section {section!r}"


def test_config_quotes_the_measured_batch_saving() -> None:
    [measured] = re.findall(r'\| `bridge\.payload = "batch"` \| [\d.]+ \| ([\d.]+)× \|', README)
    text = (REPO / "config" / "mqttspool.toml").read_text(encoding="utf-8")
    claims = re.findall(r"([\d.]+)x fewer bytes", text)
    assert claims == [measured]


SIDE_FILES = [
    "mqttspool.db",
    "mqttspool.db-wal",
    "mqttspool.db-shm",
    "mqttspool.db.health",
    "mqttspool.db.health.tmp",
    "mqttspool.db.lock",
    "mqttspool.db.reserve",
    "mqttspool.db.salvage",
    "mqttspool.db.salvage-tmp",
    "mqttspool.db.salvage-lock",
    "mqttspool.db.corrupt-20261126T004000Z",
    "data/edge.db.health",
]


@pytest.mark.parametrize("name", SIDE_FILES)
def test_every_spool_side_file_is_ignored_by_git(name: str) -> None:
    proc = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", name],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, f"{name} is not in .gitignore"


def test_scripts_test_says_what_it_installs_before_installing_as_root() -> None:
    lines = (REPO / "scripts" / "test").read_text(encoding="utf-8").splitlines()
    apt = next(i for i, line in enumerate(lines) if "apt-get update" in line)
    said = [line for line in lines[:apt] if "echo" in line and "installing" in line]
    assert said, "scripts/test must say what it apt-installs before doing it"
    assert all(pkg in said[-1] for pkg in ("mosquitto", "fuse3", "postgresql"))


def _directives(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            out[key] = value
    return out


def test_the_local_broker_config_has_the_throughput_settings_and_no_container_path() -> None:
    local = _directives(REPO / "mosquitto" / "local.conf")
    compose = _directives(REPO / "mosquitto" / "mosquitto.conf")
    for key in ("max_inflight_messages", "set_tcp_nodelay", "max_queued_messages"):
        assert local[key] == compose[key], key
    assert not any("/mosquitto/" in value for value in local.values())
