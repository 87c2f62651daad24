"""Time-ordered job ids (UUIDv7, RFC 9562), so ids sort by creation time."""

from __future__ import annotations

import os
import time
import uuid


def uuid7(now_ms: int | None = None) -> str:
    """Return a new UUIDv7 string: 48 bits of Unix milliseconds, then 74 random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFFFFFFFFFF) << 80
    value |= 0x7 << 76  # version
    value |= (rand >> 68 & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFFFFFFFFFFFFFF  # rand_b, 62 bits
    return str(uuid.UUID(int=value))


def new_token() -> str:
    """A fresh random lease token (128 bits, hex)."""
    return os.urandom(16).hex()
