"""
End-to-end: a client's SQL text is bytes in its client_encoding.  Bytes that
are not valid text reach the server as they came and get its own 22021 (the
session goes on); text in another encoding (LATIN1, SJIS) works through the
proxy as it does directly, wherever the proxy routes it.

Raw sockets send the invalid bytes (no driver would); psycopg is the client
that uses LATIN1.
"""

from __future__ import annotations

import time
from typing import List

from twisted.trial.unittest import TestCase

from tests.rawclient import RawClient
from tests.support import LazyProxy, ProxyProcess, cluster_or_skip, direct_dsn
from tests.wire import error_fields, frame
from twisted_pgpool.testing.localcluster import TRUST_USER, LocalCluster

try:
    import psycopg
except ImportError:  # pragma: no cover - e.g. PyPy
    psycopg = None  # type: ignore[assignment]

#: How long a raw client waits for an answer.
REPLY_TIMEOUT = 10.0


def query(sql: bytes) -> bytes:
    return frame(b"Q", sql + b"\x00")


def parse_bind_execute_sync(sql: bytes) -> bytes:
    return (
        frame(b"P", b"\x00" + sql + b"\x00\x00\x00")
        + frame(b"B", b"\x00\x00\x00\x00\x00\x00\x00\x00")
        + frame(b"E", b"\x00\x00\x00\x00\x00")
        + frame(b"S", b"")
    )


def _logging_proxy(cluster: LocalCluster) -> ProxyProcess:
    return ProxyProcess(
        {
            "backends": cluster.backends_config(),
            "pool_passwd": "pool_passwd",
            "log_statement": True,
        },
        extra_files={"pool_passwd": "app:TEXTapp\n"},
    )


def _standby_reads_proxy(cluster: LocalCluster) -> ProxyProcess:
    # Weight 0 on the primary: every read goes to the standby, whose
    # connection a session opens when its first read comes.
    backends = cluster.backends_config()
    backends[0]["weight"] = 0
    return ProxyProcess(
        {"backends": backends, "pool_passwd": "pool_passwd", "read_your_writes": "off"},
        extra_files={"pool_passwd": "app:TEXTapp\n"},
    )


def _caching_proxy(cluster: LocalCluster) -> ProxyProcess:
    return ProxyProcess(
        {
            "backends": cluster.backends_config(),
            "pool_passwd": "pool_passwd",
            "load_balance_mode": False,
            "memory_cache_enabled": True,
        },
        extra_files={"pool_passwd": "app:TEXTapp\n"},
    )


class InvalidBytesTests(TestCase):
    """
    Bytes that are not UTF-8 in a UTF8 session.
    """

    lazy_proxy = LazyProxy(_logging_proxy)

    def setUp(self) -> None:
        self.proxy = self.lazy_proxy.get()
        self.client = RawClient.trusted(
            self.proxy.host, self.proxy.port, TRUST_USER, timeout=REPLY_TIMEOUT
        )
        self.addCleanup(self.client.close)

    def assert_refused_with_22021_and_usable(self, data: bytes) -> None:
        reply = self.client.exchange(data)
        self.assertEqual([kind for kind, _ in reply], [ord("E"), ord("Z")], reply)
        fields = error_fields(reply[0][1])
        self.assertEqual(
            (fields["S"], fields["C"], fields["M"]),
            ("ERROR", "22021", 'invalid byte sequence for encoding "UTF8": 0xff'),
        )
        after = self.client.exchange(query(b"SELECT 41 + 1"))
        self.assertEqual(
            [kind for kind, _ in after], [ord("T"), ord("D"), ord("C"), ord("Z")], after
        )
        self.assertEqual(after[1][1], b"\x00\x01\x00\x00\x00\x0242")

    def test_query_gets_the_servers_22021_and_the_session_goes_on(self) -> None:
        self.assert_refused_with_22021_and_usable(query(b"SELECT '\xff\xfe'"))

    def test_parse_gets_the_servers_22021_and_the_session_goes_on(self) -> None:
        # "S" is where the proxy looks for its own SHOW statements.
        self.assert_refused_with_22021_and_usable(parse_bind_execute_sync(b"SELECT '\xff\xfe'"))

    def test_parse_not_starting_like_a_proxy_statement_gets_22021(self) -> None:
        self.assert_refused_with_22021_and_usable(parse_bind_execute_sync(b"VALUES ('\xff\xfe')"))

    def test_statement_is_logged_with_the_bytes_escaped(self) -> None:
        self.client.exchange(query(b"SELECT 'logged \xff\xfe'"))
        self.client.exchange(parse_bind_execute_sync(b"SELECT 'parsed \xff\xfe'"))
        deadline = time.monotonic() + REPLY_TIMEOUT
        wanted = [
            "statement: SELECT 'logged \\xff\\xfe'",
            "statement: Parse: SELECT 'parsed \\xff\\xfe'",
        ]
        while not all(line in self.proxy.log_text() for line in wanted):
            if time.monotonic() > deadline:
                self.fail(f"{wanted} not in the log:\n{self.proxy.log_text()}")
            time.sleep(0.05)


