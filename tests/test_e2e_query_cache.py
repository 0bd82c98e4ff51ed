"""
The in-memory query cache end to end: a real primary and standby, the proxy
as a child process, psycopg and asyncpg clients, and a real memcached for
the shared cache.

Whether a server ran a statement is read from C{pg_stat_statements} on the
primary (cache misses of cacheable statements are read there): a hit must
not add a call.
"""

from __future__ import annotations

import atexit
from typing import Any, Dict, List, Optional

from twisted.trial.unittest import SkipTest

from tests.support import memcached_or_skip, run_psql, unique
from tests.test_e2e_routing import (
    SKIP_ASYNCPG,
    RoutingTestCase,
    asyncpg,
    psycopg,
    run_async,
    start_proxy,
    superuser_dsn,
    wait_for_replay,
)
from twisted_pgpool.testing.memcached import MemcachedProcess
from twisted_pgpool.testing.waiting import wait_for

_memcached: Optional[MemcachedProcess] = None


def shared_memcached() -> MemcachedProcess:
    """
    A memcached server for the proxies of this module, started on demand.
    """
    global _memcached
    if _memcached is None:
        _memcached = MemcachedProcess(memcached_or_skip())
        _memcached.start()
        atexit.register(_memcached.stop)
    return _memcached


class CacheTestCase(RoutingTestCase):
    weights = (1, 1)
    settings: Dict[str, Any] = {"memory_cache_enabled": True}

    def make_table(self, rows: int = 3) -> str:
        name = unique("cached")
        with self.superuser() as conn:
            conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
            conn.execute(f"INSERT INTO {name} SELECT g, 'v' || g FROM generate_series(1, {rows}) g")
            conn.execute(f"GRANT ALL ON {name} TO app")
        wait_for_replay(self.cluster)
        return name

    def superuser(self) -> "psycopg.Connection":
        return psycopg.connect(
            superuser_dsn(self.cluster, self.cluster.primary, "app"), autocommit=True
        )

    def calls(self, fragment: str) -> int:
        """
        How often the servers (primary and standby) ran statements
        containing C{fragment}.  pg_stat_statements shows constants as
        C{$n} and counts statements differing only in column aliases as
        one: tests tell their statements apart by table or expression.
        """
        total = 0
        for node in (self.cluster.primary, self.cluster.standby):
            with psycopg.connect(superuser_dsn(self.cluster, node, "app"), autocommit=True) as conn:
                total += conn.execute(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                    "WHERE query LIKE %s AND query NOT LIKE '%%pg_stat_statements%%'",
                    (f"%{fragment}%",),
                ).fetchone()[0]
        return total

    def cache_stats(self, conn: Any) -> Dict[str, str]:
        cur = conn.execute("SHOW POOL_CACHE")
        return dict(zip([d.name for d in cur.description], cur.fetchone()))

    def cache_delete(self, conn: Any, sql: str) -> List[str]:
        """
        Run C{PGPOOL SET CACHE DELETE} for C{sql} (simple protocol: psycopg
        sends a statement without parameters so) and return the notices it
        got; its command tag must be C{SET}.
        """
        notices: List[str] = []

        def heard(diagnostic: Any) -> None:
            notices.append(diagnostic.message_primary)

        conn.add_notice_handler(heard)
        try:
            quoted = sql.replace("'", "''")
            cur = conn.execute(f"PGPOOL SET CACHE DELETE '{quoted}'")
            self.assertEqual(cur.statusmessage, "SET")
        finally:
            conn.remove_notice_handler(heard)
        return notices


