"""
A simple Query: the query cache's fast path, the proxy's own statements,
classification, the cache's say, routing, and sending -- straight to one
node in the common case, through the session's queue otherwise -- then the
bookkeeping of what was sent (counters, the statement log, session state
to replay on nodes opened later, read-your-writes).
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from twisted.internet import defer

from twisted_pgpool.backend.stats import counter_of_kind
from twisted_pgpool.cache.policy import InvalidationPlan
from twisted_pgpool.cache.session import ReplyRecorder
from twisted_pgpool.cache.steps import HANDLED
from twisted_pgpool.cache.store import FetchResult
from twisted_pgpool.proxy.session.names import NAMED_KINDS
from twisted_pgpool.proxy.session.state import SessionState
from twisted_pgpool.routing.router import ALL, NOWHERE, PRIMARY, Route
from twisted_pgpool.sql.classifier import Classification, databases_to_free
from twisted_pgpool.wire import errors, messages

#: Statement kinds that may be DROP/ALTER/CREATE DATABASE.
_DATABASE_DDL = frozenset(["drop", "alter", "create"])

_SET_LOCAL = re.compile(r"\s*set\s+local\b", re.IGNORECASE)

#: Where a cacheable statement the cache could not answer goes: only the
#: primary's result may be stored (a lagging standby's could be old).
_CACHE_MISS = Route(PRIMARY, "query cache miss")

_READY_IDLE = messages.ready_for_query(messages.TRANSACTION_IDLE)


class SimpleQueries(SessionState):
    """
    A part of L{twisted_pgpool.proxy.session.Session}: the simple Query.
    """

    def query(self, payload: bytes, lookup: Optional[bool] = None, fetched: object = None) -> None:
        """
        A simple Query from the client.

        @param lookup: when the query cache or routing made the statement
            wait for a catalog lookup: whether it succeeded.
        @param fetched: when it waited for a remote cache: the answer.
        """
        cache = self._cache
        if (
            cache is not None
            and fetched is None
            and lookup is None
            and not self.router.temp_tables
            and self.cache_usable()
        ):
            # First, before anything else looks at the text: a statement
            # this session found cacheable before (so a valid SELECT, and
            # none of the proxy's own) goes straight to the cache.
            known = cache.remembered(payload)
            if known is not None:
                fetched = cache.cache.fetch(*known)
                if fetched.__class__ is FetchResult and fetched.reply is not None:
                    if self.owner is None and not self._waiting:
                        # The cache serves only outside transactions: the
                        # status is idle.
                        self.frontend.transport.write(fetched.reply + _READY_IDLE)
                    else:
                        self.submit_local([fetched.reply])
                    return
                if isinstance(fetched, defer.Deferred):
                    steps = self._cache_steps
                    assert steps is not None
                    steps.wait(fetched, lambda answer: self.query(payload, None, answer))
                    return
        if self._answer_own_statement(payload):
            return
        if payload[-1:] != b"\x00" or payload.find(b"\x00") != len(payload) - 1:
            self.frontend.end_after_replies(
                errors.fatal(errors.PROTOCOL_VIOLATION, "invalid Query message")
            )
            return
        # Read in the client's encoding; forwarded as it came (frame).
        sql = payload[:-1].decode(self._primary_backend.client_codec, "surrogateescape")
        classification = self._classify(sql)
        if classification.kind in _DATABASE_DDL:
            self._free_databases(sql)
        recorder = None
        plan = None
        steps = self._cache_steps
        if steps is not None:
            outcome = steps.query(payload, sql, classification, lookup, fetched)
            if outcome is HANDLED:
                return
            if isinstance(outcome, ReplyRecorder):
                recorder = outcome
            else:
                plan = outcome
        if recorder is not None:
            route = _CACHE_MISS
        else:
            route = self.router.route(classification)
            if self._catalog_routing is not None:
                checked = self._route_with_catalog(
                    classification, sql, route, lookup, lambda ok: self.query(payload, ok)
                )
                if checked is None:
                    return
                classification, route = checked
        if route.target == NOWHERE:
            self._refuse_write(classification, ready=True)
            return
        frame = messages.message(messages.QUERY, payload)
        if self._native and route.target == ALL:
            self._replicate(frame, classification, sql, route, plan)
            return
        # EXECUTE, DEALLOCATE, FETCH...: where the name is (names.py).
        pinned = (
            None
            if classification.prepared_name is None or self._native
            else self._named_holders(classification)
        )
        if route.target != ALL and not self._waiting and pinned is None:
            # The common case, kept short: one node, nothing queued.
            targets = self._targets(route)
            if targets is not None:
                link = self.links[targets[0]]
                backend = link.backend
                if self.owner is None or self.owner is backend:
                    if targets[0] == self.primary_id and _enters_copy_in(classification):
                        self._copy_in_sent = True
                    if recorder is None:
                        backend.expect(True)
                    else:
                        backend.expect_recorded(recorder)
                    self.owner = backend
                    # What the bookkeeping adds (a position query) goes in
                    # the same write as the statement.
                    self._outbox = outbox = [frame]
                    self._query_sent(classification, route, sql, targets[0], (targets[0],), plan)
                    self._outbox = None
                    if targets[0] != self.primary_id:
                        question = self._ride_along(targets[0], backend)
                        if question is not None:
                            outbox.append(question)
                    backend.write(frame if len(outbox) == 1 else b"".join(outbox))
                    return
        rewrite = classification.standby_rewrite
        standby_frame = messages.query(rewrite) if rewrite else frame

        def frames_for(node_id: int) -> List[bytes]:
            return [frame if node_id == self.primary_id else standby_frame]

        def sent(forward_id: int, node_ids: Tuple[int, ...]) -> None:
            self._query_sent(classification, route, sql, forward_id, node_ids, plan)

        if _enters_copy_in(classification):
            # In the client's order (see extended.send_batch).
            self._copy_in_sent = True
        self._submit(route, frames_for, True, sent, pinned=pinned, recorder=recorder)

    def _query_sent(
        self,
        classification: Classification,
        route: Route,
        sql: str,
        forward_id: int,
        node_ids: Tuple[int, ...],
        plan: Optional[InvalidationPlan] = None,
    ) -> None:
        if classification.to_all_session_nodes or classification.is_transaction_start:
            self._remember_session_state(classification, sql)
        if classification.kind in NAMED_KINDS:
            self._named_sent(classification, node_ids)
        if self._cache_steps is not None:
            self._cache_steps.sent(classification, sql, plan)
        if self._catalog_routing is not None and not classification.is_read_only:
            self._catalog_sent(classification, sql)
        # A cache miss is a read by the cache's rules (its functions are
        # IMMUTABLE), whatever routing would have made of it.
        if route is not _CACHE_MISS and not (
            classification.is_read_only and not classification.marks_transaction_writing
        ):
            if (
                self._read_your_writes
                and forward_id == self.primary_id
                and self._may_commit_a_write(classification)
            ):
                if _enters_copy_in(classification):
                    # Nothing may follow a COPY FROM STDIN on the wire
                    # before its data: the position is asked later.
                    self.causal.position_unknown = True
                else:
                    self._ask_commit_position()
            self.router.dispatched(classification, route)
        # SHOW POOL_BACKEND_STATS (and POOL_NODES' select_cnt): on every
        # node the statement was sent to.
        index = counter_of_kind(classification.kind)
        nodes = self.core.cluster.nodes
        for node_id in node_ids:
            nodes[node_id].statement_counts[index] += 1
        if self._log_statements:
            self.frontend.log_statement(sql, "", node_ids, self.links)

    def _remember_session_state(self, classification: Classification, sql: str) -> None:
        # Called before the router records the statement: its state is the
        # one the statement runs in.
        c = classification
        if c.is_transaction_start:
            self._begin_sql = sql
            self._transaction_sql = []
        elif c.is_commit or (c.is_rollback and not c.is_savepoint_op):
            if c.is_commit and not self.router.transaction_failed:
                self._session_sql.extend(self._transaction_sql)
            self._transaction_sql = []
            self._begin_sql = None
        if c.to_all_session_nodes and c.is_session_state:
            if c.kind == "discard":
                self._session_sql.clear()
            elif self.router.in_transaction:
                if not _SET_LOCAL.match(sql):
                    self._transaction_sql.append(sql)
            else:
                self._session_sql.append(sql)
        if self._cache is not None:
            self._cache.settings_changed(self._session_sql)

    def _free_databases(self, sql: str) -> None:
        """
        Before DROP DATABASE (ALTER DATABASE ... RENAME, CREATE DATABASE
        ... TEMPLATE): close the pool's idle connections to it, which the
        server would count as other users of it.
        """
        for name in databases_to_free(sql):
            self.core.pool.close_database(name)


def _enters_copy_in(classification: Classification) -> bool:
    """
    Whether a statement may start a COPY FROM STDIN (after which the server
    takes nothing but COPY data until the copy ends).
    """
    c = classification
    if c.kind == "copy" and not c.is_read_only:
        return True
    return any(_enters_copy_in(part) for part in c.parts)
