#!/usr/bin/env python3
"""
What read-your-writes costs under load balancing: a mixed pgbench workload
(10 % writes, 90 % reads) through the proxy over a primary and a
streaming standby, with C{read_your_writes: off} and C{session} (and
C{session} with a C{causal_wait_timeout}), on one cluster.

Each client runs two custom scripts, picked at random per transaction
with weights 1 and 9::

    write.sql:  \\set aid random(1, 100000 * :scale)
                UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
    read.sql:   \\set aid random(1, 100000 * :scale)
                SELECT abalance FROM pgbench_accounts WHERE aid = :aid;

so each client (one session) writes about every tenth transaction, and
with C{session} its reads after that write may go to the standby only
once the standby has replayed it.

The proxy is the one of C{pgbench_compare.py --balanced}: both nodes,
weights primary 1 : standby 2, the replication check on.  A fresh proxy
is started for every run (so every run starts from the same state), gets
an unrecorded warm-up of the same workload, and then the counters of
C{SHOW POOL_NODES} and C{SHOW POOL_CAUSAL_STATS} are read before and after
the measured run; the figures are the differences.  Configurations
alternate within each repetition (off, session, ..., off, session, ...)
so that the machine's drifts hit all alike, and the summary gives medians.

The standby's share of reads is its C{select_cnt} over the sum of all
nodes' C{select_cnt} (which counts every SELECT a node ran; this
workload's writes are single statements, so every SELECT is a read the
proxy balanced).  The proxy draws a node per session, so with 16
sessions the share of C{off} wanders around 2/3 from run to run; the
share of the standby's sessions' reads that stayed there,
C{standby select_cnt / (standby select_cnt + reads_moved_to_primary)},
does not depend on that draw, and is what C{session} costs the standby.

Run from the repository root::

    python benchmarks/read_your_writes_bench.py                 # 3 x 10 s per configuration
    python benchmarks/read_your_writes_bench.py --quick         # smoke test
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import attr
from harness import (
    CLOCK_TICKS,
    DATABASE,
    SCALE,
    BenchmarkError,
    LocalCluster,
    Row,
    TwistdProcess,
    Workload,
    add_proxy_arguments,
    check_target,
    describe_machine,
    fmt,
    free_port,
    initialise,
    machine_description,
    measure,
    median,
    pgbench_path,
    postgres_cpu_ticks,
    postmaster_pid,
    proxy_settings,
    psql,
    run_guarded,
    run_pgbench,
    source_description,
    write_json,
    write_proxy_files,
)

WRITE_SCRIPT = """\
\\set aid random(1, 100000 * :scale)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
"""
READ_SCRIPT = """\
\\set aid random(1, 100000 * :scale)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
"""
WRITE_WEIGHT, READ_WEIGHT = 1, 9

#: name -> conf.yaml settings of that configuration.
CONFIGURATIONS: Dict[str, Dict[str, Any]] = {
    "off": {"read_your_writes": "off"},
    "session": {"read_your_writes": "session"},
    "session+wait2ms": {"read_your_writes": "session", "causal_wait_timeout": 2},
}


@attr.s(auto_attribs=True)
class Run:
    """
    One measured run: pgbench's and the CPU figures (L{Row}) and the
    proxy's counters over the run.
    """

    configuration: str
    clients: int
    repetition: int
    row: Row
    select_cnt: Dict[str, int] = attr.ib(factory=dict)
    causal: Dict[str, Dict[str, float]] = attr.ib(factory=dict)
    standby_cpu_us_per_txn: Optional[float] = None

    @property
    def others_share(self) -> Optional[float]:
        """
        The share of all CPUs taken by processes other than pgbench, the
        two PostgreSQL servers and the proxy (L{Row.others_cpu_share}
        counts the standby's server as "other").
        """
        row = self.row
        if (
            row.others_cpu_share is None
            or self.standby_cpu_us_per_txn is None
            or not row.transactions
            or not row.wall_seconds
        ):
            return row.others_cpu_share
        standby = self.standby_cpu_us_per_txn * row.transactions / 1e6
        return max(0.0, row.others_cpu_share - standby / (row.wall_seconds * (os.cpu_count() or 1)))

    @property
    def standby_ids(self) -> List[str]:
        return [n for n, c in self.causal.items() if c.get("role") == "standby"]

    @property
    def standby_share(self) -> Optional[float]:
        total = sum(self.select_cnt.values())
        if not total:
            return None
        return sum(self.select_cnt.get(n, 0) for n in self.standby_ids) / total

    def _standby_sum(self, column: str) -> float:
        return sum(self.causal[n][column] for n in self.standby_ids)

    @property
    def moved(self) -> int:
        return int(self._standby_sum("reads_moved_to_primary"))

    @property
    def probes(self) -> int:
        return int(self._standby_sum("position_queries"))

    @property
    def waited(self) -> int:
        return int(self._standby_sum("reads_waited"))

    @property
    def wait_ms(self) -> float:
        return self._standby_sum("wait_time_total_ms")

    @property
    def kept(self) -> Optional[float]:
        """
        Of the reads balanced to a standby, the share it served.
        """
        served = sum(self.select_cnt.get(n, 0) for n in self.standby_ids)
        return served / (served + self.moved) if served + self.moved else None


# -- the proxy's counters ---------------------------------------------------------


def show(cluster: LocalCluster, port: int, what: str) -> List[Dict[str, str]]:
    """
    C{SHOW what} through the proxy, as one dict per row.
    """
    result = psql(cluster, port, f"SHOW {what}", "-A", "-F", "\t", "-P", "footer=off")
    lines = result.stdout.splitlines()
    if result.returncode != 0 or not lines:
        raise BenchmarkError(f"SHOW {what} failed: {result.stdout.strip()}")
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def counters(cluster: LocalCluster, port: int) -> Tuple[Dict[str, int], Dict[str, Dict[str, Any]]]:
    """
    select_cnt per node, and the causal statistics per node.
    """
    select_cnt = {r["node_id"]: int(r["select_cnt"]) for r in show(cluster, port, "POOL_NODES")}
    causal: Dict[str, Dict[str, Any]] = {}
    for r in show(cluster, port, "POOL_CAUSAL_STATS"):
        causal[r["node_id"]] = {
            "role": r["role"],
            "replay_lsn": r["replay_lsn"],
            **{
                k: float(r[k])
                for k in (
                    "position_queries",
                    "reads_moved_to_primary",
                    "reads_waited",
                    "wait_time_total_ms",
                )
            },
        }
    return select_cnt, causal


def difference(
    before: Tuple[Dict[str, int], Dict[str, Dict[str, Any]]],
    after: Tuple[Dict[str, int], Dict[str, Dict[str, Any]]],
) -> Tuple[Dict[str, int], Dict[str, Dict[str, Any]]]:
    select_cnt = {n: c - before[0].get(n, 0) for n, c in after[0].items()}
    causal = {}
    for n, stats in after[1].items():
        old = before[1].get(n, {})
        causal[n] = {
            k: (v - old.get(k, 0) if isinstance(v, float) else v) for k, v in stats.items()
        }
    return select_cnt, causal


# -- the runs -----------------------------------------------------------------------


@attr.s(auto_attribs=True, eq=False)
class Bench:
    args: argparse.Namespace
    workdir: str
    cluster: LocalCluster = attr.ib(factory=lambda: LocalCluster(with_standby=True))
    pgbench: str = "pgbench"
    proxy: Optional[TwistdProcess] = None
    runs: int = 0

    def start(self) -> None:
        cluster = self.cluster
        cluster.start()
        self.pgbench = pgbench_path(cluster)
        print(f"pgbench -i -s {SCALE}", flush=True)
        initialise(cluster, self.pgbench)
        cluster.psql(cluster.primary, "VACUUM ANALYZE pgbench_accounts", database=DATABASE)
        for name, text in (("write.sql", WRITE_SCRIPT), ("read.sql", READ_SCRIPT)):
            with open(os.path.join(self.workdir, name), "w", encoding="utf-8") as f:
                f.write(text)

    @property
    def options(self) -> List[str]:
        return [
            "-f",
            f"{os.path.join(self.workdir, 'write.sql')}@{WRITE_WEIGHT}",
            "-f",
            f"{os.path.join(self.workdir, 'read.sql')}@{READ_WEIGHT}",
        ]

    def start_proxy(self, configuration: str) -> TwistdProcess:
        self.runs += 1
        rundir = os.path.join(self.workdir, f"run{self.runs:02d}-{configuration}")
        os.makedirs(rundir)
        port = free_port()
        # No PCP listener: its default port, 9898, may belong to another
        # proxy on the machine, and twistd would then exit.
        settings = {"pcp_port": 0, **proxy_settings(self.args), **CONFIGURATIONS[configuration]}
        config_path = write_proxy_files(rundir, self.cluster, port, settings, balanced=True)
        self.proxy = TwistdProcess(
            "proxy",
            self.args.python,
            ["pgpool", "-c", config_path],
            port,
            rundir,
            self.args.proxy_root,
        )
        self.proxy.start()
        check_target(self.cluster, "proxy", port)
        return self.proxy

    def stop_proxy(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None

    def run_one(self, configuration: str, clients: int, repetition: int) -> Run:
        cluster = self.cluster
        proxy = self.start_proxy(configuration)
        try:
            if self.args.warmup >= 1:
                run_pgbench(self.pgbench, proxy.port, clients, self.args.warmup, self.options)
            before = counters(cluster, proxy.port)
            standby_pid = postmaster_pid(cluster.standby)
            standby_before = postgres_cpu_ticks(standby_pid) if standby_pid else None
            workload = Workload("rw", "10% writes / 90% reads", clients, self.options)
            row = measure(
                self.pgbench,
                "proxy",
                proxy.port,
                proxy,
                cluster,
                postmaster_pid(cluster.primary),
                workload,
                self.args.duration,
            )
            standby_after = postgres_cpu_ticks(standby_pid) if standby_pid else None
            after = counters(cluster, proxy.port)
        finally:
            self.stop_proxy()
        select_cnt, causal = difference(before, after)
        run = Run(configuration, clients, repetition, row, select_cnt, causal)
        if standby_before is not None and standby_after is not None and row.transactions:
            run.standby_cpu_us_per_txn = (
                (standby_after - standby_before) / CLOCK_TICKS * 1e6 / row.transactions
            )
        return run

    def stop(self) -> None:
        self.stop_proxy()
        self.cluster.stop()


def describe(run: Run) -> str:
    row = run.row
    if row.tps is None:
        return f"error: {row.error}"
    text = (
        f"{row.tps:,.0f} tps, {row.latency_ms:.3f} ms, "
        f"{fmt(row.proxy_cpu_us_per_txn, '.1f')} µs proxy CPU/txn, "
        f"standby share {fmt(run.standby_share, '.1%')}, kept {fmt(run.kept, '.1%')}, "
        f"moved {run.moved:,}, probes {run.probes:,}, waited {run.waited:,} "
        f"({run.wait_ms:.1f} ms)"
    )
    if row.error:
        text += f" (!) {row.error}"
    return text


def _ratio(value: Optional[float], reference: Optional[float]) -> Optional[float]:
    return value / reference if value is not None and reference else None


def summary_table(
    runs: Sequence[Run], configurations: Sequence[str], clients: Sequence[int]
) -> str:
    lines = [
        "| clients | read_your_writes | TPS | × off | mean latency ms | proxy CPU µs/txn "
        "| standby share of reads | × off | standby reads kept | reads moved to primary "
        "| position queries | reads waited | wait ms total | standby CPU µs/txn | others' CPU |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for count in clients:
        medians: Dict[str, Dict[str, Optional[float]]] = {}
        for name in configurations:
            chosen = [r for r in runs if r.configuration == name and r.clients == count]
            medians[name] = {
                "tps": median([r.row.tps for r in chosen]),
                "latency": median([r.row.latency_ms for r in chosen]),
                "cpu": median([r.row.proxy_cpu_us_per_txn for r in chosen]),
                "share": median([r.standby_share for r in chosen]),
                "kept": median([r.kept for r in chosen]),
                "moved": median([r.moved for r in chosen]),
                "probes": median([r.probes for r in chosen]),
                "waited": median([r.waited for r in chosen]),
                "wait_ms": median([r.wait_ms for r in chosen]),
                "standby_cpu": median([r.standby_cpu_us_per_txn for r in chosen]),
                "others": median([r.others_share for r in chosen]),
            }
        off = medians.get("off", {})
        for name in configurations:
            m = medians[name]
            tps_ratio = _ratio(m["tps"], off.get("tps"))
            share_ratio = _ratio(m["share"], off.get("share"))
            lines.append(
                f"| {count} | {name} | {fmt(m['tps'], ',.0f')} | {fmt(tps_ratio, '.2f')} | "
                f"{fmt(m['latency'], '.3f')} | {fmt(m['cpu'], '.1f')} | {fmt(m['share'], '.1%')} | "
                f"{fmt(share_ratio, '.2f')} | {fmt(m['kept'], '.1%')} | {fmt(m['moved'], ',.0f')} | "
                f"{fmt(m['probes'], ',.0f')} | {fmt(m['waited'], ',.0f')} | "
                f"{fmt(m['wait_ms'], ',.1f')} | {fmt(m['standby_cpu'], '.0f')} | "
                f"{fmt(m['others'], '.0%')} |"
            )
    return "\n".join(lines)


def runs_table(runs: Sequence[Run]) -> str:
    lines = [
        "| clients | rep | read_your_writes | TPS | mean latency ms | proxy CPU µs/txn "
        "| standby share | kept | moved | position queries | waited | wait ms |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r.clients} | {r.repetition} | {r.configuration} | {fmt(r.row.tps, ',.0f')} | "
            f"{fmt(r.row.latency_ms, '.3f')} | {fmt(r.row.proxy_cpu_us_per_txn, '.1f')} | "
            f"{fmt(r.standby_share, '.1%')} | {fmt(r.kept, '.1%')} | {r.moved:,} | "
            f"{r.probes:,} | {r.waited:,} | {r.wait_ms:.1f} |"
        )
    return "\n".join(lines)


def parse_arguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="read_your_writes off vs session under a 10%-write pgbench "
        "workload through the proxy over a primary and a standby."
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per measured run (default 10)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of unrecorded warm-up (same workload) on each fresh proxy (default 2)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per configuration and client count (default 3)"
    )
    parser.add_argument("--clients", default="16,64", help="client counts (default 16,64)")
    parser.add_argument(
        "--configurations",
        default="off,session,session+wait2ms",
        help=f"from {','.join(CONFIGURATIONS)} (default all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one 2-second run of each, 1-second warm-up: a smoke test",
    )
    add_proxy_arguments(parser)
    parser.add_argument(
        "--json",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="also write every run as JSON (default benchmarks/results/ryw-<timestamp>.json)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.repeat = 2.0, 1.0, 1
    args.proxy_root = os.path.abspath(args.proxy_root)
    try:
        args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--clients: expected numbers separated by commas, got {args.clients!r}")
    args.configurations = [c.strip() for c in args.configurations.split(",") if c.strip()]
    if not args.configurations or set(args.configurations) - set(CONFIGURATIONS):
        parser.error(f"--configurations: choose from {','.join(CONFIGURATIONS)}")
    if args.duration < 1 or args.repeat < 1 or not args.clients:
        parser.error("--duration must be at least 1 s, --repeat and --clients at least 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_arguments(argv)
    return run_guarded(
        "read_your_writes_bench",
        args.keep_logs,
        lambda workdir: Bench(args, workdir),
        lambda bench, workdir: _measure(args, bench, workdir),
    )


def _measure(args: argparse.Namespace, bench, workdir: str) -> Tuple[int, bool]:
    runs: List[Run] = []
    total = args.repeat * len(args.clients) * len(args.configurations)
    print(
        f"starting the cluster; {total} runs of {args.duration:g} s follow (logs in {workdir})",
        flush=True,
    )
    started_at = datetime.datetime.now(datetime.timezone.utc)
    machine = machine_description(args.python, shutil.which("pgbench") or "pgbench")
    bench.start()
    for clients in args.clients:
        for repetition in range(1, args.repeat + 1):
            for name in args.configurations:
                run = bench.run_one(name, clients, repetition)
                runs.append(run)
                print(f"  c={clients:<3} rep {repetition} {name:16} {describe(run)}", flush=True)
    code = source_description(args.proxy_root)
    print()
    print(
        f"{started_at:%Y-%m-%d %H:%M} UTC, {describe_machine(machine)}, scale {SCALE}, {args.duration:g} s per run after a "
        f"{args.warmup:g} s warm-up, {args.repeat} runs per configuration, alternating; "
        f"proxy on {machine['proxy_python']}, code {code}; weights primary 1 : standby 2; "
        f"pgbench -f write.sql@{WRITE_WEIGHT} -f read.sql@{READ_WEIGHT}"
    )
    print()
    print("medians:\n")
    print(summary_table(runs, args.configurations, args.clients))
    print("\nevery run:\n")
    print(runs_table(runs))
    if args.json is not None:
        write_json(
            args.json,
            f"ryw-{started_at:%Y%m%dT%H%M%S}.json",
            {
                "started_at": started_at.isoformat(),
                "machine": machine,
                "proxy_code": code,
                "duration": args.duration,
                "warmup": args.warmup,
                "runs": [
                    {
                        "configuration": r.configuration,
                        "clients": r.clients,
                        "repetition": r.repetition,
                        "row": attr.asdict(r.row),
                        "select_cnt": r.select_cnt,
                        "causal": r.causal,
                        "standby_share": r.standby_share,
                        "kept": r.kept,
                        "standby_cpu_us_per_txn": r.standby_cpu_us_per_txn,
                    }
                    for r in runs
                ],
            },
        )
    ok = not any(r.row.error for r in runs)
    return (0 if ok else 1), ok


if __name__ == "__main__":
    sys.exit(main())
