"""
Tests for L{twisted_pgpool.cache.policy}: cacheability rules, invalidation
plans, keys, and the catalog lookup statement against a real PostgreSQL.
"""

from __future__ import annotations

from typing import Optional, Sequence

from twisted.trial.unittest import SynchronousTestCase, TestCase

from twisted_pgpool.cache.policy import (
    FORCE_QUERY_CACHE,
    NO_QUERY_CACHE,
    CachePolicy,
    CatalogCache,
    extended_key,
    leading_marker,
    lookup_sql,
    simple_key,
)
from twisted_pgpool.cache.querycache import QueryCache
from twisted_pgpool.cache.store import ShmemCacheStore, TableRef
from twisted_pgpool.wire import messages


def relation_row(
    name: str,
    oid: Optional[int],
    relkind: str = "r",
    persistence: str = "p",
    schema: str = "public",
    side_effects: bool = False,
    family: Sequence[int] = (),
    cascades: Sequence[int] = (),
):
    """
    A row as the lookup statement returns it (text format).
    """
    enc = name.encode("utf-8").hex().encode("ascii")
    if oid is None:
        return (b"r", enc) + (None,) * 8
    return (
        b"r",
        enc,
        str(oid).encode(),
        relkind.encode(),
        persistence.encode(),
        schema.encode(),
        b"true" if side_effects else b"false",
        ",".join(map(str, family)).encode() or None,
        ",".join(map(str, cascades)).encode() or None,
        None,
    )


def function_row(name: str, volatility: Optional[str]):
    return (
        (b"f", name.encode().hex().encode())
        + (None,) * 7
        + (volatility.encode() if volatility else None,)
    )


def catalog() -> CatalogCache:
    cache = CatalogCache("app")
    cache.record(
        [
            relation_row("accounts", 100),
            relation_row("public.accounts", 100),
            relation_row("branches", 101),
            relation_row("tmp", 102, persistence="t", schema="pg_temp_3"),
            relation_row("ulog", 103, persistence="u"),
            relation_row("v_safe", 104, relkind="v"),
            relation_row("v_other", 105, relkind="v"),
            relation_row("secret", 106),
            relation_row("seq", 107, relkind="S"),
            relation_row("parent", 110, relkind="p", family=(111, 112)),
            relation_row("audited", 120, side_effects=True),
            relation_row("owner", 130, cascades=(131,)),
            relation_row("missing", None),
            function_row("now", "s"),
            function_row("abs", "i"),
            function_row("count", "i"),
            function_row("upper", "i"),
            function_row("my_stable", "s"),
            function_row("my_writer", "v"),
            function_row("my_pure", "i"),
            function_row("unknown_fn", None),
        ]
    )
    return cache


