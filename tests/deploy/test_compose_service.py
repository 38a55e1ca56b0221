"""The compose deployment, end to end, without Docker.

The `mqttspool` compose service is reproduced as a subprocess: the broker is
mosquitto started from `mosquitto/mosquitto.conf` (the file compose mounts),
the bridge runs `python -m mqttspool run` with `config/compose.toml` and the
environment of docker/compose.yaml and docker/Dockerfile, overriding only what
cannot work outside the containers (broker host/port, spool path, metrics
address). Everything talks over 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from support.broker import MosquittoBroker
from support.recorder import Message, Recorder, RecorderFactory

from mqttspool import __version__

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker" / "compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE_TOML = REPO / "config" / "compose.toml"
DEVICE = "edge-01"  # [device] id in config/compose.toml
STATUS = f"mqttspool/{DEVICE}/status"
SENSOR = "simulated"  # no [[sensors]] in config/compose.toml
METRIC_NAMES = (
    "mqttspool_spool_messages",
    "mqttspool_spool_oldest_message_age_seconds",
    "mqttspool_messages_published_total",
    "mqttspool_messages_dropped_total",
    "mqttspool_dead_letters",
    "mqttspool_broker_connected",
    "mqttspool_sensor_reads_total",
    "mqttspool_build_info",
)
T = TypeVar("T")


# ------------------------------------------------------------------ helpers


def poll(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.05) -> T:
    """Call `probe` until it returns something other than None; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        # A deadline-bounded poll interval, not synchronisation.
        time.sleep(every)


def compose_seconds(key: str) -> int:
    """A `key: <n>s` duration of the mqttspool service in docker/compose.yaml."""
    match = re.search(rf"^\s+{key}: (\d+)s$", COMPOSE.read_text(), re.MULTILINE)
    assert match is not None, f"{key} not in {COMPOSE}"
    return int(match.group(1))


def container_environment() -> dict[str, str]:
    """MQTTSPOOL_* variables the container gets: image ENV, then compose's environment."""
    env = dict(re.findall(r"\b(MQTTSPOOL_[A-Z_]+)=(\S+)", DOCKERFILE.read_text()))
    block = COMPOSE.read_text().split("x-mqttspool-environment: &mqttspool-environment\n")[1]
    for line in block.splitlines():
        match = re.fullmatch(r"  (MQTTSPOOL_[A-Z_]+): (\S+)", line)
        if match is None:
            break
        env[match.group(1)] = match.group(2)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bridge_environment(broker: MosquittoBroker, spool: Path, metrics_port: int) -> dict[str, str]:
    """The compose service's environment with the container-only values replaced."""
    container = container_environment()
    assert container == {
        "MQTTSPOOL_SPOOL__PATH": "/var/lib/mqttspool/mqttspool.db",
        "MQTTSPOOL_CONFIG": "/etc/mqttspool/mqttspool.toml",
    }  # the broker's host is set in one place: config/compose.toml
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("MQTTSPOOL_")}
    return base | {
        **container,
        "MQTTSPOOL_CONFIG": str(COMPOSE_TOML),  # compose mounts it at /etc/mqttspool/...
        "MQTTSPOOL_BROKER__HOST": broker.host,
        "MQTTSPOOL_BROKER__PORT": str(broker.port),
        "MQTTSPOOL_SPOOL__PATH": str(spool),
        "MQTTSPOOL_METRICS__HOST": "127.0.0.1",
        "MQTTSPOOL_METRICS__PORT": str(metrics_port),
    }


