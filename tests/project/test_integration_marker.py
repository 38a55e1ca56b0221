"""``pytest -m "not integration"`` starts no server: a test that would must carry the marker.

The checks live in ``tests/conftest.py`` and ``support.servers``; these tests run
unmarked, so they are exactly the case the checks refuse.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import conftest
import pytest
from support.daemon import Daemon, mqttspool_env
from support.servers import NotMarkedIntegrationError
from support.strict_broker import StrictBroker


class _Item:
    """The three things the collection check reads from a pytest item."""

    def __init__(self, nodeid: str, fixturenames: list[str], marked: bool) -> None:
        self.nodeid = nodeid
        self.fixturenames = fixturenames
        self.marked = marked

    def get_closest_marker(self, name: str) -> object | None:
        return object() if self.marked and name == "integration" else None


def test_an_unmarked_test_that_requests_a_server_fixture_is_a_collection_error() -> None:
    items = [
        _Item("t.py::unmarked_broker", ["tmp_path", "broker", "recorder_factory"], False),
        _Item("t.py::marked_postgres", ["postgres_url"], True),
        _Item("t.py::no_server", ["tmp_path", "certs"], False),
        _Item("t.py::unmarked_postgres", ["postgres_server"], False),
    ]
    with pytest.raises(pytest.UsageError) as refused:
        conftest.pytest_collection_modifyitems(cast("list[pytest.Item]", items))
    assert str(refused.value) == (
        "these tests start a real server but are not marked integration "
        "(add @pytest.mark.integration):\n"
        "  t.py::unmarked_broker (uses broker, recorder_factory)\n"
        "  t.py::unmarked_postgres (uses postgres_server)"
    )
    conftest.pytest_collection_modifyitems(cast("list[pytest.Item]", items[1:3]))  # accepted


def test_an_unmarked_test_cannot_start_a_server_by_hand(tmp_path: Path) -> None:
    me = (
        "tests/project/test_integration_marker.py::"
        + "test_an_unmarked_test_cannot_start_a_server_by_hand"
    )
    with pytest.raises(NotMarkedIntegrationError) as strict:
        StrictBroker()
    assert str(strict.value).startswith(
        f"{me} starts the strict MQTT broker but is not marked integration: add "
        "@pytest.mark.integration"
    )
    with pytest.raises(NotMarkedIntegrationError) as daemon:
        Daemon(mqttspool_env(tmp_path / "spool.db", 1), ("drain",))
    assert str(daemon.value).startswith(
        f"{me} starts `mqttspool drain` as a long-running process but is not marked integration"
    )


@pytest.mark.integration
def test_a_marked_test_may_start_a_server() -> None:
    with StrictBroker() as strict:
        assert strict.port > 0
