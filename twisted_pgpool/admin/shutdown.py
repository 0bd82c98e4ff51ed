"""
Stopping the proxy on request, the way Pgpool-II's C{pcp_stop_pgpool} and
C{pgpool -m smart|fast|immediate stop} do.

  - C{smart}: stop accepting clients, let the sessions that are open (and
    the clients already queued for a slot) finish, then stop;
  - C{fast}: stop accepting clients, end every session with PostgreSQL's
    C{FATAL 57P01 terminating connection due to administrator command}
    (closing the backend connections, so PostgreSQL rolls back their
    transactions), then stop;
  - C{immediate}: the same as C{fast} (as in Pgpool-II, which documents no
    difference between the two).

A later, harder request takes over from an earlier one (C{fast} during a
C{smart} wait), as a second signal does to Pgpool-II.  "Stop" is the
callable given, usually the reactor's C{stop}: twistd (or C{twisted-pgpool
run}) then stops the services, which closes the pooled connections, and
exits with status 0.  The node statuses are written to C{pgpool_status}
first.
"""

from __future__ import annotations

import signal
from typing import Any, Callable, Iterable, List, Optional

from twisted.application.service import IService, Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twisted_pgpool import logs
from twisted_pgpool.wire import errors

__all__ = [
    "SHUTDOWN_MODES",
    "SIGNAL_MODES",
    "ProxyShutdown",
    "ShutdownOnSignals",
    "administrator_shutdown",
    "stop_reactor",
]

log = Logger(observer=logs.observer)

#: The mode letters of PCP's stop request, and their names.
SHUTDOWN_MODES = {"s": "smart", "f": "fast", "i": "immediate"}


def administrator_shutdown() -> errors.PgError:
    """
    What a session ended by a fast shutdown receives: PostgreSQL's own
    message for C{pg_ctl stop -m fast}.
    """
    return errors.fatal(
        errors.ADMIN_SHUTDOWN, "terminating connection due to administrator command"
    )


def stop_reactor(reactor: Any) -> None:
    """
    Stop C{reactor}, unless it is stopping already (a SIGTERM came too).
    """
    from twisted.internet.error import ReactorNotRunning

    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


class ProxyShutdown:
    """
    Carries out one shutdown of a proxy.

    @ivar mode: C{None} until a request came, then C{smart}, C{fast} or
        C{immediate}.
    @ivar interval: seconds between checks for the sessions to be gone.
        The first check comes one interval after the request, which also
        lets the PCP reply reach its client before the reactor stops.
    @ivar fast_timeout: seconds a fast shutdown waits for the sessions it
        ended to close (their FATAL messages to be sent) before stopping
        anyway.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        core: Any,
        listeners: Iterable[IService],
        stop: Callable[[], None],
        save_status: Optional[Callable[[], None]] = None,
        interval: float = 0.1,
        fast_timeout: float = 5.0,
    ) -> None:
        """
        @param core: gives C{sessions} (the sessions in progress, each with
            C{fail(error)}) and C{limiter} (C{active}, C{waiting},
            C{unauthenticated}).
        @param listeners: the client listeners, stopped at once.
        @param stop: stops the process (the reactor's C{stop}).
        @param save_status: writes C{pgpool_status} before stopping.
        """
        self.reactor = reactor
        self.core = core
        self.listeners: List[IService] = list(listeners)
        self._stop = stop
        self._save_status = save_status
        self.interval = interval
        self.fast_timeout = fast_timeout
        self.mode: Optional[str] = None
        self._deadline: Optional[float] = None
        self._loop: Optional[LoopingCall] = None
        self.stopped = False

    def shutdown(self, mode: str) -> None:
        """
        Begin (or harden) a shutdown; returns at once.

        @param mode: C{smart}, C{fast} or C{immediate}.
        """
        if mode not in SHUTDOWN_MODES.values():
            raise ValueError(f"unknown shutdown mode {mode!r}")
        log.info("received {mode} shutdown request", mode=mode)
        if self.stopped or self.mode in ("fast", "immediate"):
            return
        first = self.mode is None
        self.mode = mode
        if first:
            self._stop_listening()
        if mode != "smart":
            self._deadline = self.reactor.seconds() + self.fast_timeout
            for frontend in list(self.core.sessions):
                frontend.fail(administrator_shutdown())
        if self._loop is None:
            self._loop = LoopingCall(self._check)
            self._loop.clock = self.reactor
            self._loop.start(self.interval, now=False).addErrback(
                lambda f: log.failure("shutdown check failed", f)
            )

    def remaining(self) -> int:
        """
        The sessions the shutdown still waits for: in smart mode every
        client holding or waiting for a slot or still authenticating (as
        PostgreSQL lets a login in progress finish; C{authentication_timeout}
        bounds it), otherwise the sessions that were told to go.
        """
        if self.mode == "smart":
            limiter = self.core.limiter
            return limiter.active + limiter.waiting + limiter.unauthenticated
        return len(self.core.sessions)

    def _stop_listening(self) -> None:
        for listener in self.listeners:
            d = defer.maybeDeferred(listener.stopService)
            d.addErrback(lambda f: log.failure("could not stop listening", f))

    def _check(self) -> None:
        try:
            left = self.remaining()
            if left and not (
                self._deadline is not None and self.reactor.seconds() >= self._deadline
            ):
                return
            self._finish()
        except Exception:
            log.failure("shutdown check failed")
            self._finish()

    def _finish(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._save_status is not None:
            try:
                self._save_status()
            except Exception:
                log.failure("could not write pgpool_status")
        log.info("shutting down")
        self._stop()


#: Pgpool-II's signals: what C{pgpool -m MODE stop} sends, and what a
#: service manager's stop sends (SIGTERM).
SIGNAL_MODES = {"SIGTERM": "smart", "SIGINT": "fast", "SIGQUIT": "immediate"}


class ShutdownOnSignals(Service):
    """
    Stops the proxy on Pgpool-II's signals: SIGTERM a smart shutdown
    (sessions finish first; what C{systemctl stop} sends), SIGINT a fast
    one, SIGQUIT an immediate one.  A second, harder signal takes over.

    Twisted installs its own SIGTERM and SIGINT handlers (stop the reactor
    at once) when the reactor starts, after the services: these are
    installed once it runs, and the previous ones put back on stop.

    @ivar shutdown: carries the shutdown out (L{ProxyShutdown.shutdown}).
    """

    def __init__(self, reactor: Any, shutdown: Callable[[str], None]) -> None:
        self.reactor = reactor
        self.shutdown = shutdown
        self._previous: dict = {}

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        for name, mode in SIGNAL_MODES.items():
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            try:
                self._previous[signum] = signal.signal(signum, self._handler(mode))
            except ValueError:
                # Not the main thread (an application running the proxy in
                # a thread keeps its own handling).
                return

    def _handler(self, mode: str) -> Callable[[int, Any], None]:
        def received(signum: int, frame: Any) -> None:
            # Signal handlers run between bytecodes: hand over to the reactor.
            self.reactor.callFromThread(self.shutdown, mode)

        return received

    def stopService(self) -> None:
        super().stopService()
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)
