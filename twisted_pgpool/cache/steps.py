"""
The query cache's steps in a client session's flow of statements.

L{twisted_pgpool.cache.session} holds one session's view of the cache (its
settings digest, remembered decisions, invalidations waiting for a COMMIT,
the recorder of a reply); this module decides, for each simple Query or
extended-protocol batch the session (L{twisted_pgpool.proxy.session}) routes,
what the cache does with it: answer it, make it wait for a catalog lookup
or a remote cache, record a cacheable miss on its way to the client, or
note what a write invalidates.  It also answers C{PGPOOL SET CACHE DELETE}.

It works through the few session operations named by
L{twisted_pgpool.interfaces.ICachingSession}.  The cost of a cache hit of a
statement the session has seen before stays in L{Session.query
<twisted_pgpool.proxy.session.Session.query>}: that path must not pay for a
call into this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Set, Tuple

from twisted.internet import defer

from twisted_pgpool.cache.catalog import CatalogCache, lookup_sql
from twisted_pgpool.cache.decisions import InvalidationPlan
from twisted_pgpool.cache.keys import extended_key, simple_key
from twisted_pgpool.cache.session import (
    ReplyRecorder,
    SessionCache,
    cache_delete_reply,
    changes_role,
)
from twisted_pgpool.interfaces import ICachingSession
from twisted_pgpool.wire import messages

if TYPE_CHECKING:  # pragma: no cover
    from twisted_pgpool.proxy.session import _BatchItem, _Statement

#: What L{CachedQueries.query} and L{CachedQueries.batch} return when they
#: have taken the statement over (answered it from the cache, or are
#: waiting for a lookup).
HANDLED = object()
#: Statement kinds whose results may be cached.
_CACHE_KINDS = frozenset(["select", "with", "values", "table"])


class _ParsePayloads:
    """
    The session's statements as C{name -> Parse payload}, what
    L{extended_key} asks for, without copying them for every batch.
    """

    __slots__ = ("_statements",)

    def __init__(self, statements: Dict[str, "_Statement"]) -> None:
        self._statements = statements

    def __contains__(self, name: object) -> bool:
        return name in self._statements

    def __getitem__(self, name: str) -> bytes:
        return self._statements[name].parse_payload


class CachedQueries:
    """
    The query cache's part in one session's statements.

    @ivar cache: the session's view of the cache.
    """

    def __init__(
        self, session: ICachingSession, cache: SessionCache, log_statements: bool, native: bool
    ) -> None:
        """
        @param session: the session whose statements these are.
        @param cache: its view of the cache.
        @param log_statements: whether cache hits are logged as statements
            (C{log_statement} or C{log_per_node_statement}).
        @param native: native replication mode (a write's ReadyForQuery is
            never held for a remote cache there).
        """
        self._session = session
        self.cache = cache
        self._log_statements = log_statements
        self._native = native

    def query(self, payload: bytes, sql: str, classification, lookup: Optional[bool], fetched):
        """
        The query cache's part in a simple Query: answer it from the cache
        (L{HANDLED}), make it wait for a catalog lookup or a remote cache
        (L{HANDLED}: it is run again afterwards), record a cacheable miss
        (a L{ReplyRecorder}), or say what a write invalidates (an
        L{InvalidationPlan}, or None).
        """
        session = self._session
        cache = self.cache
        router = session.router
        decision = None
        if classification.kind in _CACHE_KINDS and session.cache_usable():
            # The cache's own rules first: a SELECT calling an IMMUTABLE
            # user function is cacheable, though routing takes it for a
            # write (it does not look functions up).
            decision = cache.decide(sql, router.temp_tables)
            if decision.needs_lookup:
                if lookup is None:
                    self.lookup(decision, lambda ok: session.query(payload, ok))
                    return HANDLED
                decision = None
        if decision is None or not decision.cacheable:
            if classification.is_read_only:
                return None
            plan = self._plan(sql, lookup, lambda ok: session.query(payload, ok))
            return HANDLED if plan is None else plan
        key = simple_key(cache.user, cache.database, cache.digest, payload[:-1])
        if not router.temp_tables:
            cache.remember(payload, key, decision.tables)
        result = fetched if fetched is not None else cache.cache.fetch(key, decision.tables)
        if isinstance(result, defer.Deferred):
            self.wait(result, lambda answer: session.query(payload, lookup, answer))
            return HANDLED
        if result.reply is not None:
            session.submit_local([result.reply])
            if self._log_statements:
                session.frontend.log_statement(sql, "query cache hit: ", (), session.links)
            return HANDLED
        return self.recorder(key, decision.tables, result.token)

    def recorder(self, key: bytes, tables, token: object) -> ReplyRecorder:
        """
        What copies a cacheable miss's reply on its way to the client.
        """
        session = self._session
        return ReplyRecorder(
            session.frontend.transport.write,
            self.cache.cache,
            key,
            tables,
            token,
            session.core.config.memqcache_maxcache,
        )

    def sent(self, classification, sql: str, plan: Optional[InvalidationPlan]) -> None:
        """
        A statement reached the servers: remember what it invalidates, and
        what it does to the cache's use in this session.
        """
        cache = self.cache
        router = self._session.router
        c = classification
        in_transaction = router.in_transaction
        if plan is not None:
            cache.completed(plan, in_transaction)
        rolled_back = (c.is_rollback and not c.is_savepoint_op) or (
            c.is_commit and router.transaction_failed
        )
        if rolled_back:
            cache.rolled_back()
        if (
            cache.remote
            and not self._native
            and (
                (plan is not None and not plan.is_empty and not in_transaction)
                or (c.is_commit and not rolled_back and cache.has_pending(True))
            )
        ):
            # The client hears of this write only once every cache knows.
            self._session.hold_ready_for_query()
        if c.is_session_state and cache.disabled is None and changes_role(sql):
            cache.disabled = "the session changed its role"

    def lookup(self, pending, then: Callable[[bool], None]) -> None:
        """
        Ask the primary about the relations and functions a decision or
        invalidation plan still misses (L{look_up}), then run
        C{then(succeeded)}.
        """
        look_up(
            self._session,
            self.cache.catalog,
            pending.missing_relations,
            pending.missing_functions,
            then,
        )

    def wait(self, d: defer.Deferred, then: Callable[[object], None]) -> None:
        """
        Wait for a remote cache's answer (it never fails), then go on.
        """
        session = self._session
        answer: List[object] = []

        def attempt() -> bool:
            if not answer:
                return False
            then(answer[0])
            return True

        def arrived(result: object) -> None:
            answer.append(result)
            if not session.closed:
                session.unblock()

        session.run_or_wait(attempt)
        d.addCallback(arrived)

    def batch(self, batch: List["_BatchItem"], sync: bool, lookup: Optional[bool], fetched):
        """
        The query cache's part in an extended-protocol batch (the session's
        held messages, C{batch}): what its writes invalidate, and for a
        batch of cacheable reads ending with a Sync, the cached reply
        (L{HANDLED}) or a recorder for the miss.

        @return: L{HANDLED}, or (recorder or None, plans by statement).
        """
        session = self._session
        cache = self.cache
        router = session.router
        classify = session.core.classify
        usable = sync and session.cache_usable() and not router.temp_tables
        memo_key = _batch_bytes(batch) if usable else b""
        self_contained = usable and _self_contained(batch)
        if usable and fetched is None and lookup is None:
            known = cache.remembered(memo_key, batch=not self_contained)
            if known is not None:
                # A batch this session found cacheable before (it has no
                # writes and no Close).
                # A self-contained batch's statements exist for the session
                # from now on.
                return self._batch_answer(
                    cache.cache.fetch(*known), batch, sync, lookup, self_contained, *known
                )
        plans: Dict[str, InvalidationPlan] = {}
        for sql in session.executed_sql(batch):
            if sql in plans or classify(sql).is_read_only:
                continue
            plan = self._plan(sql, lookup, lambda ok: session.send_batch(sync, ok))
            if plan is None:
                return HANDLED
            if not plan.is_empty:
                plans[sql] = plan
        if plans or not usable or any(item.type == messages.FLUSH for item in batch):
            return None, plans
        prepared = _ParsePayloads(session.statements)
        try:
            cacheable = extended_key(
                cache.user,
                cache.database,
                cache.digest,
                [(item.type, item.payload) for item in batch if item.type != messages.SYNC],
                prepared,
            )
        except messages.MessageFormatError:
            return None, plans
        if cacheable is None:
            return None, plans
        tables: Set = set()
        for sql in cacheable.sqls:
            decision = cache.decide(sql, router.temp_tables)
            if decision.needs_lookup:
                if lookup is None:
                    self.lookup(decision, lambda ok: session.send_batch(sync, ok))
                    return HANDLED
                return None, plans
            if not decision.cacheable:
                return None, plans
            tables.update(decision.tables)
        ordered = tuple(sorted(tables, key=lambda t: (t.database, t.oid)))
        if self_contained:
            # Its meaning does not depend on the session's statements.
            cache.remember(memo_key, cacheable.key, ordered)
        elif not any(item.type in (messages.PARSE, messages.CLOSE) for item in batch):
            cache.remember(memo_key, cacheable.key, ordered, batch=True)
        result = fetched if fetched is not None else cache.cache.fetch(cacheable.key, ordered)
        # On a hit the client's statements exist for the session, on no
        # server yet: a later Bind prepares them where it runs.
        return self._batch_answer(result, batch, sync, lookup, True, cacheable.key, ordered)

    def _plan(
        self, sql: str, lookup: Optional[bool], retry: Callable[[bool], None]
    ) -> Optional[InvalidationPlan]:
        """
        What a write to C{sql} invalidates.  When that needs a catalog
        lookup not made yet, start it (C{retry} runs the step again with its
        outcome) and return None; when the lookup was made and failed,
        everything is invalidated.
        """
        plan = self.cache.plan(sql)
        if plan.needs_lookup:
            if lookup is None:
                self.lookup(plan, retry)
                return None
            plan = InvalidationPlan(flush_all=True, reason="catalog lookup failed")
        return plan

    def _batch_answer(
        self,
        result,
        batch: List["_BatchItem"],
        sync: bool,
        lookup: Optional[bool],
        record: bool,
        key: bytes,
        tables,
    ):
        """
        What the cache's answer for a batch comes to: wait for a remote
        cache (then send the batch again), answer a hit (recording the
        batch's statements for the session if C{record}), or copy a miss's
        reply on its way (a recorder, and no invalidation plans).
        """
        session = self._session
        if isinstance(result, defer.Deferred):
            self.wait(result, lambda answer: session.send_batch(sync, lookup, answer))
            return HANDLED
        if result.reply is not None:
            session.batch_answered(batch, record)
            session.submit_local([result.reply])
            return HANDLED
        return self.recorder(key, tables, result.token), {}


def look_up(
    session: ICachingSession,
    catalog: CatalogCache,
    relation_names: Sequence[str],
    function_names: Sequence[str],
    then: Callable[[bool], None],
) -> None:
    """
    Ask the primary about relations and functions (on the session's
    connection: names resolve with its search_path and temporary tables),
    record the answer in C{catalog}, then run C{then(succeeded)}.  The
    client's stream waits meanwhile (the session's queue); the reactor
    never does.  The query cache's rules and routing
    (L{twisted_pgpool.routing.catalog}) both ask through here.

    @param relation_names: as L{lookup_sql} takes them; so are
        C{function_names}.  Not both empty.
    """
    rows: List[Tuple[Optional[bytes], ...]] = []
    state = {"done": False, "ok": True}

    def row(message_type: int, payload: bytes) -> None:
        if message_type == messages.DATA_ROW:
            rows.append(messages.decode_data_row(payload).values)
        elif message_type == messages.ERROR_RESPONSE:
            state["ok"] = False

    def ready(status: int) -> None:
        if state["ok"]:
            try:
                catalog.record(rows)
            except (ValueError, IndexError):
                state["ok"] = False
        state["done"] = True

    session.ask_primary(lookup_sql(relation_names, function_names), row, ready)

    def attempt() -> bool:
        if not state["done"]:
            return False
        then(state["ok"])
        return True

    session.run_or_wait(attempt)


def answer_cache_delete(
    session: ICachingSession, cache: Optional[SessionCache], query: bytes
) -> None:
    """
    Answer C{PGPOOL SET CACHE DELETE '<query>'} (Pgpool-II 4.6): delete
    the entry a simple Query of that text gets in this session, and say
    whether there was one.

    With the cache off (C{cache} is None), Pgpool-II answers "does not
    exist"; so do we.

    @param query: the statement named, as
        L{twisted_pgpool.cache.session.match_cache_delete} found it.
    """
    answer: List[bool] = []
    started: List[bool] = []
    waiting: List[bool] = []

    def arrived(deleted: object) -> None:
        answer.append(bool(deleted))
        if waiting and not session.closed:
            session.unblock()

    def attempt() -> bool:
        # Deleted only once the statements before it are answered: a
        # reply of the same query still on its way is stored first.
        if session.owner is not None:
            return False
        if not started:
            started.append(True)
            deleted = cache.delete(query) if cache is not None else False
            if isinstance(deleted, defer.Deferred):
                deleted.addCallback(arrived)
                if not answer:
                    # Its arrival will run the queue again.
                    waiting.append(True)
            else:
                answer.append(deleted)
        if not answer:
            return False
        # First in line and nothing being answered: write it now (as
        # submit_local would, without queueing behind what follows).
        reply = cache_delete_reply(query, answer[0])
        reply.append(
            messages.ready_for_query(session.links[session.primary_id].backend.transaction_status)
        )
        session.frontend.transport.writeSequence(reply)
        return True

    session.run_or_wait(attempt)


def _batch_bytes(batch: List["_BatchItem"]) -> bytes:
    """
    A batch's messages as one string, what a session remembers it by.
    """
    return b"".join([bytes((item.type,)) + item.payload for item in batch])


def _self_contained(batch: List["_BatchItem"]) -> bool:
    """
    Whether a batch parses every statement it binds or describes (and
    closes none): then its bytes alone say what it does.
    """
    parsed = set()
    for item in batch:
        kind = item.type
        if kind == messages.PARSE:
            parsed.add(item.name)
        elif kind == messages.BIND or (kind == messages.DESCRIBE and item.kind == "S"):
            if item.name not in parsed:
                return False
        elif kind == messages.CLOSE:
            return False
    return bool(parsed)
