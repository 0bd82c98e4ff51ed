"""
Scanning one statement's significant tokens in one pass (L{_scan}): the
parenthesis depth of every token, the function calls, the relation names
after FROM, JOIN, INTO, UPDATE, TABLE and USING (and which are written), a
row-locking clause, SELECT INTO, references to the system catalog and to
temporary schemas.  Token predicates and qualified names for the rest of
the classifier.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from twisted_pgpool.sql.lexer import (
    IDENT,
    KEYWORD,
    PUNCT,
    QUOTED_IDENT,
    RESERVED_KEYWORDS,
    Token,
)

# Key words that are followed by "(" without being a function call: syntax
# (IN (...), OVER (...), ARRAY(...)), type names with a type modifier
# (numeric(10,2)), and special expression forms that PostgreSQL does not
# parse as function calls (COALESCE, GREATEST, ROW, XMLELEMENT ...).  Only
# words that cannot name a function, or whose "(" is syntax in a query
# (OVER, FILTER, ROLLUP, GROUPING SETS, MATERIALIZED, REPEATABLE, ORDER BY,
# AT TIME ZONE, OPERATOR(...)), are here: missing a call is the dangerous
# mistake, seeing one too many only costs a read on the primary.
_NOT_CALLABLE = RESERVED_KEYWORDS | frozenset(
    """
    join like ilike overlaps is isnull notnull
    between bigint bit boolean char character dec decimal exists float inout
    int integer interval national nchar none numeric out precision real row
    setof smallint time timestamp values varchar varying double
    coalesce nullif greatest least grouping
    json json_array json_arrayagg json_exists json_object json_objectagg
    json_query json_scalar json_serialize json_table json_value merge_action
    xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces
    xmlparse xmlpi xmlroot xmlserialize xmltable
    over filter rollup cube sets materialized repeatable columns by zone
    operator
    """.split()
)

# Type names that take a modifier in parentheses.
_TYPMOD_TYPES = frozenset(
    "numeric decimal dec varchar char character varying bit float time timestamp interval nchar".split()
)

# A name after one of these is an object being defined or targeted, not a
# call, even when "(" follows (INSERT INTO t (a, b), COPY t (a) TO ...).
_NAME_INTRODUCERS = frozenset(
    "into table references index view type sequence trigger function procedure aggregate domain copy"
    # CREATE TABLE IF NOT EXISTS t (...)
    " exists".split()
)

# Words that end a FROM/USING item list at the list's own nesting level.
_FROM_LIST_END = frozenset(
    """
    where group having order limit offset fetch for window union intersect
    except returning set conflict do into using select values
    """.split()
)

_DML_VERBS = frozenset(["insert", "update", "delete", "merge"])


def _is_word(t: Token) -> bool:
    return t.kind == IDENT or t.kind == KEYWORD


def _is_name(t: Token) -> bool:
    """
    Could this token be (part of) an object name?
    """
    return (
        t.kind == IDENT
        or t.kind == QUOTED_IDENT
        or (t.kind == KEYWORD and t.value not in RESERVED_KEYWORDS)
    )


def _kw(t: Token, word: str) -> bool:
    return t.kind == KEYWORD and t.value == word


def _punct(t: Token, text: str) -> bool:
    return t.kind == PUNCT and t.text == text


class _Scan:
    """
    Facts gathered in one pass over a statement's significant tokens.
    """

    __slots__ = (
        "tokens",
        "depth",
        "closing",
        "unbalanced",
        "calls",
        "relations",
        "written",
        "catalog",
        "session_view",
        "temp_schema",
        "locking",
        "into",
        "into_target",
        "into_temp",
        "dml_verb",
        "regclass",
    )

    def __init__(self, tokens: List[Token]) -> None:
        self.tokens = tokens
        self.depth: List[int] = []
        self.closing: Dict[int, int] = {}
        self.unbalanced = False
        self.calls: List[str] = []
        self.relations: List[str] = []
        self.written: List[str] = []
        self.catalog: Optional[str] = None
        # A view of the session's own objects (_SESSION_VIEWS).
        self.session_view: Optional[str] = None
        self.temp_schema: Optional[str] = None
        self.locking = False
        self.into = False
        self.into_target: Optional[str] = None
        self.into_temp = False
        self.dml_verb: Optional[str] = None
        self.regclass = False


def _qualified_name(toks: Sequence[Token], i: int) -> Tuple[Optional[str], int]:
    """
    Read a possibly qualified name (C{a}, C{s.a}, C{db.s.a}) at C{i}.

    @return: the name with parts joined by dots (unquoted and folded), and
        the index after it; or None and C{i}.
    """
    n = len(toks)
    if i >= n or not _is_name(toks[i]):
        return None, i
    parts = [toks[i].value]
    j = i + 1
    while (
        j + 1 < n
        and _punct(toks[j], ".")
        and (_is_word(toks[j + 1]) or toks[j + 1].kind == QUOTED_IDENT)
    ):
        parts.append(toks[j + 1].value)
        j += 2
    return ".".join(parts), j


def _scan(toks: List[Token]) -> _Scan:
    scan = _Scan(toks)
    n = len(toks)
    depth_of = scan.depth
    closing = scan.closing

    # Parenthesis depth of every token, and where each "(" closes.
    stack: List[int] = []
    depth = 0
    for i, t in enumerate(toks):
        if t.kind == PUNCT:
            if t.text == "(":
                depth_of.append(depth)
                stack.append(i)
                depth += 1
                continue
            if t.text == ")":
                if stack:
                    closing[stack.pop()] = i
                    depth -= 1
                else:
                    scan.unbalanced = True
                depth_of.append(depth)
                continue
        depth_of.append(depth)
    if stack:
        scan.unbalanced = True

    # Per nesting level: the clause keyword last seen (to tell an alias's
    # column list in FROM from a call), and whether each open "(" is a
    # call's argument list (EXTRACT(x FROM y) has no FROM clause).
    clause: List[Optional[str]] = [None]
    call_parens: List[bool] = []
    for i, t in enumerate(toks):
        kind = t.kind
        if kind == PUNCT:
            text = t.text
            if text == "(":
                is_call = i > 0 and _is_call(toks, i, depth_of, clause, closing)
                if is_call:
                    name_start = _name_start(toks, i - 1)
                    scan.calls.append(".".join(toks[k].value for k in range(name_start, i, 2)))
                call_parens.append(is_call)
                clause.append(None)
                if i + 1 < n and toks[i + 1].kind == KEYWORD and toks[i + 1].value in _DML_VERBS:
                    scan.dml_verb = scan.dml_verb or toks[i + 1].value
                continue
            if text == ")":
                if call_parens:
                    call_parens.pop()
                if len(clause) > 1:
                    clause.pop()
                continue
            if text == "::":
                if i + 1 < n and _is_regclass(toks, i + 1):
                    scan.regclass = True
            continue
        if kind != KEYWORD:
            continue
        value = t.value
        d = depth_of[i]
        if value in (
            "select",
            "from",
            "join",
            "where",
            "group",
            "having",
            "order",
            "limit",
            "on",
            "using",
            "returning",
            "set",
            "values",
            "window",
            "offset",
            "into",
            "union",
            "intersect",
            "except",
        ):
            clause[-1] = value
        prev = toks[i - 1] if i > 0 else None
        if value == "from":
            if call_parens and call_parens[-1]:
                continue  # EXTRACT(x FROM y), SUBSTRING(s FROM n)
            if d == 0 and _kw(toks[0], "copy"):
                continue  # COPY t FROM STDIN
            if prev is not None and _kw(prev, "distinct"):
                continue  # IS [NOT] DISTINCT FROM
            written = prev is not None and _kw(prev, "delete")
            _relation_list(scan, i + 1, d, written, many=True, column_list=False)
        elif value == "join":
            _relation_list(scan, i + 1, d, False, many=False, column_list=False)
        elif value == "into":
            if prev is not None and prev.kind == KEYWORD and prev.value in ("insert", "merge"):
                _relation_list(scan, i + 1, d, True, many=False, column_list=True)
            else:
                _select_into(scan, i + 1)
        elif value == "update":
            if prev is None or _punct(prev, "(") or _punct(prev, ")"):
                _relation_list(scan, i + 1, d, True, many=False, column_list=True)
        elif value == "table":
            if (
                prev is None
                or _punct(prev, "(")
                or (prev.kind == KEYWORD and prev.value in ("truncate", "lock"))
            ):
                _relation_list(
                    scan,
                    i + 1,
                    d,
                    False,
                    many=not (prev is None or _punct(prev, "(")),
                    column_list=True,
                )
        elif value == "using":
            if d == 0 and toks[0].kind == KEYWORD and toks[0].value in ("delete", "merge", "with"):
                _relation_list(scan, i + 1, d, False, many=True, column_list=False)
        elif value == "for":
            if i + 1 < n:
                nxt = toks[i + 1].value if toks[i + 1].kind == KEYWORD else ""
                if nxt in ("update", "share"):
                    scan.locking = True
                elif nxt in ("no", "key") and i + 2 < n and toks[i + 2].kind == KEYWORD:
                    if toks[i + 2].value in ("key", "update", "share"):
                        scan.locking = True
        elif value == "as":
            if i + 1 < n and _is_regclass(toks, i + 1):
                scan.regclass = True
    return scan


def _is_regclass(toks: Sequence[Token], i: int) -> bool:
    t = toks[i]
    if t.kind == IDENT and t.value == "regclass":
        return True
    return (
        t.kind == IDENT
        and t.value == "pg_catalog"
        and i + 2 < len(toks)
        and _punct(toks[i + 1], ".")
        and toks[i + 2].value == "regclass"
    )


def _name_start(toks: Sequence[Token], i: int) -> int:
    """
    The index of the first part of the qualified name ending at C{i}.
    """
    while (
        i >= 2
        and _punct(toks[i - 1], ".")
        and (_is_word(toks[i - 2]) or toks[i - 2].kind == QUOTED_IDENT)
    ):
        i -= 2
    return i


def _is_call(
    toks: Sequence[Token],
    i: int,
    depth_of: List[int],
    clause: List[Optional[str]],
    closing: Dict[int, int],
) -> bool:
    """
    Is the "(" at C{i} the argument list of a function call?
    """
    name = toks[i - 1]
    if name.kind == KEYWORD:
        if name.value in _NOT_CALLABLE:
            return False
    elif name.kind != IDENT and name.kind != QUOTED_IDENT:
        return False
    if name.kind != QUOTED_IDENT and name.value in _TYPMOD_TYPES:
        return False
    start = _name_start(toks, i - 1)
    if start > 0:
        prev = toks[start - 1]
        if name.kind == KEYWORD and name.value in ("first", "next") and _kw(prev, "fetch"):
            return False  # FETCH FIRST (n) ROWS ONLY
        if prev.kind == PUNCT and prev.text == "::":
            return False  # x::numeric(10, 2)
        if prev.kind == KEYWORD and (
            prev.value in ("as", "tablesample") or prev.value in _NAME_INTRODUCERS
        ):
            return False  # CAST(x AS t(...)), alias column lists, INSERT INTO t (...)
        if (
            name.value in ("stdin", "stdout")
            and prev.kind == KEYWORD
            and prev.value in ("from", "to")
        ):
            return False  # COPY t FROM STDIN (FORMAT csv): the options list
        if (
            prev.kind == KEYWORD
            and prev.value in ("on", "using")
            and _kw(toks[0], "create")
            and any(_kw(t, "index") for t in toks[1:start])
        ):
            return False  # CREATE INDEX i ON t [USING btree] (a): the indexed columns
        if prev.kind in (IDENT, QUOTED_IDENT) or (prev.kind == PUNCT and prev.text == ")"):
            # FROM f(x) g(a): an alias's column list, not a call.
            if clause[-1] in ("from", "join"):
                return False
    # WITH name (a, b) AS [NOT] [MATERIALIZED] (...): a CTE's column list.
    close = closing.get(i)
    cte_position = start > 0 and (
        _punct(toks[start - 1], ",")
        or (toks[start - 1].kind == KEYWORD and toks[start - 1].value in ("with", "recursive"))
    )
    if cte_position and close is not None and close + 2 < len(toks) and _kw(toks[close + 1], "as"):
        j = close + 2
        if _kw(toks[j], "not"):
            j += 1
        if j < len(toks) and _kw(toks[j], "materialized"):
            j += 1
        if j < len(toks) and _punct(toks[j], "("):
            return False
    return True


def _relation_list(
    scan: _Scan, i: int, d: int, written: bool, many: bool, column_list: bool
) -> None:
    """
    Record the relation names of a FROM/USING list, or the single name after
    JOIN, INTO, UPDATE or TABLE, starting at C{i}, at nesting level C{d}.

    @param many: a comma-separated list (FROM, USING, TRUNCATE TABLE).
    @param column_list: a "(" after the name is a column list (INSERT INTO
        t (a, b)); otherwise it makes the name a function (FROM f(x)).
    """
    toks = scan.tokens
    depth_of = scan.depth
    n = len(toks)
    while i < n:
        # LATERAL (subquery) / LATERAL f(x): never a relation; ONLY t: one.
        while i < n and toks[i].kind == KEYWORD and toks[i].value in ("only", "lateral"):
            i += 1
        if i < n and _punct(toks[i], "("):
            # A subquery (its own FROMs are scanned anyway), or ONLY (t).
            close = scan.closing.get(i, n - 1)
            name, after = _qualified_name(toks, i + 1)
            if name is not None and after == close:
                _record_relation(scan, name, written)
            i = close + 1
        else:
            name, after = _qualified_name(toks, i)
            if name is not None:
                # f(x) in FROM is a function, not a relation; after INTO,
                # UPDATE or TABLE a "(" starts a column list.
                if column_list or not (after < n and _punct(toks[after], "(")):
                    _record_relation(scan, name, written)
                i = after
        if not many:
            return
        # Skip the alias, TABLESAMPLE, JOIN ... ON ... up to the next item.
        while i < n:
            t = toks[i]
            td = depth_of[i]
            if td < d:
                return
            if td == d:
                if t.kind == PUNCT:
                    if t.text == ",":
                        i += 1
                        break
                    if t.text == ";":
                        return
                elif t.kind == KEYWORD and t.value in _FROM_LIST_END:
                    return
            i += 1
        else:
            return


#: Views of the session's own objects, not of the cluster's catalog: a read
#: of them goes where the session's reads (and the statements it prepared
#: for them) go, not to the primary (issue 15: psycopg's tests count their
#: prepared statements in pg_prepared_statements).
_SESSION_VIEWS = frozenset(["pg_prepared_statements", "pg_cursors"])


def _record_relation(scan: _Scan, name: str, written: bool) -> None:
    scan.relations.append(name)
    if written:
        scan.written.append(name)
    schema, _, relname = name.rpartition(".")
    if relname in _SESSION_VIEWS and schema in ("", "pg_catalog"):
        # Not a catalog of the cluster: the session's own statements and
        # cursors, on the node its reads go to.
        scan.session_view = name
    elif scan.catalog is None and (schema.endswith("pg_catalog") or relname.startswith("pg_")):
        scan.catalog = name
    if scan.temp_schema is None and schema.startswith("pg_temp"):
        scan.temp_schema = name


def _select_into(scan: _Scan, i: int) -> None:
    """
    SELECT ... INTO [TEMP|TEMPORARY|UNLOGGED] [TABLE] name.
    """
    toks = scan.tokens
    n = len(toks)
    scan.into = True
    while (
        i < n
        and toks[i].kind == KEYWORD
        and toks[i].value in ("temp", "temporary", "unlogged", "table", "global", "local")
    ):
        if toks[i].value in ("temp", "temporary"):
            scan.into_temp = True
        i += 1
    name, _ = _qualified_name(toks, i)
    if name is not None:
        scan.into_target = name
        if name.rpartition(".")[0].startswith("pg_temp"):
            scan.into_temp = True
