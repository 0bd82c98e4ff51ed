"""
A throw-away PostgreSQL primary and streaming standby on the loopback
interface, started and stopped by our own code.

The end-to-end tests, the C{twisted-pgpool demo} command and the benchmarks all
need the same thing: real servers with real replication, real authentication
methods (SCRAM, md5, trust) and C{pg_stat_statements}, that come and go with
the process using them and never touch a system cluster.  This module builds
that with the stock PostgreSQL binaries (C{initdb}, C{pg_ctl},
C{pg_basebackup}, C{psql}).

Everything here blocks: it runs before a reactor starts or after it stops, so
plain L{subprocess} calls with timeouts are the simplest correct tool.

PostgreSQL refuses to run as root.  When this process is root, every
PostgreSQL program runs as the C{postgres} OS user and the directories we
create are handed to that user.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import attr

from twisted_pgpool.testing.processes import tail

__all__ = [
    "LocalCluster",
    "LocalClusterError",
    "LocalNode",
    "find_pg_bindir",
]

#: The OS user PostgreSQL runs as when we are root.
POSTGRES_OS_USER = "postgres"

#: Default bound on any single PostgreSQL program we run.
COMMAND_TIMEOUT = 60.0

#: How many lines of a server log an error message quotes.
LOG_TAIL_LINES = 40

#: Roles every cluster gets, beside the application role; tests rely on them
#: to exercise each authentication method the proxy must speak.
MD5_USER = "md5user"
MD5_PASSWORD = "md5pass"
TRUST_USER = "trustuser"

#: The client authentication file, verbatim: replication and the superuser
#: are trusted so our tooling needs no password, and every other role gets
#: the method its name promises.
PG_HBA_CONF = """\
local all all trust
host replication all 127.0.0.1/32 trust
host all postgres 127.0.0.1/32 trust
host all md5user 127.0.0.1/32 md5
host all trustuser 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""

# Messages a postmaster logs when its port was taken between our choosing it
# and its binding it; we then choose again instead of failing.
_PORT_TAKEN = re.compile(
    r"could not bind|Address already in use|could not create any TCP/IP sockets"
)


class LocalClusterError(Exception):
    """
    A local PostgreSQL cluster could not be found, started, queried or
    stopped.  The message carries the failing program's stderr or the server
    log tail, because that is what tells a reader what went wrong.
    """


@attr.s(frozen=True, auto_attribs=True)
class LocalNode:
    """
    One PostgreSQL server of a L{LocalCluster}.

    @ivar name: C{"primary"} or C{"standby"}: the role the node started
        with (it stays the name after a promotion).  It is also the node's
        C{cluster_name}, hence the C{application_name} a standby shows in
        C{pg_stat_replication}.
    @ivar host: The loopback address the node listens on.
    @ivar port: Its TCP port.
    @ivar data_directory: Its data directory.
    @ivar log_file: The file its server log goes to.
    """

    name: str
    host: str
    port: int
    data_directory: str
    log_file: str


