"""
End-to-end online recovery: a primary and standby of the test's own
(L{LocalCluster}), the real C{twistd pgpool} process in front of them, the
C{pgpool_recovery} extension installed on the primary, and recovery
scripts written the way Pgpool-II's samples are (C{recovery_1st_stage}:
C{pg_basebackup} from the primary into the node's data directory, then
C{standby.signal} and C{primary_conninfo}; C{pgpool_remote_start}:
C{pg_ctl start}), run locally instead of over ssh.

The standby is stopped, detached and its data directory deleted; the
recovery (C{twisted-pgpool recover 1}, or Pgpool-II 4.3.5's own
C{pcp_recovery_node}) must rebuild it, start it, and attach it, after
which it serves reads again.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from typing import Any, Dict, List

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import PcpAccess, ProxyProcess, postgres_or_skip
from tests.test_e2e_admin import PGPOOL_TOOLS_MISSING, pgpool_tool
from twisted_pgpool.testing.localcluster import LocalCluster, find_pg_bindir

try:
    import psycopg
except ImportError:  # pragma: no cover
    psycopg = None  # type: ignore[assignment]

#: The PCP user of the proxy.
PCP = PcpAccess("recovery admin")

#: Pgpool-II's sample, adapted: no ssh (the node is on this machine), no
#: replication slot or archive; the arguments are recorded for the test.
RECOVERY_1ST_STAGE = """#!/bin/bash
# recovery_1st_stage: rebuild a standby from the primary (run by
# pgpool_recovery() in the primary's data directory, as its OS user).
set -o errexit

PRIMARY_NODE_PGDATA="$1"
DEST_NODE_HOST="$2"
DEST_NODE_PGDATA="$3"
PRIMARY_NODE_PORT="$4"
DEST_NODE_ID="$5"
DEST_NODE_PORT="$6"
PRIMARY_NODE_HOST="$7"
PGHOME_BIN={bindir}

printf '%s\\n' "$@" > "$PRIMARY_NODE_PGDATA/recovery_1st_stage.args"

rm -rf "$DEST_NODE_PGDATA"
"$PGHOME_BIN/pg_basebackup" -h "$PRIMARY_NODE_HOST" -p "$PRIMARY_NODE_PORT" \\
    -U postgres -D "$DEST_NODE_PGDATA" -X stream -c fast --no-sync

# The copy of the primary's own log is not the standby's.
: > "$DEST_NODE_PGDATA/server.log"
cat >> "$DEST_NODE_PGDATA/postgresql.auto.conf" <<EOT
port = $DEST_NODE_PORT
cluster_name = 'standby'
primary_conninfo = 'host=$PRIMARY_NODE_HOST port=$PRIMARY_NODE_PORT user=postgres application_name=standby'
EOT
touch "$DEST_NODE_PGDATA/standby.signal"
echo "recovery_1st_stage: node $DEST_NODE_ID rebuilt in $DEST_NODE_PGDATA"
"""

#: Pgpool-II's pgpool_remote_start sample, without ssh.
PGPOOL_REMOTE_START = """#!/bin/bash
# pgpool_remote_start: start the recovered node (run by pgpool_remote_start()).
DEST_NODE_HOST="$1"
DEST_NODE_PGDATA="$2"
PGHOME_BIN={bindir}

"$PGHOME_BIN/pg_ctl" -l "$DEST_NODE_PGDATA/server.log" -w -t 60 -D "$DEST_NODE_PGDATA" status \\
    >/dev/null 2>&1 && exit 0
