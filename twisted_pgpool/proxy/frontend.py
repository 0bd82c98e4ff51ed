"""
The client side: one connection from a PostgreSQL client to the proxy.

L{FrontendProtocol} reads the startup packet (answering SSLRequest, with a
TLS handshake when C{ssl} is on, and GSSENCRequest, serving CancelRequest),
authenticates the client, logs in to the primary, and then relays: client
messages go to the backend as their original bytes, the backend's replies
come back the same way, with flow control in both directions so neither
side can make the proxy buffer more than a socket's worth of data.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from typing import (
    TYPE_CHECKING,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
)

from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import X509
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectError, ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IPushProducer,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_pgpool import logs
from twisted_pgpool.backend.pool import (
    PooledConnection,
    PoolKey,
    settings_statement,
    split_startup_parameters,
)
from twisted_pgpool.backend.protocol import (
    BackendConnectionLost,
    BackendLoginError,
    BackendProtocol,
    CredentialResponder,
    connect_backend,
)
from twisted_pgpool.cluster.model import STATUS_UP, STATUS_WAITING, Node
from twisted_pgpool.interfaces import IClientConversation
from twisted_pgpool.net.tls import openssl_reason
from twisted_pgpool.net.transports import IRelayTransport, write_eagerly
from twisted_pgpool.proxy import clientauth, memory
from twisted_pgpool.proxy.cancel import CancelTarget
from twisted_pgpool.proxy.limits import too_many_clients
from twisted_pgpool.proxy.session import CLIENT_WATCHED, Session
from twisted_pgpool.proxy.session.nodeless import (
    NodelessSession,
    no_backend_error,
    nodeless_parameters,
)
from twisted_pgpool.routing import causal
from twisted_pgpool.wire import errors, messages
from twisted_pgpool.wire.framing import (
    FramingError,
    MessageTooLarge,
    StreamFramer,
    read_startup_packet,
)

if TYPE_CHECKING:  # pragma: no cover
    from twisted_pgpool.service import ProxyCore

log = Logger(observer=logs.observer)

#: Before it is authenticated a client may send nothing longer than
#: PostgreSQL accepts in authentication (PG_MAX_AUTH_TOKEN_LENGTH).
MAX_AUTHENTICATION_MESSAGE_LENGTH = 65535 + 4

#: Messages a client may pipeline before its session starts.
MAX_EARLY_MESSAGES = 64


@implementer(IPushProducer)
class _TransportPauser:
    """
    Lets one transport's write buffer pause reading from others.

    The adapter belongs to the session, so when a transport unregisters its
    producer (on a client hang-up, say) Twisted stops the adapter, not the
    paired connections themselves.  Its targets are looked up at each call,
    so connections a session opens later are paused too.
    """

    def __init__(self, transports: Callable[[], Iterable[IPushProducer]]) -> None:
        self.transports = transports
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True
        for transport in self.transports():
            transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        for transport in self.transports():
            transport.resumeProducing()

    def stopProducing(self) -> None:
        """
        Do not close the other connections; the session decides that.
        """


class ReadGate:
    """
    Reading from the client, held closed for any of several reasons at
    once: a server's full socket (one reason per server connection), or the
    session's own reasons (a statement waiting for its turn, too many
    unanswered messages).  A transport's C{pauseProducing} and
    C{resumeProducing} are not counted, so without this a server socket
    that drains would start reading the client again while the session
    still waits -- and whatever it reads would pile up in memory.
    """

    def __init__(self, transport: IPushProducer) -> None:
        self.transport = transport
        self._reasons: Set[object] = set()

    def close(self, reason: object) -> None:
        if not self._reasons:
            self.transport.pauseProducing()
        self._reasons.add(reason)

    def open(self, reason: object) -> None:
        if reason not in self._reasons:
            return
        self._reasons.discard(reason)
        if not self._reasons:
            self.transport.resumeProducing()

    def producer(self) -> "IPushProducer":
        """
        A producer to register on a server connection's transport: its
        full write buffer closes the gate, until drained.
        """
        return _GateProducer(self)


@implementer(IPushProducer)
class _GateProducer:
    def __init__(self, gate: ReadGate) -> None:
        self.gate = gate

    def pauseProducing(self) -> None:
        self.gate.close(self)

    def resumeProducing(self) -> None:
        self.gate.open(self)

    def stopProducing(self) -> None:
        """
        Do not close the client's connection; the session decides that.
        """
        self.gate.open(self)


class FrontendState(enum.IntEnum):
    """
    Where a client connection is in its life.  A connection only moves
    forward through these (it may skip some: a refused one goes from
    C{STARTUP} to C{CLOSING}), so they are ordered, and C{state >= CLOSING}
    reads "on its way out".

    @cvar STARTUP: reading the startup packet (L{read_startup_packet}):
        an SSLRequest, GSSENCRequest, CancelRequest or StartupMessage.
    @cvar TLS: the client asked for TLS and got C{S}: the handshake runs,
        and the startup packet comes again, encrypted.  A second
        SSLRequest is refused; a failed handshake is logged.
    @cvar AUTHENTICATING: a StartupMessage was accepted: the client is
        authenticated (L{clientauth}), its framer holding any message it
        pipelines meanwhile.
    @cvar QUEUED: authenticated, waiting for a session slot
        (C{num_init_children}); C{authentication_timeout} does not run.
    @cvar CONNECTING: has a slot; getting its first connection (from
        the pool, or a new login): the primary's, or a standby's when no
        primary is usable (L{FrontendProtocol._first_connection}).
    @cvar RELAYING: the session runs (L{Session}): the framer hands the
        client's messages to it.
    @cvar CLOSING: a FATAL was sent or is waiting for the replies owed
        before it, the client said Terminate, a CancelRequest was served,
        or the connection was refused: nothing more is read.
    @cvar CLOSED: the connection is gone (C{connectionLost}).
    """

    STARTUP = 1
    TLS = 2
    AUTHENTICATING = 3
    QUEUED = 4
    CONNECTING = 5
    RELAYING = 6
    CLOSING = 7
    CLOSED = 8


_STARTUP = FrontendState.STARTUP
_TLS = FrontendState.TLS
_AUTHENTICATING = FrontendState.AUTHENTICATING
_QUEUED = FrontendState.QUEUED
_CONNECTING = FrontendState.CONNECTING
_RELAYING = FrontendState.RELAYING
_CLOSING = FrontendState.CLOSING
_CLOSED = FrontendState.CLOSED


def _describe_peer(address: IAddress) -> Tuple[Optional[str], Optional[int]]:
    if isinstance(address, (IPv4Address, IPv6Address)):
        return address.host, address.port
    return None, None


@implementer(IClientConversation)
class FrontendProtocol(Protocol):
    """
    One client connection.

    @ivar core: what all sessions share (configuration, cluster, auth...).
    @ivar backend: the backend connection while relaying.
    @ivar user: the user name from the startup packet.
    @ivar database: the database name from the startup packet.
    @ivar ssl_in_use: whether the client connection is encrypted (TLS was
        started after its SSLRequest).
    @ivar _state: where the connection is in its life, a L{FrontendState}:
        C{STARTUP}, C{TLS}, C{AUTHENTICATING}, C{QUEUED}, C{CONNECTING},
        C{RELAYING}, C{CLOSING} or C{CLOSED}; changed by L{_advance} (forward
        only) and C{connectionLost}.
    """

    # Set by makeConnection, before connectionMade.
    transport: IRelayTransport

    def __init__(self, core: "ProxyCore") -> None:
        self.core = core
        self.user: Optional[str] = None
        self.database: Optional[str] = None
        self.application_name = ""
        self.startup_min_lsn = 0
        self.session: Optional[Session] = None
        self.connection: Optional[PooledConnection] = None
        self.process_id = 0
        self.secret_key = 0
        self.peer_host: Optional[str] = None
        self.peer_port: Optional[int] = None
        self.connected_at = 0.0
        self._startup_buffer = bytearray()
        self._framer: Optional[StreamFramer] = None
        self._password_waiter: Optional[defer.Deferred] = None
        self._early_messages: Deque[Tuple[int, bytes]] = deque()
        self._auth_timer: Optional[IDelayedCall] = None
        self._slot_request: Optional[defer.Deferred] = None
        self._has_slot = False
        # Counted against max_unauthenticated_clients: from connectionMade
        # until authenticated or closed, released exactly once.
        self._unauthenticated = False
        self._auth: Optional[clientauth.AuthResult] = None
        self._settings: Dict[str, str] = {}
        self._startup_only: Tuple[Tuple[str, str], ...] = ()
        self._parameters: Dict[str, str] = {}
        self._client_pauser: Optional[_TransportPauser] = None
        self.read_gate: Optional[ReadGate] = None
        self._idle_timer: Optional[IDelayedCall] = None
        self.last_activity = 0.0
        self._state = _STARTUP
        self.ssl_in_use = False
        # The client took part in a backend login (its challenge relayed):
        # a failed login is not tried again on another node.
        self._spoke_during_login = False

    @property
    def state(self) -> FrontendState:
        """
        Where the connection is in its life.
        """
        return self._state

    def _advance(self, state: FrontendState) -> None:
        """
        Move on to C{state}, unless the connection is already past it (on
        its way out, say, while a coroutine of its login was waiting).
        """
        if state > self._state:
            self._state = state

    # -- connection lifecycle ---------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)
            transport.setTcpKeepAlive(True)
        write_eagerly(transport)
        self.peer_host, self.peer_port = _describe_peer(transport.getPeer())
        self.connected_at = time.time()
        config = self.core.config
        if config.log_connections:
            log.info(
                "new connection received: host={host} port={port}",
                host=self.peer_host or "[local]",
                port=self.peer_port or "",
            )
        if not self.core.limiter.begin_login():
            # Refused before reading anything, as PgBouncer does at
            # max_client_conn: a connection beyond the bound must cost
            # nothing, not even a wait for its startup packet.
            self._log_refusals(
                "max_unauthenticated_clients "
                f"({self.core.limiter.max_unauthenticated}) "
                "connections are authenticating"
            )
            self._advance(_CLOSING)
            transport.write(too_many_clients().to_bytes())
            transport.loseConnection()
            return
        self._unauthenticated = True
        self._start_auth_timer()

    def _start_auth_timer(self) -> None:
        timeout = self.core.config.authentication_timeout
        if timeout > 0:
            self._auth_timer = self.core.reactor.callLater(timeout, self._authentication_timed_out)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self._state = _CLOSED
        if self.ssl_in_use and self.user is None and reason.check(SSL.Error):
            # A failed handshake: a client certificate that did not verify
            # (unknown authority, revoked, expired) is only seen here.
            log.info(
                "could not accept SSL connection from {host}: {reason}",
                host=self.peer_host or "[local]",
                reason=openssl_reason(reason.value),
            )
        self._cancel_auth_timer()
        waiter, self._password_waiter = self._password_waiter, None
        if waiter is not None:
            waiter.errback(
                Failure(
                    errors.fatal(
                        errors.CONNECTION_FAILURE, "client went away during authentication"
                    )
                )
            )
        request, self._slot_request = self._slot_request, None
        if request is not None:
            request.cancel()
        self._end_login()
        self._end_session()
        if self.core.config.log_disconnections and self.user is not None:
            elapsed = time.time() - self.connected_at
            log.info(
                "frontend disconnection: session time: {elapsed} user={user} "
                "database={database} host={host} port={port}",
                elapsed=_format_elapsed(elapsed),
                user=self.user,
                database=self.database,
                host=self.peer_host or "[local]",
                port=self.peer_port or "",
            )

    def _end_session(self) -> None:
        """
        Give back what the session holds: its backend connections (to the
        pool, which resets or closes them), its cancel key and its slot.
        Safe to call more than once.
        """
        timer, self._idle_timer = self._idle_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        session, self.session = self.session, None
        connections: List[PooledConnection] = []
        primary = self.connection
        # Part of a message the client broke off went to a server (the
        # primary, or where the session streamed it): that server is still
        # reading the rest, so its connection can serve nobody else.
        broken: Tuple[BackendProtocol, ...] = ()
        if session is not None:
            broken = session.mid_message_backends()
            connections = session.close()
        elif primary is not None:
            connections = [primary]
            if self._framer is not None and self._framer.mid_message:
                broken = (primary.backend,)
        if self._framer is not None:
            if self._framer.buffered:
                # Nothing will read the rest of a message held in part.
                self._framer.stop()
            if self._framer.largest_assembled >= memory.TRIM_AFTER:
                # Once this call is over and the session's buffers are
                # freed: see twisted_pgpool.proxy.memory.
                self._framer.largest_assembled = 0
                self.core.reactor.callLater(0, memory.release_free_memory)
        self.connection = None
        if connections and self._state is not _CLOSED:
            self.transport.unregisterProducer()
        for connection in connections:
            if connection.backend in broken:
                self.core.pool.discard_broken(connection)
                continue
            connection.backend.transport.unregisterProducer()
            resetting = self.core.pool.give_back(connection)
            if resetting is not None:
                resetting.addErrback(_release_failed)
        if self.process_id:
            self.core.cancels.unregister(self.process_id, self.secret_key)
            self.process_id = 0
        self.core.sessions.discard(self)
        if self._has_slot:
            self._has_slot = False
            self.core.limiter.release()

    def _end_login(self) -> None:
        """
        Stop counting this connection as unauthenticated: it has
        authenticated, or it is gone.  Safe to call more than once.
        """
        if self._unauthenticated:
            self._unauthenticated = False
            self.core.limiter.end_login()

    @property
    def backend(self) -> Optional[BackendProtocol]:
        """
        The session's primary connection.
        """
        return self.connection.backend if self.connection is not None else None

    def _cancel_auth_timer(self) -> None:
        timer, self._auth_timer = self._auth_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _authentication_timed_out(self) -> None:
        self._auth_timer = None
        if self._state < _RELAYING:
            log.info("authentication timeout for client {host}", host=self.peer_host or "[local]")
            self.fail(
                errors.fatal(errors.QUERY_CANCELED, "canceling authentication due to timeout")
            )

    def _client_stream_failed(self, error: Exception) -> None:
        """
        The client's own bytes could not be handled: they do not frame
        (08P01), or handling them hit a bug of ours (XX000).  Either way
        this ends this client's session and nothing else -- no node is
        blamed, whichever connection's event happened to deliver the bytes
        (see L{StreamFramer}'s C{on_error}).

        As PostgreSQL would, the client first gets the replies it is owed
        for the messages it sent before the bad ones, then the FATAL.
        """
        if isinstance(error, MessageTooLarge):
            fatal = errors.fatal(
                errors.PROGRAM_LIMIT_EXCEEDED,
                f"message too large: "
                f"{messages.FRONTEND_NAMES.get(error.message_type, 'client')} "
                f"message of {error.length} bytes exceeds "
                f"max_buffered_message_length ({error.limit} bytes)",
                hint="The proxy reads this message whole. Raise "
                "max_buffered_message_length, or send large values as "
                "parameters of a prepared statement (Bind), which are "
                "passed on as they arrive.",
            )
        elif isinstance(error, FramingError):
            fatal = errors.fatal(errors.PROTOCOL_VIOLATION, str(error))
        else:
            # A bug of ours must end this session cleanly, in PostgreSQL's
            # terms, and nobody else's.
            log.failure("internal error while handling client data", Failure(error))
            fatal = errors.fatal(errors.INTERNAL_ERROR, "internal error in the proxy")
        self.end_after_replies(fatal)

    def end_after_replies(self, fatal: errors.PgError) -> None:
        """
        End the session with C{fatal} for something the client sent: after
        the replies it is owed for what it sent before, as PostgreSQL
        would.  Nothing more is read from the client meanwhile.
        """
        session = self.session
        if session is None or self._state >= _CLOSING:
            self.fail(fatal)
            return
        self._advance(_CLOSING)
        session.finish_with(lambda: self._send_fatal(fatal))

    def _send_fatal(self, error: errors.PgError) -> None:
        if self._state is _CLOSED:
            return
        self.transport.write(error.to_bytes())
        self.transport.loseConnection()

    def fail(self, error: errors.PgError) -> None:
        """
        Send an error and, if it is FATAL, close the connection.
        """
        if self._state >= _CLOSING:
            return
        self.transport.write(error.to_bytes())
        if error.severity in ("FATAL", "PANIC"):
            self._advance(_CLOSING)
            self.transport.loseConnection()

    # -- bytes in ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._state >= _CLOSING:
            return
        framer = self._framer
        if framer is not None:
            try:
                framer.feed(data)
            except Exception as e:
                framer.stop()
                self._client_stream_failed(e)
                return
            # A batch still held once the read is done may be all the
            # client sends before it waits (a pipeline with no Sync): the
            # session decides.  Read here, not called, on the hot path.
            session = self.session
            if session is not None and session._batch:
                session.client_read_ended()
            return
        self._startup_buffer += data
        while self._state < _AUTHENTICATING:
            try:
                body = read_startup_packet(self._startup_buffer, messages.MAX_STARTUP_PACKET_LENGTH)
            except FramingError as e:
                self.fail(errors.fatal(errors.PROTOCOL_VIOLATION, str(e)))
                return
            if body is None:
                return
            self._startup_packet_received(body)

    def _startup_packet_received(self, body: bytes) -> None:
        try:
            packet = messages.decode_startup_packet(body)
        except messages.MessageFormatError:
            self.fail(errors.fatal(errors.PROTOCOL_VIOLATION, "invalid startup packet layout"))
            return
        if isinstance(packet, messages.SSLRequest):
            self._ssl_requested()
            return
        if isinstance(packet, messages.GSSENCRequest):
            # GSSAPI encryption is not offered: 'N' tells the client to go
            # on without it (TLS, or in the clear) or give up, as it prefers.
            self.transport.write(b"N")
            return
        if isinstance(packet, messages.CancelRequest):
            self._advance(_CLOSING)
            self._cancel_auth_timer()
            d = self.core.cancels.cancel(packet.process_id, packet.secret_key)
            d.addBoth(lambda _: self.transport.loseConnection())
            return
        if packet.major != 3:
            self.fail(
                errors.fatal(
                    errors.FEATURE_NOT_SUPPORTED,
                    f"unsupported frontend protocol {packet.major}.{packet.minor}: "
                    "server supports 3.0 to 3.0",
                )
            )
            return
        leftover = bytes(self._startup_buffer)
        self._startup_buffer = bytearray()
        self._framer = StreamFramer(
            self._message_during_startup,
            self._unexpected_forward,
            watched=messages.FRONTEND_TYPES,
            max_length=MAX_AUTHENTICATION_MESSAGE_LENGTH,
            valid_types=messages.FRONTEND_TYPES,
            on_error=self._client_stream_failed,
            in_order=True,
            small_types=messages.SMALL_FRONTEND_TYPES,
        )
        self._advance(_AUTHENTICATING)
        d = defer.Deferred.fromCoroutine(self._start_session(packet))
        d.addErrback(self._session_failed)
        if leftover:
            self.dataReceived(leftover)

    def _ssl_requested(self) -> None:
        """
        Answer an SSLRequest: C{S} and a TLS handshake when C{ssl} is on,
        else C{N}, which tells the client to go on in the clear or give up,
        as its C{sslmode} says.  The startup packet then comes again, over
        TLS if it was started.
        """
        if self._state is _TLS:
            # As PostgreSQL: once encrypted, an SSLRequest is just an
            # unknown protocol version.
            self.fail(
                errors.fatal(
                    errors.FEATURE_NOT_SUPPORTED,
                    "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.0",
                )
            )
            return
        tls = self.core.tls
        if tls is None:
            self.transport.write(b"N")
            return
        if self._startup_buffer:
            # These bytes came in plain text before the handshake, so they
            # may have been injected by a man in the middle; taking them as
            # if encrypted is CVE-2021-23214.  The error goes instead of
            # 'S', which libpq reports as the server's error.
            log.warn(
                "client {host} sent unencrypted data after its SSL request",
                host=self.peer_host or "[local]",
            )
            self.fail(
                errors.fatal(
                    errors.PROTOCOL_VIOLATION,
                    "received unencrypted data after SSL request",
                    detail="This could be either a client-software bug or "
                    "evidence of an attempted man-in-the-middle attack.",
                )
            )
            return
        self.transport.write(b"S")
        self.transport.startTLS(tls.server)
        self.ssl_in_use = True
        self._advance(_TLS)

    def _client_certificate(self) -> Optional[x509.Certificate]:
        """
        The certificate the client presented in the TLS handshake, which
        the handshake verified (see L{twisted_pgpool.net.tls}), or L{None}.
        """
        transport = self.transport
        if not self.ssl_in_use or not ISSLTransport.providedBy(transport):
            return None
        certificate = ISSLTransport(transport).getPeerCertificate()
        # pyOpenSSL's X509, or None when the client presented none (the
        # interface says only "an object").
        if not isinstance(certificate, X509):
            return None
        return certificate.to_cryptography()

    # -- the startup flow --------------------------------------------------

    async def _start_session(self, startup: messages.StartupMessage) -> None:
        parameters = dict(startup.parameters)
        user = parameters.get("user")
        if not user:
            raise errors.fatal(
                errors.INVALID_AUTHORIZATION_SPECIFICATION,
                "no PostgreSQL user name specified in startup packet",
            )
        database = parameters.get("database") or user
        self.user, self.database = user, database
        self.application_name = parameters.get("application_name", "")
        unsupported = sorted(name for name in parameters if name.startswith("_pq_."))
        for name in unsupported:
            del parameters[name]
        parameters["database"] = database
        # The read floor of read-your-writes is the proxy's, not the server's.
        try:
            self.startup_min_lsn = causal.parse_floor(causal.take_startup_floor(parameters))
        except errors.PgError as e:
            raise errors.fatal(e.sqlstate, e.message, hint=e.hint)

        # A client that could not get a slot anyway (reserved_connections,
        # or a full queue) is refused before it authenticates.
        limiter = self.core.limiter
        if limiter.refuses_arrival():
            raise too_many_clients()

        # Authenticate before taking a slot, so that clients which never
        # answer their challenge hold none (they count against
        # max_unauthenticated_clients instead, until authentication_timeout).
        auth = await self.core.authenticator.authenticate(
            self,
            user,
            database,
            self.peer_host,
            ssl=self.ssl_in_use,
            client_certificate=self._client_certificate(),
        )
        if self._state >= _CLOSING:
            # Timed out or failed meanwhile: connectionLost releases the
            # count; no slot for a connection on its way out.
            return
        self._end_login()

        # Wait for a session slot (num_init_children); the authentication
        # clock does not run while queued.  A free slot is taken without a
        # Deferred, which matters under connection churn.
        if not limiter.try_acquire():
            request = limiter.acquire()
            if not request.called:
                self._cancel_auth_timer()
                self._slot_request = request
                self._advance(_QUEUED)
                await request
                self._slot_request = None
                self._has_slot = True
                if self._state is _CLOSED:
                    self._end_session()
                    return
                self._start_auth_timer()
            elif isinstance(request.result, Failure):
                await request  # raises the 53300 error
        self._has_slot = True
        self._advance(_CONNECTING)

        self._auth = auth
        self._parameters = parameters
        self._settings, self._startup_only = split_startup_parameters(parameters)
        try:
            first = await self._first_connection()
        except NodeUnreachable:
            # Every node was tried: none could be reached.  Only a server
            # could tell who a client the proxy did not authenticate is: it
            # gets the error (08006, unable to connect), as it always did.
            if (
                not auth.verified
                or self._spoke_during_login
                or self.core.config.backend_clustering_mode not in _STANDBYS_SERVE
            ):
                raise
            first = None
        if first is None:
            if self._state is _CLOSED:
                self._end_session()
                return
            if not auth.verified:
                # No node is usable (all down, or none configured).
                raise no_backend_error(self.core.cluster.nodes)
            self._begin_nodeless(startup, unsupported)
            return
        connection, no_primary = first
        self.connection = connection
        if self._state is _CLOSED:
            self._end_session()
            return
        self._begin_relay(startup, unsupported, connection, no_primary)

    async def _first_connection(self) -> Optional[Tuple[PooledConnection, bool]]:
        """
        The session's first connection, and whether the session has no
        primary: the primary's; in streaming or logical replication mode,
        when no primary is usable or it cannot be reached, a standby's,
        which then serves the session (as Pgpool-II's sessions have only the
        standbys then); L{None} when no node is usable.

        @raise NodeUnreachable: the last node tried could not be reached,
            nor could any other.

        While a failover searches for the new primary, a new session waits
        up to C{primary_wait_timeout} for it first, so that a switchover
        does not leave it on a standby for its whole life.  In the other
        modes there is no standby to serve it: it waits that long for a
        primary, then fails, as it fails when the primary cannot be
        reached.

        A login the client took part in (the server's challenge relayed to
        it) is never tried again on another node.
        """
        cluster = self.core.cluster
        config = self.core.config
        if not any(n.is_usable for n in cluster.nodes):
            return None
        standbys_serve = config.backend_clustering_mode in _STANDBYS_SERVE
        node = cluster.primary()
        if node is None and (not standbys_serve or self._primary_search_running()):
            node = await cluster.wait_for_primary(self.core.reactor, config.primary_wait_timeout)
        if not standbys_serve:
            if node is None:
                raise errors.fatal(
                    errors.CANNOT_CONNECT_NOW,
                    "no primary node is available",
                    detail="every node is down or none is a primary; "
                    f"waited {config.primary_wait_timeout:g} s",
                )
            return await self._acquire(node), False
        tried = set()
        unreachable: Optional[NodeUnreachable] = None
        if node is not None:
            try:
                connection = await self._acquire(node)
            except NodeUnreachable as e:
                if self._spoke_during_login:
                    raise
                tried.add(node.node_id)
                unreachable = e
            else:
                if self.core.new_sessions_served_by != "primary":
                    self.core.new_sessions_served_by = "primary"
                    log.info(
                        "primary node {node_id} serves new sessions again", node_id=node.node_id
                    )
                return connection, False
        for standby in self._standbys_to_try(tried):
            try:
                connection = await self._acquire(standby)
            except NodeUnreachable as e:
                if self._spoke_during_login:
                    raise
                unreachable = e
                continue
            if self.core.new_sessions_served_by != "standby":
                self.core.new_sessions_served_by = "standby"
                log.warn(
                    "no primary node is usable: new sessions are served by "
                    "a standby (node {node_id} for this one), reads only; "
                    "writes are refused with 25006",
                    node_id=standby.node_id,
                )
            return connection, True
        if unreachable is not None:
            raise unreachable
        return None

    def _primary_search_running(self) -> bool:
        """
        Whether a failover (or failback) is running, which may find a new
        primary.
        """
        failover = self.core.failover
        return failover is not None and failover.busy

    def _standbys_to_try(self, tried: Set[int]) -> List[Node]:
        """
        The usable nodes not tried yet, the balancer's choice for this
        client first (weights and redirect preference lists count), then
        the others in node order.
        """
        candidates = [n for n in self.core.cluster.nodes if n.is_usable and n.node_id not in tried]
        chosen = self.core.balancer.choose(
            self.user or "", self.database or "", self.application_name
        )
        first = [n for n in candidates if n is chosen]
        return first + [n for n in candidates if n is not chosen]

    async def _acquire(self, node: Node) -> PooledConnection:
        """
        A logged-in connection to C{node} for this client: a pooled one
        given the client's settings, or a new one.
        """
        pool = self.core.pool
        auth = self._auth
        assert auth is not None and self.user is not None and self.database is not None
        poolable = pool.is_poolable(self.user, self.database, auth.verified)
        key = PoolKey(self.user, self.database, node.node_id, self._startup_only)
        connection = pool.checkout(key) if poolable else None
        if connection is None and poolable:
            # A client reconnecting at once finds its old connection still
            # being reset: wait for it rather than open another.
            resetting = pool.wait_for_reset(key)
            if resetting is not None:
                await resetting
                connection = pool.checkout(key)
        if connection is not None:
            error = await self._apply_settings(connection, self._settings)
            if error is not None:
                pool.discard(connection)
                raise error
            return connection
        if poolable:
            # Open with the identity only, so that once reset the connection
            # carries nobody's settings; the client's own follow as SET.
            login = {"user": self.user, "database": self.database}
            login.update(self._startup_only)
        else:
            login = self._parameters
        pool.make_room(node.node_id)
        try:
            backend = await connect_backend(
                self.core.reactor,
                node.node_id,
                node.hostname,
                node.port,
                self.core.config.connect_timeout,
                login,
                auth.responder,
                tls=node.tls,
            )
        except (ConnectError, defer.TimeoutError, BackendConnectionLost) as e:
            log.error(
                "failed to connect to backend node {node_id} ({host}:{port}): {reason}",
                node_id=node.node_id,
                host=node.hostname,
                port=node.port,
                reason=str(e) or e.__class__.__name__,
            )
            self.report_node_failure(
                node.node_id,
                f"failed to connect to backend node "
                f"{node.node_id}: {str(e) or e.__class__.__name__}",
            )
            raise NodeUnreachable(
                "FATAL",
                errors.CONNECTION_FAILURE,
                "unable to connect to the PostgreSQL server",
                detail=f"backend node {node.node_id} could not be reached",
            )
        write_eagerly(backend.transport)
        connection = pool.add(backend, key, poolable)
        if poolable:
            error = await self._apply_settings(connection, self._settings)
            if error is not None:
                pool.discard(connection)
                raise error
        if node.status == STATUS_WAITING:
            # Only "waiting" becomes "up" here: a node detached while this
            # connection was being made stays down.
            self.core.cluster.set_status(node, STATUS_UP, "first session")
        return connection

    def _open_for_session(self, node: Node) -> defer.Deferred:
        """
        Open a further connection (a load-balance node) for the running
        session, registered for flow control like the first.
        """
        d = defer.Deferred.fromCoroutine(self._acquire(node))

        def opened(connection: PooledConnection) -> PooledConnection:
            if self._client_pauser is not None and self._state is not _CLOSED:
                assert self.read_gate is not None
                connection.backend.transport.registerProducer(self.read_gate.producer(), True)
                if self._client_pauser.paused:
                    connection.backend.transport.pauseProducing()
            return connection

        return d.addCallback(opened)

    async def _apply_settings(
        self, connection: PooledConnection, settings: Dict[str, str]
    ) -> Optional[errors.PgError]:
        """
        Give a pooled connection the client's startup settings.

        @return: None, or the error to end the session with (what
            PostgreSQL would have said at startup for a bad setting).
        """
        if settings == connection.applied:
            # The usual case under churn: the last client of this
            # connection was of the same application.
            return None
        backend = connection.backend
        statement = settings_statement(settings, connection.applied, backend.parameters)
        if statement is None:
            return None
        result = await backend.run_internal(statement)
        if result.error is None:
            connection.applied = dict(settings)
            return None
        return errors.fatal(
            result.error.get("C", errors.PROTOCOL_VIOLATION),
            result.error.get("M", "invalid startup parameter"),
            detail=result.error.get("D"),
            hint=result.error.get("H"),
        )

    def _begin_relay(
        self,
        startup: messages.StartupMessage,
        unsupported: List[str],
        connection: PooledConnection,
        no_primary: bool = False,
    ) -> None:
        backend = connection.backend
        self._cancel_auth_timer()
        # The client is bound to this server process for its whole session:
        # it is told its real pid (see twisted_pgpool.proxy.cancel).
        self.process_id = backend.process_id
        self.secret_key = self.core.cancels.register(backend.process_id, self._cancel_targets)
        self.core.sessions.add(self)
        greeting = []
        if startup.minor > 0 or unsupported:
            greeting.append(
                messages.negotiate_protocol_version(messages.PROTOCOL_VERSION_3_0, unsupported)
            )
        greeting.append(messages.authentication_ok())
        greeting.extend(backend.notices)
        backend.notices = []
        greeting.append(connection.parameter_status_messages())
        greeting.append(messages.backend_key_data(self.process_id, self.secret_key))
        greeting.append(messages.ready_for_query(backend.transaction_status))
        self.transport.writeSequence(greeting)

        assert self._framer is not None and self._auth is not None
        reusable = isinstance(self._auth.responder, CredentialResponder)
        session = Session(
            self,
            self.core,
            connection,
            self._framer,
            self._open_for_session if reusable else None,
            no_primary=no_primary,
        )
        self.session = session
        self._advance(_RELAYING)
        # Flow control: a full client socket pauses reading from the
        # servers, a full server socket pauses reading from the client.
        self._client_pauser = _TransportPauser(
            lambda: [link.backend.transport for link in session.links.values()]
        )
        self.transport.registerProducer(self._client_pauser, True)
        self.read_gate = ReadGate(self.transport)
        backend.transport.registerProducer(self.read_gate.producer(), True)

        self.last_activity = self.core.reactor.seconds()
        if self.core.config.client_idle_limit > 0:
            self._idle_timer = self.core.reactor.callLater(
                self.core.config.client_idle_limit, self._check_idle
            )

        self._framer.max_length = self.core.config.max_message_length
        self._framer.max_whole_length = self.core.config.max_buffered_message_length
        # While the session waits (the framer paused), what the client
        # keeps sending is held: past a limit, stop reading it.
        self._framer.on_backlog = self._client_backlog
        # Straight to the session unless client_idle_limit needs each
        # message's time: one call less per message.
        handler = self._client_message if self._idle_timer is not None else session.client_message
        self._framer.redirect(
            handler,
            session.pass_to_primary,
            CLIENT_WATCHED,
            heads=session.heads,
            on_head=session.client_head,
        )
        early, self._early_messages = self._early_messages, deque()
        for message_type, payload in early:
            if handler(message_type, payload) is None:
                # Passed through as it came (what the framer would do).
                session.pass_to_primary(messages.message(message_type, payload))

    def _begin_nodeless(self, startup: messages.StartupMessage, unsupported: List[str]) -> None:
        """
        Start a session without any backend connection
        (L{NodelessSession}): no node could be used, and the proxy itself
        authenticated the client.  The greeting's parameters are the
        proxy's own (there is no server to report them); there is no
        BackendKeyData, since nothing could be cancelled.
        """
        self._cancel_auth_timer()
        if self.core.new_sessions_served_by != "proxy":
            self.core.new_sessions_served_by = "proxy"
            log.warn(
                "no backend node is usable: new sessions of clients the "
                "proxy authenticates itself answer only its own "
                "statements (SHOW POOL_NODES, PGPOOL SHOW...); others are "
                "refused"
            )
        self.core.sessions.add(self)
        greeting = []
        if startup.minor > 0 or unsupported:
            greeting.append(
                messages.negotiate_protocol_version(messages.PROTOCOL_VERSION_3_0, unsupported)
            )
        greeting.append(messages.authentication_ok())
        greeting.extend(
            messages.parameter_status(name, value)
            for name, value in nodeless_parameters(self._parameters)
        )
        greeting.append(messages.ready_for_query(messages.TRANSACTION_IDLE))
        self.transport.writeSequence(greeting)

        assert self._framer is not None
        session = NodelessSession(self, self._framer)
        self.session = session  # type: ignore[assignment]
        self._advance(_RELAYING)
        # Answers are written at once: a client that does not read them
        # stops being read.
        self._client_pauser = _TransportPauser(lambda: [self.transport])
        self.transport.registerProducer(self._client_pauser, True)
        self._framer.max_length = self.core.config.max_message_length
        self._framer.max_whole_length = self.core.config.max_buffered_message_length
        self._framer.redirect(session.client_message, session.pass_to_primary, CLIENT_WATCHED)
        early, self._early_messages = self._early_messages, deque()
        for message_type, payload in early:
            session.client_message(message_type, payload)

    def _client_message(self, message_type: int, payload: bytes) -> Optional[bytes]:
        if self._idle_timer is not None:
            self.last_activity = self.core.reactor.seconds()
        session = self.session
        if session is None:
            return b""
        return session.client_message(message_type, payload)

    def _client_backlog(self, full: bool) -> None:
        """
        The framer holds (or no longer holds) more of the client's bytes
        than it should while the session waits: one more reason for the
        read gate (set up with the session, before this callback) to stop
        reading from the client, counted with the others so that a server
        socket draining does not resume reading early.
        """
        if self._state is _CLOSED:
            return
        assert self.read_gate is not None
        if full:
            self.read_gate.close("backlog")
        else:
            self.read_gate.open("backlog")

    def terminate_session(self) -> None:
        """
        The client said goodbye (Terminate).
        """
        self._advance(_CLOSING)
        self._end_session()
        self.transport.loseConnection()

    def log_statement(
        self, sql: str, prefix: str, node_ids: Iterable[int], links: Mapping[int, PooledConnection]
    ) -> None:
        """
        C{log_statement} and C{log_per_node_statement} lines, the latter in
        Pgpool-II's shape so its users' log watching keeps working.
        """
        config = self.core.config
        sql = logs.printable(sql)
        if config.log_statement:
            log.info("statement: {statement}", statement=prefix + sql)
        if config.log_per_node_statement:
            for node_id in node_ids:
                link = links.get(node_id)
                log.info(
                    "DB node id: {node_id} backend pid: {backend_pid} statement: {statement}",
                    node_id=node_id,
                    backend_pid=link.backend.process_id if link else 0,
                    statement=prefix + sql,
                )

    def _session_failed(self, failure: Failure) -> None:
        if failure.check(defer.CancelledError) and self._state is _CLOSED:
            # The client gave up while queued for a slot.
            return
        if failure.check(errors.PgError):
            error = failure.value
            if error.sqlstate == errors.TOO_MANY_CONNECTIONS:
                limiter = self.core.limiter
                self._log_refusals(
                    "every session slot is taken "
                    f"(num_init_children {self.core.config.num_init_children}, "
                    f"{limiter.waiting} waiting)"
                )
            if error.sqlstate in (
                errors.INVALID_PASSWORD,
                errors.INVALID_AUTHORIZATION_SPECIFICATION,
            ):
                log.info(
                    "authentication failed for user {user} from {host}: {message}",
                    user=self.user,
                    host=self.peer_host or "[local]",
                    message=error.message,
                )
            self.fail(error)
        elif failure.check(BackendLoginError):
            hidden = clientauth.refusal_for_client(
                self._auth, self.user or "", failure.value.fields
            )
            if hidden is not None:
                self.fail(hidden)
            elif self._state < _CLOSING:
                self._advance(_CLOSING)
                self.transport.write(failure.value.raw)
                self.transport.loseConnection()
        elif failure.check(BackendConnectionLost):
            self.fail(errors.fatal(errors.CONNECTION_FAILURE, str(failure.value)))
        else:
            log.failure("session startup failed", failure)
            self.fail(
                errors.fatal(errors.INTERNAL_ERROR, "internal error in the proxy during startup")
            )

    def _log_refusals(self, reason: str) -> None:
        """
        Say that clients are being turned away with C{53300} -- what an
        operator must know to raise C{num_init_children} -- at most once a
        second, with how many.
        """
        count = self.core.limiter.refusals_to_log()
        if count:
            log.warn(
                "refused {count} client connection(s) with 53300 "
                '"sorry, too many clients already": {reason}',
                count=count,
                reason=reason,
            )

    # -- IClientConversation (used by the authenticator) --------------------

    def send(self, data: bytes) -> None:
        if self._state is not _CLOSED:
            if self._state is _CONNECTING:
                # A server's challenge relayed: this login is the client's.
                self._spoke_during_login = True
            self.transport.write(data)

    def receive_password_message(self) -> defer.Deferred:
        if self._state is _CLOSED:
            return defer.fail(
                errors.fatal(errors.CONNECTION_FAILURE, "client went away during authentication")
            )
        if self._early_messages:
            return defer.maybeDeferred(self._password_payload, *self._early_messages.popleft())
        self._password_waiter = defer.Deferred()
        return self._password_waiter

    @staticmethod
    def _password_payload(message_type: int, payload: bytes) -> bytes:
        if message_type != messages.PASSWORD_MESSAGE:
            raise errors.fatal(
                errors.PROTOCOL_VIOLATION,
                f"expected password response, got message type {chr(message_type)!r}",
            )
        return payload

    def _message_during_startup(self, message_type: int, payload: bytes) -> bytes:
        waiter, self._password_waiter = self._password_waiter, None
        if waiter is not None:
            try:
                result = self._password_payload(message_type, payload)
            except errors.PgError as e:
                waiter.errback(Failure(e))
            else:
                waiter.callback(result)
        else:
            # Sent before ReadyForQuery (pipelining clients): replayed to the
            # backend once the session is up.
            if len(self._early_messages) >= MAX_EARLY_MESSAGES:
                self.fail(
                    errors.fatal(
                        errors.PROTOCOL_VIOLATION, "too many messages before the session started"
                    )
                )
                return b""
            self._early_messages.append((message_type, payload))
        return b""

    def _unexpected_forward(self, data: bytes) -> None:
        raise FramingError("client data before the session started")

    # -- relaying ----------------------------------------------------------

    def _check_idle(self) -> None:
        """
        C{client_idle_limit}: end a session idle that long outside a
        transaction; look again later otherwise.
        """
        self._idle_timer = None
        session = self.session
        if session is None or self._state >= _CLOSING:
            return
        limit = self.core.config.client_idle_limit
        idle_for = self.core.reactor.seconds() - self.last_activity
        if (
            idle_for >= limit
            and not session.busy
            and session.transaction_status == messages.TRANSACTION_IDLE
        ):
            log.info(
                "client {host} of user {user} disconnected: client_idle_limit:{limit} is reached",
                host=self.peer_host or "[local]",
                user=self.user,
                limit=_format_seconds(limit),
            )
            self.fail(
                errors.fatal(
                    errors.IDLE_SESSION_TIMEOUT,
                    "terminating connection due to client_idle_limit:"
                    f"{_format_seconds(limit)} is reached",
                )
            )
            return
        wait = limit - idle_for if idle_for < limit else limit
        self._idle_timer = self.core.reactor.callLater(wait, self._check_idle)

    def report_node_failure(self, node_id: int, reason: str, shutdown: bool = False) -> None:
        """
        Tell the failover manager a session saw a node fail, if the
        configuration says such errors detach it
        (C{failover_on_backend_error}, or C{failover_on_backend_shutdown}
        for a server's admin-shutdown error).
        """
        config = self.core.config
        wanted = (
            config.failover_on_backend_shutdown if shutdown else config.failover_on_backend_error
        )
        if wanted and self.core.failover is not None:
            self.core.failover.session_saw_failure(node_id, reason)

    def backend_lost(self, backend: BackendProtocol, reason: Failure) -> None:
        """
        A backend connection the session needed went away: end the session
        (with the server's own FATAL if it sent one, else 08006).
        """
        if backend.sent_shutdown:
            self.report_node_failure(
                backend.node_id,
                f"backend node {backend.node_id} is shutting down (57P01)",
                shutdown=True,
            )
        elif not backend.sent_fatal and not backend.terminated_by_proxy:
            self.report_node_failure(
                backend.node_id,
                f"connection to backend node {backend.node_id} lost: {reason.getErrorMessage()}",
            )
        if self._state is _CLOSED:
            return
        if self._state is _CLOSING:
            # Already on its way out (a FATAL waiting for the replies this
            # connection will now never send): go without them.
            self._end_session()
            self.transport.loseConnection()
            return
        sent_fatal = backend.sent_fatal
        self._end_session()
        if backend.failed_in_proxy:
            self.fail(errors.fatal(errors.INTERNAL_ERROR, "internal error in the proxy"))
        elif not sent_fatal:
            log.warn(
                "backend node {node_id} closed the connection of "
                "user {user} unexpectedly: {reason}",
                node_id=backend.node_id,
                user=self.user,
                reason=reason.getErrorMessage(),
            )
            self.fail(
                errors.fatal(
                    errors.CONNECTION_FAILURE,
                    "server closed the connection unexpectedly",
                    detail=f"backend node {backend.node_id} went away",
                )
            )
        else:
            self._advance(_CLOSING)
            self.transport.loseConnection()

    def _cancel_targets(self) -> List[CancelTarget]:
        session = self.session
        return session.cancel_targets() if session is not None else []


class NodeUnreachable(errors.PgError):
    """
    A node could not be reached for a login (the connection was refused,
    timed out, or broke during the login): in streaming replication mode a
    new session tries a standby next (L{FrontendProtocol._first_connection}).
    """


#: The modes in which a standby serves a session while there is no primary
#: (Pgpool-II's SL_MODE): streaming and logical replication.
_STANDBYS_SERVE = frozenset(["streaming_replication", "logical_replication"])


def _release_failed(failure: Failure) -> None:
    log.failure("releasing a backend connection failed", failure)


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}"


def _format_elapsed(seconds: float) -> str:
    """
    Pgpool-II's session time format, H:MM:SS.mmm.
    """
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours)}:{int(minutes):02d}:{secs:06.3f}"


class FrontendFactory(ServerFactory):
    """
    Builds a L{FrontendProtocol} for each accepted client.
    """

    noisy = False

    def __init__(self, core: "ProxyCore") -> None:
        self.core = core

    def buildProtocol(self, addr: Optional[IAddress]) -> FrontendProtocol:
        protocol = FrontendProtocol(self.core)
        protocol.factory = self
        return protocol
