"""
C{SHOW POOL_BACKEND_STATS} without a network: the statement type of each
kind of statement (L{twisted_pgpool.backend.stats}), the counting in a
session (driven with the fake backends of L{tests.test_session_unit}) and
in a backend connection, the report and its metrics, and C{pg_status} of
C{SHOW POOL_NODES}.  The end-to-end tests are in
C{tests.test_e2e_backend_stats}.
"""

from __future__ import annotations

from typing import Any, List

from twisted.trial.unittest import SynchronousTestCase

from tests.promparse import parse, value
from tests.test_backend_protocol import RelayHarness, error_response
from tests.test_metrics import make_core
from tests.test_session_unit import SessionTestCase
from twisted_pgpool.admin.metrics import MetricsCollector
from twisted_pgpool.backend import stats as backendstats
from twisted_pgpool.backend.stats import (
    DDL,
    DELETE,
    ERROR,
    FATAL,
    INSERT,
    OTHER,
    PANIC,
    SELECT,
    UPDATE,
    count_error,
    counter_of_kind,
    counter_of_text,
)
from twisted_pgpool.cluster.health import HealthMonitor
from twisted_pgpool.service import ProxyCore
from twisted_pgpool.sql.classifier import ClassifierConfig, classify
from twisted_pgpool.wire import messages

#: Statements and the column Pgpool-II counts them in (its statistics.c).
EXAMPLES = [
    ("SELECT 1", SELECT),
    ("select * from t", SELECT),
    ("(SELECT 1)", SELECT),
    ("WITH x AS (SELECT 1) SELECT * FROM x", SELECT),
    ("VALUES (1)", SELECT),
    ("TABLE t", SELECT),
    ("SELECT 1 INTO t2", SELECT),
    ("INSERT INTO t VALUES (1)", INSERT),
    ("UPDATE t SET a = 1", UPDATE),
    ("DELETE FROM t", DELETE),
    ("CREATE TABLE t (a int)", DDL),
    ("DROP TABLE t", DDL),
    ("ALTER TABLE t ADD b int", DDL),
    ("TRUNCATE t", DDL),
    ("COPY t FROM STDIN", DDL),
    ("GRANT SELECT ON t TO app", DDL),
    ("DECLARE c CURSOR FOR SELECT 1", DDL),
    ("FETCH 1 FROM c", DDL),
    ("SET search_path = public", OTHER),
    ("RESET ALL", OTHER),
    ("SHOW server_version", OTHER),
    ("BEGIN", OTHER),
    ("START TRANSACTION", OTHER),
    ("COMMIT", OTHER),
    ("END", OTHER),
    ("ROLLBACK", OTHER),
    ("ABORT", OTHER),
    ("SAVEPOINT s", OTHER),
    ("RELEASE SAVEPOINT s", OTHER),
    ("ROLLBACK TO SAVEPOINT s", OTHER),
    ("PREPARE TRANSACTION 'x'", OTHER),
    ("COMMIT PREPARED 'x'", OTHER),
    ("ROLLBACK PREPARED 'x'", OTHER),
    ("EXPLAIN SELECT 1", OTHER),
    ("LOCK t", OTHER),
    ("LISTEN c", OTHER),
    ("NOTIFY c", OTHER),
    ("UNLISTEN c", OTHER),
    ("LOAD 'auto_explain'", OTHER),
    ("CHECKPOINT", OTHER),
    ("VACUUM t", OTHER),
    ("ANALYZE t", OTHER),
    ("DISCARD ALL", OTHER),
    ("PREPARE p AS SELECT 1", OTHER),
    ("EXECUTE p", OTHER),
    ("DEALLOCATE p", OTHER),
]


