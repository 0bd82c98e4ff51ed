"""
Limiting exceeding connections: at most C{num_init_children} client
sessions are served at once; the rest wait in a bounded FIFO queue.

In Pgpool-II the limit is a side effect of its process model (one forked
child per client, extra clients wait in the kernel's listen backlog of
C{num_init_children * listen_backlog_multiplier}).  Here it is an explicit
object: the same numbers, but a waiting client is visible (it is counted,
it can time out with a proper error) and never costs a process.

A client takes a slot only once it has authenticated.  Until then it is
counted apart, against C{max_unauthenticated_clients}: in Pgpool-II a
client that connects and never answers its password challenge holds a
child until C{authentication_timeout}, so a few hundred such connections
lock every real user out for a minute; here they only use up their own
allowance, and beyond it new connections are refused at once.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, List, Optional, Tuple

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from twisted_pgpool.wire import errors


def too_many_clients() -> errors.PgError:
    """
    PostgreSQL's and Pgpool-II's words for a full server.
    """
    return errors.fatal(errors.TOO_MANY_CONNECTIONS, "sorry, too many clients already")


class SessionLimiter:
    """
    Hands out session slots, first come first served.

    @ivar max_sessions: how many sessions may run at once.
    @ivar queue_limit: how many clients may wait for a slot.
    @ivar queue_timeout: seconds a client may wait (0: no limit).
    @ivar reject_when_full: refuse at once instead of queueing (what
        Pgpool-II does when C{reserved_connections} is above zero).
    @ivar max_unauthenticated: how many connections may be open that have
        not authenticated yet (C{max_unauthenticated_clients}).
    @ivar active: sessions holding a slot now.
    @ivar unauthenticated: connections not yet authenticated, which hold
        no slot.
    @ivar peak_waiting: the longest the queue has been, for inspection.
    @ivar rejected: clients refused with C{53300}, for any of the reasons
        above.
    """

    def __init__(
        self,
        clock: IReactorTime,
        max_sessions: int,
        queue_limit: int,
        queue_timeout: float,
        reject_when_full: bool = False,
        max_unauthenticated: int = 256,
    ) -> None:
        self.clock = clock
        self.max_sessions = max_sessions
        self.queue_limit = queue_limit
        self.queue_timeout = queue_timeout
        self.reject_when_full = reject_when_full
        self.max_unauthenticated = max_unauthenticated
        self.active = 0
        self.unauthenticated = 0
        self.peak_waiting = 0
        self.rejected = 0
        self._waiting: Deque[Tuple[defer.Deferred, Optional[IDelayedCall]]] = deque()
        self._refusals_logged = 0
        self._refusals_logged_at = float("-inf")

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def refusals_to_log(self) -> int:
        """
        How many clients were refused with C{53300} since the refusals were
        last logged, if it is time to log them again (at most once a
        second: a storm of refusals is one line a second, not one per
        client); 0 otherwise.
        """
        now = self.clock.seconds()
        if now - self._refusals_logged_at < 1.0:
            return 0
        count = self.rejected - self._refusals_logged
        if count:
            self._refusals_logged = self.rejected
            self._refusals_logged_at = now
        return count

    def begin_login(self) -> bool:
        """
        Count a new connection as unauthenticated, if there is room.

        @return: whether it was counted; if not, the connection is to be
            refused with L{too_many_clients} (the refusal is counted in
            C{rejected}).  A counted connection calls L{end_login} exactly
            once: when it has authenticated, or when it closes before that.
        """
        if self.unauthenticated >= self.max_unauthenticated:
            self.rejected += 1
            return False
        self.unauthenticated += 1
        return True

    def end_login(self) -> None:
        """
        A connection counted by L{begin_login} authenticated or went away.
        """
        self.unauthenticated -= 1

    def refuses_arrival(self) -> bool:
        """
        Whether a client asking for a slot now would be refused at once:
        every slot is taken and either C{reserved_connections} is on or
        the queue is full.

        Checked before a client authenticates, so a client that cannot be
        served is told so at once (as Pgpool-II does with
        C{reserved_connections}) without the proxy spending an
        authentication exchange on it.  A refusal is counted in
        C{rejected}.  L{acquire} decides again after authentication.
        """
        if self.active < self.max_sessions and not self._waiting:
            return False
        if self.reject_when_full or len(self._waiting) >= self.queue_limit:
            self.rejected += 1
            return True
        return False

    def try_acquire(self) -> bool:
        """
        Take a slot if one is free and nobody waits for one.

        @return: whether the caller now holds a slot; if not, L{acquire}
            queues it (or refuses).
        """
        if self.active < self.max_sessions and not self._waiting:
            self.active += 1
            return True
        return False

    def acquire(self) -> defer.Deferred:
        """
        Ask for a slot.

        @return: a Deferred that fires (with None) when the caller holds a
            slot, or fails with a C{53300} L{errors.PgError} when the queue
            is full, queueing is off, or the wait timed out.  Cancelling it
            (the client went away) leaves the queue.
        """
        if self.try_acquire():
            return defer.succeed(None)
        if self.reject_when_full or len(self._waiting) >= self.queue_limit:
            self.rejected += 1
            return defer.fail(too_many_clients())
        entry: List[Tuple[defer.Deferred[None], Optional[IDelayedCall]]] = []

        def cancel(d: defer.Deferred[None]) -> None:
            self._forget(entry[0])

        d: defer.Deferred[None] = defer.Deferred(cancel)
        timer = None
        if self.queue_timeout > 0:
            timer = self.clock.callLater(self.queue_timeout, self._timed_out, d)
        entry.append((d, timer))
        self._waiting.append(entry[0])
        self.peak_waiting = max(self.peak_waiting, len(self._waiting))
        return d

    def release(self) -> None:
        """
        Give a slot back; the longest-waiting client gets it.
        """
        while self._waiting:
            d, timer = self._waiting.popleft()
            if timer is not None and timer.active():
                timer.cancel()
            d.callback(None)
            return
        self.active -= 1

    def _forget(self, entry: Tuple[defer.Deferred, Optional[IDelayedCall]]) -> None:
        try:
            self._waiting.remove(entry)
        except ValueError:
            return
        timer = entry[1]
        if timer is not None and timer.active():
            timer.cancel()

    def _timed_out(self, d: defer.Deferred) -> None:
        for entry in self._waiting:
            if entry[0] is d:
                self._waiting.remove(entry)
                break
        self.rejected += 1
        d.errback(too_many_clients())
