"""
What the in-memory query cache may keep, under which key, and what a write
must invalidate.

Pgpool-II's rules (section 1.11 of the reference) decided on our
classifier's facts plus catalog facts that only the server knows: what a
relation name resolves to (its OID, kind and persistence), and how
volatile a function is.  Those facts are asked once, with one SQL
statement built by L{lookup_sql}, and remembered in a L{CatalogCache} per
database and session-settings digest (name resolution follows
C{search_path}).

Nothing here does I/O: L{CachePolicy.decide} answers "cacheable under these
tables", "never", or "look these names up first"; the session runs the
lookup and calls L{CatalogCache.record}.

Conservative where a mistake would serve stale data:
 - a read is registered under every table of its relation's inheritance
   family (partitions, parents), so a write through any of them
   invalidates it;
 - a write also invalidates the tables its foreign keys cascade to, and a
   write to a table with user triggers or rules, or to a view, or a call
   of a volatile user function, flushes the whole cache (we cannot know
   what else it wrote).
"""

from __future__ import annotations

import collections
import hashlib
import re
import struct
from typing import (
    Collection,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
)

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_pgpool.cache.store import FetchResult, MemcachedCacheStore, ShmemCacheStore, TableRef
from twisted_pgpool.interfaces import IQueryCacheStore
from twisted_pgpool.sql.classifier import (
    VOLATILE_FUNCTIONS,
    WRITING_FUNCTION_PREFIXES,
    WRITING_FUNCTIONS,
    Classification,
    ClassifierConfig,
    _is_non_volatile_builtin,
    classify,
)
from twisted_pgpool.sql.lexer import (
    COMMENT,
    IDENT,
    KEYWORD,
    PUNCT,
    QUOTED_IDENT,
    STRING,
    WHITESPACE,
    Token,
    tokenize,
)
from twisted_pgpool.wire import messages

log = Logger()

__all__ = [
    "CachePolicy",
    "CatalogCache",
    "CatalogCaches",
    "Decision",
    "ExtendedBatch",
    "InvalidationPlan",
    "QueryCache",
    "RelationFacts",
    "extended_key",
    "leading_marker",
    "lookup_sql",
    "simple_key",
]

NO_QUERY_CACHE = "/*NO QUERY CACHE*/"
FORCE_QUERY_CACHE = "/*FORCE QUERY CACHE*/"

_READ_KINDS = frozenset(["select", "with", "values", "table"])
_CATALOG_SCHEMAS = frozenset(["pg_catalog", "information_schema", "pg_toast"])
# SQL value functions: no parentheses, so the classifier does not see calls.
_VALUE_FUNCTIONS = frozenset("""
    current_date current_time current_timestamp localtime localtimestamp
    current_role current_user session_user user current_catalog current_schema system_user
""".split())
# Date/time input strings whose value is the time they are read.
_MOVING_LITERALS = frozenset(["now", "today", "tomorrow", "yesterday"])
_SELECT_INTO_REASON = "SELECT INTO creates a table"


# ---------------------------------------------------------------------------
# Leading comments.


def leading_marker(sql: str) -> Optional[str]:
    """
    The cache directive among the comments that open C{sql}:
    C{NO_QUERY_CACHE}, C{FORCE_QUERY_CACHE} or None.  Matched
    case-insensitively with any inner spacing, as a user may type it.
    """
    stripped = sql.lstrip()
    if not stripped.startswith(("/*", "--")):
        return None
    for token in tokenize(stripped):
        if token.kind == WHITESPACE:
            continue
        if token.kind != COMMENT:
            return None
        norm = "".join(token.text.split()).upper()
        if norm == "/*NOQUERYCACHE*/":
            return NO_QUERY_CACHE
        if norm == "/*FORCEQUERYCACHE*/":
            return FORCE_QUERY_CACHE
    return None


