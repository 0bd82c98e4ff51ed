"""
The backend side: one connection from the proxy to a PostgreSQL server.

L{BackendProtocol} logs in (StartupMessage, authentication, ParameterStatus,
BackendKeyData, ReadyForQuery) as a coroutine, then becomes a relay: it frames
the server's replies just enough to track the transaction status of each
ReadyForQuery and the server's ParameterStatus values, and passes every byte
on to whichever session it is attached to.  Which reply unit belongs to whom
is kept by L{twisted_pgpool.backend.replies.ReplyUnits}, which the protocol
drives; where the server's messages go now is its L{BackendState}.
"""

from __future__ import annotations

import enum
import inspect
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple

import attr
from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IStreamClientEndpoint, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_pgpool import logs
from twisted_pgpool.auth.md5 import md5_challenge_response, md5_password_hash
from twisted_pgpool.auth.scram import ScramClient, ScramError, ScramVerifier
from twisted_pgpool.backend import replies as _replies
from twisted_pgpool.backend.replies import Capture, IReplyRecorder, Recorded, ReplyUnits
from twisted_pgpool.backend.stats import count_error
from twisted_pgpool.config import SECRET_MASK
from twisted_pgpool.interfaces import IBackendAuthResponder, IReplySink
from twisted_pgpool.net.transports import IRelayTransport
from twisted_pgpool.wire import errors, messages
from twisted_pgpool.wire.framing import FORWARD, FramingError, StreamFramer

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.ssl import CertificateOptions

log = Logger(observer=logs.observer)

_LOGIN_WATCHED = messages.BACKEND_TYPES

#: Nodes whose servers were found not to accept SSL (logged once each).
_TOLD_NO_SSL: set = set()

#: What the server may send while a reply unit is relayed that the
#: connection must look at; everything else passes on as it came.
_RELAY_WATCHED = frozenset(
    [
        messages.READY_FOR_QUERY,
        messages.PARAMETER_STATUS,
        messages.ERROR_RESPONSE,
        messages.COPY_IN_RESPONSE,
        messages.COPY_BOTH_RESPONSE,
    ]
)

_FORWARD_UNIT = _replies.FORWARD


class BackendState(enum.Enum):
    """
    Where the server's messages go, on one connection.  Each state has its
    framer callback (C{_message_during_login}, C{_message_while_idle}, ...);
    L{BackendProtocol} changes both together.

    @cvar LOGIN: logging in (L{BackendProtocol.login}, after
        L{BackendProtocol.start_tls}): messages go to the login coroutine,
        and those that come after its ReadyForQuery are kept for the first
        session (L{BackendProtocol.attach}).
    @cvar IDLE: attached to a session, no reply owed: a message is
        asynchronous (a notice, a notification, a parameter change, a FATAL
        before the server goes away) and is handed to the session whole.
    @cvar RELAY: attached, answering a unit the client sees or a swallowed
        one: bytes pass on untouched to the client (or are dropped), only
        the watched messages are looked at.
    @cvar CAPTURE: attached, answering a query of the proxy's own sent in
        line with the session's (a WAL position): messages go to its
        callbacks (L{Capture}).
    @cvar INTERNAL: not attached, running queries of the proxy's own
        (L{BackendProtocol.run_internal}: settings, a reset, a health
        check): messages are collected into L{InternalResult}s.
    @cvar DETACHED: not attached (pooled, or between checks): only
        ParameterStatus changes are kept, and an ErrorResponse is noted as
        the server's last words.
    """

    LOGIN = "login"
    IDLE = "idle"
    RELAY = "relay"
    CAPTURE = "capture"
    INTERNAL = "internal"
    DETACHED = "detached"


_LOGIN = BackendState.LOGIN
_IDLE = BackendState.IDLE
_RELAY = BackendState.RELAY
_CAPTURE = BackendState.CAPTURE
_INTERNAL = BackendState.INTERNAL
_DETACHED = BackendState.DETACHED


class BackendLoginError(Exception):
    """
    The server refused the login with an ErrorResponse.

    @ivar raw: the complete ErrorResponse message, to pass on verbatim so the
        client sees the server's own words and SQLSTATE (3D000 for a missing
        database, 28P01 for a wrong password...).
    @ivar fields: the decoded fields.
    """

    def __init__(self, raw: bytes, fields: Dict[str, str]) -> None:
        super().__init__(fields.get("M", "backend refused the login"))
        self.raw = raw
        self.fields = fields


class BackendConnectionLost(Exception):
    """
    The server closed the connection (or it broke) during login.
    """


