"""
Read/write routing end to end: real PostgreSQL 15 primary and standby, the
proxy as a child process, and real clients (psql, psycopg 3, asyncpg).

Which server answered is read from the answer itself: every probe query
selects C{inet_server_port()}, which is the primary's or the standby's
port.  Statements that cannot return it (DDL, COPY FROM) are checked in the
proxy's C{log_per_node_statement} lines.  Unless a test says otherwise the
primary has weight 0 and the standby weight 1, as in Pgpool-II's own
regression tests, so a read reaches the standby unless a rule sends it to
the primary.

Each test class starts one proxy with its settings, lazily, in its first
test (trial does not run C{setUpClass}); it stops when the test process
exits, before the shared cluster does.  The test that makes a standby lag
starts a cluster of its own and never pauses the shared one.

A standby replays the primary's WAL asynchronously: a test that reads
through the proxy what it has just written outside a transaction first
waits until the standby has replayed it (L{wait_for_replay}).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import subprocess
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.trial.unittest import SkipTest, TestCase

from tests.support import ProxyProcess, cluster_or_skip, libpq_dsn, postgres_or_skip, unique
from twisted_pgpool.testing.localcluster import LocalCluster
from twisted_pgpool.testing.waiting import wait_for

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.pq import TransactionStatus
except ImportError:  # pragma: no cover - e.g. PyPy
    psycopg = None  # type: ignore[assignment]

try:
    import asyncpg
except ImportError:  # pragma: no cover - e.g. PyPy
    asyncpg = None  # type: ignore[assignment]

SKIP_PSYCOPG = "psycopg is not installed" if psycopg is None else None
SKIP_ASYNCPG = "asyncpg is not installed" if asyncpg is None else None

#: What a query selects to say which server ran it.
WHERE = "inet_server_port()"

#: Pgpool-II 4.3's SHOW POOL_NODES columns, in order, then ours: the
#: standby's replayed position (read-your-writes).
POOL_NODES_COLUMNS = [
    "node_id",
    "hostname",
    "port",
    "status",
    "pg_status",
    "lb_weight",
    "role",
    "pg_role",
    "select_cnt",
    "load_balance_node",
    "replication_delay",
    "replication_state",
    "replication_sync_state",
    "last_status_change",
    "replay_lsn",
]

#: A log_per_node_statement line, as Pgpool-II writes it.
PER_NODE_LINE = re.compile(
    r"DB node id: (?P<node>\d+) backend pid: (?P<pid>\d+) statement: (?P<statement>.*)$",
    re.MULTILINE,
)

#: About 1 MB of WAL without a table to clean up.
ONE_MEGABYTE_OF_WAL = (
    "SELECT pg_logical_emit_message(false, 'twisted_pgpool routing test', repeat('x', 1048576))"
)


# -- helpers ------------------------------------------------------------------


def superuser_dsn(cluster: LocalCluster, node: Any, database: str = "postgres") -> str:
    """
    A connection string straight to C{node} as the trusted superuser.
    """
    return libpq_dsn(
        host=node.host, port=node.port, user="postgres", dbname=database, connect_timeout=5
    )


def wait_for_replay(cluster: LocalCluster, timeout: float = 15.0) -> None:
    """
    Wait until the standby has replayed everything the primary has written
    so far, so that reads balanced to it see it.
    """
    with psycopg.connect(superuser_dsn(cluster, cluster.primary), autocommit=True) as p:
        lsn = p.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
    with psycopg.connect(superuser_dsn(cluster, cluster.standby), autocommit=True) as s:
        wait_for(
            lambda: s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[
                0
            ],
            timeout,
            f"the standby to replay up to {lsn}",
        )


def locked_count(table: str, condition: str = "TRUE") -> str:
    """
    A query counting rows of C{table} that only the primary may run (it
    locks them), for reading back a write through the proxy without waiting
    for the standby.
    """
    return f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {condition} FOR SHARE) locked"


def run_async(coroutine_function: Callable[[], Any]) -> Any:
    """
    Run an asyncpg scenario in an event loop of its own.
    """
    return asyncio.run(asyncio.wait_for(coroutine_function(), 60))


_schema_ready = False


def ensure_schema(cluster: LocalCluster) -> None:
    """
    Create, once per test process, the functions the rule tests call:
    C{routing_where_am_i()} and C{routing_reader()} both return the port
    of the server running them (user functions, VOLATILE by default).
    """
    global _schema_ready
    if _schema_ready:
        return
    with psycopg.connect(
        libpq_dsn(
            host=cluster.primary.host,
            port=cluster.primary.port,
            user="app",
            password="app",
            dbname="app",
        ),
        autocommit=True,
    ) as conn:
        for name in ("routing_where_am_i", "routing_reader"):
            conn.execute(
                f"CREATE OR REPLACE FUNCTION {name}() RETURNS int "
                "LANGUAGE sql AS 'SELECT inet_server_port()'"
            )
    wait_for_replay(cluster)
    _schema_ready = True


# -- the proxies ----------------------------------------------------------------

_proxies: Dict[type, ProxyProcess] = {}


def base_config(cluster: LocalCluster, weights: Tuple[float, float]) -> Dict[str, Any]:
    backends = cluster.backends_config()
    for backend, weight in zip(backends, weights):
        backend["weight"] = weight
    return {
        "backends": backends,
        "pool_passwd": "pool_passwd",
        "sr_check_user": "postgres",
        "log_per_node_statement": True,
    }


def start_proxy(
    cluster: LocalCluster, weights: Tuple[float, float], settings: Dict[str, Any]
) -> ProxyProcess:
    config = base_config(cluster, weights)
    config.update(settings)
    proxy = ProxyProcess(config, extra_files={"pool_passwd": "app:TEXTapp\n"})
    proxy.start()
    return proxy


class RoutingTestCase(TestCase):
    """
    Tests against one proxy per class, configured by L{weights} and
    L{settings}.

    @ivar primary_port: the primary's port, which C{inet_server_port()}
        returns for statements it ran.
    @ivar standby_port: the standby's.
    """

    skip = SKIP_PSYCOPG
    timeout = 60
    weights: Tuple[float, float] = (0, 1)
    settings: Dict[str, Any] = {}

    def setUp(self) -> None:
        self.cluster = cluster_or_skip()
        ensure_schema(self.cluster)
        self.primary_port = self.cluster.primary.port
        self.standby_port = self.cluster.standby.port
        proxy = _proxies.get(type(self))
        if proxy is None:
            proxy = start_proxy(self.cluster, self.weights, dict(self.settings))
            # Registered after the shared cluster's own hook: runs first.
            atexit.register(proxy.stop)
            _proxies[type(self)] = proxy
        self.proxy = proxy

    # -- clients -----------------------------------------------------------

    def connect(self, autocommit: bool = True, **params: Any) -> "psycopg.Connection":
        """
        A psycopg connection through the proxy as app, closed at clean-up.
        """
        conn = psycopg.connect(self.proxy.dsn(connect_timeout=5, **params), autocommit=autocommit)
        self.addCleanup(conn.close)
        return conn

    def node(self, port: int) -> str:
        """
        C{primary} or C{standby} for a port C{inet_server_port()} returned.
        """
        names = {self.primary_port: "primary", self.standby_port: "standby"}
        return names.get(port, f"unknown port {port}")

    def served_by(
        self,
        conn: "psycopg.Connection",
        sql: str,
        params: Optional[Tuple[Any, ...]] = None,
        **options: Any,
    ) -> str:
        """
        Run C{sql}, whose first column is C{inet_server_port()}, and say
        which node ran it.
        """
        row = conn.execute(sql, params, **options).fetchone()
        return self.node(row[0])

    def table(self, columns: str = "id int") -> str:
        """
        Create a fresh table through the proxy (on the primary) and wait
        until the standby has it.
        """
        name = unique("routing")
        with psycopg.connect(self.proxy.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {name} ({columns})")
        wait_for_replay(self.cluster)
        return name

    # -- the proxy's log -------------------------------------------------------

    def nodes_logged(
        self, statement: str, expected: Optional[set] = None, timeout: float = 5.0
    ) -> set:
        """
        The node ids the proxy logged C{statement} for
        (C{log_per_node_statement}); with C{expected}, wait until they are
        at least those.
        """

        def found() -> set:
            return {
                int(m.group("node"))
                for m in PER_NODE_LINE.finditer(self.proxy.log_text())
                if m.group("statement") == statement
            }

        if expected is not None:
            try:
                wait_for(lambda: expected <= found(), timeout, f"{statement!r} in the log")
            except AssertionError:
                pass
        else:
            wait_for(lambda: bool(found()), timeout, f"{statement!r} in the log")
        return found()


# -- weights and SHOW POOL_NODES -------------------------------------------------------


def pool_nodes_psycopg(dsn: str) -> Tuple[List[str], List[Tuple[str, ...]]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute("SHOW POOL_NODES")
        return [d.name for d in cur.description], cur.fetchall()


class WeightedBalancingTests(RoutingTestCase):
    """
    Weights 1:2 (primary:standby) over many sessions.
    """

    weights = (1, 2)
    sessions = 200

    def psql(self, sql: str) -> List[List[str]]:
        """
        Run C{sql} through the proxy with psql; the header and the rows.
        """
        env = dict(os.environ, PGPASSWORD="app", PGCONNECT_TIMEOUT="5")
        output = subprocess.run(
            [
                "psql",
                "-X",
                "-A",
                "-F",
                "|",
                "-P",
                "footer=off",
                "-h",
                self.proxy.host,
                "-p",
                str(self.proxy.port),
                "-U",
                "app",
                "-d",
                "app",
                "-c",
                sql,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return [line.split("|") for line in output.strip().splitlines()]

    def select_counts(self, client: str) -> Dict[str, int]:
        """
        select_cnt per node, read with psycopg or psql.
        """
        if client == "psql":
            columns, *rows = self.psql("SHOW POOL_NODES")
        else:
            columns, rows = pool_nodes_psycopg(self.proxy.dsn())
        index = columns.index("select_cnt")
        return {self.node(int(row[2])): int(row[index]) for row in rows}

    def test_autocommit_selects_follow_the_weights(self) -> None:
        before = self.select_counts("psycopg")
        served = {"primary": 0, "standby": 0}
        for _ in range(self.sessions):
            with psycopg.connect(self.proxy.dsn(), autocommit=True) as conn:
                served[self.served_by(conn, f"SELECT {WHERE}")] += 1
        after = self.select_counts("psql")
        share = served["standby"] / self.sessions
        self.assertTrue(
            0.45 <= share <= 0.85, f"standby served {served['standby']} of {self.sessions} sessions"
        )
        self.assertGreater(served["primary"], 0)
        self.assertEqual(
            {name: after[name] - before[name] for name in after},
            served,
            "select_cnt must count exactly the balanced SELECTs each node ran",
        )

    def test_show_pool_nodes_columns_and_weights_with_psycopg(self) -> None:
        # A node is "waiting" until a session first connects to it (as in
        # Pgpool-II): have one read reach the standby, whichever tests ran
        # before this one.
        for _ in range(50):
            with psycopg.connect(self.proxy.dsn(), autocommit=True) as conn:
                if self.served_by(conn, f"SELECT {WHERE}") == "standby":
                    break
        columns, rows = pool_nodes_psycopg(self.proxy.dsn())
        self.assertEqual(columns, POOL_NODES_COLUMNS)
        self.assertEqual(
            [(r[0], r[2], r[3], r[5], r[6], r[7]) for r in rows],
            [
                ("0", str(self.primary_port), "up", "0.333333", "primary", "primary"),
                ("1", str(self.standby_port), "up", "0.666667", "standby", "standby"),
            ],
        )

    def test_show_pool_nodes_select_cnt_counts_this_sessions_read(self) -> None:
        conn = self.connect()
        node = self.served_by(conn, f"SELECT {WHERE}")
        port = str(self.primary_port if node == "primary" else self.standby_port)
        first = {r[2]: r for r in conn.execute("SHOW POOL_NODES").fetchall()}
        self.served_by(conn, f"SELECT {WHERE}")
        second = {r[2]: r for r in conn.execute("SHOW POOL_NODES").fetchall()}
        self.assertEqual(int(second[port][8]) - int(first[port][8]), 1)
        self.assertEqual(second[port][9], "true", "load_balance_node is this session's node")

    def test_show_pool_nodes_with_psql(self) -> None:
        columns, *rows = self.psql("SHOW POOL_NODES")
        self.assertEqual(columns, POOL_NODES_COLUMNS)
        self.assertEqual([len(r) for r in rows], [15, 15])
        self.assertEqual(
            [(r[5], r[6], r[7]) for r in rows],
            [("0.333333", "primary", "primary"), ("0.666667", "standby", "standby")],
        )
        self.assertTrue(all(r[8].isdigit() for r in rows), rows)

    def test_show_pool_nodes_repeated_with_psycopg(self) -> None:
        # psycopg prepares a query it has run prepare_threshold (5) times,
        # and then sends it with the extended protocol.
        conn = self.connect()
        counts = [len(conn.execute("SHOW POOL_NODES").fetchall()) for _ in range(8)]
        self.assertEqual(counts, [2] * 8)

    def test_show_pool_nodes_with_asyncpg_simple_protocol(self) -> None:
        if asyncpg is None:
            raise SkipTest(SKIP_ASYNCPG)

        async def scenario() -> str:
            conn = await asyncpg.connect(
                host=self.proxy.host,
                port=self.proxy.port,
                user="app",
                password="app",
                database="app",
            )
            try:
                # execute() without arguments is asyncpg's one use of the
                # simple query protocol; it returns the command tag only.
                return await conn.execute("SHOW POOL_NODES")
            finally:
                await conn.close()

        self.assertEqual(run_async(scenario), "SELECT 2")

    def test_show_pool_nodes_rows_with_asyncpg(self) -> None:
        if asyncpg is None:
            raise SkipTest(SKIP_ASYNCPG)

        async def scenario() -> List[Any]:
            conn = await asyncpg.connect(
                host=self.proxy.host,
                port=self.proxy.port,
                user="app",
                password="app",
                database="app",
            )
            try:
                return await conn.fetch("SHOW POOL_NODES")
            finally:
                await conn.close()

        rows = run_async(scenario)
        self.assertEqual(list(rows[0].keys()), POOL_NODES_COLUMNS)
        self.assertEqual(
            [(r["lb_weight"], r["role"]) for r in rows],
            [("0.333333", "primary"), ("0.666667", "standby")],
        )


# -- every routing rule, weights 0:1 ---------------------------------------------------


class DefaultRulesTests(RoutingTestCase):
    """
    Pgpool-II's default settings (disable_load_balance_on_write =
    transaction, allow_sql_comments off).
    """

    def test_plain_select_goes_to_the_standby(self) -> None:
        self.assertEqual(self.served_by(self.connect(), f"SELECT {WHERE}"), "standby")

    def test_insert_goes_to_the_primary(self) -> None:
        t = self.table()
        self.assertEqual(
            self.served_by(self.connect(), f"INSERT INTO {t} VALUES (1) RETURNING {WHERE}"),
            "primary",
        )

    def test_update_goes_to_the_primary(self) -> None:
        t = self.table()
        conn = self.connect()
        conn.execute(f"INSERT INTO {t} VALUES (1)")
        self.assertEqual(
            self.served_by(conn, f"UPDATE {t} SET id = 2 RETURNING {WHERE}"), "primary"
        )

    def test_delete_goes_to_the_primary(self) -> None:
        t = self.table()
        conn = self.connect()
        conn.execute(f"INSERT INTO {t} VALUES (1)")
        self.assertEqual(self.served_by(conn, f"DELETE FROM {t} RETURNING {WHERE}"), "primary")

    def test_ddl_goes_to_the_primary(self) -> None:
        name = unique("ddl")
        statement = f"CREATE TABLE {name} (id int)"
        self.connect().execute(statement)
        self.assertEqual(self.nodes_logged(statement), {0})

    def test_select_for_update_goes_to_the_primary(self) -> None:
        self.assertEqual(
            self.served_by(self.connect(), f"SELECT {WHERE} FROM (SELECT 1) s FOR UPDATE"),
            "primary",
        )

    def test_select_for_share_goes_to_the_primary(self) -> None:
        self.assertEqual(
            self.served_by(self.connect(), f"SELECT {WHERE} FROM (SELECT 1) s FOR SHARE"), "primary"
        )

    def test_select_into_goes_to_the_primary(self) -> None:
        name = unique("into")
        self.connect().execute(f"SELECT {WHERE} AS port INTO {name}")
        with psycopg.connect(superuser_dsn(self.cluster, self.cluster.primary, "app")) as direct:
            port = direct.execute(f"SELECT port FROM {name}").fetchone()[0]
        self.assertEqual(self.node(port), "primary")

    def test_data_modifying_cte_goes_to_the_primary(self) -> None:
        t = self.table()
        self.assertEqual(
            self.served_by(
                self.connect(),
                f"WITH ins AS (INSERT INTO {t} VALUES (1) RETURNING id) SELECT {WHERE} FROM ins",
            ),
            "primary",
        )

    def test_nextval_goes_to_the_primary(self) -> None:
        seq = unique("seq")
        conn = self.connect()
        conn.execute(f"CREATE SEQUENCE {seq}")
        wait_for_replay(self.cluster)
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}, nextval('{seq}')"), "primary")

    def test_setval_goes_to_the_primary(self) -> None:
        seq = unique("seq")
        conn = self.connect()
        conn.execute(f"CREATE SEQUENCE {seq}")
        wait_for_replay(self.cluster)
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}, setval('{seq}', 42)"), "primary")

    def test_user_function_goes_to_the_primary_without_function_lists(self) -> None:
        # Both lists empty: a function of unknown volatility is a write.
        self.assertEqual(self.served_by(self.connect(), "SELECT routing_reader()"), "primary")

    def test_no_load_balance_comment_goes_to_the_primary(self) -> None:
        self.assertEqual(
            self.served_by(self.connect(), f"/*NO LOAD BALANCE*/ SELECT {WHERE}"), "primary"
        )

    def test_leading_comment_goes_to_the_primary_without_allow_sql_comments(self) -> None:
        self.assertEqual(self.served_by(self.connect(), f"/* report */ SELECT {WHERE}"), "primary")

    def test_multi_statement_query_goes_to_the_primary(self) -> None:
        cur = self.connect().execute(f"SELECT {WHERE}; SELECT {WHERE}")
        first = cur.fetchone()[0]
        self.assertTrue(cur.nextset())
        self.assertEqual((self.node(first), self.node(cur.fetchone()[0])), ("primary", "primary"))

    def test_read_of_a_temporary_table_goes_to_the_primary(self) -> None:
        conn = self.connect()
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "standby")
        conn.execute("CREATE TEMP TABLE routing_scratch (id int)")
        conn.execute("INSERT INTO routing_scratch VALUES (1)")
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE} FROM routing_scratch"), "primary")

    def test_read_in_transaction_before_a_write_goes_to_the_standby(self) -> None:
        conn = self.connect(autocommit=False)
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "standby")
        self.assertEqual(conn.info.transaction_status, TransactionStatus.INTRANS)

    def test_read_in_transaction_after_a_write_goes_to_the_primary(self) -> None:
        t = self.table()
        conn = self.connect(autocommit=False)
        self.served_by(conn, f"SELECT {WHERE}")
        conn.execute(f"INSERT INTO {t} VALUES (1)")
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "primary")

    def test_reads_return_to_the_standby_after_commit(self) -> None:
        t = self.table()
        conn = self.connect(autocommit=False)
        conn.execute(f"INSERT INTO {t} VALUES (1)")
        conn.commit()
        # With read_your_writes (the default) the session's next read goes
        # to the standby once it has replayed the commit; wait for that, so
        # the test sees the transaction rule and not replication speed.
        wait_for_replay(self.cluster)
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "standby")

    def test_read_your_write_inside_a_transaction(self) -> None:
        t = self.table("id int, note text")
        conn = self.connect(autocommit=False)
        self.assertEqual(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0], 0)
        conn.execute(f"INSERT INTO {t} VALUES (1, 'mine')")
        self.assertEqual(
            conn.execute(f"SELECT note, {WHERE} FROM {t} WHERE id = 1").fetchall(),
            [("mine", self.primary_port)],
        )

    def test_failed_standby_read_makes_the_transaction_fail(self) -> None:
        conn = self.connect(autocommit=False)
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "standby")
        with self.assertRaises(pg_errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        self.assertEqual(conn.info.transaction_status, TransactionStatus.INERROR)
        with self.assertRaises(pg_errors.InFailedSqlTransaction):
            conn.execute(f"SELECT {WHERE}")

    def test_begin_and_commit_reach_every_node_the_session_uses(self) -> None:
        conn = self.connect()
        self.served_by(conn, f"SELECT {WHERE}")  # opens the standby link
        begin, commit = f"BEGIN /* {unique('b')} */", f"COMMIT /* {unique('c')} */"
        conn.execute(begin)
        conn.execute(commit)
        self.assertEqual(self.nodes_logged(begin, {0, 1}), {0, 1})
        self.assertEqual(self.nodes_logged(commit, {0, 1}), {0, 1})

    def test_set_reaches_the_standby_opened_later(self) -> None:
        conn = self.connect()
        conn.execute("SET application_name = 'routing_set_first'")
        row = conn.execute(f"SELECT {WHERE}, current_setting('application_name')").fetchone()
        self.assertEqual((self.node(row[0]), row[1]), ("standby", "routing_set_first"))

    def test_set_reaches_the_standby_already_open(self) -> None:
        conn = self.connect()
        self.served_by(conn, f"SELECT {WHERE}")
        conn.execute("SET application_name = 'routing_set_later'")
        row = conn.execute(f"SELECT {WHERE}, current_setting('application_name')").fetchone()
        self.assertEqual((self.node(row[0]), row[1]), ("standby", "routing_set_later"))

    def test_set_in_a_committed_transaction_reaches_the_standby_opened_later(self) -> None:
        # psycopg's default: every statement, SET included, runs inside a
        # transaction the driver opened.
        conn = self.connect(autocommit=False)
        conn.execute("SET application_name = 'routing_set_in_tx'")
        conn.commit()
        row = conn.execute(f"SELECT {WHERE}, current_setting('application_name')").fetchone()
        self.assertEqual((self.node(row[0]), row[1]), ("standby", "routing_set_in_tx"))

    def test_set_sent_with_the_extended_protocol_reaches_the_standby_opened_later(self) -> None:
        conn = self.connect()
        conn.execute("SET application_name = 'routing_set_extended'", prepare=True)
        row = conn.execute(f"SELECT {WHERE}, current_setting('application_name')").fetchone()
        self.assertEqual((self.node(row[0]), row[1]), ("standby", "routing_set_extended"))

    def test_begin_sent_with_the_extended_protocol_covers_a_standby_opened_later(self) -> None:
        # pgJDBC and psycopg's pipeline mode send BEGIN as Parse/Bind/Execute.
        conn = self.connect()
        conn.execute("BEGIN", prepare=True)
        row = conn.execute(f"SELECT {WHERE}, now() < statement_timestamp()").fetchone()
        self.assertEqual(
            (self.node(row[0]), row[1], conn.info.transaction_status),
            ("standby", True, TransactionStatus.INTRANS),
            "the standby's read must run inside the client's transaction",
        )

    def test_sql_prepare_and_execute_run_on_the_same_node(self) -> None:
        conn = self.connect()
        name = unique("q")
        conn.execute(f"PREPARE {name} AS SELECT {WHERE}")
        self.assertIn(self.served_by(conn, f"EXECUTE {name}"), ("primary", "standby"))

    def test_user_without_pool_passwd_entry_reads_from_the_primary(self) -> None:
        # trustuser logs in by relayed trust: the proxy has no password to
        # open a second connection for it, so it reads from the primary.
        conn = self.connect(user="trustuser", password="")
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "primary")

    def test_explain_of_a_select_is_balanced(self) -> None:
        statement = f"EXPLAIN SELECT '{unique('explained')}'"
        self.connect().execute(statement)
        self.assertEqual(self.nodes_logged(statement), {1})

    def test_explain_analyze_of_an_insert_goes_to_the_primary(self) -> None:
        t = self.table()
        conn = self.connect()
        statement = f"EXPLAIN ANALYZE INSERT INTO {t} VALUES (7)"
        conn.execute(statement)
        self.assertEqual(self.nodes_logged(statement), {0})
        self.assertEqual(conn.execute(locked_count(t)).fetchone()[0], 1)

    def test_copy_to_stdout_is_balanced(self) -> None:
        conn = self.connect()
        with conn.cursor().copy(f"COPY (SELECT {WHERE}) TO STDOUT") as copy:
            rows = list(copy.rows())
        self.assertEqual([self.node(int(r[0])) for r in rows], ["standby"])

    def test_copy_from_goes_to_the_primary(self) -> None:
        t = self.table()
        conn = self.connect()
        statement = f"COPY {t} FROM STDIN"
        with conn.cursor().copy(statement) as copy:
            copy.write_row((1,))
            copy.write_row((2,))
        self.assertEqual(self.nodes_logged(statement), {0})
        self.assertEqual(conn.execute(locked_count(t)).fetchone()[0], 2)

    def test_per_node_statement_log_shows_reads_on_node_1_and_writes_on_node_0(self) -> None:
        t = self.table()
        marker = unique("logged")
        conn = self.connect()
        read, write = f"SELECT '{marker}'", f"INSERT INTO {t} VALUES (1) /* {marker} */"
        conn.execute(read)
        conn.execute(write)
        self.nodes_logged(write)
        lines = [
            (int(m.group("node")), int(m.group("pid")), m.group("statement"))
            for m in PER_NODE_LINE.finditer(self.proxy.log_text())
            if m.group("statement") in (read, write)
        ]
        self.assertEqual(
            sorted((node, statement) for node, _, statement in lines), [(0, write), (1, read)]
        )
        self.assertTrue(all(pid > 0 for _, pid, _ in lines))


class PreparedStatementTests(RoutingTestCase):
    """
    Statements prepared on the standby and executed later where a write
    sends them to the primary.
    """

    def test_psycopg_statement_prepared_on_standby_runs_on_primary_after_a_write(self) -> None:
        t = self.table()
        conn = self.connect(autocommit=False)
        query = f"SELECT {WHERE}, count(*) FROM {t} WHERE id = %s"
        self.assertEqual(conn.execute(query, (5,), prepare=True).fetchone(), (self.standby_port, 0))
        conn.commit()
        conn.execute(f"INSERT INTO {t} VALUES (5)")
        self.assertEqual(conn.execute(query, (5,), prepare=True).fetchone(), (self.primary_port, 1))
        conn.commit()
        wait_for_replay(self.cluster)
        self.assertEqual(conn.execute(query, (5,), prepare=True).fetchone(), (self.standby_port, 1))

    def test_asyncpg_statement_prepared_on_standby_runs_on_primary_after_a_write(self) -> None:
        if asyncpg is None:
            raise SkipTest(SKIP_ASYNCPG)
        t = self.table()

        async def scenario() -> List[Tuple[int, int]]:
            conn = await asyncpg.connect(
                host=self.proxy.host,
                port=self.proxy.port,
                user="app",
                password="app",
                database="app",
            )
            try:
                statement = await conn.prepare(f"SELECT {WHERE}, count(*) FROM {t} WHERE id = $1")
                results = [tuple(await statement.fetchrow(9))]
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {t} VALUES (9)")
                    results.append(tuple(await statement.fetchrow(9)))
                return results
            finally:
                await conn.close()

        self.assertEqual(run_async(scenario), [(self.standby_port, 0), (self.primary_port, 1)])


class FunctionListTests(RoutingTestCase):
    settings = {"write_function_list": ["routing_where_am_i"]}

    def test_function_in_write_function_list_goes_to_the_primary(self) -> None:
        self.assertEqual(self.served_by(self.connect(), "SELECT routing_where_am_i()"), "primary")

    def test_function_not_in_write_function_list_is_balanced(self) -> None:
        self.assertEqual(self.served_by(self.connect(), "SELECT routing_reader()"), "standby")


class ReadOnlyFunctionListTests(RoutingTestCase):
    settings = {"read_only_function_list": ["inet_server_port", "routing_reader"]}

    def test_function_not_in_read_only_function_list_goes_to_the_primary(self) -> None:
        self.assertEqual(self.served_by(self.connect(), "SELECT routing_where_am_i()"), "primary")

    def test_function_in_read_only_function_list_is_balanced(self) -> None:
        self.assertEqual(self.served_by(self.connect(), "SELECT routing_reader()"), "standby")


class QueryPatternTests(RoutingTestCase):
    settings = {"primary_routing_query_pattern_list": [r".*\bas\s+fresh_data\b.*"]}

    def test_query_matching_a_pattern_goes_to_the_primary(self) -> None:
        self.assertEqual(self.served_by(self.connect(), f"SELECT {WHERE} AS FRESH_DATA"), "primary")

    def test_query_not_matching_a_pattern_is_balanced(self) -> None:
        self.assertEqual(self.served_by(self.connect(), f"SELECT {WHERE} AS any_data"), "standby")


class AllowSqlCommentsTests(RoutingTestCase):
    settings = {"allow_sql_comments": True}

    def test_leading_comment_is_balanced(self) -> None:
        self.assertEqual(self.served_by(self.connect(), f"/* report */ SELECT {WHERE}"), "standby")

    def test_no_load_balance_comment_is_ignored(self) -> None:
        self.assertEqual(
            self.served_by(self.connect(), f"/*NO LOAD BALANCE*/ SELECT {WHERE}"), "standby"
        )


class WriteModeOffTests(RoutingTestCase):
    """
    disable_load_balance_on_write = off: reads stay balanced after a write,
    even inside the transaction.
    """

    settings = {"disable_load_balance_on_write": "off"}

    def test_read_after_a_write_in_a_transaction_stays_on_the_standby(self) -> None:
        t = self.table()
        conn = self.connect(autocommit=False)
        conn.execute(f"INSERT INTO {t} VALUES (1)")
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "standby")

    def test_failed_standby_read_after_a_write_rolls_the_write_back(self) -> None:
        t = self.table()
        marker = 4242
        conn = self.connect(autocommit=False)
        conn.execute(f"INSERT INTO {t} VALUES ({marker})")
        with self.assertRaises(pg_errors.DivisionByZero):
            conn.execute(f"SELECT {WHERE}, 1 / 0")
        conn.commit()
        with psycopg.connect(superuser_dsn(self.cluster, self.cluster.primary, "app")) as direct:
            self.assertEqual(
                direct.execute(f"SELECT count(*) FROM {t} WHERE id = {marker}").fetchone()[0], 0
            )

    def test_failed_standby_read_rolls_back_even_if_the_client_ignores_the_error(self) -> None:
        # A client that does not track the transaction status (the psql
        # way): it just sends COMMIT.
        t = self.table()
        conn = self.connect()
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {t} VALUES (1)")
        with self.assertRaises(pg_errors.DivisionByZero):
            conn.execute(f"SELECT {WHERE}, 1 / 0")
        tag = conn.execute("COMMIT").statusmessage
        self.assertEqual(tag, "ROLLBACK")
        with psycopg.connect(superuser_dsn(self.cluster, self.cluster.primary, "app")) as direct:
            self.assertEqual(direct.execute(f"SELECT count(*) FROM {t}").fetchone()[0], 0)

    def test_failed_standby_read_after_an_extended_protocol_begin_rolls_back(self) -> None:
        t = self.table()
        conn = self.connect()
        conn.execute("BEGIN", prepare=True)
        conn.execute(f"INSERT INTO {t} VALUES (1)")
        with self.assertRaises(pg_errors.DivisionByZero):
            conn.execute(f"SELECT {WHERE}, 1 / 0")
        conn.execute("COMMIT")
        with psycopg.connect(superuser_dsn(self.cluster, self.cluster.primary, "app")) as direct:
            self.assertEqual(direct.execute(f"SELECT count(*) FROM {t}").fetchone()[0], 0)


class AlwaysTests(RoutingTestCase):
    settings = {"disable_load_balance_on_write": "always"}

    def test_read_after_an_autocommit_write_goes_to_the_primary(self) -> None:
        t = self.table()
        conn = self.connect()
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "standby")
        conn.execute(f"INSERT INTO {t} VALUES (1)")
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "primary")

    def test_reads_stay_on_the_primary_after_commit(self) -> None:
        t = self.table()
        conn = self.connect(autocommit=False)
        conn.execute(f"INSERT INTO {t} VALUES (1)")
        conn.commit()
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "primary")


class TransTransactionTests(RoutingTestCase):
    settings = {"disable_load_balance_on_write": "trans_transaction"}

    def test_later_transactions_read_from_the_primary(self) -> None:
        t = self.table()
        conn = self.connect(autocommit=False)
        conn.execute(f"INSERT INTO {t} VALUES (1)")
        conn.commit()
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "primary")

    def test_transactions_before_any_write_read_from_the_standby(self) -> None:
        conn = self.connect(autocommit=False)
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "standby")
        conn.commit()
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "standby")


class DmlAdaptiveTests(RoutingTestCase):
    settings = {"disable_load_balance_on_write": "dml_adaptive"}

    def test_read_of_the_written_table_goes_to_the_primary(self) -> None:
        written = self.table()
        conn = self.connect(autocommit=False)
        conn.execute(f"INSERT INTO {written} VALUES (1)")
        self.assertEqual(
            self.served_by(conn, f"SELECT {WHERE}, count(*) FROM {written}"), "primary"
        )

    def test_read_of_another_table_stays_on_the_standby(self) -> None:
        written, other = self.table(), self.table()
        conn = self.connect(autocommit=False)
        conn.execute(f"INSERT INTO {written} VALUES (1)")
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}, count(*) FROM {other}"), "standby")

    def test_after_commit_the_written_table_is_balanced_again(self) -> None:
        written = self.table()
        conn = self.connect(autocommit=False)
        conn.execute(f"INSERT INTO {written} VALUES (1)")
        conn.commit()
        wait_for_replay(self.cluster)  # read-your-writes: see above
        self.assertEqual(
            self.served_by(conn, f"SELECT {WHERE}, count(*) FROM {written}"), "standby"
        )


class DmlAdaptiveRelationshipTests(RoutingTestCase):
    settings = {
        "disable_load_balance_on_write": "dml_adaptive",
        "dml_adaptive_object_relationship_list": "routing_dml_base:routing_dml_view",
    }

    def test_read_of_a_dependent_object_goes_to_the_primary(self) -> None:
        with psycopg.connect(self.proxy.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS routing_dml_base (id int)")
            conn.execute(
                "CREATE OR REPLACE VIEW routing_dml_view AS SELECT id FROM routing_dml_base"
            )
        wait_for_replay(self.cluster)
        conn = self.connect(autocommit=False)
        conn.execute("INSERT INTO routing_dml_base VALUES (1)")
        self.assertEqual(
            self.served_by(conn, f"SELECT {WHERE}, count(*) FROM routing_dml_view"), "primary"
        )


class DatabaseRedirectTests(RoutingTestCase):
    settings = {"database_redirect_preference_list": "app:primary"}

    def test_database_in_the_list_reads_from_the_named_node(self) -> None:
        self.assertEqual(self.served_by(self.connect(), f"SELECT {WHERE}"), "primary")

    def test_other_database_reads_from_the_standby(self) -> None:
        conn = self.connect(database="postgres")
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "standby")


class AppNameRedirectTests(RoutingTestCase):
    settings = {"app_name_redirect_preference_list": "fresh_.*:primary,reports:0"}

    def test_application_name_in_the_list_reads_from_the_primary(self) -> None:
        conn = self.connect(application_name="fresh_orders")
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "primary")

    def test_application_name_naming_a_node_id_reads_from_it(self) -> None:
        # Node 0 gets this application's reads although its weight is 0.
        conn = self.connect(application_name="reports")
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "primary")

    def test_application_name_set_after_startup_does_not_redirect(self) -> None:
        # As in Pgpool-II: only the startup packet's application_name counts.
        conn = self.connect(application_name="other")
        conn.execute("SET application_name = 'fresh_orders'")
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "standby")


class UserRedirectTests(RoutingTestCase):
    settings = {"user_redirect_preference_list": "app:primary"}

    def test_user_in_the_list_reads_from_the_primary(self) -> None:
        self.assertEqual(self.served_by(self.connect(), f"SELECT {WHERE}"), "primary")


class RedirectPrecedenceTests(RoutingTestCase):
    """
    Pgpool-II: an application-name match overrides a database match, which
    overrides a user match.
    """

    settings = {
        "user_redirect_preference_list": "app:1",
        "database_redirect_preference_list": "app:primary",
        "app_name_redirect_preference_list": "to_standby:standby",
    }

    def test_database_match_overrides_user_match(self) -> None:
        self.assertEqual(self.served_by(self.connect(), f"SELECT {WHERE}"), "primary")

    def test_application_name_match_overrides_database_match(self) -> None:
        conn = self.connect(application_name="to_standby")
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "standby")


class StatementLevelTests(RoutingTestCase):
    weights = (1, 1)
    settings = {"statement_level_load_balance": True}

    def test_one_sessions_reads_spread_over_both_nodes(self) -> None:
        conn = self.connect()
        served = {self.served_by(conn, f"SELECT {WHERE}") for _ in range(100)}
        self.assertEqual(served, {"primary", "standby"})


class SessionLevelTests(RoutingTestCase):
    weights = (1, 1)

    def test_one_sessions_reads_stay_on_one_node(self) -> None:
        conn = self.connect()
        served = {self.served_by(conn, f"SELECT {WHERE}") for _ in range(30)}
        self.assertEqual(len(served), 1)


class LoadBalanceOffTests(RoutingTestCase):
    settings = {"load_balance_mode": False}

    def test_reads_go_to_the_primary(self) -> None:
        self.assertEqual(self.served_by(self.connect(), f"SELECT {WHERE}"), "primary")


class RawModeTests(RoutingTestCase):
    settings = {"backend_clustering_mode": "raw"}

    def test_reads_go_to_node_0(self) -> None:
        self.assertEqual(self.served_by(self.connect(), f"SELECT {WHERE}"), "primary")


# -- drivers' prepared statements and pipelines ----------------------------------------------


class MixedWorkloadTests(RoutingTestCase):
    """
    At least 1,000 statements per driver, reads and writes interleaved,
    inside and outside transactions, under balancing (weights 0:1, so every
    read outside a writing transaction crosses to the standby).  Results
    read back inside the writing transaction must be exact; reads outside
    transactions may lag behind and are only checked where they cannot.
    Each counter counts the statements the driver sends (BEGIN and COMMIT
    included, each row of an C{executemany} once).

    Read-your-writes is off here: these are Pgpool-II's rules, under which
    a read after a committed write crosses to the standby regardless of
    replay (tests/test_e2e_causal.py covers the other setting).
    """

    settings = {"read_your_writes": "off"}

    def test_asyncpg_mixed_statements(self) -> None:
        if asyncpg is None:
            raise SkipTest(SKIP_ASYNCPG)
        t = self.table("id serial PRIMARY KEY, round int, v int")

        async def scenario() -> int:
            conn = await asyncpg.connect(
                host=self.proxy.host,
                port=self.proxy.port,
                user="app",
                password="app",
                database="app",
            )
            sent = 0
            try:
                double = await conn.prepare("SELECT $1::int * 2")
                count_round = await conn.prepare(f"SELECT count(*) FROM {t} WHERE round = $1")
                sent += 2
                for r in range(46):
                    # Outside a transaction: reads on the standby.
                    self.assertEqual(await double.fetchval(r), 2 * r)
                    self.assertEqual(await conn.fetchval("SELECT $1::text || 'x'", str(r)), f"{r}x")
                    self.assertEqual(await count_round.fetchval(r), 0)
                    sent += 3
                    # A writing transaction: read, write, read back.
                    async with conn.transaction():
                        before = await count_round.fetchval(r)
                        await conn.executemany(
                            f"INSERT INTO {t} (round, v) VALUES ($1, $2)",
                            [(r, i) for i in range(5)],
                        )
                        await conn.execute(f"UPDATE {t} SET v = v + 1 WHERE round = $1", r)
                        self.assertEqual(await count_round.fetchval(r), before + 5)
                        self.assertEqual(
                            await conn.fetchval(f"SELECT sum(v) FROM {t} WHERE round = $1", r), 15
                        )
                        self.assertEqual(await double.fetchval(r), 2 * r)
                    sent += 12
                    # Autocommit writes between reads.
                    await conn.execute(f"DELETE FROM {t} WHERE round = $1 AND v = 1", r)
                    self.assertEqual(await conn.fetchval("SELECT 1 + $1::int", r), r + 1)
                    self.assertEqual(await conn.fetchval(locked_count(t, "round = $1"), r), 4)
                    sent += 3
                    # A transaction that only reads stays on the standby.
                    async with conn.transaction():
                        self.assertEqual(await double.fetchval(-r), -2 * r)
                        self.assertEqual(await conn.fetchval(f"SELECT {WHERE}"), self.standby_port)
                    sent += 4
            finally:
                await conn.close()
            return sent

        self.assertGreaterEqual(run_async(scenario), 1000)

    def test_psycopg_mixed_statements(self) -> None:
        t = self.table("id serial PRIMARY KEY, round int, v int")
        conn = self.connect(autocommit=True)
        sent = 0
        count_round = f"SELECT count(*) FROM {t} WHERE round = %s"
        for r in range(60):
            self.assertEqual(
                conn.execute("SELECT %s::int * 2", (r,), prepare=True).fetchone(), (2 * r,)
            )
            self.assertEqual(conn.execute(count_round, (r,), prepare=True).fetchone(), (0,))
            sent += 2
            with conn.transaction():
                before = conn.execute(count_round, (r,), prepare=True).fetchone()[0]
                with conn.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO {t} (round, v) VALUES (%s, %s)", [(r, i) for i in range(5)]
                    )
                conn.execute(f"UPDATE {t} SET v = v + 1 WHERE round = %s", (r,))
                self.assertEqual(
                    conn.execute(count_round, (r,), prepare=True).fetchone(), (before + 5,)
                )
                self.assertEqual(
                    conn.execute(f"SELECT sum(v) FROM {t} WHERE round = %s", (r,)).fetchone(), (15,)
                )
            sent += 11
            conn.execute(f"DELETE FROM {t} WHERE round = %s AND v = 1", (r,))
            self.assertEqual(conn.execute(locked_count(t, "round = %s"), (r,)).fetchone(), (4,))
            self.assertEqual(
                conn.execute("SELECT %s::text || 'x'", (str(r),)).fetchone(), (f"{r}x",)
            )
            self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "standby")
            sent += 4
        self.assertGreaterEqual(sent, 1000)

    def test_psycopg_pipeline_mixed_statements(self) -> None:
        t = self.table("id serial PRIMARY KEY, round int, v int")
        conn = self.connect(autocommit=True)
        self.served_by(conn, f"SELECT {WHERE}")  # the standby link is open from here on
        sent = 0
        count_round = f"SELECT count(*) FROM {t} WHERE round = %s"
        for r in range(67):
            with conn.pipeline():
                reads = [conn.execute("SELECT %s::int * 2", (i,), prepare=True) for i in range(4)]
                self.assertEqual([c.fetchone()[0] for c in reads], [0, 2, 4, 6])
                sent += 4
                with conn.transaction():
                    before = conn.execute(count_round, (r,), prepare=True)
                    with conn.cursor() as cur:
                        cur.executemany(
                            f"INSERT INTO {t} (round, v) VALUES (%s, %s)",
                            [(r, i) for i in range(5)],
                        )
                    after = conn.execute(count_round, (r,), prepare=True)
                    self.assertEqual(after.fetchone()[0], before.fetchone()[0] + 5)
                sent += 9
                conn.execute(f"DELETE FROM {t} WHERE round = %s AND v = 0", (r,))
                check = conn.execute(locked_count(t, "round = %s"), (r,))
                self.assertEqual(check.fetchone()[0], 4)
                sent += 2
        self.assertGreaterEqual(sent, 1000)
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "standby")

    def test_psycopg_pipeline_write_after_begin_is_not_sent_to_the_standby(self) -> None:
        # One batch (no Sync between them) holding BEGIN, a write and
        # COMMIT: BEGIN and COMMIT go to every node the session uses, the
        # INSERT to the primary only.
        t = self.table()
        conn = self.connect(autocommit=True)
        self.served_by(conn, f"SELECT {WHERE}")  # the standby link is open
        with conn.pipeline():
            conn.execute("BEGIN")
            conn.execute(f"INSERT INTO {t} VALUES (%s)", (1,))
            conn.execute("COMMIT")
        self.assertEqual(conn.execute(locked_count(t)).fetchone(), (1,))
        # Run on the standby, the INSERT would fail there unseen and leave
        # that connection in a failed transaction: reads would then go to
        # the primary for the rest of the session.  (Once the standby has
        # replayed the commit, as read-your-writes wants.)
        wait_for_replay(self.cluster)
        self.assertEqual(self.served_by(conn, f"SELECT {WHERE}"), "standby")
        self.assertNotIn("cannot execute INSERT in a read-only transaction", self.proxy.log_text())

    def test_psycopg_pipeline_write_after_a_fetched_read(self) -> None:
        # psycopg sends a Flush to fetch a result in the middle of a
        # pipeline; the write queued after it (before any Sync) must still
        # reach the primary, not the standby the batch was flushed to.
        t = self.table()
        conn = self.connect(autocommit=True)
        with conn.pipeline():
            read = conn.execute(f"SELECT {WHERE}, %s::int", (1,))
            self.assertEqual(self.node(read.fetchone()[0]), "standby")
            conn.execute(f"INSERT INTO {t} VALUES (%s)", (1,))
        self.assertEqual(conn.execute(locked_count(t)).fetchone(), (1,))


# -- a lagging standby -----------------------------------------------------------


_lag_cluster: Optional[LocalCluster] = None


def lag_cluster() -> LocalCluster:
    """
    A primary+standby of this module's own, for the tests that pause
    replay (never the shared cluster); started on first use, stopped at
    exit.
    """
    global _lag_cluster
    if _lag_cluster is None:
        postgres_or_skip()
        cluster = LocalCluster()
        cluster.start()
        atexit.register(cluster.stop)
        _lag_cluster = cluster
    return _lag_cluster


def standby_delay(conn: "psycopg.Connection") -> str:
    """
    Node 1's replication_delay column of SHOW POOL_NODES.  (The simple
    query protocol: C{prepare=False} keeps psycopg from preparing a query it
    runs repeatedly.)
    """
    return conn.execute("SHOW POOL_NODES", prepare=False).fetchall()[1][10]


class ReplicationDelayTests(TestCase):
    """
    A standby beyond delay_threshold gets no reads until it catches up.
    Each test pauses replay on a cluster of this module's own and resumes
    it when done.
    """

    skip = SKIP_PSYCOPG
    timeout = 90

    def setUp(self) -> None:
        self.pg = lag_cluster()
        self.primary_port, self.standby_port = self.pg.primary.port, self.pg.standby.port

    def start_proxy(self, **settings: Any) -> "psycopg.Connection":
        backends = self.pg.backends_config()
        backends[0]["weight"] = 0
        config = {
            "backends": backends,
            "pool_passwd": "pool_passwd",
            "sr_check_user": "postgres",
            "log_per_node_statement": True,
            "delay_threshold": 1000,
            "sr_check_period": 1,
        }
        config.update(settings)
        proxy = ProxyProcess(config, extra_files={"pool_passwd": "app:TEXTapp\n"})
        proxy.start()
        self.addCleanup(proxy.stop)
        conn = psycopg.connect(proxy.dsn(connect_timeout=5), autocommit=True)
        self.addCleanup(conn.close)
        return conn

    def served_by(self, conn: "psycopg.Connection") -> int:
        return conn.execute(f"SELECT {WHERE}").fetchone()[0]

    def make_standby_lag(self) -> None:
        self.pg.pause_replay()
        self.addCleanup(self.pg.resume_replay)
        self.pg.psql(self.pg.primary, ONE_MEGABYTE_OF_WAL)

    def test_lagging_standby_gets_no_reads_until_it_catches_up(self) -> None:
        conn = self.start_proxy()
        self.assertEqual(self.served_by(conn), self.standby_port)
        self.make_standby_lag()
        wait_for(
            lambda: self.served_by(conn) == self.primary_port,
            10.0,
            "reads to leave the lagging standby",
            interval=0.1,
        )
        self.assertGreater(int(standby_delay(conn)), 1000)

        self.pg.resume_replay()
        wait_for(
            lambda: self.served_by(conn) == self.standby_port,
            15.0,
            "reads to return to the standby",
            interval=0.1,
        )

    def test_prefer_lower_delay_standby_with_no_standby_in_time_reads_the_primary(self) -> None:
        conn = self.start_proxy(prefer_lower_delay_standby=True)
        self.assertEqual(self.served_by(conn), self.standby_port)
        self.make_standby_lag()
        wait_for(
            lambda: int(standby_delay(conn)) > 1000,
            10.0,
            "the check to see the standby's delay",
            interval=0.1,
        )
        self.assertEqual(
            self.served_by(conn),
            self.primary_port,
            "the only standby lags: its reads belong on the primary",
        )
