"""Drain throughput and memory: mqttspool's bridge vs raw paho vs the naive batch loop.

Usage::

    python bench/drain.py [--rows 100000] [--naive-rows 20000] [--big 1000000]

Everything runs against a local mosquitto on an ephemeral 127.0.0.1 port
(shipped mosquitto.conf: max_inflight_messages 1000, set_tcp_nodelay true),
first on loopback, then through a latency proxy adding 50 ms each way
(a cellular-like 100 ms RTT). In the same run it measures:

* ``mqttspool``: ``mqttspool drain`` (subprocess) on a spool holding the
  backlog — leases, renders, publishes, deletes on PUBACK in batches;
* ``raw paho``: the same payloads published pipelined with the same window
  (no SQLite), paho's own in-flight limit off, window enforced by the caller;
* ``naive``: select the 50 oldest rows, publish, wait for all PUBACKs,
  delete them, repeat.

and prints msgs/s and the ratios, plus RSS of the mqttspool process at start,
peak and end (and an RSS curve for the ``--big`` run).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support.broker import MosquittoBroker  # noqa: E402
from support.proxy import TcpProxy  # noqa: E402

from mqttspool.config import SpoolConfig  # noqa: E402
from mqttspool.reading import Reading  # noqa: E402
from mqttspool.spool import open_spool  # noqa: E402
from mqttspool.wire.payload import render_payload  # noqa: E402

WINDOW = 1000  # = the shipped mosquitto.conf max_inflight_messages (Receive Maximum)
DEVICE = "bench"


def fill_spool(path: Path, rows: int) -> None:
    """A spool with ``rows`` readings."""
    spool = open_spool(SpoolConfig(path=str(path), synchronous="normal"))
    now = datetime.now(UTC)
    batch = 5000
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        spool.append(
            [
                Reading(device=DEVICE, sensor="sim", metric="t", value=float(i), ts=now)
                for i in range(start, start + n)
            ]
        )
    spool.close()


def rendered(path: Path, rows: int) -> list[tuple[int, str, bytes]]:
    """(seq, topic, payload) of the spool's rows, as the bridge renders them."""
    spool = open_spool(SpoolConfig(path=str(path)))
    out = [
        (
            r.seq,
            f"mqttspool/{r.device}/{r.sensor}/{r.metric}",
            render_payload(r, spool.epoch, False),
        )
        for r in spool.rows_after(0, rows)
    ]
    spool.close()
    return out


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def run_mqttspool(spool: Path, port: int, rows: int, curve: bool = False) -> dict[str, object]:
    """``mqttspool drain`` on the spool; returns rate and RSS figures."""
    env = dict(os.environ)
    env.update(
        {
            "MQTTSPOOL_SPOOL__PATH": str(spool),
            "MQTTSPOOL_BROKER__HOST": "127.0.0.1",
            "MQTTSPOOL_BROKER__PORT": str(port),
            "MQTTSPOOL_BRIDGE__MAX_INFLIGHT": str(WINDOW),
            "MQTTSPOOL_DEVICE__ID": DEVICE,
            "MQTTSPOOL_LOG__LEVEL": "warning",
        }
    )
    env.pop("MQTTSPOOL_CONFIG", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mqttspool", "drain", "--timeout", "900"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    samples: list[tuple[float, int]] = []
    while proc.poll() is None:
        samples.append((time.perf_counter() - t0, rss_kib(proc.pid)))
        time.sleep(0.25)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"mqttspool drain failed with exit {proc.returncode}")
    rss = [s for _, s in samples if s]
    result: dict[str, object] = {
        "rate": rows / elapsed,
        "rss_start": rss[min(4, len(rss) - 1)] if rss else 0,
        "rss_peak": max(rss) if rss else 0,
        "rss_end": rss[-1] if rss else 0,
    }
    if curve and rss:
        half = len(rss) // 2
        result["rss_first_half_peak"] = max(rss[:half] or rss)
        result["rss_second_half_peak"] = max(rss[half:])
        step = max(1, len(samples) // 12)
        result["curve"] = [(round(t, 1), kib) for t, kib in samples[::step]]
    return result


def raw_paho(port: int, messages: list[tuple[int, str, bytes]], window: int) -> float:
    """Pipelined QoS 1 publishing with a caller-side window; returns msgs/s."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="bench-raw",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.max_inflight_messages_set(0)
    done = threading.Semaphore(0)
    acked = [0]

    def on_publish(*_: object) -> None:
        acked[0] += 1
        done.release()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    t0 = time.perf_counter()
    inflight = 0
    for _seq, topic, payload in messages:
        if inflight >= window:
            done.acquire()
            inflight -= 1
        client.publish(topic, payload, qos=1)
        inflight += 1
    while acked[0] < len(messages):
        done.acquire(timeout=30)
    elapsed = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    return len(messages) / elapsed


def naive(port: int, db: Path, rows: int) -> float:
    """Select 50 oldest, publish, wait for every PUBACK, delete, repeat; returns msgs/s."""
    conn = sqlite3.connect(str(db), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="bench-naive",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.max_inflight_messages_set(0)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    t0 = time.perf_counter()
    sent = 0
    while sent < rows:
        batch = conn.execute(
            "SELECT seq, device, sensor, metric, payload FROM q ORDER BY seq LIMIT 50"
        ).fetchall()
        if not batch:
            break
        infos = [client.publish(f"mqttspool/{d}/{s}/{m}", p, qos=1) for _seq, d, s, m, p in batch]
        for info in infos:
            info.wait_for_publish(30)
            if not info.is_published():
                raise SystemExit("naive: PUBACK timeout")
        marks = ",".join("?" * len(batch))
        conn.execute(f"DELETE FROM q WHERE seq IN ({marks})", [b[0] for b in batch])
        sent += len(batch)
    elapsed = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    conn.close()
    return sent / elapsed


def naive_db(path: Path, messages: list[tuple[int, str, bytes]]) -> Path:
    """A plain sqlite3 queue holding the same payloads for the naive loop."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE q (seq INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT, sensor TEXT,"
        " metric TEXT, payload BLOB)"
    )
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO q (seq, device, sensor, metric, payload) VALUES (?,?,?,?,?)",
        [(seq, DEVICE, "sim", "t", payload) for seq, _t, payload in messages],
    )
    conn.execute("COMMIT")
    conn.close()
    return path


