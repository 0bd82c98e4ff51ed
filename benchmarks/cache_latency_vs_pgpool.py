"""
Same-run 1-client latency of cache hits: a direct connection, Pgpool-II
(Debian's pgpool2 package, /usr/sbin/pgpool, shmem query cache) and
twisted_pgpool (shmem query cache), on 100 hot rows of pgbench_accounts.

The issue's latency target is "at most Pgpool-II's in the same run"; this
runs the three alternately on one fresh primary (3 repetitions of 8 s after
a warm-up that fills both caches) and prints the medians.  Run as root (the
servers and Pgpool-II drop to the postgres user):

    python benchmarks/cache_latency_vs_pgpool.py
    python benchmarks/cache_latency_vs_pgpool.py --pypy /path/to/pypy-venv/bin/python
    python benchmarks/cache_latency_vs_pgpool.py --reactor epoll
    python benchmarks/cache_latency_vs_pgpool.py --busy-poll 200us

With C{--pypy}, a second twisted_pgpool runs the same code on that
interpreter (a virtualenv with the proxy's dependencies, see
docs/performance.md) and joins the alternation; with C{--reactor NAME}
too, the proxy runs on that reactor under each interpreter as well (twistd
pgpool's default is pgpool-epoll; C{--reactor epoll} gives Twisted's
stock one).  With C{--busy-poll TIME}, one more twisted_pgpool (per
interpreter) runs with C{busy_poll_time: TIME}.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from harness import (
    LocalCluster,
    exit_on_signals,
    free_port,
    initialise,
    listening,
    parse_pgbench,
    pgbench_path,
    run_pgbench,
    wait_for,
)

from tests.support import ProxyProcess

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--pypy", metavar="PYTHON", help="also run twisted_pgpool on this interpreter")
parser.add_argument(
    "--reactor",
    metavar="NAME",
    help="also run twisted_pgpool with twistd --reactor=NAME (e.g. pgpool-epoll)",
)
parser.add_argument(
    "--busy-poll",
    metavar="TIME",
    help="also run twisted_pgpool with busy_poll_time: TIME (e.g. 200us)",
)
parser.add_argument("--repeat", type=int, default=3)
parser.add_argument("--duration", type=int, default=8)
args = parser.parse_args()
exit_on_signals()
WORK = tempfile.mkdtemp(prefix="cache_latency_")
os.chmod(WORK, 0o755)
cluster = LocalCluster(with_standby=False)
proxies = []
pg = None
try:
    cluster.start()
    p = cluster.primary
    pgbench = pgbench_path(cluster)
    initialise(cluster, pgbench)
    open(os.path.join(WORK, "hot.sql"), "w").write(
        "\\set aid random(1, 100)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n"
    )
    # Pgpool-II
    d = os.path.join(WORK, "pgpool")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d + "/oid")
    os.makedirs(d + "/sock")
    os.makedirs(d + "/log")
    os.system(f"chown -R postgres {d}")
    pport, pcpport = free_port(), free_port()
    conf = f"""
listen_addresses = '127.0.0.1'
port = {pport}
pcp_listen_addresses = ''
pcp_port = {pcpport}
unix_socket_directories = '{d}/sock'
pcp_socket_dir = '{d}/sock'
backend_clustering_mode = 'raw'
backend_hostname0 = '{p.host}'
backend_port0 = {p.port}
backend_weight0 = 1
backend_flag0 = 'ALWAYS_PRIMARY|DISALLOW_TO_FAILOVER'
num_init_children = 32
max_pool = 4
enable_pool_hba = off
load_balance_mode = off
sr_check_period = 0
health_check_period = 0
memory_cache_enabled = on
memqcache_method = 'shmem'
memqcache_total_size = 64MB
memqcache_oiddir = '{d}/oid'
pid_file_name = '{d}/pgpool.pid'
logdir = '{d}/log'
log_destination = 'stderr'
"""
    open(d + "/pgpool.conf", "w").write(conf)
    open(d + "/pcp.conf", "w").write("")
    os.system(f"chown -R postgres {d}")
    pg = subprocess.Popen(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            "/usr/sbin/pgpool",
            "-n",
            "-f",
            d + "/pgpool.conf",
            "-F",
            d + "/pcp.conf",
            "-D",
        ],
        stdout=open(d + "/out.log", "w"),
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: listening(pport), 10.0, "Pgpool-II to listen", interval=0.1)
    # twisted_pgpool
    backends = cluster.backends_config()[:1]
    targets = {"direct": (p.host, p.port), "pgpool-II": ("127.0.0.1", pport)}

    def start_proxy(name, python=sys.executable, *options, **settings):
        """
        Start a twisted_pgpool with the shmem cache under C{python}, with
        twistd C{options} and more configuration C{settings}.
        """
        proxy = ProxyProcess(
            {
                "backends": backends,
                "pool_passwd": "",
                "memory_cache_enabled": True,
                "num_init_children": 32,
                **settings,
            },
            extra_files={},
            argv=[
                python,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "--logfile={log}",
                *options,
                "pgpool",
                "-c",
                "{config}",
            ],
        )
        proxy.start()
        proxies.append(proxy)
        targets[name] = (proxy.host, proxy.port)

    for python, on in [(sys.executable, "")] + ([(args.pypy, " on PyPy")] if args.pypy else []):
        start_proxy(f"twisted_pgpool{on}", python)
        if args.reactor:
            start_proxy(
                f"twisted_pgpool{on}, --reactor={args.reactor}", python, f"--reactor={args.reactor}"
            )
        if args.busy_poll:
            start_proxy(
                f"twisted_pgpool{on}, busy_poll_time={args.busy_poll}",
                python,
                busy_poll_time=args.busy_poll,
            )

    def run(host, port, seconds, clients):
        """
        (mean latency in ms, TPS) of C{clients} pgbench clients on the hot
        rows for C{seconds}, as the superuser (trusted, no password).
        """
        out = run_pgbench(
            pgbench,
            port,
            clients,
            seconds,
            ["-f", os.path.join(WORK, "hot.sql")],
            user="postgres",
            host=host,
        )
        parsed = parse_pgbench(out.stdout)
        return parsed.latency_ms, parsed.tps

    for h, pt in targets.values():
        run(h, pt, 3, 1)  # warm-up: fills the caches
    results = {(n, c): [] for n in targets for c in (1,)}
    for rep in range(args.repeat):
        for clients in (1,):
            for name, (h, pt) in targets.items():
                results[(name, clients)].append(run(h, pt, args.duration, clients))
                print(rep, clients, name, results[(name, clients)][-1], flush=True)
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    for (name, clients), vals in results.items():
        lat = statistics.median(v[0] for v in vals)
        tps = statistics.median(v[1] for v in vals)
        print(f"| {clients} | {name} | {tps:,.0f} | {lat:.3f} |")
finally:
    for started in proxies:
        started.stop()
    if pg is not None:
        pg.terminate()
        pg.wait(10)
    cluster.stop()
    shutil.rmtree(WORK, ignore_errors=True)
