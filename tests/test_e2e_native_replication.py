"""
Native replication mode end to end: two independent PostgreSQL primaries
holding the same data (L{LocalCluster} with C{independent_nodes}), the
proxy as a child process in C{backend_clustering_mode: native_replication},
and real clients (psql for writes, psycopg for reads and checks).

Each node is read directly (as the superuser) to check what the proxy did
there; which node answered a read through the proxy is read from
C{inet_server_port()}.
"""

from __future__ import annotations

import atexit
import time
from typing import Any, Dict, List, Optional

from twisted.trial.unittest import SkipTest, TestCase

from tests.support import ProxyProcess, libpq_dsn, postgres_or_skip, run_psql, unique
from twisted_pgpool.testing.localcluster import LocalCluster

try:
    import psycopg
except ImportError:  # pragma: no cover - e.g. PyPy
    psycopg = None  # type: ignore[assignment]

_cluster: Optional[LocalCluster] = None
_proxies: Dict[str, ProxyProcess] = {}


def native_cluster() -> LocalCluster:
    """
    This process's two independent primaries, started on first use.
    """
    global _cluster
    if psycopg is None:
        raise SkipTest("psycopg is not installed")
    postgres_or_skip()
    if _cluster is None:
        cluster = LocalCluster(with_standby=False, independent_nodes=True)
        cluster.start()
        atexit.register(cluster.stop)
        _cluster = cluster
    return _cluster


def native_proxy(name: str = "default", **settings: Any) -> ProxyProcess:
    """
    A proxy in native replication mode over L{native_cluster}, one per
    C{name}, started on first use.
    """
    proxy = _proxies.get(name)
    if proxy is None:
        cluster = native_cluster()
        config: Dict[str, Any] = {
            "backends": cluster.backends_config(),
            "backend_clustering_mode": "native_replication",
            "pool_passwd": "pool_passwd",
            "health_check_period": 0,
        }
        config.update(settings)
        proxy = ProxyProcess(config, extra_files={"pool_passwd": "app:TEXTapp\n"})
        proxy.start()
        atexit.register(proxy.stop)
        _proxies[name] = proxy
    return proxy


def on_node(index: int, sql: str) -> List[tuple]:
    """
    Run C{sql} on node C{index} directly, as the superuser, in the app
    database; its rows.
    """
    node = native_cluster().nodes[index]
    with psycopg.connect(
        libpq_dsn(host=node.host, port=node.port, user="postgres", dbname="app", connect_timeout=5),
        autocommit=True,
    ) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


def psql(proxy: ProxyProcess, sql: str):
    return run_psql(proxy, "-v", "ON_ERROR_STOP=1", "-c", sql)


def proxy_dsn(proxy: ProxyProcess) -> str:
    return libpq_dsn(
        host=proxy.host,
        port=proxy.port,
        user="app",
        password="app",
        dbname="app",
        connect_timeout=5,
    )


