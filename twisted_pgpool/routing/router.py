"""
Per-session routing decisions in streaming-replication mode (and in native
replication mode, where every write goes to every node).

Given what the classifier says about a statement and what the session has
done so far (an open transaction, a write in it, temporary tables...), the
router says where the statement goes: to the primary only, to the
session's load-balance node, or to every node the session uses (for
statements that change session or transaction state, so all its nodes stay
in step).  It follows Pgpool-II's rules (docs/routing.md); it never touches
a socket, so every rule is tested with plain calls.
"""

from __future__ import annotations

from typing import Dict, Iterable, Set

import attr

from twisted_pgpool.wire import messages

PRIMARY = "primary"
BALANCE = "balance"
ALL = "all"
#: Sent to no node: a write in a session that has no primary.
NOWHERE = "nowhere"


@attr.s(auto_attribs=True, frozen=True)
class Route:
    """
    Where one statement (or one extended-protocol batch) goes.

    @ivar target: L{PRIMARY}, L{BALANCE}, L{ALL} or L{NOWHERE}.
    @ivar reason: why, in a few words (for logs and tests).
    """

    target: str
    reason: str


# Routes with a fixed reason, made once (a route is decided per statement).
_TRANSACTION_STARTED_IN_A_MULTI_STATEMENT_QUERY = Route(
    PRIMARY, "transaction started in a multi-statement query"
)
_SESSION_OR_TRANSACTION_CONTROL = Route(ALL, "session or transaction control")
_LOAD_BALANCING_IS_OFF = Route(PRIMARY, "load balancing is off")
_SQL_PREPARE = Route(PRIMARY, "SQL PREPARE")
_READS_A_TEMPORARY_TABLE = Route(PRIMARY, "reads a temporary table")
_TRANSACTION_HAS_FAILED = Route(PRIMARY, "transaction has failed")
_SERIALIZABLE_TRANSACTION = Route(PRIMARY, "serializable transaction")
_SERIALIZABLE_SESSION = Route(PRIMARY, "serializable session (default_transaction_isolation)")
_TRANSACTION_HAS_WRITTEN = Route(PRIMARY, "transaction has written")
_AN_EARLIER_TRANSACTION_WROTE = Route(PRIMARY, "an earlier transaction wrote")
_READS_A_TABLE_WRITTEN_IN_THIS_TRANSACTION = Route(
    PRIMARY, "reads a table written in this transaction"
)
_SESSION_HAS_WRITTEN = Route(PRIMARY, "session has written")
_READ = Route(BALANCE, "read")
_NO_PRIMARY = Route(NOWHERE, "a write, and the session has no primary")
# Native replication mode: PRIMARY means the main node there.
_REPLICATED_WRITE = "write replicated to every node"
_REPLICATED_SELECT = Route(ALL, "replicate_select")