# ---------------------------------------------------------------------------
# Catalog facts.


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
    return ("pg_catalog.convert_from(pg_catalog.decode('"
            + text.encode("utf-8", "surrogateescape").hex()
            + "', 'hex'), 'UTF8')")


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
        parts.append(_RELATION_QUERY.format(
            names=", ".join(_literal(_regclass_text(n)) for n in relation_names),
            written=", ".join(_literal(n) for n in relation_names)))
    if function_names:
        rows = []
        for name in function_names:
            schema, _, bare = name.rpartition(".")
            rows.append("({}, {}, {})".format(
                _literal(name), _literal(bare), _literal(schema) + "::text" if schema else "NULL::text"))
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

    def __init__(self, database: str, max_decisions: int = 10000,
                 clock: Optional[IReactorTime] = None, expire: float = 0.0,
                 size: int = 0) -> None:
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

    def missing(self, relation_names: Iterable[str],
                function_names: Iterable[str]) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """
        The names this cache has no facts for (after forgetting everything
        if C{expire} has passed).
        """
        self.expire_if_due()
        return (tuple(n for n in relation_names if n not in self.relations),
                tuple(n for n in function_names if n not in self.functions))

    def expire_if_due(self) -> None:
        """
        Forget everything if C{expire} has passed since the first fact held
        was learnt.
        """
        if self._expires_at is not None and self._clock is not None and \
                self._clock.seconds() >= self._expires_at:
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
        log.info("relation cache of database {database}: cache replacement "
                 "occurred (raise relcache_size)", database=self.database)
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

    def __init__(self, max_caches: int = 256, clock: Optional[IReactorTime] = None,
                 expire: float = 0.0, size: int = 0) -> None:
        self.max_caches = max_caches
        self.clock = clock
        self.expire = expire
        self.size = size
        self._caches: "collections.OrderedDict[Tuple[str, bytes], CatalogCache]" = collections.OrderedDict()

    def get(self, database: str, settings_digest: bytes) -> CatalogCache:
        key = (database, settings_digest)
        cache = self._caches.get(key)
        if cache is None:
            cache = self._caches[key] = CatalogCache(
                database, clock=self.clock, expire=self.expire, size=self.size)
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


# ---------------------------------------------------------------------------
# Decisions.


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


def _compile(patterns: Sequence[str]) -> Tuple["re.Pattern[str]", ...]:
    return tuple(re.compile(p) for p in patterns)


def _is_builtin_volatile(name: str) -> bool:
    schema, _, bare = name.rpartition(".")
    if schema not in ("", "pg_catalog"):
        return False
    return bare in WRITING_FUNCTIONS or bare.startswith(WRITING_FUNCTION_PREFIXES) or bare in VOLATILE_FUNCTIONS


def _is_user_function(name: str) -> bool:
    """
    Could this call be a user function (which may write)?  PostgreSQL's own
    functions the classifier knows cannot write tables.
    """
    schema, _, bare = name.rpartition(".")
    if schema not in ("", "pg_catalog"):
        return True
    return not (_is_builtin_volatile(name) or _is_non_volatile_builtin(bare))


