"""Gaps in ``seq``: the one definition of what is missing, for ``watch`` and ``ingest``.

``seq`` is numbered per spool (one epoch), without holes, so the seqs strictly
between two received seqs of an epoch are missing. ``watch`` finds them as
readings arrive (:class:`MissingSeqs`); ``ingest`` selects the neighbouring
seqs that are not adjacent from its database and turns each pair into a range
with :func:`between`. Both count a range with :func:`size`.
"""

from __future__ import annotations

import bisect

SeqRange = tuple[int, int]  # first and last missing seq, inclusive


def between(lower: int, upper: int) -> SeqRange | None:
    """The seqs strictly between two received seqs ``lower < upper``; None if adjacent."""
    return (lower + 1, upper - 1) if upper - lower > 1 else None


def size(missing: SeqRange) -> int:
    """How many seqs ``missing`` holds."""
    return missing[1] - missing[0] + 1


class MissingSeqs:
    """Missing seqs as sorted, disjoint ``[first, last]`` ranges, kept as readings arrive.

    Ranges, not a set of ints: one payload with ``seq`` 2**62 must not make
    the watcher allocate a number for every seq it skipped.
    """

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []

    def arrived_above(self, highest: int, seq: int) -> SeqRange | None:
        """``seq`` arrived above ``highest``, the highest seq so far: the gap it opens, if any
        (recorded as missing)."""
        gap = between(highest, seq)
        if gap is not None:
            self.ranges.append(list(gap))
        return gap

    def discard(self, seq: int) -> bool:
        """Mark ``seq`` as arrived; True if it was missing."""
        i = bisect.bisect_right(self.ranges, seq, key=lambda r: r[0]) - 1
        if i < 0 or self.ranges[i][1] < seq:
            return False
        first, last = self.ranges[i]
        self.ranges[i : i + 1] = [[a, b] for a, b in ((first, seq - 1), (seq + 1, last)) if a <= b]
        return True

    def count(self) -> int:
        """How many seqs are still missing."""
        return sum(size((first, last)) for first, last in self.ranges)
