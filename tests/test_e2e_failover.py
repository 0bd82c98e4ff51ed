"""
Health check, failover, failback and the status file against real
streaming-replication clusters, with the proxy running in the test's own
reactor (L{PgpoolService} plus L{FailoverManager} and L{HealthMonitor}
added as its children) and psycopg clients in threads.

Every test that stops or promotes a server builds its own
L{LocalCluster}.  The timings the tests measure are printed (and logged)
as C{MEASURED ...} lines.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from typing import Any, Callable, Dict, List, Union

from twisted.internet import reactor, threads
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.trial.unittest import SkipTest, TestCase

from tests.support import free_port, postgres_or_skip, shared_cluster
from twisted_pgpool import logs
from twisted_pgpool.cluster.failover import STATUS_FILE_NAME, FailoverManager
from twisted_pgpool.cluster.health import HealthMonitor, health_check_stats_rows
from twisted_pgpool.cluster.model import ROLE_PRIMARY, STATUS_DOWN, STATUS_UP, STATUS_WAITING
from twisted_pgpool.config import config_from_dict
from twisted_pgpool.service import PgpoolService, ProxyCore
from twisted_pgpool.testing.localcluster import LocalCluster, find_pg_bindir
from twisted_pgpool.testing.waiting import wait_in_reactor

try:
    import psycopg
except ImportError:  # pragma: no cover
    psycopg = None  # type: ignore[assignment]

log = Logger()

#: The settings whose timings the issue asks for.
PERIOD, RETRIES, RETRY_DELAY = 1, 2, 1

#: Detection bound the tests state: every attempt, every delay, plus 2 s.
DETECTION_BOUND = PERIOD * (RETRIES + 1) + RETRIES * RETRY_DELAY + 2

#: A primary failure must be written through within this (detection,
#: failover_command with pg_ctl promote, primary search).
WRITE_BOUND = DETECTION_BOUND + 5


def measured(what: str, seconds: float) -> None:
    line = f"MEASURED {what}: {seconds:.3f} s"
    sys.stderr.write(line + "\n")
    log.info(line)


def requirements_or_skip() -> None:
    if psycopg is None:
        raise SkipTest("psycopg is not installed")
    postgres_or_skip()


def in_thread(f: Callable[..., Any], *args: Any, **kwargs: Any):
    return threads.deferToThread(f, *args, **kwargs)


class InProcessProxy:
    """
    The proxy built and started in the test's reactor.

    Until service.py wires them, the failover manager and the health
    monitor are added here the way it will: the manager's status file is
    read before the primary search runs, and C{core.failover} is what the
    health monitor (and the sessions) report to.  Once service.py builds
    them itself, its own are used.
    """

    def __init__(self, data: Dict[str, Any], discard_status: bool = False) -> None:
        self.data = data
        self.config = config_from_dict(data)
        self.core = ProxyCore.from_config(self.config, reactor)
        try:
            self.service = PgpoolService(  # type: ignore[call-arg]
                self.core, discard_status=discard_status
            )
        except TypeError:
            self.service = PgpoolService(self.core)
        failover = getattr(self.service, "failover", None)
        if failover is None:
            failover = FailoverManager(reactor, self.core, discard_status)
            self.core.failover = failover  # type: ignore[attr-defined]
            failover.load_status()
            failover.setServiceParent(self.service)
        self.failover: FailoverManager = failover
        health = getattr(self.service, "health", None)
        if health is None:
            health = HealthMonitor(reactor, self.core)
            health.setServiceParent(self.service)
        self.health: HealthMonitor = health

    @property
    def cluster(self):
        return self.core.cluster

    def dsn(self, **params: Any) -> str:
        values = {
            "host": "127.0.0.1",
            "port": self.config.port,
            "user": "app",
            "password": "app",
            "dbname": "app",
            "connect_timeout": 15,
        }
        values.update(params)
        return " ".join(f"{k}={v}" for k, v in values.items())

    async def start(self) -> None:
        self.service.startService()
        # The startup primary search (sr_check) has answered.
        await wait_in_reactor(
            reactor,
            lambda: any(n.pg_role == "primary" for n in self.cluster.nodes),
            "the startup primary search",
            15,
            interval=0.01,
        )

    async def stop(self) -> None:
        await self.service.stopService()
        await wait_in_reactor(
            reactor,
            lambda: not self.core.sessions and not list(self.core.pool),
            "the sessions to end",
            10,
            interval=0.01,
        )
        # Let the closed transports go.
        await deferLater(reactor, 0.1, lambda: None)


def proxy_settings(pg: LocalCluster, workdir: str, **settings: Any) -> Dict[str, Any]:
    passwd = os.path.join(workdir, "pool_passwd")
    with open(passwd, "w") as f:
        f.write(f"{pg.app_user}:TEXT{pg.app_password}\n")
    data: Dict[str, Any] = {
        "listen_addresses": "127.0.0.1",
        "port": free_port(),
        # Never the default PCP port: other proxies may run at the same time.
        "pcp_port": 0,
        "backends": pg.backends_config(),
        "pool_passwd": passwd,
        "logdir": workdir,
        "connection_cache": False,
        "connect_timeout": 2000,
        "sr_check_user": "postgres",
        "sr_check_period": 0,
        "health_check_user": "postgres",
        "health_check_period": PERIOD,
        "health_check_max_retries": RETRIES,
        "health_check_retry_delay": RETRY_DELAY,
        "health_check_timeout": 2,
        "search_primary_node_timeout": 20,
        "log_min_messages": "info",
    }
    data.update(settings)
    return data


def read_ports(dsn: str, count: int) -> List[Union[int, Exception]]:
    """
    Open C{count} sessions one after another, each reading
    C{inet_server_port()} once (autocommit: a load-balanced read).
    """
    results: List[Union[int, Exception]] = []
    for _ in range(count):
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                results.append(conn.execute("SELECT inet_server_port()").fetchone()[0])
        except psycopg.Error as e:
            results.append(e)
    return results


def read_until_port(dsn: str, port: int, limit: int) -> List[Union[int, Exception]]:
    results: List[Union[int, Exception]] = []
    while len(results) < limit:
        results.extend(read_ports(dsn, 1))
        if results[-1] == port:
            break
    return results


def write_until_success(dsn: str, timeout: float) -> Dict[str, Any]:
    """
    Try a write through the proxy in new sessions until one succeeds.
    """
    deadline = time.monotonic() + timeout
    errors: List[str] = []
    while True:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                port = conn.execute(
                    "INSERT INTO failover_probe VALUES (2) RETURNING inet_server_port()"
                ).fetchone()[0]
            return {"at": time.monotonic(), "port": port, "errors": errors}
        except psycopg.Error as e:
            errors.append(f"{e.sqlstate}: {str(e).strip()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no write succeeded within {timeout:g} s: {errors[-5:]}")
        time.sleep(0.02)


class FailoverTestCase(TestCase):
    timeout = 90

    def setUp(self) -> None:
        requirements_or_skip()
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        self.addCleanup(logs.predicate.set_threshold, "warning")

    async def own_cluster(self) -> LocalCluster:
        pg = LocalCluster()
        self.addCleanup(pg.stop)
        await in_thread(pg.start)
        return pg

    async def proxy(self, data: Dict[str, Any], discard_status: bool = False) -> InProcessProxy:
        proxy = InProcessProxy(data, discard_status)
        self.addCleanup(proxy.stop)
        await proxy.start()
        return proxy


class StandbyFailureTests(FailoverTestCase):
    async def test_stopped_standby_leaves_balancing_and_comes_back_on_attach(self) -> None:
        pg = await self.own_cluster()
        # The health check alone detaches the standby here (the seed's
        # set-up): sessions that fail to reach it only end themselves.
        proxy = await self.proxy(proxy_settings(pg, self.workdir, failover_on_backend_error=False))
        standby = proxy.cluster.nodes[1]
        self.assertEqual(standby.port, pg.standby.port)
        self.assertIs(proxy.cluster.primary(), proxy.cluster.nodes[0])

        started = time.monotonic()
        await in_thread(pg.stop_node, pg.standby, "immediate")
        stopped = time.monotonic()
        # New sessions start at once, while the health check is still
        # deciding: none of them may see an error.
        sessions = in_thread(read_ports, proxy.dsn(), 100)
        detected = await wait_in_reactor(
            reactor,
            lambda: standby.status == STATUS_DOWN,
            "the standby to be detached",
            DETECTION_BOUND,
            interval=0.01,
        )
        measured(
            "standby stop (pg_ctl stop -m immediate issued) to removal from balancing",
            detected - started,
        )
        measured("standby stop (pg_ctl returned) to removal from balancing", detected - stopped)
        self.assertLess(detected - started, DETECTION_BOUND)
        self.assertIn("health check failed", standby.status_reason)

        ports = await sessions
        errors = [r for r in ports if isinstance(r, Exception)]
        self.assertEqual(errors, [])
        self.assertEqual(set(ports), {pg.primary.port})
        self.assertEqual(len(ports), 100)
        # Detached nodes are not checked any more.
        skipped = proxy.health.stats(1).skip_count
        await deferLater(reactor, PERIOD * 1.5, lambda: None)
        self.assertGreater(proxy.health.stats(1).skip_count, skipped)

        await in_thread(pg.start_node, pg.standby)
        self.assertTrue(await proxy.failover.attach(1, "test: standby restarted"))
        self.assertEqual(standby.status, STATUS_UP)
        ports = await in_thread(read_until_port, proxy.dsn(), pg.standby.port, 60)
        self.assertEqual([r for r in ports if isinstance(r, Exception)], [])
        self.assertEqual(ports[-1], pg.standby.port)
        with open(os.path.join(self.workdir, STATUS_FILE_NAME)) as f:
            self.assertEqual(f.read(), "up\nup\n")
        columns, rows = health_check_stats_rows(proxy.health)
        row = dict(zip(columns, rows[1]))
        self.assertEqual(row["fail_count"], "1")
        self.assertEqual(row["retry_count"], str(RETRIES))


FAILOVER_SCRIPT = '''\
"""Test failover_command: record the arguments, promote the new main node."""
import json, os, pwd, subprocess, sys

args = sys.argv[1:]
with open({record!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
failed, old_primary, new_main_dir = args[0], args[7], args[9]
if failed != old_primary or not new_main_dir:
    sys.exit(0)
kwargs = {{}}
if os.geteuid() == 0:
    entry = pwd.getpwnam("postgres")
    kwargs = dict(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
print("promoting", new_main_dir)
subprocess.run([{pg_ctl!r}, "promote", "-w", "-t", "30", "-D", new_main_dir],
               check=True, cwd="/", **kwargs)
'''

ESCAPES = "%d %h %p %D %m %H %M %P %r %R %N %S"


def failover_command(workdir: str, record: str, sleep: float = 0.0) -> str:
    script = os.path.join(workdir, "failover.py")
    with open(script, "w") as f:
        f.write(
            FAILOVER_SCRIPT.format(record=record, pg_ctl=os.path.join(find_pg_bindir(), "pg_ctl"))
        )
    command = f"{shlex.quote(sys.executable)} {shlex.quote(script)} {ESCAPES}"
    if sleep:
        command = f"sleep {sleep}; " + command
    return command


def recorded(record: str) -> List[List[str]]:
    try:
        with open(record) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


def sleep_in_transaction(dsn: str, ready: List[bool]) -> Dict[str, Any]:
    """
    A session bound to the primary (a write opened its transaction) that
    is busy when the primary dies.
    """
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO failover_probe VALUES (1)")
        ready.append(True)
        try:
            conn.execute("SELECT pg_sleep(60)")
        except psycopg.Error as e:
            return {"sqlstate": e.sqlstate, "message": str(e), "at": time.monotonic()}
    return {"sqlstate": None, "message": "the query finished", "at": time.monotonic()}


def idle_then_query(conn) -> Dict[str, Any]:
    try:
        conn.execute("SELECT 1")
    except psycopg.Error as e:
        return {"sqlstate": e.sqlstate, "message": str(e)}
    finally:
        conn.close()
    return {"sqlstate": None, "message": "the query worked"}


class PrimaryFailureTests(FailoverTestCase):
    async def test_primary_stopped_fails_over_to_the_promoted_standby(self) -> None:
        pg = await self.own_cluster()
        record = os.path.join(self.workdir, "failover.args")
        proxy = await self.proxy(
            proxy_settings(
                pg, self.workdir, failover_command=failover_command(self.workdir, record)
            )
        )
        nodes = proxy.cluster.nodes
        dsn = proxy.dsn()

        def prepare() -> Any:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE TABLE failover_probe (x int)")
            deadline = time.monotonic() + 10
            while (
                pg.psql(pg.standby, "SELECT to_regclass('failover_probe')", database="app")
                != "failover_probe"
            ):
                assert time.monotonic() < deadline, "the table did not replicate"
                time.sleep(0.05)
            idle = psycopg.connect(dsn, autocommit=True)
            idle.execute("INSERT INTO failover_probe VALUES (0)")
            return idle

        idle = await in_thread(prepare)
        ready: List[bool] = []
        busy = in_thread(sleep_in_transaction, dsn, ready)
        await wait_in_reactor(reactor, lambda: bool(ready), "the busy session", 10, interval=0.01)
        await deferLater(reactor, 0.2, lambda: None)

        started = time.monotonic()
        await in_thread(pg.stop_node, pg.primary, "immediate")
        writing = in_thread(write_until_success, dsn, WRITE_BOUND)
        busy_result = await busy
        write = await writing
        first_write = write["at"] - started
        measured(
            "primary stop (pg_ctl stop -m immediate issued) to first "
            "successful write through the proxy",
            first_write,
        )
        measured("primary stop to the busy session's error", busy_result["at"] - started)
        self.assertEqual(write["port"], pg.standby.port)
        self.assertLess(first_write, WRITE_BOUND)

        # Sessions bound to the old primary failed, promptly, with
        # PostgreSQL's codes for it.
        self.assertIn(busy_result["sqlstate"], ("57P01", "08006"), busy_result)
        self.assertLess(busy_result["at"] - started, 5)
        idle_result = await in_thread(idle_then_query, idle)
        self.assertIn(idle_result["sqlstate"], ("57P01", "08006"), idle_result)

        self.assertEqual(nodes[0].status, STATUS_DOWN)
        self.assertIs(proxy.cluster.primary(), nodes[1])
        self.assertEqual(nodes[1].role, ROLE_PRIMARY)
        host = pg.primary.host
        self.assertEqual(
            recorded(record),
            [
                [
                    "0",
                    host,
                    str(pg.primary.port),
                    pg.primary.data_directory,
                    "1",
                    host,
                    "0",
                    "0",
                    str(pg.standby.port),
                    pg.standby.data_directory,
                    host,
                    str(pg.primary.port),
                ]
            ],
        )
        self.assertEqual(proxy.failover.history, [("failover", 0)])
        log.info("write attempts before success: {errors}", errors=write["errors"])


class FlappingTests(FailoverTestCase):
    async def test_one_outage_fails_over_once(self) -> None:
        pg = await self.own_cluster()
        record = os.path.join(self.workdir, "failover.args")
        proxy = await self.proxy(
            proxy_settings(
                pg,
                self.workdir,
                # A slow command: reports keep coming while it runs.
                failover_command=failover_command(self.workdir, record, sleep=1),
            )
        )
        standby = proxy.cluster.nodes[1]
        manager = proxy.failover

        # A blip shorter than the retries: no failover at all.
        await in_thread(pg.stop_node, pg.standby, "immediate")
        await wait_in_reactor(
            reactor,
            lambda: proxy.health.stats(1).retry_count > 0,
            "a failed health check",
            5,
            interval=0.01,
        )
        await in_thread(pg.start_node, pg.standby)
        await deferLater(reactor, RETRY_DELAY * (RETRIES + 1), lambda: None)
        self.assertEqual(standby.status, STATUS_WAITING)
        self.assertEqual(recorded(record), [])

        # A real outage, reported by the health check and (as sessions
        # would) many more times while the failover runs; the node comes
        # and goes meanwhile.
        await in_thread(pg.stop_node, pg.standby, "immediate")
        await wait_in_reactor(
            reactor, lambda: manager.busy, "the failover to start", DETECTION_BOUND, interval=0.01
        )
        reports = [manager.node_failed(1, "backend error (test)") for _ in range(5)]
        await in_thread(pg.start_node, pg.standby)
        await in_thread(pg.stop_node, pg.standby, "immediate")
        await wait_in_reactor(
            reactor, lambda: not manager.busy, "the failover to end", 10, interval=0.01
        )
        self.assertEqual([r.result for r in reports], [False] * 5)
        await in_thread(pg.start_node, pg.standby)
        await deferLater(reactor, PERIOD * 3, lambda: None)
        self.assertEqual(standby.status, STATUS_DOWN)
        self.assertEqual([args[0] for args in recorded(record)], ["1"])
        self.assertEqual(manager.history, [("failover", 1)])

        # After an attach, a new outage is a new failover.
        await manager.attach(1, "test")
        await in_thread(pg.stop_node, pg.standby, "immediate")
        await wait_in_reactor(
            reactor,
            lambda: len(manager.history) == 3 and not manager.busy,
            "the second failover",
            DETECTION_BOUND + 2,
            interval=0.01,
        )
        self.assertEqual(len(recorded(record)), 2)
        self.assertEqual(manager.history, [("failover", 1), ("failback", 1), ("failover", 1)])


class StatusFileTests(FailoverTestCase):
    """
    Detaching changes no server, so these share the process's cluster.
    """

    async def test_detached_node_stays_down_across_a_restart_unless_discarded(self) -> None:
        pg = await in_thread(shared_cluster)
        data = proxy_settings(pg, self.workdir, health_check_period=0)
        proxy = InProcessProxy(data)
        await proxy.start()
        try:
            self.assertTrue(await proxy.failover.detach(1, "test: maintenance"))
        finally:
            await proxy.stop()
        with open(os.path.join(self.workdir, STATUS_FILE_NAME)) as f:
            self.assertEqual(f.read(), "up\ndown\n")

        again = InProcessProxy(dict(data, port=free_port()))
        await again.start()
        try:
            self.assertEqual(again.cluster.nodes[1].status, STATUS_DOWN)
            ports = await in_thread(read_ports, again.dsn(), 10)
            self.assertEqual(set(ports), {pg.primary.port})
        finally:
            await again.stop()

        discarded = InProcessProxy(dict(data, port=free_port()), discard_status=True)
        await discarded.start()
        try:
            self.assertEqual(discarded.cluster.nodes[1].status, STATUS_WAITING)
            ports = await in_thread(read_until_port, discarded.dsn(), pg.standby.port, 60)
            self.assertEqual(ports[-1], pg.standby.port)
        finally:
            await discarded.stop()
        with open(os.path.join(self.workdir, STATUS_FILE_NAME)) as f:
            self.assertEqual(f.read(), "up\nup\n")
