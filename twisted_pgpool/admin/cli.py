"""
The administration sub-commands of C{twisted-pgpool}:

  - C{nodes [-n N]}: the nodes, like C{SHOW POOL_NODES};
  - C{attach N}, C{detach N [-g|--gracefully]},
    C{promote N [-s|--switchover] [-g]}, C{recover N}: node operations;
  - C{health N}: a node's health check statistics;
  - C{invalidate-query-cache}: empty the query cache;
  - C{reload}: reload the configuration (C{pcp_reload_config});
  - C{stop [-m smart|fast|immediate]}: stop the proxy (C{pcp_stop_pgpool});
  - C{log-rotate}: rotate the proxy's log file (C{pcp_log_rotate});
  - C{pcp-passwd USER}: add or replace a C{pcp.conf} line.

All but the last talk PCP (L{twisted_pgpool.admin.pcp_client}) to a running proxy,
or to Pgpool-II itself, with the options of Pgpool-II's C{pcp_*} tools:
C{-h host|/socket/dir}, C{-p port} (9898), C{-U user} (the OS user),
C{-w} (never prompt), C{-W} (always prompt).  The password comes from
C{$PCPPASSFILE} or C{~/.pcppass} (C{host:port:user:password} lines, C{*}
matching anything, ignored unless mode 0600 or stricter), else from a
prompt.

L{run_admin_command} is the entry point C{twisted_pgpool.cli} calls.
"""

from __future__ import annotations

import argparse
import getpass as getpass_module
import hashlib
import os
import stat
import sys
from typing import IO, Any, Callable, List, Mapping, Optional, Sequence

from twisted.internet import defer
from twisted.internet.error import ConnectError, ConnectionRefusedError
from twisted.python.failure import Failure

from twisted_pgpool.admin.operations import HEALTH_CHECK_COLUMNS, NODE_COLUMNS, NodeInfo
from twisted_pgpool.admin.pcp_client import (
    PcpConnectionLost,
    PcpError,
    PcpProtocolError,
    connect,
)
from twisted_pgpool.auth.passwd import replace_user_line, write_atomically

__all__ = [
    "ADMIN_COMMANDS",
    "find_pcppass_password",
    "format_table",
    "run_admin_command",
    "run_admin_command_async",
    "write_pcp_conf_entry",
]

