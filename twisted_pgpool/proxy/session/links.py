"""
The session's connections: which one a route uses (the session's
load-balance node, unless it is down, lagging or failed), opening one on
demand (through the pool, replaying the session's settings), keeping a
failed transaction failed on the primary too, a connection lost, a node
dropped, cancel targets, and giving them all back when the session ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple, cast

from twisted.internet import defer
from twisted.internet.error import ConnectError
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_pgpool import logs
from twisted_pgpool.backend.pool import PooledConnection
from twisted_pgpool.backend.protocol import BackendProtocol
from twisted_pgpool.cluster.model import STATUS_UP, STATUS_WAITING, Node
from twisted_pgpool.proxy.cancel import CancelTarget
from twisted_pgpool.proxy.session.state import SessionState
from twisted_pgpool.routing.router import ALL, PRIMARY, Route
from twisted_pgpool.wire import messages

if TYPE_CHECKING:  # pragma: no cover
    from twisted_pgpool.interfaces import IReplySink

log = Logger(observer=logs.observer)

_USABLE = (STATUS_UP, STATUS_WAITING)


class Links(SessionState):
    """
    A part of L{twisted_pgpool.proxy.session.Session}: its backend
    connections.
    """

    def _targets(self, route: Route) -> Optional[Tuple[int, Tuple[int, ...]]]:
        """
        Node ids for a route: (the node whose reply the client gets, the
        others); None while a needed connection is being opened.
        """
        if route.target == PRIMARY:
            return self.primary_id, ()
        if route.target == ALL:
            others = tuple(n for n in self.links if n != self.primary_id)
            return self.primary_id, others
        node = self._read_node()
        if node is None or node.node_id == self.primary_id:
            return self.primary_id, ()
        if node.node_id not in self.links:
            self._connect(node)
            if node.node_id in self._unusable:
                return self.primary_id, ()
            if node.node_id not in self.links:
                return None
        # Connected (perhaps just now: a pooled connection needing no
        # preparation is handed over at once).
        state = self.causal
        if self._read_your_writes and (
            state.commit_lsn or state.min_lsn or state.commit_pending or state.position_unknown
        ):
            if self.causal.position_unknown:
                if not self.causal.commit_pending and not self._primary_backend.pending_ready:
                    self._ask_commit_position(for_client=False)
                return None
            fresh = state.verdict(node, self._ask_replay_position, self.unblock)
            if fresh is None:
                return None
            if not fresh:
                return self.primary_id, ()
        return node.node_id, ()

    def _read_node(self) -> Optional[Node]:
        chosen = self.lb_node
        if (
            chosen is not None
            and not self.statement_level
            and chosen.status in _USABLE
            and not chosen.delayed
            and chosen.node_id not in self._unusable
        ):
            # The session's node, healthy: the usual case, kept short.
            linked = self.links.get(chosen.node_id)
            if linked is None or linked.backend.transaction_status != messages.TRANSACTION_FAILED:
                return chosen
        if self.statement_level:
            chosen = self.core.balancer.choose(
                self.frontend.user or "",
                self.frontend.database or "",
                self.frontend.application_name,
            )
        else:
            chosen = self.lb_node
        node = self.core.balancer.read_node(chosen)
        if node is not None and node.node_id in self._unusable:
            return self.core.cluster.nodes[self.primary_id]
        if node is not None and self.links.get(self.primary_id) is not None:
            linked = self.links.get(node.node_id)
            if (
                linked is not None
                and linked.backend.transaction_status == messages.TRANSACTION_FAILED
            ):
                return self.core.cluster.nodes[self.primary_id]
        return node

    def _connect(self, node: Node) -> None:
        if node.node_id in self._connecting or self._open_connection is None:
            return
        d = self._open_connection(node)
        self._connecting[node.node_id] = d

        async def prepare(connection: PooledConnection) -> PooledConnection:
            backend = connection.backend
            replay = list(self._session_sql)
            if self._begin_sql is not None and self.router.in_transaction:
                replay.append(self._begin_sql)
                replay.extend(self._transaction_sql)
            for sql in replay:
                result = await backend.run_internal(sql, client_text=True)
                if result.error is not None:
                    raise RuntimeError(f"replaying {sql!r} failed: {result.error.get('M')}")
            return connection

        d.addCallback(lambda connection: defer.Deferred.fromCoroutine(prepare(connection)))

        def connected(connection: PooledConnection) -> None:
            del self._connecting[node.node_id]
            if self.closed:
                defer.Deferred.fromCoroutine(self.core.pool.release(connection))
                return
            self.links[node.node_id] = connection
            self._node_statements.setdefault(node.node_id, {})
            connection.backend.error_counts = node.error_counts
            # self is part of Session, the IReplySink.
            connection.backend.attach(cast("IReplySink", self))
            self.unblock()

        def failed(failure: Failure) -> None:
            self._connecting.pop(node.node_id, None)
            if failure.check(ConnectError, defer.TimeoutError):
                self.frontend.report_node_failure(
                    node.node_id,
                    f"failed to connect to backend node "
                    f"{node.node_id}: {failure.getErrorMessage()}",
                )
            log.warn(
                "could not use backend node {node_id} for reads: "
                "{reason}; reading from the primary",
                node_id=node.node_id,
                reason=failure.getErrorMessage(),
            )
            self._unusable.add(node.node_id)
            self.unblock()

        d.addCallbacks(connected, failed)

    def _fail_primary_transaction(self) -> None:
        """
        A statement failed inside the transaction on a load-balance node.
        PostgreSQL would now refuse everything but ROLLBACK, and a COMMIT
        must not commit the primary's part: make the primary's transaction
        fail too, with a statement that can only raise an error.
        """
        link = self.links.get(self.primary_id)
        if link is None or self._failing_primary:
            return
        backend = link.backend
        if backend.transaction_status != messages.TRANSACTION_IN_BLOCK:
            return
        stream = self._stream
        if stream is not None and backend in stream.targets:
            # The primary is in the middle of a message the client is
            # streaming to it: the statement goes in after it.
            stream.then = self._fail_primary_transaction
            return
        self._failing_primary = True
        # The statement exists to fail: its error is expected, so its reply
        # is taken in as the proxy's own (not logged as a failure nobody
        # sees, not counted in the node's error statistics).
        backend.expect_capture(_ignore_message, _ignore_status, holds_client=False)
        backend.write(messages.query("ROLLBACK TO SAVEPOINT twisted_pgpool_abort_transaction"))

    def backend_lost(self, backend: BackendProtocol, reason: Failure) -> None:
        if self.closed:
            return
        node_id = backend.node_id
        link = self.links.pop(node_id, None)
        if link is not None:
            defer.Deferred.fromCoroutine(self.core.pool.release(link))
        if node_id == self.primary_id or backend is self.owner or backend.pending_ready:
            if self._commit_reply is not None:
                # What the client would have had without the wait for the
                # position: the write's reply, before the error.
                self.frontend.transport.writeSequence(self._take_commit_reply())
            self._pass_last_words(backend)
            self.frontend.backend_lost(backend, reason)
            return
        log.info(
            "load-balance node {node_id} of a session went away; its reads go elsewhere now",
            node_id=node_id,
        )
        self._unusable.add(node_id)

    def _pass_last_words(self, backend: BackendProtocol) -> None:
        """
        The session ends because C{backend} went away: give the client
        what it would have had from a server of its own -- the messages
        held for it, then the server's FATAL (57P01 after
        C{pg_terminate_backend}, say) if it came between replies, while
        a query of the proxy's own ran, or from a load-balance node --
        rather than a bare "server closed the connection unexpectedly".
        Nothing is written while another node is mid-reply.
        """
        if self.owner is not None and self.owner is not backend:
            return
        out, self._held = self._held, []
        fatal = backend.fatal_message
        if fatal is not None and not backend.fatal_relayed and fatal not in out:
            out.append(fatal)
        if out:
            backend.fatal_relayed = fatal is not None
            self.frontend.transport.writeSequence(out)

    def depends_on(self, node_id: int) -> bool:
        """
        Whether the session cannot go on without C{node_id}: its primary,
        or a node working on one of its statements.
        """
        if node_id == self.primary_id:
            return True
        link = self.links.get(node_id)
        return link is not None and (
            link.backend.pending_ready > 0
            or link.backend is self.owner
            or self._batch_route is not None
            and node_id in (self._batch_route[0],) + self._batch_route[1]
        )

    def drop_node(self, node_id: int) -> None:
        """
        Stop using an idle connection to a node that went down; reads go
        elsewhere from now on.
        """
        link = self.links.pop(node_id, None)
        self._unusable.add(node_id)
        if link is not None:
            link.backend.transport.unregisterProducer()
            self.core.pool.discard(link)

    def cancel_targets(self) -> List[CancelTarget]:
        """
        The backend processes working for the client right now.
        """
        busy = [
            (node_id, link)
            for node_id, link in self.links.items()
            if link.backend.pending_ready or link.backend is self.owner
        ]
        if not busy and self.primary_id in self.links:
            # Nothing running: signal the primary anyway, as a direct
            # connection's cancel would (the server ignores it).
            busy = [(self.primary_id, self.links[self.primary_id])]
        targets = []
        for node_id, link in busy:
            node = self.core.cluster.nodes[node_id]
            targets.append(
                CancelTarget(
                    node_id,
                    node.hostname,
                    node.port,
                    link.backend.process_id,
                    link.backend.secret_key,
                )
            )
        return targets

    def close(self) -> List[PooledConnection]:
        """
        End the session; returns its connections for the pool.
        """
        self.closed = True
        self._waiting.clear()
        self.causal.close()
        # The session is in reference cycles (its bound methods are kept
        # on it), so it is freed by the garbage collector, some time
        # later: the client's messages it holds (statements kept to
        # prepare elsewhere, up to max_buffered_message_length each, a
        # held batch) are let go now.
        self.statements = {}
        self._node_statements = {}
        self._batch = []
        self._batch_bytes = 0
        links = list(self.links.values())
        self.links.clear()
        for pending in self._connecting.values():
            pending.addErrback(lambda f: None)
        return links

    @property
    def busy(self) -> bool:
        return any(link.backend.busy for link in self.links.values())

    @property
    def transaction_status(self) -> int:
        link = self.links.get(self.primary_id)
        return link.backend.transaction_status if link else messages.TRANSACTION_IDLE


def _ignore_message(message_type: int, payload: bytes) -> None:
    """
    A reply message of the proxy's own that nobody needs.
    """


def _ignore_status(status: int) -> None:
    """
    The ReadyForQuery of such a reply.
    """
