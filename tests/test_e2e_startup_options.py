"""
End-to-end: a client on a reused pooled connection sees exactly the
server's defaults plus its own startup options, nothing of the previous
client's (issue 15, item 5: DateStyle 'SQL' after another client's
'German, DMY' showed 'SQL, DMY').
"""

from __future__ import annotations

from twisted.trial.unittest import SkipTest, TestCase

from tests.support import cluster_or_skip, direct_dsn, text_passwd_proxy

try:
    import psycopg
except ImportError:  # pragma: no cover - e.g. PyPy
    psycopg = None  # type: ignore[assignment]

PROXY = text_passwd_proxy(load_balance_mode=False, max_pool=1)


class StartupOptionsTests(TestCase):
    def setUp(self) -> None:
        if psycopg is None:
            raise SkipTest("psycopg is not installed")

    def datestyle(self, dsn: str, options: str) -> str:
        with psycopg.connect(dsn, options=options, autocommit=True) as connection:
            return connection.execute("show DateStyle").fetchone()[0]

    def test_datestyle_of_the_previous_client_does_not_leak(self) -> None:
        proxy = PROXY.get()
        direct = direct_dsn(cluster_or_skip().primary)
        expected = self.datestyle(direct, "-c DateStyle=SQL")
        self.datestyle(proxy.dsn(), r"-c DateStyle=German,\ DMY")
        self.assertEqual(self.datestyle(proxy.dsn(), "-c DateStyle=SQL"), expected)

    def test_client_without_options_gets_the_server_default(self) -> None:
        proxy = PROXY.get()
        direct = direct_dsn(cluster_or_skip().primary)
        expected = self.datestyle(direct, "")
        self.datestyle(proxy.dsn(), r"-c DateStyle=German,\ DMY")
        self.assertEqual(self.datestyle(proxy.dsn(), ""), expected)
