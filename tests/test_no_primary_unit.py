"""
Sessions without a primary, driven with fake backends and no sockets: a
session served by a standby (L{twisted_pgpool.proxy.session.no_primary})
refuses writes with 25006 and sends them to no node, as a standby would
refuse them; a session with no node at all
(L{twisted_pgpool.proxy.session.nodeless}) answers only the proxy's own
statements.  The refusals a client sees at login are
L{twisted_pgpool.proxy.frontend.no_backend_error}'s.
"""

from __future__ import annotations

import struct
from typing import Any, List, Optional, Tuple

from twisted.trial.unittest import SynchronousTestCase

from tests.test_session_unit import connection
from tests.wire import split_messages
from twisted_pgpool.cluster.model import STATUS_DOWN, STATUS_UP, Cluster
from twisted_pgpool.config import config_from_dict
from twisted_pgpool.proxy.inspection import result_set
from twisted_pgpool.proxy.session import Session
from twisted_pgpool.proxy.session.no_primary import write_refused
from twisted_pgpool.proxy.session.nodeless import (
    NodelessSession,
    no_backend_error,
    nodeless_parameters,
)
from twisted_pgpool.routing.balancer import Balancer
from twisted_pgpool.testing.doubles import (
    Capture,
    FakeBackend,
    FakeCore,
    FakeFramer,
    FakeFrontend,
    FakeInspector,
)
from twisted_pgpool.wire import errors, messages

IDLE, IN_BLOCK, FAILED = (
    messages.TRANSACTION_IDLE,
    messages.TRANSACTION_IN_BLOCK,
    messages.TRANSACTION_FAILED,
)


def split(data: bytes) -> List[Tuple[str, bytes]]:
    """
    Messages as (type letter, payload).
    """
    return [(chr(kind), payload) for kind, payload in split_messages(data)]


def replies(data: List[bytes]) -> List[Tuple[str, Any]]:
    """
    What the client got, readably: an error as C{("E", sqlstate)}, a
    ReadyForQuery as C{("Z", status letter)}, anything else by its letter.
    """
    out: List[Tuple[str, Any]] = []
    for kind, payload in split(b"".join(data)):
        if kind == "E":
            out.append(("E", messages.decode_error_fields(payload).fields["C"]))
        elif kind == "Z":
            out.append(("Z", chr(payload[0])))
        else:
            out.append((kind, None))
    return out


class StandbyServedTests(SynchronousTestCase):
    """
    A session that began while node 0, the primary, was down: node 1, a
    standby, serves it.
    """

    settings: dict = {}

    def setUp(self) -> None:
        config = config_from_dict(
            dict(
                {
                    "backends": [{"hostname": "p", "port": 5432}, {"hostname": "s", "port": 5433}],
                    "pool_passwd": "",
                },
                **self.settings,
            )
        )
        cluster = Cluster.from_config(config.backends)
        cluster.set_status(cluster.nodes[0], STATUS_DOWN, "test")
        cluster.set_status(cluster.nodes[1], STATUS_UP, "test")
        self.core = FakeCore(
            config, cluster=cluster, balancer=Balancer(cluster, random=lambda: 0.5)
        )
        self.standby = FakeBackend(1)
        self.frontend = FakeFrontend()
        self.session = Session(
            self.frontend,
            self.core,  # type: ignore[arg-type]
            connection(self.standby),
            FakeFramer(),  # type: ignore[arg-type]
            lambda node: self.fail(f"opened node {node.node_id}"),
            no_primary=True,
        )

    def send(self, *frames: bytes) -> None:
        for frame in frames:
            for kind, payload in split(frame):
                self.session.client_message(ord(kind), payload)

    def client_got(self) -> List[Tuple[str, Any]]:
        return replies(self.frontend.transport.data)

    def test_every_statement_is_classified(self) -> None:
        # With one usable node a session would pass everything through
        # unread; this one must see each write.
        self.assertFalse(self.session.direct)
        self.assertTrue(self.session.router.no_primary)

    def test_read_goes_to_the_standby(self) -> None:
        self.send(messages.query("select 1"))
        self.assertEqual(self.standby.received, ["Q:select 1"])

    def test_insert_is_refused_and_sent_nowhere(self) -> None:
        self.send(messages.query("insert into t values (1)"))
        self.assertEqual(self.standby.received, [])
        self.assertEqual(self.client_got(), [("E", "25006"), ("Z", "I")])

    def test_refusal_names_the_statement_and_the_standby(self) -> None:
        self.send(messages.query("select 1; create table t (a int)"))
        fields = messages.decode_error_fields(split(self.frontend.transport.data[0])[0][1]).fields
        self.assertEqual(
            fields["M"],
            "cannot execute CREATE in a read-only session: no primary node is available",
        )
        self.assertIn("served by standby node 1", fields["D"])

    def test_session_control_goes_to_the_standby(self) -> None:
        self.send(messages.query("set search_path = app"))
        self.assertEqual(self.standby.received, ["Q:set search_path = app"])

    def test_write_the_classifier_cannot_see_goes_to_the_standby(self) -> None:
        # A function of unknown volatility may write: the standby judges it
        # (and refuses it with its own 25006 if it does).
        self.send(messages.query("select my_function()"))
        self.assertEqual(self.standby.received, ["Q:select my_function()"])

    def test_refusal_waits_for_the_replies_before_it(self) -> None:
        self.send(messages.query("select 1"), messages.query("delete from t"))
        self.assertEqual(self.client_got(), [])
        self.standby.ready(IDLE)
        self.assertEqual(self.client_got(), [("E", "25006"), ("Z", "I")])

    def test_refusal_in_a_transaction_fails_the_standbys_transaction(self) -> None:
        self.send(messages.query("begin"))
        self.standby.ready(IN_BLOCK)
        self.send(messages.query("update t set a = 2"))
        # PostgreSQL's transaction fails on an error: the standby's must
        # too (a COMMIT then rolls back), before the client hears of it.
        self.assertEqual(
            self.standby.received,
            ["Q:begin", "Q:ROLLBACK TO SAVEPOINT twisted_pgpool_abort_transaction"],
        )
        self.assertIsInstance(self.standby.units[0], Capture)
        self.assertEqual(self.client_got(), [])
        self.standby.ready(FAILED)
        self.assertEqual(self.client_got(), [("E", "25006"), ("Z", "E")])
        self.assertTrue(self.session.router.transaction_failed)

    def test_extended_write_is_refused_at_its_sync(self) -> None:
        self.send(
            messages.parse("", "insert into t values ($1)"),
            messages.bind("", "", [b"1"]),
            messages.execute(),
            messages.sync(),
        )
        self.assertEqual(self.standby.received, [])
        self.assertEqual(self.client_got(), [("E", "25006"), ("Z", "I")])

    def test_extended_write_before_a_flush_skips_to_the_sync(self) -> None:
        self.send(
            messages.parse("", "insert into t values (1)"),
            messages.bind("", ""),
            messages.execute(),
            messages.flush(),
        )
        self.assertEqual(self.client_got(), [("E", "25006")])
        self.send(messages.describe("P", ""), messages.execute(), messages.sync())
        self.assertEqual(self.standby.received, [])
        self.assertEqual(self.client_got(), [("E", "25006"), ("Z", "I")])

    def test_extended_read_goes_to_the_standby(self) -> None:
        self.send(
            messages.parse("", "select $1::int"),
            messages.bind("", "", [b"1"]),
            messages.execute(),
            messages.sync(),
        )
        self.assertEqual(self.standby.received, ["P:select $1::int", "B", "E", "S"])


