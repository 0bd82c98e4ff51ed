"""
Query cancellation.

Each client gets a BackendKeyData (process id and secret key) invented by the
proxy, because the server's own key belongs to a backend connection that may
serve other clients over time.  A CancelRequest arrives on a new connection;
the registry maps the proxy's key to the backend connection the client is
using right now and sends the server its real key.  An unknown or wrong key is
dropped without a word, as PostgreSQL does, so keys cannot be probed.
"""

from __future__ import annotations

import os
import secrets
from typing import Callable, Dict, Iterable, Tuple

import attr
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from twisted_pgpool import logs, messages
from twisted_pgpool.backend import backend_endpoint

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
    Writes one CancelRequest and closes; the server answers nothing.
    """

    def __init__(self, packet: bytes) -> None:
        self.packet = packet

    def connectionMade(self) -> None:
        self.transport.write(self.packet)
        self.transport.loseConnection()


@attr.s(auto_attribs=True)
class _SendCancelFactory(Factory):
    packet: bytes
    noisy = False

    def buildProtocol(self, addr) -> _SendCancel:
        return _SendCancel(self.packet)


class CancelRegistry:
    """
    The proxy-issued cancel keys of live sessions.

    @ivar reactor: used to connect to servers.
    @ivar connect_timeout: seconds allowed to reach a server.
    """

    def __init__(self, reactor, connect_timeout: float) -> None:
        self.reactor = reactor
        self.connect_timeout = connect_timeout
        # process id -> (secret key, function giving the current targets)
        self._sessions: Dict[int, Tuple[int, Callable[[], Iterable[CancelTarget]]]] = {}
        self._next_pid = secrets.randbelow(1 << 20) + 1

    def register(self, targets: Callable[[], Iterable[CancelTarget]]) -> Tuple[int, int]:
        """
        Issue a key for a new session.

        @param targets: called at cancel time; returns the backend processes
            the session is using at that moment.
        @return: (process id, secret key) to send the client.
        """
        while True:
            pid = self._next_pid
            self._next_pid = pid + 1 if pid < 0x7FFFFFFF else 1
            if pid not in self._sessions:
                break
        key = int.from_bytes(os.urandom(4), "big", signed=True)
        self._sessions[pid] = (key, targets)
        return pid, key

    def unregister(self, process_id: int) -> None:
        self._sessions.pop(process_id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def cancel(self, process_id: int, secret_key: int) -> defer.Deferred:
        """
        Forward a client's CancelRequest to the servers behind the key.

        @return: a Deferred firing with the number of servers signalled
            (0 for an unknown or wrong key).
        """
        entry = self._sessions.get(process_id)
        if entry is None or entry[0] != secret_key:
            log.debug("cancel request with unknown key for process {pid}",
                      pid=process_id)
            return defer.succeed(0)
        sends = [self.send(target) for target in entry[1]()]
        d = defer.gatherResults(sends, consumeErrors=True)
        d.addCallback(lambda results: sum(results))
        return d

    def send(self, target: CancelTarget) -> defer.Deferred:
        """
        Send one server a CancelRequest for one of its processes.

        @return: a Deferred firing with 1 when sent, 0 when the server
            could not be reached (logged).
        """
        endpoint = backend_endpoint(self.reactor, target.hostname, target.port,
                                    self.connect_timeout)
        packet = messages.encode_cancel_request(target.process_id,
                                                target.secret_key)
        d = endpoint.connect(_SendCancelFactory(packet))

        def failed(failure) -> int:
            log.warn("could not send cancel request to backend node {node_id}: "
                     "{reason}", node_id=target.node_id,
                     reason=failure.getErrorMessage())
            return 0

        d.addCallbacks(lambda _: 1, failed)
        return d
