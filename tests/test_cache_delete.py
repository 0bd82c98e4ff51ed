"""
Tests for C{PGPOOL SET CACHE DELETE '<query>'} (Pgpool-II 4.6): the
statement's matcher and reply (L{twisted_pgpool.cache.session}) and how a
session answers it, with the fakes of L{tests.test_session_unit}.
"""

from __future__ import annotations

from typing import List

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from tests.test_session_unit import I, SessionTestCase, connection
from twisted_pgpool.cache.policy import CachePolicy, simple_key
from twisted_pgpool.cache.querycache import QueryCache
from twisted_pgpool.cache.session import cache_delete_reply, match_cache_delete
from twisted_pgpool.cache.store import ShmemCacheStore, TableRef
from twisted_pgpool.proxy.session import Session
from twisted_pgpool.wire import messages

T = (TableRef("app", 1),)


def payload(sql: str) -> bytes:
    return sql.encode("utf-8") + b"\x00"


def notice_text(reply: bytes) -> str:
    """
    The message field of the first NoticeResponse in C{reply}.
    """
    assert reply[:1] == b"N", reply
    for field in reply[5:].split(b"\x00"):
        if field[:1] == b"M":
            return field[1:].decode("utf-8")
    raise AssertionError(reply)


class MatchTests(SynchronousTestCase):
    def test_query_is_unquoted(self) -> None:
        self.assertEqual(
            match_cache_delete(payload("PGPOOL SET CACHE DELETE 'SELECT 1;'")), b"SELECT 1;"
        )

    def test_doubled_quotes_are_one_quote(self) -> None:
        self.assertEqual(
            match_cache_delete(payload("PGPOOL SET CACHE DELETE 'SELECT ''FOO'';'")),
            b"SELECT 'FOO';",
        )

    def test_keywords_are_case_insensitive_and_spacing_free(self) -> None:
        self.assertEqual(
            match_cache_delete(payload("  pgpool\n Set  cache\tDelete 'select x from t' ; ")),
            b"select x from t",
        )

    def test_the_query_keeps_its_bytes(self) -> None:
        sql = "SELECT 'é'\n  FROM t;"
        quoted = sql.replace("'", "''")
        self.assertEqual(
            match_cache_delete(payload(f"PGPOOL SET CACHE DELETE '{quoted}'")), sql.encode("utf-8")
        )

    def test_empty_query(self) -> None:
        self.assertEqual(match_cache_delete(payload("PGPOOL SET CACHE DELETE ''")), b"")

    def test_other_statements_do_not_match(self) -> None:
        for sql in [
            "SELECT 1",
            "PGPOOL SHOW ALL",
            "PGPOOL SET client_idle_limit = 5",
            "PGPOOL SET CACHE DELETE SELECT 1",
            "PGPOOL SET CACHE DELETE 'a' 'b'",
            "PGPOOL SET CACHE DELETE 'unterminated",
            "PGPOOL SET CACHE DELETE 'a'; SELECT 1",
            "/* c */ PGPOOL SET CACHE DELETE 'a'",
            "",
        ]:
            self.assertIsNone(match_cache_delete(payload(sql)), sql)


class ReplyTests(SynchronousTestCase):
    def test_deleted(self) -> None:
        notice, complete = cache_delete_reply(b"SELECT 'a';", True)
        self.assertEqual(notice_text(notice), "query cache deleted. query: \"SELECT 'a';\"")
        self.assertIn(b"SNOTICE\x00", notice)
        self.assertIn(b"C00000\x00", notice)
        self.assertEqual(complete, messages.command_complete("SET"))

    def test_did_not_exist(self) -> None:
        notice, complete = cache_delete_reply(b"SELECT 1", False)
        self.assertEqual(notice_text(notice), 'query cache does not exist for query: "SELECT 1"')
        self.assertEqual(complete, messages.command_complete("SET"))


class _PendingStore(ShmemCacheStore):
    """
    A store whose deletes answer later, as memcached's do.
    """

    def __init__(self) -> None:
        super().__init__(10_000, 10, clock=None)
        self.pending: List[defer.Deferred] = []

    def delete(self, key: bytes) -> defer.Deferred:  # type: ignore[override]
        d: defer.Deferred = defer.Deferred()
        self.pending.append(d)
        return d


class CacheOffSessionTests(SessionTestCase):
    def expected(self, sql: bytes) -> bytes:
        return b"".join(cache_delete_reply(sql, False)) + messages.ready_for_query(I)

    def test_answered_does_not_exist_and_never_forwarded(self) -> None:
        self.query("PGPOOL SET CACHE DELETE 'SELECT 1'")
        self.assertEqual(b"".join(self.frontend.transport.data), self.expected(b"SELECT 1"))
        self.assertEqual((self.primary.received, self.standby.received, self.opened), ([], [], []))


class DirectCacheOffSessionTests(CacheOffSessionTests):
    """
    One node: the session passes statements through without routing them.
    """

    settings = {"load_balance_mode": False}

    def test_the_session_is_direct(self) -> None:
        self.assertTrue(self.session.direct)


