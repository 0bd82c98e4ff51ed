"""
Catalog facts for the query cache: what a relation name resolves to (its
OID, kind, persistence, inheritance family, the tables its foreign keys
cascade to) and how volatile a function is.  Only the server knows them:
they are asked once, with one SQL statement built by L{lookup_sql}, and
remembered in a L{CatalogCache} per database and session-settings digest
(name resolution follows C{search_path}), with the decisions made from
them.  No I/O: the session runs the lookup and calls L{CatalogCache.record}.
"""

from __future__ import annotations

import collections
from typing import Dict, Iterable, Optional, Sequence, Tuple

import attr
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_pgpool.cache.decisions import Decision

__all__ = ["CatalogCache", "CatalogCaches", "RelationFacts", "lookup_sql"]

log = Logger()


@attr.s(frozen=True, slots=True, auto_attribs=True)
class RelationFacts:
    """
    What the server says about one relation name.

    @ivar oid: C{pg_class.oid}.
    @ivar relkind: C{r} table, C{p} partitioned table, C{v} view, C{m}
        materialized view, C{f} foreign table, C{S} sequence...
    @ivar relpersistence: C{p} permanent, C{u} unlogged, C{t} temporary.
    @ivar schema: its schema's name.
    @ivar side_effects: it has user triggers or rules: a write to it may
        change other tables.
    @ivar family: the OIDs of its inheritance ancestors and descendants
        (partitions), itself excluded.
    @ivar cascades: the OIDs of tables whose foreign keys cascade (or set
        null/default) from it, recursively.
    """

    oid: int
    relkind: str
    relpersistence: str
    schema: str
    side_effects: bool = False
    family: Tuple[int, ...] = ()
    cascades: Tuple[int, ...] = ()


def _quote_ident(part: str) -> str:
    return '"' + part.replace('"', '""') + '"'


def _literal(text: str) -> str:
    """
    A text literal that means the same under any standard_conforming_strings
    and any client_encoding: E'' for printable ASCII, else hex-encoded UTF-8.
    A name holding bytes that were not valid in the client's encoding
    (lone surrogates) gives bytes that are not UTF-8 either: the server
    refuses the lookup, as it refuses the statement the name came from.
    """
    if all(32 <= ord(c) < 127 for c in text):
        return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
    return (
        "pg_catalog.convert_from(pg_catalog.decode('"
        + text.encode("utf-8", "surrogateescape").hex()
        + "', 'hex'), 'UTF8')"
    )


def _regclass_text(name: str) -> str:
    """
    The text to give to_regclass for a name as the classifier reports it
    (dot-joined parts, unquoted): each part quoted, so case and spaces are
    kept as written.
    """
    return ".".join(_quote_ident(p) for p in name.split("."))


_RELATION_QUERY = """\
SELECT 'r'::text, pg_catalog.encode(pg_catalog.convert_to(n.written, 'UTF8'), 'hex'), c.oid::text,
  c.relkind::text, c.relpersistence::text, s.nspname::text,
  (c.relhasrules OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                            WHERE t.tgrelid = c.oid AND NOT t.tgisinternal))::text,
  (WITH RECURSIVE up(oid) AS (
       SELECT c.oid UNION SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN up ON i.inhrelid = up.oid),
     down(oid) AS (
       SELECT c.oid UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN down ON i.inhparent = down.oid)
   SELECT pg_catalog.string_agg(f.oid::text, ',')
   FROM (SELECT oid FROM up UNION SELECT oid FROM down) f WHERE f.oid <> c.oid),
  (WITH RECURSIVE dep(oid) AS (
       SELECT c.oid UNION SELECT k.conrelid FROM pg_catalog.pg_constraint k JOIN dep ON k.confrelid = dep.oid
       WHERE k.contype = 'f' AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd')))
   SELECT pg_catalog.string_agg(dep.oid::text, ',') FROM dep WHERE dep.oid <> c.oid),
  NULL::text
FROM ROWS FROM (pg_catalog.unnest(ARRAY[{names}]::text[]),
               pg_catalog.unnest(ARRAY[{written}]::text[])) AS n(name, written)
LEFT JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(n.name)
LEFT JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace"""