class DecideTests(SynchronousTestCase):
    def setUp(self):
        self.policy = CachePolicy(
            cache_safe_memqcache_table_list=["v_safe", "public\\.ulog"],
            cache_unsafe_memqcache_table_list=["secret"],
        )
        self.catalog = catalog()

    def decide(self, sql: str, temp_tables=()):
        return self.policy.decide(sql, self.catalog, temp_tables)

    def assertNever(self, sql: str, why: str, temp_tables=()):
        decision = self.decide(sql, temp_tables)
        self.assertFalse(decision.cacheable, decision)
        self.assertFalse(decision.needs_lookup, decision)
        self.assertIn(why, decision.reason)

    def test_plain_select_is_cacheable_under_its_table(self):
        decision = self.decide("SELECT * FROM accounts WHERE id = 1")
        self.assertTrue(decision.cacheable)
        self.assertEqual(decision.tables, (TableRef("app", 100),))

    def test_join_is_registered_under_every_table(self):
        decision = self.decide("SELECT * FROM accounts a JOIN branches b ON a.b = b.id")
        self.assertEqual(decision.tables, (TableRef("app", 100), TableRef("app", 101)))

    def test_partitioned_table_is_registered_under_its_partitions(self):
        decision = self.decide("SELECT count(*) FROM parent")
        self.assertEqual([t.oid for t in decision.tables], [110, 111, 112])

    def test_unknown_names_need_a_lookup(self):
        decision = self.decide("SELECT f(x) FROM newtable")
        self.assertTrue(decision.needs_lookup)
        self.assertEqual(decision.missing_relations, ("newtable",))
        self.assertEqual(decision.missing_functions, ("f",))

    def test_now_is_never_cached(self):
        self.assertNever("SELECT now()", "now() is not IMMUTABLE")

    def test_current_timestamp_is_never_cached(self):
        self.assertNever("SELECT current_timestamp", "CURRENT_TIMESTAMP")

    def test_now_literal_is_never_cached(self):
        self.assertNever("SELECT * FROM accounts WHERE t < 'now'", "'now'")

    def test_random_is_never_cached(self):
        self.assertNever("SELECT random()", "random")

    def test_nextval_is_never_cached(self):
        self.assertNever("SELECT nextval('s')", "nextval")

    def test_stable_user_function_is_never_cached(self):
        self.assertNever("SELECT my_stable(1)", "not IMMUTABLE")

    def test_immutable_functions_are_cached(self):
        self.assertTrue(self.decide("SELECT abs(id), my_pure(id) FROM accounts").cacheable)

    def test_unknown_function_is_never_cached(self):
        self.assertNever("SELECT unknown_fn(1)", "unknown")

    def test_temp_table_is_never_cached(self):
        self.assertNever("SELECT * FROM tmp", "temporary")

    def test_session_temp_table_shadowing_a_permanent_one(self):
        self.assertTrue(self.decide("SELECT * FROM accounts").cacheable)
        self.assertNever(
            "SELECT * FROM accounts", "temporary table of this session", temp_tables={"accounts"}
        )

    def test_unlogged_table_only_when_safe_listed(self):
        self.assertTrue(self.decide("SELECT * FROM ulog").cacheable)
        policy = CachePolicy()
        self.assertIn("unlogged", policy.decide("SELECT * FROM ulog", catalog()).reason)

    def test_view_only_when_safe_listed(self):
        self.assertTrue(self.decide("SELECT * FROM v_safe").cacheable)
        self.assertNever("SELECT * FROM v_other", "view")

    def test_unsafe_list_wins(self):
        policy = CachePolicy(
            cache_safe_memqcache_table_list=["v_safe"],
            cache_unsafe_memqcache_table_list=["public\\.v_safe"],
        )
        self.assertIn("unsafe", policy.decide("SELECT * FROM v_safe", catalog()).reason)
        self.assertNever("SELECT * FROM secret", "unsafe")

    def test_sequence_is_never_cached(self):
        self.assertNever("SELECT last_value FROM seq", "relkind S")

    def test_system_catalog_is_never_cached(self):
        self.assertNever("SELECT * FROM pg_class", "system catalog")

    def test_for_update_is_never_cached(self):
        self.assertNever("SELECT * FROM accounts FOR UPDATE", "FOR UPDATE")

    def test_select_into_is_never_cached(self):
        self.assertNever("SELECT * INTO copy FROM accounts", "SELECT INTO")

    def test_multi_statement_is_never_cached(self):
        self.assertNever("SELECT 1; SELECT 2", "multi-statement")

    def test_non_select_is_never_cached(self):
        self.assertNever("UPDATE accounts SET x = 1", "not a SELECT")

    def test_unresolved_relation_is_never_cached(self):
        self.assertNever("SELECT * FROM missing", "does not resolve")

    def test_cte_name_needs_no_table(self):
        self.catalog.record([relation_row("c", None)])
        decision = self.decide("WITH c AS (SELECT * FROM accounts) SELECT * FROM c")
        self.assertTrue(decision.cacheable, decision)
        self.assertEqual(decision.tables, (TableRef("app", 100),))

    def test_no_query_cache_comment(self):
        self.assertNever("/*NO QUERY CACHE*/ SELECT * FROM accounts", "NO QUERY CACHE")

    def test_other_leading_comment_follows_allow_sql_comments(self):
        self.assertFalse(self.decide("/* app */ SELECT * FROM accounts").cacheable)
        policy = CachePolicy(allow_sql_comments=True)
        self.assertTrue(policy.decide("/* app */ SELECT * FROM accounts", catalog()).cacheable)

    def test_force_query_cache_caches_volatile_functions(self):
        decision = self.decide("/*FORCE QUERY CACHE*/ SELECT now(), random() FROM accounts")
        self.assertTrue(decision.cacheable, decision)

    def test_force_query_cache_still_refuses_temp_tables_and_locks(self):
        self.assertNever("/*FORCE QUERY CACHE*/ SELECT * FROM tmp", "temporary")
        self.assertNever("/*FORCE QUERY CACHE*/ SELECT * FROM accounts FOR UPDATE", "FOR UPDATE")
        self.assertNever("/*FORCE QUERY CACHE*/ DELETE FROM accounts", "not a SELECT")

    def test_leading_marker(self):
        self.assertEqual(leading_marker("  /* force query cache */ SELECT 1"), FORCE_QUERY_CACHE)
        self.assertEqual(leading_marker("-- x\n/*NO QUERY CACHE*/SELECT 1"), NO_QUERY_CACHE)
        self.assertIsNone(leading_marker("SELECT 1 /*NO QUERY CACHE*/"))


