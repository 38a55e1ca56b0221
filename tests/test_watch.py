"""mqttspool watch: dedupe on id, seq gaps per (device, epoch), summary; and the real command."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from daemon import mqttspool_env
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from support.broker import MosquittoBroker

from mqttspool.errors import ReadingError
from mqttspool.reading import StoredReading, render_payload
from mqttspool.watch import WatchTracker, format_observation

TS = 1_795_000_000_000_000


def payload(
    seq: int, device: str = "edge-01", epoch: str = "aaaa0000", replay: bool = False
) -> bytes:
    row = StoredReading(seq, device, "sim", "t", 20.0 + seq, "°C", TS + seq, True)
    return render_payload(row, epoch, replay)


def test_duplicates_and_gaps_per_stream() -> None:
    tracker = WatchTracker()
    obs = [tracker.observe(payload(s)) for s in (1, 2, 2, 5, 3)]
    assert [o.duplicate for o in obs] == [False, False, True, False, False]
    assert obs[3].gap == (3, 4)
    assert obs[4].filled_gap  # seq 3 arrived late (e.g. live_first)
    other = tracker.observe(payload(7, epoch="bbbb1111"))  # a new epoch is a new stream
    assert other.gap is None and not other.duplicate
    summary = tracker.summary()
    assert summary["received"] == 6 and summary["duplicates"] == 1
    streams = summary["streams"]
    assert isinstance(streams, dict)
    assert streams["edge-01:aaaa0000"] == {
        "unique": 4,
        "first_seq": 1,
        "last_seq": 5,
        "missing": 1,
        "missing_ranges": [[4, 4]],
    }


def test_line_format_flags() -> None:
    tracker = WatchTracker()
    tracker.observe(payload(1))
    line = format_observation(tracker.observe(payload(4, replay=True)))
    assert line == (
        "2026-11-18T11:06:40.000Z edge-01/sim/t = 24 °C  seq=4 id=edge-01:aaaa0000:4"
        "  [replay, GAP 2-3]"
    )


def test_invalid_payload_is_counted() -> None:
    tracker = WatchTracker()
    with pytest.raises(ReadingError):
        tracker.observe(b"online")
    assert tracker.summary()["invalid"] == 1


@pytest.mark.integration
def test_watch_command_against_real_broker(tmp_path: Path, broker: MosquittoBroker) -> None:
    env = mqttspool_env(tmp_path / "spool.db", broker.port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mqttspool", "watch", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "# connected to ..., subscribed to mqttspool/#"
        deadline = time.monotonic() + 10
        while "subscribed" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        assert "subscribed to mqttspool/#" in line
        pub = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
        )
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        infos = [
            pub.publish("mqttspool/edge-01/sim/t", payload(seq), qos=1) for seq in (1, 2, 2, 6)
        ]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
        pub.disconnect()
        pub.loop_stop()
        assert proc.stdout is not None
        docs = [json.loads(proc.stdout.readline()) for _ in range(4)]
        proc.send_signal(signal.SIGINT)
        out, _err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert [(d["seq"], d["duplicate"], d["gap"]) for d in docs] == [
        (1, False, None),
        (2, False, None),
        (2, True, None),
        (6, False, [3, 5]),
    ]
    summary = json.loads(out.strip().splitlines()[-1])["summary"]
    assert summary["duplicates"] == 1
    assert summary["streams"]["edge-01:aaaa0000"]["missing_ranges"] == [[3, 5]]
