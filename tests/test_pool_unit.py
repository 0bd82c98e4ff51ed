"""
Unit tests for L{twisted_pgpool.backend.pool}: the pool policy driven with a fake
clock and fake backend connections that record what the pool asks of them
(reset queries, cancel, terminate), and the pure helpers that turn a
client's startup parameters into settings for a reused connection.
"""

from __future__ import annotations

from typing import List, Optional

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.backend.pool import (
    NEVER_POOLED_DATABASES,
    ConnectionPool,
    PooledConnection,
    PoolKey,
    parse_options,
    reapply_statement,
    settings_statement,
    split_startup_parameters,
)
from twisted_pgpool.backend.protocol import BackendConnectionLost, InternalResult
from twisted_pgpool.config import config_from_dict
from twisted_pgpool.service import ProxyCore
from twisted_pgpool.testing.doubles import FakeBackend
from twisted_pgpool.wire import messages

IDLE = messages.TRANSACTION_IDLE
IN_TRANSACTION = messages.TRANSACTION_IN_BLOCK
FAILED_TRANSACTION = messages.TRANSACTION_FAILED

APP = PoolKey("app", "app", 0)


def failed(message: str = "boom") -> InternalResult:
    return InternalResult(error={"S": "ERROR", "C": "XX000", "M": message})


class PoolTestCase(SynchronousTestCase):
    """
    Builds a pool on a L{Clock}, with generous limits unless a test says
    otherwise, and records the backends it cancels.
    """

    def make_pool(self, **settings) -> ConnectionPool:
        options = dict(
            enabled=True,
            max_idle_per_key=4,
            budget_per_node=100,
            connection_life_time=0,
            child_life_time=0,
            child_max_connections=0,
            reset_query_list=["ABORT", "DISCARD ALL"],
        )
        options.update(settings)
        self.clock = Clock()
        self.cancelled: List[FakeBackend] = []
        self.pool = ConnectionPool(self.clock, cancel=self.cancelled.append, **options)
        return self.pool

    def opened(
        self, key: PoolKey = APP, poolable: bool = True, backend: Optional[FakeBackend] = None
    ) -> PooledConnection:
        """
        A connection the pool just registered, in use by its client.
        """
        if backend is None:
            backend = FakeBackend(
                node_id=key.node_id, process_id=1000 + self.pool.opened, status_after_internal=IDLE
            )
        return self.pool.add(backend, key, poolable)

    def release(self, conn: PooledConnection) -> None:
        """
        Give C{conn} back and insist the release finished cleanly.
        """
        self.successResultOf(defer.Deferred.fromCoroutine(self.pool.release(conn)))

    def pooled(self, key: PoolKey = APP) -> PooledConnection:
        """
        A connection opened, used and given back: idle in the pool.
        """
        conn = self.opened(key)
        self.release(conn)
        return conn


# -- checkout ----------------------------------------------------------------------


class CheckoutTests(PoolTestCase):
    def setUp(self) -> None:
        self.make_pool()

    def test_empty_pool_has_nothing_to_give(self) -> None:
        self.assertIsNone(self.pool.checkout(APP))

    def test_released_connection_is_handed_out_again(self) -> None:
        conn = self.pooled()
        self.assertIs(self.pool.checkout(APP), conn)

    def test_checkout_takes_the_most_recently_used_first(self) -> None:
        first, second = self.opened(), self.opened()
        self.release(first)
        self.clock.advance(1)
        self.release(second)
        self.assertEqual(
            [self.pool.checkout(APP), self.pool.checkout(APP), self.pool.checkout(APP)],
            [second, first, None],
        )

    def test_other_user_gets_nothing(self) -> None:
        self.pooled()
        self.assertIsNone(self.pool.checkout(PoolKey("other", "app", 0)))

    def test_other_database_gets_nothing(self) -> None:
        self.pooled()
        self.assertIsNone(self.pool.checkout(PoolKey("app", "other", 0)))

    def test_other_node_gets_nothing(self) -> None:
        self.pooled()
        self.assertIsNone(self.pool.checkout(PoolKey("app", "app", 1)))

    def test_other_startup_only_parameters_get_nothing(self) -> None:
        self.pooled()
        self.assertIsNone(
            self.pool.checkout(PoolKey("app", "app", 0, (("replication", "database"),)))
        )

    def test_checked_out_connection_is_in_use(self) -> None:
        conn = self.pooled()
        self.clock.advance(7)
        self.pool.checkout(APP)
        self.assertEqual(
            (
                conn.in_use,
                conn.client_connected_at,
                self.pool.count(idle=True),
                self.pool.count(idle=False),
            ),
            (True, 7, 0, 1),
        )

    def test_checkout_counts_reuse(self) -> None:
        self.pooled()
        self.pool.checkout(APP)
        self.assertEqual((self.pool.opened, self.pool.reused), (1, 1))

    def test_connection_closed_while_idle_is_skipped_and_forgotten(self) -> None:
        good, dead = self.opened(), self.opened()
        self.release(good)
        self.release(dead)
        dead.backend.closed = True
        self.assertEqual((self.pool.checkout(APP), self.pool.count()), (good, 1))

    def test_connection_lost_while_idle_leaves_the_pool(self) -> None:
        conn = self.pooled()
        conn.backend.lose()
        self.assertEqual((self.pool.checkout(APP), self.pool.count()), (None, 0))

    def test_iteration_lists_connections_in_opening_order(self) -> None:
        conns = [self.opened() for _ in range(3)]
        self.release(conns[1])
        self.assertEqual(list(self.pool), conns)

    def test_count_by_node_and_state(self) -> None:
        self.pooled(PoolKey("app", "app", 0))
        self.opened(PoolKey("app", "app", 1))
        self.opened(PoolKey("app", "app", 1))
        self.assertEqual(
            (
                self.pool.count(),
                self.pool.count(0),
                self.pool.count(1),
                self.pool.count(1, idle=True),
                self.pool.count(1, idle=False),
            ),
            (3, 1, 2, 0, 2),
        )


