"""Completeness per ``(device, epoch)``: what arrived, what is missing, and why.

``seq`` is numbered per spool, and a spool's epoch names it, so gaps are
judged per epoch (one spool may carry several devices). A gap is
*explained* when the spool's own accounting covers it: the retained spool
snapshot carries the drop counters by reason and the dead-letter count, and
the gaps of an epoch, oldest first, are explained while their missing
readings fit in that budget. Everything else is *unexplained*: loss nobody
accounted for, which is what the report and the Prometheus gauge are for.

Only gaps between received seqs are judged: readings before the first one
ingest saw may have been consumed before it existed, and readings after the
last one may still be on their way.
"""

from __future__ import annotations

from dataclasses import dataclass

from mqttspool.ingest.store import StoredState
from mqttspool.wire.gaps import size


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing seqs ``first..last`` of one epoch."""

    first: int
    last: int
    explained: bool

    @property
    def size(self) -> int:
        """How many readings are missing."""
        return size((self.first, self.last))


@dataclass(frozen=True, slots=True)
class EpochReport:
    """One row of ``mqttspool ingest --report``."""

    epoch: str
    devices: tuple[str, ...]
    received: int
    duplicates: int
    first_seq: int
    last_seq: int
    gaps: tuple[Gap, ...]
    accounted: int | None  # dropped + dead letters from the snapshot; None: no snapshot yet

    @property
    def missing(self) -> int:
        """Readings missing between the first and the last received seq."""
        return sum(g.size for g in self.gaps)

    @property
    def unexplained(self) -> int:
        """Missing readings the device's counters do not account for."""
        return sum(g.size for g in self.gaps if not g.explained)

    def as_json(self) -> dict[str, object]:
        """The ``--json`` form."""
        return {
            "epoch": self.epoch,
            "devices": list(self.devices),
            "received": self.received,
            "duplicates": self.duplicates,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "missing": self.missing,
            "unexplained": self.unexplained,
            "accounted": self.accounted,
            "gaps": [
                {"first": g.first, "last": g.last, "explained": g.explained} for g in self.gaps
            ],
        }


def explain(gaps: list[tuple[int, int]], budget: int) -> tuple[Gap, ...]:
    """Mark gaps explained, oldest first, while their sizes fit in ``budget``."""
    out: list[Gap] = []
    for first, last in sorted(gaps):
        missing = size((first, last))
        fits = missing <= budget
        if fits:
            budget -= missing
        out.append(Gap(first, last, fits))
    return tuple(out)


def completeness(state: StoredState) -> list[EpochReport]:
    """The report rows, one per epoch, from what the store holds."""
    by_epoch: dict[str, list[tuple[str, int, int, int, int]]] = {}
    for s in state.streams:
        by_epoch.setdefault(s.epoch, []).append(
            (s.device, s.received, s.duplicates, s.first_seq, s.last_seq)
        )
    reports: list[EpochReport] = []
    for epoch, streams in sorted(by_epoch.items()):
        snap = state.snapshots.get(epoch)
        if snap is not None and snap.device not in {s[0] for s in streams}:
            snap = None  # a snapshot explains only an epoch its own device wrote to
        accounted = None if snap is None else snap.accounted
        reports.append(
            EpochReport(
                epoch=epoch,
                devices=tuple(sorted(s[0] for s in streams)),
                received=sum(s[1] for s in streams),
                duplicates=sum(s[2] for s in streams),
                first_seq=min(s[3] for s in streams),
                last_seq=max(s[4] for s in streams),
                gaps=explain(state.gaps.get(epoch, []), accounted or 0),
                accounted=accounted,
            )
        )
    return reports


def format_report(reports: list[EpochReport]) -> str:
    """The human table of ``mqttspool ingest --report``."""
    header = (
        f"{'devices':<20} {'epoch':<10} {'received':>9} {'dup':>6} {'seq':>15}"
        f" {'missing':>8} {'explained':>9} {'unexplained':>11}"
    )
    lines = [header]
    for r in reports:
        seqs = f"{r.first_seq}..{r.last_seq}"
        lines.append(
            f"{','.join(r.devices):<20} {r.epoch:<10} {r.received:>9} {r.duplicates:>6}"
            f" {seqs:>15} {r.missing:>8} {r.missing - r.unexplained:>9} {r.unexplained:>11}"
        )
        lines.extend(
            f"    unexplained gap: seq {g.first}..{g.last} ({g.size} reading(s))"
            for g in r.gaps
            if not g.explained
        )
    if not reports:
        lines.append("(no readings ingested yet)")
    return "\n".join(lines)