@attr.s(auto_attribs=True)
class SessionRouter:
    """
    The routing state of one client session.

    @ivar load_balance: balancing is on (C{load_balance_mode} in
        streaming-replication mode).
    @ivar disable_load_balance_on_write: Pgpool-II's setting of that name.
    @ivar in_transaction: an explicit transaction is open.
    @ivar transaction_failed: it failed (status E) and awaits ROLLBACK.
    @ivar wrote_in_transaction: a write was sent in this transaction.
    @ivar changed_data_in_transaction: of those writes, one that changes
        data (not a SET or another statement about the session's own state,
        which counts as a write for routing but commits nothing a standby
        replays: read-your-writes needs no position after it).
    @ivar wrote_in_session: a write was sent in this session (for
        C{trans_transaction} inside transactions and C{always}).
    @ivar serializable: the transaction (or by default every transaction of
        the session) is SERIALIZABLE, which only the primary can serve
        consistently.
    @ivar multi_statement_transaction: the transaction began in a
        multi-statement query; Pgpool-II keeps all of it on the primary.
    @ivar temp_tables: temporary tables the session created.
    @ivar written_tables: tables written in this transaction
        (C{dml_adaptive}).
    @ivar native: native replication mode: every node is a primary, a
        write goes to all of them (L{ALL}) and L{PRIMARY} means the main
        node (docs/routing.md, "Native replication mode").
    @ivar replicate_select: (native mode) reads that would be balanced go
        to every node instead.
    @ivar no_primary: the session began while no primary was usable and
        is served by a standby (L{PRIMARY} then means that standby): a
        statement that certainly writes (C{Classification.writes}) goes
        L{NOWHERE}, to be refused by the session; anything else may go to
        the standby, which refuses a write the classifier could not see.
    """

    load_balance: bool = True
    disable_load_balance_on_write: str = "transaction"
    in_transaction: bool = False
    transaction_failed: bool = False
    wrote_in_transaction: bool = False
    changed_data_in_transaction: bool = False
    wrote_in_session: bool = False
    serializable: bool = False
    session_serializable: bool = False
    multi_statement_transaction: bool = False
    temp_tables: Set[str] = attr.ib(factory=set)
    written_tables: Set[str] = attr.ib(factory=set)
    dml_relationships: Dict[str, Set[str]] = attr.ib(factory=dict)
    native: bool = False
    replicate_select: bool = False
    no_primary: bool = False

    def route(self, classification) -> Route:
        """
        Where a statement goes now.
        """
        c = classification
        if c.writes and self.no_primary:
            return _NO_PRIMARY
        if c.to_all_session_nodes:
            if self.multi_statement_transaction:
                return _TRANSACTION_STARTED_IN_A_MULTI_STATEMENT_QUERY
            return _SESSION_OR_TRANSACTION_CONTROL
        if self.native:
            return self._route_native(c)
        if not self.load_balance:
            return _LOAD_BALANCING_IS_OFF
        if c.kind == "prepare":
            # Its EXECUTE goes to the primary: the statement must be there.
            return _SQL_PREPARE
        if not c.is_read_only:
            return Route(PRIMARY, c.forces_primary_reason or "not a read")
        return self._route_read(c)

    def _route_native(self, c) -> Route:
        """
        Native replication mode: anything but a read (SQL PREPARE included,
        so that its EXECUTE finds it everywhere) goes to every node; a read
        follows the streaming-replication rules, the main node standing in
        for the primary.
        """
        if not c.is_read_only or c.kind == "prepare":
            return Route(ALL, c.forces_primary_reason or _REPLICATED_WRITE)
        if not self.load_balance:
            return _LOAD_BALANCING_IS_OFF
        route = self._route_read(c)
        if route is _READ and self.replicate_select:
            return _REPLICATED_SELECT
        return route

    def _route_read(self, c) -> Route:
        mode = self.disable_load_balance_on_write
        if self.temp_tables and self._names(c) & self.temp_tables:
            return _READS_A_TEMPORARY_TABLE
        if self.session_serializable:
            # Every statement of the session is a serializable transaction,
            # which a standby cannot run: on one it would silently get a
            # weaker isolation (and report another isolation level).
            return _SERIALIZABLE_SESSION
        if self.in_transaction:
            if self.multi_statement_transaction:
                return _TRANSACTION_STARTED_IN_A_MULTI_STATEMENT_QUERY
            if self.transaction_failed:
                return _TRANSACTION_HAS_FAILED
            if self.serializable or self.session_serializable:
                return _SERIALIZABLE_TRANSACTION
            if mode in ("transaction", "trans_transaction", "always") and self.wrote_in_transaction:
                return _TRANSACTION_HAS_WRITTEN
            if mode == "trans_transaction" and self.wrote_in_session:
                return _AN_EARLIER_TRANSACTION_WROTE
            if mode == "dml_adaptive" and self._names(c) & self.written_tables:
                return _READS_A_TABLE_WRITTEN_IN_THIS_TRANSACTION
        if mode == "always" and self.wrote_in_session:
            return _SESSION_HAS_WRITTEN
        return _READ

    def route_batch(self, classifications: Iterable) -> Route:
        """
        Where an extended-protocol batch (everything up to a Sync or Flush)
        goes: one destination for the whole batch, so the statements in it
        see each other's effects.
        """
        routes = [self.route(c) for c in classifications]
        for target in (NOWHERE, ALL, PRIMARY):
            for route in routes:
                if route.target == target:
                    return route
        return _READ

    def dispatched(self, classification, route: Route) -> None:
        """
        Record a statement that was just sent, for the decisions after it.

        As in Pgpool-II, what counts as a write for
        C{disable_load_balance_on_write} is anything but a read (a SET
        inside a transaction included, SET TRANSACTION READ ONLY excepted).
        """
        c = classification
        if c.is_transaction_start:
            self._begin_transaction(c)
        elif c.is_commit or (c.is_rollback and not c.is_savepoint_op) or c.is_prepare_transaction:
            self._end_transaction()
            if c.and_chain:
                self._begin_transaction(c)
        elif c.marks_transaction_writing:
            if self.in_transaction:
                self.wrote_in_transaction = True
                if not c.to_all_session_nodes:
                    self.changed_data_in_transaction = True
                self.wrote_in_session = True
                for name in c.written_relations:
                    bare = name.lower().rsplit(".", 1)[-1]
                    self.written_tables.add(bare)
                    self.written_tables.update(self.dml_relationships.get(bare, ()))
            elif self.disable_load_balance_on_write == "always":
                self.wrote_in_session = True
        if c.creates_temp_table:
            self.temp_tables.add(c.creates_temp_table.lower())
        for name in c.drops_tables:
            self.temp_tables.discard(name.lower().rsplit(".", 1)[-1])
        if c.discards_temp_tables:
            self.temp_tables.clear()
        if (c.kind == "set" or c.is_session_state) and c.isolation_serializable:
            if self.in_transaction:
                self.serializable = True
            else:
                self.session_serializable = True

    def _begin_transaction(self, c) -> None:
        self.in_transaction = True
        self.transaction_failed = False
        self.wrote_in_transaction = False
        self.changed_data_in_transaction = False
        self.written_tables.clear()
        self.serializable = bool(getattr(c, "isolation_serializable", False))
        self.multi_statement_transaction = bool(c.is_multi_statement)

    def _end_transaction(self) -> None:
        self.in_transaction = False
        self.transaction_failed = False
        self.wrote_in_transaction = False
        self.changed_data_in_transaction = False
        self.written_tables.clear()
        self.serializable = False
        self.multi_statement_transaction = False

    def ready(self, status: int) -> None:
        """
        The primary reported its transaction status (ReadyForQuery) and
        nothing else is outstanding: trust it over our bookkeeping.
        """
        if status == messages.TRANSACTION_IDLE:
            if self.in_transaction:
                self._end_transaction()
        elif status == messages.TRANSACTION_IN_BLOCK:
            if not self.in_transaction:
                self.in_transaction = True
            self.transaction_failed = False
        elif status == messages.TRANSACTION_FAILED:
            self.in_transaction = True
            self.transaction_failed = True

    @staticmethod
    def _names(c) -> Set[str]:
        names = getattr(c, "touches_temp_table_candidates", None) or ()
        result = set()
        for name in names:
            lowered = name.lower()
            result.add(lowered)
            result.add(lowered.rsplit(".", 1)[-1])
        return result
