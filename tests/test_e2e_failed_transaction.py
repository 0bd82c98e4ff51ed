"""
End-to-end: a transaction whose read failed on the standby fails on the
primary too (a COMMIT must not commit the primary's part), quietly: the
proxy's statement that fails the primary's transaction is expected to
fail, and is neither logged as a failure nor counted in the node's error
statistics (issue 15, item 8).
"""

from __future__ import annotations

from typing import Any, Dict

from twisted.trial.unittest import SkipTest, TestCase

from tests.support import LazyProxy, ProxyProcess
from twisted_pgpool.testing.localcluster import LocalCluster

try:
    import psycopg
except ImportError:  # pragma: no cover - e.g. PyPy
    psycopg = None  # type: ignore[assignment]


def _standby_reads(cluster: LocalCluster) -> ProxyProcess:
    backends = cluster.backends_config()
    backends[0]["weight"] = 0
    config: Dict[str, Any] = {
        "backends": backends,
        "pool_passwd": "pool_passwd",
        "load_balance_mode": True,
        "log_min_messages": "info",
    }
    return ProxyProcess(config, extra_files={"pool_passwd": "app:TEXTapp\n"})


PROXY = LazyProxy(_standby_reads)


class FailedStandbyReadTests(TestCase):
    def setUp(self) -> None:
        if psycopg is None:
            raise SkipTest("psycopg is not installed")
        self.proxy = PROXY.get()

    def test_failed_read_fails_the_whole_transaction_quietly(self) -> None:
        with psycopg.connect(self.proxy.dsn()) as conn:
            conn.execute("select 1").fetchall()
            with self.assertRaises(psycopg.errors.DivisionByZero):
                conn.execute("select 1 / 0")
            with self.assertRaises(psycopg.errors.InFailedSqlTransaction):
                conn.execute("select 1")
            conn.rollback()
            self.assertEqual(conn.execute("select 2").fetchone(), (2,))
        log = self.proxy.log_text()
        self.assertNotIn("twisted_pgpool_abort_transaction", log)
        self.assertNotIn("whose reply the client does not see", log)
