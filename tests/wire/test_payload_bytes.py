"""The hand-assembled payload is byte-identical to json.dumps of the documented document."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mqttspool.reading import StoredReading, format_ts, reading_id
from mqttspool.wire.payload import render_payload


def render_payload_reference(row: StoredReading, epoch: str, replay: bool) -> bytes:
    """The documented payload via ``json.dumps``: the specification render_payload meets."""
    doc = {
        "id": reading_id(row.device, epoch, row.seq),
        "seq": row.seq,
        "device": row.device,
        "sensor": row.sensor,
        "metric": row.metric,
        "value": row.value,
        "unit": row.unit,
        "ts": format_ts(row.ts_us),
        "time_synced": row.time_synced,
        "replay": replay,
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


names = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)


@given(
    seq=st.integers(1, 2**62),
    device=names,
    sensor=names,
    metric=names,
    value=st.floats(allow_nan=False, allow_infinity=False),
    unit=st.none() | st.text(max_size=16),
    ts_us=st.integers(0, 253_402_300_799_999_999),
    synced=st.booleans(),
    replay=st.booleans(),
    epoch=st.from_regex(r"[0-9a-f]{8}", fullmatch=True),
)
def test_fast_payload_equals_json_dumps(
    seq: int,
    device: str,
    sensor: str,
    metric: str,
    value: float,
    unit: str | None,
    ts_us: int,
    synced: bool,
    replay: bool,
    epoch: str,
) -> None:
    row = StoredReading(seq, device, sensor, metric, value, unit, ts_us, synced)
    assert render_payload(row, epoch, replay) == render_payload_reference(row, epoch, replay)
