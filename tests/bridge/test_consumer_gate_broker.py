"""The consumer gate against a real mosquitto: ``bridge.require_subscribers`` (MQTT v5
PUBACK 0x10) and ``bridge.consumer_topic`` (a retained consumer-state topic)."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from support.broker import MosquittoBroker
from support.daemon import Daemon, mqttspool_env, run_cli, spool_with_backlog
from support.recorder import RecorderFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
STATE_TOPIC = "plant/consumer/state"


def publish_retained(broker: MosquittoBroker, topic: str, payload: bytes) -> None:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def depth(spool: Path) -> int:
    done = run_cli(["status", "--json"], mqttspool_env(spool, 1))
    value: int = json.loads(done.stdout)["depth"]
    return value


def test_no_subscriber_keeps_everything_then_a_subscriber_drains_it(
    broker: MosquittoBroker, recorder_factory: RecorderFactory, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.db"
    spool_with_backlog(spool, 40)
    env = mqttspool_env(spool, broker.port, bridge__require_subscribers="true")
    done = run_cli(["drain", "--timeout", "3"], env)
    assert done.returncode == 1
    assert "40 reading(s) remain" in done.stderr
    assert "no matching subscribers (PUBACK 0x10)" in done.stderr
    assert depth(spool) == 40  # nothing deleted
    snapshots = recorder_factory(broker, topic="mqttspool/edge-01/spool")
    [retained] = snapshots.wait_count(1, 10)
    assert json.loads(retained.payload)["readings_paused"] == "no_subscribers"
    # A running drain finds nobody, pauses, then a subscriber appears: the probe succeeds.
    drain = Daemon(env, ("drain", "--timeout", "30"))
    try:
        drain.wait_log("no matching subscribers", 15)
        recorder = recorder_factory(broker, topic="mqttspool/edge-01/+/+")
        assert drain.wait(30) == 0
        drain.wait_log("a subscriber received a reading: publishing readings again", 1)
    finally:
        drain.stop()
    assert len(recorder.wait_data_ids(40, 10)) == 40
    assert depth(spool) == 0


def test_consumer_topic_holds_readings_until_the_consumer_is_online(
    broker: MosquittoBroker, recorder_factory: RecorderFactory, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.db"
    spool_with_backlog(spool, 30)
    recorder = recorder_factory(broker, topic="mqttspool/edge-01/+/+")
    env = mqttspool_env(spool, broker.port, bridge__consumer_topic=STATE_TOPIC)
    done = run_cli(["drain", "--timeout", "2"], env)  # no state message at all: keep spooling
    assert (done.returncode, depth(spool), recorder.data_ids()) == (1, 30, [])
    publish_retained(broker, STATE_TOPIC, b'{"online": false, "timestamp": 1}')
    drain = Daemon(env, ("drain", "--timeout", "30"))
    try:
        drain.wait_log(f"consumer offline on {STATE_TOPIC}", 15)
        assert recorder.data_ids() == []
        publish_retained(broker, STATE_TOPIC, b'{"online": true, "timestamp": 2}')  # Sparkplug
        assert drain.wait(30) == 0
    finally:
        drain.stop()
    assert len(recorder.wait_data_ids(30, 10)) == 30
    assert depth(spool) == 0
