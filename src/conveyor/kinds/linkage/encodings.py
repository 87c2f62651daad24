"""Encodings (CLKs) as uploaded, validated and packed for blob storage.

Uploads arrive as base64 strings (JSON) or as fixed-size binary records; both are stored as one
packed blob of `count * size` bytes, so a chunk reads only its own byte range. Blocks are stored
next to it as JSON `{block_id: [record index, ...]}`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bitarray import bitarray

MAX_ENCODING_BYTES = 1 << 16


class EncodingError(ValueError):
    """The upload is malformed; the message says where (answered 400)."""


@dataclass
class Packed:
    """Encodings of one party, packed back to back, with optional blocks."""

    data: bytes
    count: int
    size: int
    blocks: dict[str, list[int]] | None = field(default=None)


def _decode(item: Any, index: int) -> bytes:
    if not isinstance(item, str):
        raise EncodingError(f"encoding {index} is not a base64 string")
    try:
        raw = base64.b64decode(item.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise EncodingError(f"encoding {index} is not valid base64") from None
    if not raw:
        raise EncodingError(f"encoding {index} is empty")
    return raw


def pack(encodings: Sequence[bytes], expected_size: int | None = None) -> tuple[bytes, int]:
    """Concatenate equal-size encodings; return (data, size). Sizes are checked first."""
    if not encodings:
        raise EncodingError("no encodings were uploaded")
    size = len(encodings[0])
    if size > MAX_ENCODING_BYTES:
        raise EncodingError(f"encodings of {size} bytes are larger than {MAX_ENCODING_BYTES}")
    for i, enc in enumerate(encodings):
        if len(enc) != size:
            raise EncodingError(
                f"encoding {i} has {len(enc)} bytes but encoding 0 has {size}: all encodings"
                " must have the same size"
            )
    if expected_size is not None and size != expected_size:
        raise EncodingError(
            f"encodings have {size} bytes but this project expects {expected_size} bytes"
            f" ({expected_size * 8} bits)"
        )
    return b"".join(encodings), size


def from_json(body: Any, uses_blocking: bool, expected_size: int | None) -> Packed:
    """Parse a `/clks` JSON body: `clks`, `clknblocks`, or `encodings` (+ `blocks`)."""
    if not isinstance(body, dict):
        raise EncodingError("the body must be a JSON object with 'clks', 'clknblocks' or"
                            " 'encodings'")  # fmt: skip
    blocks: dict[str, list[int]] | None = None
    if "clks" in body:
        items = _list(body["clks"], "clks")
        raw = [_decode(item, i) for i, item in enumerate(items)]
    elif "clknblocks" in body:
        rows = _list(body["clknblocks"], "clknblocks")
        raw, blocks = [], {}
        for i, row in enumerate(rows):
            if not isinstance(row, list) or not row:
                raise EncodingError(f"clknblocks[{i}] must be [encoding, block_id, ...]")
            raw.append(_decode(row[0], i))
            for block in row[1:]:
                blocks.setdefault(str(block), []).append(i)
    elif "encodings" in body:
        items = body["encodings"]
        if isinstance(items, dict):
            raise EncodingError("external data (encodings in an object store) is not supported"
                                " by this server: upload the encodings in the request")  # fmt: skip
        raw = [_decode(item, i) for i, item in enumerate(_list(items, "encodings"))]
        if "blocks" in body:
            blocks = from_block_map(body["blocks"], len(raw))
    else:
        raise EncodingError("the body must have one of 'clks', 'clknblocks' or 'encodings'")
    data, size = pack(raw, expected_size)
    if uses_blocking and blocks is None:
        raise EncodingError("this project uses blocking: upload 'clknblocks' or 'encodings'"
                            " with 'blocks'")  # fmt: skip
    if not uses_blocking:
        blocks = None
    return Packed(data, len(raw), size, blocks)


def from_block_map(value: Any, count: int) -> dict[str, list[int]]:
    """`{encoding_index: [block_id, ...]}` → `{block_id: [encoding_index, ...]}`."""
    if not isinstance(value, dict):
        raise EncodingError("'blocks' must be an object {encoding_index: [block_id, ...]}")
    blocks: dict[str, list[int]] = {}
    for key, ids in value.items():
        try:
            index = int(key)
        except ValueError:
            raise EncodingError(f"blocks: {key!r} is not an encoding index") from None
        if not 0 <= index < count:
            raise EncodingError(f"blocks: encoding index {index} is out of range (0..{count - 1})")
        if not isinstance(ids, list):
            raise EncodingError(f"blocks[{key}] must be a list of block ids")
        for block in ids:
            blocks.setdefault(str(block), []).append(index)
    for members in blocks.values():
        members.sort()
    return blocks


def from_binary(data: bytes, count: int, size: int, expected_size: int | None) -> Packed:
    """A `/binaryclks` body: `count` records of `size` bytes each."""
    if count <= 0 or size <= 0:
        raise EncodingError("Hash-Count and Hash-Size must be positive integers")
    if len(data) != count * size:
        raise EncodingError(
            f"the body has {len(data)} bytes but Hash-Count * Hash-Size = {count * size}"
        )
    chunks = [data[i * size : (i + 1) * size] for i in range(count)]
    packed, size = pack(chunks, expected_size)
    return Packed(packed, count, size)


def expected_size(schema: Any) -> int | None:
    """Encoding size in bytes named by a linkage schema (`clkConfig.l` bits), if any."""
    try:
        bits = schema["clkConfig"]["l"]
    except (KeyError, TypeError):
        return None
    return bits // 8 if isinstance(bits, int) and bits > 0 and bits % 8 == 0 else None


def unpack(data: bytes, size: int) -> list[bitarray]:
    """Packed bytes → one bitarray per encoding (what anonlink's similarity functions take)."""
    out = []
    for start in range(0, len(data), size):
        bits = bitarray(endian="big")
        bits.frombytes(data[start : start + size])
        out.append(bits)
    return out


def dumps_blocks(blocks: dict[str, list[int]]) -> bytes:
    return json.dumps(blocks, separators=(",", ":")).encode()


def loads_blocks(chunks: Iterable[bytes]) -> dict[str, list[int]]:
    value = json.loads(b"".join(chunks))
    assert isinstance(value, dict)
    return {str(k): [int(i) for i in v] for k, v in value.items()}


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise EncodingError(f"'{name}' must be a list")
    if not value:
        raise EncodingError(f"'{name}' is empty: upload at least one encoding")
    return value
