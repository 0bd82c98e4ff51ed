"""
Microbenchmark of the proxy's own Python work per statement: a client
session on in-memory transports (no sockets, no kernel), so the figure is
the relay, routing and framing cost alone.

    python benchmarks/relay_bench.py [--count N]

Prints microseconds per round trip (client Query in, server reply out) for
a pgbench-style simple query and for the extended protocol (Bind, Execute,
Sync of a prepared statement), with one backend and with load balancing
over two.
"""

from __future__ import annotations

import argparse
import time

import harness  # noqa: F401 - puts this checkout first on sys.path

from tests.inmemory import MemoryProxy
from twisted_pgpool.config import config_from_dict
from twisted_pgpool.proxy.session import CLIENT_WATCHED
from twisted_pgpool.wire import messages

READY = messages.ready_for_query()
ROW = (
    messages.row_description(["abalance"], 23)
    + messages.data_row(["4711"])
    + messages.command_complete("SELECT 1")
)
LOGIN = (
    messages.authentication_ok()
    + messages.parameter_status("server_version", "15.0")
    + messages.backend_key_data(4242, 17)
    + READY
)


def _session(backends: int, routed: bool):
    config = config_from_dict(
        {
            # Reads are routed but land on node 0: the other nodes have weight 0,
            # so no second connection is needed on the in-memory transports.
            "backends": [
                {"hostname": "127.0.0.1", "port": 5432 + i, "weight": 1 if i == 0 else 0}
                for i in range(backends)
            ],
            "pool_passwd": "",
            "connection_cache": False,
        }
    )
    proxy = MemoryProxy(config)
    core = proxy.core
    memory_client = proxy.client()
    client, client_transport = memory_client.protocol, memory_client.transport
    client.dataReceived(messages.encode_startup_message({"user": "u", "database": "d"}))
    backend, backend_transport = proxy.accept_backend_connection()
    backend.dataReceived(LOGIN)
    client_transport.clear()
    backend_transport.clear()
    session = client.session
    if routed:
        # What a session whose user is in pool_passwd gets with two or more
        # usable nodes: every statement classified and routed.
        session.router.load_balance = True
        session.direct = False
        session._read_your_writes = core.config.read_your_writes == "session"
        session.lb_node = core.balancer.choose("u", "d", "")
        session.client_message = session._routed_message
        client._framer.redirect(session.client_message, session.pass_to_primary, CLIENT_WATCHED)
    return client, client_transport, backend, backend_transport


def run(count: int, backends: int, extended: bool) -> float:
    routed = backends > 1
    client, client_transport, backend, backend_transport = _session(backends, routed)
    if extended:
        client.dataReceived(
            messages.parse("s1", "SELECT abalance FROM pgbench_accounts WHERE aid = $1")
            + messages.sync()
        )
        backend.dataReceived(b"1\x00\x00\x00\x04" + READY)
    # Requests are built before the clock starts: only the proxy is timed.
    if extended:
        requests = [
            messages.bind("", "s1", [str(i).encode()]) + messages.execute() + messages.sync()
            for i in range(1000)
        ]
        reply = b"2\x00\x00\x00\x04" + ROW + READY
    else:
        requests = [
            messages.query(f"SELECT abalance FROM pgbench_accounts WHERE aid = {i};")
            for i in range(1000)
        ]
        reply = ROW + READY
    client_data = client.dataReceived
    backend_data = backend.dataReceived
    start = time.perf_counter()
    for i in range(count):
        client_data(requests[i % 1000])
        backend_data(reply)
        client_transport.clear()
        backend_transport.clear()
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50000)
    args = parser.parse_args()
    for extended in (False, True):
        for backends in (1, 2):
            cost = run(args.count, backends, extended)
            kind = "Bind/Execute/Sync" if extended else "simple Query"
            mode = "routed" if backends > 1 else "direct"
            print(f"{kind:18} {mode:7}: {cost:6.2f} µs per round trip")


if __name__ == "__main__":
    main()
