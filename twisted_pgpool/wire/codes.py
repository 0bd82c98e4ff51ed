"""
The v3 protocol's vocabulary and what every encoder and decoder uses: the
message type codes (both directions), the startup request codes, the
authentication request codes, the ReadyForQuery statuses, framing one
typed message (L{message}), the client's text codec (L{client_codec}), and
a payload reader that rejects truncated input (L{_Reader}).
"""

from __future__ import annotations

import struct
from typing import Dict, Optional

# Startup-packet request codes (the int32 after the length in an untyped packet).
PROTOCOL_VERSION_3_0 = 196608  # 3 << 16
CANCEL_REQUEST_CODE = 80877102
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104

#: PostgreSQL refuses startup packets longer than this (MAX_STARTUP_PACKET_LENGTH).
MAX_STARTUP_PACKET_LENGTH = 10000

# Frontend (client to server) message types.
BIND = ord("B")
CLOSE = ord("C")
COPY_DATA = ord("d")
COPY_DONE = ord("c")
COPY_FAIL = ord("f")
DESCRIBE = ord("D")
EXECUTE = ord("E")
FLUSH = ord("H")
FUNCTION_CALL = ord("F")
PARSE = ord("P")
PASSWORD_MESSAGE = ord("p")  # also SASLInitialResponse, SASLResponse, GSSResponse
QUERY = ord("Q")
SYNC = ord("S")
TERMINATE = ord("X")

FRONTEND_TYPES = frozenset(
    [
        BIND,
        CLOSE,
        COPY_DATA,
        COPY_DONE,
        COPY_FAIL,
        DESCRIBE,
        EXECUTE,
        FLUSH,
        FUNCTION_CALL,
        PARSE,
        PASSWORD_MESSAGE,
        QUERY,
        SYNC,
        TERMINATE,
    ]
)
#: Frontend messages PostgreSQL reads with C{PQ_SMALL_MESSAGE_LIMIT}
#: (postgres.c, SocketBackend): a longer one ends the connection silently.
SMALL_FRONTEND_TYPES = frozenset(
    [CLOSE, DESCRIBE, EXECUTE, FLUSH, SYNC, TERMINATE, COPY_DONE, COPY_FAIL]
)
#: The protocol documentation's name of each frontend message type, for
#: error messages.
FRONTEND_NAMES = {
    BIND: "Bind",
    CLOSE: "Close",
    COPY_DATA: "CopyData",
    COPY_DONE: "CopyDone",
    COPY_FAIL: "CopyFail",
    DESCRIBE: "Describe",
    EXECUTE: "Execute",
    FLUSH: "Flush",
    FUNCTION_CALL: "FunctionCall",
    PARSE: "Parse",
    PASSWORD_MESSAGE: "PasswordMessage",
    QUERY: "Query",
    SYNC: "Sync",
    TERMINATE: "Terminate",
}

# Backend (server to client) message types.
AUTHENTICATION = ord("R")
BACKEND_KEY_DATA = ord("K")
BIND_COMPLETE = ord("2")
CLOSE_COMPLETE = ord("3")
COMMAND_COMPLETE = ord("C")
COPY_BOTH_RESPONSE = ord("W")
COPY_IN_RESPONSE = ord("G")
COPY_OUT_RESPONSE = ord("H")
DATA_ROW = ord("D")
EMPTY_QUERY_RESPONSE = ord("I")
ERROR_RESPONSE = ord("E")
FUNCTION_CALL_RESPONSE = ord("V")
NEGOTIATE_PROTOCOL_VERSION = ord("v")
NO_DATA = ord("n")
NOTICE_RESPONSE = ord("N")
NOTIFICATION_RESPONSE = ord("A")
PARAMETER_DESCRIPTION = ord("t")
PARAMETER_STATUS = ord("S")
PARSE_COMPLETE = ord("1")
PORTAL_SUSPENDED = ord("s")
READY_FOR_QUERY = ord("Z")
ROW_DESCRIPTION = ord("T")

BACKEND_TYPES = frozenset(
    [
        AUTHENTICATION,
        BACKEND_KEY_DATA,
        BIND_COMPLETE,
        CLOSE_COMPLETE,
        COMMAND_COMPLETE,
        COPY_BOTH_RESPONSE,
        COPY_IN_RESPONSE,
        COPY_OUT_RESPONSE,
        COPY_DATA,
        COPY_DONE,
        DATA_ROW,
        EMPTY_QUERY_RESPONSE,
        ERROR_RESPONSE,
        FUNCTION_CALL_RESPONSE,
        NEGOTIATE_PROTOCOL_VERSION,
        NO_DATA,
        NOTICE_RESPONSE,
        NOTIFICATION_RESPONSE,
        PARAMETER_DESCRIPTION,
        PARAMETER_STATUS,
        PARSE_COMPLETE,
        PORTAL_SUSPENDED,
        READY_FOR_QUERY,
        ROW_DESCRIPTION,
    ]
)

# Authentication request codes (the int32 that starts an 'R' message).
AUTH_OK = 0
AUTH_KERBEROS_V5 = 2
AUTH_CLEARTEXT_PASSWORD = 3
AUTH_MD5_PASSWORD = 5
AUTH_SCM_CREDENTIAL = 6
AUTH_GSS = 7
AUTH_GSS_CONTINUE = 8
AUTH_SSPI = 9
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12

# ReadyForQuery transaction status bytes.
TRANSACTION_IDLE = ord("I")
TRANSACTION_IN_BLOCK = ord("T")
TRANSACTION_FAILED = ord("E")