class WriteTests(TestCase):
    def test_create_and_insert_reach_every_node(self) -> None:
        proxy = native_proxy()
        table = unique("native_t")
        result = psql(proxy, f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = psql(proxy, f"INSERT INTO {table} VALUES (1, 'one'), (2, 'two')")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "INSERT 0 2")
        for index in (0, 1):
            self.assertEqual(
                on_node(index, f"SELECT id, v FROM {table} ORDER BY id"),
                [(1, "one"), (2, "two")],
                f"node {index}",
            )

    def test_transaction_commits_on_every_node(self) -> None:
        proxy = native_proxy()
        table = unique("native_tx")
        psql(proxy, f"CREATE TABLE {table} (id int)")
        result = run_psql(
            proxy,
            "-v",
            "ON_ERROR_STOP=1",
            input=(
                f"BEGIN;\nINSERT INTO {table} VALUES (1);\nUPDATE {table} SET id = 2;\nCOMMIT;\n"
            ),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        for index in (0, 1):
            self.assertEqual(on_node(index, f"SELECT id FROM {table}"), [(2,)])

    def test_rolled_back_transaction_leaves_no_node_changed(self) -> None:
        proxy = native_proxy()
        table = unique("native_rb")
        psql(proxy, f"CREATE TABLE {table} (id int)")
        result = run_psql(
            proxy,
            "-v",
            "ON_ERROR_STOP=1",
            input=(f"BEGIN;\nINSERT INTO {table} VALUES (1);\nROLLBACK;\n"),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        for index in (0, 1):
            self.assertEqual(on_node(index, f"SELECT count(*) FROM {table}"), [(0,)])

    def test_write_failing_on_one_node_is_applied_nowhere(self) -> None:
        """
        A table that exists on node 0 only: the INSERT succeeds there and
        fails on node 1.  The client gets an error, and node 0 keeps no
        row (the proxy's own transaction around the INSERT is rolled back
        on both nodes).
        """
        proxy = native_proxy()
        table = unique("native_only0")
        on_node(0, f"CREATE TABLE public.{table} (id int); GRANT ALL ON public.{table} TO app")
        result = psql(proxy, f"INSERT INTO {table} VALUES (1)")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("replication mismatch", result.stderr)
        self.assertIn("rolled back on every node", result.stderr)
        self.assertIn("node 1: ERROR 42P01", result.stderr)
        self.assertEqual(on_node(0, f"SELECT count(*) FROM {table}"), [(0,)])
        # The session goes on: the next statement works.
        self.assertEqual(psql(proxy, "SELECT 1").stdout.strip(), "1")

    def test_write_failing_on_every_node_gets_the_servers_error(self) -> None:
        proxy = native_proxy()
        table = unique("native_dup")
        psql(proxy, f"CREATE TABLE {table} (id int PRIMARY KEY)")
        psql(proxy, f"INSERT INTO {table} VALUES (1)")
        result = psql(proxy, f"INSERT INTO {table} VALUES (1)")
        self.assertIn("duplicate key value violates unique constraint", result.stderr)
        self.assertNotIn("replication mismatch", result.stderr)
        with psycopg.connect(proxy_dsn(proxy), autocommit=True) as conn:
            with self.assertRaises(psycopg.errors.UniqueViolation):
                conn.execute(f"INSERT INTO {table} VALUES (%s)", (1,))
            # No transaction of the proxy's is left open.
            self.assertEqual(conn.info.transaction_status.name, "IDLE")
        for index in (0, 1):
            self.assertEqual(on_node(index, f"SELECT count(*) FROM {table}"), [(1,)])

    def test_mismatch_inside_a_transaction_aborts_it_everywhere(self) -> None:
        proxy = native_proxy()
        table = unique("native_only0tx")
        on_node(0, f"CREATE TABLE public.{table} (id int); GRANT ALL ON public.{table} TO app")
        result = run_psql(proxy, input=(f"BEGIN;\nINSERT INTO {table} VALUES (1);\nCOMMIT;\n"))
        self.assertIn("replication mismatch", result.stderr)
        self.assertIn("transaction is aborted on every node", result.stderr)
        # COMMIT of a failed transaction is a ROLLBACK everywhere.
        self.assertIn("ROLLBACK", result.stdout)
        self.assertEqual(on_node(0, f"SELECT count(*) FROM {table}"), [(0,)])

    def test_extended_protocol_write_reaches_every_node(self) -> None:
        proxy = native_proxy()
        table = unique("native_ext")
        psql(proxy, f"CREATE TABLE {table} (id int, v text)")
        with psycopg.connect(proxy_dsn(proxy), autocommit=True) as conn:
            cursor = conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, "a"))
            self.assertEqual(cursor.statusmessage, "INSERT 0 1")
            # Prepared (a named statement) after a few executions.
            for i in range(2, 8):
                conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (i, "b"))
        with psycopg.connect(proxy_dsn(proxy)) as conn:
            conn.execute(f"UPDATE {table} SET v = %s WHERE id = %s", ("c", 1))
            conn.commit()
        for index in (0, 1):
            self.assertEqual(
                on_node(index, f"SELECT count(*), min(v), max(v) FROM {table}"),
                [(7, "b", "c")],
                f"node {index}",
            )

    def test_extended_protocol_write_failing_on_one_node_is_applied_nowhere(self) -> None:
        proxy = native_proxy()
        table = unique("native_ext_only0")
        on_node(0, f"CREATE TABLE public.{table} (id int); GRANT ALL ON public.{table} TO app")
        with psycopg.connect(proxy_dsn(proxy), autocommit=True) as conn:
            with self.assertRaises(psycopg.errors.InternalError_) as caught:
                conn.execute(f"INSERT INTO {table} VALUES (%s)", (1,))
            self.assertIn("rolled back on every node", str(caught.exception))
            self.assertEqual(conn.execute("SELECT 1").fetchone(), (1,))
        self.assertEqual(on_node(0, f"SELECT count(*) FROM {table}"), [(0,)])

    def test_pipelined_write_is_refused_and_sent_nowhere(self) -> None:
        """
        A write in a batch the client flushes before its Sync (psycopg's
        pipeline mode) is not replicated: refused with 0A000.
        """
        proxy = native_proxy()
        table = unique("native_pipe")
        psql(proxy, f"CREATE TABLE {table} (id int)")
        with psycopg.connect(proxy_dsn(proxy), autocommit=True) as conn:
            with self.assertRaises(psycopg.errors.FeatureNotSupported):
                with conn.pipeline():
                    conn.execute(f"INSERT INTO {table} VALUES (%s)", (1,))
                    conn.execute("SELECT 1").fetchone()
            self.assertEqual(conn.execute("SELECT 1").fetchone(), (1,))
        for index in (0, 1):
            self.assertEqual(on_node(index, f"SELECT count(*) FROM {table}"), [(0,)])