class PoolabilityTests(PoolTestCase):
    def test_authenticated_client_connection_is_poolable(self) -> None:
        self.assertTrue(self.make_pool().is_poolable("app", "app", verified=True))

    def test_relayed_login_is_not_poolable(self) -> None:
        self.assertFalse(self.make_pool().is_poolable("app", "app", verified=False))

    def test_connection_cache_off_pools_nothing(self) -> None:
        self.assertFalse(self.make_pool(enabled=False).is_poolable("app", "app", verified=True))

    def test_pgpool_never_pools_template_and_maintenance_databases(self) -> None:
        pool = self.make_pool()
        self.assertEqual(
            sorted(db for db in NEVER_POOLED_DATABASES if not pool.is_poolable("app", db, True)),
            ["postgres", "regression", "template0", "template1"],
        )


# -- idle connections per key and the budget -------------------------------------


class IdlePerKeyTests(PoolTestCase):
    def test_keeping_more_than_max_idle_per_key_closes_the_oldest(self) -> None:
        self.make_pool(max_idle_per_key=2)
        conns = [self.opened() for _ in range(3)]
        for conn in conns:
            self.release(conn)
        self.assertEqual(
            ([c.backend.terminated for c in conns], self.pool.count(idle=True)),
            ([1, 0, 0], 2),
        )

    def test_max_idle_per_key_counts_per_key(self) -> None:
        self.make_pool(max_idle_per_key=1)
        mine, theirs = self.opened(APP), self.opened(PoolKey("other", "app", 0))
        self.release(mine)
        self.release(theirs)
        self.assertEqual(
            (mine.backend.terminated, theirs.backend.terminated, self.pool.count(idle=True)),
            (0, 0, 2),
        )

    def test_closed_connection_is_counted_as_closed(self) -> None:
        self.make_pool(max_idle_per_key=1)
        self.pooled()
        self.pooled()
        self.assertEqual((self.pool.opened, self.pool.closed, self.pool.count()), (2, 1, 1))


class BudgetTests(PoolTestCase):
    def test_make_room_closes_the_least_recently_used_idle_connection(self) -> None:
        self.make_pool(budget_per_node=2)
        old, new = self.opened(), self.opened(PoolKey("other", "app", 0))
        self.release(old)
        self.clock.advance(1)
        self.release(new)
        self.pool.make_room(0)
        self.assertEqual(
            (old.backend.terminated, new.backend.terminated, self.pool.count()), (1, 0, 1)
        )

    def test_make_room_below_the_budget_closes_nothing(self) -> None:
        self.make_pool(budget_per_node=3)
        conns = [self.pooled(), self.pooled(PoolKey("other", "app", 0))]
        self.pool.make_room(0)
        self.assertEqual([c.backend.terminated for c in conns], [0, 0])

    def test_make_room_never_closes_busy_connections(self) -> None:
        self.make_pool(budget_per_node=2)
        busy = [self.opened(), self.opened()]
        self.pool.make_room(0)
        self.assertEqual(([c.backend.terminated for c in busy], self.pool.count()), ([0, 0], 2))

    def test_make_room_leaves_other_nodes_alone(self) -> None:
        self.make_pool(budget_per_node=1)
        self.opened(PoolKey("app", "app", 0))
        other_node = self.pooled(PoolKey("app", "app", 1))
        self.pool.make_room(0)
        self.assertEqual(other_node.backend.terminated, 0)

    def test_make_room_closes_as_many_as_needed(self) -> None:
        self.make_pool(budget_per_node=2)
        idle = []
        for i in range(3):
            idle.append(self.pooled(PoolKey(f"user{i}", "app", 0)))
            self.clock.advance(1)
        self.pool.make_room(0)
        self.assertEqual(([c.backend.terminated for c in idle], self.pool.count(0)), ([1, 1, 0], 1))


