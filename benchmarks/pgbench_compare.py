#!/usr/bin/env python3
"""
Measure twisted_pgpool with pgbench against PostgreSQL itself and against
Twisted's own raw TCP forwarder, in one run on one cluster.

Three targets serve the same database:

  - C{direct}: the primary of a L{LocalCluster}, no proxy at all;
  - C{forwarder}: C{twistd portforward} (L{twisted.protocols.portforward}),
    which copies bytes without parsing them: roughly the best any Twisted
    proxy can do on this machine.  It runs stock, so without TCP_NODELAY;
  - C{proxy}: our own C{twistd pgpool}, in front of the primary only;
  - C{baseline} (with C{--baseline-root}): the same proxy, with the same
    settings, run from another source tree, to compare two commits in one
    run.

Both proxies run as separate processes, started with C{--python} (default:
this interpreter), so a later run can put them on PyPy.  For each run the
proxy's CPU time (utime + stime from C{/proc/PID/stat}) is read before and
after, and divided by the number of transactions pgbench reports: on a
machine where pgbench, PostgreSQL and the proxy share a few cores, CPU
microseconds per transaction says more about how the proxy scales than
TPS does.  The CPU taken by pgbench, by the PostgreSQL server and by other
people's processes is accounted for too, so a reader can tell a slow proxy
from a busy machine.

Run from the repository root::

    python benchmarks/pgbench_compare.py              # 10 s per run
    python benchmarks/pgbench_compare.py --quick      # 2 s runs, smoke test

Everything started here (the cluster, the two proxies, pgbench) is
stopped on exit, including on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple

import attr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    # Lets "python benchmarks/pgbench_compare.py" find the package without
    # an install or PYTHONPATH.
    sys.path.insert(0, ROOT)

from twisted_pgpool.testing.localcluster import LocalCluster, LocalClusterError  # noqa: E402

#: pgbench's initialisation scale: 10 makes 1,000,000 pgbench_accounts
#: rows (about 160 MB), which fits in memory, so runs measure the request
#: path rather than the disk.
SCALE = 10

TARGETS = ("direct", "forwarder", "baseline", "proxy")
#: The targets that run twisted_pgpool.
PROXIES = ("baseline", "proxy")
WORKLOADS = ("select", "prepared", "tpcb", "churn")

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


# -- what to run -----------------------------------------------------------


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


def build_workloads(names: Sequence[str], select_clients: Sequence[int]) -> List[Workload]:
    """
    The runs of one target, in the order they run.

    Read-only runs come first and the TPC-B-like one late, so the rows its
    updates leave behind do not slow the read-only runs.
    """
    workloads = []
    if "select" in names:
        for clients in select_clients:
            workloads.append(Workload("select", "select-only (-S)", clients, ("-S",)))
    if "prepared" in names:
        workloads.append(
            Workload("prepared", "select-only -M prepared", 16, ("-S", "-M", "prepared"))
        )
    if "tpcb" in names:
        workloads.append(Workload("tpcb", "TPC-B-like (default script)", 16))
    if "churn" in names:
        workloads.append(
            Workload("churn", "select-only, new connection per txn (-C -S)", 16, ("-C", "-S"),
                     user=CHURN_USER, password=CHURN_PASSWORD)
        )
    return workloads


# -- pgbench ---------------------------------------------------------------


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
) -> subprocess.CompletedProcess[str]:
    """
    Run pgbench against 127.0.0.1:C{port} and return its finished process
    (stdout and stderr merged).
    """
    argv = [
        pgbench,
        "-h", "127.0.0.1",
        "-p", str(port),
        "-U", user,
        "-n",
        "-c", str(clients),
        "-j", str(min(2, clients)),
        "-T", str(int(duration)),
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


# -- the two proxy processes -------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(could not read {path}: {e})"


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
            f"--- {self.log_path} ---\n{_tail(self.log_path)}"
            f"--- {self.console_path} ---\n{_tail(self.console_path)}"
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
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [self.source_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
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
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if not self.running():
                raise BenchmarkError(
                    f"the {self.name} exited with status {self._process.returncode} "
                    f"before listening on port {self.port}\n{self.outputs()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise BenchmarkError(
                    f"the {self.name} did not listen on port {self.port} within "
                    f"{START_TIMEOUT:g}s\n{self.outputs()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """
        SIGTERM, then SIGKILL after L{STOP_TIMEOUT} seconds.  Idempotent.
        """
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._console is not None:
            self._console.close()
            self._console = None


# -- CPU accounting -----------------------------------------------------------


def _stat_fields(pid: int) -> List[bytes]:
    """
    Fields 3 onwards of C{/proc/PID/stat}.  Field 2, the command name in
    parentheses, may itself hold spaces or parentheses, so the split starts
    after the last ")".
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat[stat.rindex(b")") + 2:].split()


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


