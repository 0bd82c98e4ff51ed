"""
End-to-end tests of the administration interface: the PCP listeners of a
real L{ProxyCore} (built from a configuration, listening on a free TCP port
and a Unix socket in the trial reactor), driven by our own command line and,
when Pgpool-II 4.3's tools are installed (Debian's C{pgpool2} package), by
C{pcp_node_count}, C{pcp_node_info}, C{pcp_detach_node}...

No PostgreSQL server is needed: PCP reports and changes the proxy's cluster
model, and without a failover manager detaching and attaching only change a
node's status.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import sys
import tempfile
from typing import List, Optional, Tuple

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from tests.support import ROOT, free_port
from twisted_pgpool.admin.cli import run_admin_command_async
from twisted_pgpool.admin.operations import ProxyAdminBackend
from twisted_pgpool.admin.pcp import make_pcp_service
from twisted_pgpool.cache.store import TableRef
from twisted_pgpool.cluster.failover import FailoverManager
from twisted_pgpool.cluster.model import STATUS_DOWN, STATUS_WAITING
from twisted_pgpool.config import config_from_dict
from twisted_pgpool.service import ProxyCore

PASSWORD = "pcp secret"


def pgpool_tool(name: str) -> Optional[str]:
    """
    The path of one of Pgpool-II's pcp tools, or None.
    """
    found = shutil.which(name)
    if found is None and os.access(f"/usr/sbin/{name}", os.X_OK):
        found = f"/usr/sbin/{name}"
    return found


PGPOOL_TOOLS_MISSING = (
    None
    if pgpool_tool("pcp_node_count")
    else "Pgpool-II's pcp tools are not installed (apt-get install pgpool2)"
)


class AdminServerMixin:
    """
    A real proxy core with two (unreachable) backends and its PCP
    listeners, started in the test's reactor; with
    C{with_failover_manager}, node operations go through a real
    L{FailoverManager}.
    """

    with_failover_manager = False

    def start_server(self, **settings: object) -> None:
        self.workdir = tempfile.mkdtemp(prefix="tpg-pcp-")
        self.addCleanup(shutil.rmtree, self.workdir, True)  # type: ignore[attr-defined]
        self.pcp_conf = os.path.join(self.workdir, "pcp.conf")
        with open(self.pcp_conf, "w") as f:
            f.write("# administrators\nadmin:" + hashlib.md5(PASSWORD.encode()).hexdigest() + "\n")
        self.pcppass = os.path.join(self.workdir, "pcppass")
        with open(self.pcppass, "w") as f:
            f.write(f"*:*:admin:{PASSWORD}\n")
        os.chmod(self.pcppass, 0o600)
        self.port = free_port()
        config = config_from_dict(
            {
                "backends": [
                    {"hostname": "127.0.0.1", "port": 5432, "weight": 1},
                    {"hostname": "127.0.0.1", "port": 5433, "weight": 1},
                ],
                "pool_passwd": "",
                "pcp_listen_addresses": "localhost",
                "pcp_port": self.port,
                "pcp_socket_dir": self.workdir,
                "pcp_conf_file": self.pcp_conf,
                "logdir": self.workdir,
                **{k: str(v).format(workdir=self.workdir) for k, v in settings.items()},
            },
            source="<test>",
        )
        self.core = ProxyCore.from_config(config, reactor)
        self.failover = None
        if self.with_failover_manager:
            self.failover = FailoverManager(reactor, self.core)
            self.failover.startService()
            self.addCleanup(self.failover.stopService)  # type: ignore[attr-defined]
        self.service = make_pcp_service(
            self.core, ProxyAdminBackend(self.core, failover=self.failover)
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)  # type: ignore[attr-defined]

    def environ(self, pcppass: Optional[str] = None) -> dict:
        return dict(os.environ, PCPPASSFILE=pcppass or self.pcppass, PYTHONPATH=ROOT)

    async def admin(
        self, *argv: str, host: str = "127.0.0.1", pcppass: Optional[str] = None
    ) -> Tuple[int, str, str]:
        """
        Run one of our sub-commands in this reactor; (code, stdout, stderr).
        """
        stdout, stderr = io.StringIO(), io.StringIO()
        code = await run_admin_command_async(
            [argv[0], "-h", host, "-p", str(self.port), "-U", "admin", "-w", *argv[1:]],
            reactor,
            stdout=stdout,
            stderr=stderr,
            environ={"PCPPASSFILE": pcppass or self.pcppass},
        )
        return code, stdout.getvalue(), stderr.getvalue()


class OurCommandLineTests(AdminServerMixin, TestCase):
    """
    C{twisted-pgpool nodes|attach|detach|promote|health} against the
    server, in the same reactor, over real sockets.
    """

    def setUp(self) -> None:
        self.start_server()

    async def test_nodes_over_tcp_lists_every_node(self) -> None:
        code, out, err = await self.admin("nodes")
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("node_id |"))
        self.assertEqual([line.split("|")[0].strip() for line in lines[2:4]], ["0", "1"])
        self.assertIn("5433", lines[3])
        self.assertIn("primary", lines[2])
        self.assertEqual(lines[-1], "(2 rows)")

    async def test_nodes_over_the_unix_socket(self) -> None:
        code, out, _ = await self.admin("nodes", "1", host=self.workdir)
        self.assertEqual(code, 0)
        self.assertIn("standby", out)
        self.assertEqual(out.splitlines()[-1], "(1 row)")

    async def test_detach_then_attach_changes_the_node_status(self) -> None:
        node = self.core.cluster.nodes[1]
        code, out, _ = await self.admin("detach", "1")
        self.assertEqual((code, out), (0, "node 1 detached\n"))
        self.assertEqual(node.status, STATUS_DOWN)
        _, listing, _ = await self.admin("nodes", "-n", "1")
        self.assertIn(" down ", listing)
        code, out, _ = await self.admin("attach", "1")
        self.assertEqual((code, out), (0, "node 1 attached\n"))
        self.assertEqual(node.status, STATUS_WAITING)

    async def test_promote_relabels_the_primary(self) -> None:
        code, _, _ = await self.admin("promote", "1")
        self.assertEqual(code, 0)
        self.assertEqual([n.role for n in self.core.cluster.nodes], ["standby", "primary"])

    async def test_refused_operation_prints_the_servers_error(self) -> None:
        code, _, err = await self.admin("promote", "0")
        self.assertEqual(code, 1)
        self.assertIn("ERROR:  promote node failed", err)
        self.assertIn("already primary", err)

    async def test_health_shows_the_statistics(self) -> None:
        code, out, _ = await self.admin("health", "0")
        self.assertEqual(code, 0)
        self.assertIn("total_count                  : 0", out)
        self.assertEqual(len(out.splitlines()), 20)

    async def test_invalidate_query_cache_with_the_cache_off_is_refused(self) -> None:
        code, out, err = await self.admin("invalidate-query-cache")
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(
            err,
            "twisted-pgpool invalidate-query-cache: ERROR:  "
            "query cache is not enabled\n"
            "DETAIL:  memory_cache_enabled is off\n",
        )

    async def test_wrong_password_is_refused(self) -> None:
        bad = os.path.join(self.workdir, "badpass")
        with open(bad, "w") as f:
            f.write("*:*:admin:wrong\n")
        os.chmod(bad, 0o600)
        code, out, err = await self.admin("nodes", pcppass=bad)
        self.assertEqual((code, out), (1, ""))
        self.assertIn("FATAL:  authentication failed", err)

    async def test_nothing_listening_is_reported(self) -> None:
        stderr = io.StringIO()
        code = await run_admin_command_async(
            ["nodes", "-h", "127.0.0.1", "-p", str(free_port()), "-U", "admin", "-w"],
            reactor,
            stdout=io.StringIO(),
            stderr=stderr,
            environ={"PCPPASSFILE": self.pcppass},
        )
        self.assertEqual(code, 1)
        self.assertIn("could not connect to the PCP server", stderr.getvalue())

    def test_unix_socket_is_owner_only(self) -> None:
        path = os.path.join(self.workdir, f".s.PGSQL.{self.port}")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o700)

    async def test_command_line_entry_point_runs_in_its_own_process(self) -> None:
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            [
                "-m",
                "twisted_pgpool.admin.cli",
                "nodes",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "admin",
                "-w",
            ],
            env=self.environ(),
            path=ROOT,
        )
        self.assertEqual(code, 0, err)
        self.assertIn(b"(2 rows)", out)


class QueryCacheCommandTests(AdminServerMixin, TestCase):
    """
    C{twisted-pgpool invalidate-query-cache} against a proxy core whose
    query cache is on (Pgpool-II 4.3.5 has no C{pcp_invalidate_query_cache}
    to compare with; it came with 4.6).
    """

    KEY = b"k" * 32
    TABLES = [TableRef("db", 16384)]

    def setUp(self) -> None:
        self.start_server(memory_cache_enabled="on")
        cache = self.core.query_cache
        assert cache is not None
        miss = cache.fetch(self.KEY, self.TABLES)
        cache.store_reply(self.KEY, b"reply", self.TABLES, miss.token)
        assert cache.fetch(self.KEY, self.TABLES).reply == b"reply"

    async def test_invalidate_query_cache_empties_the_cache(self) -> None:
        code, out, err = await self.admin("invalidate-query-cache")
        self.assertEqual((code, out, err), (0, "query cache invalidated\n", ""))
        self.assertIsNone(self.core.query_cache.fetch(self.KEY, self.TABLES).reply)

    async def test_main_command_runs_it_in_its_own_process(self) -> None:
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            [
                "-m",
                "twisted_pgpool",
                "invalidate-query-cache",
                "-h",
                self.workdir,
                "-p",
                str(self.port),
                "-U",
                "admin",
                "-w",
            ],
            env=self.environ(),
            path=ROOT,
        )
        self.assertEqual((code, out), (0, b"query cache invalidated\n"), err)
        self.assertIsNone(self.core.query_cache.fetch(self.KEY, self.TABLES).reply)


class PgpoolToolsTests(AdminServerMixin, TestCase):
    """
    Pgpool-II 4.3.5's own pcp tools against our server.
    """

    skip = PGPOOL_TOOLS_MISSING

    def setUp(self) -> None:
        self.start_server()

    async def tool(
        self, name: str, *args: str, host: str = "127.0.0.1", pcppass: Optional[str] = None
    ) -> Tuple[str, str, int]:
        executable = pgpool_tool(name)
        assert executable is not None
        out, err, code = await getProcessOutputAndValue(
            executable,
            ["-h", host, "-p", str(self.port), "-U", "admin", "-w", *args],
            env=self.environ(pcppass),
        )
        return out.decode(), err.decode(), code

    async def test_pcp_node_count(self) -> None:
        out, err, code = await self.tool("pcp_node_count")
        self.assertEqual((out, code), ("2\n", 0), err)

    async def test_pcp_node_info_of_one_node(self) -> None:
        out, err, code = await self.tool("pcp_node_info", "-n", "0")
        self.assertEqual(code, 0, err)
        self.assertEqual(
            out.split()[:8],
            ["127.0.0.1", "5432", "1", "0.500000", "waiting", "unknown", "primary", "unknown"],
        )

    async def test_pcp_node_info_of_all_nodes_over_the_unix_socket(self) -> None:
        out, err, code = await self.tool("pcp_node_info", "-a", host=self.workdir)
        self.assertEqual(code, 0, err)
        self.assertEqual([line.split()[1] for line in out.splitlines()], ["5432", "5433"])

    async def test_pcp_detach_node_then_pcp_attach_node(self) -> None:
        node = self.core.cluster.nodes[1]
        out, err, _ = await self.tool("pcp_detach_node", "-n", "1")
        self.assertEqual(out, "pcp_detach_node -- Command Successful\n", err)
        self.assertEqual(node.status, STATUS_DOWN)
        out, _, _ = await self.tool("pcp_node_info", "-n", "1", "-v")
        self.assertIn("Status Name            : down", out)
        out, err, _ = await self.tool("pcp_attach_node", "-n", "1")
        self.assertEqual(out, "pcp_attach_node -- Command Successful\n", err)
        self.assertEqual(node.status, STATUS_WAITING)

    async def test_pcp_promote_node(self) -> None:
        out, err, _ = await self.tool("pcp_promote_node", "-n", "1")
        self.assertEqual(out, "pcp_promote_node -- Command Successful\n", err)
        self.assertEqual(self.core.cluster.nodes[1].role, "primary")

    async def test_pcp_health_check_stats(self) -> None:
        out, err, code = await self.tool("pcp_health_check_stats", "-n", "1", "-v")
        self.assertEqual(code, 0, err)
        self.assertIn("Host Name                     : 127.0.0.1", out)
        self.assertIn("Port                          : 5433", out)

    async def test_pcp_pool_status_lists_the_configuration(self) -> None:
        out, err, code = await self.tool("pcp_pool_status")
        self.assertEqual(code, 0, err)
        self.assertIn(f"name : pcp_port\nvalue: {self.port}\n", out)

    async def test_wrong_password_is_refused(self) -> None:
        bad = os.path.join(self.workdir, "badpass")
        with open(bad, "w") as f:
            f.write("*:*:admin:wrong\n")
        os.chmod(bad, 0o600)
        out, err, code = await self.tool("pcp_node_count", pcppass=bad)
        self.assertEqual((out, code), ("", 1))
        self.assertIn("FATAL:  authentication failed", err)

    async def test_unsupported_command_is_reported(self) -> None:
        _, err, _ = await self.tool("pcp_watchdog_info")
        self.assertIn("not supported by twisted_pgpool", err)

    async def test_pcp_recovery_node_of_a_live_node_is_refused(self) -> None:
        # (Pgpool-II 4.3.5's tool exits 0 after printing the error.)
        out, err, _ = await self.tool("pcp_recovery_node", "-n", "1")
        self.assertEqual(out, "")
        self.assertIn("ERROR:  node recovery failed, node id: 1 is alive", err)

    async def test_errors_keep_the_tools_format(self) -> None:
        _, err, _ = await self.tool("pcp_node_info", "-n", "9")
        lines: List[str] = err.splitlines()
        self.assertEqual(lines[0], "ERROR:  informing node info failed")
        self.assertTrue(lines[1].startswith("DETAIL:  invalid node ID 9"))


class FailoverManagerTests(AdminServerMixin, TestCase):
    """
    PCP requests carried out by the real failover manager: the configured
    commands run.
    """

    with_failover_manager = True

    def setUp(self) -> None:
        self.start_server(
            failover_command="echo failover %d %m >> {workdir}/commands.log",
            failback_command="echo failback %d >> {workdir}/commands.log",
        )

    def commands_run(self) -> List[str]:
        path = os.path.join(self.workdir, "commands.log")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return f.read().splitlines()

    async def test_detach_runs_failover_command_and_attach_failback_command(self) -> None:
        code, _, err = await self.admin("detach", "1")
        self.assertEqual(code, 0, err)
        self.assertEqual(self.core.cluster.nodes[1].status, STATUS_DOWN)
        code, _, err = await self.admin("attach", "1")
        self.assertEqual(code, 0, err)
        self.assertNotEqual(self.core.cluster.nodes[1].status, STATUS_DOWN)
        self.assertEqual(self.commands_run(), ["failover 1 0", "failback 1"])

    async def test_pgpool_tools_detach_through_the_failover_manager(self) -> None:
        if PGPOOL_TOOLS_MISSING:
            raise SkipTest(PGPOOL_TOOLS_MISSING)
        executable = pgpool_tool("pcp_detach_node")
        assert executable is not None
        out, err, code = await getProcessOutputAndValue(
            executable,
            ["-h", "127.0.0.1", "-p", str(self.port), "-U", "admin", "-w", "-n", "1"],
            env=self.environ(),
        )
        self.assertEqual(out, b"pcp_detach_node -- Command Successful\n", err)
        self.assertEqual(self.commands_run(), ["failover 1 0"])
