"""
Unit tests for limiting connections, with a fake clock and no network:
L{twisted_pgpool.proxy.limits.SessionLimiter} (num_init_children, the wait
queue, client_queue_timeout, reserved_connections,
max_unauthenticated_clients), how
L{twisted_pgpool.service.ProxyCore.from_config} sizes it and the pool, and
C{client_idle_limit} as L{twisted_pgpool.proxy.frontend.FrontendProtocol} applies
it, driven through L{StringTransport}s with a L{MemoryReactorClock} as the
proxy's reactor.

The server's messages are written out byte by byte here, not produced with
the encoders under test.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Dict, List, Tuple

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.inmemory import MemoryClient, MemoryProxy
from tests.wire import error_fields, frame, md5_answer, password_message, startup_packet
from twisted_pgpool.config import config_from_dict
from twisted_pgpool.proxy.limits import SessionLimiter, too_many_clients
from twisted_pgpool.service import ProxyCore
from twisted_pgpool.wire import errors

# -- SessionLimiter -------------------------------------------------------------


def make_limiter(
    max_sessions: int = 2,
    queue_limit: int = 10,
    queue_timeout: float = 0.0,
    reject_when_full: bool = False,
) -> Tuple[SessionLimiter, Clock]:
    clock = Clock()
    limiter = SessionLimiter(
        clock,
        max_sessions,
        queue_limit=queue_limit,
        queue_timeout=queue_timeout,
        reject_when_full=reject_when_full,
    )
    return limiter, clock


def order_of(deferreds: List[defer.Deferred], fired: List[int]) -> None:
    """
    Record in C{fired} the index of each Deferred as it succeeds.
    """
    for i, d in enumerate(deferreds):
        d.addCallback(lambda _, i=i: fired.append(i))


class TooManyClientsTests(SynchronousTestCase):
    def test_error_is_fatal_53300_with_postgresql_words(self) -> None:
        error = too_many_clients()
        self.assertEqual(
            (error.severity, error.sqlstate, error.message),
            ("FATAL", "53300", "sorry, too many clients already"),
        )


class SessionLimiterTests(SynchronousTestCase):
    def test_slots_below_the_limit_are_granted_at_once(self) -> None:
        limiter, _ = make_limiter(max_sessions=2)
        results = [self.successResultOf(limiter.acquire()) for _ in range(2)]
        self.assertEqual((results, limiter.active, limiter.waiting), ([None, None], 2, 0))

    def test_try_acquire_takes_a_free_slot(self) -> None:
        limiter, _ = make_limiter(max_sessions=2)
        self.assertEqual((limiter.try_acquire(), limiter.active), (True, 1))

    def test_try_acquire_takes_nothing_when_full(self) -> None:
        limiter, _ = make_limiter(max_sessions=1)
        limiter.try_acquire()
        self.assertEqual((limiter.try_acquire(), limiter.active, limiter.waiting), (False, 1, 0))

    def test_try_acquire_does_not_overtake_waiting_clients(self) -> None:
        limiter, _ = make_limiter(max_sessions=1)
        limiter.acquire()
        waiting = limiter.acquire()
        limiter.max_sessions = 2
        self.assertFalse(limiter.try_acquire())
        self.assertNoResult(waiting)

    def test_client_beyond_the_limit_waits(self) -> None:
        limiter, _ = make_limiter(max_sessions=1)
        limiter.acquire()
        d = limiter.acquire()
        self.assertNoResult(d)
        self.assertEqual((limiter.active, limiter.waiting), (1, 1))

    def test_release_hands_the_slot_to_a_waiting_client(self) -> None:
        limiter, _ = make_limiter(max_sessions=1)
        limiter.acquire()
        d = limiter.acquire()
        limiter.release()
        self.assertEqual((self.successResultOf(d), limiter.active, limiter.waiting), (None, 1, 0))

    def test_release_without_waiters_frees_the_slot(self) -> None:
        limiter, _ = make_limiter(max_sessions=1)
        limiter.acquire()
        limiter.release()
        self.assertEqual(limiter.active, 0)
        self.successResultOf(limiter.acquire())

    def test_waiting_clients_are_served_first_come_first_served(self) -> None:
        limiter, _ = make_limiter(max_sessions=1)
        limiter.acquire()
        waiting = [limiter.acquire() for _ in range(4)]
        fired: List[int] = []
        order_of(waiting, fired)
        for _ in range(4):
            limiter.release()
        self.assertEqual(fired, [0, 1, 2, 3])

    def test_one_release_serves_exactly_one_waiter(self) -> None:
        limiter, _ = make_limiter(max_sessions=1)
        limiter.acquire()
        first, second = limiter.acquire(), limiter.acquire()
        limiter.release()
        self.successResultOf(first)
        self.assertNoResult(second)

    def test_full_queue_refuses_with_53300(self) -> None:
        limiter, _ = make_limiter(max_sessions=1, queue_limit=2)
        limiter.acquire()
        limiter.acquire()
        limiter.acquire()
        failure = self.failureResultOf(limiter.acquire(), errors.PgError)
        self.assertEqual(
            (failure.value.sqlstate, limiter.waiting, limiter.rejected), ("53300", 2, 1)
        )

    def test_zero_queue_limit_refuses_every_extra_client(self) -> None:
        limiter, _ = make_limiter(max_sessions=1, queue_limit=0)
        limiter.acquire()
        self.failureResultOf(limiter.acquire(), errors.PgError)

    def test_peak_waiting_remembers_the_longest_queue(self) -> None:
        limiter, _ = make_limiter(max_sessions=1)
        limiter.acquire()
        limiter.acquire()
        limiter.acquire()
        limiter.release()
        limiter.release()
        self.assertEqual((limiter.waiting, limiter.peak_waiting), (0, 2))

    def test_wait_times_out_with_53300(self) -> None:
        limiter, clock = make_limiter(max_sessions=1, queue_timeout=5)
        limiter.acquire()
        d = limiter.acquire()
        clock.advance(4.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        failure = self.failureResultOf(d, errors.PgError)
        self.assertEqual(
            (failure.value.severity, failure.value.sqlstate, limiter.waiting, limiter.rejected),
            ("FATAL", "53300", 0, 1),
        )

    def test_timed_out_client_keeps_no_place_in_the_queue(self) -> None:
        limiter, clock = make_limiter(max_sessions=1, queue_timeout=5)
        limiter.acquire()
        early = limiter.acquire()
        early.addErrback(lambda f: None)
        clock.advance(3)
        late = limiter.acquire()
        clock.advance(2)
        limiter.release()
        self.assertEqual((self.successResultOf(late), limiter.active), (None, 1))

    def test_each_waiter_has_its_own_deadline(self) -> None:
        limiter, clock = make_limiter(max_sessions=1, queue_timeout=5)
        limiter.acquire()
        early = limiter.acquire()
        clock.advance(3)
        late = limiter.acquire()
        clock.advance(2)
        self.failureResultOf(early, errors.PgError)
        self.assertNoResult(late)

    def test_served_client_leaves_no_timer_behind(self) -> None:
        limiter, clock = make_limiter(max_sessions=1, queue_timeout=5)
        limiter.acquire()
        d = limiter.acquire()
        limiter.release()
        self.successResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_zero_queue_timeout_waits_forever(self) -> None:
        limiter, clock = make_limiter(max_sessions=1, queue_timeout=0)
        limiter.acquire()
        d = limiter.acquire()
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10**6)
        self.assertNoResult(d)

    def test_cancelled_wait_fails_with_cancelled_error(self) -> None:
        limiter, _ = make_limiter(max_sessions=1)
        limiter.acquire()
        d = limiter.acquire()
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)

    def test_cancelled_wait_leaves_the_queue(self) -> None:
        limiter, _ = make_limiter(max_sessions=1)
        limiter.acquire()
        cancelled = limiter.acquire()
        after = limiter.acquire()
        cancelled.cancel()
        cancelled.addErrback(lambda f: None)
        self.assertEqual(limiter.waiting, 1)
        limiter.release()
        self.assertEqual((self.successResultOf(after), limiter.active), (None, 1))

    def test_cancelled_wait_stops_its_timer(self) -> None:
        limiter, clock = make_limiter(max_sessions=1, queue_timeout=5)
        limiter.acquire()
        d = limiter.acquire()
        d.cancel()
        d.addErrback(lambda f: None)
        self.assertEqual((clock.getDelayedCalls(), limiter.rejected), ([], 0))

    def test_cancelling_a_granted_slot_changes_nothing(self) -> None:
        limiter, _ = make_limiter(max_sessions=1)
        d = limiter.acquire()
        d.cancel()
        self.assertEqual((self.successResultOf(d), limiter.active), (None, 1))

    def test_reject_when_full_refuses_at_once(self) -> None:
        limiter, clock = make_limiter(max_sessions=2, reject_when_full=True, queue_timeout=5)
        limiter.acquire()
        limiter.acquire()
        failure = self.failureResultOf(limiter.acquire(), errors.PgError)
        self.assertEqual(
            (failure.value.sqlstate, limiter.waiting, clock.getDelayedCalls()),
            ("53300", 0, []),
        )

    def test_reject_when_full_still_grants_free_slots(self) -> None:
        limiter, _ = make_limiter(max_sessions=2, reject_when_full=True)
        limiter.acquire()
        limiter.acquire()
        limiter.release()
        self.successResultOf(limiter.acquire())


class RefusalLogTests(SynchronousTestCase):
    """
    Refusals are logged at most once a second, with how many (issue 17:
    53300 refusals were not logged at all).
    """

    def test_first_refusal_is_logged_at_once(self) -> None:
        limiter, clock = make_limiter(max_sessions=1, queue_limit=0)
        limiter.try_acquire()
        self.failureResultOf(limiter.acquire())
        self.assertEqual(limiter.refusals_to_log(), 1)

    def test_refusals_within_a_second_are_counted_into_the_next_line(self) -> None:
        limiter, clock = make_limiter(max_sessions=1, queue_limit=0)
        limiter.try_acquire()
        self.failureResultOf(limiter.acquire())
        self.assertEqual(limiter.refusals_to_log(), 1)
        for _ in range(5):
            self.failureResultOf(limiter.acquire())
        clock.advance(0.5)
        self.assertEqual(limiter.refusals_to_log(), 0)
        clock.advance(0.5)
        self.assertEqual((limiter.refusals_to_log(), limiter.refusals_to_log()), (5, 0))


class UnauthenticatedCountTests(SynchronousTestCase):
    """
    C{max_unauthenticated_clients}: connections that have not logged in are
    counted apart from the session slots.
    """

    def test_connections_are_counted_up_to_the_bound(self) -> None:
        limiter, _ = make_limiter()
        limiter.max_unauthenticated = 2
        self.assertEqual(
            ([limiter.begin_login() for _ in range(3)], limiter.unauthenticated, limiter.rejected),
            ([True, True, False], 2, 1),
        )

    def test_unauthenticated_connections_hold_no_slot(self) -> None:
        limiter, _ = make_limiter(max_sessions=1)
        limiter.begin_login()
        limiter.begin_login()
        self.assertEqual((limiter.active, limiter.try_acquire()), (0, True))

    def test_end_login_makes_room_for_another(self) -> None:
        limiter, _ = make_limiter()
        limiter.max_unauthenticated = 1
        limiter.begin_login()
        limiter.end_login()
        self.assertEqual((limiter.begin_login(), limiter.unauthenticated), (True, 1))


class RefusesArrivalTests(SynchronousTestCase):
    """
    Whether a client is refused before it authenticates: only when asking
    for a slot would be refused at once.
    """

    def test_free_slot_admits(self) -> None:
        limiter, _ = make_limiter(max_sessions=1, reject_when_full=True)
        self.assertEqual((limiter.refuses_arrival(), limiter.rejected), (False, 0))

    def test_room_in_the_queue_admits(self) -> None:
        limiter, _ = make_limiter(max_sessions=1, queue_limit=1)
        limiter.acquire()
        self.assertFalse(limiter.refuses_arrival())

    def test_full_queue_refuses(self) -> None:
        limiter, _ = make_limiter(max_sessions=1, queue_limit=1)
        limiter.acquire()
        limiter.acquire()
        self.assertEqual((limiter.refuses_arrival(), limiter.rejected), (True, 1))

    def test_reject_when_full_refuses_once_the_slots_are_taken(self) -> None:
        limiter, _ = make_limiter(max_sessions=1, reject_when_full=True)
        limiter.acquire()
        self.assertEqual((limiter.refuses_arrival(), limiter.rejected), (True, 1))

    def test_refusal_takes_nothing(self) -> None:
        limiter, _ = make_limiter(max_sessions=1, reject_when_full=True)
        limiter.acquire()
        limiter.refuses_arrival()
        self.assertEqual((limiter.active, limiter.waiting), (1, 0))


# -- wiring: how the configuration sizes the limiter and the pool ----------------


def core_for(**settings) -> ProxyCore:
    data = {"backends": [{"hostname": "127.0.0.1", "port": 5432}], "pool_passwd": ""}
    data.update(settings)
    return ProxyCore.from_config(config_from_dict(data), MemoryReactorClock())


class WiringTests(SynchronousTestCase):
    def test_num_init_children_is_the_session_limit(self) -> None:
        self.assertEqual(core_for(num_init_children=7).limiter.max_sessions, 7)

    def test_queue_holds_num_init_children_times_listen_backlog_multiplier(self) -> None:
        core = core_for(num_init_children=7, listen_backlog_multiplier=3)
        self.assertEqual(core.limiter.queue_limit, 21)

    def test_client_queue_timeout_is_the_wait_limit(self) -> None:
        self.assertEqual(core_for(client_queue_timeout="500ms").limiter.queue_timeout, 0.5)

    def test_reserved_connections_turns_queueing_into_refusal(self) -> None:
        self.assertEqual(
            (
                core_for().limiter.reject_when_full,
                core_for(reserved_connections=1).limiter.reject_when_full,
            ),
            (False, True),
        )

    def test_reserved_connections_are_taken_from_num_init_children(self) -> None:
        # Pgpool-II: with 4 and 1, the 4th concurrent client is refused.
        self.assertEqual(
            core_for(num_init_children=4, reserved_connections=1).limiter.max_sessions, 3
        )

    def test_reserved_connections_must_leave_a_session(self) -> None:
        from twisted_pgpool.config import ConfigError

        with self.assertRaises(ConfigError) as caught:
            core_for(num_init_children=4, reserved_connections=4)
        self.assertIn(
            "reserved_connections (4) must be less than num_init_children (4)",
            str(caught.exception),
        )

    def test_max_unauthenticated_clients_bounds_logins(self) -> None:
        self.assertEqual(
            (
                core_for().limiter.max_unauthenticated,
                core_for(max_unauthenticated_clients=9).limiter.max_unauthenticated,
            ),
            (256, 9),
        )

    def test_pair_keeps_num_init_children_idle_within_num_init_children_times_max_pool(
        self,
    ) -> None:
        """
        Pgpool-II: each of 5 children caches up to 3 pairs, so one pair can
        have 5 cached connections to a node, and all pairs together 15.
        """
        core = core_for(num_init_children=5, max_pool=3)
        self.assertEqual((core.pool.max_idle_per_key, core.pool.budget_per_node), (5, 15))

    def test_pool_settings_come_from_the_configuration(self) -> None:
        pool = core_for(
            connection_cache=False,
            connection_life_time=9,
            child_life_time=8,
            child_max_connections=7,
            reset_query_list="ABORT; RESET ALL",
        ).pool
        self.assertEqual(
            (
                pool.enabled,
                pool.connection_life_time,
                pool.child_life_time,
                pool.child_max_connections,
                pool.reset_query_list,
            ),
            (False, 9, 8, 7, ["ABORT", "RESET ALL"]),
        )


# -- the frontend with a memory reactor ---------------------------------------------


SERVER_LOGIN = (
    frame(b"R", struct.pack("!i", 0))
    + frame(b"S", b"server_version\x0015.0\x00")
    + frame(b"K", struct.pack("!ii", 4242, 17))
    + frame(b"Z", b"I")
)
READY_IDLE = frame(b"Z", b"I")
READY_IN_TRANSACTION = frame(b"Z", b"T")
QUERY = frame(b"Q", b"select 1\x00")
SYNC = frame(b"S", b"")


def error_responses(data: bytes) -> List[Dict[str, str]]:
    """
    The fields of every ErrorResponse in what the proxy wrote.
    """
    found = []
    pos = 0
    while pos + 5 <= len(data):
        (length,) = struct.unpack_from("!I", data, pos + 1)
        if data[pos : pos + 1] == b"E":
            found.append(error_fields(data[pos + 5 : pos + 1 + length]))
        pos += 1 + length
    return found


class RelayProxy(MemoryProxy):
    """
    A memory proxy with one backend and no pool_passwd, so logins are
    relayed and the backend connections are not poolable.
    """

    def __init__(self, **settings) -> None:
        data = {"backends": [{"hostname": "127.0.0.1", "port": 5432}], "pool_passwd": ""}
        data.update(settings)
        super().__init__(config_from_dict(data))

    def session(self) -> MemoryClient:
        """
        A client logged in (the test plays the server) and relaying.
        """
        client = self.client()
        client.says(startup_packet({"user": "alice", "database": "db"}))
        client.backend, client.backend_transport = self.accept_backend_connection()
        client.backend.dataReceived(SERVER_LOGIN)
        client.take()
        return client


class FrontendQueueTests(SynchronousTestCase):
    def test_client_over_num_init_children_waits_without_a_backend(self) -> None:
        proxy = RelayProxy(num_init_children=1)
        proxy.session()
        waiting = proxy.client()
        waiting.says(startup_packet({"user": "alice", "database": "db"}))
        self.assertEqual(
            (
                len(proxy.reactor.tcpClients),
                proxy.core.limiter.waiting,
                waiting.take(),
                waiting.closed,
            ),
            (1, 1, b"", False),
        )

    def test_waiting_client_gets_a_backend_when_a_session_ends(self) -> None:
        proxy = RelayProxy(num_init_children=1)
        first = proxy.session()
        waiting = proxy.client()
        waiting.says(startup_packet({"user": "alice", "database": "db"}))
        first.hang_up()
        self.assertEqual((len(proxy.reactor.tcpClients), proxy.core.limiter.waiting), (2, 0))

    def test_queue_timeout_sends_fatal_53300_and_closes(self) -> None:
        proxy = RelayProxy(num_init_children=1, client_queue_timeout=2)
        proxy.session()
        waiting = proxy.client()
        waiting.says(startup_packet({"user": "alice", "database": "db"}))
        proxy.reactor.advance(2)
        [fields] = error_responses(waiting.take())
        self.assertEqual(
            (fields["S"], fields["C"], fields["M"], waiting.closed),
            ("FATAL", "53300", "sorry, too many clients already", True),
        )

    def test_reserved_connections_refuses_at_once(self) -> None:
        proxy = RelayProxy(num_init_children=2, reserved_connections=1)
        proxy.session()
        refused = proxy.client()
        refused.says(startup_packet({"user": "alice", "database": "db"}))
        [fields] = error_responses(refused.take())
        self.assertEqual((fields["C"], refused.closed), ("53300", True))

    def test_client_leaving_the_queue_gives_up_its_place(self) -> None:
        proxy = RelayProxy(num_init_children=1)
        first = proxy.session()
        gone = proxy.client()
        gone.says(startup_packet({"user": "alice", "database": "db"}))
        gone.hang_up()
        first.hang_up()
        # Whether leaving the queue is logged as an error is the next test's
        # business.
        self.flushLoggedErrors(defer.CancelledError)
        self.assertEqual(
            (proxy.core.limiter.waiting, proxy.core.limiter.active, len(proxy.reactor.tcpClients)),
            (0, 0, 1),
        )

    def test_client_leaving_the_queue_logs_no_error(self) -> None:
        """
        A client that gives up waiting for a slot is an ordinary event, not
        an internal error with a traceback in the log.

        BUG (twisted_pgpool/proxy/frontend.py): C{connectionLost} cancels the
        slot request, so C{await self._slot_request} in C{_start_session}
        raises C{CancelledError}, which C{_session_failed} logs with
        C{log.failure("session startup failed")} (trial reports it as a
        logged error).  Fix: in C{FrontendProtocol._session_failed}, return
        at once when C{failure.check(defer.CancelledError) and
        self._disconnected}; or in C{_start_session} wrap the await in
        C{try: ... except defer.CancelledError: return}.
        """
        proxy = RelayProxy(num_init_children=1)
        proxy.session()
        gone = proxy.client()
        gone.says(startup_packet({"user": "alice", "database": "db"}))
        gone.hang_up()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_ended_session_gives_its_slot_back(self) -> None:
        proxy = RelayProxy(num_init_children=2)
        sessions = [proxy.session(), proxy.session()]
        for session in sessions:
            session.hang_up()
        self.assertEqual(proxy.core.limiter.active, 0)


class ClientIdleLimitTests(SynchronousTestCase):
    """
    C{client_idle_limit}, observed on the memory reactor's clock.
    """

    def idle_session(self, limit: float = 10) -> Tuple[RelayProxy, MemoryClient]:
        proxy = RelayProxy(client_idle_limit=limit)
        return proxy, proxy.session()

    def test_idle_session_is_closed_at_the_limit(self) -> None:
        proxy, client = self.idle_session(10)
        proxy.reactor.advance(9.9)
        self.assertFalse(client.closed)
        proxy.reactor.advance(0.1)
        [fields] = error_responses(client.take())
        self.assertEqual(
            (fields["S"], fields["C"], fields["M"], client.closed),
            (
                "FATAL",
                "57P05",
                "terminating connection due to client_idle_limit:10 is reached",
                True,
            ),
        )

    def test_fractional_limit_is_printed_as_given(self) -> None:
        proxy, client = self.idle_session(1.5)
        proxy.reactor.advance(1.5)
        [fields] = error_responses(client.take())
        self.assertEqual(
            fields["M"], "terminating connection due to client_idle_limit:1.5 is reached"
        )

    def test_query_restarts_the_idle_clock(self) -> None:
        proxy, client = self.idle_session(10)
        proxy.reactor.advance(6)
        client.says(QUERY)
        client.server_says(READY_IDLE)
        proxy.reactor.advance(9.9)
        self.assertFalse(client.closed)
        proxy.reactor.advance(0.1)
        self.assertTrue(client.closed)

    def test_sync_restarts_the_idle_clock(self) -> None:
        proxy, client = self.idle_session(10)
        proxy.reactor.advance(6)
        client.says(SYNC)
        client.server_says(READY_IDLE)
        proxy.reactor.advance(9.9)
        self.assertFalse(client.closed)

    def test_session_idle_inside_a_transaction_is_kept(self) -> None:
        """
        Unlike Pgpool-II, which also ends sessions idle in a transaction,
        the limit applies outside transactions only.
        """
        proxy, client = self.idle_session(10)
        client.says(frame(b"Q", b"begin\x00"))
        client.server_says(frame(b"C", b"BEGIN\x00") + READY_IN_TRANSACTION)
        proxy.reactor.advance(100)
        self.assertFalse(client.closed)

    def test_session_is_closed_once_its_transaction_ends_and_it_idles(self) -> None:
        proxy, client = self.idle_session(10)
        client.says(frame(b"Q", b"begin\x00"))
        client.server_says(READY_IN_TRANSACTION)
        proxy.reactor.advance(30)
        client.says(frame(b"Q", b"commit\x00"))
        client.server_says(READY_IDLE)
        proxy.reactor.advance(10)
        self.assertTrue(client.closed)

    def test_running_query_is_not_interrupted(self) -> None:
        proxy, client = self.idle_session(10)
        client.says(QUERY)
        proxy.reactor.advance(100)
        self.assertEqual((client.closed, client.take()), (False, b""))

    def test_idle_clock_starts_when_a_long_query_completes(self) -> None:
        """
        A client is idle from the moment its query completed, not from the
        moment it sent it (Pgpool-II: "idle for client_idle_limit seconds
        after the last query has completed").

        BUG (twisted_pgpool/proxy/frontend.py and session.py): C{last_activity}
        is only set when the client sends a message, so after a query that
        ran longer than the limit, the next C{_check_idle} finds the
        session "idle" for the whole run time and ends it at once: here
        the client received its result at t=15 and is killed at t=20,
        after 5 s of a 10 s limit.  Fix: also record completion: in
        C{Session.backend_ready} (session.py) add
        C{self.frontend.last_activity = self.core.reactor.seconds()}.
        """
        proxy, client = self.idle_session(10)
        client.says(QUERY)
        proxy.reactor.pump([1] * 15)
        client.server_says(READY_IDLE)
        proxy.reactor.pump([1] * 5)
        self.assertFalse(client.closed)
        proxy.reactor.pump([1] * 5)
        self.assertTrue(client.closed)

    def test_zero_limit_sets_no_idle_timer(self) -> None:
        proxy, client = self.idle_session(0)
        pending = [
            call
            for call in proxy.reactor.getDelayedCalls()
            if call.func == client.protocol._check_idle
        ]
        self.assertEqual(pending, [])

    def test_closing_the_session_stops_the_idle_timer(self) -> None:
        proxy, client = self.idle_session(10)
        client.hang_up()
        pending = [
            call
            for call in proxy.reactor.getDelayedCalls()
            if call.func == client.protocol._check_idle
        ]
        self.assertEqual(pending, [])


# -- clients that have not authenticated yet -----------------------------------------

ALICE_MD5 = "md5" + hashlib.md5(b"secretalice").hexdigest()
CANCEL_REQUEST = struct.pack("!IIii", 16, 80877102, 4242, 17)


def md5_login(password: str, user: str, salt: bytes) -> bytes:
    """
    The PasswordMessage answering an md5 challenge.
    """
    return password_message(md5_answer(password, user, salt) + b"\x00")


class LoginProxy(RelayProxy):
    """
    A memory proxy that authenticates C{alice} itself, with an md5
    pool_passwd entry (password C{secret}), so that her login has a
    password exchange with the proxy before any backend is involved.
    """

    def __init__(self, test: SynchronousTestCase, **settings) -> None:
        directory = test.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "pool_passwd")
        with open(path, "w") as f:
            f.write(f"alice:{ALICE_MD5}\n")
        super().__init__(pool_passwd=path, **settings)
        self.limiter = self.core.limiter

    def challenged(self) -> Tuple[MemoryClient, bytes]:
        """
        A client that sent its startup packet and got its md5 challenge.

        @return: the client and the challenge's salt.
        """
        client = self.client()
        client.says(startup_packet({"user": "alice", "database": "db"}))
        data = client.take()
        assert data[:1] == b"R" and struct.unpack("!i", data[5:9]) == (5,), data
        return client, data[9:13]

    def login(self) -> MemoryClient:
        """
        A client that authenticated, got a backend and is relaying.
        """
        client, salt = self.challenged()
        client.says(md5_login("secret", "alice", salt))
        client.backend, client.backend_transport = self.accept_backend_connection()
        client.backend.dataReceived(SERVER_LOGIN)
        client.take()
        return client

    def counts(self) -> Tuple[int, int, int]:
        """
        (unauthenticated, slots held, clients waiting for a slot).
        """
        return (self.limiter.unauthenticated, self.limiter.active, self.limiter.waiting)


class UnauthenticatedClientTests(SynchronousTestCase):
    """
    A client takes a slot (num_init_children) only once authenticated;
    before that it counts against max_unauthenticated_clients, which is
    given back exactly once on every path out of the login.
    """

    def test_connection_counts_as_unauthenticated_from_connect(self) -> None:
        proxy = LoginProxy(self)
        proxy.client()
        self.assertEqual(proxy.counts(), (1, 0, 0))

    def test_challenged_client_holds_no_slot_and_no_backend(self) -> None:
        proxy = LoginProxy(self)
        proxy.challenged()
        self.assertEqual((proxy.counts(), proxy.reactor.tcpClients), ((1, 0, 0), []))

    def test_authenticated_client_takes_a_slot_and_stops_counting(self) -> None:
        proxy = LoginProxy(self)
        client, salt = proxy.challenged()
        client.says(md5_login("secret", "alice", salt))
        self.assertEqual((proxy.counts(), len(proxy.reactor.tcpClients)), ((0, 1, 0), 1))

    def test_clients_that_never_answer_do_not_keep_a_real_user_out(self) -> None:
        """
        The finding: with num_init_children connections that sent a
        startup packet and never answered the challenge, a real client
        waited for a slot (and got 53300) until authentication_timeout.
        """
        proxy = LoginProxy(self, num_init_children=1, listen_backlog_multiplier=1)
        for _ in range(5):
            proxy.challenged()
        real = proxy.login()
        real.says(QUERY)
        self.assertEqual(
            (proxy.counts(), real.closed, real.backend_transport.value()[-len(QUERY) :]),
            ((5, 1, 0), False, QUERY),
        )

    def test_wrong_password_releases_the_count_once_the_connection_closes(self) -> None:
        proxy = LoginProxy(self)
        client, salt = proxy.challenged()
        client.says(md5_login("wrong", "alice", salt))
        [fields] = error_responses(client.take())
        counted_while_closing = proxy.limiter.unauthenticated
        client.hang_up()
        self.assertEqual(
            (fields["C"], client.closed, counted_while_closing, proxy.counts()),
            ("28P01", True, 1, (0, 0, 0)),
        )

    def test_hang_up_during_authentication_releases_the_count(self) -> None:
        proxy = LoginProxy(self)
        client, _ = proxy.challenged()
        client.hang_up()
        self.assertEqual((proxy.counts(), self.flushLoggedErrors()), ((0, 0, 0), []))

    def test_hang_up_before_the_startup_packet_releases_the_count(self) -> None:
        proxy = LoginProxy(self)
        proxy.client().hang_up()
        self.assertEqual(proxy.counts(), (0, 0, 0))

    def test_authentication_timeout_releases_the_count(self) -> None:
        proxy = LoginProxy(self)
        client, _ = proxy.challenged()
        proxy.reactor.advance(60)
        [fields] = error_responses(client.take())
        client.hang_up()
        self.assertEqual((fields["C"], client.closed, proxy.counts()), ("57014", True, (0, 0, 0)))

    def test_silent_connection_expires_at_authentication_timeout(self) -> None:
        proxy = LoginProxy(self, authentication_timeout=5)
        client = proxy.client()
        proxy.reactor.advance(5)
        [fields] = error_responses(client.take())
        self.assertEqual((fields["C"], client.closed), ("57014", True))

    def test_ended_session_does_not_release_the_count_again(self) -> None:
        proxy = LoginProxy(self)
        proxy.challenged()
        session = proxy.login()
        session.hang_up()
        self.assertEqual(proxy.counts(), (1, 0, 0))

    def test_terminated_session_does_not_release_the_count_again(self) -> None:
        proxy = LoginProxy(self)
        proxy.challenged()
        session = proxy.login()
        session.says(b"X\x00\x00\x00\x04")
        session.hang_up()
        self.assertEqual(proxy.counts(), (1, 0, 0))

    def test_cancel_request_is_counted_until_its_connection_closes(self) -> None:
        proxy = LoginProxy(self)
        client = proxy.client()
        client.says(CANCEL_REQUEST)
        counted = proxy.limiter.unauthenticated
        client.hang_up()
        self.assertEqual((counted, proxy.counts()), (1, (0, 0, 0)))

    def test_authenticated_client_waits_for_a_slot_without_the_login_clock(self) -> None:
        proxy = LoginProxy(self, num_init_children=1, client_queue_timeout=0)
        proxy.login()
        client, salt = proxy.challenged()
        client.says(md5_login("secret", "alice", salt))
        proxy.reactor.advance(120)
        self.assertEqual((proxy.counts(), client.take(), client.closed), ((0, 1, 1), b"", False))

    def test_hang_up_while_queued_after_authenticating(self) -> None:
        proxy = LoginProxy(self, num_init_children=1)
        proxy.login()
        client, salt = proxy.challenged()
        client.says(md5_login("secret", "alice", salt))
        client.hang_up()
        self.assertEqual((proxy.counts(), self.flushLoggedErrors()), ((0, 1, 0), []))

    def test_relayed_login_takes_its_slot_before_the_backend_asks(self) -> None:
        """
        A user without a pool_passwd entry is authenticated by the backend,
        which needs a backend connection, hence a slot, first
        (docs/pooling.md says so).
        """
        proxy = LoginProxy(self)
        client = proxy.client()
        client.says(startup_packet({"user": "bob", "database": "db"}))
        self.assertEqual((proxy.counts(), len(proxy.reactor.tcpClients)), ((0, 1, 0), 1))


class UnauthenticatedBoundTests(SynchronousTestCase):
    """
    Beyond max_unauthenticated_clients a connection is refused at once.
    """

    def full_proxy(self, **settings) -> LoginProxy:
        proxy = LoginProxy(self, max_unauthenticated_clients=2, **settings)
        self.half_open = [proxy.challenged()[0] for _ in range(2)]
        return proxy

    def test_connection_beyond_the_bound_gets_fatal_53300_at_once(self) -> None:
        proxy = self.full_proxy()
        refused = proxy.client()
        [fields] = error_responses(refused.take())
        self.assertEqual(
            (fields["S"], fields["C"], fields["M"], refused.closed, proxy.limiter.rejected),
            ("FATAL", "53300", "sorry, too many clients already", True, 1),
        )

    def test_refused_connection_is_not_counted_and_releases_nothing(self) -> None:
        proxy = self.full_proxy()
        timers = len(proxy.reactor.getDelayedCalls())
        refused = proxy.client()
        refused.hang_up()
        self.assertEqual(
            (proxy.counts(), len(proxy.reactor.getDelayedCalls())), ((2, 0, 0), timers)
        )

    def test_refused_connection_ignores_what_it_sends(self) -> None:
        proxy = self.full_proxy()
        refused = proxy.client()
        refused.take()
        refused.says(startup_packet({"user": "alice", "database": "db"}))
        self.assertEqual((refused.take(), proxy.counts()), (b"", (2, 0, 0)))

    def test_half_open_connections_still_expire_at_authentication_timeout(self) -> None:
        proxy = self.full_proxy()
        proxy.reactor.advance(60)
        codes = [error_responses(c.take())[0]["C"] for c in self.half_open]
        for client in self.half_open:
            client.hang_up()
        admitted = proxy.client()
        self.assertEqual(
            (codes, admitted.closed, proxy.counts()), (["57014", "57014"], False, (1, 0, 0))
        )

    def test_room_comes_back_when_one_authenticates(self) -> None:
        proxy = LoginProxy(self, max_unauthenticated_clients=1)
        client, salt = proxy.challenged()
        client.says(md5_login("secret", "alice", salt))
        admitted = proxy.client()
        self.assertEqual((admitted.closed, proxy.counts()), (False, (1, 1, 0)))


class RefusalBeforeAuthenticationTests(SynchronousTestCase):
    """
    A client that could not get a slot anyway is refused before its
    password exchange; one that could is checked again afterwards.
    """

    def test_reserved_connections_refuses_before_the_challenge(self) -> None:
        proxy = LoginProxy(self, num_init_children=2, reserved_connections=1)
        proxy.login()
        client = proxy.client()
        client.says(startup_packet({"user": "alice", "database": "db"}))
        [(fields)] = error_responses(client.take())
        client.hang_up()
        self.assertEqual((fields["C"], client.closed, proxy.counts()), ("53300", True, (0, 1, 0)))

    def test_full_queue_refuses_before_the_challenge(self) -> None:
        proxy = LoginProxy(self, num_init_children=1, listen_backlog_multiplier=0)
        proxy.login()
        client = proxy.client()
        client.says(startup_packet({"user": "alice", "database": "db"}))
        [fields] = error_responses(client.take())
        self.assertEqual((fields["C"], client.closed), ("53300", True))

    def test_reserved_connections_refuses_after_authentication_if_the_slot_went(self) -> None:
        proxy = LoginProxy(self, num_init_children=2, reserved_connections=1)
        client, salt = proxy.challenged()
        proxy.login()
        client.says(md5_login("secret", "alice", salt))
        [fields] = error_responses(client.take())
        client.hang_up()
        self.assertEqual((fields["C"], client.closed, proxy.counts()), ("53300", True, (0, 1, 0)))
