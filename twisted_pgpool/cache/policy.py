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

This module holds L{CachePolicy}, the rules; the parts it uses are modules
of their own, and their names are importable from here too:
L{twisted_pgpool.cache.catalog} (the catalog facts),
L{twisted_pgpool.cache.decisions} (L{Decision}, L{InvalidationPlan}),
L{twisted_pgpool.cache.writes} (what a write invalidates) and
L{twisted_pgpool.cache.keys} (the keys).  L{twisted_pgpool.cache.querycache}
puts them together with a store.
"""

from __future__ import annotations

import re
from typing import Collection, FrozenSet, Optional, Sequence, Tuple

from twisted_pgpool.cache.catalog import CatalogCache, CatalogCaches, RelationFacts, lookup_sql
from twisted_pgpool.cache.decisions import Decision, InvalidationPlan, _never
from twisted_pgpool.cache.keys import ExtendedBatch, extended_key, simple_key
from twisted_pgpool.cache.store import TableRef
from twisted_pgpool.cache.writes import (
    changes_catalog,
    flushes_everything,
    tables_written,
    written_table_refs,
)
from twisted_pgpool.sql.classifier import Classification, ClassifierConfig, classify
from twisted_pgpool.sql.functions import (
    VOLATILE_FUNCTIONS,
    WRITING_FUNCTION_PREFIXES,
    WRITING_FUNCTIONS,
    _is_non_volatile_builtin,
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

__all__ = [
    "CachePolicy",
    "CatalogCache",
    "CatalogCaches",
    "Decision",
    "ExtendedBatch",
    "InvalidationPlan",
    "RelationFacts",
    "extended_key",
    "leading_marker",
    "lookup_sql",
    "simple_key",
    "changes_catalog",
    "flushes_everything",
    "tables_written",
    "written_table_refs",
]


NO_QUERY_CACHE = "/*NO QUERY CACHE*/"
FORCE_QUERY_CACHE = "/*FORCE QUERY CACHE*/"

_READ_KINDS = frozenset(["select", "with", "values", "table"])
_CATALOG_SCHEMAS = frozenset(["pg_catalog", "information_schema", "pg_toast"])
# SQL value functions: no parentheses, so the classifier does not see calls.
_VALUE_FUNCTIONS = frozenset(
    """
    current_date current_time current_timestamp localtime localtimestamp
    current_role current_user session_user user current_catalog current_schema system_user
""".split()
)
# Date/time input strings whose value is the time they are read.
_MOVING_LITERALS = frozenset(["now", "today", "tomorrow", "yesterday"])


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


def _compile(patterns: Sequence[str]) -> Tuple["re.Pattern[str]", ...]:
    return tuple(re.compile(p) for p in patterns)


def _is_builtin_volatile(name: str) -> bool:
    schema, _, bare = name.rpartition(".")
    if schema not in ("", "pg_catalog"):
        return False
    return (
        bare in WRITING_FUNCTIONS
        or bare.startswith(WRITING_FUNCTION_PREFIXES)
        or bare in VOLATILE_FUNCTIONS
    )


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

    def __init__(
        self,
        cache_safe_memqcache_table_list: Sequence[str] = (),
        cache_unsafe_memqcache_table_list: Sequence[str] = (),
        allow_sql_comments: bool = False,
        ignore_leading_white_space: bool = True,
    ) -> None:
        self._safe = _compile(cache_safe_memqcache_table_list)
        self._unsafe = _compile(cache_unsafe_memqcache_table_list)
        self._config = ClassifierConfig(
            allow_sql_comments=allow_sql_comments,
            ignore_leading_white_space=ignore_leading_white_space,
            unknown_functions_are_writes=False,
        )
        # /*FORCE QUERY CACHE*/: no function makes a SELECT a write, and the
        # marker itself must not fail the first-character test.
        self._force_config = ClassifierConfig(
            read_only_function_list=(".*",),
            allow_sql_comments=True,
            ignore_leading_white_space=True,
            unknown_functions_are_writes=False,
        )

    # -- reads -----------------------------------------------------------------

    def decide(
        self, sql: str, catalog: CatalogCache, temp_tables: Collection[str] = ()
    ) -> Decision:
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
        if (
            temp_tables
            and decision.cacheable
            and not decision.relation_names.isdisjoint(temp_tables)
        ):
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
            return Decision(
                False, missing_relations=missing_relations, missing_functions=missing_functions
            )
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

    def _decide_with_facts(
        self,
        c: Classification,
        catalog: CatalogCache,
        ctes: FrozenSet[str],
        functions: Sequence[str],
    ) -> Decision:
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
            return (
                None
                if safe
                else f"{name} is a view or foreign table not in cache_safe_memqcache_table_list"
            )
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
            return InvalidationPlan(
                forget_catalog=forget,
                missing_relations=missing_relations,
                missing_functions=missing_functions,
            )
        for name in user_functions:
            if catalog.functions[name] in (None, "v"):
                return InvalidationPlan(
                    flush_all=True,
                    forget_catalog=forget,
                    reason=f"calls function {name}(), which may write any table",
                )
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
            if not (
                i + 1 < len(tokens) and tokens[i + 1].kind == PUNCT and tokens[i + 1].text == "("
            ):
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
        if not (
            prev.kind == KEYWORD
            and prev.value in ("with", "recursive")
            or prev.kind == PUNCT
            and prev.text == ","
        ):
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
