"""
Pgpool-II's own C{pgpool.conf}: its syntax, and every parameter name of
Pgpool-II 4.1 to 4.6 with what twisted_pgpool makes of it.

A user who runs C{twistd pgpool -c /etc/pgpool2/pgpool.conf} should get the
proxy running with the settings that mean something here, and one warning
per line that does not, all at once, instead of one refusal per start.  This
module does the reading; L{twisted_pgpool.config} turns the result into the
configuration model exactly as it does a C{conf.yaml}.  It is plain
computation: no Twisted, no files.

The syntax is the one of Pgpool-II's flex scanner (C{src/config/pool_config.l},
the same in 4.2 to 4.6; 4.1 had no units after numbers):

  - C{name = value}, one per line; the C{=} may be left out;
  - C{#} starts a comment, outside quotes;
  - a value is C{'quoted'} (anything but a newline; a backslash and the
    character after it, a quote included, do not end the string, and are
    kept in the value as written, since Pgpool-II does not unescape), or an
    unquoted word (C{on}, C{host.example.com}, C{ALLOW_TO_FAILOVER}), a
    number with an optional unit (C{9999}, C{-1}, C{0x1F}, C{10s},
    C{64MB}), a decimal (C{1.5}), or one other character (C{*});
  - nothing after C{=} is read as an empty value.

Stricter than Pgpool-II where it would silently misread a file: anything
after the value but a comment is an error (Pgpool-II reads
C{logdir = /var/log} as C{logdir = '/'} followed by settings C{var} and
C{log}), as is C{''}
inside a quoted value (PostgreSQL's escape, a syntax error in Pgpool-II) and
C{include} (Pgpool-II 4.3's directive, not supported here).  A parameter
given twice takes its last value, as in Pgpool-II, with a warning at the line
that does not count.

Parameter names are sorted out by L{sort_out}, for a C{pgpool.conf} and a
C{conf.yaml} alike: a name this proxy implements is kept; Pgpool-II's older
names are renamed (C{black_function_list} is C{write_function_list});
a Pgpool-II parameter that does not apply here (watchdog, relation cache,
log collector...) is dropped with a L{Note} saying what to
use instead or why it is not needed; any other name is left for the loader,
which refuses it as unknown.
"""

from __future__ import annotations

import json
import re
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import attrs

__all__ = [
    "Comment",
    "Entry",
    "Note",
    "PGPOOL_II_PARAMETERS",
    "PgpoolConfError",
    "looks_like_pgpool_conf",
    "parse",
    "read",
    "sort_out",
    "to_yaml",
]


