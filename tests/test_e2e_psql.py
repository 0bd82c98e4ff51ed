"""
End-to-end tests with the C{psql} program through the proxy: what a person
at a terminal sees, including C{\\copy}, error codes and exit statuses.

The proxy is started once, lazily, by the first test that needs it (trial
does not call C{setUpClass}) and stopped when the test process exits.
"""

from __future__ import annotations

import subprocess

from twisted.trial.unittest import TestCase

from tests.support import PSQL, run_psql, text_passwd_proxy, unique

#: Bound on one psql run; they take a few milliseconds when all is well.

#: The proxy for this module's tests: app has a TEXT pool_passwd entry.
PROXY = text_passwd_proxy()


class PsqlTests(TestCase):
    skip = None if PSQL else "psql is not installed"

    def setUp(self) -> None:
        self.proxy = PROXY.get()

    def psql(
        self, *args: str, password: str = "app", user: str = "app"
    ) -> subprocess.CompletedProcess:
        return run_psql(self.proxy, *args, user=user, password=password)

    def assert_succeeded(self, result: subprocess.CompletedProcess) -> None:
        self.assertEqual(result.returncode, 0, f"psql failed:\n{result.stderr}")

    def test_select_prints_result(self) -> None:
        result = self.psql("-c", "select 6 * 7, 'answer ✓'")
        self.assert_succeeded(result)
        self.assertEqual(result.stdout, "42|answer ✓\n")

    def test_several_commands_share_one_session(self) -> None:
        result = self.psql(
            "-c", "set application_name = 'psql-test'", "-c", "show application_name"
        )
        self.assert_succeeded(result)
        self.assertEqual(result.stdout.splitlines()[-1], "psql-test")

    def test_copy_out_writes_rows_to_client_file(self) -> None:
        path = self.mktemp()
        result = self.psql(
            "-c", f"\\copy (select g, 'row ' || g from generate_series(1, 1000) g) to '{path}'"
        )
        self.assert_succeeded(result)
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        self.assertEqual((len(lines), lines[0], lines[-1]), (1000, "1\trow 1", "1000\trow 1000"))

    def test_copy_in_loads_rows_from_client_file(self) -> None:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(f"{n}\tname {n} 漢字\n" for n in range(1, 5001))
        table = unique("psql_copy")
        result = self.psql(
            "-c",
            f"create temp table {table} (n int, t text)",
            "-c",
            f"\\copy {table} from '{path}'",
            "-c",
            f"select count(*), sum(n), count(*) filter (where t like '%漢字') from {table}",
        )
        self.assert_succeeded(result)
        self.assertEqual(result.stdout.splitlines()[-1], "5000|12502500|5000")

    def test_error_shows_sqlstate(self) -> None:
        result = self.psql(
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "select * from no_such_table",
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn('ERROR:  42P01: relation "no_such_table" does not exist', result.stderr)

    def test_script_stops_at_first_error(self) -> None:
        result = self.psql(
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "select 'before'",
            "-c",
            "select 1/0",
            "-c",
            "select 'after'",
        )
        self.assertEqual((result.returncode, result.stdout), (1, "before\n"))
        self.assertIn("division by zero", result.stderr)

    def test_wrong_password_exits_with_status_2(self) -> None:
        result = self.psql("-c", "select 1", password="wrong")
        self.assertEqual(result.returncode, 2)
        self.assertIn('password authentication failed for user "app"', result.stderr)
