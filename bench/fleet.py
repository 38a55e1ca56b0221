"""Fleet simulation: many bridges (one per device) against one local broker.

Usage::

    python bench/fleet.py [--devices 8] [--backlog 5000] [--consumers 2] [--payload batch]

Each device is a real ``mqttspool drain`` process with its own spool holding a
backlog (as after a shared outage); all reconnect to one mosquitto on an
ephemeral 127.0.0.1 port at once. Consumers read with a shared subscription
(``$share/ingest/mqttspool/+/+/+``; batches on ``$share/ingest/mqttspool/+/batch``),
decode both forms (:func:`mqttspool.wire.decode`) and dedupe on ``id``, as the
README tells fleet operators to; ``--payload`` picks ``bridge.payload``. The
same run measures the raw baseline: the same number of raw paho clients
(processes) publishing the same payloads pipelined with the same window.
Printed: aggregate readings/s of both, their ratio, and what the consumers saw
(unique ids, duplicates, per-device completeness).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support.broker import MosquittoBroker  # noqa: E402
from support.daemon import spool_with_backlog  # noqa: E402

from mqttspool.wire import decode  # noqa: E402

WINDOW = 500

RAW_PUBLISHER = r"""
import sys, threading, time
import paho.mqtt.client as mqtt
port, device, n, window = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="raw-" + device,
                protocol=mqtt.MQTTv5)
c.max_inflight_messages_set(0)
sem = threading.Semaphore(0)
c.on_publish = lambda *a: sem.release()
c.connect("127.0.0.1", port)
c.loop_start()
topic = "raw/%s/sim/t" % device
payload = ('{"id":"%s:raw:%%d","seq":%%d,"device":"%s","sensor":"sim","metric":"t",'
           '"value":1.0,"unit":null,"ts":"2026-11-26T00:00:00.000Z","time_synced":true,'
           '"replay":true}' % (device, device))
inflight = 0
for i in range(1, n + 1):
    if inflight >= window:
        sem.acquire(); inflight -= 1
    c.publish(topic, (payload % (i, i)).encode(), qos=1); inflight += 1
for _ in range(inflight):
    sem.acquire()
c.disconnect(); c.loop_stop()
"""


class Consumer:
    """A shared-subscription consumer counting ids, of single readings and of batches."""

    def __init__(self, port: int, name: str, topics: list[str]) -> None:
        self.ids: list[str] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=name,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(topic, 1) for topic in topics])
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.startswith("mqttspool/"):  # both forms, through the one decoder
            ids = [r.id for r in decode(msg.topic, bytes(msg.payload), "mqttspool").readings]
        else:  # the raw baseline's own payloads
            ids = [str(json.loads(msg.payload)["id"])]
        with self.lock:
            self.ids.extend(ids)

    def stop(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def run_fleet(port: int, tmp: Path, devices: int, backlog: int, payload: str) -> float:
    """Start one ``mqttspool drain`` per device at once; returns aggregate msgs/s."""
    procs = []
    for d in range(devices):
        device = f"edge-{d:03d}"
        spool = tmp / f"{device}.db"
        spool_with_backlog(spool, backlog, device=device, age_s=3600)  # replay: no linger
        env = {k: v for k, v in os.environ.items() if not k.startswith("MQTTSPOOL_")}
        env.update(
            {
                "MQTTSPOOL_SPOOL__PATH": str(spool),
                "MQTTSPOOL_BROKER__HOST": "127.0.0.1",
                "MQTTSPOOL_BROKER__PORT": str(port),
                "MQTTSPOOL_DEVICE__ID": device,
                "MQTTSPOOL_BRIDGE__MAX_INFLIGHT": str(WINDOW),
                "MQTTSPOOL_BRIDGE__PAYLOAD": payload,
                "MQTTSPOOL_LOG__LEVEL": "warning",
            }
        )
        procs.append(env)
    t0 = time.perf_counter()
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "mqttspool", "drain", "--timeout", "600"],
            env=e,
            stdout=subprocess.DEVNULL,
        )
        for e in procs
    ]
    codes = [p.wait() for p in running]
    elapsed = time.perf_counter() - t0
    if any(codes):
        raise SystemExit(f"a drain failed: exit codes {codes}")
    return devices * backlog / elapsed


def run_raw(port: int, devices: int, backlog: int) -> float:
    """The same number of raw paho publisher processes; returns aggregate msgs/s."""
    t0 = time.perf_counter()
    running = [
        subprocess.Popen(
            [sys.executable, "-c", RAW_PUBLISHER, str(port), f"raw{d}", str(backlog), str(WINDOW)]
        )
        for d in range(devices)
    ]
    codes = [p.wait() for p in running]
    elapsed = time.perf_counter() - t0
    if any(codes):
        raise SystemExit(f"a raw publisher failed: exit codes {codes}")
    return devices * backlog / elapsed


def main() -> None:
    """Run the fleet and the baseline, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--payload", choices=["reading", "batch", "mixed"], default="reading")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        broker = MosquittoBroker(tmp / "broker")
        broker.start()
        try:
            consumers = [
                Consumer(
                    broker.port,
                    f"ingest-{i}",
                    ["$share/ingest/mqttspool/+/+/+", "$share/ingest/mqttspool/+/batch"],
                )
                for i in range(args.consumers)
            ]
            time.sleep(0.5)  # let the SUBACKs land before the fleet starts (bench only)
            fleet = run_fleet(broker.port, tmp, args.devices, args.backlog, args.payload)
            total = args.devices * args.backlog
            deadline = time.monotonic() + 60
            while sum(len(c.ids) for c in consumers) < total and time.monotonic() < deadline:
                time.sleep(0.1)
            for c in consumers:
                c.stop()
            # The baseline gets the same consumer load, on its own topics.
            raw_consumers = [
                Consumer(broker.port, f"raw-ingest-{i}", ["$share/ingest/raw/+/+/+"])
                for i in range(args.consumers)
            ]
            time.sleep(0.5)
            raw = run_raw(broker.port, args.devices, args.backlog)
            for c in raw_consumers:
                c.stop()
        finally:
            broker.stop()
    ids = [i for c in consumers for i in c.ids]
    unique = set(ids)
    per_device: dict[str, set[int]] = {}
    for rid in unique:
        device, _epoch, seq = rid.split(":")
        per_device.setdefault(device, set()).add(int(seq))
    complete = sum(1 for s in per_device.values() if s == set(range(1, args.backlog + 1)))
    print(
        f"fleet: {args.devices} devices × {args.backlog} backlog, window {WINDOW},"
        f" bridge.payload {args.payload}"
    )
    print(f"  mqttspool fleet : {fleet:9.0f} readings/s aggregate (process start included)")
    print(f"  raw paho fleet  : {raw:9.0f} msgs/s aggregate -> ratio {fleet / raw:.2f}")
    shares = ", ".join(str(len(c.ids)) for c in consumers)
    print(
        f"  consumers ($share/ingest): {len(ids)} received ({shares}), {len(unique)} unique,"
        f" {len(ids) - len(unique)} duplicates; {complete}/{args.devices} devices complete"
    )


if __name__ == "__main__":
    main()
