"""The metrics endpoint is bounded: connections, threads, time per request, hostile input."""

from __future__ import annotations

import contextlib
import gc
import os
import random
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon import spool_with_backlog, wait_until

from mqttspool.config import SpoolConfig, load_config
from mqttspool.counters import Counters
from mqttspool.prometheus import MetricsServer, SharedStats
from mqttspool.spool import Spool, open_spool

LIMITS = (8, 0.5, 1.0)  # 8 clients at once, 0.5 s per read, 1 s per request


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    path = tmp_path / "spool.db"
    spool_with_backlog(path, 2000)
    spool = open_spool(SpoolConfig(path=str(path)))
    yield spool
    spool.close()


@pytest.fixture
def server(spool: Spool) -> Iterator[MetricsServer]:
    port = _free_port()
    settings = load_config(
        None,
        {
            "MQTTSPOOL_METRICS__ENABLED": "true",
            "MQTTSPOOL_METRICS__HOST": "127.0.0.1",
            "MQTTSPOOL_METRICS__PORT": str(port),
        },
    )
    server = MetricsServer(settings, Counters(), spool.stats, limits=LIMITS)
    server.start()
    yield server
    server.stop()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body: bytes = resp.read()
    return body.decode()


def test_sequential_scrapes_keep_the_fd_count_flat(server: MetricsServer) -> None:
    for _ in range(100):
        assert "mqttspool_spool_messages 2000.0" in scrape(server.bound_port)
    before = _fds()
    gc.disable()  # a connection per scrape was freed only by the cycle collector
    try:
        for _ in range(2000):
            scrape(server.bound_port)
        grown = _fds() - before
    finally:
        gc.enable()
    assert grown <= 2  # one SQLite connection for the endpoint, not one per scrape


def _half_sent(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /metr")
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Read until the server closes (a 503 may come first)."""
    while True:
        try:
            if not sock.recv(4096):
                return True
        except OSError:
            return True


def test_half_sent_requests_hold_bounded_threads_released_after_the_deadline(
    server: MetricsServer,
) -> None:
    threads_before = threading.active_count()
    socks = [_half_sent(server.bound_port) for _ in range(100)]
    try:
        wait_until(
            lambda: threading.active_count() - threads_before >= LIMITS[0], 10, "8 busy handlers"
        )
        assert threading.active_count() - threads_before <= LIMITS[0] + 1  # + the stats worker
        assert all(_closed_by_server(sock) for sock in socks)  # 503 at once, or cut at 1 s
    finally:
        for sock in socks:
            sock.close()
    wait_until(lambda: threading.active_count() <= threads_before + 1, 10, "the handlers to finish")
    assert "mqttspool_spool_messages 2000.0" in scrape(server.bound_port)


def _send(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # the server may close before it read everything
            sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(random.Random(1).randbytes(4096), id="random-bytes"),
        pytest.param(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 200_000 + b"\r\n\r\n", id="huge"),
        pytest.param(b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 500 + b"\r\n", id="headers"),
        pytest.param(b"BREW /pot HTCPCP/1.0\r\n\r\n", id="bad-method"),
        pytest.param(b"GET /" + b"x" * 100_000 + b" HTTP/1.0\r\n\r\n", id="long-url"),
        pytest.param(b"\r\n\r\n", id="empty"),
    ],
)
def test_garbage_requests_leave_the_server_answering(server: MetricsServer, garbage: bytes) -> None:
    answer = _send(server.bound_port, garbage)
    assert not answer.startswith(b"HTTP/1.0 200")
    assert "mqttspool_spool_messages 2000.0" in scrape(server.bound_port)


def test_scrapes_within_the_ttl_share_one_statistics_query() -> None:
    now = [0.0]
    calls: list[str] = []
    release = threading.Event()

    def source() -> None:
        calls.append(threading.current_thread().name)
        release.wait(5)

    stats = SharedStats(source, ttl=1.0, clock=lambda: now[0])
    try:
        scrapers = [threading.Thread(target=stats) for _ in range(50)]
        for t in scrapers:
            t.start()
        release.set()
        for t in scrapers:
            t.join(5)
        stats()
        assert len(calls) == 1  # 51 scrapes, one query, while it is fresh
        now[0] = 1.5
        stats()
        stats()
        assert len(calls) == 2
        assert len(set(calls)) == 1  # always the same worker thread (one SQLite connection)
    finally:
        stats.close()
