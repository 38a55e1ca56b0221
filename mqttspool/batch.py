"""The batch codec moved to :mod:`mqttspool.wire.batch`; this name stays for consumers.

DESIGN.md and the README document ``mqttspool.batch.decode`` for Python
consumers, so it keeps working.
"""

from __future__ import annotations

from mqttspool.wire.batch import (
    CONTENT_TYPE,
    ENCODING_PROPERTY,
    MAX_INFLATED_BYTES,
    BatchError,
    DecodedReading,
    decode,
    decode_batch,
    encode,
    encode_within,
)

__all__ = [
    "CONTENT_TYPE",
    "ENCODING_PROPERTY",
    "MAX_INFLATED_BYTES",
    "BatchError",
    "DecodedReading",
    "decode",
    "decode_batch",
    "encode",
    "encode_within",
]
