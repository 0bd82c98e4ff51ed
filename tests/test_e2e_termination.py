"""
End-to-end: a client whose server process is terminated
(C{pg_terminate_backend}) sees the server's own last words, FATAL 57P01
"terminating connection due to administrator command", as it would
connected directly -- not a bare "server closed the connection
unexpectedly" (issue 13, finding 10).  With load balancing the session
holds connections to both nodes; whichever is terminated, the client is
told why.
"""

from __future__ import annotations

import select
from typing import List

from twisted.trial.unittest import SkipTest, TestCase

from tests.support import cluster_or_skip, direct_dsn, text_passwd_proxy

try:
    import psycopg
except ImportError:  # pragma: no cover - e.g. PyPy
    psycopg = None  # type: ignore[assignment]

PROXY = text_passwd_proxy(load_balance_mode=True)
CLIENTS = 8


def terminate(dsn: str, application: str) -> int:
    """
    Terminate every server process of C{application} on one node.
    """
    with psycopg.connect(dsn, autocommit=True) as admin:
        rows = admin.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s",
            (application,),
        ).fetchall()
    return len(rows)


class TerminatedBackendTests(TestCase):
    def setUp(self) -> None:
        if psycopg is None:
            raise SkipTest("psycopg is not installed")

    def outcomes(self, connections: List["psycopg.Connection"]) -> List[str]:
        seen = []
        for connection in connections:
            # The server's FATAL reaches the client when the proxy has read
            # it: wait for the client's socket to have something to read
            # (as a client idle for a moment would), not for a guessed time.
            select.select([connection.fileno()], [], [], 10)
            try:
                connection.execute("select 1")
            except psycopg.Error as e:
                seen.append(f"{e.sqlstate} {str(e).strip().splitlines()[0]}")
            else:
                seen.append("ok")
            finally:
                connection.close()
        return seen

    def open_clients(self, application: str) -> List["psycopg.Connection"]:
        proxy = PROXY.get()
        connections = []
        for _ in range(CLIENTS):
            connection = psycopg.connect(proxy.dsn(application_name=application), autocommit=True)
            # Reads spread over both nodes: each session holds a
            # connection to the standby too, idle between statements.
            for _ in range(3):
                connection.execute("select 1").fetchall()
            connections.append(connection)
        return connections

    def test_primary_connection_terminated_gives_57p01(self) -> None:
        cluster = cluster_or_skip()
        connections = self.open_clients("term-primary")
        killed = terminate(direct_dsn(cluster.primary), "term-primary")
        self.assertEqual(
            (killed, self.outcomes(connections)),
            (CLIENTS, ["57P01 terminating connection due to administrator command"] * CLIENTS),
        )

    def test_both_connections_terminated_gives_57p01(self) -> None:
        cluster = cluster_or_skip()
        connections = self.open_clients("term-both")
        terminate(direct_dsn(cluster.standby), "term-both")
        terminate(direct_dsn(cluster.primary), "term-both")
        self.assertEqual(
            self.outcomes(connections),
            ["57P01 terminating connection due to administrator command"] * CLIENTS,
        )


SHUTDOWN_PROXY = text_passwd_proxy(
    load_balance_mode=False, failover_on_backend_shutdown=True, failover_on_backend_error=True
)


class TerminatedSessionFailsNothingOverTests(TestCase):
    """
    pg_terminate_backend of one session's server process sends 57P01, the
    code of an admin shutdown: with failover_on_backend_shutdown on,
    Pgpool-II fails the node over.  Here the node is asked first, takes
    connections, and stays up (issue 13: one connection's end is no node
    failure).
    """

    def setUp(self) -> None:
        if psycopg is None:
            raise SkipTest("psycopg is not installed")

    def test_primary_stays_up_after_a_session_is_terminated(self) -> None:
        proxy = SHUTDOWN_PROXY.get()
        cluster = cluster_or_skip()
        victim = psycopg.connect(proxy.dsn(application_name="term-one"), autocommit=True)
        self.addCleanup(victim.close)
        victim.execute("select 1")
        self.assertEqual(terminate(direct_dsn(cluster.primary), "term-one"), 1)
        self.assertEqual(
            self.outcome(victim), "57P01 terminating connection due to administrator command"
        )
        with psycopg.connect(proxy.dsn(), autocommit=True) as other:
            statuses = [row[3] for row in other.execute("SHOW POOL_NODES").fetchall()]
            self.assertEqual(other.execute("select 2").fetchone(), (2,))
        self.assertEqual(statuses[0], "up")
        self.assertIn("the node takes connections: it stays up", proxy.log_text())

    def outcome(self, connection: "psycopg.Connection") -> str:
        select.select([connection.fileno()], [], [], 10)
        try:
            connection.execute("select 1")
        except psycopg.Error as e:
            return f"{e.sqlstate} {str(e).strip().splitlines()[0]}"
        return "ok"


class NodeAnswersTests(TestCase):
    """
    The probe behind it, against real servers.
    """

    def test_a_running_server_answers(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.defer import Deferred

        from twisted_pgpool.cluster.model import Cluster
        from twisted_pgpool.cluster.nodecheck import node_answers
        from twisted_pgpool.config import config_from_dict

        cluster = cluster_or_skip()
        nodes = Cluster.from_config(
            config_from_dict({"backends": cluster.backends_config(), "pool_passwd": ""}).backends
        ).nodes
        return Deferred.fromCoroutine(node_answers(reactor, nodes[0], "", 5)).addCallback(
            self.assertTrue
        )

    def test_nothing_listening_does_not_answer(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.defer import Deferred

        from tests.support import free_port
        from twisted_pgpool.cluster.model import Cluster
        from twisted_pgpool.cluster.nodecheck import node_answers
        from twisted_pgpool.config import config_from_dict

        nodes = Cluster.from_config(
            config_from_dict(
                {"backends": [{"hostname": "127.0.0.1", "port": free_port()}], "pool_passwd": ""}
            ).backends
        ).nodes
        return Deferred.fromCoroutine(node_answers(reactor, nodes[0], "", 5)).addCallback(
            self.assertFalse
        )
