"""
What the classifier knows about PostgreSQL's own functions: which write
(or need the primary), which are volatile but harmless on a standby, and
which are stable or immutable.  Pgpool-II asks the primary's C{pg_proc};
the classifier cannot query, so it carries the answer.  Pure data and two
predicates.
"""

from __future__ import annotations

from typing import FrozenSet, Tuple

__all__ = [
    "NON_VOLATILE_FUNCTIONS",
    "VOLATILE_FUNCTIONS",
    "WRITING_FUNCTIONS",
    "WRITING_FUNCTION_PREFIXES",
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


def _is_writing_builtin(name: str) -> bool:
    return name in WRITING_FUNCTIONS or name.startswith(WRITING_FUNCTION_PREFIXES)


def _is_non_volatile_builtin(name: str) -> bool:
    return (
        name in NON_VOLATILE_FUNCTIONS
        or name.startswith(_NON_VOLATILE_PREFIXES)
        or name.endswith(_NON_VOLATILE_SUFFIXES)
    )
