"""Everything on the MQTT wire, in one place (DESIGN.md, wire format).

* :mod:`~mqttspool.wire.topics`: build every topic, classify a received one;
* :mod:`~mqttspool.wire.payload`: the per-reading payload (render, parse);
* :mod:`~mqttspool.wire.batch`: the zlib batch codec;
* :mod:`~mqttspool.wire.snapshot`: the spool snapshot (``status --json``, retained topic);
* :mod:`~mqttspool.wire.bounds`: the consumer contract's bounds and :class:`WireError`;
* :mod:`~mqttspool.wire.decode`: ONE ``decode(topic, payload, prefix)`` for consumers;
* :mod:`~mqttspool.wire.gaps`: what is missing between received seqs (``watch``, ``ingest``).
"""

from __future__ import annotations

from mqttspool.wire.batch import BatchError
from mqttspool.wire.bounds import WireError
from mqttspool.wire.decode import Decoded, decode
from mqttspool.wire.payload import DecodedReading, render_payload
from mqttspool.wire.snapshot import Snapshot
from mqttspool.wire.topics import TopicKind, classify_topic

__all__ = [
    "BatchError",
    "Decoded",
    "DecodedReading",
    "Snapshot",
    "TopicKind",
    "WireError",
    "classify_topic",
    "decode",
    "render_payload",
]
