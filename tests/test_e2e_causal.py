"""
Read-your-writes end to end: a real primary and streaming standby, the
proxy as a child process, psycopg and asyncpg clients.

Weights are 0:1 (as in tests/test_e2e_routing.py), so every balanced read
goes to the standby unless read-your-writes moves it.  To make the standby
stale on purpose, a test pauses WAL replay on it (C{pg_wal_replay_pause()})
and resumes it in its clean-up, so the shared cluster is never left paused.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Optional, Tuple

from twisted.trial.unittest import SkipTest

from tests.support import unique
from tests.test_e2e_routing import (
    SKIP_ASYNCPG,
    WHERE,
    RoutingTestCase,
    asyncpg,
    psycopg,
    run_async,
    superuser_dsn,
    wait_for_replay,
)
from twisted_pgpool.testing.waiting import wait_for

LSN = re.compile(r"^[0-9A-F]+/[0-9A-F]+$")


class CausalTestCase(RoutingTestCase):
    """
    Helpers to pause the standby and to read which node answered.
    """

    def pause_replay(self) -> None:
        with psycopg.connect(
            superuser_dsn(self.cluster, self.cluster.standby), autocommit=True
        ) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
            wait_for(
                lambda: (
                    conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] == "paused"
                ),
                what="replay to pause",
            )
        self.addCleanup(self.resume_replay)

    def resume_replay(self) -> None:
        with psycopg.connect(
            superuser_dsn(self.cluster, self.cluster.standby), autocommit=True
        ) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

    def make_table(self) -> str:
        name = unique("causal")
        with psycopg.connect(
            superuser_dsn(self.cluster, self.cluster.primary, "app"), autocommit=True
        ) as conn:
            conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
            conn.execute(f"GRANT ALL ON {name} TO app")
        wait_for_replay(self.cluster)
        return name

    def read_row(self, conn: Any, table: str, key: int) -> Tuple[int, str]:
        """
        (rows with id C{key}, the node that answered).
        """
        count, port = conn.execute(
            f"SELECT count(*), {WHERE} FROM {table} WHERE id = {key}"
        ).fetchone()
        return count, self.node(port)

    def stats(self, conn: Any, node_id: int = 1) -> dict:
        cur = conn.execute("SHOW POOL_CAUSAL_STATS")
        columns = [d.name for d in cur.description]
        rows = [dict(zip(columns, row)) for row in cur.fetchall()]
        return rows[node_id]


class SessionReadYourWritesTests(CausalTestCase):
    """
    The default, C{read_your_writes: session}.
    """

    def test_own_writes_are_read_back_while_the_standby_is_paused(self) -> None:
        table = self.make_table()
        writer = self.connect()
        bystander = self.connect()
        self.assertEqual(self.read_row(bystander, table, 0), (0, "standby"))
        self.pause_replay()
        for key in range(100):
            writer.execute(f"INSERT INTO {table} VALUES ({key}, 'x')")
            self.assertEqual(self.read_row(writer, table, key), (1, "primary"))
        # A session that wrote nothing still reads the (stale) standby.
        self.assertEqual(self.read_row(bystander, table, 5), (0, "standby"))
        self.assertGreaterEqual(int(self.stats(writer)["reads_moved_to_primary"]), 100)

    def test_reads_return_to_the_standby_once_it_has_caught_up(self) -> None:
        table = self.make_table()
        conn = self.connect()
        self.pause_replay()
        conn.execute(f"INSERT INTO {table} VALUES (1, 'x')")
        self.assertEqual(self.read_row(conn, table, 1), (1, "primary"))
        self.resume_replay()
        wait_for_replay(self.cluster)
        wait_for(
            lambda: self.read_row(conn, table, 1) == (1, "standby"),
            timeout=5,
            what="reads to return to the standby",
        )

    def test_the_commit_of_an_explicit_transaction_is_read_back(self) -> None:
        table = self.make_table()
        conn = self.connect()
        self.pause_replay()
        with conn.transaction():
            conn.execute(f"INSERT INTO {table} VALUES (7, 'x')")
        self.assertEqual(self.read_row(conn, table, 7), (1, "primary"))

    def test_a_rolled_back_write_leaves_reads_on_the_standby(self) -> None:
        table = self.make_table()
        conn = self.connect()
        self.pause_replay()
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {table} VALUES (8, 'x')")
        conn.execute("ROLLBACK")
        self.assertEqual(self.read_row(conn, table, 8), (0, "standby"))

    def test_extended_protocol_writes_are_read_back(self) -> None:
        table = self.make_table()
        conn = self.connect()
        self.pause_replay()
        for key in range(20):
            conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (key, "x"))
            count, port = conn.execute(
                f"SELECT count(*), {WHERE} FROM {table} WHERE id = %s", (key,)
            ).fetchone()
            self.assertEqual((count, self.node(port)), (1, "primary"))

    def test_copy_from_is_read_back(self) -> None:
        table = self.make_table()
        conn = self.connect()
        self.pause_replay()
        with conn.cursor().copy(f"COPY {table} (id, v) FROM STDIN") as copy:
            for key in range(10):
                copy.write_row((key, "copied"))
        self.assertEqual(self.read_row(conn, table, 9), (1, "primary"))

    def test_commit_reports_the_causal_token(self) -> None:
        table = self.make_table()
        conn = self.connect()
        self.assertIsNone(conn.info.parameter_status("pgpool.commit_lsn"))
        conn.execute(f"INSERT INTO {table} VALUES (1, 'x')")
        first = conn.info.parameter_status("pgpool.commit_lsn")
        self.assertRegex(first, LSN)
        conn.execute(f"INSERT INTO {table} VALUES (2, 'x')")
        second = conn.info.parameter_status("pgpool.commit_lsn")
        self.assertGreater(lsn_value(second), lsn_value(first))
        # The token is a real position: the primary has reached it.
        with psycopg.connect(
            superuser_dsn(self.cluster, self.cluster.primary), autocommit=True
        ) as direct:
            self.assertTrue(
                direct.execute("SELECT pg_current_wal_lsn() >= %s::pg_lsn", (second,)).fetchone()[0]
            )

    def test_a_token_passed_to_another_session_makes_its_reads_see_the_write(self) -> None:
        table = self.make_table()
        writer = self.connect()
        reader = self.connect()
        self.pause_replay()
        writer.execute(f"INSERT INTO {table} VALUES (3, 'x')")
        token = writer.info.parameter_status("pgpool.commit_lsn")
        # Without the token the other session may read the stale standby.
        self.assertEqual(self.read_row(reader, table, 3), (0, "standby"))
        reader.execute(f"SET pgpool.min_lsn = '{token}'")
        self.assertEqual(reader.execute("SHOW pgpool.min_lsn").fetchone()[0], token)
        self.assertEqual(self.read_row(reader, table, 3), (1, "primary"))
        reader.execute("RESET pgpool.min_lsn")
        self.assertEqual(self.read_row(reader, table, 3), (0, "standby"))

    def test_a_token_given_as_a_startup_option(self) -> None:
        table = self.make_table()
        writer = self.connect()
        self.pause_replay()
        writer.execute(f"INSERT INTO {table} VALUES (4, 'x')")
        token = writer.info.parameter_status("pgpool.commit_lsn")
        reader = self.connect(options=f"-c pgpool.min_lsn={token}")
        self.assertEqual(self.read_row(reader, table, 4), (1, "primary"))
        # The proxy kept the option to itself: the server never saw it.
        self.assertIsNone(
            reader.execute("SELECT current_setting('pgpool.min_lsn', true)").fetchone()[0]
        )

    def test_an_invalid_token_is_an_error_and_the_session_goes_on(self) -> None:
        conn = self.connect()
        with self.assertRaises(psycopg.errors.InvalidTextRepresentation):
            conn.execute("SET pgpool.min_lsn = 'yesterday'")
        self.assertEqual(conn.execute("SELECT 1").fetchone()[0], 1)

    def test_an_invalid_startup_token_is_refused(self) -> None:
        with self.assertRaises(psycopg.OperationalError) as caught:
            psycopg.connect(self.proxy.dsn(connect_timeout=5, options="-c pgpool.min_lsn=nonsense"))
        self.assertIn("pg_lsn", str(caught.exception))

    def test_asyncpg_reads_the_token_and_reads_its_writes(self) -> None:
        if asyncpg is None:
            raise SkipTest(SKIP_ASYNCPG)
        table = self.make_table()
        self.pause_replay()

        async def scenario() -> Tuple[Optional[str], list]:
            conn = await asyncpg.connect(
                host=self.proxy.host,
                port=self.proxy.port,
                user="app",
                password="app",
                database="app",
            )
            try:
                seen = []
                for key in range(10):
                    await conn.execute(f"INSERT INTO {table} VALUES ($1, 'a')", key)
                    seen.append(
                        tuple(
                            await conn.fetchrow(
                                f"SELECT count(*), {WHERE} FROM {table} WHERE id = $1", key
                            )
                        )
                    )
                token = getattr(conn.get_settings(), "pgpool.commit_lsn", None)
                return token, seen
            finally:
                await conn.close()

        token, seen = run_async(scenario)
        self.assertRegex(token, LSN)
        self.assertEqual(seen, [(1, self.primary_port)] * 10)


class ReadYourWritesOffTests(CausalTestCase):
    """
    C{read_your_writes: off}: Pgpool-II's behaviour, a stale standby
    serves the read that follows a write.
    """

    settings = {"read_your_writes": "off"}

    def test_a_paused_standby_serves_the_stale_read(self) -> None:
        table = self.make_table()
        conn = self.connect()
        self.pause_replay()
        conn.execute(f"INSERT INTO {table} VALUES (1, 'x')")
        self.assertEqual(self.read_row(conn, table, 1), (0, "standby"))
        self.assertIsNone(conn.info.parameter_status("pgpool.commit_lsn"))


class CausalWaitTests(CausalTestCase):
    """
    C{causal_wait_timeout}: a read may wait for the standby to catch up.
    """

    settings = {"causal_wait_timeout": "3s"}

    def test_a_read_waits_for_the_standby_to_replay_the_write(self) -> None:
        table = self.make_table()
        conn = self.connect()
        self.pause_replay()
        conn.execute(f"INSERT INTO {table} VALUES (1, 'x')")
        timer = threading.Timer(0.3, self.resume_replay)
        timer.start()
        self.addCleanup(timer.cancel)
        started = time.monotonic()
        self.assertEqual(self.read_row(conn, table, 1), (1, "standby"))
        waited = time.monotonic() - started
        self.assertGreaterEqual(waited, 0.25)
        self.assertLess(waited, 3.0)
        stats = self.stats(conn)
        self.assertGreaterEqual(int(stats["reads_waited"]), 1)
        self.assertGreater(float(stats["wait_time_total_ms"]), 200.0)


class CausalWaitTimeoutTests(CausalTestCase):
    """
    A standby that does not catch up in time: the read goes to the primary.
    """

    settings = {"causal_wait_timeout": 200}

    def test_a_read_falls_back_to_the_primary_after_the_timeout(self) -> None:
        table = self.make_table()
        conn = self.connect()
        self.pause_replay()
        conn.execute(f"INSERT INTO {table} VALUES (1, 'x')")
        started = time.monotonic()
        self.assertEqual(self.read_row(conn, table, 1), (1, "primary"))
        waited = time.monotonic() - started
        self.assertGreaterEqual(waited, 0.19)
        self.assertLess(waited, 2.0)


def lsn_value(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)
