"""
Extended-protocol batches: the messages up to a Sync (or a Flush) are held
and routed at once; a prepared statement used on a node that has not seen
it is prepared there first, its replies hidden from the client; a batch
flushed to a standby that goes on with a write moves to the primary; and
the session keeps which statements and portals exist where.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Set, Tuple

import attr

from twisted_pgpool.backend.stats import counter_of_kind
from twisted_pgpool.cache.policy import InvalidationPlan
from twisted_pgpool.cache.session import ReplyRecorder
from twisted_pgpool.cache.steps import HANDLED
from twisted_pgpool.proxy.session.names import NAMED_KINDS
from twisted_pgpool.proxy.session.simple import _CACHE_MISS, _DATABASE_DDL, _enters_copy_in
from twisted_pgpool.proxy.session.state import SessionState
from twisted_pgpool.proxy.session.streams import _HEADER
from twisted_pgpool.routing import replication_mode
from twisted_pgpool.routing.router import ALL, BALANCE, PRIMARY, Route
from twisted_pgpool.sql.classifier import Classification
from twisted_pgpool.wire import messages

_BATCHED = frozenset(
    [messages.PARSE, messages.BIND, messages.DESCRIBE, messages.EXECUTE, messages.CLOSE]
)

#: An extended-protocol batch is held until Sync or Flush, or until it
#: grows this large; then it is routed with what is known so far.
MAX_BATCH_BYTES = 1 << 20

#: Where a batch ending with a Bind too long to hold goes when it could be
#: balanced: its node is chosen before the rest of the batch is known, and
#: a write later in the same batch would have to move the batch (and the
#: portal just bound) to the primary.
_STREAMED_BIND = Route(PRIMARY, "batch with a Bind streamed through")


@attr.s(auto_attribs=True)
class _Statement:
    """
    A prepared statement as the client defined it: its Parse payload (to
    prepare it on another node), its classification and its text.
    """

    parse_payload: bytes
    classification: Classification
    sql: str = ""


class ExtendedBatches(SessionState):
    """
    A part of L{twisted_pgpool.proxy.session.Session}: extended-protocol
    batches and the prepared statements they define.
    """

    def send_batch(self, sync: bool, lookup: Optional[bool] = None, fetched: object = None) -> None:
        recorder: Optional[ReplyRecorder] = None
        plans: Dict[str, InvalidationPlan] = {}
        steps = self._cache_steps
        if steps is not None and self._batch_route is None:
            outcome = steps.batch(self._batch, sync, lookup, fetched)
            if outcome is HANDLED:
                return
            recorder, plans = outcome
        # Routing that needs the catalog: corrected classifications (by
        # text) and a route for the batch's reads, after a lookup if need be.
        corrected: Dict[str, Classification] = {}
        catalog_route: Optional[Route] = None
        if self._catalog_routing is not None and self._batch_route is None:
            checked = self._batch_with_catalog(
                self._batch, lookup, lambda ok: self.send_batch(sync, ok)
            )
            if checked is None:
                return
            corrected, catalog_route = checked
        batch, self._batch = self._batch, []
        self._batch_bytes = 0
        if (
            not sync
            and self._batch_route is None
            and all(item.type == messages.FLUSH for item in batch)
        ):
            # A Flush with nothing before it (psycopg sends one after each
            # Sync): ask the nodes still working to send what they have;
            # nothing new is started, so no reply unit opens.
            for link in self.links.values():
                if link.backend.pending_ready:
                    link.backend.write(messages.flush())
            return
        # A Bind whose values are still to come (_routed_head): always last.
        streamed = batch[-1] if batch and batch[-1].rest else None
        classifications: List[Classification] = []
        # Per classification: its text.
        texts: List[str] = []
        # Per classification: the SQL, once an Execute in this batch runs a
        # statement that changes session or transaction state.
        state_sql: List[Optional[str]] = []
        in_batch: Dict[str, int] = {}
        portal_statement: Dict[str, str] = {}
        forced: Optional[int] = None
        # An Execute of a portal bound earlier whose statement writes.
        forced_write = False
        executed: Set[int] = set()
        # The classification of what each Execute runs, in order (for
        # SHOW POOL_BACKEND_STATS).
        execute_classes: List[Classification] = []
        parsed = {item.name for item in batch if item.type == messages.PARSE}
        bound = {item.portal for item in batch if item.type == messages.BIND}
        for item in batch:
            if item.type == messages.PARSE:
                in_batch[item.name] = len(classifications)
                classification = self.core.classify(item.sql)
                if classification.kind in _DATABASE_DDL:
                    self._free_databases(item.sql)
                classifications.append(corrected.get(item.sql, classification))
                texts.append(item.sql)
                state_sql.append(None)
            elif item.type == messages.BIND:
                portal_statement[item.portal] = item.name
                known = self.statements.get(item.name)
                if known is not None and item.name not in parsed:
                    in_batch[item.name] = len(classifications)
                    classifications.append(corrected.get(known.sql, known.classification))
                    texts.append(known.sql)
                    state_sql.append(None)
            elif item.type == messages.EXECUTE:
                index = in_batch.get(portal_statement.get(item.portal, "\0"))
                if index is None and item.portal not in portal_statement:
                    # A portal bound by an earlier batch.
                    known = self.statements.get(self._portal_statements.get(item.portal, "\0"))
                    if known is not None:
                        execute_classes.append(known.classification)
                if index is not None:
                    executed.add(index)
                    c = classifications[index]
                    execute_classes.append(c)
                    if c.to_all_session_nodes or c.is_transaction_start:
                        name = portal_statement[item.portal]
                        payload = (
                            next(
                                (
                                    i.payload
                                    for i in batch
                                    if i.type == messages.PARSE and i.name == name
                                ),
                                None,
                            )
                            or self.statements[name].parse_payload
                        )
                        state_sql[index] = messages.decode_parse(
                            payload, self._primary_backend.client_codec
                        ).sql
                if item.portal and item.portal in self._portals and item.portal not in bound:
                    forced = self._portals[item.portal]
                    if self._native:
                        known = self.statements.get(self._portal_statements.get(item.portal, "\0"))
                        if known is None or self.router.route(known.classification).target == ALL:
                            forced_write = True
        if self.router.no_primary:
            writing = next((c for c in classifications if c.writes), None)
            if writing is not None:
                self._refuse_write_batch(writing, sync)
                return
        if (
            self._batch_route is not None
            and self._batch_route[0] != self.primary_id
            and (
                streamed is not None
                or classifications
                and self.router.route_batch(classifications).target != BALANCE
            )
        ):
            self._move_batch_to_primary()
        if self._batch_route is not None:
            route = Route(PRIMARY, "rest of a flushed batch")
            pinned: Optional[Tuple[int, Tuple[int, ...]]] = self._batch_route
        else:
            route = (
                self.router.route_batch(classifications)
                if classifications
                else Route(PRIMARY, "no statement")
            )
            if catalog_route is not None and route.target == BALANCE:
                route = catalog_route
            pinned = None
            if forced is not None:
                pinned = (forced, ())
            elif not self._native:
                # EXECUTE, DEALLOCATE, FETCH... by SQL: where the name is
                # (names.py); even a Describe of "EXECUTE name" needs it.
                pinned = self._named_batch_holders(classifications, batch)
            if pinned is None:
                if recorder is not None:
                    route = _CACHE_MISS
                elif streamed is not None and route.target == BALANCE:
                    route = _STREAMED_BIND
        # Whether every node gets the whole batch (a write replicated in
        # native replication mode), not only its control part.
        replicated = False

        def frames_for(node_id: int) -> List[bytes]:
            if route.target == ALL and node_id != self.primary_id:
                part = self._control_part(batch)
                if streamed is not None and part and part[-1] is streamed:
                    self._streamed_to(node_id, [])
                return self._frames_for_node(node_id, part)
            if streamed is not None:
                self._streamed_to(node_id, [])
            return self._frames_for_node(node_id, batch)

        def sent(forward_id: int, node_ids: Tuple[int, ...]) -> None:
            commits_write = (
                sync
                and recorder is None
                and self._read_your_writes
                and forward_id == self.primary_id
                and any(self._may_commit_a_write(classifications[i]) for i in executed)
            )
            if steps is not None:
                for written, plan in plans.items():
                    steps.sent(self._classify(written), written, plan)
                for classification, sql in zip(classifications, state_sql):
                    if sql is not None and sql not in plans:
                        steps.sent(classification, sql, None)
            for classification, sql in zip(classifications, state_sql):
                if sql is not None:
                    self._remember_session_state(classification, sql)
                self.router.dispatched(classification, route)
            for index in executed:
                if classifications[index].kind in NAMED_KINDS:
                    self._named_sent(classifications[index], node_ids)
                if self._catalog_routing is not None and not classifications[index].is_read_only:
                    self._catalog_sent(classifications[index], texts[index])
            self._record_batch(batch, node_ids, forward_id)
            executes = sum(1 for item in batch if item.type == messages.EXECUTE)
            if execute_classes:
                self._count_executes(
                    execute_classes, node_ids, route.target == ALL and not replicated
                )
            for node_id in node_ids:
                backend = self.links[node_id].backend
                if sync:
                    backend.unsynced = backend.unsynced_execute = False
                else:
                    backend.unsynced = True
                    if executes:
                        backend.unsynced_execute = True
            if sync:
                self._batch_route = None
            else:
                self._batch_route = (forward_id, tuple(n for n in node_ids if n != forward_id))
            for item in batch:
                if item.type == messages.PARSE:
                    self.frontend.log_statement(item.sql, "Parse: ", node_ids, self.links)
            if commits_write:
                if any(_enters_copy_in(classifications[i]) for i in executed):
                    self.causal.position_unknown = True
                else:
                    self._ask_commit_position()

        if self._native and (
            forced_write
            or any(
                not classifications[i].to_all_session_nodes
                and self.router.route(classifications[i]).target == ALL
                for i in executed
            )
        ):
            # A write: replicated as a whole when it ends with Sync, after
            # the part of the batch flushed before it (Parse/Describe, or
            # reads) is ended; never sent to one node only.
            if not sync or forced_write:
                self._refuse_batch(sync)
                return
            if self._batch_route is not None:
                self._move_batch_to_primary()
            route = Route(ALL, "write replicated to every node")
            replicated = True
            sqls = self.executed_sql(batch)
            self._run_replicated(
                lambda node_ids: {n: b"".join(self._frames_for_node(n, batch)) for n in node_ids},
                bool(sqls)
                and all(
                    replication_mode.needs_internal_transaction(self._classify(sql), sql)
                    for sql in sqls
                ),
                lambda node_ids: sent(self.primary_id, node_ids),
            )
            return
        if any(_enters_copy_in(classifications[i]) for i in executed):
            # Until the client's CopyDone or CopyFail, what it sends is the
            # copy's, for the primary (see routed._routed_message).  Set in
            # the client's order, not when the batch leaves: a batch queued
            # behind another node's reply leaves after the client's
            # CopyDone has been read (fuzzer 22:8579, 22:8938).
            self._copy_in_sent = True
        self._submit(
            route, frames_for, sync, sent, pinned=pinned, batch_unit=True, recorder=recorder
        )

    def _count_executes(
        self, execute_classes: List[Classification], node_ids: Tuple[int, ...], control_part: bool
    ) -> None:
        """
        Count each Execute of a batch on each node it was sent to: with
        C{control_part}, nodes other than the primary got only the
        Executes of statements for every session node (L{_control_part}).
        """
        nodes = self.core.cluster.nodes
        for node_id in node_ids:
            counts = nodes[node_id].statement_counts
            partial = control_part and node_id != self.primary_id
            for c in execute_classes:
                if not partial or c.to_all_session_nodes:
                    counts[counter_of_kind(c.kind)] += 1

    def executed_sql(self, batch: List["_BatchItem"]) -> List[str]:
        """
        The text of each statement a batch executes, in order.
        """
        statements: Dict[str, str] = {}
        portals: Dict[str, str] = {}
        executed = []
        for item in batch:
            if item.type == messages.PARSE:
                statements[item.name] = item.sql
            elif item.type == messages.BIND:
                sql = statements.get(item.name)
                if sql is None and item.name in self.statements:
                    sql = statements[item.name] = self.statements[item.name].sql
                if sql is not None:
                    portals[item.portal] = sql
            elif item.type == messages.EXECUTE and item.portal in portals:
                executed.append(portals[item.portal])
        return executed

    def _control_part(self, batch: List["_BatchItem"]) -> List["_BatchItem"]:
        """
        What a node other than the primary gets of a batch routed to every
        session node: every Parse (preparing is harmless and keeps the
        statement bookkeeping true), but only the Bind/Execute/Describe of
        statements that change session or transaction state.  Its replies
        are swallowed anyway.
        """
        control: Dict[str, bool] = {}
        portals: Dict[str, bool] = {}
        part = []
        for item in batch:
            if item.type == messages.PARSE:
                control[item.name] = self.core.classify(item.sql).to_all_session_nodes
                part.append(item)
                continue
            if item.type == messages.BIND:
                keep = control.get(item.name)
                if keep is None:
                    known = self.statements.get(item.name)
                    keep = known is not None and known.classification.to_all_session_nodes
                portals[item.portal] = keep
            elif item.type == messages.EXECUTE or (
                item.type == messages.DESCRIBE and item.kind == "P"
            ):
                keep = portals.get(
                    item.portal if item.type == messages.EXECUTE else item.name, False
                )
            else:
                keep = True
            if keep:
                part.append(item)
        return part

    def _end_unsynced_batch(self) -> None:
        """
        A simple Query comes after extended-protocol messages with no Sync
        (asyncpg's C{prepare()} is Parse, Describe, Flush).  A server runs
        them in order and answers the Query with a ReadyForQuery; no Sync
        is owed.  Here the held part of the batch is sent first, and the
        batch is then ended on its nodes with a Sync of the proxy's own,
        whose ReadyForQuery the client does not see -- otherwise the node
        that has the batch would keep the client's replies waiting for a
        Sync that is not coming, and a Query for another node would wait
        behind it forever.
        """
        if self._batch:
            self.send_batch(sync=False)

        def attempt() -> bool:
            # Not when the batch started a COPY FROM STDIN: the server
            # would take the Sync as part of the copy (the Query after it is
            # passed to the primary as the copy's, see _routed_message).
            if self._batch_route is not None and not self._copy_in_sent:
                self._move_batch_to_primary()
            return True

        self.run_or_wait(attempt)

    def _move_batch_to_primary(self) -> None:
        """
        A batch already flushed to a standby goes on with a statement only
        the primary may run (psycopg's pipeline fetches a read's result
        with a Flush, then queues a write): end the standby's part with a
        Sync of our own (it ran only reads, so nothing is committed there),
        hide that Sync's ReadyForQuery from the client, and route the rest
        of the batch afresh.  Replies stay in order: the primary's start
        after the standby's part is finished.
        """
        assert self._batch_route is not None
        forward_id, others = self._batch_route
        for node_id in (forward_id,) + others:
            link = self.links.get(node_id)
            if link is None:
                continue
            link.backend.write(messages.sync())
            link.backend.keep_last_ready_for_query()
            link.backend.unsynced = link.backend.unsynced_execute = False
            self._batch_opened.discard(node_id)
        self._batch_route = None

    def _frames_for_node(self, node_id: int, batch: List["_BatchItem"]) -> List[bytes]:
        """
        The batch as node C{node_id} must receive it: statements it has not
        prepared (or prepared differently) are prepared first, and their
        replies hidden from the client.
        """
        known = self._node_statements.setdefault(node_id, {})
        backend = self.links[node_id].backend
        frames: List[bytes] = []
        defined: Set[str] = set()
        for item in batch:
            if item.type == messages.PARSE:
                if item.name and item.name in known and item.name not in self.statements:
                    # The client closed it on another node; close it here.
                    # (Not when the client still has it: the server reports
                    # the duplicate, 42P05, as it would directly.)
                    frames.append(messages.close("S", item.name))
                    backend.hide(messages.CLOSE_COMPLETE)
                    del known[item.name]
                defined.add(item.name)
            elif item.type == messages.BIND or (
                item.type == messages.DESCRIBE and item.kind == "S"
            ):
                name = item.name
                if name not in defined:
                    statement = self.statements.get(name)
                    if statement is not None and known.get(name) != statement.parse_payload:
                        if name and name in known:
                            frames.append(messages.close("S", name))
                            backend.hide(messages.CLOSE_COMPLETE)
                        frames.append(messages.message(messages.PARSE, statement.parse_payload))
                        backend.hide(messages.PARSE_COMPLETE)
                        known[name] = statement.parse_payload
                    defined.add(name)
            frames.append(item.frame())
        return frames

    def batch_answered(self, batch: List["_BatchItem"], record: bool) -> None:
        """
        The held C{batch} was answered without a server (from the query
        cache): drop it, and if C{record}, its statements exist for the
        session from now on, on no server yet.
        """
        self._batch = []
        self._batch_bytes = 0
        if record:
            self._record_batch(batch, (), self.primary_id)

    def _record_batch(
        self, batch: List["_BatchItem"], node_ids: Tuple[int, ...], forward_id: int
    ) -> None:
        if self._cache is not None and any(
            item.type in (messages.PARSE, messages.CLOSE) for item in batch
        ):
            self._cache.statements_changed()
        for item in batch:
            if item.type == messages.PARSE:
                self.statements[item.name] = _Statement(
                    item.payload, self.core.classify(item.sql), item.sql
                )
                for node_id in node_ids:
                    self._node_statements.setdefault(node_id, {})[item.name] = item.payload
            elif item.type == messages.BIND:
                # The unnamed portal's too: an Execute after a Flush may
                # run it (counted by its statement).
                self._portal_statements[item.portal] = item.name
                if item.portal:
                    self._portals[item.portal] = forward_id
            elif item.type == messages.CLOSE:
                if item.kind == "S":
                    self.statements.pop(item.name, None)
                    for node_id in node_ids:
                        self._node_statements.get(node_id, {}).pop(item.name, None)
                else:
                    self._portals.pop(item.name, None)
                    self._portal_statements.pop(item.name, None)


@attr.s(auto_attribs=True, slots=True)
class _BatchItem:
    """
    One held extended-protocol message, with the names routing needs
    (decoded once, when it arrives).

    @ivar name: the statement a Parse defines or a Bind uses, or what a
        Describe/Close names.
    @ivar portal: the portal a Bind defines or an Execute runs.
    @ivar kind: C{S} or C{P} for Describe and Close.
    @ivar sql: a Parse's query text.
    @ivar rest: for a Bind too long to hold (C{routed.RoutedMessages._routed_head}):
        C{payload} is its head, and this many bytes of it are still to come
        from the client, streamed behind the head.
    """

    type: int
    payload: bytes
    name: str = ""
    portal: str = ""
    kind: str = ""
    sql: str = ""
    rest: int = 0

    @classmethod
    def decode(
        cls, message_type: int, payload: bytes, codec: str = messages.UTF8_CODEC
    ) -> "_BatchItem":
        """
        @param codec: the session's client codec, for a Parse's text.
        @raise messages.MessageFormatError: the message is malformed.
        """
        if message_type == messages.PARSE:
            parse = messages.decode_parse(payload, codec)
            return cls(message_type, payload, name=parse.statement, sql=parse.sql)
        if message_type == messages.BIND:
            portal, statement = messages.decode_bind_names(payload)
            return cls(message_type, payload, name=statement, portal=portal)
        if message_type == messages.EXECUTE:
            return cls(message_type, payload, portal=messages.decode_execute(payload).portal)
        if message_type == messages.DESCRIBE:
            describe = messages.decode_describe(payload)
            return cls(message_type, payload, name=describe.name, kind=describe.kind)
        close = messages.decode_close(payload)
        return cls(message_type, payload, name=close.name, kind=close.kind)

    def frame(self) -> bytes:
        if self.rest:
            # The header announces the whole message; the rest follows.
            return _HEADER.pack(self.type, len(self.payload) + self.rest + 4) + self.payload
        return messages.message(self.type, self.payload)
