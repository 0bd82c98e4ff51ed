"""
Session: the multi-node relay, driven with fake backends and no sockets.

Each fake backend records what the session writes to it (decoded into
messages), the proxy's own queries (replays), and the reply units it was
told to expect; a test answers for it with L{FakeBackend.ready}.  Weights
are 0:1, so reads go to node 1 (the standby) and the standby's connection
is opened when the first read needs it.
"""

from __future__ import annotations

from typing import Any, List
from unittest import mock

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.wire import split_messages
from twisted_pgpool.backend.pool import PooledConnection, PoolKey
from twisted_pgpool.backend.stats import SELECT
from twisted_pgpool.cluster.model import Cluster
from twisted_pgpool.config import config_from_dict
from twisted_pgpool.interfaces import ICachingSession, IReplySink
from twisted_pgpool.proxy.session import CLIENT_WATCHED, Session
from twisted_pgpool.routing import causal
from twisted_pgpool.routing.balancer import Balancer
from twisted_pgpool.testing.doubles import (
    Capture,
    FakeBackend,
    FakeCore,
    FakeFramer,
    FakeFrontend,
)
from twisted_pgpool.wire import messages
from twisted_pgpool.wire.framing import StreamFramer

I, T, E = messages.TRANSACTION_IDLE, messages.TRANSACTION_IN_BLOCK, messages.TRANSACTION_FAILED


def connection(backend: FakeBackend) -> PooledConnection:
    return PooledConnection(
        backend=backend,  # type: ignore[arg-type]
        key=PoolKey("app", "app", backend.node_id),
        created_at=0.0,
        poolable=True,
    )


class SessionTestCase(SynchronousTestCase):
    settings: dict = {}

    def setUp(self) -> None:
        config = config_from_dict(
            dict(
                {
                    "backends": [
                        {"hostname": "p", "port": 5432, "weight": 0},
                        {"hostname": "s", "port": 5433, "weight": 1},
                    ],
                    "pool_passwd": "",
                    # Read-your-writes has its own tests (ReadYourWritesTests).
                    "read_your_writes": "off",
                },
                **self.settings,
            )
        )
        cluster = Cluster.from_config(config.backends)
        self.core = FakeCore(
            config, cluster=cluster, balancer=Balancer(cluster, random=lambda: 0.5)
        )
        self.primary = FakeBackend(0)
        self.standby = FakeBackend(1)
        self.opened: List[int] = []
        self.frontend = FakeFrontend()
        self.framer = self.make_framer()
        self.session = Session(
            self.frontend,
            self.core,  # type: ignore[arg-type]
            connection(self.primary),
            self.framer,  # type: ignore[arg-type]
            self.open_connection,
        )

    def make_framer(self) -> Any:
        return FakeFramer()

    def open_connection(self, node: Any) -> defer.Deferred:
        self.opened.append(node.node_id)
        return defer.succeed(connection(self.standby))

    # -- the client ------------------------------------------------------------

    def send(self, *frames: bytes) -> None:
        for frame in frames:
            for kind, payload in split_messages(frame):
                self.session.client_message(kind, payload)

    def query(self, sql: str) -> None:
        self.send(messages.query(sql))

    def extended(self, sql: str, name: str = "") -> None:
        """
        Parse/Bind/Execute/Sync of C{sql}.
        """
        self.send(
            messages.parse(name, sql), messages.bind("", name), messages.execute(), messages.sync()
        )

    def answer(self, backend: FakeBackend, status: int = I) -> None:
        """
        Let C{backend} answer every unit it owes.
        """
        while backend.units:
            backend.ready(status)


class InterfaceTests(SessionTestCase):
    def test_provides_what_the_cache_steps_use(self) -> None:
        """
        L{twisted_pgpool.cache.steps} drives the session only through
        L{ICachingSession}.
        """
        self.assertTrue(verifyObject(ICachingSession, self.session))
        self.assertTrue(verifyObject(IReplySink, self.session))


class ReadWriteTests(SessionTestCase):
    def test_read_opens_the_standby_and_runs_there(self) -> None:
        self.query("SELECT 1")
        self.assertEqual(
            (self.opened, self.standby.received, self.primary.received), ([1], ["Q:SELECT 1"], [])
        )

    def test_write_runs_on_the_primary(self) -> None:
        self.query("INSERT INTO t VALUES (1)")
        self.assertEqual((self.primary.received, self.opened), (["Q:INSERT INTO t VALUES (1)"], []))

    def test_statement_for_another_node_waits_for_the_reply_in_progress(self) -> None:
        self.query("SELECT 1")
        self.query("INSERT INTO t VALUES (1)")
        self.assertEqual((self.primary.received, self.framer.paused), ([], True))
        self.answer(self.standby)
        self.assertEqual(
            (self.primary.received, self.framer.paused), (["Q:INSERT INTO t VALUES (1)"], False)
        )

    def test_begin_and_commit_go_to_both_nodes_once_the_standby_is_open(self) -> None:
        self.query("SELECT 1")
        self.answer(self.standby)
        self.query("BEGIN")
        self.answer(self.primary, T)
        self.answer(self.standby, T)
        self.query("COMMIT")
        self.assertEqual(
            (self.primary.received, self.standby.received[1:]),
            (["Q:BEGIN", "Q:COMMIT"], ["Q:BEGIN", "Q:COMMIT"]),
        )

    def test_failed_standby_read_in_a_transaction_fails_the_primarys_transaction(self) -> None:
        self.query("BEGIN")
        self.answer(self.primary, T)
        self.query("INSERT INTO t VALUES (1)")
        self.answer(self.primary, T)
        self.session.router.wrote_in_transaction = False  # as with "off"
        self.query("SELECT 1 / 0")
        self.answer(self.standby, E)
        self.assertEqual(
            self.primary.received[-1], "Q:ROLLBACK TO SAVEPOINT twisted_pgpool_abort_transaction"
        )


ADMIN_SHUTDOWN = messages.message(
    messages.ERROR_RESPONSE,
    b"SFATAL\x00C57P01\x00Mterminating connection due to administrator command\x00\x00",
)