#: The sub-commands handled here (C{twisted_pgpool.cli} dispatches them).
ADMIN_COMMANDS = (
    "nodes",
    "attach",
    "detach",
    "promote",
    "recover",
    "health",
    "invalidate-query-cache",
    "reload",
    "stop",
    "log-rotate",
    "pcp-passwd",
)
#: The PCP sub-commands that take a node id (optional for C{nodes}).
_NODE_COMMANDS = ("nodes", "attach", "detach", "promote", "recover", "health")

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 9898


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """
    argparse writing to the given streams and raising instead of exiting.
    """

    def __init__(self, stdout: IO[str], stderr: IO[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stdout = stdout
        self._stderr = stderr

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            (self._stderr if file is sys.stderr else self._stdout).write(message)

    def exit(self, status: int = 0, message: Optional[str] = None) -> Any:
        if message:
            self._stderr.write(message)
        raise _UsageError(status)


def _node_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid node id {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid node id {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}")
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}")
    return value


_DESCRIPTIONS = {
    "nodes": "Show the backend nodes, like SHOW POOL_NODES (pcp_node_info -a).",
    "attach": "Put a node back in service (pcp_attach_node).",
    "detach": "Take a node out of service (pcp_detach_node).",
    "promote": "Make a standby the primary (pcp_promote_node).",
    "recover": "Online recovery of a detached node (pcp_recovery_node): the "
    "recovery scripts rebuild it from the primary, then it is "
    "attached.  Waits until it is done.",
    "health": "Show a node's health check statistics (pcp_health_check_stats).",
    "invalidate-query-cache": "Empty the in-memory query cache (pcp_invalidate_query_cache).",
    "reload": "Reload the configuration file and the files it names; "
    "settings that need a restart keep their value "
    "(pcp_reload_config).",
    "stop": "Stop the proxy (pcp_stop_pgpool): smart waits for the clients "
    "to disconnect, fast and immediate disconnect them.",
    "log-rotate": "Rotate the proxy's log file, as SIGUSR1 does under "
    "twistd --logfile (pcp_log_rotate).",
}

#: C{stop -m}: Pgpool-II's names and letters for the shutdown modes.
_STOP_MODES = {
    "s": "smart",
    "smart": "smart",
    "f": "fast",
    "fast": "fast",
    "i": "immediate",
    "immediate": "immediate",
}


def _stop_mode(text: str) -> str:
    try:
        return _STOP_MODES[text]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"invalid shutdown mode {text!r} (smart, fast or immediate)"
        )


def _scope(text: str) -> str:
    if text in ("l", "local"):
        return "local"
    if text in ("c", "cluster"):
        return "cluster"
    raise argparse.ArgumentTypeError(f"invalid scope {text!r} (local or cluster)")


def _build_parser(command: str, stdout: IO[str], stderr: IO[str]) -> _Parser:
    parser = _Parser(
        stdout,
        stderr,
        prog=f"twisted-pgpool {command}",
        description=_DESCRIPTIONS[command],
        add_help=False,
    )
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument(
        "-h",
        "--host",
        default=DEFAULT_HOST,
        help="host name or address, or the directory of the Unix socket (default: localhost)",
    )
    parser.add_argument(
        "-p", "--port", type=_port, default=DEFAULT_PORT, help="PCP port (default: 9898)"
    )
    parser.add_argument(
        "-U", "--username", default=None, help="PCP user (default: the operating system user)"
    )
    passwords = parser.add_mutually_exclusive_group()
    passwords.add_argument(
        "-w", "--no-password", action="store_true", help="never prompt for a password"
    )
    passwords.add_argument(
        "-W", "--password", action="store_true", help="always prompt for a password"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the connection (default: 10)",
    )
    if command in _NODE_COMMANDS:
        parser.add_argument(
            "-n",
            "--node-id",
            type=_node_id,
            default=None,
            dest="node_option",
            metavar="N",
            help="the node id",
        )
        parser.add_argument(
            "node_id",
            type=_node_id,
            nargs="?",
            default=None,
            metavar="N",
            help="the node id (instead of -n)",
        )
    if command in ("detach", "promote"):
        parser.add_argument(
            "-g",
            "--gracefully",
            action="store_true",
            help="wait for the clients to disconnect first",
        )
    if command == "stop":
        parser.add_argument(
            "-m",
            "--mode",
            type=_stop_mode,
            default="smart",
            help="smart (the default), fast or immediate",
        )
    if command in ("stop", "log-rotate"):
        parser.add_argument(
            "-s",
            "--scope",
            type=_scope,
            default="local",
            help="local (the default) or cluster: the same without a watchdog",
        )
    if command == "promote":
        parser.add_argument(
            "-s",
            "--switchover",
            action="store_true",
            help="detach the current primary and have failover_command promote this node",
        )
    return parser


def _parse(
    command: str, argv: Sequence[str], stdout: IO[str], stderr: IO[str]
) -> argparse.Namespace:
    parser = _build_parser(command, stdout, stderr)
    options = parser.parse_args(list(argv))
    if command not in _NODE_COMMANDS:
        options.node_id = None
        return options
    if (
        options.node_option is not None
        and options.node_id is not None
        and options.node_option != options.node_id
    ):
        parser.error("give the node id once")
    if options.node_id is None:
        options.node_id = options.node_option
    if options.node_id is None and command != "nodes":
        parser.error("missing node id")
    return options


# -- passwords ------------------------------------------------------------------


def _pcppass_fields(line: str) -> List[str]:
    """
    Split a C{host:port:user:password} line; C{\\} escapes the next
    character (a C{:} or C{\\} inside a field).
    """
    fields: List[str] = []
    current: List[str] = []
    escaped = False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":" and len(fields) < 3:
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def pcppass_file(environ: Mapping[str, str]) -> Optional[str]:
    """
    C{$PCPPASSFILE}, else C{~/.pcppass}.
    """
    if environ.get("PCPPASSFILE"):
        return environ["PCPPASSFILE"]
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".pcppass") if home else None


def find_pcppass_password(
    host: str,
    port: int,
    user: str,
    environ: Mapping[str, str],
    warn: Callable[[str], None] = lambda text: None,
) -> Optional[str]:
    """
    The password of the first matching C{host:port:user:password} line of
    the pcppass file, as Pgpool-II's tools read it: C{*} matches any value,
    a file readable by group or others is ignored (with a warning).
    """
    path = pcppass_file(environ)
    if path is None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        warn(f"password file {path} is not a plain file")
        return None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn(
            f"password file {path} has group or world access; permissions "
            "should be u=rw (0600) or less"
        )
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    wanted = (host, str(port), user)
    for line in lines:
        if not line or line.startswith("#"):
            continue
        fields = _pcppass_fields(line)
        if len(fields) != 4:
            continue
        if all(f == "*" or f == w for f, w in zip(fields[:3], wanted)):
            return fields[3]
    return None


# -- output -----------------------------------------------------------------------