exec "$PGHOME_BIN/pg_ctl" -l "$DEST_NODE_PGDATA/server.log" -w -t 60 -D "$DEST_NODE_PGDATA" start
"""


class OnlineRecoveryTests(SynchronousTestCase):
    skip = None if psycopg is not None else "psycopg is not installed"

    def setUp(self) -> None:
        postgres_or_skip()
        cluster = LocalCluster()
        if not cluster.has_extension("pgpool_recovery"):
            raise SkipTest(
                "the pgpool_recovery extension is not installed "
                "(apt-get install postgresql-15-pgpool2)"
            )
        cluster.start()
        self.addCleanup(cluster.stop)
        self.cluster = cluster
        cluster.install_pgpool_recovery()
        bindir = find_pg_bindir()
        self.write_script("recovery_1st_stage", RECOVERY_1ST_STAGE.replace("{bindir}", bindir))
        self.write_script("pgpool_remote_start", PGPOOL_REMOTE_START.replace("{bindir}", bindir))
        self.proxy = self.start_proxy()

    def write_script(self, name: str, text: str) -> None:
        path = os.path.join(self.cluster.primary.data_directory, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP)
        self.cluster.give_to_postgres(path)

    def start_proxy(self) -> ProxyProcess:
        backends = self.cluster.backends_config()
        # Reads go to the standby whenever it is up.
        backends[0]["weight"] = 0
        config: Dict[str, Any] = {
            "backends": backends,
            "pool_passwd": "pool_passwd",
            "sr_check_user": "postgres",
            "recovery_user": "postgres",
            "recovery_1st_stage_command": "recovery_1st_stage",
            "recovery_timeout": 30,
            "log_min_messages": "info",
        }
        pcp_settings, files = PCP.listener()
        config.update(pcp_settings)
        files["pool_passwd"] = "app:TEXTapp\n"
        proxy = ProxyProcess(config, extra_files=files)
        proxy.start()
        self.addCleanup(proxy.stop)
        return proxy

    def twisted_pgpool(self, command: str, *args: str) -> "subprocess.CompletedProcess[str]":
        return PCP.twisted_pgpool(self.proxy, command, *args)

    def query(self, sql: str) -> List[Any]:
        with psycopg.connect(self.proxy.dsn(), connect_timeout=5, autocommit=True) as connection:
            return connection.execute(sql).fetchall()

    def node_status(self) -> List[str]:
        return [row[3] for row in self.query("SHOW POOL_NODES")]

    def lose_the_standby(self) -> None:
        """
        The standby goes, data directory and all; the proxy is told.
        """
        standby = self.cluster.standby
        result = self.twisted_pgpool("detach", "1")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.cluster.stop_node(standby, "fast")
        shutil.rmtree(standby.data_directory)
        self.assertEqual(self.node_status(), ["up", "down"])
        self.assertEqual(self.query("SELECT inet_server_port()"), [(self.cluster.primary.port,)])

    def assert_recovered(self) -> None:
        cluster = self.cluster
        standby = cluster.standby
        self.assertEqual(self.node_status(), ["up", "up"])
        self.assertEqual(cluster.psql(standby, "SELECT pg_is_in_recovery()"), "t")
        # A new session's reads go to the standby again (primary weight 0).
        self.assertEqual(self.query("SELECT inet_server_port()"), [(standby.port,)])
        # It streams from the primary: a write reaches it.
        cluster.psql(cluster.primary, "CREATE TABLE recovered AS SELECT 42 AS x")
        deadline = time.monotonic() + 30
        while cluster.psql(standby, "SELECT to_regclass('recovered') IS NOT NULL") != "t":
            self.assertLess(time.monotonic(), deadline, "the standby does not replay")
            time.sleep(0.1)
        with open(os.path.join(cluster.primary.data_directory, "recovery_1st_stage.args")) as f:
            self.assertEqual(
                f.read().split("\n")[:-1],
                [
                    cluster.primary.data_directory,
                    standby.host,
                    standby.data_directory,
                    str(cluster.primary.port),
                    "1",
                    str(standby.port),
                    cluster.primary.host,
                ],
            )
        log = self.proxy.log_text()
        for line in (
            "starting recovering node 1",
            "node recovery, 1st stage is done",
            "node recovery, node: 1 restarted",
            "recovery done",
        ):
            self.assertIn(line, log)

    def test_twisted_pgpool_recover_rebuilds_the_standby_and_attaches_it(self) -> None:
        self.lose_the_standby()
        started = time.monotonic()
        result = self.twisted_pgpool("recover", "1")
        elapsed = time.monotonic() - started
        self.assertEqual(
            (result.returncode, result.stdout),
            (0, "node 1 recovered and attached\n"),
            result.stderr,
        )
        sys.stderr.write(f"MEASURED online recovery of node 1: {elapsed:.3f} s\n")
        self.assert_recovered()

    def test_pgpool_pcp_recovery_node_rebuilds_the_standby(self) -> None:
        if PGPOOL_TOOLS_MISSING:
            raise SkipTest(PGPOOL_TOOLS_MISSING)
        self.lose_the_standby()
        executable = pgpool_tool("pcp_recovery_node")
        assert executable is not None
        result = subprocess.run(
            [executable, *PCP.args(self.proxy), "-n", "1"],
            env=PCP.environ(self.proxy),
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(
            (result.returncode, result.stdout),
            (0, "pcp_recovery_node -- Command Successful\n"),
            result.stderr,
        )
        self.assert_recovered()

    def test_failing_first_stage_leaves_the_node_down_with_pgpools_error(self) -> None:
        self.lose_the_standby()
        self.write_script("recovery_1st_stage", "#!/bin/bash\nexit 3\n")
        result = self.twisted_pgpool("recover", "1")
        self.assertEqual(result.returncode, 1)
        self.assertIn(
            'executing recovery, execution of command failed at "1st stage"', result.stderr
        )
        self.assertEqual(self.node_status(), ["up", "down"])

    def test_the_primary_cannot_be_recovered(self) -> None:
        result = self.twisted_pgpool("recover", "0")
        self.assertEqual(result.returncode, 1)
        self.assertIn("primary server cannot be recovered by online recovery.", result.stderr)
