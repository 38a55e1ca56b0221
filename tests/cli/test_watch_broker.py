"""``python -m mqttspool watch`` against a real broker: topic classification and stopping."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from support.broker import MosquittoBroker
from support.daemon import mqttspool_env

from mqttspool.reading import StoredReading
from mqttspool.wire.payload import render_payload

pytestmark = pytest.mark.integration

PREFIX = "plant/telemetry"  # a prefix with a "/" of its own


def start_watch(
    tmp_path: Path, broker: MosquittoBroker, preexec_fn: Callable[[], object] | None = None
) -> subprocess.Popen[str]:
    """Start ``watch --json`` and return once it has connected and subscribed."""
    env = mqttspool_env(tmp_path / "spool.db", broker.port, topics__prefix=PREFIX)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mqttspool", "watch", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,  # only sets a signal disposition: safe after fork
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    line = ""
    while "subscribed" not in line and time.monotonic() < deadline and proc.poll() is None:
        line = proc.stderr.readline()
    assert f"subscribed to {PREFIX}/#" in line, line
    return proc


def stop(proc: subprocess.Popen[str], signum: int) -> tuple[str, str]:
    proc.send_signal(signum)
    try:
        return proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def publish_retained(broker: MosquittoBroker, messages: dict[str, bytes]) -> None:
    """Retained, so watch gets them on subscribe whenever that happens (no race)."""
    pub = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        infos = [pub.publish(t, p, qos=1, retain=True) for t, p in messages.items()]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        pub.disconnect()
        pub.loop_stop()


def payload(seq: int, sensor: str, metric: str) -> bytes:
    row = StoredReading(seq, "edge-01", sensor, metric, 1.5, None, 1_795_000_000_000_000, True)
    return render_payload(row, "aaaa0000", replay=False)


def test_sensors_named_like_control_topics_are_readings(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    publish_retained(
        broker,
        {
            f"{PREFIX}/edge-01/status": b"online",
            f"{PREFIX}/edge-01/spool": b'{"depth":0}',
            f"{PREFIX}/edge-01/sim/t/state": b"21.5",
            f"{PREFIX}/edge-01/status/state": payload(1, "status", "state"),
            f"{PREFIX}/edge-01/spool/status": payload(2, "spool", "status"),
            f"{PREFIX}/edge-01/state/spool": payload(3, "state", "spool"),
        },
    )
    proc = start_watch(tmp_path, broker)
    assert proc.stdout is not None
    lines = sorted(proc.stdout.readline().rstrip("\n") for _ in range(6))
    out, _err = stop(proc, signal.SIGINT)
    assert proc.returncode == 0
    readings = [json.loads(x) for x in lines if x.startswith("{")]
    assert sorted((d["seq"], d["sensor"], d["metric"]) for d in readings) == [
        (1, "status", "state"),
        (2, "spool", "status"),
        (3, "state", "spool"),
    ]
    assert [x for x in lines if x.startswith("#")] == [
        f"# {PREFIX}/edge-01/sim/t/state: 21.5",
        f"# {PREFIX}/edge-01/spool: " + '{"depth":0}',
        f"# {PREFIX}/edge-01/status: online",
    ]
    summary = json.loads(out.strip().splitlines()[-1])["summary"]
    assert (summary["received"], summary["invalid"]) == (3, 0)
    assert summary["epochs"]["aaaa0000"]["missing"] == 0


def _ignore_sigint() -> None:
    # What a shell's `cmd &` does to a background job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signals_stop_watch_even_when_sigint_starts_ignored(
    tmp_path: Path, broker: MosquittoBroker, signum: int
) -> None:
    proc = start_watch(tmp_path, broker, preexec_fn=_ignore_sigint)
    out, err = stop(proc, signum)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {
        "summary": {"received": 0, "duplicates": 0, "invalid": 0, "epochs": {}}
    }
