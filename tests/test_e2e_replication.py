"""
Primary detection, the streaming replication check and the check-query
client against real PostgreSQL servers, in the test's own reactor.

The shared primary+standby cluster serves the tests that leave it as they
found it; the test that pauses replay starts a cluster of its own.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.support import free_port, postgres_or_skip, shared_cluster
from twisted_pgpool.backend.protocol import BackendCredentials
from twisted_pgpool.cluster.model import Cluster, Node
from twisted_pgpool.cluster.nodecheck import CheckFailed, run_check_query
from twisted_pgpool.cluster.replication import ReplicationMonitor, find_primary
from twisted_pgpool.config import BackendConfig, PgpoolConfig, config_from_dict
from twisted_pgpool.testing.localcluster import LocalCluster
from twisted_pgpool.testing.waiting import wait_in_reactor

#: The superuser is trusted from 127.0.0.1 on these clusters.
CREDENTIALS = BackendCredentials("postgres")

#: Bound on waiting for replication to reach a state.
WAIT = 30.0

#: About 1 MB of WAL, with no table to clean up afterwards.
ONE_MEGABYTE_OF_WAL = (
    "SELECT pg_logical_emit_message(false, 'twisted_pgpool test', repeat('x', 1048576))"
)
SMALL_WRITE = "SELECT pg_logical_emit_message(false, 'twisted_pgpool test', 'x')"


def make_config(pg: LocalCluster, reverse: bool = False, **settings: Any) -> PgpoolConfig:
    backends = pg.backends_config()
    if reverse:
        backends.reverse()
    data: Dict[str, Any] = {
        "backends": backends,
        "sr_check_user": "postgres",
        "sr_check_period": 0.2,
        "connect_timeout": 5000,
        "pool_passwd": "",
    }
    data.update(settings)
    return config_from_dict(data)


async def checked_until(
    monitor: ReplicationMonitor, condition: Callable[[], bool], what: str, timeout: float = WAIT
) -> None:
    """
    Run checks until C{condition} holds after one, failing after
    C{timeout} seconds.
    """
    deadline = reactor.seconds() + timeout
    while True:
        await monitor.refresh_now()
        if condition():
            return
        if reactor.seconds() > deadline:
            raise AssertionError(f"no check found {what} within {timeout:g} s")
        await deferLater(reactor, 0.05, lambda: None)


class FindPrimaryTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        postgres_or_skip()
        self.pg = shared_cluster()

    async def test_find_primary_picks_the_real_primary(self) -> None:
        # The standby is node 0, so node 0 starts out as the assumed primary.
        config = make_config(self.pg, reverse=True)
        cluster = Cluster.from_config(config.backends)
        self.assertEqual(cluster.nodes[0].config.port, self.pg.standby.port)
        found = await find_primary(reactor, cluster, CREDENTIALS, "postgres", 5.0)
        self.assertIs(found, cluster.nodes[1])
        self.assertEqual(found.port, self.pg.primary.port)
        self.assertEqual([n.role for n in cluster.nodes], ["standby", "primary"])
        self.assertEqual([n.pg_role for n in cluster.nodes], ["standby", "primary"])

    async def test_unreachable_node_is_unknown(self) -> None:
        config = config_from_dict(
            {
                "backends": [{"hostname": "127.0.0.1", "port": free_port()}]
                + self.pg.backends_config(),
                "pool_passwd": "",
            }
        )
        cluster = Cluster.from_config(config.backends)
        found = await find_primary(reactor, cluster, CREDENTIALS, "postgres", 5.0)
        self.assertIs(found, cluster.nodes[1])
        self.assertEqual([n.pg_role for n in cluster.nodes], ["unknown", "primary", "standby"])


class SharedClusterMonitorTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        postgres_or_skip()
        self.pg = shared_cluster()
        self.config = make_config(self.pg, delay_threshold=1000)
        self.cluster = Cluster.from_config(self.config.backends)
        self.monitor = ReplicationMonitor(reactor, self.cluster, self.config, CREDENTIALS)
        self.monitor.startService()
        self.addCleanup(self.monitor.stopService)

    async def test_standby_delay_returns_to_zero_after_a_write(self) -> None:
        primary, standby = self.cluster.nodes
        await run_check_query(reactor, primary, CREDENTIALS, "postgres", SMALL_WRITE, 5.0)
        written_at = reactor.seconds()

        def caught_up() -> bool:
            return (
                self.monitor.last_check_time is not None
                and self.monitor.last_check_time > written_at
                and standby.replication_delay == 0
            )

        await checked_until(self.monitor, caught_up, "the standby caught up")
        self.assertEqual((primary.pg_role, standby.pg_role), ("primary", "standby"))
        self.assertFalse(standby.delayed)
        self.assertIsNotNone(standby.replay_lsn)

    async def test_standby_replication_state_is_streaming(self) -> None:
        standby = self.cluster.nodes[1]
        await checked_until(
            self.monitor,
            lambda: standby.replication_state != "",
            "a pg_stat_replication row for the standby",
        )
        self.assertEqual(standby.replication_state, "streaming")
        self.assertEqual(standby.replication_sync_state, "async")
        self.assertIsNotNone(standby.replication_delay_seconds)

    async def test_loop_keeps_checking(self) -> None:
        await checked_until(
            self.monitor, lambda: self.monitor.last_check_time is not None, "a first check"
        )
        first = self.monitor.last_check_time
        # sr_check_period is 0.2 s: the loop alone must run another check.
        await wait_in_reactor(
            reactor,
            lambda: self.monitor.last_check_time > first,
            "a check run by the loop",
            timeout=5.0,
        )


class PausedReplayTests(TestCase):
    """
    A standby whose replay is paused falls behind; resumed, it catches up.
    """

    timeout = 180

    def setUp(self) -> None:
        postgres_or_skip()
        self.pg = LocalCluster()
        self.pg.start()
        self.addCleanup(self.pg.stop)
        self.config = make_config(self.pg, delay_threshold=1000, sr_check_period=0.5)
        self.cluster = Cluster.from_config(self.config.backends)
        self.monitor = ReplicationMonitor(reactor, self.cluster, self.config, CREDENTIALS)
        self.monitor.startService()
        self.addCleanup(self.monitor.stopService)

    async def test_paused_standby_is_delayed_until_resumed(self) -> None:
        primary, standby = self.cluster.nodes
        await checked_until(
            self.monitor, lambda: standby.replication_state == "streaming", "the standby streaming"
        )
        self.pg.pause_replay()
        self.addCleanup(self.pg.resume_replay)
        await run_check_query(reactor, primary, CREDENTIALS, "postgres", ONE_MEGABYTE_OF_WAL, 10.0)

        await checked_until(self.monitor, lambda: standby.delayed, "the standby delayed")
        self.assertGreater(standby.replication_delay, 1000)
        # Paused replay still receives WAL: the walsender keeps streaming.
        self.assertEqual(standby.replication_state, "streaming")

        self.pg.resume_replay()
        await checked_until(
            self.monitor,
            lambda: not standby.delayed and standby.replication_delay == 0,
            "the standby caught up",
        )


class SilentServer(Protocol):
    """
    Accepts a connection and never says a word.
    """

    def connectionMade(self) -> None:
        self.factory.connections.append(self)

    def connectionLost(self, reason: object = None) -> None:
        self.factory.lost.append(self)


class RunCheckQueryTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        postgres_or_skip()
        self.pg = shared_cluster()
        self.primary = Node(
            0, BackendConfig(hostname=self.pg.primary.host, port=self.pg.primary.port)
        )

    async def test_returns_rows_and_identifies_itself(self) -> None:
        result = await run_check_query(
            reactor,
            self.primary,
            CREDENTIALS,
            "postgres",
            "SELECT current_setting('application_name'), 1",
            5.0,
        )
        self.assertEqual(result.rows, [(b"twisted_pgpool check", b"1")])
        self.assertIsNone(result.error)

    async def test_login_error_quotes_the_server(self) -> None:
        with self.assertRaises(CheckFailed) as caught:
            await run_check_query(
                reactor, self.primary, CREDENTIALS, "no_such_database", "SELECT 1", 5.0
            )
        self.assertIn('database "no_such_database" does not exist', caught.exception.reason)
        self.assertEqual(caught.exception.sqlstate, "3D000")
        self.assertEqual(caught.exception.node_id, 0)

    async def test_query_error_quotes_the_server(self) -> None:
        with self.assertRaises(CheckFailed) as caught:
            await run_check_query(reactor, self.primary, CREDENTIALS, "postgres", "SELECT 1/0", 5.0)
        self.assertIn("division by zero", caught.exception.reason)
        self.assertEqual(caught.exception.sqlstate, "22012")

    async def test_connection_refused(self) -> None:
        node = Node(2, BackendConfig(hostname="127.0.0.1", port=free_port()))
        with self.assertRaises(CheckFailed) as caught:
            await run_check_query(reactor, node, CREDENTIALS, "postgres", "SELECT 1", 5.0)
        self.assertIn("could not connect to node 2", caught.exception.reason)

    async def test_password_required_but_unknown(self) -> None:
        # app logs in with SCRAM; these credentials carry no password.
        with self.assertRaises(CheckFailed) as caught:
            await run_check_query(
                reactor, self.primary, BackendCredentials("app"), "app", "SELECT 1", 5.0
            )
        self.assertIn("no usable password", caught.exception.reason)

    async def test_silent_server_times_out_and_is_hung_up_on(self) -> None:
        factory = Factory.forProtocol(SilentServer)
        factory.connections, factory.lost = [], []
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        node = Node(1, BackendConfig(hostname="127.0.0.1", port=port.getHost().port))
        started = reactor.seconds()
        with self.assertRaises(CheckFailed) as caught:
            await run_check_query(reactor, node, CREDENTIALS, "postgres", "SELECT 1", 0.5)
        self.assertIn("did not answer", caught.exception.reason)
        self.assertLess(reactor.seconds() - started, 5.0)
        self.assertEqual(len(factory.connections), 1)
        await wait_in_reactor(
            reactor, lambda: bool(factory.lost), "the timed-out connection closed", timeout=5.0
        )
