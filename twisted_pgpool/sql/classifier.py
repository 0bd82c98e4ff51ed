"""
Statement classification: may this SQL text run on a standby?

This is the syntactic half of Pgpool-II's load-balancing decision
(C{send_to_where}, C{is_select_query} and the walkers of
C{pool_select_walker.c}), done on tokens from L{twisted_pgpool.sql.lexer}
instead of PostgreSQL's full grammar.  L{classify} turns one simple-query
string (or one Parse message's text) into a L{Classification}: whether the
text is read-only, what kind of statement it is, the transaction and
session facts the router needs (BEGIN, COMMIT, SET, SAVEPOINT, PREPARE
names...), and the relation and function names it mentions so the router
can check them against temporary tables and its own catalog knowledge.
What the router does with those facts -- which node, for how long, the
"writing transaction" bookkeeping -- is not decided here.

Everything here is plain functions and frozen attrs objects: no I/O, no
reactor.  See C{docs/routing.md} for the rules with examples and for where
this module deliberately differs from Pgpool-II.

Speed: a full classification costs tens of microseconds in CPython, so
L{classify} keeps a bounded LRU cache per L{ClassifierConfig}, keyed by the
statement's I{shape} -- its text with string and number literals replaced
by a marker, computed by one regular-expression pass.  pgbench's
C{SELECT abalance FROM pgbench_accounts WHERE aid = 12345;} with a new
number each time is then a cache hit.  Only results that do not depend on
a literal's value are stored by shape.

This module holds the entry points and what concerns a whole text (the
first-character test, several statements in one string); the rest is in
modules of their own, whose public names are importable from here too:
L{twisted_pgpool.sql.classification} (L{ClassifierConfig},
L{Classification}), L{twisted_pgpool.sql.functions} (the built-in
functions), L{twisted_pgpool.sql.shape} (L{statement_shape}),
L{twisted_pgpool.sql.scanning} (one pass over a statement's tokens),
L{twisted_pgpool.sql.facts}, L{twisted_pgpool.sql.statements} and
L{twisted_pgpool.sql.session_statements} (deciding one statement).
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

import attr

from twisted_pgpool.sql.classification import (
    REASON_AMBIGUOUS_BACKSLASH,
    REASON_FIRST_CHAR,
    REASON_MULTI,
    REASON_NO_LOAD_BALANCE,
    REASON_PATTERN,
    REASON_UNTERMINATED,
    Classification,
    ClassificationCache,
    ClassifierConfig,
)
from twisted_pgpool.sql.facts import _unique
from twisted_pgpool.sql.functions import (
    NON_VOLATILE_FUNCTIONS,
    VOLATILE_FUNCTIONS,
    WRITING_FUNCTION_PREFIXES,
    WRITING_FUNCTIONS,
)
from twisted_pgpool.sql.lexer import (
    IDENT,
    KEYWORD,
    QUOTED_IDENT,
    STRING,
    TRIVIA,
    Token,
    split_tokens,
    tokenize,
)
from twisted_pgpool.sql.shape import _MAX_CACHED_LENGTH, statement_shape
from twisted_pgpool.sql.statements import _analyse

__all__ = [
    "Classification",
    "ClassificationCache",
    "ClassifierConfig",
    "DEFAULT_CONFIG",
    "NON_VOLATILE_FUNCTIONS",
    "VOLATILE_FUNCTIONS",
    "WRITING_FUNCTIONS",
    "WRITING_FUNCTION_PREFIXES",
    "classify",
    "classify_uncached",
    "statement_shape",
]


_NO_LOAD_BALANCE = "/*NO LOAD BALANCE*/"


# ---------------------------------------------------------------------------
# Entry points.


def classify(sql: str, config: Optional[ClassifierConfig] = None) -> Classification:
    """
    Classify a query string (a simple Query, or a Parse message's text).

    Cached: see L{statement_shape}.  Never raises for any text.

    @param config: the settings; L{DEFAULT_CONFIG} when None.
    """
    if config is None:
        config = DEFAULT_CONFIG
    cache = config._cache
    entries = cache._entries
    result = entries.get(sql)
    if result is not None:
        entries.move_to_end(sql)
        cache.hits += 1
    else:
        shape = statement_shape(sql) if len(sql) <= _MAX_CACHED_LENGTH else None
        if shape is not None and shape != sql:
            result = entries.get(shape)
            if result is not None:
                entries.move_to_end(shape)
                cache.hits += 1
        if result is None:
            cache.misses += 1
            result, literal_independent = _classify_text(sql, config)
            if len(sql) <= _MAX_CACHED_LENGTH:
                cache._put(shape if shape is not None and literal_independent else sql, result)
    if config._query_patterns and result.is_read_only:
        result = _apply_query_patterns(sql, result, config)
    return result


def classify_uncached(sql: str, config: Optional[ClassifierConfig] = None) -> Classification:
    """
    L{classify} without the cache (for tests and benchmarks).
    """
    if config is None:
        config = DEFAULT_CONFIG
    result = _classify_text(sql, config)[0]
    if config._query_patterns and result.is_read_only:
        result = _apply_query_patterns(sql, result, config)
    return result


def _apply_query_patterns(
    sql: str, result: Classification, config: ClassifierConfig
) -> Classification:
    for pattern in config._query_patterns:
        if pattern.search(sql) is not None:
            return attr.evolve(result, is_read_only=False, forces_primary_reason=REASON_PATTERN)
    return result


# ---------------------------------------------------------------------------
# Whole texts.


_WHITESPACE = " \t\n\r\f\v"


def _first_char_ok(text: str, config: ClassifierConfig, part: bool = False) -> bool:
    """
    Pgpool-II's C{is_select_query} text test: with allow_sql_comments off,
    a SELECT is only a read if the text starts (after whitespace, when
    ignore_leading_white_space is on) with s, w, t or "(" -- or is empty
    or starts with ";" (an empty query).

    @param part: C{text} runs from the end of the previous statement of a
        multi-statement string to this statement's first character; skip
        the separating semicolons and whitespace.
    """
    if config.allow_sql_comments:
        return True
    if part:
        skip = _WHITESPACE + ";"
    elif config.ignore_leading_white_space:
        skip = _WHITESPACE
    else:
        skip = ""
    rest = text.lstrip(skip) if skip else text
    return not rest or rest[0] in "sSwWtT(;"


def _classify_text(sql: str, config: ClassifierConfig) -> Tuple[Classification, bool]:
    """
    Classify without the cache.

    @return: the classification, and whether it holds for every text with
        the same shape (it does not depend on a literal's value and the text
        lexes cleanly).
    """
    tokens = tokenize(sql, skip_trivia=True)
    result, independent = _classify_tokens(sql, tokens, config)
    if tokens and tokens[-1].unterminated:
        independent = False
        if result.is_read_only or result.to_all_session_nodes:
            result = attr.evolve(
                result,
                is_read_only=False,
                to_all_session_nodes=False,
                forces_primary_reason=REASON_UNTERMINATED,
                marks_transaction_writing=True,
            )
    if result.is_read_only and _has_backslash_standard_string(tokens):
        # With standard_conforming_strings off the same text lexes
        # differently; it is only a read if it is one either way.
        other, _ = _classify_tokens(
            sql, tokenize(sql, standard_conforming_strings=False, skip_trivia=True), config
        )
        if not other.is_read_only or other.statements != result.statements:
            result = attr.evolve(
                result, is_read_only=False, forces_primary_reason=REASON_AMBIGUOUS_BACKSLASH
            )
        independent = False
    return result, independent


def _has_backslash_standard_string(tokens: Sequence[Token]) -> bool:
    for t in tokens:
        if t.kind == STRING and "\\" in t.text and t.text[0] in "'nN":
            return True
    return False


def _classify_tokens(
    sql: str, tokens: List[Token], config: ClassifierConfig
) -> Tuple[Classification, bool]:
    no_lb = (not config.allow_sql_comments) and sql[:19].upper() == _NO_LOAD_BALANCE
    pieces = split_tokens(tokens)
    if not pieces:
        ok = _first_char_ok(sql, config)
        result = Classification(
            kind="empty",
            is_read_only=ok and not no_lb,
            forces_primary_reason=None
            if ok and not no_lb
            else (REASON_NO_LOAD_BALANCE if no_lb else REASON_FIRST_CHAR),
            statements=0,
            no_load_balance_comment=no_lb,
            marks_transaction_writing=not ok,
        )
        return result, True

    if len(pieces) == 1:
        stmt = [t for t in pieces[0] if t.kind not in TRIVIA]
        result, independent = _analyse(stmt, config, _first_char_ok(sql, config))
    else:
        parts: List[Classification] = []
        independent = True
        previous_end = 0
        for piece in pieces:
            stmt = [t for t in piece if t.kind not in TRIVIA]
            # The first statement is judged on the text's start like a
            # single one; later ones on what follows the semicolon.
            lead_ok = _first_char_ok(
                sql[previous_end : stmt[0].start + 1], config, part=previous_end > 0
            )
            part, part_independent = _analyse(stmt, config, lead_ok)
            parts.append(part)
            independent = independent and part_independent
            previous_end = stmt[-1].end
        result = _combine(parts, config)
    if no_lb:
        result = attr.evolve(
            result,
            is_read_only=False,
            to_all_session_nodes=False,
            forces_primary_reason=REASON_NO_LOAD_BALANCE,
            no_load_balance_comment=True,
        )
    return result, independent


def _combine(parts: List[Classification], config: ClassifierConfig) -> Classification:
    all_read = all(p.is_read_only for p in parts)
    read_only = all_read and config.balance_read_only_multi_statements

    def any_(field: str) -> bool:
        return any(getattr(p, field) for p in parts)

    first = parts[0]
    return Classification(
        kind=first.kind,
        is_read_only=read_only,
        forces_primary_reason=None if read_only else REASON_MULTI,
        to_all_session_nodes=False,
        is_session_state=any_("is_session_state"),
        is_transaction_start=any_("is_transaction_start"),
        is_commit=any_("is_commit"),
        is_rollback=any_("is_rollback"),
        is_savepoint_op=any_("is_savepoint_op"),
        is_prepare_transaction=any_("is_prepare_transaction"),
        is_two_phase=any_("is_two_phase"),
        and_chain=any_("and_chain"),
        isolation_serializable=any_("isolation_serializable"),
        read_write_transaction=any_("read_write_transaction"),
        read_only_transaction=any_("read_only_transaction"),
        is_multi_statement=True,
        statements=len(parts),
        parts=tuple(parts),
        touches_temp_table_candidates=_unique(
            n for p in parts for n in p.touches_temp_table_candidates
        ),
        written_relations=_unique(n for p in parts for n in p.written_relations),
        creates_temp_table=next(
            (p.creates_temp_table for p in parts if p.creates_temp_table), None
        ),
        drops_tables=_unique(n for p in parts for n in p.drops_tables),
        discards_temp_tables=any_("discards_temp_tables"),
        functions=_unique(n for p in parts for n in p.functions),
        unknown_functions=_unique(n for p in parts for n in p.unknown_functions),
        references_system_catalog=any_("references_system_catalog"),
        marks_transaction_writing=any_("marks_transaction_writing"),
        writes=any_("writes"),
    )


#: The configuration used when L{classify} is given none: Pgpool-II's
#: defaults (both function lists empty, allow_sql_comments off).
DEFAULT_CONFIG = ClassifierConfig()


_DATABASE_VERBS = re.compile(r"\s*(?:/\*|--|drop\b|alter\b|create\b)", re.IGNORECASE)


def databases_to_free(sql: str) -> Tuple[str, ...]:
    """
    The databases a statement can run against only while no other session
    is connected to them: C{DROP DATABASE name}, C{ALTER DATABASE name
    RENAME TO ...} and C{CREATE DATABASE ... TEMPLATE name}.  The proxy's
    own idle pooled connections to them must be closed first, or the
    server refuses with "database ... is being accessed by other users"
    (as Pgpool-II does for DROP DATABASE).

    Pure and cheap enough for every statement: anything not starting with
    one of those verbs is answered from its first keyword.
    """
    if _DATABASE_VERBS.match(sql) is None:
        return ()
    names: List[str] = []
    for part in split_tokens([t for t in tokenize(sql) if t.kind not in TRIVIA]):
        words = [t.value if t.kind in (KEYWORD, IDENT) else None for t in part]
        if len(part) < 3 or words[1] != "database":
            continue
        if words[0] == "drop":
            i = 4 if words[2:4] == ["if", "exists"] else 2
            if i < len(part) and part[i].kind in (IDENT, QUOTED_IDENT, KEYWORD):
                names.append(part[i].value)
        elif words[0] == "alter":
            if (
                len(part) > 4
                and words[3] == "rename"
                and part[2].kind in (IDENT, QUOTED_IDENT, KEYWORD)
            ):
                names.append(part[2].value)
        elif words[0] == "create":
            for i, word in enumerate(words):
                if word == "template":
                    j = i + 2 if i + 1 < len(part) and part[i + 1].text == "=" else i + 1
                    if j < len(part) and part[j].kind in (IDENT, QUOTED_IDENT, KEYWORD):
                        names.append(part[j].value)
    return tuple(names)
