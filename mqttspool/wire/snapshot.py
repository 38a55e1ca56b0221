"""The spool snapshot: ``status --json`` and the retained ``{prefix}/{device}/spool`` topic.

``{"device":"edge-01","epoch":"9f3c2a1b","depth":12,"oldest_age_seconds":3.5,
"dead_letters":0,"dropped":{"drop_oldest":3},"last_publish":"2026-...Z",
"spool_path":"/var/lib/mqttspool/spool.db"}``. A consumer explains the gaps
of an epoch with its drop counters and dead-letter count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mqttspool.wire.bounds import (
    MAX_MESSAGE_BYTES,
    WireError,
    check_counter,
    check_epoch,
    check_name,
)
from mqttspool.wire.jsonload import load_object

SNAPSHOT_DEPTH = 2  # the object, and its "dropped" object
MAX_DROP_REASONS = 64


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A device's spool snapshot: backlog and the drop counters of its current epoch."""

    device: str
    epoch: str | None  # None: no spool file yet (``status`` on a fresh device)
    dropped: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    depth: int = 0
    oldest_age_seconds: float | None = None
    last_publish: str | None = None
    spool_path: str | None = None

    @classmethod
    def empty(cls, device: str, spool_path: str) -> Snapshot:
        """What ``status`` says before a spool exists (nothing is created to ask)."""
        return cls(device, None, spool_path=spool_path)

    @property
    def accounted(self) -> int:
        """Readings the device itself counts as not delivered: drops and dead letters."""
        return sum(self.dropped.values()) + self.dead_letters

    def as_json(self) -> dict[str, Any]:
        """The document as published (key order as documented)."""
        age = self.oldest_age_seconds
        return {
            "device": self.device,
            "epoch": self.epoch,
            "depth": self.depth,
            "oldest_age_seconds": None if age is None else round(age, 3),
            "dead_letters": self.dead_letters,
            "dropped": dict(self.dropped),
            "last_publish": self.last_publish,
            "spool_path": self.spool_path,
        }


def parse_snapshot(payload: bytes) -> Snapshot:
    """Parse and check a published snapshot; raises :class:`WireError` naming the field."""
    doc = load_object(payload, SNAPSHOT_DEPTH, "spool snapshot", MAX_MESSAGE_BYTES)
    dropped = doc.get("dropped")
    if not isinstance(dropped, dict) or len(dropped) > MAX_DROP_REASONS:
        raise WireError("dropped", f"must be an object of at most {MAX_DROP_REASONS} counts")
    counts = {
        check_name(reason, "dropped"): check_counter(n, f"dropped.{reason}")
        for reason, n in dropped.items()
    }
    return Snapshot(
        device=check_name(doc.get("device"), "device"),
        epoch=check_epoch(doc.get("epoch")),
        dead_letters=check_counter(doc.get("dead_letters"), "dead_letters"),
        dropped=counts,
        depth=check_counter(doc.get("depth", 0), "depth"),
        oldest_age_seconds=_optional_age(doc.get("oldest_age_seconds")),
        last_publish=_optional_text(doc.get("last_publish"), "last_publish", 64),
        spool_path=_optional_text(doc.get("spool_path"), "spool_path", 4096),
    )


def _optional_age(raw: Any) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise WireError("oldest_age_seconds", "must be null or a finite number >= 0")
    try:
        age = float(raw)
    except OverflowError:
        raise WireError("oldest_age_seconds", "must be null or a finite number >= 0") from None
    if not math.isfinite(age) or age < 0:
        raise WireError("oldest_age_seconds", "must be null or a finite number >= 0")
    return age


def _optional_text(raw: Any, name: str, limit: int) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > limit or "\x00" in raw:
        raise WireError(name, f"must be null or a string of at most {limit} characters, no NUL")
    return raw
