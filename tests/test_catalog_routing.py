"""
Routing that needs the catalog (L{twisted_pgpool.routing.catalog}) and the
relation cache it shares with the query cache (L{CatalogCache}: Pgpool-II's
relcache_expire and relcache_size), with plain calls and task.Clock; then a
session (with fake backends, as in tests/test_session_unit.py) looking a
name up once on its primary connection while the statement waits.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import attr
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_cachepolicy import function_row, relation_row
from tests.test_session_unit import I, SessionTestCase, T, connection
from twisted_pgpool.cache.policy import CatalogCache, CatalogCaches
from twisted_pgpool.proxy.session import Session
from twisted_pgpool.routing.catalog import CatalogQuestion, CatalogRouting
from twisted_pgpool.routing.router import BALANCE, PRIMARY, Route, SessionRouter
from twisted_pgpool.sql.classifier import Classification, ClassifierConfig, classify
from twisted_pgpool.testing.doubles import Capture, FakeCore, FakeFramer
from twisted_pgpool.wire import messages

STRICT = ClassifierConfig()
RELAXED = ClassifierConfig(unknown_functions_are_writes=False)


def strict(sql: str) -> Classification:
    return classify(sql, STRICT)


def relaxed(sql: str) -> Classification:
    return classify(sql, RELAXED)


class CatalogCacheLifetimeTests(SynchronousTestCase):
    """
    relcache_expire and relcache_size.
    """

    def test_facts_are_forgotten_when_relcache_expire_has_passed(self) -> None:
        clock = Clock()
        cache = CatalogCache("app", clock=clock, expire=60)
        cache.record([relation_row("t", 1), function_row("f", "s")])
        clock.advance(59.9)
        self.assertEqual(cache.missing(["t"], ["f"]), ((), ()))
        generation = cache.generation
        clock.advance(0.1)
        self.assertEqual(cache.missing(["t"], ["f"]), (("t",), ("f",)))
        # Decisions remembered from the old facts are stale too.
        self.assertEqual(cache.generation, generation + 1)

    def test_lifetime_counts_from_the_first_fact_learnt(self) -> None:
        clock = Clock()
        cache = CatalogCache("app", clock=clock, expire=10)
        cache.record([relation_row("t", 1)])
        clock.advance(8)
        cache.record([relation_row("u", 2)])
        clock.advance(2)
        self.assertEqual(cache.missing(["t", "u"], ()), (("t", "u"), ()))
        # Learnt again: a new lifetime from now.
        cache.record([relation_row("t", 1)])
        clock.advance(9)
        self.assertEqual(cache.missing(["t"], ()), ((), ()))

    def test_zero_expire_keeps_facts(self) -> None:
        clock = Clock()
        cache = CatalogCache("app", clock=clock, expire=0)
        cache.record([relation_row("t", 1)])
        clock.advance(10**9)
        self.assertEqual(cache.missing(["t"], ()), ((), ()))

    def test_relcache_size_forgets_the_names_learnt_first(self) -> None:
        cache = CatalogCache("app", size=3)
        cache.record([relation_row("a", 1), relation_row("b", 2)])
        cache.record([relation_row("c", 3), function_row("f", "i"), function_row("g", "v")])
        self.assertEqual(cache.missing(["a", "b", "c"], ["f", "g"]), (("a", "b"), ()))
        self.assertEqual(len(cache.relations) + len(cache.functions), 3)

    def test_caches_made_by_catalog_caches_have_its_settings(self) -> None:
        clock = Clock()
        caches = CatalogCaches(clock=clock, expire=5, size=20)
        cache = caches.get("app", b"")
        self.assertEqual((cache.expire, cache.size), (5, 20))
        self.assertIs(caches.get("app", b""), cache)
        cache.record([relation_row("t", 1)])
        clock.advance(5)
        self.assertEqual(cache.missing(["t"], ()), (("t",), ()))


@attr.s(auto_attribs=True)
class Checked:
    classification: Classification
    route: Route


class CatalogRoutingTests(SynchronousTestCase):
    """
    L{CatalogRouting.route}: what it asks for, and what it decides with the
    facts.
    """

    def setUp(self) -> None:
        self.router = SessionRouter()
        self.catalog = CatalogCache("app")
        self.routing = CatalogRouting(relaxed)

    def route(self, sql: str, looked_up: bool = False) -> Any:
        c = strict(sql)
        answer = self.routing.route(
            self.router, c, sql, self.router.route(c), self.catalog, looked_up
        )
        if isinstance(answer, CatalogQuestion):
            return answer
        return Checked(*answer)

    def test_stable_function_asks_for_the_function_and_the_relations(self) -> None:
        self.assertEqual(
            self.route("SELECT my_stable(id) FROM t"), CatalogQuestion(("t",), ("my_stable",))
        )

    def test_stable_function_is_a_balanced_read(self) -> None:
        self.catalog.record([function_row("my_stable", "s"), relation_row("t", 1)])
        checked = self.route("SELECT my_stable(id) FROM t")
        self.assertEqual(
            (
                checked.route.target,
                checked.classification.is_read_only,
                checked.classification.marks_transaction_writing,
            ),
            (BALANCE, True, False),
        )

    def test_immutable_function_is_a_balanced_read(self) -> None:
        self.catalog.record([function_row("public.my_pure", "i")])
        self.assertEqual(self.route("SELECT public.my_pure(1)").route.target, BALANCE)

    def test_volatile_function_stays_a_write(self) -> None:
        self.catalog.record([function_row("my_writer", "v")])
        checked = self.route("SELECT my_writer()")
        self.assertEqual(
            (checked.route.target, checked.classification.is_read_only), (PRIMARY, False)
        )

    def test_one_volatile_function_among_stable_ones_is_a_write(self) -> None:
        self.catalog.record([function_row("my_stable", "s"), function_row("my_writer", "v")])
        self.assertEqual(self.route("SELECT my_stable(), my_writer()").route.target, PRIMARY)

    def test_function_that_does_not_resolve_is_a_write(self) -> None:
        self.catalog.record([function_row("nowhere", None)])
        self.assertEqual(self.route("SELECT nowhere()").route.target, PRIMARY)

    def test_function_still_missing_after_a_lookup_is_a_write_and_not_asked_again(self) -> None:
        checked = self.route("SELECT my_stable()", looked_up=True)
        self.assertEqual(checked.route.target, PRIMARY)

    def test_known_names_answer_without_a_question(self) -> None:
        self.catalog.record([function_row("my_stable", "s"), relation_row("t", 1)])
        for _ in range(3):
            self.assertIsInstance(self.route("SELECT my_stable(id) FROM t"), Checked)

    def test_statement_that_writes_anyway_asks_nothing(self) -> None:
        checked = self.route("SELECT my_stable() FROM t FOR UPDATE")
        self.assertEqual(checked.route.target, PRIMARY)

    def test_no_lookup_where_the_read_would_not_be_balanced(self) -> None:
        self.router.in_transaction = True
        self.router.wrote_in_transaction = True
        checked = self.route("SELECT my_stable() FROM t")
        self.assertEqual(checked.route.target, PRIMARY)
        self.router = SessionRouter(load_balance=False)
        self.assertEqual(self.route("SELECT * FROM t").route.target, PRIMARY)

    def test_functions_are_not_looked_up_with_a_function_list(self) -> None:
        self.routing = CatalogRouting(relaxed, check_functions=False)
        self.catalog.record([relation_row("t", 1)])
        self.assertEqual(self.route("SELECT my_stable() FROM t").route.target, PRIMARY)

    def test_unlogged_table_read_goes_to_the_primary(self) -> None:
        self.assertEqual(self.route("SELECT * FROM ulog"), CatalogQuestion(("ulog",)))
        self.catalog.record([relation_row("ulog", 1, persistence="u")])
        self.assertEqual(
            self.route("SELECT * FROM ulog").route, Route(PRIMARY, "reads an unlogged table")
        )

    def test_unlogged_table_read_through_a_stable_function(self) -> None:
        self.catalog.record(
            [function_row("my_stable", "s"), relation_row("ulog", 1, persistence="u")]
        )
        self.assertEqual(
            self.route("SELECT my_stable(id) FROM ulog").route.reason, "reads an unlogged table"
        )

    def test_temporary_table_found_in_the_catalog_goes_to_the_primary(self) -> None:
        self.catalog.record([relation_row("tmp", 1, persistence="t", schema="pg_temp_3")])
        self.assertEqual(self.route("SELECT * FROM tmp").route.target, PRIMARY)

    def test_logged_table_and_unresolved_names_are_balanced(self) -> None:
        self.catalog.record([relation_row("t", 1), relation_row("cte", None)])
        self.assertEqual(
            self.route("WITH cte AS (SELECT 1) SELECT * FROM t, cte").route.target, BALANCE
        )

    def test_relation_missing_after_a_lookup_goes_to_the_primary(self) -> None:
        self.assertEqual(self.route("SELECT * FROM t", looked_up=True).route.target, PRIMARY)

    def test_other_databases_names_are_not_looked_up(self) -> None:
        self.assertEqual(self.route("SELECT * FROM otherdb.public.t").route.target, BALANCE)

    def test_check_unlogged_table_off_asks_nothing(self) -> None:
        self.routing = CatalogRouting(relaxed, check_unlogged_table=False)
        self.assertEqual(self.route("SELECT * FROM ulog").route.target, BALANCE)


# -- a session ----------------------------------------------------------------


class CatalogCore(FakeCore):
    """
    L{FakeCore} with the relation cache and the relaxed classifier of
    L{twisted_pgpool.service.ProxyCore}.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.catalogs = CatalogCaches(
            clock=self.reactor, expire=self.config.relcache_expire, size=self.config.relcache_size
        )

    def classify_relaxed(self, sql: str) -> Classification:
        return relaxed(sql)


