"""
SessionRouter: where each statement of a session goes, rule by rule
(Pgpool-II's, reference sections 3.1, 3.2 and 3.5), with classifications
made by the real classifier and no sockets.
"""

from __future__ import annotations

from typing import Iterable

from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.routing.router import ALL, BALANCE, NOWHERE, PRIMARY, Route, SessionRouter
from twisted_pgpool.sql.classifier import Classification, ClassifierConfig, classify
from twisted_pgpool.wire import messages

CONFIG = ClassifierConfig()


def c(sql: str) -> Classification:
    return classify(sql, CONFIG)


class RouterTestCase(SynchronousTestCase):
    mode = "transaction"

    def setUp(self) -> None:
        self.router = SessionRouter(disable_load_balance_on_write=self.mode)

    def send(self, *statements: str) -> Route:
        """
        Route and dispatch each statement as the session does; return the
        last route.
        """
        route = Route(BALANCE, "nothing sent")
        for sql in statements:
            classification = c(sql)
            route = self.router.route(classification)
            self.router.dispatched(classification, route)
        return route

    def where(self, sql: str) -> str:
        """
        Where C{sql} would go now (without sending it).
        """
        return self.router.route(c(sql)).target


class StatementClassTests(RouterTestCase):
    def test_select_is_balanced(self) -> None:
        self.assertEqual(self.where("SELECT 1"), BALANCE)

    def test_insert_goes_to_the_primary_with_the_classifiers_reason(self) -> None:
        self.assertEqual(
            self.router.route(c("INSERT INTO t VALUES (1)")), Route(PRIMARY, "INSERT modifies data")
        )

    def test_update_delete_and_ddl_go_to_the_primary(self) -> None:
        for sql in (
            "UPDATE t SET a = 1",
            "DELETE FROM t",
            "CREATE TABLE x (a int)",
            "TRUNCATE t",
            "VACUUM t",
        ):
            self.assertEqual(self.where(sql), PRIMARY, sql)

    def test_select_for_update_and_for_share_go_to_the_primary(self) -> None:
        self.assertEqual(self.where("SELECT * FROM t FOR UPDATE"), PRIMARY)
        self.assertEqual(self.where("SELECT * FROM t FOR SHARE"), PRIMARY)

    def test_select_into_goes_to_the_primary(self) -> None:
        self.assertEqual(self.where("SELECT a INTO b FROM t"), PRIMARY)

    def test_data_modifying_cte_goes_to_the_primary(self) -> None:
        self.assertEqual(
            self.where("WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x"), PRIMARY
        )

    def test_nextval_and_setval_go_to_the_primary(self) -> None:
        self.assertEqual(self.where("SELECT nextval('s')"), PRIMARY)
        self.assertEqual(self.where("SELECT setval('s', 1)"), PRIMARY)

    def test_no_load_balance_comment_goes_to_the_primary(self) -> None:
        self.assertEqual(self.where("/*NO LOAD BALANCE*/ SELECT 1"), PRIMARY)

    def test_multi_statement_query_goes_to_the_primary(self) -> None:
        self.assertEqual(self.where("SELECT 1; SELECT 2"), PRIMARY)

    def test_explain_is_balanced_and_explain_analyze_of_a_write_is_not(self) -> None:
        self.assertEqual(self.where("EXPLAIN SELECT 1"), BALANCE)
        self.assertEqual(self.where("EXPLAIN ANALYZE INSERT INTO t VALUES (1)"), PRIMARY)

    def test_copy_to_stdout_is_balanced_and_copy_from_is_not(self) -> None:
        self.assertEqual(self.where("COPY t TO STDOUT"), BALANCE)
        self.assertEqual(self.where("COPY t FROM STDIN"), PRIMARY)

    def test_sql_execute_goes_where_its_prepare_went(self) -> None:
        # The statement exists only on the node that ran PREPARE.
        prepare = self.send("PREPARE q AS SELECT 1")
        self.assertEqual(self.where("EXECUTE q"), prepare.target)

    def test_sql_execute_of_an_unknown_statement_goes_to_the_primary(self) -> None:
        self.assertEqual(self.where("EXECUTE never_prepared"), PRIMARY)

    def test_session_and_transaction_control_goes_to_every_session_node(self) -> None:
        for sql in (
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SET application_name = 'x'",
            "SAVEPOINT a",
            "RELEASE SAVEPOINT a",
            "DISCARD ALL",
            "RESET ALL",
        ):
            self.assertEqual(self.where(sql), ALL, sql)


