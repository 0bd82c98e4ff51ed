"""
The C{pgpool-epoll} reactor (L{twisted_pgpool.reactor}): Twisted's epoll
reactor without the per-event log context.
"""

from __future__ import annotations

import socket
import sys
from typing import List

from twisted.internet.abstract import FileDescriptor
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import LocalCluster, ProxyProcess, cluster_or_skip, run_psql
from twisted_pgpool.reactor import ProxyReactor


class _Reader(FileDescriptor):
    """
    One end of a socket pair, read by the reactor under test.
    """

    def __init__(self, reactor: ProxyReactor, sock: socket.socket, fail: bool = False) -> None:
        super().__init__(reactor)
        self.socket = sock
        self.fail = fail
        self.received: List[bytes] = []
        self.lost: List[Failure] = []

    def fileno(self) -> int:
        return self.socket.fileno()

    def doRead(self) -> None:
        if self.fail:
            raise RuntimeError("a bug in a protocol")
        self.received.append(self.socket.recv(100))

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)
        self.reactor.removeReader(self)


class DispatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ProxyReactor()
        self.addCleanup(self.reactor._poller.close)
        self.left, self.right = socket.socketpair()
        self.addCleanup(self.left.close)
        self.addCleanup(self.right.close)

    def test_a_readable_socket_is_read(self) -> None:
        reader = _Reader(self.reactor, self.left)
        self.reactor.addReader(reader)
        self.right.send(b"hello")
        self.reactor.doIteration(1)
        self.assertEqual(reader.received, [b"hello"])

    def test_nothing_ready_nothing_read(self) -> None:
        reader = _Reader(self.reactor, self.left)
        self.reactor.addReader(reader)
        self.reactor.doIteration(0)
        self.assertEqual(reader.received, [])

    def test_a_handler_error_closes_that_connection_and_is_logged(self) -> None:
        reader = _Reader(self.reactor, self.left, fail=True)
        self.reactor.addReader(reader)
        self.right.send(b"x")
        self.reactor.doIteration(1)
        self.assertEqual(len(reader.lost), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class TwistdReactorTests(TestCase):
    """
    C{twistd --reactor=pgpool-epoll pgpool}: the plugin names the reactor,
    and the proxy runs on it.
    """

    def test_the_proxy_runs_on_it(self) -> None:
        cluster: LocalCluster = cluster_or_skip()
        proxy = ProxyProcess(
            {"backends": cluster.backends_config(), "pool_passwd": "pool_passwd"},
            extra_files={"pool_passwd": "app:TEXTapp\n"},
            argv=[sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                  "-n", "--pidfile=", "--logfile={log}", "--reactor=pgpool-epoll",
                  "pgpool", "-c", "{config}"])
        proxy.start()
        self.addCleanup(proxy.stop)
        result = run_psql(proxy, "-c", "SELECT 6 * 7")
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "42\n", ""))
        self.assertIn("ProxyReactor", proxy.log_text())
