"""
Failover and failback: taking a node out of service, bringing it back, and
finding the new primary (Pgpool-II's C{failover()}/C{failback} in
C{pgpool_main.c}, C{pcp_detach_node}, C{pcp_attach_node},
C{pcp_promote_node}).

L{FailoverManager} is the service that carries failovers out, one at a
time, in the order they were asked for.  A node's failure reported several
times (by the health check and by sessions, or by a flapping node) fails it
over once.  What it builds on is kept apart, so that the decisions are
tested with nothing but calls, and its names are importable from here too:

  - L{twisted_pgpool.cluster.commands}: the C{%} escapes of
    C{failover_command}, C{failback_command} and C{follow_primary_command}
    (L{expand_command}, with every substituted value quoted for the shell),
    the facts they are filled from (L{command_facts}), and L{CommandRunner},
    which runs one in a child process and kills it after
    C{failover_command_timeout};
  - L{twisted_pgpool.cluster.status_file}: the C{pgpool_status} file
    (L{format_status_file}, L{parse_status_file}, L{statuses_to_restore}).

What a failover does, in order (Pgpool-II's order): mark the node down
(sessions stop choosing it; the status file is rewritten), end the sessions
that depend on it, run C{failover_command}, and if the node was the
primary, ask the remaining nodes C{pg_is_in_recovery()} every second until
one says it is the primary (C{search_primary_node_timeout}), make it the
primary, and run C{follow_primary_command} for each other standby.  Writes
that arrive meanwhile wait for the new primary
(L{twisted_pgpool.cluster.model.Cluster.wait_for_primary}).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_pgpool import logs
from twisted_pgpool.backend.protocol import BackendCredentials
from twisted_pgpool.cluster.commands import (
    CommandFacts,
    CommandResult,
    CommandRunner,
    command_facts,
    expand_command,
    main_node_id,
)
from twisted_pgpool.cluster.model import (
    ROLE_PRIMARY,
    STATUS_DOWN,
    STATUS_UNUSED,
    STATUS_UP,
    Node,
)
from twisted_pgpool.cluster.nodecheck import check_credentials, node_answers, run_check_query
from twisted_pgpool.cluster.replication import (
    DEFAULT_CHECK_TIMEOUT,
    QueryFunction,
    find_primary,
)
from twisted_pgpool.cluster.status_file import (
    STATUS_FILE_NAME,
    format_status_file,
    parse_status_file,
    statuses_to_restore,
)
from twisted_pgpool.config import PgpoolConfig
from twisted_pgpool.wire import errors

__all__ = [
    "CommandFacts",
    "CommandResult",
    "CommandRunner",
    "FailoverError",
    "FailoverManager",
    "STATUS_FILE_NAME",
    "command_facts",
    "expand_command",
    "format_status_file",
    "main_node_id",
    "parse_status_file",
    "statuses_to_restore",
]

log = Logger(observer=logs.observer)

#: While it waits for a primary, the search asks every second but reports
#: what it finds this often.
SEARCH_REPORT_INTERVAL = 10.0

#: Seconds between two primary searches after a failover (Pgpool-II's).
SEARCH_INTERVAL = 1.0


class FailoverError(Exception):
    """
    An administrative request that cannot be carried out as asked (an
    unknown node, promoting a node that is down...).  The message says why.
    """


# -- the service ---------------------------------------------------------------------


def _all_nodes_known(nodes: Sequence[Node], node_id: int) -> Node:
    if not isinstance(node_id, int) or not 0 <= node_id < len(nodes):
        raise FailoverError(f"node id {node_id} is out of range (0 to {len(nodes) - 1})")
    return nodes[node_id]


class FailoverManager(Service):
    """
    Carries out failovers, failbacks and promotions, one at a time.

    Requests queue behind each other (a L{defer.DeferredLock}), so two
    failovers never interleave: a standby failing while a primary failover
    searches for the new primary is handled right after it.  A node whose
    failure is reported again while its failover is queued or running, or
    after it is down, is not failed over again.

    @ivar core: the shared proxy state (L{twisted_pgpool.service.ProxyCore}):
        its C{config}, C{cluster} and C{end_sessions_using} are used.
    @ivar discard_status: ignore (and remove) the status file at start
        (C{-D}/C{--discard-status}).
    @ivar runner: runs the configured commands.
    @ivar history: what happened, oldest first: C{(kind, node_id)} tuples
        with kind C{failover}, C{failback}, C{promote} or C{follow}; for
        tests and reports.
    """

    name = "failover"  # type: ignore[assignment]

    def __init__(
        self,
        reactor,
        core,
        discard_status: bool = False,
        *,
        query: QueryFunction = run_check_query,
        runner: Optional[CommandRunner] = None,
        search_credentials: Optional[BackendCredentials] = None,
        search_interval: float = SEARCH_INTERVAL,
        probe=node_answers,
    ) -> None:
        """
        @param query: how the primary search asks a node; the real client
            unless testing.
        @param runner: runs the commands; a L{CommandRunner} with
            C{failover_command_timeout} by default.
        @param search_credentials: who the primary search logs in as;
            C{sr_check_user}'s credentials by default, else
            C{health_check_user}'s.
        @param probe: asks whether a node still takes connections
            (L{node_answers} unless testing), before a session's lost
            connection fails it over (L{session_saw_failure}).
        """
        self.reactor = reactor
        self.core = core
        self.config = core.config
        self.cluster = core.cluster
        self.discard_status = discard_status
        self.query = query
        # Follows failover_command_timeout across reloads unless given here.
        self._runner_from_config = runner is None
        self.runner = (
            runner
            if runner is not None
            else CommandRunner(reactor, self.config.failover_command_timeout)
        )
        self.search_interval = search_interval
        self._search_credentials = search_credentials
        self.history: List[tuple] = []
        self._lock = defer.DeferredLock()
        self._failing: Dict[int, defer.Deferred] = {}
        self.probe = probe
        self._verifying: Dict[int, defer.Deferred] = {}
        self._current: Optional[defer.Deferred] = None
        self._status_loaded = False
        self._saved_status: Optional[str] = None
        self._observing = False
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------

    @property
    def status_path(self) -> str:
        """
        C{<logdir>/pgpool_status}.
        """
        return os.path.join(self.config.logdir, STATUS_FILE_NAME)

    @property
    def busy(self) -> bool:
        """
        Whether a failover, failback or promotion is running or queued.
        """
        return self._lock.locked or bool(self._lock.waiting)

    def startService(self) -> None:
        super().startService()
        self._stopped = False
        if not self._status_loaded:
            self.load_status()
        if not self._observing:
            self.cluster.observers.append(self._node_changed)
            self._observing = True

    def reconfigure(self, config: PgpoolConfig) -> None:
        """
        Apply a reloaded configuration (L{twisted_pgpool.admin.reload}): the
        commands, their timeout and the primary search settings apply to
        the next failover, failback or promotion; one running now goes on
        with what it started with.  C{logdir} is fixed at start.
        """
        self.config = config
        if self._runner_from_config:
            self.runner.timeout = config.failover_command_timeout

    def stopService(self) -> None:
        super().stopService()
        # Requests still queued are dropped; the one running is cancelled.
        self._stopped = True
        if self._observing:
            self.cluster.observers.remove(self._node_changed)
            self._observing = False
        current, self._current = self._current, None
        if current is not None and not current.called:
            current.cancel()

    def _node_changed(self, node: Node) -> None:
        if format_status_file(self.cluster.nodes) != self._saved_status:
            self.save_status()

    # -- the status file ------------------------------------------------------------

    def load_status(self) -> None:
        """
        Apply C{<logdir>/pgpool_status}: nodes recorded C{down} (or
        C{unused}) start so, unless C{discard_status} is set, in which case
        the file is removed.  The file is then written afresh.  Call before
        the primary search runs (the service does it when started, if not
        done already).
        """
        self._status_loaded = True
        path = self.status_path
        if self.discard_status:
            try:
                os.unlink(path)
                log.info("Backend status file {path} discarded", path=path)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warn(
                    'failed to discard backend status file: "{path}": {error}', path=path, error=e
                )
            self.save_status()
            return
        if not self.cluster.nodes:
            # No backend yet: the file is left as it is (Pgpool-II writes
            # none either); the first node a reload adds writes it.
            return
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            log.info("Backend status file {path} does not exist", path=path)
            self.save_status()
            return
        except OSError as e:
            log.warn("could not read backend status file {path}: {error}", path=path, error=e)
            return
        recorded = parse_status_file(text)
        restore = statuses_to_restore(recorded, len(self.cluster.nodes))
        if not restore and "up" not in recorded[: len(self.cluster.nodes)] and any(recorded):
            log.warn("backend status file {path} says no node is up: ignoring it", path=path)
        for node_id, status in sorted(restore.items()):
            node = self.cluster.nodes[node_id]
            self.cluster.set_status(node, status, f"{status} in {path}")
            log.info(
                "read_status_file: {node_id} th backend is set to {status} status",
                node_id=node_id,
                status=status,
            )
        self.save_status()

    def save_status(self) -> None:
        """
        Write the nodes' statuses to C{<logdir>/pgpool_status} (atomically:
        a reader never sees half a file).  Failures are logged, not raised.
        """
        text = format_status_file(self.cluster.nodes)
        path = self.status_path
        directory = os.path.dirname(path) or "."
        try:
            fd, temporary = tempfile.mkstemp(prefix=".pgpool_status.", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="ascii") as f:
                    f.write(text)
                os.chmod(temporary, 0o644)
                os.replace(temporary, path)
            except BaseException:
                try:
                    os.unlink(temporary)
                except OSError:
                    pass
                raise
        except OSError as e:
            log.error("could not write backend status file {path}: {error}", path=path, error=e)
            return
        self._saved_status = text

    # -- requests ----------------------------------------------------------------------

    def session_saw_failure(self, node_id: int, reason: str) -> "defer.Deferred[bool]":
        """
        A session's connection to a node broke (C{failover_on_backend_error}
        or C{failover_on_backend_shutdown} asked for it to count): fail the
        node over only if it does not take connections any more.

        One connection ending is weak evidence: PostgreSQL closes a
        connection without a word after a client's oversized message, a
        DBA terminates one process, a session's server process crashes
        and the server recovers at once.  Pgpool-II fails the node over on
        each of those, and one broken client can so fail over a healthy
        primary.  Here the node is asked first (L{node_answers}: a
        StartupMessage answered in a few milliseconds); a node that is
        really down refuses the connection, or answers that it is shutting
        down or recovering, and is failed over as before.

        @return: fires with whether this caused a failover; never fails.
        """
        node = self.cluster.nodes[node_id] if 0 <= node_id < len(self.cluster.nodes) else None
        if node is None or node.status in (STATUS_DOWN, STATUS_UNUSED) or node_id in self._failing:
            return defer.succeed(False)
        pending = self._verifying.get(node_id)
        if pending is not None:
            # Many sessions see one node go: ask it once.
            return defer.succeed(False)
        d = defer.Deferred.fromCoroutine(self._verify_then_fail(node, reason))
        self._verifying[node_id] = d

        def over(result: object) -> object:
            self._verifying.pop(node_id, None)
            return result

        d.addBoth(over)
        return d

    async def _verify_then_fail(self, node: Node, reason: str) -> bool:
        user = self.config.health_check_user or self.config.sr_check_user
        timeout = self.config.connect_timeout or DEFAULT_CHECK_TIMEOUT
        try:
            answers = await self.probe(self.reactor, node, user, timeout)
        except Exception:
            log.failure("probing node {node_id} failed", node_id=node.node_id)
            answers = False
        if answers:
            log.warn(
                "a session lost its connection to backend node {node_id} "
                "({reason}), but the node takes connections: it stays up",
                node_id=node.node_id,
                reason=reason,
            )
            return False
        return await self.node_failed(node.node_id, reason)

    def node_failed(self, node_id: int, reason: str) -> "defer.Deferred[bool]":
        """
        A node failed (its health check, or a session's backend error or
        shutdown when C{failover_on_backend_error} /
        C{failover_on_backend_shutdown} are on): fail it over, unless it is
        flagged C{DISALLOW_TO_FAILOVER}, already down, or already being
        failed over.

        @return: fires with whether this call caused a failover; never
            fails (problems are logged), so callers may ignore it.
        """
        try:
            node = _all_nodes_known(self.cluster.nodes, node_id)
        except FailoverError as e:
            log.error("degenerate backend request ignored: {error}", error=e)
            return defer.succeed(False)
        pending = self._failing.get(node_id)
        if pending is not None:
            log.debug(
                "failover of node {node_id} is already under way; "
                "ignoring another report: {reason}",
                node_id=node_id,
                reason=reason,
            )
            return defer.succeed(False)
        if node.status in (STATUS_DOWN, STATUS_UNUSED):
            log.debug(
                "node {node_id} is already {status}; ignoring: {reason}",
                node_id=node_id,
                status=node.status,
                reason=reason,
            )
            return defer.succeed(False)
        if not node.config.allow_to_failover:
            log.warn(
                "degenerate backend request for node_id: {node_id} is "
                "canceled because failover is disallowed on the node "
                "({reason})",
                node_id=node_id,
                reason=reason,
            )
            return defer.succeed(False)
        log.info(
            "received degenerate backend request for node_id: {node_id}: {reason}",
            node_id=node_id,
            reason=reason,
        )
        d = self._serialize(lambda: self._detach(node, reason, automatic=True, gracefully=False))
        self._failing[node_id] = d

        def over(result: object) -> object:
            self._failing.pop(node_id, None)
            return result

        d.addBoth(over)
        d.addErrback(self._log_failure, "failover of node", node_id)
        return d

    def detach(self, node_id: int, reason: str, gracefully: bool = False) -> "defer.Deferred[bool]":
        """
        Detach a node on an administrator's request (C{pcp_detach_node}):
        allowed even for a C{DISALLOW_TO_FAILOVER} node.

        @param gracefully: let the sessions using the node finish first
            (they are ended after C{failover_command_timeout} seconds);
            new sessions stop using it at once.
        @return: fires with whether the node was detached (L{False}: it was
            down already).
        @raise FailoverError: (in the Deferred) unknown node.
        """
        try:
            node = _all_nodes_known(self.cluster.nodes, node_id)
        except FailoverError:
            return defer.fail()
        log.info(
            "received detach request for node_id: {node_id}: {reason}",
            node_id=node_id,
            reason=reason,
        )
        return self._serialize(
            lambda: self._detach(node, reason, automatic=False, gracefully=gracefully)
        )

    def attach(self, node_id: int, reason: str) -> "defer.Deferred[bool]":
        """
        Attach a node again (C{pcp_attach_node}, or auto_failback): mark it
        up and run C{failback_command}.

        @return: fires with whether the node was attached (L{False}: it was
            up already).
        @raise FailoverError: (in the Deferred) unknown node.
        """
        try:
            node = _all_nodes_known(self.cluster.nodes, node_id)
        except FailoverError:
            return defer.fail()
        log.info(
            "received failback request for node_id: {node_id}: {reason}",
            node_id=node_id,
            reason=reason,
        )
        return self._serialize(lambda: self._attach(node, reason))

    def promote(self, node_id: int, switchover: bool = False) -> "defer.Deferred[bool]":
        """
        Make a node the primary (C{pcp_promote_node}).

        Without C{switchover} only the proxy's view changes (the server
        must have been promoted already): the node becomes the primary and
        every other node is marked down, with C{follow_primary_command}
        run for each when set.  With C{switchover}, the current primary is
        detached and C{failover_command} runs with C{%m} set to this node
        (scripts promote C{%m}); once the node says it is the primary,
        C{follow_primary_command} runs for the others, old primary
        included.

        @return: fires with whether anything changed.
        @raise FailoverError: (in the Deferred) unknown node, or one that
            is not up.
        """
        try:
            node = _all_nodes_known(self.cluster.nodes, node_id)
        except FailoverError:
            return defer.fail()
        log.info(
            "received promote request for node_id: {node_id}{switchover}",
            node_id=node_id,
            switchover=" (switchover)" if switchover else "",
        )
        return self._serialize(lambda: self._promote(node, switchover))

    def search_primary(self) -> "defer.Deferred[Optional[Node]]":
        """
        Look for the primary now (queued like a failover), for up to
        C{search_primary_node_timeout}.

        @return: fires with the primary, or L{None}.
        """
        return self._serialize(self._search_primary)

    # -- running them one at a time -------------------------------------------------

    def _serialize(self, operation: Callable[[], Awaitable[Any]]) -> defer.Deferred:
        def run() -> defer.Deferred:
            if self._stopped:
                return defer.fail(defer.CancelledError("the failover service was stopped"))
            current: defer.Deferred = defer.ensureDeferred(operation())  # type: ignore[arg-type]
            self._current = current
            return current.addBoth(self._over, current)

        return self._lock.run(run)

    def _over(self, result: object, current: defer.Deferred) -> object:
        if self._current is current:
            self._current = None
        return result

    def _log_failure(self, failure: Failure, what: str, node_id: int) -> bool:
        if not failure.check(defer.CancelledError):
            log.failure("{what} {node_id} failed", failure, what=what, node_id=node_id)
        return False

    # -- the operations ----------------------------------------------------------------

    def _primary_before(self, failing: Optional[Node] = None) -> int:
        """
        The primary as the proxy sees it before an event: the usable node
        with the primary role (or C{failing}, if it has it).
        """
        for node in self.cluster.nodes:
            if node.role == ROLE_PRIMARY and (node.is_usable or node is failing):
                return node.node_id
        return -1

    @property
    def _streaming(self) -> bool:
        return self.config.backend_clustering_mode == "streaming_replication"

    async def _run_command(
        self, what: str, template: str, facts: CommandFacts
    ) -> Optional[CommandResult]:
        if not template:
            return None
        return await self.runner.run(what, expand_command(template, facts))

    async def _detach(self, node: Node, reason: str, *, automatic: bool, gracefully: bool) -> bool:
        if node.status in (STATUS_DOWN, STATUS_UNUSED):
            log.info(
                "node {node_id} is already {status}: nothing to detach",
                node_id=node.node_id,
                status=node.status,
            )
            return False
        if automatic and not node.config.allow_to_failover:
            log.warn("failover of node {node_id} is disallowed for the node", node_id=node.node_id)
            return False
        nodes = self.cluster.nodes
        old_main = main_node_id(nodes)
        old_primary = self._primary_before(node)
        was_primary = old_primary == node.node_id
        log.info(
            "starting degeneration. shutdown host {host}({port})",
            host=node.hostname,
            port=node.port,
        )
        self.cluster.set_status(node, STATUS_DOWN, reason)
        if gracefully:
            await self._wait_for_sessions(node)
        code = errors.CONNECTION_FAILURE if automatic else errors.ADMIN_SHUTDOWN
        ended = self.core.end_sessions_using(
            node.node_id,
            errors.fatal(
                code,
                f"terminating connection because backend node {node.node_id} "
                f"({node.hostname}:{node.port}) was detached",
                detail=reason,
            ),
        )
        if ended:
            log.info(
                "ended {count} session(s) that used node {node_id}",
                count=ended,
                node_id=node.node_id,
            )
        new_main = main_node_id(nodes)
        await self._run_command(
            "failover_command",
            self.config.failover_command,
            command_facts(
                nodes, node, new_main_id=new_main, old_main_id=old_main, old_primary_id=old_primary
            ),
        )
        self.history.append(("failover", node.node_id))
        if was_primary and self._streaming:
            found = await self._search_primary()
            if found is not None:
                log.info("failover: set new primary node: {node_id}", node_id=found.node_id)
                await self._follow(found, old_main, old_primary, set())
            else:
                log.warn(
                    "failover: no primary node; new sessions are served "
                    "by a standby (reads only) until one is found or "
                    "attached"
                )
        log.info("failover: set new main node: {node_id}", node_id=main_node_id(nodes))
        log.info("failover done. shutdown host {host}({port})", host=node.hostname, port=node.port)
        return True

    async def _wait_for_sessions(self, node: Node) -> None:
        """
        Wait until no session depends on C{node} any more, for at most
        C{failover_command_timeout} seconds.
        """
        deadline = self.reactor.seconds() + self.config.failover_command_timeout
        while self.reactor.seconds() < deadline:
            if not any(
                frontend.session is not None and frontend.session.depends_on(node.node_id)
                for frontend in list(getattr(self.core, "sessions", ()))
            ):
                return
            await deferLater(self.reactor, 0.1, lambda: None)
        log.warn(
            "sessions still use node {node_id} after {timeout:g} s: ending them",
            node_id=node.node_id,
            timeout=self.config.failover_command_timeout,
        )

    async def _attach(self, node: Node, reason: str) -> bool:
        if node.is_usable:
            log.info(
                "node {node_id} is already {status}: nothing to attach",
                node_id=node.node_id,
                status=node.status,
            )
            return False
        nodes = self.cluster.nodes
        old_main = main_node_id(nodes)
        old_primary = self._primary_before()
        log.info(
            "starting fail back. reconnect host {host}({port})", host=node.hostname, port=node.port
        )
        self.cluster.set_status(node, STATUS_UP, reason)
        await self._run_command(
            "failback_command",
            self.config.failback_command,
            command_facts(
                nodes,
                node,
                new_main_id=main_node_id(nodes),
                old_main_id=old_main,
                old_primary_id=old_primary,
            ),
        )
        self.history.append(("failback", node.node_id))
        if self._streaming and self.cluster.primary() is None:
            await self._search_primary()
        log.info("failback done. reconnect host {host}({port})", host=node.hostname, port=node.port)
        return True

    async def _promote(self, node: Node, switchover: bool) -> bool:
        if not node.is_usable:
            raise FailoverError(
                f"node {node.node_id} is {node.status}: only a node that is up can be promoted"
            )
        current = self.cluster.primary()
        if current is node:
            log.info("node {node_id} is already the primary", node_id=node.node_id)
            return False
        nodes = self.cluster.nodes
        old_main = main_node_id(nodes)
        old_primary = self._primary_before()
        self.history.append(("promote", node.node_id))
        if not switchover:
            self.cluster.set_primary(node, "promoted by request")
            log.info("failover: set new primary node: {node_id}", node_id=node.node_id)
            if current is not None:
                self.cluster.set_status(
                    current, STATUS_DOWN, f"node {node.node_id} was promoted in its place"
                )
                self.core.end_sessions_using(
                    current.node_id,
                    errors.fatal(
                        errors.ADMIN_SHUTDOWN,
                        f"terminating connection because backend node "
                        f"{current.node_id} is not the primary any more",
                    ),
                )
            others = {n.node_id for n in nodes if n is not node and n.is_usable}
            if not self.config.follow_primary_command:
                for other in sorted(others):
                    self.cluster.set_status(
                        nodes[other], STATUS_DOWN, f"node {node.node_id} was promoted"
                    )
                    self.core.end_sessions_using(
                        other,
                        errors.fatal(
                            errors.ADMIN_SHUTDOWN,
                            f"terminating connection because backend node {other} was detached",
                        ),
                    )
            extra = {current.node_id} if current is not None else set()
            await self._follow(node, old_main, old_primary, extra)
            return True
        if current is not None:
            log.info(
                "starting degeneration. shutdown host {host}({port})",
                host=current.hostname,
                port=current.port,
            )
            self.cluster.set_status(current, STATUS_DOWN, f"switchover to node {node.node_id}")
            self.core.end_sessions_using(
                current.node_id,
                errors.fatal(
                    errors.ADMIN_SHUTDOWN,
                    f"terminating connection because backend node "
                    f"{current.node_id} is being switched over",
                ),
            )
            await self._run_command(
                "failover_command",
                self.config.failover_command,
                command_facts(
                    nodes,
                    current,
                    new_main_id=node.node_id,
                    old_main_id=old_main,
                    old_primary_id=old_primary,
                ),
            )
        found = await self._search_primary()
        if found is None:
            log.warn("switchover: node {node_id} did not become the primary", node_id=node.node_id)
            return True
        if found is not node:
            log.warn(
                "switchover: node {found} is the primary, not node {node_id}",
                found=found.node_id,
                node_id=node.node_id,
            )
        extra = {current.node_id} if current is not None else set()
        await self._follow(found, old_main, old_primary, extra)
        return True

    async def _follow(self, new_primary: Node, old_main: int, old_primary: int, extra: set) -> None:
        """
        Run C{follow_primary_command} for every live node but the new
        primary (and for C{extra} nodes, already down), marking each down
        first, as Pgpool-II does: the command is expected to re-point the
        standby at the new primary and attach it again.
        """
        if not self.config.follow_primary_command:
            return
        nodes = self.cluster.nodes
        followers = [
            n for n in nodes if n is not new_primary and (n.is_usable or n.node_id in extra)
        ]
        if not followers:
            log.info("failover: no follow backends are degenerated")
            return
        for node in followers:
            if node.is_usable:
                self.cluster.set_status(
                    node, STATUS_DOWN, f"following the new primary node {new_primary.node_id}"
                )
                self.core.end_sessions_using(
                    node.node_id,
                    errors.fatal(
                        errors.ADMIN_SHUTDOWN,
                        f"terminating connection because backend node "
                        f"{node.node_id} is following a new primary",
                    ),
                )
        log.info("failover: {count} follow backends have been degenerated", count=len(followers))
        log.info("start triggering follow command.")
        for node in followers:
            await self._run_command(
                "follow_primary_command",
                self.config.follow_primary_command,
                command_facts(
                    nodes,
                    node,
                    new_main_id=new_primary.node_id,
                    old_main_id=old_main,
                    old_primary_id=old_primary,
                ),
            )
            self.history.append(("follow", node.node_id))
        log.info("end triggering follow command.")

    # -- finding the primary -----------------------------------------------------------

    def search_credentials(self) -> BackendCredentials:
        """
        Who the primary search logs in as: C{sr_check_user}, else
        C{health_check_user}.
        """
        if self._search_credentials is not None:
            return self._search_credentials
        credentials = getattr(self.core, "sr_check_credentials", None)
        if credentials is not None and credentials.user:
            return credentials
        if self.config.health_check_user:
            authenticator = getattr(self.core, "authenticator", None)
            passwd = getattr(authenticator, "passwd", None)
            if passwd is not None:
                try:
                    return check_credentials(
                        self.config,
                        passwd,
                        self.config.health_check_user,
                        self.config.health_check_password,
                    )
                except Exception as e:
                    log.warn(
                        "cannot use health_check_user for the primary search: {error}", error=e
                    )
            return BackendCredentials(self.config.health_check_user)
        return BackendCredentials("")

    async def _search_primary(self) -> Optional[Node]:
        """
        Ask the live nodes C{pg_is_in_recovery()} every C{search_interval}
        seconds until one is the primary, for at most
        C{search_primary_node_timeout} seconds (0: no limit).  A node
        flagged C{ALWAYS_PRIMARY} is never searched away from.
        """
        for node in self.cluster.nodes:
            if node.config.always_primary:
                if not node.is_usable:
                    log.warn(
                        "node {node_id} is ALWAYS_PRIMARY and down: no "
                        "primary until it is attached again",
                        node_id=node.node_id,
                    )
                    return None
                if node.role != ROLE_PRIMARY:
                    self.cluster.set_primary(node, "flagged ALWAYS_PRIMARY")
                return node
        credentials = self.search_credentials()
        if not credentials.user:
            log.warn(
                "find_primary_node: sr_check_user and health_check_user "
                "are empty: cannot ask the nodes which is the primary"
            )
            return None
        timeout = self.config.search_primary_node_timeout
        deadline = self.reactor.seconds() + timeout
        query_timeout = self.config.connect_timeout or DEFAULT_CHECK_TIMEOUT
        if timeout > 0:
            query_timeout = min(query_timeout, max(timeout, 0.1))
        log.info("find_primary_node_repeatedly: waiting for finding a primary node")
        started = self.reactor.seconds()
        reported_at = None
        while True:
            if not any(n.is_usable for n in self.cluster.nodes):
                log.warn("find_primary_node_repeatedly: every node is down")
                return None
            # What each attempt found is logged on the first one and then
            # every SEARCH_REPORT_INTERVAL seconds, not at every attempt.
            now = self.reactor.seconds()
            report = reported_at is None or now - reported_at >= SEARCH_REPORT_INTERVAL
            if report:
                if reported_at is not None:
                    log.warn(
                        "find_primary_node_repeatedly: still no primary node after {elapsed:.0f} s",
                        elapsed=now - started,
                    )
                reported_at = now
            found = await find_primary(
                self.reactor,
                self.cluster,
                credentials,
                self.config.sr_check_database,
                query_timeout,
                self.query,
                report=report,
            )
            if found is not None:
                return found
            if timeout > 0 and self.reactor.seconds() + self.search_interval > deadline:
                log.warn(
                    "find_primary_node_repeatedly: no primary node found "
                    "within search_primary_node_timeout ({timeout:g} s)",
                    timeout=timeout,
                )
                return None
            await deferLater(self.reactor, self.search_interval, lambda: None)
