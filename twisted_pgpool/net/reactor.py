"""
The proxy's reactor: Twisted's epoll reactor without the per-event logging
context, and with optional busy polling, for the lowest latency per message.

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

Busy polling (C{busy_poll_time}) is the other half.  A process that sleeps
in C{epoll_wait} between messages must be woken when the next one arrives,
and on a virtual machine waking an idle virtual CPU costs tens of
microseconds: more than the proxy's whole work on a cache hit.  With busy
polling on, the reactor keeps asking the kernel for events without sleeping
for a short while before it blocks, so a message that arrives in that time
is handled at once; between two polls it yields the CPU to any other
process waiting for it.  L{BusyPollWindow} adapts how long that is, the way
KVM's halt polling does, so that the CPU spent spinning goes to gaps that
end soon, not to idle time.

C{twistd pgpool} and the C{twisted-pgpool} commands run on this reactor
unless another one is chosen (C{twistd --reactor=epoll pgpool ...}) or
already installed (an embedding application's).
"""

from __future__ import annotations

import errno
import os
import time
from typing import Callable, List, Optional, Tuple

import attr
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor

__all__ = ["BusyPollWindow", "ProxyReactor", "install", "install_unless_chosen"]

#: The smallest spin, in seconds, the window grows to from nothing: shorter
#: spins cost a system call or two and catch almost nothing.
_SMALLEST_SPIN = 10e-6


@attr.s(auto_attribs=True)
class BusyPollWindow:
    """
    How long the reactor spins before it sleeps, adapted to the gaps
    between events.

    A wait that ended during the spin leaves the window as it is.  A wait
    that had to sleep but ended within L{maximum} says a longer spin would
    have caught it: the window doubles (from L{_SMALLEST_SPIN} when it was
    nothing), up to L{maximum}.  A wait longer than L{maximum} says the
    traffic has gaps no spin is worth bridging: the window halves, and drops
    to nothing below L{_SMALLEST_SPIN}.  So an idle or lightly used proxy
    soon stops spinning at all, and one answering a steady stream of
    requests spins through its short gaps.

    @ivar maximum: the longest spin, in seconds (C{busy_poll_time}).
    @ivar current: the spin the next wait starts with, in seconds.
    @ivar caught: waits that ended during the spin.
    @ivar slept: waits that spun, found nothing and slept.
    """

    maximum: float
    current: float = 0.0
    caught: int = 0
    slept: int = 0

    def event_caught(self) -> None:
        """
        An event arrived while spinning.
        """
        self.caught += 1

    def event_after_sleep(self, waited: float) -> None:
        """
        The spin found nothing and the reactor slept; the wait (spin
        included) took C{waited} seconds.
        """
        self.slept += 1
        if waited <= self.maximum:
            self.current = min(self.maximum, max(self.current * 2, _SMALLEST_SPIN))
        else:
            halved = self.current / 2
            self.current = halved if halved >= _SMALLEST_SPIN else 0.0


class ProxyReactor(EPollReactor):
    """
    L{EPollReactor} dispatching events without C{log.callWithLogger}, and
    busy polling when L{set_busy_poll} turned it on.

    @ivar busy_poll: the spin policy, or L{None} when busy polling is off.
    """

    busy_poll: Optional[BusyPollWindow] = None
    _monotonic: Callable[[], float] = staticmethod(time.monotonic)

    def set_busy_poll(self, maximum: float) -> None:
        """
        Spin for up to C{maximum} seconds before sleeping; C{0} turns busy
        polling off.
        """
        self.busy_poll = BusyPollWindow(maximum) if maximum > 0 else None

    def doPoll(self, timeout: Optional[float]) -> None:
        if timeout is None:
            timeout = -1  # Wait indefinitely.
        try:
            if self.busy_poll is not None and timeout != 0:
                events = self._spin_then_poll(timeout)
            else:
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

    def _spin_then_poll(self, timeout: float) -> List[Tuple[int, int]]:
        """
        Poll without sleeping for as long as the window says (never past
        C{timeout}, when the next timed call is due), then sleep in
        C{epoll_wait} for what is left of C{timeout}.
        """
        window = self.busy_poll
        assert window is not None
        poll = self._poller.poll
        size = len(self._selectables)
        events = poll(0, size)
        if events:
            return events
        sched_yield = os.sched_yield
        now = self._monotonic
        started = now()
        spin = window.current
        if timeout >= 0 and timeout < spin:
            spin = timeout
        if spin > 0:
            deadline = started + spin
            while True:
                # Let anything else runnable on this CPU (a database
                # server on the same machine, say) go first.
                sched_yield()
                events = poll(0, size)
                if events:
                    window.event_caught()
                    return events
                if now() >= deadline:
                    break
        if timeout >= 0:
            timeout = max(0.0, timeout - (now() - started))
            if timeout == 0:
                # A timed call is due: run it; this wait is not over.
                return []
        events = poll(timeout, size)
        if events:
            window.event_after_sleep(now() - started)
        return events


def install() -> ProxyReactor:
    """
    Install L{ProxyReactor} as the global reactor (before anything imports
    C{twisted.internet.reactor}).
    """
    reactor = ProxyReactor()
    installReactor(reactor)
    return reactor


def install_unless_chosen() -> None:
    """
    Install L{ProxyReactor} unless a reactor is installed already (chosen
    with C{twistd --reactor}, or by an embedding program).
    """
    import sys

    if "twisted.internet.reactor" not in sys.modules:
        install()