class PgpoolSampleSettingsTests(PoolTestCase):
    """
    Pgpool-II's sample settings, num_init_children 32 and max_pool 4, wired
    as the proxy wires them: each of Pgpool-II's 32 children caches up to 4
    (user, database) pairs, so one pair can have 32 cached connections to a
    node, and all pairs together 128.

    Clients arrive as L{FrontendProtocol._acquire} serves them: a pooled
    connection of their key if there is one, else room is made on the node
    and a new one is opened.
    """

    def setUp(self) -> None:
        data = {
            "backends": [{"hostname": "127.0.0.1", "port": 5432}],
            "pool_passwd": "",
            "num_init_children": 32,
            "max_pool": 4,
        }
        reactor = MemoryReactorClock()
        self.pool = ProxyCore.from_config(config_from_dict(data), reactor).pool
        self.clock = reactor

    def connect(self, key: PoolKey = APP) -> PooledConnection:
        """
        A client of C{key} takes a pooled connection or opens one.
        """
        conn = self.pool.checkout(key)
        if conn is None:
            self.pool.make_room(key.node_id)
            conn = self.opened(key)
        return conn

    def churn(self, key: PoolKey, clients: int) -> List[PooledConnection]:
        """
        C{clients} concurrent clients of C{key} connect, then all leave.
        """
        conns = [self.connect(key) for _ in range(clients)]
        for conn in conns:
            self.release(conn)
            self.clock.advance(1)
        return conns

    def test_thirty_two_clients_of_one_pair_find_their_connections_again(self) -> None:
        """
        Before, max_pool 4 was the idle connections kept per pair: 28 of
        the 32 were closed as their clients left, and 28 reconnecting
        clients opened new ones.
        """
        first = self.churn(APP, 32)
        second = self.churn(APP, 32)
        self.assertEqual(
            (
                set(second) == set(first),
                self.pool.opened,
                self.pool.reused,
                self.pool.closed,
                self.pool.count(0, idle=True),
            ),
            (True, 32, 32, 0, 32),
        )

    def test_one_pair_keeps_at_most_num_init_children_idle(self) -> None:
        """
        A 33rd connection of one pair (one opened while the others were
        being reset, say) is more than Pgpool-II's children could cache:
        keeping it closes the pair's least recently used.
        """
        conns = self.churn(APP, 33)
        self.assertEqual(
            ([c.backend.terminated for c in conns], self.pool.count(0, idle=True)),
            ([1] + [0] * 32, 32),
        )

    def test_four_pairs_fill_the_budget_and_all_are_reused(self) -> None:
        pairs = [PoolKey(f"user{i}", "app", 0) for i in range(4)]
        first = {key: self.churn(key, 32) for key in pairs}
        second = {key: self.churn(key, 32) for key in pairs}
        self.assertEqual(
            (
                [set(second[k]) == set(first[k]) for k in pairs],
                self.pool.opened,
                self.pool.closed,
                self.pool.count(0),
            ),
            ([True] * 4, 128, 0, 128),
        )

    def test_fifth_pair_takes_the_least_recently_used_connection_of_any_pair(self) -> None:
        """
        With the node's 128 connections all cached, a client of a pair
        nobody cached closes the connection nobody used for longest,
        whichever pair it belongs to.
        """
        pairs = [PoolKey(f"user{i}", "app", 0) for i in range(4)]
        cached = {key: self.churn(key, 32) for key in pairs}
        # user0's connections were given back first, the first of them
        # before all others.
        newcomer = self.connect(PoolKey("user4", "app", 0))
        closed = [
            (key.user, i)
            for key in pairs
            for i, c in enumerate(cached[key])
            if c.backend.terminated
        ]
        self.assertEqual(
            (closed, newcomer.in_use, self.pool.count(0), self.pool.closed),
            ([("user0", 0)], True, 128, 1),
        )

    def test_budget_is_per_node(self) -> None:
        self.churn(PoolKey("app", "app", 0), 32)
        standby = self.churn(PoolKey("app", "app", 1), 32)
        self.assertEqual(
            (self.pool.count(0), self.pool.count(1), [c.backend.terminated for c in standby]),
            (32, 32, [0] * 32),
        )


# -- retirement and idle timers -----------------------------------------------------


class RetirementTests(PoolTestCase):
    def test_child_max_connections_retires_after_that_many_clients(self) -> None:
        self.make_pool(child_max_connections=2)
        conn = self.pooled()
        self.assertIs(self.pool.checkout(APP), conn)
        conn.backend.internal.clear()
        self.release(conn)
        self.assertEqual(
            (conn.backend.terminated, conn.backend.internal, self.pool.count()), (1, [], 0)
        )

    def test_child_max_connections_zero_never_retires(self) -> None:
        self.make_pool(child_max_connections=0)
        conn = self.pooled()
        for _ in range(50):
            self.pool.checkout(APP)
            self.release(conn)
        self.assertEqual((conn.backend.terminated, conn.sessions_served), (0, 51))

    def test_child_life_time_retires_an_old_connection_on_release(self) -> None:
        self.make_pool(child_life_time=60)
        conn = self.opened()
        self.clock.advance(60)
        self.release(conn)
        self.assertEqual(
            (conn.backend.terminated, conn.backend.internal, self.pool.count()), (1, [], 0)
        )

    def test_child_life_time_keeps_a_younger_connection(self) -> None:
        self.make_pool(child_life_time=60)
        conn = self.opened()
        self.clock.advance(59)
        self.release(conn)
        self.assertEqual((conn.backend.terminated, self.pool.count(idle=True)), (0, 1))

    def test_child_life_time_closes_an_idle_connection_when_it_expires(self) -> None:
        self.make_pool(child_life_time=60)
        conn = self.opened()
        self.clock.advance(10)
        self.release(conn)
        self.clock.advance(49.9)
        self.assertEqual(conn.backend.terminated, 0)
        self.clock.advance(0.1)
        self.assertEqual((conn.backend.terminated, self.pool.count()), (1, 0))

    def test_connection_life_time_closes_an_idle_connection(self) -> None:
        self.make_pool(connection_life_time=5)
        conn = self.pooled()
        self.clock.advance(4.9)
        self.assertEqual(conn.backend.terminated, 0)
        self.clock.advance(0.1)
        self.assertEqual(
            (conn.backend.terminated, self.pool.count(), self.pool.checkout(APP)), (1, 0, None)
        )

    def test_connection_life_time_counts_from_the_last_release(self) -> None:
        self.make_pool(connection_life_time=5)
        conn = self.pooled()
        self.clock.advance(4)
        self.pool.checkout(APP)
        self.release(conn)
        self.clock.advance(4.9)
        self.assertEqual(conn.backend.terminated, 0)
        self.clock.advance(0.1)
        self.assertEqual(conn.backend.terminated, 1)

    def test_connection_in_use_is_not_closed_by_connection_life_time(self) -> None:
        self.make_pool(connection_life_time=5)
        conn = self.pooled()
        self.pool.checkout(APP)
        self.clock.advance(100)
        self.assertEqual((conn.backend.terminated, self.clock.getDelayedCalls()), (0, []))

    def test_zero_connection_life_time_sets_no_timer(self) -> None:
        self.make_pool(connection_life_time=0, child_life_time=0)
        self.pooled()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_earlier_of_connection_life_time_and_child_life_time_wins(self) -> None:
        self.make_pool(connection_life_time=30, child_life_time=60)
        conn = self.opened()
        self.clock.advance(50)
        self.release(conn)
        self.clock.advance(9.9)
        self.assertEqual(conn.backend.terminated, 0)
        self.clock.advance(0.1)
        self.assertEqual(conn.backend.terminated, 1)

    def test_close_all_closes_idle_connections_only(self) -> None:
        self.make_pool()
        idle, busy = self.pooled(), self.opened()
        self.pool.close_all()
        self.assertEqual(
            (idle.backend.terminated, busy.backend.terminated, self.pool.count()), (1, 0, 1)
        )