class LastWordsTests(SessionTestCase):
    """
    A session ended by a server that went away passes on the server's own
    FATAL when the client has not had it yet (issue 13, finding 10).
    """

    def lose(self, backend: FakeBackend, relayed: bool) -> None:
        backend.sent_fatal = True
        backend.fatal_message = ADMIN_SHUTDOWN
        backend.fatal_relayed = relayed
        self.session.backend_lost(backend, Failure(ConnectionDone()))  # type: ignore[arg-type]

    def test_fatal_read_during_a_query_of_the_proxys_own_reaches_the_client(self) -> None:
        self.primary.expect_capture(lambda t, p: None, lambda s: None, True)
        self.lose(self.primary, relayed=False)
        self.assertEqual(
            (self.frontend.transport.data, len(self.frontend.failures)), ([ADMIN_SHUTDOWN], 1)
        )

    def test_fatal_already_relayed_is_not_sent_twice(self) -> None:
        self.lose(self.primary, relayed=True)
        self.assertEqual(self.frontend.transport.data, [])

    def test_standby_fatal_dropped_between_replies_reaches_the_client_if_it_ends_the_session(
        self,
    ) -> None:
        self.query("SELECT 1")
        self.answer(self.standby)
        sent = len(self.frontend.transport.data)
        # The standby's FATAL between statements is not the client's...
        self.session.async_message(self.standby, ADMIN_SHUTDOWN)  # type: ignore[arg-type]
        self.assertEqual(len(self.frontend.transport.data), sent)
        # ...until the standby goes away owing the proxy a reply.
        self.standby.expect_capture(lambda t, p: None, lambda s: None, False)
        self.lose(self.standby, relayed=False)
        self.assertEqual(self.frontend.transport.data[sent:], [ADMIN_SHUTDOWN])

    def test_nothing_is_written_while_another_node_is_mid_reply(self) -> None:
        self.query("SELECT 1")
        self.session.owner = self.standby  # type: ignore[assignment]
        before = list(self.frontend.transport.data)
        self.lose(self.primary, relayed=False)
        self.assertEqual(self.frontend.transport.data, before)


class ProtocolViolationTests(SessionTestCase):
    def test_unexpected_message_ends_the_session_after_the_replies_owed(self) -> None:
        self.query("SELECT 1")
        self.send(messages.message(messages.PASSWORD_MESSAGE, b"x\x00"))
        [error] = self.frontend.failures
        self.assertEqual(
            (error.sqlstate, error.message, self.frontend.ended_after_replies),
            ("08P01", "unexpected message type 'p'", [error]),
        )


class FinishTests(SessionTestCase):
    """
    The client's stream ended: the FATAL goes out once the replies owed
    are out -- not after a ReadyForQuery that only the client's own Sync
    would bring (fuzzer sequence 7:4645 hung).
    """

    def test_fatal_after_the_reply_of_a_query(self) -> None:
        done: List[bool] = []
        self.query("INSERT INTO t VALUES (1)")
        self.session.finish_with(lambda: done.append(True))
        self.assertEqual(done, [])
        self.answer(self.primary)
        self.assertEqual(done, [True])

    def test_fatal_does_not_wait_for_a_sync_that_will_not_come(self) -> None:
        done: List[bool] = []
        self.send(
            messages.parse("", "INSERT INTO t VALUES ($1)"),
            messages.bind("", ""),
            messages.execute(),
            messages.flush(),
        )
        self.session.finish_with(lambda: done.append(True))
        self.assertEqual(
            (done, self.primary.received), ([True], ["P:INSERT INTO t VALUES ($1)", "B", "E", "H"])
        )


class CopyInTests(SessionTestCase):
    """
    While the primary may be reading COPY data, a message other than the
    copy's (or Sync and Flush, which a copy ignores) ends the copy with a
    CopyFail of the proxy's own, and is then handled like any other, after
    the copy: never sent into the copy, where the server would read it
    either as the copy's or, when the copy had already failed, as a
    statement the proxy expects no reply to (fuzzer 13:144, 21:19742,
    22:2314).
    """

    def test_query_during_copy_in_ends_the_copy(self) -> None:
        self.query("COPY t FROM STDIN")
        self.query("SELECT 1")
        self.assertEqual(
            (self.primary.received, self.standby.received), (["Q:COPY t FROM STDIN", "f"], [])
        )
        # The copy's error and ReadyForQuery: the Query is routed after it.
        self.answer(self.primary)
        self.assertEqual(
            (self.primary.received, self.standby.received),
            (["Q:COPY t FROM STDIN", "f"], ["Q:SELECT 1"]),
        )

    def test_execute_during_copy_in_ends_the_copy(self) -> None:
        self.query("COPY t FROM STDIN")
        self.send(messages.execute())
        self.assertEqual(self.primary.received, ["Q:COPY t FROM STDIN", "f"])

    def test_sync_and_flush_during_copy_in_go_into_the_copy(self) -> None:
        # PostgreSQL ignores them in a copy; they do not end it.
        self.query("COPY t FROM STDIN")
        self.send(messages.sync(), messages.flush(), messages.copy_done())
        self.assertEqual(self.primary.received, ["Q:COPY t FROM STDIN", "S", "H", "c"])

    def test_after_copy_done_statements_are_routed_again(self) -> None:
        # The client's copy ended (CopyDone): what follows is a statement
        # like any other, queued behind the copy's reply (fuzzer warmup:2
        # sent it raw, and its Sync's ReadyForQuery surprised the proxy).
        self.query("COPY t FROM STDIN")
        self.send(messages.copy_done())
        self.send(
            messages.parse("", "SELECT 1"),
            messages.bind("", ""),
            messages.execute(),
            messages.sync(),
        )
        self.assertEqual(
            (self.primary.received, self.standby.received), (["Q:COPY t FROM STDIN", "c"], [])
        )
        self.answer(self.primary)
        self.assertEqual(self.standby.received, ["P:SELECT 1", "B", "E", "S"])

    def test_query_inside_an_extended_copy_ends_it(self) -> None:
        # Parse/Bind/Execute of a COPY FROM STDIN, then a Query before any
        # Sync (fuzzer 21:19742): the batch goes to the primary, the copy
        # is failed, and the batch ended with a Sync of the proxy's own
        # (only after the CopyFail: a Sync inside a copy is ignored); the
        # Query follows once that Sync is answered.
        self.send(
            messages.parse("", "COPY t FROM STDIN"), messages.bind("", ""), messages.execute()
        )
        self.query("SELECT 1")
        self.assertEqual(
            (self.primary.received, self.standby.received),
            (["P:COPY t FROM STDIN", "B", "E", "f", "S"], []),
        )
        self.answer(self.primary)
        self.assertEqual(self.standby.received, ["Q:SELECT 1"])

    def test_copy_queued_behind_a_read_ends_in_the_clients_order(self) -> None:
        # A read on the standby still unanswered; Parse/Bind/Execute of a
        # COPY FROM STDIN, its data, CopyDone and a Sync all wait behind
        # it.  The Sync comes after the client's CopyDone: it is the
        # batch's, with its own ReadyForQuery, not passed into the copy
        # (fuzzer 22:8579: "ReadyForQuery nobody waited for").
        self.query("SELECT 1")
        self.send(
            messages.parse("", "COPY t FROM STDIN"), messages.bind("", ""), messages.execute()
        )
        self.session.pass_to_primary(messages.copy_data(b"1\n"))
        self.send(messages.copy_done(), messages.sync())
        self.assertEqual(self.primary.received, [])
        self.answer(self.standby)
        self.assertEqual(
            (self.primary.received, self.primary.pending_ready),
            (["P:COPY t FROM STDIN", "B", "E", "d", "c", "S"], 1),
        )
        # A Query sent before that Sync is answered is a statement of its
        # own, routed after it -- not passed into a copy that is over.
        self.query("SELECT 2")
        self.answer(self.primary)
        self.assertEqual(
            (self.primary.received[6:], self.standby.received), ([], ["Q:SELECT 1", "Q:SELECT 2"])
        )

    def test_function_call_after_a_queued_extended_copy_syncs_first(self) -> None:
        # Fuzzer 23:18360: a read on the standby unanswered; an extended
        # COPY FROM STDIN queued behind it, its data, then a FunctionCall.
        # The copy is failed and ended with a Sync of the proxy's own
        # before the FunctionCall: a server skipping to a Sync after the
        # copy's error would never answer it, and the client would be
        # held forever.
        self.query("SELECT 1")
        self.send(
            messages.parse("", "COPY t FROM STDIN"), messages.bind("", ""), messages.execute()
        )
        self.session.pass_to_primary(messages.copy_data(b"1\n"))
        self.send(messages.function_call(1, []))
        self.answer(self.standby)
        self.assertEqual(
            self.primary.received, ["P:COPY t FROM STDIN", "B", "E", "d", "f", "S", "F:1"]
        )

    def test_after_the_copy_reads_are_balanced_again(self) -> None:
        self.query("COPY t FROM STDIN")
        self.answer(self.primary)
        self.query("SELECT 1")
        self.assertEqual(self.standby.received, ["Q:SELECT 1"])


