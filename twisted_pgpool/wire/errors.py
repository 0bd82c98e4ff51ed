"""
PostgreSQL errors as the proxy reports them.

Everything a client sees from the proxy itself (as opposed to what a backend
said) is an ErrorResponse or NoticeResponse built here, so the SQLSTATE codes
and field layout are the same everywhere.  The SQLSTATE constants are the ones
PostgreSQL itself uses for the same situations, so client libraries map them to
the exception classes users already handle.
"""

from __future__ import annotations

import struct
from typing import Dict, Optional

import attr

# SQLSTATE codes (PostgreSQL appendix A) used by the proxy.
PROTOCOL_VIOLATION = "08P01"
CONNECTION_FAILURE = "08006"
CONNECTION_EXCEPTION = "08000"
SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION = "08001"
CANNOT_CONNECT_NOW = "57P03"
ADMIN_SHUTDOWN = "57P01"
CRASH_SHUTDOWN = "57P02"
FEATURE_NOT_SUPPORTED = "0A000"
INVALID_AUTHORIZATION_SPECIFICATION = "28000"
INVALID_PASSWORD = "28P01"
CONFIG_FILE_ERROR = "F0000"
TOO_MANY_CONNECTIONS = "53300"
PROGRAM_LIMIT_EXCEEDED = "54000"
INTERNAL_ERROR = "XX000"
QUERY_CANCELED = "57014"
IDLE_SESSION_TIMEOUT = "57P05"
INVALID_TEXT_REPRESENTATION = "22P02"
SUCCESSFUL_COMPLETION = "00000"


@attr.s(auto_attribs=True, frozen=True)
class PgError(Exception):
    """
    An error to send to a client as a PostgreSQL ErrorResponse.

    Raising one inside a session flow ends in that exact ErrorResponse on the
    client's socket (and, for C{FATAL}, in closing the connection), so code
    deep in the authentication or connection logic can fail in PostgreSQL's
    own terms without knowing about the transport.

    @ivar severity: C{FATAL}, C{ERROR}, C{WARNING}, C{NOTICE}...
    @ivar sqlstate: the five-character SQLSTATE code.
    @ivar message: the primary, human-readable message.
    @ivar detail: optional secondary message.
    @ivar hint: optional suggestion for the user.
    """

    severity: str
    sqlstate: str
    message: str
    detail: Optional[str] = None
    hint: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.severity}: {self.message} (SQLSTATE {self.sqlstate})"

    def fields(self) -> Dict[str, str]:
        """
        The ErrorResponse fields as a mapping of one-letter codes to values.
        """
        result = {
            "S": self.severity,
            "V": self.severity,
            "C": self.sqlstate,
            "M": self.message,
        }
        if self.detail is not None:
            result["D"] = self.detail
        if self.hint is not None:
            result["H"] = self.hint
        return result

    def to_bytes(self) -> bytes:
        """
        Encode as an ErrorResponse message.
        """
        return encode_fields(b"E", self.fields())

    def to_notice(self) -> bytes:
        """
        Encode as a NoticeResponse message (same fields, type C{N}).
        """
        return encode_fields(b"N", self.fields())


def encode_fields(message_type: bytes, fields: Dict[str, str]) -> bytes:
    """
    Encode an ErrorResponse/NoticeResponse body from its fields.
    """
    body = (
        b"".join(
            code.encode("ascii") + value.encode("utf-8", "replace") + b"\x00"
            for code, value in fields.items()
        )
        + b"\x00"
    )
    return message_type + struct.pack("!I", len(body) + 4) + body


def fatal(
    sqlstate: str, message: str, detail: Optional[str] = None, hint: Optional[str] = None
) -> PgError:
    """
    Build a C{FATAL} error, the severity that ends the client's session.
    """
    return PgError("FATAL", sqlstate, message, detail, hint)


def error(
    sqlstate: str, message: str, detail: Optional[str] = None, hint: Optional[str] = None
) -> PgError:
    """
    Build an C{ERROR}, which ends the current statement but not the session.
    """
    return PgError("ERROR", sqlstate, message, detail, hint)


def notice(message: str, sqlstate: str = SUCCESSFUL_COMPLETION) -> PgError:
    """
    Build a C{NOTICE} (send it with L{PgError.to_notice}); PostgreSQL gives
    its notices SQLSTATE 00000 unless they say otherwise.
    """
    return PgError("NOTICE", sqlstate, message)


def password_failed(user: str) -> PgError:
    """
    The one error for a wrong password and for an unknown user alike, so a
    client cannot tell which users exist (PostgreSQL's own wording).
    """
    return fatal(INVALID_PASSWORD, f'password authentication failed for user "{user}"')
