"""
The health check (Pgpool-II's health check processes, one per node).

Every C{health_check_period} seconds each node that is not down is
checked: a new connection, a login as C{health_check_user} to
C{health_check_database} (empty: C{postgres}, then C{template1}), and one
trivial query, C{SELECT pg_is_in_recovery()}, all within
C{health_check_timeout}.  A failed check is retried up to
C{health_check_max_retries} times, C{health_check_retry_delay} seconds
apart; when the last retry fails too, the node is reported to the
L{twisted_pgpool.cluster.failover.FailoverManager}, which fails it over.  Every
setting can be overridden per node (C{backends[].health_check_period}...).

A node that answers the login with C{53300} (no free connection slot) is
up, only full: the check ends there without a failure, with a warning and
in L{HealthCheckStats.refused_count}.  Failing over an overloaded primary
would end every session on it and promote a standby while the old primary
still runs; a server that is down refuses the TCP connection, does not
answer, or says it is shutting down or starting up
(C{57P01}/C{57P02}/C{57P03}), and those still fail the check.

Two layers:

  - L{NodeHealthCheck}: the plain state machine of one node's checks:
    whether a period's check runs or is skipped, whether a failure is
    retried or final, and Pgpool-II's statistics (C{SHOW
    POOL_HEALTH_CHECK_STATS}).  No I/O, no reactor: tested with calls.
  - L{HealthMonitor}: the service that runs the checks on a
    C{LoopingCall} per node, applies the state machine's decisions, and
    does the two extras Pgpool-II hangs on the health check:
    C{auto_failback} (a down standby streaming from the primary again is
    attached again) and C{detach_false_primary} (a standby that says it is
    not in recovery while the primary still is the primary is detached).

A check never blocks the reactor, never overlaps the previous one of the
same node (a period that comes while one runs is skipped), and nothing it
meets stops the loop: an unexpected error is logged and the next period
checks again.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import attr
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_pgpool import logs
from twisted_pgpool.backend.protocol import BackendCredentials, InternalResult
from twisted_pgpool.cluster.model import (
    ROLE_PRIMARY,
    STATUS_DOWN,
    STATUS_UNUSED,
    Node,
)
from twisted_pgpool.cluster.nodecheck import CheckFailed, check_credentials, run_check_query
from twisted_pgpool.cluster.replication import (
    DEFAULT_CHECK_TIMEOUT,
    SQL_REPLICATION_STATUS,
    QueryFunction,
    find_replication_row,
    parse_in_recovery,
    parse_replication_rows,
)
from twisted_pgpool.config import BackendConfig, ConfigError, PgpoolConfig

__all__ = [
    "BUSY",
    "CHECK",
    "HEALTH_CHECK_STATS_COLUMNS",
    "HealthCheckSettings",
    "HealthCheckStats",
    "HealthMonitor",
    "NodeDown",
    "NodeHealthCheck",
    "Retry",
    "SKIP",
    "auto_failback_due",
    "health_check_stats_rows",
    "is_false_primary",
]

log = Logger(observer=logs.observer)

#: The health check's query: trivial, and its answer tells a false primary.
SQL_HEALTH_CHECK = "SELECT pg_is_in_recovery()"

#: Databases tried when C{health_check_database} is empty.
DEFAULT_DATABASES = ("postgres", "template1")

# What a period does (L{NodeHealthCheck.begin}).
CHECK = "check"
SKIP = "skip"
BUSY = "busy"


# -- settings and statistics ------------------------------------------------------


@attr.s(auto_attribs=True, frozen=True)
class HealthCheckSettings:
    """
    One node's health check settings, per-node overrides applied.

    @ivar period: seconds between checks; 0 turns them off.
    @ivar timeout: seconds one attempt may take (connect, login, query).
    @ivar max_retries: failed attempts retried before the node is down.
    @ivar retry_delay: seconds between attempts.
    """

    period: float
    timeout: float
    max_retries: int
    retry_delay: float

    @classmethod
    def for_node(cls, config: PgpoolConfig, backend: BackendConfig) -> "HealthCheckSettings":
        """
        The settings of C{backend}: its own value where it has one, else
        the global one.  A C{health_check_timeout} of 0 (Pgpool-II: wait
        for the TCP timeout) is bounded by C{connect_timeout} all the
        same, so that no check can hang.
        """

        def pick(own: Any, default: Any) -> Any:
            return default if own is None else own

        timeout = pick(backend.health_check_timeout, config.health_check_timeout)
        if timeout <= 0:
            timeout = config.connect_timeout or DEFAULT_CHECK_TIMEOUT
        return cls(
            period=pick(backend.health_check_period, config.health_check_period),
            timeout=timeout,
            max_retries=pick(backend.health_check_max_retries, config.health_check_max_retries),
            retry_delay=pick(backend.health_check_retry_delay, config.health_check_retry_delay),
        )

    @property
    def enabled(self) -> bool:
        return self.period > 0


@attr.s(auto_attribs=True)
class HealthCheckStats:
    """
    Pgpool-II's health check counters for one node (C{SHOW
    POOL_HEALTH_CHECK_STATS}); they start at zero with the process.

    Every period counts in C{total_count}; a period skipped because the
    node is down counts in C{skip_count} and not in the averages.
    Durations are seconds here (the report shows milliseconds), times
    POSIX timestamps (L{None}: never).

    @ivar refused_count: checks the node answered by refusing the
        connection for want of a free slot (C{53300}); they count as
        successes in Pgpool-II's columns (the node is up) and are reported
        apart, as C{twisted_pgpool_health_check_refused_total}.
    """

    total_count: int = 0
    success_count: int = 0
    fail_count: int = 0
    skip_count: int = 0
    retry_count: int = 0
    max_retry_count: int = 0
    total_duration: float = 0.0
    max_duration: float = 0.0
    min_duration: Optional[float] = None
    last_health_check: Optional[float] = None
    last_successful_health_check: Optional[float] = None
    last_skip_health_check: Optional[float] = None
    last_failed_health_check: Optional[float] = None
    refused_count: int = 0

    @property
    def checked_count(self) -> int:
        """
        Periods that ran a check (not skipped).
        """
        return self.total_count - self.skip_count

    @property
    def average_retry_count(self) -> float:
        checked = self.checked_count
        return self.retry_count / checked if checked > 0 else 0.0

    @property
    def average_duration(self) -> float:
        """
        Seconds, over the periods that ran a check.
        """
        checked = self.checked_count
        return self.total_duration / checked if checked > 0 else 0.0


# -- the state machine of one node --------------------------------------------------


@attr.s(auto_attribs=True, frozen=True)
class Retry:
    """
    An attempt failed and is retried after C{delay} seconds.

    @ivar retry: which retry this is (1 for the first).
    """

    delay: float
    retry: int


@attr.s(auto_attribs=True, frozen=True)
class NodeDown:
    """
    The last attempt of a check failed: the node is down.

    @ivar reason: the last attempt's failure.
    @ivar retries: how many retries were made.
    """

    reason: str
    retries: int


@attr.s(auto_attribs=True)
class NodeHealthCheck:
    """
    The health check of one node, as a state machine the service drives:
    L{begin} each period; then, for each attempt of a check,
    L{attempt_failed} or L{attempt_succeeded}; L{abandon} when a check is
    cut short without a verdict.

    Times come from the caller: C{now} is a monotonic clock (the
    reactor's, for durations), C{wall} POSIX time (for the report).

    @ivar running: a check is in progress (a period that comes now is
        skipped, never overlapped).
    @ivar retries: retries made so far in the current check.
    @ivar in_recovery: the node's last C{pg_is_in_recovery()} answer
        (L{None}: unknown).
    @ivar last_auto_failback: C{now} of the last automatic failback.
    """

    node_id: int
    settings: HealthCheckSettings
    stats: HealthCheckStats = attr.ib(factory=HealthCheckStats)
    running: bool = False
    retries: int = 0
    started_at: float = 0.0
    in_recovery: Optional[bool] = None
    last_auto_failback: Optional[float] = None

    def begin(self, status: str, now: float, wall: float) -> str:
        """
        A period came.

        @param status: the node's status now.
        @return: L{CHECK} (run the first attempt), L{SKIP} (the node is
            down or unused: Pgpool-II does not check it) or L{BUSY} (the
            previous check still runs; nothing is counted).
        """
        if self.running:
            return BUSY
        self.stats.total_count += 1
        if status in (STATUS_DOWN, STATUS_UNUSED):
            self.stats.skip_count += 1
            self.stats.last_skip_health_check = wall
            self.in_recovery = None
            return SKIP
        self.running = True
        self.retries = 0
        self.started_at = now
        self.stats.last_health_check = wall
        return CHECK

    def attempt_failed(self, reason: str, now: float, wall: float) -> Union[Retry, NodeDown]:
        """
        The current attempt failed.

        @return: L{Retry} while retries remain, else L{NodeDown} (the
            check is over).
        """
        if not self.running:
            raise RuntimeError("no health check is running")
        if self.retries < self.settings.max_retries:
            self.retries += 1
            self.stats.retry_count += 1
            return Retry(self.settings.retry_delay, self.retries)
        self._finish(now)
        self.stats.fail_count += 1
        self.stats.last_failed_health_check = wall
        self.in_recovery = None
        return NodeDown(reason, self.retries)

    def attempt_succeeded(self, now: float, wall: float, in_recovery: Optional[bool] = None) -> int:
        """
        The current attempt succeeded: the check is over.

        @param in_recovery: the node's C{pg_is_in_recovery()}, if read.
        @return: how many retries it took.
        """
        if not self.running:
            raise RuntimeError("no health check is running")
        self._finish(now)
        self.stats.success_count += 1
        self.stats.last_successful_health_check = wall
        self.in_recovery = in_recovery
        return self.retries

    def attempt_refused(self, now: float, wall: float) -> int:
        """
        The node answered the current attempt by refusing the connection
        for want of a free slot (C{53300}): it is up, only full.  The check
        is over, as a success (the node answers) that is also counted in
        C{refused_count}; its C{pg_is_in_recovery()} is unknown.  Retrying
        would only ask the full server for another slot.

        @return: how many retries were made before.
        """
        retries = self.attempt_succeeded(now, wall, None)
        self.stats.refused_count += 1
        return retries

    def abandon(self) -> None:
        """
        The check ended without a verdict (the service stopped, or the
        check met an unexpected error): it counts neither way.
        """
        self.running = False

    def _finish(self, now: float) -> None:
        self.running = False
        duration = max(0.0, now - self.started_at)
        stats = self.stats
        stats.total_duration += duration
        stats.max_duration = max(stats.max_duration, duration)
        if stats.min_duration is None or duration < stats.min_duration:
            stats.min_duration = duration
        stats.max_retry_count = max(stats.max_retry_count, self.retries)


def auto_failback_due(check: NodeHealthCheck, now: float, interval: float) -> bool:
    """
    Whether C{auto_failback_interval} has passed since this node's last
    automatic failback (the first may come at any time).
    """
    return check.last_auto_failback is None or now - check.last_auto_failback >= interval


def is_false_primary(
    node: Node,
    in_recovery: Optional[bool],
    primary: Optional[Node],
    primary_in_recovery: Optional[bool],
) -> bool:
    """
    C{detach_false_primary}, kept simple: a node the proxy treats as a
    standby says it is not in recovery, while the proxy's primary is up
    and said the same at its own last check.  (When the primary is down,
    or now says it is in recovery, the roles are changing and the primary
    search decides instead.)
    """
    return (
        node.role != ROLE_PRIMARY
        and in_recovery is False
        and primary is not None
        and primary is not node
        and primary.is_usable
        and primary_in_recovery is False
    )


# -- the report -------------------------------------------------------------------------

#: C{SHOW POOL_HEALTH_CHECK_STATS}'s columns (Pgpool-II 4.2+).
HEALTH_CHECK_STATS_COLUMNS = (
    "node_id",
    "hostname",
    "port",
    "status",
    "role",
    "last_status_change",
    "total_count",
    "success_count",
    "fail_count",
    "skip_count",
    "retry_count",
    "average_retry_count",
    "max_retry_count",
    "max_duration",
    "min_duration",
    "average_duration",
    "last_health_check",
    "last_successful_health_check",
    "last_skip_health_check",
    "last_failed_health_check",
)


def _timestamp(seconds: Optional[float]) -> str:
    if not seconds:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _milliseconds(seconds: Optional[float]) -> str:
    return str(int(round((seconds or 0.0) * 1000)))


def health_check_stats_rows(monitor: "HealthMonitor") -> Tuple[Sequence[str], List[List[str]]]:
    """
    C{SHOW POOL_HEALTH_CHECK_STATS}: Pgpool-II's 20 columns, one row per
    node, every value text.  Durations are whole milliseconds, averages
    C{%f}; a time never reached is empty; C{role} is C{primary}/C{standby}
    in streaming replication mode, C{main}/C{replica} otherwise.
    """
    nodes = monitor.cluster.nodes
    streaming = monitor.config.backend_clustering_mode == "streaming_replication"
    main = next((n.node_id for n in nodes if n.is_usable), -1)
    rows = []
    for node in nodes:
        stats = monitor.stats(node.node_id)
        if streaming:
            role = "primary" if node.role == ROLE_PRIMARY else "standby"
        else:
            role = "main" if node.node_id == main else "replica"
        rows.append(
            [
                str(node.node_id),
                node.hostname,
                str(node.port),
                node.status,
                role,
                _timestamp(node.last_status_change),
                str(stats.total_count),
                str(stats.success_count),
                str(stats.fail_count),
                str(stats.skip_count),
                str(stats.retry_count),
                f"{stats.average_retry_count:f}",
                str(stats.max_retry_count),
                _milliseconds(stats.max_duration),
                _milliseconds(stats.min_duration),
                f"{stats.average_duration * 1000:f}",
                _timestamp(stats.last_health_check),
                _timestamp(stats.last_successful_health_check),
                _timestamp(stats.last_skip_health_check),
                _timestamp(stats.last_failed_health_check),
            ]
        )
    return HEALTH_CHECK_STATS_COLUMNS, rows


def pg_status(monitor: Optional["HealthMonitor"], node_id: int) -> str:
    """
    Pgpool-II 4.3's C{pg_status} (C{SHOW POOL_NODES}, C{pcp_node_info}):
    whether the server itself answers, apart from the proxy's view of it
    (a detached node may be C{down} with its server C{up}).  Pgpool-II
    pings the server when asked; here it is the last health check's
    verdict, which costs the report nothing (L{pg_status_of}).
    """
    if monitor is None or node_id >= len(monitor.checks):
        return "unknown"
    check = monitor.checks[node_id]
    return pg_status_of(
        check.stats.last_successful_health_check,
        check.stats.last_failed_health_check,
        check.settings.enabled,
    )


def pg_status_of(
    last_success: Optional[float], last_failure: Optional[float], enabled: bool
) -> str:
    """
    C{up} when the last health check succeeded, C{down} when it failed
    after its retries, C{unknown} before the first check and whenever
    health checks are off (C{health_check_period} 0, where Pgpool-II also
    shows C{unknown}).
    """
    if not enabled or (not last_success and not last_failure):
        return "unknown"
    return "up" if (last_success or 0.0) >= (last_failure or 0.0) else "down"


# -- the service ------------------------------------------------------------------------


class HealthMonitor(Service):
    """
    Runs the health check of every node with a non-zero period, each on
    its own C{LoopingCall} (first check at start), and reports nodes that
    fail it to the failover manager.

    @ivar checks: one L{NodeHealthCheck} per node, by id.
    @ivar credentials: who the checks log in as.
    """

    name = "health"  # type: ignore[assignment]

    def __init__(
        self,
        reactor,
        core,
        *,
        failover=None,
        credentials: Optional[BackendCredentials] = None,
        query: QueryFunction = run_check_query,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """
        @param reactor: an C{IReactorTime} (and what C{query} needs to
            connect).
        @param core: the shared proxy state: its C{config}, C{cluster},
            C{authenticator.passwd} (for C{health_check_user}'s password),
            C{sr_check_credentials} (for C{auto_failback}) and
            C{failover} (when C{failover} is not given) are used.
        @param failover: what failing nodes are reported to (its
            C{node_failed} and C{attach}); C{core.failover} by default.
        @param credentials: who to log in as; from C{health_check_user},
            C{health_check_password} and pool_passwd by default.
        @param query: how to run a check query; the real client unless
            testing.
        @param wall_clock: POSIX time, for the report.
        @raise ConfigError: the password of C{health_check_user} cannot be
            used.
        """
        self.reactor = reactor
        self.core = core
        self.config: PgpoolConfig = core.config
        self.cluster = core.cluster
        self._failover = failover
        self.query = query
        self.wall_clock = wall_clock
        if credentials is None:
            credentials = self._credentials_from_config()
        self.credentials = credentials
        self.checks = [
            NodeHealthCheck(node.node_id, HealthCheckSettings.for_node(self.config, node.config))
            for node in self.cluster.nodes
        ]
        self._loops: Dict[int, LoopingCall] = {}
        self._running: Dict[int, defer.Deferred] = {}

    def _credentials_from_config(self) -> BackendCredentials:
        config = self.config
        passwd = getattr(getattr(self.core, "authenticator", None), "passwd", None)
        if passwd is None or not config.health_check_user:
            return BackendCredentials(
                config.health_check_user, password=config.health_check_password or None
            )
        try:
            return check_credentials(
                config, passwd, config.health_check_user, config.health_check_password
            )
        except Exception as e:
            raise ConfigError(f"{config.source}: password of health_check_user: {e}")

    @property
    def failover(self):
        """
        The failover manager failures are reported to.
        """
        if self._failover is not None:
            return self._failover
        return getattr(self.core, "failover", None)

    def stats(self, node_id: int) -> HealthCheckStats:
        """
        The health check statistics of a node.
        """
        return self.checks[node_id].stats

    # -- lifecycle ----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._schedule()

    def reconfigure(self, config: PgpoolConfig, credentials: BackendCredentials) -> None:
        """
        Apply a reloaded configuration (L{twisted_pgpool.admin.reload}): every
        node's settings are worked out again, a node added to the cluster
        gets a check of its own, and checks whose period changed are
        rescheduled.  A check running now finishes with the settings it
        started with; the statistics are kept.

        @param credentials: who the checks log in as from now on.
        """
        self.config = config
        self.credentials = credentials
        for node in self.cluster.nodes:
            settings = HealthCheckSettings.for_node(config, node.config)
            if node.node_id < len(self.checks):
                self.checks[node.node_id].settings = settings
            else:
                self.checks.append(NodeHealthCheck(node.node_id, settings))
        if self.running:
            self._schedule()

    def _schedule(self) -> None:
        """
        Keep one loop per enabled check, at its period: a loop that is new
        checks at once, one whose period changed checks one new period
        from now, and loops no longer wanted stop.
        """
        wanted = {c.node_id: c.settings.period for c in self.checks if c.settings.enabled}
        if wanted and not self.credentials.user:
            log.warn(
                "health_check_user is empty: health checks are off "
                "although health_check_period is set"
            )
            wanted = {}
        rescheduled = set()
        for node_id, loop in list(self._loops.items()):
            if wanted.get(node_id) != loop.interval:
                del self._loops[node_id]
                rescheduled.add(node_id)
                if loop.running:
                    loop.stop()
        for node_id, period in sorted(wanted.items()):
            if node_id in self._loops:
                continue
            loop = LoopingCall(self._tick, node_id)
            loop.clock = self.reactor
            self._loops[node_id] = loop
            loop.start(period, now=node_id not in rescheduled).addErrback(
                self._loop_failed, node_id
            )

    def stopService(self) -> None:
        super().stopService()
        loops, self._loops = self._loops, {}
        for loop in loops.values():
            if loop.running:
                loop.stop()
        for d in list(self._running.values()):
            d.cancel()

    def _loop_failed(self, failure: Failure, node_id: int) -> None:
        # _tick catches everything, so this would be a bug here.
        log.failure("the health check loop of node {node_id} stopped", failure, node_id=node_id)

    # -- one period ------------------------------------------------------------------

    def _tick(self, node_id: int) -> None:
        try:
            self._period(node_id)
        except Exception:
            log.failure("health check of node {node_id} failed", node_id=node_id)

    def _period(self, node_id: int) -> None:
        if node_id in self._running:
            log.debug(
                "health check of node {node_id} still running; skipping this period",
                node_id=node_id,
            )
            return
        node = self.cluster.nodes[node_id]
        check = self.checks[node_id]
        decision = check.begin(node.status, self.reactor.seconds(), self.wall_clock())
        if decision == BUSY:
            return
        if decision == SKIP:
            if self._auto_failback_wanted(node, check):
                self._start(node_id, self._auto_failback(node, check))
            return
        self._start(node_id, self._check(node, check))

    def _start(self, node_id: int, work) -> None:
        d = defer.Deferred.fromCoroutine(work)
        self._running[node_id] = d

        def failed(failure: Failure) -> None:
            check = self.checks[node_id]
            check.abandon()
            if not failure.check(defer.CancelledError):
                log.failure("health check of node {node_id} failed", failure, node_id=node_id)

        def over(_: object) -> None:
            if self._running.get(node_id) is d:
                del self._running[node_id]

        d.addErrback(failed)
        d.addBoth(over)

    # -- checking ----------------------------------------------------------------------

    async def _check(self, node: Node, check: NodeHealthCheck) -> None:
        while True:
            try:
                in_recovery = await self._attempt(node, check.settings.timeout)
            except CheckFailed as e:
                if e.node_refuses_connections:
                    check.attempt_refused(self.reactor.seconds(), self.wall_clock())
                    log.warn(
                        "health check on DB node: {node_id}: the node is up but "
                        "refuses more connections, not counted as a failure: "
                        "{reason}",
                        node_id=node.node_id,
                        reason=e.reason,
                    )
                    return
                decision = check.attempt_failed(e.reason, self.reactor.seconds(), self.wall_clock())
                if isinstance(decision, Retry):
                    log.info(
                        "health check retrying on DB node: {node_id} (round:{round}): {reason}",
                        node_id=node.node_id,
                        round=decision.retry,
                        reason=e.reason,
                    )
                    await deferLater(self.reactor, decision.delay, lambda: None)
                    if node.status in (STATUS_DOWN, STATUS_UNUSED):
                        # Detached meanwhile (a session's report, an
                        # administrator): nothing left to decide.
                        check.abandon()
                        return
                    continue
                self._node_down(node, decision)
                return
            retries = check.attempt_succeeded(
                self.reactor.seconds(), self.wall_clock(), in_recovery
            )
            if retries:
                log.info(
                    "health check retrying on DB node: {node_id} succeeded", node_id=node.node_id
                )
            self._check_false_primary(node, in_recovery)
            return

    async def _attempt(self, node: Node, timeout: float) -> Optional[bool]:
        """
        One attempt: connect, log in, ask C{pg_is_in_recovery()}, within
        C{timeout} seconds in all.

        @return: the answer (L{None} if it could not be read).
        @raise CheckFailed: the attempt failed.
        """
        attempt = defer.Deferred.fromCoroutine(self._query_node(node, timeout))
        attempt.addTimeout(timeout, self.reactor)
        try:
            result = await attempt
        except defer.TimeoutError:
            raise CheckFailed(
                node.node_id,
                f"node {node.node_id} ({node.hostname}:{node.port}) did not "
                f"answer the health check within {timeout:g} s",
            ) from None
        try:
            return parse_in_recovery(result)
        except ValueError:
            return None

    async def _query_node(self, node: Node, timeout: float) -> InternalResult:
        configured = self.config.health_check_database
        databases = (configured,) if configured else DEFAULT_DATABASES
        for index, database in enumerate(databases):
            try:
                return await defer.ensureDeferred(
                    self.query(
                        self.reactor, node, self.credentials, database, SQL_HEALTH_CHECK, timeout
                    )
                )
            except CheckFailed as e:
                # The server answered but refused this database: try the
                # next one.  Unreachable is unreachable whatever the
                # database, and full is full.
                if e.sqlstate is None or e.node_refuses_connections or index == len(databases) - 1:
                    raise
                log.debug(
                    "health check of node {node_id} could not use database {database}: {reason}",
                    node_id=node.node_id,
                    database=database,
                    reason=e.reason,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _node_down(self, node: Node, verdict: NodeDown) -> None:
        timed_out = 1 if "did not answer" in verdict.reason else 0
        if not node.config.allow_to_failover:
            log.warn(
                "health check failed on node {node_id} but failover is "
                "disallowed for the node: {reason}",
                node_id=node.node_id,
                reason=verdict.reason,
            )
            return
        log.warn(
            "health check failed on node {node_id} (timeout:{timeout}): {reason}",
            node_id=node.node_id,
            timeout=timed_out,
            reason=verdict.reason,
        )
        reason = f"health check failed: {verdict.reason}"
        failover = self.failover
        if failover is None:
            # Nobody to fail it over: at least stop sending it work.
            self.cluster.set_status(node, STATUS_DOWN, reason)
            return
        failover.node_failed(node.node_id, reason)

    def _check_false_primary(self, node: Node, in_recovery: Optional[bool]) -> None:
        if (
            not self.config.detach_false_primary
            or self.config.backend_clustering_mode != "streaming_replication"
        ):
            return
        primary = self.cluster.primary()
        primary_answer = self.checks[primary.node_id].in_recovery if primary is not None else None
        if not is_false_primary(node, in_recovery, primary, primary_answer):
            return
        assert primary is not None
        log.warn(
            "verify_backend_node_status: detach false primary node "
            "{node_id} (primary is node {primary_id})",
            node_id=node.node_id,
            primary_id=primary.node_id,
        )
        failover = self.failover
        if failover is not None:
            failover.node_failed(
                node.node_id,
                f"false primary: not in recovery while node {primary.node_id} is the primary",
            )

    # -- auto_failback -----------------------------------------------------------------

    def _auto_failback_wanted(self, node: Node, check: NodeHealthCheck) -> bool:
        config = self.config
        if (
            not config.auto_failback
            or node.status != STATUS_DOWN
            or config.backend_clustering_mode != "streaming_replication"
        ):
            return False
        if node.role == ROLE_PRIMARY or not node.config.application_name:
            return False
        failover = self.failover
        if failover is None or getattr(failover, "busy", False):
            return False
        if self.cluster.primary() is None:
            return False
        return auto_failback_due(check, self.reactor.seconds(), config.auto_failback_interval)

    def _replication_credentials(self) -> BackendCredentials:
        credentials = getattr(self.core, "sr_check_credentials", None)
        if credentials is not None and credentials.user:
            return credentials
        return self.credentials

    async def _auto_failback(self, node: Node, check: NodeHealthCheck) -> None:
        """
        Attach a down standby again if the primary's
        C{pg_stat_replication} shows it C{streaming} under its
        C{application_name}, and it passes a health check itself.
        """
        primary = self.cluster.primary()
        if primary is None:
            return
        timeout = check.settings.timeout
        credentials = self._replication_credentials()
        asking = defer.ensureDeferred(
            self.query(
                self.reactor,
                primary,
                credentials,
                self.config.sr_check_database,
                SQL_REPLICATION_STATUS,
                timeout,
            )
        )
        asking.addTimeout(timeout, self.reactor)
        try:
            rows = parse_replication_rows(await asking)
        except (CheckFailed, ValueError, defer.TimeoutError) as e:
            log.debug(
                "auto_failback: cannot read pg_stat_replication on the primary: {error}", error=e
            )
            return
        row = find_replication_row(rows, node.config.application_name)
        if row is None or row.state != "streaming":
            log.debug("auto_failback: node {node_id} is not streaming", node_id=node.node_id)
            return
        try:
            await self._attempt(node, timeout)
        except CheckFailed as e:
            log.debug(
                "auto_failback: node {node_id} streams but fails the health check: {reason}",
                node_id=node.node_id,
                reason=e.reason,
            )
            return
        failover = self.failover
        if failover is None or node.status != STATUS_DOWN:
            return
        check.last_auto_failback = self.reactor.seconds()
        log.info("request auto failback, node id:{node_id}", node_id=node.node_id)
        d = failover.attach(node.node_id, "auto_failback: streaming from the primary again")
        d.addErrback(
            lambda f: log.failure("auto failback of node {node_id} failed", f, node_id=node.node_id)
        )
