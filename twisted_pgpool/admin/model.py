"""
What the administration operations (L{twisted_pgpool.admin.operations})
act on and answer: the L{IAdminBackend} interface a running proxy (or a
test's fake) implements, the records it returns (L{NodeInfo},
L{HealthCheckStats}, L{ConfigParameter}, L{ProcessInfo}) with the columns
Pgpool-II reports them in, and L{AdminError} with its SQLSTATEs.  Plain
data, no I/O.
"""

from __future__ import annotations

import time
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

import attr
from twisted.internet import defer
from zope.interface import Attribute, Interface

from twisted_pgpool.cluster.health import HEALTH_CHECK_STATS_COLUMNS
from twisted_pgpool.cluster.model import Node
from twisted_pgpool.wire import errors

__all__ = [
    "AdminError",
    "CONFIG_FILE_ERROR",
    "ConfigParameter",
    "HEALTH_CHECK_COLUMNS",
    "HealthCheckStats",
    "IAdminBackend",
    "INVALID_PARAMETER_VALUE",
    "NODE_COLUMNS",
    "NodeInfo",
    "OBJECT_NOT_IN_PREREQUISITE_STATE",
    "PROCESS_COLUMNS",
    "ProcessInfo",
    "format_timestamp",
]


#: Columns of C{SHOW POOL_NODES} that make sense outside a session (the
#: 14 of Pgpool-II 4.3 less C{load_balance_node}, which is per session).
NODE_COLUMNS = (
    "node_id",
    "hostname",
    "port",
    "status",
    "pg_status",
    "lb_weight",
    "role",
    "pg_role",
    "select_cnt",
    "replication_delay",
    "replication_state",
    "replication_sync_state",
    "last_status_change",
)

#: Columns of C{SHOW POOL_HEALTH_CHECK_STATS}, in Pgpool-II's order (also the
#: order of the fields of a PCP health check stats reply); defined once, by
#: the health monitor.
HEALTH_CHECK_COLUMNS = HEALTH_CHECK_STATS_COLUMNS

#: Columns of C{SHOW POOL_POOLS} in Pgpool-II 4.3 (the fields of a PCP
#: process info row).
PROCESS_COLUMNS = (
    "pool_pid",
    "start_time",
    "client_connection_count",
    "pool_id",
    "backend_id",
    "database",
    "username",
    "backend_connection_time",
    "client_connection_time",
    "client_disconnection_time",
    "client_idle_duration",
    "majorversion",
    "minorversion",
    "pool_counter",
    "pool_backendpid",
    "pool_connected",
    "status",
)


def format_timestamp(seconds: Optional[float]) -> str:
    """
    A POSIX time as Pgpool-II shows it (C{YYYY-MM-DD HH:MM:SS}, local
    time), or C{""} for "never".
    """
    if not seconds:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


class AdminError(Exception):
    """
    An administration request was refused or failed; the PCP server sends
    it as an C{ERROR} and the connection stays open, as in Pgpool-II.

    @ivar message: the primary message (Pgpool-II's wording where it has
        one, e.g. C{"informing node info failed"}).
    @ivar detail: the reason (C{"invalid node ID"}).
    @ivar sqlstate: the SQLSTATE of the ErrorResponse.
    """

    def __init__(
        self, message: str, detail: Optional[str] = None, sqlstate: str = errors.INTERNAL_ERROR
    ) -> None:
        super().__init__(message if detail is None else f"{message}: {detail}")
        self.message = message
        self.detail = detail
        self.sqlstate = sqlstate

    def to_pg_error(self) -> errors.PgError:
        return errors.error(self.sqlstate, self.message, self.detail)


#: SQLSTATE for a node id or process id that does not exist
#: (PostgreSQL's "invalid parameter value").
INVALID_PARAMETER_VALUE = "22023"
#: SQLSTATE for an operation that does not fit the node's current state.
OBJECT_NOT_IN_PREREQUISITE_STATE = "55000"
#: SQLSTATE for a configuration file that cannot be used (PostgreSQL's
#: "config file error").
CONFIG_FILE_ERROR = "F0000"


# -- what the operations return ----------------------------------------------------