def format_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """
    A psql-style aligned table with a row count.
    """
    widths = [len(c) for c in columns]
    for row in rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row)]
    lines = [
        " | ".join(c.center(w) for c, w in zip(columns, widths)).rstrip(),
        "-+-".join("-" * w for w in widths),
    ]
    for row in rows:
        lines.append(" | ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    count = len(rows)
    lines.append(f"({count} row{'' if count == 1 else 's'})")
    return "\n".join(lines) + "\n"


def format_nodes(nodes: Sequence[NodeInfo]) -> str:
    return format_table(NODE_COLUMNS, [n.columns() for n in nodes])


def format_health(stats: Mapping[str, str]) -> str:
    width = max(len(c) for c in HEALTH_CHECK_COLUMNS)
    return "".join(f"{c.ljust(width)} : {stats.get(c, '')}\n" for c in HEALTH_CHECK_COLUMNS)


# -- running -------------------------------------------------------------------------


async def _run_pcp(
    command: str, options: argparse.Namespace, reactor, password: str, stdout: IO[str]
) -> None:
    proto = await connect(
        reactor, options.host, options.port, options.username, password, options.timeout
    )
    try:
        node_id = options.node_id
        if command == "nodes":
            nodes = await proto.node_info(-1 if node_id is None else node_id)
            stdout.write(format_nodes(nodes))
        elif command == "health":
            stdout.write(format_health(await proto.health_check_stats(node_id)))
        elif command == "attach":
            await proto.attach(node_id)
            stdout.write(f"node {node_id} attached\n")
        elif command == "recover":
            await proto.recover(node_id)
            stdout.write(f"node {node_id} recovered and attached\n")
        elif command == "detach":
            await proto.detach(node_id, options.gracefully)
            stdout.write(f"node {node_id} detached\n")
        elif command == "promote":
            await proto.promote(node_id, options.switchover, options.gracefully)
            how = " (switchover)" if options.switchover else ""
            stdout.write(f"node {node_id} promoted{how}\n")
        elif command == "invalidate-query-cache":
            await proto.invalidate_query_cache()
            stdout.write("query cache invalidated\n")
        elif command == "reload":
            await proto.reload_config()
            stdout.write("configuration reloaded\n")
        elif command == "stop":
            await proto.stop_pgpool(options.mode, options.scope == "cluster")
            stdout.write(f"{options.mode} shutdown requested\n")
        elif command == "log-rotate":
            await proto.log_rotate(options.scope == "cluster")
            stdout.write("log rotation requested\n")
    finally:
        proto.quit()


def run_admin_command_async(
    argv: Sequence[str],
    reactor,
    stdout: Optional[IO[str]] = None,
    stderr: Optional[IO[str]] = None,
    getpass: Callable[[str], str] = getpass_module.getpass,
    environ: Optional[Mapping[str, str]] = None,
    stdin: Optional[IO[str]] = None,
) -> "defer.Deferred[int]":
    """
    Run one sub-command (C{argv[0]} is its name) in a running reactor.

    @return: a Deferred firing with the exit code: 0 done, 1 refused or
        unreachable, 2 bad usage.
    """
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    environ = os.environ if environ is None else environ
    if not argv or argv[0] not in ADMIN_COMMANDS:
        stderr.write("twisted-pgpool: expected one of " + ", ".join(ADMIN_COMMANDS) + "\n")
        return defer.succeed(2)
    command, rest = argv[0], list(argv[1:])
    if command == "pcp-passwd":
        return defer.succeed(
            run_pcp_passwd_command(rest, stdin=stdin, stdout=stdout, stderr=stderr, getpass=getpass)
        )
    try:
        options = _parse(command, rest, stdout, stderr)
    except _UsageError as e:
        return defer.succeed(int(e.args[0]) if e.args else 2)
    if options.username is None:
        options.username = _os_user(environ)
    prog = f"twisted-pgpool {command}"

    def warn(text: str) -> None:
        stderr.write(f"{prog}: warning: {text}\n")

    password: Optional[str] = None
    if not options.password:
        password = find_pcppass_password(
            options.host, options.port, options.username, environ, warn
        )
    if password is None:
        if options.no_password:
            password = ""
        else:
            try:
                password = getpass("Password: ")
            except (EOFError, KeyboardInterrupt):
                stderr.write(f"{prog}: no password given\n")
                return defer.succeed(1)

    def failed(failure: Failure) -> int:
        if failure.check(PcpError):
            stderr.write(f"{prog}: {failure.value.describe()}\n")
        elif failure.check(ConnectionRefusedError, ConnectError):
            where = (
                options.host if options.host.startswith("/") else f"{options.host}:{options.port}"
            )
            stderr.write(
                f"{prog}: could not connect to the PCP server at "
                f"{where}: {failure.getErrorMessage()}\n"
            )
        elif failure.check(PcpConnectionLost, PcpProtocolError):
            stderr.write(f"{prog}: {failure.getErrorMessage()}\n")
        else:
            stderr.write(f"{prog}: {failure.getErrorMessage()}\n")
        return 1

    async def run() -> int:
        try:
            await _run_pcp(command, options, reactor, password, stdout)
        except Exception:
            return failed(Failure())
        return 0

    return defer.Deferred.fromCoroutine(run())


def _os_user(environ: Mapping[str, str]) -> str:
    try:
        return getpass_module.getuser()
    except Exception:
        return environ.get("USER", "")


def run_admin_command(argv: Sequence[str]) -> int:
    """
    Run one sub-command (C{argv[0]} is its name: C{nodes}, C{attach},
    C{detach}, C{promote}, C{health}, C{invalidate-query-cache},
    C{reload}, C{stop}, C{log-rotate}, C{pcp-passwd}) with the global
    reactor, and return the exit code.  Runs the reactor, so call it once
    per process, from a command-line entry point.
    """
    argv = list(argv)
    if argv and argv[0] == "pcp-passwd":
        return run_pcp_passwd_command(argv[1:])
    from twisted.internet.task import react

    codes: List[int] = []

    async def main(reactor) -> None:
        codes.append(await run_admin_command_async(argv, reactor))

    try:
        react(main)
    except SystemExit:
        pass
    return codes[0] if codes else 1


# -- pcp.conf -----------------------------------------------------------------------


class PcpConfError(Exception):
    pass


def write_pcp_conf_entry(path: str, user: str, password: str) -> bool:
    """
    Add or replace C{user}'s line (C{user:md5hex(password)}) in a pcp.conf
    file; other lines are kept.  The file is replaced atomically and
    created with mode 0600.

    @return: True if the user had a line already.
    @raise PcpConfError: a bad user name or password, or an I/O error.
    """
    if not user or any(c in user for c in ":\r\n"):
        raise PcpConfError(
            f"invalid user name {user!r}: it must be non-empty and contain no ':' or line break"
        )
    if not password or any(c in password for c in "\r\n"):
        raise PcpConfError("the password must be non-empty and on one line")
    new_line = f"{user}:{hashlib.md5(password.encode('utf-8')).hexdigest()}\n"
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines(keepends=True)
    except FileNotFoundError:
        lines = []
    except (OSError, UnicodeDecodeError) as e:
        raise PcpConfError(f"{path}: cannot read: {e}") from None
    # pcp.conf and pool_passwd share their layout (user:secret lines,
    # comments kept) and their need for an atomic, owner-only write.
    result, replaced = replace_user_line(lines, user, new_line)
    try:
        write_atomically(path, "".join(result))
    except OSError as e:
        raise PcpConfError(f"{path}: cannot write: {e.strerror or e}") from None
    return replaced


def run_pcp_passwd_command(
    argv: Sequence[str],
    stdin: Optional[IO[str]] = None,
    stdout: Optional[IO[str]] = None,
    stderr: Optional[IO[str]] = None,
    getpass: Callable[[str], str] = getpass_module.getpass,
) -> int:
    """
    C{twisted-pgpool pcp-passwd USER [-f FILE | -c CONFIG]
    [--password-stdin]}: add or replace C{USER}'s line in pcp.conf (the
    C{pcp_conf_file} of CONFIG, else C{./pcp.conf}).

    @return: 0 done, 1 failed, 2 bad usage.
    """
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    parser = _Parser(
        stdout,
        stderr,
        prog="twisted-pgpool pcp-passwd",
        description="Add or replace an administrator in pcp.conf "
        "(user:md5(password), what Pgpool-II's pg_md5 prints).",
    )
    parser.add_argument("user", help="the PCP user name")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-f", "--file", help="the pcp.conf file (default: ./pcp.conf)")
    where.add_argument(
        "-c", "--config", help="take the file from this configuration's pcp_conf_file"
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input instead of prompting",
    )
    try:
        options = parser.parse_args(list(argv))
    except _UsageError as e:
        return int(e.args[0]) if e.args else 2
    prog = parser.prog
    path = options.file or "pcp.conf"
    if options.config:
        from twisted_pgpool.config import ConfigError, load_config

        try:
            path = load_config(options.config).pcp_conf_file
        except ConfigError as e:
            stderr.write(f"{prog}: {e}\n")
            return 1
        if not path:
            stderr.write(f"{prog}: {options.config} sets no pcp_conf_file\n")
            return 1
    try:
        if options.password_stdin:
            password = stdin.readline().rstrip("\r\n")
        else:
            password = getpass("Password: ")
            if getpass("Password (again): ") != password:
                raise PcpConfError("the passwords do not match")
        replaced = write_pcp_conf_entry(path, options.user, password)
    except (EOFError, KeyboardInterrupt):
        stderr.write(f"{prog}: no password given\n")
        return 1
    except PcpConfError as e:
        stderr.write(f"{prog}: {e}\n")
        return 1
    action = "replaced" if replaced else "added"
    stdout.write(f'{action} user "{options.user}" in {path}\n')
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_admin_command(sys.argv[1:]))
