"""
The query cache policy's answers: L{Decision} (may a statement's result be
cached, under which tables, or which names must be looked up first) and
L{InvalidationPlan} (what a statement's completion must invalidate).
Plain data.
"""

from __future__ import annotations

from typing import FrozenSet, Optional, Tuple

import attr

from twisted_pgpool.cache.store import TableRef

__all__ = ["Decision", "InvalidationPlan"]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Decision:
    """
    Whether a statement's result may be cached.

    @ivar cacheable: it may; register it under C{tables}.
    @ivar tables: the tables to fetch and store it under (sorted).
    @ivar reason: why not, when it may not.
    @ivar missing_relations: run L{lookup_sql} for these names (and
        C{missing_functions}), L{CatalogCache.record} the rows, and decide
        again.  Both empty unless the decision is pending.
    @ivar relation_names: the unqualified relation names it reads (for the
        session's temporary-table check).
    """

    cacheable: bool
    tables: Tuple[TableRef, ...] = ()
    reason: Optional[str] = None
    missing_relations: Tuple[str, ...] = ()
    missing_functions: Tuple[str, ...] = ()
    relation_names: FrozenSet[str] = frozenset()

    @property
    def needs_lookup(self) -> bool:
        return bool(self.missing_relations or self.missing_functions)


def _never(reason: str) -> Decision:
    return Decision(False, reason=reason)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class InvalidationPlan:
    """
    What a statement's completion must invalidate.

    @ivar tables: tables whose entries become obsolete.
    @ivar flush_all: obsolete every entry (ALTER DATABASE/ROLE, REVOKE,
        writes with effects we cannot see...).
    @ivar forget_catalog: drop the database's catalog facts (DDL: names may
        resolve differently now).
    @ivar missing_relations: look these up before the write runs (a DROP
        makes the name unresolvable afterwards), then plan again.
    @ivar missing_functions: likewise for functions.
    @ivar reason: why the whole cache is flushed, for logs.
    """

    tables: Tuple[TableRef, ...] = ()
    flush_all: bool = False
    forget_catalog: bool = False
    missing_relations: Tuple[str, ...] = ()
    missing_functions: Tuple[str, ...] = ()
    reason: Optional[str] = None

    @property
    def needs_lookup(self) -> bool:
        return bool(self.missing_relations or self.missing_functions)

    @property
    def is_empty(self) -> bool:
        return not (self.tables or self.flush_all or self.forget_catalog or self.needs_lookup)
