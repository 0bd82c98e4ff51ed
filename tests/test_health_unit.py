"""
The health check's state machine and service, driven with a
L{twisted.internet.task.Clock} and a fake check query: no network.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.cluster.health import (
    BUSY,
    CHECK,
    HEALTH_CHECK_STATS_COLUMNS,
    SKIP,
    HealthCheckSettings,
    HealthMonitor,
    NodeDown,
    NodeHealthCheck,
    Retry,
    auto_failback_due,
    health_check_stats_rows,
    is_false_primary,
)
from twisted_pgpool.cluster.model import STATUS_DOWN, STATUS_UP, STATUS_WAITING, Cluster
from twisted_pgpool.cluster.replication import SQL_REPLICATION_STATUS
from twisted_pgpool.config import config_from_dict
from twisted_pgpool.testing.doubles import FakeCheckQuery, FakeCore, FakeFailover

WALL = 1_700_000_000.0


def make_config(nodes: int = 2, backends: Optional[List[Dict[str, Any]]] = None, **settings: Any):
    data: Dict[str, Any] = {
        "backends": backends
        or [
            {"hostname": "127.0.0.1", "port": 5432 + i, "application_name": f"node{i}"}
            for i in range(nodes)
        ],
        "pool_passwd": "",
        "health_check_user": "postgres",
        "health_check_period": 5,
        "health_check_timeout": 3,
        "health_check_max_retries": 2,
        "health_check_retry_delay": 1,
    }
    data.update(settings)
    return config_from_dict(data)


class SettingsTests(SynchronousTestCase):
    def test_global_settings_apply_to_every_node(self) -> None:
        config = make_config()
        settings = HealthCheckSettings.for_node(config, config.backends[1])
        self.assertEqual(settings, HealthCheckSettings(5.0, 3.0, 2, 1.0))

    def test_per_node_override_wins(self) -> None:
        config = make_config(
            backends=[
                {"hostname": "a"},
                {
                    "hostname": "b",
                    "health_check_period": 2,
                    "health_check_max_retries": 0,
                    "health_check_timeout": 7,
                    "health_check_retry_delay": 0.5,
                },
            ]
        )
        self.assertEqual(
            HealthCheckSettings.for_node(config, config.backends[0]),
            HealthCheckSettings(5.0, 3.0, 2, 1.0),
        )
        self.assertEqual(
            HealthCheckSettings.for_node(config, config.backends[1]),
            HealthCheckSettings(2.0, 7.0, 0, 0.5),
        )

    def test_zero_timeout_is_bounded_by_connect_timeout(self) -> None:
        config = make_config(health_check_timeout=0, connect_timeout=4000)
        settings = HealthCheckSettings.for_node(config, config.backends[0])
        self.assertEqual(settings.timeout, 4.0)

    def test_zero_period_disables(self) -> None:
        config = make_config(health_check_period=0)
        self.assertFalse(HealthCheckSettings.for_node(config, config.backends[0]).enabled)


class StateMachineTests(SynchronousTestCase):
    def check(self, max_retries: int = 2) -> NodeHealthCheck:
        return NodeHealthCheck(0, HealthCheckSettings(5.0, 3.0, max_retries, 1.0))

    def test_a_period_checks_a_live_node(self) -> None:
        check = self.check()
        self.assertEqual(check.begin(STATUS_UP, 0.0, WALL), CHECK)
        self.assertEqual(check.begin(STATUS_WAITING, 0.0, WALL), BUSY)

    def test_a_down_node_is_skipped_and_counted(self) -> None:
        check = self.check()
        self.assertEqual(check.begin(STATUS_DOWN, 0.0, WALL), SKIP)
        self.assertEqual((check.stats.total_count, check.stats.skip_count), (1, 1))
        self.assertEqual(check.stats.last_skip_health_check, WALL)
        self.assertFalse(check.running)

    def test_period_during_a_check_is_busy_and_not_counted(self) -> None:
        check = self.check()
        check.begin(STATUS_UP, 0.0, WALL)
        self.assertEqual(check.begin(STATUS_UP, 5.0, WALL), BUSY)
        self.assertEqual(check.stats.total_count, 1)

    def test_failures_are_retried_then_final(self) -> None:
        check = self.check(max_retries=2)
        check.begin(STATUS_UP, 0.0, WALL)
        self.assertEqual(check.attempt_failed("refused", 0.0, WALL), Retry(1.0, 1))
        self.assertEqual(check.attempt_failed("refused", 1.0, WALL), Retry(1.0, 2))
        self.assertEqual(check.attempt_failed("refused", 2.0, WALL + 2), NodeDown("refused", 2))
        stats = check.stats
        self.assertEqual((stats.fail_count, stats.retry_count, stats.max_retry_count), (1, 2, 2))
        self.assertEqual(stats.last_failed_health_check, WALL + 2)
        self.assertEqual(stats.max_duration, 2.0)
        self.assertFalse(check.running)

    def test_no_retries_means_first_failure_is_final(self) -> None:
        check = self.check(max_retries=0)
        check.begin(STATUS_UP, 0.0, WALL)
        self.assertIsInstance(check.attempt_failed("x", 0.0, WALL), NodeDown)

    def test_success_after_retry_counts_retries(self) -> None:
        check = self.check()
        check.begin(STATUS_UP, 10.0, WALL)
        check.attempt_failed("refused", 10.0, WALL)
        self.assertEqual(check.attempt_succeeded(11.5, WALL + 1, True), 1)
        stats = check.stats
        self.assertEqual((stats.success_count, stats.fail_count, stats.retry_count), (1, 0, 1))
        self.assertEqual(stats.last_successful_health_check, WALL + 1)
        self.assertTrue(check.in_recovery)

    def test_durations_and_averages(self) -> None:
        check = self.check()
        check.begin(STATUS_UP, 0.0, WALL)
        check.attempt_succeeded(0.5, WALL)
        check.begin(STATUS_UP, 5.0, WALL)
        check.attempt_failed("x", 5.0, WALL)
        check.attempt_succeeded(6.5, WALL)
        check.begin(STATUS_DOWN, 10.0, WALL)
        stats = check.stats
        self.assertEqual((stats.min_duration, stats.max_duration), (0.5, 1.5))
        self.assertEqual(stats.checked_count, 2)
        self.assertEqual(stats.average_duration, 1.0)
        self.assertEqual(stats.average_retry_count, 0.5)

    def test_averages_are_zero_without_checks(self) -> None:
        check = self.check()
        check.begin(STATUS_DOWN, 0.0, WALL)
        self.assertEqual(check.stats.average_duration, 0.0)
        self.assertEqual(check.stats.average_retry_count, 0.0)

    def test_verdict_without_a_check_is_a_bug(self) -> None:
        check = self.check()
        self.assertRaises(RuntimeError, check.attempt_failed, "x", 0.0, WALL)
        self.assertRaises(RuntimeError, check.attempt_succeeded, 0.0, WALL)

    def test_a_refused_attempt_ends_the_check_as_a_success_counted_apart(self) -> None:
        check = self.check()
        check.begin(STATUS_UP, 0.0, WALL)
        check.in_recovery = False
        self.assertEqual(check.attempt_refused(0.25, WALL + 1), 0)
        stats = check.stats
        self.assertEqual(
            (
                stats.success_count,
                stats.fail_count,
                stats.refused_count,
                stats.last_successful_health_check,
                stats.last_failed_health_check,
            ),
            (1, 0, 1, WALL + 1, None),
        )
        # Its recovery state is unknown: no false-primary verdict on it.
        self.assertEqual((check.running, check.in_recovery), (False, None))

    def test_a_refusal_after_a_failed_attempt_ends_the_check_too(self) -> None:
        check = self.check(max_retries=2)
        check.begin(STATUS_UP, 0.0, WALL)
        check.attempt_failed("timed out", 3.0, WALL)
        self.assertEqual(check.attempt_refused(4.0, WALL), 1)
        self.assertEqual(
            (check.stats.fail_count, check.stats.refused_count, check.stats.max_retry_count),
            (0, 1, 1),
        )

    def test_abandon_frees_the_next_period(self) -> None:
        check = self.check()
        check.begin(STATUS_UP, 0.0, WALL)
        check.abandon()
        self.assertEqual(check.begin(STATUS_UP, 5.0, WALL), CHECK)

    def test_auto_failback_interval(self) -> None:
        check = self.check()
        self.assertTrue(auto_failback_due(check, 0.0, 60.0))
        check.last_auto_failback = 100.0
        self.assertFalse(auto_failback_due(check, 159.0, 60.0))
        self.assertTrue(auto_failback_due(check, 160.0, 60.0))

    def test_false_primary_needs_a_confirmed_primary(self) -> None:
        cluster = Cluster.from_config(make_config().backends)
        primary, standby = cluster.nodes
        self.assertTrue(is_false_primary(standby, False, primary, False))
        self.assertFalse(is_false_primary(standby, True, primary, False))
        self.assertFalse(is_false_primary(standby, False, primary, True))
        self.assertFalse(is_false_primary(standby, False, primary, None))
        self.assertFalse(is_false_primary(standby, False, None, None))
        self.assertFalse(is_false_primary(primary, False, primary, False))
        cluster.set_status(primary, STATUS_DOWN, "test")
        self.assertFalse(is_false_primary(standby, False, primary, False))


class MonitorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.query = FakeCheckQuery(replication_rows=[])
        self.failover = FakeFailover()

    def start(self, **settings: Any) -> HealthMonitor:
        nodes = settings.pop("nodes", 2)
        self.core = FakeCore(make_config(nodes=nodes, **settings), wall_clock=lambda: WALL)
        monitor = HealthMonitor(
            self.clock, self.core, failover=self.failover, query=self.query, wall_clock=lambda: WALL
        )
        monitor.startService()
        self.addCleanup(monitor.stopService)
        self.monitor = monitor
        return monitor

    def test_healthy_nodes_are_checked_every_period(self) -> None:
        monitor = self.start()
        self.assertEqual((self.query.checks_of(0), self.query.checks_of(1)), (1, 1))
        self.clock.advance(5)
        self.assertEqual(self.query.checks_of(1), 2)
        self.assertEqual(monitor.stats(1).success_count, 2)
        self.assertEqual(self.failover.failed, [])
        self.assertEqual(self.query.calls[0], (0, "postgres", "SELECT pg_is_in_recovery()"))

    def test_down_after_retries_spaced_by_retry_delay(self) -> None:
        self.query.behaviour[1] = "down"
        monitor = self.start()
        self.assertEqual(self.query.checks_of(1), 1)
        self.clock.advance(0.99)
        self.assertEqual(self.query.checks_of(1), 1)
        self.clock.advance(0.01)
        self.assertEqual(self.query.checks_of(1), 2)
        self.assertEqual(self.failover.failed, [])
        self.clock.advance(1)
        self.assertEqual(self.query.checks_of(1), 3)
        self.assertEqual([n for n, _ in self.failover.failed], [1])
        self.assertIn("Connection refused", self.failover.failed[0][1])
        stats = monitor.stats(1)
        self.assertEqual((stats.fail_count, stats.retry_count, stats.max_retry_count), (1, 2, 2))

    def test_one_report_per_failed_check(self) -> None:
        self.query.behaviour[1] = "down"
        self.start()
        self.clock.pump([1, 1, 1, 1, 1, 1, 1])
        # Two checks ended (t=0..2 and t=5..7), each reported once; the
        # manager ignores the second since the node is down by then.
        self.assertEqual([n for n, _ in self.failover.failed], [1, 1])

    def test_a_retry_that_succeeds_reports_nothing(self) -> None:
        self.query.behaviour[1] = "down"
        monitor = self.start()
        self.query.behaviour[1] = "up"
        self.clock.advance(1)
        self.assertEqual(self.failover.failed, [])
        self.assertEqual(monitor.stats(1).success_count, 1)
        self.assertEqual(monitor.stats(1).retry_count, 1)

    def test_a_hung_check_times_out_and_never_overlaps(self) -> None:
        self.query.behaviour[1] = "hang"
        self.start(health_check_period=1, health_check_timeout=3, health_check_max_retries=1)
        self.assertEqual(self.query.checks_of(1), 1)
        self.clock.pump([1, 1, 0.9])
        # Periods came at 1 and 2, but the first attempt still ran.
        self.assertEqual(self.query.checks_of(1), 1)
        self.clock.advance(0.1)  # t=3: first attempt timed out
        self.assertEqual(self.query.checks_of(1), 1)
        self.clock.advance(1)  # t=4: the retry
        self.assertEqual(self.query.checks_of(1), 2)
        self.clock.advance(3)  # t=7: the retry timed out
        self.assertEqual([n for n, _ in self.failover.failed], [1])
        self.assertIn("within 3 s", self.failover.failed[0][1])
        self.assertTrue(all(d.called for d in self.query.pending))

    def test_a_node_without_free_slots_is_not_failed_over(self) -> None:
        self.query.behaviour[0] = "full"
        monitor = self.start(health_check_max_retries=2)
        self.clock.pump([1] * 12)
        # Three periods (t=0, 5, 10), one attempt each: no retries, no
        # template1, no report.
        self.assertEqual((self.failover.failed, self.query.checks_of(0)), ([], 3))
        self.assertEqual({db for n, db, _ in self.query.calls if n == 0}, {"postgres"})
        stats = monitor.stats(0)
        self.assertEqual(
            (stats.success_count, stats.fail_count, stats.retry_count, stats.refused_count),
            (3, 0, 0, 3),
        )
        self.assertEqual(self.core.cluster.nodes[0].status, STATUS_WAITING)

    def test_a_refused_check_is_logged_as_a_warning(self) -> None:
        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.query.behaviour[0] = "full"
        self.start()
        warnings = [
            formatEvent(e)
            for e in events
            if e.get("log_level") == LogLevel.warn and e.get("node_id") == 0
        ]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("refuses more connections, not counted as a failure", warnings[0])
        self.assertIn("too many clients already (SQLSTATE 53300)", warnings[0])

    def test_a_full_node_after_a_timeout_is_not_failed_over(self) -> None:
        self.query.behaviour[0] = "hang"
        monitor = self.start(health_check_max_retries=1, health_check_timeout=3)
        self.clock.advance(3)  # the first attempt timed out
        self.query.behaviour[0] = "full"
        self.clock.advance(1)  # the retry is refused: the node answers
        self.assertEqual(self.failover.failed, [])
        self.assertEqual((monitor.stats(0).refused_count, monitor.stats(0).retry_count), (1, 1))

    def test_a_node_starting_up_is_failed_over(self) -> None:
        self.query.behaviour[1] = "starting"
        self.start(health_check_max_retries=0)
        self.assertEqual([n for n, _ in self.failover.failed], [1])
        self.assertIn("57P03", self.failover.failed[0][1])

    def test_an_exception_is_logged_and_the_loop_goes_on(self) -> None:
        self.query.behaviour[1] = "raise"
        monitor = self.start()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.failover.failed, [])
        self.query.behaviour[1] = "up"
        self.clock.advance(5)
        self.assertEqual(monitor.stats(1).success_count, 1)

    def test_an_exception_in_every_check_never_stops_the_loop(self) -> None:
        self.query.behaviour[1] = "raise"
        self.start()
        self.clock.pump([5] * 4)
        self.assertEqual(self.query.checks_of(1), 5)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 5)

    def test_down_nodes_are_not_checked(self) -> None:
        monitor = self.start()
        self.core.cluster.set_status(self.core.cluster.nodes[1], STATUS_DOWN, "test")
        self.clock.advance(5)
        self.assertEqual(self.query.checks_of(1), 1)
        self.assertEqual(monitor.stats(1).skip_count, 1)
        self.assertEqual(monitor.stats(1).total_count, 2)

    def test_disallow_to_failover_only_logs(self) -> None:
        self.query.behaviour[1] = "down"
        self.start(
            backends=[{"hostname": "a"}, {"hostname": "b", "flag": "DISALLOW_TO_FAILOVER"}],
            health_check_max_retries=0,
        )
        self.assertEqual(self.failover.failed, [])
        self.assertEqual(self.core.cluster.nodes[1].status, STATUS_WAITING)

    def test_empty_database_tries_postgres_then_template1(self) -> None:
        self.query.refused_databases[1] = {"postgres"}
        monitor = self.start()
        self.assertEqual([db for n, db, _ in self.query.calls if n == 1], ["postgres", "template1"])
        self.assertEqual(monitor.stats(1).success_count, 1)

    def test_unreachable_node_is_not_asked_for_template1(self) -> None:
        self.query.behaviour[1] = "down"
        self.start(health_check_max_retries=0)
        self.assertEqual([db for n, db, _ in self.query.calls if n == 1], ["postgres"])

    def test_configured_database_is_the_only_one(self) -> None:
        self.start(health_check_database="app")
        self.assertEqual({db for _, db, _ in self.query.calls}, {"app"})

    def test_zero_period_checks_nothing(self) -> None:
        self.start(health_check_period=0)
        self.clock.advance(100)
        self.assertEqual(self.query.calls, [])

    def test_per_node_period(self) -> None:
        self.start(
            backends=[
                {"hostname": "a", "health_check_period": 0},
                {"hostname": "b", "health_check_period": 2},
            ],
            health_check_period=10,
        )
        self.clock.pump([2, 2])
        self.assertEqual((self.query.checks_of(0), self.query.checks_of(1)), (0, 3))

    def test_empty_user_turns_checks_off(self) -> None:
        self.start(health_check_user="")
        self.assertEqual(self.query.calls, [])

    def test_without_a_failover_manager_the_node_is_marked_down(self) -> None:
        self.failover = None  # type: ignore[assignment]
        self.query.behaviour[1] = "down"
        self.start(health_check_max_retries=0)
        self.assertEqual(self.core.cluster.nodes[1].status, STATUS_DOWN)

    def test_false_primary_is_reported(self) -> None:
        self.query.in_recovery[1] = False
        self.start(detach_false_primary=True)
        self.assertEqual([n for n, _ in self.failover.failed], [1])
        self.assertIn("false primary", self.failover.failed[0][1])

    def test_false_primary_check_is_off_by_default(self) -> None:
        self.query.in_recovery[1] = False
        self.start()
        self.assertEqual(self.failover.failed, [])

    def test_auto_failback_attaches_a_streaming_standby_once_per_interval(self) -> None:
        self.query.replication_rows = [(b"node1", b"streaming", b"async", None)]
        self.start(auto_failback=True, auto_failback_interval=60)
        node = self.core.cluster.nodes[1]
        self.core.cluster.set_status(node, STATUS_DOWN, "test")
        self.clock.advance(5)
        self.assertEqual([n for n, _ in self.failover.attached], [1])
        # The fake manager does not attach it: the node stays down, and the
        # interval holds the next attempt back.
        self.clock.pump([5] * 11)
        self.assertEqual(len(self.failover.attached), 1)
        self.clock.advance(5)
        self.assertEqual(len(self.failover.attached), 2)

    def test_auto_failback_needs_streaming(self) -> None:
        self.query.replication_rows = [(b"node1", b"catchup", b"async", None)]
        self.start(auto_failback=True)
        self.core.cluster.set_status(self.core.cluster.nodes[1], STATUS_DOWN, "test")
        self.clock.advance(5)
        self.assertEqual(self.failover.attached, [])

    def test_auto_failback_is_off_by_default(self) -> None:
        self.query.replication_rows = [(b"node1", b"streaming", b"async", None)]
        self.start()
        self.core.cluster.set_status(self.core.cluster.nodes[1], STATUS_DOWN, "test")
        self.clock.advance(5)
        self.assertEqual(self.failover.attached, [])
        self.assertNotIn(SQL_REPLICATION_STATUS, [sql for _, _, sql in self.query.calls])

    def test_stopping_cancels_running_checks_and_timers(self) -> None:
        self.query.behaviour[1] = "hang"
        monitor = self.start()
        monitor.stopService()
        self.assertTrue(all(d.called for d in self.query.pending))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.failover.failed, [])
        self.assertFalse(monitor.checks[1].running)

    def test_stats_rows_have_pgpool_columns(self) -> None:
        self.query.behaviour[1] = "down"
        monitor = self.start()
        self.clock.pump([1, 1])
        columns, rows = health_check_stats_rows(monitor)
        self.assertEqual(len(columns), 20)
        self.assertEqual(columns, HEALTH_CHECK_STATS_COLUMNS)
        row = dict(zip(columns, rows[1]))
        self.assertEqual(row["node_id"], "1")
        self.assertEqual(row["role"], "standby")
        self.assertEqual(
            (row["total_count"], row["fail_count"], row["retry_count"]), ("1", "1", "2")
        )
        self.assertEqual(row["average_retry_count"], "2.000000")
        self.assertEqual(row["max_duration"], "2000")
        self.assertEqual(row["average_duration"], "2000.000000")
        self.assertEqual(row["last_skip_health_check"], "")
        self.assertNotEqual(row["last_failed_health_check"], "")
        self.assertEqual(dict(zip(columns, rows[0]))["role"], "primary")