class FakeOwnInspector(FakeInspector):
    """
    Knows one report, C{SHOW POOL_NODES}, with one row.
    """

    def match(self, payload: bytes) -> Optional[str]:
        self.asked.append(payload)
        text = payload.rstrip(b"\x00").strip().rstrip(b";").lower()
        return "pool_nodes" if text == b"show pool_nodes" else None

    def answer(self, command: str, frontend: Any) -> List[bytes]:
        return result_set(["node_id", "status"], [["0", "down"]])


class NodelessTests(SynchronousTestCase):
    """
    The session of a client the proxy authenticated while no node was usable.
    """

    def setUp(self) -> None:
        config = config_from_dict({"backends": [{"hostname": "p"}], "pool_passwd": ""})
        cluster = Cluster.from_config(config.backends)
        self.core = FakeCore(config, cluster=cluster, balancer=Balancer(cluster))
        self.core.inspector = FakeOwnInspector()
        self.frontend = FakeFrontend()
        self.frontend.core = self.core  # type: ignore[attr-defined]
        self.frontend.startup_min_lsn = 0  # type: ignore[attr-defined]
        self.terminated = False
        self.frontend.terminate_session = lambda: setattr(  # type: ignore[method-assign]
            self, "terminated", True
        )
        self.session = NodelessSession(self.frontend, FakeFramer())  # type: ignore[arg-type]

    def send(self, *frames: bytes) -> None:
        for frame in frames:
            for kind, payload in split(frame):
                self.session.client_message(ord(kind), payload)

    def client_got(self) -> List[Tuple[str, Any]]:
        return replies(self.frontend.transport.data)

    def test_show_pool_nodes_is_answered(self) -> None:
        self.send(messages.query("SHOW POOL_NODES;"))
        self.assertEqual(self.client_got(), [("T", None), ("D", None), ("C", None), ("Z", "I")])

    def test_other_statements_get_57p03(self) -> None:
        self.send(messages.query("select 1"))
        self.assertEqual(self.client_got(), [("E", "57P03"), ("Z", "I")])

    def test_empty_query_is_answered_as_postgresql_does(self) -> None:
        self.send(messages.query(""))
        self.assertEqual(self.client_got(), [("I", None), ("Z", "I")])

    def test_pgpool_min_lsn_is_answered(self) -> None:
        self.send(messages.query("show pgpool.min_lsn"))
        self.assertEqual([kind for kind, _ in self.client_got()], ["T", "D", "C", "Z"])

    def test_cache_delete_says_there_is_no_entry(self) -> None:
        self.send(messages.query("PGPOOL SET CACHE DELETE 'select 1'"))
        self.assertEqual(self.client_got(), [("N", None), ("C", None), ("Z", "I")])

    def test_extended_own_statement_is_answered(self) -> None:
        self.send(
            messages.parse("", "show pool_nodes"),
            messages.bind("", ""),
            messages.describe("P", ""),
            messages.execute(),
            messages.sync(),
        )
        self.assertEqual(
            self.client_got(),
            [("1", None), ("2", None), ("T", None), ("D", None), ("C", None), ("Z", "I")],
        )

    def test_extended_other_statement_errs_and_skips_to_the_sync(self) -> None:
        self.send(
            messages.parse("", "select 1"),
            messages.bind("", ""),
            messages.execute(),
            messages.sync(),
            messages.query("show pool_nodes"),
        )
        self.assertEqual(
            self.client_got(),
            [("E", "57P03"), ("Z", "I"), ("T", None), ("D", None), ("C", None), ("Z", "I")],
        )

    def test_function_call_errs(self) -> None:
        self.send(messages.message(messages.FUNCTION_CALL, struct.pack("!IhhhH", 1, 0, 0, 0, 0)))
        self.assertEqual(self.client_got(), [("E", "57P03"), ("Z", "I")])

    def test_terminate_ends_the_session(self) -> None:
        self.send(messages.message(messages.TERMINATE))
        self.assertTrue(self.terminated)

    def test_holds_no_connection(self) -> None:
        self.assertEqual(
            (
                self.session.links,
                self.session.close(),
                self.session.depends_on(0),
                self.session.busy,
            ),
            ({}, [], False, False),
        )


