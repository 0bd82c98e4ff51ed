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
"""

from __future__ import annotations

import collections
import re
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

import attr

from twisted_pgpool.sql.lexer import (
    IDENT,
    KEYWORD,
    NUMBER,
    OPERATOR,
    PUNCT,
    QUOTED_IDENT,
    RESERVED_KEYWORDS,
    STRING,
    TRIVIA,
    Token,
    split_tokens,
    tokenize,
)

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


# ---------------------------------------------------------------------------
# What we know about built-in functions.
#
# Pgpool-II asks the primary's pg_proc whether a function is VOLATILE when
# both function lists are empty.  The classifier cannot query, so it carries
# the answer for PostgreSQL's own functions (pg_catalog) in three groups.

#: Built-in functions that change something, take locks or session state
#: that later statements rely on, or fail on a standby -- or whose answer
#: belongs to the client's own server process (C{pg_backend_pid()} is the
#: pid the client was told, its primary connection's).  These always send
#: the statement to the primary unless C{read_only_function_list} names
#: them.  (Pgpool-II, with C{write_function_list} set, trusts the list
#: alone; we keep these even then -- see docs/routing.md.)
WRITING_FUNCTIONS: FrozenSet[str] = frozenset(
    """
    nextval setval currval lastval
    pg_notify set_config setseed
    pg_backend_pid pg_my_temp_schema
    txid_current pg_current_xact_id
    pg_current_wal_lsn pg_current_wal_insert_lsn pg_current_wal_flush_lsn
    pg_current_xlog_location pg_current_xlog_insert_location
    pg_current_xlog_flush_location
    pg_switch_wal pg_switch_xlog pg_create_restore_point pg_promote
    pg_start_backup pg_stop_backup pg_backup_start pg_backup_stop
    pg_drop_replication_slot pg_replication_slot_advance
    pg_logical_emit_message
    pg_terminate_backend pg_cancel_backend pg_reload_conf pg_rotate_logfile
    pg_log_backend_memory_contexts pg_import_system_collations
    pg_extension_config_dump
    loread lowrite
    """.split()
)

#: Name prefixes of further writing built-ins: advisory locks, large
#: objects, replication slots and origins, statistics resets.
WRITING_FUNCTION_PREFIXES: Tuple[str, ...] = (
    "pg_advisory_",
    "pg_try_advisory_",
    "lo_",
    "pg_create_",
    "pg_copy_",
    "pg_logical_slot_",
    "pg_replication_origin_",
    "pg_stat_reset",
)

#: Built-in VOLATILE functions that are harmless on a standby.  Pgpool-II's
#: rule (both lists empty: volatile means writer) still sends them to the
#: primary; with either list set they follow the list.
VOLATILE_FUNCTIONS: FrozenSet[str] = frozenset(
    """
    random random_normal gen_random_uuid uuidv4 uuidv7
    uuid_generate_v1 uuid_generate_v1mc uuid_generate_v4
    clock_timestamp timeofday pg_sleep pg_sleep_for pg_sleep_until
    array_shuffle array_sample
    pg_is_in_recovery pg_last_wal_receive_lsn pg_last_wal_replay_lsn
    pg_last_xact_replay_timestamp pg_last_xlog_receive_location
    pg_last_xlog_replay_location pg_is_wal_replay_paused
    pg_get_wal_replay_pause_state pg_wal_replay_pause pg_wal_replay_resume
    pg_relation_size pg_total_relation_size pg_table_size pg_indexes_size
    pg_database_size pg_tablespace_size
    pg_read_file pg_read_binary_file pg_ls_dir pg_stat_file pg_ls_logdir
    pg_ls_waldir pg_ls_tmpdir pg_ls_archive_statusdir
    pg_export_snapshot pg_stat_clear_snapshot
    txid_current_if_assigned pg_current_xact_id_if_assigned
    pg_notification_queue_usage
    """.split()
)

#: Common built-in functions known to be STABLE or IMMUTABLE (aggregates
#: and window functions included).  A call to anything in none of these
#: sets is of I{unknown} volatility; see
#: L{ClassifierConfig.unknown_functions_are_writes}.
NON_VOLATILE_FUNCTIONS: FrozenSet[str] = frozenset(
    """
    count sum avg min max array_agg string_agg json_agg jsonb_agg
    json_object_agg jsonb_object_agg json_agg_strict jsonb_agg_strict
    bool_and bool_or every bit_and bit_or bit_xor stddev stddev_pop
    stddev_samp variance var_pop var_samp percentile_cont percentile_disc
    mode corr covar_pop covar_samp regr_avgx regr_avgy regr_count
    regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy xmlagg
    range_agg range_intersect_agg any_value
    row_number rank dense_rank percent_rank cume_dist ntile lag lead
    first_value last_value nth_value
    lower upper initcap length char_length character_length octet_length
    bit_length substr substring position strpos trim btrim ltrim rtrim lpad
    rpad replace concat concat_ws format left right reverse repeat
    split_part string_to_array string_to_table array_to_string
    regexp_replace regexp_match regexp_matches regexp_split_to_array
    regexp_split_to_table regexp_like regexp_count regexp_instr
    regexp_substr translate md5 sha224 sha256 sha384 sha512 encode decode
    quote_ident quote_literal quote_nullable to_hex ascii chr starts_with
    overlay normalize convert_from convert_to to_ascii unistr casefold
    abs ceil ceiling floor round trunc mod power pow sqrt cbrt exp ln log
    log10 sign div pi degrees radians sin cos tan asin acos atan atan2 sind
    cosd tand asind acosd atand atan2d sinh cosh tanh asinh acosh atanh
    cot cotd width_bucket gcd lcm factorial scale min_scale trim_scale
    erf erfc
    now transaction_timestamp statement_timestamp date_trunc date_part
    extract age to_char to_date to_timestamp to_number make_date make_time
    make_timestamp make_timestamptz make_interval justify_days
    justify_hours justify_interval date_bin isfinite timezone date_add
    date_subtract
    json_build_object jsonb_build_object json_build_array jsonb_build_array
    to_json to_jsonb row_to_json array_to_json json_object jsonb_object
    json_array_length jsonb_array_length json_each jsonb_each json_each_text
    jsonb_each_text json_extract_path jsonb_extract_path
    json_extract_path_text jsonb_extract_path_text json_object_keys
    jsonb_object_keys json_populate_record jsonb_populate_record
    json_populate_recordset jsonb_populate_recordset json_array_elements
    jsonb_array_elements json_array_elements_text jsonb_array_elements_text
    json_typeof jsonb_typeof json_to_record jsonb_to_record
    json_to_recordset jsonb_to_recordset json_strip_nulls jsonb_strip_nulls
    jsonb_set jsonb_set_lax jsonb_insert jsonb_pretty jsonb_path_query
    jsonb_path_exists jsonb_path_match jsonb_path_query_array
    jsonb_path_query_first
    array_length array_lower array_upper array_dims array_ndims cardinality
    array_append array_prepend array_cat array_position array_positions
    array_remove array_replace unnest array_fill generate_series
    generate_subscripts trim_array array_reverse array_sort
    current_setting current_database current_schema current_schemas
    version pg_typeof format_type obj_description
    col_description shobj_description pg_encoding_to_char
    pg_postmaster_start_time pg_conf_load_time pg_is_other_temp_schema
    pg_my_temp_schema pg_has_role pg_size_pretty pg_size_bytes
    pg_column_size pg_wal_lsn_diff pg_tablespace_location
    pg_describe_object pg_identify_object pg_identify_object_as_address
    pg_input_is_valid pg_input_error_info pg_client_encoding
    pg_collation_for pg_jit_available pg_trigger_depth
    inet_client_addr inet_client_port inet_server_addr inet_server_port
    num_nonnulls num_nulls pg_column_compression
    to_tsvector to_tsquery plainto_tsquery phraseto_tsquery
    websearch_to_tsquery ts_rank ts_rank_cd ts_headline setweight strip
    tsvector_to_array array_to_tsvector numnode querytree ts_rewrite
    lower_inc upper_inc lower_inf upper_inf isempty range_merge int4range
    int8range numrange tsrange tstzrange daterange int4multirange
    int8multirange nummultirange tsmultirange tstzmultirange
    datemultirange multirange
    get_bit set_bit get_byte set_byte bit_count
    int2 int4 int8 float4 float8 text bool date
    host hostmask masklen netmask network broadcast family inet_merge
    inet_same_family abbrev set_masklen
    xpath xpath_exists xml_is_well_formed
    """.split()
)

#: Name prefixes/suffixes of further STABLE catalog helpers.
_NON_VOLATILE_PREFIXES = ("pg_get_", "has_", "pg_stat_get_")
_NON_VOLATILE_SUFFIXES = ("_is_visible",)

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

# PostgreSQL's parse_bool: what SET transaction_read_only accepts as false.
_FALSE_WORDS = frozenset(["f", "fa", "fal", "fals", "false", "n", "no", "of", "off", "0"])
_TRUE_WORDS = frozenset(["t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"])

_NO_LOAD_BALANCE = "/*NO LOAD BALANCE*/"

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
        raise TypeError("expected a sequence of patterns, not a string (use ClassifierConfig.from_pgpool)")
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
    primary_routing_query_pattern_list: Tuple[str, ...] = attr.ib(default=(), converter=_pattern_tuple)
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
        setattr_(self, "_write_patterns", _compile_list("write_function_list", self.write_function_list, 0))
        setattr_(
            self,
            "_read_only_patterns",
            _compile_list("read_only_function_list", self.read_only_function_list, 0),
        )
        setattr_(
            self,
            "_query_patterns",
            _compile_list(
                "primary_routing_query_pattern_list", self.primary_routing_query_pattern_list, re.IGNORECASE
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
            primary_routing_query_pattern_list=_split_semicolons(primary_routing_query_pattern_list),
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
        DEALLOCATE (not ALL).  PREPARE's own routing is its query's;
        EXECUTE and DEALLOCATE follow the PREPARE, so the router must look
        the name up (they are marked for the primary here).
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


# ---------------------------------------------------------------------------
# The cache key.

# Texts with anything that makes a cheap regular-expression view of the
# literals disagree with the tokenizer -- comments, backslashes (E'' strings,
# standard_conforming_strings), dollar quotes, bit strings (no doubled
# quotes), NUL -- have no shape and are cached by their exact text only.

# What PostgreSQL's scanner takes as part of an identifier.
_IDENT_CHAR = "A-Za-z0-9_$\u0080-\U0010ffff"
_DOLLAR_QUOTE = re.compile(r"\$(?![0-9])")
# A quote right after B or X that does not continue an identifier.
_BIT_STRING_START = re.compile(r"'(?<=[bBxX]')(?<![" + _IDENT_CHAR + r"'][bBxX]')")

# String literals, and decimal numbers that are tokens of their own: only
# whitespace, punctuation or an operator character may come before and after
# a number (not a letter, "_", "$", ".", a quote or any non-ASCII character,
# which PostgreSQL takes as part of an identifier).  A comma-separated run of
# literals (an IN list, a VALUES row, arguments) becomes one marker: no rule
# depends on how many literals such a run has, and every match costs time.
# Likewise a run of quoted identifiers joined by "." or "," is one match,
# kept as it is.
#
# Every pattern starts with one character class and picks its branch with a
# lookbehind: CPython's re module only skips ahead to possible first
# characters when a pattern starts with a literal or a class, which makes
# these patterns several times faster.
_BEFORE_NUMBER = r" \t\n\r\f\v(,=<>+\-*/%\[:;|^!~@#&?"
_AFTER_NUMBER = r" \t\n\r\f\v),;=<>+\-*/%\]:|^!~@#&?"
_SPACE = "[ \t\n\r\f\v]*"
_STRING_REST = r"(?<=')[^']*(?:''[^']*)*'"
_NUMBER_REST = (
    r"(?<=[0-9])(?<![^" + _BEFORE_NUMBER + r"][0-9])[0-9]*(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?(?![^"
    + _AFTER_NUMBER + r"])"
)
_FRACTION_REST = (
    r"(?<=\.)(?<![^" + _BEFORE_NUMBER + r"]\.)[0-9]+(?:[eE][+-]?[0-9]+)?(?![^" + _AFTER_NUMBER + r"])"
)
_ONE_LITERAL = "['0-9.](?:" + _STRING_REST + "|" + _NUMBER_REST + "|" + _FRACTION_REST + ")"
_MORE_LITERALS = "(?:" + _SPACE + "," + _SPACE + _ONE_LITERAL + ")*"
_QUOTED_IDENT_REST = r'(?<=")[^"]*(?:""[^"]*)*"'
_MORE_QUOTED_IDENTS = "(?:" + _SPACE + "[.,]" + _SPACE + '"' + _QUOTED_IDENT_REST + ")*"
_SHAPE_LITERALS = re.compile(_ONE_LITERAL + _MORE_LITERALS)
_SHAPE_LITERALS_AND_IDENTS = re.compile(
    "[\"'0-9.](?:"
    + _QUOTED_IDENT_REST + _MORE_QUOTED_IDENTS
    + "|(?:" + _STRING_REST + "|" + _NUMBER_REST + "|" + _FRACTION_REST + ")" + _MORE_LITERALS
    + ")"
)
_MAX_CACHED_LENGTH = 32768


def _keep_quoted_identifiers(m: "re.Match[str]") -> str:
    text = m.group()
    return text if text[0] == '"' else "\x00"


def statement_shape(sql: str) -> Optional[str]:
    """
    The cache key for texts that differ only in literal values: C{sql} with
    each string and number literal -- or each comma-separated run of them --
    replaced by NUL (which no query text can contain).

    @return: the shape, or None when the text has something a regular
        expression cannot lex reliably (comments, backslashes, dollar
        quotes, bit strings).
    """
    if "--" in sql or "/*" in sql or "\\" in sql or "\x00" in sql:
        return None
    if "$" in sql and _DOLLAR_QUOTE.search(sql) is not None:
        return None
    if "'" in sql and _BIT_STRING_START.search(sql) is not None:
        return None
    if '"' in sql:
        return _SHAPE_LITERALS_AND_IDENTS.sub(_keep_quoted_identifiers, sql)
    return _SHAPE_LITERALS.sub("\x00", sql)


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


def _apply_query_patterns(sql: str, result: Classification, config: ClassifierConfig) -> Classification:
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
        other, _ = _classify_tokens(sql, tokenize(sql, standard_conforming_strings=False, skip_trivia=True), config)
        if not other.is_read_only or other.statements != result.statements:
            result = attr.evolve(result, is_read_only=False, forces_primary_reason=REASON_AMBIGUOUS_BACKSLASH)
        independent = False
    return result, independent


def _has_backslash_standard_string(tokens: Sequence[Token]) -> bool:
    for t in tokens:
        if t.kind == STRING and "\\" in t.text and t.text[0] in "'nN":
            return True
    return False


def _classify_tokens(sql: str, tokens: List[Token], config: ClassifierConfig) -> Tuple[Classification, bool]:
    no_lb = (not config.allow_sql_comments) and sql[:19].upper() == _NO_LOAD_BALANCE
    pieces = split_tokens(tokens)
    if not pieces:
        ok = _first_char_ok(sql, config)
        result = Classification(
            kind="empty",
            is_read_only=ok and not no_lb,
            forces_primary_reason=None if ok and not no_lb else (REASON_NO_LOAD_BALANCE if no_lb else REASON_FIRST_CHAR),
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
            lead_ok = _first_char_ok(sql[previous_end:stmt[0].start + 1], config, part=previous_end > 0)
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


def _unique(names: Iterable[str]) -> Tuple[str, ...]:
    return tuple(dict.fromkeys(names))


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
        touches_temp_table_candidates=_unique(n for p in parts for n in p.touches_temp_table_candidates),
        written_relations=_unique(n for p in parts for n in p.written_relations),
        creates_temp_table=next((p.creates_temp_table for p in parts if p.creates_temp_table), None),
        drops_tables=_unique(n for p in parts for n in p.drops_tables),
        discards_temp_tables=any_("discards_temp_tables"),
        functions=_unique(n for p in parts for n in p.functions),
        unknown_functions=_unique(n for p in parts for n in p.unknown_functions),
        references_system_catalog=any_("references_system_catalog"),
        marks_transaction_writing=any_("marks_transaction_writing"),
        writes=any_("writes"),
    )


# ---------------------------------------------------------------------------
# Scanning one statement: names, calls, clauses.


def _is_word(t: Token) -> bool:
    return t.kind == IDENT or t.kind == KEYWORD


def _is_name(t: Token) -> bool:
    """
    Could this token be (part of) an object name?
    """
    return t.kind == IDENT or t.kind == QUOTED_IDENT or (t.kind == KEYWORD and t.value not in RESERVED_KEYWORDS)


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
    while j + 1 < n and _punct(toks[j], ".") and (_is_word(toks[j + 1]) or toks[j + 1].kind == QUOTED_IDENT):
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
        if value in ("select", "from", "join", "where", "group", "having", "order", "limit", "on", "using",
                     "returning", "set", "values", "window", "offset", "into", "union", "intersect", "except"):
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
            if prev is None or _punct(prev, "(") or (prev.kind == KEYWORD and prev.value in ("truncate", "lock")):
                _relation_list(scan, i + 1, d, False, many=not (prev is None or _punct(prev, "(")), column_list=True)
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
    while i >= 2 and _punct(toks[i - 1], ".") and (_is_word(toks[i - 2]) or toks[i - 2].kind == QUOTED_IDENT):
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
        if prev.kind == KEYWORD and (prev.value in ("as", "tablesample") or prev.value in _NAME_INTRODUCERS):
            return False  # CAST(x AS t(...)), alias column lists, INSERT INTO t (...)
        if name.value in ("stdin", "stdout") and prev.kind == KEYWORD and prev.value in ("from", "to"):
            return False  # COPY t FROM STDIN (FORMAT csv): the options list
        if prev.kind == KEYWORD and prev.value in ("on", "using") and _kw(toks[0], "create") and any(
            _kw(t, "index") for t in toks[1:start]
        ):
            return False  # CREATE INDEX i ON t [USING btree] (a): the indexed columns
        if prev.kind in (IDENT, QUOTED_IDENT) or (prev.kind == PUNCT and prev.text == ")"):
            # FROM f(x) g(a): an alias's column list, not a call.
            if clause[-1] in ("from", "join"):
                return False
    # WITH name (a, b) AS [NOT] [MATERIALIZED] (...): a CTE's column list.
    close = closing.get(i)
    cte_position = start > 0 and (
        _punct(toks[start - 1], ",") or (toks[start - 1].kind == KEYWORD and toks[start - 1].value in ("with", "recursive"))
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


def _relation_list(scan: _Scan, i: int, d: int, written: bool, many: bool, column_list: bool) -> None:
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


def _record_relation(scan: _Scan, name: str, written: bool) -> None:
    scan.relations.append(name)
    if written:
        scan.written.append(name)
    schema, _, relname = name.rpartition(".")
    if scan.catalog is None and (schema.endswith("pg_catalog") or relname.startswith("pg_")):
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
    while i < n and toks[i].kind == KEYWORD and toks[i].value in (
        "temp", "temporary", "unlogged", "table", "global", "local"
    ):
        if toks[i].value in ("temp", "temporary"):
            scan.into_temp = True
        i += 1
    name, _ = _qualified_name(toks, i)
    if name is not None:
        scan.into_target = name
        if name.rpartition(".")[0].startswith("pg_temp"):
            scan.into_temp = True


# ---------------------------------------------------------------------------
# Deciding one statement.


def _matches(patterns: Sequence["re.Pattern[str]"], name: str) -> bool:
    for pattern in patterns:
        if pattern.search(name) is not None:
            return True
    return False


def _is_writing_builtin(name: str) -> bool:
    return name in WRITING_FUNCTIONS or name.startswith(WRITING_FUNCTION_PREFIXES)


def _is_non_volatile_builtin(name: str) -> bool:
    return (
        name in NON_VOLATILE_FUNCTIONS
        or name.startswith(_NON_VOLATILE_PREFIXES)
        or name.endswith(_NON_VOLATILE_SUFFIXES)
    )


def _function_verdict(calls: Sequence[str], config: ClassifierConfig) -> Tuple[Optional[str], List[str]]:
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
#: advances.  (Other functions L{WRITING_FUNCTIONS} sends to the primary
#: only need it, or change nothing a standby would refuse.)
_CHANGING_FUNCTIONS = frozenset(["nextval", "setval"])


def _certainly_writes(kind: str, scan: "_Scan") -> bool:
    """
    L{Classification.writes} for a statement that is not a read: its verb
    changes the database, or it writes a relation (DML, COPY FROM, a
    data-modifying WITH), creates one (SELECT INTO), locks rows, or calls a
    function that writes.
    """
    if kind in _CHANGING_VERBS or scan.written or scan.into or scan.locking or \
            scan.dml_verb is not None:
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

    def build(self, is_read_only: bool, reason: Optional[str], marks_writing: bool, **more: Any) -> Classification:
        scan = self.scan
        kwargs = self.kwargs
        kwargs.update(more)
        if not is_read_only and "writes" not in kwargs and not kwargs.get("to_all_session_nodes"):
            kwargs["writes"] = _certainly_writes(kwargs["kind"], scan)
        kwargs.setdefault("touches_temp_table_candidates", _unique(scan.relations))
        kwargs.setdefault("written_relations", _unique(scan.written))
        kwargs.setdefault("functions", _unique(scan.calls))
        kwargs.setdefault("unknown_functions", _unique(self.unknown))
        kwargs.setdefault("references_system_catalog", scan.catalog is not None or scan.regclass)
        if scan.into_temp and scan.into_target is not None:
            kwargs.setdefault("creates_temp_table", scan.into_target.rpartition(".")[2])
        return Classification(
            is_read_only=is_read_only,
            forces_primary_reason=None if is_read_only else reason,
            marks_transaction_writing=marks_writing,
            **kwargs,
        )


def _select_reason(scan: _Scan, facts: _Facts, config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[
    Optional[str], bool
]:
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
    if config._write_patterns and any(_matches(config._write_patterns, name) for name in scan.calls):
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


def _analyse(toks: List[Token], config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[Classification, bool]:
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
    while i < n and toks[i].kind == KEYWORD and toks[i].value in (
        "or", "replace", "global", "local", "temp", "temporary", "unlogged", "recursive"
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
        if i + 2 < n and toks[i].kind in (IDENT, KEYWORD) and toks[i].value == "pg_catalog" \
                and _punct(toks[i + 1], "."):
            i += 2
        if not (i + 7 < n and toks[i].kind in (IDENT, KEYWORD) and toks[i].value == "set_config"
                and _punct(toks[i + 1], "(") and toks[i + 2].kind == STRING
                and _punct(toks[i + 3], ",") and toks[i + 4].kind == STRING
                and _punct(toks[i + 5], ",") and toks[i + 6].kind == KEYWORD
                and toks[i + 6].value in ("true", "false") and _punct(toks[i + 7], ")")):
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


def _handle_select(verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[
    Classification, bool
]:
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


def _handle_with(verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[
    Classification, bool
]:
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


def _handle_show(verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[
    Classification, bool
]:
    toks = scan.tokens
    if len(toks) > 1 and toks[1].kind in (IDENT, KEYWORD) and toks[1].value in _PRIMARY_SETTINGS:
        return _Facts("show", scan).build(
            False, f"SHOW {toks[1].value}: a standby's answer is its own", False), True
    return _Facts("show", scan).build(True, None, False), True


def _handle_explain(verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[
    Classification, bool
]:
    toks = scan.tokens
    n = len(toks)
    i = 1
    analyze = False
    if i < n and _punct(toks[i], "("):
        close = scan.closing.get(i, n - 1)
        for t in toks[i + 1:close]:
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


def _handle_copy(verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[
    Classification, bool
]:
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
            inner, _ = _analyse(toks[i + 1:close], config, None)
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
                False, f"COPY ({inner.kind.upper()}) TO runs a write", True, writes=inner.writes, **more
            ), True
        if not inner.is_read_only:
            return facts.build(False, inner.forces_primary_reason, True, writes=inner.writes, **more), True
        return facts.build(True, None, False, **more), True
    if scan.catalog is not None:
        return facts.build(False, f"system catalog {scan.catalog}", False), True
    return facts.build(True, None, False), True


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


def _handle_begin(verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[
    Classification, bool
]:
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


def _handle_commit(verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[
    Classification, bool
]:
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


def _handle_rollback(verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[
    Classification, bool
]:
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


def _handle_savepoint(verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[
    Classification, bool
]:
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


def _handle_set(verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[
    Classification, bool
]:
    toks = scan.tokens
    n = len(toks)
    facts = _Facts("set", scan)
    i = 1
    # SET CONSTRAINTS is not a session variable; Pgpool-II sends it to the
    # primary with everything else it does not list.
    if i < n and _kw(toks[i], "constraints"):
        return facts.build(False, "SET CONSTRAINTS goes to the primary (as in Pgpool-II)", True), True
    if i < n and toks[i].kind == KEYWORD and toks[i].value in ("session", "local"):
        if not (i + 1 < n and toks[i + 1].kind == KEYWORD and toks[i + 1].value in ("characteristics", "authorization")):
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
    if name is None or j >= n or not (_kw(toks[j], "to") or (toks[j].kind == OPERATOR and toks[j].text == "=")):
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


def _handle_reset(verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[
    Classification, bool
]:
    toks = scan.tokens
    more: Dict[str, Any] = {}
    if verb == "discard" and len(toks) > 1 and toks[1].kind == KEYWORD:
        more["discards_temp_tables"] = toks[1].value in ("all", "temp", "temporary")
    return _Facts(verb, scan).build(False, None, True, to_all_session_nodes=True, is_session_state=True, **more), True


def _handle_prepare(verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[
    Classification, bool
]:
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
    inner, independent = _analyse(toks[i + 1:], config, None)
    return attr.evolve(inner, kind="prepare", prepared_name=name, marks_transaction_writing=True), independent


def _handle_execute(verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[
    Classification, bool
]:
    toks = scan.tokens
    name = toks[1].value if len(toks) > 1 and _is_name(toks[1]) else None
    facts = _Facts("execute", scan)
    # The name's own "(" looked like a call to the scan.
    if name is not None and scan.calls and scan.calls[0] == name:
        del scan.calls[0]
    reason = f"EXECUTE routes like PREPARE {name} (the primary if that is unknown)"
    return facts.build(False, reason, True, prepared_name=name), True


def _handle_deallocate(verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[
    Classification, bool
]:
    toks = scan.tokens
    n = len(toks)
    i = 1
    if i < n and _kw(toks[i], "prepare"):
        i += 1
    facts = _Facts("deallocate", scan)
    if i < n and _kw(toks[i], "all"):
        return facts.build(False, None, True, to_all_session_nodes=True, is_session_state=True), True
    name = toks[i].value if i < n and _is_name(toks[i]) else None
    reason = f"DEALLOCATE routes like PREPARE {name} (the primary if that is unknown)"
    return facts.build(False, reason, True, prepared_name=name), True


def _handle_lock(verb: str, scan: _Scan, config: ClassifierConfig, lead_ok: Optional[bool]) -> Tuple[
    Classification, bool
]:
    toks = scan.tokens
    for name in _name_list(toks, 1, skip=("table", "only")):
        _record_relation(scan, name, False)
    level = _LOCK_MODES["access exclusive"]
    for i, t in enumerate(toks):
        if _kw(t, "in"):
            words = []
            for u in toks[i + 1:]:
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
            if len(part) > 4 and words[3] == "rename" and part[2].kind in (IDENT, QUOTED_IDENT, KEYWORD):
                names.append(part[2].value)
        elif words[0] == "create":
            for i, word in enumerate(words):
                if word == "template":
                    j = i + 2 if i + 1 < len(part) and part[i + 1].text == "=" else i + 1
                    if j < len(part) and part[j].kind in (IDENT, QUOTED_IDENT, KEYWORD):
                        names.append(part[j].value)
    return tuple(names)
