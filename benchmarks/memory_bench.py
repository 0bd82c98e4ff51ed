"""
The proxy's resident memory while clients send it large messages (issue
13, finding 4), measured on a real proxy process (C{VmRSS} from
C{/proc/PID/status}, sampled every 5 ms) against a throw-away local
primary and standby.

    python benchmarks/memory_bench.py [--size-mb 64] [--sessions 4]
        [--proxy-root DIR] [--announce-send-mb 200]

Scenarios, each against a fresh proxy, after one warm-up session:

- C{direct query}: a proxy with one node; N sessions at once each send a
  Query of S MiB (C{SELECT length('xxx...')}) and read its answer.
- C{direct bind}: the same with Parse/Bind/Execute/Sync, the Bind
  carrying one bytea parameter of S MiB.
- C{routed bind}: two nodes, load balancing, clients authenticated by
  the proxy (so each session may use both nodes): N sessions each send
  such a Bind.
- C{routed query (read whole)}: N sessions each send a 15 MiB Query,
  which a routing session reads whole to classify (just under the default
  C{max_buffered_message_length}).
- C{routed 1 GiB query}: two nodes, load balancing; one session announces
  a 1 GiB Query (within C{max_message_length}) and sends up to
  C{--announce-send-mb} of it.  A proxy that refuses it answers at once;
  one that buffers it grows by what was sent.

For each: the RSS before (baseline), its peak during, its growth, and the
RSS once every session is closed (and its difference from the baseline).
C{--proxy-root} runs the proxy from another source tree (C{git archive
<commit> | tar -x -C DIR}), to compare with an earlier commit.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from harness import LocalCluster, RssSampler, exit_on_signals, settled_rss

from tests.rawclient import RawClient, all_at_once, long_bind_batch, long_query, row_values
from tests.support import ProxyProcess
from tests.wire import error_fields

MIB = 1024 * 1024
#: A Query a routing session must read whole: just under the default
#: max_buffered_message_length (16 MiB).
WHOLE_SIZE = 15 * MIB


def proxy_for(cluster: LocalCluster, routed: bool, root: Optional[str]) -> ProxyProcess:
    backends = cluster.backends_config()
    config: Dict[str, Any] = {
        "backends": backends if routed else backends[:1],
        "pool_passwd": "pool_passwd" if routed else "",
        "sr_check_user": "postgres",
    }
    argv = None
    if root is not None:
        argv = [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {root!r}); "
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "--logfile={log}",
            "pgpool",
            "-c",
            "{config}",
        ]
    proxy = ProxyProcess(config, extra_files={"pool_passwd": "app:TEXTapp\n"}, argv=argv)
    proxy.start()
    return proxy


def connect(proxy: ProxyProcess, routed: bool) -> RawClient:
    if routed:
        return RawClient.taken_over(proxy.dsn())
    return RawClient.trusted(proxy.host, proxy.port)


def run_sessions(
    proxy: ProxyProcess,
    routed: bool,
    sessions: int,
    message: bytes,
    check: Callable[[List], Optional[str]],
) -> List[str]:
    """
    Open C{sessions} sessions, have each send C{message} (in 256 KiB
    pieces) and read its answer, all at once; close them.  Returns the
    problems found.
    """
    clients = [connect(proxy, routed) for _ in range(sessions)]
    answers = all_at_once(clients, message)
    for client in clients:
        client.close()
    problems = []
    for answer in answers:
        problem = repr(answer) if isinstance(answer, Exception) else check(answer)
        if problem:
            problems.append(problem)
    return problems


def expect_length(size: int) -> Callable[[List], Optional[str]]:
    def check(received: List) -> Optional[str]:
        values = row_values(received)
        if values != [str(size).encode()]:
            errors = [error_fields(p) for t, p in received if t == ord("E")]
            return f"expected length {size}, got {values} {errors}"
        return None

    return check


def measure(
    name: str,
    cluster: LocalCluster,
    routed: bool,
    root: Optional[str],
    body: Callable[[ProxyProcess], List[str]],
) -> Dict[str, Any]:
    proxy = proxy_for(cluster, routed, root)
    try:
        pid = proxy.pid
        assert pid is not None
        # Warm-up: the first session imports and allocates what every
        # session shares.
        run_sessions(proxy, routed, 1, long_query(1024), expect_length(1024 - 23))
        baseline = settled_rss(pid)
        started = time.monotonic()
        with RssSampler(pid) as sampler:
            problems = body(proxy)
        elapsed = time.monotonic() - started
        after = settled_rss(pid)
        return {
            "scenario": name,
            "baseline": baseline,
            "peak": sampler.peak,
            "after": after,
            "seconds": elapsed,
            "problems": problems,
        }
    finally:
        proxy.stop()


def announce_gib(send_bytes: int) -> Callable[[ProxyProcess], List[str]]:
    def body(proxy: ProxyProcess) -> List[str]:
        client = connect(proxy, True)
        try:
            length = (1 << 30) - 1
            header = b"Q" + length.to_bytes(4, "big")
            client.send(header)
            started = time.monotonic()
            # Stream what a client would, unless the proxy has refused.
            client.send_long(b"x" * send_bytes)
            try:
                client.sock.settimeout(5)
                received = client.until_ready()
            except (ConnectionError, OSError) as e:
                return [f"no answer: {e!r}"]
            fields = [error_fields(p) for t, p in received if t == ord("E")]
            took = time.monotonic() - started
            if not fields or fields[-1].get("C") != "54000":
                return [f"expected FATAL 54000, got {fields}"]
            return [f"(FATAL 54000 after {took:.2f} s: {fields[-1].get('M')})"]
        finally:
            client.close()

    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--proxy-root", default=None)
    parser.add_argument("--announce-send-mb", type=int, default=200)
    args = parser.parse_args()
    size = args.size_mb * MIB
    exit_on_signals()
    cluster = LocalCluster()
    try:
        cluster.start()
        results = [
            measure(
                "direct query",
                cluster,
                False,
                args.proxy_root,
                lambda proxy: run_sessions(
                    proxy, False, args.sessions, long_query(size), expect_length(size - 23)
                ),
            ),
            measure(
                "direct bind",
                cluster,
                False,
                args.proxy_root,
                lambda proxy: run_sessions(
                    proxy, False, args.sessions, long_bind_batch(size), expect_length(size)
                ),
            ),
            measure(
                "routed bind",
                cluster,
                True,
                args.proxy_root,
                lambda proxy: run_sessions(
                    proxy, True, args.sessions, long_bind_batch(size), expect_length(size)
                ),
            ),
            measure(
                "routed query (read whole)",
                cluster,
                True,
                args.proxy_root,
                lambda proxy: run_sessions(
                    proxy,
                    True,
                    args.sessions,
                    long_query(WHOLE_SIZE),
                    expect_length(WHOLE_SIZE - 23),
                ),
            ),
            measure(
                "routed 1 GiB query",
                cluster,
                True,
                args.proxy_root,
                announce_gib(args.announce_send_mb * MIB),
            ),
        ]
    finally:
        cluster.stop()
    print(
        f"{args.sessions} sessions x {args.size_mb} MiB "
        f"(1 GiB query: up to {args.announce_send_mb} MiB sent); RSS in MB"
    )
    print("| scenario | baseline | peak | growth | after close | after − baseline | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['scenario']} | {r['baseline'] / 1e6:.1f} | {r['peak'] / 1e6:.1f} | "
            f"{(r['peak'] - r['baseline']) / 1e6:+.1f} | {r['after'] / 1e6:.1f} | "
            f"{(r['after'] - r['baseline']) / 1e6:+.1f} | {r['seconds']:.1f} |"
        )
    for r in results:
        for problem in r["problems"]:
            print(f"{r['scenario']}: {problem}")


if __name__ == "__main__":
    main()