class CachePolicy:
    """
    Pgpool-II's query cache rules.

    It classifies statements itself, with settings of its own: the router's
    classification makes calls of user functions writes and applies
    primary_routing_query_pattern_list, neither of which matters here.

    @param cache_safe_memqcache_table_list: regular expressions (matched
        against the whole name, as written in the query or
        schema-qualified) of views, unlogged and foreign tables whose
        results may be cached.
    @param cache_unsafe_memqcache_table_list: regular expressions of
        relations never cached (this list wins).
    """

    def __init__(self, cache_safe_memqcache_table_list: Sequence[str] = (),
                 cache_unsafe_memqcache_table_list: Sequence[str] = (),
                 allow_sql_comments: bool = False, ignore_leading_white_space: bool = True) -> None:
        self._safe = _compile(cache_safe_memqcache_table_list)
        self._unsafe = _compile(cache_unsafe_memqcache_table_list)
        self._config = ClassifierConfig(
            allow_sql_comments=allow_sql_comments,
            ignore_leading_white_space=ignore_leading_white_space,
            unknown_functions_are_writes=False)
        # /*FORCE QUERY CACHE*/: no function makes a SELECT a write, and the
        # marker itself must not fail the first-character test.
        self._force_config = ClassifierConfig(
            read_only_function_list=(".*",), allow_sql_comments=True,
            ignore_leading_white_space=True, unknown_functions_are_writes=False)

    # -- reads -----------------------------------------------------------------

    def decide(self, sql: str, catalog: CatalogCache, temp_tables: Collection[str] = ()) -> Decision:
        """
        May the result of C{sql} (one simple Query, or one Parse's text) be
        cached?

        Final decisions are remembered per catalog cache, so a repeated
        statement costs one dictionary lookup.

        @param temp_tables: the unqualified names of the temporary tables
            the session created (a temporary table shadows a permanent one
            of the same name for that session only).
        """
        decision = catalog._decisions.get(sql)
        if decision is None:
            decision = self._decide(sql, catalog)
            if decision.needs_lookup:
                return decision
            catalog._remember(sql, decision)
        if temp_tables and decision.cacheable and not decision.relation_names.isdisjoint(temp_tables):
            return _never("reads a temporary table of this session")
        return decision

    def _decide(self, sql: str, catalog: CatalogCache) -> Decision:
        marker = leading_marker(sql)
        if marker == NO_QUERY_CACHE:
            return _never("/*NO QUERY CACHE*/ comment")
        force = marker == FORCE_QUERY_CACHE
        c = classify(sql, self._force_config if force else self._config)
        refusal = self._structural_refusal(c)
        if refusal is not None:
            return _never(refusal)
        tokens = tokenize(sql, skip_trivia=True)
        if not force:
            refusal = _time_dependent(tokens, c.functions)
            if refusal is not None:
                return _never(refusal)
        names = c.touches_temp_table_candidates
        for name in names:
            if name.count(".") > 1:
                return _never(f"three-part name {name}")
        functions = () if force else c.functions
        missing_relations, missing_functions = catalog.missing(names, functions)
        if missing_relations or missing_functions:
            return Decision(False, missing_relations=missing_relations, missing_functions=missing_functions)
        return self._decide_with_facts(c, catalog, _cte_names(tokens), functions)

    def _structural_refusal(self, c: Classification) -> Optional[str]:
        if c.kind not in _READ_KINDS:
            return f"not a SELECT ({c.kind.upper()})"
        if c.is_multi_statement:
            return "multi-statement query"
        if not c.is_read_only:
            return c.forces_primary_reason or "not a read"
        if c.references_system_catalog:
            return "reads a system catalog"
        return None

    def _decide_with_facts(self, c: Classification, catalog: CatalogCache, ctes: FrozenSet[str],
                           functions: Sequence[str]) -> Decision:
        tables = set()
        bare_names = set()
        for name in c.touches_temp_table_candidates:
            facts = catalog.relations[name]
            if facts is None:
                if "." not in name and name in ctes:
                    continue
                return _never(f"relation {name} does not resolve")
            refusal = self._relation_refusal(name, facts)
            if refusal is not None:
                return _never(refusal)
            bare_names.add(name.rpartition(".")[2].lower())
            tables.add(facts.oid)
            tables.update(facts.family)
        for name in functions:
            volatility = catalog.functions[name]
            if volatility is None:
                return _never(f"function {name}() is unknown")
            if volatility != "i":
                return _never(f"function {name}() is not IMMUTABLE")
        refs = tuple(TableRef(catalog.database, oid) for oid in sorted(tables))
        return Decision(True, tables=refs, relation_names=frozenset(bare_names))

    def _relation_refusal(self, name: str, facts: RelationFacts) -> Optional[str]:
        qualified = f"{facts.schema}.{name.rpartition('.')[2]}"
        if _matches(self._unsafe, name, qualified):
            return f"{name} is in cache_unsafe_memqcache_table_list"
        if facts.schema in _CATALOG_SCHEMAS:
            return f"{name} is a system catalog"
        if facts.relpersistence == "t":
            return f"{name} is a temporary table"
        safe = _matches(self._safe, name, qualified)
        if facts.relpersistence == "u" and not safe:
            return f"{name} is an unlogged table"
        if facts.relkind in ("r", "p"):
            return None
        if facts.relkind in ("v", "m", "f"):
            return None if safe else f"{name} is a view or foreign table not in cache_safe_memqcache_table_list"
        return f"{name} cannot be cached (relkind {facts.relkind})"

    # -- writes ----------------------------------------------------------------

    def classify(self, sql: str) -> Classification:
        """
        Classify with this policy's settings.
        """
        return classify(sql, self._config)

    def plan_invalidation(self, sql: str, catalog: CatalogCache) -> InvalidationPlan:
        """
        What must be invalidated when C{sql} completes (outside a
        transaction) or its transaction commits.

        Call it for every statement the session runs that was not served
        from the cache; for plain reads it returns an empty plan without a
        lookup.  Resolve missing names (before the statement runs) and call
        it again.
        """
        c = self.classify(sql)
        flush = flushes_everything(c, sql)
        forget = changes_catalog(c, sql)
        if flush:
            return InvalidationPlan(flush_all=True, forget_catalog=forget, reason=flush)
        written = tables_written(c, sql)
        user_functions = tuple(f for f in c.functions if _is_user_function(f))
        missing_relations, missing_functions = catalog.missing(written, user_functions)
        if missing_relations or missing_functions:
            return InvalidationPlan(forget_catalog=forget, missing_relations=missing_relations,
                                    missing_functions=missing_functions)
        for name in user_functions:
            if catalog.functions[name] in (None, "v"):
                return InvalidationPlan(flush_all=True, forget_catalog=forget,
                                        reason=f"calls function {name}(), which may write any table")
        refs, reason = written_table_refs(written, catalog)
        if reason is not None:
            return InvalidationPlan(flush_all=True, forget_catalog=forget, reason=reason)
        return InvalidationPlan(tables=refs, forget_catalog=forget)


