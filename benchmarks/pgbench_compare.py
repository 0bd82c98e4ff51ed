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
import os
import shutil
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import attr
from harness import (
    CHURN_PASSWORD,
    CHURN_USER,
    DATABASE,
    SCALE,
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
    postmaster_pid,
    profile_proxy,
    proxy_settings,
    psql,
    run_guarded,
    run_pgbench,
    source_description,
    write_json,
    write_proxy_files,
)

TARGETS = ("direct", "forwarder", "baseline", "proxy")
#: The targets that run twisted_pgpool.
PROXIES = ("baseline", "proxy")
WORKLOADS = ("select", "prepared", "tpcb", "churn")


# -- what to run -----------------------------------------------------------


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
            Workload(
                "churn",
                "select-only, new connection per txn (-C -S)",
                16,
                ("-C", "-S"),
                user=CHURN_USER,
                password=CHURN_PASSWORD,
            )
        )
    return workloads


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
            f"{fmt(row.tps, ',.0f')}{flag} | {fmt(row.latency_ms, '.3f')} | "
            f"{fmt(row.ratio_to_direct, '.2f')} | {fmt(row.ratio_to_forwarder, '.2f')} | "
            f"{fmt(row.proxy_cpu_us_per_txn, '.1f')} | {fmt(row.proxy_sys_us_per_txn, '.1f')} | "
            f"{busy} | {fmt(row.backend_logins, ',d')} | {machine} | {others} |"
        )
    return "\n".join(lines)


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
        same = [
            row
            for rows in rounds
            for row in rows
            if (row.target, row.workload, row.clients)
            == (first.target, first.workload, first.clients)
        ]
        others = [row.others_cpu_share for row in same if row.others_cpu_share is not None]
        logins = median([row.backend_logins for row in same])
        lines.append(
            f"| {first.description} | {first.clients} | {first.target} | "
            f"{fmt(median([row.tps for row in same]), ',.0f')} | "
            + " / ".join(fmt(row.tps, ",.0f") or "error" for row in same)
            + " | "
            f"{fmt(median([row.ratio_to_direct for row in same]), '.2f')} | "
            f"{fmt(median([row.proxy_cpu_us_per_txn for row in same]), '.1f')} | "
            f"{fmt(logins, ',.0f')} | "
            f"{'' if not others else format(max(others), '.0%')} |"
        )
    return "\n".join(lines)


# -- the whole run ---------------------------------------------------------------


def parse_arguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="pgbench against PostgreSQL directly, Twisted's raw forwarder "
        "and twisted_pgpool, in one run.",
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per pgbench run (-T; default 10)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2-second runs and a 1-second warm-up: a smoke test, not a measurement",
    )
    parser.add_argument(
        "--clients",
        default=None,
        help="client counts of the select-only runs (default 1,16,64; 16 with --profile)",
    )
    parser.add_argument(
        "--only",
        default="direct,forwarder,proxy",
        help="targets to run, from direct,forwarder,baseline,proxy "
        "(default direct,forwarder,proxy, and baseline with --baseline-root)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="workloads to run, from select,prepared,tpcb,churn (default all)",
    )
    parser.add_argument(
        "--churn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="include the connection-churn run, pgbench -C -S -c 16 (default on)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of unrecorded pgbench -S -c 16 per target before "
        "measuring (default 2; matters for PyPy's JIT)",
    )
    add_proxy_arguments(parser)
    parser.add_argument(
        "--baseline-root",
        default=None,
        metavar="DIR",
        help="also run the proxy from this source tree (target 'baseline', "
        "same settings) next to --proxy-root's, to compare two commits "
        "in one run",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run every workload N times (all targets each time) and add "
        "a table of the medians (default 1)",
    )
    parser.add_argument(
        "--balanced",
        action="store_true",
        help="put the standby behind the proxy too (weights "
        "primary 1 : standby 2, replication check on) "
        "and report each node's share of the reads",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="also write the results as JSON, by default to benchmarks/results/<timestamp>.json",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="instead of the comparison, sample the proxy with py-spy for "
        "--duration seconds under the first workload (by default "
        "pgbench -S -c 16) and print its hot spots (raw stacks to PATH, "
        "default in the kept log directory)",
    )
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