def _masked_repr(value: Any) -> str:
    """
    The C{repr} of a password or its equivalent: whether there is one, not
    what it is, so that the credentials the checks keep on the proxy's
    shared state (shown at the manhole's prompt) do not carry it.
    """
    return "None" if value is None else SECRET_MASK


@attr.s(auto_attribs=True, frozen=True)
class BackendCredentials:
    """
    What the proxy knows that lets it answer a server's password request.

    Any combination may be present; the responder uses whichever the
    server's chosen method can use.

    @ivar password: the clear-text password.
    @ivar md5_hash: C{"md5" + md5(password + user)}, enough for md5 auth.
    @ivar scram_client_key: a SCRAM ClientKey recovered from the client's
        proof, enough for SCRAM when the server's verifier has the same salt
        and iteration count as the one the client authenticated against.
    @ivar scram_verifier: the pool_passwd verifier the client key belongs
        to (its salt, iterations and ServerKey, to check the server).
    """

    user: str
    password: Optional[str] = attr.ib(default=None, repr=_masked_repr)
    md5_hash: Optional[str] = attr.ib(default=None, repr=_masked_repr)
    scram_client_key: Optional[bytes] = attr.ib(default=None, repr=_masked_repr)
    scram_verifier: Optional[ScramVerifier] = None


def _no_password(user: str, method: str) -> errors.PgError:
    return errors.fatal(
        errors.INVALID_PASSWORD,
        f"failed to authenticate with backend using {method}",
        detail=f'no usable password for user "{user}" in pool_passwd',
        hint="add the user's password to pool_passwd as a TEXT entry "
        "(twisted-pgpool passwd --method text USER)",
    )


@implementer(IBackendAuthResponder)
class CredentialResponder:
    """
    Answers the server's authentication requests from L{BackendCredentials}.
    """

    def __init__(self, credentials: BackendCredentials) -> None:
        self.credentials = credentials
        self._scram: Optional[ScramClient] = None

    def respond(self, code: int, data: bytes) -> Optional[bytes]:
        creds = self.credentials
        if code == messages.AUTH_CLEARTEXT_PASSWORD:
            if creds.password is None:
                raise _no_password(creds.user, "clear text password")
            return messages.password_message(creds.password.encode("utf-8"))
        if code == messages.AUTH_MD5_PASSWORD:
            stored = creds.md5_hash
            if stored is None and creds.password is not None:
                stored = md5_password_hash(creds.password, creds.user)
            if stored is None:
                raise _no_password(creds.user, "md5")
            return messages.password_message(md5_challenge_response(stored, bytes(data[:4])))
        if code == messages.AUTH_SASL:
            mechanisms = messages.decode_sasl_mechanisms(data)
            if "SCRAM-SHA-256" not in mechanisms:
                raise errors.fatal(
                    errors.FEATURE_NOT_SUPPORTED,
                    "backend offered no supported SASL mechanism",
                    detail="offered: " + ", ".join(mechanisms),
                )
            if creds.password is not None:
                self._scram = ScramClient(password=creds.password)
            elif creds.scram_verifier is not None and creds.scram_client_key is not None:
                # Fails with a clear message if the server's verifier has
                # another salt than the pool_passwd copy.
                self._scram = ScramClient.from_verifier(
                    creds.scram_verifier, creds.scram_client_key
                )
            else:
                raise _no_password(creds.user, "SCRAM")
            return messages.sasl_initial_response("SCRAM-SHA-256", self._scram.client_first())
        if code == messages.AUTH_SASL_CONTINUE:
            if self._scram is None:
                raise _protocol_violation("unexpected SASLContinue")
            try:
                return messages.sasl_response(self._scram.handle_server_first(bytes(data)))
            except ScramError as e:
                raise errors.fatal(
                    errors.INVALID_PASSWORD, f"SCRAM exchange with backend failed: {e}"
                )
        if code == messages.AUTH_SASL_FINAL:
            if self._scram is None:
                raise _protocol_violation("unexpected SASLFinal")
            try:
                self._scram.handle_server_final(bytes(data))
            except ScramError as e:
                raise errors.fatal(
                    errors.INVALID_PASSWORD, f"backend failed SCRAM verification: {e}"
                )
            return None
        raise errors.fatal(
            errors.FEATURE_NOT_SUPPORTED,
            f"authentication method {code} requested by backend is not supported",
        )


def _protocol_violation(text: str) -> errors.PgError:
    return errors.fatal(errors.PROTOCOL_VIOLATION, text)


