"""
What a manhole session runs: Twisted Conch's colouring Python interpreter
(L{twisted.conch.manhole.ColoredManhole}) with a greeting, and the parts of
Conch's SSH and telnet glue around it that needed finishing.

Kept apart from L{twisted_pgpool.admin.manhole} because importing these parts of
Conch imports (and so installs) the global reactor: the manhole's
transports import this module only when the manhole starts, so importing
the proxy, or loading a configuration, never picks the reactor.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Tuple

from twisted.conch.interfaces import IConchUser
from twisted.conch.manhole import ColoredManhole
from twisted.conch.manhole_ssh import TerminalSession, TerminalSessionTransport
from twisted.conch.telnet import AlreadyNegotiating, OptionRefused, TelnetTransport
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_pgpool import logs

__all__ = ["ProxyManhole", "ProxyTelnetTransport", "ProxyTerminalSession"]

log = Logger(observer=logs.observer)


class ProxyManhole(ColoredManhole):
    """
    Conch's manhole, greeting each session with one line so that an
    operator who logs in sees at once where they are and what to type.
    """

    banner = (
        "twisted_pgpool manhole (pid {pid}): core, service, reactor, cluster, "
        "pool, config. Type help for more; Ctrl-D leaves.\n"
    )

    def initializeScreen(self) -> None:
        # As RecvLine's, with the greeting between the reset and the prompt.
        self.terminal.reset()
        self.terminal.write(self.banner.format(pid=os.getpid()).encode("utf-8"))
        self.terminal.write(self.ps[self.pn])
        self.setInsertMode()


class ProxyTerminalSession(TerminalSession):
    """
    Conch's SSH terminal session, completed where it raises
    C{NotImplementedError}.  There, resizing the terminal window leaves the
    prompt drawing at the old width and puts a traceback in the proxy's
    log; and C{ssh} reaching the end of input piped into it drops the
    connection, losing output not yet sent.  Here a resize reaches the
    prompt, and end of input ends the session as it ends a shell.
    """

    _transport: Optional[TerminalSessionTransport] = None

    def openShell(self, proto: Any) -> None:
        # As TerminalSession's, keeping the transport for the two below.
        self._transport = self.transportFactory(
            proto, self.chainedProtocolFactory(), IConchUser(self.original), self.width, self.height
        )

    def windowChanged(self, newWindowSize: Tuple[int, ...]) -> None:
        rows, columns = newWindowSize[:2]
        if self._transport is not None:
            self._transport.chainedProtocol.terminalProtocol.terminalSize(columns, rows)

    def eofReceived(self) -> None:
        if self._transport is not None:
            self._transport.chainedProtocol.loseConnection()


class ProxyTelnetTransport(TelnetTransport):
    """
    Conch's telnet server, quiet about option negotiations that do not
    succeed.

    The manhole asks the client for line mode, window size, no go-ahead and
    server echo; clients refuse some (C{telnet} refuses line mode) or answer
    none (C{socat}), and every hang-up ends the ones still pending.  The
    prompt works either way, yet Conch logs each such ending as a critical
    error with a traceback; here they are debug messages.  Other failures
    still reach Conch's logging.
    """

    def do(self, option: bytes) -> Deferred:
        return super().do(option).addErrback(self._not_negotiated, "do", option)

    def will(self, option: bytes) -> Deferred:
        return super().will(option).addErrback(self._not_negotiated, "will", option)

    def _not_negotiated(self, failure: Failure, request: str, option: bytes) -> None:
        failure.trap(OptionRefused, AlreadyNegotiating, ConnectionDone, ConnectionLost)
        log.debug(
            "telnet manhole client did not agree to {request} {option!r}: {reason}",
            request=request,
            option=option,
            reason=failure.getErrorMessage(),
        )
