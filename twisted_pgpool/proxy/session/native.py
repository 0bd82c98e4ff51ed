"""
Native replication mode's part in a session: a write goes to every node
that is up, the main node first, and the client gets the main node's reply
once the nodes agree (L{replication_mode.ReplicatedStatement} decides);
what cannot be replicated is refused, never sent to one node only.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from twisted.logger import Logger

from twisted_pgpool import logs
from twisted_pgpool.cache.policy import InvalidationPlan
from twisted_pgpool.proxy.session.state import SessionState
from twisted_pgpool.routing import replication_mode
from twisted_pgpool.routing.router import Route
from twisted_pgpool.sql.classifier import Classification
from twisted_pgpool.wire import errors, messages

log = Logger(observer=logs.observer)


class NativeReplication(SessionState):
    """
    A part of L{twisted_pgpool.proxy.session.Session}: replicated writes.
    """

    def _replicate(
        self,
        frame: bytes,
        classification: Classification,
        sql: str,
        route: Route,
        plan: Optional[InvalidationPlan],
    ) -> None:
        """
        Send a simple Query to every node that is up, the main node (the
        session's first node) first, and give the client the main node's
        reply once the nodes agree (L{replication_mode.ReplicatedStatement}).
        """
        if replication_mode.copy_from_stdin(classification, sql):
            self.submit_local([replication_mode.refused("copy").to_bytes()])
            return
        self._run_replicated(
            lambda node_ids: {n: frame for n in node_ids},
            replication_mode.needs_internal_transaction(classification, sql),
            lambda node_ids: self._query_sent(
                classification, route, sql, self.primary_id, node_ids, plan
            ),
        )

    def _run_replicated(
        self,
        frames_for: Callable[[Tuple[int, ...]], Dict[int, bytes]],
        may_wrap: bool,
        sent: Callable[[Tuple[int, ...]], None],
    ) -> None:
        """
        Run one replicated statement (or batch) once the nodes before it
        have answered and every node that is up has a connection.

        @param frames_for: what each node gets, asked once when sending.
        @param may_wrap: outside an explicit transaction it runs inside
            one of the proxy's own.
        @param sent: the session's bookkeeping once it is sent.
        """
        config = self.core.config
        statement: List[replication_mode.ReplicatedStatement] = []

        def deliver(reply: List[bytes]) -> None:
            if not self.closed:
                self.frontend.transport.writeSequence(reply)

        def fail(error: errors.PgError) -> None:
            log.error(
                "native replication: {message} ({detail})",
                message=error.message,
                detail=error.detail,
            )
            if not self.closed:
                self.frontend.fail(error)

        def degenerate(node_ids: Sequence[int], reason: str) -> None:
            failover = self.core.failover
            for node_id in node_ids:
                log.warn(
                    "native replication: degenerating node {node_id}: {reason}",
                    node_id=node_id,
                    reason=reason,
                )
                if node_id != self.primary_id:
                    self.drop_node(node_id)
                if failover is not None:
                    failover.node_failed(node_id, reason)

        def attempt() -> bool:
            if self.closed:
                return True
            if statement:
                return statement[0].finished
            if self.owner is not None:
                return False
            node_ids = self._replication_nodes()
            if node_ids is None:
                return False
            if isinstance(node_ids, errors.PgError):
                self.submit_local([node_ids.to_bytes()])
                return True
            internal = (
                may_wrap
                and not self.router.in_transaction
                and self._primary_backend.transaction_status == messages.TRANSACTION_IDLE
            )
            job = replication_mode.ReplicatedStatement(
                frames_for(node_ids),
                self.primary_id,
                {n: self.links[n].backend for n in node_ids},
                internal,
                config.replication_stop_on_mismatch,
                config.failover_if_affected_tuples_mismatch,
                deliver,
                fail,
                degenerate,
            )
            statement.append(job)
            job.start()
            sent(node_ids)
            return job.finished

        self.run_or_wait(attempt)

    def _replication_nodes(self) -> Union[None, errors.PgError, Tuple[int, ...]]:
        """
        The ids of every node that is up, the main node first, each with a
        connection of this session (L{replication_mode.replication_targets});
        None while one is being opened; or the error to answer with.
        """
        targets = replication_mode.replication_targets(
            self.core.cluster.nodes,
            self.primary_id,
            self.links,
            self._unusable,
            self._open_connection is not None,
        )
        if targets.error is not None:
            return targets.error
        for node in targets.to_open:
            self._connect(node)
        if any(node.node_id not in self.links for node in targets.to_open):
            return None
        return targets.node_ids

    def _refuse_batch(self, sync: bool) -> None:
        """
        An extended-protocol write this mode cannot replicate: answered
        with an error and sent to no node (never to one node only); the
        rest of the batch is skipped up to its Sync.
        """
        if self._batch_route is not None:
            # Parts of the batch flushed earlier: end them (their replies
            # stay the client's), then refuse the rest.
            self._move_batch_to_primary()
        self._refusing_batch = not sync
        self.submit_local([replication_mode.refused("extended").to_bytes()], ready=sync)