class InvalidationTests(SynchronousTestCase):
    def setUp(self):
        self.policy = CachePolicy()
        self.catalog = catalog()

    def plan(self, sql: str):
        return self.policy.plan_invalidation(sql, self.catalog)

    def test_read_plans_nothing(self):
        self.assertTrue(self.plan("SELECT * FROM accounts WHERE upper(x) = 'A'").is_empty)

    def test_dml_invalidates_its_table(self):
        for sql in (
            "INSERT INTO accounts VALUES (1)",
            "UPDATE accounts SET x = 1",
            "DELETE FROM accounts",
            "TRUNCATE accounts",
            "COPY accounts FROM STDIN",
            "MERGE INTO accounts a USING branches b ON a.id = b.id WHEN MATCHED THEN DELETE",
        ):
            plan = self.plan(sql)
            self.assertEqual(plan.tables, (TableRef("app", 100),), sql)
            self.assertFalse(plan.flush_all, sql)

    def test_write_to_partition_invalidates_its_family(self):
        self.assertEqual([t.oid for t in self.plan("DELETE FROM parent").tables], [110, 111, 112])

    def test_cascading_foreign_keys_are_invalidated(self):
        self.assertEqual([t.oid for t in self.plan("DELETE FROM owner").tables], [130, 131])

    def test_triggers_flush_everything(self):
        self.assertTrue(self.plan("UPDATE audited SET x = 1").flush_all)

    def test_write_through_view_flushes_everything(self):
        self.assertTrue(self.plan("INSERT INTO v_other VALUES (1)").flush_all)

    def test_ddl_on_table_invalidates_it_and_forgets_names(self):
        for sql in ("ALTER TABLE accounts ADD COLUMN y int", "DROP TABLE accounts"):
            plan = self.plan(sql)
            self.assertEqual(plan.tables, (TableRef("app", 100),), sql)
            self.assertTrue(plan.forget_catalog, sql)

    def test_pgpool_flush_statements(self):
        for sql in (
            "ALTER DATABASE app SET x = 1",
            "ALTER ROLE app NOSUPERUSER",
            "REVOKE SELECT ON accounts FROM app",
            "CREATE OR REPLACE FUNCTION f() ...",
            "DROP FUNCTION f",
            "CALL p()",
            "DO $$ BEGIN END $$",
        ):
            self.assertTrue(self.plan(sql).flush_all, sql)

    def test_volatile_user_function_call_flushes_everything(self):
        self.assertTrue(self.plan("SELECT my_writer(1)").flush_all)
        self.assertTrue(self.plan("SELECT my_stable(1)").is_empty)

    def test_copy_options_and_create_if_not_exists_are_not_function_calls(self):
        # Taken for calls of stdin() and h() before, flushing the whole
        # cache (issue 15, item 10).
        plan = self.plan("COPY accounts FROM STDIN (FORMAT csv)")
        self.assertEqual((plan.tables, plan.flush_all), ((TableRef("app", 100),), False))
        for sql in (
            "CREATE TABLE IF NOT EXISTS h(a int)",
            "CREATE INDEX i ON accounts (x)",
            "CREATE INDEX i ON accounts USING btree (x)",
        ):
            self.assertFalse(self.plan(sql).flush_all, sql)

    def test_unknown_written_name_needs_lookup(self):
        plan = self.plan("INSERT INTO fresh VALUES (1)")
        self.assertEqual(plan.missing_relations, ("fresh",))


