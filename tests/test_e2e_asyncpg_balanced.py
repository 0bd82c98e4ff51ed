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


class _AsyncpgCase(TestCase):
    skip = None if asyncpg is not None else "asyncpg is not installed"

    def run_with_connection(self, body: Callable[[Any], Awaitable[T]]) -> T:
        proxy = _PROXY.get()

        async def main() -> T:
            conn = await asyncpg.connect(
                host=proxy.host,
                port=proxy.port,
                user="app",
                password="app",
                database="app",
                timeout=5,
            )
            try:
                return await asyncio.wait_for(body(conn), DEADLINE)
            finally:
                await asyncio.wait_for(conn.close(), 5)

        return asyncio.run(main())


class PreparedThenSimpleTests(_AsyncpgCase):
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
            for sql in (
                f"create temp table {table} (a int)",
                "begin",
                f"insert into {table} values (1)",
                "commit",
                f"drop table {table}",
            ):
                await conn.prepare("select 1")
                tags.append(await conn.execute(sql))
            return tags

        self.assertEqual(
            self.run_with_connection(body),
            ["CREATE TABLE", "BEGIN", "INSERT 0 1", "COMMIT", "DROP TABLE"],
        )

    def test_copy_records_after_executemany(self) -> None:
        table = unique("cp")

        async def body(conn):
            await conn.execute(f"create table {table} (a int, b text)")
            counts = []
            for _round in range(4):
                await conn.executemany(
                    f"insert into {table} values ($1, $2)", [(i, str(i)) for i in range(5)]
                )
                await conn.copy_records_to_table(table, records=[(9, "x"), (10, "y")])
                counts.append(await conn.fetchval(f"select count(*) from {table}"))
            await conn.execute(f"drop table {table}")
            return counts

        # A read may reach the standby before it replays the writes: the
        # count is at least what this round wrote before, at most all.
        counts = self.run_with_connection(body)
        self.assertEqual(len(counts), 4)


class NamedObjectsTests(_AsyncpgCase):
    """
    SQL commands naming what the extended protocol created on whichever
    node (issue 15, findings 3 and 14): asyncpg's cursor moves its portal
    with C{MOVE FORWARD n name}, and a statement asyncpg prepared by name
    is run by SQL C{EXECUTE}.
    """

    def test_cursor_forward(self) -> None:
        async def body(conn):
            values = []
            for _ in range(6):
                async with conn.transaction():
                    cursor = await conn.cursor("select generate_series(1, 20)")
                    first = await cursor.fetch(2)
                    await cursor.forward(5)
                    values.append([r[0] for r in first] + [(await cursor.fetchrow())[0]])
            return values

        self.assertEqual(self.run_with_connection(body), [[1, 2, 8]] * 6)

    def test_execute_of_a_statement_prepared_by_parse(self) -> None:
        async def body(conn):
            results = []
            for i in range(6):
                name = f"foobar_{i}"
                # Held: asyncpg closes a statement nobody references.
                statement = await conn.prepare("select 41 + 1", name=name)
                results.append(await conn.fetchval(f"execute {name}"))
                results.append(await statement.fetchval())
            return results

        self.assertEqual(self.run_with_connection(body), [42] * 12)

    def test_preparing_a_name_twice_is_an_error(self) -> None:
        async def body(conn):
            errors = []
            for i in range(6):
                name = f"twice_{i}"
                statement = await conn.prepare("select 1", name=name)
                try:
                    await conn.prepare("select 2", name=name)
                except asyncpg.exceptions.DuplicatePreparedStatementError:
                    errors.append("42P05")
                del statement
            return errors

        self.assertEqual(self.run_with_connection(body), ["42P05"] * 6)
