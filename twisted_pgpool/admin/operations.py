"""
The administration operations, as plain functions over an admin backend.

These are what Pgpool-II's C{pcp_*} tools (and our C{twisted-pgpool nodes
| attach | detach | promote | health | invalidate-query-cache | reload}
commands) ask for: the node list of C{SHOW POOL_NODES}, attaching, detaching
and promoting a node, the health check statistics of a node, the
configuration, the sessions, emptying the query cache, reloading the
configuration, stopping the proxy, rotating its log file.  Each function checks its arguments the
way Pgpool-II does and delegates to an L{IAdminBackend}; none of them
touches a socket, so the PCP server
(L{twisted_pgpool.admin.pcp}) is only a codec around them and tests call them
directly with a fake backend.

L{ProxyAdminBackend} is the backend of a running proxy: it reads the
cluster model and configuration of a L{twisted_pgpool.service.ProxyCore}
and hands node operations to the failover manager, health statistics to
the health monitor, cache invalidation to the query cache, reloads to
the L{twisted_pgpool.admin.reload.ConfigReloader}, stop requests to the
L{twisted_pgpool.admin.shutdown.ProxyShutdown} and log rotation to
L{twisted_pgpool.logs.request_log_rotation}.
"""

from __future__ import annotations

import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

import attr
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from twisted_pgpool import logs
from twisted_pgpool.admin.recovery import OnlineRecovery, RecoveryFailed
from twisted_pgpool.admin.reload import ReloadError
from twisted_pgpool.admin.shutdown import SHUTDOWN_MODES
from twisted_pgpool.cluster.failover import FailoverError
from twisted_pgpool.cluster.health import HEALTH_CHECK_STATS_COLUMNS, pg_status_of
from twisted_pgpool.cluster.model import STATUS_DOWN, STATUS_UP, STATUS_WAITING, Node
from twisted_pgpool.cluster.replication import pool_nodes_columns
from twisted_pgpool.config import PgpoolConfig, settings_for_display
from twisted_pgpool.routing.replication_mode import is_native, role_name
from twisted_pgpool.wire import errors

if TYPE_CHECKING:  # pragma: no cover
    from twisted_pgpool.service import ProxyCore

__all__ = [
    "AdminError",
    "ConfigParameter",
    "HealthCheckStats",
    "IAdminBackend",
    "NodeInfo",
    "ProcessInfo",
    "ProxyAdminBackend",
    "attach_node",
    "config_parameters",
    "detach_node",
    "health_check_stats",
    "invalidate_query_cache",
    "log_rotate",
    "node_count",
    "node_info",
    "pool_status",
    "process_count",
    "process_info",
    "promote_node",
    "recover_node",
    "reload_config",
    "stop_pgpool",
]

log = Logger(observer=logs.observer)

#: Columns of C{SHOW POOL_NODES} that make sense outside a session (the
#: 14 of Pgpool-II 4.3 less C{load_balance_node}, which is per session).
NODE_COLUMNS = (
    "node_id", "hostname", "port", "status", "pg_status", "lb_weight", "role",
    "pg_role", "select_cnt", "replication_delay", "replication_state",
    "replication_sync_state", "last_status_change",
)

#: Columns of C{SHOW POOL_HEALTH_CHECK_STATS}, in Pgpool-II's order (also the
#: order of the fields of a PCP health check stats reply); defined once, by
#: the health monitor.
HEALTH_CHECK_COLUMNS = HEALTH_CHECK_STATS_COLUMNS