class Latin1Tests(TestCase):
    """
    psycopg with client_encoding LATIN1: non-ASCII text, simple and
    extended protocol, through the proxy and directly.
    """

    lazy_proxy = LazyProxy(_standby_reads_proxy)

    def setUp(self) -> None:
        if psycopg is None:
            self.skipTest("psycopg is not installed")
        self.cluster = cluster_or_skip()
        self.proxy = self.lazy_proxy.get()

    def connect(self, dsn: str):
        conn = psycopg.connect(dsn, autocommit=True, client_encoding="LATIN1")
        self.addCleanup(conn.close)
        return conn

    def answers(self, conn) -> List[object]:
        sql = "SELECT 'café ä ñ', length('café'), octet_length('café'), 'é' || 'ü'"
        return [
            psycopg.ClientCursor(conn).execute(sql).fetchall(),  # Query
            conn.execute(sql).fetchall(),  # unnamed Parse
            conn.execute(sql, prepare=True).fetchall(),
        ]  # named Parse

    def test_non_ascii_literals_answer_as_directly(self) -> None:
        direct = self.answers(self.connect(direct_dsn(self.cluster.primary)))
        self.assertEqual(direct[0], [("café ä ñ", 4, 5, "éü")])
        self.assertEqual(self.answers(self.connect(self.proxy.dsn())), direct)

    def test_setting_is_replayed_in_latin1_on_the_standby(self) -> None:
        conn = self.connect(self.proxy.dsn())
        conn.execute("SET my.label = 'café'")
        # The first read opens the standby connection, which is given the
        # session's settings first, in the client's bytes; a standby that
        # cannot be given them is not used (the primary answers "off";
        # SHOW transaction_read_only itself goes to the primary).
        self.assertEqual(
            (
                conn.execute("SHOW in_hot_standby").fetchall(),
                conn.execute("SHOW my.label").fetchall(),
            ),
            ([("on",)], [("café",)]),
        )


class RoutedInvalidBytesTests(TestCase):
    """
    The same bytes from psycopg (a bytes query), in a session whose
    statements are routed (load balancing, a password-verified user).
    """

    lazy_proxy = LazyProxy(_standby_reads_proxy)

    def setUp(self) -> None:
        if psycopg is None:
            self.skipTest("psycopg is not installed")
        cluster_or_skip()
        self.conn = psycopg.connect(self.lazy_proxy.get().dsn(), autocommit=True)
        self.addCleanup(self.conn.close)

    def assert_22021_and_usable(self, cursor) -> None:
        for sql in (b"SELECT '\xff\xfe'", b"SHOW '\xff'"):
            with self.assertRaises(psycopg.Error) as caught:
                cursor.execute(sql)
            self.assertEqual(caught.exception.sqlstate, "22021", str(caught.exception))
        self.assertEqual(cursor.execute(b"SELECT 41 + 1").fetchall(), [(42,)])

    def test_query_gets_22021_and_the_session_goes_on(self) -> None:
        self.assert_22021_and_usable(psycopg.ClientCursor(self.conn))

    def test_parse_gets_22021_and_the_session_goes_on(self) -> None:
        self.assert_22021_and_usable(self.conn.cursor())


class ShiftJisTests(TestCase):
    """
    SJIS uses ASCII bytes inside characters: "ソ" is 0x83 0x5C, whose second
    byte is a backslash in ASCII.
    """

    lazy_proxy = LazyProxy(_standby_reads_proxy)

    def setUp(self) -> None:
        if psycopg is None:
            self.skipTest("psycopg is not installed")
        cluster_or_skip()
        self.conn = psycopg.connect(
            self.lazy_proxy.get().dsn(), autocommit=True, client_encoding="SJIS"
        )
        self.addCleanup(self.conn.close)

    def test_a_write_after_a_multibyte_character_goes_to_the_primary(self) -> None:
        # Read as UTF-8, the backslash would escape the quote, the CREATE
        # would be inside a string, and the statement a read for the
        # standby, which refuses it (25006).
        cursor = psycopg.ClientCursor(self.conn)
        cursor.execute("SELECT E'ソ' AS s; CREATE TEMP TABLE sjis_routed (); --'")
        self.assertEqual(
            (cursor.fetchall(), cursor.nextset(), cursor.statusmessage),
            ([("ソ",)], True, "CREATE TABLE"),
        )
        self.assertEqual(cursor.execute("SELECT E'ソ'").fetchall(), [("ソ",)])


class Latin1QueryCacheTests(TestCase):
    """
    The query cache looks the tables of a statement up by name: a LATIN1
    name is read as LATIN1, and a write to the table invalidates its reads.
    """

    lazy_proxy = LazyProxy(_caching_proxy)

    def setUp(self) -> None:
        if psycopg is None:
            self.skipTest("psycopg is not installed")
        self.cluster = cluster_or_skip()
        self.proxy = self.lazy_proxy.get()
        admin = psycopg.connect(direct_dsn(self.cluster.primary, user="postgres"), autocommit=True)
        self.addCleanup(admin.close)
        admin.execute(
            'DROP TABLE IF EXISTS "tëst_cache"; CREATE TABLE "tëst_cache" (v text); '
            'GRANT ALL ON "tëst_cache" TO app'
        )
        self.addCleanup(admin.execute, 'DROP TABLE IF EXISTS "tëst_cache"')

    def test_write_to_a_non_ascii_table_invalidates_its_cached_reads(self) -> None:
        conn = psycopg.connect(self.proxy.dsn(), autocommit=True, client_encoding="LATIN1")
        self.addCleanup(conn.close)
        cursor = psycopg.ClientCursor(conn)
        read = 'SELECT v FROM "tëst_cache" ORDER BY v'
        self.assertEqual(cursor.execute(read).fetchall(), [])
        self.assertEqual(cursor.execute(read).fetchall(), [])
        cursor.execute("INSERT INTO \"tëst_cache\" VALUES ('ä')")
        self.assertEqual(cursor.execute(read).fetchall(), [("ä",)])
