"""Protobuf wire bytes by hand, for tests that send what no generated class would build."""

from __future__ import annotations

__all__ = ["len_field", "varint"]


def varint(value: int) -> bytes:
    """`value` (>= 0) as a base-128 varint."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def len_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): tag, length, payload."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload
