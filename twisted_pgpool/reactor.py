"""
Twisted's epoll reactor without the per-event logging context, for the
lowest latency per message.

For every readable or writable socket, L{EPollReactor.doPoll} calls the
handler through C{log.callWithLogger}, which asks the protocol for its log
prefix and copies and pushes a context dictionary, so that legacy
C{twisted.python.log} messages emitted while the event is handled carry
the connection's name as their C{system}.  A proxy handles one small
message per event, and at one client that bookkeeping is a measurable part
of a cache hit's round trip (benchmarks/cache_latency_vs_pgpool.py: 3 to 5
microseconds of about 70).  L{ProxyReactor} dispatches the same events in
the same order through the same C{_doReadOrWrite} (which still catches and
logs a handler's errors and closes its connection); the only difference is
that log events emitted while handling one show C{-} as their system.

Opt in with C{twistd --reactor=pgpool-epoll pgpool -c conf.yaml}; the
C{twisted-pgpool} commands use it when they install the reactor themselves.
"""

from __future__ import annotations

import errno
from typing import Optional

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor

__all__ = ["ProxyReactor", "install"]


class ProxyReactor(EPollReactor):
    """
    L{EPollReactor} dispatching events without C{log.callWithLogger}.
    """

    def doPoll(self, timeout: Optional[float]) -> None:
        if timeout is None:
            timeout = -1  # Wait indefinitely.
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        dispatch = self._doReadOrWrite
        selectables = self._selectables
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                dispatch(selectable, fd, event)

    doIteration = doPoll


def install() -> ProxyReactor:
    """
    Install L{ProxyReactor} as the global reactor (before anything imports
    C{twisted.internet.reactor}).
    """
    reactor = ProxyReactor()
    installReactor(reactor)
    return reactor
