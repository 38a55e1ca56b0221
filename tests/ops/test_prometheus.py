"""Prometheus endpoint: values read at scrape time, port freed on stop, missing extra."""

from __future__ import annotations

import re
import socket
import sys
import urllib.request
from pathlib import Path

import pytest

from mqttspool import __version__
from mqttspool.config import Settings, load_config
from mqttspool.counters import BROKER_CONNECTED, MESSAGES_PUBLISHED, SENSOR_READS, Counters
from mqttspool.errors import ConfigError
from mqttspool.prometheus import DROP_REASONS, MetricsServer
from mqttspool.spool import SpoolStats

NOW_US = 1_795_651_200_000_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _settings(port: int) -> Settings:
    return load_config(
        None,
        {
            "MQTTSPOOL_METRICS__ENABLED": "true",
            "MQTTSPOOL_METRICS__HOST": "127.0.0.1",
            "MQTTSPOOL_METRICS__PORT": str(port),
        },
    )


def _stats() -> SpoolStats:
    return SpoolStats(
        path="/tmp/x.db",
        epoch="9f3c2a1b",
        depth=42,
        oldest_ts_us=NOW_US - 90_000_000,
        dead_letters=3,
        dropped={"max_rows": 7, "disk_full": 1},
        last_publish_us=None,
    )


def _scrape(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body: bytes = resp.read()
    return [line for line in body.decode().splitlines() if line.startswith("mqttspool_")]


def test_scrape_reads_spool_and_telemetry_at_scrape_time() -> None:
    counters = Counters()
    counters.inc(MESSAGES_PUBLISHED, n=5)
    counters.set(BROKER_CONNECTED, 1)
    counters.inc(SENSOR_READS, ("bme280", "ok"), 4)
    counters.inc(SENSOR_READS, ("bme280", "error"))
    port = _free_port()
    server = MetricsServer(_settings(port), counters, _stats, clock=lambda: NOW_US / 1e6)
    server.start()
    try:
        assert _scrape(port) == [
            "mqttspool_spool_messages 42.0",
            "mqttspool_spool_oldest_message_age_seconds 90.0",
            'mqttspool_messages_dropped_total{reason="corrupt"} 0.0',
            'mqttspool_messages_dropped_total{reason="disk_full"} 1.0',
            'mqttspool_messages_dropped_total{reason="max_age"} 0.0',
            'mqttspool_messages_dropped_total{reason="max_rows"} 7.0',
            'mqttspool_messages_dropped_total{reason="min_free_bytes"} 0.0',
            'mqttspool_messages_dropped_total{reason="purged"} 0.0',
            'mqttspool_messages_dropped_total{reason="spool_error"} 0.0',
            "mqttspool_dead_letters 3.0",
            "mqttspool_messages_published_total 5.0",
            "mqttspool_broker_connected 1.0",
            "mqttspool_readings_paused 0.0",
            'mqttspool_sensor_reads_total{result="error",sensor="bme280"} 1.0',
            'mqttspool_sensor_reads_total{result="ok",sensor="bme280"} 4.0',
            f'mqttspool_build_info{{version="{__version__}"}} 1.0',
        ]
        counters.inc(MESSAGES_PUBLISHED, n=2)
        assert "mqttspool_messages_published_total 7.0" in _scrape(port)
    finally:
        server.stop()
    # The port is free again: a new server (e.g. after a restart) can listen on it.
    again = MetricsServer(_settings(port), counters, _stats)
    again.start()
    try:
        assert again.bound_port == port
        assert "mqttspool_messages_published_total 7.0" in _scrape(port)
    finally:
        again.stop()


def test_spool_closed_leaves_out_spool_metrics_only() -> None:
    port = _free_port()
    server = MetricsServer(_settings(port), Counters(), lambda: None)
    server.start()
    try:
        names = {line.split("{")[0].split(" ")[0] for line in _scrape(port)}
    finally:
        server.stop()
    assert names == {
        "mqttspool_messages_published_total",
        "mqttspool_broker_connected",
        "mqttspool_readings_paused",
        "mqttspool_build_info",
    }


def test_busy_port_is_a_config_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = MetricsServer(_settings(port), Counters(), lambda: None)
        with pytest.raises(ConfigError) as info:
            server.start()
    assert info.value.problems[0][0] == "metrics.port"


def test_missing_extra_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigError) as info:
        MetricsServer(_settings(_free_port()), Counters(), lambda: None)
    assert info.value.problems == [
        (
            "metrics.enabled",
            "needs prometheus-client, which is not installed: pip install 'mqttspool[metrics]'",
        )
    ]


def test_every_drop_reason_the_readme_lists_is_exported_from_zero() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    [row] = [x for x in readme.splitlines() if x.startswith("| `mqttspool_messages_dropped_total")]
    assert sorted(re.findall(r"`([a-z_]+)`", row.split("|")[3])) == sorted(DROP_REASONS)