class ReadTests(TestCase):
    def test_reads_are_spread_over_both_nodes(self) -> None:
        proxy = native_proxy()
        ports = set()
        for _ in range(30):
            with psycopg.connect(proxy_dsn(proxy), autocommit=True) as conn:
                ports.add(conn.execute("SELECT inet_server_port()").fetchone()[0])
            if len(ports) == 2:
                break
        self.assertEqual(ports, {node.port for node in native_cluster().nodes})

    def test_read_after_write_in_a_transaction_goes_to_the_main_node(self) -> None:
        proxy = native_proxy()
        table = unique("native_raw")
        psql(proxy, f"CREATE TABLE {table} (id int)")
        main_port = native_cluster().nodes[0].port
        script = (
            "BEGIN;\n"
            f"INSERT INTO {table} VALUES (1);\n"
            "SELECT inet_server_port();\n"
            "SELECT inet_server_port();\n"
            "COMMIT;\n"
        )
        for _ in range(5):
            result = run_psql(proxy, "-v", "ON_ERROR_STOP=1", input=script)
            self.assertEqual(result.returncode, 0, result.stderr)
            ports = [line for line in result.stdout.split("\n") if line.strip().isdigit()]
            self.assertEqual(ports, [str(main_port)] * 2, result.stdout)

    def test_show_pool_nodes_shows_main_and_replica(self) -> None:
        proxy = native_proxy()
        with psycopg.connect(proxy_dsn(proxy), autocommit=True) as conn:
            cursor = conn.execute("SHOW POOL_NODES", prepare=False)
            columns = [d.name for d in cursor.description]
            rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
        self.assertEqual(
            [(r["node_id"], r["role"], r["pg_role"]) for r in rows],
            [("0", "main", "main"), ("1", "replica", "replica")],
        )