class FunctionListTests(SynchronousTestCase):
    def route(self, sql: str, config: ClassifierConfig) -> str:
        return SessionRouter().route(classify(sql, config)).target

    def test_function_in_write_function_list_goes_to_the_primary(self) -> None:
        config = ClassifierConfig(write_function_list=("bump",))
        self.assertEqual(self.route("SELECT bump()", config), PRIMARY)
        self.assertEqual(self.route("SELECT other()", config), BALANCE)

    def test_function_not_in_read_only_function_list_goes_to_the_primary(self) -> None:
        config = ClassifierConfig(read_only_function_list=("safe_.*",))
        self.assertEqual(self.route("SELECT safe_read()", config), BALANCE)
        self.assertEqual(self.route("SELECT other()", config), PRIMARY)

    def test_query_pattern_goes_to_the_primary(self) -> None:
        config = ClassifierConfig(primary_routing_query_pattern_list=(".*fresh.*",))
        self.assertEqual(self.route("SELECT * FROM FRESH_orders", config), PRIMARY)
        self.assertEqual(self.route("SELECT * FROM orders", config), BALANCE)

    def test_leading_comment_is_balanced_with_allow_sql_comments(self) -> None:
        self.assertEqual(self.route("/* c */ SELECT 1", ClassifierConfig()), PRIMARY)
        self.assertEqual(
            self.route("/* c */ SELECT 1", ClassifierConfig(allow_sql_comments=True)), BALANCE
        )


class LoadBalanceModeTests(SynchronousTestCase):
    def test_reads_go_to_the_primary_when_balancing_is_off(self) -> None:
        router = SessionRouter(load_balance=False)
        self.assertEqual(router.route(c("SELECT 1")), Route(PRIMARY, "load balancing is off"))

    def test_session_control_still_goes_to_every_session_node(self) -> None:
        self.assertEqual(SessionRouter(load_balance=False).route(c("SET a = 1")).target, ALL)


class TemporaryTableTests(RouterTestCase):
    def test_read_of_a_temporary_table_goes_to_the_primary(self) -> None:
        self.send("CREATE TEMP TABLE scratch (a int)")
        self.assertEqual(
            self.router.route(c("SELECT * FROM scratch")), Route(PRIMARY, "reads a temporary table")
        )

    def test_read_of_other_tables_is_still_balanced(self) -> None:
        self.send("CREATE TEMP TABLE scratch (a int)")
        self.assertEqual(self.where("SELECT * FROM orders"), BALANCE)

    def test_temporary_table_names_are_case_insensitive(self) -> None:
        self.send("CREATE TEMPORARY TABLE Scratch (a int)")
        self.assertEqual(self.where("SELECT * FROM SCRATCH"), PRIMARY)

    def test_dropped_temporary_table_is_forgotten(self) -> None:
        self.send("CREATE TEMP TABLE scratch (a int)", "DROP TABLE scratch")
        self.assertEqual(self.where("SELECT * FROM scratch"), BALANCE)

    def test_discard_forgets_temporary_tables(self) -> None:
        self.send("CREATE TEMP TABLE scratch (a int)", "DISCARD TEMP")
        self.assertEqual(self.where("SELECT * FROM scratch"), BALANCE)

    def test_temporary_table_read_goes_to_the_primary_inside_a_transaction(self) -> None:
        self.send("CREATE TEMP TABLE scratch (a int)", "BEGIN")
        self.assertEqual(self.where("SELECT * FROM scratch"), PRIMARY)