def _matches(patterns: Sequence["re.Pattern[str]"], *names: str) -> bool:
    return any(p.fullmatch(n) is not None for p in patterns for n in names)


def _time_dependent(tokens: Sequence[Token], functions: Sequence[str]) -> Optional[str]:
    """
    Why a statement's result depends on when or by whom it runs, beyond
    what function volatility shows: SQL value functions (CURRENT_DATE,
    CURRENT_USER...) and date/time literals such as C{'now'}.
    """
    for i, t in enumerate(tokens):
        if t.kind == KEYWORD and t.value in _VALUE_FUNCTIONS:
            if not (i + 1 < len(tokens) and tokens[i + 1].kind == PUNCT and tokens[i + 1].text == "("):
                return f"SQL value function {t.value.upper()}"
        elif t.kind == STRING and t.value.strip().lower() in _MOVING_LITERALS:
            return f"date/time literal '{t.value}'"
    for name in functions:
        if _is_builtin_volatile(name):
            return f"volatile function {name}()"
    return None


def _cte_names(tokens: Sequence[Token]) -> FrozenSet[str]:
    """
    The names WITH clauses define: C{WITH [RECURSIVE] name [(cols)] AS
    [[NOT] MATERIALIZED] (}, and the same after a comma.
    """
    names = set()
    n = len(tokens)
    for i, t in enumerate(tokens):
        if t.kind not in (IDENT, QUOTED_IDENT, KEYWORD) or i == 0:
            continue
        prev = tokens[i - 1]
        if not (prev.kind == KEYWORD and prev.value in ("with", "recursive")
                or prev.kind == PUNCT and prev.text == ","):
            continue
        j = i + 1
        if j < n and tokens[j].kind == PUNCT and tokens[j].text == "(":
            depth = 0
            while j < n:
                if tokens[j].kind == PUNCT and tokens[j].text == "(":
                    depth += 1
                elif tokens[j].kind == PUNCT and tokens[j].text == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            j += 1
        if not (j < n and tokens[j].kind == KEYWORD and tokens[j].value == "as"):
            continue
        j += 1
        while j < n and tokens[j].kind == KEYWORD and tokens[j].value in ("not", "materialized"):
            j += 1
        if j < n and tokens[j].kind == PUNCT and tokens[j].text == "(":
            names.add(t.value)
    return frozenset(names)