# -- the whole run, continued ---------------------------------------------------


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
        self.pgbench = pgbench_path(cluster)
        print(f"pgbench -i -s {SCALE}", flush=True)
        initialise(cluster, self.pgbench)
        self.ports["direct"] = cluster.primary.port
        if "forwarder" in targets:
            port = free_port()
            self.processes["forwarder"] = TwistdProcess(
                "forwarder",
                args.python,
                [
                    "portforward",
                    f"--port=tcp:{port}:interface=127.0.0.1",
                    "--host=127.0.0.1",
                    f"--dest_port={cluster.primary.port}",
                ],
                port,
                self.workdir,
            )
        for name, root in (("baseline", args.baseline_root), ("proxy", args.proxy_root)):
            if name not in targets:
                continue
            port = free_port()
            directory = os.path.join(self.workdir, name)
            os.makedirs(directory, exist_ok=True)
            config_path = write_proxy_files(
                directory, cluster, port, proxy_settings(args, root), balanced=args.balanced
            )
            self.processes[name] = TwistdProcess(
                name, args.python, ["pgpool", "-c", config_path], port, self.workdir, root
            )
        for name, process in self.processes.items():
            process.start()
            self.ports[name] = process.port
        for name in targets:
            check_target(cluster, name, self.ports[name])
            if args.warmup >= 1:
                run_pgbench(self.pgbench, self.ports[name], 16, args.warmup, ["-S"])

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
            row = measure(
                bench.pgbench,
                name,
                bench.ports[name],
                bench.processes.get(name),
                bench.cluster,
                postmaster_pid(bench.cluster.primary),
                workload,
                args.duration,
            )
            rows.append(row)
            status = (
                f"error: {row.error}"
                if row.error
                else (
                    f"{row.tps:,.0f} tps, {row.latency_ms:.3f} ms"
                    + (
                        f", {row.proxy_cpu_us_per_txn:.1f} µs CPU/txn"
                        if row.proxy_cpu_us_per_txn is not None
                        else ""
                    )
                )
            )
            print(
                f"  {workload.description:45} c={workload.clients:<3} {name:9} {status}", flush=True
            )
    add_ratios(rows)
    return rows


def print_read_split(cluster: LocalCluster, port: int) -> None:
    """
    Each node's share of the SELECTs it ran (select_cnt of SHOW POOL_NODES,
    which counts every SELECT sent to a node, those of writing transactions
    on the primary too), over the whole run.
    """
    result = psql(cluster, port, "SHOW POOL_NODES", "-At", "-F", " ")
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
    bench: Bench, rounds: List[List[Row]], started_at: datetime.datetime, machine: Dict[str, Any]
) -> None:
    args = bench.args
    code = source_description(args.proxy_root)
    baseline_code = (
        source_description(args.baseline_root) if args.baseline_root is not None else None
    )
    rows = [row for each in rounds for row in each]
    print()
    print(
        f"{started_at:%Y-%m-%d %H:%M %Z}, {describe_machine(machine)}, "
        f"scale {SCALE}, {args.duration:g} s per run, "
        f"proxies on {machine['proxy_python']}, proxy code {code}"
        + (f", baseline code {baseline_code}" if baseline_code is not None else "")
        + f", proxy settings {proxy_settings(args) or 'defaults'}"
        + (", both nodes behind the proxy (weights 1:2)" if args.balanced else "")
    )
    for number, each in enumerate(rounds, 1):
        print()
        if len(rounds) > 1:
            print(f"round {number} of {len(rounds)}:\n")
        print(markdown_table(each))
    if len(rounds) > 1:
        print(f"\nmedians of {len(rounds)} rounds:\n")
        print(median_table(rounds))
    if any(r.workload == "churn" for r in rows):
        print(
            "\nchurn TPS includes reconnection time (pgbench -C); "
            "every other TPS excludes the initial connection time."
        )
    if args.json is not None:
        write_json(
            args.json,
            f"{started_at:%Y%m%dT%H%M%S}.json",
            {
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
                "rows": [
                    {"round": number, **attr.asdict(r)}
                    for number, each in enumerate(rounds, 1)
                    for r in each
                ],
            },
        )


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_arguments(argv)
    workloads = build_workloads(args.workloads, args.clients)
    return run_guarded(
        "pgbench_compare",
        args.keep_logs,
        lambda workdir: Bench(args, workdir),
        lambda bench, workdir: _compare(args, workloads, bench, workdir),
    )


def _compare(
    args: argparse.Namespace, workloads: List[Workload], bench: "Bench", workdir: str
) -> Tuple[int, bool]:
    if args.profile is not None:
        print(f"starting the cluster and the proxy; py-spy follows (logs in {workdir})", flush=True)
        bench.start(["proxy"])
        output = args.profile or os.path.join(workdir, "proxy.pyspy.txt")
        profile_proxy(bench.pgbench, bench.processes["proxy"], workloads[0], args.duration, output)
        # The default output is inside workdir, which must then stay.
        return 0, bool(args.profile)
    runs = len(workloads) * len(args.only) * args.repeat
    print(
        f"starting the cluster; {runs} runs of {args.duration:g} s follow (logs in {workdir})",
        flush=True,
    )
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
