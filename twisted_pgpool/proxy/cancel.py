"""
Query cancellation.

Each client is told the real process id of the server process it is bound
to in session pooling -- its primary connection -- so that
C{pg_backend_pid()}, C{pg_stat_activity}, C{pg_terminate_backend(pid)} and
the C{notify.pid == backend_pid} idiom mean what they mean on a direct
connection (Pgpool-II does the same).  The secret key is the proxy's own:
the server's key belongs to a backend connection that serves other clients
over time.  A CancelRequest arrives on a new connection; the registry maps
the (process id, secret key) pair to the backend connections the client is
using right now and sends each server its real key.  An unknown or wrong
key is dropped without a word, as PostgreSQL does, so keys cannot be
probed.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Iterable, Tuple, cast

import attr
from twisted.internet import defer
from twisted.internet.interfaces import IProtocol, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from twisted_pgpool import logs
from twisted_pgpool.backend.protocol import backend_endpoint
from twisted_pgpool.wire import messages

log = Logger(observer=logs.observer)


@attr.s(auto_attribs=True, frozen=True)
class CancelTarget:
    """
    Where to send a cancel: a server and the key of one of its processes.
    """

    node_id: int
    hostname: str
    port: int
    process_id: int
    secret_key: int


class _SendCancel(Protocol):
    """
    Writes one CancelRequest and waits for the server to close the
    connection, which it does once it has signalled the process: a client
    that waits for its cancel connection to close before its next
    statement (asyncpg does) must not have that statement cancelled
    instead, so the client's connection is closed only then.
    """

    # Set by makeConnection before connectionMade; TCP or UNIX, both of
    # which can be aborted.
    transport: ITCPTransport

    def __init__(self, packet: bytes, done: defer.Deferred) -> None:
        self.packet = packet
        self.done = done

    def connectionMade(self) -> None:
        self.transport.write(self.packet)

    def connectionLost(self, reason=None) -> None:
        if not self.done.called:
            self.done.callback(None)


@attr.s(auto_attribs=True)
class _SendCancelFactory(Factory):
    packet: bytes
    done: defer.Deferred
    noisy = False

    def buildProtocol(self, addr) -> _SendCancel:
        return _SendCancel(self.packet, self.done)


class CancelRegistry:
    """
    The proxy-issued cancel keys of live sessions.

    @ivar reactor: used to connect to servers.
    @ivar connect_timeout: seconds allowed to reach a server.
    """

    def __init__(self, reactor, connect_timeout: float) -> None:
        self.reactor = reactor
        self.connect_timeout = connect_timeout
        # (process id, secret key) -> function giving the current targets.
        # Keyed by the pair: servers of different nodes may have processes
        # with the same id.
        self._sessions: Dict[Tuple[int, int], Callable[[], Iterable[CancelTarget]]] = {}

    def register(self, process_id: int, targets: Callable[[], Iterable[CancelTarget]]) -> int:
        """
        Issue a secret key for a new session bound to the server process
        C{process_id}.

        @param targets: called at cancel time; returns the backend processes
            the session is using at that moment.
        @return: the secret key to send the client with C{process_id}.
        """
        while True:
            key = int.from_bytes(os.urandom(4), "big", signed=True)
            if (process_id, key) not in self._sessions:
                break
        self._sessions[(process_id, key)] = targets
        return key

    def unregister(self, process_id: int, secret_key: int) -> None:
        self._sessions.pop((process_id, secret_key), None)

    def __len__(self) -> int:
        return len(self._sessions)

    def cancel(self, process_id: int, secret_key: int) -> defer.Deferred:
        """
        Forward a client's CancelRequest to the servers behind the key.

        @return: a Deferred firing with the number of servers signalled
            (0 for an unknown or wrong key).
        """
        targets = self._sessions.get((process_id, secret_key))
        if targets is None:
            log.debug("cancel request with unknown key for process {pid}", pid=process_id)
            return defer.succeed(0)
        sends = [self.send(target) for target in targets()]
        d = defer.gatherResults(sends, consumeErrors=True)
        d.addCallback(lambda results: sum(results))
        return d

    def send(self, target: CancelTarget) -> defer.Deferred:
        """
        Send one server a CancelRequest for one of its processes.

        @return: a Deferred firing with 1 when sent, 0 when the server
            could not be reached (logged).
        """
        endpoint = backend_endpoint(
            self.reactor, target.hostname, target.port, self.connect_timeout
        )
        packet = messages.encode_cancel_request(target.process_id, target.secret_key)
        closed: defer.Deferred = defer.Deferred()
        d = endpoint.connect(_SendCancelFactory(packet, closed))

        def sent(connected: IProtocol) -> defer.Deferred:
            # What _SendCancelFactory built.
            protocol = cast(_SendCancel, connected)

            def give_up() -> None:
                if not closed.called:
                    protocol.transport.abortConnection()

            # The server closes the connection once it has handled the
            # request; do not wait longer than a connection may take.
            timer = self.reactor.callLater(self.connect_timeout or 10.0, give_up)
            closed.addBoth(lambda result: timer.active() and timer.cancel() or result)
            return closed.addCallback(lambda _: 1)

        def failed(failure) -> int:
            log.warn(
                "could not send cancel request to backend node {node_id}: {reason}",
                node_id=target.node_id,
                reason=failure.getErrorMessage(),
            )
            return 0

        d.addCallback(sent)
        d.addErrback(failed)
        return d
