#!/usr/bin/env python3
"""
Measure the in-memory query cache with pgbench: 100 hot rows, read again
and again, the benchmark of issue 6.

Four configurations serve the same database, in one run on one cluster
(the primary alone; no standby, so no load balancing):

  - C{direct}: the primary itself, no proxy;
  - C{nocache}: C{twistd pgpool} with its defaults (C{memory_cache_enabled}
    off);
  - C{shmem}: the same proxy with C{memory_cache_enabled: on},
    C{memqcache_method: shmem};
  - C{memcached}: the same proxy with C{memqcache_method: memcached},
    talking to a memcached this script starts on a free port.

The workload is a pgbench custom script::

    \\set aid random(1, 100)
    SELECT abalance FROM pgbench_accounts WHERE aid = :aid;

at 16 clients and at 1 client, in the simple query protocol and, unless
C{--modes} says otherwise, with C{-M prepared} too (Parse once,
Bind/Execute per transaction: the cache keys on the bound values).

Each configuration is warmed up first, so the first 100 executions (the
misses that fill the cache) are not measured.  Then every (mode, clients)
pair runs against every configuration, the order of the configurations
rotating from one repetition to the next, C{--repeat} times; the table
shows the median of each figure over the repetitions.  On a small
machine shared with other people's work, alternating and taking medians
is what keeps one disturbed run from deciding a comparison.

Per run: TPS, mean latency, the proxy's CPU microseconds per transaction
(from C{/proc/PID/stat}, read by L{harness} for every benchmark), memcached's CPU
per transaction, and the cache hit ratio over the run (the difference of
C{SHOW POOL_CACHE}'s C{num_cache_hits} and C{num_selects} before and after).
With a hit ratio of 1.00 the proxy's CPU per transaction is its CPU per
cache hit, as a transaction is one SELECT.

Run from the repository root::

    python benchmarks/query_cache_bench.py                 # 10 s runs, 3 repetitions
    python benchmarks/query_cache_bench.py --quick         # smoke test
    python benchmarks/query_cache_bench.py --profile       # then py-spy on shmem hits
    python benchmarks/query_cache_bench.py --only shmem --modes prepared \\
        --repeat 1 --profile                               # py-spy on -M prepared hits

Everything started here (the cluster, the proxies, memcached) is stopped
on exit, including on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import attr
from harness import (
    CLOCK_TICKS,
    ROOT,
    BenchmarkError,
    CpuSnapshot,
    LocalCluster,
    MemcachedProcess,
    TwistdProcess,
    Workload,
    add_proxy_arguments,
    check_target,
    cpu_ticks,
    describe_machine,
    find_memcached,
    fmt,
    free_port,
    initialise,
    machine_description,
    median,
    parse_pgbench,
    pgbench_path,
    postmaster_pid,
    profile_proxy,
    proxy_settings,
    psql,
    run_guarded,
    run_pgbench,
    source_description,
    write_proxy_files,
)

CONFIGURATIONS = ("direct", "nocache", "shmem", "memcached")
MODES = ("simple", "extended", "prepared")

SCRIPT = "\\set aid random(1, 100)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n"

#: The issue's targets.
CPU_PER_HIT_TARGET_US = 23.0
SPEEDUP_TARGET = 1.5
PGPOOL_ONE_CLIENT_LATENCY_MS = 0.073


# -- SHOW POOL_CACHE -------------------------------------------------------------


def pool_cache_counters(cluster: LocalCluster, port: int) -> Optional[Tuple[int, int]]:
    """
    C{(num_cache_hits, num_selects)} from the proxy's C{SHOW POOL_CACHE},
    or L{None} if it cannot be read.
    """
    result = psql(cluster, port, "SHOW POOL_CACHE", "-At", "-F", " ")
    fields = result.stdout.strip().split(" ")
    if result.returncode != 0 or len(fields) < 2:
        return None
    try:
        return int(fields[0]), int(fields[1])
    except ValueError:
        return None


# -- one run ---------------------------------------------------------------------


@attr.s(auto_attribs=True)
class Run:
    """
    One pgbench run against one configuration.
    """

    configuration: str
    mode: str
    clients: int
    repetition: int
    tps: Optional[float] = None
    latency_ms: Optional[float] = None
    transactions: Optional[int] = None
    proxy_cpu_us_per_txn: Optional[float] = None
    proxy_sys_us_per_txn: Optional[float] = None
    memcached_cpu_us_per_txn: Optional[float] = None
    postgres_cpu_us_per_txn: Optional[float] = None
    hit_ratio: Optional[float] = None
    others_cpu_share: Optional[float] = None
    error: Optional[str] = None


def measure_run(
    bench: "CacheBench", configuration: str, mode: str, clients: int, repetition: int
) -> Run:
    run = Run(configuration, mode, clients, repetition)
    process = bench.proxies.get(configuration)
    port = process.port if process is not None else bench.cluster.primary.port
    proxy_pid = process.pid if process is not None else None
    if process is not None and not process.running():
        run.error = "proxy is not running"
        return run
    memcached_pid = (
        bench.memcached.pid
        if (configuration == "memcached" and bench.memcached is not None)
        else None
    )
    counters_before = pool_cache_counters(bench.cluster, port) if process is not None else None
    memcached_before = sum(cpu_ticks(memcached_pid)) if memcached_pid else 0
    before = CpuSnapshot.take(proxy_pid, bench.postmaster_pid)
    result = run_pgbench(bench.pgbench, port, clients, bench.args.duration, bench.options(mode))
    after = CpuSnapshot.take(proxy_pid, bench.postmaster_pid)
    memcached_after = sum(cpu_ticks(memcached_pid)) if memcached_pid else 0
    counters_after = pool_cache_counters(bench.cluster, port) if process is not None else None
    try:
        parsed = parse_pgbench(result.stdout)
    except ValueError as e:
        run.error = f"{e}: {result.stdout[-600:]}"
        return run
    if result.returncode != 0 or parsed.failed:
        run.error = f"pgbench exit status {result.returncode}, {parsed.failed} failed"
    run.tps, run.latency_ms, run.transactions = parsed.tps, parsed.latency_ms, parsed.transactions
    per_txn = 1e6 / parsed.transactions if parsed.transactions else 0.0
    if proxy_pid is not None:
        user = (after.proxy_user - before.proxy_user) / CLOCK_TICKS
        system = (after.proxy_system - before.proxy_system) / CLOCK_TICKS
        run.proxy_cpu_us_per_txn = (user + system) * per_txn
        run.proxy_sys_us_per_txn = system * per_txn
    if memcached_pid:
        run.memcached_cpu_us_per_txn = (memcached_after - memcached_before) / CLOCK_TICKS * per_txn
    run.postgres_cpu_us_per_txn = (after.postgres - before.postgres) / CLOCK_TICKS * per_txn
    machine_total = (after.machine_total - before.machine_total) / CLOCK_TICKS
    if machine_total > 0:
        ours = (
            (after.children_seconds - before.children_seconds)
            + (after.postgres - before.postgres) / CLOCK_TICKS
            + (after.proxy_user + after.proxy_system - before.proxy_user - before.proxy_system)
            / CLOCK_TICKS
            + (memcached_after - memcached_before) / CLOCK_TICKS
        )
        busy = (after.machine_busy - before.machine_busy) / CLOCK_TICKS
        run.others_cpu_share = max(0.0, busy - ours) / machine_total
    if counters_before is not None and counters_after is not None:
        hits = counters_after[0] - counters_before[0]
        selects = counters_after[1] - counters_before[1]
        run.hit_ratio = hits / selects if selects else 0.0
    return run


# -- the whole run -----------------------------------------------------------------


@attr.s(auto_attribs=True, eq=False)
class CacheBench:
    """
    The cluster, memcached and the three proxies of one invocation.
    """

    args: argparse.Namespace
    workdir: str
    cluster: LocalCluster = attr.ib(factory=lambda: LocalCluster(with_standby=False))
    proxies: Dict[str, TwistdProcess] = attr.ib(factory=dict)
    memcached: Optional[MemcachedProcess] = None
    pgbench: str = "pgbench"
    script: str = ""
    postmaster_pid: Optional[int] = None

    def options(self, mode: str) -> List[str]:
        return ["-f", self.script, "-M", mode]

    def start(self) -> None:
        args, cluster = self.args, self.cluster
        cluster.start()
        self.pgbench = pgbench_path(cluster)
        print("pgbench -i -s 10", flush=True)
        initialise(cluster, self.pgbench)
        self.postmaster_pid = postmaster_pid(cluster.primary)
        if self.postmaster_pid is None:
            raise BenchmarkError("the primary's postmaster.pid cannot be read")
        self.script = os.path.join(self.workdir, "hot100.sql")
        with open(self.script, "w", encoding="utf-8") as f:
            f.write(SCRIPT)
        if "memcached" in args.only:
            binary = find_memcached()
            if binary is None:
                raise BenchmarkError("memcached is not installed")
            self.memcached = MemcachedProcess(
                binary, memory_mb=64, log_path=os.path.join(self.workdir, "memcached.log")
            )
            try:
                self.memcached.start()
            except RuntimeError as e:
                raise BenchmarkError(str(e))
        base = proxy_settings(
            argparse.Namespace(
                proxy_root=ROOT, clients=args.clients, proxy_setting=args.proxy_setting
            )
        )
        # Three proxies run at once: none may take the PCP port's default
        # (9898), which another engineer's proxy may hold anyway.
        base.setdefault("pcp_port", 0)
        extra: Dict[str, Dict[str, object]] = {
            "nocache": {},
            "shmem": {"memory_cache_enabled": True, "memqcache_method": "shmem"},
            "memcached": {
                "memory_cache_enabled": True,
                "memqcache_method": "memcached",
                "memqcache_memcached_host": "127.0.0.1",
                "memqcache_memcached_port": (self.memcached.port if self.memcached else 11211),
            },
        }
        for name in args.only:
            if name == "direct":
                continue
            directory = os.path.join(self.workdir, name)
            os.makedirs(directory)
            port = free_port()
            config = write_proxy_files(directory, cluster, port, {**base, **extra[name]})
            self.proxies[name] = TwistdProcess(
                name, args.python, ["pgpool", "-c", config], port, directory
            )
        for process in self.proxies.values():
            process.start()
        for name in args.only:
            port = self.proxies[name].port if name in self.proxies else cluster.primary.port
            check_target(cluster, name, port)

    def warm_up(self) -> None:
        """
        Fill the caches (100 misses each, per protocol) and the pools, and
        let the processes settle, before anything is measured.
        """
        for name in self.args.only:
            port = self.proxies[name].port if name in self.proxies else self.cluster.primary.port
            for mode in self.args.modes:
                result = run_pgbench(self.pgbench, port, 16, self.args.warmup, self.options(mode))
                if result.returncode != 0:
                    raise BenchmarkError(
                        f"warm-up of {name} ({mode}) failed:\n{result.stdout[-1000:]}"
                    )

    def stop(self) -> None:
        for process in self.proxies.values():
            process.stop()
        if self.memcached is not None:
            self.memcached.stop()
        self.cluster.stop()


def run_all(bench: CacheBench) -> List[Run]:
    args = bench.args
    runs: List[Run] = []
    configurations = list(args.only)
    for repetition in range(args.repeat):
        # Rotate, so no configuration always runs first (or right after
        # the same neighbour).
        shift = repetition % len(configurations)
        order = configurations[shift:] + configurations[:shift]
        for mode in args.modes:
            for clients in args.clients:
                for name in order:
                    run = measure_run(bench, name, mode, clients, repetition)
                    runs.append(run)
                    print(
                        f"  rep {repetition + 1} {mode:8} c={clients:<3} {name:9} "
                        + (f"error: {run.error} " if run.error else "")
                        + (
                            f"{run.tps:,.0f} tps, {run.latency_ms:.3f} ms"
                            if run.tps is not None
                            else ""
                        )
                        + (
                            f", {run.proxy_cpu_us_per_txn:.1f} µs CPU/txn"
                            if run.proxy_cpu_us_per_txn is not None
                            else ""
                        )
                        + (f", hits {run.hit_ratio:.2f}" if run.hit_ratio is not None else "")
                        + (
                            f", others {run.others_cpu_share:.0%}"
                            if run.others_cpu_share is not None
                            else ""
                        ),
                        flush=True,
                    )
    return runs


@attr.s(auto_attribs=True)
class Summary:
    configuration: str
    mode: str
    clients: int
    runs: int
    tps: Optional[float]
    latency_ms: Optional[float]
    proxy_cpu_us_per_txn: Optional[float]
    proxy_sys_us_per_txn: Optional[float]
    memcached_cpu_us_per_txn: Optional[float]
    postgres_cpu_us_per_txn: Optional[float]
    hit_ratio: Optional[float]
    others_cpu_share: Optional[float]
    tps_range: str
    #: Medians of the per-repetition TPS ratios: runs of one repetition
    #: follow each other, so the machine's other load varies less
    #: between them than between repetitions.
    ratio_to_direct: Optional[float] = None
    ratio_to_nocache: Optional[float] = None


def summarise(runs: Sequence[Run], args: argparse.Namespace) -> List[Summary]:
    summaries = []
    for mode in args.modes:
        for clients in args.clients:
            for name in args.only:
                mine = [
                    r
                    for r in runs
                    if (r.configuration, r.mode, r.clients) == (name, mode, clients)
                    and r.tps is not None
                ]
                tps = [r.tps for r in mine if r.tps is not None]
                summaries.append(
                    Summary(
                        name,
                        mode,
                        clients,
                        len(mine),
                        median(tps),
                        median([r.latency_ms for r in mine]),
                        median([r.proxy_cpu_us_per_txn for r in mine]),
                        median([r.proxy_sys_us_per_txn for r in mine]),
                        median([r.memcached_cpu_us_per_txn for r in mine]),
                        median([r.postgres_cpu_us_per_txn for r in mine]),
                        median([r.hit_ratio for r in mine]),
                        median([r.others_cpu_share for r in mine]),
                        f"{min(tps):,.0f}–{max(tps):,.0f}" if tps else "",
                        _paired_ratio(runs, name, "direct", mode, clients),
                        _paired_ratio(runs, name, "nocache", mode, clients)
                        if name in ("shmem", "memcached")
                        else None,
                    )
                )
    return summaries


def _paired_ratio(
    runs: Sequence[Run], name: str, other: str, mode: str, clients: int
) -> Optional[float]:
    """
    The median over repetitions of C{name}'s TPS over C{other}'s in the
    same repetition.
    """
    if name == other:
        return None
    tps = {
        (r.configuration, r.repetition): r.tps
        for r in runs
        if (r.mode, r.clients) == (mode, clients) and r.tps
    }
    ratios = [
        tps[(name, rep)] / tps[(other, rep)]
        for (config, rep) in tps
        if config == name and (other, rep) in tps
    ]
    return median(ratios)


def markdown_table(summaries: Sequence[Summary]) -> str:
    lines = [
        "| protocol | clients | configuration | TPS (median) | TPS range | × direct "
        "| × no cache | mean latency ms | proxy CPU µs/txn | of which kernel "
        "| memcached CPU µs/txn | PostgreSQL CPU µs/txn | cache hit ratio | others' CPU |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.mode} | {s.clients} | {s.configuration} | {fmt(s.tps, ',.0f')} | "
            f"{s.tps_range} | {fmt(s.ratio_to_direct, '.2f')} | "
            f"{fmt(s.ratio_to_nocache, '.2f')} | "
            f"{fmt(s.latency_ms, '.3f')} | {fmt(s.proxy_cpu_us_per_txn, '.1f')} | "
            f"{fmt(s.proxy_sys_us_per_txn, '.1f')} | {fmt(s.memcached_cpu_us_per_txn, '.1f')} | "
            f"{fmt(s.postgres_cpu_us_per_txn, '.1f')} | {fmt(s.hit_ratio, '.2f')} | "
            f"{fmt(s.others_cpu_share, '.0%')} |"
        )
    return "\n".join(lines)


def targets_table(summaries: Sequence[Summary]) -> str:
    """
    The issue's targets, for the simple protocol, against this run's medians.
    """
    by_key = {(s.configuration, s.mode, s.clients): s for s in summaries}
    lines = ["| target | measured | |", "|---|---|---|"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "not met"

    for mode in ("simple", "extended", "prepared"):
        shmem16 = by_key.get(("shmem", mode, 16))
        nocache16 = by_key.get(("nocache", mode, 16))
        shmem1 = by_key.get(("shmem", mode, 1))
        direct1 = by_key.get(("direct", mode, 1))
        if shmem16 is not None and shmem16.proxy_cpu_us_per_txn is not None:
            cpu = shmem16.proxy_cpu_us_per_txn
            lines.append(
                f"| {mode}, 16 clients: shmem proxy CPU per hit ≤ "
                f"{CPU_PER_HIT_TARGET_US:g} µs | {cpu:.1f} µs "
                f"(hit ratio {fmt(shmem16.hit_ratio, '.2f')}) | "
                f"{verdict(cpu <= CPU_PER_HIT_TARGET_US)} |"
            )
        if shmem16 and nocache16 and shmem16.ratio_to_nocache is not None:
            speedup = shmem16.ratio_to_nocache
            cpu_ratio = medians_ratio = ""
            if nocache16.proxy_cpu_us_per_txn and shmem16.proxy_cpu_us_per_txn:
                cpu_ratio = (
                    f", proxy CPU {nocache16.proxy_cpu_us_per_txn:.1f} → "
                    f"{shmem16.proxy_cpu_us_per_txn:.1f} µs/txn"
                )
            if nocache16.tps and shmem16.tps:
                medians_ratio = f"; medians' ratio {shmem16.tps / nocache16.tps:.2f} ×"
            lines.append(
                f"| {mode}, 16 clients: shmem TPS ≥ {SPEEDUP_TARGET:g} × no cache | "
                f"{speedup:.2f} × (median of paired runs{medians_ratio}{cpu_ratio}) | "
                f"{verdict(speedup >= SPEEDUP_TARGET)} |"
            )
        if shmem1 is not None and shmem1.latency_ms is not None:
            versus = (
                f", direct {direct1.latency_ms:.3f} ms"
                if direct1 is not None and direct1.latency_ms is not None
                else ""
            )
            lines.append(
                f"| {mode}, 1 client: shmem mean latency ≤ "
                f"{PGPOOL_ONE_CLIENT_LATENCY_MS} ms (the issue's anchor: Pgpool-II "
                f"4.3 measured once) | {shmem1.latency_ms:.3f} ms{versus} | "
                f"{verdict(shmem1.latency_ms <= PGPOOL_ONE_CLIENT_LATENCY_MS)} |"
            )
            lines.append(
                f"| {mode}, 1 client: the target itself, at most Pgpool-II's "
                "latency in the same run | run benchmarks/cache_latency_vs_pgpool.py "
                "(with --busy-poll TIME for busy polling) | see there |"
            )
    return "\n".join(lines)


def parse_arguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="pgbench on 100 hot rows: direct, proxy without cache, "
        "proxy with the shmem cache, proxy with memcached."
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per pgbench run (default 10)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="repetitions of every run; the table shows medians (default 3)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=3.0,
        help="seconds of unrecorded pgbench per configuration and protocol "
        "before measuring (default 3)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2-second runs, 1 repetition: a smoke test"
    )
    parser.add_argument("--clients", default="16,1", help="client counts (default 16,1)")
    parser.add_argument(
        "--modes",
        default="simple,prepared",
        help="pgbench -M values, from simple,extended,prepared (default simple,prepared)",
    )
    parser.add_argument(
        "--only",
        default=",".join(CONFIGURATIONS),
        help="configurations, from direct,nocache,shmem,memcached (default all)",
    )
    add_proxy_arguments(parser, proxy_root=False)
    parser.add_argument(
        "--profile",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="after the runs, sample the shmem proxy (else the memcached one) "
        "with py-spy under 16 clients of cache hits, in the first of "
        "--modes, and print its hot spots "
        "(raw stacks to PATH, default in the kept log directory)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.repeat, args.warmup = 2.0, 1, 1.0
    if args.duration < 1 or args.repeat < 1:
        parser.error("--duration must be at least 1 and --repeat at least 1")
    args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.only = [c.strip() for c in args.only.split(",") if c.strip()]
    if set(args.modes) - set(MODES) or not args.modes:
        parser.error(f"--modes: choose from {','.join(MODES)}")
    if set(args.only) - set(CONFIGURATIONS) or not args.only:
        parser.error(f"--only: choose from {','.join(CONFIGURATIONS)}")
    if args.profile is not None and not {"shmem", "memcached"} & set(args.only):
        parser.error("--profile needs the shmem or the memcached configuration")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_arguments(argv)
    return run_guarded(
        "query_cache_bench",
        args.keep_logs,
        lambda workdir: CacheBench(args, workdir),
        lambda bench, workdir: _measure(args, bench, workdir),
    )


def _measure(args: argparse.Namespace, bench, workdir: str) -> Tuple[int, bool]:
    started_at = datetime.datetime.now(datetime.timezone.utc)
    machine = machine_description(args.python, shutil.which("pgbench") or "pgbench")
    total = args.repeat * len(args.modes) * len(args.clients) * len(args.only)
    print(
        f"starting the cluster; {total} runs of {args.duration:g} s follow (logs in {workdir})",
        flush=True,
    )
    bench.start()
    bench.warm_up()
    runs = run_all(bench)
    summaries = summarise(runs, args)
    print()
    print(
        f"{started_at:%Y-%m-%d %H:%M} UTC, {describe_machine(machine)}, "
        f"one primary (no standby), scale 10, 100 hot rows, "
        f"{args.duration:g} s per run, medians of {args.repeat}, "
        f"proxies on {machine['proxy_python']}, proxy code {source_description(ROOT)}"
    )
    print()
    print(markdown_table(summaries))
    print()
    print(targets_table(summaries))
    ok = not any(r.error for r in runs)
    if args.profile is not None:
        target = "shmem" if "shmem" in args.only else "memcached"
        mode = args.modes[0]
        output = args.profile or os.path.join(workdir, f"{target}.pyspy.txt")
        print(f"\npy-spy on the {target} proxy, 16 clients, {mode} protocol, all hits:")
        profile_proxy(
            bench.pgbench,
            bench.proxies[target],
            Workload(
                "hot100", f"100 hot rows, {target} cache, -M {mode}", 16, tuple(bench.options(mode))
            ),
            max(args.duration, 12.0),
            output,
        )
        ok = ok and bool(args.profile)
    return (0 if ok else 1), ok


if __name__ == "__main__":
    sys.exit(main())