# -- release: reset, or cancel and close ----------------------------------------------


class ReleaseTests(PoolTestCase):
    def setUp(self) -> None:
        self.make_pool()

    def test_release_detaches_the_backend(self) -> None:
        conn = self.pooled()
        self.assertEqual(conn.backend.detached, 1)

    def test_reset_runs_every_query_in_a_transaction(self) -> None:
        conn = self.opened()
        conn.backend.transaction_status = IN_TRANSACTION
        self.release(conn)
        self.assertEqual(conn.backend.internal, ["ABORT", "DISCARD ALL"])

    def test_reset_aborts_a_failed_transaction(self) -> None:
        conn = self.opened()
        conn.backend.transaction_status = FAILED_TRANSACTION
        self.release(conn)
        self.assertEqual(conn.backend.internal, ["ABORT", "DISCARD ALL"])

    def test_abort_is_skipped_when_idle(self) -> None:
        conn = self.pooled()
        self.assertEqual(conn.backend.internal, ["DISCARD ALL"])

    def test_rollback_is_skipped_like_abort(self) -> None:
        self.make_pool(reset_query_list=["ROLLBACK", "DISCARD ALL"])
        conn = self.pooled()
        self.assertEqual(conn.backend.internal, ["DISCARD ALL"])

    def unused(self) -> PooledConnection:
        """
        A connection given back by a session none of whose statements
        reached it (its reads went to another node), with the client's
        settings applied when it was taken.
        """
        conn = self.opened()
        conn.applied = {"application_name": "pgbench"}
        conn.backend.units_since_attach = 0
        self.assertIsNone(self.pool.give_back(conn))
        return conn

    def test_connection_no_statement_reached_is_kept_without_a_reset(self) -> None:
        """
        The default list only undoes what statements did: a connection no
        statement reached is pooled at once, with no round trip, and the
        next client of the pair takes it.
        """
        conn = self.unused()
        self.assertEqual(
            (conn.backend.internal, conn.backend.detached, conn.in_use, conn.sessions_served),
            ([], 1, False, 1),
        )
        self.assertIs(self.pool.checkout(APP), conn)

    def test_the_state_only_statements_are_recognised_as_written(self) -> None:
        self.make_pool(
            reset_query_list=[
                "abort",
                "discard  all",
                "RESET ALL",
                "Deallocate All",
                "CLOSE ALL",
                "UNLISTEN *",
                "SET SESSION AUTHORIZATION DEFAULT",
                "select pg_advisory_unlock_all()",
            ]
        )
        self.assertEqual(self.unused().backend.internal, [])

    def test_a_site_statement_in_the_list_runs_at_every_release(self) -> None:
        """
        Pgpool-II runs the whole list at each session's end: a statement
        that is not only a reset of session state (a site's function,
        say) is run even on a connection no statement reached.
        """
        self.make_pool(reset_query_list=["ABORT", "DISCARD ALL", "SELECT log_release()"])
        conn = self.opened()
        conn.applied = {"application_name": "pgbench"}
        conn.backend.units_since_attach = 0
        self.release(conn)
        self.assertEqual(
            conn.backend.internal,
            ["DISCARD ALL", "SELECT log_release()", "SET application_name TO 'pgbench'"],
        )

    def test_a_reload_of_the_list_is_taken_into_account(self) -> None:
        self.pool.reset_query_list = ["DISCARD ALL", "SELECT log_release()"]
        conn = self.opened()
        conn.backend.units_since_attach = 0
        self.release(conn)
        self.assertEqual(conn.backend.internal, ["DISCARD ALL", "SELECT log_release()"])

    def test_connection_a_statement_reached_is_reset(self) -> None:
        conn = self.opened()
        conn.backend.units_since_attach = 1
        self.release(conn)
        self.assertEqual(conn.backend.internal, ["DISCARD ALL"])

    def test_connection_left_in_a_transaction_is_reset_even_if_unanswered(self) -> None:
        conn = self.opened()
        conn.backend.units_since_attach = 0
        conn.backend.transaction_status = IN_TRANSACTION
        self.release(conn)
        self.assertEqual(conn.backend.internal, ["ABORT", "DISCARD ALL"])

    def test_reset_connection_is_kept_idle(self) -> None:
        conn = self.pooled()
        self.assertEqual(
            (
                conn.in_use,
                conn.sessions_served,
                conn.backend.terminated,
                self.pool.count(idle=True),
            ),
            (False, 1, 0, 1),
        )

    def test_failed_reset_closes_the_connection(self) -> None:
        conn = self.opened()
        conn.backend.replies["DISCARD ALL"] = failed()
        self.release(conn)
        self.assertEqual(
            (conn.backend.terminated, self.pool.count(), self.pool.checkout(APP)), (1, 0, None)
        )

    def test_failed_reset_closes_even_if_later_queries_succeeded(self) -> None:
        # The reset list is sent in one go (one round trip); any failure
        # in it closes the connection.
        self.make_pool(reset_query_list=["DISCARD ALL", "SELECT 1"])
        conn = self.opened()
        conn.backend.replies["DISCARD ALL"] = failed()
        self.release(conn)
        self.assertEqual(
            (conn.backend.internal, conn.backend.terminated, self.pool.checkout(APP)),
            (["DISCARD ALL", "SELECT 1"], 1, None),
        )

    def test_last_clients_settings_are_reapplied_after_the_reset(self) -> None:
        conn = self.opened()
        conn.applied = {"application_name": "web"}
        self.release(conn)
        self.assertEqual(conn.backend.internal, ["DISCARD ALL", "SET application_name TO 'web'"])

    def test_several_settings_are_reapplied_with_set_config(self) -> None:
        conn = self.opened()
        conn.applied = {"application_name": "web", "search_path": "a,b"}
        self.release(conn)
        self.assertEqual(
            conn.backend.internal,
            [
                "DISCARD ALL",
                "SELECT pg_catalog.set_config('application_name', 'web', false), "
                "pg_catalog.set_config('search_path', 'a,b', false)",
            ],
        )

    def test_connection_lost_during_reset_is_forgotten(self) -> None:
        conn = self.opened()
        conn.backend.replies["DISCARD ALL"] = BackendConnectionLost("gone")
        self.release(conn)
        self.assertEqual((self.pool.count(), self.pool.checkout(APP)), (0, None))

    def test_reset_not_answered_in_time_closes_the_connection(self) -> None:
        self.make_pool(reset_timeout=10.0)
        conn = self.opened()
        conn.backend.replies["DISCARD ALL"] = defer.Deferred()
        self.pool.give_back(conn)
        self.clock.advance(10)
        self.assertEqual(
            (conn.backend.aborted, self.pool.count(), self.pool.checkout(APP)), (1, 0, None)
        )

    def test_client_waiting_for_a_stuck_reset_goes_on_at_the_deadline(self) -> None:
        self.make_pool(reset_timeout=10.0)
        conn = self.opened()
        conn.backend.replies["DISCARD ALL"] = defer.Deferred()
        self.pool.give_back(conn)
        waiter = self.pool.wait_for_reset(APP)
        self.clock.advance(9.9)
        self.assertNoResult(waiter)
        self.clock.advance(0.1)
        self.successResultOf(waiter)

    def test_reset_answered_in_time_is_kept(self) -> None:
        self.make_pool(reset_timeout=10.0)
        conn = self.opened()
        reset: defer.Deferred = defer.Deferred()
        conn.backend.replies["DISCARD ALL"] = reset
        self.pool.give_back(conn)
        self.clock.advance(9)
        reset.callback(InternalResult())
        self.clock.advance(5)
        self.assertEqual((conn.backend.aborted, self.pool.checkout(APP)), (0, conn))

    def test_connection_left_in_a_transaction_by_the_reset_is_closed(self) -> None:
        self.make_pool(reset_query_list=["SELECT 1"])
        conn = self.opened()
        conn.backend.transaction_status = IN_TRANSACTION
        conn.backend.status_after_internal = IN_TRANSACTION
        self.release(conn)
        self.assertEqual((conn.backend.terminated, self.pool.count()), (1, 0))

    def test_connection_is_not_handed_out_while_its_reset_runs(self) -> None:
        conn = self.opened()
        reset: defer.Deferred = defer.Deferred()
        conn.backend.replies["DISCARD ALL"] = reset
        release = defer.Deferred.fromCoroutine(self.pool.release(conn))
        self.assertIsNone(self.pool.checkout(APP))
        reset.callback(InternalResult())
        self.successResultOf(release)
        self.assertIs(self.pool.checkout(APP), conn)

    def test_waiter_fires_when_the_reset_it_waits_for_is_over(self) -> None:
        first, second = self.opened(), self.opened()
        first_reset: defer.Deferred = defer.Deferred()
        second_reset: defer.Deferred = defer.Deferred()
        first.backend.replies["DISCARD ALL"] = first_reset
        second.backend.replies["DISCARD ALL"] = second_reset
        self.pool.give_back(first)
        self.pool.give_back(second)
        waiter = self.pool.wait_for_reset(APP)
        second_reset.callback(InternalResult())
        self.assertNoResult(waiter)
        first_reset.callback(InternalResult())
        self.successResultOf(waiter)

    def test_each_waiter_waits_for_a_reset_of_its_own(self) -> None:
        """
        Two sessions end, two queued clients take their slots at once: each
        waits for one of the two resets, and gets a connection.
        """
        conns = [self.opened() for _ in range(2)]
        resets = []
        for conn in conns:
            reset: defer.Deferred = defer.Deferred()
            conn.backend.replies["DISCARD ALL"] = reset
            resets.append(reset)
            self.pool.give_back(conn)
        waiters = [self.pool.wait_for_reset(APP) for _ in range(2)]
        resets[0].callback(InternalResult())
        first_fired = self.successResultOf(waiters[0]) is None
        self.assertNoResult(waiters[1])
        taken = self.pool.checkout(APP)
        resets[1].callback(InternalResult())
        self.successResultOf(waiters[1])
        self.assertEqual((first_fired, {taken, self.pool.checkout(APP)}), (True, set(conns)))

    def test_no_reset_to_wait_for_once_each_has_a_waiter(self) -> None:
        conn = self.opened()
        conn.backend.replies["DISCARD ALL"] = defer.Deferred()
        self.pool.give_back(conn)
        self.pool.wait_for_reset(APP)
        self.assertIsNone(self.pool.wait_for_reset(APP))

    def test_no_reset_left_to_wait_for_once_all_are_over(self) -> None:
        conns = [self.opened() for _ in range(2)]
        resets = []
        for conn in conns:
            reset: defer.Deferred = defer.Deferred()
            conn.backend.replies["DISCARD ALL"] = reset
            resets.append(reset)
            self.pool.give_back(conn)
        for reset in reversed(resets):
            reset.callback(InternalResult())
        self.assertIsNone(self.pool.wait_for_reset(APP))

    def test_give_back_of_a_connection_closed_at_once_returns_none(self) -> None:
        conn = self.opened(poolable=False)
        self.assertIsNone(self.pool.give_back(conn))
        self.assertEqual(conn.backend.terminated, 1)

    def test_give_back_fires_once_the_connection_is_kept(self) -> None:
        conn = self.opened()
        reset: defer.Deferred = defer.Deferred()
        conn.backend.replies["DISCARD ALL"] = reset
        done = self.pool.give_back(conn)
        self.assertNoResult(done)
        reset.callback(InternalResult())
        self.successResultOf(done)
        self.assertIs(self.pool.checkout(APP), conn)

    def test_connection_lost_before_the_reset_is_sent_is_forgotten(self) -> None:
        conn = self.opened()

        def closed(statements):
            raise BackendConnectionLost("gone")

        conn.backend.run_internal_pipeline = closed
        self.release(conn)
        self.assertEqual(self.pool.count(), 0)

    def test_busy_connection_is_cancelled_and_closed_without_reset(self) -> None:
        conn = self.opened()
        conn.backend.expect(True)  # a reply is owed
        self.release(conn)
        self.assertEqual(
            (self.cancelled, conn.backend.terminated, conn.backend.internal, self.pool.count()),
            ([conn.backend], 1, [], 0),
        )

    def test_busy_state_is_read_before_detaching(self) -> None:
        """
        C{BackendProtocol.detach()} forgets the replies still owed (it
        clears C{_units}, so C{pending_ready} drops to 0), so the pool must
        look at C{busy}/C{pending_ready} before detaching.

        BUG (twisted_pgpool/backend/pool.py, C{ConnectionPool.release}, since
        8b9709b): C{backend.detach(...)} is called first, so an abandoned
        running query looks idle: the pool sends no cancel and queues its
        reset behind the query (test_e2e_pooling.AbandonTests
        .test_client_gone_during_a_query_cancels_it fails: pg_sleep(30)
        runs on).  Fix: in C{release}, read
        C{busy = backend.busy} and
        C{owes_reply = backend.pending_ready > 0 or backend.unsynced_execute}
        before C{backend.detach(...)} and test those afterwards
        (C{if busy: if owes_reply: self._cancel(backend); self.discard(conn);
        return}).
        """
        conn = self.opened()
        conn.backend.detach_forgets_work = True
        conn.backend.expect(True)  # a reply is owed
        self.release(conn)
        self.assertEqual(
            (self.cancelled, conn.backend.terminated, conn.backend.internal),
            ([conn.backend], 1, []),
        )

    def test_unsynced_parse_is_closed_without_cancel(self) -> None:
        conn = self.opened()
        conn.backend.unsynced = True
        self.release(conn)
        self.assertEqual(
            (self.cancelled, conn.backend.terminated, conn.backend.internal), ([], 1, [])
        )

    def test_unsynced_execute_is_cancelled_and_closed(self) -> None:
        """
        An Execute sent with a Flush but no Sync runs on the server at once
        and owes no ReadyForQuery: closing the connection alone does not
        stop it, because PostgreSQL does not notice a closed socket while
        a query runs (see test_e2e_pooling.AbandonTests
        .test_client_gone_during_unsynced_execute_leaves_no_running_query).

        BUG (twisted_pgpool/backend/pool.py, C{ConnectionPool.release}): the cancel
        is sent only when C{backend.pending_ready > 0}.  Fix: cancel when
        C{backend.pending_ready > 0 or backend.unsynced_execute}, both read
        before C{backend.detach()} (see
        L{test_busy_state_is_read_before_detaching}).
        """
        conn = self.opened()
        conn.backend.unsynced = conn.backend.unsynced_execute = True
        self.release(conn)
        self.assertEqual((self.cancelled, conn.backend.terminated), ([conn.backend], 1))

    def test_connection_not_poolable_is_closed_without_reset(self) -> None:
        conn = self.opened(poolable=False)
        self.release(conn)
        self.assertEqual(
            (conn.backend.terminated, conn.backend.internal, self.pool.count()), (1, [], 0)
        )

    def test_connection_already_closed_is_only_forgotten(self) -> None:
        conn = self.opened()
        conn.backend.closed = True
        self.release(conn)
        self.assertEqual((conn.backend.terminated, self.pool.count()), (0, 0))

    def test_release_records_when_the_client_left(self) -> None:
        conn = self.opened()
        self.clock.advance(3)
        self.release(conn)
        self.assertEqual((conn.client_disconnected_at, conn.last_used_at), (3, 3))


