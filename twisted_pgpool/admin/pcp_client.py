"""
A small Twisted client for Pgpool-II's PCP protocol.

It is what the C{twisted-pgpool nodes|attach|detach|promote|health|
invalidate-query-cache|reload|stop|log-rotate} commands use, and it talks to Pgpool-II itself as well as to
twisted_pgpool.  The wire format is described in L{twisted_pgpool.admin.pcp},
whose codec it shares.

    proto = await connect(reactor, "localhost", 9898, "admin", "secret")
    nodes = await proto.node_info()
    await proto.detach(1)
    await proto.quit()
"""

from __future__ import annotations

import collections
import hashlib
import struct
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple, cast

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint, ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from twisted_pgpool.admin import pcp
from twisted_pgpool.admin.operations import (
    HEALTH_CHECK_COLUMNS,
    ConfigParameter,
    NodeInfo,
)

__all__ = [
    "PcpClientProtocol",
    "PcpConnectionLost",
    "PcpError",
    "PcpProtocolError",
    "connect",
    "socket_path",
]


class PcpError(Exception):
    """
    The server answered with an error (an C{E} message).

    @ivar fields: the ErrorResponse fields by one-letter code.
    """

    def __init__(self, fields: Dict[str, str]) -> None:
        self.fields = fields
        super().__init__(self.describe())

    @property
    def severity(self) -> str:
        return self.fields.get("S", "ERROR")

    @property
    def message(self) -> str:
        return self.fields.get("M", "")

    @property
    def detail(self) -> Optional[str]:
        return self.fields.get("D")

    @property
    def sqlstate(self) -> Optional[str]:
        return self.fields.get("C")

    def describe(self) -> str:
        """
        The error as Pgpool-II's tools print it (C{ERROR:  message}, then
        C{DETAIL:  ...}).
        """
        text = f"{self.severity}:  {self.message}"
        if self.detail:
            text += f"\nDETAIL:  {self.detail}"
        return text


class PcpProtocolError(Exception):
    """
    The server sent something this client cannot read.
    """


class PcpConnectionLost(Exception):
    """
    The connection closed before the reply was complete.
    """


def parse_error_fields(payload: bytes) -> Dict[str, str]:
    """
    The fields of an C{E}/C{N} payload (code byte + NUL-terminated value,
    then a final NUL).
    """
    fields: Dict[str, str] = {}
    for part in pcp.split_strings(payload):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _number(value: bytes, kind: Callable[[str], Any], default: Any) -> Any:
    try:
        return kind(_text(value).strip())
    except ValueError:
        return default


def decode_node_info(node_id: int, fields: Sequence[bytes]) -> NodeInfo:
    """
    Read a Pgpool-II 4.3.5 C{NodeInfo} row (see
    L{twisted_pgpool.admin.pcp.node_info_fields}); twisted_pgpool's trailing
    C{select_cnt} is read when present.
    """
    if len(fields) < 12:
        raise PcpProtocolError(
            f"a NodeInfo row has {len(fields)} fields; expected at least 12 "
            "(is the server a Pgpool-II 4.3?)"
        )
    quarantine = fields[3] == b"1"
    status = pcp.STATUS_NAMES.get(_number(fields[2], int, -1), "unknown")
    delay = _number(fields[8], int, 0)
    return NodeInfo(
        node_id=node_id,
        hostname=_text(fields[0]),
        port=_number(fields[1], int, 0),
        status="quarantine" if quarantine else status,
        pg_status=_text(fields[4]),
        lb_weight=_number(fields[5], float, 0.0) / pcp.RAND_MAX,
        role=pcp.ROLE_NAMES.get(_number(fields[6], int, -1), "unknown"),
        pg_role=_text(fields[7]),
        replication_delay=str(delay),
        replication_delay_bytes=delay,
        replication_state=_text(fields[9]),
        replication_sync_state=_text(fields[10]),
        last_status_change=_number(fields[11], float, 0.0),
        select_cnt=_number(fields[12], int, 0) if len(fields) > 12 else 0,
        quarantine=quarantine,
    )


class _Reply:
    """
    Collects the messages of one reply.  L{feed} returns True when the
    reply is complete; L{result} is then its value.
    """

    def __init__(
        self,
        tag: bytes,
        row_name: Optional[str] = None,
        parse: Callable[[List[bytes]], Any] = lambda fields: None,
        raw: bool = False,
    ) -> None:
        self.tag = tag[0]
        self.row_name = row_name
        self.parse = parse
        self.raw = raw
        self.rows: List[Any] = []
        self.result: Any = None

    def feed(self, tag: int, payload: bytes) -> bool:
        if tag != self.tag:
            raise PcpProtocolError(f"expected a {chr(self.tag)!r} reply, got {chr(tag)!r}")
        if self.raw:
            self.result = self.parse([payload])
            return True
        strings = pcp.split_strings(payload)
        head = _text(strings[0]) if strings else ""
        if self.row_name is None:
            if head != pcp.COMMAND_COMPLETE:
                raise PcpProtocolError(f"unexpected reply {head!r}")
            self.result = self.parse(strings[1:])
            return True
        if head == "ArraySize":
            return False
        if head == self.row_name:
            self.rows.append(self.parse(strings[1:]))
            return False
        if head == pcp.COMMAND_COMPLETE:
            self.result = self.rows
            return True
        raise PcpProtocolError(f"unexpected reply {head!r}")