#: Columns of C{SHOW POOL_POOLS} in Pgpool-II 4.3 (the fields of a PCP
#: process info row).
PROCESS_COLUMNS = (
    "pool_pid", "start_time", "client_connection_count", "pool_id",
    "backend_id", "database", "username", "backend_connection_time",
    "client_connection_time", "client_disconnection_time",
    "client_idle_duration", "majorversion", "minorversion", "pool_counter",
    "pool_backendpid", "pool_connected", "status",
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

    def __init__(self, message: str, detail: Optional[str] = None,
                 sqlstate: str = errors.INTERNAL_ERROR) -> None:
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
            str(self.node_id), self.hostname, str(self.port), self.status,
            self.pg_status, f"{self.lb_weight:f}", self.role, self.pg_role,
            str(self.select_cnt), self.replication_delay,
            self.replication_state, self.replication_sync_state,
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
            str(self.node_id), self.hostname, str(self.port), self.status,
            self.role, format_timestamp(self.last_status_change),
            str(self.total_count), str(self.success_count),
            str(self.fail_count), str(self.skip_count), str(self.retry_count),
            f"{self.average_retry_count:f}", str(self.max_retry_count),
            str(self.max_duration), str(self.min_duration),
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
            node_id=node.node_id, hostname=node.hostname, port=node.port,
            status=node.status, role=node.role,
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


# -- the operations -------------------------------------------------------------------

def node_count(backend: IAdminBackend) -> int:
    """
    The number of configured nodes, whatever their status
    (C{pcp_node_count}).
    """
    return len(backend.nodes())


def _check_node_id(backend: IAdminBackend, node_id: int, failed: str) -> NodeInfo:
    nodes = backend.nodes()
    if not 0 <= node_id < len(nodes):
        raise AdminError(failed, f"invalid node ID {node_id}: the nodes are "
                         f"0 to {len(nodes) - 1}", INVALID_PARAMETER_VALUE)
    return nodes[node_id]


def node_info(backend: IAdminBackend, node_id: int) -> List[NodeInfo]:
    """
    The report of one node, or of all nodes when C{node_id} is -1
    (C{pcp_node_info -n N} / C{-a}).

    @raise AdminError: no such node.
    """
    if node_id == -1:
        return list(backend.nodes())
    return [_check_node_id(backend, node_id, "informing node info failed")]


def attach_node(backend: IAdminBackend, node_id: int) -> "defer.Deferred[None]":
    """
    C{pcp_attach_node}: put a node back in service.
    """
    try:
        _check_node_id(backend, node_id, "attach node failed")
    except AdminError:
        return defer.fail()
    return defer.maybeDeferred(backend.attach, node_id)


def detach_node(backend: IAdminBackend, node_id: int,
                gracefully: bool = False) -> "defer.Deferred[None]":
    """
    C{pcp_detach_node [-g]}: take a node out of service.
    """
    try:
        node = _check_node_id(backend, node_id, "detach node failed")
        if node.status == STATUS_DOWN:
            raise AdminError("detach node failed",
                             f"node {node_id} is already down",
                             OBJECT_NOT_IN_PREREQUISITE_STATE)
    except AdminError:
        return defer.fail()
    return defer.maybeDeferred(backend.detach, node_id, gracefully)


def promote_node(backend: IAdminBackend, node_id: int,
                 switchover: bool = False) -> "defer.Deferred[None]":
    """
    C{pcp_promote_node [-s]}: make a standby the primary.  Refused, as in
    Pgpool-II, outside streaming replication mode, for the node that is
    already the primary, and (our addition) for a node that is down.
    """
    try:
        node = _check_node_id(backend, node_id, "promote node failed")
        if backend.config.backend_clustering_mode != "streaming_replication":
            raise AdminError(
                "promote node failed",
                f"not in streaming replication mode, can't promote node id {node_id}",
                errors.FEATURE_NOT_SUPPORTED)
        if node.role == "primary":
            raise AdminError(
                "promote node failed",
                f"specified node is already primary node, can't promote node id {node_id}",
                OBJECT_NOT_IN_PREREQUISITE_STATE)
        if node.status == STATUS_DOWN:
            raise AdminError(
                "promote node failed",
                f"node {node_id} is down; attach it first",
                OBJECT_NOT_IN_PREREQUISITE_STATE)
    except AdminError:
        return defer.fail()
    return defer.maybeDeferred(backend.promote, node_id, switchover)


def recover_node(backend: IAdminBackend, node_id: int) -> "defer.Deferred[None]":
    """
    C{pcp_recovery_node -n N}: online recovery.  An unknown node is
    refused with Pgpool-II's words; the backend checks the rest.
    """
    nodes = backend.nodes()
    if not 0 <= node_id < len(nodes):
        return defer.fail(AdminError("process recovery request failed",
                                     f"node id {node_id} is not valid",
                                     INVALID_PARAMETER_VALUE))
    return defer.maybeDeferred(backend.recover, node_id)


def health_check_stats(backend: IAdminBackend, node_id: int) -> HealthCheckStats:
    """
    C{pcp_health_check_stats -n N}.

    @raise AdminError: no such node.
    """
    _check_node_id(backend, node_id, "informing health check stats info failed")
    return backend.health_check_stats(node_id)


def invalidate_query_cache(backend: IAdminBackend) -> "defer.Deferred[None]":
    """
    C{pcp_invalidate_query_cache}: empty the query cache.  Fails with
    L{AdminError} when the cache is off.
    """
    return defer.maybeDeferred(backend.invalidate_query_cache).addCallback(
        lambda _: None)


def reload_config(backend: IAdminBackend) -> None:
    """
    C{pcp_reload_config}: reload the configuration.

    @raise AdminError: the new configuration cannot be used (nothing
        changed).
    """
    backend.reload_config()


def stop_pgpool(backend: IAdminBackend, mode: str) -> str:
    """
    C{pcp_stop_pgpool -m s|f|i}: stop the proxy.  C{mode} is the letter
    of the request (C{s}, C{f} or C{i}); anything else is refused with
    Pgpool-II's error.

    @return: the mode's name.
    """
    name = SHUTDOWN_MODES.get(mode)
    if name is None:
        raise AdminError("PCP: error while processing shutdown request",
                         f'invalid shutdown mode "{mode}"',
                         INVALID_PARAMETER_VALUE)
    backend.shutdown(name)
    return name


def log_rotate(backend: IAdminBackend) -> bool:
    """
    C{pcp_log_rotate}: rotate the log file.

    @return: whether there was a log file to rotate.
    """
    return bool(backend.rotate_log())


def pool_status(backend: IAdminBackend) -> List[ConfigParameter]:
    """
    C{pcp_pool_status}: every configuration parameter.
    """
    return config_parameters(backend.config)


def process_count(backend: IAdminBackend) -> List[int]:
    """
    C{pcp_proc_count}: the session ids.
    """
    return list(backend.process_ids())


def process_info(backend: IAdminBackend, pid: int) -> List[ProcessInfo]:
    """
    C{pcp_proc_info [-P pid]}: all sessions (C{pid} 0) or one.
    """
    return list(backend.process_info(pid))


# -- configuration report ------------------------------------------------------------

def config_parameters(config: PgpoolConfig) -> List[ConfigParameter]:
    """
    The configuration as C{name}/C{value} rows, with each backend's settings
    spelled as in pgpool.conf (C{backend_hostname0}...).  Secret settings
    (passwords) are shown as C{*****}, never in clear
    (L{twisted_pgpool.config.settings_for_display}).
    """
    return [ConfigParameter(name, value) for name, value in settings_for_display(config)]


# -- the backend of a running proxy ------------------------------------------------

def _refused(failure: Any, message: str) -> None:
    """
    A request the failover manager turned down (L{FailoverError}: unknown
    node, node not up...) is an L{AdminError} with its reason; anything
    else stays an unexpected failure.
    """
    failure.trap(FailoverError)
    raise AdminError(message, str(failure.value), OBJECT_NOT_IN_PREREQUISITE_STATE)


def _recovery_failed(failure: Any) -> None:
    """
    A refused or failed recovery is an L{AdminError} with Pgpool-II's
    message and detail.
    """
    failure.trap(RecoveryFailed)
    error = failure.value
    raise AdminError(error.message, error.detail, error.sqlstate)


@implementer(IAdminBackend)
class ProxyAdminBackend:
    """
    The admin backend of a running proxy.

    @ivar core: the proxy's shared state (cluster model, configuration,
        sessions).
    @ivar failover: does node operations: C{detach(node_id, reason,
        gracefully=False)}, C{attach(node_id, reason)} and C{promote(node_id,
        switchover=False)}, each returning a Deferred
        (L{twisted_pgpool.cluster.failover.FailoverManager}).  When None, attach and
        detach only change the node's status (detaching ends the sessions
        that depend on the node) and promote only relabels the primary: no
        script runs.
    @ivar health: the health monitor; C{stats(node_id)} gives a node's
        statistics.  When None (health checks not running), the statistics
        are all zero.
    @ivar reloader: reloads the configuration
        (L{twisted_pgpool.admin.reload.ConfigReloader}); when None, reload
        requests are refused.
    @ivar stopper: stops the proxy
        (L{twisted_pgpool.admin.shutdown.ProxyShutdown}); when None, stop
        requests are refused.
    @ivar rotate_log_file: rotates the log file, returning False when there
        is none (L{twisted_pgpool.logs.request_log_rotation}).
    @ivar recovery: runs online recoveries
        (L{twisted_pgpool.admin.recovery.OnlineRecovery}); the recovered
        node is attached as by C{pcp_attach_node}.
    """

    def __init__(self, core: "ProxyCore", failover: Any = None,
                 health: Any = None, reloader: Any = None,
                 stopper: Any = None,
                 rotate_log_file: Callable[[], bool] = logs.request_log_rotation,
                 recovery: Optional[OnlineRecovery] = None,
                 ) -> None:
        self.core = core
        self.failover = failover
        self.health = health
        self.reloader = reloader
        self.stopper = stopper
        self.rotate_log_file = rotate_log_file
        self.recovery = recovery if recovery is not None else OnlineRecovery(
            getattr(core, "reactor", None), core, self._attach_recovered)

    @property
    def config(self) -> PgpoolConfig:
        return self.core.config

    def nodes(self) -> List[NodeInfo]:
        config = self.core.config
        cluster = self.core.cluster
        total = sum(n.config.weight for n in cluster.nodes) or 1.0
        result = []
        for node in cluster.nodes:
            pg_role, delay, state, sync_state = pool_nodes_columns(node, config)
            role = node.role
            if is_native(config):
                role = pg_role = role_name(node)
            result.append(NodeInfo(
                node_id=node.node_id, hostname=node.hostname, port=node.port,
                status=node.status, pg_status=self._pg_status(node),
                lb_weight=node.config.weight / total, role=role,
                pg_role=pg_role, select_cnt=node.select_count,
                replication_delay=delay,
                replication_delay_bytes=node.replication_delay,
                replication_state=state, replication_sync_state=sync_state,
                last_status_change=node.last_status_change))
        return result

    def _pg_status(self, node: Node) -> str:
        """
        Pgpool-II's C{pg_status}: what the server answered to the last
        check, C{unknown} without health checks
        (L{twisted_pgpool.cluster.health.pg_status_of}).
        """
        if self.health is None:
            return "unknown"
        stats = self.health_check_stats(node.node_id)
        return pg_status_of(stats.last_successful_health_check,
                            stats.last_failed_health_check,
                            self.core.config.health_check_period > 0)

    def attach(self, node_id: int) -> "defer.Deferred[None]":
        reason = "attached by pcp_attach_node"
        if self.failover is not None:
            return defer.maybeDeferred(
                self.failover.attach, node_id, reason
            ).addErrback(_refused, "attach node failed")
        node = self.core.cluster.nodes[node_id]
        if node.status == STATUS_DOWN:
            self.core.cluster.set_status(node, STATUS_WAITING, reason)
        return defer.succeed(None)

    def recover(self, node_id: int) -> "defer.Deferred[None]":
        return self.recovery.recover(node_id).addErrback(_recovery_failed)

    def _attach_recovered(self, node_id: int, reason: str) -> "defer.Deferred[None]":
        """
        Attach a node the recovery brought back: a failback, as Pgpool-II's
        recovery sends one, with C{failback_command}.
        """
        if self.failover is not None:
            return defer.maybeDeferred(
                self.failover.attach, node_id, reason
            ).addErrback(_refused, "node recovery failed")
        node = self.core.cluster.nodes[node_id]
        self.core.cluster.set_status(node, STATUS_UP, reason)
        return defer.succeed(None)

    def detach(self, node_id: int, gracefully: bool) -> "defer.Deferred[None]":
        reason = "detached by pcp_detach_node"
        if self.failover is not None:
            return defer.maybeDeferred(
                self.failover.detach, node_id, reason, gracefully=gracefully
            ).addErrback(_refused, "detach node failed")
        node = self.core.cluster.nodes[node_id]
        self.core.cluster.set_status(node, STATUS_DOWN, reason)
        self.core.end_sessions_using(node_id, errors.fatal(
            errors.ADMIN_SHUTDOWN,
            f"backend node {node_id} was detached by an administrator"))
        return defer.succeed(None)

    def promote(self, node_id: int, switchover: bool) -> "defer.Deferred[None]":
        if self.failover is not None:
            return defer.maybeDeferred(
                self.failover.promote, node_id, switchover=switchover
            ).addErrback(_refused, "promote node failed")
        if switchover:
            return defer.fail(AdminError(
                "promote node failed",
                "a switchover needs the failover manager (failover_command)",
                errors.FEATURE_NOT_SUPPORTED))
        cluster = self.core.cluster
        cluster.set_primary(cluster.nodes[node_id], "promoted by pcp_promote_node")
        return defer.succeed(None)

    def health_check_stats(self, node_id: int) -> HealthCheckStats:
        node = self.core.cluster.nodes[node_id]
        stats = self.health.stats(node_id) if self.health is not None else None
        return HealthCheckStats.from_monitor(node, stats or {})

    def process_ids(self) -> List[int]:
        return sorted(s.process_id for s in self.core.sessions if s.process_id)

    def process_info(self, pid: int) -> List[ProcessInfo]:
        sessions = sorted((s for s in self.core.sessions if s.process_id),
                          key=lambda s: s.process_id)
        if pid:
            sessions = [s for s in sessions if s.process_id == pid]
            if not sessions:
                raise AdminError("informing process info failed",
                                 f"invalid process ID : {pid}",
                                 INVALID_PARAMETER_VALUE)
        return [self._process_row(s) for s in sessions]

    def reload_config(self) -> None:
        if self.reloader is None:
            raise AdminError("process reload config request failed",
                             "this proxy has no configuration file to reload",
                             errors.FEATURE_NOT_SUPPORTED)
        try:
            self.reloader.reload()
        except ReloadError as e:
            raise AdminError("process reload config request failed", str(e),
                             CONFIG_FILE_ERROR)

    def shutdown(self, mode: str) -> None:
        if self.stopper is None:
            raise AdminError("PCP: error while processing shutdown request",
                             "this proxy cannot be stopped on request; stop "
                             "the application that runs it",
                             errors.FEATURE_NOT_SUPPORTED)
        self.stopper.shutdown(mode)

    def rotate_log(self) -> bool:
        if self.rotate_log_file():
            log.info("rotating the log file (pcp_log_rotate)")
            return True
        log.info("pcp_log_rotate: the proxy logs to no file of its own; "
                 "nothing to rotate")
        return False

    def invalidate_query_cache(self) -> "defer.Deferred[None]":
        cache = self.core.query_cache
        if cache is None:
            raise AdminError("query cache is not enabled",
                             "memory_cache_enabled is off",
                             OBJECT_NOT_IN_PREREQUISITE_STATE)
        method = self.core.config.memqcache_method

        def cleared(_: object) -> None:
            log.info("query cache invalidated by PCP request "
                     "(memqcache_method: {method})", method=method)

        # The store's Deferred never fails (memcached outages are logged by
        # the store and answer "done").
        return defer.maybeDeferred(cache.clear).addCallback(cleared)

    def _process_row(self, session: Any) -> ProcessInfo:
        """
        Best effort: the session's own facts and those of the pooled
        connection it holds, converted from the reactor's clock to POSIX
        times.
        """
        now = time.time()
        reactor: Any = self.core.reactor
        clock = reactor.seconds()

        def posix(seconds: Optional[float]) -> str:
            return format_timestamp(now - (clock - seconds)) if seconds else ""

        conn = session.connection
        backend = conn.backend if conn is not None else None
        in_use = conn is not None and conn.in_use
        return ProcessInfo((
            str(session.process_id), format_timestamp(session.connected_at),
            str(conn.sessions_served) if conn else "0",
            str(conn.pool_id) if conn else "0",
            str(conn.key.node_id) if conn else "0",
            session.database or "", session.user or "",
            posix(conn.created_at) if conn else "",
            posix(conn.client_connected_at) if conn else "",
            posix(conn.client_disconnected_at) if conn else "",
            str(int(clock - conn.last_used_at)) if conn and not in_use else "0",
            "3", "0",
            str(conn.sessions_served) if conn else "0",
            str(backend.process_id) if backend is not None else "0",
            "1" if in_use else "0",
            "Execute command" if backend is not None and getattr(backend, "busy", False)
            else "Idle",
        ))