def mqttspool(env: dict[str, str], cwd: Path, *args: str, stdin: str | None = None) -> int:
    """Run one CLI command to completion; returns its exit code."""
    proc = subprocess.run(
        [sys.executable, "-m", "mqttspool", *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode


def retained(broker: MosquittoBroker, topic: str, count: int) -> dict[str, Message]:
    """The retained messages a fresh subscriber to `topic` receives (expects `count`)."""
    with Recorder.for_broker(broker, topic=topic) as fresh:
        messages = fresh.wait_count(count, timeout=10)
    assert all(m.retain for m in messages)
    return {m.topic: m for m in messages}


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            body: bytes = resp.read()
    except (urllib.error.URLError, OSError):
        return None
    return body.decode()


def samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value for every mqttspool_ sample."""
    out = {}
    for line in text.splitlines():
        if line.startswith("mqttspool_"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


@pytest.fixture
def bridge_process(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Holds the `mqttspool run` process a test starts; killed (by PID) if still running."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log = tmp_path / "bridge.log"
        if log.exists():
            sys.stdout.write("--- bridge log ---\n" + log.read_text(errors="replace"))


def discovery_doc(metric: str, device_class: str, unit: str) -> dict[str, Any]:
    object_id = f"{DEVICE}_{SENSOR}_{metric}"
    return {
        "name": f"{SENSOR} {metric}",
        "unique_id": f"mqttspool_{object_id}",
        "object_id": object_id,
        "state_topic": f"mqttspool/{DEVICE}/{SENSOR}/{metric}/state",
        "value_template": "{{ value_json.value }}",
        "state_class": "measurement",
        "unit_of_measurement": unit,
        "device_class": device_class,
        "availability_topic": STATUS,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [f"mqttspool_{DEVICE}"],
            "name": DEVICE,
            "manufacturer": "mqttspool",
            "model": "mqttspool edge bridge",
            "sw_version": __version__,
        },
        "origin": {"name": "mqttspool", "sw_version": __version__},
    }


# -------------------------------------------------------------------- tests


def test_compose_service_runs_announces_serves_metrics_and_stops_cleanly(
    broker: MosquittoBroker,
    recorder_factory: RecorderFactory,
    bridge_process: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    metrics_port = free_port()
    env = bridge_environment(broker, tmp_path / "spool" / "mqttspool.db", metrics_port)
    (tmp_path / "spool").mkdir()
    everything = recorder_factory(broker, topic="#")
    with (tmp_path / "bridge.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mqttspool", "run"],
            env=env,
            cwd=tmp_path,  # the image's WORKDIR is the spool volume
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    bridge_process.append(proc)

    # Online, retained.
    everything.wait_for(lambda ms: any(m.topic == STATUS for m in ms), timeout=15)
    assert retained(broker, STATUS, 1)[STATUS].payload == b"online"

    # Home Assistant discovery for both simulated metrics, retained, exact documents.
    configs = {
        "temperature": f"homeassistant/sensor/{DEVICE}_{SENSOR}_temperature/config",
        "humidity": f"homeassistant/sensor/{DEVICE}_{SENSOR}_humidity/config",
    }
    states = {metric: f"mqttspool/{DEVICE}/{SENSOR}/{metric}/state" for metric in configs}
    wanted = set(configs.values()) | set(states.values())
    everything.wait_for(lambda ms: wanted <= {m.topic for m in ms}, timeout=15)
    got = retained(broker, "homeassistant/#", 2)
    assert json.loads(got[configs["temperature"]].payload) == discovery_doc(
        "temperature", "temperature", "°C"
    )
    assert json.loads(got[configs["humidity"]].payload) == discovery_doc(
        "humidity", "humidity", "%"
    )

    # The state topics carry the latest fresh reading of the data topic.
    data = {(d["metric"], d["ts"]): d for d in everything.data()}
    for metric, topic in states.items():
        state = json.loads(next(m.payload for m in everything.messages() if m.topic == topic))
        reading = data[(metric, state["ts"])]
        assert reading["replay"] is False
        assert state == {"value": reading["value"], "unit": reading["unit"], "ts": reading["ts"]}

    # Metrics: every name, plausible values.
    def acked_scrape() -> dict[str, float] | None:
        text = scrape(metrics_port)
        if text is None:
            return None
        values = samples(text)
        return values if values.get("mqttspool_messages_published_total", 0) >= 2 else None

    values = poll("metrics with 2 acknowledged readings", acked_scrape, timeout=15)
    for name in METRIC_NAMES:
        if name != "mqttspool_messages_dropped_total":  # no drops: a family without samples
            assert any(key.split("{")[0] == name for key in values), name
    assert "# TYPE mqttspool_messages_dropped_total counter" in (scrape(metrics_port) or "")
    assert values["mqttspool_broker_connected"] == 1.0
    assert values["mqttspool_dead_letters"] == 0.0
    assert 0 <= values["mqttspool_spool_messages"] <= 2
    assert values["mqttspool_spool_oldest_message_age_seconds"] >= 0
    assert values[f'mqttspool_sensor_reads_total{{result="ok",sensor="{SENSOR}"}}'] >= 1
    assert values[f'mqttspool_build_info{{version="{__version__}"}}'] == 1.0

    # Docker's health check, as the container runs it.
    poll("health exit 0", lambda: True if mqttspool(env, tmp_path, "health") == 0 else None, 15)

    # `docker stop`: SIGTERM, exit 0 well within stop_grace_period.
    grace = compose_seconds("stop_grace_period")
    assert grace == 30
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=grace) == 0
    assert time.monotonic() - started < grace
    assert retained(broker, STATUS, 1)[STATUS].payload == b"offline"
    assert mqttspool(env, tmp_path, "health") == 1


def test_backlog_replay_never_changes_retained_home_assistant_state(
    broker: MosquittoBroker, recorder_factory: RecorderFactory, tmp_path: Path
) -> None:
    env = bridge_environment(broker, tmp_path / "mqttspool.db", free_port())
    now = datetime.now(UTC)

    # One fresh reading per metric sets the retained state (replay=false).
    fresh = [
        {"sensor": SENSOR, "metric": "temperature", "value": 22.5, "unit": "°C"},
        {"sensor": SENSOR, "metric": "humidity", "value": 40.0, "unit": "%RH"},
    ]
    lines = "".join(json.dumps({**r, "ts": now.isoformat()}) + "\n" for r in fresh)
    assert mqttspool(env, tmp_path, "enqueue", stdin=lines) == 0
    assert mqttspool(env, tmp_path, "drain", "--timeout", "20") == 0
    state_filter = f"mqttspool/{DEVICE}/+/+/state"
    before = {t: m.payload for t, m in retained(broker, state_filter, 2).items()}
    assert {t: json.loads(p)["value"] for t, p in before.items()} == {
        f"mqttspool/{DEVICE}/{SENSOR}/temperature/state": 22.5,
        f"mqttspool/{DEVICE}/{SENSOR}/humidity/state": 40.0,
    }

    # A 1000-reading backlog from two days ago (an outage), same sensor and metrics.
    old = now - timedelta(days=2)
    backlog = "".join(
        json.dumps(
            {
                "sensor": SENSOR,
                "metric": "temperature" if i % 2 else "humidity",
                "value": float(i),
                "unit": "°C" if i % 2 else "%RH",
                "ts": (old + timedelta(seconds=10 * i)).isoformat(),
            }
        )
        + "\n"
        for i in range(1000)
    )
    assert mqttspool(env, tmp_path, "enqueue", stdin=backlog) == 0

    watcher = recorder_factory(broker, topic="#")
    assert mqttspool(env, tmp_path, "drain", "--timeout", "30") == 0
    ids = watcher.wait_data_ids(1000, timeout=15)
    assert len(ids) == 1000

    # Delivered because of the subscription: retain flag set; published during the
    # drain: retain flag clear (no retain-as-published), whatever the publisher set.
    replayed = [m for m in watcher.messages() if not m.retain]
    data = [m.data() for m in replayed if m.data() is not None]
    assert len(data) == 1000
    assert all(d is not None and d["replay"] is True for d in data)
    assert [m.topic for m in replayed if m.topic.endswith("/state")] == []
    assert [m.topic for m in replayed if m.topic.startswith("homeassistant/")] == []
    after = {t: m.payload for t, m in retained(broker, state_filter, 2).items()}
    assert after == before