# -- startup parameters -------------------------------------------------------------


class ParseOptionsTests(SynchronousTestCase):
    def test_dash_c_with_a_space(self) -> None:
        self.assertEqual(parse_options("-c search_path=a,b"), {"search_path": "a,b"})

    def test_dash_c_joined(self) -> None:
        self.assertEqual(parse_options("-csearch_path=x"), {"search_path": "x"})

    def test_double_dash_form_with_dashes_in_the_name(self) -> None:
        self.assertEqual(parse_options("--statement-timeout=5s"), {"statement_timeout": "5s"})

    def test_several_settings(self) -> None:
        self.assertEqual(
            parse_options("-c a.b=1  -c\tc.d=2 --e.f=3"),
            {"a.b": "1", "c.d": "2", "e.f": "3"},
        )

    def test_backslash_escapes_a_space(self) -> None:
        self.assertEqual(
            parse_options(r"-c application_name=my\ app"), {"application_name": "my app"}
        )

    def test_backslash_escapes_a_backslash(self) -> None:
        self.assertEqual(parse_options(r"-c x.y=a\\b"), {"x.y": "a\\b"})

    def test_value_may_contain_equals(self) -> None:
        self.assertEqual(parse_options("-c x.y=a=b"), {"x.y": "a=b"})

    def test_empty_value(self) -> None:
        self.assertEqual(parse_options("-c search_path="), {"search_path": ""})

    def test_empty_options(self) -> None:
        self.assertEqual(parse_options(""), {})

    def test_later_setting_wins(self) -> None:
        self.assertEqual(parse_options("-c x.y=1 -c x.y=2"), {"x.y": "2"})

    def test_other_switch_is_not_a_setting(self) -> None:
        self.assertIsNone(parse_options("-B 100"))

    def test_switch_after_a_setting_is_not_a_setting(self) -> None:
        self.assertIsNone(parse_options("-c x.y=1 -F"))

    def test_dash_c_without_a_value(self) -> None:
        self.assertIsNone(parse_options("-c"))

    def test_assignment_without_equals(self) -> None:
        self.assertIsNone(parse_options("-c search_path"))

    def test_assignment_without_a_name(self) -> None:
        self.assertIsNone(parse_options("-c =x"))