class BackendProtocol(Protocol):
    """
    One connection to one PostgreSQL server.

    @ivar node_id: the configured backend number this connection goes to.
    @ivar parameters: the server's ParameterStatus values, kept current.
    @ivar client_codec: the Python codec of the connection's current
        C{client_encoding} (L{messages.client_codec}), which the client's
        SQL text is read with and the text the proxy replays is encoded
        with.
    @ivar process_id: the server process id from BackendKeyData.
    @ivar secret_key: the server's cancel key from BackendKeyData.
    @ivar transaction_status: the status byte of the last ReadyForQuery
        (C{I}, C{T} or C{E} as an int).
    @ivar notices: NoticeResponse messages received during login, to replay
        to the client.
    @ivar on_lost: called with the failure when the connection goes away
        while attached to a session.
    @ivar ssl_in_use: whether the connection is encrypted (L{start_tls}).
    @ivar error_counts: where ErrorResponses to the session's statements
        are counted by severity: its node's
        L{twisted_pgpool.cluster.model.Node.error_counts}, set by the session
        that attaches the connection.
    @ivar closed: nothing more may be sent: the connection is lost, or the
        proxy closed it (L{terminate}).  A fact beside the state: a closed
        connection's framer may still hand over what was already read.
    @ivar _state: where the server's messages go now, a L{BackendState}:
        C{LOGIN}, C{IDLE}, C{RELAY}, C{CAPTURE}, C{INTERNAL} or C{DETACHED}.
    @ivar _replies: the reply units owed to the attached session
        (L{ReplyUnits}), which C{IDLE}, C{RELAY} and C{CAPTURE} follow.
    """

    ssl_in_use = False

    # Set by makeConnection, before connectionMade.
    transport: IRelayTransport

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.parameters: Dict[str, str] = {}
        self.client_codec = messages.UTF8_CODEC
        self._parameter_status_cache: Optional[bytes] = None
        self.process_id = 0
        self.secret_key = 0
        self.transaction_status = messages.TRANSACTION_IDLE
        self.notices: List[bytes] = []
        self.connected_at: Optional[float] = None
        self.on_lost: Optional[Callable[[Failure], None]] = None
        self.sink: Optional[IReplySink] = None
        self.error_counts: List[int] = [0, 0, 0]
        self._state = _LOGIN
        self._replies = ReplyUnits()
        # A ReadyForQuery came in the chunk being read (the session is told
        # after the chunk), and recorded replies completed in it.
        self._ready_seen = False
        self._recorded: List[Tuple[IReplyRecorder, int]] = []
        # Asynchronous messages of one read between units (notifications,
        # notices, parameter changes), handed to the session together at
        # the end of the read: a server sends a transaction's notifications
        # in one write, and a client may read them as one batch.
        self._idle_messages: List[bytes] = []
        #: Reply units (ReadyForQuery) the server finished since the last
        #: L{attach}: 0 when no statement of the session's reached it.
        self.units_since_attach = 0
        # Whether extended-protocol messages (an Execute among them) were
        # sent after the last Sync.
        self.unsynced = False
        self.unsynced_execute = False
        self.sent_fatal = False
        self.sent_shutdown = False
        self.terminated_by_proxy = False
        self.failed_in_proxy = False
        # Set when the client's stream ended (abandon_copy_in): a COPY FROM
        # STDIN that starts now is failed at once.
        self._copy_fail_reason: Optional[str] = None
        # The server's last words (a FATAL ErrorResponse) and whether they
        # were relayed to the client as part of a reply.
        self.fatal_message: Optional[bytes] = None
        self.fatal_relayed = False
        self.copy_in = False
        self.closed = False
        self._inbox: Deque[Tuple[int, bytes]] = deque()
        self._waiting: Optional[defer.Deferred] = None
        self._lost_reason: Optional[Failure] = None
        self._framer = StreamFramer(
            self._message_during_login, self._unexpected_bytes, watched=_LOGIN_WATCHED
        )

    # -- Twisted protocol methods ----------------------------------------

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
            self.transport.setTcpKeepAlive(True)

    def dataReceived(self, data: bytes) -> None:
        # Only the server's own bytes may count against its node: a
        # FramingError here is the server's stream that does not frame
        # (raised by the framer, or by this class's own checks of a reply).
        # Anything else raised while the session handles the reply is a
        # bug of the proxy's in that session: it ends the session, and the
        # connection (its state is unknown), but blames no node.
        try:
            self._framer.feed(data)
            if self._idle_messages:
                self._deliver_idle_messages()
            if self._recorded:
                recorded, self._recorded = self._recorded, []
                for recorder, status in recorded:
                    recorder.finished(status)
            if self._ready_seen:
                # Told after the chunk is passed on, so that whatever the
                # session does next reaches the client after this reply.
                self._ready_seen = False
                if self.sink is not None:
                    self.sink.backend_ready(self)
        except FramingError as e:
            log.error(
                "backend node {node_id} sent bad data: {error}", node_id=self.node_id, error=str(e)
            )
            self.transport.abortConnection()
        except Exception:
            log.failure(
                "internal error while handling a reply from backend node {node_id}",
                node_id=self.node_id,
            )
            self.failed_in_proxy = True
            self.abort()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.closed = True
        self._lost_reason = reason
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.errback(
                Failure(
                    BackendConnectionLost(
                        f"backend node {self.node_id} closed the connection: "
                        f"{reason.getErrorMessage()}"
                    )
                )
            )
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost(reason)

    # -- login -------------------------------------------------------------

    def _unexpected_bytes(self, data: bytes) -> None:
        # Every backend type is watched during login, so only bytes from a
        # framing bug could get here.
        raise FramingError("unexpected bytes during login")

    def _message_during_login(self, message_type: int, payload: bytes) -> bytes:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback((message_type, payload))
        else:
            self._inbox.append((message_type, payload))
        return b""

    def _next_message(self) -> defer.Deferred:
        if self._inbox:
            return defer.succeed(self._inbox.popleft())
        if self.closed:
            return defer.fail(
                BackendConnectionLost(f"backend node {self.node_id} closed the connection")
            )
        self._waiting = defer.Deferred()
        return self._waiting

    async def start_tls(self, options: CertificateOptions) -> bool:
        """
        Ask the server for TLS (an SSLRequest) and, if it agrees, start it
        with C{options}; a server that declines is used in plain text, as
        Pgpool-II does.  Must run before L{login}.

        @param options: the backend side's TLS options
            (L{twisted_pgpool.net.tls.ProxyTLS.client}).
        @return: whether the connection is now encrypted.
        @raise BackendConnectionLost: the server went away.
        @raise errors.PgError: the server answered neither C{S} nor C{N},
            or sent more than its one-byte answer before the handshake
            (bytes that could have been injected by a man in the middle,
            CVE-2021-23222).
        """
        waiting = self._waiting = defer.Deferred()
        # Until the answer, a byte that is no message: read it here, then
        # give the class's own dataReceived back.
        self.dataReceived = self._ssl_response_received  # type: ignore[method-assign]
        self.transport.write(messages.encode_ssl_request())
        try:
            answer = await waiting
        finally:
            self.__dict__.pop("dataReceived", None)
        if answer[:1] not in (b"S", b"N"):
            raise _protocol_violation(
                f"backend node {self.node_id} answered the SSL request with {answer[:1]!r}"
            )
        if len(answer) > 1:
            raise _protocol_violation(
                f"backend node {self.node_id} sent unencrypted data after "
                "its answer to the SSL request"
            )
        if answer == b"N":
            if self.node_id not in _TOLD_NO_SSL:
                # Once per node, not once per connection: the answer is the
                # server's configuration, the same every time.
                _TOLD_NO_SSL.add(self.node_id)
                log.info(
                    "backend node {node_id} does not accept SSL; using unencrypted connections",
                    node_id=self.node_id,
                )
            return False
        self.transport.startTLS(options)
        self.ssl_in_use = True
        return True

    def _ssl_response_received(self, data: bytes) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(bytes(data))

    async def login(self, parameters: Dict[str, str], responder: IBackendAuthResponder) -> None:
        """
        Send the StartupMessage and carry the login through to the first
        ReadyForQuery.

        @raise BackendLoginError: the server refused with an ErrorResponse.
        @raise BackendConnectionLost: the server went away.
        @raise errors.PgError: the proxy could not answer the server.
        """
        self.transport.write(messages.encode_startup_message(parameters))
        try:
            await self._login_loop(responder)
        except messages.MessageFormatError as e:
            raise _protocol_violation(f"malformed message from backend node {self.node_id}: {e}")

    async def _login_loop(self, responder: IBackendAuthResponder) -> None:
        while True:
            message_type, payload = await self._next_message()
            if message_type == messages.AUTHENTICATION:
                request = messages.decode_authentication(payload)
                if request.code == messages.AUTH_OK:
                    continue
                reply = responder.respond(request.code, request.data)
                if inspect.isawaitable(reply):
                    reply = await reply
                if reply:
                    self.transport.write(reply)
            elif message_type == messages.PARAMETER_STATUS:
                status = messages.decode_parameter_status(payload)
                self.parameters[status.name] = status.value
                self._parameter_status_cache = None
                if status.name == "client_encoding":
                    self.client_codec = messages.client_codec(status.value)
            elif message_type == messages.BACKEND_KEY_DATA:
                key = messages.decode_backend_key_data(payload)
                self.process_id = key.process_id
                self.secret_key = key.secret_key
            elif message_type == messages.NOTICE_RESPONSE:
                self.notices.append(messages.message(message_type, payload))
            elif message_type == messages.NEGOTIATE_PROTOCOL_VERSION:
                continue
            elif message_type == messages.ERROR_RESPONSE:
                fields = messages.decode_error_fields(payload).fields
                raise BackendLoginError(messages.message(message_type, payload), fields)
            elif message_type == messages.READY_FOR_QUERY:
                self.transaction_status = messages.decode_ready_for_query(payload).status
                return
            else:
                raise _protocol_violation(
                    f"unexpected message {chr(message_type)!r} from backend "
                    f"node {self.node_id} during login"
                )

    # -- relaying ----------------------------------------------------------
    #
    # While attached to a session, the replies the session asked for come
    # in "units", each ending with a ReadyForQuery: one per Query, Sync or
    # FunctionCall sent.  A unit is either forwarded to the client or
    # swallowed (the session sent the same statement to several nodes and
    # the client must see one answer).  Between units, the server only
    # sends asynchronous messages (notifications, notices, parameter
    # changes); those are handed to the session whole, so it can place
    # them between other nodes' replies without splitting a message.

    def attach(self, sink: "IReplySink") -> None:
        """
        Start relaying replies to C{sink} (a session).
        """
        self.sink = sink
        self.on_lost = lambda reason: sink.backend_lost(self, reason)
        self.units_since_attach = 0
        self._copy_fail_reason = None
        self._replies.clear()
        self.unsynced = False
        self.unsynced_execute = False
        self._set_mode()
        inbox, self._inbox = self._inbox, deque()
        for message_type, payload in inbox:
            # Asynchronous messages that arrived after the login's
            # ReadyForQuery and before attaching.
            sink.async_message(self, messages.message(message_type, payload))

    @property
    def state(self) -> BackendState:
        """
        Where the server's messages go now.
        """
        return self._state

    @property
    def pending_ready(self) -> int:
        """
        How many ReadyForQuery messages the session still waits for.
        """
        return len(self._replies.units)

    @property
    def forwarding(self) -> bool:
        """
        Whether the server's current reply goes to the client.
        """
        return self._replies.forwarding_now()

    @property
    def forwarding_units(self) -> int:
        """
        How many of the outstanding reply units go to the client.
        """
        return self._replies.forwarding

    def expect(self, forward: bool) -> None:
        """
        Announce one more reply unit (to be forwarded or swallowed).
        """
        if self._replies.expect(forward):
            self._set_mode()

    def expect_capture(
        self,
        on_message: Callable[[int, bytes], None],
        on_ready: Callable[[int], None],
        holds_client: bool,
    ) -> None:
        """
        Announce one more reply unit, to a query of the proxy's own sent
        in line with the session's: its messages go to C{on_message}, its
        ReadyForQuery status to C{on_ready}, none to the client.
        """
        if self._replies.expect_capture(on_message, on_ready, holds_client):
            self._set_mode()

    def expect_recorded(self, recorder: IReplyRecorder) -> None:
        """
        Announce one more reply unit for the client, of which
        C{recorder} gets a copy.
        """
        if self._replies.expect_recorded(recorder):
            self._set_mode()

    def keep_last_ready_for_query(self) -> None:
        """
        The last unit's ReadyForQuery is not the client's: the session
        ended a batch on this node early (with a Sync of its own) and moved
        the rest of it elsewhere.  Its other replies still go to the client.
        """
        self._replies.keep_last_ready_for_query()

    def hide(self, message_type: int) -> None:
        """
        Drop the next reply message of this type: the answer to a message
        the proxy added on its own (a re-sent Parse, say).
        """
        self._replies.hide(message_type)
        self._set_mode()

    def _set_mode(self) -> None:
        """
        Point the framer where the head reply unit says (L{BackendState}
        C{IDLE}, C{RELAY} or C{CAPTURE}).
        """
        replies = self._replies
        sink = self.sink
        if not replies.units or sink is None:
            self._state = _IDLE
            self._framer.redirect(self._message_while_idle, _discard, _LOGIN_WATCHED)
            return
        head = replies.units[0]
        if head.__class__ is Capture:
            self._state = _CAPTURE
            self._framer.redirect(self._message_during_capture, _discard, _LOGIN_WATCHED)
            return
        hidden = replies.hidden
        watched = _RELAY_WATCHED.union(hidden) if hidden else _RELAY_WATCHED
        if head.__class__ is Recorded:
            target = head.recorder.write
        else:
            target = sink.client_write if head else _discard
        self._state = _RELAY
        self._framer.redirect(self._message_during_relay, target, watched)

    def _message_during_relay(self, message_type: int, payload: bytes) -> Optional[bytes]:
        if message_type == messages.READY_FOR_QUERY:
            if len(payload) != 1:
                raise FramingError("malformed ReadyForQuery from backend")
            self.transaction_status = payload[0]
            self.copy_in = False
            forwarded = self._replies.ready()
            self._ready_seen = True
            self.units_since_attach += 1
            self._set_mode()
            if forwarded.__class__ is Recorded:
                # Told once the ReadyForQuery itself has been written.
                self._recorded.append((forwarded.recorder, payload[0]))
                return FORWARD
            return FORWARD if forwarded == _FORWARD_UNIT else b""
        replies = self._replies
        if replies.hidden and replies.take_hidden(message_type):
            if message_type not in replies.hidden:
                # No more of this type to drop: no longer watched.
                self._set_mode()
            return b""
        if message_type == messages.PARAMETER_STATUS:
            self._parameter_status(payload)
        elif (
            message_type == messages.COPY_IN_RESPONSE or message_type == messages.COPY_BOTH_RESPONSE
        ):
            # The server now reads the client's data until CopyDone or
            # CopyFail; reset at the unit's ReadyForQuery.
            self.copy_in = True
            if self._copy_fail_reason is not None:
                self.transport.write(messages.copy_fail(self._copy_fail_reason))
        elif message_type == messages.ERROR_RESPONSE:
            count_error(self.error_counts, payload)
            self._note_fatal(payload)
            head = replies.units[0]
            if head.__class__ is Recorded:
                head.recorder.failed = True
            if head:
                self.fatal_relayed = self.sent_fatal
            else:
                error = messages.decode_error_fields(payload)
                log.warn(
                    "statement failed on backend node {node_id} whose "
                    "reply the client does not see: {message}",
                    node_id=self.node_id,
                    message=error.message,
                )
        return FORWARD

    def _message_during_capture(self, message_type: int, payload: bytes) -> bytes:
        replies = self._replies
        # The CAPTURE state's callback: _set_mode routes here only while
        # the head unit is a Capture.
        capture: Capture = replies.units[0]  # type: ignore[assignment]
        if replies.hidden and replies.take_hidden(message_type):
            # The answer to a message the proxy added (a statement prepared
            # again on this node before a replicated batch).
            return b""
        if message_type == messages.READY_FOR_QUERY:
            if len(payload) != 1:
                raise FramingError("malformed ReadyForQuery from backend")
            self.transaction_status = payload[0]
            replies.ready()
            self._ready_seen = True
            self.units_since_attach += 1
            self._set_mode()
            capture.on_ready(payload[0])
            return b""
        if message_type == messages.PARAMETER_STATUS:
            self._parameter_status(payload)
        elif message_type == messages.ERROR_RESPONSE:
            self._note_fatal(payload)
        capture.on_message(message_type, payload)
        return b""

    def _note_fatal(self, payload: bytes) -> None:
        """
        Remember a FATAL error from the server (it is about to close the
        connection), and whether it is an admin shutdown (57P01/57P02).
        """
        if b"SFATAL\x00" in payload or b"SPANIC\x00" in payload:
            self.sent_fatal = True
            self.fatal_message = messages.message(messages.ERROR_RESPONSE, payload)
            self.sent_shutdown = b"C57P01\x00" in payload or b"C57P02\x00" in payload

    def _message_while_idle(self, message_type: int, payload: bytes) -> bytes:
        if message_type == messages.PARAMETER_STATUS:
            self._parameter_status(payload)
        elif message_type == messages.ERROR_RESPONSE:
            if self.sink is not None:
                # A FATAL between statements (the server shutting down).
                count_error(self.error_counts, payload)
            self._note_fatal(payload)
        elif message_type == messages.READY_FOR_QUERY:
            # Nobody asked: a reply to something the proxy did not count.
            raise FramingError("ReadyForQuery nobody waited for")
        if self.sink is not None:
            if message_type == messages.ERROR_RESPONSE:
                # Alone, as it came (the session recognises the FATAL).
                if self._idle_messages:
                    self._deliver_idle_messages()
                self.sink.async_message(self, messages.message(message_type, payload))
            else:
                self._idle_messages.append(messages.message(message_type, payload))
        return b""

    def _deliver_idle_messages(self) -> None:
        idle, self._idle_messages = self._idle_messages, []
        if self.sink is not None:
            self.sink.async_message(self, idle[0] if len(idle) == 1 else b"".join(idle))

    def _parameter_status(self, payload: bytes) -> None:
        try:
            status = messages.decode_parameter_status(payload)
        except messages.MessageFormatError:
            return
        self.parameters[status.name] = status.value
        self._parameter_status_cache = None
        if status.name == "client_encoding":
            self.client_codec = messages.client_codec(status.value)

    def parameter_status_messages(self) -> bytes:
        """
        The server's current settings as ParameterStatus messages, for the
        greeting of each client that gets this connection (encoded once
        until a setting changes).
        """
        cached = self._parameter_status_cache
        if cached is None:
            cached = b"".join(
                messages.parameter_status(name, value) for name, value in self.parameters.items()
            )
            self._parameter_status_cache = cached
        return cached

    @property
    def busy(self) -> bool:
        """
        Whether the server may still be working for the client: a reply is
        outstanding, or extended-protocol messages were sent after the last
        Sync.
        """
        return self.pending_ready > 0 or self.unsynced

    def detach(self, on_lost: Optional[Callable[[Failure], None]] = None) -> None:
        """
        Stop relaying.  Unsolicited messages (notices, notifications) are
        dropped from now on; ParameterStatus changes are still recorded.
        """
        self.on_lost = on_lost
        self.sink = None
        self._replies.clear()
        self._state = _DETACHED
        self._framer.redirect(self._message_while_detached, _discard, _LOGIN_WATCHED)
        if not self.closed:
            # A slow client may have paused reading from this server.
            self.transport.resumeProducing()

    def _message_while_detached(self, message_type: int, payload: bytes) -> bytes:
        if message_type == messages.PARAMETER_STATUS:
            self._parameter_status(payload)
        elif message_type == messages.ERROR_RESPONSE:
            self.sent_fatal = True
        return b""

    def run_internal(self, sql: str, client_text: bool = False) -> defer.Deferred:
        """
        Run one simple query of the proxy's own on a detached connection.

        @param client_text: C{sql} is a client's statement (a setting
            replayed on another connection), read with the
            C{client_encoding} this connection has now: it is encoded with
            that codec again, to the bytes the client sent.  Otherwise it
            is the proxy's own text (UTF-8, or bytes read as UTF-8).
        @return: a Deferred firing with an L{InternalResult} once the
            server is ready again (whether the query failed or not), or
            failing with L{BackendConnectionLost}.
        """
        d = self.run_internal_pipeline(
            [sql], self.client_codec if client_text else messages.UTF8_CODEC
        )
        d.addCallback(lambda results: results[0])
        return d

    def run_internal_pipeline(
        self, statements: List[str], codec: str = messages.UTF8_CODEC
    ) -> defer.Deferred:
        """
        Send several simple queries of the proxy's own at once (one write,
        one round trip) and collect each one's result.

        Each runs in its own implicit transaction, as if sent one by one;
        a failed one does not stop the next.

        @param codec: what the statements are encoded with.
        @return: a Deferred firing with a list of L{InternalResult}, in
            order, or failing with L{BackendConnectionLost}; failed at once
            (nothing sent) when a statement cannot be encoded with C{codec}.
        """
        if self.closed:
            return defer.fail(BackendConnectionLost(f"backend node {self.node_id} is closed"))
        try:
            data = b"".join(messages.query(sql, codec) for sql in statements)
        except (UnicodeEncodeError, messages.MessageFormatError):
            # Text the connection's encoding cannot carry: nothing is sent.
            return defer.fail()
        results = [InternalResult() for _ in statements]
        done: defer.Deferred[List[InternalResult]] = defer.Deferred()
        self._internal = (results, 0, done)
        self._state = _INTERNAL
        self._framer.redirect(self._message_during_internal, _discard, _LOGIN_WATCHED)
        self._waiting = done
        self.transport.write(data)
        return done

    def _message_during_internal(self, message_type: int, payload: bytes) -> bytes:
        results, index, done = self._internal
        try:
            self._collect_internal(results[index], message_type, payload)
        except messages.MessageFormatError as e:
            raise FramingError(f"malformed reply from backend: {e}")
        if message_type == messages.READY_FOR_QUERY:
            index += 1
            if index < len(results):
                self._internal = (results, index, done)
                return b""
            self._waiting = None
            self._state = _DETACHED
            self._framer.redirect(self._message_while_detached, _discard, _LOGIN_WATCHED)
            done.callback(results)
        return b""

    def _collect_internal(
        self, result: "InternalResult", message_type: int, payload: bytes
    ) -> None:
        if message_type == messages.DATA_ROW:
            result.rows.append(messages.decode_data_row(payload).values)
        elif message_type == messages.COMMAND_COMPLETE:
            result.tags.append(messages.decode_command_complete(payload).tag)
        elif message_type == messages.ERROR_RESPONSE:
            if result.error is None:
                result.error = messages.decode_error_fields(payload).fields
        elif message_type == messages.PARAMETER_STATUS:
            self._parameter_status(payload)
        elif message_type == messages.READY_FOR_QUERY:
            self.transaction_status = messages.decode_ready_for_query(payload).status

    def write(self, data: bytes) -> None:
        """
        Send bytes (frontend messages) to the server.
        """
        self.transport.write(data)

    def abandon_copy_in(self, reason: str) -> None:
        """
        No more data will come from the client: a COPY FROM STDIN in
        progress, or one that starts later (its query already sent), is
        ended with a CopyFail, so that the server answers instead of
        waiting for data forever.
        """
        self._copy_fail_reason = reason
        if self.copy_in:
            self.transport.write(messages.copy_fail(reason))

    def abort(self) -> None:
        """
        Close at once, without a goodbye: the connection's state is
        unknown (the proxy lost track of it mid-message or mid-reply), so
        nothing more may be sent on it, not even a Terminate, and nothing
        already queued is worth waiting for.  Not a failure of the node.
        """
        if not self.closed:
            self.terminated_by_proxy = True
            self.transport.abortConnection()

    def terminate(self) -> None:
        """
        Say goodbye politely (Terminate) and close.
        """
        if not self.closed:
            self.on_lost = None
            self.closed = True
            self.terminated_by_proxy = True
            self.transport.write(messages.terminate())
            self.transport.loseConnection()


