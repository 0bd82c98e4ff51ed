"""
Primary detection and the streaming replication check (Pgpool-II's
C{find_primary_node} and C{sr_check_worker}).

Two jobs, both asking the servers themselves:

  - L{find_primary}: which node is the primary?  The node flagged
    C{ALWAYS_PRIMARY} is, without asking; otherwise the one whose
    C{pg_is_in_recovery()} is false.
  - L{ReplicationMonitor}: every C{sr_check_period} seconds, how far behind
    the primary each standby is, in bytes of WAL and (from
    C{pg_stat_replication.replay_lag}) in seconds, and whether that is over
    C{delay_threshold} / C{delay_threshold_by_time}.  The answers go into
    the L{twisted_pgpool.cluster.model.Node} fields the balancer and
    C{SHOW POOL_NODES} read.

The decisions (who is primary among the answers, how big a delay is, who
is delayed, when to log it) are plain functions of plain values, tested
without I/O; the service only asks, and applies what they decide.
"""

from __future__ import annotations

import re
from typing import (
    Any,
    Callable,
    Coroutine,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
    cast,
)

import attr
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_pgpool import logs
from twisted_pgpool.backend.protocol import BackendCredentials, InternalResult
from twisted_pgpool.cluster.model import ROLE_PRIMARY, Cluster, Node
from twisted_pgpool.cluster.nodecheck import CheckFailed, run_check_query
from twisted_pgpool.config import PgpoolConfig

__all__ = [
    "DelayPolicy",
    "PG_ROLE_PRIMARY",
    "PG_ROLE_STANDBY",
    "PG_ROLE_UNKNOWN",
    "PrimaryElection",
    "QueryFunction",
    "ReplicationMonitor",
    "ReplicationRow",
    "StandbyAnswer",
    "StandbyState",
    "assess_standby",
    "delay_log_wanted",
    "elect_primary",
    "find_primary",
    "find_replication_row",
    "format_lsn",
    "is_delayed",
    "parse_lsn",
    "pool_nodes_columns",
    "replication_delay",
]

log = Logger(observer=logs.observer)

# What the servers say they are (SHOW POOL_NODES' pg_role column).
PG_ROLE_PRIMARY = "primary"
PG_ROLE_STANDBY = "standby"
PG_ROLE_UNKNOWN = "unknown"

SQL_IS_IN_RECOVERY = "SELECT pg_is_in_recovery()"
SQL_CURRENT_WAL_LSN = "SELECT pg_current_wal_lsn()"
SQL_REPLICATION_STATUS = (
    "SELECT application_name, state, sync_state, "
    "EXTRACT(EPOCH FROM replay_lag) FROM pg_stat_replication"
)
SQL_STANDBY_STATUS = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()"

#: SQLSTATE of "recovery is in progress": pg_current_wal_lsn() on a standby.
OBJECT_NOT_IN_PREREQUISITE_STATE = "55000"

#: Seconds allowed for one check query when C{connect_timeout} is 0
#: ("wait for the TCP timeout" in Pgpool-II): every check must be bounded.
DEFAULT_CHECK_TIMEOUT = 10.0

#: Signature of L{run_check_query}; tests inject a fake.
QueryFunction = Callable[
    [Any, Node, BackendCredentials, str, str, float],
    Union[Coroutine[Any, Any, InternalResult], "defer.Deferred[InternalResult]"],
]


# -- LSNs ------------------------------------------------------------------

_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\Z")


