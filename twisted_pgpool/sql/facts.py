"""
What one statement's L{Classification} is built from: the builder
(L{_Facts}) the statement handlers fill in, the verdict on the functions a
statement calls (Pgpool-II's C{function_call_walker}, with the built-in
knowledge of L{twisted_pgpool.sql.functions} and the function lists), and
why a SELECT-class statement is not a read.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from twisted_pgpool.sql.classification import REASON_FIRST_CHAR, Classification, ClassifierConfig
from twisted_pgpool.sql.functions import (
    VOLATILE_FUNCTIONS,
    _is_non_volatile_builtin,
    _is_writing_builtin,
)
from twisted_pgpool.sql.scanning import _Scan


def _unique(names: Iterable[str]) -> Tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _matches(patterns: Sequence["re.Pattern[str]"], name: str) -> bool:
    for pattern in patterns:
        if pattern.search(name) is not None:
            return True
    return False


def _function_verdict(
    calls: Sequence[str], config: ClassifierConfig
) -> Tuple[Optional[str], List[str]]:
    """
    Pgpool-II's writing-function test (C{function_call_walker}), with our
    built-in knowledge standing in for its pg_proc lookup.

    @return: the reason the calls make the statement a write (or None), and
        the calls of unknown volatility.
    """
    reason: Optional[str] = None
    unknown: List[str] = []
    ro_patterns = config._read_only_patterns
    w_patterns = config._write_patterns
    for name in calls:
        schema, _, bare = name.rpartition(".")
        builtin = schema in ("", "pg_catalog")
        if ro_patterns:
            if not _matches(ro_patterns, name) and reason is None:
                reason = f"function {name}() is not in read_only_function_list"
            continue
        if builtin and _is_writing_builtin(bare):
            reason = reason or f"function {name}() writes or needs the primary"
            continue
        if w_patterns:
            if _matches(w_patterns, name):
                reason = reason or f"function {name}() matches write_function_list"
            continue
        if builtin:
            if bare in VOLATILE_FUNCTIONS:
                reason = reason or f"volatile function {name}()"
                continue
            if _is_non_volatile_builtin(bare):
                continue
        unknown.append(name)
    if reason is None and unknown and config.unknown_functions_are_writes:
        reason = f"function {unknown[0]}() of unknown volatility"
    return reason, unknown


#: Statement kinds that change the database whatever follows the verb
#: (a hot standby refuses each of them).
_CHANGING_VERBS = frozenset(
    """
    insert update delete merge truncate create alter drop comment grant
    revoke security import reassign refresh vacuum analyze analyse cluster
    reindex
    """.split()
)

#: Built-in functions that change the database when called: a sequence
#: advances.  (Other functions WRITING_FUNCTIONS sends to the primary
#: only need it, or change nothing a standby would refuse.)
_CHANGING_FUNCTIONS = frozenset(["nextval", "setval"])


def _certainly_writes(kind: str, scan: "_Scan") -> bool:
    """
    L{Classification.writes} for a statement that is not a read: its verb
    changes the database, or it writes a relation (DML, COPY FROM, a
    data-modifying WITH), creates one (SELECT INTO), locks rows, or calls a
    function that writes.
    """
    if (
        kind in _CHANGING_VERBS
        or scan.written
        or scan.into
        or scan.locking
        or scan.dml_verb is not None
    ):
        return True
    for name in scan.calls:
        schema, _, bare = name.rpartition(".")
        if bare in _CHANGING_FUNCTIONS and schema in ("", "pg_catalog"):
            return True
    return False


class _Facts:
    """
    A mutable builder for one statement's L{Classification}.
    """

    def __init__(self, kind: str, scan: _Scan) -> None:
        self.kwargs: Dict[str, Any] = {"kind": kind}
        self.scan = scan
        self.unknown: List[str] = []
        self.literal_independent = True

    def build(
        self, is_read_only: bool, reason: Optional[str], marks_writing: bool, **more: Any
    ) -> Classification:
        scan = self.scan
        kwargs = self.kwargs
        kwargs.update(more)
        if not is_read_only and "writes" not in kwargs and not kwargs.get("to_all_session_nodes"):
            kwargs["writes"] = _certainly_writes(kwargs["kind"], scan)
        kwargs.setdefault("touches_temp_table_candidates", _unique(scan.relations))
        kwargs.setdefault("written_relations", _unique(scan.written))
        kwargs.setdefault("functions", _unique(scan.calls))
        kwargs.setdefault("unknown_functions", _unique(self.unknown))
        kwargs.setdefault(
            "references_system_catalog",
            scan.catalog is not None or scan.regclass or scan.session_view is not None,
        )
        if scan.into_temp and scan.into_target is not None:
            kwargs.setdefault("creates_temp_table", scan.into_target.rpartition(".")[2])
        return Classification(
            is_read_only=is_read_only,
            forces_primary_reason=None if is_read_only else reason,
            marks_transaction_writing=marks_writing,
            **kwargs,
        )


def _select_reason(
    scan: _Scan, facts: _Facts, config: ClassifierConfig, lead_ok: Optional[bool]
) -> Tuple[Optional[str], bool]:
    """
    Why a SELECT-class statement is not a read, if it is not.

    @param lead_ok: the first-character test's result, or None when it does
        not apply (the query inside PREPARE, EXPLAIN or COPY).
    @return: the reason (None for a read), and whether Pgpool-II would
        count the statement as a write in a transaction (anything but a
        "read SELECT" without writing functions).
    """
    if scan.into:
        return "SELECT INTO creates a table", True
    if scan.locking:
        return "row-locking clause (FOR UPDATE/SHARE)", True
    if scan.dml_verb is not None:
        return f"data-modifying statement ({scan.dml_verb.upper()}) in WITH", True
    function_reason, facts.unknown = _function_verdict(scan.calls, config)
    if config._write_patterns and any(
        _matches(config._write_patterns, name) for name in scan.calls
    ):
        # The user says these functions write.
        facts.kwargs["writes"] = True
    if lead_ok is False:
        return REASON_FIRST_CHAR, True
    if scan.catalog is not None:
        return f"system catalog {scan.catalog}", function_reason is not None
    if scan.regclass:
        return "regclass lookup in the system catalog", function_reason is not None
    if scan.temp_schema is not None:
        return f"temporary schema reference {scan.temp_schema}", function_reason is not None
    if function_reason is not None:
        return function_reason, True
    return None, False