# -- one benchmark run ---------------------------------------------------------


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
            cluster.primary,
            f"SELECT sessions FROM pg_stat_database WHERE datname = '{DATABASE}'")
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
        result = run_pgbench(pgbench, port, workload.clients, duration, workload.options,
                             workload.user, workload.password)
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
        row.error = f"pgbench exit status {result.returncode}, {parsed.failed} failed: " + " | ".join(
            line for line in result.stdout.splitlines() if "error" in line.lower()
        )[-400:]
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


def add_ratios(rows: List[Row]) -> None:
    """
    Fill each row's TPS ratio to the direct run of the same workload and,
    for the proxy, to the forwarder's.
    """
    by_key = {(r.target, r.workload, r.clients): r for r in rows}
    for row in rows:
        direct = by_key.get(("direct", row.workload, row.clients))
        forwarder = by_key.get(("forwarder", row.workload, row.clients))
        if row.tps is None:
            continue
        if row.target != "direct" and direct is not None and direct.tps:
            row.ratio_to_direct = row.tps / direct.tps
        if row.target in PROXIES and forwarder is not None and forwarder.tps:
            row.ratio_to_forwarder = row.tps / forwarder.tps


# -- reporting -------------------------------------------------------------------


def _fmt(value: Optional[float], spec: str) -> str:
    return "" if value is None else format(value, spec)


