"""
The C{pgpool-epoll} reactor (L{twisted_pgpool.net.reactor}): Twisted's epoll
reactor without the per-event log context, with busy polling.
"""

from __future__ import annotations

import socket
import sys
from typing import Callable, List, Optional, Tuple

from twisted.internet.abstract import FileDescriptor
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import LocalCluster, ProxyProcess, cluster_or_skip, run_psql
from twisted_pgpool.net.reactor import BusyPollWindow, ProxyReactor
from twisted_pgpool.service import _set_busy_poll


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


class BusyPollWindowTests(SynchronousTestCase):
    """
    The window grows while sleeps end soon, shrinks when gaps are long.
    """

    def test_off_until_a_short_wait_slept(self) -> None:
        window = BusyPollWindow(100e-6)
        self.assertEqual(window.current, 0.0)
        window.event_after_sleep(40e-6)
        self.assertEqual(window.current, 10e-6)
        self.assertEqual(window.slept, 1)

    def test_doubles_up_to_the_maximum(self) -> None:
        window = BusyPollWindow(100e-6)
        seen = []
        for _ in range(6):
            window.event_after_sleep(90e-6)
            seen.append(round(window.current * 1e6))
        self.assertEqual(seen, [10, 20, 40, 80, 100, 100])

    def test_a_wait_longer_than_the_maximum_halves_it(self) -> None:
        window = BusyPollWindow(100e-6, current=80e-6)
        window.event_after_sleep(150e-6)
        self.assertAlmostEqual(window.current, 40e-6)
        window.event_after_sleep(1.0)
        self.assertAlmostEqual(window.current, 20e-6)
        window.event_after_sleep(1.0)
        self.assertAlmostEqual(window.current, 10e-6)
        window.event_after_sleep(1.0)
        self.assertEqual(window.current, 0.0)

    def test_a_caught_event_leaves_it(self) -> None:
        window = BusyPollWindow(100e-6, current=40e-6)
        window.event_caught()
        self.assertEqual((window.current, window.caught, window.slept), (40e-6, 1, 0))


class _ScriptedPoller:
    """
    Wraps the reactor's real epoll object: records each poll's timeout,
    moves a fake clock on by C{step} per poll (the sleeping one by its
    timeout, when nothing is ready), and runs C{arrive} before the poll
    numbered C{arrive_at} (counting from 1), the way a peer's message would
    come in meanwhile.
    """

    def __init__(
        self,
        real,
        step: float,
        arrive_at: Optional[int] = None,
        arrive: Optional[Callable[[], object]] = None,
    ) -> None:
        self.real = real
        self.step = step
        self.arrive_at = arrive_at
        self.arrive = arrive
        self.now = 100.0
        self.timeouts: List[float] = []

    def poll(self, timeout: float, size: int) -> List[Tuple[int, int]]:
        self.timeouts.append(timeout)
        if self.arrive is not None and len(self.timeouts) == self.arrive_at:
            self.arrive()
        events = self.real.poll(0, size)
        if timeout > 0 and not events:
            self.now += timeout
        else:
            self.now += self.step
        return events

    def __getattr__(self, name: str):
        return getattr(self.real, name)


class BusyPollTests(SynchronousTestCase):
    """
    L{ProxyReactor} with busy polling: events that arrive during the spin
    are handled without sleeping; the spin never delays a timed call.
    """

    def setUp(self) -> None:
        self.reactor = ProxyReactor()
        self.addCleanup(self.reactor._poller.close)
        self.left, self.right = socket.socketpair()
        self.addCleanup(self.left.close)
        self.addCleanup(self.right.close)
        self.reader = _Reader(self.reactor, self.left)
        self.reactor.addReader(self.reader)

    def script(self, step: float = 1e-6, arrive_at: Optional[int] = None) -> _ScriptedPoller:
        poller = _ScriptedPoller(
            self.reactor._poller, step, arrive_at, lambda: self.right.send(b"query")
        )
        self.reactor._poller = poller
        self.reactor._monotonic = lambda: poller.now
        return poller

    def test_off_by_default_one_poll_with_the_timeout(self) -> None:
        poller = self.script(arrive_at=1)
        self.reactor.doIteration(5)
        self.assertEqual(poller.timeouts, [5])
        self.assertEqual(self.reader.received, [b"query"])

    def test_set_to_zero_turns_it_off(self) -> None:
        self.reactor.set_busy_poll(100e-6)
        self.reactor.set_busy_poll(0)
        self.assertIsNone(self.reactor.busy_poll)

    def test_a_ready_event_is_handled_without_spinning(self) -> None:
        self.reactor.set_busy_poll(100e-6)
        poller = self.script(arrive_at=1)
        self.reactor.doIteration(5)
        self.assertEqual(poller.timeouts, [0])
        self.assertEqual(self.reader.received, [b"query"])

    def test_an_event_during_the_spin_is_handled_without_sleeping(self) -> None:
        self.reactor.set_busy_poll(100e-6)
        window = self.reactor.busy_poll
        window.current = 50e-6
        poller = self.script(step=1e-6, arrive_at=10)
        self.reactor.doIteration(5)
        self.assertEqual(poller.timeouts, [0] * 10)
        self.assertEqual(self.reader.received, [b"query"])
        self.assertEqual((window.caught, window.slept), (1, 0))

    def test_after_the_spin_it_sleeps_for_the_rest_of_the_timeout(self) -> None:
        self.reactor.set_busy_poll(100e-6)
        window = self.reactor.busy_poll
        window.current = 20e-6
        poller = self.script(step=5e-6)
        self.reactor.doIteration(1.0)
        # A first look, the spin's polls until 20 us have passed, then one
        # sleep for what is left of the second once the spin is taken off.
        self.assertEqual(poller.timeouts[:-1], [0] * 5)
        self.assertAlmostEqual(poller.timeouts[-1], 1.0 - 20e-6)
        self.assertEqual(self.reader.received, [])

    def test_a_short_sleep_grows_the_window(self) -> None:
        self.reactor.set_busy_poll(100e-6)
        window = self.reactor.busy_poll
        # Nothing during the first look and the (empty) spin; the message
        # is there when the sleeping poll starts.
        poller = self.script(step=1e-6, arrive_at=2)
        self.reactor.doIteration(-1)
        self.assertEqual(poller.timeouts, [0, -1])
        self.assertEqual(self.reader.received, [b"query"])
        self.assertEqual((window.slept, window.current), (1, 10e-6))

    def test_the_spin_stops_when_a_timed_call_is_due(self) -> None:
        self.reactor.set_busy_poll(100e-6)
        window = self.reactor.busy_poll
        window.current = 100e-6
        poller = self.script(step=3e-6)
        self.reactor.doIteration(10e-6)
        self.assertEqual(poller.timeouts, [0] * len(poller.timeouts))
        self.assertLessEqual(poller.now - 100.0, 10e-6 + 2 * 3e-6)
        self.assertEqual((window.caught, window.slept, window.current), (0, 0, 100e-6))

    def test_a_zero_timeout_never_spins(self) -> None:
        self.reactor.set_busy_poll(100e-6)
        self.reactor.busy_poll.current = 100e-6
        poller = self.script()
        self.reactor.doIteration(0)
        self.assertEqual(poller.timeouts, [0])


