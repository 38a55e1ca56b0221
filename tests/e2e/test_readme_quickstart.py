"""The README's quick start, run as written: if the README changes, this follows it; if a
command in it breaks, this fails.

How the blocks are run:

* ``pip install . && mqttspool run`` is checked as text and not executed: the
  test runs in the environment the suite is installed in (``scripts/test``
  does ``pip install -e '.[dev]'``). ``mqttspool`` on the PATH is a shim that
  runs ``python -m mqttspool`` with this interpreter, so the commands run the
  code under test. Its ``run`` half runs in the end-to-end block.
* The end-to-end block runs in bash, in an empty temporary directory holding
  a copy of ``mosquitto/local.conf``. The one thing changed is the broker's
  port, the documented way: the copy's ``listener`` line and
  ``MQTTSPOOL_BROKER__PORT`` name an ephemeral 127.0.0.1 port instead of 1883.
* The hardware check ``mqttspool sensors -c config/pi.toml`` runs as written
  from the repository on this machine, which has none of the hardware: each
  missing sensor is an error line, the rest are read, nothing asks for the
  broker's password file.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from support.broker import find_mosquitto
from support.daemon import clean_env

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")

pytestmark = pytest.mark.integration


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def _blocks(text: str, lang: str = "sh") -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.DOTALL)


QUICK_START = _blocks(_section("Quick start"))


def _free_port() -> int:
    """An ephemeral 127.0.0.1 port (bound, then released for mosquitto)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _shim(bin_dir: Path) -> None:
    """``mqttspool`` = this interpreter running the code under test."""
    bin_dir.mkdir()
    shim = bin_dir / "mqttspool"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mqttspool "$@"\n')
    shim.chmod(0o755)


def _env(tmp_path: Path, **variables: str) -> dict[str, str]:
    _shim(tmp_path / "bin")
    tools = [str(tmp_path / "bin"), os.path.dirname(find_mosquitto())]
    path = os.pathsep.join([*tools, os.environ.get("PATH", "")])
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return clean_env(PATH=path, PYTHONPATH=pythonpath, **variables)


def test_the_quick_start_keeps_its_two_headline_commands() -> None:
    assert QUICK_START[0].strip() == "pip install . && mqttspool run"
    assert QUICK_START[1].strip() == "scripts/test"
    assert (REPO / "pyproject.toml").read_text().count('mqttspool = "mqttspool.cli:main"') == 1


def _end_to_end_block() -> str:
    [block] = [b for b in QUICK_START if "mosquitto -c mosquitto/local.conf" in b]
    return block


def _run_block(block: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``block`` in bash -e, in its own process group (ended by its PID if it hangs)."""
    proc = subprocess.Popen(
        ["bash", "-e", "-c", block],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the quick start hung:\n{out}\n{err}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_the_end_to_end_quick_start_runs_as_written(tmp_path: Path) -> None:
    port = _free_port()
    work = tmp_path / "work"
    (work / "mosquitto").mkdir(parents=True)
    local = (REPO / "mosquitto" / "local.conf").read_text(encoding="utf-8")
    assert "\nlistener 1883 127.0.0.1\n" in local
    (work / "mosquitto" / "local.conf").write_text(
        local.replace("\nlistener 1883 ", f"\nlistener {port} ")
    )
    assert shutil.which("sqlite3"), (
        "the quick start uses the sqlite3 shell (apt-get install sqlite3)"
    )
    env = _env(tmp_path, MQTTSPOOL_BROKER__PORT=str(port))
    result = _run_block(_end_to_end_block(), work, env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # watch printed readings of the simulated sensor, without duplicates or gaps
    watched = [line for line in out.splitlines() if re.match(r"\S+Z \S+/simulated/\S+ = ", line)]
    assert watched, out + result.stderr
    assert "DUPLICATE" not in out and "GAP" not in out
    # the README's SQL found the latest value of each simulated metric in ingest's database
    header = "device|sensor|metric|value|unit|ts"
    rows = out[out.index(header) :].splitlines()[1:]
    latest = {r.split("|")[2]: f"{float(r.split('|')[3]):g}" for r in rows if "|simulated|" in r}
    last_watched = {}
    for line in watched:  # watch prints in arrival order: the last line of a metric is its latest
        match = re.search(r"/simulated/(\S+) = (\S+)", line)
        assert match
        last_watched[match[1]] = match[2]
    assert latest and latest == last_watched, out
    assert "stopped cleanly" in result.stderr  # `kill %3` stopped run gracefully
    # the README's gap query over the same database: one epoch, nothing missing
    [gaps] = _blocks(_section("Consuming the data"), "sql")
    with sqlite3.connect(work / "mqttspool-ingest.db") as conn:
        [(_epoch, _devices, first, last, received, missing)] = conn.execute(gaps).fetchall()
    assert (missing, received) == (0, last - first + 1)


def test_the_enqueue_example_in_the_readme_and_in_help_stores_a_reading(tmp_path: Path) -> None:
    [example] = [b for b in _blocks(README) if "| mqttspool enqueue" in b]
    env = _env(tmp_path, MQTTSPOOL_SPOOL__PATH=str(tmp_path / "spool.db"))
    result = _run_block(example, tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert "stored 1 reading(s), rejected 0 line(s)" in result.stderr
    help_text = subprocess.run(
        ["mqttspool", "enqueue", "--help"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert example.strip() in help_text


def test_the_hardware_check_on_pi_toml_runs_without_the_broker_password(tmp_path: Path) -> None:
    [block] = [b for b in _blocks(_section("Wiring sensors")) if "sensors -c config/pi.toml" in b]
    [check] = [line for line in block.splitlines() if line.split("#")[0].strip().endswith(".toml")]
    assert not Path("/dev/i2c-1").exists(), "this test expects a machine without I2C"
    result = _run_block(check, REPO, _env(tmp_path))
    assert result.returncode == 1, result.stderr  # 1: some sensors failed; 2 would be config
    assert "password_file" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("climate    ERROR  /dev/i2c-1 does not exist")
    assert lines[1].startswith("soil_temp  ERROR  sensor not present")
    assert any(line.startswith("system     uptime") for line in lines)
    assert not Path("/var/lib/mqttspool").exists()  # spool.path's directory is not created
