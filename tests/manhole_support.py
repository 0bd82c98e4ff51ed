"""
Clients for the manhole's end-to-end tests: an SSH client (Twisted Conch's
client side, asking for a terminal and a shell the way C{ssh} does) and a
raw stream client for a telnet manhole.  Each types one line at the prompt
and waits, without sleeping, until what the test looks for shows up in
the terminal output.
"""

from __future__ import annotations

import struct
from typing import List, Optional

from twisted.conch.ssh import session
from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.connection import SSHConnection
from twisted.conch.ssh.transport import SSHClientTransport
from twisted.conch.ssh.userauth import SSHUserAuthClient
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

__all__ = ["LoginRefused", "SessionEnded", "ssh_prompt", "stream_prompt"]

#: Seconds any one exchange may take before the test fails.
TIMEOUT = 20.0


class LoginRefused(Exception):
    """
    The SSH server answered the password with a failure.
    """


class SessionEnded(Exception):
    """
    The connection ended before the awaited text appeared; the argument is
    everything received.
    """


class _Session:
    """
    One exchange: what to type, what to wait for, and what came back.
    """

    def __init__(self, line: bytes, until: bytes, resize: bool = False) -> None:
        self.line = line
        self.until = until
        self.resize = resize
        self.received = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def data(self, data: bytes) -> bool:
        """
        Add output; True once the awaited text is there (the first time).
        """
        self.received += data
        if not self.done.called and self.until in self.received:
            self.done.callback(self.received)
            return True
        return False

    def fail(self, error: Exception) -> None:
        if not self.done.called:
            self.done.errback(Failure(error))


class _ShellChannel(SSHChannel):
    name = b"session"

    def __init__(self, exchange: _Session, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.exchange = exchange

    def channelOpen(self, specificData: bytes) -> None:
        pty = session.packRequest_pty_req(b"xterm", (24, 80, 0, 0), b"")
        d = self.conn.sendRequest(self, b"pty-req", pty, wantReply=True)
        d.addCallback(lambda _: self.conn.sendRequest(self, b"shell", b"", wantReply=True))
        if self.exchange.resize:
            # The operator widens the window (columns, rows, pixels).
            d.addCallback(
                lambda _: self.conn.sendRequest(
                    self, b"window-change", struct.pack(">4L", 120, 40, 0, 0)
                )
            )
        d.addCallback(lambda _: self.write(self.exchange.line + b"\r"))
        d.addErrback(lambda f: self.exchange.fail(f.value))

    def dataReceived(self, data: bytes) -> None:
        if self.exchange.data(data):
            self.conn.transport.loseConnection()

    def closed(self) -> None:
        self.exchange.fail(SessionEnded(self.exchange.received))


class _Connection(SSHConnection):
    def __init__(self, exchange: _Session) -> None:
        super().__init__()
        self.exchange = exchange

    def serviceStarted(self) -> None:
        super().serviceStarted()
        self.openChannel(_ShellChannel(self.exchange, conn=self))


class _PasswordAuth(SSHUserAuthClient):
    """
    Offers one password, once, and notes whether the server refused it.
    """

    def __init__(self, user: bytes, password: bytes, instance: SSHConnection) -> None:
        super().__init__(user, instance)
        self.password: Optional[bytes] = password
        self.refused = False

    def getPublicKey(self) -> None:
        return None

    def getPassword(self, prompt: Optional[bytes] = None) -> Optional[defer.Deferred[bytes]]:
        password, self.password = self.password, None
        return defer.succeed(password) if password is not None else None

    def ssh_USERAUTH_FAILURE(self, packet: bytes):
        if self.password is None:
            self.refused = True
        return super().ssh_USERAUTH_FAILURE(packet)


class _ClientTransport(SSHClientTransport):
    factory: "_SSHFactory"

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> defer.Deferred[bool]:
        self.factory.host_keys.append(hostKey)
        return defer.succeed(True)

    def connectionSecure(self) -> None:
        self.auth = _PasswordAuth(
            self.factory.user, self.factory.password, _Connection(self.factory.exchange)
        )
        self.requestService(self.auth)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        super().connectionLost(reason)
        auth = getattr(self, "auth", None)
        if auth is not None and auth.refused:
            self.factory.exchange.fail(LoginRefused())
        else:
            self.factory.exchange.fail(SessionEnded(self.factory.exchange.received))
        self.factory.lost.callback(None)


class _SSHFactory(Factory):
    protocol = _ClientTransport

    def __init__(self, user: bytes, password: bytes, exchange: _Session) -> None:
        self.user = user
        self.password = password
        self.exchange = exchange
        self.host_keys: List[bytes] = []
        self.lost: defer.Deferred[None] = defer.Deferred()


@defer.inlineCallbacks
def ssh_prompt(
    reactor,
    endpoint: IStreamClientEndpoint,
    user: bytes,
    password: bytes,
    line: bytes,
    until: bytes,
    resize: bool = False,
):
    """
    Log in to an SSH manhole with a password, open a shell on a terminal,
    type C{line} and return everything received once C{until} shows up,
    after the connection is closed again.

    @param resize: change the terminal's size before typing.

    @return: a Deferred firing with C{(output, host key blobs seen)}.
    @raise LoginRefused: the password was refused.
    @raise SessionEnded: the connection ended first.
    """
    exchange = _Session(line, until, resize)
    factory = _SSHFactory(user, password, exchange)
    client = yield endpoint.connect(factory).addTimeout(TIMEOUT, reactor)
    try:
        output = yield exchange.done.addTimeout(TIMEOUT, reactor)
    finally:
        client.transport.loseConnection()
        yield factory.lost
    return output, factory.host_keys


class _StreamClient(Protocol):
    def __init__(self, exchange: _Session) -> None:
        self.exchange = exchange
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        # Telnet option negotiation is not answered: the manhole does not
        # need it, and a line ends with CR LF as telnet sends it.
        self.transport.write(self.exchange.line + b"\r\n")

    def dataReceived(self, data: bytes) -> None:
        if self.exchange.data(data):
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.exchange.fail(SessionEnded(self.exchange.received))
        self.lost.callback(None)


@defer.inlineCallbacks
def stream_prompt(reactor, endpoint: IStreamClientEndpoint, line: bytes, until: bytes):
    """
    Connect to a telnet manhole, type C{line} and return everything
    received once C{until} shows up, after the connection is closed again.
    """
    exchange = _Session(line, until)
    client = _StreamClient(exchange)
    yield endpoint.connect(Factory.forProtocol(lambda: client)).addTimeout(TIMEOUT, reactor)
    try:
        output = yield exchange.done.addTimeout(TIMEOUT, reactor)
    finally:
        client.transport.loseConnection()
        yield client.lost
    return output
