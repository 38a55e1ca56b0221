"""Drain throughput, fsyncs and memory: mqttspool's bridge vs raw paho vs the naive batch loop.

Usage::

    python bench/drain.py [--rows 50000] [--windows 20,100] [--latency] [--naive-rows 20000]
    python bench/drain.py --rows 2600000 --windows 100     # a month at 1 reading/s

Everything runs against a local mosquitto on an ephemeral 127.0.0.1 port
(shipped mosquitto.conf: max_inflight_messages 1000, set_tcp_nodelay true).
For each window (``bridge.max_inflight``; default 20 = mosquitto's default
Receive Maximum, and 100), in the same run:

* ``mqttspool``: ``mqttspool drain`` (subprocess) on a spool holding the
  backlog -- leases, renders, publishes, deletes on PUBACK in batches --
  timed, with its RSS sampled every 0.25 s (printed as a curve for big runs);
* ``fsyncs``: the same drain once more under ``strace -f --seccomp-bpf -c -e
  trace=fsync,fdatasync`` (only those syscalls stop the process), reported
  per 1,000 readings (``bridge.max_resend`` allows about one per 1,000);
* ``raw paho``: the same payloads published pipelined with the same window
  (no SQLite), paho's own in-flight limit off, window enforced by the caller;
  at most 100,000 of them (the payloads are held in memory);
* with ``--latency`` the same through a proxy adding 50 ms each way, and the
  naive loop (select the 50 oldest, publish, wait for every PUBACK, delete).

Prints msgs/s and the ratio mqttspool / raw paho of the same run.
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
from typing import Any

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

DEVICE = "bench"
MAX_ROWS = 10_000_000


def fill_spool(path: Path, rows: int) -> None:
    """A spool with ``rows`` readings."""
    # max_rows above the backlog: a month of readings must not be cut by the default bound.
    spool = open_spool(SpoolConfig(path=str(path), synchronous="normal", max_rows=MAX_ROWS))
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


def drain_env(spool: Path, port: int, window: int) -> dict[str, str]:
    """The environment of ``mqttspool drain`` on ``spool`` (everything else default)."""
    env = dict(os.environ)
    env.update(
        {
            "MQTTSPOOL_SPOOL__PATH": str(spool),
            "MQTTSPOOL_BROKER__HOST": "127.0.0.1",
            "MQTTSPOOL_BROKER__PORT": str(port),
            "MQTTSPOOL_BRIDGE__MAX_INFLIGHT": str(window),
            "MQTTSPOOL_SPOOL__MAX_ROWS": str(MAX_ROWS),
            "MQTTSPOOL_DEVICE__ID": DEVICE,
            "MQTTSPOOL_LOG__LEVEL": "warning",
        }
    )
    env.pop("MQTTSPOOL_CONFIG", None)
    return env


DRAIN = [sys.executable, "-m", "mqttspool", "drain", "--timeout", "1800"]


def run_mqttspool(spool: Path, port: int, rows: int, window: int) -> dict[str, Any]:
    """``mqttspool drain`` on the spool; returns rate and RSS figures."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(DRAIN, env=drain_env(spool, port, window), stdout=subprocess.DEVNULL)
    samples: list[tuple[float, int]] = []
    while proc.poll() is None:
        samples.append((time.perf_counter() - t0, rss_kib(proc.pid)))
        time.sleep(0.25)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"mqttspool drain failed with exit {proc.returncode}")
    rss = [kib for _, kib in samples if kib]
    step = max(1, len(samples) // 12)
    return {
        "rate": rows / elapsed,
        "elapsed": elapsed,
        "rss_start": rss[min(4, len(rss) - 1)] if rss else 0,
        "rss_peak": max(rss, default=0),
        "rss_end": rss[-1] if rss else 0,
        "curve": [(round(t), kib) for t, kib in samples[::step] if kib],
    }


def count_fsyncs(spool: Path, port: int, window: int) -> int:
    """fsync + fdatasync calls of one ``mqttspool drain`` of ``spool`` (under strace)."""
    with tempfile.NamedTemporaryFile(suffix=".strace") as out:
        cmd = ["strace", "-f", "--seccomp-bpf", "-c", "-e", "trace=fsync,fdatasync", "-o", out.name]
        subprocess.run(
            cmd + DRAIN, env=drain_env(spool, port, window), stdout=subprocess.DEVNULL, check=True
        )
        table = Path(out.name).read_text()
    calls = 0
    for line in table.splitlines():
        fields = line.split()
        if fields and fields[-1] in ("fsync", "fdatasync"):
            calls += int(fields[3])
    return calls


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


RAW_MAX = 100_000  # raw paho's payloads are held in memory


def scenario(
    broker: MosquittoBroker, tmp: Path, window: int, args: argparse.Namespace, delay: float = 0.0
) -> dict[str, Any]:
    """One row of the results table: mqttspool, its fsyncs, raw paho at ``window``."""
    label = f"w{window}-{'rtt' if delay else 'lo'}"
    fill_spool(tmp / f"{label}.db", args.rows)
    messages = rendered(tmp / f"{label}.db", min(args.rows, RAW_MAX))
    with link(broker.port, delay) as port:
        ours = run_mqttspool(tmp / f"{label}.db", port, args.rows, window)
        raw = raw_paho(port, messages, window)
        naive_rate = 0.0
        if delay:
            naive_rows = min(args.naive_rows, len(messages))
            naive_rate = naive(port, naive_db(tmp / f"{label}-naive.db", messages), naive_rows)
    # The fixed cost of a drain (interpreter and imports, integrity check, connect,
    # shutdown), measured on an empty spool, so the steady rate can be shown too.
    fill_spool(tmp / f"{label}-empty.db", 0)
    with link(broker.port, delay) as port:
        fixed = float(run_mqttspool(tmp / f"{label}-empty.db", port, 0, window)["elapsed"])
    fsyncs = None
    if args.fsyncs and not delay:
        fill_spool(tmp / f"{label}-strace.db", args.rows)
        fsyncs = count_fsyncs(tmp / f"{label}-strace.db", broker.port, window)
    (tmp / f"{label}.db").unlink()
    return {
        "window": window,
        "delay": delay,
        "ours": ours,
        "raw": raw,
        "fsyncs": fsyncs,
        "naive": naive_rate,
        "fixed": fixed,
    }


def report(row: dict[str, Any], rows: int) -> None:
    """Print one scenario."""
    ours, raw = row["ours"], row["raw"]
    where = "rtt 100 ms" if row["delay"] else "loopback"
    print(f"\n[{where}] {rows} readings, window {row['window']}")
    print(
        f"  mqttspool drain : {ours['rate']:9.0f} msgs/s"
        f" ({ours['elapsed']:.1f} s, process start included)"
    )
    print(f"  raw paho        : {raw:9.0f} msgs/s  -> mqttspool/raw = {ours['rate'] / raw:.2f}")
    steady = rows / max(1e-9, ours["elapsed"] - row["fixed"])
    print(
        f"  without start-up: {steady:9.0f} msgs/s  -> mqttspool/raw = {steady / raw:.2f}"
        f" (an empty drain takes {row['fixed']:.2f} s)"
    )
    if row["fsyncs"] is not None:
        per_k = row["fsyncs"] * 1000 / rows
        print(
            f"  fsync+fdatasync : {row['fsyncs']:9d} in the drain = {per_k:.2f} per 1,000 readings"
        )
    if row["naive"]:
        print(
            f"  naive batch 50  : {row['naive']:9.0f} msgs/s"
            f"  -> mqttspool/naive = {ours['rate'] / row['naive']:.1f}x"
        )
    print(
        f"  mqttspool RSS   : start {ours['rss_start']} KiB, peak {ours['rss_peak']} KiB,"
        f" end {ours['rss_end']} KiB"
    )
    if rows >= 500_000:
        print(f"  RSS over time (s, KiB): {ours['curve']}")


def main() -> None:
    """Run every scenario and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--windows", default="20,100", help="bridge.max_inflight values")
    parser.add_argument("--latency", action="store_true", help="also through a 100 ms RTT proxy")
    parser.add_argument("--naive-rows", type=int, default=3_000)
    parser.add_argument("--no-fsyncs", dest="fsyncs", action="store_false", help="skip strace")
    args = parser.parse_args()
    windows = [int(w) for w in args.windows.split(",")]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        broker = MosquittoBroker(tmp / "broker")
        broker.start()
        try:
            print(f"mosquitto on 127.0.0.1:{broker.port} (max_inflight_messages 1000, nodelay)")
            for window in windows:
                report(scenario(broker, tmp, window, args), args.rows)
                if args.latency:
                    report(scenario(broker, tmp, window, args, delay=0.05), args.rows)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
