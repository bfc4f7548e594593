"""What travels on the wire beyond the Open Inference Protocol's own messages, defined once for the server that
writes and reads it and the clients that send and parse it: request parameter names that change a reply's form, the
BYTES length-prefix codec, and the classification extension's "score:index:label" strings.

The kinds' own request parameters live in their contracts: `truncation` (generation.py), `explain` and its options
(features.py), `overlay` (segmentation.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple

OUTPUT_FORMAT_PARAMETER = "output_format"
"""Request parameter: "png" sends the model's image output (or mask, or heatmap) as BYTES [n] of PNG files."""
PNG = "png"
TENSOR = "tensor"
OUTPUT_FORMATS = (PNG, TENSOR)

CLASSIFICATION_PARAMETER = "classification"
"""Requested-output parameter (Triton's classification extension): the top k classes as BYTES strings."""

# Tensor parameters of Triton's shared-memory extension: an input read from, or a requested output written to, a
# registered region. Offset defaults to 0; region and byte size go together.
SHARED_MEMORY_REGION = "shared_memory_region"
SHARED_MEMORY_OFFSET = "shared_memory_offset"
SHARED_MEMORY_BYTE_SIZE = "shared_memory_byte_size"
SHARED_MEMORY_PARAMETERS = (SHARED_MEMORY_REGION, SHARED_MEMORY_OFFSET, SHARED_MEMORY_BYTE_SIZE)

LENGTH = struct.Struct("<I")
"""BYTES elements in raw form: a 4-byte little-endian length before each element's bytes."""


def pack_bytes(items: Iterable[bytes]) -> bytes:
    """Elements -> the raw form: each one's length, then its bytes."""
    parts: list[bytes] = []
    for item in items:
        parts += (LENGTH.pack(len(item)), item)
    return b"".join(parts)


def unpack_bytes(data: bytes | memoryview, count: int) -> list[bytes]:
    """The raw form -> exactly `count` elements; ValueError naming what is wrong (a length past the end, bytes
    left over)."""
    # Every element costs at least its 4-byte length, so the list never outgrows what the bytes justify.
    if count * LENGTH.size > len(data):
        raise ValueError(f"raw BYTES data has {len(data)} bytes, too few for {count} elements")
    items, offset = _elements(data, count)
    if offset != len(data):
        raise ValueError(f"{len(data) - offset} bytes left over after {count} BYTES elements")
    return items


def split_bytes(data: bytes | memoryview) -> list[bytes]:
    """The raw form -> every element it holds, however many (a reply whose count the reader does not know)."""
    return _elements(data, None)[0]


def _elements(data: bytes | memoryview, count: int | None) -> tuple[list[bytes], int]:
    """`count` elements (None: until the data ends) and the offset after the last."""
    items: list[bytes] = []
    offset, size = 0, len(data)
    while (offset < size) if count is None else (len(items) < count):
        index = len(items)
        if size - offset < LENGTH.size:
            raise ValueError(f"raw BYTES data ends inside element {index}'s length")
        (length,) = LENGTH.unpack_from(data, offset)
        offset += LENGTH.size
        if length > size - offset:
            raise ValueError(f"BYTES element {index} claims {length} bytes, {size - offset} remain")
        items.append(bytes(data[offset : offset + length]))  # bytes also when `data` is a view of a body
        offset += length
    return items, offset


class ClassScore(NamedTuple):
    score: float
    position: int  # the class index
    label: str  # "" past the labels file


def format_class(score: float, index: int, labels: Sequence[str]) -> bytes:
    """One classification entry as Triton writes it: b"score:index:label", or b"score:index" past the labels."""
    if index < len(labels):
        return b"%f:%d:%s" % (score, index, labels[index].encode())
    return b"%f:%d" % (score, index)


def parse_class(entry: bytes | str) -> ClassScore:
    """A classification entry back into its parts; a label may itself hold ':'. ValueError when malformed."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    parts = text.split(":", 2)
    if len(parts) < 2:
        raise ValueError(f"a classification entry is 'score:index[:label]', got {text!r}")
    return ClassScore(float(parts[0]), int(parts[1]), parts[2] if len(parts) == 3 else "")
