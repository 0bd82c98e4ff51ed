"""
The embedding example in docs/ runs as documented and serves clients.
"""

from __future__ import annotations

import os
import sys

from twisted.application.service import IService
from twisted.trial.unittest import SynchronousTestCase

from tests.support import ROOT, ProxyProcess, shared_cluster
from twisted_pgpool import config_from_dict, make_service

try:
    import psycopg
except ImportError:  # PyPy: no binary build, and the tests run there too
    psycopg = None  # type: ignore[assignment]

EXAMPLE = os.path.join(ROOT, "docs", "examples", "embedded.tac")


class MakeServiceTests(SynchronousTestCase):
    def test_make_service_returns_an_iservice_with_its_core(self) -> None:
        config = config_from_dict({"backends": [{"hostname": "127.0.0.1"}], "pool_passwd": ""})
        service = make_service(config)
        self.assertTrue(IService.providedBy(service))
        self.assertIs(service.core.config, config)
        self.assertEqual([n.node_id for n in service.core.cluster.nodes], [0])


class EmbeddedExampleTests(SynchronousTestCase):
    skip = None if psycopg is not None else "psycopg is not installed"

    def test_example_tac_serves_queries(self) -> None:
        cluster = shared_cluster()
        backends = ",".join(f"{n.host}:{n.port}" for n in cluster.nodes)
        proxy = ProxyProcess(
            {},
            extra_files={"pool_passwd": "app:TEXTapp\n"},
            argv=[
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-ny",
                EXAMPLE,
                "--pidfile=",
                "--logfile={log}",
            ],
        )
        assert proxy.workdir is not None
        for name, value in {
            "PGPOOL_BACKENDS": backends,
            "PGPOOL_PORT": str(proxy.port),
            "PGPOOL_PASSWD": os.path.join(proxy.workdir, "pool_passwd"),
        }.items():
            self.addCleanup(os.environ.pop, name, None)
            os.environ[name] = value
        proxy.start()
        self.addCleanup(proxy.stop)
        with psycopg.connect(proxy.dsn()) as conn:
            row = conn.execute("SELECT current_user, inet_server_port()").fetchone()
        # A read: either server may answer it (load balancing is on).
        self.assertEqual(row[0], "app")
        self.assertIn(row[1], [node.port for node in cluster.nodes])
        self.assertIn("new connection received", proxy.log_text())