@attr.s(auto_attribs=True)
class InternalResult:
    """
    What a query of the proxy's own returned.

    @ivar rows: the DataRow values, as raw text-format bytes.
    @ivar tags: the CommandComplete tags.
    @ivar error: the ErrorResponse fields, if the query failed.
    """

    rows: List[Tuple[Optional[bytes], ...]] = attr.ib(factory=list)
    tags: List[str] = attr.ib(factory=list)
    error: Optional[Dict[str, str]] = None


def _discard(data: bytes) -> None:
    """
    Drop bytes nobody is attached to receive.
    """


@attr.s(auto_attribs=True)
class _BackendFactory(Factory):
    node_id: int
    noisy = False

    def buildProtocol(self, addr: Optional[IAddress]) -> BackendProtocol:
        return BackendProtocol(self.node_id)


def backend_endpoint(reactor, hostname: str, port: int, timeout: float) -> IStreamClientEndpoint:
    """
    The endpoint for a configured backend: a Unix socket when the hostname
    is a directory (as libpq and Pgpool-II treat a leading C{/}), TCP
    otherwise.
    """
    if hostname.startswith("/"):
        return UNIXClientEndpoint(reactor, f"{hostname}/.s.PGSQL.{port}", timeout=timeout)
    # An address needs no resolution; HostnameEndpoint would also report a
    # refused connection only after its 0.3 s attempt delay, which slows
    # every failed connect and each health check of a dead node.
    if isIPAddress(hostname):
        return TCP4ClientEndpoint(reactor, hostname, port, timeout=timeout)
    if isIPv6Address(hostname):
        return TCP6ClientEndpoint(reactor, hostname, port, timeout=timeout)
    return HostnameEndpoint(reactor, hostname, port, timeout=timeout)


async def connect_backend(
    reactor,
    node_id: int,
    hostname: str,
    port: int,
    timeout: float,
    parameters: Dict[str, str],
    responder: IBackendAuthResponder,
    tls: Optional[CertificateOptions] = None,
) -> BackendProtocol:
    """
    Connect to a server and log in.

    @param tls: when given, the backend side's TLS options
        (L{twisted_pgpool.net.tls.ProxyTLS.client}, usually the node's
        C{tls}): the server is asked for TLS before the login, and used in
        plain text if it declines.
    @return: the logged-in L{BackendProtocol}, ready for L{BackendProtocol.attach}.
    """
    endpoint = backend_endpoint(reactor, hostname, port, timeout)
    protocol = await endpoint.connect(_BackendFactory(node_id))
    # What the factory built (the endpoint types it as any IProtocol).
    assert isinstance(protocol, BackendProtocol)
    protocol.connected_at = reactor.seconds()
    try:
        if tls is not None:
            await protocol.start_tls(tls)
        await protocol.login(parameters, responder)
    except BaseException:
        protocol.transport.abortConnection()
        raise
    return protocol