class ShmemCacheTests(CacheTestCase):
    def test_a_repeated_select_is_answered_by_the_proxy(self) -> None:
        table = self.make_table()
        conn = self.connect()
        sql = f"SELECT id, v FROM {table} ORDER BY id"
        first = conn.execute(sql)
        rows, description = first.fetchall(), [(d.name, d.type_code) for d in first.description]
        for _ in range(4):
            again = conn.execute(sql)
            self.assertEqual(again.fetchall(), rows)
            self.assertEqual([(d.name, d.type_code) for d in again.description], description)
            self.assertEqual(again.statusmessage, "SELECT 3")
        self.assertEqual(self.calls(f"FROM {table} ORDER BY id"), 1)
        stats = self.cache_stats(conn)
        self.assertGreaterEqual(int(stats["num_cache_hits"]), 4)

    def test_extended_protocol_with_parameters(self) -> None:
        table = self.make_table()
        conn = self.connect()
        sql = f"SELECT v FROM {table} WHERE id = %s"
        for _ in range(3):
            for key in (1, 2):
                self.assertEqual(conn.execute(sql, (key,), prepare=False).fetchone(), (f"v{key}",))
        # Two parameter values: two entries, each read from the server once.
        self.assertEqual(self.calls(f"FROM {table} WHERE id"), 2)

    def test_prepared_statements_of_psycopg(self) -> None:
        table = self.make_table()
        conn = self.connect()
        sql = f"SELECT v FROM {table} WHERE id = %s"
        for _ in range(8):
            self.assertEqual(conn.execute(sql, (3,), prepare=True).fetchone(), ("v3",))
        self.assertEqual(self.calls(f"FROM {table} WHERE id"), 1)
        # The statement psycopg prepared still works when a miss needs it.
        self.assertEqual(conn.execute(sql, (2,), prepare=True).fetchone(), ("v2",))

    def test_asyncpg(self) -> None:
        if asyncpg is None:
            raise SkipTest(SKIP_ASYNCPG)
        table, other = self.make_table(), self.make_table()

        async def scenario() -> List[Any]:
            conn = await asyncpg.connect(
                host=self.proxy.host,
                port=self.proxy.port,
                user="app",
                password="app",
                database="app",
            )
            try:
                results = []
                for _ in range(5):
                    results.append(await conn.fetchval(f"SELECT v FROM {table} WHERE id = $1", 2))
                statement = await conn.prepare(f"SELECT v FROM {other} WHERE id = $1")
                for _ in range(5):
                    results.append(await statement.fetchval(1))
                return results
            finally:
                await conn.close()

        self.assertEqual(run_async(scenario), ["v2"] * 5 + ["v1"] * 5)
        # asyncpg prepares with Parse, Describe and Flush, and its first
        # execution ends that batch: not cacheable (it began before the
        # result could be looked up).  The second is a miss, stored; the
        # other three are hits.
        self.assertEqual(self.calls(f"SELECT v FROM {other} WHERE id"), 2)
        self.assertEqual(self.calls(f"SELECT v FROM {table} WHERE id"), 2)

    def test_a_write_through_the_proxy_makes_the_next_read_fresh(self) -> None:
        table = self.make_table()
        conn = self.connect()
        sql = f"SELECT v FROM {table} WHERE id = 1"
        self.assertEqual(conn.execute(sql).fetchone(), ("v1",))
        self.assertEqual(conn.execute(sql).fetchone(), ("v1",))
        conn.execute(f"UPDATE {table} SET v = 'new' WHERE id = 1")
        self.assertEqual(conn.execute(sql).fetchone(), ("new",))
        other = self.connect()
        self.assertEqual(other.execute(sql).fetchone(), ("new",))

    def test_a_write_that_bypasses_the_proxy_is_not_seen(self) -> None:
        # The documented trade-off: bounded by memqcache_expire only.
        table = self.make_table()
        conn = self.connect()
        sql = f"SELECT v FROM {table} WHERE id = 1"
        self.assertEqual(conn.execute(sql).fetchone(), ("v1",))
        with self.superuser() as direct:
            direct.execute(f"UPDATE {table} SET v = 'behind your back' WHERE id = 1")
        self.assertEqual(conn.execute(sql).fetchone(), ("v1",))
        conn.execute(f"UPDATE {table} SET v = v WHERE id = 2")
        self.assertEqual(conn.execute(sql).fetchone(), ("behind your back",))

    def test_commit_invalidates_and_rollback_does_not(self) -> None:
        table = self.make_table()
        conn = self.connect()
        sql = f"SELECT v AS rollback_probe FROM {table} WHERE id = 1"
        conn.execute(sql)
        with self.assertRaises(RuntimeError):
            with conn.transaction():
                conn.execute(f"UPDATE {table} SET v = 'rolled back' WHERE id = 1")
                # Inside the transaction the cache is not used.
                self.assertEqual(conn.execute(sql).fetchone(), ("rolled back",))
                raise RuntimeError("roll back")
        before = self.calls(f"FROM {table} WHERE id")
        self.assertEqual(before, 2, "the first read, and the one in the transaction")
        self.assertEqual(conn.execute(sql).fetchone(), ("v1",))
        self.assertEqual(
            self.calls(f"FROM {table} WHERE id"),
            before,
            "still served from the cache after ROLLBACK",
        )
        with conn.transaction():
            conn.execute(f"UPDATE {table} SET v = 'committed' WHERE id = 1")
        self.assertEqual(conn.execute(sql).fetchone(), ("committed",))

    def test_statements_never_cached(self) -> None:
        table = self.make_table()
        conn = self.connect()
        conn.execute("CREATE TEMP TABLE scratch (x int)")
        conn.execute("INSERT INTO scratch VALUES (1)")
        for sql in [
            f"SELECT now() AS moment, v FROM {table} WHERE id = 1",
            f"SELECT random() AS dice, v FROM {table} WHERE id = 1",
            f"SELECT v, txid_current_if_assigned() FROM {table} WHERE id = 1",
            "SELECT x AS temp_read FROM scratch",
            f"SELECT v AS locked FROM {table} WHERE id = 1 FOR UPDATE",
        ]:
            fragment = sql.split(" FROM")[0][len("SELECT ") :]
            before = self.calls(fragment)
            conn.execute(sql)
            conn.execute(sql)
            self.assertEqual(self.calls(fragment) - before, 2, sql)

    def test_a_user_function_is_cached_only_if_immutable(self) -> None:
        table = self.make_table()
        name = unique("f")
        with self.superuser() as conn:
            conn.execute(
                f"CREATE FUNCTION {name}_imm(int) RETURNS int IMMUTABLE "
                "LANGUAGE sql AS 'SELECT $1 * 2'"
            )
            conn.execute(
                f"CREATE FUNCTION {name}_vol(int) RETURNS int VOLATILE "
                "LANGUAGE sql AS 'SELECT $1 * 3'"
            )
        wait_for_replay(self.cluster)
        conn = self.connect()
        for suffix, expected in (("imm", 1), ("vol", 3)):
            sql = f"SELECT {name}_{suffix}(id) FROM {table} WHERE id = 1"
            for _ in range(3):
                conn.execute(sql)
            self.assertEqual(self.calls(f"{name}_{suffix}(id)"), expected, suffix)

    def test_no_query_cache_comment(self) -> None:
        table = self.make_table()
        conn = self.connect()
        sql = f"/*NO QUERY CACHE*/ SELECT v AS uncached FROM {table} WHERE id = 1"
        for _ in range(3):
            conn.execute(sql)
        self.assertEqual(self.calls(f"FROM {table} WHERE id"), 3)

    def test_results_larger_than_maxcache_are_not_stored(self) -> None:
        table = self.make_table(rows=20000)
        conn = self.connect()
        sql = f"SELECT id, v AS big FROM {table}"
        for _ in range(2):
            self.assertEqual(len(conn.execute(sql).fetchall()), 20000)
        self.assertEqual(self.calls(f"FROM {table}"), 2)

    def test_set_search_path_separates_entries(self) -> None:
        name = unique("s")
        with self.superuser() as conn:
            for schema, value in (("a", "from a"), ("b", "from b")):
                conn.execute(f"CREATE SCHEMA {name}_{schema} AUTHORIZATION app")
                conn.execute(f"CREATE TABLE {name}_{schema}.t (v text)")
                conn.execute(f"INSERT INTO {name}_{schema}.t VALUES ('{value}')")
                conn.execute(f"GRANT ALL ON {name}_{schema}.t TO app")
        wait_for_replay(self.cluster)
        conn = self.connect()
        conn.execute(f"SET search_path = {name}_a")
        self.assertEqual(conn.execute("SELECT v FROM t").fetchone(), ("from a",))
        conn.execute(f"SET search_path = {name}_b")
        self.assertEqual(conn.execute("SELECT v FROM t").fetchone(), ("from b",))
        other = self.connect(options=f"-c search_path={name}_a")
        self.assertEqual(other.execute("SELECT v FROM t").fetchone(), ("from a",))

    def test_show_pool_cache_columns(self) -> None:
        conn = self.connect()
        cur = conn.execute("SHOW POOL_CACHE")
        self.assertEqual(
            [d.name for d in cur.description],
            [
                "num_cache_hits",
                "num_selects",
                "cache_hit_ratio",
                "num_hash_entries",
                "used_hash_entries",
                "num_cache_entries",
                "used_cache_entries_size",
                "free_cache_entries_size",
                "fragment_cache_entries_size",
            ],
        )
        self.assertEqual(len(cur.fetchall()), 1)

    def test_pgpool_set_cache_delete_makes_the_next_run_read_the_server(self) -> None:
        table = self.make_table()
        conn = self.connect()
        sql = f"SELECT v AS delete_probe FROM {table} WHERE v = 'v1'"
        fragment = f"FROM {table} WHERE v"
        for _ in range(2):
            self.assertEqual(conn.execute(sql).fetchone(), ("v1",))
        self.assertEqual(self.calls(fragment), 1)
        self.assertEqual(self.cache_delete(conn, sql), [f'query cache deleted. query: "{sql}"'])
        self.assertEqual(conn.execute(sql).fetchone(), ("v1",))
        self.assertEqual(self.calls(fragment), 2, "the entry was deleted")
        self.assertEqual(conn.execute(sql).fetchone(), ("v1",))
        self.assertEqual(self.calls(fragment), 2, "and cached again")

    def test_pgpool_set_cache_delete_of_a_query_not_cached(self) -> None:
        table = self.make_table()
        conn = self.connect()
        sql = f"SELECT v FROM {table} WHERE id = 3"
        conn.execute(sql)
        # The text must be exactly the cached one: a trailing ';' differs.
        self.assertEqual(
            self.cache_delete(conn, sql + ";"), [f'query cache does not exist for query: "{sql};"']
        )
        self.assertEqual(self.cache_delete(conn, sql), [f'query cache deleted. query: "{sql}"'])
        self.assertEqual(
            self.cache_delete(conn, sql), [f'query cache does not exist for query: "{sql}"']
        )

    def test_pgpool_set_cache_delete_with_psql(self) -> None:
        table = self.make_table()
        sql = f"SELECT v AS psql_probe FROM {table} WHERE id = 2;"
        # psql sends each statement with its ';'.
        script = "\n".join([sql, sql, f"pgpool set cache delete '{sql}';", sql, ""])
        result = run_psql(self.proxy, "-v", "ON_ERROR_STOP=1", input=script)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines(), ["v2", "v2", "SET", "v2"])
        self.assertIn(f'NOTICE:  query cache deleted. query: "{sql}"', result.stderr)
        self.assertEqual(self.calls(f"FROM {table} WHERE id"), 2)


