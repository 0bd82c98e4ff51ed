"""
Classifying one statement (L{_analyse}): its verb picks a handler
(L{_HANDLERS}); SELECT, VALUES, TABLE, WITH, SHOW, EXPLAIN, COPY, PREPARE
and LOCK are handled here (EXPLAIN, COPY and PREPARE classify the statement
they contain, recursively), the transaction and session commands in
L{twisted_pgpool.sql.session_statements}, and any other verb Pgpool-II sends
to the primary is a write.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import attr

from twisted_pgpool.sql.classification import REASON_UNBALANCED, Classification, ClassifierConfig
from twisted_pgpool.sql.facts import _Facts, _select_reason
from twisted_pgpool.sql.lexer import IDENT, KEYWORD, STRING, Token
from twisted_pgpool.sql.scanning import (
    _DML_VERBS,
    _is_name,
    _is_word,
    _kw,
    _punct,
    _qualified_name,
    _record_relation,
    _Scan,
    _scan,
)
from twisted_pgpool.sql.session_statements import (
    _FALSE_WORDS,
    _TRUE_WORDS,
    _handle_begin,
    _handle_commit,
    _handle_deallocate,
    _handle_execute,
    _handle_reset,
    _handle_rollback,
    _handle_savepoint,
    _handle_set,
    _set_result,
)

_SELECT_VERBS = frozenset(["select", "values", "table"])

# Verbs Pgpool-II sends to the primary ("everything not listed elsewhere"),
# with the reason we log.
_WRITE_VERBS: Dict[str, str] = {
    "insert": "INSERT modifies data",
    "update": "UPDATE modifies data",
    "delete": "DELETE modifies data",
    "merge": "MERGE modifies data",
    "truncate": "TRUNCATE modifies data",
    "create": "DDL (CREATE)",
    "alter": "DDL (ALTER)",
    "drop": "DDL (DROP)",
    "comment": "DDL (COMMENT)",
    "grant": "GRANT changes privileges",
    "revoke": "REVOKE changes privileges",
    "security": "DDL (SECURITY LABEL)",
    "import": "DDL (IMPORT FOREIGN SCHEMA)",
    "reassign": "REASSIGN OWNED changes ownership",
    "refresh": "REFRESH MATERIALIZED VIEW writes",
    "vacuum": "VACUUM is maintenance on the primary",
    "analyze": "ANALYZE is maintenance on the primary",
    "analyse": "ANALYZE is maintenance on the primary",
    "cluster": "CLUSTER rewrites a table",
    "reindex": "REINDEX rewrites indexes",
    "checkpoint": "CHECKPOINT runs on the primary",
    "do": "a DO block may write",
    "call": "a procedure call may write",
    "load": "LOAD goes to the primary (as in Pgpool-II)",
    "listen": "LISTEN/UNLISTEN/NOTIFY use the primary",
    "unlisten": "LISTEN/UNLISTEN/NOTIFY use the primary",
    "notify": "LISTEN/UNLISTEN/NOTIFY use the primary",
    "declare": "cursor commands go to the primary (as in Pgpool-II)",
    "fetch": "cursor commands go to the primary (as in Pgpool-II)",
    "move": "cursor commands go to the primary (as in Pgpool-II)",
    "close": "cursor commands go to the primary (as in Pgpool-II)",
}

# Lock modes, weakest first; LOCK below ROW EXCLUSIVE goes to every node.
_LOCK_MODES = {
    "access share": 1,
    "row share": 2,
    "row exclusive": 3,
    "share update exclusive": 4,
    "share": 5,
    "share row exclusive": 6,
    "exclusive": 7,
    "access exclusive": 8,
}
_ROW_EXCLUSIVE = 3


def _analyse(
    toks: List[Token], config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Classification, bool]:
    """
    Classify one statement (significant tokens, at least one).

    @return: the classification and whether it is independent of literal
        values.
    """
    scan = _scan(toks)
    first = toks[0]
    if _punct(first, "("):
        verb = "select"
    elif _is_word(first):
        verb = first.value
    else:
        verb = ""
    handler = _HANDLERS.get(verb)
    if handler is None:
        if verb in _WRITE_VERBS:
            result = _write_statement(verb, scan)
        else:
            facts = _Facts(verb or "unknown", scan)
            result = facts.build(False, "unrecognised statement", True)
        independent = True
    else:
        result, independent = handler(verb, scan, config, lead_ok)
    if scan.unbalanced and (result.is_read_only or result.to_all_session_nodes):
        result = attr.evolve(
            result,
            is_read_only=False,
            to_all_session_nodes=False,
            forces_primary_reason=REASON_UNBALANCED,
            marks_transaction_writing=True,
        )
    return result, independent


def _write_statement(verb: str, scan: _Scan) -> Classification:
    facts = _Facts(verb, scan)
    toks = scan.tokens
    more: Dict[str, Any] = {}
    if verb == "create":
        temp = _created_temp_relation(toks)
        if temp is not None:
            more["creates_temp_table"] = temp
    elif verb == "drop" and len(toks) > 1 and _kw(toks[1], "table"):
        more["drops_tables"] = tuple(_name_list(toks, 2, skip=("if", "exists")))
    elif verb == "truncate":
        names = _name_list(toks, 1, skip=("table", "only"))
        for name in names:
            _record_relation(scan, name, True)
    elif verb in ("fetch", "move", "close"):
        # The cursor is the last word (FETCH [direction] [FROM|IN] name,
        # CLOSE name); CLOSE ALL names none.
        last = toks[-1] if len(toks) > 1 else None
        if last is not None and _is_name(last) and not (verb == "close" and _kw(last, "all")):
            more["prepared_name"] = last.value
    elif verb == "declare" and len(toks) > 1 and _is_name(toks[1]):
        more["prepared_name"] = toks[1].value
    return facts.build(False, _WRITE_VERBS[verb], True, **more)


def _name_list(toks: Sequence[Token], i: int, skip: Tuple[str, ...]) -> List[str]:
    """
    A comma-separated list of names at C{i}, after optional C{skip} words.
    """
    n = len(toks)
    while i < n and toks[i].kind == KEYWORD and toks[i].value in skip:
        i += 1
    names = []
    while i < n:
        name, i = _qualified_name(toks, i)
        if name is None:
            break
        names.append(name)
        if i < n and _punct(toks[i], "*"):
            i += 1
        if i < n and _punct(toks[i], ","):
            i += 1
            while i < n and toks[i].kind == KEYWORD and toks[i].value == "only":
                i += 1
            continue
        break
    return names


def _created_temp_relation(toks: Sequence[Token]) -> Optional[str]:
    """
    CREATE [OR REPLACE] [GLOBAL|LOCAL] TEMP|TEMPORARY [UNLOGGED] TABLE|VIEW|
    SEQUENCE [IF NOT EXISTS] name, or CREATE TABLE pg_temp.name.
    """
    i = 1
    n = len(toks)
    temp = False
    while (
        i < n
        and toks[i].kind == KEYWORD
        and toks[i].value
        in ("or", "replace", "global", "local", "temp", "temporary", "unlogged", "recursive")
    ):
        if toks[i].value in ("temp", "temporary"):
            temp = True
        i += 1
    if i >= n or toks[i].kind != KEYWORD or toks[i].value not in ("table", "view", "sequence"):
        return None
    i += 1
    while i < n and toks[i].kind == KEYWORD and toks[i].value in ("if", "not", "exists"):
        i += 1
    name, _ = _qualified_name(toks, i)
    if name is None:
        return None
    schema, _, relname = name.rpartition(".")
    if temp or schema.startswith("pg_temp"):
        return relname
    return None


def _set_config_calls(toks: Sequence[Token]) -> Optional[List[Tuple[str, str, bool]]]:
    """
    C{SELECT [pg_catalog.]set_config('name', 'value', false|true) [, ...]}
    with nothing else (drivers change settings this way): the settings,
    or None for any other statement.
    """
    calls: List[Tuple[str, str, bool]] = []
    i, n = 1, len(toks)
    while i < n:
        if (
            i + 2 < n
            and toks[i].kind in (IDENT, KEYWORD)
            and toks[i].value == "pg_catalog"
            and _punct(toks[i + 1], ".")
        ):
            i += 2
        if not (
            i + 7 < n
            and toks[i].kind in (IDENT, KEYWORD)
            and toks[i].value == "set_config"
            and _punct(toks[i + 1], "(")
            and toks[i + 2].kind == STRING
            and _punct(toks[i + 3], ",")
            and toks[i + 4].kind == STRING
            and _punct(toks[i + 5], ",")
            and toks[i + 6].kind == KEYWORD
            and toks[i + 6].value in ("true", "false")
            and _punct(toks[i + 7], ")")
        ):
            return None
        calls.append((toks[i + 2].value.lower(), toks[i + 4].value, toks[i + 6].value == "true"))
        i += 8
        if i < n and toks[i].kind == KEYWORD and toks[i].value == "as" and i + 1 < n:
            i += 2
        if i < n and _punct(toks[i], ";") and i + 1 == n:
            break
        if i < n:
            if not _punct(toks[i], ","):
                return None
            i += 1
    return calls or None


def _handle_select(
    verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Classification, bool]:
    facts = _Facts(verb, scan)
    if verb == "select":
        settings = _set_config_calls(scan.tokens)
        if settings is not None:
            # As the SET it stands for: every node of the session gets it,
            # so the session's settings are the same wherever a statement
            # runs (set_config() alone would go to the primary only).
            serializable = read_write = read_only = False
            for name, value, _local in settings:
                words = value.lower().replace(",", " ").split()
                if name in ("transaction_isolation", "default_transaction_isolation"):
                    serializable = serializable or "serializable" in words
                elif name in ("transaction_read_only", "default_transaction_read_only"):
                    read_write = read_write or any(w in _FALSE_WORDS for w in words)
                    read_only = read_only or any(w in _TRUE_WORDS for w in words)
            reason = None
            if serializable:
                reason = "set_config(... serializable)"
            elif read_write and any(n == "transaction_read_only" for n, _, _ in settings):
                reason = "set_config('transaction_read_only', off)"
            return _set_result(facts, reason, serializable, read_write, read_only), False
    reason, marks = _select_reason(scan, facts, config, lead_ok)
    # A set_config() call whose arguments are not plain literals is routed
    # as a write; one whose are is a SET (above): the literals decide.
    return facts.build(reason is None, reason, marks), "set_config" not in scan.calls


def _handle_with(
    verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Classification, bool]:
    main = _with_main_verb(scan)
    if main in _DML_VERBS:
        facts = _Facts("with", scan)
        return facts.build(False, f"WITH ... {main.upper()} modifies data", True), True
    if main is None:
        facts = _Facts("with", scan)
        return facts.build(False, "unrecognised statement after WITH", True), True
    return _handle_select("with", scan, config, lead_ok)


def _with_main_verb(scan: _Scan) -> Optional[str]:
    """
    The command after a WITH clause: the first top-level SELECT, VALUES,
    TABLE, INSERT, UPDATE, DELETE or MERGE, or C{select} for a
    parenthesised query right after the last CTE.
    """
    toks = scan.tokens
    depth_of = scan.depth
    for i in range(1, len(toks)):
        if depth_of[i] != 0:
            continue
        t = toks[i]
        if t.kind == KEYWORD and (t.value in _SELECT_VERBS or t.value in _DML_VERBS):
            return t.value
        if _punct(t, "(") and _punct(toks[i - 1], ")"):
            return "select"
    return None


#: Settings whose value on a standby is the standby's, not the session's:
#: a standby reports every transaction read-only.
_PRIMARY_SETTINGS = frozenset(["transaction_read_only"])


def _handle_show(
    verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Classification, bool]:
    toks = scan.tokens
    if len(toks) > 1 and toks[1].kind in (IDENT, KEYWORD) and toks[1].value in _PRIMARY_SETTINGS:
        return _Facts("show", scan).build(
            False, f"SHOW {toks[1].value}: a standby's answer is its own", False
        ), True
    return _Facts("show", scan).build(True, None, False), True


def _handle_explain(
    verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Classification, bool]:
    toks = scan.tokens
    n = len(toks)
    i = 1
    analyze = False
    if i < n and _punct(toks[i], "("):
        close = scan.closing.get(i, n - 1)
        for t in toks[i + 1 : close]:
            if _is_word(t) and t.value in ("analyze", "analyse"):
                analyze = True
        i = close + 1
    else:
        while i < n and _is_word(toks[i]) and toks[i].value in ("analyze", "analyse", "verbose"):
            if toks[i].value != "verbose":
                analyze = True
            i += 1
    facts = _Facts("explain", scan)
    if i >= n:
        return facts.build(False, "EXPLAIN of nothing", True), True
    inner, independent = _analyse(toks[i:], config, None)
    more = {
        "touches_temp_table_candidates": inner.touches_temp_table_candidates,
        "functions": inner.functions,
        "unknown_functions": inner.unknown_functions,
        "references_system_catalog": inner.references_system_catalog,
    }
    if not analyze:
        # Plain EXPLAIN plans without executing: fine on a standby.
        return facts.build(True, None, False, **more), independent
    if inner.is_read_only:
        return facts.build(True, None, False, **more), independent
    reason = f"EXPLAIN ANALYZE executes it: {inner.forces_primary_reason or inner.kind.upper()}"
    return facts.build(
        False, reason, True, written_relations=inner.written_relations, writes=inner.writes, **more
    ), independent


def _handle_copy(
    verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Classification, bool]:
    toks = scan.tokens
    n = len(toks)
    facts = _Facts("copy", scan)
    i = 1
    if i < n and _kw(toks[i], "binary"):
        i += 1
    inner: Optional[Classification] = None
    relation: Optional[str] = None
    if i < n and _punct(toks[i], "("):
        close = scan.closing.get(i, n - 1)
        if close > i + 1:
            inner, _ = _analyse(toks[i + 1 : close], config, None)
        i = close + 1
    else:
        relation, i = _qualified_name(toks, i)
        if i < n and _punct(toks[i], "("):
            i = scan.closing.get(i, n - 1) + 1  # column list
    direction = toks[i].value if i < n and toks[i].kind == KEYWORD else None
    if direction == "from":
        if relation is not None:
            _record_relation(scan, relation, True)
        return facts.build(False, "COPY FROM writes", True), True
    if direction != "to":
        return facts.build(False, "unrecognised COPY", True), True
    if relation is not None:
        _record_relation(scan, relation, False)
    if not (i + 1 < n and _kw(toks[i + 1], "stdout")):
        return facts.build(False, "COPY TO a server file or program", True), True
    if inner is not None:
        more = {
            "touches_temp_table_candidates": inner.touches_temp_table_candidates,
            "functions": inner.functions,
            "unknown_functions": inner.unknown_functions,
            "references_system_catalog": inner.references_system_catalog,
            "written_relations": inner.written_relations,
        }
        if inner.kind not in ("select", "with", "values", "table"):
            return facts.build(
                False,
                f"COPY ({inner.kind.upper()}) TO runs a write",
                True,
                writes=inner.writes,
                **more,
            ), True
        if not inner.is_read_only:
            return facts.build(
                False, inner.forces_primary_reason, True, writes=inner.writes, **more
            ), True
        return facts.build(True, None, False, **more), True
    if scan.catalog is not None:
        return facts.build(False, f"system catalog {scan.catalog}", False), True
    return facts.build(True, None, False), True


def _handle_prepare(
    verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Classification, bool]:
    toks = scan.tokens
    n = len(toks)
    if n > 1 and _kw(toks[1], "transaction"):
        return _Facts("prepare transaction", scan).build(
            False, "two-phase commit command", True, is_prepare_transaction=True, is_two_phase=True
        ), True
    facts = _Facts("prepare", scan)
    name = toks[1].value if n > 1 and _is_name(toks[1]) else None
    i = 2
    if i < n and _punct(toks[i], "("):
        i = scan.closing.get(i, n - 1) + 1
    if name is None or i >= n or not _kw(toks[i], "as") or i + 1 >= n:
        return facts.build(False, "unrecognised PREPARE", True, prepared_name=name), True
    # PREPARE takes the class of its query (Pgpool-II 4.5+).
    inner, independent = _analyse(toks[i + 1 :], config, None)
    return attr.evolve(
        inner, kind="prepare", prepared_name=name, marks_transaction_writing=True
    ), independent


def _handle_lock(
    verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Classification, bool]:
    toks = scan.tokens
    for name in _name_list(toks, 1, skip=("table", "only")):
        _record_relation(scan, name, False)
    level = _LOCK_MODES["access exclusive"]
    for i, t in enumerate(toks):
        if _kw(t, "in"):
            words = []
            for u in toks[i + 1 :]:
                if _kw(u, "mode"):
                    break
                words.append(u.value)
            level = _LOCK_MODES.get(" ".join(words), level)
            break
    facts = _Facts("lock", scan)
    if level < _ROW_EXCLUSIVE:
        return facts.build(False, None, True, to_all_session_nodes=True), True
    return facts.build(False, "LOCK in ROW EXCLUSIVE mode or stronger", True), True


_HANDLERS = {
    "select": _handle_select,
    "values": _handle_select,
    "table": _handle_select,
    "with": _handle_with,
    "show": _handle_show,
    "explain": _handle_explain,
    "copy": _handle_copy,
    "begin": _handle_begin,
    "start": _handle_begin,
    "commit": _handle_commit,
    "end": _handle_commit,
    "rollback": _handle_rollback,
    "abort": _handle_rollback,
    "savepoint": _handle_savepoint,
    "release": _handle_savepoint,
    "set": _handle_set,
    "reset": _handle_reset,
    "discard": _handle_reset,
    "prepare": _handle_prepare,
    "execute": _handle_execute,
    "deallocate": _handle_deallocate,
    "lock": _handle_lock,
}
