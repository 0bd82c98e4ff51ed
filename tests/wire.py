"""
Helpers for tests that build and read raw protocol bytes by hand, so that
what they check does not rest on the proxy's own encoders: one message
framed, the proxy's output split back into messages, an ErrorResponse's
fields, the start-up packet and the authentication exchange.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Dict, Iterable, List, Sequence, Tuple, Union

#: The protocol version of a StartupMessage: 3.0.
PROTOCOL_3_0 = 3 << 16


def frame(message_type: Union[bytes, int], payload: bytes) -> bytes:
    """
    A typed message: type byte (given as a byte string or its value),
    int32 length (counting itself), payload.  PCP frames its messages the
    same way.
    """
    if isinstance(message_type, int):
        message_type = bytes((message_type,))
    return message_type + struct.pack("!I", len(payload) + 4) + payload


def frames(items: Iterable[Tuple[int, bytes]]) -> bytes:
    """
    The stream of (type, payload) messages, each framed.
    """
    return b"".join(frame(message_type, payload) for message_type, payload in items)


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
        result.append((data[pos], data[pos + 5 : end]))
        pos = end
    return result


def error_fields(payload: bytes) -> Dict[str, str]:
    """
    The fields of an ErrorResponse (or NoticeResponse) body, by their
    one-letter codes.
    """
    return {
        chr(field[0]): field[1:].decode("utf-8", "replace")
        for field in payload.split(b"\x00")
        if field
    }


def startup_packet(parameters: Dict[str, str], version: int = PROTOCOL_3_0) -> bytes:
    """
    A StartupMessage with C{parameters}, in their order.
    """
    body = (
        struct.pack("!I", version)
        + b"".join(
            name.encode() + b"\x00" + value.encode() + b"\x00" for name, value in parameters.items()
        )
        + b"\x00"
    )
    return struct.pack("!I", len(body) + 4) + body


def password_message(data: bytes) -> bytes:
    """
    A PasswordMessage (or SASLInitialResponse, SASLResponse) carrying C{data}.
    """
    return frame(b"p", data)


def auth_request(code: int, data: bytes = b"") -> bytes:
    """
    An Authentication message of the server: C{code} (0 ok, 5 md5, 10 SASL
    ...) and what follows it.
    """
    return frame(b"R", struct.pack("!i", code) + data)


def md5_answer(password: str, user: str, salt: bytes) -> bytes:
    """
    What a client answers an md5 challenge with (without the terminating
    NUL): C{"md5" + md5(md5(password + user) + salt)}.
    """
    inner = hashlib.md5((password + user).encode()).hexdigest().encode()
    return b"md5" + hashlib.md5(inner + salt).hexdigest().encode()


def split_at(data: bytes, points: Sequence[int]) -> List[bytes]:
    """
    Cut C{data} at the given offsets (modulo its length + 1), empty pieces
    included: a chunk boundary may fall anywhere, even twice in one place.
    """
    offsets = sorted(p % (len(data) + 1) for p in points)
    return [data[a:b] for a, b in zip([0] + offsets, offsets + [len(data)])]


def message_lists(types: bytes, small: int, large: Tuple[int, int], count: int) -> Any:
    """
    A hypothesis strategy: lists of up to C{count} (type, payload)
    messages, each type one of C{types}, each payload short (up to
    C{small} bytes) or long (C{large[0]} to C{large[1]} bytes: several
    chunks, when cut by L{split_at}).
    """
    from hypothesis import strategies as st

    return st.lists(
        st.tuples(
            st.sampled_from(types),
            st.one_of(st.binary(max_size=small), st.binary(min_size=large[0], max_size=large[1])),
        ),
        max_size=count,
    )
