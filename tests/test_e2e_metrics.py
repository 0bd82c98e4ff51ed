"""
The metrics endpoint end to end: the proxy as a child process (C{twistd
pgpool}) in front of the shared PostgreSQL primary and standby, with
C{metrics_listen_addresses} on a free port, read over HTTP the way
Prometheus reads it, after real traffic from psql and psycopg.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Tuple

from twisted.trial.unittest import TestCase

from tests.promparse import Family, parse, value
from tests.support import (
    LazyProxy,
    ProxyProcess,
    ProxyProcessError,
    cluster_or_skip,
    free_port,
    run_psql,
    show_pool_nodes,
)
from twisted_pgpool.testing.localcluster import LocalCluster

try:
    import psycopg
except ImportError:  # pragma: no cover - e.g. PyPy
    psycopg = None  # type: ignore[assignment]

#: Seconds a test waits for the first health checks to be counted.
HEALTH_CHECK_WAIT = 15.0


def metrics_proxy(cluster: LocalCluster) -> ProxyProcess:
    """
    A proxy with the endpoint on, health checks every second and the
    replication check on (the cluster trusts the superuser on loopback).
    """
    return ProxyProcess(
        {
            "backends": cluster.backends_config(),
            "pool_passwd": "pool_passwd",
            "metrics_listen_addresses": "127.0.0.1",
            "metrics_port": free_port(),
            "health_check_period": 1,
            "health_check_user": "postgres",
            "sr_check_user": "postgres",
        },
        extra_files={"pool_passwd": "app:TEXTapp\n"},
    )


PROXY = LazyProxy(metrics_proxy)


def fetch(proxy: ProxyProcess, path: str = "/metrics") -> Tuple[int, str, str]:
    """
    GET a path of the proxy's metrics endpoint: status, content type, body.
    """
    url = f"http://127.0.0.1:{proxy.config['metrics_port']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return (
                response.status,
                response.headers["Content-Type"],
                response.read().decode("utf-8"),
            )
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode("utf-8", "replace")


def scrape(proxy: ProxyProcess) -> Dict[str, Family]:
    code, content_type, body = fetch(proxy)
    assert (code, content_type) == (200, "text/plain; version=0.0.4; charset=utf-8"), (
        code,
        content_type,
    )
    return parse(body)


def per_node(families: Dict[str, Family], name: str) -> Dict[Tuple[str, str], float]:
    """
    A per-node metric's values by (hostname, port).
    """
    found = {}
    for labels, number in families[name].samples.items():
        named = dict(labels)
        found[(named["hostname"], named["port"])] = number
    return found


class MetricsEndpointTests(TestCase):
    """
    One proxy with metrics on, shared by these tests; each reads what it
    needs and compares before and after, so the order does not matter.
    """

    def proxy(self) -> ProxyProcess:
        return PROXY.get()

    def test_every_node_is_up_and_health_checked(self) -> None:
        proxy = self.proxy()
        expected = {(b["hostname"], str(b["port"])) for b in proxy.config["backends"]}
        deadline = time.monotonic() + HEALTH_CHECK_WAIT
        while True:
            families = scrape(proxy)
            checked = per_node(families, "pgpool2_pool_health_check_stats_success_count")
            if (
                set(checked) == expected and min(checked.values()) >= 1
            ) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(set(checked), expected)
        self.assertGreaterEqual(min(checked.values()), 1.0)
        self.assertEqual(
            per_node(families, "pgpool2_pool_nodes_status"), {node: 1.0 for node in expected}
        )
        roles = sorted(
            dict(labels)["role"] for labels in families["pgpool2_pool_nodes_status"].samples
        )
        self.assertEqual(roles, ["primary", "standby"])
        self.assertEqual(value(families, "pgpool2_last_scrape_error"), 0.0)

    def test_selects_are_counted_as_show_pool_nodes_counts_them(self) -> None:
        proxy = self.proxy()
        before = per_node(scrape(proxy), "pgpool2_pool_nodes_select_cnt")
        result = run_psql(proxy, "-c", "SELECT 1", "-c", "SELECT 2", "-c", "SELECT 3")
        self.assertEqual((result.returncode, result.stdout), (0, "1\n2\n3\n"), result.stderr)
        families = scrape(proxy)
        after = per_node(families, "pgpool2_pool_nodes_select_cnt")
        self.assertEqual(families["pgpool2_pool_nodes_select_cnt"].type, "counter")
        self.assertEqual(sum(after.values()) - sum(before.values()), 3.0)
        shown = {(r["hostname"], r["port"]): float(r["select_cnt"]) for r in show_pool_nodes(proxy)}
        self.assertEqual(shown, after)

    def test_an_open_session_is_counted(self) -> None:
        if psycopg is None:
            self.skipTest("psycopg is not installed")
        proxy = self.proxy()
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            self.assertEqual(conn.execute("SELECT 42").fetchone(), (42,))
            families = scrape(proxy)
        in_use = sum(
            n
            for labels, n in families["twisted_pgpool_pool_connections"].samples.items()
            if dict(labels)["state"] == "in_use"
        )
        self.assertGreaterEqual(
            value(families, "pgpool2_frontend_used", username="app", database="app"), 1.0
        )
        self.assertGreaterEqual(value(families, "twisted_pgpool_client_sessions"), 1.0)
        self.assertGreaterEqual(in_use, 1.0)
        self.assertGreaterEqual(value(families, "pgpool2_backend_used"), 1.0)
        self.assertEqual(value(families, "pgpool2_frontend_total"), 32.0)

    def test_other_paths_are_not_found(self) -> None:
        self.assertEqual(fetch(self.proxy(), "/nothing-here")[0], 404)

    def test_the_listener_is_logged(self) -> None:
        proxy = self.proxy()
        self.assertIn(
            f"listening for clients on metrics tcp:{proxy.config['metrics_port']}"
            ":interface=127.0.0.1",
            proxy.log_text(),
        )


class MetricsListenerTests(TestCase):
    def test_a_taken_port_stops_the_start(self) -> None:
        cluster: Any = cluster_or_skip()
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            proxy = ProxyProcess(
                {
                    "backends": cluster.backends_config(),
                    "metrics_listen_addresses": "127.0.0.1",
                    "metrics_port": port,
                }
            )
            self.addCleanup(proxy.stop)
            with self.assertRaises(ProxyProcessError) as raised:
                proxy.start()
        self.assertIn(
            f"could not listen on metrics tcp:{port}:interface=127.0.0.1", str(raised.exception)
        )

    def test_off_by_default(self) -> None:
        cluster: Any = cluster_or_skip()
        proxy = ProxyProcess(
            {"backends": cluster.backends_config(), "pool_passwd": "pool_passwd"},
            extra_files={"pool_passwd": "app:TEXTapp\n"},
        )
        proxy.start()
        self.addCleanup(proxy.stop)
        result = run_psql(proxy, "-c", "SELECT 1")
        self.assertEqual((result.returncode, result.stdout), (0, "1\n"), result.stderr)
        log_text = proxy.log_text()
        self.assertIn("listening for clients on tcp:", log_text)
        self.assertNotIn("metrics", log_text)