class PgpoolConfError(Exception):
    """
    The file cannot be read as a C{pgpool.conf}; the loader adds the file.

    @ivar reason: What is wrong, for the user.
    @ivar line: 1-based line.
    @ivar key: The parameter of that line, when there is one.
    """

    def __init__(self, reason: str, line: int, key: Optional[str] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.key = key


@attrs.frozen
class Entry:
    """
    One C{name = value} line.

    @ivar value: The value as Pgpool-II reads it: without the quotes of a
        quoted value, anything else as written.
    @ivar quoted: Whether the value was written in quotes.
    @ivar comment: The comment after the value, from its C{#}, or C{""}.
    @ivar text: The whole line as written, for C{convert}.
    """

    key: str
    value: str
    line: int
    quoted: bool = False
    comment: str = ""
    text: str = ""


@attrs.frozen
class Comment:
    """
    A line without a setting: blank (C{text} is C{""}) or only a comment
    (C{text} is the line as written, indentation included).
    """

    line: int
    text: str


@attrs.frozen
class Note:
    """
    A warning about one setting, produced while sorting names out.

    @ivar line: Line of the setting, when known.
    @ivar key: The name as written.
    @ivar message: What happened and what to do, for the user.
    @ivar used_as: The name the value is used under (the same, or the new
        name of a renamed parameter), or L{None} when it is not used.
    """

    line: Optional[int]
    key: str
    message: str
    used_as: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


# ---------------------------------------------------------------------------
# The scanner: Pgpool-II's token rules, applied one line at a time.

# In C{pool_config.l}: LETTER is [A-Za-z_\200-\377], every byte of a
# non-ASCII character in UTF-8, so here any non-ASCII character.
_LETTER = r"A-Za-z_\u0080-\U0010ffff"
_KEY = re.compile(rf"[{_LETTER}][{_LETTER}0-9]*")
_UNQUOTED_STRING = re.compile(rf"[{_LETTER}][{_LETTER}0-9\-._:/]*")
_INTEGERS = (
    re.compile(r"[-+]?0x[0-9a-fA-F]+[A-Za-z]*"),
    re.compile(r"[-+]?[0-9]+[A-Za-z]*"),
)
_REAL = re.compile(r"[-+]?[0-9]*\.[0-9]*(?:[Ee][-+]?[0-9]+)?")
_YAML_LIKE = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*:(\s|$)")


def _skip_space(text: str, position: int) -> int:
    """
    The position after the white space (flex's C{[ \\t\\r]+}) at C{position}.
    """
    while position < len(text) and text[position] in " \t\r":
        position += 1
    return position


def _quoted_end(line: str, start: int) -> Optional[int]:
    """
    The end (after the closing quote) of the quoted string opening at
    C{start}, as flex finds it: the longest match of
    C{'([^'\\n]|\\\\.)*'}.  A quote right after a backslash may close the
    string or belong to it; the first quote without a backslash before it
    must close it.  So the longest match ends at that quote, or, when there
    is none, at the last quote on the line.
    """
    last = None
    position = start + 1
    while position < len(line):
        char = line[position]
        if char == "'":
            if line[position - 1] != "\\" or position - 1 == start:
                return position + 1
            last = position + 1
        position += 1
    return last


def _unquoted_end(line: str, start: int) -> int:
    """
    The end of the unquoted value at C{start}: the longest token of flex's
    rules, or the one character no rule matches (which Pgpool-II takes as
    the value, so that C{listen_addresses = *} works).
    """
    patterns = (_UNQUOTED_STRING,) + _INTEGERS + (_REAL,)
    ends = [m.end() for m in (p.match(line, start) for p in patterns) if m]
    return max(ends) if ends else start + 1


def _parse_line(text: str, number: int) -> Union[Entry, Comment]:
    position = _skip_space(text, 0)
    if position == len(text) or text[position] == "#":
        return Comment(number, text if position < len(text) else "")
    key_match = _KEY.match(text, position)
    if key_match is None:
        raise PgpoolConfError("expected a parameter name: write name = value", number)
    key = key_match.group()
    word = _UNQUOTED_STRING.match(text, position)
    if word is not None and word.end() > key_match.end():
        hint = (
            "this looks like YAML: write name = value, or give the file a .yaml name"
            if _YAML_LIKE.match(text)
            else "write name = value"
        )
        raise PgpoolConfError(f"expected a parameter name; {hint}", number)
    position = _skip_space(text, key_match.end())
    equals = position < len(text) and text[position] == "="
    if equals:
        position = _skip_space(text, position + 1)
    comment = ""
    quoted = False
    if position == len(text) or text[position] == "#":
        if not equals:
            raise PgpoolConfError("expected '=' and a value", number, key)
        value = ""
        end = position
    elif text[position] == "'":
        found = _quoted_end(text, position)
        if found is None:
            raise PgpoolConfError(
                "the quoted value has no closing quote on this line "
                "(a quote inside a value is written \\')",
                number,
                key,
            )
        end = found
        value = text[position + 1 : end - 1]
        quoted = True
    else:
        end = _unquoted_end(text, position)
        value = text[position:end]
    after = _skip_space(text, end)
    if after < len(text):
        if text[after] == "#":
            comment = text[after:]
        elif quoted and after == end and text[after] == "'":
            raise PgpoolConfError(
                "'' inside a quoted value is not read by Pgpool-II: write "
                "the quote as \\' (Pgpool-II keeps the backslash)",
                number,
                key,
            )
        else:
            what = "after the closing quote" if quoted else "in the value"
            raise PgpoolConfError(
                f"unexpected text {what}; put the whole value in single "
                "quotes, and a comment after a #",
                number,
                key,
            )
    return Entry(key, value, number, quoted, comment, text)


def parse(text: str) -> List[Union[Entry, Comment]]:
    """
    Read a C{pgpool.conf} line by line.

    @return: One L{Entry} or L{Comment} per line, in order.
    @raise PgpoolConfError: At the first line that is not valid.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    # Flex reads a carriage return as white space: a CRLF file is fine.
    return [
        _parse_line(line[:-1] if line.endswith("\r") else line, number)
        for number, line in enumerate(lines, 1)
    ]


def looks_like_pgpool_conf(text: str) -> bool:
    """
    Whether a file of unknown type is a C{pgpool.conf}: its first line that
    is neither blank nor a comment is C{name = value}, which YAML would not
    read as a mapping.
    """
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        return re.match(r"[A-Za-z_][A-Za-z0-9_]*\s*=", stripped) is not None
    return False


# ---------------------------------------------------------------------------
# Pgpool-II's parameters.

#: Every parameter name of Pgpool-II 4.1 to 4.6 with the first and last of
#: those versions that has it; taken from C{src/config/pool_config_variables.c}
#: of each C{V4_x_STABLE} branch (the entries of its C{ConfigureNames*}
#: tables, groups left out).
PGPOOL_II_PARAMETERS: Mapping[str, Tuple[str, str]] = {
    name: (first, last)
    for names, first, last in (
        (
            """allow_clear_text_frontend_auth allow_multiple_failover_requests_from_node
            allow_sql_comments app_name_redirect_preference_list arping_cmd
            arping_path authentication_timeout auto_failback auto_failback_interval
            backend_application_name backend_data_directory backend_flag
            backend_hostname backend_port backend_weight check_temp_table
            check_unlogged_table child_life_time child_max_connections
            clear_memqcache_on_escalation client_idle_limit
            client_idle_limit_in_recovery client_min_messages connect_timeout
            connection_cache connection_life_time database_redirect_preference_list
            delay_threshold delegate_IP detach_false_primary
            disable_load_balance_on_write enable_consensus_with_half_votes
            enable_pool_hba enable_shared_relcache fail_over_on_backend_error
            failback_command failover_command failover_if_affected_tuples_mismatch
            failover_on_backend_error failover_require_consensus
            failover_when_quorum_exists health_check_database
            health_check_max_retries health_check_password health_check_period
            health_check_retry_delay health_check_test health_check_timeout
            health_check_user heartbeat_device if_cmd_path if_down_cmd if_up_cmd
            ignore_leading_white_space insert_lock listen_addresses
            listen_backlog_multiplier load_balance_mode lobj_lock_table
            log_client_messages log_connections log_destination
            log_error_verbosity log_hostname log_line_prefix log_min_messages
            log_per_node_statement log_standby_delay log_statement logdir max_pool
            memory_cache_enabled memqcache_auto_cache_invalidation
            memqcache_cache_block_size memqcache_expire memqcache_max_num_cache
            memqcache_maxcache memqcache_memcached_host memqcache_memcached_port
            memqcache_method memqcache_oiddir memqcache_total_size
            notice_per_node_statement num_init_children pcp_listen_addresses
            pcp_port pcp_socket_dir pid_file_name ping_path pool_passwd port
            recovery_1st_stage_command recovery_2nd_stage_command
            recovery_password recovery_timeout recovery_user relcache_expire
            relcache_query_target relcache_size replicate_select replication_mode
            replication_stop_on_mismatch reserved_connections reset_query_list
            search_primary_node_timeout serialize_accept sr_check_database
            sr_check_password sr_check_period sr_check_user ssl ssl_ca_cert
            ssl_ca_cert_dir ssl_cert ssl_ciphers ssl_dh_params_file ssl_ecdh_curve
            ssl_key ssl_prefer_server_ciphers statement_level_load_balance
            syslog_facility syslog_ident trusted_servers use_watchdog wd_authkey
            wd_de_escalation_command wd_escalation_command wd_heartbeat_deadtime
            wd_heartbeat_keepalive wd_interval wd_ipc_socket_dir wd_life_point
            wd_lifecheck_dbname wd_lifecheck_method wd_lifecheck_password
            wd_lifecheck_query wd_lifecheck_user wd_monitoring_interfaces_list
            wd_port wd_priority""",
            "4.1",
            "4.6",
        ),
        (
            """black_function_list black_memqcache_table_list black_query_pattern_list
            follow_master_command heartbeat_destination heartbeat_destination_port
            master_slave_mode master_slave_sub_mode other_pgpool_hostname
            other_pgpool_port other_wd_port wd_heartbeat_port wd_hostname
            white_function_list white_memqcache_table_list""",
            "4.1",
            "4.1",
        ),
        ("socket_dir", "4.1", "4.3"),
        (
            """backend_clustering_mode cache_safe_memqcache_table_list
            cache_unsafe_memqcache_table_list dml_adaptive_object_relationship_list
            follow_primary_command heartbeat_hostname heartbeat_port hostname
            log_directory log_disconnections log_file_mode log_filename
            log_rotation_age log_rotation_size log_truncate_on_rotation
            logging_collector pgpool_port primary_routing_query_pattern_list
            read_only_function_list ssl_crl_file ssl_passphrase_command
            write_function_list""",
            "4.2",
            "4.6",
        ),
        (
            """failover_on_backend_shutdown prefer_lower_delay_standby
            wd_lost_node_removal_timeout wd_no_show_node_removal_timeout
            wd_remove_shutdown_nodes""",
            "4.3",
            "4.6",
        ),
        (
            """delay_threshold_by_time delegate_ip max_spare_children
            min_spare_children process_management_mode
            process_management_strategy trusted_server_command
            unix_socket_directories unix_socket_group unix_socket_permissions""",
            "4.4",
            "4.6",
        ),
        ("log_pcp_processes user_redirect_preference_list", "4.5", "4.6"),
        ("log_backend_messages", "4.6", "4.6"),
    )
    for name in names.split()
}

#: The parameters written with a node (or watchdog node) number at the end,
#: C{backend_hostname0}; Pgpool-II also reads some of them without one.
_ARRAYS = frozenset(
    """
    backend_application_name backend_data_directory backend_flag backend_hostname
    backend_port backend_weight connect_timeout health_check_database
    health_check_max_retries health_check_password health_check_period
    health_check_retry_delay health_check_timeout health_check_user
    heartbeat_destination heartbeat_destination_port heartbeat_device
    heartbeat_hostname heartbeat_port hostname other_pgpool_hostname
    other_pgpool_port other_wd_port pgpool_port wd_port""".split()
)

#: Numbered parameters that become settings of backend N.
_PER_BACKEND = frozenset(
    """
    backend_application_name backend_data_directory backend_flag backend_hostname
    backend_port backend_weight health_check_max_retries health_check_period
    health_check_retry_delay health_check_timeout""".split()
)

#: Health check parameters with a global value only here.
_GLOBAL_ONLY = frozenset(
    "connect_timeout health_check_database health_check_password health_check_user".split()
)

#: Old names, read under the new one.
_RENAMED: Mapping[str, Tuple[str, str]] = {
    "black_function_list": ("write_function_list", "4.2"),
    "white_function_list": ("read_only_function_list", "4.2"),
    "black_query_pattern_list": ("primary_routing_query_pattern_list", "4.2"),
    "black_memqcache_table_list": ("cache_unsafe_memqcache_table_list", "4.2"),
    "white_memqcache_table_list": ("cache_safe_memqcache_table_list", "4.2"),
    "follow_master_command": ("follow_primary_command", "4.2"),
    "fail_over_on_backend_error": ("failover_on_backend_error", "4.0"),
}

_WATCHDOG = (
    "not supported: there is no watchdog; run one proxy, or move a "
    "virtual IP between proxies with keepalived or your orchestrator"
)
_LOG_FILE = (
    "not needed: twistd writes the log; use twistd --logfile=FILE "
    "(rotated at 1 MB, by SIGUSR1 or by twisted-pgpool log-rotate)"
)
_ONE_PROCESS = (
    "not needed: one event-driven process serves every client; "
    "num_init_children limits the sessions served at once"
)
_UNIX_SOCKET = "not supported: clients connect over TCP only (listen_addresses and port)"

#: Why each Pgpool-II parameter without a setting here is not needed, or
#: what to use instead.
_NOT_USED: Mapping[str, str] = {
    **{
        name: _WATCHDOG
        for name in """
        use_watchdog trusted_servers trusted_server_command ping_path hostname
        wd_port pgpool_port wd_priority wd_authkey wd_ipc_socket_dir delegate_IP
        delegate_ip if_cmd_path if_up_cmd if_down_cmd arping_path arping_cmd
        clear_memqcache_on_escalation wd_escalation_command
        wd_de_escalation_command failover_when_quorum_exists
        failover_require_consensus allow_multiple_failover_requests_from_node
        enable_consensus_with_half_votes wd_remove_shutdown_nodes
        wd_lost_node_removal_timeout wd_no_show_node_removal_timeout
        wd_monitoring_interfaces_list wd_lifecheck_method wd_interval
        heartbeat_hostname heartbeat_port heartbeat_device heartbeat_destination
        heartbeat_destination_port wd_heartbeat_keepalive wd_heartbeat_deadtime
        wd_heartbeat_port wd_hostname other_pgpool_hostname other_pgpool_port
        other_wd_port wd_life_point wd_lifecheck_query wd_lifecheck_dbname
        wd_lifecheck_user wd_lifecheck_password""".split()
    },
    **{
        name: _LOG_FILE
        for name in """
        logging_collector log_directory log_filename log_file_mode
        log_truncate_on_rotation log_rotation_age log_rotation_size""".split()
    },
    **{
        name: _ONE_PROCESS
        for name in """
        serialize_accept process_management_mode process_management_strategy
        min_spare_children max_spare_children""".split()
    },
    "enable_shared_relcache": (
        "not needed: one process serves every session, so the relation cache is shared already"
    ),
    "relcache_query_target": (
        "not needed: catalog lookups always run on the primary, on the session's own connection"
    ),
    **{
        name: _UNIX_SOCKET
        for name in """
        socket_dir unix_socket_directories unix_socket_group
        unix_socket_permissions""".split()
    },
    "pid_file_name": "not needed: use twistd --pidfile=FILE",
    "log_line_prefix": (
        "not supported: log lines have twistd's prefix "
        "(time and source); choose another with twistd --logger"
    ),
    "log_error_verbosity": "not supported: log messages have one level of detail",
    "client_min_messages": (
        "not supported: the messages clients receive are not filtered by level"
    ),
    "log_hostname": (
        "not supported: log_connections logs client IP addresses, without a reverse lookup"
    ),
    "log_client_messages": "not supported: use log_statement",
    "log_backend_messages": "not supported: use log_per_node_statement",
    "notice_per_node_statement": "not supported: use log_per_node_statement",
    "log_pcp_processes": (
        "not needed: PCP requests are served inside the proxy process, no process is forked"
    ),
    "check_temp_table": (
        "not needed: the temporary tables a session creates "
        "are tracked from its statements (as with 'trace')"
    ),
    "memqcache_oiddir": (
        "not needed: the query cache keeps its table-to-entry map in memory (shmem) or in memcached"
    ),
    "memqcache_cache_block_size": (
        "not needed: the in-process cache is bounded "
        "by memqcache_total_size and "
        "memqcache_max_num_cache, without blocks"
    ),
    "lobj_lock_table": (
        "not supported: creating large objects is not serialised in native replication mode"
    ),
    "health_check_test": "not needed: a Pgpool-II developer's test switch",
    "ssl_passphrase_command": ("not supported: ssl_key must be a key without a passphrase"),
}

_NUMBERED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*?)([0-9]+)\Z")
_BACKEND_NUMBER = re.compile(r"backend_[a-z_]+?([0-9]+)\Z")


def _numbered(key: str) -> Optional[Tuple[str, int]]:
    """
    C{(name, number)} for a Pgpool-II array parameter written with its
    number, such as C{('wd_port', 1)} for C{wd_port1}.
    """
    match = _NUMBERED.match(key)
    if match is None or match.group(1) not in _ARRAYS:
        return None
    return match.group(1), int(match.group(2))


# ---------------------------------------------------------------------------
# Sorting the names out.

_Setting = Tuple[str, Any, Optional[int]]


def sort_out(
    settings: Sequence[_Setting], ours: Collection[str]
) -> Tuple[Dict[str, Tuple[Any, Optional[int]]], List[Note]]:
    """
    Decide what each setting of a file is, as described in the module's
    docstring.

    @param settings: C{(name, value, line)} in the order of the file, each
        name once.  An old name and its new one may both be there; then the
        later line counts.
    @param ours: The top-level setting names of this proxy.
    @return: The settings to load, by name, with their values and lines
        (numbered backend keys and unknown names included, for the loader to
        check), and the notes about the others, in the order of the file.
    """
    defined = set()
    # A conf.yaml's backends list: its numbers are not known here, and
    # numbered keys next to it are the loader's error to report.
    listed = any(key == "backends" for key, _, _ in settings)
    for key, _, _ in settings:
        match = _BACKEND_NUMBER.match(key) if isinstance(key, str) else None
        if match is not None:
            defined.add(int(match.group(1)))
    kept: Dict[str, Tuple[Any, Optional[int]]] = {}
    # The name each kept setting was written under, and its line.
    written: Dict[str, Tuple[str, Optional[int]]] = {}
    notes: List[Note] = []

    def keep(name: str, key: str, value: Any, line: Optional[int]) -> None:
        if name in kept:
            earlier_key, earlier_line = written[name]
            notes.append(
                Note(
                    earlier_line,
                    earlier_key,
                    f"set again{_on_line(line)}; that value is used, as in Pgpool-II",
                )
            )
        kept[name] = (value, line)
        written[name] = (key, line)

    for key, value, line in settings:
        if not isinstance(key, str) or key in ours:
            keep(key, key, value, line)
            continue
        if key in _RENAMED:
            new, version = _RENAMED[key]
            notes.append(
                Note(line, key, f"the name before Pgpool-II {version} of {new}; read as {new}", new)
            )
            keep(new, key, value, line)
            continue
        numbered = _numbered(key)
        if numbered is not None:
            name, number = numbered
            if name in _PER_BACKEND or name in _GLOBAL_ONLY:
                if number not in defined and not listed:
                    notes.append(
                        Note(
                            line,
                            key,
                            f"ignored: there is no backend {number} (no backend_hostname{number})",
                        )
                    )
                elif name in _GLOBAL_ONLY:
                    notes.append(
                        Note(line, key, f"not supported for one node: every node uses {name}")
                    )
                else:
                    keep(key, key, value, line)
                continue
            notes.append(Note(line, key, _NOT_USED[name]))
            continue
        if key in _NOT_USED:
            notes.append(Note(line, key, _NOT_USED[key]))
            continue
        keep(key, key, value, line)
    return kept, notes


def _on_line(line: Optional[int]) -> str:
    return f" on line {line}" if line is not None else " later"


def read(text: str) -> Tuple[List[Union[Entry, Comment]], List[Tuple[str, str, int]], List[Note]]:
    """
    Read a C{pgpool.conf} as Pgpool-II would, before names are sorted out.

    @return: The lines (for C{convert}); the settings as C{(name, value,
        line)}, each name once (the last time it is set counts, as in
        Pgpool-II); and notes on the lines that do not count, and on what
        Pgpool-II would read differently: a backend with a host name but no
        C{backend_portN}, which Pgpool-II leaves unused and this proxy uses
        with port 5432.
    @raise PgpoolConfError: For a line that is not valid, and for
        C{include}.
    """
    lines = parse(text)
    entries = [line for line in lines if isinstance(line, Entry)]
    for entry in entries:
        if entry.key == "include":
            raise PgpoolConfError(
                "include is not supported: copy the settings of the included file into this one",
                entry.line,
                entry.key,
            )
    notes = []
    last = {entry.key: entry for entry in entries}
    for entry in entries:
        if last[entry.key] is not entry:
            notes.append(
                Note(
                    entry.line,
                    entry.key,
                    f"set again on line {last[entry.key].line}; that value is used, "
                    "as in Pgpool-II",
                )
            )
    entries = [entry for entry in entries if last[entry.key] is entry]
    ports = {entry.key for entry in entries if entry.key.startswith("backend_port")}
    for entry in entries:
        numbered = _numbered(entry.key)
        if (
            numbered is not None
            and numbered[0] == "backend_hostname"
            and f"backend_port{numbered[1]}" not in ports
        ):
            notes.append(
                Note(
                    entry.line,
                    entry.key,
                    f"backend_port{numbered[1]} is not set: Pgpool-II would leave "
                    "this node unused; it is used here with port 5432",
                    entry.key,
                )
            )
    settings = [(entry.key, entry.value, entry.line) for entry in entries]
    return lines, settings, notes


# ---------------------------------------------------------------------------
# Writing the YAML form (twisted-pgpool convert).


def _yaml_quoted(text: str) -> str:
    """
    C{text} as a quoted YAML scalar: single quotes when every character may
    appear in one, else JSON's double-quoted form (also valid YAML).
    """
    if all(char == "\t" or char.isprintable() for char in text):
        return "'" + text.replace("'", "''") + "'"
    return json.dumps(text)


def _yaml_comment(text: str) -> str:
    """
    A comment line for YAML: leading tabs (an error there) become spaces.
    """
    stripped = text.lstrip(" \t")
    indent = text[: len(text) - len(stripped)].expandtabs(8)
    return indent + stripped


def to_yaml(
    lines: Sequence[Union[Entry, Comment]],
    notes: Sequence[Note],
    plain_is_same: Callable[[str, str], bool],
    source: str,
) -> str:
    """
    The C{conf.yaml} form of a C{pgpool.conf}, line for line with its
    comments: each setting becomes C{name: value}, a setting that is not
    used is kept as a comment with the reason, a renamed one is written
    under its new name.

    @param lines: From L{read}.
    @param notes: From L{read} and L{sort_out}.
    @param plain_is_same: Whether a value may be written without quotes for
        a setting (YAML would read C{on} as a boolean, C{9999} as a number:
        fine for some settings, not for others).
    @param source: Named in the first line.
    """
    by_line: Dict[Optional[int], List[Note]] = {}
    for note in notes:
        by_line.setdefault(note.line, []).append(note)
    out = [f"# Converted from {source} by twisted-pgpool convert.", ""]
    for line in lines:
        if isinstance(line, Comment):
            out.append(_yaml_comment(line.text))
            continue
        line_notes = by_line.get(line.line, [])
        for note in line_notes:
            out.append(f"# twisted-pgpool: {note.key}: {note.message}")
        names = [note.used_as for note in line_notes]
        if any(name is None for name in names):
            out.append("# " + line.text.strip())
            continue
        name = next((n for n in names if n is not None), line.key)
        if not plain_is_same(name, line.value):
            value = _yaml_quoted(line.value)
        else:
            value = line.value
        comment = f"  {line.comment}" if line.comment else ""
        out.append(f"{name}: {value}{comment}")
    return "\n".join(out) + "\n"