class NamedObjectTests(SessionTestCase):
    """
    SQL commands naming a statement or a portal go where it is, whichever
    protocol created it (issue 15, findings 3 and 14): sent to the primary
    they failed with "prepared statement ... does not exist".
    """

    def test_execute_and_deallocate_follow_a_statement_parsed_on_the_standby(self) -> None:
        # A statement prepared by a Parse, run and dropped by SQL.
        self.send(messages.parse("foobar", "SELECT 1"), messages.sync())
        self.answer(self.standby)
        self.query("EXECUTE foobar")
        self.answer(self.standby)
        self.query("DEALLOCATE foobar")
        self.answer(self.standby)
        self.assertEqual(
            (self.standby.received, self.primary.received),
            (["P:SELECT 1", "S", "Q:EXECUTE foobar", "Q:DEALLOCATE foobar"], []),
        )
        # Gone: an EXECUTE now goes where the router sends it (the primary,
        # which reports that the statement does not exist).
        self.query("EXECUTE foobar")
        self.assertEqual(self.primary.received, ["Q:EXECUTE foobar"])

    def test_sql_prepare_and_execute_stay_on_the_primary(self) -> None:
        # SQL PREPARE goes to the primary (router), so its EXECUTE finds it
        # there in a transaction that wrote too.
        self.query("PREPARE q AS SELECT 1")
        self.answer(self.primary)
        self.query("EXECUTE q")
        self.assertEqual(
            (self.primary.received, self.standby.received),
            (["Q:PREPARE q AS SELECT 1", "Q:EXECUTE q"], []),
        )

    def test_deallocate_of_a_statement_parsed_on_the_standby(self) -> None:
        # psycopg: Parse in a round trip of its own, DEALLOCATE later.
        self.send(messages.parse("_pg3_1", "SELECT 1::bigint"), messages.sync())
        self.answer(self.standby)
        self.query("DEALLOCATE _pg3_1")
        self.assertEqual(
            (self.standby.received, self.primary.received),
            (["P:SELECT 1::bigint", "S", "Q:DEALLOCATE _pg3_1"], []),
        )
        self.answer(self.standby)
        self.assertNotIn("_pg3_1", self.session.statements)

    def test_deallocate_reaches_every_node_holding_the_statement(self) -> None:
        self.send(messages.parse("s1", "SELECT 1"), messages.sync())
        self.answer(self.standby)
        self.send(
            messages.parse("", "INSERT INTO t VALUES (1)"),
            messages.bind("", ""),
            messages.execute(),
            messages.bind("", "s1"),
            messages.execute(),
            messages.sync(),
        )
        self.answer(self.primary)
        self.query("DEALLOCATE s1")
        self.assertEqual(
            (self.primary.received[-1], self.standby.received[-1]),
            ("Q:DEALLOCATE s1", "Q:DEALLOCATE s1"),
        )

    def test_move_and_close_follow_a_portal_bound_on_the_standby(self) -> None:
        # asyncpg's cursor: a named portal bound by the extended protocol,
        # then MOVE FORWARD by SQL.
        self.query("BEGIN")
        self.answer(self.primary, T)
        self.answer(self.standby, T)
        self.send(
            messages.parse("", "SELECT generate_series(1, 10)"),
            messages.bind("c1", ""),
            messages.execute("c1", 2),
            messages.sync(),
        )
        self.answer(self.standby, T)
        self.query('MOVE FORWARD 3 "c1"')
        self.answer(self.standby, T)
        self.query("CLOSE c1")
        self.answer(self.standby, T)
        self.assertEqual(self.standby.received[-2:], ['Q:MOVE FORWARD 3 "c1"', "Q:CLOSE c1"])
        self.query("FETCH c1")
        self.assertEqual(self.primary.received[-1], "Q:FETCH c1")

    def test_a_duplicate_parse_goes_where_the_statement_is(self) -> None:
        # asyncpg's test_prepare_explicitly_named: the second Parse of a
        # name the client still has must reach the node that has it, which
        # reports 42P05 -- not a node without it, nor after a Close.
        self.send(messages.parse("foobar", "SELECT 1"), messages.sync())
        self.answer(self.standby)
        self.send(messages.parse("foobar", "SELECT 2"), messages.sync())
        self.assertEqual(
            (self.standby.received, self.primary.received),
            (["P:SELECT 1", "S", "P:SELECT 2", "S"], []),
        )

    def test_close_reaches_the_node_holding_the_statement(self) -> None:
        # psycopg (libpq 17+) deallocates with a Close message.
        self.send(messages.parse("_pg3_0", "SELECT 1"), messages.sync())
        self.answer(self.standby)
        self.send(messages.close("S", "_pg3_0"), messages.sync())
        self.assertEqual((self.standby.received[-2:], self.primary.received), (["C", "S"], []))
        self.answer(self.standby)
        self.assertNotIn("_pg3_0", self.session._node_statements[1])

    def test_a_declared_cursor_is_on_the_primary(self) -> None:
        self.query("DECLARE c2 CURSOR FOR SELECT 1")
        self.answer(self.primary)
        self.query("FETCH 1 FROM c2")
        self.assertEqual(
            self.primary.received, ["Q:DECLARE c2 CURSOR FOR SELECT 1", "Q:FETCH 1 FROM c2"]
        )


