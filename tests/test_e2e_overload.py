"""
End-to-end: a PostgreSQL server whose connection slots are all taken is up,
only full.  The proxy's health check is refused with 53300; the node must
not be failed over, the proxy warns and counts the refusals, and a client
whose backend login is refused gets the server's own error.

The server is one of the test's own (a primary without a standby, so that
lowering C{max_connections} and restarting it disturbs nobody), with
C{max_connections = 10}, of which C{superuser_reserved_connections = 3};
the test fills the slots with real connections.  The proxy runs as a
child process, its health check every second; its metrics endpoint is
read to see the counts and the node's status while the server is full.
"""

from __future__ import annotations

import urllib.request
from typing import Any, Dict, List

from twisted.trial.unittest import TestCase

from tests.promparse import Family, parse, value
from tests.support import ProxyProcess, direct_dsn, free_port, postgres_or_skip, show_pool_nodes
from twisted_pgpool.testing.localcluster import LocalCluster
from twisted_pgpool.testing.waiting import wait_for

try:
    import psycopg
except ImportError:  # pragma: no cover - e.g. PyPy
    psycopg = None  # type: ignore[assignment]
try:
    import pg8000.native
except ImportError:  # pragma: no cover
    pg8000 = None  # type: ignore[assignment]

#: What PostgreSQL says when it refuses a login for want of a slot (53300;
#: libpq reports no SQLSTATE for a refused connection, so psycopg cannot).
FULL = ("sorry, too many clients already", "remaining connection slots are reserved")

MAX_CONNECTIONS = 10
RESERVED = 3
#: Seconds to wait for a health check outcome (checks run every second).
WAIT = 20.0


class FullServerTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        if psycopg is None:
            self.skipTest("psycopg is not installed")
        postgres_or_skip()
        self.pg = LocalCluster(with_standby=False)
        self.addCleanup(self.pg.stop)
        self.pg.start()
        primary = self.pg.primary
        self.pg.psql(primary, f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}")
        self.pg.psql(primary, f"ALTER SYSTEM SET superuser_reserved_connections = {RESERVED}")
        self.pg.stop_node(primary, "fast")
        self.pg.start_node(primary)
        self.held: List[Any] = []
        self.addCleanup(self.release)

    def release(self) -> None:
        held, self.held = self.held, []
        for conn in held:
            conn.close()

    def start_proxy(self, check_user: str) -> ProxyProcess:
        proxy = ProxyProcess(
            {
                "backends": self.pg.backends_config(),
                "pool_passwd": "pool_passwd",
                "health_check_period": 1,
                "health_check_user": check_user,
                "health_check_timeout": 5,
                "health_check_max_retries": 2,
                "health_check_retry_delay": 0.5,
                "metrics_listen_addresses": "127.0.0.1",
                "metrics_port": free_port(),
            },
            extra_files={"pool_passwd": "app:TEXTapp\n"},
        )
        proxy.start()
        self.addCleanup(proxy.stop)
        self.proxy = proxy
        wait_for(
            lambda: self.stat("success_count") >= 1,
            WAIT,
            "a first successful health check",
            interval=0.1,
        )
        return proxy

    # -- reading the proxy ----------------------------------------------------

    def scrape(self) -> Dict[str, Family]:
        url = f"http://127.0.0.1:{self.proxy.config['metrics_port']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return parse(response.read().decode("utf-8"))

    def stat(self, column: str) -> float:
        node = self.pg.primary
        return value(
            self.scrape(),
            "pgpool2_pool_health_check_stats_" + column,
            hostname=node.host,
            port=str(node.port),
            role="primary",
        )

    def refused(self) -> float:
        node = self.pg.primary
        return value(
            self.scrape(),
            "twisted_pgpool_health_check_refused_total",
            node_id="0",
            hostname=node.host,
            port=str(node.port),
        )

    def in_service(self) -> bool:
        node = self.pg.primary
        return (
            value(
                self.scrape(),
                "pgpool2_pool_nodes_status",
                hostname=node.host,
                port=str(node.port),
                role="primary",
            )
            == 1.0
        )

    # -- filling the server ---------------------------------------------------

    def fill(self, user: str, password: str) -> str:
        """
        Open connections as C{user} until the server refuses one; keep them.

        @return: the refusal's message.
        """
        while True:
            try:
                conn = psycopg.connect(
                    direct_dsn(self.pg.primary, user=user, password=password), connect_timeout=5
                )
            except psycopg.OperationalError as e:
                self.assertTrue(any(words in str(e) for words in FULL), str(e))
                return str(e)
            self.held.append(conn)
            self.assertLessEqual(len(self.held), MAX_CONNECTIONS)

    def wait_for_checks(self, user: str, password: str, count: int) -> None:
        """
        Wait until C{count} more health check periods have passed on the
        full server, taking again any slot that a check connection of the
        proxy's left free while the server was being filled.
        """
        target = self.stat("total_count") + count

        def enough() -> bool:
            self.fill(user, password)
            return self.stat("total_count") >= target

        wait_for(enough, WAIT, f"{count} health check periods", interval=0.1)

    def assert_not_failed_over(self) -> None:
        self.assertTrue(self.in_service())
        self.assertEqual(self.stat("fail_count"), 0.0)
        log = self.proxy.log_text()
        self.assertNotIn("health check failed", log)
        self.assertNotIn("starting degeneration", log)  # what a failover logs first

    # -- the tests ------------------------------------------------------------

    def test_refused_health_checks_are_warnings_not_failovers(self) -> None:
        self.start_proxy("app")
        message = self.fill("app", "app")
        self.assertIn("remaining connection slots are reserved", message)
        # Four periods (a check and its two retries take two of them): the
        # refusals used to end in a failover.
        self.wait_for_checks("app", "app", 4)
        self.assert_not_failed_over()
        self.assertGreaterEqual(self.refused(), 3.0)
        self.assertEqual(self.stat("retry_count"), 0.0)
        log = self.proxy.log_text()
        self.assertIn(
            "health check on DB node: 0: the node is up but refuses more "
            "connections, not counted as a failure",
            log,
        )
        self.assertIn("remaining connection slots are reserved", log)
        self.assertIn("(SQLSTATE 53300)", log)

        # A client now: the server's own refusal, and still no failover.
        if pg8000 is not None:
            with self.assertRaises(pg8000.native.DatabaseError) as caught:
                pg8000.native.Connection(
                    user="app",
                    password="app",
                    host=self.proxy.host,
                    port=self.proxy.port,
                    database="app",
                    timeout=10,
                )
            fields = caught.exception.args[0]
            self.assertEqual((fields["S"], fields["C"]), ("FATAL", "53300"))
            self.assertIn("remaining connection slots are reserved", fields["M"])
        with self.assertRaises(psycopg.OperationalError) as refused:
            psycopg.connect(self.proxy.dsn(), connect_timeout=10)
        self.assertIn("remaining connection slots are reserved", str(refused.exception))
        self.assert_not_failed_over()

        # Slots free again: the node answers, as it did all along.
        self.release()
        before = self.stat("success_count")
        wait_for(
            lambda: self.stat("success_count") > before, WAIT, "a successful check", interval=0.1
        )
        [row] = show_pool_nodes(self.proxy)
        self.assertEqual((row["status"], row["pg_status"]), ("up", "up"))

    def test_a_superuser_check_uses_the_reserved_slots(self) -> None:
        self.start_proxy("postgres")
        self.fill("app", "app")
        # Every slot an ordinary role may take is taken: the superuser's
        # check still gets one of the reserved slots.
        before = self.stat("success_count")
        wait_for(
            lambda: self.stat("success_count") >= before + 2,
            WAIT,
            "two successful checks on the full server",
            interval=0.1,
        )
        self.assertEqual(self.refused(), 0.0)
        # Even the reserved slots taken: refused, and still no failover.
        message = self.fill("postgres", "")
        self.assertIn("sorry, too many clients already", message)
        self.wait_for_checks("postgres", "", 4)
        self.assert_not_failed_over()
        self.assertGreaterEqual(self.refused(), 3.0)
        self.assertIn("sorry, too many clients already (SQLSTATE 53300)", self.proxy.log_text())