_INT32 = struct.Struct("!i")
_UINT32 = struct.Struct("!I")
_INT16 = struct.Struct("!h")
_HEADER = struct.Struct("!BI")


class MessageFormatError(ValueError):
    """
    A message's payload does not match the layout of its type.
    """


# --------------------------------------------------------------------------
# Low-level helpers


def message(message_type: int, payload: bytes = b"") -> bytes:
    """
    Frame a typed message: type byte, int32 length (counting itself), payload.
    """
    return _HEADER.pack(message_type, len(payload) + 4) + payload


def _cstring(value: str, codec: str = "utf-8") -> bytes:
    # surrogateescape: text decoded from a client (L{client_codec}) goes
    # back out as exactly the bytes it came as, even bytes that are not
    # valid in the codec; the proxy's own text has no surrogates.
    encoded = value.encode(codec, "surrogateescape")
    if b"\x00" in encoded:
        raise MessageFormatError("string contains a NUL byte")
    return encoded + b"\x00"


# --------------------------------------------------------------------------
# Client text
#
# SQL text arrives as bytes in the session's client_encoding, which the
# proxy forwards untouched.  Where it must read the text (to classify and
# route it, or to log it) it decodes it with the codec of that encoding and
# the "surrogateescape" error handler: no byte sequence makes a decode fail
# (bytes that are not valid text become lone surrogates, and the server,
# which gets the original bytes, answers them with its own 22021), and the
# text encodes back to the very bytes it came from.

#: The Python codec of each encoding PostgreSQL reports as C{client_encoding}
#: (its canonical names, as in ParameterStatus).  An encoding missing here
#: (MULE_INTERNAL, EUC_TW) is read as UTF-8: like every server-side
#: encoding, it never uses ASCII bytes inside a multi-byte character, so the
#: statement's keywords, quotes and semicolons read right, and the rest
#: round-trips as surrogates.  The client-only encodings (SJIS, BIG5, GBK,
#: UHC, GB18030, JOHAB) do use ASCII bytes as trail bytes -- an SJIS
#: character may end in a backslash -- which is why the codec matters.
CLIENT_CODECS: Dict[str, str] = {
    "UTF8": "utf-8",
    "SQL_ASCII": "utf-8",
    "LATIN1": "latin-1",
    "LATIN2": "iso8859-2",
    "LATIN3": "iso8859-3",
    "LATIN4": "iso8859-4",
    "LATIN5": "iso8859-9",
    "LATIN6": "iso8859-10",
    "LATIN7": "iso8859-13",
    "LATIN8": "iso8859-14",
    "LATIN9": "iso8859-15",
    "LATIN10": "iso8859-16",
    "ISO_8859_5": "iso8859-5",
    "ISO_8859_6": "iso8859-6",
    "ISO_8859_7": "iso8859-7",
    "ISO_8859_8": "iso8859-8",
    "WIN866": "cp866",
    "WIN874": "cp874",
    "WIN1250": "cp1250",
    "WIN1251": "cp1251",
    "WIN1252": "cp1252",
    "WIN1253": "cp1253",
    "WIN1254": "cp1254",
    "WIN1255": "cp1255",
    "WIN1256": "cp1256",
    "WIN1257": "cp1257",
    "WIN1258": "cp1258",
    "KOI8R": "koi8-r",
    "KOI8U": "koi8-u",
    "EUC_JP": "euc-jp",
    "EUC_JIS_2004": "euc-jis-2004",
    "EUC_KR": "euc-kr",
    "EUC_CN": "gb2312",
    "SJIS": "cp932",
    "SHIFT_JIS_2004": "shift-jis-2004",
    "BIG5": "cp950",
    "GBK": "gbk",
    "UHC": "cp949",
    "GB18030": "gb18030",
    "JOHAB": "johab",
}

#: The codec of a session that has not said otherwise (and of UTF8).
UTF8_CODEC = "utf-8"


def client_codec(client_encoding: str) -> str:
    """
    The Python codec that reads text in C{client_encoding} (a name as the
    server reports it; aliases and case are tolerated).
    """
    name = client_encoding.upper().replace("-", "_")
    codec = CLIENT_CODECS.get(name) or CLIENT_CODECS.get(name.replace("_", ""))
    return codec or UTF8_CODEC


class _Reader:
    """
    A cursor over a payload that raises L{MessageFormatError} on overrun, so
    every decoder rejects truncated input the same way.
    """

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0

    def int32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise MessageFormatError("message too short for an int32")
        (value,) = _INT32.unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def int16(self) -> int:
        if self.pos + 2 > len(self.data):
            raise MessageFormatError("message too short for an int16")
        (value,) = _INT16.unpack_from(self.data, self.pos)
        self.pos += 2
        return value

    def count(self) -> int:
        """
        An int16 element count, which must not be negative.
        """
        value = self.int16()
        if value < 0:
            raise MessageFormatError("negative element count")
        return value

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise MessageFormatError("message too short for a byte")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def cstring(self, codec: str = UTF8_CODEC) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise MessageFormatError("unterminated string")
        value = self.data[self.pos : end].decode(codec, "surrogateescape")
        self.pos = end + 1
        return value

    def raw(self, length: int) -> bytes:
        if length < 0 or self.pos + length > len(self.data):
            raise MessageFormatError("message too short for its data")
        value = self.data[self.pos : self.pos + length]
        self.pos += length
        return value

    def rest(self) -> bytes:
        value = self.data[self.pos :]
        self.pos = len(self.data)
        return value

    def nullable_bytes(self) -> Optional[bytes]:
        length = self.int32()
        if length == -1:
            return None
        return self.raw(length)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MessageFormatError("unexpected bytes at end of message")