class SetBusyPollTests(SynchronousTestCase):
    """
    The service hands C{busy_poll_time} to the reactor, or says why not.
    """

    def setUp(self) -> None:
        self.events: List[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def messages(self) -> List[str]:
        return [formatEvent(event) for event in self.events]

    def test_the_proxy_reactor_busy_polls(self) -> None:
        reactor = ProxyReactor()
        self.addCleanup(reactor._poller.close)
        _set_busy_poll(reactor, 50e-6)
        assert reactor.busy_poll is not None
        self.assertEqual(reactor.busy_poll.maximum, 50e-6)
        self.assertIn("busy polling for up to 50 microseconds before sleeping", self.messages())
        _set_busy_poll(reactor, 0.0)
        self.assertIsNone(reactor.busy_poll)

    def test_another_reactor_is_named_in_a_warning(self) -> None:
        _set_busy_poll(MemoryReactorClock(), 50e-6)
        self.assertEqual(
            self.messages(),
            [
                "busy_poll_time is set but the reactor (MemoryReactorClock) cannot busy poll; "
                "run on the pgpool-epoll reactor to use it"
            ],
        )

    def test_off_on_another_reactor_says_nothing(self) -> None:
        _set_busy_poll(MemoryReactorClock(), 0.0)
        self.assertEqual(self.messages(), [])


class TwistdReactorTests(TestCase):
    """
    C{twistd pgpool} runs on the pgpool-epoll reactor unless C{--reactor}
    names another, and busy polls when told to.
    """

    def twistd_proxy(self, config: dict, *options: str) -> ProxyProcess:
        cluster: LocalCluster = cluster_or_skip()
        proxy = ProxyProcess(
            {"backends": cluster.backends_config(), "pool_passwd": "pool_passwd", **config},
            extra_files={"pool_passwd": "app:TEXTapp\n"},
            argv=[
                sys.executable,
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
        self.addCleanup(proxy.stop)
        return proxy

    def assertAnswers(self, proxy: ProxyProcess) -> None:
        result = run_psql(proxy, "-c", "SELECT 6 * 7", "-c", "SELECT 6 * 7")
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "42\n42\n", ""))

    def test_it_is_the_default(self) -> None:
        proxy = self.twistd_proxy({})
        self.assertAnswers(proxy)
        self.assertIn("reactor class: twisted_pgpool.net.reactor.ProxyReactor", proxy.log_text())
        self.assertNotIn("busy polling", proxy.log_text())

    def test_busy_polling(self) -> None:
        proxy = self.twistd_proxy({"busy_poll_time": "100us"})
        self.assertAnswers(proxy)
        log_text = proxy.log_text()
        self.assertIn("reactor class: twisted_pgpool.net.reactor.ProxyReactor", log_text)
        self.assertIn("busy polling for up to 100 microseconds before sleeping", log_text)

    def test_a_reactor_chosen_with_twistd_is_kept(self) -> None:
        proxy = self.twistd_proxy({"busy_poll_time": "100us"}, "--reactor=epoll")
        self.assertAnswers(proxy)
        log_text = proxy.log_text()
        self.assertIn("reactor class: twisted.internet.epollreactor.EPollReactor", log_text)
        self.assertIn(
            "busy_poll_time is set but the reactor (EPollReactor) cannot busy poll", log_text
        )

    def test_chosen_by_name(self) -> None:
        proxy = self.twistd_proxy({}, "--reactor=pgpool-epoll")
        self.assertAnswers(proxy)
        self.assertIn("reactor class: twisted_pgpool.net.reactor.ProxyReactor", proxy.log_text())