# ---------------------------------------------------------------------------
# The write side.


def _words(sql: str, count: int = 4) -> List[str]:
    """
    The first C{count} words of C{sql}, lower case, comments skipped.
    """
    out = []
    for t in tokenize(sql, skip_trivia=True):
        if t.kind not in (KEYWORD, IDENT):
            break
        out.append(t.value)
        if len(out) == count:
            break
    return out


# Objects whose ALTER/DROP changes only that table's results (per-table
# invalidation), or nothing cached at all.
_PER_TABLE_OBJECTS = frozenset(["table", "index", "sequence", "statistics", "trigger", "rule"])
# CREATE of these can change what existing statements compute (a new
# overload, operator or cast may be chosen instead of the old one).
_CREATE_FLUSHES = frozenset(["function", "procedure", "operator", "cast", "aggregate", "policy"])
_ALWAYS_FLUSH_KINDS = frozenset(["revoke", "reassign", "call", "do", "execute"])


def flushes_everything(classification: Classification, sql: str) -> Optional[str]:
    """
    Whether the statement must obsolete the whole cache, and why.

    Pgpool-II flushes on ALTER DATABASE, ALTER ROLE and REVOKE (a user may
    lose access to results already cached for them).  We also flush on
    statements whose effects we cannot attribute to tables: CALL, DO, a SQL
    EXECUTE, any other ALTER or DROP than of a table, index or sequence
    (functions, views, policies, schemas, types...), CREATE OR REPLACE, and
    CREATE of functions, operators, casts, aggregates or policies.

    @return: the reason, or None.
    """
    for part in classification.parts or (classification,):
        kind = part.kind
        if kind in _ALWAYS_FLUSH_KINDS:
            return f"{kind.upper()} may change what any cached result should be"
    words = _words(sql)
    if not words:
        return None
    verb = words[0]
    if verb in ("alter", "drop") and len(words) > 1:
        obj = words[1]
        if obj in ("foreign",) and len(words) > 2 and words[2] == "table":
            return None
        if obj not in _PER_TABLE_OBJECTS:
            return f"{verb.upper()} {obj.upper()}"
        if verb == "alter" and obj == "table" and len(words) > 2 and words[2] == "all":
            return "ALTER TABLE ALL IN TABLESPACE"
    if verb == "create" and len(words) > 1:
        if words[1] == "or":
            return "CREATE OR REPLACE"
        if words[1] in _CREATE_FLUSHES:
            return f"CREATE {words[1].upper()}"
    if classification.is_multi_statement:
        # Only the first statement's words were read: check the others.
        for text in _split(sql)[1:]:
            reason = flushes_everything(classify(text), text)
            if reason is not None:
                return reason
    return None


def _split(sql: str) -> List[str]:
    from twisted_pgpool.sql.lexer import split_statements

    return split_statements(sql)


def changes_catalog(classification: Classification, sql: str) -> bool:
    """
    Whether names may resolve differently after the statement (DDL, SELECT
    INTO): the database's catalog facts must be forgotten.
    """
    for part in classification.parts or (classification,):
        if part.kind in ("create", "alter", "drop", "import", "reassign", "revoke", "grant", "comment",
                         "security", "call", "do", "execute"):
            return True
        if part.forces_primary_reason == _SELECT_INTO_REASON:
            return True
    return False