class ClassificationTests(SynchronousTestCase):
    def test_each_kind_counts_where_pgpool_counts_it(self) -> None:
        config = ClassifierConfig()
        found = [(sql, counter_of_kind(classify(sql, config).kind)) for sql, _ in EXAMPLES]
        self.assertEqual(found, EXAMPLES)

    def test_the_first_word_agrees_with_the_classifier(self) -> None:
        found = [(sql, counter_of_text(sql.encode() + b"\x00")) for sql, _ in EXAMPLES]
        self.assertEqual(found, EXAMPLES)

    def test_the_first_word_is_read_from_an_offset(self) -> None:
        payload = b"stmt1\x00  \n update t set a = 1\x00\x00\x00"
        self.assertEqual(counter_of_text(payload, 6), UPDATE)

    def test_a_longer_word_is_not_taken_for_the_statement_it_starts_like(self) -> None:
        self.assertEqual(
            (
                counter_of_text(b"deleted\x00"),
                counter_of_text(b"select\x00"),
                counter_of_text(b"Insert(\x00"),
            ),
            (DDL, SELECT, INSERT),
        )

    def test_text_starting_with_a_comment_is_left_to_the_classifier(self) -> None:
        self.assertIsNone(counter_of_text(b"/* hi */ INSERT INTO t VALUES (1)\x00"))
        self.assertIsNone(counter_of_text(b"-- hi\nSELECT 1\x00"))

    def test_a_multi_statement_string_counts_as_its_first_statement(self) -> None:
        sql = "INSERT INTO t VALUES (1); SELECT 1"
        self.assertEqual(
            (
                counter_of_kind(classify(sql, ClassifierConfig()).kind),
                counter_of_text(sql.encode()),
            ),
            (INSERT, INSERT),
        )

    def test_the_columns_are_pgpools_fourteen(self) -> None:
        self.assertEqual(
            backendstats.BACKEND_STATS_COLUMNS,
            (
                "node_id",
                "hostname",
                "port",
                "status",
                "role",
                "select_cnt",
                "insert_cnt",
                "update_cnt",
                "delete_cnt",
                "ddl_cnt",
                "other_cnt",
                "panic_cnt",
                "fatal_cnt",
                "error_cnt",
            ),
        )


def error_payload(*fields: bytes) -> bytes:
    return b"".join(field + b"\x00" for field in fields) + b"\x00"


class ErrorSeverityTests(SynchronousTestCase):
    def count(self, *payloads: bytes) -> List[int]:
        counts = [0, 0, 0]
        for payload in payloads:
            count_error(counts, payload)
        return counts

    def test_error_fatal_and_panic_are_counted_by_the_untranslated_severity(self) -> None:
        self.assertEqual(
            self.count(
                error_payload(b"SERROR", b"VERROR", b"C42P01", b"Mno table"),
                error_payload(b"SFEHLER", b"VERROR", b"C42P01", b"Mkeine Tabelle"),
                error_payload(b"SFATAL", b"VFATAL", b"C57P01", b"Mbye"),
                error_payload(b"SPANIC", b"VPANIC", b"CXX000", b"Moops"),
            ),
            [1, 1, 2],
        )

    def test_without_a_v_field_the_s_field_is_read(self) -> None:
        self.assertEqual(self.count(error_payload(b"SFATAL", b"C57P01", b"Mbye")), [0, 1, 0])

    def test_a_severity_in_the_message_text_is_not_counted(self) -> None:
        self.assertEqual(
            self.count(error_payload(b"SWARNING", b"VWARNING", b"C01000", b"MVERROR")), [0, 0, 0]
        )

    def test_a_backend_counts_errors_it_relays_in_the_counters_it_was_given(self) -> None:
        harness = RelayHarness(units=2)
        counts = harness.protocol.error_counts = [0, 0, 0]
        harness.server_says(
            error_response((b"S", b"ERROR"), (b"V", b"ERROR"), (b"C", b"42P01"), (b"M", b"x"))
        )
        harness.server_says(
            error_response((b"S", b"FATAL"), (b"V", b"FATAL"), (b"C", b"57P01"), (b"M", b"bye"))
        )
        self.assertEqual(counts, [0, 1, 1])
        self.assertEqual((counts[PANIC], counts[FATAL], counts[ERROR]), (0, 1, 1))


