"""
Helpers for tests that build and read raw protocol bytes: one message
framed by hand, and the proxy's output split back into messages.
"""

from __future__ import annotations

import struct
from typing import List, Tuple


def frame(message_type: bytes, payload: bytes) -> bytes:
    """
    A typed message: type byte, int32 length (counting itself), payload.
    """
    return message_type + struct.pack("!I", len(payload) + 4) + payload


def split_messages(data: bytes) -> List[Tuple[int, bytes]]:
    """
    Split bytes the proxy wrote into (type, payload), insisting they frame
    exactly.
    """
    result = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 5:
            raise AssertionError(f"truncated header at {pos} in {data!r}")
        (length,) = struct.unpack_from("!I", data, pos + 1)
        end = pos + 1 + length
        if length < 4 or end > len(data):
            raise AssertionError(f"bad framing at {pos} in {data!r}")
        result.append((data[pos], data[pos + 5:end]))
        pos = end
    return result
