"""
Encoders of the messages the proxy sends itself: as a server (to clients:
authentication requests, ParameterStatus, ReadyForQuery, result sets of its
own reports) and as a client (to servers: Query, the extended protocol,
passwords and SASL, COPY, FunctionCall).  Each returns the whole message,
type byte and length included.
"""

from __future__ import annotations

import struct
from typing import Optional, Sequence

from twisted_pgpool.wire.codes import (
    _INT16,
    _INT32,
    AUTH_CLEARTEXT_PASSWORD,
    AUTH_MD5_PASSWORD,
    AUTH_OK,
    AUTH_SASL,
    AUTH_SASL_CONTINUE,
    AUTH_SASL_FINAL,
    AUTHENTICATION,
    BACKEND_KEY_DATA,
    BIND,
    CLOSE,
    COMMAND_COMPLETE,
    COPY_DATA,
    COPY_DONE,
    COPY_FAIL,
    DATA_ROW,
    DESCRIBE,
    EMPTY_QUERY_RESPONSE,
    EXECUTE,
    FLUSH,
    FUNCTION_CALL,
    NEGOTIATE_PROTOCOL_VERSION,
    PARAMETER_STATUS,
    PARSE,
    PASSWORD_MESSAGE,
    QUERY,
    READY_FOR_QUERY,
    ROW_DESCRIPTION,
    SYNC,
    TERMINATE,
    TRANSACTION_IDLE,
    UTF8_CODEC,
    MessageFormatError,
    _cstring,
    message,
)

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
    return authentication(AUTH_SASL, b"".join(_cstring(m) for m in mechanisms) + b"\x00")


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


def negotiate_protocol_version(newest_minor: int, unrecognized: Sequence[str]) -> bytes:
    """
    Encode a NegotiateProtocolVersion.  The documentation calls the first
    field the newest minor version, but servers send the whole version
    number (C{3 << 16 | minor}), and libpq reads it that way.
    """
    return message(
        NEGOTIATE_PROTOCOL_VERSION,
        _INT32.pack(newest_minor)
        + _INT32.pack(len(unrecognized))
        + b"".join(_cstring(o) for o in unrecognized),
    )


def row_description(columns: Sequence[str], type_oid: int = 25) -> bytes:
    """
    Encode a RowDescription of text columns, which is what the proxy's own
    C{SHOW} answers return.
    """
    body = _INT16.pack(len(columns)) + b"".join(
        _cstring(name) + struct.pack("!ihihih", 0, 0, type_oid, -1, -1, 0) for name in columns
    )
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
    return message(PASSWORD_MESSAGE, _cstring(mechanism) + _INT32.pack(len(data)) + data)


def sasl_response(data: bytes) -> bytes:
    return message(PASSWORD_MESSAGE, data)


def parse(name: str, sql: str, parameter_types: Sequence[int] = ()) -> bytes:
    body = _cstring(name) + _cstring(sql) + _INT16.pack(len(parameter_types))
    body += b"".join(_INT32.pack(oid) for oid in parameter_types)
    return message(PARSE, body)


def bind(
    portal: str,
    statement: str,
    parameters: Sequence[Optional[bytes]] = (),
    parameter_formats: Sequence[int] = (),
    result_formats: Sequence[int] = (),
) -> bytes:
    parts = [_cstring(portal), _cstring(statement), _INT16.pack(len(parameter_formats))]
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


def function_call(
    function_oid: int,
    arguments: Sequence[Optional[bytes]],
    argument_formats: Sequence[int] = (),
    result_format: int = 0,
) -> bytes:
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
