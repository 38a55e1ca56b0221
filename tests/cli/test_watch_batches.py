"""``watch`` decodes batches and finds duplicates and gaps across both forms."""

from __future__ import annotations

import json
import signal
import zlib
from pathlib import Path

import pytest
from support.broker import MosquittoBroker

from cli.test_watch_broker import PREFIX, publish_retained, start_watch, stop
from mqttspool.batch import BatchError, encode
from mqttspool.reading import StoredReading
from mqttspool.watch import WatchTracker
from mqttspool.wire.payload import render_payload

EPOCH = "aaaa0000"


def row(seq: int, metric: str = "t") -> StoredReading:
    return StoredReading(seq, "edge-01", "sim", metric, seq / 10, "°C", 1_795_000_000_000_000, True)


def batch(*seqs: int) -> bytes:
    return encode([row(s) for s in seqs], "edge-01", EPOCH, [True] * len(seqs))


def test_duplicates_and_gaps_are_found_across_both_forms() -> None:
    tracker = WatchTracker()
    for seq in (1, 2):
        tracker.observe(render_payload(row(seq), EPOCH, False))
    observations = tracker.observe_batch(batch(2, 3, 4, 8))
    assert [(o.message.seq, o.duplicate, o.gap) for o in observations] == [
        (2, True, None),  # already seen as a single message
        (3, False, None),
        (4, False, None),
        (8, False, (5, 7)),
    ]
    assert observations[1].message.replay is True
    assert observations[1].message.unit == "°C"
    late = tracker.observe(render_payload(row(6), EPOCH, True))
    assert late.filled_gap
    summary = tracker.summary()
    assert (summary["received"], summary["duplicates"]) == (7, 1)
    assert summary["epochs"] == {
        EPOCH: {
            "devices": ["edge-01"],
            "unique": 6,
            "first_seq": 1,
            "last_seq": 8,
            "missing": 2,
            "missing_ranges": [[5, 5], [7, 7]],
        }
    }


def test_a_bad_batch_counts_as_invalid_and_names_the_problem() -> None:
    tracker = WatchTracker()
    with pytest.raises(BatchError, match="not a zlib stream"):
        tracker.observe_batch(b"{}")
    with pytest.raises(BatchError, match="columns of unequal length"):
        doc = json.loads(zlib.decompress(batch(1, 2)))
        doc["value"] = [1.0]
        tracker.observe_batch(zlib.compress(json.dumps(doc).encode()))
    assert (tracker.invalid, tracker.received) == (2, 0)


@pytest.mark.integration
def test_watch_prints_every_reading_of_a_batch(tmp_path: Path, broker: MosquittoBroker) -> None:
    publish_retained(
        broker,
        {
            f"{PREFIX}/edge-01/batch": batch(1, 2, 3),
            f"{PREFIX}/edge-02/batch": b"garbage",
        },
    )
    proc = start_watch(tmp_path, broker)
    assert proc.stdout is not None
    lines = [proc.stdout.readline().rstrip("\n") for _ in range(4)]
    out, _err = stop(proc, signal.SIGINT)
    assert lines[0] == f"# {PREFIX}/edge-01/batch: batch of 3 reading(s)"
    assert [json.loads(x)["id"] for x in lines[1:]] == [f"edge-01:{EPOCH}:{s}" for s in (1, 2, 3)]
    # (the "not a batch" line may reach stderr before the "subscribed" line start_watch reads)
    summary = json.loads(out.strip().splitlines()[-1])["summary"]
    assert (summary["received"], summary["invalid"]) == (3, 1)