class SessionLookupTests(SessionTestCase):
    settings = {"relcache_expire": 30}

    def setUp(self) -> None:
        super().setUp()
        self.core = CatalogCore(
            self.core.config, cluster=self.core.cluster, balancer=self.core.balancer
        )
        self.framer = FakeFramer()
        self.session = Session(
            self.frontend,
            self.core,  # type: ignore[arg-type]
            connection(self.primary),
            self.framer,  # type: ignore[arg-type]
            self.open_connection,
        )

    def answer_lookup(self, rows: List[Tuple[Optional[bytes], ...]], status: int = I) -> str:
        """
        Answer the lookup the primary owes with C{rows}; return its text
        (the last thing the primary received before the answer).
        """
        asked = self.primary.received[-1]
        unit = self.primary.units.pop(0)
        assert isinstance(unit, Capture)
        for row in rows:
            values = [None if v is None else v.decode() for v in row]
            unit.on_message(messages.DATA_ROW, messages.data_row(values)[5:])
        unit.on_ready(status)
        self.primary.transaction_status = status
        self.session.backend_ready(self.primary)
        return asked

    def test_stable_function_waits_for_one_lookup_then_goes_to_the_standby(self) -> None:
        self.query("SELECT my_stable()")
        self.assertEqual((self.standby.received, self.framer.paused), ([], True))
        self.assertIn("pg_proc", self.answer_lookup([function_row("my_stable", "s")]))
        self.assertEqual(
            (self.standby.received, self.framer.paused), (["Q:SELECT my_stable()"], False)
        )
        self.answer(self.standby)
        # Known now: straight to the standby, no question asked.
        sent = len(self.primary.received)
        self.query("SELECT my_stable()")
        self.assertEqual(
            (len(self.primary.received), self.standby.received[-1]), (sent, "Q:SELECT my_stable()")
        )

    def test_volatile_function_goes_to_the_primary_after_the_lookup(self) -> None:
        self.query("SELECT my_writer()")
        self.answer_lookup([function_row("my_writer", "v")])
        self.assertEqual(
            (self.primary.received[-1], self.standby.received), ("Q:SELECT my_writer()", [])
        )

    def test_unlogged_table_read_goes_to_the_primary_in_the_extended_protocol(self) -> None:
        self.extended("SELECT * FROM ulog")
        self.assertIn("to_regclass", self.answer_lookup([relation_row("ulog", 7, persistence="u")]))
        self.assertEqual(
            (self.primary.received[-4:], self.standby.received),
            (["P:SELECT * FROM ulog", "B", "E", "S"], []),
        )

    def test_failed_lookup_sends_the_read_to_the_primary(self) -> None:
        self.query("SELECT * FROM t")
        unit = self.primary.units.pop(0)
        unit.on_message(messages.ERROR_RESPONSE, b"SERROR\x00C42501\x00Mdenied\x00\x00")
        unit.on_ready(I)
        self.session.backend_ready(self.primary)
        self.assertEqual(
            (self.primary.received[-1], self.standby.received), ("Q:SELECT * FROM t", [])
        )

    def test_ddl_through_the_session_forgets_the_facts(self) -> None:
        self.query("SELECT my_stable()")
        self.answer_lookup([function_row("my_stable", "s")])
        self.answer(self.standby)
        self.query("ALTER FUNCTION my_stable() VOLATILE")
        self.answer(self.primary)
        self.query("SELECT my_stable()")
        self.assertIn("pg_proc", self.primary.received[-1])

    def test_ddl_in_a_transaction_forgets_again_at_commit(self) -> None:
        catalog = self.core.catalogs.get("app", b"")
        self.query("BEGIN")
        self.answer(self.primary, T)
        self.query("ALTER FUNCTION f() STABLE")
        self.answer(self.primary, T)
        catalog.record([function_row("f", "v")])
        self.query("COMMIT")
        self.assertEqual(catalog.missing((), ["f"]), ((), ("f",)))

    def test_facts_expire_after_relcache_expire(self) -> None:
        self.query("SELECT my_stable()")
        self.answer_lookup([function_row("my_stable", "s")])
        self.answer(self.standby)
        self.core.reactor.advance(30)
        self.query("SELECT my_stable()")
        self.assertIn("pg_proc", self.primary.received[-1])

    def test_no_lookup_inside_a_batch_the_primary_has_no_sync_for(self) -> None:
        # A simple Query there would end the client's batch: the missing
        # name counts at its worst instead.
        self.primary.unsynced = True
        self.query("SELECT * FROM t")
        self.assertEqual(
            (self.primary.received, self.standby.received), (["Q:SELECT * FROM t"], [])
        )