class RoutedSessionTests(SessionTestCase):
    """
    Weights 0:1: reads go to the standby (node 1).
    """

    def counts(self) -> List[List[int]]:
        return [node.statement_counts for node in self.core.cluster.nodes]

    def test_a_read_counts_on_the_node_that_runs_it(self) -> None:
        self.query("SELECT 1")
        self.assertEqual(self.counts(), [[0] * 6, [1, 0, 0, 0, 0, 0]])

    def test_writes_count_on_the_primary_by_type(self) -> None:
        for sql in [
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 2",
            "DELETE FROM t",
            "CREATE TABLE u (a int)",
        ]:
            self.query(sql)
            self.answer(self.primary)
        self.assertEqual(self.counts(), [[0, 1, 1, 1, 1, 0], [0] * 6])

    def test_a_statement_sent_to_both_nodes_counts_on_both(self) -> None:
        self.query("SELECT 1")
        self.answer(self.standby)
        self.query("SET search_path = public")
        self.assertEqual(self.counts(), [[0, 0, 0, 0, 0, 1], [1, 0, 0, 0, 0, 1]])

    def test_select_cnt_of_pool_nodes_is_the_same_counter(self) -> None:
        self.query("SELECT 1")
        self.answer(self.standby)
        self.query("BEGIN")
        self.answer(self.primary, 84)
        self.answer(self.standby, 84)
        self.query("INSERT INTO t VALUES (1)")
        self.answer(self.primary, 84)
        # After the write the transaction's reads go to the primary: a
        # SELECT there, not balanced, and still counted.
        self.query("SELECT 2")
        self.assertEqual([n.select_count for n in self.core.cluster.nodes], [1, 1])

    def test_each_execute_counts_once(self) -> None:
        self.send(
            messages.parse("s", "SELECT 1"),
            messages.bind("", "s"),
            messages.execute(),
            messages.bind("", "s"),
            messages.execute(),
            messages.sync(),
        )
        self.assertEqual(self.counts()[1][SELECT], 2)

    def test_an_execute_of_a_portal_bound_before_a_flush_counts(self) -> None:
        self.send(
            messages.parse("", "INSERT INTO t VALUES (1)"), messages.bind("", ""), messages.flush()
        )
        self.send(messages.execute(), messages.sync())
        self.assertEqual(self.counts()[0][INSERT], 1)

    def test_a_parse_alone_counts_nothing(self) -> None:
        self.send(messages.parse("s", "SELECT 1"), messages.sync())
        self.assertEqual(self.counts(), [[0] * 6, [0] * 6])

    def test_in_a_batch_for_both_nodes_the_standby_counts_only_what_it_ran(self) -> None:
        self.query("SELECT 1")
        self.answer(self.standby)
        self.send(
            messages.parse("", "BEGIN"),
            messages.bind("", ""),
            messages.execute(),
            messages.parse("", "INSERT INTO t VALUES (1)"),
            messages.bind("", ""),
            messages.execute(),
            messages.parse("", "COMMIT"),
            messages.bind("", ""),
            messages.execute(),
            messages.sync(),
        )
        self.assertEqual(self.counts(), [[0, 1, 0, 0, 0, 2], [1, 0, 0, 0, 0, 2]])

    def test_a_session_hands_its_nodes_error_counters_to_their_connections(self) -> None:
        self.query("SELECT 1")
        nodes = self.core.cluster.nodes
        self.assertIs(self.primary.error_counts, nodes[0].error_counts)  # type: ignore[attr-defined]
        self.assertIs(self.standby.error_counts, nodes[1].error_counts)  # type: ignore[attr-defined]


class DirectSessionTests(SessionTestCase):
    """
    Load balancing off: every message goes to the primary as it came,
    without classification.
    """

    settings = {"load_balance_mode": False}

    def counts(self) -> List[int]:
        return self.core.cluster.nodes[0].statement_counts

    def test_the_session_routes_nothing(self) -> None:
        self.assertEqual(self.session.client_message, self.session._direct_message)

    def test_simple_queries_count_by_their_first_word(self) -> None:
        for sql in [
            "SELECT 1",
            "insert into t values (1)",
            "UPDATE t SET a = 1",
            "DELETE FROM t",
            "CREATE TABLE u (a int)",
            "SET x = 1",
        ]:
            self.query(sql)
        self.assertEqual(self.counts(), [1, 1, 1, 1, 1, 1])

    def test_a_query_starting_with_a_comment_is_classified(self) -> None:
        self.query("/* app */ INSERT INTO t VALUES (1)")
        self.assertEqual(self.counts()[INSERT], 1)

    def test_each_execute_counts_its_statement(self) -> None:
        self.send(
            messages.parse("ins", "INSERT INTO t VALUES ($1)"),
            messages.bind("", "ins"),
            messages.execute(),
            messages.bind("p", "ins"),
            messages.execute("p"),
            messages.execute("p"),
            messages.sync(),
        )
        self.assertEqual(self.counts(), [0, 3, 0, 0, 0, 0])

    def test_a_closed_statement_is_forgotten(self) -> None:
        self.send(
            messages.parse("s", "SELECT 1"),
            messages.close("S", "s"),
            messages.bind("", "s"),
            messages.execute(),
            messages.sync(),
        )
        self.assertEqual(self.counts(), [0] * 6)

    def test_a_statement_prepared_with_a_comment_is_classified(self) -> None:
        self.send(
            messages.parse("", "-- x\nDELETE FROM t"),
            messages.bind("", ""),
            messages.execute(),
            messages.sync(),
        )
        self.assertEqual(self.counts()[DELETE], 1)


