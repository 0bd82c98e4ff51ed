"""
End-to-end tests of connection pooling against the real PostgreSQL servers
of L{tests.support.shared_cluster}: reuse, isolation between the clients of
one backend connection, clients that vanish mid-work, startup parameters on
a reused connection, the SHOW POOL_* reports, and the retirement settings.

What the server sees is read from C{pg_stat_activity} as the superuser.
The shared cluster also serves other test modules' proxies, so backend
connections are attributed to a proxy by their client port: the ports of
the TCP sockets the proxy process holds (read from C{/proc}).

Each class starts one proxy, lazily (trial does not call C{setUpClass}),
stopped when the test process exits; classes whose settings agree share
one.  Pooling needs the proxy to authenticate clients itself, so C{app}
has a TEXT pool_passwd entry.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from collections import Counter
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from twisted.trial.unittest import FailTest, SkipTest, TestCase

from tests.support import LazyProxy, ProxyProcess, cluster_or_skip, direct_dsn, run_psql, unique
from twisted_pgpool.testing.localcluster import LocalCluster
from twisted_pgpool.testing.waiting import wait_for

try:
    import psycopg
    from psycopg import pq
except ImportError:  # pragma: no cover - e.g. PyPy, where psycopg has no build
    psycopg = None  # type: ignore[assignment]

try:
    import asyncpg
except ImportError:  # pragma: no cover
    asyncpg = None  # type: ignore[assignment]

SKIP = "psycopg is not installed" if psycopg is None else None

#: Pgpool-II 4.3's SHOW POOL_POOLS and SHOW POOL_PROCESSES columns.
POOL_POOLS_COLUMNS = [
    "pool_pid",
    "start_time",
    "client_connection_count",
    "pool_id",
    "backend_id",
    "database",
    "username",
    "backend_connection_time",
    "client_connection_time",
    "client_disconnection_time",
    "client_idle_duration",
    "majorversion",
    "minorversion",
    "pool_counter",
    "pool_backendpid",
    "pool_connected",
    "status",
]
POOL_PROCESSES_COLUMNS = [
    "pool_pid",
    "start_time",
    "client_connection_count",
    "database",
    "username",
    "backend_connection_time",
    "pool_counter",
    "status",
]

#: A client gone mid-work must be cleaned up on the server within this.
ABANDON_BOUND = 1.0


# -- helpers shared with test_e2e_limits ---------------------------------------------


def pooling_proxy(cluster: LocalCluster, **settings: Any) -> ProxyProcess:
    """
    A proxy for the shared cluster that authenticates app itself (a TEXT
    pool_passwd entry), so that its connections can be pooled.

    Load balancing is off: every statement, C{select pg_backend_pid()}
    included, then goes to the primary, and each session holds exactly one
    backend connection, which is what these tests observe.
    """
    config: Dict[str, Any] = {
        "backends": cluster.backends_config(),
        "pool_passwd": "pool_passwd",
        "load_balance_mode": False,
    }
    config.update(settings)
    return ProxyProcess(config, extra_files={"pool_passwd": "app:TEXTapp\n"})


def lazy_pooling_proxy(**settings: Any) -> LazyProxy:
    """
    A proxy shared by the tests using it (see L{pooling_proxy}).
    """
    return LazyProxy(lambda cluster: pooling_proxy(cluster, **settings))


def proxy_client_ports(pid: int) -> Set[int]:
    """
    The local ports of the TCP sockets process C{pid} holds: for its
    connections to a server, the C{client_port} the server records.
    """
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class ServerView:
    """
    The primary as the superuser sees it: C{pg_stat_activity}, and tables
    in database C{app} created for a test.
    """

    def __init__(self, cluster: LocalCluster) -> None:
        self.conn = psycopg.connect(
            direct_dsn(cluster.primary, user="postgres", password="", database="app"),
            autocommit=True,
        )

    def close(self) -> None:
        self.conn.close()

    def query(self, sql: str, params: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def proxy_backends(self, proxy: ProxyProcess) -> List[int]:
        """
        The pids of the client backends of user app on database app that
        C{proxy} is connected to.
        """
        assert proxy.pid is not None
        ports = sorted(proxy_client_ports(proxy.pid))
        rows = self.query(
            "select pid from pg_stat_activity where usename = 'app' and datname = 'app'"
            " and backend_type = 'client backend' and client_port = any(%s)",
            (ports,),
        )
        return sorted(pid for (pid,) in rows)

    def state(self, pid: int) -> Optional[Tuple[str, str]]:
        """
        C{(state, query)} of a server process, or None once it is gone.
        """
        rows = self.query("select state, query from pg_stat_activity where pid = %s", (pid,))
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    def wait_pooled(self, pid: int) -> None:
        """
        Wait until the proxy has reset backend C{pid}, ready for the next
        client: the reset list ends with DISCARD ALL, after which the proxy
        gives the connection back its last client's startup settings.
        """
        wait_for(
            lambda: self.is_pooled(self.state(pid)),
            what=f"backend {pid} to be reset and pooled",
            timeout=5.0,
            interval=0.01,
        )

    @staticmethod
    def is_pooled(state: Optional[Tuple[str, str]]) -> bool:
        """
        Whether a server process in C{state} has been reset by the proxy.
        """
        return (
            state is not None
            and state[0] == "idle"
            and (
                state[1] == "DISCARD ALL"
                or state[1].startswith("SELECT pg_catalog.set_config(")
                or state[1].startswith("SET application_name TO ")
            )
        )

    def wait_settled(self, pids: Set[int]) -> None:
        """
        Wait until the proxy has pooled or closed each of C{pids}.
        """

        def settled() -> bool:
            states = [self.state(pid) for pid in pids]
            return all(state is None or self.is_pooled(state) for state in states)

        wait_for(settled, 5.0, f"{len(pids)} backends to be pooled or closed", interval=0.01)

    def wait_gone(self, pid: int, timeout: float = 5.0) -> None:
        wait_for(lambda: self.state(pid) is None, timeout, f"backend {pid} to exit", interval=0.01)

    def make_table(self) -> str:
        """
        An empty table owned by app, dropped at exit of the test.
        """
        name = unique("pool")
        self.conn.execute(f"create table {name} (id int)")
        self.conn.execute(f"alter table {name} owner to app")
        return name

    def count_rows(self, table: str) -> int:
        return self.query(f"select count(*) from {table}")[0][0]


def backend_pid(conn: "psycopg.Connection") -> int:
    return conn.execute("select pg_backend_pid()").fetchone()[0]


def drop_connection(conn: "psycopg.Connection") -> None:
    """
    Close a client's socket without a Terminate message, as a killed
    process or a broken network would.
    """
    sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.close()


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """
    Set environment variables (libpq reads PGDATESTYLE and PGTZ into
    startup parameters) for the duration of a block.
    """
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


#: psycopg has no query timeout, and a blocked test also blocks trial's own
#: timeout (it runs in the reactor thread): past this many seconds a
#: watchdog cuts the test's client connections, so a proxy that stops
#: answering fails the test instead of hanging the run.
TEST_DEADLINE = 60.0


class PoolingTestCase(TestCase):
    """
    Tests against a lazily started proxy, with the primary's view at hand.
    """

    skip = SKIP
    lazy_proxy: LazyProxy

    def setUp(self) -> None:
        self.proxy = self.lazy_proxy.get()
        self.server = ServerView(cluster_or_skip())
        self.addCleanup(self.server.close)
        self._clients: List["psycopg.Connection"] = []
        self._watchdog_fired = False
        watchdog = threading.Timer(TEST_DEADLINE, self._cut_clients)
        watchdog.daemon = True
        watchdog.start()
        self.addCleanup(self._stop_watchdog, watchdog)

    def _cut_clients(self) -> None:
        self._watchdog_fired = True
        for conn in list(self._clients):
            try:
                drop_connection(conn)
            except Exception:
                pass

    def _stop_watchdog(self, watchdog: threading.Timer) -> None:
        watchdog.cancel()
        if self._watchdog_fired:
            raise FailTest(
                f"the test's clients were cut after {TEST_DEADLINE:g} s "
                "(the proxy stopped answering?)"
            )

    def track(self, conn: "psycopg.Connection") -> "psycopg.Connection":
        """
        Put a client connection under the watchdog.
        """
        self._clients.append(conn)
        return conn

    def connect(self, autocommit: bool = True, **params: Any) -> "psycopg.Connection":
        """
        Connect through the proxy as app (or as given), closing at clean-up.
        """
        identity = {"user": "app", "password": "app", "database": "app"}
        for key in identity:
            if key in params:
                identity[key] = params.pop(key)
        conn = psycopg.connect(
            self.proxy.dsn(connect_timeout=5, **identity, **params), autocommit=autocommit
        )
        self.addCleanup(conn.close)
        return self.track(conn)

    def reused(
        self,
        first_does: Callable[["psycopg.Connection"], object],
        first_params: Optional[Dict[str, Any]] = None,
        **second_params: Any,
    ) -> "psycopg.Connection":
        """
        Let a first client work on a backend connection and leave, then
        connect a second and check it got the same backend.
        """
        first = self.connect(**(first_params or {}))
        pid = backend_pid(first)
        first_does(first)
        first.close()
        self.server.wait_pooled(pid)
        second = self.connect(**second_params)
        self.assertEqual(backend_pid(second), pid, "the second client got another backend")
        return second


#: A client takes the connection of its pair pooled last, so after
#: C{wait_pooled} the next client gets the backend the last one left.
MAX_POOL = 1
NUM_INIT_CHILDREN = 8
#: Set as the check users' passwords of the shared proxy (whose check users
#: are empty, so nothing logs in with it), to look for in its reports.
SECRET = "s3cr3t-XYZ"

_SHARED = lazy_pooling_proxy(
    max_pool=MAX_POOL,
    num_init_children=NUM_INIT_CHILDREN,
    health_check_password=SECRET,
    sr_check_password=SECRET,
)


# -- reuse ---------------------------------------------------------------------------


class ReuseTests(PoolingTestCase):
    lazy_proxy = _SHARED

    def test_sequential_clients_open_no_backend_connection(self) -> None:
        """
        BUG (intermittent here, deterministic in
        L{SlowResetTests}): a client that reconnects while its previous
        backend connection is still being reset finds no idle connection
        and the proxy opens a new one.  Seen: 3 distinct pids in 100
        cycles, about one run in two.  See L{SlowResetTests} for the fix.

        A pair keeps up to num_init_children idle connections (the
        connections earlier tests of this proxy left), and a client
        arriving while the last one's reset runs takes another of them: the
        sessions may use several backends, but only ones the proxy held
        before, and it holds the same ones after.
        """
        warm_up = self.connect()
        pid = backend_pid(warm_up)
        warm_up.close()
        self.server.wait_pooled(pid)
        self.server.wait_settled(set(self.server.proxy_backends(self.proxy)))
        before = set(self.server.proxy_backends(self.proxy))
        pids = []
        for _ in range(100):
            with self.track(
                psycopg.connect(self.proxy.dsn(connect_timeout=5), autocommit=True)
            ) as conn:
                pids.append(backend_pid(conn))
        after = set(self.server.proxy_backends(self.proxy))
        self.assertTrue(
            set(pids) <= before and set(pids) <= after <= before,
            f"backend pids of 100 sessions {sorted(Counter(pids).items())}, "
            f"before {sorted(before)}, after {sorted(after)}",
        )

    def test_reused_backend_stays_connected_between_clients(self) -> None:
        conn = self.connect()
        pid = backend_pid(conn)
        conn.close()
        self.server.wait_pooled(pid)
        self.assertIn(pid, self.server.proxy_backends(self.proxy))

    def test_never_pooled_database_gets_a_new_backend_each_time(self) -> None:
        first = self.connect(database="postgres")
        pid = backend_pid(first)
        first.close()
        self.server.wait_gone(pid)
        second = self.connect(database="postgres")
        self.assertNotEqual(backend_pid(second), pid)


class SlowResetTests(PoolingTestCase):
    """
    A reset that takes a while (a longer reset_query_list, a busy server):
    the next client of the same user and database must wait for it rather
    than open another backend connection.
    """

    lazy_proxy = lazy_pooling_proxy(
        max_pool=1, reset_query_list="ABORT; DISCARD ALL; SELECT pg_sleep(0.2)"
    )

    def test_client_reconnecting_during_the_reset_gets_the_same_backend(self) -> None:
        """
        BUG (twisted_pgpool/backend/pool.py and frontend.py): C{checkout} only
        looks at idle connections; one being reset counts as busy, so
        C{_start_session} opens a new backend connection, and once the
        reset is over the pool keeps both (a pair keeps up to
        num_init_children idle; when max_pool was the idle connections
        per pair, 1 here, C{_keep} closed the older one).  Every quick
        reconnect costs a backend connection (fork, authentication) and
        doubles the connections held.  Fix: C{ConnectionPool}
        keeps, per key, the Deferreds of resets in progress
        (C{release} adds one before the reset loop and fires it in a
        C{finally}); a new C{wait_for_reset(key)} returns one of them or
        None; in C{FrontendProtocol._acquire}, when C{checkout} returns
        None for a poolable key, C{await pool.wait_for_reset(key)} if it is
        not None and C{checkout} again before connecting.
        """
        first = self.connect()
        pid = backend_pid(first)
        first.close()
        second = self.connect()
        self.assertEqual(backend_pid(second), pid)


class PgpoolSampleSettingsTests(PoolingTestCase):
    """
    Pgpool-II's sample settings, num_init_children 32 and max_pool 4: each
    of its 32 children can cache a connection of the same pair, so 32
    clients of one pair that leave and come back find 32 connections.
    """

    lazy_proxy = lazy_pooling_proxy(num_init_children=32, max_pool=4)

    def test_thirty_two_clients_of_one_pair_come_back_to_their_backends(self) -> None:
        """
        Before, max_pool was the idle connections kept per pair: 28 of
        the 32 were closed as their clients left, and the clients coming
        back opened 28 new ones.
        """
        first = [self.connect() for _ in range(32)]
        pids = {backend_pid(conn) for conn in first}
        for conn in first:
            conn.close()
        self.server.wait_settled(pids)
        second = [self.connect() for _ in range(32)]
        self.assertEqual(
            (
                len(pids),
                {backend_pid(conn) for conn in second},
                set(self.server.proxy_backends(self.proxy)),
            ),
            (32, pids, pids),
        )


# -- isolation -----------------------------------------------------------------------


class IsolationTests(PoolingTestCase):
    """
    Whatever one client leaves on a backend connection, the next client of
    the same backend does not see.
    """

    lazy_proxy = _SHARED

    def test_set_is_undone(self) -> None:
        baseline: List[str] = []

        def first(conn: "psycopg.Connection") -> None:
            baseline.append(conn.execute("show work_mem").fetchone()[0])
            conn.execute("set work_mem = '77MB'")

        second = self.reused(first)
        self.assertEqual(second.execute("show work_mem").fetchone()[0], baseline[0])

    def test_temporary_table_is_dropped(self) -> None:
        second = self.reused(lambda c: c.execute("create temp table leftover (id int)"))
        self.assertIsNone(second.execute("select to_regclass('leftover')").fetchone()[0])

    def test_sql_prepared_statement_is_deallocated(self) -> None:
        second = self.reused(lambda c: c.execute("prepare leftover as select 1"))
        self.assertEqual(second.execute("select name from pg_prepared_statements").fetchall(), [])

    def test_protocol_prepared_statement_is_deallocated(self) -> None:
        second = self.reused(lambda c: c.execute("select 42", prepare=True))
        self.assertEqual(
            second.execute("select name from pg_prepared_statements where not from_sql").fetchall(),
            [],
        )

    def test_protocol_prepared_statement_name_can_be_used_again(self) -> None:
        # psycopg numbers its statements from _pg3_0 on every connection: a
        # leftover would make this fail with "already exists".
        second = self.reused(lambda c: c.execute("select 42", prepare=True))
        self.assertEqual(second.execute("select 43", prepare=True).fetchone()[0], 43)

    def test_listen_is_undone(self) -> None:
        channel = unique("chan")
        second = self.reused(lambda c: c.execute(f"listen {channel}"))
        self.assertEqual(second.execute("select pg_listening_channels()").fetchall(), [])

    def test_advisory_lock_is_released(self) -> None:
        key = int(uuid.uuid4().int % (2**62))
        second = self.reused(lambda c: c.execute("select pg_advisory_lock(%s)", (key,)))
        self.assertEqual(
            (
                second.execute(
                    "select count(*) from pg_locks where locktype = 'advisory'"
                    " and pid = pg_backend_pid()"
                ).fetchone()[0],
                self.server.query(
                    "select pg_try_advisory_lock(%s), pg_advisory_unlock(%s)", (key, key)
                ),
            ),
            (0, [(True, True)]),
        )

    def test_open_transaction_is_rolled_back(self) -> None:
        table = self.server.make_table()

        def first(conn: "psycopg.Connection") -> None:
            conn.execute("begin")
            conn.execute(f"insert into {table} values (1)")

        second = self.reused(first)
        self.assertEqual(
            (second.info.transaction_status, self.server.count_rows(table)),
            (pq.TransactionStatus.IDLE, 0),
        )


# -- clients that vanish mid-work ------------------------------------------------------


class AbandonTests(PoolingTestCase):
    """
    A client that goes away without a Terminate leaves nothing behind on
    the server: no transaction held open, no query still running.
    """

    lazy_proxy = _SHARED

    def running(self, marker: str) -> List[Tuple[int, str]]:
        return self.server.query(
            "select pid, state from pg_stat_activity where state = 'active'"
            " and query like %s and pid <> pg_backend_pid()",
            (f"%{marker}%",),
        )

    def test_client_gone_mid_transaction_leaves_no_open_transaction(self) -> None:
        table = self.server.make_table()
        conn = self.connect(autocommit=False)
        pid = backend_pid(conn)
        conn.execute(f"insert into {table} values (1)")
        self.assertEqual(self.server.state(pid)[0], "idle in transaction")
        drop_connection(conn)
        wait_for(
            lambda: (self.server.state(pid) or ("gone",))[0] != "idle in transaction",
            ABANDON_BOUND,
            "the abandoned transaction to end",
            interval=0.01,
        )
        self.assertEqual(self.server.count_rows(table), 0)

    def test_client_gone_mid_copy_leaves_nothing_running(self) -> None:
        table = self.server.make_table()
        conn = self.connect()
        pid = backend_pid(conn)
        conn.pgconn.send_query(f"copy {table} from stdin".encode())
        result = conn.pgconn.get_result()
        self.assertEqual(result.status, pq.ExecStatus.COPY_IN)
        conn.pgconn.put_copy_data(b"1\n2\n")
        conn.pgconn.flush()
        drop_connection(conn)
        wait_for(
            lambda: (
                (self.server.state(pid) or ("gone",))[0] not in ("active", "idle in transaction")
            ),
            ABANDON_BOUND,
            "the abandoned COPY to end",
            interval=0.01,
        )
        self.assertEqual(self.server.count_rows(table), 0)

    def test_client_gone_during_a_query_cancels_it(self) -> None:
        marker = unique("sleeper")
        conn = self.connect()
        conn.pgconn.send_query(f"select pg_sleep(30) /* {marker} */".encode())
        wait_for(lambda: bool(self.running(marker)), 5.0, "the query to start", interval=0.01)
        drop_connection(conn)
        wait_for(
            lambda: not self.running(marker),
            ABANDON_BOUND,
            "the abandoned pg_sleep to stop",
            interval=0.01,
        )

    def test_client_gone_during_unsynced_execute_leaves_no_running_query(self) -> None:
        """
        Parse/Bind/Execute followed by a Flush and no Sync (psycopg in
        pipeline mode here; drivers fetching a portal in chunks do the
        same) runs the query at once but owes no ReadyForQuery.  If the
        client vanishes, the query must be cancelled, because PostgreSQL
        does not notice a closed socket while a query runs.

        BUG (twisted_pgpool/backend/pool.py, C{ConnectionPool.release}): the cancel
        is sent only when C{backend.pending_ready > 0}, which misses this
        case (and, since 8b9709b, every case, because C{detach()} runs
        first and clears it); the connection is just closed and pg_sleep
        runs its 30 s.  Fix: before C{backend.detach(...)}, read
        C{busy = backend.busy} and C{owes_reply = backend.pending_ready > 0
        or backend.unsynced_execute}; after it, C{if busy: if owes_reply:
        self._cancel(backend)}, then discard.
        """
        marker = unique("unsynced")
        conn = self.connect()
        conn.pgconn.enter_pipeline_mode()
        conn.pgconn.send_query_params(f"select pg_sleep(30) /* {marker} */".encode(), None)
        conn.pgconn.send_flush_request()
        conn.pgconn.flush()
        wait_for(lambda: bool(self.running(marker)), 5.0, "the query to start", interval=0.01)
        drop_connection(conn)
        try:
            wait_for(
                lambda: not self.running(marker),
                ABANDON_BOUND,
                "the abandoned pg_sleep to stop",
                interval=0.01,
            )
        finally:
            # Leave nothing running for the next test, whatever happened.
            self.server.query(
                "select pg_cancel_backend(pid) from pg_stat_activity"
                " where query like %s and pid <> pg_backend_pid()",
                (f"%{marker}%",),
            )

    def test_proxy_holds_no_idle_transaction_after_abandons(self) -> None:
        table = self.server.make_table()
        for _ in range(3):
            conn = self.connect(autocommit=False)
            conn.execute(f"insert into {table} values (1)")
            drop_connection(conn)

        def none_in_transaction() -> bool:
            assert self.proxy.pid is not None
            ports = sorted(proxy_client_ports(self.proxy.pid))
            return self.server.query(
                "select count(*) from pg_stat_activity where client_port = any(%s)"
                " and state like 'idle in transaction%%'",
                (ports,),
            ) == [(0,)]

        wait_for(
            none_in_transaction, ABANDON_BOUND, "no idle transaction from the proxy", interval=0.01
        )


# -- startup parameters on a reused connection ------------------------------------------


FIRST = {
    "application_name": "first_client",
    "client_encoding": "LATIN1",
    "options": "-c search_path=first_schema",
}
FIRST_ENV = {"PGDATESTYLE": "SQL, DMY", "PGTZ": "Asia/Tokyo"}
SECOND = {
    "application_name": "second_client",
    "client_encoding": "WIN1252",
    "options": "-c search_path=second_schema,public",
}
SECOND_ENV = {"PGDATESTYLE": "German, DMY", "PGTZ": "America/New_York"}


class StartupParameterTests(PoolingTestCase):
    """
    A reused backend connection gets each client's own startup settings:
    application_name, client_encoding, DateStyle and TimeZone (which libpq
    sends from PGDATESTYLE and PGTZ) and C{-c} options.
    """

    lazy_proxy = _SHARED

    def second_after_first(self) -> "psycopg.Connection":
        with environment(**FIRST_ENV):
            first = self.connect(**FIRST)
        pid = backend_pid(first)
        first.close()
        self.server.wait_pooled(pid)
        with environment(**SECOND_ENV):
            second = self.connect(**SECOND)
        self.assertEqual(backend_pid(second), pid, "the second client got another backend")
        return second

    def show(self, conn: "psycopg.Connection", name: str) -> str:
        return conn.execute(f"show {name}").fetchone()[0]

    def test_application_name_is_the_second_clients(self) -> None:
        second = self.second_after_first()
        self.assertEqual(
            (
                self.show(second, "application_name"),
                second.info.parameter_status("application_name"),
            ),
            ("second_client", "second_client"),
        )

    def test_client_encoding_is_the_second_clients(self) -> None:
        second = self.second_after_first()
        self.assertEqual(
            (self.show(second, "client_encoding"), second.info.parameter_status("client_encoding")),
            ("WIN1252", "WIN1252"),
        )

    def test_datestyle_is_the_second_clients(self) -> None:
        second = self.second_after_first()
        self.assertEqual(
            (self.show(second, "DateStyle"), second.info.parameter_status("DateStyle")),
            ("German, DMY", "German, DMY"),
        )

    def test_timezone_is_the_second_clients(self) -> None:
        second = self.second_after_first()
        self.assertEqual(
            (self.show(second, "TimeZone"), second.info.parameter_status("TimeZone")),
            ("America/New_York", "America/New_York"),
        )

    def test_search_path_from_options_is_the_second_clients(self) -> None:
        direct = psycopg.connect(
            direct_dsn(cluster_or_skip().primary, options=SECOND["options"]), autocommit=True
        )
        self.addCleanup(direct.close)
        second = self.second_after_first()
        self.assertEqual(self.show(second, "search_path"), self.show(direct, "search_path"))

    def test_same_application_finds_its_name_restored_after_the_reset(self) -> None:
        """
        The reset gives a connection back its last client's
        application_name, and a client of the same application then gets
        it without any statement: the name must survive exactly, quote and
        backslash included.
        """
        name = "o'brien \\ app"
        first = self.connect(application_name=name)
        pid = backend_pid(first)
        first.close()
        self.server.wait_pooled(pid)
        second = self.connect(application_name=name)
        self.assertEqual(
            (
                backend_pid(second),
                self.show(second, "application_name"),
                second.info.parameter_status("application_name"),
            ),
            (pid, name, name),
        )

    def test_client_without_application_name_sees_the_server_default(self) -> None:
        second = self.second_after_first()
        pid = backend_pid(second)
        second.close()
        self.server.wait_pooled(pid)
        third = self.connect()
        self.assertEqual(
            (
                backend_pid(third),
                self.show(third, "application_name"),
                third.info.parameter_status("application_name"),
            ),
            (pid, "", ""),
        )

    def test_client_without_settings_gets_the_server_defaults(self) -> None:
        names = ("DateStyle", "TimeZone", "search_path", "client_encoding")
        direct = psycopg.connect(direct_dsn(cluster_or_skip().primary), autocommit=True)
        self.addCleanup(direct.close)
        expected = {name: self.show(direct, name) for name in names}
        second = self.second_after_first()
        pid = backend_pid(second)
        second.close()
        self.server.wait_pooled(pid)
        third = self.connect()
        self.assertEqual(
            (backend_pid(third), {name: self.show(third, name) for name in names}), (pid, expected)
        )

    def test_setting_only_allowed_at_connection_start_is_accepted(self) -> None:
        """
        PostgreSQL accepts C{-c ignore_system_indexes=on} (a PGC_BACKEND
        setting; likewise post_auth_delay, and for superusers
        log_connections, log_disconnections, jit_debugging_support,
        jit_profiling_support) in the startup packet, but not later.

        BUG (twisted_pgpool/backend/pool.py, C{split_startup_parameters}): it is
        turned into C{set_config()} on the pooled connection, which fails
        with 55P02 "parameter ... cannot be set after connection start",
        so the client gets FATAL where PostgreSQL would have let it in.
        Fix: add a frozenset C{_BACKEND_ONLY_SETTINGS} of those names; in
        C{split_startup_parameters}, put an explicit parameter with such a
        name into C{startup_only}, and likewise the whole C{options} value
        (C{startup_only.append(("options", value))}) when any name parsed
        from it is in the set, so the connection is opened with them and
        shared only with clients asking the same.
        """
        conn = self.connect(options="-c ignore_system_indexes=on")
        self.assertEqual(self.show(conn, "ignore_system_indexes"), "on")

    def test_asyncpg_server_settings_apply_on_reuse(self) -> None:
        if asyncpg is None:
            raise SkipTest("asyncpg is not installed")
        first = self.connect(**FIRST)
        pid = backend_pid(first)
        first.close()
        self.server.wait_pooled(pid)

        async def main() -> Tuple[int, str, str]:
            conn = await asyncpg.connect(
                host=self.proxy.host,
                port=self.proxy.port,
                user="app",
                password="app",
                database="app",
                timeout=5,
                server_settings={"application_name": "from_asyncpg", "DateStyle": "Postgres, MDY"},
            )
            try:
                return (
                    await conn.fetchval("select pg_backend_pid()"),
                    await conn.fetchval("show application_name"),
                    await conn.fetchval("show DateStyle"),
                )
            finally:
                await conn.close()

        self.assertEqual(
            asyncio.run(asyncio.wait_for(main(), TEST_DEADLINE)),
            (pid, "from_asyncpg", "Postgres, MDY"),
        )


# -- SHOW POOL_* -------------------------------------------------------------------


class InspectionTests(PoolingTestCase):
    """
    SHOW POOL_POOLS, POOL_PROCESSES and POOL_VERSION, read by psql, psycopg
    and asyncpg, with Pgpool-II's column names.
    """

    lazy_proxy = _SHARED

    def psql(self, sql: str) -> List[str]:
        result = run_psql(self.proxy, "-c", sql, tuples_only=False)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.splitlines()

    def asyncpg_run(self, body: Callable[[Any], Any]) -> Any:
        if asyncpg is None:
            raise SkipTest("asyncpg is not installed")

        async def main() -> Any:
            conn = await asyncpg.connect(
                host=self.proxy.host,
                port=self.proxy.port,
                user="app",
                password="app",
                database="app",
                timeout=5,
            )
            try:
                return await body(conn)
            finally:
                await conn.close()

        return asyncio.run(asyncio.wait_for(main(), TEST_DEADLINE))

    def columns(self, sql: str) -> List[str]:
        cur = self.connect().execute(sql)
        return [column.name for column in cur.description]

    def test_psql_reads_pool_version(self) -> None:
        header, value, footer = self.psql("SHOW POOL_VERSION")
        self.assertEqual(
            (header, "twisted_pgpool" in value, footer), ("pool_version", True, "(1 row)")
        )

    def test_psql_reads_pool_pools_with_pgpool_columns(self) -> None:
        lines = self.psql("SHOW POOL_POOLS")
        self.assertEqual(lines[0].split("|"), POOL_POOLS_COLUMNS)

    def test_psql_reads_pool_processes_with_pgpool_columns(self) -> None:
        lines = self.psql("SHOW POOL_PROCESSES")
        self.assertEqual(
            (lines[0].split("|"), lines[-1]),
            (POOL_PROCESSES_COLUMNS, f"({NUM_INIT_CHILDREN} rows)"),
        )

    def test_pool_status_lists_the_settings_in_force(self) -> None:
        cur = self.connect().execute("SHOW POOL_STATUS")
        rows = {item: value for item, value, _ in cur.fetchall()}
        self.assertEqual(
            (
                [c.name for c in cur.description],
                rows["num_init_children"],
                rows["load_balance_mode"],
            ),
            (["item", "value", "description"], str(NUM_INIT_CHILDREN), "off"),
        )

    def test_pool_status_shows_the_passwords_masked(self) -> None:
        rows = self.connect().execute("SHOW POOL_STATUS").fetchall()
        values = {item: value for item, value, _ in rows}
        self.assertEqual(
            (
                [item for item, value, _ in rows if SECRET in value],
                values["health_check_password"],
                values["sr_check_password"],
            ),
            ([], "*****", "*****"),
        )

    def test_pgpool_show_of_a_password_is_masked(self) -> None:
        lines = self.psql("PGPOOL SHOW health_check_password")
        self.assertEqual(lines, ["health_check_password", "*****", "(1 row)"])

    def test_psycopg_reads_pool_version(self) -> None:
        cur = self.connect().execute("SHOW POOL_VERSION")
        [(value,)] = cur.fetchall()
        self.assertEqual(
            ([c.name for c in cur.description], "twisted_pgpool" in value), (["pool_version"], True)
        )

    def test_psycopg_reads_pool_pools_with_pgpool_columns(self) -> None:
        self.assertEqual(self.columns("SHOW POOL_POOLS"), POOL_POOLS_COLUMNS)

    def test_psycopg_reads_pool_processes_with_pgpool_columns(self) -> None:
        self.assertEqual(self.columns("SHOW POOL_PROCESSES"), POOL_PROCESSES_COLUMNS)

    def test_pool_pools_shows_this_sessions_backend(self) -> None:
        conn = self.connect()
        pid = backend_pid(conn)
        rows = [
            dict(zip(POOL_POOLS_COLUMNS, row)) for row in conn.execute("SHOW POOL_POOLS").fetchall()
        ]
        mine = [row for row in rows if row["pool_backendpid"] == str(pid)]
        self.assertEqual(
            [
                (r["backend_id"], r["database"], r["username"], r["pool_connected"], r["status"])
                for r in mine
            ],
            [("0", "app", "app", "1", "Idle")],
        )

    def test_pool_pools_shows_a_pooled_backend_as_not_connected(self) -> None:
        other = self.connect()
        other_pid = backend_pid(other)
        conn = self.connect()
        other.close()
        self.server.wait_pooled(other_pid)
        rows = [
            dict(zip(POOL_POOLS_COLUMNS, row)) for row in conn.execute("SHOW POOL_POOLS").fetchall()
        ]
        self.assertEqual(
            [
                (r["pool_connected"], r["status"])
                for r in rows
                if r["pool_backendpid"] == str(other_pid)
            ],
            [("0", "Idle")],
        )

    def test_pool_processes_has_a_row_per_session_slot(self) -> None:
        conn = self.connect()
        rows = [
            dict(zip(POOL_PROCESSES_COLUMNS, row))
            for row in conn.execute("SHOW POOL_PROCESSES").fetchall()
        ]
        busy = [(r["database"], r["username"], r["status"]) for r in rows if r["username"]]
        self.assertEqual((len(rows), ("app", "app", "Idle") in busy), (NUM_INIT_CHILDREN, True))

    def test_pool_processes_shows_a_session_in_a_transaction(self) -> None:
        conn = self.connect()
        conn.execute("begin")
        statuses = {r[7] for r in conn.execute("SHOW POOL_PROCESSES").fetchall()}
        self.assertIn("Idle in transaction", statuses)

    def test_pgpool_show_reads_a_setting(self) -> None:
        cur = self.connect().execute("PGPOOL SHOW max_pool")
        self.assertEqual(
            ([c.name for c in cur.description], cur.fetchall()), (["max_pool"], [(str(MAX_POOL),)])
        )

    def test_asyncpg_simple_protocol_is_answered_by_the_proxy(self) -> None:
        # Connection.execute without arguments uses the simple protocol.
        self.assertEqual(self.asyncpg_run(lambda c: c.execute("SHOW POOL_VERSION")), "SELECT 1")

    def test_asyncpg_extended_protocol_is_answered_by_the_proxy(self) -> None:
        """
        asyncpg's C{fetch} uses the extended protocol (Parse/Describe,
        then Bind/Execute/Sync).  Unlike Pgpool-II, which answers the
        reports in the simple protocol only, the proxy answers these too,
        and the session stays usable after.
        """

        async def body(conn: Any) -> Tuple[List[str], int, int]:
            rows = await conn.fetch("SHOW POOL_VERSION")
            return list(rows[0].keys()), len(rows), await conn.fetchval("select 1")

        self.assertEqual(self.asyncpg_run(body), (["pool_version"], 1, 1))


# -- retirement and connection_cache -------------------------------------------------


class ChildMaxConnectionsTests(PoolingTestCase):
    lazy_proxy = lazy_pooling_proxy(max_pool=1, child_max_connections=2)

    def test_third_client_gets_a_new_backend(self) -> None:
        first = self.connect()
        pid = backend_pid(first)
        first.close()
        self.server.wait_pooled(pid)
        second = self.connect()
        second_pid = backend_pid(second)
        second.close()
        self.server.wait_gone(pid)
        third = self.connect()
        self.assertEqual((second_pid, backend_pid(third) != pid), (pid, True))


class ConnectionCacheOffTests(PoolingTestCase):
    lazy_proxy = lazy_pooling_proxy(connection_cache=False)

    def test_every_client_gets_a_new_backend(self) -> None:
        pids = []
        for _ in range(3):
            conn = self.connect()
            pids.append(backend_pid(conn))
            conn.close()
            self.server.wait_gone(pids[-1])
        self.assertEqual(len(set(pids)), 3)