class SplitStartupParametersTests(SynchronousTestCase):
    def test_identity_is_not_a_setting(self) -> None:
        self.assertEqual(split_startup_parameters({"user": "app", "database": "app"}), ({}, ()))

    def test_ordinary_parameters_are_settings(self) -> None:
        self.assertEqual(
            split_startup_parameters(
                {
                    "user": "app",
                    "application_name": "x",
                    "client_encoding": "UTF8",
                    "DateStyle": "ISO, DMY",
                    "TimeZone": "UTC",
                }
            ),
            (
                {
                    "application_name": "x",
                    "client_encoding": "UTF8",
                    "DateStyle": "ISO, DMY",
                    "TimeZone": "UTC",
                },
                (),
            ),
        )

    def test_options_become_settings(self) -> None:
        self.assertEqual(
            split_startup_parameters({"options": "-c search_path=s1,public -c work_mem=8MB"}),
            ({"search_path": "s1,public", "work_mem": "8MB"}, ()),
        )

    def test_options_that_are_not_settings_are_startup_only(self) -> None:
        self.assertEqual(
            split_startup_parameters({"options": "-B 100"}), ({}, (("options", "-B 100"),))
        )

    def test_replication_is_startup_only(self) -> None:
        self.assertEqual(
            split_startup_parameters({"replication": "database"}),
            ({}, (("replication", "database"),)),
        )

    def test_protocol_extensions_are_startup_only(self) -> None:
        self.assertEqual(
            split_startup_parameters({"_pq_.b": "1", "_pq_.a": "2"}),
            ({}, (("_pq_.a", "2"), ("_pq_.b", "1"))),
        )

    def test_explicit_parameter_beats_options_after_it(self) -> None:
        """
        PostgreSQL applies the C{options} switches first and the other
        startup parameters after them (C{process_startup_options} in
        postgres.c), so an explicit parameter wins whatever the order of
        the packet.  libpq sends C{options} first, which hides this; other
        drivers need not.

        BUG (twisted_pgpool/backend/pool.py, C{split_startup_parameters}): settings
        are merged in packet order, so C{options} coming after
        C{application_name} overrides it.  Fix: collect the parsed
        C{options} into their own dict and return
        C{{**from_options, **explicit}}, i.e. apply C{settings.update(parsed)}
        to a separate C{from_options} dict and merge it underneath the
        explicit parameters at the end.
        """
        settings, _ = split_startup_parameters(
            {"application_name": "explicit", "options": "-c application_name=from_options"}
        )
        self.assertEqual(settings, {"application_name": "explicit"})

    def test_explicit_parameter_beats_options_before_it(self) -> None:
        settings, _ = split_startup_parameters(
            {"options": "-c application_name=from_options", "application_name": "explicit"}
        )
        self.assertEqual(settings, {"application_name": "explicit"})


