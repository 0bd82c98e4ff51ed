"""
End-to-end tests with asyncpg through the proxy.  asyncpg speaks only the
extended query protocol, names its prepared statements, pipelines
C{executemany}, uses binary COPY, and cancels a query when its task is
cancelled: each of those must pass through the proxy unharmed.

Each test runs its own event loop with C{asyncio.run}.  The proxy is
started once, lazily, by the first test that needs it (trial does not call
C{setUpClass}) and stopped when the test process exits.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any, Awaitable, Callable, TypeVar

from twisted.trial.unittest import TestCase

from tests.support import text_passwd_proxy, unique

try:
    import asyncpg
except ImportError:  # pragma: no cover - e.g. PyPy, where asyncpg has no build
    asyncpg = None  # type: ignore[assignment]

T = TypeVar("T")

#: A cancelled query must leave the connection usable within this many
#: seconds of the call that was cancelled being started.
CANCEL_BOUND = 2.0

# Protocol transparency, on one server: a statement and the catalog
# lookups that inspect it (pg_prepared_statements) must meet.
# Balanced asyncpg workloads are in test_e2e_routing.
#: The proxy for this module's tests: app has a TEXT pool_passwd entry.
PROXY = text_passwd_proxy(load_balance_mode=False)


class AsyncpgTests(TestCase):
    skip = None if asyncpg is not None else "asyncpg is not installed"

    def setUp(self) -> None:
        self.proxy = PROXY.get()

    def run_with_connection(self, body: Callable[[Any], Awaitable[T]]) -> T:
        """
        Connect through the proxy as app, run C{body(conn)} and close.
        """

        async def main() -> T:
            conn = await asyncpg.connect(
                host=self.proxy.host,
                port=self.proxy.port,
                user="app",
                password="app",
                database="app",
                timeout=5,
            )
            try:
                return await body(conn)
            finally:
                await asyncio.wait_for(conn.close(), 5)

        return asyncio.run(main())

    def test_fetch_with_parameters(self) -> None:
        async def body(conn):
            return await conn.fetch(
                "select $1::int + g as n, $2::text as t from generate_series(1, 3) g", 10, "ü漢🐘"
            )

        rows = self.run_with_connection(body)
        self.assertEqual([tuple(r) for r in rows], [(11, "ü漢🐘"), (12, "ü漢🐘"), (13, "ü漢🐘")])

    def test_null_and_bytea_round_trip(self) -> None:
        data = bytes(range(256)) * 16

        async def body(conn):
            return tuple(await conn.fetchrow("select $1::text, $2::bytea", None, data))

        self.assertEqual(self.run_with_connection(body), (None, data))

    def test_named_prepared_statement_is_reused(self) -> None:
        marker = unique("asyncpg_prepared")

        async def body(conn):
            statement = await conn.prepare(f"select $1::int * 3 as {marker}")
            results = [await statement.fetchval(i) for i in range(6)]
            parsed = await conn.fetchval(
                "select count(*) from pg_prepared_statements where statement like $1",
                f"%{marker}%",
            )
            return results, parsed

        results, parsed = self.run_with_connection(body)
        self.assertEqual((results, parsed), ([0, 3, 6, 9, 12, 15], 1))

    def test_large_result_arrives_intact(self) -> None:
        async def body(conn):
            return await conn.fetch(
                "select g, repeat('x', g % 50) as pad from generate_series(1, 100000) g"
            )

        rows = self.run_with_connection(body)
        self.assertEqual(len(rows), 100000)
        self.assertEqual(sum(r["g"] for r in rows), 100000 * 100001 // 2)
        self.assertEqual(sum(len(r["pad"]) for r in rows), sum(g % 50 for g in range(1, 100001)))

    def test_executemany_inserts_every_row(self) -> None:
        table = unique("many")

        async def body(conn):
            await conn.execute(f"create temp table {table} (n int, t text)")
            await conn.executemany(
                f"insert into {table} values ($1, $2)", [(n, f"t{n}") for n in range(1, 2001)]
            )
            return tuple(await conn.fetchrow(f"select count(*), sum(n) from {table}"))

        self.assertEqual(self.run_with_connection(body), (2000, 2001000))

    def test_rolled_back_transaction_leaves_no_rows(self) -> None:
        table = unique("txn")

        class Abort(Exception):
            pass

        async def body(conn):
            await conn.execute(f"create temp table {table} (n int)")
            try:
                async with conn.transaction():
                    await conn.execute(f"insert into {table} values (1), (2)")
                    raise Abort()
            except Abort:
                pass
            return await conn.fetchval(f"select count(*) from {table}")

        self.assertEqual(self.run_with_connection(body), 0)

    def test_copy_records_to_table_loads_every_row(self) -> None:
        table = unique("copy_in")

        async def body(conn):
            await conn.execute(f"create temp table {table} (n int, t text)")
            await conn.copy_records_to_table(
                table, records=[(n, f"r{n} ✓") for n in range(1, 5001)]
            )
            return tuple(await conn.fetchrow(f"select count(*), sum(n), min(t) from {table}"))

        self.assertEqual(self.run_with_connection(body), (5000, 12502500, "r1 ✓"))

    def test_copy_from_query_writes_every_row(self) -> None:
        output = io.BytesIO()

        async def body(conn):
            return await conn.copy_from_query(
                "select g, 'v' || g from generate_series(1, 5000) g", output=output, format="csv"
            )

        status = self.run_with_connection(body)
        lines = output.getvalue().decode("utf-8").splitlines()
        self.assertEqual(
            (status, len(lines), lines[0], lines[-1]), ("COPY 5000", 5000, "1,v1", "5000,v5000")
        )

    def test_timed_out_query_is_canceled_and_connection_stays_usable(self) -> None:
        async def body(conn):
            # A guard, not the mechanism under test: a lost cancel fails the
            # time bound after 8 s instead of hanging for 30.
            await conn.execute("set statement_timeout = '8s'")
            started = time.monotonic()
            try:
                await asyncio.wait_for(conn.fetch("select pg_sleep(30)"), timeout=0.5)
            except asyncio.TimeoutError:
                timed_out = True
            else:
                timed_out = False
            value = await conn.fetchval("select 'usable'")
            return timed_out, value, time.monotonic() - started

        timed_out, value, elapsed = self.run_with_connection(body)
        self.assertEqual((timed_out, value), (True, "usable"))
        self.assertLess(elapsed, CANCEL_BOUND)

    def test_undefined_table_keeps_sqlstate(self) -> None:
        async def body(conn):
            try:
                await conn.fetch("select * from no_such_table")
            except asyncpg.exceptions.UndefinedTableError as e:
                return e.sqlstate
            return None

        self.assertEqual(self.run_with_connection(body), "42P01")

    def test_connection_is_usable_after_error(self) -> None:
        async def body(conn):
            try:
                await conn.fetch("select 1/0")
            except asyncpg.exceptions.DivisionByZeroError:
                pass
            return await conn.fetchval("select 7")

        self.assertEqual(self.run_with_connection(body), 7)