class BacklogTests(SessionTestCase):
    """
    A client with too many messages awaiting replies is not read until
    they drain (issue 13, finding 7).
    """

    settings = {"load_balance_mode": False}

    def test_reading_stops_at_the_backlog_limit(self) -> None:
        from twisted_pgpool.proxy.session import MAX_UNANSWERED

        for _ in range(MAX_UNANSWERED - 1):
            self.send(messages.sync())
        self.assertFalse(self.framer.paused)
        self.send(messages.sync())
        self.assertTrue(self.framer.paused)

    def test_reading_goes_on_once_the_replies_drain(self) -> None:
        from twisted_pgpool.proxy.session import BACKLOG_RESUME, MAX_UNANSWERED

        for _ in range(MAX_UNANSWERED):
            self.send(messages.sync())
        while len(self.primary.units) >= BACKLOG_RESUME:
            self.assertTrue(self.framer.paused)
            self.primary.ready()
        self.assertFalse(self.framer.paused)


class QueryAfterFlushTests(SessionTestCase):
    """
    A simple Query after Parse/Describe/Flush with no Sync (asyncpg's
    prepare): the batch is ended on its node with the proxy's own Sync,
    whose ReadyForQuery the client does not see, and the Query runs
    (issue 15, items 1 and 11: it waited forever).
    """

    def prepare(self) -> None:
        self.send(messages.parse("s1", "SELECT 1"), messages.describe("S", "s1"), messages.flush())

    def test_write_after_a_prepared_read_reaches_the_primary(self) -> None:
        self.prepare()
        self.query("INSERT INTO t VALUES (1)")
        self.assertEqual(self.standby.received, ["P:SELECT 1", "D", "H", "S"])
        self.assertEqual(self.standby.kept_ready, True)
        self.standby.ready()
        self.assertEqual(self.primary.received, ["Q:INSERT INTO t VALUES (1)"])

    def test_held_messages_go_before_the_query(self) -> None:
        self.send(messages.parse("s1", "SELECT 1"))
        self.query("SELECT 2")
        self.assertEqual(self.standby.received, ["P:SELECT 1", "S", "Q:SELECT 2"])


class ReplayTests(SessionTestCase):
    """
    What a standby connection opened in the middle of a session is given
    first, so that it is in the state the client set up.
    """

    def open_standby_with_a_read(self) -> None:
        self.query("SELECT current_setting('application_name')")
        self.assertEqual(self.opened, [1])

    def test_set_outside_a_transaction_is_replayed(self) -> None:
        self.query("SET application_name = 'x'")
        self.answer(self.primary)
        self.open_standby_with_a_read()
        self.assertEqual(self.standby.internal, ["SET application_name = 'x'"])

    def test_begin_is_replayed_inside_a_transaction(self) -> None:
        self.query("BEGIN")
        self.answer(self.primary, T)
        self.open_standby_with_a_read()
        self.assertEqual(self.standby.internal, ["BEGIN"])

    def test_set_with_the_extended_protocol_is_replayed(self) -> None:
        self.extended("SET application_name = 'x'")
        self.answer(self.primary)
        self.open_standby_with_a_read()
        self.assertEqual(self.standby.internal, ["SET application_name = 'x'"])

    def test_begin_with_the_extended_protocol_is_replayed(self) -> None:
        self.extended("BEGIN")
        self.answer(self.primary, T)
        self.open_standby_with_a_read()
        self.assertEqual(self.standby.internal, ["BEGIN"])

    def test_set_in_a_committed_transaction_is_replayed(self) -> None:
        self.query("BEGIN")
        self.answer(self.primary, T)
        self.query("SET application_name = 'x'")
        self.answer(self.primary, T)
        self.query("COMMIT")
        self.answer(self.primary, I)
        self.open_standby_with_a_read()
        self.assertEqual(self.standby.internal, ["SET application_name = 'x'"])

    def test_set_in_a_rolled_back_transaction_is_not_replayed(self) -> None:
        self.query("BEGIN")
        self.answer(self.primary, T)
        self.query("SET application_name = 'x'")
        self.answer(self.primary, T)
        self.query("ROLLBACK")
        self.answer(self.primary, I)
        self.open_standby_with_a_read()
        self.assertEqual(self.standby.internal, [])