@attr.s(auto_attribs=True, frozen=True)
class NodeInfo:
    """
    One backend node as C{SHOW POOL_NODES} and C{pcp_node_info} report it.

    @ivar status: Pgpool-II's status name (C{up}, C{down}, C{waiting},
        C{unused}, C{quarantine}).
    @ivar pg_status: what the last health check said (C{up}, C{down}), or
        C{unknown} when health checks are off.
    @ivar lb_weight: the normalised load-balance weight (0..1).
    @ivar role: C{primary}/C{standby} (C{main}/C{replica} in raw mode).
    @ivar pg_role: what the server itself says, or C{unknown}.
    @ivar replication_delay: as C{SHOW POOL_NODES} shows it (bytes, or
        C{"0.1 second(s)"}).
    @ivar replication_delay_bytes: the delay in bytes, for PCP.
    @ivar last_status_change: POSIX time of the last status/role change.
    """

    node_id: int
    hostname: str
    port: int
    status: str
    pg_status: str = "unknown"
    lb_weight: float = 0.0
    role: str = "standby"
    pg_role: str = "unknown"
    select_cnt: int = 0
    replication_delay: str = "0"
    replication_delay_bytes: int = 0
    replication_state: str = ""
    replication_sync_state: str = ""
    last_status_change: float = 0.0
    quarantine: bool = False

    def columns(self) -> List[str]:
        """
        The values of L{NODE_COLUMNS}, as text.
        """
        return [
            str(self.node_id),
            self.hostname,
            str(self.port),
            self.status,
            self.pg_status,
            f"{self.lb_weight:f}",
            self.role,
            self.pg_role,
            str(self.select_cnt),
            self.replication_delay,
            self.replication_state,
            self.replication_sync_state,
            format_timestamp(self.last_status_change),
        ]


@attr.s(auto_attribs=True, frozen=True)
class HealthCheckStats:
    """
    The health check statistics of one node (C{SHOW
    POOL_HEALTH_CHECK_STATS}).  Durations are milliseconds; times are POSIX
    times, None for "never happened".
    """

    node_id: int
    hostname: str
    port: int
    status: str
    role: str
    last_status_change: Optional[float] = None
    total_count: int = 0
    success_count: int = 0
    fail_count: int = 0
    skip_count: int = 0
    retry_count: int = 0
    average_retry_count: float = 0.0
    max_retry_count: int = 0
    max_duration: int = 0
    min_duration: int = 0
    average_duration: float = 0.0
    last_health_check: Optional[float] = None
    last_successful_health_check: Optional[float] = None
    last_skip_health_check: Optional[float] = None
    last_failed_health_check: Optional[float] = None

    def columns(self) -> List[str]:
        """
        The values of L{HEALTH_CHECK_COLUMNS} as Pgpool-II formats them
        (averages with C{%f}, times as local timestamps, C{""} for never).
        """
        return [
            str(self.node_id),
            self.hostname,
            str(self.port),
            self.status,
            self.role,
            format_timestamp(self.last_status_change),
            str(self.total_count),
            str(self.success_count),
            str(self.fail_count),
            str(self.skip_count),
            str(self.retry_count),
            f"{self.average_retry_count:f}",
            str(self.max_retry_count),
            str(self.max_duration),
            str(self.min_duration),
            f"{self.average_duration:f}",
            format_timestamp(self.last_health_check),
            format_timestamp(self.last_successful_health_check),
            format_timestamp(self.last_skip_health_check),
            format_timestamp(self.last_failed_health_check),
        ]

    @classmethod
    def from_monitor(cls, node: Node, stats: Any) -> "HealthCheckStats":
        """
        Build the report for C{node} from what the health monitor returns
        (L{twisted_pgpool.cluster.health.HealthCheckStats}, or a mapping, or any
        object with attributes named like L{HEALTH_CHECK_COLUMNS};
        C{max_health_check_duration} and friends, Pgpool-II's struct names,
        are accepted too).  The monitor's durations are seconds, the
        report's milliseconds.  Missing values are zero or "never"; the
        node's own facts come from the cluster model.  A L{HealthCheckStats}
        of this module is returned as it is.
        """
        if isinstance(stats, cls):
            return stats
        if isinstance(stats, Mapping):
            get: Callable[[str], Any] = stats.get
        else:

            def get(name: str) -> Any:
                return getattr(stats, name, None)

        def value(name: str, default: Any, kind: Callable[[Any], Any]) -> Any:
            found = get(name)
            if found is None:
                found = get(_PGPOOL_STAT_NAMES.get(name, name))
            if found is None:
                return default
            try:
                return kind(found)
            except (TypeError, ValueError):
                return default

        def when(name: str) -> Optional[float]:
            found = value(name, None, float)
            return found or None

        return cls(
            node_id=node.node_id,
            hostname=node.hostname,
            port=node.port,
            status=node.status,
            role=node.role,
            last_status_change=node.last_status_change,
            total_count=value("total_count", 0, int),
            success_count=value("success_count", 0, int),
            fail_count=value("fail_count", 0, int),
            skip_count=value("skip_count", 0, int),
            retry_count=value("retry_count", 0, int),
            average_retry_count=value("average_retry_count", 0.0, float),
            max_retry_count=value("max_retry_count", 0, int),
            max_duration=value("max_duration", 0, _milliseconds),
            min_duration=value("min_duration", 0, _milliseconds),
            average_duration=value("average_duration", 0.0, float) * 1000.0,
            last_health_check=when("last_health_check"),
            last_successful_health_check=when("last_successful_health_check"),
            last_skip_health_check=when("last_skip_health_check"),
            last_failed_health_check=when("last_failed_health_check"),
        )


