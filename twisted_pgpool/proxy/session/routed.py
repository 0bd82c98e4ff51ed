"""
The session that routes: each client message goes to its handler -- a
simple Query (L{simple}), the messages of an extended-protocol batch
(L{extended}), a function call, COPY data that must follow its statement,
Terminate.
"""

from __future__ import annotations

from twisted_pgpool.proxy.session.extended import _BATCHED, MAX_BATCH_BYTES, _BatchItem
from twisted_pgpool.proxy.session.state import SessionState
from twisted_pgpool.proxy.session.streams import _HEADER
from twisted_pgpool.routing import replication_mode
from twisted_pgpool.routing.router import PRIMARY, Route
from twisted_pgpool.wire import errors, messages
from twisted_pgpool.wire.framing import WHOLE


class RoutedMessages(SessionState):
    """
    A part of L{twisted_pgpool.proxy.session.Session}: the framer's
    callbacks of a session that routes.
    """

    def _routed_message(self, message_type: int, payload: bytes) -> bytes:
        """
        The framer's callback for each watched client message of a session
        that routes: the message goes to its handler, and never through
        the framer as it came (the handlers send what they send).
        """
        if self.closed:
            return b""
        if message_type == messages.COPY_DONE or message_type == messages.COPY_FAIL:
            # The client's copy ends here: what follows is routed again
            # (after it, in order, like the copy's data).
            self._copy_in_sent = False
            self.pass_to_primary(messages.message(message_type, payload))
            return b""
        if self._copy_in_sent and message_type != messages.TERMINATE:
            if message_type == messages.SYNC or message_type == messages.FLUSH:
                # PostgreSQL ignores both inside a copy (libpq sends a Sync
                # after an Execute without knowing it started a COPY): to
                # the primary as they came, like the copy data.
                self._write_to_primary(messages.message(message_type, payload))
                return b""
            self._end_client_copy(message_type)
        if message_type == messages.QUERY or message_type == messages.FUNCTION_CALL:
            # (A batch still queued has no _batch_route yet: _waiting.)
            if self._batch or self._batch_route is not None or self._waiting:
                # A Query or a FunctionCall after extended-protocol
                # messages with no Sync: the proxy ends that batch with a
                # Sync of its own first, or a server that skips to a Sync
                # after an error in it would never answer (fuzzer 23:18360:
                # a FunctionCall after a failed extended COPY).
                self._end_unsynced_batch()
                if self._copy_in_sent:
                    # The batch just sent started a COPY FROM STDIN, and
                    # the client goes on without ending it.
                    self._end_client_copy(message_type)
                    self._end_unsynced_batch()
            if message_type == messages.QUERY:
                self.query(payload)
                return b""
            self._function_call(payload)
        elif self._refusing_batch and message_type != messages.SYNC:
            # A refused extended-protocol write: skip to its Sync.
            return b""
        elif message_type in _BATCHED:
            if (
                not self._batch
                and self._batch_route is None
                and self._extended_local(message_type, payload)
            ):
                return b""
            try:
                item = _BatchItem.decode(message_type, payload, self._primary_backend.client_codec)
            except messages.MessageFormatError as e:
                self.frontend.end_after_replies(
                    errors.fatal(
                        errors.PROTOCOL_VIOLATION, f"invalid {chr(message_type)!r} message: {e}"
                    )
                )
                return b""
            self._batch.append(item)
            self._batch_bytes += len(payload) + 5
            if self._batch_bytes > MAX_BATCH_BYTES:
                self.send_batch(sync=False)
        elif message_type == messages.SYNC:
            if self._refusing_batch:
                self._refusing_batch = False
                self.submit_local([])
                return b""
            if (
                not self._batch
                and self._batch_route is None
                and (self._local_statements or self._local_portals)
            ):
                # A batch of the proxy's own statements only.
                self.submit_local([])
                return b""
            self._batch.append(_BatchItem(message_type, payload))
            self.send_batch(sync=True)
        elif message_type == messages.FLUSH:
            self._batch.append(_BatchItem(message_type, payload))
            self.send_batch(sync=False)
        elif message_type == messages.TERMINATE:
            self.frontend.terminate_session()
        else:
            self.frontend.end_after_replies(
                errors.fatal(
                    errors.PROTOCOL_VIOLATION, f"unexpected message type {chr(message_type)!r}"
                )
            )
        return b""

    def _function_call(self, payload: bytes) -> None:
        """
        A FunctionCall: to the primary (it may write: large objects do).
        """
        if self._native:
            # Not replicated.
            self.submit_local([replication_mode.refused("function call").to_bytes()])
            return
        frame = messages.message(messages.FUNCTION_CALL, payload)
        self._submit(Route(PRIMARY, "function call"), lambda node_id: [frame], True, None)

    def client_read_ended(self) -> None:
        """
        The client's bytes so far are all read and it may now wait: an
        extended-protocol batch held for its Sync goes now if it executes
        something.  A server runs each message as it comes and sends its
        results when it waits for more (and an error at once); a libpq
        pipeline relies on that, sending Bind/Execute with no Sync and no
        Flush and waiting for results (psycopg's
        test_pipeline_communicate_uniqviol hung).  Sent as after a Flush:
        the rest of the batch follows it there.
        """
        if (
            not self._batch
            or self.framer.paused
            or self._refusing_batch
            or self._copy_in_sent
            or self.closed
            or self._cache_steps is not None
        ):
            return
        if not any(item.type == messages.EXECUTE for item in self._batch):
            return
        # Only a batch for the primary: one sent to a standby would have
        # to move to the primary at a later write, and a real server skips
        # that write after an error earlier in the pipeline, where the
        # primary would run it (psycopg's test_outer_transaction_error).
        if self._batch_route is not None:
            if self._batch_route[0] != self.primary_id:
                return
        else:
            classifications = []
            for item in self._batch:
                if item.type == messages.PARSE:
                    classifications.append(self.core.classify(item.sql))
                elif item.type == messages.BIND:
                    known = self.statements.get(item.name)
                    if known is not None:
                        classifications.append(known.classification)
            if not classifications or self.router.route_batch(classifications).target != PRIMARY:
                return
        self.send_batch(sync=False)

    def _end_client_copy(self, message_type: int) -> None:
        """
        The client sends another message while its COPY FROM STDIN may
        still be reading data.  Passed into the copy, it would be read
        either as the copy's (the server fails the copy with "unexpected
        message type") or, when the copy had already failed on bad data,
        as a statement of its own -- which of the two depends on timing,
        and the replies the proxy expects would depend on it too (fuzzer
        22:2314: an Execute read after a failed copy made the server skip
        to a Sync that the proxy held behind a Query the server skipped).
        So the proxy ends the copy itself: a CopyFail naming the message
        (the server answers it with its error, or ignores it when the
        copy is already over), and the message is then handled as any
        other, after the copy, in order.
        """
        self._copy_in_sent = False
        self.pass_to_primary(
            messages.copy_fail(
                f"unexpected message type 0x{message_type:02X} during COPY from stdin"
            )
        )

    def _routed_head(self, message_type: int, head: bytes, length: int) -> object:
        """
        The framer's head callback in a routing session: a Bind or
        FunctionCall longer than the head is sent on with its head, and the
        rest passed on as it arrives, to where it went (C{streams._Stream}).  A
        Bind ends its batch so far (as C{MAX_BATCH_BYTES} does): the batch
        is routed before its values are in, to the primary when it could
        have been balanced (C{extended._STREAMED_BIND}).

        @param length: the payload's length (the head is its start).
        @return: the sink for the rest, or L{WHOLE} when the Bind's names
            do not fit in the head (it is then read whole, and refused
            past C{max_buffered_message_length}).
        """
        if self._track_idle:
            self.frontend.last_activity = self.core.reactor.seconds()
        rest = length - len(head)
        if self.closed or self._refusing_batch:
            return self._start_stream(rest).write
        if message_type == messages.FUNCTION_CALL:
            stream = self._start_stream(rest)
            frame = _HEADER.pack(message_type, length + 4) + head
            self._submit(
                Route(PRIMARY, "function call"),
                lambda node_id: self._streamed_to(node_id, [frame]),
                True,
                None,
            )
            return stream.write
        try:
            portal, statement = messages.decode_bind_names(head)
        except messages.MessageFormatError:
            return WHOLE
        if (
            not self._batch
            and self._batch_route is None
            and self._extended_local(message_type, head)
        ):
            return self._start_stream(rest).write
        stream = self._start_stream(rest)
        self._batch.append(_BatchItem(message_type, head, name=statement, portal=portal, rest=rest))
        self.send_batch(sync=False)
        return stream.write
