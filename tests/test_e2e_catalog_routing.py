"""
Routing that needs the catalog, end to end (issue 15, finding 6): real
PostgreSQL 15 primary and standby, the proxy as a child process, psycopg.

As in Pgpool-II, a read calling user functions is balanced when they are
all STABLE or IMMUTABLE (C{pg_proc.provolatile}), and a read of an unlogged
table goes to the primary (C{check_unlogged_table}): a standby refuses it.
The functions and tables here are created directly on the primary, not
through the proxy, so only a catalog lookup can tell.  Weights 0:1, as in
tests/test_e2e_routing.py: a read reaches the standby unless a rule sends
it to the primary.
"""

from __future__ import annotations

from typing import Any

from tests.support import libpq_dsn
from tests.test_e2e_routing import WHERE, RoutingTestCase, unique, wait_for_replay

try:
    import psycopg
except ImportError:  # pragma: no cover - e.g. PyPy
    psycopg = None  # type: ignore[assignment]


class CatalogRoutingTests(RoutingTestCase):
    """
    Pgpool-II's defaults: both function lists empty, check_unlogged_table on.
    """

    def direct(self) -> Any:
        """
        A connection straight to the primary as C{app}, bypassing the proxy.
        """
        conn = psycopg.connect(
            libpq_dsn(
                host=self.cluster.primary.host,
                port=self.cluster.primary.port,
                user="app",
                password="app",
                dbname="app",
                connect_timeout=5,
            ),
            autocommit=True,
        )
        self.addCleanup(conn.close)
        return conn

    def function(self, volatility: str) -> str:
        """
        A function returning the port of the server running it, created on
        the primary directly, once the standby has it too.
        """
        name = unique(f"catalog_{volatility.lower()}")
        self.direct().execute(
            f"CREATE FUNCTION {name}() RETURNS int {volatility} "
            "LANGUAGE sql AS 'SELECT inet_server_port()'"
        )
        wait_for_replay(self.cluster)
        return name

    def unlogged_table(self) -> str:
        name = unique("catalog_unlogged")
        direct = self.direct()
        direct.execute(f"CREATE UNLOGGED TABLE {name} (id int)")
        direct.execute(f"INSERT INTO {name} VALUES (1), (2)")
        wait_for_replay(self.cluster)
        return name

    def test_stable_function_goes_to_the_standby(self) -> None:
        f = self.function("STABLE")
        statement = f"SELECT {f}()"
        self.assertEqual(self.served_by(self.connect(), statement), "standby")
        self.assertEqual(self.nodes_logged(statement), {1})

    def test_immutable_function_goes_to_the_standby(self) -> None:
        f = self.function("IMMUTABLE")
        self.assertEqual(self.served_by(self.connect(), f"SELECT {f}(), {WHERE}"), "standby")

    def test_stable_function_goes_to_the_standby_every_time(self) -> None:
        f = self.function("STABLE")
        conn = self.connect()
        self.assertEqual([self.served_by(conn, f"SELECT {f}()") for _ in range(3)], ["standby"] * 3)
        # Another session: the facts are the database's, not the session's.
        self.assertEqual(self.served_by(self.connect(), f"SELECT {f}()"), "standby")

    def test_stable_function_goes_to_the_standby_with_parameters(self) -> None:
        # The extended protocol (psycopg sends parameters with Parse/Bind).
        f = self.function("STABLE")
        self.assertEqual(self.served_by(self.connect(), f"SELECT {f}(), %s::int", (1,)), "standby")

    def test_volatile_function_goes_to_the_primary(self) -> None:
        f = self.function("VOLATILE")
        statement = f"SELECT {f}()"
        self.assertEqual(self.served_by(self.connect(), statement), "primary")
        self.assertEqual(self.nodes_logged(statement), {0})

    def test_stable_and_volatile_functions_go_to_the_primary(self) -> None:
        stable, volatile = self.function("STABLE"), self.function("VOLATILE")
        self.assertEqual(
            self.served_by(self.connect(), f"SELECT {stable}(), {volatile}()"), "primary"
        )

    def test_unlogged_table_read_goes_to_the_primary(self) -> None:
        t = self.unlogged_table()
        conn = self.connect()
        row = conn.execute(f"SELECT {WHERE}, count(*) FROM {t}").fetchone()
        self.assertEqual((self.node(row[0]), row[1]), ("primary", 2))

    def test_unlogged_table_read_goes_to_the_primary_with_parameters(self) -> None:
        t = self.unlogged_table()
        row = (
            self.connect()
            .execute(f"SELECT {WHERE}, count(*) FROM {t} WHERE id > %s", (0,))
            .fetchone()
        )
        self.assertEqual((self.node(row[0]), row[1]), ("primary", 2))

    def test_logged_table_read_goes_to_the_standby(self) -> None:
        t = self.table()
        self.assertEqual(
            self.served_by(self.connect(), f"SELECT {WHERE} FROM {t} UNION ALL SELECT {WHERE}"),
            "standby",
        )

    def test_alter_function_through_the_proxy_is_seen(self) -> None:
        f = self.function("VOLATILE")
        conn = self.connect()
        self.assertEqual(self.served_by(conn, f"SELECT {f}()"), "primary")
        conn.execute(f"ALTER FUNCTION {f}() STABLE")
        wait_for_replay(self.cluster)
        self.assertEqual(self.served_by(conn, f"SELECT {f}()"), "standby")

    def test_alter_table_set_unlogged_through_the_proxy_is_seen(self) -> None:
        t = self.table()
        conn = self.connect()
        conn.execute(f"INSERT INTO {t} VALUES (1)")
        wait_for_replay(self.cluster)
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE} FROM {t}"), "standby")
        conn.execute(f"ALTER TABLE {t} SET UNLOGGED")
        row = conn.execute(f"SELECT {WHERE}, count(*) FROM {t}").fetchone()
        self.assertEqual((self.node(row[0]), row[1]), ("primary", 1))


class UnloggedCheckOffTests(RoutingTestCase):
    """
    check_unlogged_table off: no lookup; the standby refuses the read, as
    with Pgpool-II.
    """

    settings = {"check_unlogged_table": False}

    def test_unlogged_table_read_reaches_the_standby(self) -> None:
        name = unique("catalog_unlogged")
        with psycopg.connect(
            libpq_dsn(
                host=self.cluster.primary.host,
                port=self.cluster.primary.port,
                user="app",
                password="app",
                dbname="app",
            ),
            autocommit=True,
        ) as direct:
            direct.execute(f"CREATE UNLOGGED TABLE {name} (id int)")
        wait_for_replay(self.cluster)
        with self.assertRaises(psycopg.errors.FeatureNotSupported) as raised:
            self.connect().execute(f"SELECT count(*) FROM {name}")
        self.assertIn("unlogged", str(raised.exception))


class CatalogRoutingWithQueryCacheTests(CatalogRoutingTests):
    """
    The same with the query cache on: routing and the cache share one
    relation cache (and its lookups).
    """

    settings = {"memory_cache_enabled": True}
