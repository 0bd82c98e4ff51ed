"""
Primary detection and the streaming replication check, without sockets:
the decisions as plain functions, and L{ReplicationMonitor} driven by a
L{Clock} and a fake query function standing in for
L{twisted_pgpool.cluster.nodecheck.run_check_query}.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.auth.passwd import PoolPasswd, UnsupportedSecretError
from twisted_pgpool.backend.protocol import BackendCredentials, InternalResult
from twisted_pgpool.cluster import nodecheck, replication
from twisted_pgpool.cluster.model import STATUS_DOWN, Cluster
from twisted_pgpool.cluster.nodecheck import CheckFailed, check_credentials
from twisted_pgpool.cluster.replication import (
    SQL_CURRENT_WAL_LSN,
    SQL_IS_IN_RECOVERY,
    SQL_REPLICATION_STATUS,
    SQL_STANDBY_STATUS,
    DelayPolicy,
    ReplicationMonitor,
    ReplicationRow,
    StandbyState,
    assess_standby,
    delay_log_wanted,
    elect_primary,
    find_primary,
    find_replication_row,
    format_lsn,
    is_delayed,
    parse_lsn,
    pool_nodes_columns,
    replication_delay,
)
from twisted_pgpool.config import PgpoolConfig, config_from_dict
from twisted_pgpool.testing.doubles import FakeCheckQuery

CREDENTIALS = BackendCredentials("checker", password="secret")


def result(*rows: Sequence[Optional[str]]) -> InternalResult:
    """
    An InternalResult holding C{rows}, encoded as the server's text format.
    """
    return InternalResult(
        rows=[tuple(None if v is None else v.encode() for v in row) for row in rows]
    )


def make_config(**settings: Any) -> PgpoolConfig:
    data: Dict[str, Any] = {
        "backends": [
            {"hostname": "h0", "application_name": "node0"},
            {"hostname": "h1", "application_name": "node1"},
            {"hostname": "h2", "application_name": "node2"},
        ],
        "sr_check_user": "checker",
        "sr_check_period": 10,
        "sr_check_database": "checkdb",
        "pool_passwd": "",
    }
    data.update(settings)
    return config_from_dict(data)


class LogCapture:
    def __init__(self, test: SynchronousTestCase) -> None:
        self.events: List[Dict[str, Any]] = []
        test.patch(replication, "log", Logger(observer=self.events.append))

    def messages(self) -> List[str]:
        return [formatEvent(e) for e in self.events]

    def failures(self) -> List[Dict[str, Any]]:
        return [e for e in self.events if "log_failure" in e]

    def containing(self, text: str) -> List[str]:
        return [m for m in self.messages() if text in m]


# -- LSNs --------------------------------------------------------------------------


class LsnTests(SynchronousTestCase):
    def test_parse_reads_high_and_low_halves(self) -> None:
        self.assertEqual(parse_lsn("0/3000060"), 0x3000060)
        self.assertEqual(parse_lsn("16/B374D848"), (0x16 << 32) | 0xB374D848)

    def test_parse_maximum(self) -> None:
        self.assertEqual(parse_lsn("FFFFFFFF/FFFFFFFF"), 2**64 - 1)

    def test_parse_accepts_lowercase_and_bytes(self) -> None:
        self.assertEqual(parse_lsn(b"1/a"), (1 << 32) | 10)

    def test_parse_rejects_garbage(self) -> None:
        for text in ["", "0", "0/", "/0", "1/2/3", "G/0", "123456789/0", "-1/0"]:
            self.assertRaises(ValueError, parse_lsn, text)

    def test_format_as_postgresql_does(self) -> None:
        self.assertEqual(format_lsn(0x3000060), "0/3000060")
        self.assertEqual(format_lsn(0), "0/0")
        self.assertEqual(format_lsn(2**64 - 1), "FFFFFFFF/FFFFFFFF")

    def test_format_round_trips(self) -> None:
        for text in ["0/3000060", "16/B374D848", "FFFFFFFF/FFFFFFFF"]:
            self.assertEqual(format_lsn(parse_lsn(text)), text)

    def test_format_rejects_out_of_range(self) -> None:
        self.assertRaises(ValueError, format_lsn, -1)
        self.assertRaises(ValueError, format_lsn, 2**64)


# -- decisions -----------------------------------------------------------------------


ROWS = [
    ReplicationRow("node1", "streaming", "async", 0.25),
    ReplicationRow("node2", "catchup", "potential", None),
]


class DelayTests(SynchronousTestCase):
    def test_delay_is_primary_minus_standby_replay_position(self) -> None:
        self.assertEqual(replication_delay(parse_lsn("0/3000000"), parse_lsn("0/2FFFC00")), 1024)

    def test_delay_crosses_the_32_bit_boundary(self) -> None:
        self.assertEqual(replication_delay(parse_lsn("1/0"), parse_lsn("0/FFFFFFFF")), 1)

    def test_standby_seemingly_ahead_has_no_delay(self) -> None:
        self.assertEqual(replication_delay(100, 150), 0)

    def test_delayed_when_bytes_over_threshold(self) -> None:
        policy = DelayPolicy(delay_threshold=1000)
        self.assertTrue(is_delayed(policy, 1001, None))
        self.assertFalse(is_delayed(policy, 1000, None))

    def test_never_delayed_without_thresholds(self) -> None:
        self.assertFalse(is_delayed(DelayPolicy(), 10**12, 3600.0))

    def test_delayed_by_time_takes_precedence_over_bytes(self) -> None:
        policy = DelayPolicy(delay_threshold=1000, delay_threshold_by_time=0.5)
        self.assertTrue(is_delayed(policy, 0, 0.6))
        self.assertFalse(is_delayed(policy, 10**9, 0.4))

    def test_by_time_with_unknown_lag_falls_back_to_bytes(self) -> None:
        policy = DelayPolicy(delay_threshold=1000, delay_threshold_by_time=0.5)
        self.assertTrue(is_delayed(policy, 2000, None))
        self.assertFalse(is_delayed(DelayPolicy(delay_threshold_by_time=0.5), 2000, None))

    def test_row_found_by_application_name(self) -> None:
        self.assertEqual(find_replication_row(ROWS, "node2"), ROWS[1])
        self.assertIsNone(find_replication_row(ROWS, "node9"))

    def test_empty_application_name_matches_nothing(self) -> None:
        rows = [ReplicationRow("", "streaming", "async", 0.0)]
        self.assertIsNone(find_replication_row(rows, ""))

    def test_assessment_takes_state_from_the_matching_row(self) -> None:
        state = assess_standby(DelayPolicy(), 5000, 4000, "node1", ROWS)
        self.assertEqual(
            state,
            StandbyState(
                replay_lsn=4000,
                replication_delay=1000,
                replication_delay_seconds=0.25,
                replication_state="streaming",
                replication_sync_state="async",
                delayed=False,
            ),
        )

    def test_assessment_without_a_matching_row_has_empty_state(self) -> None:
        state = assess_standby(DelayPolicy(), 5000, 4000, "elsewhere", ROWS)
        self.assertEqual(
            (
                state.replication_state,
                state.replication_sync_state,
                state.replication_delay_seconds,
            ),
            ("", "", None),
        )

    def test_null_replay_lag_is_no_lag(self) -> None:
        state = assess_standby(DelayPolicy(), 5000, 5000, "node2", ROWS)
        self.assertEqual(state.replication_delay_seconds, 0.0)
        self.assertEqual(state.replication_state, "catchup")

    def test_hidden_row_details_leave_the_lag_unknown(self) -> None:
        # What a check user without pg_monitor sees.
        rows = [ReplicationRow("node1", "", "", None)]
        state = assess_standby(DelayPolicy(delay_threshold_by_time=1.0), 5000, 4000, "node1", rows)
        self.assertEqual((state.replication_state, state.replication_delay_seconds), ("", None))

    def test_assessment_applies_the_threshold(self) -> None:
        state = assess_standby(DelayPolicy(delay_threshold=999), 5000, 4000, "node1", ROWS)
        self.assertTrue(state.delayed)

    def _state(self, delay: int, seconds: Optional[float], delayed: bool) -> StandbyState:
        return StandbyState(0, delay, seconds, "streaming", "async", delayed)

    def test_log_always_logs_any_delay(self) -> None:
        policy = DelayPolicy(log_standby_delay="always")
        self.assertTrue(delay_log_wanted(policy, self._state(1, None, False)))
        self.assertFalse(delay_log_wanted(policy, self._state(0, None, False)))

    def test_log_always_by_time_looks_at_seconds(self) -> None:
        policy = DelayPolicy(delay_threshold_by_time=1.0, log_standby_delay="always")
        self.assertTrue(delay_log_wanted(policy, self._state(0, 0.1, False)))
        self.assertFalse(delay_log_wanted(policy, self._state(500, 0.0, False)))

    def test_log_if_over_threshold_logs_delayed_only(self) -> None:
        policy = DelayPolicy(delay_threshold=10)
        self.assertTrue(delay_log_wanted(policy, self._state(11, None, True)))
        self.assertFalse(delay_log_wanted(policy, self._state(9, None, False)))

    def test_log_none_logs_nothing(self) -> None:
        policy = DelayPolicy(delay_threshold=10, log_standby_delay="none")
        self.assertFalse(delay_log_wanted(policy, self._state(11, None, True)))


class ElectPrimaryTests(SynchronousTestCase):
    def test_the_node_not_in_recovery_is_primary(self) -> None:
        election = elect_primary({0: True, 1: False, 2: True}, 0)
        self.assertEqual((election.primary_id, election.claimants), (1, (1,)))

    def test_no_claimant_means_no_primary(self) -> None:
        election = elect_primary({0: True, 1: None}, 0)
        self.assertEqual((election.primary_id, election.claimants), (None, ()))

    def test_of_several_claimants_the_current_primary_stays(self) -> None:
        self.assertEqual(elect_primary({0: False, 1: True, 2: False}, 2).primary_id, 2)

    def test_of_several_new_claimants_the_lowest_id_wins(self) -> None:
        election = elect_primary({0: True, 2: False, 1: False}, 0)
        self.assertEqual((election.primary_id, election.claimants), (1, (1, 2)))


class PoolNodesColumnsTests(SynchronousTestCase):
    def _cluster(self, config: PgpoolConfig) -> Cluster:
        cluster = Cluster.from_config(config.backends)
        standby = cluster.nodes[1]
        standby.pg_role = "standby"
        standby.replication_delay = 1024
        standby.replication_delay_seconds = 0.25
        standby.replication_state = "streaming"
        standby.replication_sync_state = "async"
        cluster.nodes[0].pg_role = "primary"
        return cluster

    def test_standby_delay_in_bytes(self) -> None:
        config = make_config()
        cluster = self._cluster(config)
        self.assertEqual(
            pool_nodes_columns(cluster.nodes[1], config), ("standby", "1024", "streaming", "async")
        )

    def test_standby_delay_in_seconds_when_by_time(self) -> None:
        config = make_config(delay_threshold_by_time=100)
        cluster = self._cluster(config)
        self.assertEqual(pool_nodes_columns(cluster.nodes[1], config)[1], "0.250000 second(s)")

    def test_primary_shows_no_replication(self) -> None:
        config = make_config()
        cluster = self._cluster(config)
        self.assertEqual(pool_nodes_columns(cluster.nodes[0], config), ("primary", "0", "", ""))

    def test_pg_role_unknown_when_check_is_off_or_node_down(self) -> None:
        config = make_config(sr_check_period=0)
        cluster = self._cluster(config)
        self.assertEqual(pool_nodes_columns(cluster.nodes[1], config)[0], "unknown")
        config = make_config()
        cluster.nodes[1].status = STATUS_DOWN
        self.assertEqual(pool_nodes_columns(cluster.nodes[1], config)[0], "unknown")

    def test_raw_mode_pg_role_is_the_role(self) -> None:
        config = make_config(backend_clustering_mode="raw")
        cluster = self._cluster(config)
        self.assertEqual(pool_nodes_columns(cluster.nodes[1], config), ("standby", "0", "", ""))


# -- find_primary --------------------------------------------------------------------


class FindPrimaryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.logs = LogCapture(self)
        # Answers by (node id, SQL); the rest hang.
        self.queries = FakeCheckQuery(default="hang")

    def find(self, config: PgpoolConfig, cluster: Cluster):
        d = defer.Deferred.fromCoroutine(
            find_primary(self.clock, cluster, CREDENTIALS, "checkdb", 5.0, self.queries)
        )
        return d

    def answer(self, **in_recovery: Any) -> None:
        for name, value in in_recovery.items():
            node_id = int(name[1:])
            if isinstance(value, BaseException):
                self.queries.set(node_id, SQL_IS_IN_RECOVERY, value)
            else:
                self.queries.set(node_id, SQL_IS_IN_RECOVERY, result([value]))

    def test_the_node_not_in_recovery_becomes_primary(self) -> None:
        config = make_config()
        cluster = Cluster.from_config(config.backends)
        self.answer(n0="t", n1="f", n2="t")
        found = self.successResultOf(self.find(config, cluster))
        self.assertIs(found, cluster.nodes[1])
        self.assertIs(cluster.primary(), cluster.nodes[1])
        self.assertEqual([n.role for n in cluster.nodes], ["standby", "primary", "standby"])
        self.assertEqual([n.pg_role for n in cluster.nodes], ["standby", "primary", "standby"])
        self.assertEqual(cluster.nodes[1].status_reason, "pg_is_in_recovery() is false")
        self.assertEqual(
            self.logs.containing("find_primary_node: primary node is 1"),
            ["find_primary_node: primary node is 1"],
        )

    def test_always_primary_wins_without_asking(self) -> None:
        config = make_config(
            backends=[
                {"hostname": "h0"},
                {"hostname": "h1"},
                {"hostname": "h2", "flag": "ALWAYS_PRIMARY"},
            ]
        )
        cluster = Cluster.from_config(config.backends)
        cluster.set_primary(cluster.nodes[0], "test")
        found = self.successResultOf(self.find(config, cluster))
        self.assertIs(found, cluster.nodes[2])
        self.assertIs(cluster.primary(), cluster.nodes[2])
        self.assertEqual(self.queries.calls, [])

    def test_two_primaries_lowest_new_id_chosen_and_warned(self) -> None:
        config = make_config()
        cluster = Cluster.from_config(config.backends)
        self.answer(n0="t", n1="f", n2="f")
        found = self.successResultOf(self.find(config, cluster))
        self.assertIs(found, cluster.nodes[1])
        warnings = self.logs.containing("claim to be the primary")
        self.assertEqual(len(warnings), 1)
        self.assertIn("nodes 1, 2", warnings[0])
        self.assertIn("using node 1", warnings[0])

    def test_two_primaries_current_one_kept(self) -> None:
        config = make_config()
        cluster = Cluster.from_config(config.backends)
        self.answer(n0="f", n1="t", n2="f")
        found = self.successResultOf(self.find(config, cluster))
        self.assertIs(found, cluster.nodes[0])
        self.assertEqual(cluster.nodes[0].status_reason, "configured")

    def test_unreachable_node_is_unknown_and_others_decide(self) -> None:
        config = make_config()
        cluster = Cluster.from_config(config.backends)
        self.answer(
            n0=CheckFailed(0, "could not connect to node 0 (h0:5432): refused"), n1="f", n2="t"
        )
        found = self.successResultOf(self.find(config, cluster))
        self.assertIs(found, cluster.nodes[1])
        self.assertEqual(cluster.nodes[0].pg_role, "unknown")
        self.assertEqual(len(self.logs.containing("could not connect to node 0")), 1)

    def test_node_that_never_answers_times_out(self) -> None:
        config = make_config()
        cluster = Cluster.from_config(config.backends)
        self.answer(n1="f", n2="t")
        d = self.find(config, cluster)
        self.assertNoResult(d)
        self.clock.advance(5.0)
        self.assertIs(self.successResultOf(d), cluster.nodes[1])
        self.assertEqual(cluster.nodes[0].pg_role, "unknown")
        self.assertEqual(len(self.logs.containing("did not answer")), 1)
        self.assertEqual(self.queries.pending[0].called, True)

    def test_down_node_is_not_asked(self) -> None:
        config = make_config()
        cluster = Cluster.from_config(config.backends)
        cluster.set_status(cluster.nodes[2], STATUS_DOWN, "test")
        self.answer(n0="f", n1="t")
        self.successResultOf(self.find(config, cluster))
        self.assertEqual(self.queries.count(2, SQL_IS_IN_RECOVERY), 0)
        self.assertEqual(cluster.nodes[2].pg_role, "unknown")

    def test_no_primary_found_leaves_roles_alone(self) -> None:
        config = make_config()
        cluster = Cluster.from_config(config.backends)
        self.answer(n0="t", n1="t", n2=CheckFailed(2, "refused"))
        self.assertIsNone(self.successResultOf(self.find(config, cluster)))
        self.assertIs(cluster.primary(), cluster.nodes[0])
        self.assertEqual(len(self.logs.containing("no primary node found")), 1)

    def test_malformed_answer_counts_as_no_answer(self) -> None:
        config = make_config()
        cluster = Cluster.from_config(config.backends)
        self.answer(n0="maybe", n1="f", n2="t")
        self.assertIs(self.successResultOf(self.find(config, cluster)), cluster.nodes[1])
        self.assertEqual(cluster.nodes[0].pg_role, "unknown")
        self.assertEqual(self.logs.failures(), [])


# -- the monitor ----------------------------------------------------------------------


class MonitorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.logs = LogCapture(self)
        # Answers by (node id, SQL); the rest hang.
        self.queries = FakeCheckQuery(default="hang")

    def monitor(self, **settings: Any) -> ReplicationMonitor:
        settings.setdefault("connect_timeout", 5000)  # ms: 5 s per query
        self.config = make_config(**settings)
        self.cluster = Cluster.from_config(self.config.backends, clock=self.clock.seconds)
        monitor = ReplicationMonitor(
            self.clock, self.cluster, self.config, CREDENTIALS, query=self.queries
        )
        self.addCleanup(lambda: monitor.running and monitor.stopService())
        return monitor

    def healthy(
        self, standby_lsn: str = "0/2FFFC00", lag: str = "0.5", primary_lsn: str = "0/3000000"
    ) -> None:
        """
        Node 0 is the primary, nodes 1 and 2 stream from it.
        """
        q = self.queries
        q.set(0, SQL_IS_IN_RECOVERY, result(["f"]))
        q.set(1, SQL_IS_IN_RECOVERY, result(["t"]))
        q.set(2, SQL_IS_IN_RECOVERY, result(["t"]))
        q.set(0, SQL_CURRENT_WAL_LSN, result([primary_lsn]))
        q.set(
            0,
            SQL_REPLICATION_STATUS,
            result(["node1", "streaming", "async", lag], ["node2", "streaming", "sync", None]),
        )
        q.set(1, SQL_STANDBY_STATUS, result(["t", standby_lsn]))
        q.set(2, SQL_STANDBY_STATUS, result(["t", primary_lsn]))

    def test_first_check_finds_primary_and_measures_each_standby(self) -> None:
        self.healthy()
        monitor = self.monitor()
        self.clock.advance(3)
        monitor.startService()
        primary, node1, node2 = self.cluster.nodes
        self.assertEqual(primary.pg_role, "primary")
        self.assertEqual(
            (
                node1.pg_role,
                node1.replication_delay,
                node1.replication_delay_seconds,
                node1.replication_state,
                node1.replication_sync_state,
                node1.delayed,
            ),
            ("standby", 1024, 0.5, "streaming", "async", False),
        )
        self.assertEqual(node1.replay_lsn, parse_lsn("0/2FFFC00"))
        self.assertEqual(
            (
                node2.replication_delay,
                node2.replication_delay_seconds,
                node2.replication_sync_state,
            ),
            (0, 0.0, "sync"),
        )
        self.assertEqual(monitor.last_check_time, 3)
        self.assertEqual(monitor.primary_lsn, parse_lsn("0/3000000"))
        self.assertEqual(set(self.queries.databases), {"checkdb"})
        self.assertEqual(self.logs.failures(), [])

    def test_check_repeats_every_period(self) -> None:
        self.healthy()
        monitor = self.monitor(sr_check_period=10)
        monitor.startService()
        self.assertEqual(self.queries.count(1, SQL_STANDBY_STATUS), 1)
        self.clock.advance(10)
        self.assertEqual(self.queries.count(1, SQL_STANDBY_STATUS), 2)
        self.assertEqual(monitor.last_check_time, 10)

    def test_primary_is_searched_once_when_found(self) -> None:
        self.healthy()
        monitor = self.monitor()
        monitor.startService()
        self.clock.advance(10)
        self.assertEqual(self.queries.count(0, SQL_IS_IN_RECOVERY), 1)

    def test_primary_search_repeats_until_a_primary_is_found(self) -> None:
        self.healthy()
        self.queries.set(0, SQL_IS_IN_RECOVERY, CheckFailed(0, "refused"))
        monitor = self.monitor()
        monitor.startService()
        self.queries.set(0, SQL_IS_IN_RECOVERY, result(["f"]))
        self.clock.advance(10)
        self.assertEqual(self.queries.count(0, SQL_IS_IN_RECOVERY), 2)
        self.clock.advance(10)
        self.assertEqual(self.queries.count(0, SQL_IS_IN_RECOVERY), 2)

    def test_without_a_primary_the_nodes_are_asked_each_period(self) -> None:
        # The primary failed and the failover found none; then a standby
        # is promoted: the next check makes it the primary, so new
        # sessions use it.
        self.healthy()
        monitor = self.monitor()
        monitor.startService()
        primary, node1, _ = self.cluster.nodes
        self.cluster.set_status(primary, STATUS_DOWN, "failed")
        self.clock.advance(10)
        self.assertIsNone(self.cluster.primary())
        self.queries.set(1, SQL_IS_IN_RECOVERY, result(["f"]))
        self.clock.advance(10)
        self.assertIs(self.cluster.primary(), node1)

    def test_no_primary_is_logged_once_not_every_period(self) -> None:
        self.healthy()
        monitor = self.monitor()
        monitor.startService()
        self.cluster.set_status(self.cluster.nodes[0], STATUS_DOWN, "failed")
        for _ in range(5):
            self.clock.advance(10)
        self.assertEqual(len(self.logs.containing("no usable primary node")), 1)
        self.assertEqual(len(self.logs.containing("no primary node found")), 1)
        self.assertEqual(self.queries.count(1, SQL_IS_IN_RECOVERY), 6)
        # A primary back, then gone again: said again.
        self.cluster.set_status(self.cluster.nodes[0], "up", "attached")
        self.clock.advance(10)
        self.cluster.set_status(self.cluster.nodes[0], STATUS_DOWN, "failed")
        self.clock.advance(10)
        self.assertEqual(len(self.logs.containing("no usable primary node")), 2)

    def test_standby_delayed_by_bytes_is_flagged_and_logged(self) -> None:
        self.healthy()
        monitor = self.monitor(delay_threshold=1000)
        monitor.startService()
        self.assertTrue(self.cluster.nodes[1].delayed)
        self.assertFalse(self.cluster.nodes[2].delayed)
        self.assertEqual(
            self.logs.containing("Replication of node"),
            ["Replication of node: 1 is behind 1024 bytes from the primary server (node: 0)"],
        )

    def test_standby_delayed_by_time_is_flagged_and_logged_in_seconds(self) -> None:
        self.healthy(lag="0.5")
        monitor = self.monitor(delay_threshold_by_time="100ms")
        monitor.startService()
        self.assertTrue(self.cluster.nodes[1].delayed)
        self.assertEqual(
            self.logs.containing("Replication of node"),
            [
                "Replication of node: 1 is behind 0.500000 second(s) from the primary server "
                "(node: 0)"
            ],
        )

    def test_log_standby_delay_none_keeps_quiet(self) -> None:
        self.healthy()
        monitor = self.monitor(delay_threshold=1000, log_standby_delay="none")
        monitor.startService()
        self.assertTrue(self.cluster.nodes[1].delayed)
        self.assertEqual(self.logs.containing("Replication of node"), [])

    def test_log_standby_delay_always_logs_below_threshold(self) -> None:
        self.healthy()
        monitor = self.monitor(log_standby_delay="always")
        monitor.startService()
        self.assertEqual(len(self.logs.containing("Replication of node: 1 is behind")), 1)
        self.assertEqual(self.logs.containing("Replication of node: 2"), [])

    def test_standby_catching_up_is_no_longer_delayed(self) -> None:
        self.healthy()
        monitor = self.monitor(delay_threshold=1000)
        monitor.startService()
        self.queries.set(1, SQL_STANDBY_STATUS, result(["t", "0/3000000"]))
        self.clock.advance(10)
        self.assertEqual(
            (self.cluster.nodes[1].replication_delay, self.cluster.nodes[1].delayed), (0, False)
        )

    def test_second_primary_is_warned_about(self) -> None:
        self.healthy()
        self.queries.set(2, SQL_IS_IN_RECOVERY, result(["t"]))
        monitor = self.monitor()
        monitor.startService()
        self.queries.set(2, SQL_STANDBY_STATUS, result(["f", None]))
        self.clock.advance(10)
        self.assertEqual(self.cluster.nodes[2].pg_role, "primary")
        self.assertIs(self.cluster.primary(), self.cluster.nodes[0])
        self.assertEqual(len(self.logs.containing("node 2 is not in recovery")), 1)

    def test_primary_in_recovery_is_reported(self) -> None:
        self.healthy()
        monitor = self.monitor()
        monitor.startService()
        self.queries.set(
            0,
            SQL_CURRENT_WAL_LSN,
            CheckFailed(0, "query failed: recovery is in progress (SQLSTATE 55000)", "55000"),
        )
        self.clock.advance(10)
        self.assertEqual(self.cluster.nodes[0].pg_role, "standby")
        self.assertEqual(len(self.logs.containing("primary node 0 is in recovery")), 1)
        # Without the primary's position there is nothing to measure: the
        # last known delay stands.
        self.assertEqual(self.cluster.nodes[1].replication_delay, 1024)

    def test_unreachable_standby_is_unknown_and_others_measured(self) -> None:
        self.healthy()
        self.queries.set(1, SQL_STANDBY_STATUS, CheckFailed(1, "could not connect to node 1"))
        monitor = self.monitor()
        monitor.startService()
        self.assertEqual(self.cluster.nodes[1].pg_role, "unknown")
        self.assertEqual(self.cluster.nodes[2].pg_role, "standby")
        self.assertEqual(self.cluster.nodes[2].replication_state, "streaming")
        self.assertEqual(len(self.logs.containing("could not connect to node 1")), 1)
        self.assertEqual(self.logs.failures(), [])

    def test_failed_pg_stat_replication_query_still_measures_bytes(self) -> None:
        self.healthy()
        self.queries.set(0, SQL_REPLICATION_STATUS, CheckFailed(0, "permission denied"))
        monitor = self.monitor()
        monitor.startService()
        self.assertEqual(self.cluster.nodes[1].replication_delay, 1024)
        self.assertEqual(self.cluster.nodes[1].replication_state, "")

    def test_down_node_is_not_checked(self) -> None:
        self.healthy()
        monitor = self.monitor()
        self.cluster.set_status(self.cluster.nodes[2], STATUS_DOWN, "test")
        monitor.startService()
        self.assertEqual(self.queries.count(2, SQL_STANDBY_STATUS), 0)
        self.assertEqual(self.cluster.nodes[2].pg_role, "unknown")

    def test_a_check_that_never_returns_blocks_the_next_until_timeout(self) -> None:
        self.healthy()
        del self.queries.answers[(1, SQL_STANDBY_STATUS)]  # hangs
        monitor = self.monitor(sr_check_period=2)  # 5 s query timeout
        monitor.startService()
        self.assertEqual(self.queries.count(1, SQL_STANDBY_STATUS), 1)
        self.clock.advance(2)
        self.clock.advance(2)
        self.assertEqual(self.queries.count(1, SQL_STANDBY_STATUS), 1)
        self.assertIsNone(monitor.last_check_time)
        self.clock.advance(1)  # t=5: the query times out, the check ends
        self.assertEqual(monitor.last_check_time, 5)
        self.assertTrue(self.queries.pending[0].called)
        self.assertEqual(len(self.logs.containing("did not answer")), 1)
        self.assertEqual(self.cluster.nodes[2].replication_state, "streaming")
        self.clock.advance(1)  # t=6: the next period runs
        self.assertEqual(self.queries.count(1, SQL_STANDBY_STATUS), 2)

    def test_an_exception_in_a_check_is_logged_and_the_loop_continues(self) -> None:
        self.healthy()
        real = replication.assess_standby
        calls: List[int] = []

        def broken(*args: Any) -> StandbyState:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("bug in the check")
            return real(*args)

        self.patch(replication, "assess_standby", broken)
        monitor = self.monitor()
        monitor.startService()
        failures = self.logs.failures()
        self.assertEqual(len(failures), 1)
        self.assertIsInstance(failures[0]["log_failure"].value, RuntimeError)
        self.clock.advance(10)
        self.assertEqual(self.cluster.nodes[1].replication_delay, 1024)
        self.assertEqual(monitor.last_check_time, 10)
        self.assertEqual(len(self.logs.failures()), 1)

    def test_a_query_function_that_raises_is_a_node_failure(self) -> None:
        self.healthy()

        def raising(reactor, node, credentials, database, sql, timeout):
            if node.node_id == 2 and sql == SQL_STANDBY_STATUS:
                raise RuntimeError("boom")
            return self.queries(reactor, node, credentials, database, sql, timeout)

        monitor = self.monitor()
        monitor.query = raising
        monitor.startService()
        self.assertEqual(self.cluster.nodes[2].pg_role, "unknown")
        self.assertEqual(self.cluster.nodes[1].replication_delay, 1024)
        self.assertEqual(len(self.logs.failures()), 1)
        self.clock.advance(10)
        self.assertEqual(monitor.last_check_time, 10)

    def test_sr_check_period_zero_means_no_loop(self) -> None:
        self.healthy()
        monitor = self.monitor(sr_check_period=0)
        monitor.startService()
        # The primary is still searched for, once.
        self.assertEqual(self.queries.count(0, SQL_IS_IN_RECOVERY), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(3600)
        self.assertEqual([sql for _, _, sql in self.queries.calls], [SQL_IS_IN_RECOVERY] * 3)
        self.successResultOf(monitor.refresh_now())
        self.assertEqual(len(self.queries.calls), 3)
        self.assertFalse(monitor.checks_enabled)

    def test_empty_sr_check_user_assumes_node_0(self) -> None:
        self.healthy()
        monitor = self.monitor(sr_check_user="")
        monitor.credentials = BackendCredentials("")
        monitor.startService()
        self.assertEqual(self.queries.calls, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIs(self.cluster.primary(), self.cluster.nodes[0])
        self.assertEqual(len(self.logs.containing("node 0 is assumed to be the primary")), 1)

    def test_empty_sr_check_user_with_always_primary(self) -> None:
        monitor = self.monitor(
            sr_check_user="",
            sr_check_period=0,
            backends=[{"hostname": "h0"}, {"hostname": "h1", "flag": "ALWAYS_PRIMARY"}],
        )
        monitor.credentials = BackendCredentials("")
        monitor.startService()
        self.assertIs(self.cluster.primary(), self.cluster.nodes[1])
        self.assertEqual(self.queries.calls, [])
        self.assertEqual(self.logs.containing("assumed"), [])

    def test_always_primary_still_measures_delay(self) -> None:
        self.healthy()
        monitor = self.monitor(
            backends=[
                {"hostname": "h0", "flag": "ALWAYS_PRIMARY"},
                {"hostname": "h1", "application_name": "node1"},
            ]
        )
        monitor.startService()
        self.assertEqual(self.queries.count(0, SQL_IS_IN_RECOVERY), 0)
        self.assertEqual(self.cluster.nodes[1].replication_delay, 1024)

    def test_raw_mode_checks_nothing(self) -> None:
        self.healthy()
        monitor = self.monitor(backend_clustering_mode="raw")
        monitor.startService()
        self.assertEqual(self.queries.calls, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_refresh_now_runs_a_check(self) -> None:
        self.healthy()
        monitor = self.monitor()
        self.clock.advance(7)
        self.successResultOf(monitor.refresh_now())
        self.assertEqual(monitor.last_check_time, 7)
        self.assertEqual(self.cluster.nodes[1].replication_delay, 1024)

    def test_refresh_now_shares_the_running_check(self) -> None:
        self.healthy()
        del self.queries.answers[(1, SQL_STANDBY_STATUS)]  # hangs
        monitor = self.monitor()
        monitor.startService()
        first, second = monitor.refresh_now(), monitor.refresh_now()
        self.assertNoResult(first)
        self.assertEqual(self.queries.count(1, SQL_STANDBY_STATUS), 1)
        self.queries.pending[0].callback(result(["t", "0/3000000"]))
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        self.assertEqual(self.cluster.nodes[1].replication_delay, 0)

    def test_stopping_cancels_the_running_check_quietly(self) -> None:
        self.healthy()
        del self.queries.answers[(1, SQL_STANDBY_STATUS)]  # hangs
        monitor = self.monitor()
        monitor.startService()
        waiter = monitor.refresh_now()
        monitor.stopService()
        self.assertTrue(self.queries.pending[0].called)
        self.assertIsNone(self.successResultOf(waiter))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.logs.containing("failed"), [])
        self.assertIsNone(monitor.last_check_time)


# -- check credentials -----------------------------------------------------------------


class CheckCredentialsTests(SynchronousTestCase):
    passwd = PoolPasswd.parse("checker:TEXTsecret\nhashed:md5" + "0" * 32 + "\nlocked:AESabcdef\n")

    def test_configured_password_wins(self) -> None:
        creds = check_credentials(make_config(), self.passwd, "checker", "other")
        self.assertEqual(creds.password, "other")

    def test_configured_md5_hash(self) -> None:
        creds = check_credentials(make_config(), self.passwd, "x", "md5" + "a" * 32)
        self.assertEqual((creds.password, creds.md5_hash), (None, "md5" + "a" * 32))

    def test_pool_passwd_plaintext(self) -> None:
        creds = check_credentials(make_config(), self.passwd, "checker", "")
        self.assertEqual((creds.user, creds.password), ("checker", "secret"))

    def test_pool_passwd_md5_hash(self) -> None:
        creds = check_credentials(make_config(), self.passwd, "hashed", "")
        self.assertEqual((creds.password, creds.md5_hash), (None, "md5" + "0" * 32))

    def test_no_password_anywhere(self) -> None:
        creds = check_credentials(make_config(), self.passwd, "nobody", "")
        self.assertEqual(creds, BackendCredentials("nobody"))

    def test_aes_entry_is_refused_loudly(self) -> None:
        self.assertRaises(
            UnsupportedSecretError, check_credentials, make_config(), self.passwd, "locked", ""
        )

    def test_check_failed_carries_node_and_reason(self) -> None:
        e = CheckFailed(3, "it broke", "28P01")
        self.assertEqual(
            (e.node_id, e.reason, e.sqlstate, str(e)), (3, "it broke", "28P01", "it broke")
        )
        self.assertEqual(nodecheck.CHECK_APPLICATION_NAME, "twisted_pgpool check")
