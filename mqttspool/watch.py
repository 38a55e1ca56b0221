"""``mqttspool watch``: print arriving readings, flag duplicates and seq gaps.

:class:`WatchTracker` is the consumer-side logic every subscriber should have:
dedupe on ``id`` and detect loss as a gap in ``seq`` within one
``(device, epoch)``. Gaps may close later (``live_first`` sends fresh readings
ahead of the backlog), so the summary reports what is still missing at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mqttspool.errors import ReadingError
from mqttspool.reading import WireMessage, parse_payload


@dataclass
class StreamState:
    """What one ``(device, epoch)`` stream has delivered so far."""

    seen: set[int] = field(default_factory=set)
    max_seq: int = 0
    missing: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class Observation:
    """The verdict on one arriving data message."""

    message: WireMessage
    duplicate: bool
    gap: tuple[int, int] | None  # first and last missing seq newly detected
    filled_gap: bool


@dataclass
class WatchTracker:
    """Dedupes on id and detects seq gaps per (device, epoch)."""

    streams: dict[tuple[str, str], StreamState] = field(default_factory=dict)
    received: int = 0
    duplicates: int = 0
    invalid: int = 0

    def observe(self, payload: bytes) -> Observation:
        """Account for one data payload; raises ReadingError if it is not one."""
        try:
            msg = parse_payload(payload)
        except ReadingError:
            self.invalid += 1
            raise
        self.received += 1
        state = self.streams.setdefault((msg.reading.device, msg.epoch), StreamState())
        if msg.seq in state.seen:
            self.duplicates += 1
            return Observation(msg, True, None, False)
        state.seen.add(msg.seq)
        gap = None
        filled = msg.seq in state.missing
        state.missing.discard(msg.seq)
        if state.max_seq and msg.seq > state.max_seq + 1:
            gap = (state.max_seq + 1, msg.seq - 1)
            state.missing.update(range(gap[0], gap[1] + 1))
        state.max_seq = max(state.max_seq, msg.seq)
        return Observation(msg, False, gap, filled)

    def summary(self) -> dict[str, object]:
        """Totals and, per stream, unique count, seq range and still-missing seqs."""
        streams = {}
        for (device, epoch), st in sorted(self.streams.items()):
            streams[f"{device}:{epoch}"] = {
                "unique": len(st.seen),
                "first_seq": min(st.seen) if st.seen else None,
                "last_seq": st.max_seq,
                "missing": len(st.missing),
                "missing_ranges": _ranges(sorted(st.missing))[:20],
            }
        return {
            "received": self.received,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "streams": streams,
        }


def _ranges(seqs: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for s in seqs:
        if out and out[-1][1] == s - 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def format_observation(obs: Observation) -> str:
    """One human line for a reading."""
    r = obs.message.reading
    unit = f" {r.unit}" if r.unit else ""
    flags = []
    if obs.message.replay:
        flags.append("replay")
    if obs.duplicate:
        flags.append("DUPLICATE")
    if obs.gap:
        flags.append(f"GAP {obs.gap[0]}-{obs.gap[1]}")
    if obs.filled_gap:
        flags.append("late (fills gap)")
    flag_text = f"  [{', '.join(flags)}]" if flags else ""
    ts = r.ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return (
        f"{ts} {r.device}/{r.sensor}/{r.metric} = {r.value:g}{unit}"
        f"  seq={obs.message.seq} id={obs.message.id}{flag_text}"
    )


def observation_json(obs: Observation) -> str:
    """One JSON line for a reading (``watch --json``)."""
    r = obs.message.reading
    return json.dumps(
        {
            "id": obs.message.id,
            "seq": obs.message.seq,
            "device": r.device,
            "sensor": r.sensor,
            "metric": r.metric,
            "value": r.value,
            "unit": r.unit,
            "ts": r.ts.isoformat().replace("+00:00", "Z"),
            "replay": obs.message.replay,
            "duplicate": obs.duplicate,
            "gap": list(obs.gap) if obs.gap else None,
        }
    )
