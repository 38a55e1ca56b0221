"""mqttspool watch: dedupe on id, seq gaps per epoch, summary; and the real command."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from support.broker import MosquittoBroker
from support.daemon import mqttspool_env

from mqttspool.errors import ReadingError
from mqttspool.reading import StoredReading
from mqttspool.watch import WatchTracker, format_observation
from mqttspool.wire.payload import render_payload
from mqttspool.wire.topics import TopicKind, classify_topic

TS = 1_795_000_000_000_000


def payload(
    seq: int, device: str = "edge-01", epoch: str = "aaaa0000", replay: bool = False
) -> bytes:
    row = StoredReading(seq, device, "sim", "t", 20.0 + seq, "°C", TS + seq % 1000, True)
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
    epochs = summary["epochs"]
    assert isinstance(epochs, dict)
    assert epochs["aaaa0000"] == {
        "devices": ["edge-01"],
        "unique": 4,
        "first_seq": 1,
        "last_seq": 5,
        "missing": 1,
        "missing_ranges": [[4, 4]],
    }


def test_interleaved_devices_of_one_spool_are_not_gaps() -> None:
    """One spool (epoch), seq numbered across devices: only a truly missing seq is a gap."""
    tracker = WatchTracker()
    devices = ["edge-01", "edge-02", "edge-03"]
    obs = [tracker.observe(payload(seq, devices[seq % 3])) for seq in range(1, 10)]
    assert [o.gap for o in obs] == [None] * 9
    assert not any(o.duplicate for o in obs)
    late = tracker.observe(payload(12, "edge-02"))  # 10 and 11 never came
    assert late.gap == (10, 11)
    assert tracker.observe(payload(12, "edge-02")).duplicate  # the same id again
    other = tracker.observe(payload(12, "edge-03"))  # same seq, another id: not a duplicate
    assert (other.duplicate, other.gap) == (False, None)
    summary = tracker.summary()
    assert (summary["received"], summary["duplicates"]) == (12, 1)
    assert summary["epochs"] == {
        "aaaa0000": {
            "devices": devices,
            "unique": 11,
            "first_seq": 1,
            "last_seq": 12,
            "missing": 2,
            "missing_ranges": [[10, 11]],
        }
    }


def test_a_huge_seq_jump_is_one_range_not_a_set_of_numbers() -> None:
    tracker = WatchTracker()
    tracker.observe(payload(1))
    assert tracker.observe(payload(2**62)).gap == (2, 2**62 - 1)
    assert tracker.observe(payload(1000)).filled_gap
    epoch = tracker.summary()["epochs"]
    assert isinstance(epoch, dict)
    assert epoch["aaaa0000"]["missing"] == 2**62 - 3
    assert epoch["aaaa0000"]["missing_ranges"] == [[2, 999], [1001, 2**62 - 1]]


@pytest.mark.parametrize(
    "bad",
    [b"[" * 60_000, b'{"seq":' + b"1" * 5001 + b"}", b"\xff\xfe", b'{"value":' + b"9" * 400 + b"}"],
)
def test_hostile_payloads_are_invalid_not_crashes(bad: bytes) -> None:
    tracker = WatchTracker()
    with pytest.raises(ReadingError):
        tracker.observe(bad)
    assert tracker.summary()["invalid"] == 1


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
    assert summary["epochs"]["aaaa0000"]["missing_ranges"] == [[3, 5]]


@pytest.mark.parametrize(
    ("topic", "kind"),
    [
        ("mqttspool/edge-01/status", TopicKind.STATUS),
        ("mqttspool/edge-01/spool", TopicKind.SPOOL),
        ("mqttspool/edge-01/batch", TopicKind.BATCH),
        ("mqttspool/edge-01/bme280/temperature", TopicKind.READING),
        ("mqttspool/edge-01/status/state", TopicKind.READING),  # sensor "status", metric "state"
        ("mqttspool/edge-01/spool/status", TopicKind.READING),
        ("mqttspool/status/spool/state", TopicKind.READING),  # device "status", sensor "spool"
        ("mqttspool/edge-01/bme280/temperature/state", TopicKind.STATE),
        ("mqttspool/edge-01/bme280/temperature/other", TopicKind.OTHER),
        ("mqttspool/edge-01/state", TopicKind.OTHER),
        ("mqttspool/edge-01", TopicKind.OTHER),
        ("mqttspool/a/b/c/d/e", TopicKind.OTHER),
        ("elsewhere/edge-01/status", TopicKind.READING),  # outside the prefix: the payload decides
    ],
)
def test_topics_are_classified_by_depth_and_position(topic: str, kind: TopicKind) -> None:
    assert classify_topic(topic, "mqttspool") is kind
    assert classify_topic(f"plant/telemetry/{topic}", "plant/telemetry/mqttspool") is kind


def test_a_prefix_with_slashes_is_stripped_whole() -> None:
    assert classify_topic("plant/telemetry/edge-01/status", "plant/telemetry") is TopicKind.STATUS
    # Under the shorter prefix "plant", the same topic is device telemetry's reading.
    assert classify_topic("plant/telemetry/edge-01/status", "plant") is TopicKind.READING


def test_text_summary_lists_each_epoch_with_its_devices(capsys: pytest.CaptureFixture[str]) -> None:
    from mqttspool.cli.runtime import _print_summary  # noqa: PLC0415 - the CLI's printer

    tracker = WatchTracker()
    for seq, device in [(1, "edge-01"), (2, "edge-02"), (4, "edge-01"), (4, "edge-01")]:
        tracker.observe(payload(seq, device))
    _print_summary(tracker.summary(), as_json=False)
    assert capsys.readouterr().err.splitlines() == [
        "# summary: 4 received, 1 duplicate(s), 0 invalid",
        "#   epoch aaaa0000 (edge-01, edge-02): 3 unique, seq 1..4, 1 missing [[3, 3]]",
    ]
