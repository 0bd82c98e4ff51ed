"""
Tests for L{twisted_pgpool.admin.recovery}: the online recovery flow, driven
with a L{Clock}, a fake connection to the primary that records the
statements, and a fake check of the started node.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.admin import recovery as recovery_module
from twisted_pgpool.admin.recovery import (
    OnlineRecovery,
    RecoveryFailed,
    recovery_call,
    remote_start_call,
)
from twisted_pgpool.backend.protocol import InternalResult
from twisted_pgpool.cluster.model import STATUS_DOWN, STATUS_UP
from twisted_pgpool.config import config_from_dict
from twisted_pgpool.testing.doubles import FakeBackend, FakeCore, FakeFrontend, FakeSession
from twisted_pgpool.wire import messages


class RecoveryTestCase(SynchronousTestCase):
    def make(self, mode: str = "streaming_replication", **settings: Any) -> OnlineRecovery:
        self.config = config_from_dict(
            dict(
                {
                    "backends": [
                        {"hostname": "db0", "port": 5432, "data_directory": "/data/0"},
                        {"hostname": "db1", "port": 5433, "data_directory": "/data/1"},
                    ],
                    "pool_passwd": "",
                    "backend_clustering_mode": mode,
                    "recovery_user": "postgres",
                    "recovery_1st_stage_command": "recovery_1st_stage",
                },
                **settings,
            )
        )
        self.core = FakeCore(self.config)
        nodes = self.core.cluster.nodes
        self.core.cluster.set_status(nodes[0], STATUS_UP, "test")
        self.core.cluster.set_status(nodes[1], STATUS_DOWN, "test")
        self.core.cluster.set_primary(nodes[0], "test")
        self.clock = Clock()
        # The connection to the primary, node 0.
        self.connection = FakeBackend(0)
        self.connected: List[Any] = []
        self.checks: List[Any] = []
        self.check_answers: List[bool] = []
        self.attached: List[Any] = []
        self.attach_result: Optional[defer.Deferred] = None

        async def connect(
            reactor: Any, node: Any, credentials: Any, database: str, timeout: float
        ) -> FakeBackend:
            self.connected.append((node.node_id, credentials.user, database))
            return self.connection

        async def check(
            reactor: Any, node: Any, credentials: Any, database: str, timeout: float
        ) -> bool:
            self.checks.append((node.node_id, database, self.clock.seconds()))
            return self.check_answers.pop(0) if self.check_answers else True

        def attach(node_id: int, reason: str) -> defer.Deferred:
            self.attached.append((node_id, reason))
            self.core.cluster.set_status(self.core.cluster.nodes[node_id], STATUS_UP, reason)
            if self.attach_result is not None:
                return self.attach_result
            return defer.succeed(True)

        return OnlineRecovery(self.clock, self.core, attach, connect=connect, check=check)

    def client(self, busy: bool = False, status: int = messages.TRANSACTION_IDLE) -> FakeFrontend:
        """
        A client connected to the proxy; failing it closes it.
        """
        return FakeFrontend(self.core.sessions, FakeSession(busy, status), leaves_when_failed=True)

    def advance(self, seconds: float, step: float = 1.0) -> None:
        while seconds > 0:
            self.clock.advance(min(step, seconds))
            seconds -= step


class CallTests(RecoveryTestCase):
    def test_recovery_call_has_pgpool_43s_seven_arguments(self) -> None:
        self.make()
        nodes = self.core.cluster.nodes
        self.assertEqual(
            recovery_call("recovery_1st_stage", nodes[0], nodes[1]),
            "SELECT pgpool_recovery('recovery_1st_stage', 'db1', '/data/1', "
            "'5432', 1, '5433', 'db0')",
        )

    def test_socket_directory_hosts_are_passed_as_localhost(self) -> None:
        self.make(
            backends=[
                {"hostname": "/var/run/postgresql", "data_directory": "/d0"},
                {"hostname": "/tmp", "port": 5433, "data_directory": "/d1"},
            ]
        )
        nodes = self.core.cluster.nodes
        self.assertEqual(
            recovery_call("s", nodes[0], nodes[1]),
            "SELECT pgpool_recovery('s', 'localhost', '/d1', '5432', 1, '5433', 'localhost')",
        )
        self.assertEqual(
            remote_start_call(nodes[1]), "SELECT pgpool_remote_start('localhost', '/d1')"
        )

    def test_quotes_in_values_are_doubled(self) -> None:
        self.make(backends=[{"hostname": "db0"}, {"hostname": "db1", "data_directory": "/it's"}])
        self.assertEqual(
            remote_start_call(self.core.cluster.nodes[1]),
            "SELECT pgpool_remote_start('db1', '/it''s')",
        )


class StreamingReplicationTests(RecoveryTestCase):
    def test_first_stage_remote_start_then_attach(self) -> None:
        recovery = self.make()
        d = recovery.recover(1)
        self.successResultOf(d)
        self.assertEqual(self.connected, [(0, "postgres", "postgres")])
        self.assertEqual(
            self.connection.internal,
            [
                "SET statement_timeout To 0",
                "SELECT pgpool_recovery('recovery_1st_stage', 'db1', '/data/1', "
                "'5432', 1, '5433', 'db0')",
                "SELECT pgpool_remote_start('db1', '/data/1')",
            ],
        )
        self.assertEqual(self.connection.terminated, 1)
        self.assertEqual(self.checks, [(1, "postgres", 0.0)])
        self.assertEqual(self.attached, [(1, "recovered by pcp_recovery_node")])
        self.assertIsNone(recovery.in_progress)

    def test_no_checkpoint_and_no_second_stage_in_streaming_replication(self) -> None:
        recovery = self.make(recovery_2nd_stage_command="second")
        self.client()
        self.successResultOf(recovery.recover(1))
        self.assertNotIn("CHECKPOINT", self.connection.internal)
        self.assertFalse(any("second" in s for s in self.connection.internal))

    def test_empty_first_stage_command_only_starts_the_node(self) -> None:
        recovery = self.make(recovery_1st_stage_command="")
        self.successResultOf(recovery.recover(1))
        self.assertEqual(self.connection.internal, ["SELECT pgpool_remote_start('db1', '/data/1')"])

    def test_recovery_database_is_where_it_logs_in(self) -> None:
        recovery = self.make(recovery_database="template1")
        self.successResultOf(recovery.recover(1))
        self.assertEqual(self.connected, [(0, "postgres", "template1")])

    def test_in_progress_while_the_first_stage_runs(self) -> None:
        recovery = self.make()
        first_stage: defer.Deferred = defer.Deferred()
        self.connection.replies["SELECT pgpool_recovery"] = first_stage
        d = recovery.recover(1)
        self.assertNoResult(d)
        self.assertEqual(
            (recovery.in_progress.node_id, recovery.in_progress.step), (1, "1st stage")
        )
        self.assertEqual(self.core.cluster.nodes[1].status, STATUS_DOWN)
        second = recovery.recover(1)
        failure = self.failureResultOf(second, RecoveryFailed)
        self.assertEqual(
            failure.value.detail, "pgpool-II is already processing another recovery request."
        )
        first_stage.callback(InternalResult(rows=[(b"t",)]))
        self.successResultOf(d)
        self.assertIsNone(recovery.in_progress)

    def test_failed_first_stage_is_reported_and_nothing_is_attached(self) -> None:
        recovery = self.make()
        self.connection.replies["SELECT pgpool_recovery"] = InternalResult(
            error={"S": "ERROR", "C": "XX000", "M": "pgpool_recovery failed"}
        )
        failure = self.failureResultOf(recovery.recover(1), RecoveryFailed)
        self.assertEqual(
            failure.value.message, 'executing recovery, execution of command failed at "1st stage"'
        )
        self.assertEqual(
            failure.value.detail,
            'command:"recovery_1st_stage": pgpool_recovery failed (SQLSTATE XX000)',
        )
        self.assertNotIn("SELECT pgpool_remote_start('db1', '/data/1')", self.connection.internal)
        self.assertEqual(self.connection.terminated, 1)
        self.assertEqual(self.attached, [])
        self.assertIsNone(recovery.in_progress)

    def test_failed_remote_start_is_reported(self) -> None:
        recovery = self.make()
        self.connection.replies["SELECT pgpool_remote_start"] = InternalResult(
            error={"S": "ERROR", "M": "pgpool_remote_start failed"}
        )
        failure = self.failureResultOf(recovery.recover(1), RecoveryFailed)
        self.assertEqual(
            failure.value.message,
            'executing remote start failed with error: "pgpool_remote_start failed"',
        )
        self.assertEqual(self.attached, [])

    def test_unreachable_primary_is_reported(self) -> None:
        recovery = self.make()

        async def refuse(*args: Any) -> Any:
            raise ConnectionRefusedError("connection refused")

        recovery.connect = refuse
        failure = self.failureResultOf(recovery.recover(1), RecoveryFailed)
        self.assertEqual(
            failure.value.message, "node recovery failed, unable to connect to main node: 0 "
        )

    def test_waits_for_the_node_every_three_seconds(self) -> None:
        recovery = self.make()
        self.check_answers = [False, False, True]
        d = recovery.recover(1)
        self.assertNoResult(d)
        self.advance(3)
        self.assertNoResult(d)
        self.advance(3)
        self.successResultOf(d)
        self.assertEqual(
            self.checks, [(1, "postgres", 0.0), (1, "postgres", 3.0), (1, "postgres", 6.0)]
        )
        self.assertEqual(len(self.attached), 1)

    def test_template1_after_four_tries_on_postgres(self) -> None:
        recovery = self.make()
        self.check_answers = [False] * 4 + [True]
        d = recovery.recover(1)
        self.advance(12)
        self.successResultOf(d)
        self.assertEqual(
            [database for _, database, _ in self.checks], ["postgres"] * 4 + ["template1"]
        )

    def test_node_that_never_starts_fails_after_recovery_timeout(self) -> None:
        recovery = self.make(recovery_timeout=9)
        self.check_answers = [False] * 100
        d = recovery.recover(1)
        # postgres: 4 tries 3 s apart; template1: 9 // 3 + 1 = 4 tries.
        self.advance(4 * 3 + 3 * 3)
        self.assertNoResult(d)
        self.advance(3)
        failure = self.failureResultOf(d, RecoveryFailed)
        self.assertEqual(failure.value.message, "recovery is checking if postmaster is started")
        self.assertEqual(
            failure.value.detail,
            'postmaster on hostname:"db1" database:"template1" '
            'user:"postgres" failed to start in 9 second',
        )
        self.assertEqual(len(self.checks), 8)
        self.assertEqual(self.attached, [])
        self.assertIsNone(recovery.in_progress)

    def test_down_primary_cannot_serve_a_recovery(self) -> None:
        recovery = self.make()
        self.core.cluster.set_status(self.core.cluster.nodes[0], STATUS_DOWN, "t")
        failure = self.failureResultOf(recovery.recover(1), RecoveryFailed)
        self.assertEqual(failure.value.message, "node recovery failed, there is no primary node")
        self.assertEqual(self.connected, [])

    def test_unused_node_is_refused(self) -> None:
        recovery = self.make()
        self.core.cluster.set_status(self.core.cluster.nodes[1], "unused", "t")
        failure = self.failureResultOf(recovery.recover(1), RecoveryFailed)
        self.assertEqual(failure.value.message, "node recovery failed, node id: 1 is unused")

    def test_password_from_the_configuration(self) -> None:
        recovery = self.make(recovery_password="s3cret")
        seen: List[Any] = []

        async def connect(
            reactor: Any, node: Any, credentials: Any, database: str, timeout: float
        ) -> FakeBackend:
            seen.append(credentials)
            return self.connection

        recovery.connect = connect
        self.successResultOf(recovery.recover(1))
        self.assertEqual((seen[0].user, seen[0].password), ("postgres", "s3cret"))


class NativeReplicationTests(RecoveryTestCase):
    def make_native(self, **settings: Any) -> OnlineRecovery:
        return self.make(
            "native_replication", recovery_2nd_stage_command="recovery_2nd_stage", **settings
        )

    def test_checkpoints_and_both_stages_when_no_client_is_connected(self) -> None:
        recovery = self.make_native()
        self.successResultOf(recovery.recover(1))
        self.assertEqual(
            self.connection.internal,
            [
                "CHECKPOINT",
                "SET statement_timeout To 0",
                "SELECT pgpool_recovery('recovery_1st_stage', 'db1', '/data/1', "
                "'5432', 1, '5433', 'db0')",
                "CHECKPOINT",
                "SET statement_timeout To 0",
                "SELECT pgpool_recovery('recovery_2nd_stage', 'db1', '/data/1', "
                "'5432', 1, '5433', 'db0')",
                "SELECT pgpool_remote_start('db1', '/data/1')",
            ],
        )

    def test_second_stage_waits_for_the_clients_to_leave(self) -> None:
        recovery = self.make_native()
        frontend = self.client(busy=True)
        d = recovery.recover(1)
        self.assertEqual(recovery.in_progress.step, "2nd stage")
        self.assertEqual(
            sum(s.startswith("SELECT pgpool_recovery") for s in self.connection.internal), 1
        )
        self.advance(6)
        self.assertNoResult(d)
        self.core.sessions.discard(frontend)
        self.advance(3)
        self.successResultOf(d)
        self.assertEqual(frontend.failures, [])
        self.assertIn(
            "SELECT pgpool_recovery('recovery_2nd_stage', 'db1', "
            "'/data/1', '5432', 1, '5433', 'db0')",
            self.connection.internal,
        )

    def test_clients_that_stay_fail_the_recovery_after_recovery_timeout(self) -> None:
        recovery = self.make_native(recovery_timeout=9)
        self.client(busy=True)
        d = recovery.recover(1)
        self.advance(4 * 3)
        failure = self.failureResultOf(d, RecoveryFailed)
        self.assertEqual(
            failure.value.message,
            "node recovery failed, waiting connection closed in the other pgpools timeout",
        )
        self.assertEqual(
            sum(s.startswith("SELECT pgpool_recovery") for s in self.connection.internal), 1
        )
        self.assertEqual(self.attached, [])

    def test_idle_limit_minus_one_disconnects_idle_clients_at_once(self) -> None:
        recovery = self.make_native(client_idle_limit_in_recovery=-1)
        idle = self.client()
        in_transaction = self.client(status=messages.TRANSACTION_IN_BLOCK)
        d = recovery.recover(1)
        [error] = idle.failures
        self.assertEqual(
            (error.sqlstate, error.message),
            ("57P05", "terminating connection due to client_idle_limit_in_recovery:-1 is reached"),
        )
        self.assertEqual(in_transaction.failures, [])
        self.assertNoResult(d)
        in_transaction.session.transaction_status = messages.TRANSACTION_IDLE
        self.advance(3)
        self.assertEqual(len(in_transaction.failures), 1)
        self.advance(3)
        self.successResultOf(d)

    def test_idle_limit_disconnects_clients_idle_that_long(self) -> None:
        recovery = self.make_native(client_idle_limit_in_recovery=5)
        idle = self.client()
        d = recovery.recover(1)
        self.advance(3)
        self.assertEqual(idle.failures, [])
        self.advance(3)
        [error] = idle.failures
        self.assertEqual(
            error.message,
            "terminating connection due to client_idle_limit_in_recovery:5 is reached",
        )
        self.advance(3)
        self.successResultOf(d)

    def test_idle_limit_zero_leaves_idle_clients_alone(self) -> None:
        recovery = self.make_native()
        idle = self.client()
        recovery.recover(1)
        self.advance(30)
        self.assertEqual(idle.failures, [])

    def test_scripts_run_on_the_main_node(self) -> None:
        recovery = self.make_native()
        self.core.cluster.set_status(self.core.cluster.nodes[0], STATUS_DOWN, "t")
        self.core.cluster.set_status(self.core.cluster.nodes[1], STATUS_UP, "t")
        self.successResultOf(recovery.recover(0))
        self.assertEqual(self.connected, [(1, "postgres", "postgres")])
        self.assertIn(
            "SELECT pgpool_recovery('recovery_1st_stage', 'db0', "
            "'/data/0', '5433', 0, '5432', 'db1')",
            self.connection.internal,
        )


class ModeTests(RecoveryTestCase):
    def test_raw_mode_has_no_online_recovery(self) -> None:
        recovery = self.make("raw")
        failure = self.failureResultOf(recovery.recover(1), RecoveryFailed)
        self.assertEqual(
            failure.value.detail,
            "recovery request is only allowed in replication and streaming replication modes.",
        )

    def test_module_logs_in_pgpool_words(self) -> None:
        from twisted.logger import LogLevel, formatEvent

        events: List[Dict[str, Any]] = []
        observer = recovery_module.log.observer
        recovery_module.log.observer = events.append  # type: ignore[assignment]
        self.addCleanup(setattr, recovery_module.log, "observer", observer)
        recovery = self.make()
        self.successResultOf(recovery.recover(1))
        lines = [formatEvent(e) for e in events if e["log_level"] >= LogLevel.info]
        for expected in (
            "starting recovering node 1",
            "node recovery, 1st stage is done",
            "node recovery, node: 1 restarted",
            "recovery done",
        ):
            self.assertIn(expected, lines)
