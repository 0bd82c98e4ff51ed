"""
End-to-end tests with pg8000 (pure Python, so these also run on PyPy)
through the proxy: its native API sends a statement without parameters as a
simple Query and one with parameters through the extended protocol, and
reports the server's error fields as they came.

The proxy is started once, lazily, by the first test that needs it (trial
does not call C{setUpClass}) and stopped when the test process exits.
"""

from __future__ import annotations

import platform

from twisted.trial.unittest import TestCase

from tests.support import text_passwd_proxy

try:
    import pg8000.native
except ImportError:  # pragma: no cover
    pg8000 = None  # type: ignore[assignment]

TEXTS = ["elephant 🐘", "漢字かな交じり文", "Ελληνικά", "quote ' and \\ backslash", ""]

#: The proxy for this module's tests: app has a TEXT pool_passwd entry.
PROXY = text_passwd_proxy()


class Pg8000Tests(TestCase):
    skip = None if pg8000 is not None else "pg8000 is not installed"

    def setUp(self) -> None:
        self.proxy = PROXY.get()

    def connect(self, database: str = "app", password: str = "app") -> "pg8000.native.Connection":
        conn = pg8000.native.Connection(
            user="app",
            password=password,
            host=self.proxy.host,
            port=self.proxy.port,
            database=database,
            timeout=10,
        )
        self.addCleanup(conn.close)
        return conn

    def test_pypy_runs_the_proxy_with_its_jit_thresholds(self) -> None:
        """
        On PyPy, the proxy process (C{twistd pgpool} on the interpreter
        running the tests) lowers the JIT thresholds at start (issue 16,
        twisted_pgpool/net/jit.py) and says so in its log.
        """
        if platform.python_implementation() != "PyPy":
            self.skipTest("the proxy runs on CPython here")
        from twisted_pgpool.net.jit import PROXY_JIT_PARAMETERS

        self.connect().run("select 1")
        self.assertIn(f"PyPy JIT parameters: {PROXY_JIT_PARAMETERS}", self.proxy.log_text())

    def test_simple_query(self) -> None:
        conn = self.connect()
        self.assertEqual(conn.run("select 6 * 7, 'forty-two'"), [[42, "forty-two"]])

    def test_several_statements_in_one_simple_query(self) -> None:
        conn = self.connect()
        # Only the simple protocol accepts this; pg8000 gathers the rows of
        # both results.
        self.assertEqual(conn.run("select 1; select 2"), [[1], [2]])

    def test_query_with_parameters(self) -> None:
        conn = self.connect()
        rows = conn.run("select :a::int + g, :b::text from generate_series(1, 2) g", a=40, b="x")
        self.assertEqual(rows, [[41, "x"], [42, "x"]])

    def test_prepared_statement_runs_repeatedly(self) -> None:
        conn = self.connect()
        statement = conn.prepare("select :n::int * 2")
        self.assertEqual([statement.run(n=n)[0][0] for n in range(4)], [0, 2, 4, 6])

    def test_error_keeps_sqlstate(self) -> None:
        conn = self.connect()
        with self.assertRaises(pg8000.native.DatabaseError) as caught:
            conn.run("select * from no_such_table")
        fields = caught.exception.args[0]
        self.assertEqual((fields["S"], fields["C"]), ("ERROR", "42P01"))

    def test_connection_is_usable_after_error(self) -> None:
        conn = self.connect()
        with self.assertRaises(pg8000.native.DatabaseError):
            conn.run("select 1/0")
        self.assertEqual(conn.run("select 'after'"), [["after"]])

    def test_unicode_round_trips_as_parameter(self) -> None:
        conn = self.connect()
        self.assertEqual([conn.run("select :t::text", t=t)[0][0] for t in TEXTS], TEXTS)

    def test_unicode_round_trips_as_literal(self) -> None:
        conn = self.connect()
        got = [conn.run(f"select {pg8000.native.literal(t)}")[0][0] for t in TEXTS]
        self.assertEqual(got, TEXTS)

    def test_wrong_password_keeps_sqlstate_28P01(self) -> None:
        with self.assertRaises(pg8000.native.DatabaseError) as caught:
            self.connect(password="wrong")
        fields = caught.exception.args[0]
        self.assertEqual((fields["S"], fields["C"]), ("FATAL", "28P01"))

    def test_unknown_database_keeps_sqlstate_3D000(self) -> None:
        # app authenticates with the proxy first; the server's refusal of the
        # database must still reach the client word for word.
        with self.assertRaises(pg8000.native.DatabaseError) as caught:
            self.connect(database="no_such_database")
        fields = caught.exception.args[0]
        self.assertEqual(
            (fields["C"], fields["M"]), ("3D000", 'database "no_such_database" does not exist')
        )