class ExtendedProtocolTests(SessionTestCase):
    def test_batch_of_reads_goes_to_the_standby(self) -> None:
        self.extended("SELECT 1")
        self.assertEqual(
            (self.standby.received, self.primary.received), (["P:SELECT 1", "B", "E", "S"], [])
        )

    def test_statement_prepared_on_the_standby_is_prepared_on_the_primary_when_needed(self) -> None:
        self.send(messages.parse("s1", "SELECT 1"), messages.sync())
        self.answer(self.standby)
        self.query("BEGIN")
        self.answer(self.primary, T)
        self.answer(self.standby, T)
        self.query("INSERT INTO t VALUES (1)")
        self.answer(self.primary, T)
        self.send(messages.bind("", "s1"), messages.execute(), messages.sync())
        self.assertEqual(self.primary.received[-4:], ["P:SELECT 1", "B", "E", "S"])
        self.assertEqual(self.primary.hidden, [messages.PARSE_COMPLETE])

    def test_write_after_a_flush_to_the_standby_moves_to_the_primary(self) -> None:
        self.send(
            messages.parse("", "SELECT 1"),
            messages.bind("", ""),
            messages.execute(),
            messages.flush(),
        )
        self.send(
            messages.parse("", "INSERT INTO t VALUES (1)"),
            messages.bind("", ""),
            messages.execute(),
            messages.sync(),
        )
        # The standby's part ends with a Sync of the proxy's own, whose
        # ReadyForQuery the client must not see.
        self.assertEqual(
            (self.standby.received, self.standby.kept_ready),
            (["P:SELECT 1", "B", "E", "H", "S"], True),
        )
        self.assertEqual(self.primary.received, [])
        self.answer(self.standby)
        self.assertEqual(self.primary.received, ["P:INSERT INTO t VALUES (1)", "B", "E", "S"])

    def test_write_in_a_batch_with_begin_is_not_sent_to_the_standby(self) -> None:
        self.query("SELECT 1")
        self.answer(self.standby)
        self.send(
            messages.parse("", "BEGIN"),
            messages.bind("", ""),
            messages.execute(),
            messages.parse("", "INSERT INTO t VALUES (1)"),
            messages.bind("", ""),
            messages.execute(),
            messages.parse("", "COMMIT"),
            messages.bind("", ""),
            messages.execute(),
            messages.sync(),
        )
        self.assertEqual(self.primary.received.count("E"), 3)
        self.assertEqual(
            self.standby.received.count("E"),
            2,
            f"only BEGIN and COMMIT may be executed on the standby: {self.standby.received}",
        )


class ClientEncodingTests(SessionTestCase):
    """
    A client's SQL is bytes in its client_encoding: read with that
    encoding's codec where the proxy needs the text, never decoded in a
    way that can fail, and forwarded as it came.
    """

    def parse_bind_execute_sync(self, sql: bytes) -> bytes:
        return (
            messages.message(messages.PARSE, b"\x00" + sql + b"\x00\x00\x00")
            + messages.bind("", "")
            + messages.execute()
            + messages.sync()
        )

    def test_parse_of_bytes_that_are_not_utf8_is_forwarded_unchanged(self) -> None:
        frames = self.parse_bind_execute_sync(b"SELECT '\xff\xfe'")
        self.send(frames)
        self.assertEqual((self.frontend.failures, self.standby.written), ([], frames))

    def test_proxys_own_statements_are_looked_for_in_the_bytes_sent(self) -> None:
        self.send(self.parse_bind_execute_sync(b"SHOW '\xff'"))
        self.assertEqual(self.core.inspector.asked, [b"SHOW '\xff'\x00"])

    def test_query_of_bytes_that_are_not_utf8_is_forwarded_unchanged(self) -> None:
        frame = messages.message(messages.QUERY, b"SELECT '\xff\xfe'\x00")
        self.send(frame)
        self.assertEqual((self.frontend.failures, self.standby.written), ([], frame))

    def test_text_is_read_in_the_clients_encoding(self) -> None:
        # In SJIS, 0x83 0x5C is one character; read as UTF-8, 0x5C is a
        # backslash that escapes the quote, and the DELETE disappears
        # into a string: the write would be sent to the standby.
        self.primary.client_codec = "cp932"
        self.send(messages.message(messages.QUERY, b"SELECT E'\x83\x5c'; DELETE FROM t; --'\x00"))
        self.assertEqual((self.opened, len(self.primary.received)), ([], 1))

    def test_a_setting_is_read_and_replayed_in_the_clients_encoding(self) -> None:
        self.primary.client_codec = self.standby.client_codec = "latin-1"
        self.send(messages.message(messages.QUERY, b"SET my.label = 'caf\xe9'\x00"))
        self.answer(self.primary)
        self.query("SELECT current_setting('my.label')")
        self.assertEqual(
            (self.standby.internal, self.standby.internal_bytes),
            (
                ["SET my.label = 'café'"],
                [messages.message(messages.QUERY, b"SET my.label = 'caf\xe9'\x00")],
            ),
        )


class DirectClientEncodingTests(SessionTestCase):
    """
    The same, for a session that passes everything to the primary.
    """

    settings = {"load_balance_mode": False}

    def test_parse_of_bytes_that_are_not_utf8_is_forwarded_unchanged(self) -> None:
        frames = (
            messages.message(messages.PARSE, b"\x00SELECT '\xff'\x00\x00\x00")
            + messages.bind("", "")
            + messages.execute()
            + messages.sync()
        )
        # None: the framer forwards the message as it came.
        replacements = [
            self.session.client_message(kind, payload) for kind, payload in split_messages(frames)
        ]
        self.assertTrue(self.session.direct)
        self.assertEqual((self.frontend.failures, replacements), ([], [None] * 4))