class KeyTests(SynchronousTestCase):
    def batch(
        self, statement="", portal="", params=(b"1",), max_rows=0, sql="SELECT $1::int", types=(23,)
    ):
        return [
            (messages.PARSE, messages.parse(statement, sql, types)[5:]),
            (messages.BIND, messages.bind(portal, statement, params)[5:]),
            (messages.DESCRIBE, messages.describe("P", portal)[5:]),
            (messages.EXECUTE, messages.execute(portal, max_rows)[5:]),
        ]

    def key(self, items, prepared=None):
        batch = extended_key("app", "app", b"s", items, prepared or {})
        return batch.key if batch is not None else None

    def test_simple_key_depends_on_user_database_settings_and_text(self):
        base = simple_key("u", "d", b"s", "SELECT 1")
        self.assertEqual(base, simple_key("u", "d", b"s", "SELECT 1"))
        for other in (
            simple_key("v", "d", b"s", "SELECT 1"),
            simple_key("u", "e", b"s", "SELECT 1"),
            simple_key("u", "d", b"t", "SELECT 1"),
            simple_key("u", "d", b"s", "SELECT 2"),
            simple_key("ud", "", b"s", "SELECT 1"),
        ):
            self.assertNotEqual(base, other)

    def test_extended_key_ignores_statement_and_portal_names(self):
        self.assertEqual(self.key(self.batch()), self.key(self.batch("__asyncpg_stmt_1__", "p1")))

    def test_extended_key_depends_on_parameters_and_types(self):
        base = self.key(self.batch())
        self.assertNotEqual(base, self.key(self.batch(params=(b"2",))))
        self.assertNotEqual(base, self.key(self.batch(params=(None,))))
        self.assertNotEqual(base, self.key(self.batch(types=(20,))))
        self.assertNotEqual(base, self.key(self.batch(sql="SELECT $1::int + 0")))
        self.assertNotEqual(simple_key("app", "app", b"s", "SELECT $1::int"), base)

    def test_a_row_limit_is_part_of_the_key(self):
        # Outside a transaction the portal dies at Sync: the reply to a
        # limited Execute is as repeatable as any other.
        limited = self.key(self.batch(max_rows=10))
        self.assertIsNotNone(limited)
        self.assertNotEqual(limited, self.key(self.batch()))
        self.assertNotEqual(limited, self.key(self.batch(max_rows=1)))

    def test_batch_without_execute_is_not_cacheable(self):
        self.assertIsNone(self.key(self.batch()[:2]))

    def test_bind_of_earlier_statement_uses_its_parse(self):
        parse = messages.parse("s1", "SELECT $1::int", (23,))[5:]
        later = self.batch("s1")[1:]
        batch = extended_key("app", "app", b"s", later, {"s1": parse})
        self.assertEqual(batch.sqls, ("SELECT $1::int",))
        renamed = extended_key(
            "app",
            "app",
            b"s",
            self.batch("s2")[1:],
            {"s2": messages.parse("s2", "SELECT $1::int", (23,))[5:]},
        )
        self.assertEqual(batch.key, renamed.key)
        self.assertIsNone(extended_key("app", "app", b"s", later, {}))

    def test_close_makes_the_batch_uncacheable(self):
        items = self.batch() + [(messages.CLOSE, messages.close("S", "")[5:])]
        self.assertIsNone(self.key(items))