def tables_written(classification: Classification, sql: str) -> Tuple[str, ...]:
    """
    The relation names a statement changes (as written, for L{lookup_sql}):
    INSERT/UPDATE/DELETE/MERGE/TRUNCATE/COPY FROM targets, DROP TABLE,
    ALTER TABLE and REFRESH MATERIALIZED VIEW targets.
    """
    names = list(classification.written_relations) + list(classification.drops_tables)
    statements = _split(sql) if classification.is_multi_statement else [sql]
    for text in statements:
        names.extend(_ddl_targets(text))
    return tuple(dict.fromkeys(names))


def _ddl_targets(sql: str) -> List[str]:
    tokens = [t for t in tokenize(sql, skip_trivia=True)]
    values = [t.value if t.kind in (KEYWORD, IDENT) else None for t in tokens]
    i = 0
    if values[:2] == ["alter", "table"] or values[:3] == ["alter", "foreign", "table"]:
        i = 3 if values[1] == "foreign" else 2
    elif values[:3] == ["refresh", "materialized", "view"]:
        i = 3
        if i < len(values) and values[i] == "concurrently":
            i += 1
    elif values[:2] in (["drop", "index"], ["drop", "sequence"]) or values[:3] == ["drop", "foreign", "table"]:
        return []
    else:
        return []
    while i < len(values) and values[i] in ("if", "exists", "only"):
        i += 1
    parts = []
    while i < len(tokens) and tokens[i].kind in (IDENT, QUOTED_IDENT, KEYWORD):
        parts.append(tokens[i].value)
        if i + 1 < len(tokens) and tokens[i + 1].kind == PUNCT and tokens[i + 1].text == ".":
            i += 2
            continue
        break
    return [".".join(parts)] if parts else []


def written_table_refs(names: Sequence[str],
                       catalog: CatalogCache) -> Tuple[Tuple[TableRef, ...], Optional[str]]:
    """
    Map written relation names to the tables to invalidate: each table,
    its inheritance family and the tables its foreign keys cascade to.
    Names that do not resolve change nothing (the write fails).

    @return: the tables, and the reason to flush everything instead (a
        write to a view, or to a table with user triggers or rules), or
        None.
    @raise KeyError: a name was never looked up.
    """
    oids = set()
    for name in names:
        facts = catalog.relations[name]
        if facts is None:
            continue
        if facts.relkind in ("v",):
            return (), f"write to view {name}"
        if facts.side_effects:
            return (), f"write to {name}, which has triggers or rules"
        oids.add(facts.oid)
        oids.update(facts.family)
        oids.update(facts.cascades)
    return tuple(TableRef(catalog.database, oid) for oid in sorted(oids)), None


# ---------------------------------------------------------------------------
# Keys.

_LENGTH = struct.Struct("!I")
_DIGEST_SIZE = 20


def _hasher(user: str, database: str, settings_digest: bytes, protocol: bytes) -> "hashlib.blake2b":
    h = hashlib.blake2b(digest_size=_DIGEST_SIZE, person=b"tpgc-" + protocol)
    for field in (user.encode("utf-8"), database.encode("utf-8"), settings_digest):
        h.update(_LENGTH.pack(len(field)))
        h.update(field)
    return h


def simple_key(user: str, database: str, settings_digest: bytes, sql: Union[str, bytes]) -> bytes:
    """
    The key of a simple-protocol query.

    @param settings_digest: a digest of every session setting the result
        text depends on (search_path, role, TimeZone, DateStyle,
        IntervalStyle, client_encoding, extra_float_digits, bytea_output,
        standard_conforming_strings...): two sessions may share an entry
        only if they would get the same bytes.
    @param sql: the query text, or the Query payload as received.
    """
    h = _hasher(user, database, settings_digest, b"Q")
    h.update(sql.encode("utf-8") if isinstance(sql, str) else sql)
    return h.digest()


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ExtendedBatch:
    """
    A cacheable extended-protocol batch.

    @ivar key: its cache key.
    @ivar sqls: the text of each statement it executes; the batch is
        cacheable only if L{CachePolicy.decide} accepts every one, and is
        registered under the union of their tables.
    """

    key: bytes
    sqls: Tuple[str, ...]


