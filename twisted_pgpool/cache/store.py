"""
The stores of the in-memory query cache: in the proxy process
(L{ShmemCacheStore}, Pgpool-II's C{memqcache_method = shmem}) or in a
memcached server several proxies share (L{MemcachedCacheStore}).

Both implement L{twisted_pgpool.interfaces.IQueryCacheStore}.  What may be
cached and under which key is decided elsewhere
(L{twisted_pgpool.cache.policy}); a store only keeps opaque replies and
knows which tables each one read, so that a write can obsolete them.

The race every store must close: client A's SELECT misses, runs, and while
it runs client B commits a write to the same table and invalidates it; A's
(now stale) reply arrives afterwards.  Storing it would serve stale data
until the next write.  So L{fetch} returns a I{token} -- a snapshot of the
tables' generation counters -- and L{store} refuses a reply whose snapshot
is out of date.
"""

from __future__ import annotations

import collections
import math
import random
import struct
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import attr
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTime, ITCPTransport
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.memcache import ClientError, MemCacheProtocol, NoSuchCommand, ServerError
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_pgpool import logs
from twisted_pgpool.interfaces import IQueryCacheStore
from twisted_pgpool.net.transports import write_eagerly

__all__ = [
    "CacheStatistics",
    "FetchResult",
    "MemcachedCacheStore",
    "ShmemCacheStore",
    "TableRef",
]

log = Logger(observer=logs.observer)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class TableRef:
    """
    A table's identity for invalidation: its OID within its database (a
    name can be renamed or shadowed, an OID cannot).

    @ivar database: the database name (OIDs are per database).
    @ivar oid: C{pg_class.oid}.
    """

    database: str
    oid: int


@attr.s(frozen=True, slots=True, auto_attribs=True)
class FetchResult:
    """
    The answer of L{IQueryCacheStore.fetch}.

    @ivar reply: the cached reply bytes, or None on a miss.
    @ivar token: what L{IQueryCacheStore.store} needs to tell whether a
        reply computed after this fetch is still current.
    """

    reply: Optional[bytes]
    token: object = None


@attr.s(frozen=True, slots=True, auto_attribs=True)
class CacheStatistics:
    """
    The storage columns of Pgpool-II's C{SHOW POOL_CACHE}.

    @ivar num_hash_entries: how many entries the store can hold.
    @ivar used_hash_entries: how many it holds.
    @ivar num_cache_entries: how many valid entries it holds.
    @ivar used_cache_entries_size: bytes used by valid entries.
    @ivar free_cache_entries_size: bytes still free.
    @ivar fragment_cache_entries_size: bytes held by obsolete entries not
        yet reclaimed (always 0 here: entries are freed at once).
    """

    num_hash_entries: int = 0
    used_hash_entries: int = 0
    num_cache_entries: int = 0
    used_cache_entries_size: int = 0
    free_cache_entries_size: int = 0
    fragment_cache_entries_size: int = 0


#: Bytes counted per entry on top of its key and reply: the bookkeeping
#: (Pgpool-II counts a 64-byte header per cached result).
ENTRY_OVERHEAD = 64


@attr.s(slots=True, auto_attribs=True)
class _Entry:
    reply: bytes
    tables: Tuple[TableRef, ...]
    size: int
    expires_at: float  # 0: never