class ReadYourWritesTests(SessionTestCase):
    """
    C{read_your_writes: session}: the commit position is asked for right
    behind a committing write, and a read goes to the standby only once it
    is known to have replayed that far.
    """

    settings = {"read_your_writes": "session"}
    POSITION = "F:2852"  # pg_current_wal_insert_lsn()
    REPLAY = "F:3821"  # pg_last_wal_replay_lsn()

    def client_bytes(self) -> bytes:
        return b"".join(self.frontend.transport.data)

    def commit_a_write_after_a_standby_read(self) -> None:
        """
        A read opens the standby; then a write commits at position 0/100.
        """
        self.query("SELECT 1")
        self.answer(self.standby)
        self.query("INSERT INTO t VALUES (1)")
        self.primary.ready(I)
        self.primary.ready(I, value="0/100")

    def test_a_committing_write_reports_its_position_before_ready(self) -> None:
        self.query("INSERT INTO t VALUES (1)")
        self.assertEqual(self.primary.received, ["Q:INSERT INTO t VALUES (1)", self.POSITION])
        self.assertTrue(self.primary.kept_ready)
        self.primary.ready(I)
        self.assertEqual(self.client_bytes(), b"", "ReadyForQuery held back")
        self.primary.ready(I, value="0/3000060")
        self.assertEqual(
            self.client_bytes(),
            messages.parameter_status("pgpool.commit_lsn", "0/3000060")
            + messages.ready_for_query(I),
        )
        self.assertEqual(self.session.causal.commit_lsn, 0x3000060)

    def test_the_reply_token_and_ready_leave_in_one_send(self) -> None:
        self.query("INSERT INTO t VALUES (1)")
        # The write's own reply, forwarded by the primary's connection.
        self.session.client_write(messages.command_complete("INSERT 0 1"))
        self.primary.ready(I)
        self.assertEqual(self.frontend.transport.sends, [])
        self.primary.ready(I, value="0/100")
        self.assertEqual(
            self.frontend.transport.sends,
            [
                messages.command_complete("INSERT 0 1")
                + messages.parameter_status("pgpool.commit_lsn", "0/100")
                + messages.ready_for_query(I)
            ],
        )
        # Later replies are passed on as they come.
        self.query("SELECT 1")
        self.session.client_write(messages.command_complete("SELECT 1"))
        self.assertEqual(self.frontend.transport.sends[-1], messages.command_complete("SELECT 1"))

    def test_a_large_committing_reply_is_not_kept_back(self) -> None:
        self.query("INSERT INTO t SELECT g FROM generate_series(1, 10000) g RETURNING g")
        rows = [messages.data_row([str(i)]) for i in range(3000)]
        for row in rows:
            self.session.client_write(row)
        self.assertGreater(
            len(b"".join(self.frontend.transport.sends)),
            16384,
            "passed on once over the bound, not all held",
        )
        self.primary.ready(I)
        self.primary.ready(I, value="0/100")
        self.assertEqual(
            self.client_bytes(),
            b"".join(rows)
            + messages.parameter_status("pgpool.commit_lsn", "0/100")
            + messages.ready_for_query(I),
        )

    def test_a_transaction_that_only_set_things_commits_nothing_to_wait_for(self) -> None:
        # SET counts as a write for routing inside a transaction, but a
        # standby has nothing of it to replay.
        self.query("BEGIN")
        self.answer(self.primary, T)
        self.query("SET application_name = 'x'")
        self.answer(self.primary, T)
        self.query("COMMIT")
        self.assertEqual(self.primary.received[-1], "Q:COMMIT")
        self.assertFalse(self.primary.kept_ready)

    def test_writes_inside_a_transaction_wait_for_the_commit(self) -> None:
        self.query("BEGIN")
        self.answer(self.primary, T)
        self.query("INSERT INTO t VALUES (1)")
        self.answer(self.primary, T)
        self.assertNotIn(self.POSITION, self.primary.received)
        self.query("COMMIT")
        self.assertEqual(self.primary.received[-2:], ["Q:COMMIT", self.POSITION])

    def test_a_read_after_a_write_asks_the_standby_and_moves_if_behind(self) -> None:
        self.commit_a_write_after_a_standby_read()
        self.query("SELECT 2")
        self.assertEqual(self.standby.received, ["Q:SELECT 1", self.REPLAY])
        self.assertTrue(self.framer.paused)
        self.standby.ready(I, value="0/80")
        self.assertEqual(self.primary.received[-1], "Q:SELECT 2")
        self.assertEqual(self.core.cluster.nodes[1].reads_moved_to_primary, 1)

    def test_a_read_after_a_write_stays_on_a_standby_that_caught_up(self) -> None:
        self.commit_a_write_after_a_standby_read()
        self.query("SELECT 2")
        self.standby.ready(I, value="0/100")
        self.assertEqual(self.standby.received[-1], "Q:SELECT 2")
        self.assertEqual(self.core.cluster.nodes[1].replay_lsn, 0x100)

    def test_a_read_waits_for_the_position_of_the_write_before_it(self) -> None:
        self.query("SELECT 1")
        self.answer(self.standby)
        self.query("INSERT INTO t VALUES (1)")
        self.query("SELECT 2")
        self.assertEqual(self.standby.received, ["Q:SELECT 1"])
        self.primary.ready(I)
        self.primary.ready(I, value="0/100")
        self.assertEqual(self.standby.received[-1], self.REPLAY)

    def test_copy_from_asks_for_the_position_when_a_read_needs_it(self) -> None:
        self.query("SELECT 1")
        self.answer(self.standby)
        self.query("COPY t FROM STDIN")
        self.assertEqual(
            self.primary.received,
            ["Q:COPY t FROM STDIN"],
            "nothing may follow COPY FROM STDIN before its data",
        )
        self.primary.ready(I)
        self.query("SELECT 2")
        self.assertEqual(self.primary.received[-1], self.POSITION)
        self.primary.ready(I, value="0/200")
        self.assertEqual(self.session.causal.commit_lsn, 0x200)
        self.assertEqual(self.standby.received[-1], self.REPLAY)
        self.assertEqual(self.client_bytes(), b"", "no token or ReadyForQuery of its own")

    def test_set_min_lsn_is_answered_by_the_proxy(self) -> None:
        self.query("SET pgpool.min_lsn = '0/500'")
        self.assertEqual((self.primary.received, self.standby.received), ([], []))
        self.assertEqual(
            self.client_bytes(), messages.command_complete("SET") + messages.ready_for_query(I)
        )
        self.assertEqual(self.session.causal.min_lsn, 0x500)

    def test_the_commit_position_is_wanted_from_the_standby(self) -> None:
        self.commit_a_write_after_a_standby_read()
        # No question of the session's own yet: the next reads that go to
        # the standby carry one.
        self.assertEqual(self.standby.received, ["Q:SELECT 1"])
        self.assertEqual(self.core.cluster.nodes[1].replay_wanted, 0x100)

    def test_a_read_to_the_standby_carries_a_wanted_question(self) -> None:
        standby = self.core.cluster.nodes[1]
        standby.replay_wanted = 0x100
        self.query("SELECT 1")
        self.assertEqual(
            self.standby.received,
            ["Q:SELECT 1", self.REPLAY],
            "one write: the read, then the question",
        )
        self.assertEqual(self.standby.units, [True, Capture(mock.ANY, mock.ANY, False)])
        self.standby.ready(I)
        # The client's next read does not wait for the answer; within the
        # interval it carries no question.
        self.query("SELECT 2")
        self.assertEqual(self.standby.received[-1], "Q:SELECT 2")
        self.standby.ready(I, value="0/80")
        self.assertEqual((standby.replay_lsn, standby.freshness_probes), (0x80, 1))
        self.answer(self.standby)
        # Again after the interval, while still behind.
        self.core.reactor.advance(causal.RIDE_ALONG_INTERVAL)
        self.query("SELECT 3")
        self.assertEqual(self.standby.received[-2:], ["Q:SELECT 3", self.REPLAY])
        self.standby.ready(I)
        self.standby.ready(I, value="0/100")
        # Caught up: nobody wants more, no more questions.
        self.core.reactor.advance(causal.RIDE_ALONG_INTERVAL)
        self.query("SELECT 4")
        self.assertEqual(self.standby.received[-1], "Q:SELECT 4")
        self.assertEqual((standby.replay_wanted, standby.freshness_probes), (0, 2))

    def test_a_read_after_a_write_finds_the_standby_fresh_from_other_reads(self) -> None:
        self.commit_a_write_after_a_standby_read()
        # What other sessions' reads learnt meanwhile.
        self.core.cluster.nodes[1].replay_lsn = 0x100
        self.query("SELECT 2")
        self.assertEqual(self.standby.received, ["Q:SELECT 1", "Q:SELECT 2"])
        self.assertEqual(self.core.cluster.nodes[1].freshness_probes, 0)


