"""
L{QueryCache}: the query cache as the proxy uses it, a store
(L{twisted_pgpool.cache.store}), the policy
(L{twisted_pgpool.cache.policy.CachePolicy}), the catalog facts and the
counters of C{SHOW POOL_CACHE}.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

from twisted.internet.defer import Deferred

from twisted_pgpool.cache.catalog import CatalogCaches
from twisted_pgpool.cache.decisions import InvalidationPlan
from twisted_pgpool.cache.policy import CachePolicy
from twisted_pgpool.cache.store import FetchResult, MemcachedCacheStore, ShmemCacheStore, TableRef
from twisted_pgpool.interfaces import IQueryCacheStore

__all__ = ["POOL_CACHE_COLUMNS", "QueryCache", "pool_cache_row"]


class QueryCache:
    """
    The query cache as the proxy uses it: a store, the policy, the catalog
    facts and the counters of C{SHOW POOL_CACHE}.

    @ivar store: the L{IQueryCacheStore}.
    @ivar policy: the L{CachePolicy}.
    @ivar catalogs: the L{CatalogCaches}.
    @ivar auto_invalidation: memqcache_auto_cache_invalidation; when off,
        writes invalidate nothing and entries live until they expire.
    @ivar num_selects: lookups of cacheable statements.
    @ivar num_cache_hits: those answered from the cache.
    """

    def __init__(
        self,
        store: IQueryCacheStore,
        policy: CachePolicy,
        auto_invalidation: bool = True,
        catalogs: Optional[CatalogCaches] = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.catalogs = catalogs if catalogs is not None else CatalogCaches()
        self.auto_invalidation = auto_invalidation
        self.num_selects = 0
        self.num_cache_hits = 0

    def use_policy(self, policy: CachePolicy, auto_invalidation: bool) -> None:
        """
        Follow a reloaded configuration's rules (its table lists, comment
        and white-space settings, C{memqcache_auto_cache_invalidation}).
        Decisions taken under the old rules are forgotten; entries already
        cached stay until invalidated or expired.
        """
        self.policy = policy
        self.auto_invalidation = auto_invalidation
        self.catalogs.forget_all()

    @classmethod
    def from_config(cls, config, reactor, catalogs: Optional[CatalogCaches] = None) -> "QueryCache":
        """
        Build the cache a L{twisted_pgpool.config.PgpoolConfig} describes
        (call L{start} before use, L{stop} at shutdown).

        @param catalogs: the catalog facts to share with routing.
        """
        store: IQueryCacheStore
        if config.memqcache_method == "memcached":
            store = MemcachedCacheStore(
                reactor,
                config.memqcache_memcached_host,
                config.memqcache_memcached_port,
                expire_seconds=config.memqcache_expire,
                max_entry_size=config.memqcache_maxcache,
            )
        else:
            store = ShmemCacheStore(
                config.memqcache_total_size,
                config.memqcache_max_num_cache,
                expire_seconds=config.memqcache_expire,
                max_entry_size=config.memqcache_maxcache,
                clock=reactor,
            )
        policy = CachePolicy(
            config.cache_safe_memqcache_table_list,
            config.cache_unsafe_memqcache_table_list,
            allow_sql_comments=config.allow_sql_comments,
            ignore_leading_white_space=config.ignore_leading_white_space,
        )
        return cls(
            store,
            policy,
            auto_invalidation=config.memqcache_auto_cache_invalidation,
            catalogs=catalogs,
        )

    def start(self) -> None:
        start = getattr(self.store, "start", None)
        if start is not None:
            start()

    def stop(self) -> Optional[Deferred]:
        stop = getattr(self.store, "stop", None)
        return stop() if stop is not None else None

    def fetch(self, key: bytes, tables: Sequence[TableRef]) -> Union[FetchResult, Deferred]:
        """
        L{IQueryCacheStore.fetch}, counted for SHOW POOL_CACHE.
        """
        self.num_selects += 1
        result = self.store.fetch(key, tables)
        if isinstance(result, FetchResult):
            if result.reply is not None:
                self.num_cache_hits += 1
            return result
        return result.addCallback(self._count_hit)

    def _count_hit(self, result: FetchResult) -> FetchResult:
        if result.reply is not None:
            self.num_cache_hits += 1
        return result

    def store_reply(
        self, key: bytes, reply: bytes, tables: Sequence[TableRef], token: object
    ) -> None:
        self.store.store(key, reply, tables, token)

    def apply(self, plan: InvalidationPlan, database: str) -> Optional[Deferred]:
        """
        Carry out an invalidation plan (at completion or COMMIT).

        @return: as L{IQueryCacheStore.invalidate}.
        """
        if plan.forget_catalog:
            self.catalogs.forget_database(database)
        if not self.auto_invalidation:
            return None
        if plan.flush_all:
            return self.store.clear()
        if plan.tables:
            return self.store.invalidate(plan.tables)
        return None

    def delete(self, key: bytes) -> Union[bool, Deferred]:
        """
        Remove one entry (C{PGPOOL SET CACHE DELETE}).

        @return: as L{IQueryCacheStore.delete}: whether it was there, or a
            Deferred (never failing) firing with that.
        """
        return self.store.delete(key)

    def clear(self) -> Optional[Deferred]:
        """
        Obsolete every entry and every catalog fact (the admin command).
        """
        self.catalogs.forget_all()
        return self.store.clear()

    def pool_cache_row(self) -> List[str]:
        """
        The one row of C{SHOW POOL_CACHE}, Pgpool-II's nine columns.
        """
        return pool_cache_row(self.num_cache_hits, self.num_selects, self.store.statistics())


#: The columns of C{SHOW POOL_CACHE}.
POOL_CACHE_COLUMNS = (
    "num_cache_hits",
    "num_selects",
    "cache_hit_ratio",
    "num_hash_entries",
    "used_hash_entries",
    "num_cache_entries",
    "used_cache_entries_size",
    "free_cache_entries_size",
    "fragment_cache_entries_size",
)


def pool_cache_row(hits: int, selects: int, stats) -> List[str]:
    ratio = hits / selects if selects else 0.0
    return [
        str(hits),
        str(selects),
        f"{ratio:.2f}",
        str(stats.num_hash_entries),
        str(stats.used_hash_entries),
        str(stats.num_cache_entries),
        str(stats.used_cache_entries_size),
        str(stats.free_cache_entries_size),
        str(stats.fragment_cache_entries_size),
    ]
