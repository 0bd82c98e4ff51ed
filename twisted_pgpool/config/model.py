"""
The model: L{PgpoolConfig}, the whole configuration, and L{BackendConfig},
one server behind the proxy; frozen attrs classes whose fields are the
settings (L{twisted_pgpool.config.fields}).
"""

from __future__ import annotations

from typing import Any, Callable, FrozenSet, Optional, Sequence, Tuple

import attrs

from twisted_pgpool.config.fields import RELOAD, START, _kind, _Nested, _secret_setting
from twisted_pgpool.config.kinds import (
    _FLAG_ALIASES,
    _AddressList,
    _Boolean,
    _Choice,
    _ChoiceSet,
    _Context,
    _Duration,
    _FailoverFlags,
    _Integer,
    _Number,
    _Optional,
    _Path,
    _Size,
    _Text,
    _TextList,
    _Where,
)

_PORT = _Integer(1, 65535)


@attrs.frozen
class BackendConfig:
    """
    One PostgreSQL server behind the proxy (Pgpool-II's C{backend_*N}).

    The position in L{PgpoolConfig.backends} is the node id.

    @ivar flag: Canonical C{|}-joined failover flags, e.g.
        C{ALLOW_TO_FAILOVER|ALWAYS_PRIMARY}; use the properties to ask.
    """

    hostname: str = attrs.field(
        metadata=_kind(
            _Text(
                allow_empty=False,
                what="a host name, IP address or Unix socket directory",
            ),
            START,
        )
    )
    port: int = attrs.field(default=5432, metadata=_kind(_PORT, START))
    weight: float = attrs.field(default=1.0, metadata=_kind(_Number(0.0), RELOAD))
    flag: str = attrs.field(default="ALLOW_TO_FAILOVER", metadata=_kind(_FailoverFlags(), RELOAD))
    data_directory: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    application_name: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    # Per-node health check overrides (Pgpool-II's health_check_periodN...);
    # None means the global setting.
    health_check_period: Optional[float] = attrs.field(
        default=None, metadata=_kind(_Optional(_Duration("s")), RELOAD)
    )
    health_check_timeout: Optional[float] = attrs.field(
        default=None, metadata=_kind(_Optional(_Duration("s")), RELOAD)
    )
    health_check_max_retries: Optional[int] = attrs.field(
        default=None, metadata=_kind(_Optional(_Integer(0, 2**31 - 1)), RELOAD)
    )
    health_check_retry_delay: Optional[float] = attrs.field(
        default=None, metadata=_kind(_Optional(_Duration("s")), RELOAD)
    )

    @property
    def flags(self) -> FrozenSet[str]:
        """
        The flag names, for code that builds a L{BackendConfig} by hand with
        a non-canonical L{flag}.
        """
        return frozenset(
            _FLAG_ALIASES.get(word.strip().upper(), word.strip().upper())
            for word in self.flag.split("|")
        )

    @property
    def always_primary(self) -> bool:
        """
        Treat this node as the primary without asking it (fixed endpoints
        such as Aurora's), skipping primary detection.
        """
        return "ALWAYS_PRIMARY" in self.flags

    @property
    def allow_to_failover(self) -> bool:
        """
        Whether this proxy may detach the node when it fails; false when an
        external HA tool owns failover.
        """
        return "DISALLOW_TO_FAILOVER" not in self.flags


def _at_most_one_always_primary(
    backends: Sequence[BackendConfig],
    place: Callable[[int, str], _Where],
    ctx: _Context,
) -> None:
    """
    Two fixed primaries would make every write's destination a guess.
    """
    first: Optional[int] = None
    for index, backend in enumerate(backends):
        if backend.always_primary:
            if first is not None:
                raise ctx.error(
                    place(index, "flag"),
                    f"ALWAYS_PRIMARY is already set in {place(first, 'flag').path}; "
                    "at most one backend may be ALWAYS_PRIMARY",
                )
            first = index


