"""
The query cache as one client session uses it.

L{twisted_pgpool.cache.policy} says what may be cached and under which key,
L{twisted_pgpool.cache.store} keeps the replies; this module holds what
depends on the session: the settings that make two sessions' results
comparable (the key's settings digest), the catalog facts for its
database, invalidations waiting for a COMMIT, and the recorder that copies
a reply on its way to the client so it can be stored.

The session's cache steps (L{twisted_pgpool.cache.steps}) decide when to
ask; the rules they follow are in docs/query-cache.md:

  - the cache is used (looked up and filled) only outside explicit
    transactions, and never after C{SET ROLE} or C{SET SESSION
    AUTHORIZATION} in the session;
  - a result is stored only when it was read from the primary (a lagging
    standby must not put old rows in the cache), so cache misses of
    cacheable statements are read from the primary;
  - writes invalidate when they complete outside a transaction, or at the
    COMMIT of their transaction (a ROLLBACK drops them).
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable, Collection, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from twisted_pgpool import logs
from twisted_pgpool.cache.catalog import CatalogCache
from twisted_pgpool.cache.decisions import Decision, InvalidationPlan
from twisted_pgpool.cache.keys import simple_key
from twisted_pgpool.cache.querycache import QueryCache
from twisted_pgpool.cache.store import MemcachedCacheStore, TableRef
from twisted_pgpool.wire import errors, messages

log = Logger(observer=logs.observer)

_ROLE_CHANGE = re.compile(
    r"\s*(?:set\s+(?:session\s+|local\s+)?(?:role|session\s+authorization)\b"
    r"|reset\s+(?:role|session\s+authorization)\b)",
    re.IGNORECASE,
)

# PGPOOL SET CACHE DELETE '<query>' [;]: the query is SQL-quoted ('' for ').
_CACHE_DELETE = re.compile(
    rb"\s*pgpool\s+set\s+cache\s+delete\s*'((?:[^']|'')*)'\s*;?\s*\x00?\Z", re.IGNORECASE
)
# The cheap filter in front of it: most queries fail the first byte.
_CACHE_DELETE_FIRST_BYTES = frozenset(b"pP \t\n\r")

_READY_LENGTH = 6
#: Statements a session remembers its cache decisions for.
_MEMO_SIZE = 1000


def changes_role(sql: str) -> bool:
    """
    Whether a statement changes the session's role: results read after it
    may differ from what the login user sees (Pgpool-II stops using the
    cache then, and so do we).
    """
    return _ROLE_CHANGE.match(sql) is not None


def match_cache_delete(payload: bytes) -> Optional[bytes]:
    """
    If a Query payload is C{PGPOOL SET CACHE DELETE '<query>'} (Pgpool-II
    4.6), the query it names, unquoted, as the bytes a client would send
    (the cache key is made of those); else None.  Cheap for every other
    statement: a first-byte test, then a first-word test, before the
    regular expression.
    """
    if not payload or payload[0] not in _CACHE_DELETE_FIRST_BYTES:
        return None
    if not payload[:32].lstrip().lower().startswith(b"pgpool"):
        return None
    found = _CACHE_DELETE.match(payload)
    if found is None:
        return None
    return found.group(1).replace(b"''", b"'")


def cache_delete_reply(query: bytes, deleted: bool) -> List[bytes]:
    """
    Pgpool-II's answer to C{PGPOOL SET CACHE DELETE} (without the
    ReadyForQuery): a NOTICE saying whether an entry was deleted, then
    C{SET}.  Pgpool-II also says "does not exist" when the cache is off.
    """
    text = query.decode("utf-8", "replace")
    if deleted:
        message = f'query cache deleted. query: "{text}"'
    else:
        message = f'query cache does not exist for query: "{text}"'
    return [errors.notice(message).to_notice(), messages.command_complete("SET")]


class ReplyRecorder:
    """
    Copies one reply as it is forwarded to the client, and stores it in
    the cache when it completed without error, outside a transaction, and
    within C{memqcache_maxcache}.

    It follows L{twisted_pgpool.backend.replies.IReplyRecorder}.
    """

    def __init__(
        self,
        client_write: Callable[[bytes], None],
        cache: QueryCache,
        key: bytes,
        tables: Sequence[TableRef],
        token: object,
        limit: int,
    ) -> None:
        self._client_write = client_write
        self._cache = cache
        self._key = key
        self._tables = tables
        self._token = token
        self._limit = limit + _READY_LENGTH
        self._parts: Optional[List[bytes]] = []
        self._size = 0
        self.failed = False

    def write(self, data: bytes) -> None:
        self._client_write(data)
        parts = self._parts
        if parts is not None:
            self._size += len(data)
            if self._size > self._limit:
                self._parts = None
            else:
                parts.append(data)

    def finished(self, status: int) -> None:
        parts, self._parts = self._parts, None
        if parts is None or self.failed or status != messages.TRANSACTION_IDLE:
            return
        reply = b"".join(parts)
        if reply[-_READY_LENGTH:-1] != b"Z\x00\x00\x00\x05":
            return
        self._cache.store_reply(self._key, reply[:-_READY_LENGTH], self._tables, self._token)


class SessionCache:
    """
    One session's view of the query cache.

    @ivar cache: the proxy's L{QueryCache}.
    @ivar user: the session's user (part of every key).
    @ivar database: its database.
    @ivar disabled: why the cache is not used any more in this session
        (a role change), or None.
    @ivar pending: invalidations waiting for their statement to complete
        or their transaction to commit, each with whether it was made
        inside a transaction.
    """

    def __init__(
        self, cache: QueryCache, user: str, database: str, startup_settings: Dict[str, str]
    ) -> None:
        self.cache = cache
        #: Invalidations take a round trip to another server: a write's
        #: ReadyForQuery waits for them, so that a client told of the
        #: commit (or one it tells) cannot read the old result anywhere.
        self.remote = isinstance(cache.store, MemcachedCacheStore)
        self.user = user
        self.database = database
        self.disabled: Optional[str] = None
        self.pending: List[Tuple[InvalidationPlan, bool]] = []
        self._startup = repr(sorted(startup_settings.items()))
        self.digest = b""
        # Query payload -> (key, tables, catalog, its generation): a
        # statement seen before skips classification, the rules and the
        # hashing (a cache hit is mostly this lookup and one write).
        self._memo: Dict[bytes, Tuple[bytes, Tuple[TableRef, ...], CatalogCache, int]] = {}
        # The same for extended-protocol batches (their messages' bytes):
        # they name statements, so they are forgotten when the session's
        # statements change.
        self._batch_memo: Dict[bytes, Tuple[bytes, Tuple[TableRef, ...], CatalogCache, int]] = {}
        self.settings_changed(())

    def settings_changed(self, session_sql: Iterable[str]) -> None:
        """
        The session's settings changed (its SET statements so far, in
        order): results are only shared by sessions with the same ones.
        """
        text = "\0".join([self._startup, *session_sql])
        self.digest = hashlib.blake2b(
            text.encode("utf-8", "surrogateescape"), digest_size=16
        ).digest()
        self._memo.clear()
        self._batch_memo.clear()

    def remembered(
        self, payload: bytes, batch: bool = False
    ) -> Optional[Tuple[bytes, Tuple[TableRef, ...]]]:
        """
        The key and tables of a cacheable Query payload (or batch) this
        session has decided on, while the facts behind that decision still
        hold.
        """
        memo = self._batch_memo if batch else self._memo
        entry = memo.get(payload)
        if entry is None:
            return None
        key, tables, catalog, generation = entry
        if catalog.generation != generation:
            del memo[payload]
            return None
        return key, tables

    def remember(
        self, payload: bytes, key: bytes, tables: Tuple[TableRef, ...], batch: bool = False
    ) -> None:
        memo = self._batch_memo if batch else self._memo
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        catalog = self.catalog
        memo[payload] = (key, tables, catalog, catalog.generation)

    def statements_changed(self) -> None:
        """
        The session parsed or closed a named statement: remembered batches
        may name it.
        """
        if self._batch_memo:
            self._batch_memo.clear()

    @property
    def catalog(self) -> CatalogCache:
        return self.cache.catalogs.get(self.database, self.digest)

    def delete(self, query: bytes) -> Union[bool, Deferred]:
        """
        Delete the entry a simple Query of exactly C{query} would use in
        this session (its user, database and settings).

        The memo of decisions needs no change: it maps a payload to its key,
        and the next fetch of that key simply misses and stores anew.

        @return: as L{QueryCache.delete}.
        """
        return self.cache.delete(simple_key(self.user, self.database, self.digest, query))

    def decide(self, sql: str, temp_tables: Collection[str]) -> Decision:
        return self.cache.policy.decide(sql, self.catalog, temp_tables=temp_tables)

    def plan(self, sql: str) -> InvalidationPlan:
        return self.cache.policy.plan_invalidation(sql, self.catalog)

    def completed(self, plan: InvalidationPlan, in_transaction: bool) -> None:
        """
        A statement with writes was sent: invalidate when it completes, or
        when its transaction commits.
        """
        if plan.is_empty:
            return
        self.pending.append((plan, in_transaction))

    def committed(self) -> List[Deferred]:
        """
        The primary is idle again after a statement or a COMMIT: carry out
        the waiting invalidations.

        @return: for a remote cache, Deferreds firing (never failing) when
            it has them.
        """
        pending, self.pending = self.pending, []
        waits = []
        for plan, _ in pending:
            if plan.flush_all and plan.reason:
                log.info("query cache: flushing every entry: {reason}", reason=plan.reason)
            d = self.cache.apply(plan, self.database)
            if d is not None:
                waits.append(d)
        return waits

    def has_pending(self, in_transaction: bool) -> bool:
        """
        Whether invalidations made inside (or outside) a transaction wait.
        """
        return any(inside == in_transaction for _, inside in self.pending)

    def rolled_back(self) -> None:
        """
        The transaction ended without committing: its writes never
        happened, so there is nothing to invalidate for them (writes made
        before it, outside it, still count).
        """
        self.pending = [(plan, inside) for plan, inside in self.pending if not inside]
