"""
End-to-end: the proxy (a real C{twistd pgpool}) while no primary is usable,
against real PostgreSQL servers, with psql, psycopg and asyncpg.

As in Pgpool-II, a client logging in while the primary is down (stopped,
detached by a failover that found no new primary) gets a session served by
a standby: reads and the proxy's own statements (C{SHOW POOL_NODES}...)
are answered, and a write gets C{25006} (here from the proxy, which sends
it to no node; Pgpool-II's standby says the same).  Once a primary is back
(attached again, or a standby promoted), new sessions use it.  With no
node at all, a client the proxy authenticates itself gets a session that
answers only the proxy's own statements; any other client is refused with
Pgpool-II's C{pgpool is not accepting any new connections}.

Every class that stops or promotes a server builds its own
L{LocalCluster}.
"""

from __future__ import annotations

import atexit
from typing import Any, Dict, List, Optional, Tuple

from twisted.trial.unittest import SkipTest, TestCase

from tests.support import (
    ProxyProcess,
    direct_dsn,
    free_port,
    login_refusal,
    pcp_admin,
    pcp_conf_line,
    postgres_or_skip,
    run_psql,
)
from twisted_pgpool.testing.localcluster import MD5_PASSWORD, MD5_USER, LocalCluster
from twisted_pgpool.testing.waiting import wait_until

try:
    import psycopg
except ImportError:  # pragma: no cover - e.g. PyPy, where psycopg has no build
    psycopg = None  # type: ignore[assignment]

try:
    import asyncpg
except ImportError:  # pragma: no cover
    asyncpg = None  # type: ignore[assignment]

#: How long the detection of a stopped primary may take: a health check
#: every second, no retry, then a primary search of 2 s.
DETECTION_TIMEOUT = 30.0


def requirements_or_skip() -> None:
    if psycopg is None:
        raise SkipTest("psycopg is not installed")
    postgres_or_skip()


def proxy_for(cluster_backends: List[Dict[str, Any]], **settings: Any) -> ProxyProcess:
    """
    A proxy over C{cluster_backends} that notices a dead node within a
    second (health check), searches 2 s for a new primary, asks the nodes
    which is the primary every second, and takes PCP commands; user C{app}
    has a TEXT pool_passwd entry (the proxy authenticates it), every other
    user is authenticated by the servers.
    """
    config: Dict[str, Any] = {
        "backends": cluster_backends,
        "pool_passwd": "pool_passwd",
        "health_check_period": 1,
        "health_check_max_retries": 0,
        "health_check_user": "postgres",
        "sr_check_period": 1,
        "sr_check_user": "postgres",
        "search_primary_node_timeout": 2,
        "primary_wait_timeout": 1,
        "pcp_listen_addresses": "127.0.0.1",
        "pcp_port": free_port(),
        "pcp_conf_file": "pcp.conf",
    }
    config.update(settings)
    return ProxyProcess(
        config, extra_files={"pool_passwd": "app:TEXTapp\n", "pcp.conf": pcp_conf_line()}
    )


def dsn(proxy: ProxyProcess, **params: Any) -> str:
    return proxy.dsn(connect_timeout=10, sslmode="disable", **params)


def pool_nodes(proxy: ProxyProcess) -> List[Dict[str, str]]:
    """
    C{SHOW POOL_NODES} through the proxy, one mapping per node.
    """
    with psycopg.connect(dsn(proxy), autocommit=True) as conn:
        cursor = conn.execute("SHOW POOL_NODES")
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def node_is(proxy: ProxyProcess, node_id: int, **expected: str) -> bool:
    row = pool_nodes(proxy)[node_id]
    return all(row[key] == value for key, value in expected.items())


def start_cluster(test: TestCase) -> LocalCluster:
    cluster = LocalCluster()
    cluster.start()
    test.addCleanup(cluster.stop)
    cluster.psql(
        cluster.primary,
        "CREATE TABLE np_items (n int); INSERT INTO np_items VALUES (1), (2), (3); "
        "GRANT SELECT, INSERT ON np_items TO app",
        database="app",
    )
    return cluster


def wait_for_replay(cluster: LocalCluster) -> None:
    """
    The standby has replayed the table the cluster was set up with.
    """

    def visible() -> bool:
        try:
            with psycopg.connect(direct_dsn(cluster.standby), autocommit=True) as conn:
                return conn.execute("SELECT count(*) FROM np_items").fetchone() == (3,)
        except psycopg.Error:
            return False

    assert wait_until(visible, 30), "the standby did not replay np_items"


