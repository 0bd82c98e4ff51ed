"""
The proxy's client side on in-memory transports, for unit tests that drive
it with bytes: a proxy core on a L{MemoryReactorClock}, client connections
on L{StringTransport}s the test writes into, and the server connections
the proxy opens, completed to L{StringTransport}s the test answers for.
No sockets, no real reactor.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from twisted_pgpool.backend.protocol import BackendProtocol
from twisted_pgpool.config import PgpoolConfig
from twisted_pgpool.proxy.frontend import FrontendProtocol
from twisted_pgpool.service import ProxyCore


class MemoryProxy:
    """
    A proxy core built from C{config} on a memory reactor, and the
    connections to and from it.

    @ivar backends: the server connections completed so far, in order.
    """

    def __init__(self, config: PgpoolConfig) -> None:
        self.reactor = MemoryReactorClock()
        self.core = ProxyCore.from_config(config, self.reactor)
        self.backends: List[Tuple[BackendProtocol, StringTransport]] = []

    def client(self, transport: Optional[StringTransport] = None) -> MemoryClient:
        """
        A new client connection (on C{transport}, by default a plain
        L{StringTransport}).
        """
        return MemoryClient(self, transport)

    def accept_backend_connection(self) -> Tuple[BackendProtocol, StringTransport]:
        """
        Complete the next connection attempt the proxy made, to a fresh
        L{StringTransport}.
        """
        host, port, factory, _, _ = self.reactor.tcpClients[len(self.backends)]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.backends.append((protocol, transport))
        return protocol, transport


class MemoryClient:
    """
    One client connection to a L{MemoryProxy}.

    @ivar backend: once the test has logged it in, the server connection
        its session relays to (and C{backend_transport}, its transport).
    """

    backend: BackendProtocol
    backend_transport: StringTransport

    def __init__(self, proxy: MemoryProxy, transport: Optional[StringTransport] = None) -> None:
        self.proxy = proxy
        self.transport = transport if transport is not None else StringTransport()
        self.protocol = FrontendProtocol(proxy.core)
        self.protocol.makeConnection(self.transport)

    def says(self, *chunks: bytes) -> None:
        """
        The client sends C{chunks}, each arriving on its own.
        """
        for chunk in chunks:
            self.protocol.dataReceived(chunk)

    def server_says(self, data: bytes) -> None:
        """
        The server behind the client's session sends C{data}.
        """
        self.backend.dataReceived(data)

    def take(self) -> bytes:
        """
        What the proxy wrote to the client since the last call.
        """
        data = self.transport.value()
        self.transport.clear()
        return data

    def hang_up(self) -> None:
        """
        The client's connection is lost.
        """
        self.protocol.connectionLost(Failure(ConnectionDone()))

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)
