"""
End-to-end tests of the connection limits against the real servers of
L{tests.support.shared_cluster}: num_init_children with its wait queue
(listen_backlog_multiplier, client_queue_timeout), reserved_connections,
max_unauthenticated_clients, client_idle_limit and connection_life_time.

psycopg cannot tell the SQLSTATE of an error received during connection
start-up (libpq keeps only the text), so the tests that check C{53300}
speak the protocol themselves over a raw socket: the start-up packet, and
where the test needs a slot, the SCRAM exchange (a client takes a slot
only once it has authenticated).

Each class starts its own proxy, lazily, stopped at exit; the helpers
come from L{tests.test_e2e_pooling}.
"""

from __future__ import annotations

import asyncio
import hashlib
import select
import struct
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from twisted.trial.unittest import SkipTest

from tests.rawclient import RawClient
from tests.support import LazyProxy, ProxyProcess
from tests.test_e2e_pooling import (
    SKIP,
    PoolingTestCase,
    asyncpg,
    backend_pid,
    lazy_pooling_proxy,
    psycopg,
)
from tests.wire import error_fields, startup_packet
from twisted_pgpool.testing.localcluster import MD5_PASSWORD, MD5_USER, LocalCluster
from twisted_pgpool.testing.waiting import wait_for

if psycopg is not None:
    from psycopg import errors as pg_errors


class LimitsTestCase(PoolingTestCase):
    skip = SKIP

    def raw_client(self, user: str = "app") -> RawClient:
        """
        A connection that has sent its start-up packet, as C{user}.
        """
        client = RawClient.connect(self.proxy.host, self.proxy.port, timeout=10)
        client.send(startup_packet({"user": user, "database": "app"}))
        self.addCleanup(client.close)
        return client

    def hold(self, count: int) -> List["psycopg.Connection"]:
        """
        Open C{count} sessions and keep them until the end of the test.
        """
        return [self.connect() for _ in range(count)]

    def run_sleepers(
        self, count: int, seconds: float
    ) -> Tuple[List[Optional[Exception]], float, int]:
        """
        Run C{count} clients at once, each connecting and running
        C{pg_sleep(seconds)}; sample the proxy's backends on the server
        meanwhile.

        @return: each client's error (or None), the time they all took,
            and the most backends seen at once.
        """
        results: List[Optional[Exception]] = [None] * count
        dsn = self.proxy.dsn(connect_timeout=20)

        def client(i: int) -> None:
            try:
                with self.track(psycopg.connect(dsn, autocommit=True)) as conn:
                    conn.execute("select pg_sleep(%s)", (seconds,))
            except Exception as e:
                results[i] = e

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(count)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        peak = 0
        while any(thread.is_alive() for thread in threads):
            peak = max(peak, len(self.server.proxy_backends(self.proxy)))
            # Sampling, not waiting: the loop ends when the clients do.
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        return results, elapsed, peak


NUM_INIT_CHILDREN = 4


class QueueTests(LimitsTestCase):
    """
    Clients beyond num_init_children wait for a slot and are served in
    turn; the proxy never holds more than num_init_children × max_pool
    backend connections.
    """

    lazy_proxy = lazy_pooling_proxy(num_init_children=NUM_INIT_CHILDREN, max_pool=1)

    def test_extra_clients_are_queued_and_all_served(self) -> None:
        results, elapsed, peak = self.run_sleepers(10, 1.0)
        self.assertEqual(
            (
                [e for e in results if e is not None],
                2.5 <= elapsed <= 6.0,
                peak <= NUM_INIT_CHILDREN * 1,
            ),
            ([], True, True),
            f"10 clients of 1 s through {NUM_INIT_CHILDREN} slots took {elapsed:.2f} s; "
            f"{peak} backends at most",
        )

    def test_queued_client_gets_its_slot_when_a_session_ends(self) -> None:
        held = self.hold(NUM_INIT_CHILDREN)
        waiting = self.raw_client()
        self.assertIsNone(waiting.authenticate_scram("app"))
        self.assertFalse(waiting.has_reply(0.3), "a client beyond the limit was served")
        held[0].close()
        message_type, payload = waiting.read_message()
        self.assertEqual((message_type, payload), (ord("R"), struct.pack("!i", 0)))