def _field(h: "hashlib.blake2b", tag: bytes, *values: bytes) -> None:
    h.update(tag)
    for value in values:
        h.update(_LENGTH.pack(len(value)))
        h.update(value)


def _int32s(values: Sequence[int]) -> bytes:
    return struct.pack("!%dI" % len(values), *(v & 0xFFFFFFFF for v in values))


class ParsePayloads(Protocol):
    """
    Statement name -> Parse payload: a C{Mapping} does, and so does the
    session's view of its statements, which is not copied for every batch.
    """

    def __contains__(self, name: object) -> bool: ...

    def __getitem__(self, name: str) -> bytes: ...


def extended_key(user: str, database: str, settings_digest: bytes,
                 items: Sequence[Tuple[int, bytes]],
                 prepared: ParsePayloads) -> Optional[ExtendedBatch]:
    """
    The key of an extended-protocol batch (its messages before Sync), or
    None when it cannot be cached: no Execute, a Close, a message that is not Parse, Bind,
    Describe, Execute or Flush, a name it cannot resolve, or a malformed
    message.

    Statement and portal names do not enter the key (drivers name
    statements per connection); what they refer to does: the SQL text and
    parameter types, the bound values and formats, the result formats, the
    Describe kinds and the Execute order.

    @param prepared: statement name -> Parse payload, for statements
        parsed in earlier batches (the session keeps them).
    """
    h = _hasher(user, database, settings_digest, b"X")
    statements: Dict[str, Tuple[str, bytes]] = {}  # name -> (sql, identity)
    portals: Dict[str, int] = {}  # name -> index of the Bind that made it
    statements_of_portal: Dict[int, str] = {}  # Bind index -> its SQL
    sqls: List[str] = []
    executed = False
    known: Optional[Tuple[str, bytes]]

    def statement(name: str) -> Optional[Tuple[str, bytes]]:
        known = statements.get(name)
        if known is None and name in prepared:
            known = _parsed(prepared[name])
        return known

    try:
        for index, (message_type, payload) in enumerate(items):
            if message_type == messages.PARSE:
                known = _parsed(payload)
                statements[_name(payload, 0)[0]] = known
                _field(h, b"P", known[1])
            elif message_type == messages.BIND:
                # The bytes after the two names (formats, values, result
                # formats) are an exact encoding: hashed as they came.
                portal, after_portal = _name(payload, 0)
                name, after_names = _name(payload, after_portal)
                known = statement(name)
                if known is None:
                    return None
                portals[portal] = index
                _field(h, b"B", known[1], payload[after_names:])
                statements_of_portal[index] = known[0]
            elif message_type == messages.DESCRIBE:
                kind = payload[:1]
                name = _name(payload, 1)[0]
                if kind == b"S":
                    known = statement(name)
                    if known is None:
                        return None
                    _field(h, b"DS", known[1])
                elif kind == b"P":
                    if name not in portals:
                        return None
                    _field(h, b"DP", b"%d" % portals[name])
                else:
                    return None
            elif message_type == messages.EXECUTE:
                execute = messages.decode_execute(payload)
                if execute.portal not in portals:
                    return None
                # A row limit is part of the key: the reply (rows, then
                # PortalSuspended or CommandComplete) is the same each time,
                # and the portal cannot be fetched from again after the
                # Sync, outside a transaction (the only place the cache is
                # used).  asyncpg's fetchrow() and fetchval() send a limit.
                bind_index = portals[execute.portal]
                _field(h, b"E", b"%d:%d" % (bind_index, execute.max_rows))
                sqls.append(statements_of_portal[bind_index])
                executed = True
            elif message_type == messages.FLUSH:
                continue
            else:
                return None
    except messages.MessageFormatError:
        return None
    if not executed:
        return None
    return ExtendedBatch(h.digest(), tuple(dict.fromkeys(sqls)))