class PcpClientProtocol(Protocol):
    """
    A PCP client connection.  Requests may be issued back to back; each
    method returns a Deferred firing with the decoded reply, or failing
    with L{PcpError} (the server refused), L{PcpProtocolError} or
    L{PcpConnectionLost}.
    """

    # Set by makeConnection, before any request can be made.
    transport: ITransport

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pending: Deque[Tuple[_Reply, defer.Deferred]] = collections.deque()
        self._lost: Optional[Failure] = None

    # -- connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:
                pass

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._lost = Failure(PcpConnectionLost("the PCP server closed the connection"))
        pending, self._pending = self._pending, collections.deque()
        for _, d in pending:
            d.errback(self._lost)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        buffer = self._buffer
        offset = 0
        try:
            while len(buffer) - offset >= 5:
                tag = buffer[offset]
                (length,) = struct.unpack_from("!i", buffer, offset + 1)
                if length < 4:
                    raise PcpProtocolError(f"bad message length {length}")
                end = offset + 1 + length
                if len(buffer) < end:
                    break
                payload = bytes(buffer[offset + 5 : end])
                offset = end
                self._message(tag, payload)
        except PcpProtocolError:
            failure = Failure()
            pending, self._pending = self._pending, collections.deque()
            for _, d in pending:
                d.errback(failure)
            self.transport.loseConnection()
            offset = len(buffer)
        finally:
            del buffer[:offset]

    def _message(self, tag: int, payload: bytes) -> None:
        if tag == ord("N"):
            return  # a notice: Pgpool-II's tools only show them with -d
        if not self._pending:
            raise PcpProtocolError(f"unexpected {chr(tag)!r} message")
        reply, d = self._pending[0]
        if tag == ord("E"):
            self._pending.popleft()
            d.errback(PcpError(parse_error_fields(payload)))
            return
        if reply.feed(tag, payload):
            self._pending.popleft()
            d.callback(reply.result)

    def _request(
        self, tag: bytes, fields: Sequence[pcp.Field], reply: _Reply, raw: Optional[bytes] = None
    ) -> defer.Deferred:
        if self._lost is not None:
            return defer.fail(self._lost)
        d: defer.Deferred = defer.Deferred()
        self._pending.append((reply, d))
        if raw is not None:
            self.transport.write(pcp.encode_raw(tag, raw))
        else:
            self.transport.write(pcp.encode(tag, *fields))
        return d

    # -- requests --------------------------------------------------------------

    def authenticate(self, user: str, password: str) -> "defer.Deferred[None]":
        """
        Log in: ask for a salt, then prove knowledge of the password.  Fails
        with L{PcpError} when the server refuses (it then closes the
        connection).
        """
        return defer.Deferred.fromCoroutine(self._authenticate(user, password))

    async def _authenticate(self, user: str, password: str) -> None:
        salt = await self._request(
            b"M", (), _Reply(b"m", raw=True, parse=lambda parts: parts[0][:4]), raw=b""
        )
        stored = hashlib.md5(password.encode("utf-8")).hexdigest()
        answer = pcp.pcp_response(user, stored, salt)
        await self._request(
            b"R", (user, answer), _Reply(b"r", raw=True, parse=self._check_authentication_ok)
        )

    @staticmethod
    def _check_authentication_ok(parts: List[bytes]) -> None:
        strings = pcp.split_strings(parts[0])
        if not strings or strings[0] != pcp.AUTHENTICATION_OK.encode():
            raise PcpProtocolError(f"authentication answered {parts[0]!r}")

    def node_count(self) -> "defer.Deferred[int]":
        return self._request(
            b"L", (), _Reply(b"l", parse=lambda f: _number(f[0], int, 0) if f else 0)
        )

    def node_info(self, node_id: int = -1) -> "defer.Deferred[List[NodeInfo]]":
        """
        One node, or all of them (C{node_id} -1).
        """
        counter = [node_id if node_id >= 0 else 0]

        def row(fields: List[bytes]) -> NodeInfo:
            info = decode_node_info(counter[0], fields)
            counter[0] += 1
            return info

        return self._request(b"I", (str(node_id),), _Reply(b"i", "NodeInfo", row))

    def health_check_stats(self, node_id: int) -> "defer.Deferred[Dict[str, str]]":
        """
        A node's health check statistics, column name to value as text
        (L{twisted_pgpool.admin.operations.HEALTH_CHECK_COLUMNS}).
        """
        return self._request(
            b"H",
            (str(node_id),),
            _Reply(b"h", parse=lambda f: dict(zip(HEALTH_CHECK_COLUMNS, (_text(v) for v in f)))),
        )

    def attach(self, node_id: int) -> "defer.Deferred[None]":
        return self._request(b"C", (str(node_id),), _Reply(b"c"))

    def recover(self, node_id: int) -> "defer.Deferred[None]":
        """
        Online recovery of a node (C{pcp_recovery_node}); fires once the
        server has recovered and attached it, which may take as long as
        the recovery scripts do, or fails with the server's L{PcpError}.
        """
        # As Pgpool-II's client: "O" with the id, answered like attach.
        return self._request(b"O", (str(node_id),), _Reply(b"c"))

    def detach(self, node_id: int, gracefully: bool = False) -> "defer.Deferred[None]":
        return self._request(b"d" if gracefully else b"D", (str(node_id),), _Reply(b"d"))

    def promote(
        self, node_id: int, switchover: bool = False, gracefully: bool = False
    ) -> "defer.Deferred[None]":
        # As Pgpool-II's client: "<id> " NUL, then the option byte.
        raw = f"{node_id} ".encode("ascii") + b"\x00" + (b"s" if switchover else b"n")
        return self._request(b"j" if gracefully else b"J", (), _Reply(b"d"), raw=raw)

    def pool_status(self) -> "defer.Deferred[List[ConfigParameter]]":
        def row(fields: List[bytes]) -> ConfigParameter:
            texts = [_text(f) for f in fields] + ["", "", ""]
            return ConfigParameter(texts[0], texts[1], texts[2])

        return self._request(b"B", (), _Reply(b"b", "ProcessConfig", row))

    def process_count(self) -> "defer.Deferred[List[int]]":
        return self._request(
            b"N", (), _Reply(b"n", parse=lambda f: [_number(v, int, 0) for v in f[1:]])
        )

    def process_info(self, pid: int = 0) -> "defer.Deferred[List[Tuple[str, ...]]]":
        return self._request(
            b"P", (str(pid),), _Reply(b"p", "ProcessInfo", lambda f: tuple(_text(v) for v in f))
        )

    def invalidate_query_cache(self) -> "defer.Deferred[None]":
        """
        Empty the server's query cache (C{pcp_invalidate_query_cache}).
        Pgpool-II before 4.6 does not know the request: it answers with a
        FATAL L{PcpError} and closes the connection.
        """
        return self._request(b"G", (), _Reply(b"g"))

    def reload_config(self) -> "defer.Deferred[None]":
        """
        Have the server reload its configuration (C{pcp_reload_config});
        fails with L{PcpError} when the server refuses the new file.
        """
        # As Pgpool-II's client: the scope byte, "l" for this server only.
        return self._request(b"Z", (), _Reply(b"z"), raw=b"l")

    def stop_pgpool(self, mode: str = "smart", cluster: bool = False) -> "defer.Deferred[None]":
        """
        Have the server stop (C{pcp_stop_pgpool}); fires once it has
        accepted the request, before it is gone.

        @param mode: C{smart}, C{fast} or C{immediate} (or their first
            letters).
        @param cluster: the C{-s cluster} scope (C{t}; the same as local
            on a server without a watchdog).
        """
        letter = mode[:1].encode("ascii")
        return self._request(b"t" if cluster else b"T", (), _Reply(b"t"), raw=letter)

    def log_rotate(self, cluster: bool = False) -> "defer.Deferred[None]":
        """
        Have the server rotate its log file (Pgpool-II 4.6's
        C{pcp_log_rotate}).  Pgpool-II before 4.6 answers with a FATAL
        L{PcpError}.
        """
        return self._request(b"V", (), _Reply(b"v"), raw=b"c" if cluster else b"l")

    def quit(self) -> None:
        """
        Say goodbye (C{X}) and close.
        """
        if self._lost is None:
            self.transport.write(pcp.encode(b"X"))
            self.transport.loseConnection()