def find_pg_bindir(environ: Optional[Mapping[str, str]] = None) -> str:
    """
    Find the directory holding C{initdb}, C{pg_ctl} and friends.

    C{$PG_BINDIR} wins so a developer or CI can pin a version; then
    C{pg_config --bindir}; then the newest Debian-style
    C{/usr/lib/postgresql/<version>/bin}.  Distributions keep the server
    binaries off C{$PATH}, which is why searching C{$PATH} alone is not
    enough.

    @param environ: The environment to read C{PG_BINDIR} from (default
        L{os.environ}); a parameter so tests need not mutate the real one.
    @raise LocalClusterError: If no candidate holds an C{initdb}.
    """
    if environ is None:
        environ = os.environ
    explicit = environ.get("PG_BINDIR")
    if explicit:
        if _has_initdb(explicit):
            return explicit
        raise LocalClusterError(f"PG_BINDIR={explicit!r} does not contain an initdb executable")
    tried = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            result = subprocess.run(
                [pg_config, "--bindir"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                universal_newlines=True,
                timeout=10,
            )
        except (OSError, subprocess.SubprocessError):
            pass
        else:
            candidate = result.stdout.strip()
            if result.returncode == 0 and candidate:
                if _has_initdb(candidate):
                    return candidate
                tried.append(candidate)
    debian = _debian_bindirs()
    for candidate in debian:
        if _has_initdb(candidate):
            return candidate
    tried.extend(debian)
    raise LocalClusterError(
        "no PostgreSQL server binaries found (set PG_BINDIR, put pg_config on "
        "PATH, or run .ci/install-postgres.sh); looked in: " + (", ".join(tried) or "nothing")
    )


def _has_initdb(bindir: str) -> bool:
    return os.access(os.path.join(bindir, "initdb"), os.X_OK)


def _debian_bindirs() -> List[str]:
    """
    Return C{/usr/lib/postgresql/*/bin}, newest version first.
    """
    root = "/usr/lib/postgresql"
    try:
        names = os.listdir(root)
    except OSError:
        return []
    versions = []
    for name in names:
        try:
            key = tuple(int(part) for part in name.split("."))
        except ValueError:
            continue
        versions.append((key, name))
    versions.sort(reverse=True)
    return [os.path.join(root, name, "bin") for _, name in versions]


def _pick_free_ports(host: str, count: int) -> List[int]:
    """
    Ask the kernel for C{count} distinct free TCP ports on C{host}.

    All sockets stay bound until every port is known, so the ports differ
    from each other; another process may still take one before PostgreSQL
    binds it, which L{LocalCluster} handles by choosing again.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _conf_value(value: Any) -> str:
    """
    Render one C{postgresql.conf} value: numbers bare, strings quoted.
    """
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _conf_lines(settings: Mapping[str, Any]) -> str:
    return "".join(f"{name} = {_conf_value(value)}\n" for name, value in settings.items())


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _postmasters_for(data_directory: str) -> List[int]:
    """
    Find postmasters running on C{data_directory} by their command line
    (C{postgres -D <data_directory>}), for when no pid file names them yet.
    Linux only (C{/proc}); elsewhere nothing is found.
    """
    wanted = os.fsencode(data_directory)
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args and os.path.basename(args[0]) in (b"postgres", b"postmaster") and wanted in args:
            found.append(int(entry))
    return found


def _kill_group(pid: int) -> None:
    """
    SIGKILL the process group led by C{pid} (our child, started in a new
    session); a group already gone is fine.
    """
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove_tree(path: str) -> None:
    """
    Remove C{path}, retrying briefly: a process that just died may have
    been creating files in it while the first pass ran.
    """
    for _ in range(5):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            return
        time.sleep(0.1)


def _kill_quietly(pid: int, timeout: float = 10.0) -> bool:
    """
    SIGKILL C{pid} and wait for it to go; return whether it went.
    """
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    """
    Whether C{pid} is a live process.  A zombie counts as gone: a killed
    postmaster's parent is init, which in a container may never reap it.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@attr.s(frozen=True, auto_attribs=True)
class _RunAs:
    """
    The unprivileged identity PostgreSQL programs run as when we are root.
    """

    uid: int
    gid: int
    home: str

    @classmethod
    def for_current_process(cls: Type[_RunAs]) -> Optional[_RunAs]:
        """
        Return the C{postgres} identity when running as root, else L{None}
        (an ordinary user runs PostgreSQL as itself).
        """
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(POSTGRES_OS_USER)
        except KeyError:
            raise LocalClusterError(
                f"running as root but there is no {POSTGRES_OS_USER!r} OS user "
                "to run PostgreSQL as (run .ci/install-postgres.sh)"
            ) from None
        return cls(uid=entry.pw_uid, gid=entry.pw_gid, home=entry.pw_dir)

    def give(self, path: str) -> None:
        """
        Hand C{path} to the PostgreSQL user.
        """
        os.chown(path, self.uid, self.gid)


@attr.s(auto_attribs=True)
class LocalCluster:
    """
    A PostgreSQL primary and (optionally) a streaming hot standby under one
    base directory, listening on two free loopback ports.

    L{start} builds and starts everything; L{stop} shuts the servers down
    and removes the base directory if this object created it.  It is also a
    context manager doing both.

    The primary has the roles the proxy's tests need: C{app_user} (SCRAM),
    C{md5user}/C{md5pass} (md5) and C{trustuser} (trust), the database
    C{app_database} owned by C{app_user} with C{pg_stat_statements}, and
    the superuser C{postgres} (trusted over the socket and from
    127.0.0.1).  Durability is switched off (C{fsync}, C{full_page_writes}):
    these clusters are disposable, and speed matters.

    @ivar base_dir: Directory holding C{primary/}, C{standby/} and the
        socket directory C{sock/}.  L{None} means a fresh temporary
        directory, removed again by L{stop}; a directory given by the caller
        is kept.
    @ivar with_standby: Whether to build a streaming standby.
    @ivar independent_nodes: Build the second node as an independent
        primary instead of a standby (for native replication mode): a copy
        of the primary taken with C{pg_basebackup} once the roles and the
        database exist, started without C{standby.signal}, so both nodes
        hold the same data and accept writes, and nothing replicates
        between them.  Its name (and directory) is C{node1}; L{standby}
        returns it.
    @ivar host: The loopback address both nodes listen on; C{pg_hba.conf}
        only admits 127.0.0.1, so this is the only sensible value.
    @ivar app_user: Name of the SCRAM-authenticated application role.
    @ivar app_password: Its password.
    @ivar app_database: The database it owns.
    @ivar bindir: Directory of the PostgreSQL binaries; L{None} means
        L{find_pg_bindir}.
    @ivar startup_timeout: Seconds to wait for each server to start and for
        the standby to stream.
    @ivar ssl_files: C{(certificate file, key file)} to copy into the
        primary's data directory as C{server.crt}/C{server.key} with
        C{ssl = on} (a standby's base backup copies them); L{None} leaves
        TLS off.
    @ivar pg_hba_conf: The text of every node's C{pg_hba.conf}.
    """

    base_dir: Optional[str] = None
    with_standby: bool = True
    independent_nodes: bool = False
    host: str = "127.0.0.1"
    app_user: str = "app"
    app_password: str = attr.ib(default="app", repr=False)
    app_database: str = "app"
    bindir: Optional[str] = None
    startup_timeout: float = 30.0
    ssl_files: Optional[Tuple[str, str]] = None
    pg_hba_conf: str = PG_HBA_CONF

    _run_as: Optional[_RunAs] = attr.ib(init=False, default=None, repr=False)
    _created_base_dir: bool = attr.ib(init=False, default=False, repr=False)
    _socket_directory: Optional[str] = attr.ib(init=False, default=None, repr=False)
    _primary: Optional[LocalNode] = attr.ib(init=False, default=None, repr=False)
    _standby: Optional[LocalNode] = attr.ib(init=False, default=None, repr=False)
    _spare_port: Optional[int] = attr.ib(init=False, default=None, repr=False)
    _owner_pid: Optional[int] = attr.ib(init=False, default=None, repr=False)
    _stopping: bool = attr.ib(init=False, default=False, repr=False)
    # The PostgreSQL program running right now, if any, so that stop() called
    # from a signal handler can end it (a pg_ctl start left running would
    # launch a postmaster after stop() had looked).
    _child: Optional[subprocess.Popen[str]] = attr.ib(init=False, default=None, repr=False)

    # -- node information --------------------------------------------------

    @property
    def primary(self) -> LocalNode:
        """
        The node started as the primary.

        @raise LocalClusterError: Before L{start}.
        """
        if self._primary is None:
            raise LocalClusterError("the cluster has not been started")
        return self._primary

    @property
    def standby(self) -> LocalNode:
        """
        The node started as the streaming standby.

        @raise LocalClusterError: Before L{start}, or when the cluster was
            built without a standby.
        """
        if self._standby is None:
            if self._primary is not None and not self.with_standby:
                raise LocalClusterError("the cluster was built without a standby")
            raise LocalClusterError("the cluster has no standby (not started?)")
        return self._standby

    @property
    def nodes(self) -> List[LocalNode]:
        """
        The nodes built so far, primary first.
        """
        return [node for node in (self._primary, self._standby) if node is not None]

    @property
    def socket_directory(self) -> str:
        """
        The Unix socket directory shared by both nodes (C{<base_dir>/sock}).
        """
        if self._socket_directory is None:
            raise LocalClusterError("the cluster has not been started")
        return self._socket_directory

    def backends_config(self) -> List[Dict[str, Any]]:
        """
        Describe the nodes as backend entries of our YAML configuration,
        primary first, so a test can point a proxy at this cluster without
        knowing the ports.
        """
        return [
            {
                "hostname": node.host,
                "port": node.port,
                "weight": 1,
                "data_directory": node.data_directory,
                "application_name": node.name,
            }
            for node in self.nodes
        ]

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """
        Build and start the cluster, returning once the primary accepts
        connections and (if wanted) the standby is in recovery and streaming.

        On failure everything started so far is stopped again before the
        error propagates, so a failed start leaks no server.

        @raise LocalClusterError: With the failing program's stderr or the
            server log tail.
        """
        if self._owner_pid is not None:
            raise LocalClusterError("a LocalCluster can only be started once")
        self._owner_pid = os.getpid()
        if self.bindir is None:
            self.bindir = find_pg_bindir()
        self._run_as = _RunAs.for_current_process()
        try:
            self._prepare_base_dir()
            self._start_primary()
            self._create_roles_and_database()
            if self.with_standby or self.independent_nodes:
                self._start_standby()
                if not self.independent_nodes:
                    self.wait_for_standby(self.startup_timeout)
        except BaseException:
            # BaseException too: a KeyboardInterrupt halfway through must not
            # leave postmasters behind.
            try:
                self.stop()
            except Exception:
                pass
            raise

    def stop(self) -> None:
        """
        Shut down every running node (C{pg_ctl stop -m fast}, escalating if
        that fails) and remove the base directory if L{start} created it.

        Idempotent and tolerant of nodes that are already down, so it can be
        registered with L{atexit} and also be called from a signal handler or
        a test cleanup.  It does nothing in a forked child, which would
        otherwise tear down the parent's servers at its own exit, and nothing
        when re-entered (a second Ctrl-C during the first stop).

        @raise LocalClusterError: If some node could not be stopped at all;
            the others are still stopped and the directory still removed.
        """
        if self._owner_pid is None or self._owner_pid != os.getpid():
            return
        if self._stopping:
            return
        self._stopping = True
        try:
            self._kill_child()
            problems = []
            # Standby first: stopping the primary first would make the
            # standby log reconnection errors while it shuts down.
            for node in reversed(self.nodes):
                try:
                    self._shut_down(node)
                except Exception as e:
                    problems.append(f"{node.name}: {e}")
            if self._created_base_dir and self.base_dir is not None:
                _remove_tree(self.base_dir)
            if problems:
                raise LocalClusterError("could not stop every node: " + "; ".join(problems))
        finally:
            self._stopping = False

    # -- helpers for tests ---------------------------------------------------

    def psql(
        self,
        node: LocalNode,
        sql: str,
        user: str = "postgres",
        database: Optional[str] = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> str:
        """
        Run C{sql} on C{node} with C{psql -At -X -q} over the Unix socket
        (trusted for every role) and return its output, stripped.

        C{-q} drops command tags, so the output is just the rows, one per
        line, columns separated by C{|}.  Several statements in C{sql} run as
        one implicit transaction, as with C{psql -c}.

        @param database: Defaults to C{postgres}.
        @raise LocalClusterError: With psql's stderr if the statement fails.
        """
        result = self._run(
            [
                self._bin("psql"),
                "-At",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.socket_directory,
                "-p",
                str(node.port),
                "-U",
                user,
                "-d",
                database or "postgres",
                "-c",
                sql,
            ],
            timeout=timeout,
        )
        return result.stdout.strip()

    def has_extension(self, name: str) -> bool:
        """
        Whether the server binaries have the extension C{name} installed
        (its control file in C{pg_config --sharedir}/extension), e.g.
        C{pgpool_recovery} from Debian's C{postgresql-15-pgpool2}.
        """
        bindir = self.bindir or find_pg_bindir()
        result = subprocess.run(
            [os.path.join(bindir, "pg_config"), "--sharedir"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            return False
        return os.path.exists(os.path.join(result.stdout.strip(), "extension", f"{name}.control"))

    def install_pgpool_recovery(self) -> None:
        """
        C{CREATE EXTENSION pgpool_recovery} on the primary in C{template1}
        (as Pgpool-II's documentation asks, so new databases have it) and in
        C{postgres} (the default C{recovery_database}), for online
        recovery tests.

        @raise LocalClusterError: the extension is not installed (Debian:
            C{apt-get install postgresql-15-pgpool2}).
        """
        if not self.has_extension("pgpool_recovery"):
            raise LocalClusterError(
                "the pgpool_recovery extension is not installed "
                "(apt-get install postgresql-15-pgpool2, or .ci/install-postgres.sh)"
            )
        for database in ("template1", "postgres"):
            self.psql(
                self.primary, "CREATE EXTENSION IF NOT EXISTS pgpool_recovery", database=database
            )

    def give_to_postgres(self, path: str) -> None:
        """
        Hand a file the test wrote (a recovery script in a data directory)
        to the OS user PostgreSQL runs as; nothing to do when that is us.
        """
        if self._run_as is not None:
            self._run_as.give(path)

    def is_running(self, node: LocalNode) -> bool:
        """
        Whether C{node}'s postmaster is running (C{pg_ctl status}).
        """
        result = self._run(
            [self._bin("pg_ctl"), "status", "-D", node.data_directory],
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        return result.returncode == 0

    def stop_node(self, node: LocalNode, mode: str = "immediate") -> None:
        """
        Stop one node, as a crash (C{immediate}, the default) or cleanly
        (C{fast}, C{smart}).  A node that is already down is left alone.
        """
        if not os.path.exists(self._pid_file(node)):
            return
        self._pg_ctl_stop(node, mode)

    def start_node(self, node: LocalNode) -> None:
        """
        Start a node previously stopped with L{stop_node}, waiting until it
        accepts connections.
        """
        self._pg_ctl_start(node)

    def promote(self, node: LocalNode) -> None:
        """
        Promote a standby and wait until it accepts writes.
        """
        self._run(
            [
                self._bin("pg_ctl"),
                "promote",
                "-w",
                "-t",
                str(int(self.startup_timeout)),
                "-D",
                node.data_directory,
            ],
            timeout=self.startup_timeout + 10,
        )

    def pause_replay(self) -> None:
        """
        Stop the standby from applying WAL (it keeps receiving it), so a test
        can make it lag behind the primary on purpose.
        """
        self.psql(self.standby, "SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        """
        Undo L{pause_replay}.
        """
        self.psql(self.standby, "SELECT pg_wal_replay_resume()")

    def wait_for_standby(self, timeout: float = 30.0) -> None:
        """
        Wait until the standby is in recovery and the primary reports it as
        streaming in C{pg_stat_replication}.

        @raise LocalClusterError: After C{timeout} seconds, with both logs'
            tails.
        """
        primary, standby = self.primary, self.standby
        query = (
            "SELECT count(*) FROM pg_stat_replication "
            f"WHERE state = 'streaming' AND application_name = {_quote_literal(standby.name)}"
        )
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while True:
            try:
                in_recovery = self.psql(standby, "SELECT pg_is_in_recovery()", timeout=10)
                streaming = self.psql(primary, query, timeout=10)
                if in_recovery == "t" and streaming not in ("", "0"):
                    return
                last_error = f"pg_is_in_recovery()={in_recovery}, streaming senders={streaming}"
            except LocalClusterError as e:
                last_error = str(e)
            if time.monotonic() >= deadline:
                raise LocalClusterError(
                    f"the standby did not start streaming within {timeout:g}s "
                    f"({last_error})\n--- primary log ---\n{tail(primary.log_file, LOG_TAIL_LINES)}"
                    f"--- standby log ---\n{tail(standby.log_file, LOG_TAIL_LINES)}"
                )
            time.sleep(0.05)

    # -- building ----------------------------------------------------------

    def _prepare_base_dir(self) -> None:
        if self.base_dir is None:
            self.base_dir = tempfile.mkdtemp(prefix="twisted_pgpool-")
            self._created_base_dir = True
        else:
            self.base_dir = os.path.abspath(self.base_dir)
            os.makedirs(self.base_dir, exist_ok=True)
        self._socket_directory = os.path.join(self.base_dir, "sock")
        os.makedirs(self._socket_directory, mode=0o700, exist_ok=True)
        if self._run_as is not None:
            self._check_reachable(self.base_dir)
            self._run_as.give(self.base_dir)
            self._run_as.give(self._socket_directory)

    def _check_reachable(self, path: str) -> None:
        """
        Fail early, and clearly, when the PostgreSQL user cannot traverse a
        parent of C{path} (say, a caller's directory under C{/root}):
        C{initdb}'s own message for that is far from the cause.
        """
        assert self._run_as is not None
        parent = os.path.dirname(path)
        while True:
            st = os.stat(parent)
            if st.st_uid == self._run_as.uid:
                ok = bool(st.st_mode & 0o100)
            elif st.st_gid == self._run_as.gid:
                ok = bool(st.st_mode & 0o010)
            else:
                ok = bool(st.st_mode & 0o001)
            if not ok:
                raise LocalClusterError(
                    f"the {POSTGRES_OS_USER!r} OS user cannot reach {path!r}: "
                    f"{parent!r} is not searchable by it; choose another base_dir"
                )
            above = os.path.dirname(parent)
            if above == parent:
                return
            parent = above

    def _node(self, name: str, port: int) -> LocalNode:
        assert self.base_dir is not None
        data_directory = os.path.join(self.base_dir, name)
        return LocalNode(
            name=name,
            host=self.host,
            port=port,
            data_directory=data_directory,
            log_file=os.path.join(data_directory, "server.log"),
        )

    def _start_primary(self) -> None:
        primary_port, self._spare_port = _pick_free_ports(self.host, 2)
        node = self._node("primary", primary_port)
        self._run(
            [
                self._bin("initdb"),
                "-D",
                node.data_directory,
                "-U",
                "postgres",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            timeout=COMMAND_TIMEOUT * 2,
        )
        self._append(
            os.path.join(node.data_directory, "postgresql.conf"),
            "\n# twisted_pgpool.testing.localcluster\n"
            + _conf_lines(
                {
                    "listen_addresses": self.host,
                    "unix_socket_directories": self.socket_directory,
                    "max_connections": 300,
                    "fsync": False,
                    # On, as in production: a commit's WAL is written (not
                    # fsynced, with fsync off) before the client hears of
                    # it, so standbys receive it at once.  Off, WAL would
                    # reach them only at the WAL writer's next round, up
                    # to 200 ms later.
                    "synchronous_commit": True,
                    "full_page_writes": False,
                    "wal_level": "replica",
                    "max_wal_senders": 10,
                    # Lets a standby stopped by a failover test catch up again.
                    "wal_keep_size": "128MB",
                    # Lets pg_rewind turn an old primary into a standby.
                    "wal_log_hints": True,
                    "hot_standby": True,
                    "shared_preload_libraries": "pg_stat_statements",
                    "logging_collector": False,
                    "log_line_prefix": "%m [%p] %q%u@%d ",
                    "cluster_name": node.name,
                }
            ),
        )
        self._write(os.path.join(node.data_directory, "pg_hba.conf"), self.pg_hba_conf)
        if self.ssl_files is not None:
            self._install_ssl_files(node)
        self._primary = self._start_new_node(node, "postgresql.conf")

    def _install_ssl_files(self, node: LocalNode) -> None:
        assert self.ssl_files is not None
        for source, name in zip(self.ssl_files, ("server.crt", "server.key")):
            target = os.path.join(node.data_directory, name)
            shutil.copyfile(source, target)
            # The server refuses a key others can read.
            os.chmod(target, 0o600)
            if self._run_as is not None:
                self._run_as.give(target)
        self._append(
            os.path.join(node.data_directory, "postgresql.conf"), _conf_lines({"ssl": True})
        )

    def _create_roles_and_database(self) -> None:
        primary = self.primary
        self.psql(
            primary,
            "SET password_encryption = 'scram-sha-256'; "
            f"CREATE ROLE {_quote_ident(self.app_user)} LOGIN "
            f"PASSWORD {_quote_literal(self.app_password)}; "
            "SET password_encryption = 'md5'; "
            f"CREATE ROLE {_quote_ident(MD5_USER)} LOGIN "
            f"PASSWORD {_quote_literal(MD5_PASSWORD)}; "
            f"CREATE ROLE {_quote_ident(TRUST_USER)} LOGIN",
        )
        # CREATE DATABASE refuses to run inside the implicit transaction of
        # a multi-statement string.
        self.psql(
            primary,
            f"CREATE DATABASE {_quote_ident(self.app_database)} "
            f"OWNER {_quote_ident(self.app_user)}",
        )
        self.psql(
            primary,
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
            database=self.app_database,
        )

    def _start_standby(self) -> None:
        primary = self.primary
        port = self._spare_port or _pick_free_ports(self.host, 1)[0]
        independent = self.independent_nodes
        node = self._node("node1" if independent else "standby", port)
        self._run(
            [
                self._bin("pg_basebackup"),
                "-h",
                primary.host,
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-D",
                node.data_directory,
                # Without -R: no standby.signal, the copy starts as a primary.
                *(() if independent else ("-R",)),
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
            timeout=COMMAND_TIMEOUT * 2,
        )
        # The backup copied the primary's log; the standby starts its own.
        if os.path.exists(node.log_file):
            os.truncate(node.log_file, 0)
        # pg_basebackup -R put primary_conninfo here; the copied
        # postgresql.conf still says the primary's port and name.
        self._standby = self._start_new_node(node, "postgresql.auto.conf")

    def _start_new_node(self, node: LocalNode, conf_name: str) -> LocalNode:
        """
        Set C{node}'s port and name in C{conf_name} and start it; if another
        process grabbed the port in the meantime, choose another and retry.
        """
        conf = os.path.join(node.data_directory, conf_name)
        for attempt in range(3):
            self._append(conf, _conf_lines({"port": node.port, "cluster_name": node.name}))
            # Recorded before starting so that stop() also covers a start
            # interrupted halfway.
            if node.name == "primary":
                self._primary = node
            else:
                self._standby = node
            try:
                self._pg_ctl_start(node)
                return node
            except LocalClusterError:
                if attempt == 2 or not _PORT_TAKEN.search(tail(node.log_file, 10)):
                    raise
            node = attr.evolve(node, port=_pick_free_ports(self.host, 1)[0])
        raise AssertionError("unreachable")  # pragma: no cover

    # -- running programs --------------------------------------------------

    def _bin(self, program: str) -> str:
        assert self.bindir is not None
        return os.path.join(self.bindir, program)

    def _pid_file(self, node: LocalNode) -> str:
        return os.path.join(node.data_directory, "postmaster.pid")

    def _pg_ctl_start(self, node: LocalNode) -> None:
        try:
            self._run(
                [
                    self._bin("pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    str(int(self.startup_timeout)),
                    "-D",
                    node.data_directory,
                    "-l",
                    node.log_file,
                ],
                timeout=self.startup_timeout + 10,
            )
        except LocalClusterError as e:
            raise LocalClusterError(
                f"could not start the {node.name} on port {node.port}: {e}\n"
                f"--- {node.log_file} ---\n{tail(node.log_file, LOG_TAIL_LINES)}"
            ) from None

    def _pg_ctl_stop(self, node: LocalNode, mode: str, timeout: float = 30.0) -> None:
        self._run(
            [
                self._bin("pg_ctl"),
                "stop",
                "-w",
                "-t",
                str(int(timeout)),
                "-m",
                mode,
                "-D",
                node.data_directory,
            ],
            timeout=timeout + 10,
        )

    def _kill_child(self) -> None:
        """
        Kill the PostgreSQL program in flight, if any, with its process
        group (C{initdb}'s bootstrap backends would otherwise keep writing
        into the directory we are about to remove).

        Only C{os.killpg}: this may run in a signal handler that interrupted
        L{subprocess.Popen.communicate}, and waiting on the same process from
        here could deadlock on its internal lock.  The interrupted call reaps
        it.
        """
        child = self._child
        if child is None or child.returncode is not None:
            return
        _kill_group(child.pid)
        # A pg_ctl killed between its fork and the exec of postgres still
        # launches the postmaster; give that a moment to become visible.
        time.sleep(0.2)

    def _shut_down(self, node: LocalNode) -> None:
        """
        Stop C{node} however it takes: fast, then immediate, then SIGKILL of
        the postmaster named in its pid file.
        """
        pid_file = self._pid_file(node)
        if not os.path.exists(pid_file):
            # Normally: already down.  But a postmaster launched an instant
            # ago (stop() interrupting start()) may not have written its pid
            # file yet; wait for it rather than orphan the server.
            launched = _postmasters_for(node.data_directory)
            if not launched:
                return
            deadline = time.monotonic() + 5
            while not os.path.exists(pid_file) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not os.path.exists(pid_file):
                for pid in launched:
                    _kill_quietly(pid)
                return
        for mode, timeout in (("fast", 20.0), ("immediate", 10.0)):
            try:
                self._pg_ctl_stop(node, mode, timeout)
                return
            except LocalClusterError:
                if not os.path.exists(pid_file):
                    return
        self._kill_postmaster(pid_file)

    def _kill_postmaster(self, pid_file: str) -> None:
        try:
            with open(pid_file) as f:
                pid = int(f.readline().strip())
        except (OSError, ValueError):
            return
        # A stale pid file may name a recycled pid: only kill a postgres.
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"postgres" not in f.read():
                    return
        except OSError:
            return
        if not _kill_quietly(pid):
            raise LocalClusterError(f"postmaster {pid} survived SIGKILL")

    def _environment(self) -> Dict[str, str]:
        """
        The environment for PostgreSQL programs: ours without libpq's
        C{PG*} variables (a developer's C{PGHOST} or C{PGPASSWORD} must not
        redirect our tooling), in the C locale so messages are English.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env["PGCLIENTENCODING"] = "UTF8"
        if self._run_as is not None:
            env["HOME"] = self._run_as.home
            env["USER"] = env["LOGNAME"] = POSTGRES_OS_USER
        return env

    def _run(
        self,
        argv: Sequence[str],
        timeout: float,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """
        Run a PostgreSQL program as the PostgreSQL user, bounded by
        C{timeout}.

        @raise LocalClusterError: If it cannot run, times out, or (with
            C{check}) exits non-zero; the message quotes its stderr.
        """
        name = os.path.basename(argv[0])
        kwargs: Dict[str, Any] = {}
        if self._run_as is not None:
            kwargs.update(user=self._run_as.uid, group=self._run_as.gid, extra_groups=[])
        cwd = self.base_dir if self.base_dir and os.path.isdir(self.base_dir) else "/"
        try:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                encoding="utf-8",
                errors="replace",
                env=self._environment(),
                cwd=cwd,
                # Its own process group, so that killing it kills its helpers.
                start_new_session=True,
                **kwargs,
            )
        except OSError as e:
            raise LocalClusterError(f"could not run {argv[0]}: {e}") from None
        self._child = process
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            stdout, stderr = process.communicate()
            raise LocalClusterError(
                f"{name} did not finish within {timeout:g}s: {stderr.strip()}"
            ) from None
        except BaseException:
            _kill_group(process.pid)
            process.wait()
            raise
        finally:
            if self._child is process:
                self._child = None
        if check and process.returncode != 0:
            detail = stderr.strip() or stdout.strip()
            raise LocalClusterError(f"{name} exited with status {process.returncode}: {detail}")
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def _append(self, path: str, text: str) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)

    def _write(self, path: str, text: str) -> None:
        # Rewriting in place keeps initdb's owner and mode on the file.
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def _main() -> None:  # pragma: no cover - manual aid
    """
    Start a cluster, print its nodes, and stop it on Enter: a quick manual
    check that this machine can run our end-to-end tests.
    """
    with LocalCluster() as cluster:
        for node in cluster.nodes:
            print(node)
        input("running; press Enter to stop ")


if __name__ == "__main__":  # pragma: no cover
    _main()