class QueueTimeoutTests(LimitsTestCase):
    lazy_proxy = lazy_pooling_proxy(
        num_init_children=NUM_INIT_CHILDREN, max_pool=1, client_queue_timeout=0.5
    )

    def test_clients_waiting_too_long_are_refused(self) -> None:
        results, elapsed, peak = self.run_sleepers(10, 1.0)
        refused = [e for e in results if e is not None]
        self.assertEqual(
            (
                len(refused),
                all("sorry, too many clients already" in str(e) for e in refused),
                peak <= NUM_INIT_CHILDREN,
            ),
            (10 - NUM_INIT_CHILDREN, True, True),
            [str(e) for e in refused],
        )

    def test_refusal_after_the_timeout_is_fatal_53300(self) -> None:
        self.hold(NUM_INIT_CHILDREN)
        client = self.raw_client()
        self.assertIsNone(client.authenticate_scram("app"))
        started = time.monotonic()
        message_type, payload = client.read_message()
        waited = time.monotonic() - started
        fields = error_fields(payload)
        self.assertEqual(
            (message_type, fields["S"], fields["C"], fields["M"], 0.4 <= waited < 2.0),
            (ord("E"), "FATAL", "53300", "sorry, too many clients already", True),
            f"refused after {waited:.2f} s",
        )


class ListenBacklogTests(LimitsTestCase):
    """
    The wait queue holds num_init_children × listen_backlog_multiplier
    clients; one more is refused at once.
    """

    lazy_proxy = lazy_pooling_proxy(num_init_children=2, listen_backlog_multiplier=1, max_pool=1)

    def test_client_beyond_the_queue_is_refused_at_once(self) -> None:
        self.hold(2)
        queued = [self.raw_client() for _ in range(2)]
        outcomes = [client.authenticate_scram("app") for client in queued]
        started = time.monotonic()
        refusal = self.raw_client().authenticate_scram("app")
        waited = time.monotonic() - started
        self.assertEqual(
            (
                outcomes,
                refusal is not None and refusal["C"],
                waited < 1.0,
                sum(c.has_reply(0.1) for c in queued),
            ),
            ([None, None], "53300", True, 0),
            f"refused after {waited:.2f} s",
        )


class ReservedConnectionsTests(LimitsTestCase):
    """
    With reserved_connections R above 0, at most num_init_children - R
    sessions run and a client beyond them is refused at once instead of
    waiting (Pgpool-II's behaviour: with 4 and 1 the 4th client is refused).
    """

    lazy_proxy = lazy_pooling_proxy(
        num_init_children=NUM_INIT_CHILDREN, max_pool=1, reserved_connections=1
    )

    def test_fourth_client_is_refused_fast(self) -> None:
        self.hold(NUM_INIT_CHILDREN - 1)
        started = time.monotonic()
        with self.assertRaises(psycopg.OperationalError) as caught:
            self.track(psycopg.connect(self.proxy.dsn(connect_timeout=10)))
        waited = time.monotonic() - started
        self.assertEqual(
            ("sorry, too many clients already" in str(caught.exception), waited < 1.0),
            (True, True),
            f"refused after {waited:.2f} s: {caught.exception}",
        )

    def test_refusal_is_fatal_53300(self) -> None:
        self.hold(NUM_INIT_CHILDREN - 1)
        message_type, payload = self.raw_client().read_message()
        fields = error_fields(payload)
        self.assertEqual((message_type, fields["S"], fields["C"]), (ord("E"), "FATAL", "53300"))

    def test_slot_given_back_serves_the_next_client(self) -> None:
        held = self.hold(NUM_INIT_CHILDREN - 1)
        pid = backend_pid(held[0])
        held[0].close()
        # Once the server shows the reset, the proxy has given the slot back
        # (it does so before the reset's reply comes).
        self.server.wait_pooled(pid)
        self.assertEqual(self.connect().execute("select 1").fetchone()[0], 1)


