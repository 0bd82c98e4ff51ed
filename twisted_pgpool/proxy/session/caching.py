"""
What the query cache's steps (L{twisted_pgpool.cache.steps}) use of a
session beyond its queue (L{twisted_pgpool.interfaces.ICachingSession}):
whether the cache may serve now, a catalog lookup on the primary, and a
ReadyForQuery held until a remote cache has a write's invalidations.  Also
routing's use of the same catalog facts (L{twisted_pgpool.routing.catalog}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple, cast

from twisted.internet import defer

from twisted_pgpool.cache.policy import CatalogCache, changes_catalog
from twisted_pgpool.cache.steps import look_up
from twisted_pgpool.interfaces import ICachingSession
from twisted_pgpool.proxy.session.state import SessionState
from twisted_pgpool.routing.catalog import CatalogQuestion
from twisted_pgpool.routing.router import PRIMARY, Route
from twisted_pgpool.sql.classifier import Classification
from twisted_pgpool.wire import messages

if TYPE_CHECKING:  # pragma: no cover
    from twisted_pgpool.proxy.session.extended import _BatchItem


class CacheHooks(SessionState):
    """
    A part of L{twisted_pgpool.proxy.session.Session}: the query cache's
    hooks.
    """

    def cache_usable(self) -> bool:
        """
        Whether the cache may answer or store now: outside explicit
        transactions, before any role change.
        """
        cache = self._cache
        return (
            cache is not None
            and cache.disabled is None
            and not self.router.in_transaction
            and self._primary_backend.transaction_status == messages.TRANSACTION_IDLE
        )

    def ask_primary(
        self, sql: str, message_received: Callable[[int, bytes], None], ready: Callable[[int], None]
    ) -> None:
        """
        Send a query of the proxy's own (a query cache catalog lookup) on
        the session's primary connection; its replies go to
        C{message_received} and C{ready}, never to the client.
        """
        backend = self._primary_backend
        backend.write(messages.query(sql))
        backend.expect_capture(message_received, ready, holds_client=False)

    def hold_ready_for_query(self) -> None:
        """
        Keep the primary's next ReadyForQuery back, and the client's next
        message out, until a remote cache has the write's invalidations
        (L{_release_ready}).
        """
        if self._hold_ready:
            return
        self._primary_backend.keep_last_ready_for_query()
        self._hold_ready = True
        self._hold_client()

    def _release_ready(self, status: int, waits: List[defer.Deferred]) -> None:
        """
        Send the held ReadyForQuery once the remote cache has the write's
        invalidations, and let the client's next message in.
        """

        def release(_: object) -> None:
            self._hold_ready = False
            if self.closed:
                return
            self.frontend.transport.write(messages.ready_for_query(status))
            if self._held and self.owner is None:
                held, self._held = self._held, []
                self.frontend.transport.writeSequence(held)
            self.unblock()

        defer.DeferredList(waits).addCallback(release)

    def _route_with_catalog(
        self,
        classification: Classification,
        sql: str,
        route: Route,
        lookup: Optional[bool],
        retry: Callable[[bool], None],
    ) -> Optional[Tuple[Classification, Route]]:
        """
        Correct a statement's route with the catalog's facts
        (L{twisted_pgpool.routing.catalog}); when names are missing, look
        them up on the primary and return None: C{retry(succeeded)} runs
        the statement again afterwards.

        @param lookup: whether a lookup was made for this statement (and
            succeeded), as L{Session.query} has it.
        """
        routing = self._catalog_routing
        assert routing is not None
        if self._primary_backend.transaction_status == messages.TRANSACTION_FAILED:
            # A lookup would fail too; everything goes to the primary.
            return classification, route
        catalog = self._routing_catalog()
        answer = routing.route(
            self.router,
            classification,
            sql,
            route,
            catalog,
            lookup is not None or not self._may_look_up(),
        )
        if answer.__class__ is CatalogQuestion:
            question = cast(CatalogQuestion, answer)
            look_up(
                cast(ICachingSession, self),
                catalog,
                question.missing_relations,
                question.missing_functions,
                retry,
            )
            return None
        return cast(Tuple[Classification, Route], answer)

    def _batch_with_catalog(
        self, batch: List["_BatchItem"], lookup: Optional[bool], retry: Callable[[bool], None]
    ) -> Optional[Tuple[Dict[str, Classification], Optional[Route]]]:
        """
        L{_route_with_catalog} for the statements an extended-protocol batch
        parses or binds: one lookup for all their missing names (then None,
        and C{retry(succeeded)} runs the batch again).

        @return: the corrected classifications, by statement text (reads
            that only called STABLE or IMMUTABLE functions), and a route to
            the primary when one of the batch's reads must go there (an
            unlogged table), else None.
        """
        routing = self._catalog_routing
        assert routing is not None
        if self._primary_backend.transaction_status == messages.TRANSACTION_FAILED:
            return {}, None
        statements = self.statements
        texts = []
        for item in batch:
            if item.type == messages.PARSE:
                texts.append(item.sql)
            elif item.type == messages.BIND:
                known = statements.get(item.name)
                if known is not None and known.sql:
                    texts.append(known.sql)
        if not texts:
            return {}, None
        catalog = self._routing_catalog()
        asked = lookup is not None or not self._may_look_up()
        corrected: Dict[str, Classification] = {}
        primary_route: Optional[Route] = None
        relations: List[str] = []
        functions: List[str] = []
        for sql in dict.fromkeys(texts):
            c = self.core.classify(sql)
            answer = routing.route(self.router, c, sql, self.router.route(c), catalog, asked)
            if answer.__class__ is CatalogQuestion:
                question = cast(CatalogQuestion, answer)
                relations.extend(question.missing_relations)
                functions.extend(question.missing_functions)
                continue
            new_c, route = cast(Tuple[Classification, Route], answer)
            if new_c is not c:
                corrected[sql] = new_c
            if route.target == PRIMARY and primary_route is None and new_c.is_read_only:
                primary_route = route
        if relations or functions:
            look_up(
                cast(ICachingSession, self),
                catalog,
                tuple(dict.fromkeys(relations)),
                tuple(dict.fromkeys(functions)),
                retry,
            )
            return None
        return corrected, primary_route

    def _may_look_up(self) -> bool:
        """
        Whether a lookup may go to the primary now: not in the middle of
        an extended-protocol batch the primary has not seen the Sync of
        (a simple Query there would end it).  Without one, missing names
        count at their worst.
        """
        return not self._primary_backend.unsynced

    def _routing_catalog(self) -> CatalogCache:
        """
        The catalog facts for this session's database and settings: the
        query cache's when it is on.
        """
        if self._cache is not None:
            return self._cache.catalog
        return self.core.catalogs.get(self.frontend.database or "", b"")

    def _catalog_sent(self, classification: Classification, sql: str) -> None:
        """
        A statement that is not a read was sent: after DDL (and again when
        its transaction commits) the database's names may resolve
        differently; forget their facts.
        """
        c = classification
        if c.is_commit and self._catalog_changed_in_transaction:
            self._catalog_changed_in_transaction = False
            self.core.catalogs.forget_database(self.frontend.database or "")
        elif c.is_rollback and not c.is_savepoint_op:
            self._catalog_changed_in_transaction = False
        elif changes_catalog(c, sql):
            self.core.catalogs.forget_database(self.frontend.database or "")
            if self.router.in_transaction:
                self._catalog_changed_in_transaction = True
