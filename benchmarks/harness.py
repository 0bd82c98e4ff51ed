"""
What the benchmark scripts share: the local cluster and the proxy processes,
pgbench (running it, reading its report), the CPU and memory accounting,
the reports' common parts, and the guard every run goes in.

Each script in C{benchmarks/} imports what it needs from here (it is run as
C{python benchmarks/NAME.py}, so this directory is on C{sys.path}); this
module puts the checkout it belongs to first on C{sys.path}, so the
scripts measure this tree's C{twisted_pgpool} without an install.  What the
tests share with the benchmarks (free ports, log tails, resident memory,
memcached) lives in L{twisted_pgpool.testing} and is re-exported here.

Everything here blocks: it runs around the processes it measures, never in
a reactor.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple

import attr

#: The checkout this script belongs to: the directory holding
#: C{twisted_pgpool} and C{twisted/plugins}.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    # Lets "python benchmarks/NAME.py" find the package (and tests/)
    # without an install or PYTHONPATH.
    sys.path.insert(0, ROOT)

from twisted_pgpool.testing.localcluster import (  # noqa: E402
    LocalCluster,
    LocalClusterError,
    LocalNode,
)
from twisted_pgpool.testing.memcached import MemcachedProcess, find_memcached  # noqa: E402
from twisted_pgpool.testing.processes import (  # noqa: E402
    ProcessExited,
    RssSampler,
    free_port,
    listening,
    python_environ,
    rss,
    settled_rss,
    stop_process,
    tail,
    wait_until_listening,
)
from twisted_pgpool.testing.waiting import wait_for  # noqa: E402

__all__ = [
    "CHURN_PASSWORD",
    "CHURN_USER",
    "CLOCK_TICKS",
    "DATABASE",
    "PASSWORD",
    "ROOT",
    "SCALE",
    "USER",
    "BenchmarkError",
    "CpuSnapshot",
    "LocalCluster",
    "LocalClusterError",
    "LocalNode",
    "MemcachedProcess",
    "PgbenchResult",
    "Row",
    "RssSampler",
    "TwistdProcess",
    "Workload",
    "add_proxy_arguments",
    "backend_sessions",
    "check_target",
    "cpu_ticks",
    "describe_machine",
    "exit_on_signals",
    "find_memcached",
    "fmt",
    "free_port",
    "initialise",
    "listening",
    "machine_cpu_jiffies",
    "machine_description",
    "measure",
    "median",
    "parse_pgbench",
    "pgbench_environment",
    "pgbench_path",
    "postgres_cpu_ticks",
    "postmaster_pid",
    "profile_proxy",
    "proxy_settings",
    "psql",
    "rss",
    "run_guarded",
    "run_pgbench",
    "settled_rss",
    "source_description",
    "summarise_profile",
    "tail",
    "wait_for",
    "write_json",
    "write_proxy_files",
]

#: pgbench's initialisation scale: 10 makes 1,000,000 pgbench_accounts
#: rows (about 160 MB), which fits in memory, so runs measure the request
#: path rather than the disk.
SCALE = 10

USER = PASSWORD = DATABASE = "app"
#: The churn run logs in as a user with md5 authentication, on both paths:
#: with SCRAM, pgbench's own PBKDF2 (about 4 ms of CPU per connection on
#: this machine) would dominate and hide what pooling saves (the server's
#: fork and login).
CHURN_USER, CHURN_PASSWORD = "md5user", "md5pass"

#: Seconds a proxy process gets to open its port.
START_TIMEOUT = 30.0
#: Seconds a proxy process gets between SIGTERM and SIGKILL.
STOP_TIMEOUT = 10.0

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchmarkError(Exception):
    """
    Something the benchmark needs could not be started or run; the message
    says what and quotes the relevant log.
    """


# -- pgbench ---------------------------------------------------------------


@attr.s(frozen=True, auto_attribs=True)
class Workload:
    """
    One pgbench invocation, run against every target.

    @ivar name: Short name, as given to C{--workloads}.
    @ivar description: What a reader of the table sees.
    @ivar clients: pgbench C{-c}.
    @ivar options: pgbench options besides connection, C{-c}, C{-j}, C{-T}
        and C{-n}.
    """

    name: str
    description: str
    clients: int
    options: Sequence[str] = ()
    user: str = USER
    password: str = PASSWORD


@attr.s(frozen=True, auto_attribs=True)
class PgbenchResult:
    """
    The figures we take from pgbench's report.

    @ivar tps: Transactions per second; without the initial connection time,
        except with C{-C}, where pgbench can only report it including the
        reconnections (see C{tps_basis}).
    @ivar tps_basis: pgbench's own words for what C{tps} includes.
    @ivar latency_ms: Mean latency in milliseconds.
    @ivar transactions: "number of transactions actually processed".
    @ivar failed: "number of failed transactions" (0 when not reported).
    """

    tps: float
    tps_basis: str
    latency_ms: float
    transactions: int
    failed: int


_TRANSACTIONS = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.M)
_TPS = re.compile(r"^tps = ([0-9.]+) \(([^)]*)\)", re.M)


def parse_pgbench(output: str) -> PgbenchResult:
    """
    Read a pgbench (PostgreSQL 14 or later) report.

    @raise ValueError: If a figure is missing: pgbench failed, or its
        output changed.
    """
    transactions = _TRANSACTIONS.search(output)
    latency = _LATENCY.search(output)
    tps_lines = _TPS.findall(output)
    if transactions is None or latency is None or not tps_lines:
        raise ValueError("pgbench output has no transaction count, latency or tps line")
    # Before PostgreSQL 14 there were two tps lines; prefer the one that
    # leaves connection time out.
    tps, basis = tps_lines[-1]
    for value, words in tps_lines:
        if "without" in words or "excluding" in words:
            tps, basis = value, words
    failed = _FAILED.search(output)
    return PgbenchResult(
        tps=float(tps),
        tps_basis=basis,
        latency_ms=float(latency.group(1)),
        transactions=int(transactions.group(1)),
        failed=int(failed.group(1)) if failed else 0,
    )


def pgbench_environment(password: str = PASSWORD) -> Dict[str, str]:
    """
    Our environment without a developer's libpq variables, plus the
    benchmark user's password.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = password
    env["LC_ALL"] = "C"
    return env


