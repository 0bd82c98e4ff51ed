"""
The PostgreSQL v3 wire protocol: message type codes, encoders and decoders.

This module knows the layout of every message the v3 protocol defines, in
both directions, and nothing about sockets.  The proxy forwards almost all
traffic as the original bytes (see L{twisted_pgpool.wire.framing}); it decodes a
message here only when a decision depends on its content (authentication,
ReadyForQuery status, routing), and it encodes here whatever it says itself.

Decoders take the message I{payload} (the bytes after the type byte and the
length word) and return small frozen attrs objects; encoders return the full
message including the type byte and length.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Optional, Sequence, Tuple

import attr

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
    [BIND, CLOSE, COPY_DATA, COPY_DONE, COPY_FAIL, DESCRIBE, EXECUTE, FLUSH,
     FUNCTION_CALL, PARSE, PASSWORD_MESSAGE, QUERY, SYNC, TERMINATE]
)
#: Frontend messages PostgreSQL reads with C{PQ_SMALL_MESSAGE_LIMIT}
#: (postgres.c, SocketBackend): a longer one ends the connection silently.
SMALL_FRONTEND_TYPES = frozenset(
    [CLOSE, DESCRIBE, EXECUTE, FLUSH, SYNC, TERMINATE, COPY_DONE, COPY_FAIL])
#: The protocol documentation's name of each frontend message type, for
#: error messages.
FRONTEND_NAMES = {
    BIND: "Bind", CLOSE: "Close", COPY_DATA: "CopyData", COPY_DONE: "CopyDone",
    COPY_FAIL: "CopyFail", DESCRIBE: "Describe", EXECUTE: "Execute",
    FLUSH: "Flush", FUNCTION_CALL: "FunctionCall", PARSE: "Parse",
    PASSWORD_MESSAGE: "PasswordMessage", QUERY: "Query", SYNC: "Sync",
    TERMINATE: "Terminate"}

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
    [AUTHENTICATION, BACKEND_KEY_DATA, BIND_COMPLETE, CLOSE_COMPLETE,
     COMMAND_COMPLETE, COPY_BOTH_RESPONSE, COPY_IN_RESPONSE, COPY_OUT_RESPONSE,
     COPY_DATA, COPY_DONE, DATA_ROW, EMPTY_QUERY_RESPONSE, ERROR_RESPONSE,
     FUNCTION_CALL_RESPONSE, NEGOTIATE_PROTOCOL_VERSION, NO_DATA,
     NOTICE_RESPONSE, NOTIFICATION_RESPONSE, PARAMETER_DESCRIPTION,
     PARAMETER_STATUS, PARSE_COMPLETE, PORTAL_SUSPENDED, READY_FOR_QUERY,
     ROW_DESCRIPTION]
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
        value = self.data[self.pos:end].decode(codec, "surrogateescape")
        self.pos = end + 1
        return value

    def raw(self, length: int) -> bytes:
        if length < 0 or self.pos + length > len(self.data):
            raise MessageFormatError("message too short for its data")
        value = self.data[self.pos:self.pos + length]
        self.pos += length
        return value

    def rest(self) -> bytes:
        value = self.data[self.pos:]
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


def encode_startup_message(parameters: Dict[str, str],
                           protocol_version: int = PROTOCOL_VERSION_3_0) -> bytes:
    """
    Encode a StartupMessage with the given parameters.
    """
    body = _UINT32.pack(protocol_version) + b"".join(
        _cstring(name) + _cstring(value) for name, value in parameters.items()
    ) + b"\x00"
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


# --------------------------------------------------------------------------
# Backend messages: encoders the proxy uses when it speaks as a server


def authentication(code: int, data: bytes = b"") -> bytes:
    """
    Encode an Authentication* request (C{R}).
    """
    return message(AUTHENTICATION, _INT32.pack(code) + data)


def authentication_ok() -> bytes:
    return authentication(AUTH_OK)


def authentication_cleartext_password() -> bytes:
    return authentication(AUTH_CLEARTEXT_PASSWORD)


def authentication_md5_password(salt: bytes) -> bytes:
    if len(salt) != 4:
        raise MessageFormatError("an MD5 salt is four bytes")
    return authentication(AUTH_MD5_PASSWORD, salt)


def authentication_sasl(mechanisms: Sequence[str]) -> bytes:
    return authentication(
        AUTH_SASL, b"".join(_cstring(m) for m in mechanisms) + b"\x00")


def authentication_sasl_continue(data: bytes) -> bytes:
    return authentication(AUTH_SASL_CONTINUE, data)


def authentication_sasl_final(data: bytes) -> bytes:
    return authentication(AUTH_SASL_FINAL, data)


def parameter_status(name: str, value: str) -> bytes:
    return message(PARAMETER_STATUS, _cstring(name) + _cstring(value))


def backend_key_data(process_id: int, secret_key: int) -> bytes:
    return message(BACKEND_KEY_DATA, struct.pack("!ii", process_id, secret_key))


def ready_for_query(status: int = TRANSACTION_IDLE) -> bytes:
    return message(READY_FOR_QUERY, bytes((status,)))


def negotiate_protocol_version(newest_minor: int,
                               unrecognized: Sequence[str]) -> bytes:
    """
    Encode a NegotiateProtocolVersion.  The documentation calls the first
    field the newest minor version, but servers send the whole version
    number (C{3 << 16 | minor}), and libpq reads it that way.
    """
    return message(
        NEGOTIATE_PROTOCOL_VERSION,
        _INT32.pack(newest_minor) + _INT32.pack(len(unrecognized))
        + b"".join(_cstring(o) for o in unrecognized))


def row_description(columns: Sequence[str], type_oid: int = 25) -> bytes:
    """
    Encode a RowDescription of text columns, which is what the proxy's own
    C{SHOW} answers return.
    """
    body = _INT16.pack(len(columns)) + b"".join(
        _cstring(name) + struct.pack("!ihihih", 0, 0, type_oid, -1, -1, 0)
        for name in columns)
    return message(ROW_DESCRIPTION, body)


def data_row(values: Sequence[Optional[str]]) -> bytes:
    parts = [_INT16.pack(len(values))]
    for value in values:
        if value is None:
            parts.append(_INT32.pack(-1))
        else:
            encoded = value.encode("utf-8")
            parts.append(_INT32.pack(len(encoded)))
            parts.append(encoded)
    return message(DATA_ROW, b"".join(parts))


def command_complete(tag: str) -> bytes:
    return message(COMMAND_COMPLETE, _cstring(tag))


def empty_query_response() -> bytes:
    return message(EMPTY_QUERY_RESPONSE)


# --------------------------------------------------------------------------
# Frontend messages: encoders the proxy uses when it speaks as a client


def query(sql: str, codec: str = UTF8_CODEC) -> bytes:
    """
    A simple Query.

    @param codec: what the text is encoded with: the C{client_encoding}
        of the connection it goes to (L{client_codec}) when it is a
        client's text, read with that codec.
    """
    return message(QUERY, _cstring(sql, codec))


def terminate() -> bytes:
    return message(TERMINATE)


def sync() -> bytes:
    return message(SYNC)


def flush() -> bytes:
    return message(FLUSH)


def password_message(password: bytes) -> bytes:
    """
    Encode a PasswordMessage; C{password} is sent as given plus a NUL.
    """
    return message(PASSWORD_MESSAGE, password + b"\x00")


def sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    return message(PASSWORD_MESSAGE,
                   _cstring(mechanism) + _INT32.pack(len(data)) + data)


def sasl_response(data: bytes) -> bytes:
    return message(PASSWORD_MESSAGE, data)


def parse(name: str, sql: str, parameter_types: Sequence[int] = ()) -> bytes:
    body = _cstring(name) + _cstring(sql) + _INT16.pack(len(parameter_types))
    body += b"".join(_INT32.pack(oid) for oid in parameter_types)
    return message(PARSE, body)


def bind(portal: str, statement: str, parameters: Sequence[Optional[bytes]] = (),
         parameter_formats: Sequence[int] = (),
         result_formats: Sequence[int] = ()) -> bytes:
    parts = [_cstring(portal), _cstring(statement),
             _INT16.pack(len(parameter_formats))]
    parts.extend(_INT16.pack(f) for f in parameter_formats)
    parts.append(_INT16.pack(len(parameters)))
    for value in parameters:
        if value is None:
            parts.append(_INT32.pack(-1))
        else:
            parts.append(_INT32.pack(len(value)))
            parts.append(value)
    parts.append(_INT16.pack(len(result_formats)))
    parts.extend(_INT16.pack(f) for f in result_formats)
    return message(BIND, b"".join(parts))


def describe(kind: str, name: str) -> bytes:
    return message(DESCRIBE, kind.encode("ascii") + _cstring(name))


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return message(EXECUTE, _cstring(portal) + _INT32.pack(max_rows))


def close(kind: str, name: str) -> bytes:
    return message(CLOSE, kind.encode("ascii") + _cstring(name))


def copy_data(data: bytes) -> bytes:
    return message(COPY_DATA, data)


def copy_done() -> bytes:
    return message(COPY_DONE)


def copy_fail(reason: str) -> bytes:
    return message(COPY_FAIL, _cstring(reason))


def function_call(function_oid: int, arguments: Sequence[Optional[bytes]],
                  argument_formats: Sequence[int] = (),
                  result_format: int = 0) -> bytes:
    parts = [_INT32.pack(function_oid), _INT16.pack(len(argument_formats))]
    parts.extend(_INT16.pack(f) for f in argument_formats)
    parts.append(_INT16.pack(len(arguments)))
    for value in arguments:
        if value is None:
            parts.append(_INT32.pack(-1))
        else:
            parts.append(_INT32.pack(len(value)))
            parts.append(value)
    parts.append(_INT16.pack(result_format))
    return message(FUNCTION_CALL, b"".join(parts))


# --------------------------------------------------------------------------
# Decoded message objects


@attr.s(auto_attribs=True, frozen=True)
class Authentication:
    code: int
    data: bytes


@attr.s(auto_attribs=True, frozen=True)
class ParameterStatus:
    name: str
    value: str


@attr.s(auto_attribs=True, frozen=True)
class BackendKeyData:
    process_id: int
    secret_key: int


@attr.s(auto_attribs=True, frozen=True)
class ReadyForQuery:
    status: int


@attr.s(auto_attribs=True, frozen=True)
class ErrorOrNotice:
    """
    ErrorResponse or NoticeResponse fields by their one-letter code.
    """

    fields: Dict[str, str]

    @property
    def severity(self) -> str:
        return self.fields.get("V", self.fields.get("S", ""))

    @property
    def sqlstate(self) -> str:
        return self.fields.get("C", "")

    @property
    def message(self) -> str:
        return self.fields.get("M", "")


@attr.s(auto_attribs=True, frozen=True)
class NegotiateProtocolVersion:
    newest_minor: int
    unrecognized: Tuple[str, ...]


@attr.s(auto_attribs=True, frozen=True)
class Column:
    name: str
    table_oid: int
    column_number: int
    type_oid: int
    type_size: int
    type_modifier: int
    format_code: int


@attr.s(auto_attribs=True, frozen=True)
class RowDescription:
    columns: Tuple[Column, ...]


@attr.s(auto_attribs=True, frozen=True)
class DataRow:
    values: Tuple[Optional[bytes], ...]


@attr.s(auto_attribs=True, frozen=True)
class CommandComplete:
    tag: str


@attr.s(auto_attribs=True, frozen=True)
class CopyResponse:
    """
    CopyInResponse, CopyOutResponse or CopyBothResponse.
    """

    kind: int
    overall_format: int
    column_formats: Tuple[int, ...]


@attr.s(auto_attribs=True, frozen=True)
class NotificationResponse:
    process_id: int
    channel: str
    payload: str


@attr.s(auto_attribs=True, frozen=True)
class ParameterDescription:
    type_oids: Tuple[int, ...]


@attr.s(auto_attribs=True, frozen=True)
class FunctionCallResponse:
    result: Optional[bytes]


@attr.s(auto_attribs=True, frozen=True)
class Empty:
    """
    A message whose type says everything (ParseComplete, NoData, Sync...).
    """

    message_type: int


@attr.s(auto_attribs=True, frozen=True)
class Raw:
    """
    A message carried as opaque bytes (CopyData, SASL responses, passwords).
    """

    message_type: int
    data: bytes


@attr.s(auto_attribs=True, frozen=True)
class Query:
    sql: str


@attr.s(auto_attribs=True, frozen=True)
class Parse:
    statement: str
    sql: str
    parameter_types: Tuple[int, ...]


@attr.s(auto_attribs=True, frozen=True)
class Bind:
    portal: str
    statement: str
    parameter_formats: Tuple[int, ...]
    parameters: Tuple[Optional[bytes], ...]
    result_formats: Tuple[int, ...]


@attr.s(auto_attribs=True, frozen=True)
class Describe:
    kind: str  # 'S' statement or 'P' portal
    name: str


@attr.s(auto_attribs=True, frozen=True)
class Close:
    kind: str
    name: str


@attr.s(auto_attribs=True, frozen=True)
class Execute:
    portal: str
    max_rows: int


@attr.s(auto_attribs=True, frozen=True)
class CopyFail:
    reason: str


@attr.s(auto_attribs=True, frozen=True)
class FunctionCall:
    function_oid: int
    argument_formats: Tuple[int, ...]
    arguments: Tuple[Optional[bytes], ...]
    result_format: int


@attr.s(auto_attribs=True, frozen=True)
class SASLInitialResponse:
    mechanism: str
    data: Optional[bytes]


# --------------------------------------------------------------------------
# Decoders


def decode_authentication(payload: bytes) -> Authentication:
    reader = _Reader(payload)
    code = reader.int32()
    return Authentication(code, reader.rest())


def decode_sasl_mechanisms(data: bytes) -> List[str]:
    """
    Decode the mechanism list of an AuthenticationSASL request.
    """
    reader = _Reader(data)
    mechanisms = []
    while True:
        name = reader.cstring()
        if not name:
            break
        mechanisms.append(name)
    return mechanisms


def decode_error_fields(payload: bytes) -> ErrorOrNotice:
    fields: Dict[str, str] = {}
    reader = _Reader(payload)
    while True:
        code = reader.byte()
        if code == 0:
            break
        fields[chr(code)] = reader.cstring()
    return ErrorOrNotice(fields)


def decode_parameter_status(payload: bytes) -> ParameterStatus:
    reader = _Reader(payload)
    result = ParameterStatus(reader.cstring(), reader.cstring())
    reader.end()
    return result


def decode_backend_key_data(payload: bytes) -> BackendKeyData:
    reader = _Reader(payload)
    result = BackendKeyData(reader.int32(), reader.int32())
    reader.end()
    return result


def decode_ready_for_query(payload: bytes) -> ReadyForQuery:
    if len(payload) != 1 or payload[0] not in (
            TRANSACTION_IDLE, TRANSACTION_IN_BLOCK, TRANSACTION_FAILED):
        raise MessageFormatError("invalid ReadyForQuery status")
    return ReadyForQuery(payload[0])


def decode_negotiate_protocol_version(payload: bytes) -> NegotiateProtocolVersion:
    reader = _Reader(payload)
    newest = reader.int32()
    count = reader.int32()
    if count < 0:
        raise MessageFormatError("negative option count")
    options = tuple(reader.cstring() for _ in range(count))
    reader.end()
    return NegotiateProtocolVersion(newest, options)


def decode_row_description(payload: bytes) -> RowDescription:
    reader = _Reader(payload)
    count = reader.count()
    columns = []
    for _ in range(count):
        name = reader.cstring()
        columns.append(Column(name, reader.int32(), reader.int16(),
                              reader.int32(), reader.int16(), reader.int32(),
                              reader.int16()))
    reader.end()
    return RowDescription(tuple(columns))


def decode_data_row(payload: bytes) -> DataRow:
    reader = _Reader(payload)
    count = reader.count()
    values = tuple(reader.nullable_bytes() for _ in range(count))
    reader.end()
    return DataRow(values)


def decode_command_complete(payload: bytes) -> CommandComplete:
    reader = _Reader(payload)
    result = CommandComplete(reader.cstring())
    reader.end()
    return result


def decode_copy_response(message_type: int, payload: bytes) -> CopyResponse:
    reader = _Reader(payload)
    overall = reader.byte()
    count = reader.count()
    formats = tuple(reader.int16() for _ in range(count))
    reader.end()
    return CopyResponse(message_type, overall, formats)


def decode_notification(payload: bytes) -> NotificationResponse:
    reader = _Reader(payload)
    result = NotificationResponse(reader.int32(), reader.cstring(),
                                  reader.cstring())
    reader.end()
    return result


def decode_parameter_description(payload: bytes) -> ParameterDescription:
    reader = _Reader(payload)
    count = reader.count()
    oids = tuple(reader.int32() for _ in range(count))
    reader.end()
    return ParameterDescription(oids)


def decode_function_call_response(payload: bytes) -> FunctionCallResponse:
    reader = _Reader(payload)
    result = FunctionCallResponse(reader.nullable_bytes())
    reader.end()
    return result


def decode_query(payload: bytes, codec: str = UTF8_CODEC) -> Query:
    """
    @param codec: the session's L{client_codec}, which the text is read
        with (never failing: see L{CLIENT_CODECS}).
    """
    reader = _Reader(payload)
    result = Query(reader.cstring(codec))
    reader.end()
    return result


def decode_parse(payload: bytes, codec: str = UTF8_CODEC) -> Parse:
    """
    @param codec: the session's L{client_codec}, which the query text is
        read with (never failing: see L{CLIENT_CODECS}).
    """
    reader = _Reader(payload)
    name = reader.cstring()
    sql = reader.cstring(codec)
    count = reader.count()
    types = tuple(reader.int32() for _ in range(count))
    reader.end()
    return Parse(name, sql, types)


def decode_bind(payload: bytes) -> Bind:
    reader = _Reader(payload)
    portal = reader.cstring()
    statement = reader.cstring()
    parameter_formats = tuple(reader.int16() for _ in range(reader.count()))
    parameters = tuple(reader.nullable_bytes() for _ in range(reader.count()))
    result_formats = tuple(reader.int16() for _ in range(reader.count()))
    reader.end()
    return Bind(portal, statement, parameter_formats, parameters, result_formats)


def decode_bind_names(payload: bytes) -> Tuple[str, str]:
    """
    The portal and statement names of a Bind, without decoding its
    parameters (the router needs only the names; a Bind may carry megabytes).

    @raise MessageFormatError: the names are not there.
    """
    reader = _Reader(payload)
    return reader.cstring(), reader.cstring()


def _decode_kind_and_name(payload: bytes) -> Tuple[str, str]:
    reader = _Reader(payload)
    kind = chr(reader.byte())
    if kind not in ("S", "P"):
        raise MessageFormatError("kind must be 'S' or 'P'")
    name = reader.cstring()
    reader.end()
    return kind, name


def decode_describe(payload: bytes) -> Describe:
    return Describe(*_decode_kind_and_name(payload))


def decode_close(payload: bytes) -> Close:
    return Close(*_decode_kind_and_name(payload))


def decode_execute(payload: bytes) -> Execute:
    reader = _Reader(payload)
    result = Execute(reader.cstring(), reader.int32())
    reader.end()
    return result


def decode_copy_fail(payload: bytes) -> CopyFail:
    reader = _Reader(payload)
    result = CopyFail(reader.cstring())
    reader.end()
    return result


def decode_function_call(payload: bytes) -> FunctionCall:
    reader = _Reader(payload)
    oid = reader.int32()
    formats = tuple(reader.int16() for _ in range(reader.count()))
    arguments = tuple(reader.nullable_bytes() for _ in range(reader.count()))
    result_format = reader.int16()
    reader.end()
    return FunctionCall(oid, formats, arguments, result_format)


def decode_sasl_initial_response(payload: bytes) -> SASLInitialResponse:
    reader = _Reader(payload)
    mechanism = reader.cstring()
    data = reader.nullable_bytes()
    reader.end()
    return SASLInitialResponse(mechanism, data)


def decode_password(payload: bytes) -> bytes:
    """
    Decode a clear-text or MD5 PasswordMessage into the bytes before the NUL.
    """
    if not payload.endswith(b"\x00") or b"\x00" in payload[:-1]:
        raise MessageFormatError("invalid password packet")
    return bytes(payload[:-1])


def _empty(message_type: int):
    def decoder(payload: bytes) -> Empty:
        if payload:
            raise MessageFormatError("message should have no payload")
        return Empty(message_type)
    return decoder


def _raw(message_type: int):
    def decoder(payload: bytes) -> Raw:
        return Raw(message_type, bytes(payload))
    return decoder


_BACKEND_DECODERS = {
    AUTHENTICATION: decode_authentication,
    BACKEND_KEY_DATA: decode_backend_key_data,
    BIND_COMPLETE: _empty(BIND_COMPLETE),
    CLOSE_COMPLETE: _empty(CLOSE_COMPLETE),
    COMMAND_COMPLETE: decode_command_complete,
    COPY_BOTH_RESPONSE: lambda p: decode_copy_response(COPY_BOTH_RESPONSE, p),
    COPY_IN_RESPONSE: lambda p: decode_copy_response(COPY_IN_RESPONSE, p),
    COPY_OUT_RESPONSE: lambda p: decode_copy_response(COPY_OUT_RESPONSE, p),
    COPY_DATA: _raw(COPY_DATA),
    COPY_DONE: _empty(COPY_DONE),
    DATA_ROW: decode_data_row,
    EMPTY_QUERY_RESPONSE: _empty(EMPTY_QUERY_RESPONSE),
    ERROR_RESPONSE: decode_error_fields,
    FUNCTION_CALL_RESPONSE: decode_function_call_response,
    NEGOTIATE_PROTOCOL_VERSION: decode_negotiate_protocol_version,
    NO_DATA: _empty(NO_DATA),
    NOTICE_RESPONSE: decode_error_fields,
    NOTIFICATION_RESPONSE: decode_notification,
    PARAMETER_DESCRIPTION: decode_parameter_description,
    PARAMETER_STATUS: decode_parameter_status,
    PARSE_COMPLETE: _empty(PARSE_COMPLETE),
    PORTAL_SUSPENDED: _empty(PORTAL_SUSPENDED),
    READY_FOR_QUERY: decode_ready_for_query,
    ROW_DESCRIPTION: decode_row_description,
}

_FRONTEND_DECODERS = {
    BIND: decode_bind,
    CLOSE: decode_close,
    COPY_DATA: _raw(COPY_DATA),
    COPY_DONE: _empty(COPY_DONE),
    COPY_FAIL: decode_copy_fail,
    DESCRIBE: decode_describe,
    EXECUTE: decode_execute,
    FLUSH: _empty(FLUSH),
    FUNCTION_CALL: decode_function_call,
    PARSE: decode_parse,
    # 'p' is a password, SASLInitialResponse or SASLResponse depending on the
    # authentication step; only the step knows, so it is decoded as raw here.
    PASSWORD_MESSAGE: _raw(PASSWORD_MESSAGE),
    QUERY: decode_query,
    SYNC: _empty(SYNC),
    TERMINATE: _empty(TERMINATE),
}


def decode_backend(message_type: int, payload: bytes):
    """
    Decode any backend message by its type.

    @raise MessageFormatError: for an unknown type or a malformed payload.
    """
    decoder = _BACKEND_DECODERS.get(message_type)
    if decoder is None:
        raise MessageFormatError(f"unknown backend message type {message_type!r}")
    return decoder(payload)


def decode_frontend(message_type: int, payload: bytes):
    """
    Decode any frontend message by its type.

    @raise MessageFormatError: for an unknown type or a malformed payload.
    """
    decoder = _FRONTEND_DECODERS.get(message_type)
    if decoder is None:
        raise MessageFormatError(f"unknown frontend message type {message_type!r}")
    return decoder(payload)
