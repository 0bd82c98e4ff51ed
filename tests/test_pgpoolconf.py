"""
Tests for reading Pgpool-II's own C{pgpool.conf}: the syntax
(L{twisted_pgpool.config.pgpool_conf}), what becomes of every Pgpool-II parameter,
loading through L{twisted_pgpool.config.load_config}, C{twisted-pgpool
convert}, and the C{-a}/C{-F} options of C{twistd pgpool} and
C{twisted-pgpool run}.

Two real files are read: Debian's sample (C{tests/data/debian}, see its
README) and a tutorial-style configuration (C{tests/data/tutorial}).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
from typing import Any, Dict, List, Optional, Tuple

import attrs
from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool import cli
from twisted_pgpool.config import (
    BackendConfig,
    ConfigError,
    ConfigWarning,
    PgpoolConfig,
    convert_pgpool_conf,
    documented_keys,
    load_config,
    pgpool_conf as pgpoolconf,
    yaml_plain_keeps_value,
)
from twisted_pgpool.config.pgpool_conf import Comment, Entry, PgpoolConfError, parse

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
DEBIAN = os.path.join(DATA, "debian")
TUTORIAL = os.path.join(DATA, "tutorial")

#: Two lines every real installation adds to Debian's sample.
ONE_BACKEND = "backend_hostname0 = 'db1'\nbackend_port0 = 5432\n"


def entry(line: str) -> Entry:
    """
    The one setting on C{line}.
    """
    [parsed] = parse(line)
    assert isinstance(parsed, Entry), parsed
    return parsed


def uncommented(text: str) -> str:
    """
    Debian's sample with every commented-out default made a setting: the
    file a user gets by switching everything on, which is what took 88
    start/fix rounds to convert by hand.
    """
    return re.sub(r"^#([A-Za-z_][A-Za-z0-9_]*\s*=)", r"\1", text, flags=re.M)


def read_data(*parts: str) -> str:
    with open(os.path.join(DATA, *parts), encoding="utf-8") as f:
        return f.read()


class PgpoolConfTestCase(SynchronousTestCase):
    """
    Helpers to write a configuration file and load it.
    """

    def directory(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path

    def write(self, text: str, name: str = "pgpool.conf", directory: Optional[str] = None) -> str:
        path = os.path.join(directory or self.directory(), name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def load(
        self, text: str, name: str = "pgpool.conf"
    ) -> Tuple[PgpoolConfig, List[ConfigWarning]]:
        warnings: List[ConfigWarning] = []
        return load_config(self.write(text, name), warnings=warnings), warnings

    def assert_error(
        self, text: str, line: Optional[int], key: Optional[str], *fragments: str
    ) -> str:
        """
        Loading C{text} fails with one line starting with file, line and key
        and containing every fragment.
        """
        path = self.write(text)
        error = self.assertRaises(ConfigError, load_config, path, [])
        message = str(error)
        where = path if line is None else f"{path}:{line}"
        prefix = f"{where}: {key}: " if key else f"{where}: "
        self.assertTrue(message.startswith(prefix), f"{message!r} does not start with {prefix}")
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message


# -- the syntax ------------------------------------------------------------------


class ParseTests(SynchronousTestCase):
    def test_name_equals_value(self) -> None:
        self.assertEqual(entry("port = 9999"), Entry("port", "9999", 1, False, "", "port = 9999"))

    def test_equals_sign_may_be_left_out(self) -> None:
        self.assertEqual(entry("port 9999").value, "9999")
        self.assertEqual(entry("sr_check_user 'nobody'").value, "nobody")

    def test_no_space_is_needed_around_equals(self) -> None:
        self.assertEqual(entry("ssl_passphrase_command=''").value, "")
        self.assertEqual(entry("port=9999").value, "9999")

    def test_tabs_and_carriage_returns_are_white_space(self) -> None:
        lines = parse("\tport\t=\t9999\t# tabbed\r\nlog_statement = on\r\n")
        self.assertEqual(
            [(e.key, e.value, e.comment) for e in lines if isinstance(e, Entry)],
            [("port", "9999", "# tabbed"), ("log_statement", "on", "")],
        )

    def test_comment_after_the_value(self) -> None:
        parsed = entry("port = 9999   # (change requires restart)")
        self.assertEqual((parsed.value, parsed.comment), ("9999", "# (change requires restart)"))
        self.assertEqual(entry("port = 9999#x").comment, "#x")

    def test_hash_sign_inside_quotes_is_part_of_the_value(self) -> None:
        parsed = entry("log_line_prefix = '%m # %p' # prefix")
        self.assertEqual((parsed.value, parsed.comment), ("%m # %p", "# prefix"))

    def test_quoted_value_keeps_equals_and_spaces(self) -> None:
        self.assertEqual(entry("reset_query_list = 'ABORT; SET a = 1'").value, "ABORT; SET a = 1")

    def test_empty_quoted_value(self) -> None:
        parsed = entry("failover_command = ''")
        self.assertEqual((parsed.value, parsed.quoted), ("", True))

    def test_nothing_after_equals_is_an_empty_value(self) -> None:
        self.assertEqual(entry("failover_command =").value, "")
        self.assertEqual(entry("failover_command =   # none").value, "")

    def test_backslash_quote_does_not_end_the_string_and_is_kept(self) -> None:
        # Pgpool-II's scanner: STRING is '([^'\n]|\\.)*' and the value is
        # the text between the quotes, not unescaped.
        self.assertEqual(entry(r"failover_command = 'echo it\'s' # c").value, r"echo it\'s")

    def test_backslash_before_the_closing_quote(self) -> None:
        # No later quote: the quote after the backslash closes the string.
        self.assertEqual(entry("logdir = 'C:\\pgpool\\'").value, "C:\\pgpool\\")

    def test_other_backslashes_are_kept(self) -> None:
        self.assertEqual(entry(r"primary_routing_query_pattern_list = '.*\;.*'").value, r".*\;.*")

    def test_unquoted_words_numbers_and_units(self) -> None:
        cases = {
            "on": "on",
            "streaming_replication": "streaming_replication",
            "host-1.example.com": "host-1.example.com",
            "/x": "/",
            "ALLOW_TO_FAILOVER": "ALLOW_TO_FAILOVER",
            "-1": "-1",
            "0x1F": "0x1F",
            "10s": "10s",
            "64MB": "64MB",
            "5min": "5min",
            "1.5": "1.5",
            ".5": ".5",
        }
        for text, value in cases.items():
            if text == "/x":
                continue  # below: a lone character followed by more text
            self.assertEqual(entry(f"k = {text}").value, value, text)
            self.assertFalse(entry(f"k = {text}").quoted, text)

    def test_one_other_character_is_a_value(self) -> None:
        # As in Pgpool-II, where listen_addresses = * works unquoted.
        self.assertEqual(entry("listen_addresses = *").value, "*")

    def test_comment_and_blank_lines(self) -> None:
        self.assertEqual(
            parse("# one\n\n   # two\n"),
            [Comment(1, "# one"), Comment(2, ""), Comment(3, "   # two")],
        )

    def test_lines_are_numbered_from_one(self) -> None:
        lines = parse("# c\n\nport = 1\n")
        self.assertEqual(lines[2], Entry("port", "1", 3, False, "", "port = 1"))

    def assert_syntax_error(self, text: str, key: Optional[str], *fragments: str) -> None:
        error = self.assertRaises(PgpoolConfError, parse, "# first\n" + text)
        self.assertEqual((error.line, error.key), (2, key))
        for fragment in fragments:
            self.assertIn(fragment, error.reason)

    def test_doubled_quote_inside_a_value_is_refused(self) -> None:
        # PostgreSQL's escape; Pgpool-II's scanner ends the string at the
        # first quote and then fails on the second string.
        self.assert_syntax_error("sr_check_user = 'it''s'", "sr_check_user", "\\'")

    def test_unterminated_quote_is_refused(self) -> None:
        self.assert_syntax_error("sr_check_user = 'nobody", "sr_check_user", "no closing quote")

    def test_text_after_an_unquoted_value_is_refused(self) -> None:
        # Pgpool-II would read logdir = '/', then settings var and log.
        self.assert_syntax_error("logdir = /var/log", "logdir", "single quotes")
        self.assert_syntax_error(
            "listen_addresses = 192.168.0.1", "listen_addresses", "single quotes"
        )
        self.assert_syntax_error(
            "listen_addresses = localhost, db1", "listen_addresses", "single quotes"
        )

    def test_text_after_the_closing_quote_is_refused(self) -> None:
        self.assert_syntax_error("port = '9999' 1", "port", "after the closing quote")

    def test_yaml_line_gets_a_hint(self) -> None:
        self.assert_syntax_error("port: 9999", None, "looks like YAML")

    def test_name_without_value_is_refused(self) -> None:
        self.assert_syntax_error("port", "port", "expected '=' and a value")

    def test_line_not_starting_with_a_name_is_refused(self) -> None:
        self.assert_syntax_error("= 5", None, "expected a parameter name")
        self.assert_syntax_error("'port' = 5", None, "expected a parameter name")

    def test_an_error_does_not_show_the_value(self) -> None:
        error = self.assertRaises(PgpoolConfError, parse, "sr_check_password = 's3cret")
        self.assertNotIn("s3cret", error.reason)

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet=st.sampled_from("ab_0 =#'\\\t\r\n*./:-x9"), max_size=60))
    def test_any_text_is_read_or_refused_with_a_line(self, text: str) -> None:
        try:
            lines = parse(text)
        except PgpoolConfError as e:
            self.assertGreaterEqual(e.line, 1)
            self.assertLessEqual(e.line, text.count("\n") + 1)
        else:
            self.assertEqual([line.line for line in lines], list(range(1, len(lines) + 1)))


# -- what becomes of each parameter ---------------------------------------------------


class SortOutTests(SynchronousTestCase):
    ours = frozenset(key for key in documented_keys() if "[" not in key)

    def sort(self, *settings: Tuple[str, Any]):
        return pgpoolconf.sort_out(
            [(key, value, line) for line, (key, value) in enumerate(settings, 1)], self.ours
        )

    def test_our_settings_are_kept(self) -> None:
        kept, notes = self.sort(
            ("port", "1"), ("backend_hostname0", "db1"), ("health_check_period0", "5")
        )
        self.assertEqual(
            kept,
            {"port": ("1", 1), "backend_hostname0": ("db1", 2), "health_check_period0": ("5", 3)},
        )
        self.assertEqual(notes, [])

    def test_unknown_names_are_left_for_the_loader(self) -> None:
        kept, notes = self.sort(("prot", "1"))
        self.assertEqual((kept, notes), ({"prot": ("1", 1)}, []))

    def test_old_names_are_read_under_the_new_one(self) -> None:
        kept, notes = self.sort(("black_function_list", "nextval"))
        self.assertEqual(kept, {"write_function_list": ("nextval", 1)})
        self.assertEqual(
            notes,
            [
                pgpoolconf.Note(
                    1,
                    "black_function_list",
                    "the name before Pgpool-II 4.2 of write_function_list; read as "
                    "write_function_list",
                    "write_function_list",
                )
            ],
        )

    def test_old_and_new_name_together_take_the_later(self) -> None:
        kept, notes = self.sort(("write_function_list", "a"), ("black_function_list", "b"))
        self.assertEqual(kept, {"write_function_list": ("b", 2)})
        self.assertEqual(
            [(n.line, n.key, n.used_as) for n in notes],
            [(2, "black_function_list", "write_function_list"), (1, "write_function_list", None)],
        )

    def test_watchdog_parameters_are_dropped_with_a_reason(self) -> None:
        kept, notes = self.sort(("use_watchdog", "on"), ("wd_port1", "9000"), ("wd_port", "9000"))
        self.assertEqual(kept, {})
        self.assertEqual(
            [(n.key, n.used_as) for n in notes],
            [("use_watchdog", None), ("wd_port1", None), ("wd_port", None)],
        )
        self.assertTrue(all("no watchdog" in n.message for n in notes))

    def test_per_node_health_check_user_is_not_supported(self) -> None:
        kept, notes = self.sort(("backend_hostname0", "db1"), ("health_check_user0", "u"))
        self.assertEqual(kept, {"backend_hostname0": ("db1", 1)})
        self.assertEqual(
            str(notes[0]),
            "health_check_user0: not supported for one node: every node uses health_check_user",
        )

    def test_health_check_of_a_node_not_configured_is_ignored(self) -> None:
        # Pgpool-II fills a slot nobody uses.
        kept, notes = self.sort(("backend_hostname0", "db1"), ("health_check_period3", "5"))
        self.assertEqual(kept, {"backend_hostname0": ("db1", 1)})
        self.assertEqual(
            str(notes[0]),
            "health_check_period3: ignored: there is no backend 3 (no backend_hostname3)",
        )

    def test_numbered_key_next_to_a_backends_list_is_left_for_the_loader(self) -> None:
        kept, notes = self.sort(("backends", []), ("health_check_period0", "5"))
        self.assertEqual((list(kept), notes), (["backends", "health_check_period0"], []))

    def test_every_pgpool_parameter_is_known(self) -> None:
        """
        Each of Pgpool-II 4.1-4.6's parameters (and each numbered one with
        its number) is a setting here, a numbered backend setting, an old
        name, or dropped with a reason; none is left for the loader to
        refuse, except the backend ones without their number, which
        Pgpool-II does not read either.
        """
        for name in pgpoolconf.PGPOOL_II_PARAMETERS:
            keys = [name] + ([name + "0"] if name in pgpoolconf._ARRAYS else [])
            for key in keys:
                # Node 0 is configured (by the key itself, for a backend_*0).
                node = [] if key.startswith("backend_") else [("backend_hostname0", "db1", 1)]
                kept, notes = pgpoolconf.sort_out(node + [(key, "x", 2)], self.ours)
                if key in self.ours or (key != name and name in pgpoolconf._PER_BACKEND):
                    self.assertIn(key, kept, key)
                    self.assertEqual(notes, [], key)
                elif name in pgpoolconf._PER_BACKEND:
                    self.assertEqual(key, name)
                    self.assertTrue(name.startswith("backend_"), name)
                    self.assertIn(key, kept, key)
                else:
                    self.assertEqual(len(notes), 1, key)
                    self.assertEqual(notes[0].key, key)
                    self.assertRegex(
                        notes[0].message, r"^(not needed: |not supported|the name before)", key
                    )

    def test_reasons_are_given_only_for_pgpool_parameters(self) -> None:
        self.assertLessEqual(set(pgpoolconf._NOT_USED), set(pgpoolconf.PGPOOL_II_PARAMETERS))
        self.assertLessEqual(set(pgpoolconf._RENAMED), set(pgpoolconf.PGPOOL_II_PARAMETERS))
        self.assertEqual(set(pgpoolconf._NOT_USED) & self.ours, set())


# -- loading a pgpool.conf ---------------------------------------------------------------


#: The warnings for Debian's sample with every default uncommented:
#: (line, key), in the order of the file.
DEBIAN_UNCOMMENTED_WARNINGS = [
    (42, "socket_dir"),
    (71, "serialize_accept"),
    (149, "ssl_passphrase_command"),
    (196, "log_line_prefix"),
    (202, "log_hostname"),
    (210, "log_client_messages"),
    (227, "log_error_verbosity"),
    (229, "client_min_messages"),
    (255, "logging_collector"),
    (262, "log_directory"),
    (265, "log_filename"),
    (269, "log_file_mode"),
    (273, "log_truncate_on_rotation"),
    (283, "log_rotation_age"),
    (287, "log_rotation_size"),
    (295, "pid_file_name"),
    (317, "reset_query_list"),
    (337, "lobj_lock_table"),
    (528, "health_check_user0"),
    (529, "health_check_password0"),
    (530, "health_check_database0"),
    (533, "connect_timeout0"),
    (635, "use_watchdog"),
    (641, "trusted_servers"),
    (646, "ping_path"),
    (652, "hostname0"),
    (656, "wd_port0"),
    (659, "pgpool_port0"),
    (663, "hostname1"),
    (664, "wd_port1"),
    (665, "pgpool_port1"),
    (667, "hostname2"),
    (668, "wd_port2"),
    (669, "pgpool_port2"),
    (671, "wd_priority"),
    (675, "wd_authkey"),
    (679, "wd_ipc_socket_dir"),
    (688, "delegate_IP"),
    (692, "if_cmd_path"),
    (696, "if_up_cmd"),
    (699, "if_down_cmd"),
    (702, "arping_path"),
    (706, "arping_cmd"),
    (712, "clear_memqcache_on_escalation"),
    (719, "wd_escalation_command"),
    (722, "wd_de_escalation_command"),
    (728, "failover_when_quorum_exists"),
    (733, "failover_require_consensus"),
    (738, "allow_multiple_failover_requests_from_node"),
    (744, "enable_consensus_with_half_votes"),
    (756, "wd_remove_shutdown_nodes"),
    (761, "wd_lost_node_removal_timeout"),
    (768, "wd_no_show_node_removal_timeout"),
    (781, "wd_monitoring_interfaces_list"),
    (789, "wd_lifecheck_method"),
    (792, "wd_interval"),
    (798, "heartbeat_hostname0"),
    (802, "heartbeat_port0"),
    (806, "heartbeat_device0"),
    (814, "heartbeat_hostname1"),
    (815, "heartbeat_port1"),
    (816, "heartbeat_device1"),
    (817, "heartbeat_hostname2"),
    (818, "heartbeat_port2"),
    (819, "heartbeat_device2"),
    (821, "wd_heartbeat_keepalive"),
    (824, "wd_heartbeat_deadtime"),
    (830, "wd_life_point"),
    (833, "wd_lifecheck_query"),
    (836, "wd_lifecheck_dbname"),
    (839, "wd_lifecheck_user"),
    (842, "wd_lifecheck_password"),
    (872, "check_temp_table"),
    (883, "enable_shared_relcache"),
    (889, "relcache_query_target"),
    (935, "memqcache_cache_block_size"),
    (939, "memqcache_oiddir"),
]


class DebianSampleTests(PgpoolConfTestCase):
    """
    Debian's C{/etc/pgpool2/pgpool.conf}.  As shipped, everything but
    C{backend_clustering_mode} and the watchdog's C{hostname0} is commented
    out, so there is no backend: Pgpool-II starts so, and refuses clients
    until a reload adds one; so does the proxy, with warnings only.
    """

    def test_as_shipped_it_loads_with_warnings_only(self) -> None:
        path = self.write(read_data("debian", "pgpool.conf"))
        warnings: List[ConfigWarning] = []
        config = load_config(path, warnings)
        self.assertEqual(config.backends, ())
        self.assertEqual(
            [(w.line, w.key) for w in warnings], [(652, "hostname0"), (None, "backends")]
        )
        self.assertTrue(warnings[1].reason.startswith("no backend is configured"))

    def test_with_a_backend_it_loads_with_one_warning(self) -> None:
        config, warnings = self.load(read_data("debian", "pgpool.conf") + ONE_BACKEND)
        self.assertEqual(config.backends, (BackendConfig(hostname="db1", port=5432),))
        self.assertEqual(config.backend_clustering_mode, "streaming_replication")
        self.assertEqual(
            [str(w).split(": ", 1)[1] for w in warnings],
            [
                "hostname0: not supported: there is no watchdog; run one proxy, or move a "
                "virtual IP between proxies with keepalived or your orchestrator"
            ],
        )

    def test_every_default_uncommented_loads_with_warnings_only(self) -> None:
        config, warnings = self.load(uncommented(read_data("debian", "pgpool.conf")))
        self.assertEqual([(w.line, w.key) for w in warnings], DEBIAN_UNCOMMENTED_WARNINGS)
        self.assertEqual(config.port, 5433)
        self.assertEqual(
            config.backends,
            (
                BackendConfig(
                    hostname="host1",
                    port=5432,
                    weight=1.0,
                    data_directory="/data",
                    application_name="server0",
                    health_check_period=0.0,
                    health_check_timeout=20.0,
                    health_check_max_retries=0,
                    health_check_retry_delay=1.0,
                ),
                BackendConfig(
                    hostname="host2", port=5433, data_directory="/data1", application_name="server1"
                ),
            ),
        )
        # Given twice (lines 317 and 319): the last counts, as in Pgpool-II.
        self.assertEqual(
            config.reset_query_list, "ABORT; RESET ALL; SET SESSION AUTHORIZATION DEFAULT"
        )
        self.assertEqual(config.authentication_timeout, 60.0)
        self.assertEqual(config.child_life_time, 300.0)
        self.assertEqual(config.memqcache_total_size, 64 * 1024 * 1024)
        self.assertEqual(config.sr_check_user, "nobody")
        # The relation cache's settings, with Pgpool-II's meaning.
        self.assertEqual(
            (config.relcache_expire, config.relcache_size, config.check_unlogged_table),
            (0.0, 256, True),
        )

    def test_debian_pool_hba_and_pcp_conf_are_read_next_to_it(self) -> None:
        directory = self.directory()
        for name in ("pool_hba.conf", "pcp.conf"):
            shutil.copy(os.path.join(DEBIAN, name), directory)
        path = self.write(
            read_data("debian", "pgpool.conf") + ONE_BACKEND + "enable_pool_hba = on\n",
            directory=directory,
        )
        config = load_config(path, [])
        self.assertEqual(config.pool_hba_file, os.path.join(directory, "pool_hba.conf"))
        self.assertEqual(config.pcp_conf_file, os.path.join(directory, "pcp.conf"))
        self.assertEqual(config.pool_passwd, os.path.join(directory, "pool_passwd"))
        from twisted_pgpool.service import check_files

        check_files(config)  # Debian's pool_hba.conf parses


class TutorialTests(PgpoolConfTestCase):
    def test_exactly_the_expected_values(self) -> None:
        path = os.path.join(TUTORIAL, "pgpool.conf")
        config = load_config(path, [])
        here = TUTORIAL
        expected = PgpoolConfig(
            listen_addresses="*",
            port=9999,
            backends=(
                BackendConfig(
                    hostname="server1",
                    port=5432,
                    weight=1.0,
                    flag="ALLOW_TO_FAILOVER",
                    data_directory="/var/lib/pgsql/15/data",
                    application_name="server1",
                ),
                BackendConfig(
                    hostname="server2",
                    port=5432,
                    weight=2.0,
                    flag="ALLOW_TO_FAILOVER",
                    data_directory="/var/lib/pgsql/15/data",
                    application_name="server2",
                ),
                BackendConfig(
                    hostname="server3",
                    port=5433,
                    weight=0.5,
                    flag="DISALLOW_TO_FAILOVER",
                    data_directory="/var/lib/pgsql/15/data",
                    application_name="server3",
                    health_check_period=20.0,
                    health_check_max_retries=0,
                ),
            ),
            backend_clustering_mode="streaming_replication",
            pcp_listen_addresses="*",
            pcp_port=9898,
            pcp_socket_dir="/var/run/postgresql",
            num_init_children=32,
            max_pool=4,
            child_life_time=300.0,
            connection_life_time=0.0,
            client_idle_limit=300.0,
            load_balance_mode=True,
            statement_level_load_balance=False,
            disable_load_balance_on_write="transaction",
            write_function_list=("nextval", "setval"),
            sr_check_user="pgpool",
            sr_check_password="",
            sr_check_period=10.0,
            delay_threshold=10000000,
            health_check_period=5.0,
            health_check_timeout=30.0,
            health_check_user="pgpool",
            health_check_password="",
            health_check_max_retries=3,
            health_check_retry_delay=1.0,
            connect_timeout=10.0,
            failover_command="/etc/pgpool-II/failover.sh %d %h %p %D %m %H %M %P %r %R %N %S",
            follow_primary_command="/etc/pgpool-II/follow_primary.sh %d %h %p %D %m %H %M %P %r %R",
            failover_on_backend_error=False,
            search_primary_node_timeout=300.0,
            recovery_user="postgres",
            recovery_password="",
            recovery_1st_stage_command="recovery_1st_stage",
            enable_pool_hba=True,
            pool_hba_file=os.path.join(here, "pool_hba.conf"),
            pool_passwd=os.path.join(here, "pool_passwd"),
            pcp_conf_file=os.path.join(here, "pcp.conf"),
            authentication_timeout=60.0,
            allow_clear_text_frontend_auth=False,
            log_destination="stderr",
            log_connections=True,
            log_disconnections=True,
            log_statement=False,
            log_per_node_statement=False,
            log_min_messages="info",
            logdir="/var/lib/pgpool",
            memory_cache_enabled=False,
            memqcache_method="shmem",
            memqcache_total_size=64 * 1024 * 1024,
            memqcache_maxcache=400 * 1024,
            # Defaults that name files are resolved against the directory.
            ssl_key=os.path.join(here, "server.key"),
            ssl_cert=os.path.join(here, "server.crt"),
            manhole_ssh_key_dir=here,
            source=path,
        )
        self.assertEqual(config, expected)

    def test_warnings(self) -> None:
        warnings: List[ConfigWarning] = []
        load_config(os.path.join(TUTORIAL, "pgpool.conf"), warnings)
        self.assertEqual(
            [w.key for w in warnings],
            [
                "unix_socket_directories",
                "process_management_mode",
                "log_hostname",
                "logging_collector",
                "log_directory",
                "log_filename",
                "log_truncate_on_rotation",
                "log_rotation_age",
                "log_rotation_size",
                "pid_file_name",
                "use_watchdog",
                "hostname0",
                "wd_port0",
                "pgpool_port0",
                "hostname1",
                "wd_port1",
                "pgpool_port1",
                "delegate_ip",
                "if_up_cmd",
                "if_down_cmd",
                "arping_cmd",
                "wd_lifecheck_method",
                "heartbeat_hostname0",
                "heartbeat_port0",
                "heartbeat_device0",
                "heartbeat_hostname1",
                "heartbeat_port1",
                "heartbeat_device1",
                "memqcache_oiddir",
            ],
        )

    def test_files_next_to_it_are_usable(self) -> None:
        from twisted_pgpool.service import check_files

        check_files(load_config(os.path.join(TUTORIAL, "pgpool.conf"), []))


class LoadTests(PgpoolConfTestCase):
    def test_conf_extension_is_pgpool_conf(self) -> None:
        config, _ = self.load(ONE_BACKEND + "port = 5555\n", name="proxy.conf")
        self.assertEqual(config.port, 5555)

    def test_other_extension_is_recognised_by_content(self) -> None:
        config, _ = self.load("# sample\n\n" + ONE_BACKEND, name="pgpool.conf.sample")
        self.assertEqual(config.backends[0].hostname, "db1")

    def test_yaml_stays_yaml(self) -> None:
        config, _ = self.load("backend_hostname0: db1\n", name="conf.yaml")
        self.assertEqual(config.backends[0].hostname, "db1")

    def test_warnings_are_logged_when_not_collected(self) -> None:
        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        path = self.write(ONE_BACKEND + "use_watchdog = on\n")
        load_config(path)
        logged = [e for e in events if e.get("key") == "use_watchdog"]
        self.assertEqual(len(logged), 1)
        self.assertEqual((logged[0]["line"], logged[0]["log_level"].name), (3, "warn"))

    def test_bad_value_names_file_line_and_key(self) -> None:
        self.assert_error(
            ONE_BACKEND + "use_watchdog = on\nport = abc\n",
            4,
            "port",
            "expected an integer from 1 to 65535, got 'abc'",
        )

    def test_missing_file_names_file_line_and_key(self) -> None:
        self.assert_error(
            ONE_BACKEND + "pool_passwd = 'nosuch'\n", 3, "pool_passwd", "does not exist"
        )

    def test_missing_pool_hba_file(self) -> None:
        self.assert_error(
            ONE_BACKEND + "enable_pool_hba = on\n",
            3,
            "enable_pool_hba",
            "pool_hba.conf does not exist",
        )

    def test_syntax_error_names_file_line_and_key(self) -> None:
        self.assert_error(ONE_BACKEND + "port = 99 99\n", 3, "port", "single quotes")

    def test_include_is_refused(self) -> None:
        self.assert_error(
            ONE_BACKEND + "include 'other.conf'\n", 3, "include", "include is not supported"
        )

    def test_unknown_key_suggests_a_close_name(self) -> None:
        message = self.assert_error(ONE_BACKEND + "load_balance_mod = on\n", 3, "load_balance_mod")
        self.assertTrue(message.endswith(": unknown key; did you mean 'load_balance_mode'?"))

    def test_secret_value_is_not_shown(self) -> None:
        message = self.assert_error(
            ONE_BACKEND + "sr_check_password = 's3cret\n", 3, "sr_check_password"
        )
        self.assertNotIn("s3cret", message)

    def test_booleans_as_pgpool_reads_them(self) -> None:
        config, _ = self.load(
            ONE_BACKEND + "log_statement = 1\nlog_connections = yes\n"
            "load_balance_mode = OFF\nssl = false\n"
        )
        self.assertEqual(
            (config.log_statement, config.log_connections, config.load_balance_mode, config.ssl),
            (True, True, False, False),
        )

    def test_units(self) -> None:
        config, _ = self.load(
            ONE_BACKEND + "child_life_time = 5min\n"
            "connect_timeout = 2s\nconnect_timeout0 = 1\n"
            "memqcache_maxcache = 1MB\n"
        )
        self.assertEqual(
            (config.child_life_time, config.connect_timeout, config.memqcache_maxcache),
            (300.0, 2.0, 1024 * 1024),
        )

    def test_unquoted_star(self) -> None:
        config, _ = self.load(ONE_BACKEND + "listen_addresses = *\n")
        self.assertEqual(config.listen_addresses, "*")

    def test_empty_values(self) -> None:
        config, _ = self.load(ONE_BACKEND + "failover_command =\nsr_check_user = ''\n")
        self.assertEqual((config.failover_command, config.sr_check_user), ("", ""))

    def test_health_check_period0(self) -> None:
        # Pgpool-II's spelling of a per-node override.
        config, warnings = self.load(
            ONE_BACKEND + "backend_hostname1 = 'db2'\nbackend_port1 = 5433\n"
            "health_check_period = 10\nhealth_check_period0 = 5\n"
            "health_check_timeout1 = 3s\nhealth_check_max_retries1 = 2\n"
            "health_check_retry_delay0 = 500ms\n"
        )
        self.assertEqual(warnings, [])
        self.assertEqual(config.health_check_period, 10.0)
        self.assertEqual(
            [
                (
                    b.health_check_period,
                    b.health_check_timeout,
                    b.health_check_max_retries,
                    b.health_check_retry_delay,
                )
                for b in config.backends
            ],
            [(5.0, None, None, 0.5), (None, 3.0, 2, None)],
        )

    def test_health_check_period0_error_names_it_as_written(self) -> None:
        self.assert_error(
            ONE_BACKEND + "health_check_period0 = soon\n",
            3,
            "health_check_period0",
            "expected a duration",
        )

    def test_a_setting_given_twice_takes_the_last_value(self) -> None:
        config, warnings = self.load(ONE_BACKEND + "port = 1111\nport = 2222\n")
        self.assertEqual(config.port, 2222)
        self.assertEqual(
            [str(w).split(": ", 1)[1] for w in warnings],
            ["port: set again on line 4; that value is used, as in Pgpool-II"],
        )

    def test_backend_without_port_is_used_with_5432_and_a_warning(self) -> None:
        config, warnings = self.load("backend_hostname0 = 'db1'\n")
        self.assertEqual(config.backends[0].port, 5432)
        self.assertEqual(
            [str(w).split(": ", 1)[1] for w in warnings],
            [
                "backend_hostname0: backend_port0 is not set: Pgpool-II would leave this "
                "node unused; it is used here with port 5432"
            ],
        )

    def test_backend_without_hostname_is_an_error(self) -> None:
        self.assert_error(ONE_BACKEND + "backend_port1 = 5433\n", 3, "backend_hostname1", "missing")

    def test_old_name_is_read_under_the_new(self) -> None:
        config, warnings = self.load(
            ONE_BACKEND + "white_function_list = 'now'\n"
            "follow_master_command = 'x.sh'\n"
            "fail_over_on_backend_error = off\n"
        )
        self.assertEqual(
            (
                config.read_only_function_list,
                config.follow_primary_command,
                config.failover_on_backend_error,
            ),
            (("now",), "x.sh", False),
        )
        self.assertEqual(
            [w.key for w in warnings],
            ["white_function_list", "follow_master_command", "fail_over_on_backend_error"],
        )

    def test_legacy_clustering_mode_keys(self) -> None:
        config, _ = self.load(
            ONE_BACKEND + "master_slave_mode = on\nmaster_slave_sub_mode = 'stream'\n"
        )
        self.assertEqual(config.backend_clustering_mode, "streaming_replication")

    def test_our_own_settings_are_accepted(self) -> None:
        config, warnings = self.load(
            ONE_BACKEND + "read_your_writes = off\nmetrics_listen_addresses = '127.0.0.1'\n"
        )
        self.assertEqual(
            (config.read_your_writes, config.metrics_listen_addresses), ("off", "127.0.0.1")
        )
        self.assertEqual(warnings, [])


class OverrideTests(PgpoolConfTestCase):
    """
    Pgpool-II's C{-a pool_hba.conf} and C{-F pcp.conf}.
    """

    def test_overrides_replace_the_files_settings_and_are_kept(self) -> None:
        directory = self.directory()
        hba = self.write("local all all trust\n", "other_hba.conf", directory)
        path = self.write(ONE_BACKEND + "enable_pool_hba = on\n", directory=directory)
        config = load_config(
            path, [], overrides={"pool_hba_file": hba, "pcp_conf_file": "/etc/x/pcp.conf"}
        )
        self.assertEqual((config.pool_hba_file, config.pcp_conf_file), (hba, "/etc/x/pcp.conf"))
        self.assertEqual(
            config.overrides, (("pcp_conf_file", "/etc/x/pcp.conf"), ("pool_hba_file", hba))
        )

    def test_a_reload_keeps_the_overrides(self) -> None:
        from twisted_pgpool.admin.reload import ConfigReloader
        from twisted_pgpool.service import ProxyCore

        directory = self.directory()
        hba = self.write("local all all trust\n", "other_hba.conf", directory)
        path = self.write(
            ONE_BACKEND + f"enable_pool_hba = on\npcp_port = 0\nlogdir = '{directory}'\n",
            directory=directory,
        )
        core = ProxyCore.from_config(
            load_config(path, [], overrides={"pool_hba_file": hba}), Clock()
        )
        self.write(
            ONE_BACKEND + "enable_pool_hba = on\npcp_port = 0\n"
            f"logdir = '{directory}'\nlog_statement = on\n",
            directory=directory,
        )
        ConfigReloader(core).reload()
        self.assertTrue(core.config.log_statement)
        self.assertEqual(core.config.pool_hba_file, hba)

    def test_command_line_paths_are_relative_to_the_current_directory(self) -> None:
        directory = self.directory()
        hba = self.write("local all all trust\n", "my_hba.conf", directory)
        path = self.write(
            ONE_BACKEND + "enable_pool_hba = on\npcp_port = 0\n", directory=self.directory()
        )
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(directory)
        config = cli.load_for_start(path, hba_file="my_hba.conf", pcp_file="my_pcp.conf")
        self.assertEqual(config.pool_hba_file, hba)
        self.assertEqual(config.pcp_conf_file, os.path.join(directory, "my_pcp.conf"))


# -- twisted-pgpool convert ------------------------------------------------------------


class ConvertTests(PgpoolConfTestCase):
    def round_trip(self, text: str, directory: Optional[str] = None) -> str:
        """
        Convert C{text}, load both, and check they give the same
        configuration (and the YAML no warnings); return the YAML.
        """
        directory = directory or self.directory()
        conf = self.write(text, "pgpool.conf", directory)
        yaml_text, _ = convert_pgpool_conf(conf)
        converted = self.write(yaml_text, "conf.yaml", directory)
        warnings: List[ConfigWarning] = []
        from_yaml = load_config(converted, warnings)
        self.assertEqual(warnings, [])
        self.assertEqual(from_yaml, attrs.evolve(load_config(conf, []), source=converted))
        return yaml_text

    def test_debian_sample_uncommented_round_trips(self) -> None:
        self.round_trip(uncommented(read_data("debian", "pgpool.conf")))

    def test_tutorial_round_trips(self) -> None:
        directory = self.directory()
        for name in ("pool_hba.conf", "pool_passwd", "pcp.conf"):
            shutil.copy(os.path.join(TUTORIAL, name), directory)
        self.round_trip(read_data("tutorial", "pgpool.conf"), directory)

    def test_comments_are_carried_over(self) -> None:
        yaml_text = self.round_trip(read_data("debian", "pgpool.conf") + ONE_BACKEND)
        self.assertIn("\n# - pgpool Connection Settings -\n", yaml_text)
        self.assertIn("\n#listen_addresses = 'localhost'\n", yaml_text)
        # Indented with tabs in the sample (line 580): spaces in YAML.
        self.assertIn("\n" + " " * 35 + "# or backend process is killed.\n", yaml_text)

    def test_settings_not_used_become_comments_with_the_reason(self) -> None:
        yaml_text = self.round_trip(ONE_BACKEND + "use_watchdog = on   # HA\n")
        self.assertIn(
            "# twisted-pgpool: use_watchdog: not supported: there is no watchdog", yaml_text
        )
        self.assertIn("\n# use_watchdog = on   # HA\n", yaml_text)

    def test_trailing_comments_stay_on_their_line(self) -> None:
        yaml_text = self.round_trip(ONE_BACKEND + "port = 9999   # (change requires restart)\n")
        self.assertIn("\nport: 9999  # (change requires restart)\n", yaml_text)

    def test_old_names_are_written_new(self) -> None:
        yaml_text = self.round_trip(ONE_BACKEND + "black_function_list = 'nextval'\n")
        self.assertIn("\nwrite_function_list: nextval\n", yaml_text)

    def test_earlier_of_two_settings_becomes_a_comment(self) -> None:
        yaml_text = self.round_trip(ONE_BACKEND + "port = 1\nport = 2\n")
        self.assertIn("\n# port = 1\nport: 2\n", yaml_text)

    def test_values_are_quoted_when_yaml_would_read_them_otherwise(self) -> None:
        yaml_text = self.round_trip(
            ONE_BACKEND + "read_your_writes = off\nsr_check_user = '123'\n"
            "load_balance_mode = on\nport = 9999\nlisten_addresses = '*'\n"
            "failover_command = 'a: b # c'\nhealth_check_database = 'yes'\n"
            "logdir = '/tmp/x'\nreset_query_list = 'it\\'s'\n"
        )
        for line in (
            "read_your_writes: 'off'",
            "sr_check_user: '123'",
            "load_balance_mode: on",
            "port: 9999",
            "listen_addresses: '*'",
            "failover_command: 'a: b # c'",
            "health_check_database: 'yes'",
            "logdir: /tmp/x",
            "reset_query_list: it\\'s",
            "backend_hostname0: db1",
        ):
            self.assertIn(f"\n{line}\n", yaml_text)

    def test_plain_check(self) -> None:
        self.assertTrue(yaml_plain_keeps_value("backend_weight0", "1"))
        self.assertTrue(yaml_plain_keeps_value("health_check_period1", "10"))
        self.assertFalse(yaml_plain_keeps_value("backend_hostname0", "10"))
        self.assertFalse(yaml_plain_keeps_value("sr_check_user", ""))
        self.assertFalse(yaml_plain_keeps_value("no_such_key", "1"))

    def run_cli(self, *argv: str) -> Tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        status = cli.main(list(argv))
        return status, out.getvalue(), err.getvalue()

    def test_command_writes_yaml_and_warnings(self) -> None:
        path = self.write(ONE_BACKEND + "use_watchdog = on\n")
        status, out, err = self.run_cli("convert", path)
        self.assertEqual(status, 0)
        self.assertIn("\nbackend_hostname0: db1\n", out)
        self.assertEqual(
            err.splitlines(),
            [
                f"twisted-pgpool convert: {path}:3: use_watchdog: not supported: there is no "
                "watchdog; run one proxy, or move a virtual IP between proxies with keepalived "
                "or your orchestrator"
            ],
        )

    def test_command_says_when_the_result_will_not_load(self) -> None:
        path = self.write(
            ONE_BACKEND + "backend_flag0 = 'ALLOW_TO_FAILOVER|DISALLOW_TO_FAILOVER'\n"
        )
        status, out, err = self.run_cli("convert", path)
        self.assertEqual(status, 1)
        self.assertIn("backend_flag0: ALLOW_TO_FAILOVER|DISALLOW_TO_FAILOVER\n", out)
        self.assertIn(
            f"the result will not load until this is fixed: {path}:3: backend_flag0: ", err
        )

    def test_command_converts_debians_sample_with_warnings_only(self) -> None:
        path = self.write(read_data("debian", "pgpool.conf"))
        status, out, err = self.run_cli("convert", path)
        self.assertEqual(status, 0)
        self.assertIn("backend_clustering_mode: streaming_replication\n", out)
        self.assertNotIn("will not load", err)

    def test_command_refuses_a_file_it_cannot_read(self) -> None:
        path = self.write(ONE_BACKEND + "port = 'x\n")
        status, out, err = self.run_cli("convert", path)
        self.assertEqual((status, out), (2, ""))
        self.assertTrue(err.startswith(f"twisted-pgpool convert: {path}:3: port: "))


# -- twistd pgpool and twisted-pgpool run -------------------------------------------------


class CommandLineTests(PgpoolConfTestCase):
    def test_plugin_reads_pgpool_conf_with_a_and_F(self) -> None:
        from twisted.plugins.pgpool_plugin import Options

        directory = self.directory()
        hba = self.write("local all all trust\n", "hba", directory)
        path = self.write(ONE_BACKEND + "enable_pool_hba = on\npcp_port = 0\n")
        options = Options()
        options.parseOptions(["-c", path, "-a", hba, "-F", "/etc/pgpool2/pcp.conf"])
        config = options["config_object"]
        self.assertEqual(
            (config.pool_hba_file, config.pcp_conf_file), (hba, "/etc/pgpool2/pcp.conf")
        )

    def test_plugin_shows_warnings_then_the_error(self) -> None:
        from twisted.plugins.pgpool_plugin import Options

        path = self.write(ONE_BACKEND + "use_watchdog = on\nport = abc\n")
        error = self.assertRaises(SystemExit, Options().parseOptions, ["-c", path])
        self.assertEqual(
            str(error).splitlines(),
            [
                f"{path}:3: use_watchdog: not supported: there is no watchdog; run one proxy, "
                "or move a virtual IP between proxies with keepalived or your orchestrator",
                f"{path}:4: port: expected an integer from 1 to 65535, got 'abc'",
            ],
        )

    def test_run_shows_warnings_then_the_error(self) -> None:
        path = self.write(ONE_BACKEND + "use_watchdog = on\nport = abc\n")
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.assertEqual(cli.main(["run", "-c", path, "-a", "x", "-F", "y"]), 2)
        self.assertEqual(
            [line.split(": ", 2)[2] for line in err.getvalue().splitlines()],
            [
                "use_watchdog: not supported: there is no watchdog; run one proxy, "
                "or move a virtual IP between proxies with keepalived or your "
                "orchestrator",
                "port: expected an integer from 1 to 65535, got 'abc'",
            ],
        )

    def test_warnings_of_a_good_start_are_logged_together(self) -> None:
        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        path = self.write(ONE_BACKEND + "use_watchdog = on\nwd_port0 = 9000\npcp_port = 0\n")
        cli.load_for_start(path)
        self.assertEqual(
            [(e["line"], e["key"]) for e in events if "key" in e],
            [(3, "use_watchdog"), (4, "wd_port0")],
        )
