"""
The write side of the query cache: which statements obsolete the whole
cache (L{flushes_everything}), which change the catalog facts
(L{changes_catalog}), and which tables a write changes (L{tables_written},
L{written_table_refs}: each table, its inheritance family and the tables
its foreign keys cascade to).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from twisted_pgpool.cache.catalog import CatalogCache
from twisted_pgpool.cache.store import TableRef
from twisted_pgpool.sql.classifier import Classification, classify
from twisted_pgpool.sql.lexer import IDENT, KEYWORD, PUNCT, QUOTED_IDENT, tokenize

__all__ = ["changes_catalog", "flushes_everything", "tables_written", "written_table_refs"]


_SELECT_INTO_REASON = "SELECT INTO creates a table"


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
        if part.kind in (
            "create",
            "alter",
            "drop",
            "import",
            "reassign",
            "revoke",
            "grant",
            "comment",
            "security",
            "call",
            "do",
            "execute",
        ):
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
    elif values[:2] in (["drop", "index"], ["drop", "sequence"]) or values[:3] == [
        "drop",
        "foreign",
        "table",
    ]:
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


def written_table_refs(
    names: Sequence[str], catalog: CatalogCache
) -> Tuple[Tuple[TableRef, ...], Optional[str]]:
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
