"""
Per-node statement and error counts (C{SHOW POOL_BACKEND_STATS}).

Pgpool-II counts each statement it sends to a node (each simple Query,
each Execute of the extended protocol) by the type of its parse tree, and
each ErrorResponse a node returns by severity.  Here the type comes from
the router's classification (L{twisted_pgpool.sql.classifier.Classification}
C{kind}), or, where a session routes nothing (every message goes to the
primary), from the statement's first word: both name the same command, so
one table maps either to a counter.

The counters are plain lists of integers on the cluster's
L{twisted_pgpool.cluster.model.Node}, indexed by the constants below, so that
counting a statement is one dictionary lookup and one increment.
"""

from __future__ import annotations

import re
from typing import List, Optional

# Indexes into Node.statement_counts, in the report's column order.
SELECT = 0
INSERT = 1
UPDATE = 2
DELETE = 3
DDL = 4
OTHER = 5

#: C{SHOW POOL_BACKEND_STATS}'s statement columns, by index.
STATEMENT_COLUMNS = ("select_cnt", "insert_cnt", "update_cnt", "delete_cnt", "ddl_cnt", "other_cnt")

# Indexes into Node.error_counts.
PANIC = 0
FATAL = 1
ERROR = 2

#: Its error columns, by index.
ERROR_COLUMNS = ("panic_cnt", "fatal_cnt", "error_cnt")

#: Every column, in Pgpool-II's order.
BACKEND_STATS_COLUMNS = (
    ("node_id", "hostname", "port", "status", "role") + STATEMENT_COLUMNS + ERROR_COLUMNS
)

# Pgpool-II's statistics.c: SelectStmt, InsertStmt, UpdateStmt, DeleteStmt;
# then CHECKPOINT, DEALLOCATE, DISCARD, EXECUTE, EXPLAIN, LISTEN, LOAD,
# LOCK, NOTIFY, PREPARE, transaction statements, UNLISTEN, VACUUM (and
# ANALYZE, the same node), SET/RESET and SHOW are "other"; everything else
# (CREATE, ALTER, DROP, TRUNCATE, COPY, GRANT, DECLARE, FETCH, ...) is DDL.
# A WITH query counts as a SELECT, as the manual lists it.  Keys are the
# classifier's kinds and, for its one-word kinds, the first word a
# statement starts with.
_COUNTER_OF_KIND = {
    "select": SELECT,
    "with": SELECT,
    "values": SELECT,
    "table": SELECT,
    # An empty query: Pgpool-II runs it as a dummy read.
    "empty": SELECT,
    "insert": INSERT,
    "update": UPDATE,
    "delete": DELETE,
    "checkpoint": OTHER,
    "deallocate": OTHER,
    "discard": OTHER,
    "execute": OTHER,
    "explain": OTHER,
    "listen": OTHER,
    "load": OTHER,
    "lock": OTHER,
    "notify": OTHER,
    "prepare": OTHER,
    "unlisten": OTHER,
    "vacuum": OTHER,
    "analyze": OTHER,
    "analyse": OTHER,
    "set": OTHER,
    "reset": OTHER,
    "show": OTHER,
    "begin": OTHER,
    "start": OTHER,
    "commit": OTHER,
    "end": OTHER,
    "rollback": OTHER,
    "abort": OTHER,
    "savepoint": OTHER,
    "release": OTHER,
    "release savepoint": OTHER,
    "rollback to savepoint": OTHER,
    "prepare transaction": OTHER,
    "commit prepared": OTHER,
    "rollback prepared": OTHER,
}


def counter_of_kind(kind: str) -> int:
    """
    The counter a statement of this kind counts in (a
    L{twisted_pgpool.sql.classifier.Classification} C{kind}, or a first word
    in lower case).
    """
    return _COUNTER_OF_KIND.get(kind, DDL)


# The first word of a statement, after blanks and opening parentheses (a
# parenthesised SELECT).  Text starting with a comment does not match.
_FIRST_WORD = re.compile(rb"[\s(]*([A-Za-z]+)")
_COUNTER_OF_WORD = {
    kind.encode("ascii"): index for kind, index in _COUNTER_OF_KIND.items() if " " not in kind
}
# The statements an application sends most, written without leading
# blanks: found by their first six bytes, without the regular expression.
_COUNTER_OF_HEAD = {b"select": SELECT, b"insert": INSERT, b"update": UPDATE, b"delete": DELETE}


def counter_of_text(data: bytes, start: int = 0) -> Optional[int]:
    """
    The counter of the statement whose text starts at C{data[start]},
    from its first word; None when the text starts with something else
    (a comment), for the caller to classify it properly.
    """
    index = _COUNTER_OF_HEAD.get(data[start : start + 6].lower())
    if index is not None and not data[start + 6 : start + 7].isalnum():
        return index
    found = _FIRST_WORD.match(data, start)
    if found is None:
        return None
    return _COUNTER_OF_WORD.get(found[1].lower(), DDL)


def count_error(error_counts: List[int], payload: bytes) -> None:
    """
    Count an ErrorResponse by its severity (the untranslated C{V} field,
    which every server since PostgreSQL 9.6 sends; its C{S} field when
    there is none).  Other severities are not counted.
    """
    if b"\x00VERROR\x00" in payload:
        error_counts[ERROR] += 1
    elif b"\x00VFATAL\x00" in payload:
        error_counts[FATAL] += 1
    elif b"\x00VPANIC\x00" in payload:
        error_counts[PANIC] += 1
    elif b"\x00V" not in payload:
        if payload.startswith(b"SERROR\x00"):
            error_counts[ERROR] += 1
        elif payload.startswith(b"SFATAL\x00"):
            error_counts[FATAL] += 1
        elif payload.startswith(b"SPANIC\x00"):
            error_counts[PANIC] += 1
