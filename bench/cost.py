"""Cost per reading on the device: ``mqttspool run`` vs a raw sqlite3 + paho loop, same run.

Usage::

    python bench/cost.py [--idle 20] [--load 30] [--rates 10] [--dir DIR] [--tree PATH]

Both subjects run AT THE SAME TIME as child processes against one local
mosquitto on an ephemeral 127.0.0.1 port, each through its own small TCP
proxy that counts the bytes on the wire both ways: a shared machine's noise
(another guest, frequency changes) then hits both alike, where two runs one
after the other differed by a quarter. Each uses well under 1% of a core.
From ``/proc/PID`` the bench reads CPU time (``task/*/schedstat``,
nanoseconds, every thread) and ``write_bytes`` /
``cancelled_write_bytes`` (``io``: bytes the process caused to be written to
storage; a page dirtied again before it was written back counts once;
``net`` = ``write_bytes - cancelled_write_bytes``). A subscriber counts the
readings that arrived. Measured, for each subject:

* idle: connected, no sensor due (one sensor with interval 3600 s, after its
  first round): CPU seconds, bytes written and wire bytes per minute;
* at each rate (default 10 readings/s = 5 simulated sensors x 2 metrics at
  1 s; 100/s = interval 0.1 s): CPU, bytes written and wire bytes per reading.

The raw loop (``--raw-worker``, run by the bench itself) has the same
durability as ``mqttspool run`` with ``spool.synchronous = "full"``: one
transaction per round committed with fsync before publishing (QoS 1),
acknowledged rows deleted once the round's PUBACKs are in (one transaction),
same table shape (``INTEGER PRIMARY KEY AUTOINCREMENT``) and payload shape.

Point ``--dir`` at the device's storage (write_bytes means nothing on tmpfs)
and ``--tree`` at another checkout to compare versions. Use ``--idle 120
--load 120`` for firm numbers (the default run takes about a minute and a half).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.broker import MosquittoBroker  # noqa: E402

PREFIX = "mqttspool"
SENSORS = 5  # simulated sensors, 2 metrics each
WARMUP_S = 3.0  # after the first reading arrived: start-up costs are not counted
# Idle: past the daemon's delete of the first round (5 s) and the kernel's first
# writeback of the pages start-up dirtied (30 s dirty expiry, flushed every 5 s).
IDLE_WARMUP_S = 25.0
RAW_SCHEMA = """
CREATE TABLE IF NOT EXISTS reading (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, sensor TEXT NOT NULL,
    metric TEXT NOT NULL, value REAL NOT NULL, unit TEXT, ts_us INTEGER NOT NULL,
    time_synced INTEGER NOT NULL, boot_id TEXT NOT NULL, mono_ns INTEGER NOT NULL)
"""
RAW_INSERT = (
    "INSERT INTO reading (device, sensor, metric, value, unit, ts_us, time_synced, boot_id,"
    " mono_ns) VALUES (?,?,?,?,?,?,?,?,?)"
)


# ------------------------------------------------------------ measuring


@dataclass(frozen=True)
class Sample:
    """What a process had spent at one moment (and the wire bytes and readings so far)."""

    at: float
    cpu_s: float
    write_bytes: int
    cancelled: int
    wire: int
    readings: int

    def minus(self, earlier: Sample) -> Sample:
        """The difference to an earlier sample."""
        return Sample(
            self.at - earlier.at,
            self.cpu_s - earlier.cpu_s,
            self.write_bytes - earlier.write_bytes,
            self.cancelled - earlier.cancelled,
            self.wire - earlier.wire,
            self.readings - earlier.readings,
        )


def cpu_seconds(pid: int) -> float:
    """CPU time of every live thread of ``pid`` (schedstat: ns, not 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
    return total / 1e9


def io_bytes(pid: int) -> tuple[int, int]:
    """(write_bytes, cancelled_write_bytes) of ``pid``."""
    fields = dict(
        line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines() if line
    )
    return int(fields["write_bytes"]), int(fields["cancelled_write_bytes"])


def fs_type(path: Path) -> str:
    """The filesystem type of the mount holding ``path`` (from /proc/mounts)."""
    best, kind = "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        _dev, mount, fstype, *_ = line.split()
        if str(path.resolve()).startswith(mount) and len(mount) > len(best):
            best, kind = mount, fstype
    return kind


class CountingProxy:
    """Forwards 127.0.0.1:``port`` to the broker and counts the bytes both ways."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.bytes = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    self.bytes += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop accepting (open connections end with their peers)."""
        self._server.close()


class ReadingCounter:
    """Counts one device's data messages (``prefix/device/sensor/metric``) at the broker."""

    def __init__(self, port: int, device: str) -> None:
        self.count = 0
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"counter-{device}")
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(f"{PREFIX}/{device}/+/+", qos=0)
        self._client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.count += 1

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()


