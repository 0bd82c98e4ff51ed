"""
Tests for L{twisted_pgpool.sql.classifier}.

The heart is a table of statements with the classification expected for
each (Pgpool-II's rules, plus our documented deviations); every row becomes
its own test method, named after its number and statement, so a failure
names the statement.  The rest covers configuration, the cache and
properties over generated text.
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.sql.classifier import (
    DEFAULT_CONFIG,
    Classification,
    ClassifierConfig,
    classify,
    classify_uncached,
    databases_to_free,
    statement_shape,
)

Flags = Dict[str, Any]

# (statement, expected is_read_only, expected other fields)
CORPUS: List[Tuple[str, bool, Flags]] = [
    # --- Plain reads, case and whitespace ---------------------------------
    ("SELECT 1", True, {"kind": "select", "statements": 1, "marks_transaction_writing": False}),
    ("select 1", True, {}),
    ("SeLeCt 1", True, {}),
    (
        "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
        True,
        {"touches_temp_table_candidates": ("pgbench_accounts",), "functions": ()},
    ),
    ("  \n\tSELECT 1", True, {}),
    ("SELECT * FROM t WHERE a = 'x'", True, {"touches_temp_table_candidates": ("t",)}),
    ("(SELECT 1)", True, {"kind": "select"}),
    ("((select 1) union (select 2))", True, {}),
    ("TABLE t", True, {"kind": "table", "touches_temp_table_candidates": ("t",)}),
    ("table public.t", True, {"touches_temp_table_candidates": ("public.t",)}),
    ("WITH x AS (SELECT 1) SELECT * FROM x", True, {"kind": "with"}),
    (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
        True,
        {"functions": ()},
    ),
    ("with x as materialized (select 1) select * from x", True, {}),
    ("WITH x AS NOT MATERIALIZED (SELECT 1) SELECT * FROM x", True, {}),
    ("WITH x AS (SELECT 1) (SELECT * FROM x)", True, {}),
    (
        "SELECT count(*), sum(a), max(b) FROM t GROUP BY c",
        True,
        {"functions": ("count", "sum", "max")},
    ),
    ("SELECT lower(name), upper(name), length(name) FROM users", True, {}),
    ("SELECT now()", True, {}),
    ("SELECT current_timestamp, current_user", True, {"functions": ()}),
    (
        "SELECT coalesce(a, 0), greatest(1, 2), least(3, 4), nullif(a, b) FROM t",
        True,
        {"functions": ()},
    ),
    ("SELECT a::numeric(10,2) FROM t", True, {"functions": ()}),
    ("SELECT CAST(a AS varchar(20)) FROM t", True, {"functions": ()}),
    ("SELECT * FROM t WHERE id IN (1, 2, 3)", True, {}),
    (
        "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)",
        True,
        {"touches_temp_table_candidates": ("t", "u")},
    ),
    (
        "SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t",
        True,
        {"functions": ("row_number",)},
    ),
    ("SELECT count(*) FILTER (WHERE a > 1) FROM t", True, {"functions": ("count",)}),
    ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a) FROM t", True, {}),
    ("SELECT * FROM generate_series(1, 10) AS g(i)", True, {"functions": ("generate_series",)}),
    ("SELECT * FROM generate_series(1, 10) g(i)", True, {"functions": ("generate_series",)}),
    ("SELECT * FROM t x(a, b)", True, {"functions": ()}),
    ("SELECT * FROM t1 JOIN t2 USING (id)", True, {"touches_temp_table_candidates": ("t1", "t2")}),
    (
        "SELECT * FROM t1 LEFT JOIN t2 ON t1.id = t2.id",
        True,
        {"touches_temp_table_candidates": ("t1", "t2")},
    ),
    ("SELECT ARRAY(SELECT 1), ROW(1, 2)", True, {"functions": ()}),
    ("SELECT a FROM t ORDER BY a DESC LIMIT 10 OFFSET 5", True, {}),
    ("SELECT DISTINCT ON (a) a, b FROM t", True, {}),
    (
        "SELECT extract(year FROM created) FROM t",
        True,
        {"touches_temp_table_candidates": ("t",), "functions": ("extract",)},
    ),
    ("SELECT substring(name FROM 1 FOR 3) FROM t", True, {"touches_temp_table_candidates": ("t",)}),
    ("SELECT a IS DISTINCT FROM b FROM t", True, {"touches_temp_table_candidates": ("t",)}),
    ("SELECT jsonb_build_object('a', 1)", True, {}),
    ("SELECT data->>'x' FROM t WHERE data ? 'y'", True, {}),
    ("SELECT * FROM t TABLESAMPLE SYSTEM (10) REPEATABLE (1)", True, {"functions": ()}),
    ("SELECT * FROM ONLY t", True, {"touches_temp_table_candidates": ("t",)}),
    ("SELECT x FROM t WHERE y = ANY(ARRAY[1, 2])", True, {}),
    ('SELECT "select" FROM "Table"', True, {"touches_temp_table_candidates": ("Table",)}),
    ('SELECT "FOR", "UPDATE" FROM "INTO"', True, {}),
    ("SELECT 1 AS update", True, {}),
    ("select * from t where name like 'for update%'", True, {}),
    ("SELECT 'FOR UPDATE', 'SELECT 1 INTO x', 'nextval(1)'", True, {"functions": ()}),
    ("SELECT 1 -- FOR UPDATE; DELETE FROM t", True, {"statements": 1}),
    ("SELECT 1 /* FOR UPDATE; DELETE FROM t */", True, {"statements": 1}),
    ("SELECT 1 /* nested /* comment */ still ; comment */", True, {"statements": 1}),
    ("SELECT $$ ; DELETE FROM t; $$", True, {"statements": 1}),
    ("SELECT $tag$ $$ ; INSERT INTO t VALUES (1) $$ $tag$", True, {"statements": 1}),
    ("SELECT E'\\'; DELETE FROM t; --'", True, {"statements": 1}),
    ("SELECT 'it''s'", True, {}),
    ("SELECT U&'d\\0061t\\+000061'", True, {}),
    ('SELECT U&"d\\0061t" FROM t', True, {}),
    ("SELECT B'1010', X'FF'", True, {}),
    ("SELECT 1;", True, {"statements": 1, "is_multi_statement": False}),
    ("SELECT 1;;", True, {"statements": 1}),
    ("SELECT a$b FROM t", True, {}),
    ("SELECT * FROM t WHERE a = $1", True, {}),
    ("SELECT pg_size_pretty(1024), to_char(now(), 'YYYY'), version()", True, {}),
    ("SELECT * FROM information_schema.tables", True, {"references_system_catalog": False}),
    (
        "SELECT * FROM unnest(ARRAY[1, 2]) WITH ORDINALITY AS u(x, n)",
        True,
        {"functions": ("unnest",)},
    ),
    ("SELECT a FROM t WHERE b BETWEEN 1 AND 10", True, {}),
    ("SELECT CASE WHEN a > 0 THEN 'p' ELSE 'n' END FROM t", True, {}),
    (
        "SELECT * FROM t1, t2 WHERE t1.a = t2.a",
        True,
        {"touches_temp_table_candidates": ("t1", "t2")},
    ),
    ("SELECT * FROM (SELECT * FROM t) s", True, {"touches_temp_table_candidates": ("t",)}),
    (
        "SELECT * FROM t WHERE x = (SELECT max(y) FROM u)",
        True,
        {"touches_temp_table_candidates": ("t", "u")},
    ),
    ("SELECT 1 UNION SELECT 2 INTERSECT SELECT 3", True, {}),
    ("SELECT json_agg(t), format('%s', a), left(s, 2), right(s, 2) FROM t", True, {}),
    ("SELECT * FROM t WHERE ts AT TIME ZONE 'UTC' > now()", True, {}),
    ("SELECT * FROM t FETCH FIRST (5) ROWS ONLY", True, {"functions": ()}),
    (
        "SELECT a FROM t GROUP BY ROLLUP (a), CUBE (b), GROUPING SETS ((a), (b))",
        True,
        {"functions": ()},
    ),
    ("SELECT 1 OPERATOR(pg_catalog.+) 2", True, {"functions": ()}),
    ("SELECT pg_catalog.lower('A')", True, {"functions": ("pg_catalog.lower",)}),
    ("SELECT has_table_privilege('t', 'select'), pg_get_viewdef('v')", True, {}),
    ("SELECT a FROM t WINDOW w AS (PARTITION BY b)", True, {}),
    # --- SHOW, EXPLAIN, COPY ----------------------------------------------
    ("SHOW search_path", True, {"kind": "show", "marks_transaction_writing": False}),
    ("show all", True, {}),
    ("SHOW TRANSACTION ISOLATION LEVEL", True, {}),
    ("/* comment */ SHOW search_path", True, {}),
    ("EXPLAIN SELECT * FROM t", True, {"kind": "explain", "touches_temp_table_candidates": ("t",)}),
    ("EXPLAIN ANALYZE SELECT * FROM t", True, {}),
    ("EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM t", True, {}),
    ("EXPLAIN VERBOSE SELECT 1", True, {}),
    ("explain analyze delete from t", False, {"kind": "explain", "written_relations": ("t",)}),
    ("EXPLAIN ANALYSE UPDATE t SET a = 1", False, {}),
    ("EXPLAIN (FORMAT JSON, ANALYZE true) INSERT INTO t VALUES (1)", False, {}),
    ("EXPLAIN DELETE FROM t", True, {}),
    ("EXPLAIN ANALYZE SELECT nextval('s')", False, {}),
    ("EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE", False, {}),
    ("copy t to stdout", True, {"kind": "copy", "touches_temp_table_candidates": ("t",)}),
    ("COPY t (a, b) TO STDOUT WITH (FORMAT csv)", True, {"functions": ()}),
    ("COPY BINARY t TO STDOUT", True, {}),
    (
        "copy t from stdin",
        False,
        {"written_relations": ("t",), "touches_temp_table_candidates": ("t",)},
    ),
    ("COPY t (a) FROM STDIN WITH (FORMAT csv)", False, {"written_relations": ("t",)}),
    ("copy (select 1) to stdout", True, {}),
    (
        "COPY (SELECT * FROM t WHERE a > 1) TO STDOUT",
        True,
        {"touches_temp_table_candidates": ("t",)},
    ),
    ("COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT", False, {}),
    ("COPY (SELECT nextval('s')) TO STDOUT", False, {}),
    ("COPY t TO '/tmp/t.csv'", False, {}),
    ("COPY t TO PROGRAM 'gzip > /tmp/x.gz'", False, {}),
    ("COPY pg_class TO STDOUT", False, {"references_system_catalog": True}),
    # --- Locking clauses, SELECT INTO, data-modifying WITH -------------------
    ("select * from t for update skip locked", True and False, {}),
    ("SELECT * FROM t FOR UPDATE", False, {"marks_transaction_writing": True}),
    ("SELECT * FROM t FOR SHARE", False, {}),
    ("SELECT * FROM t FOR NO KEY UPDATE", False, {}),
    ("SELECT * FROM t FOR KEY SHARE NOWAIT", False, {}),
    ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", False, {}),
    ("SELECT * FROM t FOR UPDATE OF t", False, {}),
    ("SELECT * FROM t FOR /* x */ UPDATE", False, {}),
    ("SELECT a INTO b FROM t", False, {"creates_temp_table": None}),
    ("SELECT * INTO TEMP x FROM t", False, {"creates_temp_table": "x"}),
    ("select * into temporary table y from t", False, {"creates_temp_table": "y"}),
    ("SELECT * INTO UNLOGGED z FROM t", False, {"creates_temp_table": None}),
    (
        "WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x",
        False,
        {"kind": "with", "written_relations": ("t",)},
    ),
    (
        "WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d",
        False,
        {"written_relations": ("t",)},
    ),
    (
        "with u as (update t set a = 1 returning a) select * from u",
        False,
        {"written_relations": ("t",)},
    ),
    (
        "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
        False,
        {"kind": "with", "written_relations": ("t",)},
    ),
    ("WITH x AS (SELECT 1) UPDATE t SET a = 1", False, {"written_relations": ("t",)}),
    ("WITH x AS (SELECT 1), y AS (SELECT 2) DELETE FROM t", False, {}),
    ("WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x", False, {}),
    # --- Writing functions (both lists empty: built-in knowledge) -------------
    ("SELECT nextval('s')", False, {"functions": ("nextval",), "marks_transaction_writing": True}),
    ("select NEXTVAL('s')", False, {}),
    ("SELECT pg_catalog.nextval('s')", False, {}),
    ("SELECT \"nextval\"('s')", False, {}),
    ("SELECT nextval ('s')", False, {}),
    ("SELECT nextval/**/('s')", False, {}),
    ("SELECT setval('s', 1)", False, {}),
    ("SELECT currval('s')", False, {}),
    ("SELECT lastval()", False, {}),
    ("SELECT pg_advisory_lock(1)", False, {}),
    ("SELECT pg_try_advisory_xact_lock(1, 2)", False, {}),
    ("SELECT pg_notify('c', 'x')", False, {}),
    ("SELECT set_config('search_path', 'x', false)", False, {}),
    ("SELECT txid_current()", False, {}),
    ("SELECT pg_current_wal_lsn()", False, {}),
    ("SELECT lo_create(0)", False, {}),
    ("SELECT pg_terminate_backend(1234)", False, {}),
    ("SELECT random()", False, {}),
    ("SELECT gen_random_uuid()", False, {}),
    ("SELECT pg_is_in_recovery()", False, {}),
    ("SELECT my_func(1)", False, {"unknown_functions": ("my_func",)}),
    ("SELECT public.my_func(1)", False, {"functions": ("public.my_func",)}),
    ("SELECT * FROM t WHERE a = my_func(1)", False, {}),
    ("SELECT * FROM nextval('s')", False, {"touches_temp_table_candidates": ()}),
    ("SELECT DISTINCT ON (a) nextval('s') FROM t", False, {}),
    ("SELECT count(*) FROM t WHERE id = (SELECT nextval('s'))", False, {}),
    ("SELECT * FROM t WHERE x IN (SELECT setval('s', 2))", False, {}),
    ("SELECT x FROM t, LATERAL nextval('s') n", False, {}),
    ("SELECT first(a) FROM t", False, {"functions": ("first",)}),
    ("SELECT 1 -- nextval('s')", True, {"functions": ()}),
    # --- System catalogs ---------------------------------------------------
    ("select * from pg_catalog.pg_class", False, {"references_system_catalog": True}),
    (
        "SELECT relname FROM pg_class WHERE relname = 't1'",
        False,
        {"references_system_catalog": True},
    ),
    ("SELECT * FROM pg_stat_activity", False, {}),
    ("SELECT 't1'::regclass", False, {"references_system_catalog": True}),
    ("SELECT CAST('t1' AS regclass)", False, {}),
    ("SELECT * FROM t JOIN pg_namespace n ON true", False, {}),
    ("SELECT * FROM t WHERE oid IN (SELECT oid FROM pg_catalog.pg_proc)", False, {}),
    ("SELECT * FROM pg_temp.t", False, {}),
    ("SELECT * FROM pg_catalog.pg_class FOR UPDATE", False, {"marks_transaction_writing": True}),
    # --- Leading comments, the first-character test, NO LOAD BALANCE ----------
    (
        "/*NO LOAD BALANCE*/ select 1",
        False,
        {"no_load_balance_comment": True, "marks_transaction_writing": True},
    ),
    ("/*no load balance*/SELECT 1", False, {"no_load_balance_comment": True}),
    ("/* NO LOAD BALANCE */ SELECT 1", False, {"no_load_balance_comment": False}),
    ("  /*NO LOAD BALANCE*/ SELECT 1", False, {"no_load_balance_comment": False}),
    (
        "/*NO LOAD BALANCE*/ BEGIN",
        False,
        {"to_all_session_nodes": False, "no_load_balance_comment": True},
    ),
    ("/* comment */ SELECT 1", False, {"marks_transaction_writing": True}),
    ("-- comment\nSELECT 1", False, {}),
    ("VALUES (1), (2)", False, {"kind": "values"}),
    ("  (SELECT 1)", True, {}),
    (";SELECT 1", True, {"statements": 1}),
    ("SELECT 1 /* trailing comment */", True, {}),
    # --- Multi-statement strings ------------------------------------------
    (
        "SELECT 1; INSERT INTO t VALUES (1)",
        False,
        {
            "is_multi_statement": True,
            "statements": 2,
            "kind": "select",
            "written_relations": ("t",),
        },
    ),
    ("SELECT 1; SELECT 2", False, {"is_multi_statement": True, "statements": 2}),
    ("BEGIN; SELECT 1", False, {"is_transaction_start": True, "to_all_session_nodes": False}),
    (
        "BEGIN; DELETE FROM t; COMMIT",
        False,
        {"is_transaction_start": True, "is_commit": True, "statements": 3},
    ),
    ("INSERT INTO t VALUES (';'); SELECT 1", False, {"statements": 2}),
    ("SELECT ';'; SELECT 2", False, {"statements": 2}),
    ("SELECT 'a\\'; DELETE FROM t; --'", False, {"statements": 2}),
    ("SELECT 'a\\' , ' ; DELETE FROM t; -- '", False, {"statements": 1}),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; SELECT 3",
        False,
        {"statements": 2, "kind": "create"},
    ),
    ("SELECT (1; 2)", True, {"statements": 1}),
    ("PREPARE q AS SELECT 1; EXECUTE q", False, {"statements": 2, "prepared_name": None}),
    # --- Transaction control -----------------------------------------------
    (
        "BEGIN",
        False,
        {
            "kind": "begin",
            "to_all_session_nodes": True,
            "is_transaction_start": True,
            "forces_primary_reason": None,
            "marks_transaction_writing": False,
        },
    ),
    ("begin transaction", False, {"is_transaction_start": True, "to_all_session_nodes": True}),
    ("START TRANSACTION", False, {"kind": "begin", "is_transaction_start": True}),
    (
        "BEGIN ISOLATION LEVEL SERIALIZABLE",
        False,
        {"isolation_serializable": True, "standby_rewrite": "BEGIN", "to_all_session_nodes": True},
    ),
    (
        "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        False,
        {"isolation_serializable": False, "read_only_transaction": True, "standby_rewrite": None},
    ),
    (
        "BEGIN READ WRITE",
        False,
        {"read_write_transaction": True, "standby_rewrite": "BEGIN", "to_all_session_nodes": True},
    ),
    ("BEGIN READ ONLY", False, {"read_only_transaction": True, "read_write_transaction": False}),
    ("COMMIT", False, {"kind": "commit", "is_commit": True, "to_all_session_nodes": True}),
    ("END", False, {"kind": "commit", "is_commit": True}),
    ("commit work", False, {"is_commit": True}),
    ("COMMIT AND CHAIN", False, {"is_commit": True, "and_chain": True}),
    ("COMMIT AND NO CHAIN", False, {"is_commit": True, "and_chain": False}),
    ("ROLLBACK", False, {"kind": "rollback", "is_rollback": True, "to_all_session_nodes": True}),
    ("ABORT", False, {"kind": "rollback", "is_rollback": True}),
    (
        "ROLLBACK TO SAVEPOINT sp1",
        False,
        {
            "kind": "rollback to savepoint",
            "is_rollback": False,
            "is_savepoint_op": True,
            "savepoint_name": "sp1",
            "to_all_session_nodes": True,
        },
    ),
    (
        "rollback to sp1",
        False,
        {"is_savepoint_op": True, "is_rollback": False, "savepoint_name": "sp1"},
    ),
    (
        "SAVEPOINT sp1",
        False,
        {"kind": "savepoint", "is_savepoint_op": True, "savepoint_name": "sp1"},
    ),
    ("RELEASE SAVEPOINT sp1", False, {"kind": "release savepoint", "is_savepoint_op": True}),
    ("release sp1", False, {"is_savepoint_op": True, "savepoint_name": "sp1"}),
    (
        "PREPARE TRANSACTION 'gid'",
        False,
        {"is_prepare_transaction": True, "is_two_phase": True, "to_all_session_nodes": False},
    ),
    (
        "COMMIT PREPARED 'gid'",
        False,
        {"is_two_phase": True, "is_commit": False, "kind": "commit prepared"},
    ),
    ("ROLLBACK PREPARED 'gid'", False, {"is_two_phase": True, "is_rollback": False}),
    # --- SET, RESET, DISCARD -------------------------------------------------
    (
        "SET search_path TO myschema",
        False,
        {"kind": "set", "to_all_session_nodes": True, "is_session_state": True},
    ),
    ("SET LOCAL statement_timeout = '5s'", False, {"to_all_session_nodes": True}),
    ("SET SESSION application_name = 'x'", False, {"to_all_session_nodes": True}),
    ("SET TIME ZONE 'UTC'", False, {"to_all_session_nodes": True}),
    ("SET ROLE admin", False, {"to_all_session_nodes": True, "is_session_state": True}),
    ("SET SESSION AUTHORIZATION bob", False, {"to_all_session_nodes": True}),
    ("RESET ALL", False, {"kind": "reset", "to_all_session_nodes": True, "is_session_state": True}),
    (
        "DISCARD ALL",
        False,
        {"kind": "discard", "to_all_session_nodes": True, "discards_temp_tables": True},
    ),
    ("DISCARD PLANS", False, {"to_all_session_nodes": True, "discards_temp_tables": False}),
    (
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        False,
        {"isolation_serializable": True, "to_all_session_nodes": False, "is_session_state": True},
    ),
    (
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        False,
        {"isolation_serializable": True, "to_all_session_nodes": False},
    ),
    ("SET default_transaction_isolation = 'serializable'", False, {"isolation_serializable": True}),
    ("SET transaction_isolation TO serializable", False, {"isolation_serializable": True}),
    (
        "SET TRANSACTION READ WRITE",
        False,
        {"read_write_transaction": True, "to_all_session_nodes": False},
    ),
    (
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        False,
        {"read_write_transaction": True, "to_all_session_nodes": False},
    ),
    (
        "SET transaction_read_only = off",
        False,
        {"read_write_transaction": True, "to_all_session_nodes": False},
    ),
    ("SET transaction_read_only TO 0", False, {"to_all_session_nodes": False}),
    ("SET transaction_read_only = 'false'", False, {"to_all_session_nodes": False}),
    (
        "SET transaction_read_only = on",
        False,
        {
            "to_all_session_nodes": True,
            "read_only_transaction": True,
            "marks_transaction_writing": False,
        },
    ),
    (
        "SET TRANSACTION READ ONLY",
        False,
        {
            "to_all_session_nodes": True,
            "read_only_transaction": True,
            "marks_transaction_writing": False,
        },
    ),
    ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", False, {"to_all_session_nodes": True}),
    ("SET CONSTRAINTS ALL DEFERRED", False, {"to_all_session_nodes": False}),
    ("SET default_transaction_read_only = off", False, {"to_all_session_nodes": True}),
    # --- PREPARE, EXECUTE, DEALLOCATE ----------------------------------------
    ("PREPARE q AS SELECT * FROM t WHERE a = $1", True, {"kind": "prepare", "prepared_name": "q"}),
    (
        "PREPARE q(int) AS SELECT * FROM t WHERE a = $1",
        True,
        {"prepared_name": "q", "functions": ()},
    ),
    (
        "PREPARE w AS INSERT INTO t VALUES ($1)",
        False,
        {"prepared_name": "w", "written_relations": ("t",)},
    ),
    ("PREPARE n AS SELECT nextval('s')", False, {"prepared_name": "n"}),
    (
        "EXECUTE q(1)",
        False,
        {"kind": "execute", "prepared_name": "q", "to_all_session_nodes": False},
    ),
    ("EXECUTE q", False, {"prepared_name": "q"}),
    ("DEALLOCATE q", False, {"kind": "deallocate", "prepared_name": "q"}),
    ("DEALLOCATE PREPARE q", False, {"prepared_name": "q"}),
    (
        "DEALLOCATE ALL",
        False,
        {"prepared_name": None, "to_all_session_nodes": True, "is_session_state": True},
    ),
    # Cursor commands name their cursor (sent where its portal is).
    ("DECLARE c CURSOR FOR SELECT 1", False, {"kind": "declare", "prepared_name": "c"}),
    ("FETCH 10 FROM c", False, {"kind": "fetch", "prepared_name": "c"}),
    ('FETCH NEXT IN "MyCur"', False, {"prepared_name": "MyCur"}),
    ("MOVE FORWARD 3 c", False, {"kind": "move", "prepared_name": "c"}),
    ("CLOSE c", False, {"kind": "close", "prepared_name": "c"}),
    ("CLOSE ALL", False, {"kind": "close", "prepared_name": None}),
    # --- LOCK ------------------------------------------------------------------
    ("LOCK TABLE t IN ACCESS SHARE MODE", False, {"kind": "lock", "to_all_session_nodes": True}),
    ("LOCK t IN ROW SHARE MODE", False, {"to_all_session_nodes": True}),
    ("LOCK TABLE t IN ROW EXCLUSIVE MODE", False, {"to_all_session_nodes": False}),
    (
        "LOCK TABLE t",
        False,
        {"to_all_session_nodes": False, "touches_temp_table_candidates": ("t",)},
    ),
    ("LOCK TABLE t IN SHARE MODE NOWAIT", False, {"to_all_session_nodes": False}),
    # --- Writes, DDL, maintenance, cursors, notifications ----------------------
    ("INSERT INTO t VALUES (1)", False, {"kind": "insert", "written_relations": ("t",)}),
    (
        "insert into t (a, b) select a, b from u",
        False,
        {"written_relations": ("t",), "touches_temp_table_candidates": ("t", "u"), "functions": ()},
    ),
    ("UPDATE t SET a = 1 WHERE b = 2", False, {"kind": "update", "written_relations": ("t",)}),
    ("DELETE FROM t WHERE a = 1", False, {"kind": "delete", "written_relations": ("t",)}),
    (
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a",
        False,
        {"kind": "merge", "written_relations": ("t",), "touches_temp_table_candidates": ("t", "s")},
    ),
    ("TRUNCATE t1, t2", False, {"written_relations": ("t1", "t2")}),
    ("TRUNCATE TABLE ONLY t", False, {"written_relations": ("t",)}),
    ("CREATE TABLE t (a int)", False, {"kind": "create", "creates_temp_table": None}),
    ("CREATE TEMP TABLE tmp1 (a int)", False, {"creates_temp_table": "tmp1"}),
    (
        "CREATE TEMPORARY TABLE IF NOT EXISTS tmp2 AS SELECT 1",
        False,
        {"creates_temp_table": "tmp2"},
    ),
    ("create global temporary table tmp3 (a int)", False, {"creates_temp_table": "tmp3"}),
    ("CREATE TABLE pg_temp.tmp4 (a int)", False, {"creates_temp_table": "tmp4"}),
    ("CREATE TEMP VIEW v AS SELECT 1", False, {"creates_temp_table": "v"}),
    ("DROP TABLE IF EXISTS a, b CASCADE", False, {"kind": "drop", "drops_tables": ("a", "b")}),
    ("ALTER TABLE t ADD COLUMN c int", False, {"kind": "alter"}),
    ("VACUUM t", False, {}),
    ("ANALYZE t", False, {}),
    ("CHECKPOINT", False, {}),
    ("GRANT SELECT ON t TO bob", False, {}),
    ("COMMENT ON TABLE t IS 'x'", False, {}),
    ("DO $$ BEGIN PERFORM 1; END $$", False, {"kind": "do", "statements": 1}),
    ("CALL p(1)", False, {"kind": "call"}),
    ("LISTEN chan", False, {"kind": "listen", "to_all_session_nodes": False}),
    ("UNLISTEN *", False, {"kind": "unlisten"}),
    ("NOTIFY chan, 'x'", False, {"kind": "notify"}),
    ("DECLARE c CURSOR FOR SELECT * FROM t", False, {"kind": "declare"}),
    ("MOVE NEXT IN c", False, {"kind": "move"}),
    ("REFRESH MATERIALIZED VIEW mv", False, {}),
    ("CLUSTER t", False, {}),
    ("REINDEX TABLE t", False, {}),
    # --- Empty, malformed, unknown ---------------------------------------------
    ("", True, {"kind": "empty", "statements": 0, "marks_transaction_writing": False}),
    ("   ", True, {"kind": "empty"}),
    (";", True, {"kind": "empty", "statements": 0}),
    ("/* only a comment */", False, {"kind": "empty"}),
    ("SELECT 'unterminated", False, {"kind": "select"}),
    ("SELECT /* unterminated", False, {}),
    ('SELECT "unterminated', False, {}),
    ("SELECT $$ unterminated", False, {}),
    ("SELECT (1", False, {}),
    ("SELECT 1)", False, {}),
    ("FOO BAR", False, {"kind": "foo"}),
    ("12345", False, {"kind": "unknown"}),
    ("PGPOOL SHOW ALL", False, {"kind": "pgpool"}),
]

# (configuration, statement, expected is_read_only, expected other fields)
CONFIG_CORPUS: List[Tuple[Dict[str, Any], str, bool, Flags]] = [
    # write_function_list: only listed functions (and our always-writing
    # built-ins) write; the rest, even unknown ones, are reads.
    ({"write_function_list": ("nextval", "setval", "my_writer")}, "SELECT my_writer()", False, {}),
    ({"write_function_list": ("nextval", "setval", "my_writer")}, "SELECT my_reader()", True, {}),
    ({"write_function_list": ("nextval", "setval", "my_writer")}, "SELECT random()", True, {}),
    ({"write_function_list": ("nextval", "setval", "my_writer")}, "SELECT nextval('s')", False, {}),
    # Names are matched as written: public.my_writer is not my_writer.
    (
        {"write_function_list": ("nextval", "setval", "my_writer")},
        "SELECT public.my_writer()",
        True,
        {},
    ),
    ({"write_function_list": ("f1", "public.f1")}, "SELECT public.f1()", False, {}),
    ({"write_function_list": ("f1", "public\\.f1")}, "SELECT x.f1()", True, {}),
    # Each entry is anchored ^...$ ...
    ({"write_function_list": ("get_.*",)}, "SELECT get_x()", False, {}),
    ({"write_function_list": ("get_.*",)}, "SELECT forget_x()", True, {}),
    ({"write_function_list": ("^get_.*$",)}, "SELECT get_x(), forget_x()", False, {}),
    # ... by adding ^ and $ to the text, exactly as Pgpool-II does, so an
    # alternation is anchored only at its ends.
    ({"write_function_list": ("a|b",)}, "SELECT ab()", False, {}),
    ({"write_function_list": ("a|b",)}, "SELECT cb()", False, {}),
    ({"write_function_list": ("a|b",)}, "SELECT ba()", True, {}),
    # Built-ins that fail on a standby stay writes even when not listed
    # (a deliberate deviation).
    ({"write_function_list": ("my_writer",)}, "SELECT pg_advisory_lock(1)", False, {}),
    # read_only_function_list: everything not listed writes, built-ins too.
    ({"read_only_function_list": ("count", "lower", "my_.*")}, "SELECT count(*) FROM t", True, {}),
    ({"read_only_function_list": ("count", "lower", "my_.*")}, "SELECT my_read(1)", True, {}),
    ({"read_only_function_list": ("count", "lower", "my_.*")}, "SELECT upper('a')", False, {}),
    ({"read_only_function_list": ("count", "lower", "my_.*")}, "SELECT now()", False, {}),
    ({"read_only_function_list": ("count", "lower", "my_.*")}, "SELECT 1", True, {}),
    ({"read_only_function_list": ("nextval",)}, "SELECT nextval('s')", True, {}),
    # primary_routing_query_pattern_list: anchored, case-insensitive, whole
    # text.
    (
        {"primary_routing_query_pattern_list": ("SELECT \\* FROM t1\\;", ".*secret.*")},
        "SELECT * FROM t1;",
        False,
        {},
    ),
    (
        {"primary_routing_query_pattern_list": ("SELECT \\* FROM t1\\;", ".*secret.*")},
        "select * from t1;",
        False,
        {},
    ),
    (
        {"primary_routing_query_pattern_list": ("SELECT \\* FROM t1\\;", ".*secret.*")},
        "SELECT * FROM t1",
        True,
        {},
    ),
    (
        {"primary_routing_query_pattern_list": ("SELECT \\* FROM t1\\;", ".*secret.*")},
        "SELECT * FROM secret_t",
        False,
        {},
    ),
    (
        {"primary_routing_query_pattern_list": (".*id = 42.*",)},
        "SELECT * FROM t WHERE id = 42",
        False,
        {},
    ),
    (
        {"primary_routing_query_pattern_list": (".*id = 42.*",)},
        "SELECT * FROM t WHERE id = 43",
        True,
        {},
    ),
    # allow_sql_comments on: comments are ignored, NO LOAD BALANCE too.
    (
        {"allow_sql_comments": True},
        "/*NO LOAD BALANCE*/ select 1",
        True,
        {"no_load_balance_comment": False},
    ),
    ({"allow_sql_comments": True}, "/* c */ SELECT 1", True, {}),
    ({"allow_sql_comments": True}, "-- c\nSELECT 1", True, {}),
    ({"allow_sql_comments": True}, "VALUES (1)", True, {}),
    ({"allow_sql_comments": True}, "VALUES (nextval('s'))", False, {}),
    # ignore_leading_white_space off: leading whitespace fails the test.
    ({"ignore_leading_white_space": False}, "  SELECT 1", False, {}),
    ({"ignore_leading_white_space": False}, "SELECT 1", True, {}),
    # A router that looks volatility up itself.
    (
        {"unknown_functions_are_writes": False},
        "SELECT my_func(1)",
        True,
        {"unknown_functions": ("my_func",)},
    ),
    ({"unknown_functions_are_writes": False}, "SELECT random()", False, {}),
    # Balancing all-read multi-statement strings (not Pgpool-II's default).
    ({"balance_read_only_multi_statements": True}, "SELECT 1; SELECT 2", True, {"statements": 2}),
    ({"balance_read_only_multi_statements": True}, "SELECT 1; INSERT INTO t VALUES (1)", False, {}),
    ({"balance_read_only_multi_statements": True}, "BEGIN; SELECT 1", False, {}),
    ({"balance_read_only_multi_statements": True}, "SELECT 1; /* c */ SELECT 2", False, {}),
]


def _slug(sql: str) -> str:
    return re.sub(r"\W+", "_", sql.lower()).strip("_")[:60] or "empty"


class CorpusTests(SynchronousTestCase):
    """
    One test per row of L{CORPUS} and L{CONFIG_CORPUS} (the methods are
    added below the class).
    """

    def check(self, sql: str, read_only: bool, flags: Flags, config: ClassifierConfig) -> None:
        result = classify_uncached(sql, config)
        self.assertEqual(
            result.is_read_only,
            read_only,
            f"{sql!r}: is_read_only={result.is_read_only} ({result.forces_primary_reason})",
        )
        for name, expected in flags.items():
            self.assertEqual(getattr(result, name), expected, f"{sql!r}: {name}")
        # The reason is there exactly when the statement is pinned to the
        # primary.
        if result.is_read_only:
            self.assertIsNone(result.forces_primary_reason, sql)
            self.assertFalse(result.to_all_session_nodes, sql)
        elif not result.to_all_session_nodes:
            self.assertIsNotNone(result.forces_primary_reason, sql)
        else:
            self.assertIsNone(result.forces_primary_reason, sql)
        # The cached path gives the same answer, cold and warm.
        self.assertEqual(classify(sql, config), result, sql)
        self.assertEqual(classify(sql, config), result, sql)


def _corpus_test(
    sql: str, read_only: bool, flags: Flags, config_kwargs: Optional[Dict[str, Any]]
) -> Callable[[CorpusTests], None]:
    def test(self: CorpusTests) -> None:
        config = (
            ClassifierConfig(**config_kwargs) if config_kwargs is not None else ClassifierConfig()
        )
        self.check(sql, read_only, flags, config)

    test.__doc__ = f"{sql!r} is {'read-only' if read_only else 'not read-only'}"
    return test


for _number, (_sql, _read_only, _flags) in enumerate(CORPUS, 1):
    setattr(
        CorpusTests,
        f"test_{_number:03d}_{_slug(_sql)}",
        _corpus_test(_sql, _read_only, _flags, None),
    )
for _number, (_kwargs, _sql, _read_only, _flags) in enumerate(CONFIG_CORPUS, 1):
    setattr(
        CorpusTests,
        f"test_config_{_number:03d}_{_slug(_sql)}",
        _corpus_test(_sql, _read_only, _flags, _kwargs),
    )


class CorpusSizeTests(SynchronousTestCase):
    def test_corpus_is_large_enough(self) -> None:
        self.assertGreaterEqual(len(CORPUS) + len(CONFIG_CORPUS), 170)

    def test_corpus_statements_are_unique(self) -> None:
        self.assertEqual(len({sql for sql, _, _ in CORPUS}), len(CORPUS))


class MultiStatementPartsTests(SynchronousTestCase):
    def test_parts_are_classified_in_order(self) -> None:
        result = classify("BEGIN; SELECT 1; UPDATE t SET a = 1; COMMIT")
        self.assertEqual([p.kind for p in result.parts], ["begin", "select", "update", "commit"])
        self.assertEqual([p.is_read_only for p in result.parts], [False, True, False, False])

    def test_prepare_inside_multi_statement_keeps_its_name_in_the_part(self) -> None:
        result = classify("PREPARE q AS SELECT 1; EXECUTE q")
        self.assertEqual([p.prepared_name for p in result.parts], ["q", "q"])

    def test_single_statement_has_no_parts(self) -> None:
        self.assertEqual(classify("SELECT 1").parts, ())


class WritesTests(SynchronousTestCase):
    """
    L{Classification.writes}: what certainly changes the database (a
    standby would refuse it), narrower than "not a read".
    """

    WRITES = [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE",
        "TRUNCATE t",
        "CREATE TABLE x (a int)",
        "CREATE TEMP TABLE x (a int)",
        "ALTER TABLE t ADD b int",
        "DROP TABLE t",
        "GRANT SELECT ON t TO u",
        "COMMENT ON TABLE t IS 'x'",
        "VACUUM",
        "ANALYZE t",
        "REFRESH MATERIALIZED VIEW m",
        "REINDEX TABLE t",
        "CLUSTER t",
        "COPY t FROM STDIN",
        "SELECT * INTO x FROM t",
        "SELECT * FROM t FOR UPDATE",
        "WITH a AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM a",
        "WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a",
        "SELECT nextval('s')",
        "SELECT pg_catalog.setval('s', 1)",
        "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
        "COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT",
        "PREPARE p AS INSERT INTO t VALUES (1)",
        "SELECT 1; UPDATE t SET a = 1",
    ]

    NOT_WRITES = [
        "SELECT 1",
        "SELECT * FROM t",
        "SHOW search_path",
        "EXPLAIN INSERT INTO t VALUES (1)",
        "EXPLAIN ANALYZE SELECT 1",
        "COPY t TO STDOUT",
        "BEGIN",
        "COMMIT",
        "SET x = 1",
        "LOCK t",
        "PREPARE p AS SELECT 1",
        "EXECUTE p",
        "SELECT my_function()",
        "/* app */ SELECT 1",
        "CALL p()",
        "DO $$ BEGIN END $$",
        "LISTEN x",
        "DECLARE c CURSOR FOR SELECT 1",
        "CHECKPOINT",
        "SELECT pg_advisory_lock(1)",
        "SELECT 1; SELECT 2",
    ]

    def test_writes(self) -> None:
        for sql in self.WRITES:
            self.assertTrue(classify(sql).writes, sql)

    def test_not_writes(self) -> None:
        for sql in self.NOT_WRITES:
            self.assertFalse(classify(sql).writes, sql)

    def test_a_function_in_write_function_list_writes(self) -> None:
        config = ClassifierConfig(write_function_list=("app_.*",))
        self.assertTrue(classify("SELECT app_log('x')", config).writes)
        self.assertFalse(classify("SELECT other('x')", config).writes)

    def test_a_function_outside_read_only_function_list_only_may_write(self) -> None:
        config = ClassifierConfig(read_only_function_list=("safe",))
        result = classify("SELECT other('x')", config)
        self.assertEqual((result.is_read_only, result.writes), (False, False))


class ConfigTests(SynchronousTestCase):
    def test_function_lists_are_mutually_exclusive(self) -> None:
        self.assertRaises(
            ValueError, ClassifierConfig, write_function_list=("a",), read_only_function_list=("b",)
        )

    def test_invalid_regular_expression_names_the_parameter(self) -> None:
        e = self.assertRaises(ValueError, ClassifierConfig, write_function_list=("a(",))
        self.assertIn("write_function_list", str(e))

    def test_a_plain_string_is_refused(self) -> None:
        self.assertRaises(TypeError, ClassifierConfig, write_function_list="nextval,setval")

    def test_from_pgpool_splits_lists(self) -> None:
        config = ClassifierConfig.from_pgpool(
            write_function_list="nextval, setval,,",
            primary_routing_query_pattern_list="SELECT \\* FROM t1\\;;.*secret.*",
            allow_sql_comments=True,
        )
        self.assertEqual(config.write_function_list, ("nextval", "setval"))
        self.assertEqual(
            config.primary_routing_query_pattern_list, ("SELECT \\* FROM t1\\;", ".*secret.*")
        )
        self.assertTrue(config.allow_sql_comments)
        self.assertFalse(classify("SELECT * FROM t1;", config).is_read_only)

    def test_equal_configurations_are_equal_and_hashable(self) -> None:
        a = ClassifierConfig(write_function_list=("f",))
        b = ClassifierConfig(write_function_list=["f"])
        self.assertEqual(a, b)
        self.assertEqual(hash(a), hash(b))

    def test_default_config_is_used_when_none_is_given(self) -> None:
        self.assertEqual(classify("SELECT 1"), classify("SELECT 1", DEFAULT_CONFIG))


class NoLoadBalanceTests(SynchronousTestCase):
    """
    The psycopg2 issue #1229 scenario: a comment-prefixed SELECT is pinned
    to the primary and counts as a write for the transaction.
    """

    def test_comment_prefixed_select_marks_the_transaction_writing(self) -> None:
        result = classify("/*NO LOAD BALANCE*/ SELECT * FROM t")
        self.assertFalse(result.is_read_only)
        self.assertTrue(result.marks_transaction_writing)

    def test_catalog_select_does_not_mark_the_transaction_writing(self) -> None:
        result = classify("SELECT * FROM pg_class")
        self.assertFalse(result.is_read_only)
        self.assertFalse(result.marks_transaction_writing)

    def test_session_views_are_read_where_the_session_reads(self) -> None:
        # The session's own prepared statements and cursors are on the
        # node its reads went to, not a catalog of the primary's; never
        # cached all the same (references_system_catalog).
        for sql in (
            "SELECT count(*) FROM pg_prepared_statements",
            "SELECT name FROM pg_catalog.pg_cursors",
        ):
            result = classify(sql)
            self.assertEqual(
                (result.is_read_only, result.references_system_catalog), (True, True), sql
            )
        mixed = classify("SELECT * FROM pg_prepared_statements, pg_class")
        self.assertEqual(
            (mixed.is_read_only, mixed.forces_primary_reason), (False, "system catalog pg_class")
        )


# Statement templates whose "{}" are filled with literals, for the cache.
TEMPLATES = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
    "UPDATE pgbench_accounts SET abalance = abalance + {} WHERE aid = {};",
    "SELECT * FROM t WHERE a = {} AND b = {}",
    'SELECT "T"."a" FROM "T" WHERE "T"."b" = {} OR "T"."c" IN ({}, {})',
    "SET transaction_read_only = {}",
    "SET default_transaction_isolation = {}",
    "SELECT {}; SELECT {}",
    "SELECT * FROM t LIMIT {} OFFSET {}",
    "INSERT INTO t VALUES ({}, {}, {})",
    "SELECT set_config({}, {}, false)",
    "SELECT {} FROM t FOR UPDATE",
    "EXECUTE q({})",
]
LITERALS = [
    "0",
    "1",
    "42",
    "3.14",
    "1e5",
    ".5",
    "'x'",
    "''",
    "'it''s'",
    "'a;b'",
    "'off'",
    "'on'",
    "'serializable'",
    "'--'",
    "'/*'",
    "'\"'",
    "'FOR UPDATE'",
    "'; DELETE FROM t; '",
    "'false'",
    "'read committed'",
]


def _fill(template: str, rng: random.Random) -> str:
    return template.format(*(rng.choice(LITERALS) for _ in range(template.count("{}"))))


class NotCallsTests(SynchronousTestCase):
    """
    A name before "(" that is no function call (issue 15, item 10).
    """

    def test_copy_options_list_is_not_a_call(self) -> None:
        for sql in ("COPY t FROM STDIN (FORMAT csv)", "COPY t TO STDOUT (FORMAT csv)"):
            self.assertEqual(classify(sql, ClassifierConfig()).functions, (), sql)

    def test_table_after_if_not_exists_is_not_a_call(self) -> None:
        self.assertEqual(
            classify("CREATE TABLE IF NOT EXISTS h(a int)", ClassifierConfig()).functions, ()
        )

    def test_indexed_table_and_method_are_not_calls(self) -> None:
        self.assertEqual(
            classify("CREATE INDEX i ON t USING btree (lower(a))", ClassifierConfig()).functions,
            ("lower",),
        )

    def test_call_after_join_on_is_still_a_call(self) -> None:
        self.assertEqual(
            classify("SELECT * FROM a JOIN b ON f(a.x) = b.y", ClassifierConfig()).functions, ("f",)
        )


class SessionViewTests(SynchronousTestCase):
    """
    What a standby would answer differently from the session's own server
    goes to the primary; what sets session state goes everywhere.
    """

    def test_show_transaction_read_only_goes_to_the_primary(self) -> None:
        c = classify("SHOW transaction_read_only", ClassifierConfig())
        self.assertEqual((c.is_read_only, c.marks_transaction_writing), (False, False))

    def test_show_of_another_setting_is_a_read(self) -> None:
        self.assertTrue(classify("SHOW work_mem", ClassifierConfig()).is_read_only)

    def test_pg_backend_pid_goes_to_the_primary(self) -> None:
        self.assertFalse(classify("SELECT pg_backend_pid()", ClassifierConfig()).is_read_only)

    def test_set_config_with_literals_is_a_set(self) -> None:
        c = classify(
            "SELECT pg_catalog.set_config('search_path', 'a, b', false)", ClassifierConfig()
        )
        self.assertEqual((c.to_all_session_nodes, c.is_session_state), (True, True))

    def test_set_config_with_parameters_goes_to_the_primary(self) -> None:
        c = classify("SELECT set_config($1, $2, false)", ClassifierConfig())
        self.assertEqual((c.to_all_session_nodes, c.is_read_only), (False, False))


class DatabasesToFreeTests(SynchronousTestCase):
    def test_drop_database(self) -> None:
        self.assertEqual(
            databases_to_free('DROP DATABASE IF EXISTS "My DB" WITH (FORCE)'), ("My DB",)
        )

    def test_rename_database(self) -> None:
        self.assertEqual(databases_to_free("alter database a rename to b"), ("a",))

    def test_other_alter_database_needs_nothing(self) -> None:
        self.assertEqual(databases_to_free("alter database a set work_mem = '1MB'"), ())

    def test_template_of_create_database(self) -> None:
        self.assertEqual(databases_to_free("create database x with template = y owner z"), ("y",))

    def test_other_statements_need_nothing(self) -> None:
        for sql in ("drop table t", "select 1", "create table database (a int)"):
            self.assertEqual(databases_to_free(sql), (), sql)


class CacheTests(SynchronousTestCase):
    def test_shape_replaces_literals_and_keeps_identifiers(self) -> None:
        self.assertEqual(
            statement_shape("SELECT \"a'1\", t1.x FROM t WHERE a = 1.5 AND b = 'q''r' AND c = $1"),
            'SELECT "a\'1", t1.x FROM t WHERE a = \x00 AND b = \x00 AND c = $1',
        )

    def test_a_run_of_literals_is_one_marker(self) -> None:
        self.assertEqual(
            statement_shape("SELECT * FROM t WHERE id IN (1, 2,3 , 'x') AND b = 4"),
            statement_shape("SELECT * FROM t WHERE id IN (7) AND b = 'y'"),
        )

    def test_digits_next_to_identifier_characters_are_not_literals(self) -> None:
        # PostgreSQL lexes U+00A0 as an identifier character: "\xa01" is a
        # name, not a number.
        self.assertEqual(statement_shape("SELECT * FROM \xa01"), "SELECT * FROM \xa01")
        self.assertEqual(statement_shape("SELECT 1abc, t1, $1"), "SELECT 1abc, t1, $1")

    def test_texts_that_a_regular_expression_cannot_lex_have_no_shape(self) -> None:
        for sql in (
            "SELECT 1 -- c",
            "SELECT /* c */ 1",
            "SELECT E'\\n'",
            "SELECT $$x$$",
            "SELECT B'01'",
            "a\x00",
        ):
            self.assertIsNone(statement_shape(sql), sql)

    def test_shape_hit_matches_cold_classification_for_random_literals(self) -> None:
        rng = random.Random(20240611)
        config = ClassifierConfig()
        for template in TEMPLATES:
            for _ in range(60):
                sql = _fill(template, rng)
                self.assertEqual(classify(sql, config), classify_uncached(sql, config), sql)
        self.assertGreater(config.cache.hits, 0)

    def test_pgbench_select_is_one_cache_entry(self) -> None:
        config = ClassifierConfig()
        for aid in range(1000):
            classify(f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid};", config)
        self.assertEqual((len(config.cache), config.cache.misses, config.cache.hits), (1, 1, 999))

    def test_literal_dependent_results_are_not_shared_by_shape(self) -> None:
        config = ClassifierConfig()
        self.assertTrue(classify("SET transaction_read_only = 'on'", config).to_all_session_nodes)
        self.assertFalse(classify("SET transaction_read_only = 'off'", config).to_all_session_nodes)
        self.assertTrue(classify("SET transaction_read_only = 'on'", config).to_all_session_nodes)

    def test_query_patterns_see_the_actual_literals(self) -> None:
        config = ClassifierConfig(primary_routing_query_pattern_list=(".*aid = 7;",))
        self.assertTrue(
            classify("SELECT abalance FROM pgbench_accounts WHERE aid = 6;", config).is_read_only
        )
        self.assertFalse(
            classify("SELECT abalance FROM pgbench_accounts WHERE aid = 7;", config).is_read_only
        )
        self.assertTrue(
            classify("SELECT abalance FROM pgbench_accounts WHERE aid = 8;", config).is_read_only
        )

    def test_cache_is_bounded(self) -> None:
        config = ClassifierConfig(cache_size=5)
        for n in range(100):
            classify(f"SELECT c{n} FROM t", config)
        self.assertEqual(len(config.cache), 5)

    def test_cache_evicts_least_recently_used(self) -> None:
        config = ClassifierConfig(cache_size=2)
        classify("SELECT a FROM t", config)
        classify("SELECT b FROM t", config)
        classify("SELECT a FROM t", config)  # a is now the most recent
        classify("SELECT c FROM t", config)  # evicts b
        hits = config.cache.hits
        classify("SELECT a FROM t", config)
        self.assertEqual(config.cache.hits, hits + 1)
        misses = config.cache.misses
        classify("SELECT b FROM t", config)
        self.assertEqual(config.cache.misses, misses + 1)

    def test_cache_can_be_disabled_and_cleared(self) -> None:
        config = ClassifierConfig(cache_size=0)
        classify("SELECT 1", config)
        self.assertEqual(len(config.cache), 0)
        config = ClassifierConfig()
        classify("SELECT 1", config)
        config.cache.clear()
        self.assertEqual((len(config.cache), config.cache.hits, config.cache.misses), (0, 0, 0))

    def test_configurations_do_not_share_a_cache(self) -> None:
        loose = ClassifierConfig(allow_sql_comments=True)
        strict = ClassifierConfig()
        self.assertTrue(classify("/* c */ SELECT 1", loose).is_read_only)
        self.assertFalse(classify("/* c */ SELECT 1", strict).is_read_only)


# Fragments for generated SQL-like text.
FRAGMENTS = [
    "SELECT ",
    "select ",
    "INSERT INTO t VALUES (1)",
    "DELETE FROM t",
    " FROM t",
    " FROM pg_class",
    " WHERE a = ",
    "1",
    "42",
    "3.5",
    "'x'",
    "'a;b'",
    "''",
    "'",
    '"',
    '"q"',
    "E'\\''",
    "$$",
    "$1",
    "--",
    "/*",
    "*/",
    "\n",
    " ",
    ";",
    "(",
    ")",
    ",",
    "nextval(",
    "count(",
    "FOR UPDATE",
    " INTO ",
    "WITH w AS (",
    "SET transaction_read_only = ",
    "'off'",
    "0",
    "BEGIN",
    "COMMIT",
    "B'1'",
    "x",
    "::",
    ".",
    "\\",
    "/*NO LOAD BALANCE*/",
]
SQL_LIKE = st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join)
# What a literal (or a run of them) may be replaced with: runs of other
# lengths share a shape, so they must share the answer too.
ANY_LITERAL = st.sampled_from(LITERALS + ["1, 2", "'a', 3.5, ''", "4 ,'b'"])


def _relabel(sql: str, literals: List[str]) -> str:
    """
    Replace the literals L{statement_shape} sees in C{sql} with others.
    """
    from twisted_pgpool.sql.shape import _SHAPE_LITERALS, _SHAPE_LITERALS_AND_IDENTS

    pattern = _SHAPE_LITERALS_AND_IDENTS if '"' in sql else _SHAPE_LITERALS
    pool = iter(literals * 50)

    def replace(m: "re.Match[str]") -> str:
        return m.group() if m.group().startswith('"') else next(pool)

    return pattern.sub(replace, sql)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.text())
    def test_never_raises(self, sql: str) -> None:
        result = classify_uncached(sql)
        self.assertIsInstance(result, Classification)

    @settings(max_examples=400, deadline=None)
    @given(SQL_LIKE)
    def test_never_raises_on_sql_like_text(self, sql: str) -> None:
        self.assertEqual(classify(sql, ClassifierConfig()), classify_uncached(sql))

    @settings(max_examples=400, deadline=None)
    @given(SQL_LIKE, st.lists(ANY_LITERAL, min_size=1, max_size=5))
    def test_a_shape_hit_gives_the_cold_answer(self, sql: str, literals: List[str]) -> None:
        """
        Whatever text warmed the cache for a shape, every text of that
        shape gets the answer a cold classification would give it.
        """
        if statement_shape(sql) is None:
            return
        other = _relabel(sql, literals)
        config = ClassifierConfig()
        classify(sql, config)
        self.assertEqual(classify(other, config), classify_uncached(other), (sql, other))

    @settings(max_examples=200, deadline=None)
    @given(SQL_LIKE)
    def test_anything_with_a_write_is_not_read_only(self, tail: str) -> None:
        """
        A DELETE after a top-level semicolon always makes the text a write.
        """
        self.assertFalse(classify_uncached("SELECT 1; DELETE FROM t" + tail).is_read_only)
