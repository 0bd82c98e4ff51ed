"""
Tests for L{twisted_pgpool.testing.localcluster} and the end-to-end helpers in
L{tests.support}: the real servers every end-to-end test relies on must
really replicate and really authenticate the way their names promise.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid

import yaml
from twisted.trial.unittest import SkipTest, TestCase

from tests.support import (
    ProxyProcess,
    ProxyProcessError,
    direct_dsn,
    free_port,
    libpq_dsn,
    shared_cluster,
)
from twisted_pgpool.testing.localcluster import (
    LocalCluster,
    LocalClusterError,
    find_pg_bindir,
)
from twisted_pgpool.testing.waiting import wait_for

try:
    import psycopg
except ImportError:  # PyPy: no binary build, and the tests run there too
    psycopg = None  # type: ignore[assignment]

SKIP_PSYCOPG = None if psycopg is not None else "psycopg is not installed"

# Stand-ins for the proxy: tiny programs that listen (or do not) the way a
# healthy (or broken) proxy would, so ProxyProcess's waiting is tested before
# the real proxy exists.
LISTENER = """\
import socket, sys, time
time.sleep(float(sys.argv[3]))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
with open(sys.argv[4], "a") as log:
    log.write("listening\\n")
while True:
    s.accept()[0].close()
"""

CRASHER = """\
import sys
sys.stderr.write("boom: no such plugin\\n")
sys.exit(3)
"""

SLEEPER = "import time; time.sleep(60)"

STUBBORN_LISTENER = (
    "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
) + LISTENER


def stand_in(script: str, delay: float = 0.0) -> list:
    return [sys.executable, "-c", script, "{host}", "{port}", str(delay), "{log}"]


class FindBindirTests(TestCase):
    def test_pg_bindir_variable_wins(self) -> None:
        bindir = find_pg_bindir()
        self.assertEqual(find_pg_bindir({"PG_BINDIR": bindir}), bindir)

    def test_pg_bindir_without_initdb_is_an_error(self) -> None:
        empty = self.mktemp()
        os.mkdir(empty)
        error = self.assertRaises(LocalClusterError, find_pg_bindir, {"PG_BINDIR": empty})
        self.assertIn(empty, str(error))

    def test_found_directory_holds_the_server_programs(self) -> None:
        bindir = find_pg_bindir({})
        for program in ("initdb", "pg_ctl", "pg_basebackup", "postgres", "psql"):
            self.assertTrue(os.access(os.path.join(bindir, program), os.X_OK), program)


class SharedClusterTests(TestCase):
    def setUp(self) -> None:
        self.cluster = shared_cluster()

    def test_shared_cluster_is_started_once(self) -> None:
        self.assertIs(shared_cluster(), self.cluster)

    def test_primary_is_not_in_recovery(self) -> None:
        self.assertEqual(self.cluster.psql(self.cluster.primary, "SELECT pg_is_in_recovery()"), "f")

    def test_standby_is_in_recovery(self) -> None:
        self.assertEqual(self.cluster.psql(self.cluster.standby, "SELECT pg_is_in_recovery()"), "t")

    def test_primary_reports_standby_streaming_under_its_name(self) -> None:
        rows = self.cluster.psql(
            self.cluster.primary, "SELECT application_name, state FROM pg_stat_replication"
        )
        self.assertEqual(rows, "standby|streaming")

    def test_row_inserted_on_primary_appears_on_standby(self) -> None:
        table = "t_" + uuid.uuid4().hex
        marker = uuid.uuid4().hex
        self.cluster.psql(
            self.cluster.primary,
            f"CREATE TABLE {table} (v text); INSERT INTO {table} VALUES ('{marker}')",
            database="app",
        )
        self.addCleanup(
            self.cluster.psql, self.cluster.primary, f"DROP TABLE {table}", database="app"
        )

        def replicated() -> bool:
            try:
                found = self.cluster.psql(
                    self.cluster.standby, f"SELECT v FROM {table}", database="app"
                )
            except LocalClusterError:  # the CREATE TABLE itself not replayed yet
                return False
            return found == marker

        wait_for(replicated, what="the row on the standby", timeout=15.0)

    def test_nodes_listen_on_distinct_loopback_ports(self) -> None:
        primary, standby = self.cluster.nodes
        self.assertEqual((primary.host, standby.host), ("127.0.0.1", "127.0.0.1"))
        self.assertNotEqual(primary.port, standby.port)

    def test_backends_config_lists_primary_then_standby(self) -> None:
        primary, standby = self.cluster.primary, self.cluster.standby
        self.assertEqual(
            self.cluster.backends_config(),
            [
                {
                    "hostname": "127.0.0.1",
                    "port": primary.port,
                    "weight": 1,
                    "data_directory": primary.data_directory,
                    "application_name": "primary",
                },
                {
                    "hostname": "127.0.0.1",
                    "port": standby.port,
                    "weight": 1,
                    "data_directory": standby.data_directory,
                    "application_name": "standby",
                },
            ],
        )

    def test_app_logs_in_with_scram(self) -> None:
        with psycopg.connect(direct_dsn(self.cluster.primary)) as conn:
            row = conn.execute("SELECT current_user, current_database()").fetchone()
        self.assertEqual(row, ("app", "app"))

    def test_app_password_is_stored_as_scram(self) -> None:
        stored = self.cluster.psql(
            self.cluster.primary, "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'"
        )
        self.assertTrue(stored.startswith("SCRAM-SHA-256$"), stored)

    def test_app_with_wrong_password_is_refused(self) -> None:
        self.assertRaises(
            psycopg.OperationalError,
            psycopg.connect,
            direct_dsn(self.cluster.primary, password="wrong"),
        )

    def test_md5user_logs_in_with_md5(self) -> None:
        primary = self.cluster.primary
        with psycopg.connect(
            host=primary.host,
            port=primary.port,
            user="md5user",
            password="md5pass",
            dbname="app",
        ) as conn:
            row = conn.execute("SELECT current_user").fetchone()
        self.assertEqual(row, ("md5user",))

    def test_md5user_password_is_stored_as_md5(self) -> None:
        stored = self.cluster.psql(
            self.cluster.primary, "SELECT rolpassword FROM pg_authid WHERE rolname = 'md5user'"
        )
        self.assertRegex(stored, r"^md5[0-9a-f]{32}$")

    def test_trustuser_logs_in_without_password(self) -> None:
        primary = self.cluster.primary
        with psycopg.connect(
            host=primary.host, port=primary.port, user="trustuser", dbname="app"
        ) as conn:
            row = conn.execute("SELECT current_user").fetchone()
        self.assertEqual(row, ("trustuser",))

    def test_app_logs_in_on_the_standby(self) -> None:
        with psycopg.connect(direct_dsn(self.cluster.standby)) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        self.assertEqual(row, (True,))

    # Trial skips a method whose C{skip} attribute is set.
    test_app_logs_in_with_scram.skip = SKIP_PSYCOPG  # type: ignore[attr-defined]
    test_app_with_wrong_password_is_refused.skip = SKIP_PSYCOPG  # type: ignore[attr-defined]
    test_md5user_logs_in_with_md5.skip = SKIP_PSYCOPG  # type: ignore[attr-defined]
    test_trustuser_logs_in_without_password.skip = SKIP_PSYCOPG  # type: ignore[attr-defined]
    test_app_logs_in_on_the_standby.skip = SKIP_PSYCOPG  # type: ignore[attr-defined]

    def test_app_database_is_owned_by_app(self) -> None:
        owner = self.cluster.psql(
            self.cluster.primary,
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'",
        )
        self.assertEqual(owner, "app")

    def test_pg_stat_statements_is_usable_in_app_database(self) -> None:
        count = self.cluster.psql(
            self.cluster.primary, "SELECT count(*) >= 0 FROM pg_stat_statements", database="app"
        )
        self.assertEqual(count, "t")

    def test_psql_failure_carries_the_server_message(self) -> None:
        error = self.assertRaises(
            LocalClusterError,
            self.cluster.psql,
            self.cluster.primary,
            "SELECT * FROM no_such_table_here",
        )
        self.assertIn("no_such_table_here", str(error))

    def test_paused_standby_receives_but_does_not_apply_until_resumed(self) -> None:
        cluster = self.cluster
        table = "t_" + uuid.uuid4().hex
        cluster.psql(cluster.primary, f"CREATE TABLE {table} (v int)", database="app")
        self.addCleanup(cluster.psql, cluster.primary, f"DROP TABLE {table}", database="app")
        wait_for(
            lambda: (
                cluster.psql(
                    cluster.standby, f"SELECT to_regclass('{table}') IS NOT NULL", database="app"
                )
                == "t"
            ),
            what="the table on the standby",
            timeout=15.0,
        )

        cluster.pause_replay()
        self.addCleanup(cluster.resume_replay)
        lsn = cluster.psql(
            cluster.primary,
            f"INSERT INTO {table} VALUES (1); SELECT pg_current_wal_insert_lsn()",
            database="app",
        )
        wait_for(
            lambda: (
                cluster.psql(
                    cluster.standby, f"SELECT pg_last_wal_receive_lsn() >= '{lsn}'::pg_lsn"
                )
                == "t"
            ),
            what="the standby to receive the insert",
            timeout=15.0,
        )
        self.assertEqual(
            cluster.psql(cluster.standby, f"SELECT count(*) FROM {table}", database="app"), "0"
        )

        cluster.resume_replay()
        wait_for(
            lambda: (
                cluster.psql(cluster.standby, f"SELECT count(*) FROM {table}", database="app")
                == "1"
            ),
            what="the insert to be applied",
            timeout=15.0,
        )


class OwnClusterTests(TestCase):
    """
    Clusters of their own, for tests that stop or promote nodes.
    """

    def start_cluster(self, **kwargs: object) -> LocalCluster:
        cluster = LocalCluster(**kwargs)  # type: ignore[arg-type]
        cluster.start()
        self.addCleanup(cluster.stop)
        return cluster

    def test_stop_removes_the_base_dir_it_created(self) -> None:
        with LocalCluster(with_standby=False) as cluster:
            base_dir = cluster.base_dir
            assert base_dir is not None
            self.assertTrue(os.path.isdir(base_dir))
        self.assertFalse(os.path.exists(base_dir))

    def test_stop_shuts_the_server_down_and_is_idempotent(self) -> None:
        cluster = self.start_cluster(with_standby=False)
        primary = cluster.primary
        cluster.stop()
        cluster.stop()
        with socket.socket() as sock:
            self.assertNotEqual(sock.connect_ex((primary.host, primary.port)), 0)

    def searchable_dir(self) -> str:
        """
        A fresh directory the C{postgres} OS user can traverse (trial's
        C{mktemp} parents are private to root).
        """
        parent = tempfile.mkdtemp(prefix="twisted_pgpool-test-")
        os.chmod(parent, 0o755)
        self.addCleanup(shutil.rmtree, parent, True)
        return os.path.join(parent, "cluster")

    def test_stop_keeps_a_base_dir_given_by_the_caller(self) -> None:
        base_dir = self.searchable_dir()
        with LocalCluster(base_dir=base_dir, with_standby=False) as cluster:
            log_file = cluster.primary.log_file
        self.assertTrue(os.path.exists(log_file))
        self.assertIn("database system is shut down", open(log_file).read())

    def test_base_dir_the_postgres_user_cannot_reach_is_refused_clearly(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("only root hands the cluster to another OS user")
        base_dir = os.path.abspath(self.mktemp())  # under a 0700 directory
        cluster = LocalCluster(base_dir=base_dir, with_standby=False)
        error = self.assertRaises(LocalClusterError, cluster.start)
        self.assertIn("cannot reach", str(error))

    def test_cluster_without_standby_has_one_node(self) -> None:
        cluster = self.start_cluster(with_standby=False)
        self.assertEqual([node.name for node in cluster.nodes], ["primary"])
        self.assertRaises(LocalClusterError, lambda: cluster.standby)

    def test_stop_node_then_start_node(self) -> None:
        cluster = self.start_cluster(with_standby=False)
        cluster.stop_node(cluster.primary)
        self.assertFalse(cluster.is_running(cluster.primary))
        cluster.stop_node(cluster.primary)  # already down: left alone
        cluster.start_node(cluster.primary)
        self.assertEqual(cluster.psql(cluster.primary, "SELECT 1"), "1")

    def test_promoted_standby_accepts_writes_after_primary_crash(self) -> None:
        cluster = self.start_cluster()
        cluster.stop_node(cluster.primary, mode="immediate")
        cluster.promote(cluster.standby)
        self.assertEqual(cluster.psql(cluster.standby, "SELECT pg_is_in_recovery()"), "f")
        cluster.psql(cluster.standby, "CREATE TABLE after_failover (v int)", database="app")

    def test_independent_nodes_are_two_primaries_with_the_same_data(self) -> None:
        cluster = self.start_cluster(with_standby=False, independent_nodes=True)
        self.assertEqual([node.name for node in cluster.nodes], ["primary", "node1"])
        for node in cluster.nodes:
            self.assertEqual(cluster.psql(node, "SELECT pg_is_in_recovery()"), "f")
            # The roles and the database were copied.
            self.assertEqual(
                cluster.psql(node, "SELECT rolname FROM pg_roles WHERE rolname = 'app'"), "app"
            )
        # Nothing replicates between them.
        cluster.psql(cluster.primary, "CREATE TABLE only_on_primary (v int)", database="app")
        self.assertEqual(
            cluster.psql(
                cluster.nodes[1], "SELECT to_regclass('only_on_primary') IS NULL", database="app"
            ),
            "t",
        )

    def test_node_information_before_start_is_an_error(self) -> None:
        cluster = LocalCluster()
        self.assertRaises(LocalClusterError, lambda: cluster.primary)
        self.assertEqual(cluster.nodes, [])
        cluster.stop()  # never started: nothing to do


class FreePortTests(TestCase):
    def test_free_port_can_be_bound(self) -> None:
        port = free_port()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
        self.assertGreater(port, 0)


class DsnTests(TestCase):
    def test_plain_values_are_bare(self) -> None:
        self.assertEqual(libpq_dsn(host="127.0.0.1", port=5), "host=127.0.0.1 port=5")

    def test_values_with_spaces_and_quotes_are_quoted(self) -> None:
        self.assertEqual(libpq_dsn(password="a b'c\\"), "password='a b\\'c\\\\'")

    def test_empty_value_is_quoted(self) -> None:
        self.assertEqual(libpq_dsn(password=""), "password=''")

    def test_proxy_dsn_points_at_the_proxy_port(self) -> None:
        proxy = ProxyProcess({"port": 6543}, workdir=self.mktemp())
        self.assertEqual(
            proxy.dsn(sslmode="disable"),
            "host=127.0.0.1 port=6543 user=app password=app dbname=app sslmode=disable",
        )


class ProxyProcessTests(TestCase):
    def make_proxy(self, argv: list, **kwargs: object) -> ProxyProcess:
        proxy = ProxyProcess({}, workdir=self.mktemp(), argv=argv, **kwargs)  # type: ignore[arg-type]
        self.addCleanup(proxy.stop)
        return proxy

    def test_missing_listen_address_and_port_are_filled_in(self) -> None:
        proxy = ProxyProcess({"num_init_children": 4}, workdir=self.mktemp())
        proxy.write_files()
        with open(proxy.config_path) as f:
            written = yaml.safe_load(f)
        self.assertEqual(written["listen_addresses"], "127.0.0.1")
        self.assertEqual(written["port"], proxy.port)
        self.assertEqual(written["num_init_children"], 4)

    def test_given_listen_address_and_port_are_kept(self) -> None:
        config = {"listen_addresses": "*", "port": 7777}
        proxy = ProxyProcess(config, workdir=self.mktemp())
        proxy.write_files()
        with open(proxy.config_path) as f:
            written = yaml.safe_load(f)
        self.assertEqual((written["listen_addresses"], written["port"]), ("*", 7777))
        self.assertEqual((proxy.host, proxy.port), ("127.0.0.1", 7777))

    def test_extra_files_are_written_into_workdir(self) -> None:
        proxy = ProxyProcess({}, workdir=self.mktemp(), extra_files={"pool_passwd": "app:md5abc\n"})
        proxy.write_files()
        assert proxy.workdir is not None
        with open(os.path.join(proxy.workdir, "pool_passwd")) as f:
            self.assertEqual(f.read(), "app:md5abc\n")

    def test_default_command_runs_the_pgpool_twistd_plugin(self) -> None:
        proxy = ProxyProcess({}, workdir=self.mktemp())
        command = proxy.command()
        self.assertEqual(command[0], sys.executable)
        self.assertEqual(
            command[3:],
            ["-n", "--pidfile=", f"--logfile={proxy.log_path}", "pgpool", "-c", proxy.config_path],
        )

    def test_start_returns_once_the_port_accepts_connections(self) -> None:
        proxy = self.make_proxy(stand_in(LISTENER, delay=0.3))
        proxy.start()
        socket.create_connection((proxy.host, proxy.port), timeout=5).close()
        self.assertEqual(proxy.log_text(), "listening\n")

    def test_start_reports_an_early_exit_with_its_output(self) -> None:
        proxy = self.make_proxy(stand_in(CRASHER))
        error = self.assertRaises(ProxyProcessError, proxy.start)
        self.assertIn("exited with status 3", str(error))
        self.assertIn("boom: no such plugin", str(error))
        self.assertEqual(proxy.returncode, 3)

    def test_start_gives_up_and_kills_after_the_timeout(self) -> None:
        proxy = self.make_proxy([sys.executable, "-c", SLEEPER], start_timeout=0.5)
        started = time.monotonic()
        error = self.assertRaises(ProxyProcessError, proxy.start)
        self.assertIn("within 0.5s", str(error))
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual(proxy.returncode, -signal.SIGINT)

    def test_stop_sends_sigint(self) -> None:
        proxy = self.make_proxy(stand_in(LISTENER))
        proxy.start()
        self.assertEqual(proxy.stop(), -signal.SIGINT)
        self.assertEqual(proxy.stop(), -signal.SIGINT)  # idempotent

    def test_stop_escalates_to_sigkill(self) -> None:
        proxy = self.make_proxy(stand_in(STUBBORN_LISTENER), stop_timeout=0.3)
        proxy.start()
        self.assertEqual(proxy.stop(), -signal.SIGKILL)

    def test_child_runs_from_the_work_tree_root_with_it_on_pythonpath(self) -> None:
        script = (
            "import os, sys, twisted_pgpool\n"
            "with open(sys.argv[1], 'w') as f:\n"
            "    f.write(os.getcwd() + '\\n' + os.path.dirname(os.path.dirname("
            "os.path.abspath(twisted_pgpool.__file__))))\n"
            "sys.exit(0)\n"
        )
        proxy = self.make_proxy([sys.executable, "-c", script, "{log}"])
        self.assertRaises(ProxyProcessError, proxy.start)
        cwd, package_root = proxy.log_text().splitlines()
        self.assertEqual(cwd, package_root)
        self.assertTrue(os.path.isdir(os.path.join(cwd, "twisted", "plugins")))