# ------------------------------------------------------------- subjects


@dataclass
class Subject:
    """One program under test: how to start it for ``sensors`` sensors at ``interval``."""

    name: str
    device: str  # the device id in its topics
    start: Callable[[Path, int, int, float], subprocess.Popen[bytes]]


def start_mqttspool(tree: Path) -> Callable[[Path, int, int, float], subprocess.Popen[bytes]]:
    """``mqttspool run`` from ``tree`` with simulated sensors."""

    def start(workdir: Path, port: int, sensors: int, interval: float) -> subprocess.Popen[bytes]:
        config = workdir / "mqttspool.toml"
        config.write_text(
            "".join(
                f'[[sensors]]\ntype = "simulated"\nname = "s{i}"\ninterval = {interval}\n'
                f"seed = {i}\n\n"
                for i in range(sensors)
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MQTTSPOOL_")}
        env.update(
            {
                "PYTHONPATH": str(tree),
                "MQTTSPOOL_SPOOL__PATH": str(workdir / "spool.db"),
                "MQTTSPOOL_SPOOL__SYNCHRONOUS": "full",
                "MQTTSPOOL_BROKER__HOST": "127.0.0.1",
                "MQTTSPOOL_BROKER__PORT": str(port),
                "MQTTSPOOL_DEVICE__ID": "cost-mqttspool",
                "MQTTSPOOL_LOG__LEVEL": "warning",
            }
        )
        return subprocess.Popen(
            [sys.executable, "-m", "mqttspool", "-c", str(config), "run"],
            env=env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
        )

    return start


def start_raw(workdir: Path, port: int, sensors: int, interval: float) -> subprocess.Popen[bytes]:
    """This file's ``--raw-worker``."""
    return subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--raw-worker",
            f"--port={port}",
            f"--db={workdir / 'raw.db'}",
            f"--sensors={sensors}",
            f"--interval={interval}",
        ],
        cwd=workdir,
    )