class StopOnMismatchTests(TestCase):
    def test_minority_node_is_detached_and_the_majority_goes_on(self) -> None:
        """
        With C{replication_stop_on_mismatch}, a write failing on node 1
        only (a tie: the main node's group wins) detaches node 1 and is
        committed on node 0; the client gets node 0's reply.
        """
        proxy = native_proxy("stop", replication_stop_on_mismatch=True)
        table = unique("native_stop")
        on_node(0, f"CREATE TABLE public.{table} (id int); GRANT ALL ON public.{table} TO app")
        result = psql(proxy, f"INSERT INTO {table} VALUES (1)")
        self.assertEqual(
            (result.returncode, result.stdout.strip()), (0, "INSERT 0 1"), result.stderr
        )
        self.assertEqual(on_node(0, f"SELECT count(*) FROM {table}"), [(1,)])
        # The failover manager detaches the node asynchronously.
        deadline = time.monotonic() + 10
        while True:
            with psycopg.connect(proxy_dsn(proxy), autocommit=True) as conn:
                rows = conn.execute("SHOW POOL_NODES", prepare=False).fetchall()
            if rows[1][3] == "down" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(
            [(row[0], row[3], row[6]) for row in rows],
            [("0", "up", "main"), ("1", "down", "replica")],
        )
        # Writes go on, to node 0 only now.
        result = psql(proxy, f"INSERT INTO {table} VALUES (2)")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(on_node(0, f"SELECT count(*) FROM {table}"), [(2,)])


class AsyncpgTests(TestCase):
    def test_prepared_writes_reach_every_node(self) -> None:
        """
        asyncpg prepares a statement in a batch it flushes (Parse,
        Describe, Flush), then binds and executes it (Bind, Execute, Sync):
        the flushed part is ended on the main node, and the write is
        replicated with the statement prepared again on the other node.
        """
        try:
            import asyncio

            import asyncpg
        except ImportError:
            raise SkipTest("asyncpg is not installed")
        proxy = native_proxy()
        table = unique("native_apg")
        psql(proxy, f"CREATE TABLE {table} (id int)")

        async def scenario() -> None:
            conn = await asyncpg.connect(
                host=proxy.host, port=proxy.port, user="app", password="app", database="app"
            )
            try:
                for i in range(3):
                    await conn.execute(f"INSERT INTO {table} VALUES ($1)", i)
                async with conn.transaction():
                    await conn.execute(f"UPDATE {table} SET id = id + $1", 10)
                    self.assertEqual(await conn.fetchval(f"SELECT sum(id) FROM {table}"), 33)
            finally:
                await conn.close()

        asyncio.run(asyncio.wait_for(scenario(), 60))
        for index in (0, 1):
            self.assertEqual(
                on_node(index, f"SELECT count(*), sum(id) FROM {table}"), [(3, 33)], f"node {index}"
            )


class RefusedTests(TestCase):
    def test_copy_from_stdin_is_refused_and_reaches_no_node(self) -> None:
        proxy = native_proxy()
        table = unique("native_copy")
        psql(proxy, f"CREATE TABLE {table} (id int)")
        result = run_psql(proxy, "-c", f"COPY {table} FROM STDIN", input="1\n2\n\\.\n")
        self.assertIn("COPY FROM STDIN is not supported in native replication mode", result.stderr)
        for index in (0, 1):
            self.assertEqual(on_node(index, f"SELECT count(*) FROM {table}"), [(0,)])


class ReplicateSelectTests(TestCase):
    def test_reads_run_on_every_node_and_the_main_node_answers(self) -> None:
        proxy = native_proxy("replicate_select", replicate_select=True)
        main_port = native_cluster().nodes[0].port
        # A table of its own: pg_stat_statements keeps the text of a
        # query's first run, and its relation makes this one unique.
        table = unique("replicated_read")
        psql(proxy, f"CREATE TABLE {table} (id int)")
        for _ in range(5):
            with psycopg.connect(proxy_dsn(proxy), autocommit=True) as conn:
                self.assertEqual(
                    conn.execute(
                        f"SELECT inet_server_port() FROM {table} "
                        "UNION ALL SELECT inet_server_port()"
                    ).fetchall(),
                    [(main_port,)],
                )
        for index in (0, 1):
            [(calls,)] = on_node(
                index,
                "SELECT coalesce(sum(calls), 0) FROM "
                "pg_stat_statements WHERE query LIKE "
                f"'%FROM {table} UNION%'",
            )
            self.assertEqual(calls, 5, f"node {index}")
