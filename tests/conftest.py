"""Fixtures for integration tests against a real mosquitto.

* `certs` (session) — test PKI (`support.certs.CertBundle`).
* `broker` — a started plain broker (`support.broker.MosquittoBroker`).
* `broker_factory` — start variants: `broker_factory("auth")`,
  `broker_factory("tls", require_certificate=True)`,
  `broker_factory(max_inflight_messages=20)`.
* `proxy_factory` — `proxy_factory(broker, delay=0.05)` → `support.proxy.TcpProxy`.
* `postgres_server` (session) / `postgres_url` — a real PostgreSQL on an ephemeral
  127.0.0.1 port (`support.postgres`); `postgres_url` is a fresh database per test.
* `recorder_factory` — `recorder_factory(broker, port=proxy.port)` → a
  subscribed `support.recorder.Recorder`.

Everything a factory made is stopped when the test ends. Without the
mosquitto (or openssl) binary these fixtures skip the test — or fail it when
the environment variable CI is "true", so CI cannot pass by skipping.

A test that starts a real server must be marked ``integration`` (see
`support.servers`): requesting a server fixture without the marker is a
collection error, starting a server by hand without it fails the test. So
``pytest -m "not integration"`` is a fast loop that starts no server.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.broker import (
    BrokerFactory,
    BrokerKind,
    MosquittoBroker,
    MosquittoMissingError,
    find_mosquitto,
)
from support.certs import CertBundle, OpensslMissingError, find_openssl, generate_certs
from support.ci import unavailable
from support.postgres import PostgresMissingError, PostgresServer
from support.proxy import Endpoint, ProxyFactory, TcpProxy
from support.recorder import DEFAULT_TOPIC, Recorder, RecorderFactory
from support.servers import SERVER_FIXTURES, current_test

_LOG_TAIL_LINES = 60


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a test that requests a real server without ``@pytest.mark.integration``."""
    unmarked = [
        f"{item.nodeid} (uses {', '.join(sorted(SERVER_FIXTURES & set(names)))})"
        for item in items
        if (names := getattr(item, "fixturenames", ()))
        and SERVER_FIXTURES & set(names)
        and item.get_closest_marker("integration") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests start a real server but are not marked integration "
            "(add @pytest.mark.integration):\n  " + "\n  ".join(unmarked)
        )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """Tell `support.servers` which test runs, before its fixtures start anything."""
    current_test(item.nodeid, item.get_closest_marker("integration") is not None)
    return (yield)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """No test runs once this one's fixtures are torn down (benches are not checked)."""
    try:
        return (yield)
    finally:
        current_test(None, None)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    """A test CA, server/client certificates and an unrelated CA (made once per session)."""
    try:
        find_openssl()
    except OpensslMissingError as exc:
        unavailable(str(exc))
    return generate_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def broker_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerFactory]:
    """Start mosquitto brokers configured from `mosquitto/`; all stopped at teardown."""
    try:
        find_mosquitto()
    except MosquittoMissingError as exc:
        unavailable(str(exc))
    brokers: list[MosquittoBroker] = []

    def make(
        kind: BrokerKind = "plain",
        *,
        require_certificate: bool = False,
        max_inflight_messages: int | None = None,
    ) -> MosquittoBroker:
        if kind == "auth":
            try:
                find_mosquitto("mosquitto_passwd")
            except MosquittoMissingError as exc:
                unavailable(str(exc))
        bundle: CertBundle | None = request.getfixturevalue("certs") if kind == "tls" else None
        broker = MosquittoBroker(
            tmp_path / f"broker-{len(brokers)}-{kind}",
            kind,
            certs=bundle,
            require_certificate=require_certificate,
            max_inflight_messages=max_inflight_messages,
        )
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in reversed(brokers):
        broker.stop()
        # Shown by pytest only when the test failed.
        tail = broker.log_text().splitlines()[-_LOG_TAIL_LINES:]
        sys.stdout.write(f"--- {broker!r} log (tail) ---\n" + "\n".join(tail) + "\n")


@pytest.fixture
def broker(broker_factory: BrokerFactory) -> MosquittoBroker:
    """A started plain (anonymous) broker on an ephemeral 127.0.0.1 port."""
    return broker_factory()


@pytest.fixture
def proxy_factory() -> Iterator[ProxyFactory]:
    """Start `TcpProxy`s in front of a broker (or any host/port); all closed at teardown."""
    proxies: list[TcpProxy] = []

    def make(target: Endpoint | tuple[str, int], *, delay: float = 0.0) -> TcpProxy:
        host, port = target if isinstance(target, tuple) else (target.host, target.port)
        proxy = TcpProxy(host, port, delay=delay)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def recorder_factory(broker_factory: BrokerFactory) -> Iterator[RecorderFactory]:
    """Start subscribed `Recorder`s; all stopped at teardown (before the brokers)."""
    recorders: list[Recorder] = []

    def make(
        broker: MosquittoBroker,
        *,
        port: int | None = None,
        topic: str = DEFAULT_TOPIC,
        username: str | None = None,
    ) -> Recorder:
        recorder = Recorder.for_broker(broker, port=port, topic=topic, username=username)
        recorders.append(recorder)
        recorder.start()
        return recorder

    yield make
    for recorder in recorders:
        recorder.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (fails under CI=true when not installed)."""
    try:
        server = PostgresServer()
    except PostgresMissingError as exc:
        unavailable(str(exc))
    if importlib.util.find_spec("psycopg") is None:
        unavailable("psycopg is not installed: pip install 'mqttspool[postgres]'")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.create_database()
