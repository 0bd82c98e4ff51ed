"""
The session that routes nothing: every message goes to the primary as it
came (one usable node, balancing off, or a client the proxy cannot open a
second connection for).  It only counts statements (C{SHOW
POOL_BACKEND_STATS}), logs them, notes what a reply is owed for, and
answers the proxy's own statements; long messages are read by their head
only and stream through.
"""

from __future__ import annotations

from typing import Optional

from twisted_pgpool.backend.stats import DDL, counter_of_kind, counter_of_text
from twisted_pgpool.proxy.session.extended import _BATCHED
from twisted_pgpool.proxy.session.ordering import MAX_UNANSWERED
from twisted_pgpool.proxy.session.state import SessionState
from twisted_pgpool.wire import messages
from twisted_pgpool.wire.framing import FORWARD, WHOLE

#: What a session that routes nothing decodes names from, so that each
#: Execute counts in its statement's counter (SHOW POOL_BACKEND_STATS).
_NAMES_COUNTED = frozenset([messages.PARSE, messages.BIND, messages.CLOSE])


class DirectRelay(SessionState):
    """
    A part of L{twisted_pgpool.proxy.session.Session}: the framer's
    callbacks of a session that routes nothing.
    """

    def _direct_message(self, message_type: int, payload: bytes) -> Optional[bytes]:
        """
        Everything goes to the primary (one usable node, balancing off, or
        a client the proxy cannot open a second connection for): messages
        pass through as they came, only counted, so that the pool knows
        whether the connection is idle when the client leaves.
        """
        if self.closed:
            return b""
        backend = self._primary_backend
        if message_type == messages.QUERY:
            if self._answer_own_statement(payload):
                return b""
            index = counter_of_text(payload)
            if index is None:
                index = self._counter_of_sql(payload[:-1])
            if index == DDL:
                self._free_databases(payload[:-1].decode("utf-8", "surrogateescape"))
            self._primary_counts[index] += 1
            backend.expect(True)
            self.owner = backend
            if self._log_statements:
                self._log_direct(payload, "")
            if backend.pending_ready >= MAX_UNANSWERED:
                self._throttle()
        elif message_type == messages.SYNC:
            if not self._batch_reached_server and (self._local_statements or self._local_portals):
                self.submit_local([])
                return b""
            self._batch_reached_server = False
            backend.expect(True)
            self.owner = backend
            backend.unsynced = backend.unsynced_execute = False
            if backend.pending_ready >= MAX_UNANSWERED:
                self._throttle()
        elif message_type in _BATCHED and self._extended_local(message_type, payload):
            return b""
        elif message_type == messages.EXECUTE:
            self._batch_reached_server = True
            backend.unsynced = backend.unsynced_execute = True
            index = self._direct_portals.get(payload[: payload.find(b"\x00")])
            if index is not None:
                self._primary_counts[index] += 1
        elif message_type == messages.FUNCTION_CALL:
            backend.expect(True)
            self.owner = backend
            if backend.pending_ready >= MAX_UNANSWERED:
                self._throttle()
        elif message_type == messages.TERMINATE:
            self.frontend.terminate_session()
            return b""
        elif message_type == messages.PASSWORD_MESSAGE:
            return self._routed_message(message_type, payload)
        elif (
            message_type == messages.FLUSH
            or message_type == messages.COPY_DONE
            or message_type == messages.COPY_FAIL
        ):
            # Flush starts nothing on the server: it only asks for pending
            # output.  The end of a copy passes through like its data.
            pass
        else:
            self._batch_reached_server = True
            backend.unsynced = True
            if message_type in _NAMES_COUNTED:
                self._direct_names(message_type, payload)
            if message_type == messages.PARSE and self._log_statements:
                self._log_direct(payload, "Parse: ")
        return None

    def _direct_head(self, message_type: int, head: bytes, length: int) -> object:
        """
        The framer's head callback in a session that routes nothing: a
        Query, Parse, Bind or FunctionCall longer than the head is counted
        (and logged) from its head and passed on as it arrives; it is never
        one of the proxy's own statements, which are short.

        @param length: the payload's length (the head is its start).
        @return: L{FORWARD}; the sink that drops the rest, for a Bind of
            one of the proxy's own statements; L{WHOLE} when the names do
            not fit in the head.
        """
        if self._track_idle:
            self.frontend.last_activity = self.core.reactor.seconds()
        if self.closed:
            return self._start_stream(length - len(head)).write
        backend = self._primary_backend
        if message_type == messages.QUERY:
            index = counter_of_text(head)
            if index is None:
                index = self._counter_of_sql(head)
            self._primary_counts[index] += 1
            backend.expect(True)
            self.owner = backend
            if self._log_statements:
                self._log_head(head, "", length)
            return FORWARD
        if message_type == messages.PARSE:
            end = head.find(b"\x00")
            if end < 0:
                return WHOLE
            if self._local_statements:
                self._local_statements.pop(head[:end].decode("utf-8", "surrogateescape"), None)
            self._batch_reached_server = True
            backend.unsynced = True
            index = counter_of_text(head, end + 1)
            if index is None:
                index = self._counter_of_sql(head[end + 1 :])
            self._direct_statements[head[:end]] = index
            if self._log_statements:
                self._log_head(head[end + 1 :], "Parse: ", length - end - 1)
            return FORWARD
        if message_type == messages.BIND and head.find(b"\x00", head.find(b"\x00") + 1) < 0:
            return WHOLE
        # A Bind (by its names) or a FunctionCall: as if whole.
        if self._direct_message(message_type, head) is None:
            return FORWARD
        return self._start_stream(length - len(head)).write

    def _log_head(self, text: bytes, prefix: str, length: int) -> None:
        """
        C{log_statement} for a statement only the start of which is read.
        """
        sql = text.decode("utf-8", "replace")
        self.frontend.log_statement(
            f"{sql}... ({length} bytes, cut)", prefix, (self.primary_id,), self.links
        )

    def _direct_names(self, message_type: int, payload: bytes) -> None:
        """
        What an Execute counts in (L{_direct_message}): the counter of
        each statement a Parse names, and of the statement each portal a
        Bind names runs; a Close forgets the name.
        """
        end = payload.find(b"\x00")
        if message_type == messages.PARSE:
            index = counter_of_text(payload, end + 1)
            if index is None:
                index = self._counter_of_sql(payload[end + 1 : payload.find(b"\x00", end + 1)])
            if index == DDL:
                self._free_databases(
                    payload[end + 1 : payload.find(b"\x00", end + 1)].decode(
                        "utf-8", "surrogateescape"
                    )
                )
            self._direct_statements[payload[:end]] = index
        elif message_type == messages.BIND:
            index = self._direct_statements.get(payload[end + 1 : payload.find(b"\x00", end + 1)])
            if index is None:
                self._direct_portals.pop(payload[:end], None)
            else:
                self._direct_portals[payload[:end]] = index
        else:
            names = self._direct_statements if payload[:1] == b"S" else self._direct_portals
            names.pop(payload[1:end], None)

    def _counter_of_sql(self, sql: bytes) -> int:
        # Text starting with a comment: its first word is the classifier's.
        return counter_of_kind(
            self._classify(sql.decode(self._primary_backend.client_codec, "surrogateescape")).kind
        )

    def _log_direct(self, payload: bytes, prefix: str) -> None:
        try:
            codec = self._primary_backend.client_codec
            if prefix:
                sql = messages.decode_parse(payload, codec).sql
            else:
                sql = messages.decode_query(payload, codec).sql
        except messages.MessageFormatError:
            return
        self.frontend.log_statement(sql, prefix, (self.primary_id,), self.links)