def stop_primary_and_wait(cluster: LocalCluster, proxy: ProxyProcess) -> None:
    cluster.stop_node(cluster.primary)
    assert wait_until(lambda: node_is(proxy, 0, status="down"), DETECTION_TIMEOUT), proxy.log_text()
    # The failover's primary search has given up: no node is the primary.
    assert wait_until(lambda: "failover done" in proxy.log_text(), DETECTION_TIMEOUT), (
        proxy.log_text()
    )


class _StoppedPrimary:
    """
    One cluster whose primary has stopped (and was detached), and the proxy
    over it, shared by the tests of L{StandbyServesTests}: made on first
    use, stopped when the test process exits.  The tests only read from it
    or are refused.
    """

    def __init__(self) -> None:
        self.cluster: Optional[LocalCluster] = None
        self.proxy: Optional[ProxyProcess] = None
        self.failure: Optional[str] = None

    def get(self) -> Tuple[LocalCluster, ProxyProcess]:
        if self.failure is not None:
            raise AssertionError(f"setting up failed earlier: {self.failure}")
        if self.cluster is None or self.proxy is None:
            try:
                self._make()
            except BaseException as e:
                self.failure = str(e)
                raise
        assert self.cluster is not None and self.proxy is not None
        return self.cluster, self.proxy

    def _make(self) -> None:
        cluster = LocalCluster()
        cluster.start()
        atexit.register(cluster.stop)
        self.cluster = cluster
        cluster.psql(
            cluster.primary,
            "CREATE TABLE np_items (n int); "
            "INSERT INTO np_items VALUES (1), (2), (3); "
            "GRANT SELECT, INSERT ON np_items TO app",
            database="app",
        )
        wait_for_replay(cluster)
        proxy = proxy_for(cluster.backends_config())
        proxy.start()
        atexit.register(proxy.stop)
        self.proxy = proxy
        stop_primary_and_wait(cluster, proxy)


_STOPPED = _StoppedPrimary()


