"""Corked writes (mqttspool.mqtt.cork): a block of publishes wakes paho's network
thread once, every message still goes out and is acknowledged, and the bridge
corks each fill."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fakes.clock import FakeClock
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from support.broker import BrokerFactory, MosquittoBroker

from bridge.test_step import connect, fill, make_bridge
from mqttspool.config import BrokerConfig
from mqttspool.mqtt.client import new_client
from mqttspool.mqtt.cork import BUFFERED_READS, CORK, CORK_FLUSH_BYTES
from mqttspool.mqtt.fastack import Client


def test_the_installed_paho_has_what_corking_and_buffered_reads_use() -> None:
    """Without these internals the client falls back to paho's own I/O (no error); here
    that fallback would hide a regression, so a paho that lacks them fails the suite."""
    assert CORK
    assert BUFFERED_READS


class CountingSocket:
    """paho's socket-pair writer, counting the wake-up bytes sent through it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sends = 0

    def send(self, data: bytes) -> int:
        self.sends += 1
        return self.sock.send(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def _connected(
    broker_factory: BrokerFactory, broker: MosquittoBroker | None = None
) -> tuple[Client, CountingSocket, dict[int, int]]:
    broker = broker or broker_factory("auth")
    cfg = BrokerConfig(
        host="127.0.0.1",
        port=broker.port,
        username="edge-01",
        password=broker.users["edge-01"],  # type: ignore[arg-type]
    )
    client = new_client(cfg, "cork-edge-01", password=cfg.resolved_password())
    client.max_inflight_messages_set(0)
    acks: dict[int, int] = {}
    connected = threading.Event()
    client.on_publish = lambda _c, _u, mid, reason, _p: acks.__setitem__(mid, reason.value)
    client.on_connect = lambda *_: connected.set()
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    assert connected.wait(10)
    counting = CountingSocket(client._sockpairW)  # type: ignore[arg-type]
    client._sockpairW = counting  # type: ignore[assignment]
    return client, counting, acks


def _wait_acks(acks: dict[int, int], mids: list[int]) -> None:
    deadline = threading.Event()
    for _ in range(200):
        if set(mids) <= set(acks):
            return
        deadline.wait(0.05)
    raise AssertionError(f"PUBACKs missing for mids {sorted(set(mids) - set(acks))}")


@pytest.mark.integration
def test_a_corked_block_wakes_the_network_thread_once_and_every_message_is_acked(
    broker_factory: BrokerFactory,
) -> None:
    client, wakes, acks = _connected(broker_factory)
    try:
        with client.corked():
            mids = [
                client.publish(f"mqttspool/edge-01/cork/{i}", b"21.5", qos=1).mid for i in range(10)
            ]
            assert wakes.sends == 0  # nothing woke the network thread yet
        assert wakes.sends == 1
        _wait_acks(acks, mids)
        uncorked = client.publish("mqttspool/edge-01/cork/plain", b"1", qos=1).mid
        _wait_acks(acks, [uncorked])
        assert wakes.sends == 2  # outside a block: paho's own byte per message
    finally:
        client.disconnect()
        client.loop_stop()
    assert {acks[mid] for mid in mids} == {0x10}  # delivered (no subscriber on v5)


@pytest.mark.integration
def test_a_corked_round_goes_out_in_one_write_and_arrives_whole_and_in_order(
    broker_factory: BrokerFactory,
) -> None:
    """The network thread joins the queued QoS 1 PUBLISH packets into one send():
    the broker still gets ten messages, in order, each acknowledged."""
    broker = broker_factory("auth")
    heard: list[bytes] = []
    subscribed = threading.Event()
    listener = mqtt.Client(CallbackAPIVersion.VERSION2, "cork-listener")
    listener.username_pw_set("dashboard", broker.users["dashboard"])
    listener.on_subscribe = lambda *_: subscribed.set()
    listener.on_message = lambda _c, _u, msg: heard.append(bytes(msg.payload))
    listener.connect("127.0.0.1", broker.port)
    listener.loop_start()
    listener.subscribe("mqttspool/edge-01/round/#", qos=1)
    assert subscribed.wait(10)
    client, _wakes, acks = _connected(broker_factory, broker)
    sends = CountingSocket(client._sock)  # type: ignore[arg-type]
    client._sock = sends  # type: ignore[assignment]
    try:
        with client.corked():
            mids = [
                client.publish(f"mqttspool/edge-01/round/{i}", str(i).encode(), qos=1).mid
                for i in range(10)
            ]
        _wait_acks(acks, mids)
        assert sends.sends == 1
        deadline = time.monotonic() + 10
        while len(heard) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        client.disconnect()
        client.loop_stop()
        listener.disconnect()
        listener.loop_stop()
    assert heard == [str(i).encode() for i in range(10)]
    assert {acks[mid] for mid in mids} == {0}  # success: a subscriber got them


@pytest.mark.integration
def test_a_large_corked_block_wakes_the_network_thread_every_8_kib(
    broker_factory: BrokerFactory,
) -> None:
    client, wakes, acks = _connected(broker_factory)
    payload = b"x" * (CORK_FLUSH_BYTES // 4)
    try:
        with client.corked():
            mids = [
                client.publish("mqttspool/edge-01/cork/big", payload, qos=1).mid for _ in range(9)
            ]
            # Each packet is a little over a quarter of the threshold: a wake per 4.
            assert wakes.sends == 2
        assert wakes.sends == 3  # the rest, at the end of the block
        _wait_acks(acks, mids)
    finally:
        client.disconnect()
        client.loop_stop()


def test_every_message_of_a_fill_is_published_in_one_corked_block(tmp_path: Path) -> None:
    clock = FakeClock()
    bridge, pub, spool = make_bridge(tmp_path, clock, max_inflight=10)
    fill(spool, clock, 25)
    connect(bridge, pub, 0.0)
    blocks: list[tuple[int, bool]] = []  # (block number, inside it) per message
    publish = pub.publish

    def recording(*args: Any, **kwargs: Any) -> int | None:
        blocks.append((pub.corked_blocks, pub.in_cork))
        return publish(*args, **kwargs)

    pub.publish = recording  # type: ignore[method-assign]
    pub.ack([s.mid for s in pub.data()])
    bridge.step(0.1)  # the flush interval passed: deleted, window refilled
    spool.close()
    assert len(blocks) == 10
    assert len(set(blocks)) == 1 and blocks[0][1]  # ten readings, one corked block