class CacheOnSessionTests(SessionTestCase):
    def make_store(self) -> ShmemCacheStore:
        return ShmemCacheStore(10_000, 10, clock=None)

    def setUp(self) -> None:
        super().setUp()
        # FakeCore has no query cache: give it one, and start the session
        # again so that it takes it.
        self.store = self.make_store()
        self.cache = QueryCache(self.store, CachePolicy())
        self.core.query_cache = self.cache  # type: ignore[attr-defined]
        self.session = Session(
            self.frontend,
            self.core,  # type: ignore[arg-type]
            connection(self.primary),
            self.framer,  # type: ignore[arg-type]
            self.open_connection,
        )

    def key(self, sql: bytes) -> bytes:
        session_cache = self.session._cache
        assert session_cache is not None
        return simple_key("app", "app", session_cache.digest, sql)

    def put(self, sql: bytes) -> None:
        key = self.key(sql)
        self.cache.store_reply(key, b"reply", T, self.cache.fetch(key, T).token)

    def written(self) -> bytes:
        return b"".join(self.frontend.transport.data)

    def reply(self, sql: bytes, deleted: bool) -> bytes:
        return b"".join(cache_delete_reply(sql, deleted)) + messages.ready_for_query(I)


class ShmemSessionTests(CacheOnSessionTests):
    def test_deletes_the_entry_of_that_text_in_this_session(self) -> None:
        self.put(b"SELECT 'a' FROM t;")
        self.put(b"SELECT 'a' FROM t")
        self.query("pgpool set cache delete 'SELECT ''a'' FROM t;';")
        self.assertEqual(self.written(), self.reply(b"SELECT 'a' FROM t;", True))
        self.assertIsNone(self.store.fetch(self.key(b"SELECT 'a' FROM t;"), T).reply)
        self.assertEqual(self.store.fetch(self.key(b"SELECT 'a' FROM t"), T).reply, b"reply")
        self.assertEqual((self.primary.received, self.standby.received), ([], []))

    def test_a_second_delete_finds_nothing(self) -> None:
        self.put(b"SELECT 1")
        self.query("PGPOOL SET CACHE DELETE 'SELECT 1'")
        del self.frontend.transport.data[:]
        self.query("PGPOOL SET CACHE DELETE 'SELECT 1'")
        self.assertEqual(self.written(), self.reply(b"SELECT 1", False))

    def test_other_settings_have_their_own_entry(self) -> None:
        self.put(b"SELECT 1")
        self.session._cache.settings_changed(["SET search_path = other"])  # type: ignore[union-attr]
        self.query("PGPOOL SET CACHE DELETE 'SELECT 1'")
        self.assertEqual(self.written(), self.reply(b"SELECT 1", False))

    def test_waits_for_the_reply_in_progress(self) -> None:
        self.query("/*NO QUERY CACHE*/SELECT 1")  # read from a server
        self.put(b"SELECT 2")
        self.query("PGPOOL SET CACHE DELETE 'SELECT 2'")
        self.assertEqual((self.written(), self.framer.paused), (b"", True))
        self.assertIsNotNone(
            self.store.fetch(self.key(b"SELECT 2"), T).reply,
            "not deleted before the statement ahead of it is answered",
        )
        self.answer(self.primary)
        self.assertEqual(self.written(), self.reply(b"SELECT 2", True))
        self.assertFalse(self.framer.paused)


class RemoteSessionTests(CacheOnSessionTests):
    def make_store(self) -> ShmemCacheStore:
        return _PendingStore()

    def test_answers_when_the_store_does_and_holds_what_follows(self) -> None:
        self.query("PGPOOL SET CACHE DELETE 'SELECT 1'")
        self.query("/*NO QUERY CACHE*/SELECT 1")
        self.assertEqual(
            (self.written(), self.primary.received, self.framer.paused), (b"", [], True)
        )
        self.store.pending[0].callback(True)
        self.assertEqual(self.written(), self.reply(b"SELECT 1", True))
        self.assertEqual(self.primary.received, ["Q:/*NO QUERY CACHE*/SELECT 1"])

    def test_an_answer_at_once_is_written_at_once(self) -> None:
        self.store.delete = lambda key: defer.succeed(False)  # type: ignore[method-assign]
        self.query("PGPOOL SET CACHE DELETE 'SELECT 1'")
        self.assertEqual(self.written(), self.reply(b"SELECT 1", False))
        self.assertFalse(self.framer.paused)


class _DownStore(ShmemCacheStore):
    """
    A remote store that is down: every fetch answers at once, with a miss,
    as the memcached store does while disconnected.
    """

    def __init__(self) -> None:
        super().__init__(10_000, 10, clock=None)

    def fetch(self, key, tables):  # type: ignore[no-untyped-def,override]
        return defer.succeed(super().fetch(key, tables))


class RemoteAnswerAtOnceTests(CacheOnSessionTests):
    """
    A remote store's answer that is there at once (a Deferred already
    fired) while the session runs its queue of waiting steps.
    """

    def make_store(self) -> ShmemCacheStore:
        return _DownStore()

    def test_statements_queued_behind_a_lookup_run_once_each(self) -> None:
        # A table the proxy has not seen: its catalog facts are looked up
        # first, then the cache is asked (and answers at once), then the
        # statement goes to a server; the next statement queues behind.
        self.query("SELECT a FROM brand_new_table")
        self.query("SELECT a FROM brand_new_table")
        self.answer(self.primary)
        self.answer(self.standby)
        sent = self.primary.received + self.standby.received
        self.assertEqual(sent.count("Q:SELECT a FROM brand_new_table"), 2, sent)
        self.assertFalse(self.framer.paused)
        self.assertFalse(self.session.closed)
