"""
The proxy's own short queries to a backend: the primary search and the
streaming replication check (and, later, other periodic checks) each open a
connection, run one statement, and close it.

L{run_check_query} does that with a bound on the whole exchange and turns
every way it can go wrong into one exception, L{CheckFailed}, whose message
says what happened in words an operator can act on.  L{check_credentials}
finds the password those checks log in with, as Pgpool-II does for
C{sr_check_user}: from the configuration, else from pool_passwd.
"""

from __future__ import annotations

import struct
from typing import Optional, cast

from twisted.internet import defer
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_pgpool import logs
from twisted_pgpool.auth.passwd import PasswdEntry, PoolPasswd
from twisted_pgpool.backend.protocol import (
    BackendConnectionLost,
    BackendCredentials,
    BackendLoginError,
    BackendProtocol,
    CredentialResponder,
    InternalResult,
    backend_endpoint,
    connect_backend,
)
from twisted_pgpool.cluster.model import Node
from twisted_pgpool.config import PgpoolConfig
from twisted_pgpool.wire import errors, messages
from twisted_pgpool.wire.framing import FramingError

__all__ = [
    "CHECK_APPLICATION_NAME",
    "CheckFailed",
    "check_credentials",
    "node_answers",
    "run_check_query",
]

log = Logger(observer=logs.observer)

#: The C{application_name} our check connections show in
#: C{pg_stat_activity}, so a DBA can tell them from client sessions.
CHECK_APPLICATION_NAME = "twisted_pgpool check"


class CheckFailed(Exception):
    """
    A check query could not be run on a node, or the server answered it
    with an error.

    @ivar node_id: the node asked.
    @ivar reason: what went wrong, readable on its own.
    @ivar sqlstate: the server's SQLSTATE when the server refused the login
        or the query, else L{None}.
    """

    def __init__(self, node_id: int, reason: str, sqlstate: Optional[str] = None) -> None:
        super().__init__(reason)
        self.node_id = node_id
        self.reason = reason
        self.sqlstate = sqlstate

    @property
    def node_refuses_connections(self) -> bool:
        """
        Whether the server answered, but refused the connection for want of
        a free slot: C{53300} (C{sorry, too many clients already},
        C{remaining connection slots are reserved for ...}, or a role's or
        database's connection limit).  Such a node is up, and only full:
        unlike a refused TCP connection, a timeout, or C{57P01}/C{57P02}/
        C{57P03} (shutting down, crashed, starting up), it is no reason to
        fail the node over.
        """
        return self.sqlstate == errors.TOO_MANY_CONNECTIONS


def _server_message(fields: dict) -> str:
    message = fields.get("M", "no message")
    code = fields.get("C")
    return f"{message} (SQLSTATE {code})" if code else message


async def _connect_and_query(
    reactor, node: Node, credentials: BackendCredentials, database: str, sql: str, timeout: float
) -> InternalResult:
    parameters = {
        "user": credentials.user,
        "database": database,
        "application_name": CHECK_APPLICATION_NAME,
    }
    where = f"node {node.node_id} ({node.hostname}:{node.port})"
    try:
        protocol: BackendProtocol = await connect_backend(
            reactor,
            node.node_id,
            node.hostname,
            node.port,
            timeout,
            parameters,
            CredentialResponder(credentials),
            tls=node.tls,
        )
    except BackendLoginError as e:
        raise CheckFailed(
            node.node_id,
            f'{where} refused the login of user "{credentials.user}" to '
            f'database "{database}": {_server_message(e.fields)}',
            e.fields.get("C"),
        )
    except errors.PgError as e:
        raise CheckFailed(
            node.node_id,
            f'could not log in to {where} as user "{credentials.user}": '
            f"{e.message}" + (f" ({e.detail})" if e.detail else ""),
        )
    except (ConnectError, ConnectionLost, BackendConnectionLost, OSError, FramingError) as e:
        raise CheckFailed(node.node_id, f"could not connect to {where}: {e}")
    try:
        result: InternalResult = await protocol.run_internal(sql)
    except BaseException as e:
        # Cancelled (timed out) or the server went away: no polite goodbye.
        if protocol.transport is not None:
            # TCP, UNIX or TLS over either: each can be aborted.
            cast(ITCPTransport, protocol.transport).abortConnection()
        if isinstance(e, (BackendConnectionLost, ConnectionLost, FramingError)):
            raise CheckFailed(node.node_id, f"lost the connection to {where}: {e}")
        raise
    protocol.terminate()
    if result.error is not None:
        raise CheckFailed(
            node.node_id,
            f'query "{sql}" failed on {where}: {_server_message(result.error)}',
            result.error.get("C"),
        )
    return result


async def run_check_query(
    reactor, node: Node, credentials: BackendCredentials, database: str, sql: str, timeout: float
) -> InternalResult:
    """
    Connect to C{node}, log in, run one simple query, and disconnect.

    The whole exchange (connect, login, query) must finish within
    C{timeout} seconds; after that the connection is aborted, so a server
    that accepts connections but never answers cannot hold a check up.

    @param reactor: an C{IReactorTCP}/C{IReactorUNIX} and C{IReactorTime}.
    @param node: the node to ask (its hostname and port are used).
    @param credentials: who to log in as.
    @param database: the database to connect to.
    @param sql: one statement (several, separated by C{;}, run as one
        implicit transaction and their rows are concatenated).
    @param timeout: seconds for the whole exchange.
    @return: the rows and command tags.
    @raise CheckFailed: the node could not be reached, refused the login
        (the message quotes the server), failed the query (likewise), went
        away, or did not finish in time.
    """
    exchange = defer.Deferred.fromCoroutine(
        _connect_and_query(reactor, node, credentials, database, sql, timeout)
    )
    exchange.addTimeout(timeout, reactor)
    try:
        return await exchange
    except defer.TimeoutError:
        raise CheckFailed(
            node.node_id,
            f"node {node.node_id} ({node.hostname}:{node.port}) did not "
            f'answer "{sql}" within {timeout:g} s',
        ) from None