class QueryCacheTests(SynchronousTestCase):
    def test_pool_cache_row(self):
        store = ShmemCacheStore(10_000, 10, clock=None)
        cache = QueryCache(store, CachePolicy())
        t = (TableRef("app", 1),)
        miss = cache.fetch(b"k", t)
        cache.store_reply(b"k", b"reply", t, miss.token)
        for _ in range(3):
            self.assertEqual(cache.fetch(b"k", t).reply, b"reply")
        row = cache.pool_cache_row()
        self.assertEqual(row[:6], ["3", "4", "0.75", "10", "1", "1"])
        self.assertEqual(len(row), 9)

    def test_auto_invalidation_off_keeps_entries(self):
        store = ShmemCacheStore(10_000, 10, clock=None)
        cache = QueryCache(store, CachePolicy(), auto_invalidation=False)
        t = (TableRef("app", 1),)
        cache.store_reply(b"k", b"r", t, cache.fetch(b"k", t).token)
        cache.apply(CachePolicy().plan_invalidation("DELETE FROM x", _with_x()), "app")
        self.assertEqual(cache.fetch(b"k", t).reply, b"r")

    def test_delete_removes_one_entry_and_counts_nothing(self):
        store = ShmemCacheStore(10_000, 10, clock=None)
        cache = QueryCache(store, CachePolicy())
        t = (TableRef("app", 1),)
        cache.store_reply(b"k", b"r", t, cache.fetch(b"k", t).token)
        self.assertIs(cache.delete(b"k"), True)
        self.assertIs(cache.delete(b"k"), False)
        self.assertEqual(cache.pool_cache_row()[:2], ["0", "1"])
        self.assertIsNone(cache.fetch(b"k", t).reply)


def _with_x() -> CatalogCache:
    c = CatalogCache("app")
    c.record([relation_row("x", 1)])
    return c


