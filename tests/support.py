"""
Helpers shared by the end-to-end tests: one real PostgreSQL primary and
standby per test process, free ports, and the proxy run as a real C{twistd}
child process.

Blocking code is fine here: these helpers run in test set-up and clean-up,
around the reactor rather than inside it.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from typing import IO, Any, Callable, Dict, List, Mapping, Optional, Sequence, Set

import attr
import yaml

from twisted_pgpool.testing.localcluster import LocalCluster, LocalClusterError, LocalNode
from twisted_pgpool.testing.memcached import find_memcached
from twisted_pgpool.testing.processes import (
    ProcessExited,
    free_port,
    python_environ,
    stop_process,
    wait_until_listening,
)

__all__ = [
    "KEEP_ENV",
    "PcpAccess",
    "ProxyProcess",
    "ProxyProcessError",
    "ROOT",
    "direct_dsn",
    "free_port",
    "libpq_dsn",
    "shared_cluster",
    "unique",
    "write_certificate",
]

#: The work-tree root: the directory holding C{twisted_pgpool} and
#: C{twisted/plugins}, which the proxy child process runs from.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Set this environment variable (to anything non-empty) to keep the
#: shared cluster's directory and the proxies' work directories after the
#: run, for reading their logs.
KEEP_ENV = "TWISTED_PGPOOL_TEST_KEEP"


def _keep() -> bool:
    return bool(os.environ.get(KEEP_ENV))


def unique(prefix: str) -> str:
    """
    A name (of a table, a role...) no other test, nor an earlier run on the
    shared cluster, uses.
    """
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


# -- PostgreSQL ------------------------------------------------------------

_shared: Optional[LocalCluster] = None
_shared_failure: Optional[str] = None


def shared_cluster() -> LocalCluster:
    """
    Return this process's primary+standby cluster, starting it on first use
    and stopping it at exit.

    One cluster per process keeps the suite fast (starting one takes a
    second or two).  Tests must leave it as they found it: a test that
    stops, promotes or pauses a node starts its own L{LocalCluster}.

    @raise LocalClusterError: If it cannot start; later calls fail at once
        with the same message instead of trying again for every test.
    """
    global _shared, _shared_failure
    if _shared is not None:
        return _shared
    if _shared_failure is not None:
        raise LocalClusterError(f"the shared cluster failed to start earlier: {_shared_failure}")
    base_dir = tempfile.mkdtemp(prefix="twisted_pgpool-test-") if _keep() else None
    cluster = LocalCluster(base_dir=base_dir)
    try:
        cluster.start()
    except LocalClusterError as e:
        _shared_failure = str(e)
        raise
    atexit.register(cluster.stop)
    if base_dir is not None:
        atexit.register(
            lambda: sys.stderr.write(f"{KEEP_ENV}: kept the shared cluster in {base_dir}\n")
        )
    _shared = cluster
    return cluster


def write_certificate(
    directory: str,
    name: str,
    common_name: str = "localhost",
    issuer: Optional[Sequence[str]] = None,
    is_ca: bool = False,
) -> "tuple[str, str]":
    """
    Write C{<name>.crt} and C{<name>.key} (PEM; an unencrypted P-256 key,
    mode 0600) into C{directory}: what C{openssl req -x509 -nodes} makes,
    without running it.

    @param issuer: C{(certificate file, key file)} of the authority that
        signs it; self-signed when L{None}.
    @param is_ca: mark the certificate as an authority (to sign others).
    @return: the certificate and key file names.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_name, signing_key = subject, key
    if issuer is not None:
        with open(issuer[0], "rb") as f:
            issuer_name = x509.load_pem_x509_certificate(f.read()).subject
        with open(issuer[1], "rb") as f:
            signing_key = serialization.load_pem_private_key(f.read(), None)  # type: ignore[assignment]
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(signing_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_path = os.path.join(directory, f"{name}.crt")
    key_path = os.path.join(directory, f"{name}.key")
    with open(cert_path, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def _dsn_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in " '\\\t\n\r="):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def libpq_dsn(**params: object) -> str:
    """
    Build a libpq keyword/value connection string, quoting values as libpq
    requires (a password with a space or a quote must still work).
    """
    return " ".join(f"{key}={_dsn_value(value)}" for key, value in params.items())


def direct_dsn(
    node: LocalNode,
    user: str = "app",
    password: str = "app",
    database: str = "app",
    **params: object,
) -> str:
    """
    A libpq connection string straight to C{node}, bypassing the proxy:
    for comparing against what the proxy returns, or checking where a write
    landed.  Extra keywords (C{sslmode}, C{application_name}, ...) are
    appended.
    """
    return libpq_dsn(
        host=node.host, port=node.port, user=user, password=password, dbname=database, **params
    )


# -- the proxy as a child process ---------------------------------------------


class ProxyProcessError(Exception):
    """
    The proxy process did not come up; the message carries its log and
    console output, which is what explains why.
    """


_running: Set[ProxyProcess] = set()


@atexit.register
def _stop_leftover_proxies() -> None:
    # A test that forgot its clean-up must not leave a proxy running after
    # the test process is gone.
    for proxy in list(_running):
        try:
            proxy.stop()
        except Exception:
            pass


def _copy_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    # A copy: filling in defaults must not change the caller's dict.
    return dict(config)


def _placeholder_values(proxy: ProxyProcess) -> Dict[str, str]:
    return {
        "{host}": proxy.host,
        "{port}": str(proxy.port),
        "{config}": proxy.config_path,
        "{log}": proxy.log_path,
        "{workdir}": proxy.workdir or "",
    }


@attr.s(auto_attribs=True, eq=False)
class ProxyProcess:
    """
    The proxy (the C{pgpool} twistd plugin) running in a child process with
    a given configuration, the way a user runs it.

    A real process, rather than the service started in the test's own
    reactor, tests what users run: the plugin, the configuration loader,
    signal handling, and the proxy's own reactor.

    @ivar config: The configuration, written to C{<workdir>/conf.yaml}.
        C{listen_addresses} (C{127.0.0.1}) and C{port} (a free one) are
        added when missing; the dict passed in is not modified.
    @ivar workdir: Where the configuration, the extra files and the logs
        go (made absolute); L{None} makes a temporary directory, removed at
        exit unless C{$TWISTED_PGPOOL_TEST_KEEP} is set.
    @ivar extra_files: File name (relative to C{workdir}) to content, for
        C{pool_passwd}, C{pool_hba.conf} and the like.
    @ivar argv: Run this instead of C{twistd pgpool}: lets the helper's
        own tests use a stand-in.  The tokens C{{host}}, C{{port}},
        C{{config}}, C{{log}} and C{{workdir}} are replaced in each item.
    @ivar start_timeout: Seconds L{start} waits for the port to accept
        connections.
    @ivar stop_timeout: Seconds L{stop} waits after SIGINT before SIGKILL.
    """

    config: Dict[str, Any] = attr.ib(converter=_copy_config)
    workdir: Optional[str] = None
    extra_files: Optional[Dict[str, str]] = None
    argv: Optional[Sequence[str]] = None
    start_timeout: float = 20.0
    stop_timeout: float = 10.0

    _process: Optional[subprocess.Popen[bytes]] = attr.ib(init=False, default=None, repr=False)
    _console: Optional[IO[bytes]] = attr.ib(init=False, default=None, repr=False)
    returncode: Optional[int] = attr.ib(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.config.setdefault("listen_addresses", "127.0.0.1")
        self.config.setdefault("port", free_port())
        # Many proxies run at once: none takes the default PCP port 9898.
        self.config.setdefault("pcp_port", 0)
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="twisted_pgpool-proxy-")
            if not _keep():
                atexit.register(shutil.rmtree, self.workdir, True)
        else:
            # Absolute, because the child runs from ROOT, not from here.
            self.workdir = os.path.abspath(self.workdir)
            os.makedirs(self.workdir, exist_ok=True)
        # Each proxy keeps its own pgpool_status.
        self.config.setdefault("logdir", self.workdir)

    # -- where to find it ------------------------------------------------------

    @property
    def port(self) -> int:
        """
        The port the proxy listens on.
        """
        return int(self.config["port"])

    @property
    def host(self) -> str:
        """
        An address a client can connect to: the first of
        C{listen_addresses}, with wildcards mapped to loopback.
        """
        first = str(self.config["listen_addresses"]).split(",")[0].strip()
        if first in ("", "*", "0.0.0.0"):
            return "127.0.0.1"
        if first == "::":
            return "::1"
        return first

    @property
    def config_path(self) -> str:
        assert self.workdir is not None
        return os.path.join(self.workdir, "conf.yaml")

    @property
    def log_path(self) -> str:
        """
        The twistd log file (C{--logfile}).
        """
        assert self.workdir is not None
        return os.path.join(self.workdir, "proxy.log")

    @property
    def console_path(self) -> str:
        """
        Where the child's stdout and stderr go: what twistd prints before
        its log file is open (usage errors, a missing plugin) lands here.
        """
        assert self.workdir is not None
        return os.path.join(self.workdir, "proxy.console")

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    def dsn(
        self, user: str = "app", password: str = "app", database: str = "app", **params: object
    ) -> str:
        """
        A libpq connection string to the proxy; extra keywords are appended.
        """
        return libpq_dsn(
            host=self.host, port=self.port, user=user, password=password, dbname=database, **params
        )

    def log_text(self) -> str:
        """
        The twistd log so far (empty if there is none yet).
        """
        return _read(self.log_path)

    def console_text(self) -> str:
        """
        The child's stdout and stderr so far.
        """
        return _read(self.console_path)

    # -- running it ------------------------------------------------------------

    def command(self) -> List[str]:
        """
        The command line L{start} runs.
        """
        if self.argv is None:
            return [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                f"--logfile={self.log_path}",
                "pgpool",
                "-c",
                self.config_path,
            ]
        values = _placeholder_values(self)
        command = []
        for item in self.argv:
            for token, value in values.items():
                item = item.replace(token, value)
            command.append(item)
        return command

    def write_files(self) -> None:
        """
        Write C{conf.yaml} and the extra files into C{workdir}.
        """
        assert self.workdir is not None
        with open(self.config_path, "w", encoding="utf-8") as f:
            yaml.safe_dump(self.config, f, default_flow_style=False, sort_keys=False)
        for name, content in (self.extra_files or {}).items():
            path = os.path.join(self.workdir, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(content)

    def start(self) -> None:
        """
        Write the files, start the process, and return once its port
        accepts TCP connections.

        @raise ProxyProcessError: If the process exits first, or the port
            does not open within C{start_timeout} seconds (the process is
            then killed); the message carries its log and console output.
        """
        if self._process is not None:
            raise ProxyProcessError("the proxy is already running")
        self.write_files()
        env = python_environ(ROOT)
        self._console = open(self.console_path, "ab")
        self.returncode = None
        try:
            self._process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._console,
                stderr=subprocess.STDOUT,
            )
        except OSError as e:
            self._close_console()
            raise ProxyProcessError(f"could not run {self.command()[0]}: {e}") from None
        _running.add(self)
        self._wait_until_listening()

    def _wait_until_listening(self) -> None:
        assert self._process is not None
        try:
            wait_until_listening(self._process, self.port, self.host, self.start_timeout)
        except ProcessExited as e:
            self.stop()
            raise ProxyProcessError(
                f"the proxy exited with status {e.returncode} before listening on "
                f"{self.host}:{self.port}\n{self._outputs()}"
            )
        except TimeoutError:
            self.stop()
            raise ProxyProcessError(
                f"the proxy did not listen on {self.host}:{self.port} within "
                f"{self.start_timeout:g}s (stopped it; exit status {self.returncode})\n"
                f"{self._outputs()}"
            )

    def stop(self) -> Optional[int]:
        """
        Stop the process: SIGINT (Pgpool-II's fast shutdown: open sessions
        are ended at once; SIGTERM would wait for them, as a smart shutdown
        does), then SIGKILL after C{stop_timeout} seconds.  Idempotent.

        @return: Its exit status (negative for a signal, as in
            L{subprocess.Popen.returncode}), or L{None} if it never ran.
        """
        process = self._process
        if process is None:
            return self.returncode
        try:
            self.returncode = stop_process(process, signal.SIGINT, self.stop_timeout)
        finally:
            self._process = None
            _running.discard(self)
            self._close_console()
        return self.returncode

    def send_signal(self, signum: int) -> None:
        """
        Send C{signum} to the running proxy: C{signal.SIGHUP} makes it
        reload its configuration, as C{kill -HUP} does.

        @raise ProxyProcessError: If the proxy is not running.
        """
        if self._process is None or self._process.poll() is not None:
            raise ProxyProcessError("the proxy is not running")
        self._process.send_signal(signum)

    def _close_console(self) -> None:
        if self._console is not None:
            self._console.close()
            self._console = None

    def _outputs(self) -> str:
        return (
            f"--- {self.log_path} ---\n{self.log_text()}"
            f"--- {self.console_path} ---\n{self.console_text()}"
        )

    def __enter__(self) -> ProxyProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


# -- one proxy per test module ------------------------------------------------


def memcached_or_skip() -> str:
    """
    The memcached binary, or skip the test where it is not installed.
    """
    from twisted.trial.unittest import SkipTest

    path = find_memcached()
    if path is None:
        raise SkipTest("memcached is not installed (apt-get install memcached; CI installs it)")
    return path


def postgres_or_skip() -> None:
    """
    Skip the test where PostgreSQL's server programs are not installed.
    """
    from twisted.trial.unittest import SkipTest

    from twisted_pgpool.testing.localcluster import find_pg_bindir

    try:
        find_pg_bindir()
    except LocalClusterError as e:
        raise SkipTest(f"PostgreSQL is not installed: {e}")


def cluster_or_skip() -> LocalCluster:
    """
    The shared cluster, or skip the test where PostgreSQL is not installed.
    """
    postgres_or_skip()
    return shared_cluster()


class LazyProxy:
    """
    One proxy shared by the tests of a module or class: started on first
    use, stopped when the test process exits (before the servers behind
    it, since its exit hook is registered after the cluster's).

    @ivar make: builds the (not yet started) L{ProxyProcess} for a cluster.
    """

    def __init__(self, make: "Callable[[LocalCluster], ProxyProcess]") -> None:
        self.make = make
        self._proxy: Optional[ProxyProcess] = None

    def get(self) -> ProxyProcess:
        if self._proxy is None:
            proxy = self.make(cluster_or_skip())
            proxy.start()
            atexit.register(proxy.stop)
            self._proxy = proxy
        return self._proxy


def text_passwd_proxy(**settings: Any) -> LazyProxy:
    """
    A L{LazyProxy} over the shared cluster's two nodes where user C{app}
    has a TEXT pool_passwd entry, with C{settings} added.
    """

    def make(cluster: LocalCluster) -> ProxyProcess:
        config: Dict[str, Any] = {
            "backends": cluster.backends_config(),
            "pool_passwd": "pool_passwd",
        }
        config.update(settings)
        return ProxyProcess(config, extra_files={"pool_passwd": "app:TEXTapp\n"})

    return LazyProxy(make)


# -- psql ---------------------------------------------------------------------------

#: psql, where the machine has it (the PostgreSQL client package).
PSQL = shutil.which("psql") or ("/usr/bin/psql" if os.path.exists("/usr/bin/psql") else None)
PSQL_TIMEOUT = 20.0


@attr.s(auto_attribs=True, frozen=True)
class PcpAccess:
    """
    A PCP user of the proxies a test starts (L{ProxyProcess}): the settings
    and files that give a proxy a PCP listener this user may log in to, and
    what a command line needs to reach it (a pcppass file, C{-h -p -U -w}).
    """

    password: str
    user: str = "admin"

    def listener(self) -> "tuple[Dict[str, Any], Dict[str, str]]":
        """
        The C{conf.yaml} settings (a listener on a free port) and the extra
        files (C{pcp.conf}) of a proxy this user can reach.
        """
        digest = hashlib.md5(self.password.encode()).hexdigest()
        return (
            {
                "pcp_listen_addresses": "localhost",
                "pcp_port": free_port(),
                "pcp_conf_file": "pcp.conf",
            },
            {"pcp.conf": f"{self.user}:{digest}\n"},
        )

    def environ(self, proxy: ProxyProcess) -> Dict[str, str]:
        """
        Our environment with a pcppass file for this user (written into the
        proxy's work directory) and this checkout on C{PYTHONPATH}.
        """
        assert proxy.workdir is not None
        pcppass = os.path.join(proxy.workdir, "pcppass")
        with open(pcppass, "w") as f:
            f.write(f"*:*:{self.user}:{self.password}\n")
        os.chmod(pcppass, 0o600)
        return dict(os.environ, PCPPASSFILE=pcppass, PYTHONPATH=ROOT)

    def args(self, proxy: ProxyProcess) -> List[str]:
        """
        The options of a PCP command line (Pgpool-II's or ours) for the
        proxy's listener: host, port, user, no password prompt.
        """
        return ["-h", "127.0.0.1", "-p", str(proxy.config["pcp_port"]), "-U", self.user, "-w"]

    def twisted_pgpool(
        self, proxy: ProxyProcess, command: str, *args: str, timeout: float = 120.0
    ) -> "subprocess.CompletedProcess[str]":
        """
        Run C{python -m twisted_pgpool COMMAND} against the proxy's PCP
        listener, and return the finished process (its output as text).
        """
        return subprocess.run(
            [sys.executable, "-m", "twisted_pgpool", command, *self.args(proxy), *args],
            env=self.environ(proxy),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def run_psql(
    proxy: "ProxyProcess",
    *args: str,
    user: str = "app",
    password: str = "app",
    database: str = "app",
    input: Optional[str] = None,
    tuples_only: bool = True,
    **environment: str,
) -> "subprocess.CompletedProcess[str]":
    """
    Run psql through C{proxy} with C{args} (after C{-X -w -A}, C{-t} unless
    C{tuples_only} is false, and the connection options); it never prompts
    and reads no C{~/.psqlrc} or C{~/.pgpass}.  C{environment} adds libpq
    variables (C{PGSSLMODE}...).

    @raise unittest.SkipTest: psql is not installed.
    """
    if PSQL is None:
        from unittest import SkipTest

        raise SkipTest("psql is not installed")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": tempfile.gettempdir(),
        "LANG": "C.UTF-8",
        "PGPASSWORD": password,
        "PGPASSFILE": os.devnull,
        "PGCONNECT_TIMEOUT": "5",
        "PGCLIENTENCODING": "UTF8",
        **environment,
    }
    command = [
        PSQL,
        "-X",
        "-w",
        "-At" if tuples_only else "-A",
        "-h",
        proxy.host,
        "-p",
        str(proxy.port),
        "-U",
        user,
        "-d",
        database,
        *args,
    ]
    return subprocess.run(
        command,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=PSQL_TIMEOUT,
        encoding="utf-8",
        errors="replace",
    )


def show(proxy: "ProxyProcess", report: str) -> List[Dict[str, str]]:
    """
    C{SHOW report} (C{POOL_NODES}, C{POOL_BACKEND_STATS}...) through
    C{proxy} with psql: one dict per row, by column name.
    """
    result = run_psql(proxy, "-c", f"SHOW {report}", tuples_only=False)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    columns = header.split("|")
    return [dict(zip(columns, row.split("|"))) for row in rows if "|" in row]


def show_pool_nodes(proxy: "ProxyProcess") -> List[Dict[str, str]]:
    """
    C{SHOW POOL_NODES} through C{proxy}: one dict per node.
    """
    return show(proxy, "POOL_NODES")


# -- PCP and the login, from outside --------------------------------------------------

#: The PCP user and password of L{pcp_conf_line}, for L{pcp_admin}.
PCP_USER = "admin"
PCP_PASSWORD = "pcp secret"


def pcp_conf_line() -> str:
    """
    A pcp.conf line for L{PCP_USER} with L{PCP_PASSWORD} (md5, as
    C{pg_md5} writes it).
    """
    import hashlib

    return f"{PCP_USER}:{hashlib.md5(PCP_PASSWORD.encode()).hexdigest()}\n"


def pcp_admin(
    proxy: "ProxyProcess", pcp_port: int, *argv: str
) -> "subprocess.CompletedProcess[str]":
    """
    Run C{twisted-pgpool <argv>} (C{attach 0}, C{nodes}...) in its own
    process against C{proxy}'s PCP port, as L{PCP_USER}.
    """
    assert proxy.workdir is not None
    pcppass = os.path.join(proxy.workdir, "pcppass")
    with open(pcppass, "w") as f:
        f.write(f"*:*:{PCP_USER}:{PCP_PASSWORD}\n")
    os.chmod(pcppass, 0o600)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "twisted_pgpool",
            argv[0],
            "-h",
            "127.0.0.1",
            "-p",
            str(pcp_port),
            "-U",
            PCP_USER,
            "-w",
            *argv[1:],
        ],
        cwd=ROOT,
        env=dict(os.environ, PCPPASSFILE=pcppass, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=30,
    )


def login_refusal(proxy: "ProxyProcess", user: str, database: str = "app") -> Dict[str, str]:
    """
    Send C{proxy} a startup packet for C{user} (no TLS, no password) and
    return the fields of the ErrorResponse it answers with, by their
    one-letter codes (C{S}, C{C}, C{M}, C{D}, C{H}).
    """
    import socket
    import struct

    body = struct.pack("!I", 3 << 16) + f"user\x00{user}\x00database\x00{database}\x00\x00".encode()
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data[:1] == b"E", f"expected an ErrorResponse, got {data[:40]!r}"
    (length,) = struct.unpack_from("!I", data, 1)
    fields = {}
    for item in data[5 : 1 + length].rstrip(b"\x00").split(b"\x00"):
        if item:
            fields[chr(item[0])] = item[1:].decode("utf-8", "replace")
    return fields