def run_pgbench(
    pgbench: str,
    port: int,
    clients: int,
    duration: float,
    options: Sequence[str],
    user: str = USER,
    password: str = PASSWORD,
    host: str = "127.0.0.1",
) -> subprocess.CompletedProcess[str]:
    """
    Run pgbench against C{host:port} and return its finished process
    (stdout and stderr merged).
    """
    argv = [
        pgbench,
        "-h",
        host,
        "-p",
        str(port),
        "-U",
        user,
        "-n",
        "-c",
        str(clients),
        "-j",
        str(min(2, clients)),
        "-T",
        str(int(duration)),
        *options,
        DATABASE,
    ]
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        encoding="utf-8",
        errors="replace",
        env=pgbench_environment(password),
        timeout=duration + 120,
    )


# -- the cluster -------------------------------------------------------------


def pgbench_path(cluster: LocalCluster) -> str:
    """
    The pgbench of the cluster's PostgreSQL, else the one on C{PATH}.
    """
    assert cluster.bindir is not None
    path = os.path.join(cluster.bindir, "pgbench")
    if not os.access(path, os.X_OK):
        path = shutil.which("pgbench") or "pgbench"
    return path


def postmaster_pid(node: LocalNode) -> Optional[int]:
    """
    The node's postmaster, from its C{postmaster.pid}; L{None} when it
    cannot be read (the server is not running).
    """
    try:
        with open(os.path.join(node.data_directory, "postmaster.pid")) as f:
            return int(f.readline())
    except (OSError, ValueError):
        return None