class LookupAgainstPostgresTests(TestCase):
    """
    The lookup statement runs on a real server and its rows parse.
    """

    def setUp(self):
        try:
            import psycopg
        except ImportError:  # pragma: no cover
            self.skipTest("psycopg is not installed")
        from tests.support import cluster_or_skip, direct_dsn

        self.conn = psycopg.connect(direct_dsn(cluster_or_skip().primary), autocommit=True)
        self.addCleanup(self.conn.close)
        cur = self.conn.cursor()
        cur.execute("DROP TABLE IF EXISTS qc_child, qc_parent, qc_ref, qc_unlogged CASCADE")
        cur.execute("CREATE TABLE qc_parent (id int PRIMARY KEY) PARTITION BY RANGE (id)")
        cur.execute("CREATE TABLE qc_child PARTITION OF qc_parent FOR VALUES FROM (0) TO (10)")
        cur.execute("CREATE TABLE qc_ref (id int REFERENCES qc_parent ON DELETE CASCADE)")
        cur.execute("CREATE UNLOGGED TABLE qc_unlogged (id int)")
        cur.execute("CREATE TEMP TABLE qc_temp (id int)")
        self.addCleanup(
            cur.execute, "DROP TABLE IF EXISTS qc_child, qc_parent, qc_ref, qc_unlogged CASCADE"
        )

    def lookup(self, relations, functions) -> CatalogCache:
        cache = CatalogCache("app")
        cur = self.conn.cursor(binary=False)
        # Simple protocol, as the proxy sends it.
        cur.execute(lookup_sql(relations, functions).encode("utf-8"), prepare=False)
        rows = [
            tuple(None if v is None else str(v).encode() for v in row) for row in cur.fetchall()
        ]
        cache.record(rows)
        return cache

    def oid(self, name: str) -> int:
        cur = self.conn.cursor()
        cur.execute("SELECT %s::regclass::oid", (name,))
        return cur.fetchone()[0]

    def test_relation_facts(self):
        cache = self.lookup(
            [
                "qc_parent",
                "public.qc_child",
                "qc_unlogged",
                "qc_temp",
                "nope",
                "pg_class",
                'Odd "Name"',
            ],
            [],
        )
        parent = cache.relations["qc_parent"]
        self.assertEqual(
            (parent.relkind, parent.relpersistence, parent.schema), ("p", "p", "public")
        )
        self.assertEqual(parent.family, (self.oid("qc_child"),))
        self.assertEqual(parent.cascades, (self.oid("qc_ref"),))
        self.assertEqual(cache.relations["public.qc_child"].family, (self.oid("qc_parent"),))
        self.assertEqual(cache.relations["qc_unlogged"].relpersistence, "u")
        self.assertEqual(cache.relations["qc_temp"].relpersistence, "t")
        self.assertEqual(cache.relations["pg_class"].schema, "pg_catalog")
        self.assertIsNone(cache.relations["nope"])
        self.assertIsNone(cache.relations['Odd "Name"'])

    def test_function_volatility(self):
        cache = self.lookup(
            [], ["now", "random", "abs", "pg_catalog.upper", "no_such_function", "é'\\x"]
        )
        self.assertEqual(
            cache.functions,
            {
                "now": "s",
                "random": "v",
                "abs": "i",
                "pg_catalog.upper": "i",
                "no_such_function": None,
                "é'\\x": None,
            },
        )

    def test_decide_after_a_real_lookup(self):
        policy = CachePolicy()
        catalog_cache = CatalogCache("app")
        sql = "SELECT abs(id) FROM qc_parent WHERE id = 1"
        pending = policy.decide(sql, catalog_cache)
        self.assertTrue(pending.needs_lookup)
        found = self.lookup(pending.missing_relations, pending.missing_functions)
        catalog_cache.relations.update(found.relations)
        catalog_cache.functions.update(found.functions)
        decision = policy.decide(sql, catalog_cache)
        self.assertTrue(decision.cacheable, decision)
        self.assertEqual(
            {t.oid for t in decision.tables}, {self.oid("qc_parent"), self.oid("qc_child")}
        )


class ShowPoolCacheTests(SynchronousTestCase):
    def rows(self, query_cache):
        from types import SimpleNamespace

        from twisted_pgpool.proxy.inspection import Inspector

        inspector = Inspector(SimpleNamespace(query_cache=query_cache))
        self.assertEqual(inspector.match(b"SHOW POOL_CACHE\x00"), "pool_cache")
        out = inspector.answer("pool_cache", None)
        columns = [c.name for c in messages.decode_row_description(out[0][5:]).columns]
        data = [[v.decode() for v in messages.decode_data_row(m[5:]).values] for m in out[1:-1]]
        return columns, data

    def test_cache_off_shows_zeros(self):
        columns, data = self.rows(None)
        self.assertEqual(columns[:3], ["num_cache_hits", "num_selects", "cache_hit_ratio"])
        self.assertEqual(data, [["0", "0", "0.00", "0", "0", "0", "0", "0", "0"]])

    def test_cache_on_shows_its_counters(self):
        cache = QueryCache(ShmemCacheStore(1000, 5, clock=None), CachePolicy())
        cache.fetch(b"k", ())
        self.assertEqual(self.rows(cache)[1], [["0", "1", "0.00", "5", "0", "0", "0", "1000", "0"]])


class ClientTextLookupTests(SynchronousTestCase):
    def test_name_with_bytes_that_are_not_utf8_is_looked_up_as_those_bytes(self):
        # The server refuses the lookup (not UTF-8), as it refuses the
        # statement the name came from; the proxy must not fail first.
        name = b"t\xeb".decode("utf-8", "surrogateescape")
        self.assertIn("pg_catalog.decode('74eb', 'hex')", lookup_sql([name], []))
