"""
Pgpool-II's PCP administration protocol, server side.

PCP is what Pgpool-II's C{pcp_node_info}, C{pcp_attach_node},
C{pcp_detach_node}, C{pcp_promote_node}, C{pcp_health_check_stats} and
friends speak, so serving it lets operators keep their tools and scripts.
The layout matches Pgpool-II 4.3.5:

  - every message, both ways, is one tag byte, a big-endian int32 length
    that counts itself, and a payload of NUL-terminated strings;
  - the client asks for a salt (C{M}, answered by C{m} and four random
    bytes), then sends C{R} with its user name and
    C{md5hex(md5hex(md5hex(password) + user) + salt)}; the server checks
    it against C{pcp.conf} (C{user:md5hex(password)} lines) and answers
    C{r} C{AuthenticationOK}, or a FATAL C{E} and closes;
  - each request is answered by the request's tag in lower case (promote,
    C{J}/C{j}, by C{d}) whose first string is C{CommandComplete}, or for
    lists by C{ArraySize} n, n rows, then C{CommandComplete};
  - errors are C{E} messages with PostgreSQL's ErrorResponse fields; an
    C{ERROR} leaves the connection open, a C{FATAL} closes it.

C{O} (C{pcp_recovery_node}; the payload is the node id) runs an online
recovery (L{twisted_pgpool.admin.recovery}) and answers, once the node is
attached, with C{c} C{CommandComplete} -- attach's reply tag, as in
Pgpool-II -- or with an C{ERROR} in Pgpool-II's words.

One request comes from a later Pgpool-II: C{G} (4.6's
C{pcp_invalidate_query_cache}, no payload), answered C{g}
C{CommandComplete} once the query cache is empty.

C{Z} (C{pcp_reload_config}; one byte of payload, the scope: C{l} local or
C{c} cluster, the same here since there is no watchdog) reloads the
configuration before answering C{z} C{CommandComplete}, so that, unlike
Pgpool-II, which only signals its main process, a file the reload refuses
is answered with an C{ERROR} naming the file, line and key.

C{T} and C{t} (C{pcp_stop_pgpool}, local and cluster scope: the same here)
carry one byte, the shutdown mode (C{s} smart, C{f} fast, C{i}
immediate); as in Pgpool-II the answer is C{t} C{CommandComplete}, sent
before the proxy stops (L{twisted_pgpool.admin.shutdown}), and another mode is
an C{ERROR}.  C{V} (4.6's C{pcp_log_rotate}; one scope byte) rotates the
log file as twistd does on SIGUSR1 and is answered C{v}
C{CommandComplete}, also when the proxy logs to no file.

The operations themselves are the plain functions of
L{twisted_pgpool.admin.operations}; this module only frames, authenticates and
encodes.  L{make_pcp_service} builds the listeners the configuration asks
for (C{pcp_listen_addresses}/C{pcp_port}, C{pcp_socket_dir}).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import (
    TYPE_CHECKING,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Union,
    cast,
)

from twisted.application.service import IService
from twisted.internet import defer
from twisted.internet.endpoints import quoteStringArgument
from twisted.internet.interfaces import IDelayedCall, ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_pgpool import logs
from twisted_pgpool.admin import operations as admin
from twisted_pgpool.admin.operations import AdminError, IAdminBackend, NodeInfo
from twisted_pgpool.net.addresses import tcp_descriptions
from twisted_pgpool.net.listening import listen_services
from twisted_pgpool.wire import errors

if TYPE_CHECKING:  # pragma: no cover
    from twisted_pgpool.service import ProxyCore

__all__ = [
    "PcpFactory",
    "PcpProtocol",
    "encode",
    "load_pcp_conf",
    "make_pcp_service",
    "pcp_listen_descriptions",
    "split_strings",
]

log = Logger(observer=logs.observer)

#: Requests longer than this are refused (Pgpool-II's MAX_PCP_PACKET_LENGTH).
MAX_PACKET_LENGTH = 8192
SALT_LENGTH = 4
#: Pgpool-II scales load-balance weights by C{RAND_MAX} in PCP replies; the
#: tools divide it out again.
RAND_MAX = 2147483647

#: PCP's digits for node status (Pgpool-II's BACKEND_STATUS) and role
#: (SERVER_ROLE).
STATUS_DIGITS = {"unused": 0, "waiting": 1, "up": 2, "down": 3, "quarantine": 3}
STATUS_NAMES = {0: "unused", 1: "waiting", 2: "up", 3: "down"}
ROLE_DIGITS = {"main": 0, "replica": 1, "primary": 2, "standby": 3}
ROLE_NAMES = {digit: name for name, digit in ROLE_DIGITS.items()}

COMMAND_COMPLETE = "CommandComplete"
AUTHENTICATION_OK = "AuthenticationOK"

#: Requests Pgpool-II knows and twisted_pgpool does not serve.
_UNSUPPORTED = {
    ord("W"): "watchdog information (pcp_watchdog_info)",
    ord("A"): "setting parameters (pcp_set_backend_parameter)",
    ord("F"): "stopping an online recovery",
}


# -- codec ------------------------------------------------------------------------

Field = Union[str, bytes]


def encode(tag: bytes, *fields: Field) -> bytes:
    """
    One PCP message: C{tag}, the length, then each field NUL-terminated.
    """
    payload = b"".join(
        (f.encode("utf-8", "replace") if isinstance(f, str) else f) + b"\x00" for f in fields
    )
    return tag + struct.pack("!I", len(payload) + 4) + payload


def encode_raw(tag: bytes, payload: bytes) -> bytes:
    """
    One PCP message whose payload is not a list of strings (the salt, the
    binary ArraySize of a pool status reply).
    """
    return tag + struct.pack("!I", len(payload) + 4) + payload


def split_strings(payload: bytes) -> List[bytes]:
    """
    The NUL-terminated strings of a payload; an unterminated tail counts as
    one more string (Pgpool-II's readers are that lenient).
    """
    parts = payload.split(b"\x00")
    if parts and parts[-1] == b"":
        parts.pop()
    return parts


def parse_int(text: bytes) -> Optional[int]:
    """
    The leading decimal integer of C{text}, as C{atoi} reads it (spaces
    around it allowed; the promote request sends C{"1 "}), or None when
    there is none.
    """
    stripped = text.strip()
    end = 1 if stripped[:1] in (b"-", b"+") else 0
    while end < len(stripped) and stripped[end : end + 1].isdigit():
        end += 1
    try:
        return int(stripped[:end])
    except ValueError:
        return None


def error_message(error: errors.PgError) -> bytes:
    """
    An C{E} message with the ErrorResponse fields, severity first as the
    PCP tools expect.
    """
    return errors.encode_fields(b"E", error.fields())


def node_info_fields(node: NodeInfo) -> List[str]:
    """
    The fields of a Pgpool-II 4.3.5 C{NodeInfo} row: host, port, status
    digit, quarantine flag, pg_status, weight (scaled by C{RAND_MAX}), role
    digit, pg_role, delay (bytes), replication state, sync state, time of
    the last status change (POSIX seconds), and after them, ignored by
    Pgpool-II's tools, twisted_pgpool's C{select_cnt}.
    """
    return [
        node.hostname,
        str(node.port),
        str(STATUS_DIGITS.get(node.status, 0)),
        "1" if node.quarantine else "0",
        node.pg_status,
        f"{node.lb_weight * RAND_MAX:f}",
        str(ROLE_DIGITS.get(node.role, 3)),
        node.pg_role,
        str(node.replication_delay_bytes),
        node.replication_state,
        node.replication_sync_state,
        str(int(node.last_status_change)),
        str(node.select_cnt),
    ]


# -- pcp.conf ---------------------------------------------------------------------


def load_pcp_conf(path: str) -> Dict[str, List[str]]:
    """
    Read C{pcp.conf}: C{user:md5hex(password)} lines; C{#} lines and blank
    lines are ignored.  A user may have several lines; any of them lets the
    user in, as in Pgpool-II.

    @return: each user's stored hashes (lower case).
    @raise OSError: the file cannot be read.
    """
    users: Dict[str, List[str]] = {}
    with open(path, "rb") as f:
        data = f.read()
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        user, secret = line.split(":", 1)
        users.setdefault(user, []).append(secret.strip().lower())
    return users


def pcp_response(user: str, stored_md5: str, salt: bytes) -> str:
    """
    What a client that knows the password of C{stored_md5} sends for
    C{salt}: C{md5hex(md5hex(stored + user) + salt)}.
    """
    inner = hashlib.md5((stored_md5 + user).encode("utf-8")).hexdigest()
    return hashlib.md5(inner.encode("ascii") + salt).hexdigest()


# -- server -----------------------------------------------------------------------


class PcpProtocol(Protocol):
    """
    One PCP connection: frames requests, authenticates, and answers each
    request with the L{twisted_pgpool.admin.operations} operation it names.

    Requests are answered one at a time and in order: while an operation
    that returns a Deferred (a detach runs a failover script) is running,
    the following requests wait in the buffer.

    @ivar user: the authenticated user, or None.
    """

    # Set by makeConnection, before connectionMade.
    transport: ITransport

    def __init__(self, factory: "PcpFactory") -> None:
        self.factory = factory
        self.user: Optional[str] = None
        self.peer = "[local]"
        self._buffer = bytearray()
        self._salt: Optional[bytes] = None
        self._busy = False
        self._processing = False
        self._closed = False
        self._auth_timer: Optional[IDelayedCall] = None
        self._handlers: Dict[int, Callable[[bytes], object]] = {
            ord("L"): self._node_count,
            ord("I"): self._node_info,
            ord("H"): self._health_check_stats,
            ord("C"): self._attach,
            ord("D"): lambda p: self._detach(p, gracefully=False),
            ord("d"): lambda p: self._detach(p, gracefully=True),
            ord("J"): lambda p: self._promote(p, gracefully=False),
            ord("j"): lambda p: self._promote(p, gracefully=True),
            ord("B"): self._pool_status,
            ord("N"): self._process_count,
            ord("P"): self._process_info,
            ord("G"): self._invalidate_query_cache,
            ord("Z"): self._reload_config,
            ord("T"): self._stop_pgpool,
            ord("t"): self._stop_pgpool,
            ord("V"): self._log_rotate,
            ord("O"): self._recover,
        }

    # -- connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        host = getattr(peer, "host", None)
        if host is not None:
            self.peer = f"{host}:{getattr(peer, 'port', '')}"
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:
                pass
        timeout = self.factory.authentication_timeout
        if timeout > 0:
            self._auth_timer = self.factory.reactor.callLater(
                timeout, self._authentication_timed_out
            )

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closed = True
        self._cancel_auth_timer()

    def _cancel_auth_timer(self) -> None:
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._auth_timer = None

    def _authentication_timed_out(self) -> None:
        self._auth_timer = None
        log.warn("PCP client {peer} did not authenticate in time", peer=self.peer)
        self._fatal(
            errors.CANNOT_CONNECT_NOW,
            "authentication timeout",
            "the client did not authenticate in time",
        )

    # -- framing ---------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        self._buffer += data
        if not self._busy:
            self._process()

    def _process(self) -> None:
        """
        Handle every complete request in the buffer, stopping while one is
        in progress.  Not re-entrant: an operation whose Deferred has
        already fired resumes the loop below rather than starting another.
        """
        if self._processing:
            return
        self._processing = True
        buffer = self._buffer
        offset = 0
        try:
            while not self._busy and not self._closed and len(buffer) - offset >= 5:
                tag = buffer[offset]
                (length,) = struct.unpack_from("!i", buffer, offset + 1)
                if length < 4 or length > MAX_PACKET_LENGTH:
                    offset = len(buffer)
                    self._fatal(
                        errors.PROTOCOL_VIOLATION,
                        "invalid PCP packet",
                        f"incorrect packet length ({length})",
                    )
                    return
                end = offset + 1 + length
                if len(buffer) < end:
                    break
                payload = bytes(buffer[offset + 5 : end])
                offset = end
                self._request(tag, payload)
        finally:
            del buffer[:offset]
            self._processing = False

    # -- requests --------------------------------------------------------------

    def _request(self, tag: int, payload: bytes) -> None:
        if tag == ord("M"):
            self._salt = self.factory.random_bytes(SALT_LENGTH)
            self.transport.write(encode_raw(b"m", self._salt))
            return
        if tag == ord("R"):
            self._authenticate(payload)
            return
        if tag == ord("X"):
            self._closed = True
            self.transport.loseConnection()
            return
        if self.user is None:
            self._fatal(
                errors.INVALID_AUTHORIZATION_SPECIFICATION,
                "authentication failed for new PCP connection",
                "connection not authorized",
            )
            return
        handler = self._handlers.get(tag)
        if handler is None:
            self._unknown(tag)
            return
        try:
            result = handler(payload)
        except AdminError as e:
            self._error(e)
            return
        except Exception:
            log.failure("PCP request {tag!r} failed", tag=chr(tag))
            self._internal_error(tag)
            return
        if isinstance(result, defer.Deferred):
            self._busy = True
            result.addCallbacks(self._write_reply, self._operation_failed, errbackArgs=(tag,))
            result.addBoth(self._resume)
        else:
            self._write_reply(cast(Sequence[bytes], result))

    def _write_reply(self, messages: Sequence[bytes]) -> None:
        if not self._closed:
            self.transport.writeSequence(list(messages))

    def _operation_failed(self, failure: Failure, tag: int) -> None:
        if failure.check(AdminError):
            self._error(failure.value)
            return
        log.failure("PCP request {tag!r} failed", failure, tag=chr(tag))
        self._internal_error(tag, failure.getErrorMessage())

    def _resume(self, _: object) -> None:
        self._busy = False
        if not self._closed:
            self._process()

    def _node_id(self, payload: bytes, failed: str) -> int:
        strings = split_strings(payload)
        node_id = parse_int(strings[0]) if strings else None
        if node_id is None:
            raise AdminError(failed, "invalid node ID", admin.INVALID_PARAMETER_VALUE)
        return node_id

    @property
    def _backend(self) -> IAdminBackend:
        return self.factory.backend

    def _node_count(self, payload: bytes) -> List[bytes]:
        return [encode(b"l", COMMAND_COMPLETE, str(admin.node_count(self._backend)))]

    def _node_info(self, payload: bytes) -> List[bytes]:
        node_id = self._node_id(payload, "informing node info failed")
        nodes = admin.node_info(self._backend, node_id)
        out = [encode(b"i", "ArraySize", str(len(nodes)))]
        out.extend(encode(b"i", "NodeInfo", *node_info_fields(n)) for n in nodes)
        out.append(encode(b"i", COMMAND_COMPLETE))
        return out

    def _health_check_stats(self, payload: bytes) -> List[bytes]:
        node_id = self._node_id(payload, "informing health check stats info failed")
        stats = admin.health_check_stats(self._backend, node_id)
        return [encode(b"h", COMMAND_COMPLETE, *stats.columns())]

    def _attach(self, payload: bytes) -> "defer.Deferred[List[bytes]]":
        node_id = self._node_id(payload, "attach node failed")
        log.info("PCP user {user} attaches node {node_id}", user=self.user, node_id=node_id)
        d = admin.attach_node(self._backend, node_id)
        return d.addCallback(lambda _: [encode(b"c", COMMAND_COMPLETE)])

    def _recover(self, payload: bytes) -> "defer.Deferred[List[bytes]]":
        """
        C{pcp_recovery_node}: the payload is the node id; the answer, once
        the node is recovered and attached, is C{c} C{CommandComplete}
        (attach's reply, as in Pgpool-II).  Other requests on this
        connection wait, as in Pgpool-II's PCP worker.
        """
        node_id = self._node_id(payload, "process recovery request failed")
        log.info(
            "PCP user {user} starts the online recovery of node {node_id}",
            user=self.user,
            node_id=node_id,
        )
        d = admin.recover_node(self._backend, node_id)
        return d.addCallback(lambda _: [encode(b"c", COMMAND_COMPLETE)])

    def _detach(self, payload: bytes, gracefully: bool) -> "defer.Deferred[List[bytes]]":
        node_id = self._node_id(payload, "detach node failed")
        log.info(
            "PCP user {user} detaches node {node_id} (gracefully: {gracefully})",
            user=self.user,
            node_id=node_id,
            gracefully=gracefully,
        )
        d = admin.detach_node(self._backend, node_id, gracefully)
        return d.addCallback(lambda _: [encode(b"d", COMMAND_COMPLETE)])

    def _promote(self, payload: bytes, gracefully: bool) -> "defer.Deferred[List[bytes]]":
        """
        The request is C{"<id> "} NUL and one option byte: C{s} for a
        switchover, C{n} to relabel the primary only.  (C{-g}, waiting for
        clients first, is accepted; the failover manager decides how a
        switchover treats sessions.)
        """
        node_id = self._node_id(payload, "promote node failed")
        nul = payload.find(b"\x00")
        switchover = nul >= 0 and payload[nul + 1 : nul + 2] == b"s"
        log.info(
            "PCP user {user} promotes node {node_id} (switchover: {switchover})",
            user=self.user,
            node_id=node_id,
            switchover=switchover,
        )
        d = admin.promote_node(self._backend, node_id, switchover)
        return d.addCallback(lambda _: [encode(b"d", COMMAND_COMPLETE)])

    def _pool_status(self, payload: bytes) -> List[bytes]:
        rows = admin.pool_status(self._backend)
        # Pgpool-II sends this one count as a binary int32.
        out = [encode_raw(b"b", b"ArraySize\x00" + struct.pack("!i", len(rows)))]
        out.extend(encode(b"b", "ProcessConfig", r.name, r.value, r.description) for r in rows)
        out.append(encode(b"b", COMMAND_COMPLETE))
        return out

    def _process_count(self, payload: bytes) -> List[bytes]:
        pids = admin.process_count(self._backend)
        return [encode(b"n", COMMAND_COMPLETE, str(len(pids)), *(str(p) for p in pids))]

    def _process_info(self, payload: bytes) -> List[bytes]:
        strings = split_strings(payload)
        pid = (parse_int(strings[0]) if strings else 0) or 0
        rows = admin.process_info(self._backend, pid)
        out = [encode(b"p", "ArraySize", str(len(rows)))]
        out.extend(encode(b"p", "ProcessInfo", *row.values) for row in rows)
        out.append(encode(b"p", COMMAND_COMPLETE))
        return out

    def _invalidate_query_cache(self, payload: bytes) -> "defer.Deferred[List[bytes]]":
        log.info("PCP user {user} invalidates the query cache", user=self.user)
        d = admin.invalidate_query_cache(self._backend)
        return d.addCallback(lambda _: [encode(b"g", COMMAND_COMPLETE)])

    def _reload_config(self, payload: bytes) -> List[bytes]:
        log.info("PCP user {user} reloads the configuration", user=self.user)
        admin.reload_config(self._backend)
        return [encode(b"z", COMMAND_COMPLETE)]

    def _stop_pgpool(self, payload: bytes) -> List[bytes]:
        """
        The payload is the mode byte (C{s}, C{f}, C{i}); the scope (C{T}
        local, C{t} cluster) makes no difference without a watchdog.
        """
        mode = payload[:1].decode("latin-1")
        log.info(
            "PCP user {user} asks to stop the proxy (mode {mode!r})", user=self.user, mode=mode
        )
        admin.stop_pgpool(self._backend, mode)
        return [encode(b"t", COMMAND_COMPLETE)]

    def _log_rotate(self, payload: bytes) -> List[bytes]:
        log.info("PCP user {user} asks to rotate the log file", user=self.user)
        admin.log_rotate(self._backend)
        return [encode(b"v", COMMAND_COMPLETE)]

    # -- authentication --------------------------------------------------------

    def _authenticate(self, payload: bytes) -> None:
        strings = split_strings(payload)
        user = strings[0].decode("utf-8", "replace") if strings else ""
        answer = strings[1] if len(strings) > 1 else b""
        salt, self._salt = self._salt, None
        if salt is not None and self.factory.check_password(user, answer, salt):
            self.user = user
            self._cancel_auth_timer()
            log.debug("PCP user {user} authenticated from {peer}", user=user, peer=self.peer)
            self.transport.write(encode(b"r", AUTHENTICATION_OK))
            return
        log.warn("PCP authentication failed for user {user} from {peer}", user=user, peer=self.peer)
        self._fatal(
            errors.INVALID_PASSWORD,
            "authentication failed",
            "username and/or password does not match",
        )

    # -- errors ----------------------------------------------------------------

    def _fatal(self, sqlstate: str, message: str, detail: str) -> None:
        """
        Send a FATAL error and close, as Pgpool-II's PCP worker exits.
        """
        if self._closed:
            return
        self.transport.write(error_message(errors.fatal(sqlstate, message, detail)))
        self._closed = True
        self.transport.loseConnection()

    def _error(self, error: AdminError) -> None:
        if not self._closed:
            self.transport.write(error_message(error.to_pg_error()))

    def _internal_error(self, tag: int, reason: str = "") -> None:
        if not self._closed:
            self.transport.write(
                error_message(
                    errors.error(
                        errors.INTERNAL_ERROR,
                        f'PCP request "{chr(tag)}" failed',
                        reason or "see the proxy's log",
                    )
                )
            )

    def _unknown(self, tag: int) -> None:
        what = _UNSUPPORTED.get(tag)
        if what is not None:
            error = errors.error(
                errors.FEATURE_NOT_SUPPORTED, f"{what} is not supported by twisted_pgpool"
            )
        else:
            shown = chr(tag) if 32 < tag < 127 else f"\\x{tag:02x}"
            error = errors.error(errors.PROTOCOL_VIOLATION, f'unknown PCP packet type "{shown}"')
        self.transport.write(error_message(error))


class PcpFactory(Factory):
    """
    What PCP connections share: the admin backend, where to find
    C{pcp.conf}, the clock.

    @ivar backend: the L{IAdminBackend} the requests act on.
    @ivar pcp_conf_file: the C{user:md5hex(password)} file, read at every
        login so that edits apply without a restart; C{''} or a missing
        file lets nobody in.
    @ivar reactor: schedules the authentication timeout.
    @ivar authentication_timeout: seconds a client has to log in (0: no
        limit).
    @ivar random_bytes: makes salts (tests pass a fixed one).
    """

    protocol = PcpProtocol
    # No "Starting factory" line per connection: the listener says once
    # where PCP listens.
    noisy = False

    def __init__(
        self,
        backend: IAdminBackend,
        pcp_conf_file: str,
        reactor,
        authentication_timeout: float = 60.0,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.backend = backend
        self.pcp_conf_file = pcp_conf_file
        self.reactor = reactor
        self.authentication_timeout = authentication_timeout
        self.random_bytes = random_bytes

    def buildProtocol(self, addr) -> PcpProtocol:
        return PcpProtocol(self)

    def check_password(self, user: str, answer: bytes, salt: bytes) -> bool:
        """
        Whether C{answer} proves that the client knows the password of one
        of C{user}'s pcp.conf lines.  Compared in constant time.
        """
        if not self.pcp_conf_file:
            return False
        try:
            users = load_pcp_conf(self.pcp_conf_file)
        except OSError as e:
            log.warn(
                "cannot read pcp_conf_file {path}: {reason}; nobody can log in to PCP",
                path=self.pcp_conf_file,
                reason=e.strerror or str(e),
            )
            return False
        text = answer.decode("ascii", "replace").lower()
        matched = False
        for stored in users.get(user, ()):
            expected = pcp_response(user, stored, salt)
            matched |= hmac.compare_digest(
                expected.encode("ascii"), text.encode("ascii", "replace")
            )
        return matched


# -- listening --------------------------------------------------------------------


def pcp_listen_descriptions(config) -> List[str]:
    """
    Endpoint strings for the PCP listeners: one TCP endpoint per
    C{pcp_listen_addresses} entry unless C{pcp_port} is 0 (C{*}: every
    address, C{localhost}: 127.0.0.1), plus the Unix socket
    C{.s.PGSQL.<pcp_port>} in C{pcp_socket_dir} when that is set.  The
    socket is owner-only (mode 0700; Pgpool-II uses 0777) and a stale one
    left by a crash is replaced.
    """
    descriptions = []
    if config.pcp_port:
        descriptions.extend(tcp_descriptions(config.pcp_listen_addresses, config.pcp_port))
    if config.pcp_socket_dir:
        path = os.path.join(config.pcp_socket_dir, f".s.PGSQL.{config.pcp_port or 9898}")
        descriptions.append(f"unix:{quoteStringArgument(path)}:mode=700:lockfile=1")
    return descriptions


def make_pcp_service(
    core: "ProxyCore", admin_backend: IAdminBackend, descriptions: Optional[Iterable[str]] = None
) -> IService:
    """
    The PCP listeners of a proxy, as one service to add to the proxy's
    C{MultiService}.  Each listener fails loudly (at C{startService}) when
    its address is taken.

    @param core: gives the configuration and the reactor.
    @param admin_backend: what requests act on, usually
        C{ProxyAdminBackend(core, failover_manager, health_monitor)}.
    @param descriptions: endpoint strings to listen on instead of those of
        the configuration (tests).
    """
    config = core.config
    factory = PcpFactory(
        admin_backend, config.pcp_conf_file, core.reactor, config.authentication_timeout
    )
    if descriptions is None:
        descriptions = pcp_listen_descriptions(config)
    service = listen_services("pcp", "PCP", descriptions, factory, core.reactor)
    service.factory = factory  # type: ignore[attr-defined]
    return service
