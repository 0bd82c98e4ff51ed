"""
Microbenchmark of the proxy's own Python work per client connection under
connection churn (what C{pgbench -C -S} does): on in-memory transports (no
sockets, no kernel, no reactor dispatch), so the figure is the proxy's code
alone.

    python benchmarks/churn_bench.py [--count N] [--profile]

Each cycle is one client connection with md5 authentication from
pool_passwd: startup packet, md5 challenge and answer, a pooled backend
connection checked out, the greeting, one simple query and its reply,
Terminate, and the reset of the backend connection (its reply included)
before the pool takes it back.  Prints microseconds per connection.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import tempfile
import time
from typing import Any, Dict, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.error import ConnectionDone  # noqa: E402
from twisted.internet.testing import MemoryReactorClock, StringTransport  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from twisted_pgpool.config import config_from_dict  # noqa: E402
from twisted_pgpool.proxy.frontend import FrontendFactory  # noqa: E402
from twisted_pgpool.service import ProxyCore  # noqa: E402
from twisted_pgpool.wire import messages  # noqa: E402

USER, PASSWORD, DATABASE = "md5user", "md5pass", "app"
READY = messages.ready_for_query()
#: What PostgreSQL 15 reports at login.
PARAMETERS = {
    "application_name": "pgbench",
    "client_encoding": "UTF8",
    "DateStyle": "ISO, MDY",
    "default_transaction_read_only": "off",
    "in_hot_standby": "off",
    "integer_datetimes": "on",
    "IntervalStyle": "postgres",
    "is_superuser": "off",
    "server_encoding": "UTF8",
    "server_version": "15.18",
    "session_authorization": USER,
    "standard_conforming_strings": "on",
    "TimeZone": "UTC",
}
LOGIN = (
    messages.authentication_ok()
    + b"".join(
        messages.parameter_status(name, "" if name == "application_name" else value)
        for name, value in PARAMETERS.items()
    )
    + messages.backend_key_data(4242, 17)
    + READY
)
ROW = (
    messages.row_description(["abalance"], 23)
    + messages.data_row(["0"])
    + messages.command_complete("SELECT 1")
    + READY
)
#: The server's answer to the reset: DISCARD ALL (application_name back to
#: its default), then the last client's settings applied again.
RESET_REPLY = (
    messages.parameter_status("application_name", "")
    + messages.command_complete("DISCARD ALL")
    + READY
    + messages.parameter_status("application_name", "pgbench")
    + messages.command_complete("SET")
    + READY
)
#: Only the settings (the first client of a connection).
SETTINGS_REPLY = (
    messages.row_description(["set_config"], 25)
    + messages.data_row(["pgbench"])
    + messages.command_complete("SELECT 1")
    + messages.parameter_status("application_name", "pgbench")
    + READY
)


def md5_answer(salt: bytes) -> bytes:
    inner = hashlib.md5((PASSWORD + USER).encode()).hexdigest().encode()
    return b"md5" + hashlib.md5(inner + salt).hexdigest().encode() + b"\x00"


class Churn:
    """
    A proxy core on a memory reactor with pooled backend connections, and
    clients that come, run one query and go.

    @param seed: issue 16's settings (what Pgpool-II's sample
        configuration gives): two nodes, the primary with weight 1 and the
        standby with 2, load balancing on, md5 required by C{pool_hba.conf},
        C{num_init_children} 80 and C{max_pool} 4.  Otherwise one node,
        md5 from pool_passwd, C{max_pool} 16, C{num_init_children} 64.
    """

    def __init__(self, directory: str, seed: bool = False) -> None:
        passwd = os.path.join(directory, "pool_passwd")
        with open(passwd, "w") as f:
            f.write(f"{USER}:md5{hashlib.md5((PASSWORD + USER).encode()).hexdigest()}\n")
        settings = {
            "backends": [{"hostname": "127.0.0.1", "port": 5432}],
            "pool_passwd": passwd,
            "max_pool": 16,
            "num_init_children": 64,
        }
        if seed:
            hba = os.path.join(directory, "pool_hba.conf")
            with open(hba, "w") as f:
                f.write("host all all 127.0.0.1/32 md5\n")
            settings.update(
                {
                    "backends": [
                        {"hostname": "127.0.0.1", "port": 5432, "weight": 1},
                        {"hostname": "127.0.0.1", "port": 5433, "weight": 2},
                    ],
                    "max_pool": 4,
                    "num_init_children": 80,
                    "load_balance_mode": True,
                    "enable_pool_hba": True,
                    "pool_hba_file": hba,
                }
            )
        config = config_from_dict(settings)
        self.reactor = MemoryReactorClock()
        self.core = ProxyCore.from_config(config, self.reactor)
        # The same draws of the load-balance node in every run, so that two
        # runs (two commits) compare the same sessions.
        self.core.balancer.random = random.Random(16).random
        self.factory = FrontendFactory(self.core)
        self.startup = messages.encode_startup_message(
            {"user": USER, "database": DATABASE, "application_name": "pgbench"}
        )
        self.query = messages.query("SELECT abalance FROM pgbench_accounts WHERE aid = 4711;")
        self.terminate = messages.terminate()
        self.address = IPv4Address("TCP", "127.0.0.1", 40000)
        #: Per node port: (the backend protocol, its transport).
        self.backends: Dict[int, Tuple[Any, StringTransport]] = {}
        self.connections = 0

    def _log_in_new_backends(self) -> None:
        """
        Answer the login (and the first client's settings) of the backend
        connections the proxy opened since the last call.
        """
        while len(self.reactor.tcpClients) > len(self.backends):
            host, port, factory, _, _ = self.reactor.tcpClients[len(self.backends)]
            backend = factory.buildProtocol(IPv4Address("TCP", host, port))
            transport = StringTransport()
            backend.makeConnection(transport)
            backend.dataReceived(LOGIN)
            transport.clear()  # the client's settings
            # What follows it (a load-balanced query) is answered by cycle().
            backend.dataReceived(SETTINGS_REPLY)
            self.backends[port] = (backend, transport)

    def cycle(self) -> None:
        transport = StringTransport(peerAddress=self.address)
        protocol = self.factory.buildProtocol(self.address)
        protocol.makeConnection(transport)
        protocol.dataReceived(self.startup)
        salt = transport.value()[9:13]
        protocol.dataReceived(messages.message(messages.PASSWORD_MESSAGE, md5_answer(salt)))
        self._log_in_new_backends()
        assert protocol.session is not None, transport.value()
        protocol.dataReceived(self.query)
        # A load-balanced query may open the standby's connection.
        self._log_in_new_backends()
        for backend, backend_transport in self.backends.values():
            if backend_transport.value():
                backend_transport.clear()
                backend.dataReceived(ROW)
        protocol.dataReceived(self.terminate)
        for backend, backend_transport in self.backends.values():
            if backend_transport.value():
                backend_transport.clear()
                backend.dataReceived(RESET_REPLY)
        protocol.connectionLost(Failure(ConnectionDone()))
        assert self.core.pool.count(idle=True) == len(self.backends)
        self.connections += 1


def run(count: int, seed: bool = False) -> float:
    with tempfile.TemporaryDirectory() as directory:
        churn = Churn(directory, seed)
        for _ in range(200):
            churn.cycle()
        start = time.process_time()
        for _ in range(count):
            churn.cycle()
        return (time.process_time() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--seed-settings",
        action="store_true",
        help="issue 16's settings: a primary (weight 1) and a standby "
        "(weight 2) load balanced, md5 through pool_hba.conf, "
        "num_init_children 80, max_pool 4",
    )
    parser.add_argument(
        "--profile", action="store_true", help="print cProfile's top functions instead"
    )
    args = parser.parse_args()
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(run, args.count, args.seed_settings)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
        return
    costs = sorted(run(args.count, args.seed_settings) for _ in range(args.repeat))
    print(
        f"one client connection (md5, pooled, one query): "
        f"{costs[len(costs) // 2]:6.1f} µs (best {costs[0]:.1f})"
    )


if __name__ == "__main__":
    main()
