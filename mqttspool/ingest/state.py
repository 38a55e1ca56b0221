"""``ingest``'s own STATE: a retained ``{"online": true|false}`` on ``ingest.state_topic``.

A device with ``bridge.consumer_topic`` set to that topic publishes readings
only while it says online (:mod:`mqttspool.gate`). Online means: subscribed
(the broker's SUBACK came back) AND the database takes writes. The broker
publishes the MQTT will (offline) if ingest dies; a clean stop publishes
offline itself before disconnecting; a database that fails publishes offline
until a write succeeds again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

ONLINE = b'{"online": true}'
OFFLINE = b'{"online": false}'


class IngestState:
    """Publishes online/offline whenever (subscribed and database ok) changes.

    ``publish(payload, wait)`` sends the retained state, waiting up to ``wait``
    seconds for the broker's PUBACK (0 from paho's own thread, which would
    otherwise wait for itself). It is called from paho's thread (subscription)
    and the consumer's (database), so a lock orders the calls.
    """

    STOP_WAIT_S = 5.0

    def __init__(self, publish: Callable[[bytes, float], object]) -> None:
        self._publish = publish
        self._lock = threading.Lock()
        self._subscribed = False
        self._db_ok = True  # the store was opened before ingest subscribes
        self._said: bool | None = None

    def subscription(self, subscribed: bool) -> None:
        """SUBACK received (True) or the connection lost (False: the will says offline)."""
        with self._lock:
            self._subscribed = subscribed
            if not subscribed:
                self._said = None  # nothing can be sent now; say it again after the resubscribe
                return
            self._update()

    def database(self, ok: bool) -> None:
        """The consumer's last write succeeded (True) or the database failed (False)."""
        with self._lock:
            self._db_ok = ok
            self._update()

    def stop(self) -> None:
        """Say offline (a clean stop: the broker does not send the will then)."""
        with self._lock:
            self._subscribed = False
            if self._said is not False:
                self._said = False
                self._publish(OFFLINE, self.STOP_WAIT_S)

    def _update(self) -> None:
        if not self._subscribed:
            return  # not connected (yet): the will, or stop(), says offline
        online = self._db_ok
        if online != self._said:
            self._said = online
            logger.info("ingest: publishing state %s", "online" if online else "offline")
            self._publish(ONLINE if online else OFFLINE, 0.0)