def markdown_table(rows: Sequence[Row]) -> str:
    """
    The results as a markdown table, grouped by workload.
    """
    lines = [
        "| workload | clients | target | TPS | mean latency ms | × direct | × forwarder "
        "| proxy CPU µs/txn | of which kernel | proxy CPU busy | backend logins "
        "| machine CPU busy | others' CPU |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.error is not None and row.tps is None:
            lines.append(
                f"| {row.description} | {row.clients} | {row.target} | error: "
                f"{row.error[:80]} | | | | | | | | | |"
            )
            continue
        busy = "" if row.proxy_cpu_busy is None else f"{row.proxy_cpu_busy:.0%}"
        machine = "" if row.machine_cpu_busy is None else f"{row.machine_cpu_busy:.0%}"
        others = "" if row.others_cpu_share is None else f"{row.others_cpu_share:.0%}"
        flag = " (!)" if row.error else ""
        lines.append(
            f"| {row.description} | {row.clients} | {row.target} | "
            f"{_fmt(row.tps, ',.0f')}{flag} | {_fmt(row.latency_ms, '.3f')} | "
            f"{_fmt(row.ratio_to_direct, '.2f')} | {_fmt(row.ratio_to_forwarder, '.2f')} | "
            f"{_fmt(row.proxy_cpu_us_per_txn, '.1f')} | {_fmt(row.proxy_sys_us_per_txn, '.1f')} | "
            f"{busy} | {_fmt(row.backend_logins, ',d')} | {machine} | {others} |"
        )
    return "\n".join(lines)


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    middle = len(present) // 2
    if len(present) % 2:
        return present[middle]
    return (present[middle - 1] + present[middle]) / 2


def median_table(rounds: Sequence[Sequence[Row]]) -> str:
    """
    The medians over the rounds of C{--repeat}, one line per workload and
    target: TPS, its ratio to direct (the median of each round's ratio to
    that round's direct run), the proxy's CPU per transaction and the
    backend logins; with each round's TPS and the largest share other
    people's processes took in any round.
    """
    lines = [
        "| workload | clients | target | TPS (median) | TPS of each round | × direct (median) "
        "| proxy CPU µs/txn (median) | backend logins (median) | others' CPU (max) |",
        "|---|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for first in rounds[0]:
        same = [row for rows in rounds for row in rows
                if (row.target, row.workload, row.clients)
                == (first.target, first.workload, first.clients)]
        others = [row.others_cpu_share for row in same if row.others_cpu_share is not None]
        logins = _median([row.backend_logins for row in same])
        lines.append(
            f"| {first.description} | {first.clients} | {first.target} | "
            f"{_fmt(_median([row.tps for row in same]), ',.0f')} | "
            + " / ".join(_fmt(row.tps, ',.0f') or "error" for row in same) + " | "
            f"{_fmt(_median([row.ratio_to_direct for row in same]), '.2f')} | "
            f"{_fmt(_median([row.proxy_cpu_us_per_txn for row in same]), '.1f')} | "
            f"{_fmt(logins, ',.0f')} | "
            f"{'' if not others else format(max(others), '.0%')} |"
        )
    return "\n".join(lines)


def source_description(root: str) -> str:
    """
    Which code the proxy ran: the commit (with C{-dirty} for local changes)
    when C{root} is a git work tree, else the directory.
    """
    try:
        result = subprocess.run(
            ["git", "-C", root, "describe", "--always", "--dirty"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, encoding="utf-8", timeout=30,
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
                list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                encoding="utf-8", timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            return f"unknown ({e})"

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "proxy_python": version(
            [python, "-c", "import sys, platform, twisted; "
             "print(platform.python_implementation(), sys.version.split()[0], "
             "'Twisted', twisted.__version__)"]
        ),
        "pgbench": version([pgbench, "--version"]),
    }


# -- the whole run ---------------------------------------------------------------


def parse_arguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="pgbench against PostgreSQL directly, Twisted's raw forwarder "
        "and twisted_pgpool, in one run.",
    )
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds per pgbench run (-T; default 10)")
    parser.add_argument("--quick", action="store_true",
                        help="2-second runs and a 1-second warm-up: a smoke test, not a measurement")
    parser.add_argument("--clients", default=None,
                        help="client counts of the select-only runs (default 1,16,64; "
                        "16 with --profile)")
    parser.add_argument("--only", default="direct,forwarder,proxy",
                        help="targets to run, from direct,forwarder,baseline,proxy "
                        "(default direct,forwarder,proxy, and baseline with --baseline-root)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help="workloads to run, from select,prepared,tpcb,churn (default all)")
    parser.add_argument("--churn", action=argparse.BooleanOptionalAction, default=True,
                        help="include the connection-churn run, pgbench -C -S -c 16 (default on)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of unrecorded pgbench -S -c 16 per target before "
                        "measuring (default 2; matters for PyPy's JIT)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter for the forwarder and proxy processes "
                        "(default: this one)")
    parser.add_argument("--proxy-root", default=ROOT, metavar="DIR",
                        help="run the proxy from this source tree (a checkout or a "
                        "'git archive' of another commit) instead of this one")
    parser.add_argument("--baseline-root", default=None, metavar="DIR",
                        help="also run the proxy from this source tree (target 'baseline', "
                        "same settings) next to --proxy-root's, to compare two commits "
                        "in one run")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run every workload N times (all targets each time) and add "
                        "a table of the medians (default 1)")
    parser.add_argument("--balanced", action="store_true",
                        help="put the standby behind the proxy too (weights "
                             "primary 1 : standby 2, replication check on) "
                             "and report each node's share of the reads")
    parser.add_argument("--proxy-setting", action="append", default=[], metavar="KEY=VALUE",
                        help="add a setting to the proxy's conf.yaml (VALUE is read as YAML), "
                        "e.g. connection_cache=off; repeatable")
    parser.add_argument("--json", nargs="?", const="", default=None, metavar="PATH",
                        help="also write the results as JSON, by default to "
                        "benchmarks/results/<timestamp>.json")
    parser.add_argument("--profile", nargs="?", const="", default=None, metavar="PATH",
                        help="instead of the comparison, sample the proxy with py-spy for "
                        "--duration seconds under the first workload (by default "
                        "pgbench -S -c 16) and print its hot spots (raw stacks to PATH, "
                        "default in the kept log directory)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the proxies' configuration and logs (always kept on error)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 2.0
        args.warmup = min(args.warmup, 1.0)
    args.proxy_root = os.path.abspath(args.proxy_root)
    if not os.path.isdir(os.path.join(args.proxy_root, "twisted_pgpool")):
        parser.error(f"--proxy-root: no twisted_pgpool package in {args.proxy_root}")
    if args.baseline_root is not None:
        args.baseline_root = os.path.abspath(args.baseline_root)
        if not os.path.isdir(os.path.join(args.baseline_root, "twisted_pgpool")):
            parser.error(f"--baseline-root: no twisted_pgpool package in {args.baseline_root}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.duration < 1:
        parser.error("--duration must be at least 1 second (pgbench -T takes whole seconds)")
    try:
        if args.clients is None:
            args.clients = "16" if args.profile is not None else "1,16,64"
        args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--clients: expected numbers separated by commas, got {args.clients!r}")
    if not args.clients or min(args.clients) < 1:
        parser.error("--clients: give at least one client count, each 1 or more")
    args.only = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = set(args.only) - set(TARGETS)
    if unknown or not args.only:
        parser.error(f"--only: choose from {','.join(TARGETS)}")
    if args.baseline_root is not None and "baseline" not in args.only and "proxy" in args.only:
        # Right before the proxy, so the two run back to back.
        args.only.insert(args.only.index("proxy"), "baseline")
    if "baseline" in args.only and args.baseline_root is None:
        parser.error("--only baseline needs --baseline-root")
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown or not args.workloads:
        parser.error(f"--workloads: choose from {','.join(WORKLOADS)}")
    for item in args.proxy_setting:
        if "=" not in item or not item.partition("=")[0].strip():
            parser.error(f"--proxy-setting: expected KEY=VALUE, got {item!r}")
    if not args.churn and "churn" in args.workloads:
        args.workloads.remove("churn")
    return args


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
    for config_module in (os.path.join(root, "twisted_pgpool", "config.py"),
                          os.path.join(root, "twisted_pgpool", "config",
                                       "__init__.py")):
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
    workdir: str, cluster: LocalCluster, port: int, settings: Dict[str, Any],
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


def check_target(cluster: LocalCluster, name: str, port: int) -> None:
    """
    Run one query through a target, so a proxy that listens but cannot
    serve fails here with psql's message rather than as a row of errors.
    """
    assert cluster.bindir is not None
    result = subprocess.run(
        [os.path.join(cluster.bindir, "psql"), "-X", "-At", "-h", "127.0.0.1",
         "-p", str(port), "-U", USER, "-d", DATABASE, "-c", "SELECT 1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        encoding="utf-8", errors="replace", env=pgbench_environment(), timeout=60,
    )
    if result.returncode != 0 or result.stdout.strip() != "1":
        raise BenchmarkError(f"a query through the {name} failed: {result.stdout.strip()}")


def initialise(cluster: LocalCluster, pgbench: str) -> None:
    """
    C{pgbench -i -s SCALE} as the application user, straight to the primary.
    """
    result = subprocess.run(
        [pgbench, "-i", "-q", "-s", str(SCALE), "-h", cluster.primary.host,
         "-p", str(cluster.primary.port), "-U", USER, DATABASE],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        encoding="utf-8", errors="replace", env=pgbench_environment(), timeout=600,
    )
    if result.returncode != 0:
        raise BenchmarkError(f"pgbench -i failed:\n{result.stdout}")
    cluster.psql(cluster.primary, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {CHURN_USER}",
                 database=DATABASE)


def reset_tpcb_tables(cluster: LocalCluster) -> None:
    """
    Do what pgbench does before a run without C{-n}: vacuum the small,
    hot tables and empty the history, so each target's TPC-B-like run starts
    from the same state instead of inheriting the previous target's dead
    rows.
    """
    cluster.psql(cluster.primary, "VACUUM pgbench_branches", database=DATABASE)
    cluster.psql(cluster.primary, "VACUUM pgbench_tellers", database=DATABASE)
    cluster.psql(cluster.primary, "TRUNCATE pgbench_history", database=DATABASE)


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
    argv = [pgbench, "-h", "127.0.0.1", "-p", str(proxy.port), "-U", workload.user, "-n",
            "-c", str(workload.clients), "-j", str(min(2, workload.clients)),
            "-T", str(int(duration)), *workload.options, DATABASE]
    client = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        encoding="utf-8", errors="replace", env=pgbench_environment(workload.password),
    )
    try:
        # Start sampling once the logins are over: the profile is of the
        # steady state (except for the churn workload, which is all logins).
        time.sleep(1.0)
        sampler = subprocess.run(
            [py_spy, "record", "--nonblocking", "--format", "raw", "--rate", "250",
             "--duration", str(sampled), "--pid", str(proxy.pid), "--output", output],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            encoding="utf-8", errors="replace", timeout=sampled + 60,
        )
        stdout, _ = client.communicate(timeout=duration + 60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    try:
        parsed = parse_pgbench(stdout)
        print(f"{workload.description}, {workload.clients} clients, under py-spy: "
              f"{parsed.tps:,.0f} tps (not a measurement)")
    except ValueError:
        print(stdout[-1000:])
    if sampler.returncode != 0 or not os.path.exists(output):
        raise BenchmarkError(f"py-spy failed: {sampler.stdout[-1000:]}")
    print(f"raw stacks in {output} (flamegraph.pl or speedscope read them)\n")
    print(summarise_profile(output))


# -- the whole run, continued ---------------------------------------------------


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@attr.s(auto_attribs=True, eq=False)
class Bench:
    """
    The cluster and proxy processes of one invocation, and how to reach
    each target.
    """

    args: argparse.Namespace
    workdir: str
    cluster: LocalCluster = attr.ib(factory=lambda: LocalCluster(with_standby=False))
    processes: Dict[str, TwistdProcess] = attr.ib(factory=dict)
    ports: Dict[str, int] = attr.ib(factory=dict)
    pgbench: str = "pgbench"

    def start(self, targets: Sequence[str]) -> None:
        """
        Start the cluster, load pgbench's tables, start the proxies that
        C{targets} name, and check that each target answers a query.
        """
        args, cluster = self.args, self.cluster
        if args.balanced:
            cluster.with_standby = True
        cluster.start()
        assert cluster.bindir is not None
        self.pgbench = os.path.join(cluster.bindir, "pgbench")
        if not os.access(self.pgbench, os.X_OK):
            self.pgbench = shutil.which("pgbench") or "pgbench"
        print(f"pgbench -i -s {SCALE}", flush=True)
        initialise(cluster, self.pgbench)
        self.ports["direct"] = cluster.primary.port
        if "forwarder" in targets:
            port = free_port()
            self.processes["forwarder"] = TwistdProcess(
                "forwarder", args.python,
                ["portforward", f"--port=tcp:{port}:interface=127.0.0.1",
                 "--host=127.0.0.1", f"--dest_port={cluster.primary.port}"],
                port, self.workdir)
        for name, root in (("baseline", args.baseline_root), ("proxy", args.proxy_root)):
            if name not in targets:
                continue
            port = free_port()
            directory = os.path.join(self.workdir, name)
            os.makedirs(directory, exist_ok=True)
            config_path = write_proxy_files(directory, cluster, port,
                                            proxy_settings(args, root),
                                            balanced=args.balanced)
            self.processes[name] = TwistdProcess(
                name, args.python, ["pgpool", "-c", config_path], port, self.workdir,
                root)
        for name, process in self.processes.items():
            process.start()
            self.ports[name] = process.port
        for name in targets:
            check_target(cluster, name, self.ports[name])
            if args.warmup >= 1:
                run_pgbench(self.pgbench, self.ports[name], 16, args.warmup, ["-S"])

    def postmaster_pid(self) -> Optional[int]:
        """
        The primary's postmaster, from its C{postmaster.pid}.
        """
        path = os.path.join(self.cluster.primary.data_directory, "postmaster.pid")
        try:
            with open(path) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()
        self.cluster.stop()


def run_comparison(bench: Bench, workloads: Sequence[Workload]) -> List[Row]:
    """
    Run every workload against every target, targets back to back within
    a workload so that slow drifts of the machine hit all three alike.
    """
    args = bench.args
    rows: List[Row] = []
    for workload in workloads:
        for name in args.only:
            if workload.name == "tpcb":
                reset_tpcb_tables(bench.cluster)
            row = measure(bench.pgbench, name, bench.ports[name], bench.processes.get(name),
                          bench.cluster, bench.postmaster_pid(), workload, args.duration)
            rows.append(row)
            status = f"error: {row.error}" if row.error else (
                f"{row.tps:,.0f} tps, {row.latency_ms:.3f} ms"
                + (f", {row.proxy_cpu_us_per_txn:.1f} µs CPU/txn"
                   if row.proxy_cpu_us_per_txn is not None else ""))
            print(f"  {workload.description:45} c={workload.clients:<3} {name:9} {status}",
                  flush=True)
    add_ratios(rows)
    return rows


def print_read_split(cluster: LocalCluster, port: int) -> None:
    """
    Each node's share of the SELECTs it ran (select_cnt of SHOW POOL_NODES,
    which counts every SELECT sent to a node, those of writing transactions
    on the primary too), over the whole run.
    """
    assert cluster.bindir is not None
    result = subprocess.run(
        [os.path.join(cluster.bindir, "psql"), "-X", "-At", "-F", " ", "-h", "127.0.0.1",
         "-p", str(port), "-U", USER, "-d", DATABASE, "-c", "SHOW POOL_NODES"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        encoding="utf-8", errors="replace", env=pgbench_environment(), timeout=60,
    )
    counts = {}
    for line in result.stdout.splitlines():
        fields = line.split(" ")
        if len(fields) >= 9 and fields[0].isdigit():
            counts[f"node {fields[0]} ({fields[6]}, lb_weight {fields[5]})"] = int(fields[8])
    total = sum(counts.values()) or 1
    print("SELECTs per node (select_cnt of SHOW POOL_NODES):")
    for name, count in counts.items():
        print(f"  {name}: {count:,} ({100 * count / total:.1f}%)")


def report(
    bench: Bench, rounds: List[List[Row]], started_at: datetime.datetime,
    machine: Dict[str, Any]
) -> None:
    args = bench.args
    code = source_description(args.proxy_root)
    baseline_code = (source_description(args.baseline_root)
                     if args.baseline_root is not None else None)
    rows = [row for each in rounds for row in each]
    print()
    print(f"{started_at:%Y-%m-%d %H:%M %Z}, {machine['cpus']} CPUs ({machine['cpu_model']}), "
          f"load average {machine['load_average']} at start, {machine['pgbench']}, "
          f"scale {SCALE}, {args.duration:g} s per run, "
          f"proxies on {machine['proxy_python']}, proxy code {code}"
          + (f", baseline code {baseline_code}" if baseline_code is not None else "")
          + f", proxy settings {proxy_settings(args) or 'defaults'}"
          + (", both nodes behind the proxy (weights 1:2)" if args.balanced else ""))
    for number, each in enumerate(rounds, 1):
        print()
        if len(rounds) > 1:
            print(f"round {number} of {len(rounds)}:\n")
        print(markdown_table(each))
    if len(rounds) > 1:
        print(f"\nmedians of {len(rounds)} rounds:\n")
        print(median_table(rounds))
    if any(r.workload == "churn" for r in rows):
        print("\nchurn TPS includes reconnection time (pgbench -C); "
              "every other TPS excludes the initial connection time.")
    if args.json is not None:
        path = args.json or os.path.join(
            ROOT, "benchmarks", "results", f"{started_at:%Y%m%dT%H%M%S}.json")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump({
                "started_at": started_at.isoformat(),
                "scale": SCALE,
                "duration": args.duration,
                "warmup": args.warmup,
                "machine": machine,
                "proxy_root": args.proxy_root,
                "proxy_code": code,
                "proxy_settings": proxy_settings(args),
                "baseline_root": args.baseline_root,
                "baseline_code": baseline_code,
                "balanced": args.balanced,
                "rows": [{"round": number, **attr.asdict(r)}
                         for number, each in enumerate(rounds, 1) for r in each],
            }, f, indent=2)
        print(f"\nwrote {path}")


def run_guarded(name: str, keep_logs: bool, make_bench: Callable[[str], Any],
                body: Callable[[Any, str], Tuple[int, bool]]) -> int:
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
    signal.signal(signal.SIGTERM, _raise_system_exit)
    signal.signal(signal.SIGHUP, _raise_system_exit)
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_arguments(argv)
    workloads = build_workloads(args.workloads, args.clients)
    return run_guarded("pgbench_compare", args.keep_logs,
                       lambda workdir: Bench(args, workdir),
                       lambda bench, workdir: _compare(args, workloads, bench, workdir))


def _compare(args: argparse.Namespace, workloads: List[Workload], bench: "Bench",
             workdir: str) -> Tuple[int, bool]:
    if args.profile is not None:
        print(f"starting the cluster and the proxy; py-spy follows (logs in {workdir})",
              flush=True)
        bench.start(["proxy"])
        output = args.profile or os.path.join(workdir, "proxy.pyspy.txt")
        profile_proxy(bench.pgbench, bench.processes["proxy"], workloads[0],
                      args.duration, output)
        # The default output is inside workdir, which must then stay.
        return 0, bool(args.profile)
    runs = len(workloads) * len(args.only) * args.repeat
    print(f"starting the cluster; {runs} runs of {args.duration:g} s follow "
          f"(logs in {workdir})", flush=True)
    started_at = datetime.datetime.now().astimezone()
    # Before our own processes load the machine: the load average here
    # is other people's work, which a reader of the results should know.
    machine = machine_description(args.python, shutil.which("pgbench") or "pgbench")
    bench.start(args.only)
    rounds = []
    for number in range(1, args.repeat + 1):
        if args.repeat > 1:
            print(f"round {number} of {args.repeat}", flush=True)
        rounds.append(run_comparison(bench, workloads))
    if args.balanced:
        for name in PROXIES:
            if name in args.only:
                print(f"{name}: ", end="")
                print_read_split(bench.cluster, bench.ports[name])
    report(bench, rounds, started_at, machine)
    ok = not any(r.error for each in rounds for r in each)
    return (0 if ok else 1), ok


if __name__ == "__main__":
    sys.exit(main())