@contextmanager
def link(port: int, delay: float) -> Iterator[int]:
    """The port to use: the broker's own, or a latency proxy's."""
    if delay <= 0:
        yield port
        return
    proxy = TcpProxy("127.0.0.1", port, delay=delay)
    try:
        yield proxy.port
    finally:
        proxy.close()


def scenario(
    broker: MosquittoBroker, tmp: Path, label: str, delay: float, rows: int, naive_rows: int
) -> None:
    """One row of the results table."""
    fill_spool(tmp / f"{label}-ours.db", rows)
    messages = rendered(tmp / f"{label}-ours.db", rows)
    with link(broker.port, delay) as port:
        ours = run_mqttspool(tmp / f"{label}-ours.db", port, rows)
        raw = raw_paho(port, messages, WINDOW)
        nv = naive(port, naive_db(tmp / f"{label}-naive.db", messages[:naive_rows]), naive_rows)
    rate = float(ours["rate"])  # type: ignore[arg-type]
    print(f"\n[{label}] {rows} readings, window {WINDOW}")
    print(f"  mqttspool drain : {rate:9.0f} msgs/s (process start included)")
    print(f"  raw paho        : {raw:9.0f} msgs/s  -> mqttspool/raw   = {rate / raw:.2f}")
    print(f"  naive batch 50  : {nv:9.0f} msgs/s  -> mqttspool/naive = {rate / nv:.1f}x")
    print(
        f"  mqttspool RSS   : start {ours['rss_start']} KiB, peak {ours['rss_peak']} KiB,"
        f" end {ours['rss_end']} KiB"
    )


def main() -> None:
    """Run every scenario and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--naive-rows", type=int, default=20_000)
    parser.add_argument("--latency-naive-rows", type=int, default=3_000)
    parser.add_argument("--big", type=int, default=1_000_000, help="0 skips the RSS run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        broker = MosquittoBroker(tmp / "broker")
        broker.start()
        try:
            print(f"mosquitto on 127.0.0.1:{broker.port} (max_inflight_messages 1000, nodelay)")
            scenario(broker, tmp, "loopback", 0.0, args.rows, args.naive_rows)
            scenario(broker, tmp, "rtt-100ms", 0.05, args.rows, args.latency_naive_rows)
            if args.big:
                fill_spool(tmp / "big.db", args.big)
                big = run_mqttspool(tmp / "big.db", broker.port, args.big, curve=True)
                big_rate = float(big["rate"])  # type: ignore[arg-type]
                print(f"\n[big backlog] {args.big} readings: {big_rate:.0f} msgs/s")
                print(
                    f"  RSS KiB: start {big['rss_start']}, peak {big['rss_peak']}, end"
                    f" {big['rss_end']}; first-half peak {big['rss_first_half_peak']},"
                    f" second-half peak {big['rss_second_half_peak']}"
                )
                print(f"  curve (s, KiB): {big['curve']}")
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
