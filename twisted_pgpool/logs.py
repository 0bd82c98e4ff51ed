"""
Logging policy: Pgpool-II's C{log_min_messages} and C{log_destination}
applied to twisted_pgpool's structured log events.

Every module logs through C{Logger(observer=logs.observer)}, which filters
by the configured threshold before events reach Twisted's global log
publisher (and so twistd's log file, or whatever an embedding application
observes).  Pgpool-II's levels are mapped onto Twisted's as follows:
C{debug} events are DEBUG1-5, C{info} events are LOG (the operational
messages such as C{log_connections}, which PostgreSQL ranks above ERROR for
the server log), C{warn} is WARNING, C{error} is ERROR and C{critical} is
FATAL/PANIC.
"""

from __future__ import annotations

import signal
from typing import Any, Callable, Dict, Optional, Tuple, cast

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    PredicateResult,
    globalLogPublisher,
)
from zope.interface import implementer

#: PostgreSQL's ordering for log_min_messages (server-log ranking).
_PG_RANK = {
    "debug5": 0,
    "debug4": 1,
    "debug3": 2,
    "debug2": 3,
    "debug1": 4,
    "info": 5,
    "notice": 6,
    "warning": 7,
    "error": 8,
    "log": 9,
    "fatal": 10,
    "panic": 11,
}

#: The PostgreSQL rank of each Twisted level as we use them.
_TWISTED_RANK = {
    LogLevel.debug: _PG_RANK["debug1"],
    LogLevel.info: _PG_RANK["log"],
    LogLevel.warn: _PG_RANK["warning"],
    LogLevel.error: _PG_RANK["error"],
    LogLevel.critical: _PG_RANK["fatal"],
}


@implementer(ILogFilterPredicate)
class MinimumLevelPredicate:
    """
    Lets an event through when its level ranks at or above the threshold in
    PostgreSQL's server-log order.
    """

    def __init__(self, log_min_messages: str = "warning") -> None:
        self.set_threshold(log_min_messages)

    def set_threshold(self, log_min_messages: str) -> None:
        self.threshold = _PG_RANK[log_min_messages]

    def __call__(self, event: Dict) -> PredicateResult:
        level = event.get("log_level", LogLevel.info)
        if _TWISTED_RANK.get(level, _PG_RANK["log"]) >= self.threshold:
            return PredicateResult.maybe
        return PredicateResult.no


predicate = MinimumLevelPredicate()


@implementer(ILogObserver)
class _GlobalPublisherProxy:
    """
    Forwards to whatever C{globalLogPublisher} is at the time of the event
    (tests and twistd may swap observers after import).
    """

    def __call__(self, event: Dict) -> None:
        globalLogPublisher(event)


#: The observer every twisted_pgpool Logger writes to.
observer = FilteringLogObserver(_GlobalPublisherProxy(), [predicate])


def printable(text: str) -> str:
    """
    A client's text made fit for the log: the bytes that were not valid in
    the client's encoding (lone surrogates, see
    L{twisted_pgpool.wire.messages.CLIENT_CODECS}) shown as C{\\xNN}.  A log
    file is UTF-8, and a line holding a surrogate cannot be written to it:
    it would be lost, with the observer's error in its place.
    """
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_syslog_observer: Optional[ILogObserver] = None
#: The (facility, ident) the syslog observer was made with.
_syslog_settings: Optional[Tuple[str, str]] = None


def configure(
    log_min_messages: str,
    log_destination: str,
    syslog_facility: str = "LOCAL0",
    syslog_ident: str = "pgpool",
) -> None:
    """
    Apply the logging settings of a configuration, at start or again on
    a reload (a changed facility or ident reopens the system log).

    @param log_destination: C{stderr}, C{syslog} or both, comma-separated.
        C{stderr} means "wherever Twisted logs go" (twistd's log file or
        standard error); C{syslog} adds the system log.
    """
    global _syslog_observer, _syslog_settings
    predicate.set_threshold(log_min_messages)
    destinations = {d.strip() for d in log_destination.split(",")}
    wanted = (syslog_facility.upper(), syslog_ident)
    if "syslog" not in destinations or wanted != _syslog_settings:
        unconfigure_syslog()
    if "syslog" in destinations and _syslog_observer is None:
        import syslog as _syslog

        from twisted.python.log import ILogObserver as ILegacyLogObserver
        from twisted.python.syslog import SyslogObserver

        facility = getattr(_syslog, "LOG_" + wanted[0])
        # A legacy observer is any callable taking the event dict (as
        # twisted.python.log.addObserver takes it); a bound method cannot
        # declare that it provides the interface.
        _syslog_observer = LegacyLogObserverWrapper(
            cast(ILegacyLogObserver, SyslogObserver(syslog_ident, facility=facility).emit)
        )
        _syslog_settings = wanted
        globalLogPublisher.addObserver(_syslog_observer)


def unconfigure_syslog() -> None:
    """
    Stop copying events to syslog.
    """
    global _syslog_observer, _syslog_settings
    if _syslog_observer is not None:
        globalLogPublisher.removeObserver(_syslog_observer)
        _syslog_observer = None
    _syslog_settings = None


def request_log_rotation(getsignal: Callable[[int], Any] = signal.getsignal) -> bool:
    """
    Do what SIGUSR1 does to this process, without a signal
    (C{pcp_log_rotate}).  Under twistd logging to a file (C{--logfile}),
    that is twistd's own handler: the log file is renamed to C{<name>.1}
    (older ones shifted to C{.2}, ...) and a new one is opened, in the
    reactor's next turn.

    @return: False when there is nothing to rotate: no SIGUSR1 handler
        (logging to stdout/stderr or syslog, or an embedding application
        that installed none).
    """
    handler = getsignal(signal.SIGUSR1)
    if not callable(handler):
        return False
    handler(signal.SIGUSR1, None)
    return True
