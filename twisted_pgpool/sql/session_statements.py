"""
Classifying the statements that steer a transaction or a session rather
than read or write data: BEGIN/START TRANSACTION, COMMIT, ROLLBACK,
SAVEPOINT/RELEASE, SET/RESET/DISCARD, EXECUTE and DEALLOCATE.  Most go to
every node the session uses.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted_pgpool.sql.classification import Classification, ClassifierConfig
from twisted_pgpool.sql.facts import _Facts
from twisted_pgpool.sql.lexer import (
    IDENT,
    KEYWORD,
    NUMBER,
    OPERATOR,
    QUOTED_IDENT,
    STRING,
    Token,
)
from twisted_pgpool.sql.scanning import _is_name, _kw, _qualified_name, _Scan

# PostgreSQL's parse_bool: what SET transaction_read_only accepts as false.
_FALSE_WORDS = frozenset(["f", "fa", "fal", "fals", "false", "n", "no", "of", "off", "0"])
_TRUE_WORDS = frozenset(["t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"])


def _transaction_modes(toks: Sequence[Token], i: int) -> Tuple[bool, bool, bool]:
    """
    Read a transaction mode list from C{i}.

    @return: (serializable, read write, read only)
    """
    serializable = read_write = read_only = False
    n = len(toks)
    while i < n:
        t = toks[i]
        if _kw(t, "isolation") and i + 2 < n and _kw(toks[i + 1], "level"):
            if _kw(toks[i + 2], "serializable"):
                serializable = True
            i += 3
            continue
        if _kw(t, "read") and i + 1 < n:
            if _kw(toks[i + 1], "write"):
                read_write = True
            elif _kw(toks[i + 1], "only"):
                read_only = True
            i += 2
            continue
        i += 1
    return serializable, read_write, read_only


def _handle_begin(
    verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Classification, bool]:
    toks = scan.tokens
    n = len(toks)
    i = 1
    if verb == "start":
        if not (i < n and _kw(toks[i], "transaction")):
            return _Facts("start", scan).build(False, "unrecognised statement", True), True
        i += 1
    elif i < n and toks[i].kind == KEYWORD and toks[i].value in ("work", "transaction"):
        i += 1
    serializable, read_write, read_only = _transaction_modes(toks, i)
    return _Facts("begin", scan).build(
        False,
        None,
        False,
        to_all_session_nodes=True,
        is_transaction_start=True,
        isolation_serializable=serializable,
        read_write_transaction=read_write,
        read_only_transaction=read_only,
        standby_rewrite="BEGIN" if (serializable or read_write) else None,
    ), True


def _chain(toks: Sequence[Token], i: int) -> bool:
    n = len(toks)
    return i + 1 < n and _kw(toks[i], "and") and _kw(toks[i + 1], "chain")


def _handle_commit(
    verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Classification, bool]:
    toks = scan.tokens
    n = len(toks)
    if verb == "commit" and n > 1 and _kw(toks[1], "prepared"):
        return _Facts("commit prepared", scan).build(
            False, "two-phase commit command", True, is_two_phase=True
        ), True
    i = 1
    if i < n and toks[i].kind == KEYWORD and toks[i].value in ("work", "transaction"):
        i += 1
    return _Facts("commit", scan).build(
        False, None, False, to_all_session_nodes=True, is_commit=True, and_chain=_chain(toks, i)
    ), True


def _handle_rollback(
    verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Classification, bool]:
    toks = scan.tokens
    n = len(toks)
    if verb == "rollback" and n > 1 and _kw(toks[1], "prepared"):
        return _Facts("rollback prepared", scan).build(
            False, "two-phase commit command", True, is_two_phase=True
        ), True
    i = 1
    if i < n and toks[i].kind == KEYWORD and toks[i].value in ("work", "transaction"):
        i += 1
    if verb == "rollback" and i < n and _kw(toks[i], "to"):
        i += 1
        if i < n and _kw(toks[i], "savepoint"):
            i += 1
        name = toks[i].value if i < n and _is_name(toks[i]) else None
        return _Facts("rollback to savepoint", scan).build(
            False, None, True, to_all_session_nodes=True, is_savepoint_op=True, savepoint_name=name
        ), True
    return _Facts("rollback", scan).build(
        False, None, False, to_all_session_nodes=True, is_rollback=True, and_chain=_chain(toks, i)
    ), True


def _handle_savepoint(
    verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Classification, bool]:
    toks = scan.tokens
    n = len(toks)
    i = 1
    kind = "savepoint"
    if verb == "release":
        kind = "release savepoint"
        if i < n and _kw(toks[i], "savepoint"):
            i += 1
    name = toks[i].value if i < n and _is_name(toks[i]) else None
    return _Facts(kind, scan).build(
        False, None, True, to_all_session_nodes=True, is_savepoint_op=True, savepoint_name=name
    ), True


def _setting_words(toks: Sequence[Token], i: int) -> List[str]:
    """
    The values of a SET's value list, lower-cased, as words.
    """
    out = []
    for t in toks[i:]:
        if t.kind in (STRING, NUMBER, IDENT, KEYWORD, QUOTED_IDENT):
            out.append(t.value.lower().strip())
    return out


def _handle_set(
    verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Classification, bool]:
    toks = scan.tokens
    n = len(toks)
    facts = _Facts("set", scan)
    i = 1
    # SET CONSTRAINTS is not a session variable; Pgpool-II sends it to the
    # primary with everything else it does not list.
    if i < n and _kw(toks[i], "constraints"):
        return facts.build(
            False, "SET CONSTRAINTS goes to the primary (as in Pgpool-II)", True
        ), True
    if i < n and toks[i].kind == KEYWORD and toks[i].value in ("session", "local"):
        if not (
            i + 1 < n
            and toks[i + 1].kind == KEYWORD
            and toks[i + 1].value in ("characteristics", "authorization")
        ):
            i += 1
    modes: Optional[Tuple[bool, bool, bool]] = None
    if i < n and _kw(toks[i], "transaction"):
        if i + 1 < n and _kw(toks[i + 1], "snapshot"):
            modes = (False, False, False)
        else:
            modes = _transaction_modes(toks, i + 1)
    elif i + 3 < n and _kw(toks[i], "session") and _kw(toks[i + 1], "characteristics"):
        modes = _transaction_modes(toks, i + 4)
    if modes is not None:
        serializable, read_write, read_only = modes
        reason = None
        if serializable:
            reason = "SET ... ISOLATION LEVEL SERIALIZABLE"
        elif read_write:
            reason = "SET ... READ WRITE"
        return _set_result(facts, reason, serializable, read_write, read_only), True

    # SET [SESSION|LOCAL] name {TO|=} value[, ...]
    name, j = _qualified_name(toks, i)
    if (
        name is None
        or j >= n
        or not (_kw(toks[j], "to") or (toks[j].kind == OPERATOR and toks[j].text == "="))
    ):
        return _set_result(facts, None, False, False, False), True
    words = _setting_words(toks, j + 1)
    if name == "transaction_read_only":
        if any(w in _FALSE_WORDS for w in words):
            return _set_result(facts, "SET transaction_read_only = off", False, True, False), False
        return _set_result(facts, None, False, False, any(w in _TRUE_WORDS for w in words)), False
    if name in ("transaction_isolation", "default_transaction_isolation"):
        if "serializable" in words:
            return _set_result(facts, f"SET {name} = serializable", True, False, False), False
        return _set_result(facts, None, False, False, False), False
    return _set_result(facts, None, False, False, False), True


def _set_result(
    facts: _Facts, reason: Optional[str], serializable: bool, read_write: bool, read_only: bool
) -> Classification:
    return facts.build(
        False,
        reason,
        not read_only,
        to_all_session_nodes=reason is None,
        is_session_state=True,
        isolation_serializable=serializable,
        read_write_transaction=read_write,
        read_only_transaction=read_only,
    )


def _handle_reset(
    verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Classification, bool]:
    toks = scan.tokens
    more: Dict[str, Any] = {}
    if verb == "discard" and len(toks) > 1 and toks[1].kind == KEYWORD:
        more["discards_temp_tables"] = toks[1].value in ("all", "temp", "temporary")
    return _Facts(verb, scan).build(
        False, None, True, to_all_session_nodes=True, is_session_state=True, **more
    ), True


def _handle_execute(
    verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Classification, bool]:
    toks = scan.tokens
    name = toks[1].value if len(toks) > 1 and _is_name(toks[1]) else None
    facts = _Facts("execute", scan)
    # The name's own "(" looked like a call to the scan.
    if name is not None and scan.calls and scan.calls[0] == name:
        del scan.calls[0]
    reason = f"EXECUTE routes like PREPARE {name} (the primary if that is unknown)"
    return facts.build(False, reason, True, prepared_name=name), True


def _handle_deallocate(
    verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Classification, bool]:
    toks = scan.tokens
    n = len(toks)
    i = 1
    if i < n and _kw(toks[i], "prepare"):
        i += 1
    facts = _Facts("deallocate", scan)
    if i < n and _kw(toks[i], "all"):
        return facts.build(
            False, None, True, to_all_session_nodes=True, is_session_state=True
        ), True
    name = toks[i].value if i < n and _is_name(toks[i]) else None
    reason = f"DEALLOCATE routes like PREPARE {name} (the primary if that is unknown)"
    return facts.build(False, reason, True, prepared_name=name), True