class ReportTests(SynchronousTestCase):
    def test_the_report_shows_each_nodes_counters(self) -> None:
        core = make_core()
        core.cluster.nodes[1].statement_counts[:] = [5, 0, 0, 0, 0, 2]
        core.cluster.nodes[0].error_counts[:] = [0, 1, 3]
        report = core.inspector.backend_stats_report()
        self.assertEqual(list(report.columns), list(backendstats.BACKEND_STATS_COLUMNS))
        self.assertEqual(
            report.rows,
            [
                [
                    "0",
                    "db1.example",
                    "5432",
                    "waiting",
                    "primary",
                    "0",
                    "0",
                    "0",
                    "0",
                    "0",
                    "0",
                    "0",
                    "1",
                    "3",
                ],
                [
                    "1",
                    "db2.example",
                    "5433",
                    "waiting",
                    "standby",
                    "5",
                    "0",
                    "0",
                    "0",
                    "0",
                    "2",
                    "0",
                    "0",
                    "0",
                ],
            ],
        )

    def test_show_pool_backend_stats_is_answered(self) -> None:
        core = make_core()
        self.assertEqual(core.inspector.match(b"SHOW POOL_BACKEND_STATS\x00"), "pool_backend_stats")
        answer = core.inspector.answer("pool_backend_stats", None)  # type: ignore[arg-type]
        self.assertEqual(answer[0][:1], b"T")
        self.assertEqual(answer[-1], messages.command_complete("SELECT 2"))

    def test_select_cnt_agrees_with_show_pool_nodes(self) -> None:
        core = make_core()
        core.cluster.nodes[1].statement_counts[SELECT] = 4
        nodes = [r["select_cnt"] for r in core.inspector.nodes_report().records()]
        stats = [r["select_cnt"] for r in core.inspector.backend_stats_report().records()]
        self.assertEqual((nodes, stats), (["0", "4"], ["0", "4"]))

    def test_metrics_are_the_reports_values_under_pgpool2_exporters_names(self) -> None:
        core = make_core()
        core.cluster.nodes[0].statement_counts[:] = [1, 2, 3, 4, 5, 6]
        core.cluster.nodes[0].error_counts[:] = [7, 8, 9]
        families = parse(MetricsCollector(core).render().decode("utf-8"))
        labels = {"hostname": "db1.example", "port": "5432", "role": "primary"}
        record = core.inspector.backend_stats_report().records()[0]
        for column in backendstats.STATEMENT_COLUMNS + backendstats.ERROR_COLUMNS:
            name = "pgpool2_pool_backend_stats_" + column
            self.assertEqual(
                (families[name].type, value(families, name, **labels)),
                ("counter", float(record[column])),
                name,
            )
        self.assertEqual(value(families, "pgpool2_pool_backend_stats_status", **labels), 1.0)


class PgStatusTests(SynchronousTestCase):
    def pg_status(self, core: ProxyCore) -> List[str]:
        return [r["pg_status"] for r in core.inspector.nodes_report().records()]

    def core_with_health(self, **settings: Any) -> ProxyCore:
        core = make_core(**settings)
        core.health = HealthMonitor(core.reactor, core)
        return core

    def test_unknown_without_health_checks(self) -> None:
        self.assertEqual(self.pg_status(make_core()), ["unknown", "unknown"])

    def test_unknown_before_the_first_check(self) -> None:
        core = self.core_with_health(health_check_period=10)
        self.assertEqual(self.pg_status(core), ["unknown", "unknown"])

    def test_the_last_checks_verdict(self) -> None:
        core = self.core_with_health(health_check_period=10)
        assert core.health is not None
        core.health.checks[0].stats.last_successful_health_check = 100.0
        core.health.checks[1].stats.last_successful_health_check = 100.0
        core.health.checks[1].stats.last_failed_health_check = 160.0
        self.assertEqual(self.pg_status(core), ["up", "down"])

    def test_up_again_after_a_later_success(self) -> None:
        core = self.core_with_health(health_check_period=10)
        assert core.health is not None
        stats = core.health.checks[0].stats
        stats.last_failed_health_check, stats.last_successful_health_check = 100.0, 110.0
        self.assertEqual(self.pg_status(core)[0], "up")

    def test_unknown_when_checks_are_off_for_the_node(self) -> None:
        core = self.core_with_health(health_check_period=0)
        assert core.health is not None
        core.health.checks[0].stats.last_successful_health_check = 100.0
        self.assertEqual(self.pg_status(core)[0], "unknown")