@implementer(IQueryCacheStore)
class ShmemCacheStore:
    """
    The cache inside the proxy process: a least-recently-used map bounded by
    bytes and by entries, with a per-table index for invalidation.

    Invalidation deletes entries at once, so a fetch needs no generation
    check; generations only serve the L{store} race check.

    @ivar total_size: the most bytes entries may use (memqcache_total_size).
    @ivar max_entries: the most entries (memqcache_max_num_cache).
    @ivar expire_seconds: lifetime of an entry, 0 for unlimited
        (memqcache_expire).
    @ivar max_entry_size: the largest reply stored (memqcache_maxcache).
    """

    def __init__(
        self,
        total_size: int,
        max_entries: int,
        expire_seconds: float = 0.0,
        max_entry_size: int = 400 * 1024,
        clock: Optional[IReactorTime] = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.total_size = total_size
        self.max_entries = max_entries
        self.expire_seconds = expire_seconds
        self.max_entry_size = max_entry_size
        self._clock: IReactorTime = clock
        self._entries: "collections.OrderedDict[bytes, _Entry]" = collections.OrderedDict()
        self._by_table: Dict[TableRef, Set[bytes]] = {}
        self._generations: Dict[TableRef, int] = {}
        self._epoch = 0
        self._used = 0

    # -- the contract ----------------------------------------------------------

    def fetch(self, key: bytes, tables: Sequence[TableRef]) -> FetchResult:
        entry = self._entries.get(key)
        if entry is not None:
            if entry.expires_at and entry.expires_at <= self._clock.seconds():
                self._remove(key)
            elif entry.tables != tuple(tables):
                # The statement's names resolve to other tables now.
                self._remove(key)
            else:
                self._entries.move_to_end(key)
                return FetchResult(entry.reply)
        generations = self._generations
        return FetchResult(None, (self._epoch, tuple(generations.get(t, 0) for t in tables)))

    def store(self, key: bytes, reply: bytes, tables: Sequence[TableRef], token: object) -> None:
        tables = tuple(tables)
        if not self._token_current(tables, token):
            return
        if len(reply) > self.max_entry_size:
            return
        size = len(key) + len(reply) + ENTRY_OVERHEAD
        if size > self.total_size:
            return
        if key in self._entries:
            self._remove(key)
        self._make_room(size)
        expires_at = self._clock.seconds() + self.expire_seconds if self.expire_seconds > 0 else 0.0
        self._entries[key] = _Entry(reply, tables, size, expires_at)
        self._used += size
        by_table = self._by_table
        for table in tables:
            by_table.setdefault(table, set()).add(key)

    def invalidate(self, tables: Iterable[TableRef]) -> None:
        for table in tables:
            self._generations[table] = self._generations.get(table, 0) + 1
            for key in list(self._by_table.get(table, ())):
                self._remove(key)

    def delete(self, key: bytes) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        # An expired entry is one a fetch would not return: not there.
        live = not (entry.expires_at and entry.expires_at <= self._clock.seconds())
        self._remove(key)
        return live

    def clear(self) -> None:
        self._epoch += 1
        self._entries.clear()
        self._by_table.clear()
        self._used = 0

    def statistics(self) -> CacheStatistics:
        count = len(self._entries)
        return CacheStatistics(
            num_hash_entries=self.max_entries,
            used_hash_entries=count,
            num_cache_entries=count,
            used_cache_entries_size=self._used,
            free_cache_entries_size=self.total_size - self._used,
            fragment_cache_entries_size=0,
        )

    # -- helpers ---------------------------------------------------------------

    def _token_current(self, tables: Tuple[TableRef, ...], token: object) -> bool:
        if not isinstance(token, tuple) or len(token) != 2:
            return False
        epoch, generations = token
        if epoch != self._epoch or len(generations) != len(tables):
            return False
        current = self._generations
        return all(current.get(t, 0) == g for t, g in zip(tables, generations))

    def _make_room(self, size: int) -> None:
        """
        Evict least recently used entries until C{size} more bytes and one
        more entry fit.
        """
        entries = self._entries
        while entries and (self._used + size > self.total_size or len(entries) >= self.max_entries):
            self._remove(next(iter(entries)))

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._used -= entry.size
        for table in entry.tables:
            keys = self._by_table.get(table)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_table[table]


# ---------------------------------------------------------------------------
# memcached

#: memcached's relative expiry times end at 30 days; longer ones are read
#: as absolute POSIX times.
_MEMCACHED_RELATIVE_LIMIT = 30 * 24 * 3600
_HEADER = struct.Struct("!I")


def _start_generation() -> bytes:
    """
    A random first value for a generation counter.  A counter memcached
    evicted and that is created again must not repeat a value an old entry
    recorded, which a fixed start (0 or 1) would.
    """
    return b"%d" % random.randrange(1, 2**62)


class _CacheClientProtocol(MemCacheProtocol):
    """
    Twisted's memcache client, reporting connection changes to its store
    and scheduling its response timeout on the store's reactor.
    """

    store: "MemcachedCacheStore"

    def callLater(self, period, func):  # noqa: N802 - TimeoutMixin's name
        return self.store._reactor.callLater(period, func)

    def connectionMade(self) -> None:
        # Each request is a small write answered before the next: send it at
        # once, not on the next reactor iteration nor after Nagle's delay.
        transport = self.transport
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)
        write_eagerly(transport)
        MemCacheProtocol.connectionMade(self)
        self.store._connected(self)

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        MemCacheProtocol.connectionLost(self, reason)
        self.store._disconnected(self, reason)


class _CacheClientFactory(Factory):
    noisy = False

    def __init__(self, store: "MemcachedCacheStore", timeout: float) -> None:
        self.store = store
        self.timeout = timeout

    def buildProtocol(self, addr) -> _CacheClientProtocol:  # noqa: N802
        protocol = _CacheClientProtocol(timeOut=self.timeout)
        protocol.store = self.store
        protocol.factory = self
        return protocol