_MAX_BACKENDS = 128
_DEFAULT_POOL_HBA_FILE = "pool_hba.conf"
_DEFAULT_POOL_PASSWD = "pool_passwd"
_LOG_LEVELS = (
    "debug5",
    "debug4",
    "debug3",
    "debug2",
    "debug1",
    "info",
    "notice",
    "warning",
    "error",
    "log",
    "fatal",
    "panic",
)


@attrs.frozen(kw_only=True)
class PgpoolConfig:
    """
    The whole configuration, as read from one file.

    Field names are the keys users write; see C{docs/configuration.md} for
    their meaning. Durations are float seconds and sizes are bytes, whatever
    unit the user wrote. Paths are absolute.

    @ivar source: The file this was read from (C{<dict>} when built by
        L{config_from_dict} without a name); not a setting.
    @ivar overrides: Settings given on the command line in place of the
        file's (C{-a pool_hba.conf}, C{-F pcp.conf}), as C{(key, value)}
        pairs; a reload reads the file with them again.  Not a setting.
    """

    listen_addresses: str = attrs.field(default="localhost", metadata=_kind(_AddressList(), START))
    port: int = attrs.field(default=9999, metadata=_kind(_PORT, START))
    backends: Tuple[BackendConfig, ...] = attrs.field(
        # None at all is allowed, as in Pgpool-II: clients are refused (see
        # NO_BACKEND_WARNING) until a reload adds one.
        default=(),
        metadata=_kind(
            _Nested(BackendConfig, 0, _MAX_BACKENDS, _at_most_one_always_primary),
            # Nodes may be added at the end; see twisted_pgpool.admin.reload.
            RELOAD,
        ),
    )
    enable_pool_hba: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    pool_hba_file: str = attrs.field(
        default=_DEFAULT_POOL_HBA_FILE, metadata=_kind(_Path(), RELOAD)
    )
    pool_passwd: str = attrs.field(
        default=_DEFAULT_POOL_PASSWD,
        metadata=_kind(
            _Path(
                allow_empty=True,
                must_exist_unless_default=True,
                default_name=_DEFAULT_POOL_PASSWD,
            ),
            START,
        ),
    )
    allow_clear_text_frontend_auth: bool = attrs.field(
        default=False, metadata=_kind(_Boolean(), RELOAD)
    )
    authentication_timeout: float = attrs.field(
        default=60.0, metadata=_kind(_Duration("s"), RELOAD)
    )
    # Connections not yet authenticated hold no session slot; this bounds
    # them instead (docs/pooling.md, "Clients that never authenticate").
    max_unauthenticated_clients: int = attrs.field(
        default=256, metadata=_kind(_Integer(1, 1000000), RELOAD)
    )
    # TLS to clients and to backends, one switch as in Pgpool-II (docs/tls.md).
    ssl: bool = attrs.field(default=False, metadata=_kind(_Boolean(), START))
    ssl_key: str = attrs.field(default="server.key", metadata=_kind(_Path(), START))
    ssl_cert: str = attrs.field(default="server.crt", metadata=_kind(_Path(), START))
    ssl_ca_cert: str = attrs.field(default="", metadata=_kind(_Path(allow_empty=True), START))
    ssl_ca_cert_dir: str = attrs.field(default="", metadata=_kind(_Path(allow_empty=True), START))
    ssl_crl_file: str = attrs.field(default="", metadata=_kind(_Path(allow_empty=True), START))
    ssl_ciphers: str = attrs.field(
        default="HIGH:MEDIUM:+3DES:!aNULL", metadata=_kind(_Text(allow_empty=False), START)
    )
    ssl_prefer_server_ciphers: bool = attrs.field(default=False, metadata=_kind(_Boolean(), START))
    ssl_ecdh_curve: str = attrs.field(
        default="prime256v1", metadata=_kind(_Text(allow_empty=False), START)
    )
    ssl_dh_params_file: str = attrs.field(
        default="", metadata=_kind(_Path(allow_empty=True), START)
    )
    connect_timeout: float = attrs.field(default=10.0, metadata=_kind(_Duration("ms"), RELOAD))
    max_message_length: int = attrs.field(
        default=1073741823, metadata=_kind(_Size(10000, 2**31 - 1), RELOAD)
    )
    # The longest client message read whole (docs/protocol.md, "Limits").
    max_buffered_message_length: int = attrs.field(
        default=16 * 1024 * 1024, metadata=_kind(_Size(10000, 2**31 - 1), RELOAD)
    )
    # Latency: spin before sleeping (docs/performance.md, "Busy polling").
    busy_poll_time: float = attrs.field(default=0.0, metadata=_kind(_Duration("us"), RELOAD))
    log_destination: str = attrs.field(
        default="stderr", metadata=_kind(_ChoiceSet(("stderr", "syslog")), RELOAD)
    )
    syslog_facility: str = attrs.field(
        default="LOCAL0",
        metadata=_kind(_Choice(tuple(f"LOCAL{n}" for n in range(8))), RELOAD),
    )
    syslog_ident: str = attrs.field(
        default="pgpool", metadata=_kind(_Text(allow_empty=False), RELOAD)
    )
    log_min_messages: str = attrs.field(
        default="warning", metadata=_kind(_Choice(_LOG_LEVELS), RELOAD)
    )
    log_connections: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    log_disconnections: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    log_statement: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    log_per_node_statement: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    # Connection pooling and limiting exceeding connections (docs/pooling.md).
    connection_cache: bool = attrs.field(default=True, metadata=_kind(_Boolean(), START))
    max_pool: int = attrs.field(default=4, metadata=_kind(_Integer(1, 10000), START))
    num_init_children: int = attrs.field(default=32, metadata=_kind(_Integer(1, 100000), START))
    listen_backlog_multiplier: int = attrs.field(
        default=2, metadata=_kind(_Integer(0, 1000), START)
    )
    reserved_connections: int = attrs.field(default=0, metadata=_kind(_Integer(0, 100000), START))
    client_queue_timeout: float = attrs.field(default=60.0, metadata=_kind(_Duration("s"), RELOAD))
    connection_life_time: float = attrs.field(default=0.0, metadata=_kind(_Duration("s"), START))
    child_life_time: float = attrs.field(default=300.0, metadata=_kind(_Duration("s"), START))
    child_max_connections: int = attrs.field(
        default=0, metadata=_kind(_Integer(0, 2**31 - 1), START)
    )
    client_idle_limit: float = attrs.field(default=0.0, metadata=_kind(_Duration("s"), RELOAD))
    reset_query_list: str = attrs.field(
        default="ABORT; DISCARD ALL", metadata=_kind(_Text(), RELOAD)
    )
    # Not Pgpool-II's: a reset that does not answer marks a connection
    # whose state is unknown; closed instead of waited on (docs/pooling.md).
    reset_timeout: float = attrs.field(default=10.0, metadata=_kind(_Duration("s"), START))
    # Clustering mode and load balancing (docs/routing.md).
    backend_clustering_mode: str = attrs.field(
        default="streaming_replication",
        metadata=_kind(_Choice(("streaming_replication", "native_replication", "raw")), START),
    )
    # Native replication mode only (docs/routing.md, "Native replication mode").
    replication_stop_on_mismatch: bool = attrs.field(
        default=False, metadata=_kind(_Boolean(), RELOAD)
    )
    failover_if_affected_tuples_mismatch: bool = attrs.field(
        default=False, metadata=_kind(_Boolean(), RELOAD)
    )
    replicate_select: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    insert_lock: bool = attrs.field(default=True, metadata=_kind(_Boolean(), RELOAD))
    load_balance_mode: bool = attrs.field(default=True, metadata=_kind(_Boolean(), START))
    statement_level_load_balance: bool = attrs.field(
        default=False, metadata=_kind(_Boolean(), RELOAD)
    )
    disable_load_balance_on_write: str = attrs.field(
        default="transaction",
        metadata=_kind(
            _Choice(("off", "transaction", "trans_transaction", "always", "dml_adaptive")), RELOAD
        ),
    )
    dml_adaptive_object_relationship_list: Tuple[str, ...] = attrs.field(
        default=(), metadata=_kind(_TextList(), RELOAD)
    )
    write_function_list: Tuple[str, ...] = attrs.field(
        default=(), metadata=_kind(_TextList(regex=True), RELOAD)
    )
    read_only_function_list: Tuple[str, ...] = attrs.field(
        default=(), metadata=_kind(_TextList(regex=True), RELOAD)
    )
    primary_routing_query_pattern_list: Tuple[str, ...] = attrs.field(
        default=(), metadata=_kind(_TextList(regex=True), RELOAD)
    )
    database_redirect_preference_list: str = attrs.field(
        default="", metadata=_kind(_Text(), RELOAD)
    )
    app_name_redirect_preference_list: str = attrs.field(
        default="", metadata=_kind(_Text(), RELOAD)
    )
    user_redirect_preference_list: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    allow_sql_comments: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    ignore_leading_white_space: bool = attrs.field(default=True, metadata=_kind(_Boolean(), RELOAD))
    # The relation cache: catalog facts routing looks up (docs/routing.md).
    check_unlogged_table: bool = attrs.field(default=True, metadata=_kind(_Boolean(), RELOAD))
    relcache_expire: float = attrs.field(default=0.0, metadata=_kind(_Duration("s"), START))
    relcache_size: int = attrs.field(default=256, metadata=_kind(_Integer(10, 2**31 - 1), START))
    # Read-your-writes under load balancing (docs/routing.md).
    read_your_writes: str = attrs.field(
        default="session", metadata=_kind(_Choice(("off", "session")), RELOAD)
    )
    causal_wait_timeout: float = attrs.field(default=0.0, metadata=_kind(_Duration("ms"), RELOAD))
    # In-memory query cache (docs/query-cache.md).
    memory_cache_enabled: bool = attrs.field(default=False, metadata=_kind(_Boolean(), START))
    memqcache_method: str = attrs.field(
        default="shmem", metadata=_kind(_Choice(("shmem", "memcached")), START)
    )
    memqcache_memcached_host: str = attrs.field(
        default="localhost", metadata=_kind(_Text(allow_empty=False), START)
    )
    memqcache_memcached_port: int = attrs.field(
        default=11211, metadata=_kind(_Integer(1, 65535), START)
    )
    memqcache_total_size: int = attrs.field(
        default=64 * 1024 * 1024, metadata=_kind(_Size(1024, 2**40), START)
    )
    memqcache_max_num_cache: int = attrs.field(
        default=1000000, metadata=_kind(_Integer(1, 2**31 - 1), START)
    )
    memqcache_expire: float = attrs.field(default=0.0, metadata=_kind(_Duration("s"), START))
    memqcache_maxcache: int = attrs.field(
        default=400 * 1024, metadata=_kind(_Size(0, 2**31 - 1), START)
    )
    memqcache_auto_cache_invalidation: bool = attrs.field(
        default=True, metadata=_kind(_Boolean(), RELOAD)
    )
    cache_safe_memqcache_table_list: Tuple[str, ...] = attrs.field(
        default=(), metadata=_kind(_TextList(regex=True), RELOAD)
    )
    cache_unsafe_memqcache_table_list: Tuple[str, ...] = attrs.field(
        default=(), metadata=_kind(_TextList(regex=True), RELOAD)
    )
    # Streaming replication check (docs/routing.md).
    sr_check_period: float = attrs.field(default=10.0, metadata=_kind(_Duration("s"), RELOAD))
    sr_check_user: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    sr_check_password: str = _secret_setting(_Text(), RELOAD)
    sr_check_database: str = attrs.field(
        default="postgres", metadata=_kind(_Text(allow_empty=False), RELOAD)
    )
    delay_threshold: int = attrs.field(default=0, metadata=_kind(_Size(0, 2**62), RELOAD))
    delay_threshold_by_time: float = attrs.field(
        default=0.0, metadata=_kind(_Duration("ms"), RELOAD)
    )
    prefer_lower_delay_standby: bool = attrs.field(
        default=False, metadata=_kind(_Boolean(), RELOAD)
    )
    log_standby_delay: str = attrs.field(
        default="if_over_threshold",
        metadata=_kind(_Choice(("none", "always", "if_over_threshold")), RELOAD),
    )
    # Health check (docs/failover.md).
    health_check_period: float = attrs.field(default=0.0, metadata=_kind(_Duration("s"), RELOAD))
    health_check_timeout: float = attrs.field(default=20.0, metadata=_kind(_Duration("s"), RELOAD))
    health_check_user: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    health_check_password: str = _secret_setting(_Text(), RELOAD)
    health_check_database: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    health_check_max_retries: int = attrs.field(
        default=0, metadata=_kind(_Integer(0, 2**31 - 1), RELOAD)
    )
    health_check_retry_delay: float = attrs.field(
        default=1.0, metadata=_kind(_Duration("s"), RELOAD)
    )
    # Failover and failback (docs/failover.md).
    failover_command: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    failback_command: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    follow_primary_command: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    failover_command_timeout: float = attrs.field(
        default=60.0, metadata=_kind(_Duration("s"), RELOAD)
    )
    failover_on_backend_error: bool = attrs.field(default=True, metadata=_kind(_Boolean(), RELOAD))
    failover_on_backend_shutdown: bool = attrs.field(
        default=False, metadata=_kind(_Boolean(), RELOAD)
    )
    search_primary_node_timeout: float = attrs.field(
        default=300.0, metadata=_kind(_Duration("s"), RELOAD)
    )
    primary_wait_timeout: float = attrs.field(default=10.0, metadata=_kind(_Duration("s"), RELOAD))
    auto_failback: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    auto_failback_interval: float = attrs.field(
        default=60.0, metadata=_kind(_Duration("s"), RELOAD)
    )
    detach_false_primary: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    # Online recovery (docs/recovery.md).
    recovery_user: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    recovery_password: str = _secret_setting(_Text(), RELOAD)
    recovery_database: str = attrs.field(
        default="postgres", metadata=_kind(_Text(allow_empty=False), RELOAD)
    )
    recovery_1st_stage_command: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    recovery_2nd_stage_command: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    recovery_timeout: float = attrs.field(default=90.0, metadata=_kind(_Duration("s"), RELOAD))
    client_idle_limit_in_recovery: int = attrs.field(
        default=0, metadata=_kind(_Integer(-1, 2**31 - 1), RELOAD)
    )
    logdir: str = attrs.field(default="/tmp", metadata=_kind(_Path(), START))
    # Administration (docs/administration.md).
    pcp_listen_addresses: str = attrs.field(
        default="localhost", metadata=_kind(_AddressList(), START)
    )
    pcp_port: int = attrs.field(default=9898, metadata=_kind(_Integer(0, 65535), START))
    pcp_socket_dir: str = attrs.field(default="", metadata=_kind(_Text(), START))
    pcp_conf_file: str = attrs.field(
        default="pcp.conf", metadata=_kind(_Path(allow_empty=True), RELOAD)
    )
    # Metrics for Prometheus (docs/metrics.md); off unless addresses are given.
    metrics_listen_addresses: str = attrs.field(default="", metadata=_kind(_AddressList(), START))
    metrics_port: int = attrs.field(default=9719, metadata=_kind(_PORT, START))
    # Live inspection with a Python prompt (docs/administration.md); off
    # unless an endpoint is given; checked by twisted_pgpool.admin.manhole.
    manhole_endpoint: str = attrs.field(
        default="",
        metadata=_kind(
            _Text(what="a server endpoint description such as tcp:6022:interface=127.0.0.1"), START
        ),
    )
    manhole_protocol: str = attrs.field(
        default="ssh", metadata=_kind(_Choice(("ssh", "telnet")), START)
    )
    manhole_passwd_file: str = attrs.field(
        default="", metadata=_kind(_Path(allow_empty=True), START)
    )
    manhole_ssh_key_dir: str = attrs.field(default=".", metadata=_kind(_Path(), START))
    source: str = "<dict>"
    overrides: Tuple[Tuple[str, Any], ...] = ()

    @property
    def reset_queries(self) -> Tuple[str, ...]:
        """
        C{reset_query_list} split into its statements.
        """
        return tuple(q.strip() for q in self.reset_query_list.split(";") if q.strip())