@dataclass
class Running:
    """One subject started for a measurement, with its proxy and reading counter."""

    subject: Subject
    proxy: CountingProxy
    counter: ReadingCounter
    proc: subprocess.Popen[bytes] | None = None

    def sample(self) -> Sample:
        """What it has spent so far."""
        assert self.proc is not None
        return sample(self.proc.pid, self.proxy, self.counter)

    def wait_first_reading(self, deadline: float) -> None:
        """Until the broker got its first reading (RuntimeError if it exits or is late)."""
        assert self.proc is not None
        while self.counter.count == 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                exit_code = self.proc.poll()
                raise RuntimeError(f"{self.subject.name}: no reading arrived (exit {exit_code})")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the process, the counter and the proxy."""
        if self.proc is not None:
            stop(self.proc)
        self.counter.close()
        self.proxy.close()


def measure(
    subjects: list[Subject],
    broker_port: int,
    workdir: Path,
    load: tuple[int, float],
    secs: float,
    warmup: float = WARMUP_S,
) -> dict[str, Sample]:
    """Run every subject at once with ``load`` (sensors, interval); what each spent
    during the same ``secs``, once ``warmup`` seconds passed after each one's first
    reading arrived."""
    sensors, interval = load
    running: list[Running] = []
    try:
        for subject in subjects:
            home = workdir / subject.name
            home.mkdir(parents=True)
            run = Running(
                subject, CountingProxy(broker_port), ReadingCounter(broker_port, subject.device)
            )
            running.append(run)
            run.proc = subject.start(home, run.proxy.port, sensors, interval)
        deadline = time.monotonic() + 30
        for run in running:
            run.wait_first_reading(deadline)
        time.sleep(warmup)
        first = [run.sample() for run in running]
        time.sleep(secs)
        return {
            run.subject.name: run.sample().minus(before)
            for run, before in zip(running, first, strict=True)
        }
    finally:
        for run in running:
            run.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def sample(pid: int, proxy: CountingProxy, counter: ReadingCounter) -> Sample:
    """What ``pid`` has spent so far."""
    written, cancelled = io_bytes(pid)
    return Sample(
        time.monotonic(), cpu_seconds(pid), written, cancelled, proxy.bytes, counter.count
    )


# ------------------------------------------------------------ raw worker


def raw_worker(port: int, db: Path, sensors: int, interval: float) -> None:
    """sqlite3 + paho doing what ``mqttspool run`` does, without anything else."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(RAW_SCHEMA)
    acked: queue.SimpleQueue[int] = queue.SimpleQueue()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="cost-raw", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.max_inflight_messages_set(0)
    client.on_publish = lambda _c, _u, mid, _rc, _p: acked.put(mid)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    epoch, boot = uuid.uuid4().hex[:8], str(uuid.uuid4())
    rng = random.Random(0)
    next_due = time.monotonic()
    while True:
        inflight = raw_round(conn, client, sensors, epoch, boot, rng)
        next_due += interval
        done: list[int] = []
        while inflight and (wait := next_due - time.monotonic()) > 0:
            try:
                done.append(inflight.pop(acked.get(timeout=wait)))
            except queue.Empty:
                break
            except KeyError:
                continue
        if done:
            conn.execute("BEGIN")
            conn.execute(f"DELETE FROM reading WHERE seq IN ({','.join('?' * len(done))})", done)
            conn.execute("COMMIT")
        time.sleep(max(0.0, next_due - time.monotonic()))