_FUNCTION_QUERY = """\
SELECT 'f'::text, pg_catalog.encode(pg_catalog.convert_to(n.name, 'UTF8'), 'hex'),
  NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
  (SELECT pg_catalog.string_agg(DISTINCT p.provolatile::text, '')
   FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace s ON s.oid = p.pronamespace
   WHERE p.proname = n.proname
     AND CASE WHEN n.schema IS NULL THEN pg_catalog.pg_function_is_visible(p.oid)
              ELSE s.nspname = n.schema END)
FROM (VALUES {rows}) AS n(name, proname, schema)"""


def lookup_sql(relation_names: Sequence[str], function_names: Sequence[str]) -> str:
    """
    One simple-protocol statement (no parameters) answering, for each name,
    the facts L{CatalogCache.record} reads: one row per relation name (with
    NULLs when it does not resolve) and one per function name.

    Run it on the session's own backend connection, so that names resolve
    with its search_path and its temporary tables.

    @param relation_names: names as the classifier reports them: dot-joined,
        unquoted, unquoted identifiers folded to lower case.
    @param function_names: likewise.
    @raise ValueError: both lists are empty.
    """
    parts = []
    if relation_names:
        parts.append(
            _RELATION_QUERY.format(
                names=", ".join(_literal(_regclass_text(n)) for n in relation_names),
                written=", ".join(_literal(n) for n in relation_names),
            )
        )
    if function_names:
        rows = []
        for name in function_names:
            schema, _, bare = name.rpartition(".")
            rows.append(
                "({}, {}, {})".format(
                    _literal(name),
                    _literal(bare),
                    _literal(schema) + "::text" if schema else "NULL::text",
                )
            )
        parts.append(_FUNCTION_QUERY.format(rows=", ".join(rows)))
    if not parts:
        raise ValueError("nothing to look up")
    return "\nUNION ALL\n".join(parts)


def _oids(value: Optional[bytes]) -> Tuple[int, ...]:
    if not value:
        return ()
    return tuple(sorted({int(v) for v in value.split(b",")}))


class CatalogCache:
    """
    The catalog facts of one database as seen with one set of session
    settings, and the decisions made from them.

    @ivar database: the database name.
    @ivar relations: name as written -> facts, or None when the name does
        not resolve.
    @ivar functions: name as written -> volatility (C{i}, C{s} or C{v}, the
        least immutable of its overloads), or None when unknown.
    @ivar expire: Pgpool-II's C{relcache_expire} in seconds (0: never):
        every fact is forgotten at most this long after the first of them
        was learnt, so DDL made without the proxy is seen in bounded time.
    @ivar size: Pgpool-II's C{relcache_size}: at most this many names
        (relations and functions together; 0: no limit); beyond it the
        name learnt first is forgotten.
    """

    def __init__(
        self,
        database: str,
        max_decisions: int = 10000,
        clock: Optional[IReactorTime] = None,
        expire: float = 0.0,
        size: int = 0,
    ) -> None:
        self.database = database
        self.generation = 0
        self.relations: Dict[str, Optional[RelationFacts]] = {}
        self.functions: Dict[str, Optional[str]] = {}
        self.max_decisions = max_decisions
        self._decisions: "collections.OrderedDict[str, Decision]" = collections.OrderedDict()
        self._clock = clock
        self.expire = expire if clock is not None else 0.0
        self.size = size
        # When the facts held now expire (None: nothing held, or no expiry).
        self._expires_at: Optional[float] = None

    def missing(
        self, relation_names: Iterable[str], function_names: Iterable[str]
    ) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """
        The names this cache has no facts for (after forgetting everything
        if C{expire} has passed).
        """
        self.expire_if_due()
        return (
            tuple(n for n in relation_names if n not in self.relations),
            tuple(n for n in function_names if n not in self.functions),
        )

    def expire_if_due(self) -> None:
        """
        Forget everything if C{expire} has passed since the first fact held
        was learnt.
        """
        if (
            self._expires_at is not None
            and self._clock is not None
            and self._clock.seconds() >= self._expires_at
        ):
            self.forget()

    def record(self, rows: Iterable[Sequence[Optional[bytes]]]) -> None:
        """
        Remember the answer to a L{lookup_sql} statement: its text-format
        rows, as L{twisted_pgpool.backend.protocol.InternalResult.rows}.
        """
        for row in rows:
            kind, name_hex = row[0], row[1]
            if name_hex is None:
                continue
            name = bytes.fromhex(name_hex.decode("ascii")).decode("utf-8")
            if kind == b"r":
                self.relations[name] = _relation_facts(row)
            elif kind == b"f":
                self.functions[name] = _volatility(row[9])
        # New facts can change earlier "needs lookup" answers only; final
        # decisions stay valid.
        if self.expire > 0 and self._expires_at is None and self._clock is not None:
            self._expires_at = self._clock.seconds() + self.expire
        if self.size > 0:
            self._evict()

    def _evict(self) -> None:
        """
        Forget the names learnt first until at most C{size} remain.  The
        decisions made from them stay valid (their facts have not
        changed); a statement needing a forgotten name looks it up again.
        """
        excess = len(self.relations) + len(self.functions) - self.size
        if excess <= 0:
            return
        log.info(
            "relation cache of database {database}: cache replacement "
            "occurred (raise relcache_size)",
            database=self.database,
        )
        for table in (self.relations, self.functions):
            while excess > 0 and table:
                del table[next(iter(table))]
                excess -= 1

    def forget(self) -> None:
        """
        Drop every fact and decision (after DDL: names may resolve
        differently now).
        """
        self.relations.clear()
        self.functions.clear()
        self._decisions.clear()
        self._expires_at = None
        # Decisions remembered elsewhere (a session's memo) are stale now.
        self.generation += 1

    def _remember(self, sql: str, decision: "Decision") -> None:
        if self.max_decisions <= 0:
            return
        self._decisions[sql] = decision
        if len(self._decisions) > self.max_decisions:
            self._decisions.popitem(last=False)


