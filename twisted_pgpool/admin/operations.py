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

The interface and the records the operations return are in
L{twisted_pgpool.admin.model}; their names are importable from here too.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, List, Optional

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from twisted_pgpool import logs
from twisted_pgpool.admin.model import (
    CONFIG_FILE_ERROR,
    HEALTH_CHECK_COLUMNS,
    INVALID_PARAMETER_VALUE,
    NODE_COLUMNS,
    OBJECT_NOT_IN_PREREQUISITE_STATE,
    PROCESS_COLUMNS,
    AdminError,
    ConfigParameter,
    HealthCheckStats,
    IAdminBackend,
    NodeInfo,
    ProcessInfo,
    format_timestamp,
)
from twisted_pgpool.admin.recovery import OnlineRecovery, RecoveryFailed
from twisted_pgpool.admin.reload import ReloadError
from twisted_pgpool.admin.shutdown import SHUTDOWN_MODES
from twisted_pgpool.cluster.failover import FailoverError
from twisted_pgpool.cluster.health import pg_status_of
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
        raise AdminError(
            failed,
            f"invalid node ID {node_id}: the nodes are 0 to {len(nodes) - 1}",
            INVALID_PARAMETER_VALUE,
        )
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


def detach_node(
    backend: IAdminBackend, node_id: int, gracefully: bool = False
) -> "defer.Deferred[None]":
    """
    C{pcp_detach_node [-g]}: take a node out of service.
    """
    try:
        node = _check_node_id(backend, node_id, "detach node failed")
        if node.status == STATUS_DOWN:
            raise AdminError(
                "detach node failed",
                f"node {node_id} is already down",
                OBJECT_NOT_IN_PREREQUISITE_STATE,
            )
    except AdminError:
        return defer.fail()
    return defer.maybeDeferred(backend.detach, node_id, gracefully)


