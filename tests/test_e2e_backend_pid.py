"""
End-to-end: a client through the proxy is told the real process id of the
server process it is bound to, as on a direct connection (issue 15,
item 2): C{pg_backend_pid()}, C{pg_cancel_backend(pid)} from another
session and the C{notify.pid == backend_pid} idiom all work.  Its cancel
key still goes through the proxy.
"""

from __future__ import annotations

import threading
import time

from twisted.trial.unittest import SkipTest, TestCase

from tests.support import text_passwd_proxy

try:
    import psycopg
except ImportError:  # pragma: no cover - e.g. PyPy
    psycopg = None  # type: ignore[assignment]

PROXY = text_passwd_proxy(load_balance_mode=True)


class BackendPidTests(TestCase):
    def setUp(self) -> None:
        if psycopg is None:
            raise SkipTest("psycopg is not installed")
        self.proxy = PROXY.get()

    def connect(self) -> "psycopg.Connection":
        connection = psycopg.connect(self.proxy.dsn(), autocommit=True)
        self.addCleanup(connection.close)
        return connection

    def test_backend_pid_is_the_servers(self) -> None:
        connection = self.connect()
        (pid,) = connection.execute("select pg_backend_pid()").fetchone()
        self.assertEqual(connection.info.backend_pid, pid)

    def test_own_notifications_carry_the_announced_pid(self) -> None:
        connection = self.connect()
        connection.execute("listen pid_test")
        connection.execute("notify pid_test, 'x'")
        [notify] = list(connection.notifies(timeout=5, stop_after=1))
        self.assertEqual(notify.pid, connection.info.backend_pid)

    def test_pg_cancel_backend_from_another_session_cancels(self) -> None:
        victim = self.connect()
        other = self.connect()
        pid = victim.info.backend_pid

        def cancel_soon() -> None:
            time.sleep(0.5)
            other.execute("select pg_cancel_backend(%s)", (pid,))

        thread = threading.Thread(target=cancel_soon)
        thread.start()
        started = time.monotonic()
        with self.assertRaises(psycopg.errors.QueryCanceled):
            victim.execute("select pg_sleep(20)")
        thread.join()
        self.assertLess(time.monotonic() - started, 10)

    def test_cancel_request_through_the_proxy_still_works(self) -> None:
        victim = self.connect()
        timer = threading.Timer(0.5, victim.cancel)
        timer.start()
        with self.assertRaises(psycopg.errors.QueryCanceled):
            victim.execute("select pg_sleep(20)")
        timer.join()
