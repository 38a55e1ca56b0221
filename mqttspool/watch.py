"""``mqttspool watch``: print arriving readings, flag duplicates and seq gaps.

:class:`WatchTracker` is the consumer-side logic every subscriber should have:
dedupe on ``id`` and detect loss as a gap in ``seq`` within one epoch. ``seq``
is numbered per spool (one epoch), and one spool may carry several devices
(``enqueue`` stores whatever device a line names), so gaps are judged over
the epoch's whole seq sequence, never per device: interleaved devices are
not gaps. Gaps may close later (``live_first`` sends fresh readings ahead of
the backlog), so the summary reports what is still missing at the end.
Messages are decoded by :func:`mqttspool.wire.decode` (both payload forms),
and every reading is tracked the same way, so duplicates and gaps are found
across both forms.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from mqttspool.errors import ReadingError
from mqttspool.reading import from_us
from mqttspool.wire import batch
from mqttspool.wire.gaps import MissingSeqs
from mqttspool.wire.payload import DecodedReading, parse_reading


@dataclass
class EpochState:
    """What one epoch (one spool, possibly several devices) has delivered so far."""

    devices: set[str] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)
    seqs: set[int] = field(default_factory=set)
    max_seq: int = 0
    missing: MissingSeqs = field(default_factory=MissingSeqs)


@dataclass(frozen=True)
class Observation:
    """The verdict on one arriving data message."""

    message: DecodedReading
    duplicate: bool
    gap: tuple[int, int] | None  # first and last missing seq newly detected
    filled_gap: bool


@dataclass
class WatchTracker:
    """Dedupes on id and detects seq gaps per epoch (seq is numbered per spool)."""

    epochs: dict[str, EpochState] = field(default_factory=dict)
    received: int = 0
    duplicates: int = 0
    invalid: int = 0

    def observe(self, payload: bytes) -> Observation:
        """Account for one per-reading payload; raises ReadingError if it is not one."""
        return self.account(self._decoded(parse_reading, payload))[0]

    def observe_batch(self, payload: bytes) -> list[Observation]:
        """Account for every reading of one batch payload, in order; raises
        :class:`~mqttspool.wire.batch.BatchError` (a ReadingError) if it is not a valid batch."""
        return self.account(self._decoded(batch.decode, payload))

    def _decoded(
        self, parse: Callable[[bytes], DecodedReading | list[DecodedReading]], payload: bytes
    ) -> list[DecodedReading]:
        try:
            got = parse(payload)
        except ReadingError:
            self.invalid += 1
            raise
        return got if isinstance(got, list) else [got]

    def account(self, readings: list[DecodedReading]) -> list[Observation]:
        """Account for decoded readings (:func:`mqttspool.wire.decode`), in order."""
        return [self._account(r) for r in readings]

    def _account(self, msg: DecodedReading) -> Observation:
        self.received += 1
        state = self.epochs.setdefault(msg.epoch, EpochState())
        if msg.id in state.ids:
            self.duplicates += 1
            return Observation(msg, True, None, False)
        state.ids.add(msg.id)
        state.devices.add(msg.device)
        if msg.seq in state.seqs:  # same seq under another device: a bad producer, not a gap
            return Observation(msg, False, None, False)
        state.seqs.add(msg.seq)
        gap = None
        filled = state.missing.discard(msg.seq)
        if state.max_seq and msg.seq > state.max_seq:
            gap = state.missing.arrived_above(state.max_seq, msg.seq)
        state.max_seq = max(state.max_seq, msg.seq)
        return Observation(msg, False, gap, filled)

    def summary(self) -> dict[str, object]:
        """Totals and, per epoch, devices, unique count, seq range and still-missing seqs."""
        epochs = {}
        for epoch, st in sorted(self.epochs.items()):
            epochs[epoch] = {
                "devices": sorted(st.devices),
                "unique": len(st.ids),
                "first_seq": min(st.seqs) if st.seqs else None,
                "last_seq": st.max_seq,
                "missing": st.missing.count(),
                "missing_ranges": [list(r) for r in st.missing.ranges[:20]],
            }
        return {
            "received": self.received,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "epochs": epochs,
        }


def format_observation(obs: Observation) -> str:
    """One human line for a reading."""
    r = obs.message
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
    ts = r.ts[:23] + "Z"  # milliseconds, as before
    return (
        f"{ts} {r.device}/{r.sensor}/{r.metric} = {r.value:g}{unit}"
        f"  seq={obs.message.seq} id={obs.message.id}{flag_text}"
    )


def observation_json(obs: Observation) -> str:
    """One JSON line for a reading (``watch --json``)."""
    r = obs.message
    return json.dumps(
        {
            "id": obs.message.id,
            "seq": obs.message.seq,
            "device": r.device,
            "sensor": r.sensor,
            "metric": r.metric,
            "value": r.value,
            "unit": r.unit,
            "ts": from_us(r.ts_us).isoformat().replace("+00:00", "Z"),
            "replay": obs.message.replay,
            "duplicate": obs.duplicate,
            "gap": list(obs.gap) if obs.gap else None,
        }
    )