# -- long messages, seen by their head ---------------------------------------------

#: The framer's head size in these tests: anything longer is "long".
HEAD = 64


class LongMessageTestCase(SessionTestCase):
    """
    A session behind a real L{StreamFramer} (head size L{HEAD}), wired as
    the frontend wires it, so that long messages reach the session by
    their head and the rest streams.
    """

    def make_framer(self) -> Any:
        return StreamFramer(lambda t, p: None, lambda d: None, head_size=HEAD)

    def setUp(self) -> None:
        super().setUp()
        self.framer.redirect(
            self.session.client_message,
            self.session.pass_to_primary,
            CLIENT_WATCHED,
            heads=self.session.heads,
            on_head=self.session.client_head,
        )

    def feed(self, data: bytes, piece: int = 100) -> None:
        for start in range(0, len(data), piece):
            self.framer.feed(data[start : start + piece])

    def send(self, *frames: bytes) -> None:
        for frame in frames:
            self.framer.feed(frame)


def long_bind(statement: str = "", size: int = 1000) -> bytes:
    return messages.bind("", statement, [b"v" * size])


class DirectLongMessageTests(LongMessageTestCase):
    """
    A session that routes nothing lets long messages through as they come.
    """

    settings = {"load_balance_mode": False}

    def test_session_is_direct(self) -> None:
        self.assertTrue(self.session.direct)

    def test_long_query_streams_to_the_primary_as_it_arrives(self) -> None:
        query = messages.query("SELECT '" + "x" * 1000 + "'")
        lagging = []
        for start in range(0, len(query), 100):
            self.framer.feed(query[start : start + 100])
            if start + 100 > 5 + HEAD and bytes(self.primary.raw) != query[: start + 100]:
                lagging.append(start)
        self.assertEqual((lagging, bytes(self.primary.raw), self.framer.buffered), ([], query, 0))

    def test_long_query_is_counted_and_its_reply_expected(self) -> None:
        counts = self.core.cluster.nodes[0].statement_counts
        before = counts[SELECT]
        self.feed(messages.query("SELECT '" + "x" * 1000 + "'"))
        self.assertEqual(
            (counts[SELECT] - before, self.primary.units, self.session.owner),
            (1, [True], self.primary),
        )

    def test_long_parse_names_the_counter_its_executes_count_in(self) -> None:
        counts = self.core.cluster.nodes[0].statement_counts
        before = counts[SELECT]
        self.feed(messages.parse("s1", "SELECT '" + "x" * 1000 + "'"))
        self.send(messages.bind("p", "s1"), messages.execute("p"), messages.sync())
        self.assertEqual(
            (counts[SELECT] - before, self.primary.received),
            (1, ["P:SELECT '" + "x" * 1000 + "'", "B", "E", "S"]),
        )

    def test_long_bind_passes_through_byte_identical(self) -> None:
        self.send(messages.parse("s1", "SELECT $1"))
        bind = long_bind("s1")
        self.feed(bind + messages.execute() + messages.sync(), piece=7)
        self.assertEqual(
            bytes(self.primary.raw),
            messages.parse("s1", "SELECT $1") + bind + messages.execute() + messages.sync(),
        )

    def test_long_bind_of_an_own_statement_is_answered_and_dropped(self) -> None:
        self.session._local_statements["mine"] = "pool_nodes"
        self.feed(long_bind("mine"))
        self.assertEqual(
            (
                bytes(self.primary.raw),
                self.frontend.transport.data,
                self.session.mid_message_backends(),
            ),
            (b"", [messages.message(messages.BIND_COMPLETE)], ()),
        )

    def test_long_function_call_goes_to_the_primary_and_expects_its_reply(self) -> None:
        call = messages.function_call(2, [b"w" * 1000])
        self.feed(call)
        self.assertEqual((bytes(self.primary.raw), self.primary.units), (call, [True]))

    def test_names_longer_than_the_head_have_the_message_read_whole(self) -> None:
        self.feed(messages.parse("s" * 100, "SELECT 1"))
        self.assertEqual(list(self.session._direct_statements), [b"s" * 100])

    def test_client_breaking_off_leaves_the_primary_mid_message(self) -> None:
        self.framer.feed(messages.query("SELECT '" + "x" * 1000 + "'")[:500])
        self.assertEqual(self.session.mid_message_backends(), (self.primary,))

    def test_nothing_is_mid_message_between_messages(self) -> None:
        self.feed(messages.query("SELECT '" + "x" * 1000 + "'"))
        self.assertEqual(self.session.mid_message_backends(), ())


