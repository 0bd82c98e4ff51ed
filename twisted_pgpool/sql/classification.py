"""
The classifier's settings and its answer: L{ClassifierConfig} (Pgpool-II's
settings that change how statements are classified, and the configuration's
cache of classifications), L{Classification} (what the router needs to know
about one query string), and the reasons it gives for sending a statement to
the primary.  L{twisted_pgpool.sql.classifier} computes them.
"""

from __future__ import annotations

import collections
import re
from typing import Any, Iterable, Optional, Sequence, Tuple

import attr

__all__ = ["Classification", "ClassificationCache", "ClassifierConfig"]


# Reasons (for logs and docs).
REASON_MULTI = "multi-statement query (Pgpool-II sends these to the primary)"
REASON_NO_LOAD_BALANCE = "/*NO LOAD BALANCE*/ comment"
REASON_UNTERMINATED = "unterminated string, quoted identifier or comment"
REASON_UNBALANCED = "unbalanced parentheses"
REASON_FIRST_CHAR = "does not start with SELECT, WITH, TABLE or '(' (allow_sql_comments is off)"
REASON_PATTERN = "matches primary_routing_query_pattern_list"
REASON_AMBIGUOUS_BACKSLASH = (
    "backslash in a standard string: what it means depends on standard_conforming_strings"
)


# ---------------------------------------------------------------------------
# Configuration.


def _anchored(pattern: str) -> str:
    """
    Anchor a list entry the way Pgpool-II does: prepend C{^} unless the
    pattern starts with one, append C{$} unless it ends with one.  (So
    C{a|b} becomes C{^a|b$}, exactly as in Pgpool-II.)
    """
    if not pattern.startswith("^"):
        pattern = "^" + pattern
    if not pattern.endswith("$"):
        pattern = pattern + "$"
    return pattern


def _compile_list(name: str, patterns: Sequence[str], flags: int) -> Tuple["re.Pattern[str]", ...]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(_anchored(pattern), flags))
        except re.error as e:
            raise ValueError(f"{name}: invalid regular expression {pattern!r}: {e}") from None
    return tuple(compiled)


def _pattern_tuple(value: Iterable[str]) -> Tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(
            "expected a sequence of patterns, not a string (use ClassifierConfig.from_pgpool)"
        )
    return tuple(p for p in value if p)


