"""``ingest`` publishes its own STATE; a device gated on it publishes only while ingest runs."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from support.broker import MosquittoBroker
from support.daemon import Daemon, mqttspool_env, run_cli, spool_with_backlog, wait_until

from mqttspool.ingest.state import OFFLINE, ONLINE, IngestState

SUBSCRIBED = r"ingest: subscribed to \$share/"
STATE_TOPIC = "mqttspool-ingest/plant/state"  # the default topic for ingest.group = "plant"


def test_online_only_while_subscribed_and_the_database_takes_writes() -> None:
    sent: list[tuple[bytes, float]] = []
    state = IngestState(lambda payload, wait: sent.append((payload, wait)))
    state.database(True)  # not subscribed yet: nothing to say
    state.subscription(True)
    state.database(False)
    state.database(False)  # no repeat
    state.database(True)
    state.subscription(False)  # connection lost: the broker sends the will
    state.subscription(True)  # resubscribed: say online again
    state.stop()
    assert sent == [
        (ONLINE, 0.0),
        (OFFLINE, 0.0),
        (ONLINE, 0.0),
        (ONLINE, 0.0),
        (OFFLINE, IngestState.STOP_WAIT_S),
    ]


class StateWatcher:
    """Subscribes to the state topic and keeps every payload (retained ones included)."""

    def __init__(self, port: int) -> None:
        self.payloads: list[bytes] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(STATE_TOPIC, qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.payloads.append(bytes(msg.payload))

    def last(self) -> dict[str, object] | None:
        with self.lock:
            return json.loads(self.payloads[-1]) if self.payloads else None

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def rows(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM ingest_reading").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_device_gated_on_ingest_state_publishes_only_while_ingest_runs(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    db, spool = tmp_path / "ingest.db", tmp_path / "spool.db"
    spool_with_backlog(spool, 40)
    watcher = StateWatcher(broker.port)
    ingest_env = mqttspool_env(Path("unused.db"), broker.port, ingest__group="plant")
    device_env = mqttspool_env(spool, broker.port, bridge__consumer_topic=STATE_TOPIC)
    started: list[Daemon] = []

    def start(env: dict[str, str], *args: str) -> Daemon:
        started.append(Daemon(env, args))
        return started[-1]

    try:
        ingest = start(ingest_env, "ingest", "--db", str(db))
        ingest.wait_log(SUBSCRIBED, 20)
        wait_until(lambda: watcher.last() == {"online": True}, 10, "state online")
        ingest.terminate()
        assert ingest.wait(15) == 0
        wait_until(lambda: watcher.last() == {"online": False}, 10, "offline at a clean stop")

        drain = start(device_env, "drain", "--timeout", "60")
        drain.wait_log(f"consumer offline on {STATE_TOPIC}", 15)
        assert rows(db) == 0  # held in the spool while ingest is down
        ingest = start(ingest_env, "ingest", "--db", str(db))
        assert drain.wait(60) == 0  # ingest back: online, the backlog drains
        wait_until(lambda: rows(db) == 40, 20, "40 readings ingested")

        ingest.kill9()  # no clean stop: the broker publishes the will
        wait_until(lambda: watcher.last() == {"online": False}, 10, "offline from the will")
        done = run_cli(["status", "--json"], device_env)
        assert json.loads(done.stdout)["depth"] == 0
    finally:
        watcher.stop()
        for daemon in started:
            daemon.stop()
