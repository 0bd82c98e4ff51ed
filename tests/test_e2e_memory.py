"""
The proxy's resident memory while logged-in clients send it large
messages (issue 13, finding 4), on a real proxy process against the shared
primary and standby.

Before the fix, every message of a watched type was read whole: four
sessions sending a 64 MiB Query each grew the proxy by about 500 MB, and a
client announcing a 1 GB message was buffered for as much as it sent.  Now
the messages the proxy only passes on stream through, and one it must read
whole is refused at its header past C{max_buffered_message_length}
(C{benchmarks/memory_bench.py} has the numbers).

@var MEMORY_BOUND: how much the proxy may grow while four sessions stream
    64 MiB each through it.  Measured growth: under 1 MB.  What a session
    may hold is one message head (64 KiB), what it keeps while waiting
    (256 KiB before it stops reading) and its transports' buffers (about
    64 KiB each way, plus one read chunk): about 0.5 MB for four sessions.
    The bound leaves room for the reactor's and the allocator's own
    variation; the unfixed proxy exceeds it thirtyfold.
@var RETURN_BOUND: how far above its baseline (after one warm-up session)
    the proxy's RSS may stay once the sessions are closed.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from twisted.trial.unittest import SynchronousTestCase

from tests.rawclient import RawClient, all_at_once, long_bind_batch, long_query, row_values
from tests.support import ProxyProcess, cluster_or_skip
from tests.wire import error_fields
from twisted_pgpool.testing.processes import RssSampler, settled_rss

try:
    import psycopg
except ImportError:  # pragma: no cover
    psycopg = None

SKIP_PSYCOPG = "psycopg is not installed" if psycopg is None else None
MIB = 1024 * 1024
#: What each session sends.
SIZE = 64 * MIB
SESSIONS = 4
MEMORY_BOUND = 16 * 1000 * 1000
RETURN_BOUND = 10 * 1000 * 1000


class MemoryTestCase(SynchronousTestCase):
    """
    A proxy per test; C{routed} ones balance reads over both nodes (the
    standby has all the weight) for clients the proxy authenticates.
    """

    routed = False
    #: More configuration for the proxy.
    settings: Dict[str, Any] = {}

    def setUp(self) -> None:
        cluster = cluster_or_skip()
        backends = cluster.backends_config()
        if self.routed:
            if psycopg is None:
                self.skipTest(SKIP_PSYCOPG)
            backends[0]["weight"] = 0
        self.standby_port = cluster.standby.port
        self.primary_port = cluster.primary.port
        config: Dict[str, Any] = {
            "backends": backends if self.routed else backends[:1],
            "pool_passwd": "pool_passwd" if self.routed else "",
            "sr_check_user": "postgres",
        }
        config.update(self.settings)
        self.proxy = ProxyProcess(config, extra_files={"pool_passwd": "app:TEXTapp\n"})
        self.proxy.start()
        self.addCleanup(self.proxy.stop)
        pid = self.proxy.pid
        assert pid is not None
        self.pid = pid
        # The first session imports and allocates what all share.
        client = self.connect()
        client.send(long_query(1024))
        self.assertEqual(row_values(client.until_ready()), [b"1001"])
        client.close()
        self.baseline = settled_rss(pid)

    def connect(self) -> RawClient:
        if self.routed:
            return RawClient.taken_over(self.proxy.dsn())
        return RawClient.trusted(self.proxy.host, self.proxy.port)

    def send_all_at_once(self, message: bytes, sessions: int = SESSIONS) -> List[Any]:
        """
        Each of C{sessions} sessions sends C{message} and reads its
        answer, all at the same time; returns the answers, and the peak
        RSS in C{self.peak}.
        """
        clients = [self.connect() for _ in range(sessions)]
        with RssSampler(self.pid) as sampler:
            answers = all_at_once(clients, message)
        self.peak = sampler.peak
        for client in clients:
            client.close()
        return answers

    def assert_grew_less_than(self, bound: int, what: str) -> None:
        growth = self.peak - self.baseline
        self.assertLess(growth, bound, f"the proxy grew by {growth / 1e6:.1f} MB while {what}")

    def assert_back_to_the_baseline(self) -> None:
        after = settled_rss(self.pid)
        self.assertLess(
            after - self.baseline,
            RETURN_BOUND,
            f"the proxy's RSS is {(after - self.baseline) / 1e6:.1f} MB above its "
            "baseline after the sessions closed",
        )


class DirectSessionMemoryTests(MemoryTestCase):
    """
    Sessions with one node: Query, Parse and Bind stream through.
    """

    def test_long_queries_stream_through(self) -> None:
        answers = self.send_all_at_once(long_query(SIZE))
        self.assertEqual([row_values(a) for a in answers], [[str(SIZE - 23).encode()]] * SESSIONS)
        self.assert_grew_less_than(
            MEMORY_BOUND, f"{SESSIONS} sessions sent {SIZE // MIB} MiB queries"
        )
        self.assert_back_to_the_baseline()

    def test_long_bind_values_stream_through(self) -> None:
        answers = self.send_all_at_once(long_bind_batch(SIZE))
        self.assertEqual([row_values(a) for a in answers], [[str(SIZE).encode()]] * SESSIONS)
        self.assert_grew_less_than(
            MEMORY_BOUND, f"{SESSIONS} sessions sent {SIZE // MIB} MiB Bind values"
        )
        self.assert_back_to_the_baseline()


class RoutedSessionMemoryTests(MemoryTestCase):
    """
    Sessions that balance reads over two nodes: a long Bind streams to
    the primary; a Query is read whole, within max_buffered_message_length.
    """

    routed = True

    def test_session_balances_its_reads(self) -> None:
        client = self.connect()
        self.addCleanup(client.close)
        client.send(
            b"Q"
            + (len("SELECT inet_server_port()") + 5).to_bytes(4, "big")
            + b"SELECT inet_server_port()\x00"
        )
        self.assertEqual(row_values(client.until_ready()), [str(self.standby_port).encode()])

    def test_long_bind_values_stream_to_the_primary(self) -> None:
        answers = self.send_all_at_once(
            long_bind_batch(SIZE, "SELECT length($1::bytea), inet_server_port()")
        )
        self.assertEqual(
            [(row_values(a), row_values(a, 1)) for a in answers],
            [([str(SIZE).encode()], [str(self.primary_port).encode()])] * SESSIONS,
        )
        self.assert_grew_less_than(
            MEMORY_BOUND, f"{SESSIONS} sessions sent {SIZE // MIB} MiB Bind values"
        )
        self.assert_back_to_the_baseline()

    def test_one_gib_query_is_refused_at_once(self) -> None:
        client = self.connect()
        self.addCleanup(client.close)
        started = time.monotonic()
        with RssSampler(self.pid) as sampler:
            client.send(b"Q" + ((1 << 30) - 1).to_bytes(4, "big") + b"SELECT '")
            client.sock.settimeout(10)
            received = client.until_ready()
        took = time.monotonic() - started
        self.peak = sampler.peak
        fields = error_fields(received[-1][1])
        self.assertEqual(
            (received[-1][0], fields["S"], fields["C"], fields["M"]),
            (
                ord("E"),
                "FATAL",
                "54000",
                "message too large: Query message of 1073741823 bytes exceeds "
                "max_buffered_message_length (16777216 bytes)",
            ),
        )
        self.assertLess(took, 5.0)
        self.assert_grew_less_than(RETURN_BOUND, "a 1 GiB query was announced")
        # The proxy goes on serving.
        other = self.connect()
        other.send(long_query(1024))
        self.assertEqual(row_values(other.until_ready()), [b"1001"])
        other.close()

    def test_query_under_the_limit_is_read_whole_and_memory_returns(self) -> None:
        size = 8 * MIB
        answers = self.send_all_at_once(long_query(size))
        self.assertEqual([row_values(a) for a in answers], [[str(size - 23).encode()]] * SESSIONS)
        self.assert_back_to_the_baseline()


class RealClientLongValueTests(MemoryTestCase):
    """
    Real drivers sending large values through a load-balancing session:
    the streamed Bind reaches the primary intact, in and out of
    transactions and pipelines.  The values (5 MiB) are longer than the
    proxy may read whole here: they can only have been streamed.
    """

    routed = True
    settings = {"max_buffered_message_length": "1MB"}

    def setUp(self) -> None:
        super().setUp()
        import hashlib
        import uuid

        self.table = f"memory_{uuid.uuid4().hex[:10]}"
        self.value = bytes(range(256)) * (5 * MIB // 256)
        self.digest = hashlib.md5(self.value).hexdigest()
        with psycopg.connect(self.proxy.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {self.table} (id int, b bytea)")
        self.addCleanup(self.drop_table)

    def drop_table(self) -> None:
        with psycopg.connect(self.proxy.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP TABLE {self.table}")

    def stored(self, conn: Any, row: int) -> Optional[tuple]:
        return conn.execute(
            f"SELECT length(b), md5(b) FROM {self.table} WHERE id = %s FOR SHARE", (row,)
        ).fetchone()

    def test_psycopg_inserts_a_large_value_in_a_transaction(self) -> None:
        with psycopg.connect(self.proxy.dsn()) as conn:
            conn.execute(f"INSERT INTO {self.table} VALUES (1, %b)", (self.value,))
            conn.commit()
            self.assertEqual(self.stored(conn, 1), (len(self.value), self.digest))

    def test_psycopg_pipeline_with_a_large_value_then_a_read(self) -> None:
        with psycopg.connect(self.proxy.dsn(), autocommit=True) as conn:
            with conn.pipeline():
                conn.execute(f"INSERT INTO {self.table} VALUES (2, %b)", (self.value,))
                read = conn.execute("SELECT 42")
                conn.execute(f"INSERT INTO {self.table} VALUES (3, %b)", (b"small",))
            self.assertEqual(read.fetchone(), (42,))
            self.assertEqual(
                (self.stored(conn, 2), self.stored(conn, 3)[0]), ((len(self.value), self.digest), 5)
            )

    def test_asyncpg_inserts_a_large_value(self) -> None:
        try:
            import asyncpg
        except ImportError:
            self.skipTest("asyncpg is not installed")
        import asyncio

        async def scenario() -> Any:
            conn = await asyncpg.connect(
                host=self.proxy.host,
                port=self.proxy.port,
                user="app",
                password="app",
                database="app",
                ssl=False,
            )
            try:
                await conn.execute(f"INSERT INTO {self.table} VALUES (4, $1)", self.value)
                return await conn.fetchrow(
                    f"SELECT length(b), md5(b) FROM {self.table} WHERE id = 4 FOR SHARE"
                )
            finally:
                await conn.close()

        row = asyncio.run(asyncio.wait_for(scenario(), 60))
        self.assertEqual(tuple(row), (len(self.value), self.digest))


class DirectRealClientTests(MemoryTestCase):
    """
    psycopg through a session with one node: a query longer than the proxy
    may read whole passes, since it is streamed.
    """

    settings = {"max_buffered_message_length": "1MB"}
    skip = SKIP_PSYCOPG

    def test_psycopg_runs_a_query_longer_than_max_buffered_message_length(self) -> None:
        with psycopg.connect(self.proxy.dsn(user="trustuser"), autocommit=True) as conn:
            text = "x" * (5 * MIB)
            self.assertEqual(conn.execute(f"SELECT length('{text}')").fetchone(), (5 * MIB,))


class RoutedRealClientTests(MemoryTestCase):
    """
    psycopg through a load-balancing session: a query longer than the proxy
    may read whole ends the session with SQLSTATE 54000.
    """

    routed = True
    settings = {"max_buffered_message_length": "1MB"}

    def test_psycopg_sees_54000_for_a_query_too_long_to_route(self) -> None:
        conn = psycopg.connect(self.proxy.dsn(), autocommit=True)
        self.addCleanup(conn.close)
        text = "x" * (5 * MIB)
        with self.assertRaises(psycopg.OperationalError) as caught:
            conn.execute(f"SELECT length('{text}')")
        self.assertEqual(caught.exception.sqlstate, "54000")
