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
import tempfile
import time

import harness  # noqa: F401 - puts this checkout first on sys.path
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tests.inmemory import MemoryProxy
from tests.wire import md5_answer
from twisted_pgpool.config import config_from_dict
from twisted_pgpool.proxy.frontend import FrontendFactory
from twisted_pgpool.wire import messages

USER, PASSWORD, DATABASE = "md5user", "md5pass", "app"
READY = messages.ready_for_query()
#: What PostgreSQL 15 reports at login.
PARAMETERS = {
    "application_name": "pgbench", "client_encoding": "UTF8", "DateStyle": "ISO, MDY",
    "default_transaction_read_only": "off", "in_hot_standby": "off",
    "integer_datetimes": "on", "IntervalStyle": "postgres", "is_superuser": "off",
    "server_encoding": "UTF8", "server_version": "15.18", "session_authorization": USER,
    "standard_conforming_strings": "on", "TimeZone": "UTC",
}
LOGIN = (messages.authentication_ok()
         + b"".join(messages.parameter_status(name, "" if name == "application_name" else value)
                    for name, value in PARAMETERS.items())
         + messages.backend_key_data(4242, 17) + READY)
ROW = (messages.row_description(["abalance"], 23)
       + messages.data_row(["0"]) + messages.command_complete("SELECT 1") + READY)
#: The server's answer to the reset: DISCARD ALL (application_name back to
#: its default), then the last client's settings applied again.
RESET_REPLY = (messages.parameter_status("application_name", "")
               + messages.command_complete("DISCARD ALL") + READY
               + messages.parameter_status("application_name", "pgbench")
               + messages.command_complete("SET") + READY)
#: Only the settings (the first client of a connection).
SETTINGS_REPLY = (messages.row_description(["set_config"], 25)
                  + messages.data_row(["pgbench"])
                  + messages.command_complete("SELECT 1")
                  + messages.parameter_status("application_name", "pgbench") + READY)


class Churn:
    """
    A proxy core on a memory reactor with one pooled backend connection,
    and clients that come, run one query and go.
    """

    def __init__(self, directory: str) -> None:
        passwd = os.path.join(directory, "pool_passwd")
        with open(passwd, "w") as f:
            f.write(f"{USER}:md5{hashlib.md5((PASSWORD + USER).encode()).hexdigest()}\n")
        config = config_from_dict({
            "backends": [{"hostname": "127.0.0.1", "port": 5432}],
            "pool_passwd": passwd, "max_pool": 16, "num_init_children": 64})
        self.proxy = MemoryProxy(config)
        self.core = self.proxy.core
        self.factory = FrontendFactory(self.core)
        self.startup = messages.encode_startup_message(
            {"user": USER, "database": DATABASE, "application_name": "pgbench"})
        self.query = messages.query(
            "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;")
        self.terminate = messages.terminate()
        self.address = IPv4Address("TCP", "127.0.0.1", 40000)
        self.backend = None
        self.backend_transport = None
        self.connections = 0

    def cycle(self) -> None:
        transport = StringTransport(peerAddress=self.address)
        protocol = self.factory.buildProtocol(self.address)
        protocol.makeConnection(transport)
        protocol.dataReceived(self.startup)
        salt = transport.value()[9:13]
        protocol.dataReceived(messages.message(
            messages.PASSWORD_MESSAGE, md5_answer(PASSWORD, USER, salt) + b"\x00"))
        if self.backend is None:
            self.backend, self.backend_transport = self.proxy.accept_backend_connection()
            self.backend.dataReceived(LOGIN)
            self.backend.dataReceived(SETTINGS_REPLY)
        assert protocol.session is not None, transport.value()
        self.backend_transport.clear()
        protocol.dataReceived(self.query)
        self.backend.dataReceived(ROW)
        protocol.dataReceived(self.terminate)
        if self.backend_transport.value():
            self.backend.dataReceived(RESET_REPLY)
        self.backend_transport.clear()
        protocol.connectionLost(Failure(ConnectionDone()))
        assert self.core.pool.count(idle=True) == 1
        self.connections += 1


def run(count: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        churn = Churn(directory)
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
    parser.add_argument("--profile", action="store_true",
                        help="print cProfile's top functions instead")
    args = parser.parse_args()
    if args.profile:
        import cProfile
        import pstats
        profiler = cProfile.Profile()
        profiler.runcall(run, args.count)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
        return
    costs = sorted(run(args.count) for _ in range(args.repeat))
    print(f"one client connection (md5, pooled, one query): "
          f"{costs[len(costs) // 2]:6.1f} µs (best {costs[0]:.1f})")


if __name__ == "__main__":
    main()
