"""
End-to-end: C{twistd -n pgpool -c pgpool.conf} starts from Debian's own
sample file (C{tests/data/debian/pgpool.conf}, tabs and watchdog keys
included), with only the lines a user adds to point it at the servers, and
serves a real client; the warnings are in the log, all at once.
"""

from __future__ import annotations

import os
import sys

from twisted.trial.unittest import TestCase

from tests.support import ProxyProcess, cluster_or_skip, free_port

try:
    import psycopg
except ImportError:  # pragma: no cover - e.g. PyPy, where psycopg has no build
    psycopg = None  # type: ignore[assignment]

SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "debian",
                      "pgpool.conf")


class DebianSampleTests(TestCase):
    skip = "psycopg is not installed" if psycopg is None else None

    def test_twistd_runs_debians_pgpool_conf(self) -> None:
        cluster = cluster_or_skip()
        with open(SAMPLE, encoding="utf-8") as f:
            sample = f.read()
        port = free_port()
        added = [
            "listen_addresses = '127.0.0.1'",
            f"port = {port}",
            "pcp_port = 0",
            "logdir = '.'",
            "pool_passwd = 'pool_passwd'",
        ]
        for number, backend in enumerate(cluster.backends_config()):
            added += [f"backend_hostname{number} = '{backend['hostname']}'",
                      f"backend_port{number} = {backend['port']}",
                      f"backend_application_name{number} = '{backend['application_name']}'"]
        proxy = ProxyProcess(
            {"port": port},
            extra_files={"pgpool.conf": sample + "\n".join(added) + "\n",
                         "pool_passwd": "app:TEXTapp\n"},
            argv=[sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                  "-n", "--pidfile=", "--logfile={log}", "pgpool",
                  "-c", "{workdir}/pgpool.conf"],
        )
        proxy.start()
        self.addCleanup(proxy.stop)
        with psycopg.connect(proxy.dsn(), connect_timeout=10) as conn:
            self.assertEqual(conn.execute("select 41 + 1").fetchone(), (42,))
        self.assertIn("pgpool.conf:652: hostname0: not supported: there is no watchdog",
                      proxy.log_text())