def check_credentials(
    config: PgpoolConfig, passwd: PoolPasswd, user: str, password: str
) -> BackendCredentials:
    """
    The credentials a check logs in with, found as Pgpool-II finds them for
    C{sr_check_user}/C{sr_check_password} (and C{health_check_*}).

    A non-empty C{password} is used, read like a pool_passwd secret: an
    C{md5...} hash, C{TEXT}-prefixed or plain clear text.  An empty one
    means the user's pool_passwd entry (its clear text, or its md5 hash,
    which is enough for md5 authentication).  With neither, the credentials
    carry no password: a server that trusts the user still lets the check
    in, and one that asks for a password makes the check fail saying so.

    @param config: the configuration the values come from (named in the
        warning when no password can be found).
    @param passwd: the loaded pool_passwd.
    @param user: e.g. C{config.sr_check_user}.
    @param password: e.g. C{config.sr_check_password}.
    @raise twisted_pgpool.auth.passwd.UnsupportedSecretError: the password (or
        the pool_passwd entry) is AES-encrypted, which cannot be used yet.
    """
    entry: Optional[PasswdEntry]
    if password:
        entry = PasswdEntry.from_stored(user, password)
    else:
        entry = passwd.lookup(user)
    if entry is None:
        if user:
            log.debug(
                'no password for check user "{user}" in {source} or '
                "{passwd_source}; logging in without one",
                user=user,
                source=config.source,
                passwd_source=passwd.source,
            )
        return BackendCredentials(user)
    return BackendCredentials(user, password=entry.plaintext, md5_hash=entry.md5_hash)


# -- is the node still there? --------------------------------------------------

#: Answers to a login attempt that show the server down or going down: it
#: is shutting down (57P01, 57P02), starting up or in recovery (57P03), or
#: crashed (the same codes while it restarts).
_DOWN_STATES = frozenset([errors.ADMIN_SHUTDOWN, errors.CRASH_SHUTDOWN, errors.CANNOT_CONNECT_NOW])

#: Who the probe says it is when no check user is configured: any name will
#: do, the server answers before it would check it.
PROBE_USER = "twisted_pgpool_probe"


class _Probe(Protocol):
    """
    Sends a StartupMessage and reads the first byte of the answer's type
    and, for an ErrorResponse, its SQLSTATE.
    """

    # Set by makeConnection before connectionMade; TCP or UNIX, both of
    # which can be aborted.
    transport: ITCPTransport

    def __init__(self, packet: bytes, answered: "defer.Deferred[str]") -> None:
        self.packet = packet
        self.answered = answered
        self.buffer = b""

    def connectionMade(self) -> None:
        self.transport.write(self.packet)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.answered.called or not self.buffer:
            return
        if self.buffer[:1] != b"E":
            self._answer(self.buffer[:1].decode("latin-1"))
            return
        if len(self.buffer) < 5:
            return
        (length,) = struct.unpack_from("!I", self.buffer, 1)
        if len(self.buffer) < 1 + length and length < 65536:
            return
        fields = messages.decode_error_fields(self.buffer[5 : 1 + length]).fields
        self._answer("E" + fields.get("C", ""))

    def _answer(self, what: str) -> None:
        self.answered.callback(what)
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        if not self.answered.called:
            self.answered.errback(reason)


async def node_answers(reactor, node: Node, user: str, timeout: float) -> bool:
    """
    Whether a node's server still takes connections: the cheap, credential-
    free check made before a session's lost connection fails a node over.

    A StartupMessage is sent; a server that answers with an authentication
    request, or refuses the user, the database or a further client (28xxx,
    3D000, 53300), is there.  A refused or timed-out connection, a close
    without an answer, or an answer that the server is shutting down,
    starting or recovering (57P01, 57P02, 57P03), mean it is not.

    A session's connection can end for reasons of its own -- the server
    closes it after the client's bad bytes without a word (an oversized
    message is only logged by PostgreSQL), or one process is terminated --
    while the node serves everyone else: those must not fail it over.
    """
    answered: "defer.Deferred[str]" = defer.Deferred()
    packet = messages.encode_startup_message({"user": user or PROBE_USER, "database": "postgres"})
    factory = Factory.forProtocol(lambda: _Probe(packet, answered))
    factory.noisy = False
    endpoint = backend_endpoint(reactor, node.hostname, node.port, timeout)

    def not_connected(failure: Failure) -> None:
        if not answered.called:
            answered.errback(failure)

    try:
        connecting = endpoint.connect(factory)
        connecting.addErrback(not_connected)
        answered.addTimeout(timeout, reactor)
        what = await answered
    except Exception as e:
        log.info(
            "node {node_id} does not answer: {reason}",
            node_id=node.node_id,
            reason=str(e) or e.__class__.__name__,
        )
        return False
    if what.startswith("E"):
        return what[1:] not in _DOWN_STATES
    return what == "R"
