"""
Reloading the configuration (L{twisted_pgpool.admin.reload}) without a network:
the plan (which changes apply and which need a restart), and a reload of a
real L{ProxyCore} built from a file, with its health check, replication
check and failover manager on a L{Clock} and fake check queries.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Dict, List, Optional

import attrs
import yaml
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool import logs
from twisted_pgpool.admin import reload as reload_module
from twisted_pgpool.admin.operations import ProxyAdminBackend
from twisted_pgpool.admin.pcp import PcpFactory
from twisted_pgpool.admin.reload import (
    ADDED_NODE_REASON,
    ConfigReloader,
    ReloadError,
    ReloadOnSighup,
    plan_reload,
)
from twisted_pgpool.backend.protocol import BackendCredentials
from twisted_pgpool.cluster.failover import STATUS_FILE_NAME, FailoverManager
from twisted_pgpool.cluster.health import HealthMonitor
from twisted_pgpool.cluster.replication import ReplicationMonitor
from twisted_pgpool.config import (
    RELOAD,
    START,
    config_from_dict,
    load_config,
    setting_contexts,
    unclassified_settings,
)
from twisted_pgpool.service import ProxyCore
from twisted_pgpool.testing.doubles import FakeCheckQuery, FakeFailover
from twisted_pgpool.wire import errors


def backends(count: int = 2, **settings: Any) -> List[Dict[str, Any]]:
    return [dict({"hostname": "127.0.0.1", "port": 5432 + i}, **settings) for i in range(count)]


def config(**settings: Any):
    data: Dict[str, Any] = {"backends": backends(), "pool_passwd": ""}
    data.update(settings)
    return config_from_dict(data)


# -- contexts ---------------------------------------------------------------------------


class ContextTests(SynchronousTestCase):
    def test_every_setting_has_a_context(self) -> None:
        self.assertEqual(unclassified_settings(), set())

    def test_listeners_pools_and_tls_need_a_restart(self) -> None:
        contexts = setting_contexts()
        for key in (
            "listen_addresses",
            "port",
            "num_init_children",
            "max_pool",
            "connection_cache",
            "ssl",
            "ssl_cert",
            "ssl_key",
            "backend_clustering_mode",
            "master_slave_mode",
            "memory_cache_enabled",
            "logdir",
            "pcp_port",
            "backends[].hostname",
            "backends[].port",
        ):
            self.assertEqual((key, contexts[key]), (key, START))

    def test_balancing_checks_and_logging_are_reloaded(self) -> None:
        contexts = setting_contexts()
        for key in (
            "backends",
            "backends[].weight",
            "health_check_period",
            "sr_check_period",
            "log_min_messages",
            "log_statement",
            "enable_pool_hba",
            "reset_query_list",
            "busy_poll_time",
            "failover_command",
            "delay_threshold",
        ):
            self.assertEqual((key, contexts[key]), (key, RELOAD))


# -- the plan -----------------------------------------------------------------------------


class PlanTests(SynchronousTestCase):
    def test_identical_configurations_change_nothing(self) -> None:
        plan = plan_reload(config(), config())
        self.assertEqual((plan.applied, plan.kept, plan.added_nodes), ((), (), ()))
        self.assertEqual(plan.config, config())

    def test_a_reload_setting_takes_the_new_value(self) -> None:
        plan = plan_reload(config(), config(health_check_period=30))
        self.assertEqual(plan.config.health_check_period, 30.0)
        self.assertEqual(
            [(c.key, c.old, c.new) for c in plan.applied], [("health_check_period", 0.0, 30.0)]
        )
        self.assertEqual(plan.kept, ())

    def test_a_start_setting_keeps_the_running_value_and_is_reported(self) -> None:
        plan = plan_reload(
            config(num_init_children=32), config(num_init_children=64, log_statement=True)
        )
        self.assertEqual(plan.config.num_init_children, 32)
        self.assertTrue(plan.config.log_statement)
        self.assertEqual(
            [(c.key, c.old, c.new) for c in plan.kept], [("num_init_children", 32, 64)]
        )

    def test_a_backend_weight_is_reloaded(self) -> None:
        new = config(
            backends=[
                {"hostname": "127.0.0.1", "port": 5432},
                {"hostname": "127.0.0.1", "port": 5433, "weight": 3},
            ]
        )
        plan = plan_reload(config(), new)
        self.assertEqual([b.weight for b in plan.config.backends], [1.0, 3.0])
        self.assertEqual([c.key for c in plan.applied], ["backends[1].weight"])

    def test_a_backend_host_and_port_need_a_restart(self) -> None:
        new = config(
            backends=[
                {"hostname": "127.0.0.1", "port": 5432},
                {"hostname": "db9", "port": 6000, "weight": 2},
            ]
        )
        plan = plan_reload(config(), new)
        self.assertEqual(
            (
                plan.config.backends[1].hostname,
                plan.config.backends[1].port,
                plan.config.backends[1].weight,
            ),
            ("127.0.0.1", 5433, 2.0),
        )
        self.assertEqual([c.key for c in plan.kept], ["backends[1].hostname", "backends[1].port"])

    def test_a_backend_listed_after_the_others_is_added(self) -> None:
        plan = plan_reload(config(), config(backends=backends(3)))
        self.assertEqual(plan.added_nodes, (2,))
        self.assertEqual(plan.config.backends[2].port, 5434)
        self.assertEqual([(c.key, c.old) for c in plan.applied], [("backends[2]", None)])

    def test_a_backend_left_out_stays_until_a_restart(self) -> None:
        plan = plan_reload(config(), config(backends=backends(1)))
        self.assertEqual(len(plan.config.backends), 2)
        self.assertEqual([(c.key, c.new) for c in plan.kept], [("backends[1]", None)])

    def test_the_source_follows_the_new_file(self) -> None:
        new = attrs.evolve(config(), source="/etc/pgpool/conf.yaml")
        self.assertEqual(plan_reload(config(), new).config.source, "/etc/pgpool/conf.yaml")


# -- reloading a proxy core ---------------------------------------------------------------


class ReloaderTests(SynchronousTestCase):
    """
    A proxy core built from C{conf.yaml}; each test rewrites the file and
    reloads.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "conf.yaml")
        self.events: List[Dict[str, Any]] = []
        self.patch(reload_module, "log", Logger(observer=self.events.append))
        threshold = logs.predicate.threshold
        self.addCleanup(setattr, logs.predicate, "threshold", threshold)
        self.busy_poll: List[float] = []

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def write_config(self, **settings: Any) -> None:
        data: Dict[str, Any] = {
            "backends": backends(),
            "pool_passwd": "",
            "logdir": self.directory,
            "pcp_port": 0,
        }
        data.update(settings)
        self.write("conf.yaml", yaml.safe_dump(data))

    def start(self, **settings: Any) -> ConfigReloader:
        self.write_config(**settings)
        self.core = ProxyCore.from_config(load_config(self.path), self.clock)
        self.reloader = ConfigReloader(self.core, set_busy_poll=self.busy_poll.append)
        return self.reloader

    def reload(self, **settings: Any):
        self.write_config(**settings)
        return self.reloader.reload()

    def messages(self, level: Optional[str] = None) -> List[str]:
        from twisted.logger import formatEvent

        return [
            formatEvent(e) for e in self.events if level is None or e["log_level"].name == level
        ]

    # -- what is logged, and what a bad file does ---------------------------------------

    def test_a_reload_is_logged_as_pgpool_logs_it(self) -> None:
        self.start()
        self.reload(log_connections=True)
        self.assertEqual(
            self.messages("info"),
            ["reload config files.", 'parameter "log_connections" changed to "on"'],
        )

    def test_a_start_only_change_is_warned_about_and_kept(self) -> None:
        self.start(port=9999)
        plan = self.reload(port=6432, log_statement=True)
        self.assertEqual(self.core.config.port, 9999)
        self.assertTrue(self.core.config.log_statement)
        self.assertEqual([c.key for c in plan.kept], ["port"])
        self.assertEqual(
            self.messages("warn"),
            ['parameter "port" cannot be changed without restarting the server'],
        )

    def test_a_password_is_never_logged(self) -> None:
        self.start()
        self.reload(sr_check_password="s3cret")
        self.assertEqual(self.core.config.sr_check_password, "s3cret")
        self.assertNotIn("s3cret", " ".join(self.messages()))

    def test_a_changed_password_is_logged_as_the_mask(self) -> None:
        self.start()
        self.reload(health_check_password="s3cr3t-XYZ")
        self.assertEqual(
            self.messages("info"),
            ["reload config files.", 'parameter "health_check_password" changed to "*****"'],
        )

    def test_the_plan_of_a_reload_does_not_show_old_or_new_passwords(self) -> None:
        """
        A reload run at the manhole's prompt prints the plan it returns.
        """
        self.start(sr_check_password="old-s3cr3t")
        plan = self.reload(sr_check_password="new-s3cr3t")
        shown = repr(plan)
        self.assertEqual(
            (
                "old-s3cr3t" in shown,
                "new-s3cr3t" in shown,
                "Change(key='sr_check_password', old='*****', new='*****')" in shown,
            ),
            (False, False, True),
        )

    def test_a_bad_file_keeps_the_configuration_in_force(self) -> None:
        self.start()
        before = self.core.config
        self.write(
            "conf.yaml",
            yaml.safe_dump(
                {
                    "backends": backends(),
                    "pool_passwd": "",
                    "logdir": self.directory,
                    "health_check_period": 5,
                    "num_init_chlidren": 3,
                }
            ),
        )
        error = self.assertRaises(ReloadError, self.reloader.reload)
        self.assertIs(self.core.config, before)
        self.assertIn(
            "num_init_chlidren: unknown key; did you mean 'num_init_children'?", str(error)
        )
        [line] = self.messages("error")
        self.assertTrue(
            line.startswith(
                f'configuration file "{self.path}" contains errors; no changes were '
                f"applied: {self.path}:"
            ),
            line,
        )

    def test_a_bad_pool_passwd_keeps_every_setting_of_the_file_too(self) -> None:
        passwd = self.write("pool_passwd", "app:TEXTapp\n")
        self.start(pool_passwd=passwd)
        self.write("pool_passwd", "app:TEXTapp\nno colon here\n")
        error = self.assertRaises(
            ReloadError, self.reload, pool_passwd=passwd, health_check_period=5
        )
        self.assertIn(f"{passwd}:2: expected user:password", str(error))
        self.assertEqual(self.core.config.health_check_period, 0.0)
        self.assertIsNotNone(self.core.authenticator.passwd.lookup("app"))

    def test_a_configuration_not_read_from_a_file_cannot_be_reloaded(self) -> None:
        core = ProxyCore.from_config(config(), self.clock)
        error = self.assertRaises(ReloadError, ConfigReloader(core).reload)
        self.assertIn("not read from a file (<dict>)", str(error))

    # -- what reaches which part ---------------------------------------------------------

    def test_new_weights_reach_the_nodes_and_show_pool_nodes(self) -> None:
        self.start()
        self.reload(
            backends=[
                {"hostname": "127.0.0.1", "port": 5432, "weight": 1},
                {"hostname": "127.0.0.1", "port": 5433, "weight": 3},
            ]
        )
        self.assertEqual([n.weight for n in self.core.cluster.nodes], [1.0, 3.0])
        self.assertEqual([n.lb_weight for n in ProxyAdminBackend(self.core).nodes()], [0.25, 0.75])

    def test_an_added_backend_is_down_until_attached_and_saved(self) -> None:
        self.start()
        failover = FailoverManager(self.clock, self.core)
        self.core.failover = failover
        failover.startService()
        self.addCleanup(failover.stopService)
        self.reload(backends=backends(3))
        node = self.core.cluster.nodes[2]
        self.assertEqual(
            (node.node_id, node.port, node.status, node.status_reason),
            (2, 5434, "down", ADDED_NODE_REASON),
        )
        with open(os.path.join(self.directory, STATUS_FILE_NAME)) as f:
            self.assertEqual(f.read().split(), ["up", "up", "down"])
        self.successResultOf(failover.attach(2, "attached by pcp_attach_node"))
        self.assertTrue(node.is_usable)

    def test_the_first_backends_of_a_proxy_started_without_any(self) -> None:
        # Debian's sample as shipped: no backend.  A reload adds two; they
        # are down until attached (as in Pgpool-II), and node 0 is the
        # primary until a search says otherwise, as at a start.
        self.start(backends=[])
        failover = FailoverManager(self.clock, self.core)
        self.core.failover = failover
        failover.startService()
        self.addCleanup(failover.stopService)
        self.assertFalse(os.path.exists(os.path.join(self.directory, STATUS_FILE_NAME)))
        plan = self.reload(backends=backends(2))
        self.assertEqual(plan.added_nodes, (0, 1))
        self.assertEqual(
            [(n.status, n.role) for n in self.core.cluster.nodes],
            [("down", "primary"), ("down", "standby")],
        )
        with open(os.path.join(self.directory, STATUS_FILE_NAME)) as f:
            self.assertEqual(f.read().split(), ["down", "down"])

    def test_a_backend_added_to_others_stays_a_standby(self) -> None:
        self.start()
        self.reload(backends=backends(3))
        self.assertEqual(
            [n.role for n in self.core.cluster.nodes], ["primary", "standby", "standby"]
        )

    def test_pool_hba_conf_is_read_again(self) -> None:
        hba = self.write("pool_hba.conf", "host all all 127.0.0.1/32 trust\n")
        self.start(enable_pool_hba=True, pool_hba_file=hba)
        authenticator = self.core.authenticator
        self.assertEqual(authenticator.choose_method("app", "app", "127.0.0.1", False), "trust")
        self.write("pool_hba.conf", "host all all 127.0.0.1/32 reject\n")
        self.reload(enable_pool_hba=True, pool_hba_file=hba)
        error = self.assertRaises(
            errors.PgError, authenticator.choose_method, "app", "app", "127.0.0.1", False
        )
        self.assertIn("rejects connection", error.message)

    def test_pool_passwd_is_read_again(self) -> None:
        passwd = self.write("pool_passwd", "app:TEXTapp\n")
        self.start(pool_passwd=passwd)
        self.write("pool_passwd", "app:TEXTapp\nbob:TEXTbob\n")
        self.reload(pool_passwd=passwd)
        self.assertIsNotNone(self.core.authenticator.passwd.lookup("bob"))

    def test_pool_limits_and_timeouts_follow(self) -> None:
        self.start()
        self.reload(reset_query_list="DISCARD ALL", client_queue_timeout="5s", connect_timeout="2s")
        self.assertEqual(self.core.pool.reset_query_list, ["DISCARD ALL"])
        self.assertEqual(self.core.limiter.queue_timeout, 5.0)
        self.assertEqual(self.core.cancels.connect_timeout, 2.0)

    def test_max_unauthenticated_clients_follows(self) -> None:
        self.start()
        self.reload(max_unauthenticated_clients=10)
        self.assertEqual(self.core.limiter.max_unauthenticated, 10)

    def test_routing_rules_and_redirects_reach_new_sessions(self) -> None:
        self.start()
        balancer = self.core.balancer
        self.reload(
            write_function_list="audit_.*",
            database_redirect_preference_list="reports:1",
            prefer_lower_delay_standby=True,
        )
        self.assertFalse(self.core.classify("SELECT audit_log(1)").is_read_only)
        self.assertIs(self.core.balancer, balancer)
        self.assertEqual([r.target for r in balancer.database_redirects], ["1"])
        self.assertTrue(balancer.prefer_lower_delay_standby)
        self.assertIs(balancer.choose(database="reports"), self.core.cluster.nodes[1])

    def test_log_min_messages_is_applied(self) -> None:
        self.start()
        self.reload(log_min_messages="debug1")
        self.assertEqual(logs.predicate.threshold, logs._PG_RANK["debug1"])

    def test_busy_poll_time_is_applied_when_it_changes(self) -> None:
        self.start()
        self.reload(log_statement=True)
        self.reload(busy_poll_time="50us")
        [seconds] = self.busy_poll
        self.assertAlmostEqual(seconds, 0.00005)

    def test_pcp_conf_file_and_authentication_timeout_reach_the_pcp_listener(self) -> None:
        self.start()
        factory = PcpFactory(ProxyAdminBackend(self.core), "", self.clock)
        self.reloader.pcp_factory = factory
        pcp_conf = self.write("pcp.conf", "")
        self.reload(pcp_conf_file=pcp_conf, authentication_timeout=5)
        self.assertEqual((factory.pcp_conf_file, factory.authentication_timeout), (pcp_conf, 5.0))

    def test_failover_commands_and_their_timeout_follow(self) -> None:
        self.start()
        failover = FailoverManager(self.clock, self.core)
        self.core.failover = failover
        self.reload(failover_command="promote.sh %d", failover_command_timeout=5)
        self.assertEqual(failover.config.failover_command, "promote.sh %d")
        self.assertEqual(failover.runner.timeout, 5.0)

    def test_query_cache_rules_follow(self) -> None:
        self.start(memory_cache_enabled=True)
        cache = self.core.query_cache
        assert cache is not None
        self.reload(
            memory_cache_enabled=True,
            memqcache_auto_cache_invalidation=False,
            cache_unsafe_memqcache_table_list="audit",
        )
        self.assertIs(self.core.query_cache, cache)
        self.assertFalse(cache.auto_invalidation)
        catalog = cache.catalogs.get("app", b"")
        self.assertFalse(cache.policy.decide("SELECT * FROM audit", catalog).cacheable)

    # -- the periodic checks ----------------------------------------------------------------

    def health_monitor(self) -> FakeCheckQuery:
        # Every node refuses the check at once.
        query = FakeCheckQuery(default="down")
        monitor = HealthMonitor(
            self.clock,
            self.core,
            failover=FakeFailover(),
            credentials=self.core.health_check_credentials,
            query=query,
            wall_clock=lambda: 0.0,
        )
        self.core.health = monitor
        monitor.startService()
        self.addCleanup(monitor.stopService)
        return query

    def test_a_new_health_check_period_reschedules_the_checks(self) -> None:
        self.start(health_check_period=10, health_check_user="postgres")
        query = self.health_monitor()
        self.assertEqual(query.count(0), 1)
        self.reload(health_check_period=2, health_check_user="postgres")
        self.clock.advance(2)
        self.assertEqual(query.count(0), 2)
        self.clock.advance(2)
        self.assertEqual(query.count(0), 3)

    def test_health_checks_turned_on_by_a_reload_check_at_once(self) -> None:
        self.start()
        query = self.health_monitor()
        self.assertEqual(query.calls, [])
        self.reload(health_check_period=5, health_check_user="postgres")
        self.assertEqual(sorted(query.nodes), [0, 1])

    def test_health_checks_turned_off_by_a_reload_stop(self) -> None:
        self.start(health_check_period=5, health_check_user="postgres")
        query = self.health_monitor()
        self.reload(health_check_period=0, health_check_user="postgres")
        self.clock.advance(60)
        self.assertEqual(sorted(query.nodes), [0, 1])

    def test_an_added_backend_gets_a_health_check(self) -> None:
        self.start(health_check_period=5, health_check_user="postgres")
        self.health_monitor()
        self.reload(backends=backends(3), health_check_period=5, health_check_user="postgres")
        assert self.core.health is not None
        self.assertEqual(len(self.core.health.checks), 3)
        # Its first period comes at once; down until attached, it is
        # skipped, as Pgpool-II skips down nodes.
        self.assertEqual(self.core.health.stats(2).skip_count, 1)
        self.clock.advance(5)
        self.assertEqual(self.core.health.stats(2).skip_count, 2)

    def replication_monitor(self) -> ReplicationMonitor:
        monitor = ReplicationMonitor(
            self.clock,
            self.core.cluster,
            self.core.config,
            BackendCredentials("postgres"),
            query=FakeCheckQuery(default="down"),
        )
        self.core.replication = monitor
        monitor.startService()
        self.addCleanup(monitor.stopService)
        return monitor

    def test_a_new_sr_check_period_reschedules_the_check(self) -> None:
        self.start(sr_check_user="postgres", sr_check_period=10)
        monitor = self.replication_monitor()
        self.assertEqual(monitor.last_check_time, 0)
        self.reload(sr_check_user="postgres", sr_check_period=3)
        self.clock.advance(3)
        self.assertEqual(monitor.last_check_time, 3)
        self.assertEqual(monitor.config.sr_check_period, 3.0)

    def test_sr_check_turned_off_lifts_the_delay_marks(self) -> None:
        self.start(sr_check_user="postgres", sr_check_period=10, delay_threshold=1000)
        monitor = self.replication_monitor()
        self.core.cluster.nodes[1].delayed = True
        self.reload(sr_check_user="postgres", sr_check_period=0, delay_threshold=1000)
        self.assertFalse(self.core.cluster.nodes[1].delayed)
        self.clock.advance(60)
        self.assertEqual(monitor.last_check_time, 0)

    def test_new_delay_thresholds_reach_the_replication_check(self) -> None:
        self.start(sr_check_user="postgres")
        monitor = self.replication_monitor()
        self.reload(sr_check_user="postgres", delay_threshold="1MB")
        self.assertEqual(monitor.policy.delay_threshold, 1024 * 1024)