_PGPOOL_STAT_NAMES = {
    "max_duration": "max_health_check_duration",
    "min_duration": "min_health_check_duration",
    "average_duration": "average_health_check_duration",
}


def _milliseconds(seconds: Any) -> int:
    return int(round(float(seconds) * 1000.0))


@attr.s(auto_attribs=True, frozen=True)
class ConfigParameter:
    """
    One row of C{pcp_pool_status} (C{PGPOOL SHOW ALL}).
    """

    name: str
    value: str
    description: str = ""


@attr.s(auto_attribs=True, frozen=True)
class ProcessInfo:
    """
    One row of C{pcp_proc_info}: a session slot and the backend connection
    it uses, with the fields of Pgpool-II 4.3's C{SHOW POOL_POOLS}
    (L{PROCESS_COLUMNS}), already as text.
    """

    values: Tuple[str, ...]

    @property
    def pool_pid(self) -> int:
        return int(self.values[0])


# -- the backend interface -----------------------------------------------------------


class IAdminBackend(Interface):
    """
    What the administration operations act on: a running proxy
    (L{ProxyAdminBackend}), or a fake in tests.

    Node operations return Deferreds because a failover runs scripts and
    waits for a new primary; reports return plain values.
    """

    config = Attribute("The L{PgpoolConfig} in force.")

    def nodes() -> Sequence[NodeInfo]:
        """
        Every configured node, in node id order, whatever its status.
        """

    def attach(node_id: int) -> "defer.Deferred[None]":
        """
        Put a node back in service (Pgpool-II's failback: run
        C{failback_command}, status C{waiting}).  The id is known to be
        valid.  Fails with L{AdminError} when refused.
        """

    def detach(node_id: int, gracefully: bool) -> "defer.Deferred[None]":
        """
        Take a node out of service (a failover: C{failover_command}, and
        C{follow_primary_command} if it was the primary).  With
        C{gracefully}, wait for the sessions using it to end first.
        """

    def promote(node_id: int, switchover: bool) -> "defer.Deferred[None]":
        """
        Make a standby the primary.  Without C{switchover} only the proxy's
        idea of the primary changes; with it, the current primary is
        detached and C{failover_command} promotes the new one.
        """

    def recover(node_id: int) -> "defer.Deferred[None]":
        """
        Online recovery of a detached node (C{pcp_recovery_node}): run the
        recovery scripts on the primary through the C{pgpool_recovery}
        extension, wait for the node to start, attach it
        (L{twisted_pgpool.admin.recovery}).  The id is known to be valid.
        Fails with L{AdminError} when refused or when a step fails.
        """

    def health_check_stats(node_id: int) -> HealthCheckStats:
        """
        The health check statistics of a (valid) node.
        """

    def process_ids() -> Sequence[int]:
        """
        The ids of the client sessions (Pgpool-II's child pids).
        """

    def process_info(pid: int) -> Sequence[ProcessInfo]:
        """
        One row per session, or the rows of one session when C{pid} is not
        0.  Raises L{AdminError} for an unknown pid.
        """

    def reload_config() -> None:
        """
        Read the configuration file again and put in force what may change
        without a restart (C{pcp_reload_config}, as SIGHUP does).

        @raise AdminError: the new configuration cannot be used; the one in
            force is kept whole.
        """

    def invalidate_query_cache() -> "Optional[defer.Deferred[None]]":
        """
        Obsolete every entry of the query cache (Pgpool-II 4.6's
        C{pcp_invalidate_query_cache}).

        @return: None when done, or a Deferred firing once the cache is
            empty for every proxy sharing it (memcached).
        @raise AdminError: the query cache is off (C{memory_cache_enabled});
            a returned Deferred may fail with it too.
        """

    def shutdown(mode: str) -> None:
        """
        Stop the proxy (C{pcp_stop_pgpool}); C{mode} is C{smart}, C{fast}
        or C{immediate} (L{twisted_pgpool.admin.shutdown}).  Returns at once: the
        proxy stops later, after the caller has answered its client.

        @raise AdminError: this proxy cannot be stopped on request.
        """

    def rotate_log() -> bool:
        """
        Rotate the proxy's log file (Pgpool-II 4.6's C{pcp_log_rotate}).

        @return: False when the proxy logs to no file, so there was nothing
            to do.
        """