@implementer(IQueryCacheStore)
class MemcachedCacheStore:
    """
    The cache in a memcached server, shared by every proxy that uses it.

    Invalidation must reach entries other proxies stored, so it cannot
    delete keys it does not know.  Instead each table has a generation
    counter in memcached (C{tpgc:g:<database hex>:<oid>}), and the whole
    cache one more (C{tpgc:ns}, bumped by L{clear}).  An entry embeds the
    counters' values from when its statement started; L{fetch} gets the
    entry and the current counters in one C{get} round trip, and any
    difference is a miss.  The same check closes the store race by itself:
    a reply computed before an invalidation carries the older snapshot.

    L{clear} bumps C{tpgc:ns} rather than sending C{flush_all}: flush_all
    would also empty whatever else shares the memcached server, and a
    generation bump is visible to every proxy the same way.

    An outage is never an error for the caller: fetches miss, stores and
    invalidations are dropped, and one warning is logged per outage.  An
    invalidation dropped during an outage is covered by the entries'
    snapshots only if memcached lost its data too (a restart); writes made
    while memcached is unreachable but running are the documented
    C{memqcache_expire} trade-off.

    @ivar prefix: the prefix of every key (bytes).
    """

    prefix = b"tpgc:"

    def __init__(
        self,
        reactor,
        host: str,
        port: int,
        expire_seconds: float = 0.0,
        max_entry_size: int = 400 * 1024,
        timeout: float = 1.0,
        retry_max_delay: float = 10.0,
    ) -> None:
        """
        @param timeout: seconds to wait for a connection and for each
            answer; past it the connection is dropped and re-made.
        @param retry_max_delay: the longest wait between reconnection
            attempts (they back off exponentially from 0.1 s).
        """
        self._reactor = reactor
        self.host = host
        self.port = port
        self.expire_seconds = expire_seconds
        self.max_entry_size = max_entry_size
        self.timeout = timeout
        self._protocol: Optional[_CacheClientProtocol] = None
        self._in_outage = False
        self._ns_key = self.prefix + b"ns"
        endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
        self._service = ClientService(
            endpoint,
            _CacheClientFactory(self, timeout),
            retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=retry_max_delay, factor=2.0),
            clock=reactor,
        )

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """
        Start connecting (and reconnecting whenever the connection drops).
        """
        self._service.startService()

    def stop(self) -> Deferred:
        """
        Close the connection and stop reconnecting.
        """
        return self._service.stopService()

    @property
    def connected(self) -> bool:
        """
        Whether a connection to memcached is up right now.
        """
        return self._protocol is not None

    def _connected(self, protocol: _CacheClientProtocol) -> None:
        self._protocol = protocol
        if self._in_outage:
            self._in_outage = False
            log.info(
                "query cache: memcached at {host}:{port} is reachable again",
                host=self.host,
                port=self.port,
            )

    def _disconnected(self, protocol: _CacheClientProtocol, reason: Optional[Failure]) -> None:
        if self._protocol is protocol:
            self._protocol = None
        if self._service.running:
            self._outage(reason)

    def _outage(self, reason: object) -> None:
        """
        Log the first sign of an outage (and only that one).
        """
        if self._in_outage:
            return
        self._in_outage = True
        if isinstance(reason, Failure):
            reason = reason.getErrorMessage()
        log.warn(
            "query cache: memcached at {host}:{port} is unavailable ({reason}); "
            "serving without the cache until it is back",
            host=self.host,
            port=self.port,
            reason=reason,
        )

    def _client(self) -> Optional[_CacheClientProtocol]:
        protocol = self._protocol
        if protocol is None:
            self._outage("not connected")
        return protocol

    # -- keys ------------------------------------------------------------------

    def _entry_key(self, key: bytes) -> bytes:
        return self.prefix + b"e:" + key.hex().encode("ascii")

    def _generation_key(self, table: TableRef) -> bytes:
        return b"%sg:%s:%d" % (
            self.prefix,
            table.database.encode("utf-8").hex().encode("ascii"),
            table.oid,
        )

    def _generation_keys(self, tables: Sequence[TableRef]) -> List[bytes]:
        return [self._ns_key] + [self._generation_key(t) for t in tables]

    # -- the contract ----------------------------------------------------------

    def fetch(self, key: bytes, tables: Sequence[TableRef]) -> "Deferred[FetchResult]":
        client = self._client()
        generation_keys = self._generation_keys(tables)
        if client is None:
            return succeed(FetchResult(None, None))
        entry_key = self._entry_key(key)
        d = client.getMultiple([entry_key] + generation_keys)
        d.addCallback(self._fetched, entry_key, generation_keys)
        d.addErrback(self._fetch_failed)
        return d

    def _fetched(
        self,
        values: Dict[bytes, Tuple[int, Optional[bytes]]],
        entry_key: bytes,
        generation_keys: List[bytes],
    ) -> FetchResult:
        snapshot = tuple(values.get(k, (0, None))[1] for k in generation_keys)
        token = (generation_keys, snapshot)
        value = values.get(entry_key, (0, None))[1]
        if value is None or None in snapshot:
            return FetchResult(None, token)
        reply = _unpack_entry(value, _encode_snapshot(generation_keys, snapshot))
        return FetchResult(reply, token)

    def _fetch_failed(self, failure: Failure) -> FetchResult:
        self._outage(failure)
        return FetchResult(None, None)

    def store(
        self, key: bytes, reply: bytes, tables: Sequence[TableRef], token: object
    ) -> Optional[Deferred]:
        if not isinstance(token, tuple) or len(reply) > self.max_entry_size:
            return None
        generation_keys, snapshot = token
        if generation_keys != self._generation_keys(tables):
            return None
        client = self._client()
        if client is None:
            return None
        missing = [k for k, v in zip(generation_keys, snapshot) if v is None]
        if missing:
            # No generation to compare with yet: create the counters, and
            # store the next reply (with a snapshot that has them).
            return self._quiet(_gather([client.add(k, _start_generation()) for k in missing]))
        value = _encode_snapshot(generation_keys, snapshot) + reply
        return self._quiet(client.set(self._entry_key(key), value, expireTime=self._expire_time()))

    def invalidate(self, tables: Iterable[TableRef]) -> Optional[Deferred]:
        keys = [self._generation_key(t) for t in tables]
        if not keys:
            return None
        client = self._client()
        if client is None:
            return None
        return self._quiet(_gather([self._bump(client, k) for k in keys]))

    def delete(self, key: bytes) -> "Deferred[bool]":
        # Whether memcached held the key: an entry a write has obsoleted
        # but memcached has not evicted yet counts as there (telling would
        # take the tables its statement reads).
        client = self._client()
        if client is None:
            return succeed(False)
        d = client.delete(self._entry_key(key))
        d.addCallback(bool)
        d.addErrback(self._delete_failed)
        return d

    def _delete_failed(self, failure: Failure) -> bool:
        if failure.check(ServerError, ClientError, NoSuchCommand):
            log.debug(
                "query cache: memcached refused a request: {reason}",
                reason=failure.getErrorMessage(),
            )
        else:
            self._outage(failure)
        return False

    def clear(self) -> Optional[Deferred]:
        client = self._client()
        if client is None:
            return None
        return self._quiet(self._bump(client, self._ns_key))

    def statistics(self) -> CacheStatistics:
        # As Pgpool-II: memcached's storage is not ours to report.
        return CacheStatistics()

    # -- helpers ---------------------------------------------------------------

    def _bump(self, client: _CacheClientProtocol, key: bytes) -> Deferred:
        """
        Increment a generation counter, creating it (at a random value) if
        memcached does not have it.
        """

        def incremented(result: object) -> object:
            if result is not False:
                return result
            d = client.add(key, _start_generation())
            d.addCallback(lambda added: added or client.increment(key))
            return d

        return client.increment(key).addCallback(incremented)

    def _expire_time(self) -> int:
        if self.expire_seconds <= 0:
            return 0
        seconds = int(math.ceil(self.expire_seconds))
        if seconds > _MEMCACHED_RELATIVE_LIMIT:
            return int(self._reactor.seconds()) + seconds
        return seconds

    def _quiet(self, d: Deferred) -> Deferred:
        """
        Turn a failure into a logged outage and a None result.
        """

        def failed(failure: Failure) -> None:
            if failure.check(ServerError, ClientError, NoSuchCommand):
                # memcached refused this one (an entry over its item size
                # limit...): not an outage.
                log.debug(
                    "query cache: memcached refused a request: {reason}",
                    reason=failure.getErrorMessage(),
                )
                return
            self._outage(failure)

        return d.addCallbacks(lambda _: None, failed)


def _gather(ds: List[Deferred]) -> Deferred:
    from twisted.internet.defer import gatherResults

    return gatherResults(ds, consumeErrors=True)


def _encode_snapshot(
    generation_keys: Sequence[bytes], snapshot: Sequence[Optional[bytes]]
) -> bytes:
    """
    The header an entry carries: which counters it depends on and their
    values, length-prefixed.
    """
    body = b"\n".join(k + b"=" + (v or b"") for k, v in zip(generation_keys, snapshot))
    return _HEADER.pack(len(body)) + body


def _unpack_entry(value: bytes, expected_header: bytes) -> Optional[bytes]:
    """
    The reply of an entry whose header equals C{expected_header}; None when
    the entry predates a change of one of its counters.
    """
    if not value.startswith(expected_header):
        return None
    return value[len(expected_header) :]


def fetch_now(result: Union[FetchResult, Deferred]) -> Deferred:
    """
    A Deferred for a L{IQueryCacheStore.fetch} answer of either kind (for
    callers that do not need the synchronous fast path).
    """
    if isinstance(result, Deferred):
        return result
    return succeed(result)