def socket_path(directory: str, port: int) -> str:
    """
    The Unix socket Pgpool-II's PCP listens on in C{directory}.
    """
    return f"{directory.rstrip('/') or '/'}/.s.PGSQL.{port}"


def connect(
    reactor, host: str, port: int, user: str, password: str, timeout: float = 10.0
) -> "defer.Deferred[PcpClientProtocol]":
    """
    Connect and log in; fires with the logged-in protocol.

    @param host: a host name or address, or a directory (starting with
        C{/}) holding the Unix socket C{.s.PGSQL.<port>}.
    @raise PcpError: the login was refused.
    @raise twisted.internet.error.ConnectError: nothing listens there.
    """
    return defer.Deferred.fromCoroutine(_connect(reactor, host, port, user, password, timeout))


async def _connect(
    reactor, host: str, port: int, user: str, password: str, timeout: float
) -> PcpClientProtocol:
    endpoint: IStreamClientEndpoint
    if host.startswith("/"):
        endpoint = UNIXClientEndpoint(reactor, socket_path(host, port), timeout)
    else:
        endpoint = HostnameEndpoint(reactor, host, port, timeout)
    # What the factory built.
    protocol = cast(
        PcpClientProtocol, await endpoint.connect(Factory.forProtocol(PcpClientProtocol))
    )
    try:
        await protocol.authenticate(user, password)
    except BaseException:
        protocol.transport.loseConnection()
        raise
    return protocol