class IdleLimitTests(LimitsTestCase):
    lazy_proxy = lazy_pooling_proxy(max_pool=1, client_idle_limit=1, connection_life_time=1)

    def test_idle_client_is_disconnected_with_57p05(self) -> None:
        conn = self.connect()
        conn.execute("select 1")
        started = time.monotonic()
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 5)
        waited = time.monotonic() - started
        self.assertTrue(readable, "the proxy sent nothing within 5 s")
        with self.assertRaises(psycopg.OperationalError) as caught:
            conn.execute("select 1")
        error = caught.exception
        self.assertEqual(
            (
                isinstance(error, pg_errors.IdleSessionTimeout),
                error.sqlstate,
                "client_idle_limit" in str(error),
                0.9 <= waited < 3.0,
            ),
            (True, "57P05", True, True),
            f"after {waited:.2f} s: {error}",
        )

    def test_idle_client_inside_a_transaction_is_kept(self) -> None:
        """
        Pgpool-II would end this session too; here client_idle_limit
        applies outside transactions only.
        """
        conn = self.connect()
        conn.execute("begin")
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 2.2)
        self.assertEqual((readable, conn.execute("select 1").fetchone()[0]), ([], 1))

    def test_connection_life_time_closes_a_pooled_backend(self) -> None:
        conn = self.connect()
        pid = backend_pid(conn)
        conn.close()
        self.server.wait_pooled(pid)
        self.server.wait_gone(pid, timeout=3.0)
        self.assertNotIn(pid, self.server.proxy_backends(self.proxy))


# -- clients that never authenticate -----------------------------------------------

#: The finding's numbers: this many connections that sent a start-up packet
#: and never answered, through NUM_INIT_CHILDREN slots.
HALF_OPEN = 96


def half_open_proxy(**settings: Any) -> LazyProxy:
    """
    A proxy that authenticates C{app} (TEXT entry: SCRAM) and C{md5user}
    (md5 entry: an md5 challenge) itself.
    """
    md5_entry = "md5" + hashlib.md5((MD5_PASSWORD + MD5_USER).encode()).hexdigest()

    def make(cluster: LocalCluster) -> ProxyProcess:
        config: Dict[str, Any] = {
            "backends": cluster.backends_config(),
            "pool_passwd": "pool_passwd",
            "load_balance_mode": False,
        }
        config.update(settings)
        return ProxyProcess(
            config, extra_files={"pool_passwd": f"app:TEXTapp\n{MD5_USER}:{md5_entry}\n"}
        )

    return LazyProxy(make)


class HalfOpenTestCase(LimitsTestCase):
    def half_open_client(self) -> RawClient:
        """
        An md5user connection, closed at the end of the test once the proxy
        has let go of it, so the next test starts with none counted.
        """
        client = RawClient.connect(self.proxy.host, self.proxy.port, timeout=10)
        client.send(startup_packet({"user": MD5_USER, "database": "app"}))
        self.addCleanup(client.close_and_wait)
        return client

    def challenged(self, count: int) -> List[RawClient]:
        """
        C{count} md5user connections that sent their start-up packet and
        got their md5 challenge, which they will never answer.
        """
        clients = [self.half_open_client() for _ in range(count)]
        for client in clients:
            message_type, payload = client.read_message()
            self.assertEqual((message_type, payload[:4]), (ord("R"), struct.pack("!i", 5)))
        return clients

    def timed_login(self) -> float:
        """
        Log in as app with psycopg and run C{select 1}.

        @return: the seconds it took.
        """
        started = time.monotonic()
        with self.track(
            psycopg.connect(self.proxy.dsn(connect_timeout=10), autocommit=True)
        ) as conn:
            self.assertEqual(conn.execute("select 1").fetchone()[0], 1)
        return time.monotonic() - started


