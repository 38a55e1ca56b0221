"""One definition of a gap in seq, shared by watch (as readings arrive) and ingest (from SQL)."""

from __future__ import annotations

from mqttspool.wire.gaps import MissingSeqs, between, size


def test_the_seqs_strictly_between_two_received_ones_are_missing() -> None:
    assert between(3, 4) is None
    assert between(3, 5) == (4, 4)
    assert between(3, 10) == (4, 9)
    assert size((4, 9)) == 6


def test_missing_seqs_open_and_close_as_readings_arrive() -> None:
    missing = MissingSeqs()
    assert missing.arrived_above(1, 2) is None
    assert missing.arrived_above(2, 6) == (3, 5)
    assert missing.arrived_above(6, 2**62) == (7, 2**62 - 1)
    assert missing.discard(4) is True
    assert missing.discard(4) is False
    assert missing.ranges == [[3, 3], [5, 5], [7, 2**62 - 1]]
    assert missing.count() == 2 + 2**62 - 7
