"""
The proxy's own statements in a session: C{SHOW POOL_*} and C{PGPOOL
SHOW} (L{twisted_pgpool.proxy.inspection}), C{SET/RESET/SHOW
pgpool.min_lsn} (L{twisted_pgpool.routing.causal}), C{PGPOOL SET CACHE
DELETE} (L{twisted_pgpool.cache.steps}), answered without a server.

Pgpool-II answers C{SHOW POOL_*} only in the simple protocol, so drivers
that always use the extended protocol (asyncpg's fetch, psycopg after it
prepares a statement) cannot read them.  Here a Parse of such a statement
is answered by the proxy, and so are the Bind, Describe, Execute and Close
that refer to it, and a Sync that ends a batch of nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from twisted_pgpool.cache.session import match_cache_delete
from twisted_pgpool.cache.steps import answer_cache_delete
from twisted_pgpool.proxy.inspection import LOCAL_FIRST_BYTES
from twisted_pgpool.proxy.session.state import SessionState
from twisted_pgpool.routing import causal
from twisted_pgpool.wire import messages

if TYPE_CHECKING:  # pragma: no cover
    from twisted_pgpool.interfaces import ICachingSession


class OwnStatements(SessionState):
    """
    A part of L{twisted_pgpool.proxy.session.Session}: statements the
    proxy answers itself.
    """

    def _answer_own_statement(self, payload: bytes) -> bool:
        """
        Answer a simple Query that is one of the proxy's own statements
        (C{SHOW POOL_*} and C{PGPOOL SHOW}, C{SET/RESET/SHOW pgpool.min_lsn},
        C{PGPOOL SET CACHE DELETE}); False for any other, after a few cheap
        first-byte tests.
        """
        command = self._match_local(payload)
        if command is not None:
            self.submit_local(self.core.inspector.answer(command, self.frontend))
            return True
        floor = causal.match_statement(payload)
        if floor is not None:
            self.submit_local(causal.answer_statement(floor, self.causal))
            return True
        query = match_cache_delete(payload)
        if query is None:
            return False
        # self is part of Session, the ICachingSession.
        answer_cache_delete(cast("ICachingSession", self), self._cache, query)
        return True

    def _extended_local(self, message_type: int, payload: bytes) -> bool:
        """
        Answer an extended-protocol message about one of the proxy's own
        statements; return False when the message is not about one.
        """
        if message_type == messages.PARSE:
            # Cheap test first: the query text starts after the name.
            start = payload.find(b"\x00") + 1
            if payload[start : start + 1] not in LOCAL_FIRST_BYTES and not self._local_statements:
                return False
        elif not (self._local_statements or self._local_portals):
            return False
        try:
            if message_type == messages.PARSE:
                parse = messages.decode_parse(payload)
                # The text as the client sent it (with its NUL, as in a
                # Query): encoding the decoded text again fails on bytes
                # that are not UTF-8, which the server must see and refuse.
                command = self._match_local(payload[start : payload.index(b"\x00", start) + 1])
                if command is None:
                    self._local_statements.pop(parse.statement, None)
                    return False
                self._local_statements[parse.statement] = command
                self.submit_local([messages.message(messages.PARSE_COMPLETE)], ready=False)
                return True
            if message_type == messages.BIND:
                portal, statement = messages.decode_bind_names(payload)
                command = self._local_statements.get(statement)
                if command is None:
                    self._local_portals.pop(portal, None)
                    return False
                self._local_portals[portal] = command
                self.submit_local([messages.message(messages.BIND_COMPLETE)], ready=False)
                return True
            if message_type in (messages.DESCRIBE, messages.CLOSE):
                described = (
                    messages.decode_describe(payload)
                    if message_type == messages.DESCRIBE
                    else messages.decode_close(payload)
                )
                kind, name = described.kind, described.name
                table = self._local_statements if kind == "S" else self._local_portals
                command = table.get(name)
                if command is None:
                    return False
                if message_type == messages.CLOSE:
                    del table[name]
                    reply = [messages.message(messages.CLOSE_COMPLETE)]
                else:
                    answer = self.core.inspector.answer(command, self.frontend)
                    reply = (
                        answer[:1]
                        if answer[0][:1] == b"T"
                        else [messages.message(messages.NO_DATA)]
                    )
                    if kind == "S":
                        reply.insert(
                            0, messages.message(messages.PARAMETER_DESCRIPTION, b"\x00\x00")
                        )
                self.submit_local(reply, ready=False)
                return True
            if message_type == messages.EXECUTE:
                portal = messages.decode_execute(payload).portal
                command = self._local_portals.get(portal)
                if command is None:
                    return False
                answer = self.core.inspector.answer(command, self.frontend)
                # The rows and the completion: the description was Describe's.
                self.submit_local(answer[1:] if answer[0][:1] == b"T" else answer, ready=False)
                return True
        except messages.MessageFormatError:
            return False
        return False
