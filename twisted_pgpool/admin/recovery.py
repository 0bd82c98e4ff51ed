"""
Online recovery (C{pcp_recovery_node}, C{twisted-pgpool recover N}): bring
a detached node back in step with the primary and attach it, with the same
scripts and the same C{pgpool_recovery} extension as Pgpool-II.

The flow is Pgpool-II's C{start_recovery} (C{src/pcp_con/recovery.c}), step
for step and with its log lines:

  1. C{starting recovering node N}; the node must be configured and down.
  2. Log in to the primary (streaming replication) or the main node
     (native replication) as C{recovery_user} to C{recovery_database}.
  3. Native replication only: C{CHECKPOINT}.
  4. First stage: C{SET statement_timeout To 0}, then C{SELECT
     pgpool_recovery('script', 'node host', 'node data directory',
     'primary port', node id, 'node port', 'primary host')} -- the seven
     arguments of Pgpool-II 4.3 and later; the extension runs
     C{$PGDATA/script} with the primary's data directory in front of
     them.  An empty C{recovery_1st_stage_command} skips the stage.
     C{node recovery, 1st stage is done}.
  5. Native replication only (the second stage): wait, for at most
     C{recovery_timeout}, until no client session is left, ending idle
     ones as C{client_idle_limit_in_recovery} says; C{CHECKPOINT}; the
     same call with C{recovery_2nd_stage_command}.  Streaming replication
     has no second stage: clients are not disturbed.
  6. C{SELECT pgpool_remote_start('node host', 'node data directory')}:
     the extension runs C{$PGDATA/pgpool_remote_start host datadir} on
     the primary, which starts the node's server.
  7. Wait for the node to accept a login as C{recovery_user}: database
     C{postgres} four times, then C{template1} for C{recovery_timeout},
     every 3 seconds.  C{node recovery, node: N restarted}.
  8. Attach the node (a failback: C{failback_command} runs) and log
     C{recovery done}.

A node host that is empty or a socket directory is passed as
C{localhost}, as Pgpool-II does.  Values are quoted as SQL literals
(Pgpool-II pastes them in as they are, which only differs for a value
holding a quote).

One recovery runs at a time.  While it runs the node stays C{down} in
C{SHOW POOL_NODES}; L{OnlineRecovery.in_progress} and the log say which
node is being recovered and at which step.

Differences from Pgpool-II: during the second stage new sessions are not
held back (Pgpool-II's children wait); and the idle time that
C{client_idle_limit_in_recovery} measures starts when the second stage
first sees a session idle, not at the session's last message.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, List, Optional

import attr
from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.logger import Logger

from twisted_pgpool import logs
from twisted_pgpool.backend.protocol import (
    BackendCredentials,
    BackendLoginError,
    CredentialResponder,
    InternalResult,
    connect_backend,
)
from twisted_pgpool.cluster.commands import main_node_id
from twisted_pgpool.cluster.model import STATUS_UNUSED, Node
from twisted_pgpool.cluster.nodecheck import CHECK_APPLICATION_NAME, check_credentials
from twisted_pgpool.config import PgpoolConfig
from twisted_pgpool.wire import errors, messages

__all__ = [
    "OnlineRecovery",
    "RecoveryFailed",
    "recovery_call",
    "remote_start_call",
]

log = Logger(observer=logs.observer)

#: Seconds between the attempts to log in to the started node, and between
#: the looks at the remaining sessions in the second stage (Pgpool-II's
#: C{sleep(3)}).
RETRY_INTERVAL = 3.0
#: Attempts on database C{postgres} before C{template1} is tried
#: (Pgpool-II's hard-coded C{i++ < 3}).
POSTGRES_ATTEMPTS = 4
#: Seconds a single login attempt may take when C{connect_timeout} is 0.
DEFAULT_CONNECT_TIMEOUT = 10.0

FIRST_STAGE = "1st stage"
SECOND_STAGE = "2nd stage"

#: The clustering modes with a second stage (Pgpool-II's C{REPLICATION}).
_REPLICATION_MODES = ("native_replication", "snapshot_isolation")


class RecoveryFailed(Exception):
    """
    The recovery was refused or failed at some step; the PCP client is
    told C{message} and C{detail}, Pgpool-II's words.

    @ivar sqlstate: the SQLSTATE of the PCP error.
    """

    def __init__(
        self, message: str, detail: Optional[str] = None, sqlstate: str = errors.INTERNAL_ERROR
    ) -> None:
        super().__init__(message if detail is None else f"{message}: {detail}")
        self.message = message
        self.detail = detail
        self.sqlstate = sqlstate


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def script_host(hostname: str) -> str:
    """
    The host name the scripts are given for a node: C{localhost} for a
    node reached over a Unix socket (empty, or a directory).
    """
    if not hostname or hostname.startswith("/"):
        return "localhost"
    return hostname


def recovery_call(script: str, main: Node, target: Node) -> str:
    """
    The statement that runs a stage's script on the primary (or main node)
    C{main} for the node C{target}: Pgpool-II 4.3's seven-argument
    C{pgpool_recovery()}.
    """
    return "SELECT pgpool_recovery({}, {}, {}, {}, {}, {}, {})".format(
        _literal(script),
        _literal(script_host(target.hostname)),
        _literal(target.config.data_directory),
        _literal(str(main.port)),
        int(target.node_id),
        _literal(str(target.port)),
        _literal(script_host(main.hostname)),
    )


def remote_start_call(target: Node) -> str:
    """
    The statement that has the primary run C{$PGDATA/pgpool_remote_start}
    for C{target}.
    """
    return "SELECT pgpool_remote_start({}, {})".format(
        _literal(script_host(target.hostname)), _literal(target.config.data_directory)
    )


# -- talking to the servers ---------------------------------------------------------


async def connect_for_recovery(
    reactor, node: Node, credentials: BackendCredentials, database: str, timeout: float
) -> Any:
    """
    Log in to C{node} for the recovery; the connection stays open for every
    step (C{run_internal}, then C{terminate}).
    """
    parameters = {
        "user": credentials.user,
        "database": database,
        "application_name": CHECK_APPLICATION_NAME,
    }
    return await connect_backend(
        reactor,
        node.node_id,
        node.hostname,
        node.port,
        timeout,
        parameters,
        CredentialResponder(credentials),
        tls=node.tls,
    )


async def accepts_login(
    reactor, node: Node, credentials: BackendCredentials, database: str, timeout: float
) -> bool:
    """
    Whether C{node} lets C{credentials} log in to C{database} now (libpq's
    C{CONNECTION_OK}, which is what Pgpool-II waits for).
    """
    connecting = defer.Deferred.fromCoroutine(
        connect_for_recovery(reactor, node, credentials, database, timeout)
    )
    connecting.addTimeout(timeout, reactor)
    try:
        protocol = await connecting
    except BackendLoginError as e:
        log.info(
            "checking if postmaster is started: the login was refused: {message}",
            message=e.fields.get("M", ""),
        )
        return False
    except Exception as e:
        log.debug(
            "checking if postmaster is started: {reason}", reason=str(e) or e.__class__.__name__
        )
        return False
    protocol.terminate()
    return True


Connect = Callable[..., Awaitable[Any]]
Check = Callable[..., Awaitable[bool]]


@attr.s(auto_attribs=True)
class RecoveryState:
    """
    The recovery running now.

    @ivar node_id: the node being recovered.
    @ivar step: what it is doing (C{1st stage}, C{2nd stage},
        C{remote start}, C{waiting for the node}, C{attaching}).
    @ivar started_at: the reactor's time when it began.
    """

    node_id: int
    step: str
    started_at: float


class OnlineRecovery:
    """
    Runs online recoveries, one at a time.

    @ivar core: the proxy's shared state: C{config} (read at each step, so
        a reload applies to the next recovery), C{cluster}, C{sessions},
        C{authenticator.passwd}.
    @ivar attach: attaches the recovered node (C{attach(node_id, reason)},
        a Deferred), normally the failover manager's failback.
    @ivar in_progress: the recovery running now, or None.
    """

    def __init__(
        self,
        reactor,
        core: Any,
        attach: Callable[[int, str], "defer.Deferred[Any]"],
        *,
        connect: Connect = connect_for_recovery,
        check: Check = accepts_login,
    ) -> None:
        """
        @param connect: logs in to the primary (L{connect_for_recovery}
            unless testing); its result needs C{run_internal(sql)} and
            C{terminate()}.
        @param check: whether the started node takes a login
            (L{accepts_login} unless testing).
        """
        self.reactor = reactor
        self.core = core
        self.attach = attach
        self.connect = connect
        self.check = check
        self.in_progress: Optional[RecoveryState] = None

    @property
    def config(self) -> PgpoolConfig:
        return self.core.config

    # -- the request -----------------------------------------------------------------

    def check_request(self, node_id: int) -> Node:
        """
        Pgpool-II's checks before a recovery starts (C{process_recovery_request}).

        @raise RecoveryFailed: the node id is out of range; the mode has no
            online recovery; the node is the primary; another recovery
            runs.
        """
        nodes = self.core.cluster.nodes
        failed = "process recovery request failed"
        if not 0 <= node_id < len(nodes):
            raise RecoveryFailed(failed, f"node id {node_id} is not valid", "22023")
        mode = self.config.backend_clustering_mode
        node = nodes[node_id]
        if mode == "streaming_replication":
            if node.role == "primary" and node.is_usable:
                raise RecoveryFailed(
                    failed, "primary server cannot be recovered by online recovery.", "55000"
                )
        elif mode not in _REPLICATION_MODES:
            raise RecoveryFailed(
                failed,
                "recovery request is only allowed in replication and streaming replication modes.",
                errors.FEATURE_NOT_SUPPORTED,
            )
        if self.in_progress is not None:
            raise RecoveryFailed(
                failed, "pgpool-II is already processing another recovery request.", "55000"
            )
        return node

    def recover(self, node_id: int) -> "defer.Deferred[None]":
        """
        Recover a node: the whole flow of the module's docstring.

        @return: fires with None once the node is attached, or fails with
            L{RecoveryFailed}.
        """
        try:
            node = self.check_request(node_id)
        except RecoveryFailed:
            return defer.fail()
        self.in_progress = RecoveryState(node_id, "starting", self.reactor.seconds())

        def over(result: object) -> object:
            self.in_progress = None
            return result

        return defer.Deferred.fromCoroutine(self._recover(node)).addBoth(over)

    def _step(self, step: str) -> None:
        if self.in_progress is not None:
            self.in_progress.step = step

    # -- the flow --------------------------------------------------------------------

    async def _recover(self, node: Node) -> None:
        config = self.config
        node_id = node.node_id
        log.info("starting recovering node {node_id}", node_id=node_id)
        if node.status == STATUS_UNUSED:
            raise RecoveryFailed(
                f"node recovery failed, node id: {node_id} is unused", sqlstate="55000"
            )
        if node.is_usable:
            raise RecoveryFailed(
                f"node recovery failed, node id: {node_id} is alive", sqlstate="55000"
            )
        replication = config.backend_clustering_mode in _REPLICATION_MODES
        main = self._main_node(replication)
        credentials = self._credentials()
        timeout = config.connect_timeout or DEFAULT_CONNECT_TIMEOUT
        try:
            connection = await self.connect(
                self.reactor, main, credentials, config.recovery_database, timeout
            )
        except Exception as e:
            log.warn(
                "node recovery: cannot log in to node {main_id} as "
                'recovery_user "{user}": {reason}',
                main_id=main.node_id,
                user=credentials.user,
                reason=_reason(e),
            )
            raise RecoveryFailed(
                f"node recovery failed, unable to connect to main node: {main.node_id} ",
                _reason(e),
                errors.CONNECTION_FAILURE,
            ) from None
        try:
            if replication:
                await self._checkpoint(connection)
                log.info("node recovery, CHECKPOINT in the 1st stage done")
            self._step(FIRST_STAGE)
            await self._stage(
                connection, FIRST_STAGE, config.recovery_1st_stage_command, main, node
            )
            log.info("node recovery, 1st stage is done")
            if replication:
                log.info("node recovery, starting 2nd stage")
                self._step(SECOND_STAGE)
                if not await self._wait_connection_closed():
                    raise RecoveryFailed(
                        "node recovery failed, waiting connection closed in "
                        "the other pgpools timeout",
                        sqlstate="55000",
                    )
                log.info("node recovery, all connections from clients have been closed")
                await self._checkpoint(connection)
                log.info("node recovery: CHECKPOINT in the 2nd stage done")
                await self._stage(
                    connection, SECOND_STAGE, self.config.recovery_2nd_stage_command, main, node
                )
            self._step("remote start")
            await self._remote_start(connection, node)
        finally:
            connection.terminate()
        self._step("waiting for the node")
        await self._wait_for_postmaster(node, credentials)
        log.info("node recovery, node: {node_id} restarted", node_id=node_id)
        self._step("attaching")
        await self.attach(node_id, "recovered by pcp_recovery_node")
        log.info("recovery done")

    def _main_node(self, replication: bool) -> Node:
        """
        The node the scripts run on: the primary (streaming replication)
        or the main node, the live node with the smallest id (native
        replication).
        """
        nodes = self.core.cluster.nodes
        if replication:
            main_id = main_node_id(nodes)
            if 0 <= main_id < len(nodes):
                return nodes[main_id]
        else:
            primary = self.core.cluster.primary()
            if primary is not None and primary.is_usable:
                return primary
        raise RecoveryFailed(
            "node recovery failed, there is no " + ("main" if replication else "primary") + " node",
            sqlstate="55000",
        )

    def _credentials(self) -> BackendCredentials:
        """
        C{recovery_user} with C{recovery_password}, or its pool_passwd
        entry when that is empty (Pgpool-II's
        C{get_pgpool_config_user_password}).
        """
        config = self.config
        passwd = getattr(getattr(self.core, "authenticator", None), "passwd", None)
        if passwd is None:
            return BackendCredentials(
                config.recovery_user, password=config.recovery_password or None
            )
        try:
            return check_credentials(config, passwd, config.recovery_user, config.recovery_password)
        except Exception as e:
            raise RecoveryFailed(
                "node recovery failed",
                f"cannot use the password of recovery_user: {e}",
                errors.INVALID_PASSWORD,
            ) from None

    async def _run(self, connection: Any, sql: str) -> InternalResult:
        """
        Run one statement on the recovery connection.

        @raise RecoveryFailed: the connection went away (the server's own
            error is returned in the result, for the caller to word).
        """
        try:
            return await connection.run_internal(sql)
        except Exception as e:
            raise RecoveryFailed(
                "node recovery failed",
                f"lost the connection to the main node: {_reason(e)}",
                errors.CONNECTION_FAILURE,
            ) from None

    async def _checkpoint(self, connection: Any) -> None:
        result = await self._run(connection, "CHECKPOINT")
        if result.error is not None:
            raise RecoveryFailed(
                "executing recovery, execute CHECKPOINT failed", _server_message(result.error)
            )

    async def _stage(
        self, connection: Any, stage: str, script: str, main: Node, node: Node
    ) -> None:
        if not script:
            return
        sql = recovery_call(script, main, node)
        log.info('executing recovery: starting recovery command: "{sql}"', sql=sql)
        log.info("executing recovery: disabling statement_timeout")
        result = await self._run(connection, "SET statement_timeout To 0")
        if result.error is not None:
            raise RecoveryFailed(
                f'executing recovery, SET STATEMENT_TIMEOUT failed at "{stage}"',
                _server_message(result.error),
            )
        result = await self._run(connection, sql)
        if result.error is not None:
            log.warn(
                "executing recovery: {stage} command failed: {error}",
                stage=stage,
                error=_server_message(result.error),
            )
            raise RecoveryFailed(
                f'executing recovery, execution of command failed at "{stage}"',
                f'command:"{script}": {_server_message(result.error)}',
            )

    async def _remote_start(self, connection: Any, node: Node) -> None:
        result = await self._run(connection, remote_start_call(node))
        if result.error is not None:
            raise RecoveryFailed(
                f'executing remote start failed with error: "{result.error.get("M", "")}"'
            )

    async def _wait_for_postmaster(self, node: Node, credentials: BackendCredentials) -> None:
        """
        Pgpool-II's C{check_postmaster_started}: database C{postgres}
        L{POSTGRES_ATTEMPTS} times, then C{template1} for
        C{recovery_timeout}, L{RETRY_INTERVAL} seconds apart.
        """
        config = self.config
        retries = int(config.recovery_timeout // RETRY_INTERVAL)
        timeout = config.connect_timeout or DEFAULT_CONNECT_TIMEOUT
        user = credentials.user
        for database, attempts in (("postgres", POSTGRES_ATTEMPTS), ("template1", retries + 1)):
            for attempt in range(attempts):
                log.info(
                    "checking if postmaster is started: trying to connect "
                    "to postmaster on hostname:{host} database:{database} "
                    "user:{user} (retry {attempt} times)",
                    host=node.hostname,
                    database=database,
                    user=user,
                    attempt=attempt,
                )
                if await self.check(self.reactor, node, credentials, database, timeout):
                    return
                log.info(
                    "checking if postmaster is started: failed to connect "
                    "to postmaster on hostname:{host} database:{database} "
                    "user:{user}",
                    host=node.hostname,
                    database=database,
                    user=user,
                )
                if database == "postgres" or retries:
                    await deferLater(self.reactor, RETRY_INTERVAL, lambda: None)
        raise RecoveryFailed(
            "recovery is checking if postmaster is started",
            f'postmaster on hostname:"{node.hostname}" database:"template1" '
            f'user:"{user}" failed to start in {config.recovery_timeout:g} second',
            errors.CONNECTION_FAILURE,
        )

    # -- the second stage's wait ---------------------------------------------------

    async def _wait_connection_closed(self) -> bool:
        """
        Wait until no client session is left, looking every
        L{RETRY_INTERVAL} seconds, C{recovery_timeout // 3} times more
        after the first; sessions idle outside a transaction are ended as
        C{client_idle_limit_in_recovery} says on the way.

        @return: whether every session ended in time.  (Pgpool-II also
            goes on when the idle limit is shorter than the timeout, since
            its shared counter of connections may be wrong after a child
            crashed; the sessions counted here are the live ones.)
        """
        config = self.config
        retries = int(config.recovery_timeout // RETRY_INTERVAL)
        idle_since: Dict[Any, float] = {}
        for _attempt in range(retries + 1):
            self._end_idle_sessions(idle_since)
            if not self._sessions():
                return True
            if retries:
                await deferLater(self.reactor, RETRY_INTERVAL, lambda: None)
        self._end_idle_sessions(idle_since)
        if not self._sessions():
            return True
        log.info(
            "wait_connection_closed: existing connections did not close in {timeout:g} sec.",
            timeout=config.recovery_timeout,
        )
        return False

    def _sessions(self) -> List[Any]:
        return list(getattr(self.core, "sessions", ()))

    def _end_idle_sessions(self, idle_since: Dict[Any, float]) -> None:
        limit = self.config.client_idle_limit_in_recovery
        if limit == 0:
            return
        now = self.reactor.seconds()
        for frontend in self._sessions():
            session = getattr(frontend, "session", None)
            idle = (
                session is not None
                and not session.busy
                and session.transaction_status == messages.TRANSACTION_IDLE
            )
            if not idle:
                idle_since.pop(frontend, None)
                continue
            since = idle_since.setdefault(frontend, now)
            if limit == -1 or now - since >= limit:
                idle_since.pop(frontend, None)
                log.info(
                    "client {user} disconnected: client_idle_limit_in_recovery:{limit} is reached",
                    user=getattr(frontend, "user", None),
                    limit=limit,
                )
                frontend.fail(
                    errors.fatal(
                        errors.IDLE_SESSION_TIMEOUT,
                        "terminating connection due to "
                        f"client_idle_limit_in_recovery:{limit} is reached",
                    )
                )


def _reason(e: BaseException) -> str:
    if isinstance(e, BackendLoginError):
        return _server_message(e.fields)
    return str(e) or e.__class__.__name__


def _server_message(fields: Dict[str, str]) -> str:
    message = fields.get("M", "no message")
    code = fields.get("C")
    return f"{message} (SQLSTATE {code})" if code else message