def parse_lsn(text: Union[str, bytes]) -> int:
    """
    Read a PostgreSQL C{pg_lsn} (C{"0/3000060"}: two hex halves of a
    64-bit WAL position) as an integer, so positions can be subtracted.

    @raise ValueError: not an LSN.
    """
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    match = _LSN.match(text.strip())
    if match is None:
        raise ValueError(f"not a WAL location: {text!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    """
    Write a WAL position as PostgreSQL does (C{%X/%X}).

    @raise ValueError: outside the 64-bit range.
    """
    if not 0 <= lsn < 1 << 64:
        raise ValueError(f"WAL location out of range: {lsn}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


# -- reading answers ---------------------------------------------------------


@attr.s(auto_attribs=True, frozen=True)
class ReplicationRow:
    """
    One row of the primary's C{pg_stat_replication}.

    @ivar replay_lag: seconds, or L{None} when the server shows NULL (a
        standby that has caught up and been idle for a while, or a check
        user without C{pg_monitor}, who sees NULL state columns too).
    """

    application_name: str
    state: str
    sync_state: str
    replay_lag: Optional[float]


@attr.s(auto_attribs=True, frozen=True)
class StandbyAnswer:
    """
    What a standby said to L{SQL_STANDBY_STATUS}.

    @ivar in_recovery: C{pg_is_in_recovery()}; false means it is a primary.
    @ivar replay_lsn: C{pg_last_wal_replay_lsn()}, L{None} when NULL.
    """

    in_recovery: bool
    replay_lsn: Optional[int]


def _text(value: Optional[bytes]) -> str:
    return "" if value is None else value.decode("utf-8", "replace")


def _boolean(value: Optional[bytes]) -> bool:
    if value == b"t":
        return True
    if value == b"f":
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _single_row(result: InternalResult, columns: int) -> Tuple[Optional[bytes], ...]:
    if len(result.rows) != 1 or len(result.rows[0]) != columns:
        raise ValueError(f"expected one row of {columns} column(s), got {result.rows!r}")
    return result.rows[0]


def parse_in_recovery(result: InternalResult) -> bool:
    """
    The answer to L{SQL_IS_IN_RECOVERY}.

    @raise ValueError: malformed.
    """
    return _boolean(_single_row(result, 1)[0])


def parse_primary_lsn(result: InternalResult) -> int:
    """
    The answer to L{SQL_CURRENT_WAL_LSN}.

    @raise ValueError: malformed.
    """
    value = _single_row(result, 1)[0]
    if value is None:
        raise ValueError("pg_current_wal_lsn() returned NULL")
    return parse_lsn(value)


def parse_standby_answer(result: InternalResult) -> StandbyAnswer:
    """
    The answer to L{SQL_STANDBY_STATUS}.

    @raise ValueError: malformed.
    """
    in_recovery, lsn = _single_row(result, 2)
    return StandbyAnswer(_boolean(in_recovery), None if lsn is None else parse_lsn(lsn))


def parse_replication_rows(result: InternalResult) -> List[ReplicationRow]:
    """
    The answer to L{SQL_REPLICATION_STATUS}.

    @raise ValueError: malformed.
    """
    rows = []
    for row in result.rows:
        if len(row) != 4:
            raise ValueError(f"expected 4 columns, got {row!r}")
        name, state, sync_state, lag = row
        rows.append(
            ReplicationRow(
                _text(name), _text(state), _text(sync_state), None if lag is None else float(lag)
            )
        )
    return rows


# -- decisions -----------------------------------------------------------------


@attr.s(auto_attribs=True, frozen=True)
class DelayPolicy:
    """
    When a standby counts as delayed, and when its delay is logged.

    @ivar delay_threshold: bytes of WAL; 0 means no byte threshold.
    @ivar delay_threshold_by_time: seconds of replay lag; 0 means none.
        When set it takes precedence over C{delay_threshold}.
    @ivar log_standby_delay: C{none}, C{always} or C{if_over_threshold}.
    """

    delay_threshold: int = 0
    delay_threshold_by_time: float = 0.0
    log_standby_delay: str = "if_over_threshold"

    @classmethod
    def from_config(cls, config: PgpoolConfig) -> "DelayPolicy":
        return cls(config.delay_threshold, config.delay_threshold_by_time, config.log_standby_delay)

    @property
    def by_time(self) -> bool:
        """
        Whether delay is measured (and shown) in seconds rather than bytes.
        """
        return self.delay_threshold_by_time > 0


@attr.s(auto_attribs=True, frozen=True)
class StandbyState:
    """
    What one check concluded about one standby; the values of the
    same-named L{Node} fields.
    """

    replay_lsn: int
    replication_delay: int
    replication_delay_seconds: Optional[float]
    replication_state: str
    replication_sync_state: str
    delayed: bool


def replication_delay(primary_lsn: int, standby_lsn: int) -> int:
    """
    Bytes of WAL the standby has yet to replay.  The two positions are read
    at slightly different moments, so a standby can seem ahead: that is 0.
    """
    return max(0, primary_lsn - standby_lsn)


def find_replication_row(
    rows: Sequence[ReplicationRow], application_name: str
) -> Optional[ReplicationRow]:
    """
    The C{pg_stat_replication} row of the standby whose walreceiver uses
    C{application_name} (the node's C{backend_application_name}); L{None}
    when the name is empty or no row has it.
    """
    if not application_name:
        return None
    for row in rows:
        if row.application_name == application_name:
            return row
    return None


def is_delayed(policy: DelayPolicy, delay_bytes: int, delay_seconds: Optional[float]) -> bool:
    """
    Whether a standby is too far behind to be given reads.

    By time when C{delay_threshold_by_time} is set and the replay lag is
    known; else by bytes when C{delay_threshold} is set; else never.  (A
    standby missing from C{pg_stat_replication} has no known lag, so the
    byte threshold, when there is one, still guards it.)
    """
    if policy.delay_threshold_by_time > 0 and delay_seconds is not None:
        return delay_seconds > policy.delay_threshold_by_time
    if policy.delay_threshold > 0:
        return delay_bytes > policy.delay_threshold
    return False


def assess_standby(
    policy: DelayPolicy,
    primary_lsn: int,
    replay_lsn: int,
    application_name: str,
    rows: Sequence[ReplicationRow],
) -> StandbyState:
    """
    Everything one check learns about one standby.

    @param primary_lsn: the primary's C{pg_current_wal_lsn()}.
    @param replay_lsn: the standby's C{pg_last_wal_replay_lsn()}.
    @param application_name: the node's C{backend_application_name}.
    @param rows: the primary's C{pg_stat_replication}.
    """
    delay = replication_delay(primary_lsn, replay_lsn)
    row = find_replication_row(rows, application_name)
    if row is None:
        seconds: Optional[float] = None
        state = sync_state = ""
    else:
        seconds = row.replay_lag
        if seconds is None and row.state:
            # NULL replay_lag on a visible row: nothing waits to be
            # replayed.  (With state NULL too, the check user just may not
            # see the details: the lag is unknown.)
            seconds = 0.0
        state, sync_state = row.state, row.sync_state
    return StandbyState(
        replay_lsn, delay, seconds, state, sync_state, is_delayed(policy, delay, seconds)
    )


def delay_log_wanted(policy: DelayPolicy, state: StandbyState) -> bool:
    """
    Whether this check's delay of a standby should be logged
    (C{log_standby_delay}): C{always} logs any delay above zero,
    C{if_over_threshold} a delayed standby, C{none} nothing.
    """
    if policy.log_standby_delay == "always":
        if policy.by_time and state.replication_delay_seconds is not None:
            return state.replication_delay_seconds > 0
        return state.replication_delay > 0
    if policy.log_standby_delay == "if_over_threshold":
        return state.delayed
    return False


@attr.s(auto_attribs=True, frozen=True)
class PrimaryElection:
    """
    The outcome of asking the nodes who is primary.

    @ivar primary_id: the chosen node, or L{None} when none claimed it.
    @ivar claimants: every node that said it is not in recovery, by id.
    """

    primary_id: Optional[int]
    claimants: Tuple[int, ...]


def elect_primary(
    answers: Mapping[int, Optional[bool]], current_primary_id: Optional[int]
) -> PrimaryElection:
    """
    Choose the primary from the nodes' C{pg_is_in_recovery()} answers.

    @param answers: node id to C{pg_is_in_recovery()}, L{None} for a node
        that did not answer.
    @param current_primary_id: the node the proxy treats as primary now.
    @return: the node that is not in recovery; of several (a split brain,
        or a promoted standby whose old primary still runs), the current
        primary if it is one of them, else the lowest id, so the choice
        does not flap from one check to the next.
    """
    claimants = tuple(
        sorted(node_id for node_id, in_recovery in answers.items() if in_recovery is False)
    )
    if not claimants:
        return PrimaryElection(None, ())
    if current_primary_id in claimants:
        return PrimaryElection(current_primary_id, claimants)
    return PrimaryElection(claimants[0], claimants)


def pool_nodes_columns(node: Node, config: PgpoolConfig) -> Tuple[str, str, str, str]:
    """
    The C{pg_role}, C{replication_delay}, C{replication_state} and
    C{replication_sync_state} columns of C{SHOW POOL_NODES} for a node, in
    Pgpool-II's formats: the delay in bytes, or C{"0.123456 second(s)"}
    when measured by time; C{pg_role} C{unknown} when the check is off
    (C{sr_check_period = 0}) or the node is down; in modes other than
    streaming replication C{pg_role} is the configured role and the rest
    are empty.
    """
    if config.backend_clustering_mode != "streaming_replication":
        return (node.role, "0", "", "")
    pg_role = node.pg_role if config.sr_check_period > 0 and node.is_usable else PG_ROLE_UNKNOWN
    if node.role == ROLE_PRIMARY:
        return (pg_role, "0", "", "")
    if config.delay_threshold_by_time > 0:
        delay = f"{node.replication_delay_seconds or 0.0:.6f} second(s)"
    else:
        delay = str(node.replication_delay)
    return (pg_role, delay, node.replication_state, node.replication_sync_state)


# -- asking the nodes ------------------------------------------------------------


def _ask(
    query: QueryFunction,
    reactor,
    node: Node,
    credentials: BackendCredentials,
    database: str,
    sql: str,
    timeout: float,
) -> "defer.Deferred[InternalResult]":
    """
    Run one check query with a timeout of our own, whatever C{query} does,
    so a check that never returns cannot hold up the caller.
    """
    try:
        d: defer.Deferred[InternalResult] = defer.ensureDeferred(
            query(reactor, node, credentials, database, sql, timeout)
        )
    except Exception:
        return defer.fail()

    def timed_out(failure: Failure) -> Failure:
        if failure.check(defer.TimeoutError):
            return Failure(
                CheckFailed(
                    node.node_id,
                    f"node {node.node_id} ({node.hostname}:{node.port}) did not "
                    f'answer "{sql}" within {timeout:g} s',
                )
            )
        return failure

    d.addTimeout(timeout, reactor)
    d.addErrback(timed_out)
    return d


def _raise_if_cancelled(results: Sequence[Tuple[bool, Any]]) -> None:
    """
    A query fails with CancelledError only when the caller cancelled the
    whole search or check (timeouts become L{CheckFailed}): stop there
    rather than record every node as unreachable.
    """
    for ok, value in results:
        if not ok and value.check(defer.CancelledError):
            raise defer.CancelledError()


def _log_node_failure(what: str, node: Node, failure: Failure) -> None:
    if failure.check(defer.CancelledError):
        return
    if failure.check(CheckFailed, ValueError):
        log.warn(
            "{what} failed for node {node_id}: {reason}",
            what=what,
            node_id=node.node_id,
            reason=failure.getErrorMessage(),
        )
    else:
        log.failure("{what} failed for node {node_id}", failure, what=what, node_id=node.node_id)


async def find_primary(
    reactor,
    cluster: Cluster,
    credentials: BackendCredentials,
    database: str,
    timeout: float,
    query: QueryFunction = run_check_query,
    report: bool = True,
) -> Optional[Node]:
    """
    Find the primary node and make it the cluster's primary.

    The node flagged C{ALWAYS_PRIMARY} is the primary without asking.
    Otherwise every usable node is asked C{SELECT pg_is_in_recovery()} at
    once, each with C{timeout}; every node's C{pg_role} records its answer
    (C{unknown} for a node that is down or did not answer), and the choice
    among the nodes not in recovery is L{elect_primary}'s.

    @param query: how to ask a node; L{run_check_query} unless testing.
    @param report: log what each node answered and the outcome; a caller
        that asks every second while it waits for a primary logs only now
        and then, not two lines a second.
    @return: the primary, or L{None} when no node claims to be it (the
        cluster's roles are then left as they were).
    """
    for node in cluster.nodes:
        if node.config.always_primary:
            if node.role != ROLE_PRIMARY:
                cluster.set_primary(node, "flagged ALWAYS_PRIMARY")
            log.info(
                "find_primary_node: primary node is {node_id} (ALWAYS_PRIMARY)",
                node_id=node.node_id,
            )
            return node
    usable = [node for node in cluster.nodes if node.is_usable]
    for node in cluster.nodes:
        if not node.is_usable:
            node.pg_role = PG_ROLE_UNKNOWN
    results = await defer.DeferredList(
        [
            _ask(query, reactor, node, credentials, database, SQL_IS_IN_RECOVERY, timeout)
            for node in usable
        ],
        consumeErrors=True,
    )
    _raise_if_cancelled(results)
    answers: Dict[int, Optional[bool]] = {}
    for node, (ok, value) in zip(usable, results):
        in_recovery: Optional[bool] = None
        failure: Optional[Failure] = None if ok else cast(Failure, value)
        if ok:
            try:
                in_recovery = parse_in_recovery(value)
            except ValueError:
                failure = Failure()
        if failure is not None:
            node.pg_role = PG_ROLE_UNKNOWN
            if report:
                _log_node_failure("find_primary_node", node, failure)
        elif in_recovery:
            node.pg_role = PG_ROLE_STANDBY
            if report:
                log.info("find_primary_node: standby node is {node_id}", node_id=node.node_id)
        else:
            node.pg_role = PG_ROLE_PRIMARY
        answers[node.node_id] = in_recovery
    current = [node.node_id for node in cluster.nodes if node.role == ROLE_PRIMARY]
    election = elect_primary(answers, current[0] if current else None)
    if election.primary_id is None:
        if report:
            log.warn(
                "find_primary_node: no primary node found (asked nodes {asked})",
                asked=", ".join(str(n.node_id) for n in usable) or "none",
            )
        return None
    if len(election.claimants) > 1:
        log.warn(
            "find_primary_node: nodes {claimants} all claim to be the "
            "primary (not in recovery); using node {node_id}",
            claimants=", ".join(str(i) for i in election.claimants),
            node_id=election.primary_id,
        )
    primary = cluster.nodes[election.primary_id]
    if primary.role != ROLE_PRIMARY:
        cluster.set_primary(primary, "pg_is_in_recovery() is false")
    log.info("find_primary_node: primary node is {node_id}", node_id=primary.node_id)
    return primary


class ReplicationMonitor(Service):
    """
    Finds the primary when started, then every C{sr_check_period} seconds
    measures each standby's replication delay (Pgpool-II's C{sr_check}
    worker), recording the results on the cluster's nodes.

    A check connects to each node anew (as C{sr_check_user}, to
    C{sr_check_database}), asks all of them at once, and gives each query
    C{timeout} seconds.  Checks never overlap: a period that comes while
    one is still running is skipped.  Nothing a check meets stops the loop;
    failures are logged and the next period tries again.

    @ivar last_check_time: the reactor time the last check finished, or
        L{None} before the first.
    @ivar primary_lsn: the primary's C{pg_current_wal_lsn()} at the last
        check that got it.
    @ivar timeout: seconds allowed for each query.
    """

    name = "replication"  # type: ignore[assignment]

    def __init__(
        self,
        reactor,
        cluster: Cluster,
        config: PgpoolConfig,
        credentials: BackendCredentials,
        *,
        query: QueryFunction = run_check_query,
        timeout: Optional[float] = None,
    ) -> None:
        """
        @param reactor: an C{IReactorTime} (and whatever C{query} needs to
            connect: C{IReactorTCP}, C{IReactorUNIX}).
        @param credentials: from L{twisted_pgpool.cluster.nodecheck.check_credentials}.
        @param query: how to ask a node; L{run_check_query} unless testing.
        @param timeout: seconds per query; C{connect_timeout} by default
            (or L{DEFAULT_CHECK_TIMEOUT} when that is 0).
        """
        self.reactor = reactor
        self.cluster = cluster
        self.config = config
        self.credentials = credentials
        self.query = query
        # Follows connect_timeout across reloads unless given here.
        self._timeout_from_config = timeout is None
        if timeout is None:
            timeout = config.connect_timeout or DEFAULT_CHECK_TIMEOUT
        self.timeout = timeout
        self.policy = DelayPolicy.from_config(config)
        self.last_check_time: Optional[float] = None
        self.primary_lsn: Optional[int] = None
        self._loop: Optional[LoopingCall] = None
        self._running: Optional[defer.Deferred] = None
        self._waiters: List[defer.Deferred] = []
        self._primary_confirmed = False
        # "No usable primary" was logged, and is not again until one is back.
        self._no_primary_reported = False

    # -- lifecycle --------------------------------------------------------

    @property
    def _streaming_mode(self) -> bool:
        return self.config.backend_clustering_mode == "streaming_replication"

    @property
    def checks_enabled(self) -> bool:
        """
        Whether delay checks run: streaming replication mode, a check user,
        and a non-zero C{sr_check_period}.
        """
        return (
            self._streaming_mode and bool(self.credentials.user) and self.config.sr_check_period > 0
        )

    def startService(self) -> None:
        super().startService()
        if not self._streaming_mode:
            log.info(
                "backend_clustering_mode is {mode}: no primary search or "
                "streaming replication check",
                mode=self.config.backend_clustering_mode,
            )
            return
        if not self.credentials.user:
            if any(n.config.always_primary for n in self.cluster.nodes):
                self._start(self._search)
            elif self.cluster.nodes:
                log.warn(
                    "sr_check_user is empty: cannot ask the backends "
                    "which is the primary; node 0 is assumed to be the "
                    "primary"
                )
            if self.config.sr_check_period > 0:
                log.warn("sr_check_user is empty: the streaming replication delay check is off")
            return
        if self.config.sr_check_period <= 0:
            self._start(self._search)
            return
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.config.sr_check_period, now=True).addErrback(self._loop_failed)

    def stopService(self) -> None:
        super().stopService()
        self._stop_loop()
        if self._running is not None:
            self._running.cancel()

    def _stop_loop(self) -> None:
        if self._loop is not None:
            loop, self._loop = self._loop, None
            if loop.running:
                loop.stop()

    def reconfigure(self, config: PgpoolConfig, credentials: BackendCredentials) -> None:
        """
        Apply a reloaded configuration (L{twisted_pgpool.admin.reload}): the check
        user, database, query timeout and delay thresholds apply from the
        next check.  A changed C{sr_check_period} reschedules the checks
        (the next one a new period from now; at once if they were off), and
        checks turned off stop and clear the nodes' "delayed" marks, which
        nothing would lift any more.  The clustering mode is fixed at start.
        """
        self.config = config
        self.credentials = credentials
        if self._timeout_from_config:
            self.timeout = config.connect_timeout or DEFAULT_CHECK_TIMEOUT
        self.policy = DelayPolicy.from_config(config)
        if not self.running or not self._streaming_mode:
            return
        wanted = config.sr_check_period if self.checks_enabled else None
        current = self._loop.interval if self._loop is not None else None
        if wanted == current:
            return
        self._stop_loop()
        if wanted is None:
            for node in self.cluster.nodes:
                node.delayed = False
            return
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(wanted, now=current is None).addErrback(self._loop_failed)

    def _loop_failed(self, failure: Failure) -> None:
        # _tick catches everything, so this is a bug in this module.
        log.failure("the streaming replication check loop stopped", failure)

    # -- running checks -------------------------------------------------------

    def _tick(self) -> None:
        if self._running is not None:
            log.debug("streaming replication check still running; skipping this period")
            return
        self._start(self._check)

    def refresh_now(self) -> "defer.Deferred[None]":
        """
        Run a check now, or wait for the one already running.

        @return: fires with L{None} once that check is over (whatever it
            found; read the nodes and L{last_check_time}).  Fires at once
            when delay checks are off.
        """
        waiter: defer.Deferred[None] = defer.Deferred()
        if not self.checks_enabled:
            waiter.callback(None)
            return waiter
        self._waiters.append(waiter)
        if self._running is None:
            self._start(self._check)
        return waiter

    def _start(self, check: Callable[[], Coroutine[Any, Any, None]]) -> None:
        running: defer.Deferred[None] = defer.Deferred.fromCoroutine(check())
        self._running = running
        running.addErrback(self._check_failed)
        running.addBoth(self._check_over)

    def _check_failed(self, failure: Failure) -> None:
        if not failure.check(defer.CancelledError):
            log.failure("streaming replication check failed", failure)

    def _check_over(self, ignored: object) -> None:
        self._running = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _ask(self, node: Node, sql: str) -> "defer.Deferred[InternalResult]":
        return _ask(
            self.query,
            self.reactor,
            node,
            self.credentials,
            self.config.sr_check_database,
            sql,
            self.timeout,
        )

    async def _search(self, report: bool = True) -> None:
        found = await find_primary(
            self.reactor,
            self.cluster,
            self.credentials,
            self.config.sr_check_database,
            self.timeout,
            self.query,
            report=report,
        )
        self._primary_confirmed = found is not None

    async def _check(self) -> None:
        if not self._primary_confirmed or self.cluster.primary() is None:
            # Without a usable primary (none found yet, or it failed and the
            # failover found none), the nodes are asked again each period:
            # a standby promoted meanwhile becomes the primary here, and new
            # sessions use it.  What they answered is logged the first time.
            await self._search(report=not self._no_primary_reported)
        primary = self.cluster.primary()
        if primary is None:
            if not self._no_primary_reported:
                log.warn(
                    "streaming replication check skipped: no usable "
                    "primary node; the nodes are asked again every "
                    "sr_check_period"
                )
                self._no_primary_reported = True
            return
        self._no_primary_reported = False
        standbys = self.cluster.standbys()
        for node in self.cluster.nodes:
            if not node.is_usable:
                node.pg_role = PG_ROLE_UNKNOWN
        asked = [
            self._ask(primary, SQL_CURRENT_WAL_LSN),
            self._ask(primary, SQL_REPLICATION_STATUS),
        ]
        asked.extend(self._ask(node, SQL_STANDBY_STATUS) for node in standbys)
        results = await defer.DeferredList(asked, consumeErrors=True)
        _raise_if_cancelled(results)
        lsn_result, replication_result = results[0], results[1]
        primary_lsn = self._primary_answer(primary, *lsn_result)
        rows = self._replication_rows(primary, *replication_result)
        for node, (ok, value) in zip(standbys, results[2:]):
            self._standby_answer(node, primary, primary_lsn, rows, ok, value)
        self.last_check_time = self.reactor.seconds()

    # -- applying answers ----------------------------------------------------------

    def _primary_answer(self, primary: Node, ok: bool, value: Any) -> Optional[int]:
        if ok:
            try:
                lsn = parse_primary_lsn(value)
            except ValueError:
                value = Failure()
            else:
                primary.pg_role = PG_ROLE_PRIMARY
                primary.replay_lsn = None
                primary.replication_delay = 0
                primary.replication_delay_seconds = None
                primary.replication_state = ""
                primary.replication_sync_state = ""
                primary.delayed = False
                self.primary_lsn = lsn
                return lsn
        failure: Failure = value
        error = failure.value
        if isinstance(error, CheckFailed) and error.sqlstate == OBJECT_NOT_IN_PREREQUISITE_STATE:
            primary.pg_role = PG_ROLE_STANDBY
            log.warn(
                "primary node {node_id} is in recovery (it is a standby now): {reason}",
                node_id=primary.node_id,
                reason=error.reason,
            )
        else:
            primary.pg_role = PG_ROLE_UNKNOWN
            _log_node_failure("streaming replication check", primary, failure)
        return None

    def _replication_rows(self, primary: Node, ok: bool, value: Any) -> List[ReplicationRow]:
        if ok:
            try:
                return parse_replication_rows(value)
            except ValueError:
                value = Failure()
        _log_node_failure("reading pg_stat_replication", primary, value)
        return []

    def _standby_answer(
        self,
        node: Node,
        primary: Node,
        primary_lsn: Optional[int],
        rows: Sequence[ReplicationRow],
        ok: bool,
        value: Any,
    ) -> None:
        if ok:
            try:
                answer = parse_standby_answer(value)
            except ValueError:
                ok, value = False, Failure()
        if not ok:
            node.pg_role = PG_ROLE_UNKNOWN
            _log_node_failure("streaming replication check", node, value)
            return
        if not answer.in_recovery:
            node.pg_role = PG_ROLE_PRIMARY
            log.warn(
                "node {node_id} is not in recovery: it is a second "
                "primary beside node {primary_id}",
                node_id=node.node_id,
                primary_id=primary.node_id,
            )
            return
        node.pg_role = PG_ROLE_STANDBY
        if primary_lsn is None or answer.replay_lsn is None:
            # Nothing to measure against; the last known delay stands.
            node.replay_lsn = answer.replay_lsn
            return
        state = assess_standby(
            self.policy, primary_lsn, answer.replay_lsn, node.config.application_name, rows
        )
        node.replay_lsn = state.replay_lsn
        node.replication_delay = state.replication_delay
        node.replication_delay_seconds = state.replication_delay_seconds
        node.replication_state = state.replication_state
        node.replication_sync_state = state.replication_sync_state
        node.delayed = state.delayed
        if delay_log_wanted(self.policy, state):
            if self.policy.by_time and state.replication_delay_seconds is not None:
                log.info(
                    "Replication of node: {node_id} is behind "
                    "{seconds:.6f} second(s) from the primary server "
                    "(node: {primary_id})",
                    node_id=node.node_id,
                    seconds=state.replication_delay_seconds,
                    primary_id=primary.node_id,
                )
            else:
                log.info(
                    "Replication of node: {node_id} is behind {delay} "
                    "bytes from the primary server (node: {primary_id})",
                    node_id=node.node_id,
                    delay=state.replication_delay,
                    primary_id=primary.node_id,
                )