def initialise(cluster: LocalCluster, pgbench: str) -> None:
    """
    C{pgbench -i -s SCALE} as the application user, straight to the primary.
    """
    result = subprocess.run(
        [
            pgbench,
            "-i",
            "-q",
            "-s",
            str(SCALE),
            "-h",
            cluster.primary.host,
            "-p",
            str(cluster.primary.port),
            "-U",
            USER,
            DATABASE,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        encoding="utf-8",
        errors="replace",
        env=pgbench_environment(),
        timeout=600,
    )
    if result.returncode != 0:
        raise BenchmarkError(f"pgbench -i failed:\n{result.stdout}")
    cluster.psql(
        cluster.primary,
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {CHURN_USER}",
        database=DATABASE,
    )


def psql(
    cluster: LocalCluster, port: int, sql: str, *options: str
) -> subprocess.CompletedProcess[str]:
    """
    Run C{sql} with the cluster's psql against 127.0.0.1:C{port} (a
    target: the server, or a proxy in front of it) as the benchmark's
    user, and return the finished process (stdout and stderr merged).

    @param options: psql's output options, e.g. C{"-At"}.
    """
    assert cluster.bindir is not None
    return subprocess.run(
        [
            os.path.join(cluster.bindir, "psql"),
            "-X",
            *options,
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            USER,
            "-d",
            DATABASE,
            "-c",
            sql,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        encoding="utf-8",
        errors="replace",
        env=pgbench_environment(),
        timeout=60,
    )


def check_target(cluster: LocalCluster, name: str, port: int) -> None:
    """
    Run one query through a target, so a proxy that listens but cannot
    serve fails here with psql's message rather than as a row of errors.
    """
    result = psql(cluster, port, "SELECT 1", "-At")
    if result.returncode != 0 or result.stdout.strip() != "1":
        raise BenchmarkError(f"a query through the {name} failed: {result.stdout.strip()}")


# -- the proxy processes -----------------------------------------------------


@attr.s(auto_attribs=True, eq=False)
class TwistdProcess:
    """
    A C{twistd -n} child process listening on 127.0.0.1:C{port}.

    It runs in a session of its own, so a Ctrl-C in the terminal reaches
    only us, and we stop it in order (SIGTERM, then SIGKILL).

    @ivar name: C{"forwarder"} or C{"proxy"}, for messages and file names.
    @ivar python: The interpreter to run twistd with.
    @ivar plugin_argv: The twistd plugin name and its options.
    @ivar port: The port it listens on.
    @ivar workdir: Where its log and console output go.
    @ivar source_root: The directory holding C{twisted_pgpool} and
        C{twisted/plugins} that the process runs from.
    """

    name: str
    python: str
    plugin_argv: Sequence[str]
    port: int
    workdir: str
    source_root: str = ROOT
    _process: Optional[subprocess.Popen[bytes]] = attr.ib(default=None, repr=False)
    _console: Optional[IO[bytes]] = attr.ib(default=None, repr=False)

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, f"{self.name}.log")

    @property
    def console_path(self) -> str:
        return os.path.join(self.workdir, f"{self.name}.console")

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def outputs(self) -> str:
        return (
            f"--- {self.log_path} ---\n{tail(self.log_path)}"
            f"--- {self.console_path} ---\n{tail(self.console_path)}"
        )

    def start(self) -> None:
        """
        Start the process and return once its port accepts connections.

        @raise BenchmarkError: If it exits first or does not listen within
            L{START_TIMEOUT} seconds.
        """
        argv = [
            self.python,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            f"--logfile={self.log_path}",
            *self.plugin_argv,
        ]
        env = python_environ(self.source_root)
        self._console = open(self.console_path, "ab")
        self._process = subprocess.Popen(
            argv,
            cwd=self.source_root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until_listening(self._process, self.port, timeout=START_TIMEOUT)
        except ProcessExited as e:
            raise BenchmarkError(
                f"the {self.name} exited with status {e.returncode} "
                f"before listening on port {self.port}\n{self.outputs()}"
            )
        except TimeoutError:
            raise BenchmarkError(
                f"the {self.name} did not listen on port {self.port} within "
                f"{START_TIMEOUT:g}s\n{self.outputs()}"
            )

    def stop(self) -> None:
        """
        SIGTERM, then SIGKILL after L{STOP_TIMEOUT} seconds.  Idempotent.
        """
        if self._process is not None:
            stop_process(self._process, signal.SIGTERM, STOP_TIMEOUT)
        if self._console is not None:
            self._console.close()
            self._console = None


def proxy_settings(args: argparse.Namespace, root: Optional[str] = None) -> Dict[str, Any]:
    """
    Settings beyond the backend and pool_passwd: enough client slots for
    the largest run (the default C{num_init_children} of 32 would queue
    half of a 64-client run for good, since pgbench keeps its connections),
    then the user's C{--proxy-setting}s.

    A proxy tree older than the pooling work does not know
    C{num_init_children} and rejects unknown keys, so it is only written
    when the tree's configuration module mentions it.

    @param root: the proxy's source tree (default C{args.proxy_root}).
    """
    if root is None:
        root = args.proxy_root
    settings: Dict[str, Any] = {}
    knows_limits = False
    # config.py in a tree older than the subpackages, config/__init__.py since.
    for config_module in (
        os.path.join(root, "twisted_pgpool", "config.py"),
        os.path.join(root, "twisted_pgpool", "config", "__init__.py"),
    ):
        try:
            with open(config_module, encoding="utf-8") as f:
                knows_limits = "num_init_children" in f.read()
            break
        except OSError:
            continue
    if knows_limits:
        settings["num_init_children"] = max([64, 16] + list(args.clients))
        # No fixed PCP port: two benchmark proxies (or a proxy someone else
        # runs on 9898) must not collide.
        settings["pcp_port"] = 0
    import yaml

    for item in args.proxy_setting:
        key, _, value = item.partition("=")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


def write_proxy_files(
    workdir: str,
    cluster: LocalCluster,
    port: int,
    settings: Dict[str, Any],
    balanced: bool = False,
) -> str:
    """
    Write the proxy's C{conf.yaml} and C{pool_passwd}; return the
    configuration's path.

    @param balanced: both nodes behind the proxy, weights 1:2, the
        replication check on (the load-balancing benchmark); otherwise the
        primary alone.
    """
    import yaml

    if balanced:
        backends = cluster.backends_config()
        backends[0]["weight"], backends[1]["weight"] = 1, 2
        extra: Dict[str, Any] = {"sr_check_user": "postgres"}
    else:
        backends = cluster.backends_config()[:1]
        extra = {}
    config = {
        "listen_addresses": "127.0.0.1",
        "port": port,
        "backends": backends,
        "pool_passwd": "pool_passwd",
        **extra,
        **settings,
    }
    path = os.path.join(workdir, "conf.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, default_flow_style=False, sort_keys=False)
    with open(os.path.join(workdir, "pool_passwd"), "w", encoding="utf-8") as f:
        f.write(f"{USER}:TEXT{PASSWORD}\n")
        digest = hashlib.md5((CHURN_PASSWORD + CHURN_USER).encode()).hexdigest()
        f.write(f"{CHURN_USER}:md5{digest}\n")
    return path


# -- CPU accounting -----------------------------------------------------------


def _stat_fields(pid: int) -> List[bytes]:
    """
    Fields 3 onwards of C{/proc/PID/stat}.  Field 2, the command name in
    parentheses, may itself hold spaces or parentheses, so the split starts
    after the last ")".
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat[stat.rindex(b")") + 2 :].split()


def cpu_ticks(pid: int) -> Tuple[int, int]:
    """
    User and system CPU time of process C{pid} so far, in clock ticks
    (fields 14 and 15 of C{/proc/PID/stat}).
    """
    fields = _stat_fields(pid)
    return int(fields[11]), int(fields[12])


def machine_cpu_jiffies() -> Tuple[int, int]:
    """
    Busy and total CPU time of the whole machine so far, in clock ticks,
    from the first line of C{/proc/stat}.
    """
    with open("/proc/stat", "rb") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; the
    # guest times are already counted in user and nice.
    total = sum(values[:8])
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return total - idle, total


def _children_of(parent: int) -> Dict[int, List[bytes]]:
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry))
        except (OSError, ValueError):
            continue  # gone since listdir
        if int(fields[1]) == parent:
            children[int(entry)] = fields
    return children


def postgres_cpu_ticks(postmaster_pid: int, settle: float = 3.0) -> int:
    """
    CPU time, in clock ticks, of a PostgreSQL server so far: the
    postmaster, its live children (backends, background processes) and the
    children it has reaped (the backends of closed connections).

    A backend that exits between reading the children and reading the
    postmaster would be counted twice, or not at all; so first wait (up to
    C{settle} seconds) until the set of children stays the same and none
    is a zombie, as after a pgbench run the clients' backends are still
    exiting.
    """
    deadline = time.monotonic() + settle
    children = _children_of(postmaster_pid)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        again = _children_of(postmaster_pid)
        if again.keys() == children.keys() and all(f[0] != b"Z" for f in again.values()):
            children = again
            break
        children = again
    postmaster = _stat_fields(postmaster_pid)
    total = sum(int(v) for v in postmaster[11:15])  # utime stime cutime cstime
    for fields in children.values():
        total += int(fields[11]) + int(fields[12])
    return total


def _children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@attr.s(frozen=True, auto_attribs=True)
class CpuSnapshot:
    """
    Where the machine's CPU time has gone so far: to the whole machine,
    to the proxy process under test, to the PostgreSQL server, and to our
    reaped children (pgbench).  Two snapshots around a run tell how much
    CPU each part took and how much went to processes that are not ours.
    """

    machine_busy: int
    machine_total: int
    proxy_user: int
    proxy_system: int
    postgres: int
    children_seconds: float

    @classmethod
    def take(cls, proxy_pid: Optional[int], postmaster_pid: Optional[int]) -> "CpuSnapshot":
        # PostgreSQL first: it may wait for exiting backends, and the other
        # figures should be read as close to the run as possible.
        postgres = postgres_cpu_ticks(postmaster_pid) if postmaster_pid is not None else 0
        busy, total = machine_cpu_jiffies()
        user, system = cpu_ticks(proxy_pid) if proxy_pid is not None else (0, 0)
        return cls(busy, total, user, system, postgres, _children_cpu_seconds())


# -- one measured run ---------------------------------------------------------


@attr.s(auto_attribs=True)
class Row:
    """
    One (target, workload) measurement, as printed and saved.  Figures
    that do not apply (the proxy's, for C{direct}) or could not be taken
    are L{None}; C{error} says why a run failed.

    @ivar proxy_sys_us_per_txn: The kernel part of C{proxy_cpu_us_per_txn}.
    @ivar proxy_cpu_busy: Proxy CPU time over wall time (1.0 is one core).
    @ivar machine_cpu_busy: Busy share of all CPUs over the run.
    @ivar others_cpu_share: Share of all CPUs used by processes other than
        pgbench, the PostgreSQL server and the proxy under test.
    @ivar backend_logins: Sessions PostgreSQL started for the benchmark
        database during the run.
    """

    target: str
    workload: str
    description: str
    clients: int
    tps: Optional[float] = None
    tps_basis: str = ""
    latency_ms: Optional[float] = None
    transactions: Optional[int] = None
    failed: Optional[int] = None
    proxy_cpu_seconds: Optional[float] = None
    proxy_cpu_us_per_txn: Optional[float] = None
    proxy_sys_us_per_txn: Optional[float] = None
    proxy_cpu_busy: Optional[float] = None
    pgbench_cpu_us_per_txn: Optional[float] = None
    postgres_cpu_us_per_txn: Optional[float] = None
    machine_cpu_busy: Optional[float] = None
    others_cpu_share: Optional[float] = None
    backend_logins: Optional[int] = None
    wall_seconds: Optional[float] = None
    error: Optional[str] = None
    ratio_to_direct: Optional[float] = None
    ratio_to_forwarder: Optional[float] = None


def backend_sessions(cluster: LocalCluster) -> Optional[int]:
    """
    How many sessions the benchmark database has had so far
    (C{pg_stat_database.sessions}, PostgreSQL 14 or later): the
    difference over a run is the number of backend logins, which tells
    whether a pool reused its connections.  Asked from the C{postgres}
    database so that asking does not count.
    """
    try:
        text = cluster.psql(
            cluster.primary, f"SELECT sessions FROM pg_stat_database WHERE datname = '{DATABASE}'"
        )
        return int(text)
    except (LocalClusterError, ValueError):
        return None


def measure(
    pgbench: str,
    target: str,
    port: int,
    process: Optional[TwistdProcess],
    cluster: LocalCluster,
    postmaster_pid: Optional[int],
    workload: Workload,
    duration: float,
) -> Row:
    """
    Run one workload against one target and collect its figures.  A
    failure becomes the row's C{error}, so one bad run does not lose the
    others.
    """
    row = Row(target, workload.name, workload.description, workload.clients)
    if process is not None and not process.running():
        row.error = f"{process.name} is not running"
        return row
    proxy_pid = process.pid if process is not None else None
    sessions_before = backend_sessions(cluster)
    before = CpuSnapshot.take(proxy_pid, postmaster_pid)
    started = time.monotonic()
    try:
        result = run_pgbench(
            pgbench,
            port,
            workload.clients,
            duration,
            workload.options,
            workload.user,
            workload.password,
        )
    except subprocess.TimeoutExpired:
        row.error = "pgbench timed out"
        return row
    row.wall_seconds = time.monotonic() - started
    if process is not None and not process.running():
        proxy_pid = None
    after = CpuSnapshot.take(proxy_pid, postmaster_pid)
    sessions_after = backend_sessions(cluster)
    if sessions_before is not None and sessions_after is not None:
        row.backend_logins = sessions_after - sessions_before
    try:
        parsed = parse_pgbench(result.stdout)
    except ValueError as e:
        row.error = f"{e}; pgbench exit status {result.returncode}: {result.stdout[-600:]}"
        return row
    if result.returncode != 0 or parsed.failed:
        row.error = (
            f"pgbench exit status {result.returncode}, {parsed.failed} failed: "
            + " | ".join(line for line in result.stdout.splitlines() if "error" in line.lower())[
                -400:
            ]
        )
    row.tps = parsed.tps
    row.tps_basis = parsed.tps_basis
    row.latency_ms = parsed.latency_ms
    row.transactions = parsed.transactions
    row.failed = parsed.failed

    machine_total = (after.machine_total - before.machine_total) / CLOCK_TICKS
    machine_busy = (after.machine_busy - before.machine_busy) / CLOCK_TICKS
    pgbench_cpu = after.children_seconds - before.children_seconds
    postgres_cpu = (after.postgres - before.postgres) / CLOCK_TICKS
    user = system = 0.0
    if proxy_pid is not None:
        user = (after.proxy_user - before.proxy_user) / CLOCK_TICKS
        system = (after.proxy_system - before.proxy_system) / CLOCK_TICKS
        row.proxy_cpu_seconds = user + system
        row.proxy_cpu_busy = (user + system) / row.wall_seconds
    if machine_total > 0:
        # /proc/stat adds up every CPU, so its total is elapsed time x CPUs.
        row.machine_cpu_busy = machine_busy / machine_total
        others = machine_busy - pgbench_cpu - postgres_cpu - user - system
        row.others_cpu_share = max(0.0, others) / machine_total
    per_txn = 1e6 / parsed.transactions if parsed.transactions else None
    if per_txn is not None:
        row.pgbench_cpu_us_per_txn = pgbench_cpu * per_txn
        row.postgres_cpu_us_per_txn = postgres_cpu * per_txn
        if proxy_pid is not None:
            row.proxy_cpu_us_per_txn = (user + system) * per_txn
            row.proxy_sys_us_per_txn = system * per_txn
    return row


# -- reporting -------------------------------------------------------------------


def median(values: Sequence[Optional[float]]) -> Optional[float]:
    """
    The median of the figures that could be taken (L{None}s left out), or
    L{None} if there are none.
    """
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: Optional[float], spec: str) -> str:
    """
    A figure for a table: formatted with C{spec}, or empty when missing.
    """
    return "" if value is None else format(value, spec)


def describe_machine(machine: Dict[str, Any]) -> str:
    """
    The machine part of a report's first line, from L{machine_description}.
    """
    return (
        f"{machine['cpus']} CPUs ({machine['cpu_model']}), load average "
        f"{machine['load_average']} at start, {machine['pgbench']}"
    )


def write_json(path: str, default_name: str, data: Dict[str, Any]) -> None:
    """
    Write a run's figures as JSON to C{path}, or, when it is empty, to
    C{benchmarks/results/default_name}; say where.
    """
    path = path or os.path.join(ROOT, "benchmarks", "results", default_name)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    print(f"\nwrote {path}")


def add_proxy_arguments(parser: argparse.ArgumentParser, proxy_root: bool = True) -> None:
    """
    The options of every benchmark that starts proxy processes:
    C{--python}, C{--proxy-root} (unless C{proxy_root} is false),
    C{--proxy-setting} and C{--keep-logs}.
    """
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for the twistd processes (default: this one)",
    )
    if proxy_root:
        parser.add_argument(
            "--proxy-root",
            default=ROOT,
            metavar="DIR",
            help="run the proxy from this source tree (a checkout or a "
            "'git archive' of another commit) instead of this one",
        )
    parser.add_argument(
        "--proxy-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="add a setting to the proxies' conf.yaml (VALUE is read as "
        "YAML), e.g. connection_cache=off; repeatable",
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the proxies' configuration and logs (always kept on error)",
    )


def source_description(root: str) -> str:
    """
    Which code the proxy ran: the commit (with C{-dirty} for local changes)
    when C{root} is a git work tree, else the directory.
    """
    try:
        result = subprocess.run(
            ["git", "-C", root, "describe", "--always", "--dirty"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            encoding="utf-8",
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return root
    return result.stdout.strip() if result.returncode == 0 else root


def machine_description(python: str, pgbench: str) -> Dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(argv: Sequence[str]) -> str:
        try:
            return subprocess.run(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                encoding="utf-8",
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            return f"unknown ({e})"

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "proxy_python": version(
            [
                python,
                "-c",
                "import sys, platform, twisted; "
                "print(platform.python_implementation(), sys.version.split()[0], "
                "'Twisted', twisted.__version__)",
            ]
        ),
        "pgbench": version([pgbench, "--version"]),
    }


# -- profiling -------------------------------------------------------------------


def summarise_profile(path: str, top: int = 20) -> str:
    """
    Turn py-spy's raw (collapsed-stack) output into two short tables: the
    functions the proxy spends its own time in, and the ones whose calls
    (callees included) take the most time.
    """
    own: Dict[str, int] = {}
    inclusive: Dict[str, int] = {}
    total = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            total += count
            # "function (file:line)" -> "function (file)", so every line
            # of one function adds up.
            frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
            own[frames[-1]] = own.get(frames[-1], 0) + count
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return "(no samples)"

    def table(counts: Dict[str, int], heading: str) -> List[str]:
        lines = [f"{heading} ({total} samples)"]
        for frame, count in sorted(counts.items(), key=lambda item: -item[1])[:top]:
            frame = frame.replace(ROOT + "/", "").replace(sys.prefix + "/", "")
            lines.append(f"  {count / total:6.1%}  {frame}")
        return lines

    return "\n".join(table(own, "own time") + [""] + table(inclusive, "inclusive time"))


def profile_proxy(
    pgbench: str, proxy: TwistdProcess, workload: Workload, duration: float, output: str
) -> None:
    """
    Sample the proxy with py-spy while C{workload} runs through it, write
    the raw stacks to C{output} and print a summary.

    py-spy runs with C{--nonblocking} so it does not stop the proxy for
    each sample; it still takes CPU from the same two cores, so the TPS of
    this run is not a measurement.
    """
    py_spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.access(py_spy, os.X_OK):
        py_spy = shutil.which("py-spy") or ""
    if not py_spy:
        raise BenchmarkError("--profile needs py-spy (pip install py-spy)")
    sampled = max(1, int(duration) - 2)
    argv = [
        pgbench,
        "-h",
        "127.0.0.1",
        "-p",
        str(proxy.port),
        "-U",
        workload.user,
        "-n",
        "-c",
        str(workload.clients),
        "-j",
        str(min(2, workload.clients)),
        "-T",
        str(int(duration)),
        *workload.options,
        DATABASE,
    ]
    client = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        encoding="utf-8",
        errors="replace",
        env=pgbench_environment(workload.password),
    )
    try:
        # Start sampling once the logins are over: the profile is of the
        # steady state (except for the churn workload, which is all logins).
        time.sleep(1.0)
        sampler = subprocess.run(
            [
                py_spy,
                "record",
                "--nonblocking",
                "--format",
                "raw",
                "--rate",
                "250",
                "--duration",
                str(sampled),
                "--pid",
                str(proxy.pid),
                "--output",
                output,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            encoding="utf-8",
            errors="replace",
            timeout=sampled + 60,
        )
        stdout, _ = client.communicate(timeout=duration + 60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    try:
        parsed = parse_pgbench(stdout)
        print(
            f"{workload.description}, {workload.clients} clients, under py-spy: "
            f"{parsed.tps:,.0f} tps (not a measurement)"
        )
    except ValueError:
        print(stdout[-1000:])
    if sampler.returncode != 0 or not os.path.exists(output):
        raise BenchmarkError(f"py-spy failed: {sampler.stdout[-1000:]}")
    print(f"raw stacks in {output} (flamegraph.pl or speedscope read them)\n")
    print(summarise_profile(output))


# -- the whole run ----------------------------------------------------------------


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def exit_on_signals() -> None:
    """
    Let SIGTERM and SIGHUP unwind the run like Ctrl-C (as C{SystemExit}),
    so the C{finally} clauses stop what it started.
    """
    signal.signal(signal.SIGTERM, _raise_system_exit)
    signal.signal(signal.SIGHUP, _raise_system_exit)


def run_guarded(
    name: str,
    keep_logs: bool,
    make_bench: Callable[[str], Any],
    body: Callable[[Any, str], Tuple[int, bool]],
) -> int:
    """
    Run a benchmark's C{body(bench, workdir)} with what every benchmark
    script needs around it: SIGTERM and SIGHUP unwinding like Ctrl-C, a
    working directory for the logs, the processes stopped whatever happens,
    and the logs removed only after a clean run.

    @param name: the script's name, for its error messages.
    @param make_bench: builds the object with C{stop()} from the working
        directory.
    @param body: returns the exit code and whether the run was clean.
    @return: the exit code (2 for a benchmark error, 130 when interrupted).
    """
    exit_on_signals()
    workdir = tempfile.mkdtemp(prefix=f"{name}-")
    bench = make_bench(workdir)
    ok = False
    try:
        code, ok = body(bench, workdir)
        return code
    except (BenchmarkError, LocalClusterError) as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted; stopping everything", file=sys.stderr)
        return 130
    finally:
        # A second Ctrl-C must not interrupt the clean-up halfway.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        bench.stop()
        if ok and not keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", file=sys.stderr)
