"""
End-to-end: C{twistd -n pgpool -c pgpool.conf} starts from Debian's own
sample file (C{tests/data/debian/pgpool.conf}, tabs and watchdog keys
included), with only the lines a user adds to point it at the servers, and
serves a real client; the warnings are in the log, all at once.  As
shipped, without any backend, it starts too (as Pgpool-II does), refuses
clients with Pgpool-II's error, answers the SHOW commands, and takes a
backend added by a reload.
"""

from __future__ import annotations

import os
import re
import signal
import sys

from twisted.trial.unittest import TestCase

from tests.support import (
    ProxyProcess,
    cluster_or_skip,
    free_port,
    login_refusal,
    pcp_admin,
    pcp_conf_line,
)
from twisted_pgpool.testing.waiting import wait_until

try:
    import psycopg
except ImportError:  # pragma: no cover - e.g. PyPy, where psycopg has no build
    psycopg = None  # type: ignore[assignment]

SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "debian", "pgpool.conf")


class DebianSampleTests(TestCase):
    skip = "psycopg is not installed" if psycopg is None else None

    def test_twistd_runs_debians_pgpool_conf(self) -> None:
        cluster = cluster_or_skip()
        with open(SAMPLE, encoding="utf-8") as f:
            sample = f.read()
        port = free_port()
        added = [
            "listen_addresses = '127.0.0.1'",
            f"port = {port}",
            "pcp_port = 0",
            "logdir = '.'",
            "pool_passwd = 'pool_passwd'",
        ]
        for number, backend in enumerate(cluster.backends_config()):
            added += [
                f"backend_hostname{number} = '{backend['hostname']}'",
                f"backend_port{number} = {backend['port']}",
                f"backend_application_name{number} = '{backend['application_name']}'",
            ]
        proxy = ProxyProcess(
            {"port": port},
            extra_files={
                "pgpool.conf": sample + "\n".join(added) + "\n",
                "pool_passwd": "app:TEXTapp\n",
            },
            argv=[
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "--logfile={log}",
                "pgpool",
                "-c",
                "{workdir}/pgpool.conf",
            ],
        )
        proxy.start()
        self.addCleanup(proxy.stop)
        with psycopg.connect(proxy.dsn(), connect_timeout=10) as conn:
            self.assertEqual(conn.execute("select 41 + 1").fetchone(), (42,))
        self.assertIn(
            "pgpool.conf:652: hostname0: not supported: there is no watchdog", proxy.log_text()
        )


class DebianSampleAsShippedTests(TestCase):
    """
    Debian's sample unedited but for where it listens and keeps its files
    (tests run side by side: C{listen_addresses}, C{port}, C{pcp_port} and
    C{logdir} are added at its end), with a pool_passwd and a pcp.conf next
    to it, where Pgpool-II looks for them.
    """

    skip = "psycopg is not installed" if psycopg is None else None

    def setUp(self) -> None:
        with open(SAMPLE, encoding="utf-8") as f:
            self.sample = f.read()
        self.port = free_port()
        self.pcp_port = free_port()
        self.lines = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"pcp_port = {self.pcp_port}",
            "logdir = '.'",
        ]
        self.proxy = ProxyProcess(
            {"port": self.port},
            extra_files={
                "pgpool.conf": self.sample + "\n".join(self.lines) + "\n",
                "pool_passwd": "app:TEXTapp\n",
                "pcp.conf": pcp_conf_line(),
            },
            argv=[
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "--logfile={log}",
                "pgpool",
                "-c",
                "{workdir}/pgpool.conf",
            ],
        )
        self.proxy.start()
        self.addCleanup(self.proxy.stop)

    def dsn(self) -> str:
        return self.proxy.dsn(connect_timeout=10, sslmode="disable")

    def pool_nodes(self):
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            return conn.execute("SHOW POOL_NODES").fetchall()

    def test_starts_with_warnings_only(self) -> None:
        log = self.proxy.log_text()
        self.assertIn("pgpool.conf:652: hostname0: not supported: there is no watchdog", log)
        self.assertIn("pgpool.conf: backends: no backend is configured", log)
        self.assertEqual(re.findall(r"#(?:error|critical)\]", log), [], log)
        self.assertNotIn("Traceback", log)

    def test_refuses_clients_with_pgpools_error_and_answers_show_commands(self) -> None:
        # postgres has no pool_passwd entry: only a server could check it.
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
        self.assertIn("add backend_hostname0", fields["H"])
        # app is authenticated by the proxy (pool_passwd): its session
        # answers the proxy's own statements.
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            self.assertEqual(conn.execute("SHOW POOL_NODES").fetchall(), [])
            self.assertEqual(conn.execute("PGPOOL SHOW port").fetchone(), (str(self.port),))
            with self.assertRaises(psycopg.errors.CannotConnectNow):
                conn.execute("SELECT 1")

    def test_a_backend_added_by_reload_serves_once_attached(self) -> None:
        primary = cluster_or_skip().primary
        with open(
            os.path.join(self.proxy.workdir or "", "pgpool.conf"), "a", encoding="utf-8"
        ) as f:
            f.write(f"backend_hostname0 = '{primary.host}'\nbackend_port0 = {primary.port}\n")
        self.proxy.send_signal(signal.SIGHUP)
        # As in Pgpool-II, it is added down.
        self.assertTrue(
            wait_until(
                lambda: [(row[0], row[3]) for row in self.pool_nodes()] == [("0", "down")], 10
            ),
            self.proxy.log_text(),
        )
        result = pcp_admin(self.proxy, self.pcp_port, "attach", "0")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            # Node 0 is assumed to be the primary, as if the proxy had
            # started with it (sr_check_user is empty in the sample).
            self.assertEqual(
                conn.execute("SELECT 41 + 1, pg_is_in_recovery()").fetchone(), (42, False)
            )
            conn.execute("CREATE TEMP TABLE written (a int)")
            conn.execute("INSERT INTO written VALUES (1)")
        self.assertEqual(
            [(row[0], row[3], row[6]) for row in self.pool_nodes()], [("0", "up", "primary")]
        )
