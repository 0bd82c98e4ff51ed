"""
Tests for L{twisted_pgpool.cache.store}: the in-process store with a fake
clock, and the memcached store against a real memcached.
"""

from __future__ import annotations

from typing import List

from twisted.internet import defer, reactor, task
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.support import memcached_or_skip
from twisted_pgpool.cache.store import (
    ENTRY_OVERHEAD,
    CacheStatistics,
    FetchResult,
    MemcachedCacheStore,
    ShmemCacheStore,
    TableRef,
)
from twisted_pgpool.interfaces import IQueryCacheStore
from twisted_pgpool.testing.memcached import MemcachedProcess, find_memcached
from twisted_pgpool.testing.waiting import wait_in_reactor

T1 = TableRef("app", 16384)
T2 = TableRef("app", 16385)
OTHER_DB_T1 = TableRef("other", 16384)


def entry_size(key: bytes, reply: bytes) -> int:
    return len(key) + len(reply) + ENTRY_OVERHEAD


class ShmemStoreTests(SynchronousTestCase):
    def make(
        self,
        total_size: int = 10_000,
        max_entries: int = 100,
        expire: float = 0.0,
        max_entry_size: int = 1000,
    ) -> ShmemCacheStore:
        self.clock = task.Clock()
        return ShmemCacheStore(total_size, max_entries, expire, max_entry_size, clock=self.clock)

    def put(self, store: ShmemCacheStore, key: bytes, reply: bytes, tables=(T1,)) -> None:
        miss = store.fetch(key, tables)
        self.assertIsNone(miss.reply)
        store.store(key, reply, tables, miss.token)

    def test_provides_interface(self):
        self.assertTrue(verifyObject(IQueryCacheStore, self.make()))

    def test_hit_after_store_is_synchronous(self):
        store = self.make()
        self.put(store, b"k", b"reply")
        result = store.fetch(b"k", (T1,))
        self.assertIsInstance(result, FetchResult)
        self.assertEqual(result.reply, b"reply")

    def test_entry_under_other_tables_is_a_miss(self):
        store = self.make()
        self.put(store, b"k", b"reply", (T1,))
        self.assertIsNone(store.fetch(b"k", (T2,)).reply)

    def test_lru_evicts_least_recently_used(self):
        size = entry_size(b"a", b"x" * 100)
        store = self.make(total_size=3 * size)
        for key in (b"a", b"b", b"c"):
            self.put(store, key, b"x" * 100)
        store.fetch(b"a", (T1,))  # a is now more recent than b
        self.put(store, b"d", b"x" * 100)
        self.assertIsNone(store.fetch(b"b", (T1,)).reply)
        for key in (b"a", b"c", b"d"):
            self.assertIsNotNone(store.fetch(key, (T1,)).reply, key)

    def test_total_size_never_exceeded(self):
        store = self.make(total_size=2000, max_entries=1000, max_entry_size=1000)
        for i in range(200):
            self.put(store, b"key%d" % i, b"y" * (i * 37 % 900))
            stats = store.statistics()
            self.assertLessEqual(stats.used_cache_entries_size, 2000)
            self.assertEqual(stats.used_cache_entries_size + stats.free_cache_entries_size, 2000)

    def test_max_entries(self):
        store = self.make(max_entries=2)
        for key in (b"a", b"b", b"c"):
            self.put(store, key, b"r")
        self.assertEqual(store.statistics().num_cache_entries, 2)
        self.assertIsNone(store.fetch(b"a", (T1,)).reply)

    def test_expiry(self):
        store = self.make(expire=10.0)
        self.put(store, b"k", b"r")
        self.clock.advance(9.9)
        self.assertEqual(store.fetch(b"k", (T1,)).reply, b"r")
        self.clock.advance(0.1)
        self.assertIsNone(store.fetch(b"k", (T1,)).reply)
        self.assertEqual(store.statistics().num_cache_entries, 0)

    def test_no_expiry_when_zero(self):
        store = self.make(expire=0)
        self.put(store, b"k", b"r")
        self.clock.advance(10**9)
        self.assertEqual(store.fetch(b"k", (T1,)).reply, b"r")

    def test_maxcache_refuses_larger_reply(self):
        store = self.make(max_entry_size=10)
        self.put(store, b"small", b"x" * 10)
        self.put(store, b"big", b"x" * 11)
        self.assertIsNotNone(store.fetch(b"small", (T1,)).reply)
        self.assertIsNone(store.fetch(b"big", (T1,)).reply)

    def test_invalidate_drops_entries_of_that_table_only(self):
        store = self.make()
        self.put(store, b"a", b"r", (T1,))
        self.put(store, b"b", b"r", (T1, T2))
        self.put(store, b"c", b"r", (T2,))
        self.put(store, b"d", b"r", (OTHER_DB_T1,))
        store.invalidate([T1])
        self.assertIsNone(store.fetch(b"a", (T1,)).reply)
        self.assertIsNone(store.fetch(b"b", (T1, T2)).reply)
        self.assertEqual(store.fetch(b"c", (T2,)).reply, b"r")
        self.assertEqual(store.fetch(b"d", (OTHER_DB_T1,)).reply, b"r")

    def test_stale_token_refused(self):
        """
        A write that commits while a missed query runs must keep that
        query's (older) result out of the cache.
        """
        store = self.make()
        miss = store.fetch(b"k", (T1, T2))
        store.invalidate([T2])
        store.store(b"k", b"stale", (T1, T2), miss.token)
        self.assertIsNone(store.fetch(b"k", (T1, T2)).reply)

    def test_token_survives_unrelated_invalidation(self):
        store = self.make()
        miss = store.fetch(b"k", (T1,))
        store.invalidate([T2])
        store.store(b"k", b"fresh", (T1,), miss.token)
        self.assertEqual(store.fetch(b"k", (T1,)).reply, b"fresh")

    def test_clear_drops_everything_and_pending_stores(self):
        store = self.make()
        self.put(store, b"a", b"r")
        miss = store.fetch(b"b", (T2,))
        store.clear()
        store.store(b"b", b"r", (T2,), miss.token)
        self.assertIsNone(store.fetch(b"a", (T1,)).reply)
        self.assertIsNone(store.fetch(b"b", (T2,)).reply)
        self.assertEqual(store.statistics().used_cache_entries_size, 0)

    def test_delete_removes_that_entry_only(self):
        store = self.make()
        self.put(store, b"a", b"ra")
        self.put(store, b"b", b"rb")
        self.assertIs(store.delete(b"a"), True)
        self.assertIsNone(store.fetch(b"a", (T1,)).reply)
        self.assertEqual(store.fetch(b"b", (T1,)).reply, b"rb")

    def test_delete_of_a_missing_entry_says_so(self):
        store = self.make()
        self.assertIs(store.delete(b"nothing"), False)
        self.put(store, b"k", b"r")
        store.delete(b"k")
        self.assertIs(store.delete(b"k"), False)

    def test_delete_gives_back_the_entrys_bytes(self):
        store = self.make(total_size=5000)
        self.put(store, b"a", b"12345", (T1, T2))
        self.put(store, b"bb", b"1")
        store.delete(b"a")
        self.assertEqual(
            store.statistics(),
            CacheStatistics(
                num_hash_entries=100,
                used_hash_entries=1,
                num_cache_entries=1,
                used_cache_entries_size=entry_size(b"bb", b"1"),
                free_cache_entries_size=5000 - entry_size(b"bb", b"1"),
            ),
        )
        # Nor does the table index keep it: invalidating T2 touches nothing.
        self.assertEqual(store._by_table, {T1: {b"bb"}})

    def test_delete_leaves_tokens_valid(self):
        # Not an invalidation: a reply fetched before the delete may still
        # be stored (it is as fresh as the entry deleted).
        store = self.make()
        self.put(store, b"k", b"old")
        store.delete(b"k")
        miss = store.fetch(b"k", (T1,))
        store.store(b"k", b"new", (T1,), miss.token)
        self.assertEqual(store.fetch(b"k", (T1,)).reply, b"new")

    def test_delete_of_an_expired_entry_says_it_did_not_exist(self):
        store = self.make(expire=10)
        self.put(store, b"k", b"r")
        self.clock.advance(11)
        self.assertIs(store.delete(b"k"), False)
        self.assertEqual(store.statistics().num_cache_entries, 0)

    def test_statistics(self):
        store = self.make(total_size=5000, max_entries=7)
        self.put(store, b"a", b"12345")
        self.put(store, b"bb", b"1")
        self.assertEqual(
            store.statistics(),
            CacheStatistics(
                num_hash_entries=7,
                used_hash_entries=2,
                num_cache_entries=2,
                used_cache_entries_size=entry_size(b"a", b"12345") + entry_size(b"bb", b"1"),
                free_cache_entries_size=5000 - entry_size(b"a", b"12345") - entry_size(b"bb", b"1"),
                fragment_cache_entries_size=0,
            ),
        )


