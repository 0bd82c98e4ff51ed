"""
End-to-end tests of stopping the proxy and rotating its log file over
PCP: the real C{twistd pgpool} process in front of the shared PostgreSQL
primary and standby, asked by Pgpool-II's own C{pcp_stop_pgpool} or by
C{twisted-pgpool stop | log-rotate} (Pgpool-II 4.3.5 has no
C{pcp_log_rotate}), with psycopg sessions open through it.

A stop is asynchronous (the answer comes first), so the tests wait for the
process to exit, with a bound.
"""

from __future__ import annotations

import os
import subprocess
from typing import Optional

from twisted.trial.unittest import SynchronousTestCase

from tests.support import ProxyProcess
from tests.test_e2e_admin import PGPOOL_TOOLS_MISSING, pgpool_tool
from tests.test_e2e_reload import DEADLINE, PCP, ReloadMixin
from twisted_pgpool.testing.waiting import wait_for

try:
    import psycopg
except ImportError:  # pragma: no cover
    psycopg = None  # type: ignore[assignment]


def exit_status(proxy: ProxyProcess) -> Optional[int]:
    """
    The proxy's exit status if it has exited by itself, else None.
    """
    process = proxy._process
    return None if process is None else process.poll()


class StopMixin(ReloadMixin):
    skip = None if psycopg is not None else "psycopg is not installed"

    def connect(self) -> "psycopg.Connection":
        connection = psycopg.connect(self.proxy.dsn(), connect_timeout=5, autocommit=True)
        self.addCleanup(connection.close)  # type: ignore[attr-defined]
        return connection

    def pcp_stop_pgpool(self, *args: str) -> "subprocess.CompletedProcess[str]":
        if PGPOOL_TOOLS_MISSING:
            self.skipTest(PGPOOL_TOOLS_MISSING)  # type: ignore[attr-defined]
        executable = pgpool_tool("pcp_stop_pgpool")
        assert executable is not None
        return subprocess.run(
            [executable, *PCP.args(self.proxy), *args],
            env=PCP.environ(self.proxy),
            capture_output=True,
            text=True,
            timeout=30,
        )

    def twisted_pgpool(self, command: str, *args: str) -> "subprocess.CompletedProcess[str]":
        return PCP.twisted_pgpool(self.proxy, command, *args, timeout=30)

    def wait_for_exit(self, timeout: float = 15.0) -> int:
        wait_for(
            lambda: exit_status(self.proxy) is not None, timeout, "the proxy to exit", interval=0.05
        )
        return self.proxy.stop()  # type: ignore[return-value]


class PcpStopPgpoolTests(StopMixin, SynchronousTestCase):
    """
    C{pcp_stop_pgpool -m fast|smart}, Pgpool-II 4.3.5's own tool.
    """

    def test_fast_ends_a_session_in_a_transaction_and_the_proxy_exits_0(self) -> None:
        proxy = self.start_proxy(pcp=True)
        session = self.connect()
        session.execute("BEGIN")
        session.execute("CREATE TEMP TABLE stop_fast (x int)")
        result = self.pcp_stop_pgpool("-m", "fast")
        self.assertEqual(
            (result.returncode, result.stdout),
            (0, "pcp_stop_pgpool -- Command Successful\n"),
            result.stderr,
        )
        self.assertEqual(self.wait_for_exit(), 0)
        with self.assertRaises(psycopg.OperationalError) as caught:
            session.execute("SELECT 1")
        self.assertIn("terminating connection due to administrator command", str(caught.exception))
        log = proxy.log_text()
        self.assertIn("received fast shutdown request", log)
        self.assertIn("shutting down", log)
        assert proxy.workdir is not None
        with open(os.path.join(proxy.workdir, "pgpool_status")) as f:
            self.assertEqual(f.read().split(), ["up", "up"])

    def test_smart_waits_for_the_open_session_then_exits_0(self) -> None:
        proxy = self.start_proxy(pcp=True)
        session = self.connect()
        result = self.pcp_stop_pgpool("-m", "smart")
        self.assertEqual(
            (result.returncode, result.stdout),
            (0, "pcp_stop_pgpool -- Command Successful\n"),
            result.stderr,
        )
        # New clients are turned away at once...
        wait_for(
            lambda: self.psql("-c", "SELECT 1").returncode != 0,
            DEADLINE,
            "the client port to close",
            interval=0.05,
        )
        # ... while the open session goes on, and the proxy with it.
        self.assertEqual(session.execute("SELECT 41 + 1").fetchone(), (42,))
        self.assertIsNone(exit_status(proxy))
        self.assertIn("received smart shutdown request", proxy.log_text())
        session.close()
        self.assertEqual(self.wait_for_exit(), 0)

    def test_cluster_scope_stops_this_proxy(self) -> None:
        self.start_proxy(pcp=True)
        result = self.pcp_stop_pgpool("-m", "immediate", "-s", "c")
        self.assertEqual(
            (result.returncode, result.stdout),
            (0, "pcp_stop_pgpool -- Command Successful\n"),
            result.stderr,
        )
        self.assertEqual(self.wait_for_exit(), 0)
        self.assertIn("received immediate shutdown request", self.proxy.log_text())


