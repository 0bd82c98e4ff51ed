"""
Native replication mode's decisions with no sockets: comparing the nodes'
replies, when a write gets a transaction of the proxy's own, and the
sending of one replicated statement against fake backend connections.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.cluster.model import ROLE_PRIMARY, STATUS_DOWN, Cluster
from twisted_pgpool.config import BackendConfig
from twisted_pgpool.routing.replication_mode import (
    ABORT_TRANSACTION,
    NodeReply,
    ReplicatedStatement,
    compare,
    follow_main_node,
    needs_internal_transaction,
    role_name,
)
from twisted_pgpool.sql.classifier import classify
from twisted_pgpool.testing.doubles import FakeBackend
from twisted_pgpool.wire import errors, messages

IDLE = messages.TRANSACTION_IDLE
IN_BLOCK = messages.TRANSACTION_IN_BLOCK
FAILED = messages.TRANSACTION_FAILED


def complete(tag: str) -> Tuple[int, bytes]:
    return messages.COMMAND_COMPLETE, tag.encode() + b"\x00"


def error(code: str, text: str) -> Tuple[int, bytes]:
    return messages.ERROR_RESPONSE, errors.error(code, text).to_bytes()[5:]


def reply(*items: Tuple[int, bytes]) -> NodeReply:
    result = NodeReply()
    for message_type, payload in items:
        result.add(message_type, payload, keep=False)
    return result


class CompareTests(SynchronousTestCase):
    def test_same_tags_agree(self) -> None:
        self.assertIsNone(
            compare({0: reply(complete("INSERT 0 1")), 1: reply(complete("INSERT 0 1"))}, 0)
        )

    def test_error_on_one_node_is_a_kind_mismatch(self) -> None:
        found = compare(
            {0: reply(complete("INSERT 0 1")), 1: reply(error("42P01", "relation does not exist"))},
            0,
        )
        self.assertEqual((found.what, found.majority, found.minority), ("kind", (0,), (1,)))
        self.assertIn("node 1: ERROR 42P01: relation does not exist", found.detail)

    def test_different_command_words_are_a_kind_mismatch(self) -> None:
        found = compare({0: reply(complete("COMMIT")), 1: reply(complete("ROLLBACK"))}, 0)
        self.assertEqual(found.what, "kind")

    def test_different_row_counts_are_a_tuples_mismatch(self) -> None:
        found = compare({0: reply(complete("UPDATE 2")), 1: reply(complete("UPDATE 3"))}, 0)
        self.assertEqual(found.what, "tuples")

    def test_errors_with_different_codes_agree(self) -> None:
        # Pgpool-II compares the packet kinds only.
        self.assertIsNone(
            compare({0: reply(error("23505", "a")), 1: reply(error("42P01", "b"))}, 0)
        )

    def test_majority_wins(self) -> None:
        found = compare(
            {
                0: reply(error("42P01", "x")),
                1: reply(complete("DELETE 1")),
                2: reply(complete("DELETE 1")),
            },
            0,
        )
        self.assertEqual((found.majority, found.minority), ((1, 2), (0,)))

    def test_tie_goes_to_the_main_nodes_group(self) -> None:
        found = compare({1: reply(error("42P01", "x")), 2: reply(complete("DELETE 1"))}, 2)
        self.assertEqual((found.majority, found.minority), ((2,), (1,)))


class InternalTransactionTests(SynchronousTestCase):
    def wraps(self, sql: str) -> bool:
        return needs_internal_transaction(classify(sql), sql)

    def test_dml_and_ddl_get_one(self) -> None:
        for sql in (
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "DELETE FROM t",
            "CREATE TABLE x (a int)",
            "SELECT nextval('s')",
            "TRUNCATE t",
        ):
            self.assertTrue(self.wraps(sql), sql)

    def test_statements_refused_in_a_block_do_not(self) -> None:
        for sql in (
            "CREATE DATABASE x",
            "VACUUM t",
            "CREATE INDEX CONCURRENTLY i ON t (a)",
            "ALTER SYSTEM SET work_mem = '1MB'",
            "DROP DATABASE x",
        ):
            self.assertFalse(self.wraps(sql), sql)

    def test_transaction_control_and_multi_statements_do_not(self) -> None:
        for sql in (
            "BEGIN",
            "COMMIT",
            "SET x = 1",
            "INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)",
        ):
            self.assertFalse(self.wraps(sql), sql)


class ReplicatedStatementTests(SynchronousTestCase):
    def start(
        self,
        sql: str,
        internal: bool,
        nodes: Sequence[int] = (0, 1),
        degenerate_on_kind: bool = False,
    ) -> ReplicatedStatement:
        self.backends: Dict[int, FakeBackend] = {n: FakeBackend(n) for n in nodes}
        self.delivered: List[bytes] = []
        self.failed: List[errors.PgError] = []
        self.degenerated: List[Tuple[int, ...]] = []
        statement = ReplicatedStatement(
            {n: messages.query(sql) for n in nodes},
            nodes[0],
            dict(self.backends),
            internal,
            degenerate_on_kind,
            False,
            self.delivered.extend,
            self.failed.append,
            lambda ids, reason: self.degenerated.append(tuple(ids)),
        )
        statement.start()
        return statement

    def test_main_node_first_others_after_its_reply(self) -> None:
        self.start("INSERT INTO t VALUES (1)", internal=False)
        self.assertEqual(self.backends[0].sent_queries(), ["INSERT INTO t VALUES (1)"])
        self.assertEqual(self.backends[1].sent_queries(), [])
        self.backends[0].answer(IN_BLOCK, complete("INSERT 0 1"))
        self.assertEqual(self.backends[1].sent_queries(), ["INSERT INTO t VALUES (1)"])

    def test_client_gets_the_main_nodes_reply_once_all_agree(self) -> None:
        statement = self.start("INSERT INTO t VALUES (1)", internal=False)
        self.backends[0].answer(IN_BLOCK, complete("INSERT 0 1"))
        self.assertEqual(self.delivered, [])
        self.backends[1].answer(IN_BLOCK, complete("INSERT 0 1"))
        self.assertTrue(statement.finished)
        self.assertEqual(
            self.delivered,
            [messages.command_complete("INSERT 0 1"), messages.ready_for_query(IN_BLOCK)],
        )

    def test_internal_transaction_commits_main_first(self) -> None:
        self.start("INSERT INTO t VALUES (1)", internal=True)
        self.assertEqual(self.backends[0].sent_queries(), ["BEGIN", "INSERT INTO t VALUES (1)"])
        self.backends[0].answer(IN_BLOCK)  # BEGIN
        self.backends[0].answer(IN_BLOCK, complete("INSERT 0 1"))
        self.backends[1].answer(IN_BLOCK)
        self.backends[1].answer(IN_BLOCK, complete("INSERT 0 1"))
        self.assertEqual(self.backends[0].sent_queries()[-1], "COMMIT")
        self.assertNotIn("COMMIT", self.backends[1].sent_queries())
        self.backends[0].answer(IDLE, complete("COMMIT"))
        self.assertEqual(self.backends[1].sent_queries()[-1], "COMMIT")
        self.backends[1].answer(IDLE, complete("COMMIT"))
        self.assertEqual(
            self.delivered,
            [messages.command_complete("INSERT 0 1"), messages.ready_for_query(IDLE)],
        )

    def test_mismatch_in_internal_transaction_rolls_back_everywhere(self) -> None:
        self.start("INSERT INTO t VALUES (1)", internal=True)
        self.backends[0].answer(IN_BLOCK)
        self.backends[0].answer(IN_BLOCK, complete("INSERT 0 1"))
        self.backends[1].answer(IN_BLOCK)
        self.backends[1].answer(FAILED, error("42P01", "relation does not exist"))
        for backend in self.backends.values():
            self.assertEqual(backend.sent_queries()[-1], "ROLLBACK")
            backend.answer(IDLE, complete("ROLLBACK"))
        self.assertEqual(self.delivered[-1], messages.ready_for_query(IDLE))
        self.assertIn(b"rolled back on every node", self.delivered[0])
        self.assertEqual(self.delivered[0][:1], b"E")

    def test_mismatch_in_a_transaction_aborts_it_where_it_succeeded(self) -> None:
        self.start("INSERT INTO t VALUES (1)", internal=False)
        self.backends[0].answer(IN_BLOCK, complete("INSERT 0 1"))
        self.backends[1].answer(FAILED, error("42P01", "relation does not exist"))
        self.assertEqual(self.backends[0].sent_queries()[-1], ABORT_TRANSACTION)
        self.assertEqual(self.backends[1].sent_queries(), ["INSERT INTO t VALUES (1)"])
        self.backends[0].answer(FAILED, error("3B001", "no such savepoint"))
        self.assertEqual(self.delivered[-1], messages.ready_for_query(FAILED))
        self.assertIn(b"aborted on every node", self.delivered[0])

    def test_mismatch_that_cannot_be_undone_ends_the_session(self) -> None:
        self.start("VACUUM t", internal=False)
        self.backends[0].answer(IDLE, complete("VACUUM"))
        self.backends[1].answer(IDLE, error("42P01", "relation does not exist"))
        self.assertEqual([e.severity for e in self.failed], ["FATAL"])
        self.assertEqual(self.delivered, [])

    def test_stop_on_mismatch_degenerates_the_minority_and_goes_on(self) -> None:
        self.start("INSERT INTO t VALUES (1)", internal=True, degenerate_on_kind=True)
        self.backends[0].answer(IN_BLOCK)
        self.backends[0].answer(IN_BLOCK, complete("INSERT 0 1"))
        self.backends[1].answer(IN_BLOCK)
        self.backends[1].answer(FAILED, error("42P01", "relation does not exist"))
        self.assertEqual(self.degenerated, [(1,)])
        self.backends[0].answer(IDLE, complete("COMMIT"))
        self.assertNotIn("COMMIT", self.backends[1].sent_queries())
        self.assertEqual(
            self.delivered,
            [messages.command_complete("INSERT 0 1"), messages.ready_for_query(IDLE)],
        )


class MainNodeTests(SynchronousTestCase):
    def test_main_node_follows_the_first_usable_node(self) -> None:
        cluster = Cluster.from_config([BackendConfig(hostname="a"), BackendConfig(hostname="b")])
        follow_main_node(cluster)
        self.assertEqual([role_name(n) for n in cluster.nodes], ["main", "replica"])
        cluster.set_status(cluster.nodes[0], STATUS_DOWN, "test")
        self.assertEqual(cluster.nodes[1].role, ROLE_PRIMARY)
        self.assertEqual([role_name(n) for n in cluster.nodes], ["replica", "main"])
