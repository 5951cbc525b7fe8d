"""Identifiers: UUID version 7 (RFC 9562), time-ordered.

A random (version 4) key lands on a random page of every index that holds it, so each
insert dirties pages all over the B-trees; ids that grow with time append at the
right edge instead: fewer pages written per commit, the most costly part of a send.
"""

from __future__ import annotations

import os
import time
import uuid


def new_id() -> str:
    """A fresh UUIDv7: 48 bits of milliseconds since the epoch, then 74 random bits."""
    millis = time.time_ns() // 1_000_000
    raw = bytearray(millis.to_bytes(6, "big") + os.urandom(10))
    raw[6] = 0x70 | (raw[6] & 0x0F)  # version 7
    raw[8] = 0x80 | (raw[8] & 0x3F)  # the RFC 4122 variant
    return str(uuid.UUID(bytes=bytes(raw)))