class ClassificationCache:
    """
    A bounded LRU map from statement text or shape to L{Classification}.

    @ivar maxsize: the most entries kept.
    @ivar hits: lookups answered from the cache.
    @ivar misses: lookups that needed a full classification.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._entries: "collections.OrderedDict[str, Classification]" = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.hits = 0
        self.misses = 0

    def _put(self, key: str, value: "Classification") -> None:
        if self.maxsize <= 0:
            return
        entries = self._entries
        entries[key] = value
        if len(entries) > self.maxsize:
            entries.popitem(last=False)


@attr.s(frozen=True, auto_attribs=True)
class ClassifierConfig:
    """
    The settings that change how statements are classified, with Pgpool-II's
    names.

    @ivar write_function_list: regular expressions (Pgpool-II anchors each
        with C{^...$}) naming functions that write.  Matched against the
        function name as written, schema-qualified if it was (C{public.f1}
        and C{f1} are different names), without double quotes.
    @ivar read_only_function_list: regular expressions naming the only
        functions that do I{not} write; every other function call sends the
        statement to the primary.  Mutually exclusive with
        C{write_function_list}.
    @ivar primary_routing_query_pattern_list: case-insensitive regular
        expressions (anchored) matched against the whole query text; a match
        sends a read to the primary.
    @ivar allow_sql_comments: when off (the default), a SELECT is only a
        read if the text starts with C{s}, C{w}, C{t} or C{(} (after
        whitespace, see C{ignore_leading_white_space}), so any leading
        comment pins it to the primary, and C{/*NO LOAD BALANCE*/} does so
        explicitly.  When on, comments are ignored for both.
    @ivar ignore_leading_white_space: skip leading whitespace before that
        first-character test.
    @ivar unknown_functions_are_writes: with both function lists empty,
        Pgpool-II asks the primary whether each function is VOLATILE.  We
        know PostgreSQL's common built-ins; a call to any other function
        (user-defined functions default to VOLATILE) makes the statement a
        write when this is on.  A router that looks volatility up itself
        turns it off and checks L{Classification.unknown_functions}.
    @ivar balance_read_only_multi_statements: Pgpool-II sends every
        multi-statement query to the primary.  When on, one whose every
        statement is read-only may be balanced instead.
    @ivar cache_size: entries in the classification cache (0 disables it).
    """

    write_function_list: Tuple[str, ...] = attr.ib(default=(), converter=_pattern_tuple)
    read_only_function_list: Tuple[str, ...] = attr.ib(default=(), converter=_pattern_tuple)
    primary_routing_query_pattern_list: Tuple[str, ...] = attr.ib(
        default=(), converter=_pattern_tuple
    )
    allow_sql_comments: bool = False
    ignore_leading_white_space: bool = True
    unknown_functions_are_writes: bool = True
    balance_read_only_multi_statements: bool = False
    cache_size: int = attr.ib(default=10000, validator=attr.validators.instance_of(int))

    _write_patterns: Tuple["re.Pattern[str]", ...] = attr.ib(init=False, eq=False, repr=False)
    _read_only_patterns: Tuple["re.Pattern[str]", ...] = attr.ib(init=False, eq=False, repr=False)
    _query_patterns: Tuple["re.Pattern[str]", ...] = attr.ib(init=False, eq=False, repr=False)
    _cache: ClassificationCache = attr.ib(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.write_function_list and self.read_only_function_list:
            raise ValueError(
                "write_function_list and read_only_function_list are mutually exclusive: set only one"
            )
        setattr_ = object.__setattr__
        setattr_(
            self,
            "_write_patterns",
            _compile_list("write_function_list", self.write_function_list, 0),
        )
        setattr_(
            self,
            "_read_only_patterns",
            _compile_list("read_only_function_list", self.read_only_function_list, 0),
        )
        setattr_(
            self,
            "_query_patterns",
            _compile_list(
                "primary_routing_query_pattern_list",
                self.primary_routing_query_pattern_list,
                re.IGNORECASE,
            ),
        )
        setattr_(self, "_cache", ClassificationCache(self.cache_size))

    @property
    def cache(self) -> ClassificationCache:
        """
        This configuration's classification cache.
        """
        return self._cache

    @classmethod
    def from_pgpool(
        cls,
        write_function_list: str = "",
        read_only_function_list: str = "",
        primary_routing_query_pattern_list: str = "",
        **kwargs: Any,
    ) -> "ClassifierConfig":
        """
        Build a configuration from pgpool.conf-style list strings: the
        function lists are comma-separated, the query pattern list is
        separated by semicolons (write C{\\;} for a semicolon inside a
        pattern).
        """
        return cls(
            write_function_list=_split_commas(write_function_list),
            read_only_function_list=_split_commas(read_only_function_list),
            primary_routing_query_pattern_list=_split_semicolons(
                primary_routing_query_pattern_list
            ),
            **kwargs,
        )


def _split_commas(value: str) -> Tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def _split_semicolons(value: str) -> Tuple[str, ...]:
    # A ';' preceded by a backslash stays in the pattern, where \; matches a
    # literal semicolon.
    return tuple(p.strip() for p in re.split(r"(?<!\\);", value) if p.strip())


# ---------------------------------------------------------------------------
# The result.


@attr.s(frozen=True, auto_attribs=True, slots=True)
class Classification:
    """
    What the router needs to know about one query string.

    For a multi-statement string, C{kind} is the first statement's, the
    boolean facts are true if they hold for I{any} statement, names are
    collected from all of them, and C{parts} has each statement's own
    classification in order.

    @ivar kind: the command word(s), normalised: C{select}, C{values},
        C{table}, C{with}, C{insert}, C{show}, C{explain}, C{copy},
        C{begin} (also START TRANSACTION), C{commit} (also END),
        C{rollback} (also ABORT), C{savepoint}, C{release savepoint},
        C{rollback to savepoint}, C{prepare transaction}, C{commit
        prepared}, C{rollback prepared}, C{set}, C{reset}, C{discard},
        C{prepare}, C{execute}, C{deallocate}, C{lock}, C{empty} (nothing
        but whitespace, comments or semicolons), or the first word of
        anything else (C{create}, C{vacuum}, ...; C{unknown} if there is no
        word).
    @ivar is_read_only: it may be load-balanced to a standby (if the
        router's session and transaction rules allow).
    @ivar forces_primary_reason: when it must go to the primary only, why
        (for logs).  None for reads and for statements that go to every
        node the session uses.
    @ivar to_all_session_nodes: send it to the primary and to the session's
        load-balance node: BEGIN/COMMIT/ROLLBACK, SAVEPOINT/RELEASE/ROLLBACK
        TO, most SET/RESET, DISCARD, DEALLOCATE ALL, LOCK weaker than ROW
        EXCLUSIVE.
    @ivar is_session_state: SET, RESET, DISCARD, DEALLOCATE ALL: it changes
        state that later statements on every node depend on.
    @ivar is_transaction_start: BEGIN or START TRANSACTION.
    @ivar is_commit: COMMIT or END (not COMMIT PREPARED).
    @ivar is_rollback: ROLLBACK or ABORT that ends the transaction (not
        ROLLBACK TO SAVEPOINT, not ROLLBACK PREPARED).
    @ivar is_savepoint_op: SAVEPOINT, RELEASE [SAVEPOINT] or ROLLBACK TO
        [SAVEPOINT].
    @ivar savepoint_name: the savepoint such a statement names.
    @ivar is_prepare_transaction: PREPARE TRANSACTION.
    @ivar is_two_phase: PREPARE TRANSACTION, COMMIT PREPARED or ROLLBACK
        PREPARED.
    @ivar and_chain: COMMIT/ROLLBACK AND CHAIN (a new transaction starts).
    @ivar isolation_serializable: BEGIN/START TRANSACTION ... ISOLATION
        LEVEL SERIALIZABLE, or any SET of the isolation level to
        SERIALIZABLE (SET TRANSACTION, SET SESSION CHARACTERISTICS, SET
        [default_]transaction_isolation).
    @ivar read_write_transaction: BEGIN/START TRANSACTION READ WRITE, SET
        TRANSACTION / SESSION CHARACTERISTICS ... READ WRITE, SET
        transaction_read_only to false.
    @ivar read_only_transaction: the READ ONLY counterparts (Pgpool-II does
        not count these SETs as writes in a transaction).
    @ivar standby_rewrite: text to send to standbys instead (C{BEGIN} for a
        BEGIN/START TRANSACTION with READ WRITE or SERIALIZABLE, as
        Pgpool-II does).
    @ivar prepared_name: the statement name of PREPARE, EXECUTE or
        DEALLOCATE (not ALL), or the cursor DECLARE, FETCH, MOVE or CLOSE
        (not ALL) names.  PREPARE's own routing is its query's; EXECUTE,
        DEALLOCATE and the cursor commands go where the statement or
        portal is (the session looks the name up; they are marked for the
        primary here, where it is when the session knows nothing else).
    @ivar is_multi_statement: more than one statement in the string.
    @ivar statements: how many statements (0 for an empty query).
    @ivar parts: for a multi-statement string, each statement's
        classification.
    @ivar touches_temp_table_candidates: relation names referenced (after
        FROM, JOIN, INTO, UPDATE, TABLE, USING, COPY, LOCK, TRUNCATE ...),
        schema-qualified as written, unquoted identifiers folded to lower
        case; best effort, may include names that are not tables.
    @ivar written_relations: the targets of INSERT, UPDATE, DELETE, MERGE,
        TRUNCATE and COPY FROM (for dml_adaptive).
    @ivar creates_temp_table: the name of a temporary relation this creates
        (CREATE TEMP TABLE/VIEW/SEQUENCE, CREATE TABLE pg_temp.x, SELECT
        ... INTO TEMP x), without schema.
    @ivar drops_tables: the names a DROP TABLE removes.
    @ivar discards_temp_tables: DISCARD ALL or DISCARD TEMP.
    @ivar functions: the functions called, as written (schema-qualified if
        they were).
    @ivar unknown_functions: those whose volatility this module does not
        know (only computed when both function lists are empty).
    @ivar references_system_catalog: it reads a relation in pg_catalog (a
        C{pg_} name) or casts to regclass.
    @ivar no_load_balance_comment: the text starts with
        C{/*NO LOAD BALANCE*/} and allow_sql_comments is off.
    @ivar writes: it certainly changes the database (INSERT, UPDATE,
        DELETE, MERGE, TRUNCATE, COPY FROM, DDL, GRANT/REVOKE, VACUUM and
        the like, SELECT INTO, a data-modifying WITH, a row-locking clause,
        C{nextval}/C{setval} or a function in C{write_function_list}), so a
        standby would refuse it.  Narrower than not C{is_read_only}, which
        also covers statements that only I{may} write (a function of unknown
        volatility, a leading comment): a session with no primary refuses
        these writes itself and lets a standby judge the rest.
    @ivar marks_transaction_writing: if it completes inside a transaction,
        Pgpool-II counts the transaction as writing.  True for everything
        except a read SELECT (SELECT/WITH/TABLE passing the first-character
        test, SHOW, EXPLAIN, COPY TO STDOUT) without writing functions, SET
        TRANSACTION READ ONLY and its variants, and BEGIN, COMMIT and
        ROLLBACK (which reset the state).
    """

    kind: str
    is_read_only: bool
    forces_primary_reason: Optional[str] = None
    to_all_session_nodes: bool = False
    is_session_state: bool = False
    is_transaction_start: bool = False
    is_commit: bool = False
    is_rollback: bool = False
    is_savepoint_op: bool = False
    savepoint_name: Optional[str] = None
    is_prepare_transaction: bool = False
    is_two_phase: bool = False
    and_chain: bool = False
    isolation_serializable: bool = False
    read_write_transaction: bool = False
    read_only_transaction: bool = False
    standby_rewrite: Optional[str] = None
    prepared_name: Optional[str] = None
    is_multi_statement: bool = False
    statements: int = 1
    parts: Tuple["Classification", ...] = ()
    touches_temp_table_candidates: Tuple[str, ...] = ()
    written_relations: Tuple[str, ...] = ()
    creates_temp_table: Optional[str] = None
    drops_tables: Tuple[str, ...] = ()
    discards_temp_tables: bool = False
    functions: Tuple[str, ...] = ()
    unknown_functions: Tuple[str, ...] = ()
    references_system_catalog: bool = False
    no_load_balance_comment: bool = False
    marks_transaction_writing: bool = True
    writes: bool = False
