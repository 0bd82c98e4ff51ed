"""
C{SHOW POOL_BACKEND_STATS} and C{pg_status} end to end: the proxy as a
child process in front of the shared PostgreSQL primary and standby,
statements from psql (simple protocol) and psycopg (extended protocol with
parameters), counts read with psql and from the metrics endpoint.

Each proxy here is this module's own, so its counters move only with
these tests; each test compares before and after.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Dict, List

from twisted.trial.unittest import TestCase

from tests.promparse import parse, value
from tests.support import LazyProxy, ProxyProcess, free_port, run_psql, show, show_pool_nodes
from tests.test_e2e_metrics import fetch
from twisted_pgpool.testing.localcluster import LocalCluster

try:
    import psycopg
except ImportError:  # pragma: no cover - e.g. PyPy
    psycopg = None  # type: ignore[assignment]

COUNTED = (
    "select_cnt",
    "insert_cnt",
    "update_cnt",
    "delete_cnt",
    "ddl_cnt",
    "other_cnt",
    "panic_cnt",
    "fatal_cnt",
    "error_cnt",
)
#: Seconds a test waits for the first health checks.
HEALTH_CHECK_WAIT = 15.0


def stats_proxy(settings: Dict[str, Any]) -> LazyProxy:
    def make(cluster: LocalCluster) -> ProxyProcess:
        config: Dict[str, Any] = {
            "backends": cluster.backends_config(),
            "pool_passwd": "pool_passwd",
            "metrics_listen_addresses": "127.0.0.1",
            "metrics_port": free_port(),
            "health_check_period": 1,
            "health_check_user": "postgres",
        }
        config.update(settings)
        return ProxyProcess(config, extra_files={"pool_passwd": "app:TEXTapp\n"})

    return LazyProxy(make)


#: Load balancing off: everything goes to the primary, unrouted.
UNBALANCED = stats_proxy({"load_balance_mode": False})
#: Load balancing on, reads to the standby only, and the query cache.
BALANCED_CACHED = stats_proxy({"load_balance_mode": True, "memory_cache_enabled": True})


def backend_stats(proxy: ProxyProcess) -> List[Dict[str, str]]:
    """
    C{SHOW POOL_BACKEND_STATS} with psql: one dict per node, by column.
    """
    return show(proxy, "POOL_BACKEND_STATS")


def counts(proxy: ProxyProcess) -> Dict[str, Dict[str, int]]:
    """
    The counted columns by role.
    """
    return {row["role"]: {c: int(row[c]) for c in COUNTED} for row in backend_stats(proxy)}


def delta(
    before: Dict[str, Dict[str, int]], after: Dict[str, Dict[str, int]]
) -> Dict[str, Dict[str, int]]:
    """
    What changed, by role, leaving out the columns that did not.
    """
    return {
        role: {
            c: after[role][c] - before[role][c]
            for c in COUNTED
            if after[role][c] != before[role][c]
        }
        for role in after
    }


def table_name() -> str:
    return "backend_stats_" + uuid.uuid4().hex[:10]


class UnbalancedTests(TestCase):
    def proxy(self) -> ProxyProcess:
        return UNBALANCED.get()

    def drop(self, proxy: ProxyProcess, table: str) -> None:
        run_psql(proxy, "-c", f"DROP TABLE IF EXISTS {table}")

    def test_the_columns_are_pgpools(self) -> None:
        result = run_psql(self.proxy(), "-c", "SHOW POOL_BACKEND_STATS", tuples_only=False)
        self.assertEqual(
            result.stdout.splitlines()[0].split("|"),
            [
                "node_id",
                "hostname",
                "port",
                "status",
                "role",
                "select_cnt",
                "insert_cnt",
                "update_cnt",
                "delete_cnt",
                "ddl_cnt",
                "other_cnt",
                "panic_cnt",
                "fatal_cnt",
                "error_cnt",
            ],
        )

    def test_a_known_mix_in_the_simple_protocol_counts_exactly_on_the_primary(self) -> None:
        proxy = self.proxy()
        table = table_name()
        self.addCleanup(self.drop, proxy, table)
        before = counts(proxy)
        script = "\n".join(
            [
                f"CREATE TABLE {table} (a int);",
                f"INSERT INTO {table} VALUES (1);",
                f"UPDATE {table} SET a = 2;",
                f"SELECT * FROM {table};",
                "SELECT 1;",
                "SET application_name = 'backend_stats';",
                f"DELETE FROM {table};",
                "SELECT * FROM no_such_table_here;",
            ]
        )
        result = run_psql(proxy, input=script)
        self.assertIn("no_such_table_here", result.stderr)
        after = counts(proxy)
        self.assertEqual(
            delta(before, after),
            {
                "primary": {
                    "select_cnt": 3,
                    "insert_cnt": 1,
                    "update_cnt": 1,
                    "delete_cnt": 1,
                    "ddl_cnt": 1,
                    "other_cnt": 1,
                    "error_cnt": 1,
                },
                "standby": {},
            },
        )

    def test_select_cnt_agrees_with_show_pool_nodes(self) -> None:
        proxy = self.proxy()
        run_psql(proxy, "-c", "SELECT 1")
        nodes = {r["role"]: r["select_cnt"] for r in show_pool_nodes(proxy)}
        stats = {r["role"]: r["select_cnt"] for r in backend_stats(proxy)}
        self.assertEqual(nodes, stats)
        self.assertGreaterEqual(int(stats["primary"]), 1)

    def test_the_extended_protocol_counts_each_execute(self) -> None:
        if psycopg is None:
            self.skipTest("psycopg is not installed")
        proxy = self.proxy()
        table = table_name()
        self.addCleanup(self.drop, proxy, table)
        run_psql(proxy, "-c", f"CREATE TABLE {table} (a int)")
        before = counts(proxy)
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            for n in range(2):
                conn.execute(f"INSERT INTO {table} VALUES (%s)", (n,))
            # Past psycopg's prepare_threshold (5): later runs are a Bind
            # and an Execute of a named statement.
            for n in range(7):
                conn.execute(f"SELECT a FROM {table} WHERE a = %s", (n,)).fetchall()
            conn.execute(f"UPDATE {table} SET a = %s WHERE a = %s", (5, 0))
            with self.assertRaises(psycopg.errors.UndefinedTable):
                conn.execute("SELECT * FROM no_such_table_here WHERE a = %s", (1,))
        after = counts(proxy)
        self.assertEqual(
            delta(before, after),
            {
                # The failing SELECT counts too, as in Pgpool-II.
                "primary": {"insert_cnt": 2, "select_cnt": 8, "update_cnt": 1, "error_cnt": 1},
                "standby": {},
            },
        )

    def test_pg_status_is_up_once_health_checked(self) -> None:
        proxy = self.proxy()
        deadline = time.monotonic() + HEALTH_CHECK_WAIT
        while True:
            shown = [r["pg_status"] for r in show_pool_nodes(proxy)]
            if shown == ["up", "up"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(shown, ["up", "up"])

    def test_metrics_are_what_show_pool_backend_stats_says(self) -> None:
        proxy = self.proxy()
        run_psql(proxy, "-c", "SELECT 1")
        shown = backend_stats(proxy)
        code, _, body = fetch(proxy)
        self.assertEqual(code, 200)
        families = parse(body)
        for row in shown:
            labels = {"hostname": row["hostname"], "port": row["port"], "role": row["role"]}
            for column in COUNTED:
                name = "pgpool2_pool_backend_stats_" + column
                self.assertEqual(
                    (families[name].type, value(families, name, **labels)),
                    ("counter", float(row[column])),
                    (name, labels),
                )


class BalancedCachedTests(TestCase):
    """
    Load balancing on and the query cache: reads count where they ran,
    and an answer from the cache counts nowhere.
    """

    def proxy(self) -> ProxyProcess:
        return BALANCED_CACHED.get()

    def test_a_cached_answer_is_not_counted(self) -> None:
        if psycopg is None:
            self.skipTest("psycopg is not installed")
        proxy = self.proxy()
        marker = uuid.uuid4().hex
        sql = f"SELECT '{marker}' AS marker"
        before, hits = counts(proxy), self.cache_hits(proxy)
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            first = conn.execute(sql, prepare=False).fetchall()
            second = conn.execute(sql, prepare=False).fetchall()
        after = counts(proxy)
        self.assertEqual((first, self.cache_hits(proxy) - hits), (second, 1))
        changed = delta(before, after)
        self.assertEqual(sum(c.get("select_cnt", 0) for c in changed.values()), 1, changed)
        self.assertEqual(sorted(column for c in changed.values() for column in c), ["select_cnt"])

    def cache_hits(self, proxy: ProxyProcess) -> int:
        result = run_psql(proxy, "-c", "SHOW POOL_CACHE", tuples_only=False)
        header, row = result.stdout.splitlines()[:2]
        return int(dict(zip(header.split("|"), row.split("|")))["num_cache_hits"])

    def test_a_read_counts_on_the_node_that_ran_it(self) -> None:
        if psycopg is None:
            self.skipTest("psycopg is not installed")
        proxy = self.proxy()
        ports = {r["port"]: r["role"] for r in backend_stats(proxy)}
        before = counts(proxy)
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            # now() is not IMMUTABLE: never cached, so balanced.
            port, _ = conn.execute("SELECT inet_server_port(), now()").fetchone()
        after = counts(proxy)
        self.assertEqual(
            delta(before, after),
            {role: ({"select_cnt": 1} if role == ports[str(port)] else {}) for role in after},
        )
