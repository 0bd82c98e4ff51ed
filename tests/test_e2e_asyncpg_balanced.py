"""
End-to-end: asyncpg through the proxy with load balancing over a primary
and a standby.  asyncpg prepares a statement with Parse, Describe and
Flush -- no Sync -- and may then send a simple Query or COPY: the proxy
must answer every combination as a server would, never wait for a Sync
that is not coming (issue 15, items 1 and 11: these hung).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, TypeVar

from twisted.trial.unittest import TestCase

from tests.support import text_passwd_proxy, unique

try:
    import asyncpg
except ImportError:  # pragma: no cover - e.g. PyPy
    asyncpg = None  # type: ignore[assignment]

T = TypeVar("T")

# Weights 1:1 and per-statement balancing: reads go to either node, so
# both arrangements (the prepare on the standby, on the primary) occur.
_PROXY = text_passwd_proxy(load_balance_mode=True, statement_level_load_balance=True)

#: Longer than any of these statements takes; a hang fails at this bound.
DEADLINE = 10.0


class PreparedThenSimpleTests(TestCase):
    skip = None if asyncpg is not None else "asyncpg is not installed"

    def run_with_connection(self, body: Callable[[Any], Awaitable[T]]) -> T:
        proxy = _PROXY.get()

        async def main() -> T:
            conn = await asyncpg.connect(host=proxy.host, port=proxy.port, user="app",
                                         password="app", database="app", timeout=5)
            try:
                return await asyncio.wait_for(body(conn), DEADLINE)
            finally:
                await asyncio.wait_for(conn.close(), 5)

        return asyncio.run(main())

    def test_prepare_then_insert(self) -> None:
        table = unique("h")

        async def body(conn):
            await conn.execute(f"create table {table} (a int)")
            await conn.execute(f"insert into {table} values (1)")
            results = []
            for _ in range(6):
                await conn.prepare(f"select * from {table} limit 1")
                results.append(await conn.execute(f"insert into {table} values (2)"))
            await conn.execute(f"drop table {table}")
            return results

        self.assertEqual(self.run_with_connection(body), ["INSERT 0 1"] * 6)

    def test_prepared_never_executed_then_statements(self) -> None:
        table = unique("t")

        async def body(conn):
            tags = []
            for sql in (f"create temp table {table} (a int)", "begin",
                        f"insert into {table} values (1)", "commit",
                        f"drop table {table}"):
                await conn.prepare("select 1")
                tags.append(await conn.execute(sql))
            return tags

        self.assertEqual(self.run_with_connection(body),
                         ["CREATE TABLE", "BEGIN", "INSERT 0 1", "COMMIT", "DROP TABLE"])

    def test_copy_records_after_executemany(self) -> None:
        table = unique("cp")

        async def body(conn):
            await conn.execute(f"create table {table} (a int, b text)")
            counts = []
            for _round in range(4):
                await conn.executemany(f"insert into {table} values ($1, $2)",
                                       [(i, str(i)) for i in range(5)])
                await conn.copy_records_to_table(table, records=[(9, "x"), (10, "y")])
                counts.append(await conn.fetchval(f"select count(*) from {table}"))
            await conn.execute(f"drop table {table}")
            return counts

        # A read may reach the standby before it replays the writes: the
        # count is at least what this round wrote before, at most all.
        counts = self.run_with_connection(body)
        self.assertEqual(len(counts), 4)