def raw_round(
    conn: sqlite3.Connection,
    client: mqtt.Client,
    sensors: int,
    epoch: str,
    boot: str,
    rng: random.Random,
) -> dict[int, int]:
    """Insert one round (one transaction, fsync), publish it; returns mid -> seq."""
    ts_us = time.time_ns() // 1000
    rows = [
        (
            "cost-raw",
            f"s{i}",
            metric,
            round(rng.uniform(15, 25), 3),
            unit,
            ts_us,
            1,
            boot,
            time.monotonic_ns(),
        )
        for i in range(sensors)
        for metric, unit in (("temperature", "°C"), ("humidity", "%RH"))
    ]
    cur = conn.cursor()
    cur.execute("BEGIN")
    seqs = []
    for row in rows:
        cur.execute(RAW_INSERT, row)
        seqs.append(int(cur.lastrowid or 0))
    cur.execute("COMMIT")
    inflight = {}
    for seq, (device, sensor, metric, value, unit, *_rest) in zip(seqs, rows, strict=True):
        payload = json.dumps(
            {
                "id": f"{device}:{epoch}:{seq}",
                "seq": seq,
                "device": device,
                "sensor": sensor,
                "metric": metric,
                "value": value,
                "unit": unit,
                "ts": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(ts_us / 1e6)),
                "time_synced": True,
                "replay": False,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        info = client.publish(f"{PREFIX}/{device}/{sensor}/{metric}", payload, qos=1)
        inflight[info.mid] = seq
    return inflight


# ----------------------------------------------------------------- main


def ratio(a: float, b: float) -> str:
    """``a / b`` as ``N.NNx`` (or ``-`` when b is 0)."""
    return f"{a / b:.2f}x" if b else "-"


def report_line(label: str, ours: float, raw: float, fmt: str) -> None:
    """One table row: mqttspool, raw, ratio."""
    print(f"  {label:<38} {format(ours, fmt):>12} {format(raw, fmt):>12} {ratio(ours, raw):>8}")


def report_idle(results: dict[str, Sample]) -> None:
    """Idle figures per minute."""
    ours, raw = results["mqttspool"], results["raw"]
    per_min = [60.0 / s.at for s in (ours, raw)]
    print(f"idle, connected, no sensor due ({ours.at:.0f} s):   mqttspool          raw    ratio")
    report_line("CPU s per minute", ours.cpu_s * per_min[0], raw.cpu_s * per_min[1], ".4f")
    report_line(
        "write_bytes per minute", ours.write_bytes * per_min[0], raw.write_bytes * per_min[1], ".0f"
    )
    report_line(
        "net written per minute (- cancelled)",
        (ours.write_bytes - ours.cancelled) * per_min[0],
        (raw.write_bytes - raw.cancelled) * per_min[1],
        ".0f",
    )
    report_line("wire bytes per minute", ours.wire * per_min[0], raw.wire * per_min[1], ".0f")


def report_load(rate: float, results: dict[str, Sample]) -> None:
    """Per-reading figures at one rate."""
    ours, raw = results["mqttspool"], results["raw"]
    print(
        f"{rate:g} readings/s ({ours.readings} / {raw.readings} readings in {ours.at:.0f} s):"
        "   mqttspool          raw    ratio"
    )
    n = [max(1, s.readings) for s in (ours, raw)]
    report_line("CPU µs per reading", ours.cpu_s / n[0] * 1e6, raw.cpu_s / n[1] * 1e6, ".0f")
    report_line("write_bytes per reading", ours.write_bytes / n[0], raw.write_bytes / n[1], ".0f")
    report_line(
        "net written per reading (- cancelled)",
        (ours.write_bytes - ours.cancelled) / n[0],
        (raw.write_bytes - raw.cancelled) / n[1],
        ".0f",
    )
    report_line("wire bytes per reading", ours.wire / n[0], raw.wire / n[1], ".0f")


def main() -> None:
    """Parse options; run the raw worker or the whole bench."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=float, default=20.0, help="idle seconds measured")
    parser.add_argument("--load", type=float, default=30.0, help="seconds measured per rate")
    parser.add_argument("--rates", default="10", help="readings/s, comma-separated (10,100)")
    parser.add_argument("--dir", type=Path, default=None, help="where the spools go")
    parser.add_argument("--tree", type=Path, default=ROOT, help="mqttspool checkout to run")
    parser.add_argument("--raw-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sensors", type=int, default=SENSORS, help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_worker:
        raw_worker(args.port, args.db, args.sensors, args.interval)
        return
    run_bench(args)


def run_bench(args: argparse.Namespace) -> None:
    """Idle, then every rate, for both subjects; print the tables."""
    subjects = [
        Subject("mqttspool", "cost-mqttspool", start_mqttspool(args.tree)),
        Subject("raw", "cost-raw", start_raw),
    ]
    with tempfile.TemporaryDirectory(prefix="mqttspool-cost-", dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        kind = fs_type(tmp)
        print(f"spools in {tmp} ({kind}); mqttspool from {args.tree}")
        if kind in ("tmpfs", "ramfs"):
            print("WARNING: write_bytes is not counted on tmpfs: use --dir on real storage")
        broker = MosquittoBroker(tmp / "broker")
        broker.start()
        try:
            idle = measure(
                subjects, broker.port, tmp / "idle", (1, 3600.0), args.idle, IDLE_WARMUP_S
            )
            report_idle(idle)
            for rate in (float(r) for r in args.rates.split(",")):
                interval = 2 * SENSORS / rate
                load = measure(
                    subjects, broker.port, tmp / f"{rate:g}", (SENSORS, interval), args.load
                )
                report_load(rate, load)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