class LoginRefusalTests(SynchronousTestCase):
    """
    L{no_backend_error}: Pgpool-II's words, PostgreSQL's FATAL 57P03, and
    a hint for the case at hand.
    """

    def nodes(self, *statuses: str) -> List[Any]:
        config = config_from_dict(
            {"backends": [{"hostname": f"h{i}"} for i in range(len(statuses))], "pool_passwd": ""}
        )
        cluster = Cluster.from_config(config.backends)
        for node, status in zip(cluster.nodes, statuses):
            cluster.set_status(node, status, "test")
        return cluster.nodes

    def test_message_and_detail_are_pgpools(self) -> None:
        error = no_backend_error(self.nodes(STATUS_DOWN))
        self.assertEqual(
            (error.severity, error.sqlstate, error.message, error.detail),
            (
                "FATAL",
                errors.CANNOT_CONNECT_NOW,
                "pgpool is not accepting any new connections",
                "all backend nodes are down, pgpool requires at least one valid node",
            ),
        )

    def test_hint_without_backends_says_to_add_one(self) -> None:
        self.assertIn("add backend_hostname0", no_backend_error([]).hint or "")

    def test_hint_with_nodes_down_says_to_attach(self) -> None:
        self.assertIn("attach", no_backend_error(self.nodes(STATUS_DOWN)).hint or "")

    def test_hint_with_nodes_up_says_none_could_be_reached(self) -> None:
        self.assertIn("could be reached", no_backend_error(self.nodes(STATUS_UP)).hint or "")


class GreetingTests(SynchronousTestCase):
    def test_nodeless_parameters_are_the_proxys_and_the_clients(self) -> None:
        values = dict(
            nodeless_parameters(
                {"user": "app", "client_encoding": "LATIN1", "application_name": "psql"}
            )
        )
        self.assertEqual(
            (
                values["client_encoding"],
                values["application_name"],
                values["session_authorization"],
                values["server_encoding"],
            ),
            ("LATIN1", "psql", "app", "UTF8"),
        )
        self.assertIn("twisted_pgpool", values["server_version"])


class WriteRefusedTests(SynchronousTestCase):
    def test_sqlstate_is_a_standbys_refusal(self) -> None:
        error = write_refused("insert", 2)
        self.assertEqual((error.severity, error.sqlstate), ("ERROR", "25006"))
        self.assertIn("standby node 2", error.detail or "")


class ClusterWithoutNodesTests(SynchronousTestCase):
    """
    A configuration without backends (Debian's sample as shipped) builds
    a cluster with no node, which nothing trips over.
    """

    def test_no_node_no_primary(self) -> None:
        cluster = Cluster.from_config(())
        cluster.assume_primary("nothing to assume")
        self.assertEqual((cluster.nodes, cluster.primary(), cluster.standbys()), ([], None, []))
        self.assertIsNone(Balancer(cluster).choose("app", "app"))

    def test_the_first_nodes_added_assume_node_0_is_the_primary(self) -> None:
        config = config_from_dict(
            {"backends": [{"hostname": "a"}, {"hostname": "b"}], "pool_passwd": ""}
        )
        cluster = Cluster.from_config(())
        for backend in config.backends:
            cluster.add_node(backend, STATUS_DOWN, "added by reload")
        cluster.assume_primary("first backends")
        self.assertEqual([n.role for n in cluster.nodes], ["primary", "standby"])
