"""
The query cache's keys: a digest of who asks (user, database, the session
settings the result text depends on) and of what: a simple Query's text
(L{simple_key}), or an extended-protocol batch's statements, bound values,
formats and Execute order (L{extended_key}).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Dict, List, Optional, Protocol, Sequence, Tuple, Union

import attr

from twisted_pgpool.wire import messages

__all__ = ["ExtendedBatch", "ParsePayloads", "extended_key", "simple_key"]


_LENGTH = struct.Struct("!I")
_DIGEST_SIZE = 20


def _hasher(user: str, database: str, settings_digest: bytes, protocol: bytes) -> "hashlib.blake2b":
    h = hashlib.blake2b(digest_size=_DIGEST_SIZE, person=b"tpgc-" + protocol)
    for field in (user.encode("utf-8"), database.encode("utf-8"), settings_digest):
        h.update(_LENGTH.pack(len(field)))
        h.update(field)
    return h


def simple_key(user: str, database: str, settings_digest: bytes, sql: Union[str, bytes]) -> bytes:
    """
    The key of a simple-protocol query.

    @param settings_digest: a digest of every session setting the result
        text depends on (search_path, role, TimeZone, DateStyle,
        IntervalStyle, client_encoding, extra_float_digits, bytea_output,
        standard_conforming_strings...): two sessions may share an entry
        only if they would get the same bytes.
    @param sql: the query text, or the Query payload as received.
    """
    h = _hasher(user, database, settings_digest, b"Q")
    h.update(sql.encode("utf-8") if isinstance(sql, str) else sql)
    return h.digest()


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ExtendedBatch:
    """
    A cacheable extended-protocol batch.

    @ivar key: its cache key.
    @ivar sqls: the text of each statement it executes; the batch is
        cacheable only if L{CachePolicy.decide} accepts every one, and is
        registered under the union of their tables.
    """

    key: bytes
    sqls: Tuple[str, ...]


def _field(h: "hashlib.blake2b", tag: bytes, *values: bytes) -> None:
    h.update(tag)
    for value in values:
        h.update(_LENGTH.pack(len(value)))
        h.update(value)


def _int32s(values: Sequence[int]) -> bytes:
    return struct.pack("!%dI" % len(values), *(v & 0xFFFFFFFF for v in values))


class ParsePayloads(Protocol):
    """
    Statement name -> Parse payload: a C{Mapping} does, and so does the
    session's view of its statements, which is not copied for every batch.
    """

    def __contains__(self, name: object) -> bool: ...

    def __getitem__(self, name: str) -> bytes: ...


def extended_key(
    user: str,
    database: str,
    settings_digest: bytes,
    items: Sequence[Tuple[int, bytes]],
    prepared: ParsePayloads,
) -> Optional[ExtendedBatch]:
    """
    The key of an extended-protocol batch (its messages before Sync), or
    None when it cannot be cached: no Execute, a Close, a message that is not Parse, Bind,
    Describe, Execute or Flush, a name it cannot resolve, or a malformed
    message.

    Statement and portal names do not enter the key (drivers name
    statements per connection); what they refer to does: the SQL text and
    parameter types, the bound values and formats, the result formats, the
    Describe kinds and the Execute order.

    @param prepared: statement name -> Parse payload, for statements
        parsed in earlier batches (the session keeps them).
    """
    h = _hasher(user, database, settings_digest, b"X")
    statements: Dict[str, Tuple[str, bytes]] = {}  # name -> (sql, identity)
    portals: Dict[str, int] = {}  # name -> index of the Bind that made it
    statements_of_portal: Dict[int, str] = {}  # Bind index -> its SQL
    sqls: List[str] = []
    executed = False
    known: Optional[Tuple[str, bytes]]

    def statement(name: str) -> Optional[Tuple[str, bytes]]:
        known = statements.get(name)
        if known is None and name in prepared:
            known = _parsed(prepared[name])
        return known

    try:
        for index, (message_type, payload) in enumerate(items):
            if message_type == messages.PARSE:
                known = _parsed(payload)
                statements[_name(payload, 0)[0]] = known
                _field(h, b"P", known[1])
            elif message_type == messages.BIND:
                # The bytes after the two names (formats, values, result
                # formats) are an exact encoding: hashed as they came.
                portal, after_portal = _name(payload, 0)
                name, after_names = _name(payload, after_portal)
                known = statement(name)
                if known is None:
                    return None
                portals[portal] = index
                _field(h, b"B", known[1], payload[after_names:])
                statements_of_portal[index] = known[0]
            elif message_type == messages.DESCRIBE:
                kind = payload[:1]
                name = _name(payload, 1)[0]
                if kind == b"S":
                    known = statement(name)
                    if known is None:
                        return None
                    _field(h, b"DS", known[1])
                elif kind == b"P":
                    if name not in portals:
                        return None
                    _field(h, b"DP", b"%d" % portals[name])
                else:
                    return None
            elif message_type == messages.EXECUTE:
                execute = messages.decode_execute(payload)
                if execute.portal not in portals:
                    return None
                # A row limit is part of the key: the reply (rows, then
                # PortalSuspended or CommandComplete) is the same each time,
                # and the portal cannot be fetched from again after the
                # Sync, outside a transaction (the only place the cache is
                # used).  asyncpg's fetchrow() and fetchval() send a limit.
                bind_index = portals[execute.portal]
                _field(h, b"E", b"%d:%d" % (bind_index, execute.max_rows))
                sqls.append(statements_of_portal[bind_index])
                executed = True
            elif message_type == messages.FLUSH:
                continue
            else:
                return None
    except messages.MessageFormatError:
        return None
    if not executed:
        return None
    return ExtendedBatch(h.digest(), tuple(dict.fromkeys(sqls)))


#: Parse payload -> (SQL, identity): a prepared statement's payload is the
#: same bytes object batch after batch, so this is one dictionary lookup.
_PARSED: Dict[bytes, Tuple[str, bytes]] = {}
_PARSED_SIZE = 10000


def _parsed(payload: bytes) -> Tuple[str, bytes]:
    """
    @raise messages.MessageFormatError: a malformed Parse.
    """
    known = _PARSED.get(payload)
    if known is None:
        parse = messages.decode_parse(payload)
        known = (parse.sql, _statement_identity(parse))
        if len(_PARSED) >= _PARSED_SIZE:
            _PARSED.clear()
        _PARSED[payload] = known
    return known


def _name(payload: bytes, start: int) -> Tuple[str, int]:
    """
    The NUL-terminated name at C{start}, and where what follows begins.

    @raise messages.MessageFormatError: no terminator.
    """
    end = payload.find(b"\x00", start)
    if end < 0:
        raise messages.MessageFormatError("unterminated name")
    return payload[start:end].decode("utf-8", "surrogateescape"), end + 1


def _statement_identity(parse: messages.Parse) -> bytes:
    sql = parse.sql.encode("utf-8", "surrogateescape")
    return _LENGTH.pack(len(sql)) + sql + _int32s(parse.parameter_types)