class RoutedLongMessageTests(LongMessageTestCase):
    """
    A routing session streams a long Bind (or function call) behind its
    head, to the node its batch went to: the primary when the batch could
    have been balanced.
    """

    def prepare_read_on_the_standby(self) -> None:
        self.send(messages.parse("r", "SELECT $1"), messages.sync())
        self.answer(self.standby)
        self.assertEqual(self.standby.received, ["P:SELECT $1", "S"])

    def test_long_bind_of_a_read_streams_to_the_primary(self) -> None:
        self.prepare_read_on_the_standby()
        bind = long_bind("r")
        self.feed(bind)
        self.send(messages.execute(), messages.sync())
        self.assertEqual(
            (self.primary.received, self.primary.hidden, self.standby.received),
            (["P:SELECT $1", "B", "E", "S"], [messages.PARSE_COMPLETE], ["P:SELECT $1", "S"]),
        )

    def test_long_bind_arrives_byte_identical_behind_the_batch_before_it(self) -> None:
        bind = long_bind("w")
        parse = messages.parse("w", "INSERT INTO t VALUES ($1)")
        self.feed(parse + bind + messages.execute() + messages.sync(), piece=33)
        self.assertEqual(
            bytes(self.primary.raw), parse + bind + messages.execute() + messages.sync()
        )

    def test_rest_of_a_long_bind_is_passed_on_as_it_arrives(self) -> None:
        # The Parse is held with the batch, and sent with the Bind's head.
        parse = messages.parse("w", "INSERT INTO t VALUES ($1)")
        self.send(parse)
        bind = long_bind("w", size=10000)
        lagging = []
        for start in range(0, len(bind), 1000):
            self.framer.feed(bind[start : start + 1000])
            if start + 1000 > 5 + HEAD and bytes(self.primary.raw) != parse + bind[: start + 1000]:
                lagging.append(start)
        self.assertEqual((lagging, self.framer.buffered), ([], 0))

    def test_long_bind_waits_for_the_reply_in_progress(self) -> None:
        self.query("SELECT 1")
        self.send(messages.parse("w", "INSERT INTO t VALUES ($1)"))
        bind = long_bind("w")
        self.feed(bind)
        self.assertEqual((self.primary.raw, self.framer.buffered > 0), (bytearray(), True))
        self.answer(self.standby)
        self.assertEqual(
            bytes(self.primary.raw), messages.parse("w", "INSERT INTO t VALUES ($1)") + bind
        )

    def test_long_bind_after_a_flushed_read_moves_the_batch_to_the_primary(self) -> None:
        self.send(
            messages.parse("r", "SELECT $1"),
            messages.bind("", "r", [b"1"]),
            messages.execute(),
            messages.flush(),
        )
        self.assertEqual(self.standby.received, ["P:SELECT $1", "B", "E", "H"])
        self.feed(long_bind("r"))
        # The standby's part is ended with a Sync of the proxy's own.
        self.assertEqual((self.standby.received[-1], self.standby.kept_ready), ("S", True))
        self.answer(self.standby)
        self.send(messages.execute(), messages.sync())
        self.assertEqual(self.primary.received, ["P:SELECT $1", "B", "E", "S"])

    def test_long_function_call_streams_to_the_primary(self) -> None:
        call = messages.function_call(2, [b"w" * 1000])
        self.feed(call)
        self.assertEqual((bytes(self.primary.raw), self.primary.units), (call, [True]))

    def test_primary_streamed_to_is_mid_message_until_the_end(self) -> None:
        bind = messages.parse("w", "INSERT INTO t VALUES ($1)") + long_bind("w")
        self.framer.feed(bind[:500])
        during = self.session.mid_message_backends()
        self.framer.feed(bind[500:])
        self.assertEqual((during, self.session.mid_message_backends()), ((self.primary,), ()))

    def test_bind_not_sent_anywhere_yet_leaves_nobody_mid_message(self) -> None:
        self.query("SELECT 1")
        self.framer.feed((messages.parse("w", "INSERT INTO t VALUES ($1)") + long_bind("w"))[:500])
        self.assertEqual(self.session.mid_message_backends(), ())

    def test_failing_the_primarys_transaction_waits_for_the_end_of_a_streamed_bind(self) -> None:
        self.query("SELECT 1")
        self.answer(self.standby)
        self.query("BEGIN")
        self.answer(self.primary, T)
        self.answer(self.standby, T)
        self.query("SET search_path = public")
        # The primary's reply (the client's) first; the standby's later.
        self.answer(self.primary, T)
        bind = messages.parse("w", "INSERT INTO t VALUES ($1)") + long_bind("w")
        self.framer.feed(bind[:500])
        self.standby.ready(E)
        held = list(self.primary.received)
        self.framer.feed(bind[500:])
        self.assertEqual(
            (held[-1], self.primary.received[-2:]),
            (
                "P:INSERT INTO t VALUES ($1)",
                ["B", "Q:ROLLBACK TO SAVEPOINT twisted_pgpool_abort_transaction"],
            ),
        )

    def test_long_query_is_read_whole_and_classified(self) -> None:
        self.feed(messages.query("INSERT INTO t VALUES ('" + "x" * 1000 + "')"))
        self.assertEqual(self.primary.received, ["Q:INSERT INTO t VALUES ('" + "x" * 1000 + "')"])


class CloseTests(SessionTestCase):
    def test_close_lets_go_of_the_statements_kept(self) -> None:
        """
        The session is freed by the garbage collector, some time after it
        closes (it is in reference cycles): the Parse messages it keeps,
        up to max_buffered_message_length each, are dropped at once.
        """
        self.send(messages.parse("s1", "SELECT 1"), messages.sync())
        self.assertEqual(list(self.session.statements), ["s1"])
        self.session.close()
        self.assertEqual(
            (self.session.statements, self.session._node_statements, self.session._batch),
            ({}, {}, []),
        )


class NativeLongMessageTests(LongMessageTestCase):
    settings = {"backend_clustering_mode": "native_replication"}

    def test_native_replication_reads_long_messages_whole(self) -> None:
        self.assertEqual(self.session.heads, frozenset())
