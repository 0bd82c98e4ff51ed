"""
The commands of a failover (C{failover_command}, C{failback_command},
C{follow_primary_command}): Pgpool-II's C{%} escapes, filled in and quoted
for the shell, and running a command line in a child process.

  - pure functions: the escapes (L{expand_command}, with every substituted
    value quoted for the shell) and the facts they are filled from
    (L{command_facts}, L{main_node_id});
  - L{CommandRunner}: runs one command line as C{/bin/sh -c} in a child
    process (C{reactor.spawnProcess}), logs its output line by line, and
    kills it (its whole process group) after C{failover_command_timeout}.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
from typing import Any, Dict, List, Mapping, Optional, Sequence

import attr
from twisted.internet import defer, error
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_pgpool import logs
from twisted_pgpool.cluster.model import Node

__all__ = [
    "CommandFacts",
    "CommandResult",
    "CommandRunner",
    "command_facts",
    "expand_command",
    "main_node_id",
]

log = Logger(observer=logs.observer)


#: After killing a command that ran too long, how long to wait for it to
#: be reaped before giving up on it.
KILL_GRACE = 5.0

#: At most this many characters of one command's output line are logged.
MAX_LOGGED_LINE = 4096


# -- command escapes (pure) ----------------------------------------------------


@attr.s(auto_attribs=True, frozen=True)
class CommandFacts:
    """
    The values of Pgpool-II's C{%} escapes for one command run.

    @ivar node_id: C{%d}: the node failed, attached or to follow.
    @ivar host: C{%h}: its host.
    @ivar port: C{%p}: its port.
    @ivar data_directory: C{%D}: its data directory.
    @ivar new_main_id: C{%m}: the new main node (the lowest live node id;
        the new primary for C{follow_primary_command}), -1 if none.
    @ivar new_main_host: C{%H}, empty if none.
    @ivar new_main_port: C{%r}, L{None} (empty) if none.
    @ivar new_main_data_directory: C{%R}, empty if none.
    @ivar old_main_id: C{%M}: the main node before the event, -1 if none.
    @ivar old_primary_id: C{%P}: the primary before the event, -1 if none.
    @ivar old_primary_host: C{%N}, empty if none.
    @ivar old_primary_port: C{%S}, L{None} (empty) if none.
    """

    node_id: int
    host: str
    port: int
    data_directory: str
    new_main_id: int = -1
    new_main_host: str = ""
    new_main_port: Optional[int] = None
    new_main_data_directory: str = ""
    old_main_id: int = -1
    old_primary_id: int = -1
    old_primary_host: str = ""
    old_primary_port: Optional[int] = None

    def escapes(self) -> Dict[str, str]:
        """
        Escape letter to its value, as text.
        """

        def port(value: Optional[int]) -> str:
            return "" if value is None else str(value)

        return {
            "d": str(self.node_id),
            "h": self.host,
            "p": str(self.port),
            "D": self.data_directory,
            "m": str(self.new_main_id),
            "H": self.new_main_host,
            "M": str(self.old_main_id),
            "P": str(self.old_primary_id),
            "r": port(self.new_main_port),
            "R": self.new_main_data_directory,
            "N": self.old_primary_host,
            "S": port(self.old_primary_port),
        }


_UNQUOTED, _SINGLE, _DOUBLE = range(3)


def _quote(value: str, state: int) -> str:
    """
    C{value} written so that the shell reads it back unchanged, as one
    word, wherever it lands: bare, inside C{'...'} or inside C{"..."}.
    """
    if state == _SINGLE:
        return value.replace("'", "'\\''")
    if state == _DOUBLE:
        for special in ("\\", '"', "$", "`"):
            value = value.replace(special, "\\" + special)
        return value
    return shlex.quote(value)


def expand_command(template: str, facts: CommandFacts) -> str:
    """
    Fill in Pgpool-II's escapes (C{%d %h %p %D %m %H %M %P %r %R %N %S},
    and C{%%} for a C{%}) in a command line.

    Unlike Pgpool-II, each value is quoted for C{/bin/sh}: a bare C{%H}
    becomes one argument even when it is empty (C{''}) or holds a space or
    a C{;}, so the positions of a script's arguments never shift; a value
    inside the template's own quotes is escaped for that kind of quote.
    An unknown escape is left as written.

    @param template: e.g. C{/etc/pgpool/failover.sh %d %h %p %D %m %H %M
        %P %r %R %N %S}.
    @return: the command line for C{/bin/sh -c}.
    """
    values = facts.escapes()
    out: List[str] = []
    state = _UNQUOTED
    i, n = 0, len(template)
    while i < n:
        c = template[i]
        if c == "%" and i + 1 < n:
            letter = template[i + 1]
            if letter == "%":
                out.append("%")
            elif letter in values:
                out.append(_quote(values[letter], state))
            else:
                out.append(template[i : i + 2])
            i += 2
            continue
        out.append(c)
        if state == _UNQUOTED:
            if c == "'":
                state = _SINGLE
            elif c == '"':
                state = _DOUBLE
            elif c == "\\" and i + 1 < n:
                out.append(template[i + 1])
                i += 1
        elif state == _SINGLE:
            if c == "'":
                state = _UNQUOTED
        else:
            if c == '"':
                state = _UNQUOTED
            elif c == "\\" and i + 1 < n:
                out.append(template[i + 1])
                i += 1
        i += 1
    return "".join(out)


def main_node_id(nodes: Sequence[Node]) -> int:
    """
    Pgpool-II's "main node": the live (up or waiting) node with the lowest
    id, or -1 when every node is down.
    """
    for node in nodes:
        if node.is_usable:
            return node.node_id
    return -1


def command_facts(
    nodes: Sequence[Node], node: Node, *, new_main_id: int, old_main_id: int, old_primary_id: int
) -> CommandFacts:
    """
    The escape values for a command about C{node}.

    @param nodes: all nodes, by id.
    @param new_main_id: the main node after the event (for
        C{follow_primary_command}: the new primary), -1 if none.
    @param old_main_id: the main node before the event.
    @param old_primary_id: the primary before the event, -1 if none.
    """
    new_main = nodes[new_main_id] if 0 <= new_main_id < len(nodes) else None
    old_primary = nodes[old_primary_id] if 0 <= old_primary_id < len(nodes) else None
    return CommandFacts(
        node_id=node.node_id,
        host=node.hostname,
        port=node.port,
        data_directory=node.config.data_directory,
        new_main_id=new_main.node_id if new_main else -1,
        new_main_host=new_main.hostname if new_main else "",
        new_main_port=new_main.port if new_main else None,
        new_main_data_directory=new_main.config.data_directory if new_main else "",
        old_main_id=old_main_id,
        old_primary_id=old_primary.node_id if old_primary else -1,
        old_primary_host=old_primary.hostname if old_primary else "",
        old_primary_port=old_primary.port if old_primary else None,
    )


# -- running commands --------------------------------------------------------------


@attr.s(auto_attribs=True, frozen=True)
class CommandResult:
    """
    How one command run ended.

    @ivar exit_code: its exit status, or L{None} when it was killed by a
        signal or could not be started.
    @ivar signal: the signal that ended it, if one did.
    @ivar timed_out: it ran longer than allowed and was killed.
    @ivar output: what it printed (stdout and stderr interleaved), as text.
    """

    what: str
    command: str
    exit_code: Optional[int]
    signal: Optional[int] = None
    timed_out: bool = False
    output: str = ""

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0


class _CommandProtocol(ProcessProtocol):
    """
    Collects a command's output, logging it line by line as it comes, and
    fires C{done} once the command is over.
    """

    def __init__(self, what: str, done: "defer.Deferred[None]") -> None:
        self.what = what
        self.done = done
        self.killed = False
        self.exit_code: Optional[int] = None
        self.signal: Optional[int] = None
        self.output: List[str] = []
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buffered = self._partial.get(childFD, b"") + data
        *lines, rest = buffered.split(b"\n")
        self._partial[childFD] = rest
        for line in lines:
            self._line(line)

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        self.output.append(text)
        log.info("{what}: {line}", what=self.what, line=text[:MAX_LOGGED_LINE])

    def _flush(self) -> None:
        for fd in (1, 2):
            rest, self._partial[fd] = self._partial[fd], b""
            if rest:
                self._line(rest)

    def processExited(self, reason: Failure) -> None:
        value = reason.value
        self.exit_code = getattr(value, "exitCode", None)
        self.signal = getattr(value, "signal", None)
        if self.killed:
            # Children of a killed command may still hold its output pipes
            # open; do not wait for them.
            if self.transport is not None:
                self.transport.loseConnection()
            self._finish()

    def processEnded(self, reason: Failure) -> None:
        if self.exit_code is None and self.signal is None:
            value = reason.value
            self.exit_code = getattr(value, "exitCode", None)
            self.signal = getattr(value, "signal", None)
        self._finish()

    def _finish(self) -> None:
        self._flush()
        if not self.done.called:
            self.done.callback(None)


class CommandRunner:
    """
    Runs Pgpool-II-style commands (C{failover_command} and friends) as
    C{/bin/sh -c <command>} child processes.

    A command gets C{timeout} seconds; then it is killed with SIGKILL,
    together with everything it started when the platform has C{setsid}
    (the command runs in its own session, and the whole process group is
    killed).  Nothing a command does (fail, hang, print megabytes) makes
    L{run} fail: it always fires with a L{CommandResult}.

    @ivar reactor: an C{IReactorProcess} and C{IReactorTime}.
    @ivar timeout: seconds a command may run.
    """

    def __init__(
        self,
        reactor,
        timeout: float,
        *,
        shell: str = "/bin/sh",
        setsid: Optional[str] = "auto",
        environ: Optional[Mapping[str, str]] = None,
    ) -> None:
        """
        @param setsid: the C{setsid} program to start the shell through
            (its own process group, so a timeout kills the command's
            children too); C{"auto"} looks it up on C{PATH}, L{None} runs
            the shell directly.
        @param environ: the commands' environment; this process's by
            default.
        """
        self.reactor = reactor
        self.timeout = timeout
        self.shell = shell
        self.setsid = shutil.which("setsid") if setsid == "auto" else setsid
        self.environ = environ

    def argv(self, command: str) -> List[str]:
        """
        The argument vector that runs C{command}.
        """
        argv = [self.shell, "-c", command]
        if self.setsid:
            argv.insert(0, self.setsid)
        return argv

    def run(self, what: str, command: str) -> "defer.Deferred[CommandResult]":
        """
        Run C{command}, logging C{execute command: ...} and its output.

        @param what: what it is, for the log (C{failover_command}...).
        @return: fires with the result once the command is over.
        """
        timers: List[Any] = []

        def cancel_timers() -> None:
            for call in timers:
                if call.active():
                    call.cancel()

        def stop_waiting(_: object) -> None:
            # The caller gave up (the service is stopping): the command is
            # left to finish on its own rather than killed halfway through
            # a promotion.
            cancel_timers()
            log.warn("{what} is still running and no longer waited for", what=what)

        done: defer.Deferred[None] = defer.Deferred(stop_waiting)
        protocol = _CommandProtocol(what, done)
        argv = self.argv(command)
        env = dict(os.environ if self.environ is None else self.environ)
        log.info("execute command: {command}", command=command)
        try:
            transport = self.reactor.spawnProcess(protocol, argv[0], argv, env=env, path=None)
        except Exception as e:
            log.error(
                "{what}: could not run {command!r}: {error}", what=what, command=command, error=e
            )
            return defer.succeed(CommandResult(what, command, None, output=str(e)))

        def give_up() -> None:
            log.error(
                "{what}: the killed command was not reaped within {grace:g} s; going on without it",
                what=what,
                grace=KILL_GRACE,
            )
            protocol._finish()

        def kill() -> None:
            self._kill(protocol, transport, what)
            timers.append(self.reactor.callLater(KILL_GRACE, give_up))

        timers.append(self.reactor.callLater(self.timeout, kill))

        def finished(_: object) -> CommandResult:
            cancel_timers()
            result = CommandResult(
                what,
                command,
                protocol.exit_code,
                protocol.signal,
                protocol.killed,
                "\n".join(protocol.output),
            )
            if result.timed_out:
                log.warn(
                    "{what} was killed after running for {timeout:g} s",
                    what=what,
                    timeout=self.timeout,
                )
            elif result.exit_code not in (0, None):
                log.warn("{what} exited with status {code}", what=what, code=result.exit_code)
            elif result.signal is not None:
                log.warn("{what} was ended by signal {signal}", what=what, signal=result.signal)
            return result

        return done.addCallback(finished)

    def _kill(self, protocol: _CommandProtocol, transport, what: str) -> None:
        protocol.killed = True
        log.warn(
            "{what} did not finish within {timeout:g} s: killing it",
            what=what,
            timeout=self.timeout,
        )
        pid = getattr(transport, "pid", None)
        if pid and self.setsid:
            try:
                if os.getpgid(pid) == pid and pid != os.getpgrp():
                    os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            transport.signalProcess("KILL")
        except (error.ProcessExitedAlready, OSError):
            pass