class TwistedPgpoolStopTests(StopMixin, SynchronousTestCase):
    """
    C{twisted-pgpool stop} and C{twisted-pgpool log-rotate}.
    """

    def test_stop_fast_disconnects_the_session_and_exits_0(self) -> None:
        self.start_proxy(pcp=True)
        session = self.connect()
        result = self.twisted_pgpool("stop", "-m", "fast")
        self.assertEqual(
            (result.returncode, result.stdout), (0, "fast shutdown requested\n"), result.stderr
        )
        self.assertEqual(self.wait_for_exit(), 0)
        with self.assertRaises(psycopg.OperationalError):
            session.execute("SELECT 1")

    def test_smart_then_fast_ends_the_wait(self) -> None:
        self.start_proxy(pcp=True)
        session = self.connect()
        result = self.twisted_pgpool("stop")
        self.assertEqual(
            (result.returncode, result.stdout), (0, "smart shutdown requested\n"), result.stderr
        )
        self.assertEqual(session.execute("SELECT 1").fetchone(), (1,))
        result = self.twisted_pgpool("stop", "-m", "fast")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.wait_for_exit(), 0)

    def test_log_rotate_renames_the_log_file_and_opens_a_new_one(self) -> None:
        proxy = self.start_proxy(pcp=True)
        rotated = proxy.log_path + ".1"
        result = self.twisted_pgpool("log-rotate")
        self.assertEqual(
            (result.returncode, result.stdout), (0, "log rotation requested\n"), result.stderr
        )
        wait_for(lambda: os.path.exists(rotated), DEADLINE, "the rotated log file", interval=0.05)
        with open(rotated, encoding="utf-8") as f:
            old = f.read()
        self.assertIn("rotating the log file (pcp_log_rotate)", old)
        # What is logged next goes to a new file of the same name.
        self.twisted_pgpool("stop", "-m", "fast")
        self.assertEqual(self.wait_for_exit(), 0)
        new = proxy.log_text()
        self.assertIn("received fast shutdown request", new)
        self.assertNotIn("rotating the log file", new)


class SignalStopTests(StopMixin, SynchronousTestCase):
    """
    Pgpool-II's signals, as a service manager sends them: SIGTERM is a
    smart shutdown (``systemctl stop``), SIGINT a fast one (issue 17).
    """

    def signal(self, signum: int) -> None:
        process = self.proxy._process
        assert process is not None
        process.send_signal(signum)

    def test_sigterm_waits_for_the_open_session_then_exits_0(self) -> None:
        import signal

        proxy = self.start_proxy()
        session = self.connect()
        self.signal(signal.SIGTERM)
        wait_for(
            lambda: "received smart shutdown request" in proxy.log_text(),
            DEADLINE,
            "the smart shutdown to begin",
            interval=0.05,
        )
        self.assertEqual(session.execute("SELECT 41 + 1").fetchone(), (42,))
        self.assertIsNone(exit_status(proxy))
        session.close()
        self.assertEqual(self.wait_for_exit(), 0)

    def test_sigint_ends_the_session_and_exits_0(self) -> None:
        import signal

        self.start_proxy()
        session = self.connect()
        self.signal(signal.SIGINT)
        self.assertEqual(self.wait_for_exit(), 0)
        with self.assertRaises(psycopg.OperationalError):
            session.execute("SELECT 1")