def _relation_facts(row: Sequence[Optional[bytes]]) -> Optional[RelationFacts]:
    if row[2] is None:
        return None
    return RelationFacts(
        oid=int(row[2]),
        relkind=(row[3] or b"").decode("ascii"),
        relpersistence=(row[4] or b"").decode("ascii"),
        schema=(row[5] or b"").decode("utf-8", "replace"),
        side_effects=row[6] in (b"t", b"true"),
        family=_oids(row[7]),
        cascades=_oids(row[8]),
    )


def _volatility(value: Optional[bytes]) -> Optional[str]:
    if not value:
        return None
    for level in ("v", "s", "i"):
        if level.encode("ascii") in value:
            return level
    return None


class CatalogCaches:
    """
    The L{CatalogCache}s of the proxy, one per (database, settings digest),
    least recently used dropped beyond C{max_caches}.

    The query cache and the router share them (the router's lookups use
    the empty settings digest when the query cache is off).

    @ivar clock: what C{expire} is measured with.
    @ivar expire: each cache's C{relcache_expire}.
    @ivar size: each cache's C{relcache_size}.
    """

    def __init__(
        self,
        max_caches: int = 256,
        clock: Optional[IReactorTime] = None,
        expire: float = 0.0,
        size: int = 0,
    ) -> None:
        self.max_caches = max_caches
        self.clock = clock
        self.expire = expire
        self.size = size
        self._caches: "collections.OrderedDict[Tuple[str, bytes], CatalogCache]" = (
            collections.OrderedDict()
        )

    def get(self, database: str, settings_digest: bytes) -> CatalogCache:
        key = (database, settings_digest)
        cache = self._caches.get(key)
        if cache is None:
            cache = self._caches[key] = CatalogCache(
                database, clock=self.clock, expire=self.expire, size=self.size
            )
            if len(self._caches) > self.max_caches:
                _, dropped = self._caches.popitem(last=False)
                # Out of reach of forget_database() from now on.
                dropped.forget()
        else:
            self._caches.move_to_end(key)
        return cache

    def forget_database(self, database: str) -> None:
        """
        Forget the facts of every cache of C{database}.
        """
        for (name, _), cache in self._caches.items():
            if name == database:
                cache.forget()

    def forget_all(self) -> None:
        for cache in self._caches.values():
            cache.forget()
