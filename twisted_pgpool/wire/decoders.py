"""
Decoders: a message's payload (the bytes after the type byte and the length
word) into a small frozen attrs object, for the messages whose content a
decision depends on, and L{decode_backend}/L{decode_frontend} for any
message by its type.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import attr

from twisted_pgpool.wire.codes import (
    AUTHENTICATION,
    BACKEND_KEY_DATA,
    BIND,
    BIND_COMPLETE,
    CLOSE,
    CLOSE_COMPLETE,
    COMMAND_COMPLETE,
    COPY_BOTH_RESPONSE,
    COPY_DATA,
    COPY_DONE,
    COPY_FAIL,
    COPY_IN_RESPONSE,
    COPY_OUT_RESPONSE,
    DATA_ROW,
    DESCRIBE,
    EMPTY_QUERY_RESPONSE,
    ERROR_RESPONSE,
    EXECUTE,
    FLUSH,
    FUNCTION_CALL,
    FUNCTION_CALL_RESPONSE,
    NEGOTIATE_PROTOCOL_VERSION,
    NO_DATA,
    NOTICE_RESPONSE,
    NOTIFICATION_RESPONSE,
    PARAMETER_DESCRIPTION,
    PARAMETER_STATUS,
    PARSE,
    PARSE_COMPLETE,
    PASSWORD_MESSAGE,
    PORTAL_SUSPENDED,
    QUERY,
    READY_FOR_QUERY,
    ROW_DESCRIPTION,
    SYNC,
    TERMINATE,
    TRANSACTION_FAILED,
    TRANSACTION_IDLE,
    TRANSACTION_IN_BLOCK,
    UTF8_CODEC,
    MessageFormatError,
    _Reader,
)

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
        TRANSACTION_IDLE,
        TRANSACTION_IN_BLOCK,
        TRANSACTION_FAILED,
    ):
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
        columns.append(
            Column(
                name,
                reader.int32(),
                reader.int16(),
                reader.int32(),
                reader.int16(),
                reader.int32(),
                reader.int16(),
            )
        )
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
    result = NotificationResponse(reader.int32(), reader.cstring(), reader.cstring())
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
