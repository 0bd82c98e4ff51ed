"""
Startup packets (untyped: int32 length, int32 code, body): decoding what a
client opens with (StartupMessage, CancelRequest, SSLRequest,
GSSENCRequest) and encoding what the proxy sends a server.
"""

from __future__ import annotations

import struct
from typing import Dict

import attr

from twisted_pgpool.wire.codes import (
    _UINT32,
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    PROTOCOL_VERSION_3_0,
    SSL_REQUEST_CODE,
    _cstring,
    _Reader,
)

# --------------------------------------------------------------------------
# Startup packets (untyped: int32 length, int32 code, body)


@attr.s(auto_attribs=True, frozen=True)
class StartupMessage:
    """
    A StartupMessage: protocol version and the client's parameters
    (C{user}, C{database}, C{application_name}, C{options}, ...).
    """

    protocol_version: int
    parameters: Dict[str, str]

    @property
    def major(self) -> int:
        return self.protocol_version >> 16

    @property
    def minor(self) -> int:
        return self.protocol_version & 0xFFFF


@attr.s(auto_attribs=True, frozen=True)
class CancelRequest:
    """
    A CancelRequest naming the backend process and its secret key.
    """

    process_id: int
    secret_key: int


@attr.s(auto_attribs=True, frozen=True)
class SSLRequest:
    """
    A request to switch the connection to TLS before the startup message.
    """


@attr.s(auto_attribs=True, frozen=True)
class GSSENCRequest:
    """
    A request to switch the connection to GSSAPI encryption.
    """


def decode_startup_packet(payload: bytes):
    """
    Decode the body of an untyped startup packet (everything after the
    length word).

    @return: a L{StartupMessage}, L{CancelRequest}, L{SSLRequest} or
        L{GSSENCRequest}.
    @raise MessageFormatError: for a malformed packet.
    """
    reader = _Reader(payload)
    code = reader.int32()
    if code == SSL_REQUEST_CODE:
        reader.end()
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE:
        reader.end()
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        process_id = reader.int32()
        secret_key = reader.int32()
        reader.end()
        return CancelRequest(process_id, secret_key)
    if code >> 16 != 3:
        # Another protocol's body has another layout; the version alone is
        # enough for the caller to refuse it properly.
        return StartupMessage(code & 0xFFFFFFFF, {})
    parameters: Dict[str, str] = {}
    while True:
        name = reader.cstring()
        if name == "":
            break
        parameters[name] = reader.cstring()
    reader.end()
    return StartupMessage(code & 0xFFFFFFFF, parameters)


def encode_startup_message(
    parameters: Dict[str, str], protocol_version: int = PROTOCOL_VERSION_3_0
) -> bytes:
    """
    Encode a StartupMessage with the given parameters.
    """
    body = (
        _UINT32.pack(protocol_version)
        + b"".join(_cstring(name) + _cstring(value) for name, value in parameters.items())
        + b"\x00"
    )
    return _UINT32.pack(len(body) + 4) + body


def encode_cancel_request(process_id: int, secret_key: int) -> bytes:
    """
    Encode a CancelRequest packet.
    """
    return struct.pack("!IIii", 16, CANCEL_REQUEST_CODE, process_id, secret_key)


def encode_ssl_request() -> bytes:
    return struct.pack("!II", 8, SSL_REQUEST_CODE)


def encode_gssenc_request() -> bytes:
    return struct.pack("!II", 8, GSSENC_REQUEST_CODE)
