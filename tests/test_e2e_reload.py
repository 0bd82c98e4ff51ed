"""
End-to-end tests of configuration reload: the real C{twistd pgpool}
process in front of the shared PostgreSQL primary and standby; each test
rewrites its C{conf.yaml} (or C{pool_hba.conf}), asks for a reload the way
an operator does (C{kill -HUP}, Pgpool-II's C{pcp_reload_config},
C{twisted-pgpool reload}), then watches what new connections see.

A reload by signal is asynchronous, so those tests poll, with a bound.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any, Dict, List, Optional

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    PSQL,
    PcpAccess,
    ProxyProcess,
    cluster_or_skip,
    free_port,
    run_psql,
    show_pool_nodes,
)
from tests.test_e2e_admin import PGPOOL_TOOLS_MISSING, pgpool_tool
from twisted_pgpool.testing.waiting import wait_for

#: Seconds a reload may take to show; it takes milliseconds.
DEADLINE = 15.0
#: The PCP user of the proxies started with a PCP listener.
PCP = PcpAccess("pcp secret")


def lb_weights(proxy: ProxyProcess) -> List[str]:
    return [row["lb_weight"] for row in show_pool_nodes(proxy)]


class ReloadMixin:
    """
    A proxy of its own per test (a test changes its configuration), with
    user C{app} in pool_passwd, a pool_hba.conf and, for the PCP tests, a
    PCP listener with user C{admin}.
    """

    skip = None if PSQL else "psql is not installed"

    def start_proxy(self, pcp: bool = False, **settings: Any) -> ProxyProcess:
        cluster = cluster_or_skip()
        config: Dict[str, Any] = {
            "backends": cluster.backends_config(),
            "pool_passwd": "pool_passwd",
            "enable_pool_hba": True,
            "pool_hba_file": "pool_hba.conf",
        }
        files = {
            "pool_passwd": "app:TEXTapp\n",
            "pool_hba.conf": "host all all 127.0.0.1/32 scram-sha-256\n",
        }
        if pcp:
            pcp_settings, pcp_files = PCP.listener()
            config.update(pcp_settings)
            files.update(pcp_files)
        config.update(settings)
        proxy = ProxyProcess(config, extra_files=files)
        proxy.start()
        self.addCleanup(proxy.stop)  # type: ignore[attr-defined]
        self.proxy = proxy
        return proxy

    def rewrite(self, **settings: Any) -> None:
        """
        Change settings in C{conf.yaml} (the other files are written again
        as they are).
        """
        self.proxy.config.update(settings)
        self.proxy.write_files()

    def write_file(self, name: str, text: str) -> None:
        assert self.proxy.workdir is not None
        with open(os.path.join(self.proxy.workdir, name), "w", encoding="utf-8") as f:
            f.write(text)

    def psql(self, *args: str) -> "subprocess.CompletedProcess[str]":
        return run_psql(self.proxy, *args)


class SighupTests(ReloadMixin, SynchronousTestCase):
    """
    C{kill -HUP} of the proxy process.
    """

    def test_new_backend_weights_show_in_pool_nodes(self) -> None:
        proxy = self.start_proxy()
        self.assertEqual(lb_weights(proxy), ["0.500000", "0.500000"])
        backends = [dict(b) for b in proxy.config["backends"]]
        backends[1]["weight"] = 3
        self.rewrite(backends=backends)
        proxy.send_signal(signal.SIGHUP)
        wait_for(
            lambda: lb_weights(proxy) == ["0.250000", "0.750000"],
            DEADLINE,
            "the new weights in SHOW POOL_NODES",
            interval=0.05,
        )
        log = proxy.log_text()
        self.assertIn("received SIGHUP, reloading configuration files", log)
        self.assertIn("reload config files.", log)
        self.assertIn('parameter "backends[1].weight" changed to "3"', log)

    def test_a_new_pool_hba_rule_applies_to_the_next_connection(self) -> None:
        self.start_proxy()
        result = self.psql("-c", "SELECT 1")
        self.assertEqual((result.returncode, result.stdout), (0, "1\n"), result.stderr)
        self.write_file("pool_hba.conf", "host all all 127.0.0.1/32 reject\n")
        self.proxy.send_signal(signal.SIGHUP)

        def refused() -> Optional["subprocess.CompletedProcess[str]"]:
            result = self.psql("-c", "SELECT 1")
            return result if result.returncode != 0 else None

        refused_result = wait_for(refused, DEADLINE, "the reject rule to apply", interval=0.05)
        self.assertIn(
            'pool_hba.conf rejects connection for host "127.0.0.1", user "app", database "app"',
            refused_result.stderr,
        )

    def test_a_start_only_change_is_warned_about_and_the_proxy_keeps_its_port(self) -> None:
        proxy = self.start_proxy()
        port = proxy.port
        self.rewrite(num_init_children=7, log_statement=True, port=free_port())
        proxy.send_signal(signal.SIGHUP)
        wait_for(
            lambda: (
                'parameter "num_init_children" cannot be changed without '
                "restarting the server" in proxy.log_text()
            ),
            DEADLINE,
            "the restart warning",
            interval=0.05,
        )
        self.assertIn(
            'parameter "port" cannot be changed without restarting the server', proxy.log_text()
        )
        proxy.config["port"] = port  # where it still listens
        result = self.psql("-c", "SELECT 'still here'")
        self.assertEqual((result.returncode, result.stdout), (0, "still here\n"), result.stderr)
        wait_for(
            lambda: "statement: SELECT 'still here'" in proxy.log_text(),
            DEADLINE,
            "log_statement to apply to a new session",
            interval=0.05,
        )

    def test_a_bad_file_is_logged_and_the_proxy_serves_on_with_the_old_one(self) -> None:
        proxy = self.start_proxy()
        backends = [dict(b) for b in proxy.config["backends"]]
        backends[1]["weight"] = 3
        self.rewrite(backends=backends, health_check_period="often")
        proxy.send_signal(signal.SIGHUP)
        wait_for(
            lambda: "contains errors; no changes were applied" in proxy.log_text(),
            DEADLINE,
            "the error in the log",
            interval=0.05,
        )
        log = proxy.log_text()
        self.assertIn(f"{proxy.config_path}:", log)
        self.assertIn("health_check_period: expected a duration", log)
        self.assertEqual(lb_weights(proxy), ["0.500000", "0.500000"])
        result = self.psql("-c", "SELECT 2")
        self.assertEqual((result.returncode, result.stdout), (0, "2\n"), result.stderr)


class PcpReloadTests(ReloadMixin, SynchronousTestCase):
    """
    Pgpool-II's own C{pcp_reload_config}, and C{twisted-pgpool reload}.
    """

    def pcp_reload_config(self) -> "subprocess.CompletedProcess[str]":
        if PGPOOL_TOOLS_MISSING:
            self.skipTest(PGPOOL_TOOLS_MISSING)  # type: ignore[attr-defined]
        executable = pgpool_tool("pcp_reload_config")
        assert executable is not None
        return subprocess.run(
            [executable, *PCP.args(self.proxy)],
            env=PCP.environ(self.proxy),
            capture_output=True,
            text=True,
            timeout=30,
        )

    def test_pcp_reload_config_applies_new_weights(self) -> None:
        proxy = self.start_proxy(pcp=True)
        backends = [dict(b) for b in proxy.config["backends"]]
        backends[0]["weight"] = 0
        self.rewrite(backends=backends)
        result = self.pcp_reload_config()
        self.assertEqual(
            (result.returncode, result.stdout),
            (0, "pcp_reload_config -- Command Successful\n"),
            result.stderr,
        )
        # The reply comes after the reload: no waiting.
        self.assertEqual(lb_weights(proxy), ["0.000000", "1.000000"])
        self.assertIn("PCP user admin reloads the configuration", proxy.log_text())

    def test_pcp_reload_config_with_a_bad_file_is_an_error(self) -> None:
        proxy = self.start_proxy(pcp=True)
        self.rewrite(load_balance_mod=False)
        result = self.pcp_reload_config()
        # Pgpool-II 4.3.5's tool prints the error but exits 0 all the same.
        self.assertEqual(result.stdout, "")
        self.assertIn("ERROR:  process reload config request failed", result.stderr)
        self.assertIn(f"{proxy.config_path}:", result.stderr)
        self.assertIn(
            "load_balance_mod: unknown key; did you mean 'load_balance_mode'?", result.stderr
        )
        result = self.psql("-c", "SELECT 3")
        self.assertEqual((result.returncode, result.stdout), (0, "3\n"), result.stderr)

    def test_twisted_pgpool_reload_adds_a_backend_down_until_attached(self) -> None:
        proxy = self.start_proxy(pcp=True)
        backends = [dict(b) for b in proxy.config["backends"]]
        backends.append(dict(backends[1]))  # the standby, a second time
        self.rewrite(backends=backends)
        result = PCP.twisted_pgpool(proxy, "reload", timeout=30)
        self.assertEqual(
            (result.returncode, result.stdout), (0, "configuration reloaded\n"), result.stderr
        )
        rows = show_pool_nodes(proxy)
        self.assertEqual([(r["node_id"], r["status"]) for r in rows][2], ("2", "down"))
        result = PCP.twisted_pgpool(proxy, "attach", "2", timeout=30)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(show_pool_nodes(proxy)[2]["status"], ("up", "waiting"))