class StandbyServesTests(TestCase):
    """
    The primary (node 0) stopped and was detached; the failover found no
    new primary.  New sessions are served by the standby (node 1).
    """

    def setUp(self) -> None:
        requirements_or_skip()
        self.cluster, self.proxy = _STOPPED.get()

    def test_show_pool_nodes_shows_the_primary_down(self) -> None:
        nodes = pool_nodes(self.proxy)
        self.assertEqual([(n["node_id"], n["status"]) for n in nodes], [("0", "down"), ("1", "up")])
        self.assertEqual((nodes[1]["role"], nodes[1]["load_balance_node"]), ("standby", "true"))

    def test_other_show_commands_answer(self) -> None:
        with psycopg.connect(dsn(self.proxy), autocommit=True) as conn:
            self.assertEqual(conn.execute("PGPOOL SHOW port").fetchone(), (str(self.proxy.port),))
            self.assertIn("twisted_pgpool", conn.execute("SHOW POOL_VERSION").fetchone()[0])
            health = conn.execute("SHOW POOL_HEALTH_CHECK_STATS").fetchall()
            self.assertEqual([row[0] for row in health], ["0", "1"])

    def test_psql_logs_in_and_reads(self) -> None:
        result = run_psql(self.proxy, "-c", "select count(*), pg_is_in_recovery() from np_items")
        self.assertEqual((result.returncode, result.stdout), (0, "3|t\n"), result.stderr)

    def test_psql_show_pool_nodes(self) -> None:
        result = run_psql(self.proxy, "-F", " ", "-c", "show pool_nodes")
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = [line.split(" ") for line in result.stdout.splitlines()]
        self.assertEqual([(row[0], row[3]) for row in rows], [("0", "down"), ("1", "up")])

    def test_psql_insert_gets_25006(self) -> None:
        result = run_psql(
            self.proxy, "-v", "VERBOSITY=verbose", "-c", "insert into np_items values (4)"
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn(
            "ERROR:  25006: cannot execute INSERT in a read-only session: "
            "no primary node is available",
            result.stderr,
        )

    def test_psycopg_select_is_served_by_the_standby(self) -> None:
        with psycopg.connect(dsn(self.proxy)) as conn:
            self.assertEqual(
                conn.execute(
                    "SELECT pg_is_in_recovery(), count(*) FROM np_items WHERE n > %s", (0,)
                ).fetchone(),
                (True, 3),
            )

    def test_psycopg_insert_is_refused_with_25006(self) -> None:
        with psycopg.connect(dsn(self.proxy), autocommit=True) as conn:
            with self.assertRaises(psycopg.errors.ReadOnlySqlTransaction) as raised:
                conn.execute("INSERT INTO np_items VALUES (%s)", (4,))
            self.assertIn("standby node 1", raised.exception.diag.message_detail or "")
            # The session goes on.
            self.assertEqual(conn.execute("SELECT count(*) FROM np_items").fetchone(), (3,))

    def test_refused_write_fails_the_transaction_as_postgresql_does(self) -> None:
        with psycopg.connect(dsn(self.proxy)) as conn:
            conn.execute("SELECT 1")
            with self.assertRaises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("UPDATE np_items SET n = n + 1")
            with self.assertRaises(psycopg.errors.InFailedSqlTransaction):
                conn.execute("SELECT 1")
            conn.rollback()
            self.assertEqual(conn.execute("SELECT 2").fetchone(), (2,))

    def test_server_authentication_goes_to_the_standby(self) -> None:
        # md5user has no pool_passwd entry: the server checks its password
        # (the proxy relays the challenge), here the standby.
        with psycopg.connect(
            dsn(self.proxy, user=MD5_USER, password=MD5_PASSWORD), autocommit=True
        ) as conn:
            self.assertEqual(
                conn.execute("SELECT current_user, pg_is_in_recovery()").fetchone(),
                (MD5_USER, True),
            )
        with self.assertRaises(psycopg.OperationalError) as raised:
            psycopg.connect(dsn(self.proxy, user=MD5_USER, password="wrong"))
        self.assertIn("password authentication failed", str(raised.exception))

    def test_a_primary_nobody_detached_is_passed_over_at_login(self) -> None:
        # Without a health check, and with failover_on_backend_error off,
        # node 0 stays "up" in the proxy's eyes: each login finds it
        # unreachable and goes on to the standby.
        proxy = proxy_for(
            self.cluster.backends_config(), health_check_period=0, failover_on_backend_error=False
        )
        proxy.start()
        self.addCleanup(proxy.stop)
        self.assertNotEqual(pool_nodes(proxy)[0]["status"], "down")
        with psycopg.connect(dsn(proxy), autocommit=True) as conn:
            self.assertEqual(conn.execute("SELECT pg_is_in_recovery()").fetchone(), (True,))
            with self.assertRaises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("INSERT INTO np_items VALUES (6)")

    def test_asyncpg_reads_and_is_refused_a_write(self) -> None:
        if asyncpg is None:
            raise SkipTest("asyncpg is not installed")

        async def session() -> Tuple[Any, Any, Optional[str]]:
            conn = await asyncpg.connect(
                host=self.proxy.host,
                port=self.proxy.port,
                user="app",
                password="app",
                database="app",
                ssl=False,
            )
            try:
                nodes = await conn.fetch("SHOW POOL_NODES")
                count = await conn.fetchval("SELECT count(*) FROM np_items")
                try:
                    await conn.execute("INSERT INTO np_items VALUES ($1)", 5)
                except asyncpg.PostgresError as e:
                    return nodes, count, e.sqlstate
                return nodes, count, None
            finally:
                await conn.close()

        import asyncio

        nodes, count, sqlstate = asyncio.run(session())
        self.assertEqual(
            [(row["node_id"], row["status"]) for row in nodes], [("0", "down"), ("1", "up")]
        )
        self.assertEqual((count, sqlstate), (3, "25006"))


class PrimaryBackTests(TestCase):
    """
    Sessions served by a standby keep it; once a primary is usable again,
    new sessions use it.
    """

    def setUp(self) -> None:
        requirements_or_skip()
        self.cluster = start_cluster(self)
        wait_for_replay(self.cluster)
        self.proxy = proxy_for(self.cluster.backends_config())
        self.proxy.start()
        self.addCleanup(self.proxy.stop)
        stop_primary_and_wait(self.cluster, self.proxy)
        self.old = psycopg.connect(dsn(self.proxy), autocommit=True)
        self.addCleanup(self.old.close)
        with self.assertRaises(psycopg.errors.ReadOnlySqlTransaction):
            self.old.execute("INSERT INTO np_items VALUES (10)")

    def test_new_sessions_use_the_primary_once_it_is_attached_again(self) -> None:
        self.cluster.start_node(self.cluster.primary)
        result = pcp_admin(self.proxy, self.proxy.config["pcp_port"], "attach", "0")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertTrue(
            wait_until(
                lambda: node_is(self.proxy, 0, status="up", role="primary"), DETECTION_TIMEOUT
            ),
            self.proxy.log_text(),
        )
        with psycopg.connect(dsn(self.proxy), autocommit=True) as conn:
            conn.execute("INSERT INTO np_items VALUES (%s)", (11,))
        with psycopg.connect(direct_dsn(self.cluster.primary), autocommit=True) as conn:
            self.assertEqual(
                conn.execute("SELECT count(*) FROM np_items WHERE n = 11").fetchone(), (1,)
            )
        # The session that began without a primary keeps its standby.
        with self.assertRaises(psycopg.errors.ReadOnlySqlTransaction):
            self.old.execute("INSERT INTO np_items VALUES (12)")

    def test_new_sessions_use_a_promoted_standby(self) -> None:
        self.cluster.promote(self.cluster.standby)
        # The replication check asks the nodes every second while there is
        # no primary.
        self.assertTrue(
            wait_until(lambda: node_is(self.proxy, 1, role="primary"), DETECTION_TIMEOUT),
            self.proxy.log_text(),
        )
        with psycopg.connect(dsn(self.proxy), autocommit=True) as conn:
            conn.execute("INSERT INTO np_items VALUES (%s)", (21,))
        with psycopg.connect(direct_dsn(self.cluster.standby), autocommit=True) as conn:
            self.assertEqual(
                conn.execute("SELECT count(*) FROM np_items WHERE n = 21").fetchone(), (1,)
            )


class NoNodeTests(TestCase):
    """
    Every node is down: nothing listens on the backends' ports, and the
    health check has detached both.  A client the proxy authenticates
    itself (C{app}, in pool_passwd) gets the proxy's own statements; a
    client only a server could authenticate is refused with Pgpool-II's
    words.
    """

    def setUp(self) -> None:
        if psycopg is None:
            raise SkipTest("psycopg is not installed")
        self.proxy = proxy_for(
            [
                {"hostname": "127.0.0.1", "port": free_port()},
                {"hostname": "127.0.0.1", "port": free_port()},
            ],
            sr_check_period=0,
        )
        self.proxy.start()
        self.addCleanup(self.proxy.stop)
        self.assertTrue(
            wait_until(
                lambda: [n["status"] for n in pool_nodes(self.proxy)] == ["down", "down"],
                DETECTION_TIMEOUT,
            ),
            self.proxy.log_text(),
        )

    def test_show_commands_answer(self) -> None:
        with psycopg.connect(dsn(self.proxy), autocommit=True) as conn:
            self.assertEqual(conn.execute("PGPOOL SHOW port").fetchone(), (str(self.proxy.port),))
            self.assertEqual(len(conn.execute("SHOW POOL_HEALTH_CHECK_STATS").fetchall()), 2)

    def test_psql_show_pool_nodes_answers_and_other_statements_get_57p03(self) -> None:
        result = run_psql(self.proxy, "-F", " ", "-c", "show pool_nodes")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            [line.split(" ")[3] for line in result.stdout.splitlines()], ["down", "down"]
        )
        result = run_psql(self.proxy, "-v", "VERBOSITY=verbose", "-c", "select 1")
        self.assertEqual(result.returncode, 1)
        self.assertIn(
            "ERROR:  57P03: no backend node is available to run this statement", result.stderr
        )

    def test_a_client_only_a_server_could_authenticate_is_refused_as_pgpool_does(self) -> None:
        fields = login_refusal(self.proxy, "postgres")
        self.assertEqual(
            (fields["S"], fields["C"], fields["M"], fields["D"]),
            (
                "FATAL",
                "57P03",
                "pgpool is not accepting any new connections",
                "all backend nodes are down, pgpool requires at least one valid node",
            ),
        )
        self.assertIn("attach them again", fields["H"])


class UnreachableNodesTests(TestCase):
    """
    No node can be reached, but none was detached (no health check, no
    failover on a session's error): the proxy finds out at each login.
    """

    def setUp(self) -> None:
        if psycopg is None:
            raise SkipTest("psycopg is not installed")
        self.proxy = proxy_for(
            [
                {"hostname": "127.0.0.1", "port": free_port()},
                {"hostname": "127.0.0.1", "port": free_port()},
            ],
            health_check_period=0,
            sr_check_period=0,
            failover_on_backend_error=False,
        )
        self.proxy.start()
        self.addCleanup(self.proxy.stop)

    def test_show_pool_nodes_answers(self) -> None:
        self.assertEqual(
            [(n["node_id"], n["status"]) for n in pool_nodes(self.proxy)],
            [("0", "waiting"), ("1", "waiting")],
        )

    def test_a_client_only_a_server_could_authenticate_gets_08006(self) -> None:
        fields = login_refusal(self.proxy, "postgres")
        self.assertEqual(
            (fields["S"], fields["C"], fields["M"]),
            ("FATAL", "08006", "unable to connect to the PostgreSQL server"),
        )