class AppliedSettingsTests(SynchronousTestCase):
    """
    A pooled connection keeps its last client's settings across the reset,
    so a client of the same application needs no statement at all.
    """

    def test_same_settings_as_the_last_client_need_nothing(self) -> None:
        applied = {"application_name": "web", "search_path": "a,b"}
        self.assertIsNone(settings_statement(dict(applied), applied, {"application_name": "web"}))

    def test_setting_the_last_client_had_and_this_one_has_not_is_reset(self) -> None:
        self.assertEqual(
            settings_statement(
                {"application_name": "web"},
                {"application_name": "web", "search_path": "a,b"},
                {"application_name": "web"},
            ),
            'RESET "search_path"',
        )

    def test_reset_and_set_go_in_one_query(self) -> None:
        self.assertEqual(
            settings_statement(
                {"application_name": "batch"},
                {"application_name": "web", "work_mem": "8MB"},
                {"application_name": "web"},
            ),
            'RESET "application_name"; RESET "work_mem"; '
            "SELECT pg_catalog.set_config('application_name', 'batch', false)",
        )

    def test_setting_the_last_client_changed_is_reset_before_it_is_set(self) -> None:
        # DateStyle merges: 'SQL' after 'German, DMY' would be 'SQL, DMY'.
        self.assertEqual(
            settings_statement(
                {"DateStyle": "SQL"}, {"DateStyle": "German, DMY"}, {"DateStyle": "German, DMY"}
            ),
            "RESET \"DateStyle\"; SELECT pg_catalog.set_config('DateStyle', 'SQL', false)",
        )

    def test_reapply_restores_every_applied_setting(self) -> None:
        self.assertEqual(
            reapply_statement({"application_name": "web", "search_path": "a,b"}),
            "SELECT pg_catalog.set_config('application_name', 'web', false), "
            "pg_catalog.set_config('search_path', 'a,b', false)",
        )

    def test_application_name_alone_is_reapplied_with_set(self) -> None:
        self.assertEqual(
            reapply_statement({"application_name": "o'brien\\"}),
            "SET application_name TO E'o''brien\\\\'",
        )

    def test_nothing_applied_means_nothing_to_reapply(self) -> None:
        self.assertIsNone(reapply_statement({}))


