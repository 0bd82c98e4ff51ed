"""
End-to-end: DROP DATABASE (and ALTER DATABASE ... RENAME) through the
proxy succeeds although the proxy pools idle connections to that
database: they are closed first, as Pgpool-II does (issue 15, item 13:
"database ... is being accessed by other users").
"""

from __future__ import annotations

import uuid

from twisted.trial.unittest import SkipTest, TestCase

from tests.support import cluster_or_skip, text_passwd_proxy

try:
    import psycopg
except ImportError:  # pragma: no cover - e.g. PyPy
    psycopg = None  # type: ignore[assignment]

PROXY = text_passwd_proxy(load_balance_mode=True)


class DropDatabaseTests(TestCase):
    def setUp(self) -> None:
        if psycopg is None:
            raise SkipTest("psycopg is not installed")
        self.cluster = cluster_or_skip()
        self.proxy = PROXY.get()

    def pooled_database(self) -> str:
        """
        A database of app's, with idle connections to it in the pool.
        """
        name = f"dropme_{uuid.uuid4().hex[:10]}"
        self.cluster.psql(self.cluster.primary, f'CREATE DATABASE "{name}" OWNER app')
        self.cluster.wait_for_standby()
        for _ in range(3):
            with psycopg.connect(self.proxy.dsn(database=name), autocommit=True) as conn:
                conn.execute("select 1").fetchall()
        return name

    def databases(self) -> set:
        return set(
            self.cluster.psql(self.cluster.primary, "select datname from pg_database").split()
        )

    def test_drop_database_with_pooled_connections(self) -> None:
        name = self.pooled_database()
        with psycopg.connect(self.proxy.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}"')
        self.assertNotIn(name, self.databases())

    def test_drop_database_through_the_extended_protocol(self) -> None:
        name = self.pooled_database()
        with psycopg.connect(self.proxy.dsn(), autocommit=True, prepare_threshold=0) as conn:
            conn.execute(f'DROP DATABASE "{name}"', prepare=True)
        self.assertNotIn(name, self.databases())

    def test_rename_database_with_pooled_connections(self) -> None:
        name = self.pooled_database()
        # Renaming takes CREATEDB; the shared cluster is left as found.
        self.cluster.psql(self.cluster.primary, "ALTER ROLE app CREATEDB")
        self.addCleanup(self.cluster.psql, self.cluster.primary, "ALTER ROLE app NOCREATEDB")
        with psycopg.connect(self.proxy.dsn(), autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" RENAME TO "{name}_r"')
            conn.execute(f'DROP DATABASE "{name}_r"')
        self.assertNotIn(f"{name}_r", self.databases())