class MemcachedStoreTests(TestCase):
    """
    Against a real memcached started for each test.
    """

    skip = None if find_memcached() else "memcached is not installed (CI installs it)"
    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.server = MemcachedProcess(memcached_or_skip())
        self.addCleanup(self.server.stop)
        yield self.server.start_in_reactor(reactor)

    @defer.inlineCallbacks
    def make_store(self, **kwargs):
        store = MemcachedCacheStore(
            reactor, "127.0.0.1", self.server.port, timeout=2.0, retry_max_delay=0.2, **kwargs
        )
        store.start()
        self.addCleanup(store.stop)
        yield wait_in_reactor(reactor, lambda: store.connected)
        return store

    @defer.inlineCallbacks
    def put(self, store, key, reply, tables=(T1,)):
        """
        Miss, store, and make sure the entry is there (the first store of a
        table only creates its generation counter).
        """
        for _ in range(2):
            miss = yield store.fetch(key, tables)
            self.assertIsNone(miss.reply)
            yield store.store(key, reply, tables, miss.token)
        hit = yield store.fetch(key, tables)
        self.assertEqual(hit.reply, reply)

    def capture_warnings(self) -> List[dict]:
        events: List[dict] = []

        def observer(event):
            if event.get("log_level") == LogLevel.warn:
                events.append(event)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return events

    @defer.inlineCallbacks
    def test_provides_interface(self):
        store = yield self.make_store()
        self.assertTrue(verifyObject(IQueryCacheStore, store))

    @defer.inlineCallbacks
    def test_requests_leave_at_once(self):
        """
        The connection to memcached sends each request as it is written:
        no Nagle delay, no wait for the next reactor iteration.
        """
        store = yield self.make_store()
        transport = store._protocol.transport
        self.assertTrue(transport.getTcpNoDelay())
        # write_eagerly's send-at-once write replaced Twisted's queued one.
        self.assertEqual(transport.write.__module__, "twisted_pgpool.net.transports")
        yield self.put(store, b"k", b"reply")

    @defer.inlineCallbacks
    def test_store_fetch_roundtrip(self):
        store = yield self.make_store()
        reply = bytes(range(256)) * 10
        yield self.put(store, b"\x00key", reply, (T1, T2))
        other = yield store.fetch(b"\x00key", (T1,))
        self.assertIsNone(other.reply)

    @defer.inlineCallbacks
    def test_maxcache_refuses_larger_reply(self):
        store = yield self.make_store(max_entry_size=10)
        for _ in range(2):
            miss = yield store.fetch(b"k", (T1,))
            yield store.store(b"k", b"x" * 11, (T1,), miss.token)
        result = yield store.fetch(b"k", (T1,))
        self.assertIsNone(result.reply)

    @defer.inlineCallbacks
    def test_invalidate_through_one_instance_makes_the_other_miss(self):
        a = yield self.make_store()
        b = yield self.make_store()
        yield self.put(b, b"k", b"reply", (T1,))
        yield self.put(b, b"k2", b"reply2", (T2,))
        yield a.invalidate([T1])
        result = yield b.fetch(b"k", (T1,))
        self.assertIsNone(result.reply)
        unrelated = yield b.fetch(b"k2", (T2,))
        self.assertEqual(unrelated.reply, b"reply2")

    @defer.inlineCallbacks
    def test_stale_token_refused(self):
        a = yield self.make_store()
        b = yield self.make_store()
        yield self.put(a, b"warm", b"r", (T1,))  # generation counters exist
        miss = yield a.fetch(b"k", (T1,))
        yield b.invalidate([T1])
        yield a.store(b"k", b"stale", (T1,), miss.token)
        result = yield a.fetch(b"k", (T1,))
        self.assertIsNone(result.reply)

    @defer.inlineCallbacks
    def test_clear_obsoletes_entries_of_every_instance(self):
        a = yield self.make_store()
        b = yield self.make_store()
        yield self.put(b, b"k", b"r", (T1,))
        yield a.clear()
        result = yield b.fetch(b"k", (T1,))
        self.assertIsNone(result.reply)

    @defer.inlineCallbacks
    def test_delete_is_seen_by_every_instance(self):
        a = yield self.make_store()
        b = yield self.make_store()
        yield self.put(b, b"k", b"r", (T1,))
        yield self.put(b, b"k2", b"r2", (T2,))
        deleted = yield a.delete(b"k")
        self.assertIs(deleted, True)
        result = yield b.fetch(b"k", (T1,))
        self.assertIsNone(result.reply)
        other = yield b.fetch(b"k2", (T2,))
        self.assertEqual(other.reply, b"r2")

    @defer.inlineCallbacks
    def test_delete_of_a_missing_entry_says_so(self):
        store = yield self.make_store()
        deleted = yield store.delete(b"\x00never stored")
        self.assertIs(deleted, False)

    @defer.inlineCallbacks
    def test_delete_during_an_outage_says_missing_with_one_warning(self):
        store = yield self.make_store()
        yield self.put(store, b"k", b"r")
        warnings = self.capture_warnings()
        self.server.stop()
        yield wait_in_reactor(reactor, lambda: not store.connected, "the disconnection")
        for _ in range(2):
            deleted = yield store.delete(b"k")
            self.assertIs(deleted, False)
        self.assertEqual(len(warnings), 1, warnings)

    @defer.inlineCallbacks
    def test_outage_is_a_miss_with_one_warning(self):
        store = yield self.make_store()
        yield self.put(store, b"k", b"r")
        warnings = self.capture_warnings()
        self.server.stop()
        yield wait_in_reactor(reactor, lambda: not store.connected, "the disconnection")
        for _ in range(3):
            result = yield store.fetch(b"k", (T1,))
            self.assertIsNone(result.reply)
            yield store.store(b"k", b"r", (T1,), result.token)
            yield store.invalidate([T1])
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("unavailable", warnings[0]["log_format"])

    @defer.inlineCallbacks
    def test_reconnects_after_restart(self):
        store = yield self.make_store()
        self.server.stop()
        yield wait_in_reactor(reactor, lambda: not store.connected, "the disconnection")
        yield self.server.start_in_reactor(reactor)
        yield wait_in_reactor(reactor, lambda: store.connected, "the reconnection")
        yield self.put(store, b"k", b"again")

    @defer.inlineCallbacks
    def test_statistics_are_zero(self):
        store = yield self.make_store()
        yield self.put(store, b"k", b"r")
        self.assertEqual(store.statistics(), CacheStatistics())