class SettingsStatementTests(SynchronousTestCase):
    def test_nothing_to_set(self) -> None:
        self.assertIsNone(settings_statement({}, {}, {"application_name": ""}))

    def test_one_setting_is_one_set_config_call(self) -> None:
        self.assertEqual(
            settings_statement({"application_name": "web"}, {}, {"application_name": ""}),
            "SELECT pg_catalog.set_config('application_name', 'web', false)",
        )

    def test_all_settings_go_in_one_statement_in_order(self) -> None:
        self.assertEqual(
            settings_statement({"search_path": "a,b", "application_name": "web"}, {}, {}),
            "SELECT pg_catalog.set_config('search_path', 'a,b', false), "
            "pg_catalog.set_config('application_name', 'web', false)",
        )

    def test_setting_already_reported_with_that_value_is_skipped(self) -> None:
        self.assertEqual(
            settings_statement(
                {"client_encoding": "UTF8", "application_name": "web"},
                {},
                {"client_encoding": "UTF8", "application_name": ""},
            ),
            "SELECT pg_catalog.set_config('application_name', 'web', false)",
        )

    def test_reported_names_compare_without_case(self) -> None:
        self.assertIsNone(
            settings_statement({"datestyle": "ISO, MDY"}, {}, {"DateStyle": "ISO, MDY"})
        )

    def test_different_value_is_set(self) -> None:
        self.assertEqual(
            settings_statement({"DateStyle": "SQL, DMY"}, {}, {"DateStyle": "ISO, MDY"}),
            "SELECT pg_catalog.set_config('DateStyle', 'SQL, DMY', false)",
        )

    def test_quote_is_doubled(self) -> None:
        self.assertEqual(
            settings_statement({"application_name": "o'brien"}, {}, {}),
            "SELECT pg_catalog.set_config('application_name', 'o''brien', false)",
        )

    def test_backslash_uses_an_escape_string(self) -> None:
        self.assertEqual(
            settings_statement({"application_name": "a\\b'c"}, {}, {}),
            "SELECT pg_catalog.set_config('application_name', E'a\\\\b''c', false)",
        )


class GreetingTests(PoolTestCase):
    """
    The ParameterStatus part of each client's greeting is encoded once per
    set of server settings, not once per client.
    """

    def setUp(self) -> None:
        self.make_pool()
        self.backend = FakeBackend(status_after_internal=IDLE)
        self.backend.parameters = {"application_name": "web", "TimeZone": "UTC"}
        self.encoded = 0

        def parameter_status_messages() -> bytes:
            self.encoded += 1
            return b"".join(
                messages.parameter_status(name, value)
                for name, value in self.backend.parameters.items()
            )

        self.backend.parameter_status_messages = parameter_status_messages
        self.conn = self.opened(backend=self.backend)

    def test_greeting_has_the_servers_settings(self) -> None:
        self.assertEqual(
            self.conn.parameter_status_messages(),
            messages.parameter_status("application_name", "web")
            + messages.parameter_status("TimeZone", "UTC"),
        )

    def test_greeting_is_encoded_once_while_the_settings_stay(self) -> None:
        for _ in range(3):
            self.conn.parameter_status_messages()
        self.assertEqual(self.encoded, 1)

    def test_setting_changed_and_restored_needs_no_new_encoding(self) -> None:
        self.conn.parameter_status_messages()
        self.backend.parameters["application_name"] = ""
        self.backend.parameters["application_name"] = "web"
        self.conn.parameter_status_messages()
        self.assertEqual(self.encoded, 1)

    def test_changed_setting_is_in_the_next_greeting(self) -> None:
        self.conn.parameter_status_messages()
        self.backend.parameters["TimeZone"] = "Europe/Berlin"
        self.assertIn(
            messages.parameter_status("TimeZone", "Europe/Berlin"),
            self.conn.parameter_status_messages(),
        )
        self.assertEqual(self.encoded, 2)
