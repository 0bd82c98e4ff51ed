"""
Read-your-writes (C{read_your_writes: session}) in a session: after a
write commits on the primary its WAL position is asked in the same write
(L{CausalReads._ask_commit_position}), and the client gets it as
C{pgpool.commit_lsn} with its ReadyForQuery; a read goes to the session's
standby only once that has replayed the position, which the session asks
with questions riding along with reads there.  The decisions are
L{twisted_pgpool.routing.causal}'s; this module sends the questions and
holds the replies they complete.
"""

from __future__ import annotations

from typing import List, Optional

from twisted_pgpool.backend.protocol import BackendProtocol
from twisted_pgpool.cluster.model import Node
from twisted_pgpool.cluster.replication import format_lsn
from twisted_pgpool.proxy.session.state import SessionState
from twisted_pgpool.routing import causal
from twisted_pgpool.sql.classifier import Classification
from twisted_pgpool.wire import messages


class CausalReads(SessionState):
    """
    A part of L{twisted_pgpool.proxy.session.Session}: read-your-writes.
    """

    def _may_commit_a_write(self, c: Classification) -> bool:
        """
        Whether a statement just sent to the primary may commit a write:
        a write outside an explicit transaction, or the COMMIT of one that
        wrote.  (Decided before the router records it.)
        """
        if c.is_commit or c.is_prepare_transaction:
            return self.router.changed_data_in_transaction
        if c.is_read_only or c.is_transaction_start or c.to_all_session_nodes:
            return c.is_multi_statement and not c.is_read_only
        return not self.router.in_transaction or c.is_multi_statement

    def _ask_commit_position(self, for_client: bool = True) -> None:
        """
        Ask the primary its WAL position right behind the statement just
        sent (one more query in the same write: no extra round trip), and
        hold that statement's ReadyForQuery until the answer is in, so the
        client has its C{pgpool.commit_lsn} token when its commit returns.

        @param for_client: False when nothing was just sent (the position
            after a COPY FROM, asked when a read needs it): the answer only
            updates the session's position.
        """
        backend = self._primary_backend
        answer = causal.PositionReply()

        def ready(status: int) -> None:
            # Inside a transaction (a multi-statement query that began one)
            # nothing was committed yet.
            position = answer.position if status == messages.TRANSACTION_IDLE else None
            token = self.causal.committed(position)
            node = self.lb_node
            if token is not None and node is not None and node.node_id != self.primary_id:
                self.causal.ask_ahead(node)
            if not for_client:
                return
            reply = self._take_commit_reply()
            if token is not None:
                reply.append(
                    messages.parameter_status(causal.COMMIT_LSN_PARAMETER, format_lsn(token))
                )
            if not self._hold_ready:
                reply.append(messages.ready_for_query(status))
            self.frontend.transport.writeSequence(reply)

        if for_client:
            backend.keep_last_ready_for_query()
            if self._commit_reply is None:
                self._commit_reply = []
        if self._outbox is not None:
            self._outbox.append(causal.COMMIT_POSITION_QUERY)
        else:
            backend.write(causal.COMMIT_POSITION_QUERY)
        backend.expect_capture(answer.message, ready, holds_client=for_client)
        self.causal.commit_pending = True

    def _take_commit_reply(self) -> List[bytes]:
        kept, self._commit_reply = self._commit_reply, None
        self._commit_reply_size = 0
        return kept or []

    def _ride_along(self, node_id: int, backend: BackendProtocol) -> Optional[bytes]:
        """
        The question about a standby's replayed position that a read about
        to go there should carry (L{causal.ride_along}), its answer
        expected behind the read's reply; None when none is due.
        """
        node = self.core.cluster.nodes[node_id]
        if not node.replay_wanted or not causal.ride_along(node, self.core.reactor.seconds()):
            return None
        answer = causal.PositionReply()
        backend.expect_capture(
            answer.message,
            lambda status: causal.replayed(node, answer.position),
            holds_client=False,
        )
        return causal.REPLAY_POSITION_QUERY

    def _ask_replay_position(self, node: Node) -> bool:
        """
        Ask a standby how far it has replayed, on the session's own
        connection to it; False when there is none to ask on.
        """
        link = self.links.get(node.node_id)
        if link is None or link.backend.closed:
            return False
        answer = causal.PositionReply()
        link.backend.write(causal.REPLAY_POSITION_QUERY)
        link.backend.expect_capture(
            answer.message,
            lambda status: self.causal.probed(node, answer.position),
            holds_client=False,
        )
        return True