class NeverAuthenticatingClientsTests(HalfOpenTestCase):
    """
    Connections that never answer their password challenge hold no
    session slot, so with many of them open real clients still log in at
    once (with the default max_unauthenticated_clients).
    """

    lazy_proxy = half_open_proxy(num_init_children=NUM_INIT_CHILDREN, max_pool=1)

    def test_real_login_is_not_held_up_by_never_authenticating_clients(self) -> None:
        """
        Before the fix the first NUM_INIT_CHILDREN of these connections
        held every slot and the rest the queue, until
        authentication_timeout (60 s); a real client waited, then got
        53300.
        """
        half_open = self.challenged(HALF_OPEN)
        elapsed = self.timed_login()
        self.assertEqual(
            (elapsed < 2.0, sum(c.has_reply(0) for c in half_open)),
            (True, 0),
            f"login took {elapsed:.2f} s",
        )

    def test_all_slots_serve_real_clients_meanwhile(self) -> None:
        self.challenged(HALF_OPEN)
        held = self.hold(NUM_INIT_CHILDREN)
        self.assertEqual(
            [conn.execute("select 1").fetchone()[0] for conn in held], [1] * NUM_INIT_CHILDREN
        )

    def test_asyncpg_logs_in_too(self) -> None:
        if asyncpg is None:
            raise SkipTest("asyncpg is not installed")
        self.challenged(HALF_OPEN)

        async def login() -> int:
            conn = await asyncpg.connect(
                host=self.proxy.host,
                port=self.proxy.port,
                user="app",
                password="app",
                database="app",
                ssl=False,
                timeout=10,
            )
            try:
                return await conn.fetchval("select 1")
            finally:
                await conn.close()

        self.assertEqual(asyncio.run(login()), 1)


#: A small bound, so that the tests can reach it.
MAX_UNAUTHENTICATED = 8


class UnauthenticatedBoundTests(HalfOpenTestCase):
    """
    Beyond max_unauthenticated_clients a new connection is refused at once
    with 53300; the connections holding the allowance still expire at
    authentication_timeout.
    """

    lazy_proxy = half_open_proxy(
        num_init_children=NUM_INIT_CHILDREN,
        max_pool=1,
        max_unauthenticated_clients=MAX_UNAUTHENTICATED,
        authentication_timeout=2,
    )

    def test_connection_beyond_the_bound_is_refused_at_once_with_53300(self) -> None:
        self.challenged(MAX_UNAUTHENTICATED)
        started = time.monotonic()
        message_type, payload = self.half_open_client().read_message()
        waited = time.monotonic() - started
        fields = error_fields(payload)
        self.assertEqual(
            (message_type, fields["S"], fields["C"], fields["M"], waited < 1.0),
            (ord("E"), "FATAL", "53300", "sorry, too many clients already", True),
            f"refused after {waited:.2f} s",
        )

    def test_half_open_connections_expire_at_authentication_timeout(self) -> None:
        half_open = self.challenged(MAX_UNAUTHENTICATED)
        started = time.monotonic()
        replies = [c.read_message() for c in half_open]
        waited = time.monotonic() - started
        codes = {error_fields(payload)["C"] for _, payload in replies}
        # Once they are gone, there is room again.
        wait_for(lambda: self._admitted(), 5.0, "a new connection to be admitted", interval=0.01)
        self.assertEqual(
            (codes, 1.5 <= waited < 4.0), ({"57014"}, True), f"expired after {waited:.2f} s"
        )

    def _admitted(self) -> bool:
        message_type, _ = self.half_open_client().read_message()
        return message_type == ord("R")
