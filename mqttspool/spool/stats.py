"""Spool statistics: the snapshot behind ``status``, the retained spool topic and metrics.

Counts come from the row counters in ``meta`` (no table scan: the bridge
takes a snapshot on its own thread), drops from ``meta`` plus the counts a
full disk kept pending.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mqttspool.reading import format_ts
from mqttspool.spool.rows import counts
from mqttspool.wire.snapshot import Snapshot


@dataclass(frozen=True)
class SpoolStats:
    """A snapshot for ``status``, the retained spool topic and metrics."""

    path: str
    epoch: str
    depth: int
    oldest_ts_us: int | None
    dead_letters: int
    dropped: dict[str, int]
    last_publish_us: int | None

    def oldest_age_seconds(self, now_us: int) -> float | None:
        """Age of the oldest queued reading, or None when empty."""
        if self.oldest_ts_us is None:
            return None
        return max(0.0, (now_us - self.oldest_ts_us) / 1e6)


def read_stats(
    execute: Callable[..., Any], path: str, epoch: str, pending: Counter[str]
) -> SpoolStats:
    """Depth, oldest timestamp, dead letters, drops by reason (``pending`` added), last publish."""
    depth, dead = counts(execute)
    oldest = execute("SELECT ts_us FROM reading ORDER BY seq LIMIT 1").fetchone()
    # The counters read no row: probing the newest too walks both edges of the
    # queue's B-tree, so a damaged page there shows here (and is salvaged) at once.
    execute("SELECT ts_us FROM reading ORDER BY seq DESC LIMIT 1").fetchone()
    meta = dict(execute("SELECT key, value FROM meta").fetchall())
    dropped = Counter(
        {k.removeprefix("dropped."): int(v) for k, v in meta.items() if k.startswith("dropped.")}
    )
    dropped.update(pending)
    last = meta.get("last_publish_us")
    return SpoolStats(
        path=path,
        epoch=epoch,
        depth=depth,
        oldest_ts_us=int(oldest[0]) if oldest else None,
        dead_letters=dead,
        dropped=dict(sorted(dropped.items())),
        last_publish_us=int(last) if last else None,
    )


def read_stats_json(stats: SpoolStats, device: str, now_us: int) -> dict[str, Any]:
    """The ``status --json`` / retained spool topic document (:class:`~mqttspool.wire.Snapshot`)."""
    last = stats.last_publish_us
    return Snapshot(
        device=device,
        epoch=stats.epoch,
        dead_letters=stats.dead_letters,
        dropped=stats.dropped,
        depth=stats.depth,
        oldest_age_seconds=stats.oldest_age_seconds(now_us),
        last_publish=None if last is None else format_ts(last),
        spool_path=stats.path,
    ).as_json()
