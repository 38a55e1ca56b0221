"""Bytes on the wire per reading: one JSON message per reading vs zlib batches.

Usage::

    python bench/wire.py [--readings 20000] [--batch-max-readings 1000]

A realistic backlog (10 streams sampled every second, random-walk values with
2-3 decimals, timestamps jittered by a few ms, three days old) is drained by
the real bridge (paho, in-process) through a TCP proxy in front of a local
mosquitto; the proxy counts every byte in both directions (CONNECT, MQTT
headers, PUBACKs, status and snapshot messages included). Modes:

* ``reading v3.1.1``: one JSON message per reading, no MQTT v5 properties
  (the baseline);
* ``reading v5``: the same with topic aliases (mosquitto grants 10);
* ``batch``: ``bridge.payload = "batch"``.

Printed: bytes per reading of each and the ratio to the baseline.

Then the catch-up time of the same backlog over a shaped link (the proxy
caps each direction at ``--kbit`` kbit/s, default 1000, and adds half of
``--rtt-ms`` each way, default 300 ms): from starting the bridge (the
daemon's, with default settings but the payload mode) until a subscriber on
the broker has every reading (the receipt time of the last one), for
``reading v5`` and ``batch`` (``--repeat`` times each ``--max-resend``
value). Printed beside the floor for batches -- the bytes the batch run sent
upstream divided by the bandwidth, plus 5 round trips (TCP and MQTT connect,
the first and last PUBACK) -- and the speed-up over per-reading. In batch
mode ``bridge.max_resend`` defaults to one window of full batches (20 x
``batch_max_readings`` = 20,000), so the whole backlog may be in flight;
with 2000 at most 2000 readings are, and a catch-up takes about
backlog / 2000 round trips.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bridge.test_faults import running_bridge, settings_for  # noqa: E402
from support.broker import MosquittoBroker  # noqa: E402
from support.proxy import TcpProxy  # noqa: E402
from support.recorder import Recorder  # noqa: E402

from mqttspool.config.sections import BATCH_RESEND_WINDOW  # noqa: E402
from mqttspool.reading import Reading  # noqa: E402
from mqttspool.spool import open_spool  # noqa: E402

STREAMS = [
    ("bme280", "temperature", "°C", 21.0, 0.01, 2),
    ("bme280", "humidity", "%RH", 45.0, 0.05, 2),
    ("bme280", "pressure", "hPa", 1013.0, 0.02, 2),
    ("sht3x", "temperature", "°C", 20.5, 0.01, 2),
    ("sht3x", "humidity", "%RH", 48.0, 0.05, 2),
    ("bh1750", "illuminance", "lx", 300.0, 2.0, 1),
    ("ads1115", "voltage", "V", 3.3, 0.001, 3),
    ("ads1115", "current", "A", 0.5, 0.001, 3),
    ("cpu_temp", "temperature", "°C", 48.0, 0.1, 1),
    ("system", "load", None, 0.4, 0.01, 2),
]


def realistic_backlog(n: int, rng: random.Random) -> list[Reading]:
    """``n`` readings: 10 streams every second, random walks, jittered timestamps."""
    start = datetime.now(UTC) - timedelta(days=3)
    values = [s[3] for s in STREAMS]
    out = []
    for i in range(n):
        k = i % len(STREAMS)
        sensor, metric, unit, _start, step, decimals = STREAMS[k]
        values[k] += rng.gauss(0, step)
        ts = start + timedelta(seconds=i // len(STREAMS), microseconds=rng.randint(0, 20_000))
        value = round(values[k], decimals)
        out.append(
            Reading(device="edge-01", sensor=sensor, metric=metric, value=value, unit=unit, ts=ts)
        )
    return out


def measure(broker: MosquittoBroker, tmp: Path, readings: list[Reading], **cfg: object) -> float:
    """Drain ``readings`` through a counting proxy; returns bytes per reading."""
    protocol = str(cfg.pop("protocol", "5"))
    proxy = TcpProxy(broker.host, broker.port)
    try:
        settings = settings_for(tmp, proxy.port, max_inflight=1000, **cfg)
        settings.broker.protocol = protocol  # type: ignore[assignment]
        spool = open_spool(settings.spool)
        spool.append(readings)
        spool.close()
        with running_bridge(settings) as (_bridge, spool):
            deadline = time.monotonic() + 300
            while spool.depth() and time.monotonic() < deadline:
                time.sleep(0.05)
            if spool.depth():
                raise SystemExit(f"drain did not finish: {spool.depth()} readings left")
        return (proxy.bytes_up + proxy.bytes_down) / len(readings)
    finally:
        proxy.close()


def catch_up(
    broker: MosquittoBroker,
    tmp: Path,
    readings: list[Reading],
    link: tuple[float, float],
    **cfg: object,
) -> tuple[float, int]:
    """Seconds until a subscriber has every reading over a shaped link; bytes sent up."""
    rate, rtt = link
    proxy = TcpProxy(broker.host, broker.port, delay=rtt / 2, rate=rate)
    recorder = Recorder.for_broker(broker, client_id="wire-catch-up")
    recorder.start()
    try:
        settings = settings_for(tmp, proxy.port, max_inflight=1000, **cfg)
        spool = open_spool(settings.spool)
        spool.append(readings)
        spool.close()
        t0 = time.monotonic()
        with running_bridge(settings):
            recorder.wait_data_ids(len(readings), timeout=600)
            # When the last reading arrived (stamped on receipt), not when the wait,
            # which polls every 50 ms, noticed.
            done = max(m.arrived for m in recorder.messages() if m.readings())
        return done - t0, proxy.bytes_up
    finally:
        recorder.stop()
        proxy.close()


def main() -> None:
    """Measure every mode against the same backlog and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=20_000)
    parser.add_argument("--batch-max-readings", type=int, default=1000)
    parser.add_argument("--kbit", type=float, default=1000.0, help="link bandwidth, kbit/s")
    parser.add_argument("--rtt-ms", type=float, default=300.0, help="link round trip, ms")
    parser.add_argument(
        "--max-resend",
        default="default,2000",
        help="bridge.max_resend values for batch catch-up ('default': not set, i.e."
        " 20 x batch_max_readings in batch mode)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="batch catch-ups per value")
    args = parser.parse_args()
    readings = realistic_backlog(args.readings, random.Random(42))
    modes: list[tuple[str, dict[str, object]]] = [
        ("reading v3.1.1", {"protocol": "3.1.1"}),
        ("reading v5", {}),
        ("batch", {"payload": "batch", "batch_max_readings": args.batch_max_readings}),
    ]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        broker = MosquittoBroker(tmp / "broker")
        broker.start()
        try:
            results = []
            for i, (name, cfg) in enumerate(modes):
                (tmp / str(i)).mkdir()
                results.append((name, measure(broker, tmp / str(i), readings, **cfg)))
            link = (args.kbit * 1000 / 8, args.rtt_ms / 1000)
            (tmp / "reading").mkdir()
            reading_s, _ = catch_up(broker, tmp / "reading", readings, link)
            batched: list[tuple[str, float, int]] = []
            for resend in args.max_resend.split(","):
                cfg = dict(modes[2][1])
                if resend != "default":
                    cfg["max_resend"] = int(resend)
                for run in range(args.repeat):
                    where = tmp / f"batch-{resend}-{run}"
                    where.mkdir()
                    batched.append((resend, *catch_up(broker, where, readings, link, **cfg)))
        finally:
            broker.stop()
    print(f"bytes on the wire per reading ({args.readings} readings, both directions):")
    base = results[0][1]
    for name, per_reading in results:
        print(
            f"  {name:15s}: {per_reading:7.2f} B/reading"
            f"  (baseline / this = {base / per_reading:.1f}x)"
        )
    print(
        f"catch-up of {args.readings} readings over {args.kbit:g} kbit/s, {args.rtt_ms:g} ms RTT"
        " (until a subscriber has every reading):"
    )
    print(f"  reading v5 (max_resend 2000)   : {reading_s:7.2f} s")
    default = args.batch_max_readings * BATCH_RESEND_WINDOW
    for resend, batch_s, batch_bytes in batched:
        floor = batch_bytes / link[0] + 5 * link[1]
        label = f"{default} (default)" if resend == "default" else resend
        print(
            f"  batch (max_resend {label:>15s}): {batch_s:7.2f} s"
            f"  -> {reading_s / batch_s:.1f}x faster than per-reading;"
            f" floor {floor:.2f} s ({batch_bytes} B up / bandwidth + 5 RTT)"
            f" -> {batch_s / floor:.2f}x the floor"
        )


if __name__ == "__main__":
    main()