#: Parse payload -> (SQL, identity): a prepared statement's payload is the
#: same bytes object batch after batch, so this is one dictionary lookup.
_PARSED: Dict[bytes, Tuple[str, bytes]] = {}
_PARSED_SIZE = 10000


def _parsed(payload: bytes) -> Tuple[str, bytes]:
    """
    @raise messages.MessageFormatError: a malformed Parse.
    """
    known = _PARSED.get(payload)
    if known is None:
        parse = messages.decode_parse(payload)
        known = (parse.sql, _statement_identity(parse))
        if len(_PARSED) >= _PARSED_SIZE:
            _PARSED.clear()
        _PARSED[payload] = known
    return known


def _name(payload: bytes, start: int) -> Tuple[str, int]:
    """
    The NUL-terminated name at C{start}, and where what follows begins.

    @raise messages.MessageFormatError: no terminator.
    """
    end = payload.find(b"\x00", start)
    if end < 0:
        raise messages.MessageFormatError("unterminated name")
    return payload[start:end].decode("utf-8", "surrogateescape"), end + 1


def _statement_identity(parse: messages.Parse) -> bytes:
    sql = parse.sql.encode("utf-8", "surrogateescape")
    return _LENGTH.pack(len(sql)) + sql + _int32s(parse.parameter_types)


# ---------------------------------------------------------------------------
# The front object.


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

    def __init__(self, store: IQueryCacheStore, policy: CachePolicy,
                 auto_invalidation: bool = True,
                 catalogs: Optional[CatalogCaches] = None) -> None:
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
    def from_config(cls, config, reactor,
                    catalogs: Optional[CatalogCaches] = None) -> "QueryCache":
        """
        Build the cache a L{twisted_pgpool.config.PgpoolConfig} describes
        (call L{start} before use, L{stop} at shutdown).

        @param catalogs: the catalog facts to share with routing.
        """
        store: IQueryCacheStore
        if config.memqcache_method == "memcached":
            store = MemcachedCacheStore(
                reactor, config.memqcache_memcached_host, config.memqcache_memcached_port,
                expire_seconds=config.memqcache_expire, max_entry_size=config.memqcache_maxcache)
        else:
            store = ShmemCacheStore(
                config.memqcache_total_size, config.memqcache_max_num_cache,
                expire_seconds=config.memqcache_expire, max_entry_size=config.memqcache_maxcache,
                clock=reactor)
        policy = CachePolicy(
            config.cache_safe_memqcache_table_list, config.cache_unsafe_memqcache_table_list,
            allow_sql_comments=config.allow_sql_comments,
            ignore_leading_white_space=config.ignore_leading_white_space)
        return cls(store, policy, auto_invalidation=config.memqcache_auto_cache_invalidation,
                   catalogs=catalogs)

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

    def store_reply(self, key: bytes, reply: bytes, tables: Sequence[TableRef], token: object) -> None:
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
    "num_cache_hits", "num_selects", "cache_hit_ratio", "num_hash_entries", "used_hash_entries",
    "num_cache_entries", "used_cache_entries_size", "free_cache_entries_size",
    "fragment_cache_entries_size",
)


def pool_cache_row(hits: int, selects: int, stats) -> List[str]:
    ratio = hits / selects if selects else 0.0
    return [
        str(hits), str(selects), f"{ratio:.2f}", str(stats.num_hash_entries),
        str(stats.used_hash_entries), str(stats.num_cache_entries),
        str(stats.used_cache_entries_size), str(stats.free_cache_entries_size),
        str(stats.fragment_cache_entries_size),
    ]


__all__ += ["POOL_CACHE_COLUMNS", "changes_catalog", "flushes_everything", "pool_cache_row",
            "tables_written", "written_table_refs"]