# -- SIGHUP -------------------------------------------------------------------------------


class FakeReactor:
    def __init__(self) -> None:
        self.calls: List[Any] = []

    def callFromThread(self, f, *args: Any) -> None:  # noqa: N802 (Twisted's name)
        self.calls.append((f, args))


class SighupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.reloads: List[None] = []
        self.service = ReloadOnSighup(self.reactor, lambda: self.reloads.append(None))
        self.before = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, self.before)

    def test_sighup_reloads_in_the_reactor_not_in_the_handler(self) -> None:
        self.service.startService()
        self.addCleanup(self.service.stopService)
        signal.raise_signal(signal.SIGHUP)
        self.assertEqual(self.reloads, [])
        [(f, args)] = self.reactor.calls
        f(*args)
        self.assertEqual(self.reloads, [None])

    def test_stopping_puts_the_previous_handler_back(self) -> None:
        self.service.startService()
        self.service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), self.before)

    def test_a_refused_reload_leaves_the_proxy_running(self) -> None:
        def refuse() -> None:
            raise ReloadError("conf.yaml:1: bogus: unknown key")

        service = ReloadOnSighup(self.reactor, refuse)
        service._reload()  # the reloader logged it; nothing is raised
        self.assertEqual(self.flushLoggedErrors(), [])