def promote_node(
    backend: IAdminBackend, node_id: int, switchover: bool = False
) -> "defer.Deferred[None]":
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
                errors.FEATURE_NOT_SUPPORTED,
            )
        if node.role == "primary":
            raise AdminError(
                "promote node failed",
                f"specified node is already primary node, can't promote node id {node_id}",
                OBJECT_NOT_IN_PREREQUISITE_STATE,
            )
        if node.status == STATUS_DOWN:
            raise AdminError(
                "promote node failed",
                f"node {node_id} is down; attach it first",
                OBJECT_NOT_IN_PREREQUISITE_STATE,
            )
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
        return defer.fail(
            AdminError(
                "process recovery request failed",
                f"node id {node_id} is not valid",
                INVALID_PARAMETER_VALUE,
            )
        )
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
    return defer.maybeDeferred(backend.invalidate_query_cache).addCallback(lambda _: None)


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
        raise AdminError(
            "PCP: error while processing shutdown request",
            f'invalid shutdown mode "{mode}"',
            INVALID_PARAMETER_VALUE,
        )
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

    def __init__(
        self,
        core: "ProxyCore",
        failover: Any = None,
        health: Any = None,
        reloader: Any = None,
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
        self.recovery = (
            recovery
            if recovery is not None
            else OnlineRecovery(getattr(core, "reactor", None), core, self._attach_recovered)
        )

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
            result.append(
                NodeInfo(
                    node_id=node.node_id,
                    hostname=node.hostname,
                    port=node.port,
                    status=node.status,
                    pg_status=self._pg_status(node),
                    lb_weight=node.config.weight / total,
                    role=role,
                    pg_role=pg_role,
                    select_cnt=node.select_count,
                    replication_delay=delay,
                    replication_delay_bytes=node.replication_delay,
                    replication_state=state,
                    replication_sync_state=sync_state,
                    last_status_change=node.last_status_change,
                )
            )
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
        return pg_status_of(
            stats.last_successful_health_check,
            stats.last_failed_health_check,
            self.core.config.health_check_period > 0,
        )

    def attach(self, node_id: int) -> "defer.Deferred[None]":
        reason = "attached by pcp_attach_node"
        if self.failover is not None:
            return defer.maybeDeferred(self.failover.attach, node_id, reason).addErrback(
                _refused, "attach node failed"
            )
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
            return defer.maybeDeferred(self.failover.attach, node_id, reason).addErrback(
                _refused, "node recovery failed"
            )
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
        self.core.end_sessions_using(
            node_id,
            errors.fatal(
                errors.ADMIN_SHUTDOWN, f"backend node {node_id} was detached by an administrator"
            ),
        )
        return defer.succeed(None)

    def promote(self, node_id: int, switchover: bool) -> "defer.Deferred[None]":
        if self.failover is not None:
            return defer.maybeDeferred(
                self.failover.promote, node_id, switchover=switchover
            ).addErrback(_refused, "promote node failed")
        if switchover:
            return defer.fail(
                AdminError(
                    "promote node failed",
                    "a switchover needs the failover manager (failover_command)",
                    errors.FEATURE_NOT_SUPPORTED,
                )
            )
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
        sessions = sorted(
            (s for s in self.core.sessions if s.process_id), key=lambda s: s.process_id
        )
        if pid:
            sessions = [s for s in sessions if s.process_id == pid]
            if not sessions:
                raise AdminError(
                    "informing process info failed",
                    f"invalid process ID : {pid}",
                    INVALID_PARAMETER_VALUE,
                )
        return [self._process_row(s) for s in sessions]

    def reload_config(self) -> None:
        if self.reloader is None:
            raise AdminError(
                "process reload config request failed",
                "this proxy has no configuration file to reload",
                errors.FEATURE_NOT_SUPPORTED,
            )
        try:
            self.reloader.reload()
        except ReloadError as e:
            raise AdminError("process reload config request failed", str(e), CONFIG_FILE_ERROR)

    def shutdown(self, mode: str) -> None:
        if self.stopper is None:
            raise AdminError(
                "PCP: error while processing shutdown request",
                "this proxy cannot be stopped on request; stop the application that runs it",
                errors.FEATURE_NOT_SUPPORTED,
            )
        self.stopper.shutdown(mode)

    def rotate_log(self) -> bool:
        if self.rotate_log_file():
            log.info("rotating the log file (pcp_log_rotate)")
            return True
        log.info("pcp_log_rotate: the proxy logs to no file of its own; nothing to rotate")
        return False

    def invalidate_query_cache(self) -> "defer.Deferred[None]":
        cache = self.core.query_cache
        if cache is None:
            raise AdminError(
                "query cache is not enabled",
                "memory_cache_enabled is off",
                OBJECT_NOT_IN_PREREQUISITE_STATE,
            )
        method = self.core.config.memqcache_method

        def cleared(_: object) -> None:
            log.info(
                "query cache invalidated by PCP request (memqcache_method: {method})", method=method
            )

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
        return ProcessInfo(
            (
                str(session.process_id),
                format_timestamp(session.connected_at),
                str(conn.sessions_served) if conn else "0",
                str(conn.pool_id) if conn else "0",
                str(conn.key.node_id) if conn else "0",
                session.database or "",
                session.user or "",
                posix(conn.created_at) if conn else "",
                posix(conn.client_connected_at) if conn else "",
                posix(conn.client_disconnected_at) if conn else "",
                str(int(clock - conn.last_used_at)) if conn and not in_use else "0",
                "3",
                "0",
                str(conn.sessions_served) if conn else "0",
                str(backend.process_id) if backend is not None else "0",
                "1" if in_use else "0",
                "Execute command"
                if backend is not None and getattr(backend, "busy", False)
                else "Idle",
            )
        )


__all__ += [
    "CONFIG_FILE_ERROR",
    "HEALTH_CHECK_COLUMNS",
    "INVALID_PARAMETER_VALUE",
    "NODE_COLUMNS",
    "OBJECT_NOT_IN_PREREQUISITE_STATE",
    "PROCESS_COLUMNS",
    "format_timestamp",
]