class TransactionModeTests(RouterTestCase):
    """
    disable_load_balance_on_write = transaction (the default).
    """

    def test_read_before_a_write_is_balanced(self) -> None:
        self.send("BEGIN", "SELECT 1")
        self.assertEqual(self.where("SELECT 2"), BALANCE)

    def test_read_after_a_write_goes_to_the_primary(self) -> None:
        self.send("BEGIN", "INSERT INTO t VALUES (1)")
        self.assertEqual(
            self.router.route(c("SELECT 1")), Route(PRIMARY, "transaction has written")
        )

    def test_commit_ends_the_writing_transaction(self) -> None:
        self.send("BEGIN", "INSERT INTO t VALUES (1)", "COMMIT")
        self.assertEqual(self.where("SELECT 1"), BALANCE)

    def test_rollback_ends_the_writing_transaction(self) -> None:
        self.send("BEGIN", "INSERT INTO t VALUES (1)", "ROLLBACK")
        self.assertEqual(self.where("SELECT 1"), BALANCE)

    def test_a_later_transaction_is_balanced_again(self) -> None:
        self.send("BEGIN", "INSERT INTO t VALUES (1)", "COMMIT", "BEGIN")
        self.assertEqual(self.where("SELECT 1"), BALANCE)

    def test_write_outside_a_transaction_leaves_reads_balanced(self) -> None:
        self.send("INSERT INTO t VALUES (1)")
        self.assertEqual(self.where("SELECT 1"), BALANCE)

    def test_set_inside_a_transaction_counts_as_a_write(self) -> None:
        # Pgpool-II: anything but a read SELECT marks the transaction.
        self.send("BEGIN", "SET search_path = app")
        self.assertEqual(self.where("SELECT 1"), PRIMARY)

    def test_set_transaction_read_only_does_not_count_as_a_write(self) -> None:
        self.send("BEGIN", "SET TRANSACTION READ ONLY")
        self.assertEqual(self.where("SELECT 1"), BALANCE)

    def test_no_load_balance_comment_marks_the_transaction_writing(self) -> None:
        # psycopg2 issue #1229, as Pgpool-II behaves.
        self.send("BEGIN", "/*NO LOAD BALANCE*/ SELECT 1")
        self.assertEqual(self.where("SELECT 1"), PRIMARY)

    def test_savepoint_operations_do_not_end_the_transaction(self) -> None:
        self.send("BEGIN", "INSERT INTO t VALUES (1)", "SAVEPOINT a", "ROLLBACK TO SAVEPOINT a")
        self.assertTrue(self.router.in_transaction)
        self.assertEqual(self.where("SELECT 1"), PRIMARY)

    def test_commit_and_chain_starts_a_clean_transaction(self) -> None:
        self.send("BEGIN", "INSERT INTO t VALUES (1)", "COMMIT AND CHAIN")
        self.assertTrue(self.router.in_transaction)
        self.assertEqual(self.where("SELECT 1"), BALANCE)

    def test_prepare_transaction_ends_the_transaction(self) -> None:
        self.send("BEGIN", "INSERT INTO t VALUES (1)", "PREPARE TRANSACTION 'gx'")
        self.assertFalse(self.router.in_transaction)
        self.assertEqual(self.where("SELECT 1"), BALANCE)

    def test_failed_transaction_reads_go_to_the_primary(self) -> None:
        self.send("BEGIN", "SELECT 1")
        self.router.ready(messages.TRANSACTION_FAILED)
        self.assertEqual(self.router.route(c("SELECT 1")), Route(PRIMARY, "transaction has failed"))

    def test_rollback_clears_the_failure(self) -> None:
        self.send("BEGIN", "SELECT 1")
        self.router.ready(messages.TRANSACTION_FAILED)
        self.send("ROLLBACK")
        self.assertEqual(self.where("SELECT 1"), BALANCE)

    def test_serializable_transaction_reads_go_to_the_primary(self) -> None:
        self.send("BEGIN ISOLATION LEVEL SERIALIZABLE")
        self.assertEqual(
            self.router.route(c("SELECT 1")), Route(PRIMARY, "serializable transaction")
        )

    def test_set_transaction_serializable_sends_reads_to_the_primary(self) -> None:
        self.router = SessionRouter(disable_load_balance_on_write="off")
        self.send("BEGIN", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        self.assertEqual(self.where("SELECT 1"), PRIMARY)

    def test_session_default_serializable_applies_to_later_transactions(self) -> None:
        self.send(
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", "BEGIN"
        )
        self.assertEqual(self.where("SELECT 1"), PRIMARY)

    def test_session_default_serializable_sends_autocommit_reads_to_the_primary(self) -> None:
        # Pgpool-II balances them; but each is a serializable transaction,
        # which a standby would silently run with a weaker isolation (and
        # SHOW transaction_isolation would say so): conformance, psycopg
        # test_set_transaction_param_reset[isolation_level].
        self.send("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        self.assertEqual(self.where("SELECT 1"), PRIMARY)

    def test_set_config_of_serializable_counts_as_the_set(self) -> None:
        self.send("SELECT set_config('default_transaction_isolation', 'serializable', false)")
        self.assertEqual(self.where("SELECT 1"), PRIMARY)

    def test_transaction_opened_by_a_multi_statement_query_stays_on_the_primary(self) -> None:
        self.send("BEGIN; SELECT 1")
        self.assertEqual(self.where("SELECT 2"), PRIMARY)
        self.assertEqual(self.where("SAVEPOINT a"), PRIMARY)
        self.assertEqual(self.where("COMMIT"), PRIMARY)

    def test_ready_for_query_idle_ends_what_the_router_thought_was_open(self) -> None:
        self.send("BEGIN; SELECT 1")
        self.router.ready(messages.TRANSACTION_IDLE)
        self.assertFalse(self.router.in_transaction)
        self.assertEqual(self.where("SELECT 2"), BALANCE)

    def test_ready_for_query_in_block_opens_a_transaction(self) -> None:
        self.router.ready(messages.TRANSACTION_IN_BLOCK)
        self.assertTrue(self.router.in_transaction)


class OffModeTests(RouterTestCase):
    mode = "off"

    def test_read_after_a_write_in_a_transaction_stays_balanced(self) -> None:
        self.send("BEGIN", "INSERT INTO t VALUES (1)")
        self.assertEqual(self.where("SELECT 1"), BALANCE)


class AlwaysModeTests(RouterTestCase):
    mode = "always"

    def test_read_after_an_autocommit_write_goes_to_the_primary(self) -> None:
        self.send("INSERT INTO t VALUES (1)")
        self.assertEqual(self.router.route(c("SELECT 1")), Route(PRIMARY, "session has written"))

    def test_reads_stay_on_the_primary_after_commit(self) -> None:
        self.send("BEGIN", "INSERT INTO t VALUES (1)", "COMMIT")
        self.assertEqual(self.where("SELECT 1"), PRIMARY)

    def test_reads_before_any_write_are_balanced(self) -> None:
        self.send("SELECT 1", "BEGIN", "SELECT 2")
        self.assertEqual(self.where("SELECT 3"), BALANCE)


class TransTransactionModeTests(RouterTestCase):
    mode = "trans_transaction"

    def test_a_later_transactions_reads_go_to_the_primary(self) -> None:
        self.send("BEGIN", "INSERT INTO t VALUES (1)", "COMMIT", "BEGIN")
        self.assertEqual(
            self.router.route(c("SELECT 1")), Route(PRIMARY, "an earlier transaction wrote")
        )

    def test_autocommit_reads_after_the_transaction_are_balanced(self) -> None:
        self.send("BEGIN", "INSERT INTO t VALUES (1)", "COMMIT")
        self.assertEqual(self.where("SELECT 1"), BALANCE)

    def test_transactions_before_any_write_are_balanced(self) -> None:
        self.send("BEGIN", "SELECT 1", "COMMIT", "BEGIN")
        self.assertEqual(self.where("SELECT 1"), BALANCE)


class DmlAdaptiveModeTests(RouterTestCase):
    mode = "dml_adaptive"

    def test_read_of_a_written_table_goes_to_the_primary(self) -> None:
        self.send("BEGIN", "INSERT INTO orders VALUES (1)")
        self.assertEqual(
            self.router.route(c("SELECT * FROM orders")),
            Route(PRIMARY, "reads a table written in this transaction"),
        )

    def test_read_of_another_table_is_balanced(self) -> None:
        self.send("BEGIN", "INSERT INTO orders VALUES (1)")
        self.assertEqual(self.where("SELECT * FROM customers"), BALANCE)

    def test_join_with_a_written_table_goes_to_the_primary(self) -> None:
        self.send("BEGIN", "UPDATE orders SET a = 1")
        self.assertEqual(
            self.where("SELECT * FROM customers c JOIN orders o ON o.c = c.id"), PRIMARY
        )

    def test_written_tables_are_forgotten_at_commit(self) -> None:
        self.send("BEGIN", "INSERT INTO orders VALUES (1)", "COMMIT", "BEGIN")
        self.assertEqual(self.where("SELECT * FROM orders"), BALANCE)

    def test_unqualified_write_then_qualified_read_goes_to_the_primary(self) -> None:
        self.send("BEGIN", "INSERT INTO orders VALUES (1)")
        self.assertEqual(self.where("SELECT * FROM public.orders"), PRIMARY)

    def test_qualified_write_then_unqualified_read_goes_to_the_primary(self) -> None:
        self.send("BEGIN", "INSERT INTO public.orders VALUES (1)")
        self.assertEqual(self.where("SELECT * FROM orders"), PRIMARY)

    def test_writes_outside_a_transaction_are_not_tracked(self) -> None:
        self.send("INSERT INTO orders VALUES (1)", "BEGIN")
        self.assertEqual(self.where("SELECT * FROM orders"), BALANCE)


class BatchTests(RouterTestCase):
    def batch(self, statements: Iterable[str]) -> Route:
        return self.router.route_batch([c(sql) for sql in statements])

    def test_batch_of_reads_is_balanced(self) -> None:
        self.assertEqual(self.batch(["SELECT 1", "SELECT 2"]).target, BALANCE)

    def test_batch_with_a_write_goes_to_the_primary(self) -> None:
        self.assertEqual(
            self.batch(["SELECT 1", "INSERT INTO t VALUES (1)", "SELECT 2"]),
            Route(PRIMARY, "INSERT modifies data"),
        )

    def test_batch_with_session_control_goes_to_every_session_node(self) -> None:
        self.assertEqual(self.batch(["BEGIN", "SELECT 1"]).target, ALL)

    def test_batch_routes_reads_by_the_transaction_state(self) -> None:
        self.send("BEGIN", "INSERT INTO t VALUES (1)")
        self.assertEqual(self.batch(["SELECT 1"]).target, PRIMARY)


class NoPrimaryTests(RouterTestCase):
    """
    A session served by a standby because no primary was usable when it
    began: what certainly writes goes L{NOWHERE} (the session refuses it);
    everything else is routed as usual, L{PRIMARY} meaning the standby.
    """

    def setUp(self) -> None:
        self.router = SessionRouter(no_primary=True)

    def test_writes_go_nowhere(self) -> None:
        for sql in (
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "DELETE FROM t",
            "CREATE TABLE x (a int)",
            "TRUNCATE t",
            "COPY t FROM STDIN",
            "SELECT nextval('s')",
            "SELECT * FROM t FOR UPDATE",
            "SELECT 1; INSERT INTO t VALUES (1)",
            "PREPARE p AS DELETE FROM t",
        ):
            self.assertEqual(
                self.router.route(c(sql)),
                Route(NOWHERE, "a write, and the session has no primary"),
                sql,
            )

    def test_reads_and_session_control_are_routed_as_usual(self) -> None:
        self.assertEqual(self.where("SELECT 1"), BALANCE)
        self.assertEqual(self.where("BEGIN"), ALL)
        self.assertEqual(self.where("SET search_path = app"), ALL)

    def test_what_may_write_goes_to_the_standby_to_judge(self) -> None:
        for sql in ("SELECT my_function()", "/* app */ SELECT 1", "CALL p()", "DO $$ BEGIN END $$"):
            self.assertEqual(self.where(sql), PRIMARY, sql)

    def test_a_batch_with_a_write_goes_nowhere(self) -> None:
        self.assertEqual(
            self.router.route_batch(
                [c("BEGIN"), c("SELECT 1"), c("INSERT INTO t VALUES (1)")]
            ).target,
            NOWHERE,
        )

    def test_a_session_with_a_primary_sends_writes_to_it(self) -> None:
        self.assertEqual(SessionRouter().route(c("INSERT INTO t VALUES (1)")).target, PRIMARY)


class NativeReplicationTests(RouterTestCase):
    """
    Native replication mode: writes to every node (L{ALL}), reads balanced
    as in streaming replication mode, the main node (L{PRIMARY}) standing
    in for the primary.
    """

    def setUp(self) -> None:
        self.router = SessionRouter(native=True)

    def test_insert_update_delete_and_ddl_go_to_every_node(self) -> None:
        for sql in (
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "DELETE FROM t",
            "CREATE TABLE x (a int)",
            "TRUNCATE t",
            "SELECT nextval('s')",
            "SELECT * FROM t FOR UPDATE",
        ):
            self.assertEqual(self.where(sql), ALL, sql)

    def test_write_keeps_the_classifiers_reason(self) -> None:
        self.assertEqual(
            self.router.route(c("INSERT INTO t VALUES (1)")), Route(ALL, "INSERT modifies data")
        )

    def test_transaction_control_and_set_go_to_every_node(self) -> None:
        for sql in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT a", "SET x = 1"):
            self.assertEqual(self.where(sql), ALL, sql)

    def test_sql_prepare_goes_to_every_node(self) -> None:
        self.assertEqual(self.where("PREPARE p AS SELECT 1"), ALL)

    def test_read_outside_a_transaction_is_balanced(self) -> None:
        self.assertEqual(self.where("SELECT 1"), BALANCE)

    def test_read_after_an_autocommit_write_is_still_balanced(self) -> None:
        self.assertEqual(self.send("INSERT INTO t VALUES (1)", "SELECT 1").target, BALANCE)

    def test_read_in_a_transaction_before_a_write_is_balanced(self) -> None:
        self.assertEqual(self.send("BEGIN", "SELECT 1").target, BALANCE)

    def test_read_in_a_transaction_after_a_write_goes_to_the_main_node(self) -> None:
        self.assertEqual(
            self.send("BEGIN", "INSERT INTO t VALUES (1)", "SELECT 1"),
            Route(PRIMARY, "transaction has written"),
        )

    def test_read_after_the_writing_transaction_ends_is_balanced(self) -> None:
        self.assertEqual(
            self.send("BEGIN", "INSERT INTO t VALUES (1)", "COMMIT", "SELECT 1").target, BALANCE
        )

    def test_load_balance_off_sends_reads_to_the_main_node_only(self) -> None:
        self.router = SessionRouter(native=True, load_balance=False)
        self.assertEqual(self.where("SELECT 1"), PRIMARY)
        self.assertEqual(self.where("INSERT INTO t VALUES (1)"), ALL)

    def test_replicate_select_sends_balanced_reads_to_every_node(self) -> None:
        self.router = SessionRouter(native=True, replicate_select=True)
        self.assertEqual(self.router.route(c("SELECT 1")), Route(ALL, "replicate_select"))

    def test_replicate_select_leaves_reads_after_a_write_on_the_main_node(self) -> None:
        self.router = SessionRouter(native=True, replicate_select=True)
        self.assertEqual(self.send("BEGIN", "INSERT INTO t VALUES (1)", "SELECT 1").target, PRIMARY)

    def test_extended_batch_with_a_write_goes_to_every_node(self) -> None:
        self.assertEqual(
            self.router.route_batch([c("SELECT 1"), c("INSERT INTO t VALUES (1)")]).target, ALL
        )

    def test_streaming_mode_is_unchanged(self) -> None:
        self.router = SessionRouter()
        self.assertEqual(self.where("INSERT INTO t VALUES (1)"), PRIMARY)