class CacheOffTests(CacheTestCase):
    settings: Dict[str, Any] = {}

    def test_pgpool_set_cache_delete_says_does_not_exist(self) -> None:
        # As Pgpool-II: a notice, not an error, and nothing reaches a server.
        conn = self.connect()
        sql = "SELECT 'cache off probe'"
        self.assertEqual(
            self.cache_delete(conn, sql), [f'query cache does not exist for query: "{sql}"']
        )
        self.assertEqual(self.calls("cache off probe"), 0)
        self.assertEqual(conn.execute("SELECT 1").fetchone(), (1,))


class MemcachedCacheTests(CacheTestCase):
    """
    Two proxies sharing one memcached.
    """

    def setUp(self) -> None:
        self.memcached = shared_memcached()
        self.settings = {
            "memory_cache_enabled": True,
            "memqcache_method": "memcached",
            "memqcache_memcached_host": "127.0.0.1",
            "memqcache_memcached_port": self.memcached.port,
        }
        super().setUp()
        second = getattr(type(self), "_second", None)
        if second is None:
            second = start_proxy(self.cluster, self.weights, dict(self.settings))
            atexit.register(second.stop)
            type(self)._second = second  # type: ignore[attr-defined]
        self.second = second

    def connect_second(self) -> "psycopg.Connection":
        conn = psycopg.connect(self.second.dsn(connect_timeout=5), autocommit=True)
        self.addCleanup(conn.close)
        return conn

    def test_a_write_through_one_proxy_invalidates_the_other(self) -> None:
        table = self.make_table()
        a, b = self.connect(), self.connect_second()
        sql = f"SELECT v FROM {table} WHERE id = 1"
        # A table's first miss creates its counter in memcached; the next
        # miss is stored.
        for _ in range(2):
            self.assertEqual(b.execute(sql).fetchone(), ("v1",))
        before = self.calls(f"FROM {table} WHERE id")
        self.assertEqual(b.execute(sql).fetchone(), ("v1",))
        self.assertEqual(a.execute(sql).fetchone(), ("v1",))
        self.assertEqual(
            self.calls(f"FROM {table} WHERE id"),
            before,
            "the second proxy's read and the first's come from memcached",
        )
        a.execute(f"UPDATE {table} SET v = 'via a' WHERE id = 1")
        self.assertEqual(b.execute(sql).fetchone(), ("via a",))

    def test_memcached_going_away_is_not_the_clients_problem(self) -> None:
        table = self.make_table()
        conn = self.connect()
        sql = f"SELECT v AS outage FROM {table} WHERE id = 2"
        conn.execute(sql)
        self.memcached.stop()
        try:
            for _ in range(3):
                self.assertEqual(conn.execute(sql).fetchone(), ("v2",))
            wait_for(
                lambda: (
                    "memcached" in self.proxy.log_text().lower()
                    and "warn" in self.proxy.log_text().lower()
                ),
                timeout=5,
                what="a warning about memcached in the log",
            )
        finally:
            self.memcached.start()

        # Back: the proxy reconnects, and caching resumes.
        def cached_again() -> bool:
            before = self.calls(f"FROM {table} WHERE id")
            for _ in range(3):
                conn.execute(sql)
            return self.calls(f"FROM {table} WHERE id") - before <= 2

        wait_for(cached_again, timeout=20, what="caching to resume", interval=0.5)

    def test_pgpool_set_cache_delete_through_one_proxy_deletes_for_both(self) -> None:
        table = self.make_table()
        a, b = self.connect(), self.connect_second()
        sql = f"SELECT v AS memcached_delete FROM {table} WHERE id = 3"
        fragment = f"FROM {table} WHERE id"
        # The first miss creates the table's counter, the second is stored.
        for _ in range(3):
            self.assertEqual(a.execute(sql).fetchone(), ("v3",))
        self.assertEqual(self.calls(fragment), 2)

        def b_uses_memcached() -> bool:
            # The second proxy may have just started, or be reconnecting
            # after the outage test: until it is connected its reads miss.
            # The probe reads no table, so it needs no catalog lookup.
            before = int(self.cache_stats(b)["num_cache_hits"])
            b.execute("SELECT 'second proxy probe'")
            return int(self.cache_stats(b)["num_cache_hits"]) > before

        wait_for(b_uses_memcached, timeout=20, what="the second proxy's memcached", interval=0.1)
        before = self.calls(fragment)
        self.assertEqual(b.execute(sql).fetchone(), ("v3",))
        self.assertEqual(self.calls(fragment), before, "a hit through the second proxy")
        calls = self.calls(fragment)
        self.assertEqual(self.cache_delete(b, sql), [f'query cache deleted. query: "{sql}"'])
        self.assertEqual(a.execute(sql).fetchone(), ("v3",))
        self.assertEqual(
            self.calls(fragment), calls + 1, "the entry is gone for the first proxy too"
        )
        self.assertEqual(a.execute(sql).fetchone(), ("v3",))
        self.assertEqual(self.calls(fragment), calls + 1, "and stored again")
        other = sql.replace("id = 3", "id = 2")
        self.assertEqual(
            self.cache_delete(b, other), [f'query cache does not exist for query: "{other}"']
        )
