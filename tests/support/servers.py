"""Only a test marked ``integration`` may start a real server.

``pytest -m "not integration"`` is the fast inner loop: it must start no mosquitto,
no PostgreSQL, no strict MQTT broker and no long-running ``mqttspool`` process.
Two checks keep it so (both in ``tests/conftest.py``):

* at collection, a test that requests a server fixture (:data:`SERVER_FIXTURES`)
  without the marker is an error;
* at run time, every helper that starts a server calls :func:`starting` first,
  which fails a test that is not marked -- this catches servers started without a
  fixture (``StrictBroker()``, ``Daemon(...)``, ``PostgresServer``).

Outside pytest (the benches use the same helpers) nothing is checked.
"""

from __future__ import annotations

SERVER_FIXTURES = frozenset(
    {"broker", "broker_factory", "recorder_factory", "postgres_server", "postgres_url"}
)

# None: not inside a pytest test (no check); True/False: the current test's marker.
_marked: bool | None = None
_test: str = ""


class NotMarkedIntegrationError(AssertionError):
    """A test that is not marked ``integration`` tried to start a real server."""


def current_test(nodeid: str | None, marked: bool | None) -> None:
    """Record which test runs now and whether it is marked ``integration`` (conftest)."""
    global _marked, _test
    _marked, _test = marked, nodeid or ""


def starting(what: str) -> None:
    """Raise unless the running test (if any) is marked ``integration``."""
    if _marked is False:
        raise NotMarkedIntegrationError(
            f"{_test} starts {what} but is not marked integration: add "
            "@pytest.mark.integration (or pytestmark = pytest.mark.integration) so that "
            '`pytest -m "not integration"` stays a fast loop without servers'
        )
