"""
Tests for L{twisted_pgpool.config}: reading C{conf.yaml} into the model, and
the one-line errors users get for every kind of mistake.
"""

from __future__ import annotations

import datetime
import os
import textwrap
from typing import Any, Dict, List

import attrs
from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.config import (
    LEGACY_MODE_KEYS,
    BackendConfig,
    ConfigError,
    ConfigWarning,
    PgpoolConfig,
    config_from_dict,
    documented_keys,
    load_config,
)

ONE_BACKEND = "backends:\n  - hostname: db1\n"


class ConfigTestCase(SynchronousTestCase):
    """
    Helpers to write a configuration file and load it or expect an error.
    """

    def write(self, text: str) -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "conf.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(textwrap.dedent(text))
        return path

    def load(self, text: str) -> PgpoolConfig:
        return load_config(self.write(text))

    def load_with_backend(self, text: str) -> PgpoolConfig:
        return self.load(textwrap.dedent(text) + ONE_BACKEND)

    def assert_error(self, text: str, line: int, key: str, *fragments: str) -> str:
        """
        Loading C{text} fails with a message that starts with file, line and
        key and contains every fragment.
        """
        path = self.write(text)
        error = self.assertRaises(ConfigError, load_config, path)
        message = str(error)
        self.assertTrue(
            message.startswith(f"{path}:{line}: {key}: "),
            f"{message!r} does not start with {path}:{line}: {key}:",
        )
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message


class DefaultsTests(ConfigTestCase):
    def test_omitted_settings_take_pgpool_defaults(self) -> None:
        config = self.load(ONE_BACKEND)
        self.assertEqual(config.listen_addresses, "localhost")
        self.assertEqual(config.port, 9999)
        self.assertFalse(config.enable_pool_hba)
        self.assertFalse(config.allow_clear_text_frontend_auth)
        self.assertEqual(config.authentication_timeout, 60.0)
        self.assertEqual(config.connect_timeout, 10.0)
        self.assertEqual(config.max_message_length, 1073741823)
        self.assertEqual(config.max_buffered_message_length, 16 * 1024 * 1024)
        self.assertEqual(config.log_destination, "stderr")
        self.assertEqual(config.syslog_facility, "LOCAL0")
        self.assertEqual(config.syslog_ident, "pgpool")
        self.assertEqual(config.log_min_messages, "warning")
        self.assertFalse(config.log_connections)
        self.assertFalse(config.log_disconnections)
        self.assertFalse(config.log_statement)
        self.assertFalse(config.log_per_node_statement)

    def test_omitted_backend_settings_take_pgpool_defaults(self) -> None:
        (backend,) = self.load(ONE_BACKEND).backends
        self.assertEqual(
            backend,
            BackendConfig(
                hostname="db1",
                port=5432,
                weight=1.0,
                flag="ALLOW_TO_FAILOVER",
                data_directory="",
                application_name="",
            ),
        )
        self.assertTrue(backend.allow_to_failover)
        self.assertFalse(backend.always_primary)

    def test_default_paths_are_in_the_config_directory(self) -> None:
        path = self.write(ONE_BACKEND)
        config = load_config(path)
        directory = os.path.dirname(os.path.abspath(path))
        self.assertEqual(config.pool_hba_file, os.path.join(directory, "pool_hba.conf"))
        self.assertEqual(config.pool_passwd, os.path.join(directory, "pool_passwd"))

    def test_source_is_the_path_read(self) -> None:
        path = self.write(ONE_BACKEND)
        self.assertEqual(load_config(path).source, path)

    def test_config_is_frozen(self) -> None:
        config = self.load(ONE_BACKEND)
        self.assertRaises(attrs.exceptions.FrozenInstanceError, setattr, config, "port", 1)

    def test_backends_are_a_tuple_in_file_order(self) -> None:
        config = self.load("backends:\n  - hostname: db1\n  - hostname: db2\n")
        self.assertEqual(tuple(b.hostname for b in config.backends), ("db1", "db2"))


class FileErrorTests(ConfigTestCase):
    def test_missing_file_names_the_path(self) -> None:
        path = os.path.join(self.mktemp(), "conf.yaml")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(
            str(error), f"{path}: cannot read the configuration file: No such file or directory"
        )

    def test_directory_instead_of_file_is_rejected(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        error = self.assertRaises(ConfigError, load_config, directory)
        self.assertTrue(str(error).startswith(f"{directory}: cannot read"))

    def test_yaml_syntax_error_gives_the_line(self) -> None:
        path = self.write("port: 9999\nbackends: [\n  - hostname: db1\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertIn("invalid YAML", str(error))
        self.assertEqual(error.source, path)
        self.assertIsNotNone(error.line)

    def test_unquoted_star_gets_a_quoting_hint(self) -> None:
        path = self.write("listen_addresses: *\n" + ONE_BACKEND)
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertTrue(str(error).startswith(f"{path}:1: invalid YAML"))
        self.assertIn("write '*' in quotes", str(error))

    def test_non_utf8_file_is_rejected(self) -> None:
        path = self.write("")
        with open(path, "wb") as f:
            f.write(b"syslog_ident: \xff\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertIn("not UTF-8", str(error))

    def test_duplicate_key_is_rejected_with_its_line(self) -> None:
        path = self.write("port: 1\n" + ONE_BACKEND + "port: 2\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(str(error), f"{path}:4: invalid YAML: duplicate key 'port'")

    def test_top_level_list_is_rejected(self) -> None:
        path = self.write("- port: 1\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(
            str(error), f"{path}:1: expected a mapping of setting names to values, got a list"
        )

    def test_empty_file_loads_with_the_no_backend_warning(self) -> None:
        # As Pgpool-II, the proxy starts without backends (clients are
        # refused until a reload adds one); the warning says so.
        path = self.write("")
        warnings: List[ConfigWarning] = []
        config = load_config(path, warnings)
        self.assertEqual(config.backends, ())
        self.assertEqual(
            [str(w) for w in warnings],
            [
                f"{path}: backends: no backend is configured (backend_hostname0 and "
                "backend_port0, or a backends list): clients are refused until a reload "
                "adds one and it is attached (pcp_attach_node)"
            ],
        )

    def test_python_tags_are_not_executed(self) -> None:
        path = self.write("port: !!python/object/apply:os.getpid []\n" + ONE_BACKEND)
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertTrue(str(error).startswith(f"{path}:1: invalid YAML"))


class UnknownKeyTests(ConfigTestCase):
    def test_unknown_key_suggests_close_spelling(self) -> None:
        self.assert_error(ONE_BACKEND + "prot: 1\n", 3, "prot", "did you mean 'port'?")

    def test_unknown_key_message_is_one_short_line(self) -> None:
        message = self.assert_error(ONE_BACKEND + "prot: 1\n", 3, "prot")
        self.assertEqual(message.split(": ", 2)[2], "unknown key; did you mean 'port'?")

    def test_nothing_is_suggested_when_nothing_is_close(self) -> None:
        # difflib's default cutoff (0.6) offered ssl_key for bogus_key.
        message = self.assert_error(ONE_BACKEND + "bogus_key: 1\n", 3, "bogus_key")
        self.assertEqual(
            message.split(": ", 2)[2], "unknown key (docs/configuration.md lists the settings)"
        )

    def test_suggestion_ignores_case(self) -> None:
        self.assert_error(ONE_BACKEND + "PORT: 1\n", 3, "PORT", "did you mean 'port'?")

    def test_pgpool_parameter_without_a_setting_is_a_warning(self) -> None:
        path = self.write(ONE_BACKEND + "memqcache_oiddir: /tmp\n")
        warnings: List[ConfigWarning] = []
        config = load_config(path, warnings=warnings)
        self.assertEqual(config.backends[0].hostname, "db1")
        self.assertEqual(
            [str(w) for w in warnings],
            [
                f"{path}:3: memqcache_oiddir: not needed: the query cache keeps its "
                "table-to-entry map in memory (shmem) or in memcached"
            ],
        )

    def test_unknown_backend_key_suggests_backend_key(self) -> None:
        message = self.assert_error(
            "backends:\n  - hostname: db1\n    wieght: 2\n",
            3,
            "backends[0].wieght",
        )
        self.assertEqual(message.split(": ", 2)[2], "unknown key; did you mean 'weight'?")

    def test_unknown_backend_key_lists_the_few_backend_keys(self) -> None:
        self.assert_error(
            "backends:\n  - hostname: db1\n    colour: blue\n",
            3,
            "backends[0].colour",
            "unknown key; allowed keys: application_name, data_directory, flag, "
            "health_check_max_retries, health_check_period, health_check_retry_delay, "
            "health_check_timeout, hostname, port, weight",
        )

    def test_source_is_not_a_setting(self) -> None:
        self.assert_error(ONE_BACKEND + "source: x\n", 3, "source", "unknown key")

    def test_misspelt_numbered_key_suggests_numbered_spelling(self) -> None:
        self.assert_error(
            "backend_hostname0: db1\nbackend_prot0: 5433\n",
            2,
            "backend_prot0",
            "did you mean 'backend_port0'?",
        )


class IntegerTests(ConfigTestCase):
    def test_backend_port_not_a_number(self) -> None:
        path = self.write("backends:\n  - hostname: db1\n    port: abc\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(
            str(error),
            f"{path}:3: backends[0].port: expected an integer from 1 to 65535, got 'abc'",
        )
        self.assertEqual((error.line, error.key), (3, "backends[0].port"))

    def test_port_out_of_range(self) -> None:
        self.assert_error("port: 70000\n" + ONE_BACKEND, 1, "port", "from 1 to 65535, got 70000")

    def test_port_as_float_is_rejected(self) -> None:
        self.assert_error("port: 5432.5\n" + ONE_BACKEND, 1, "port", "got 5432.5")

    def test_port_as_boolean_is_rejected(self) -> None:
        self.assert_error("port: on\n" + ONE_BACKEND, 1, "port", "got true")

    def test_quoted_port_is_read_as_integer(self) -> None:
        self.assertEqual(self.load_with_backend("port: '6432'\n").port, 6432)


class BackendTests(ConfigTestCase):
    def test_weight_accepts_fractions(self) -> None:
        config = self.load("backends:\n  - hostname: db1\n    weight: 0.5\n")
        self.assertEqual(config.backends[0].weight, 0.5)

    def test_negative_weight_is_rejected(self) -> None:
        self.assert_error(
            "backends:\n  - hostname: db1\n    weight: -1\n",
            3,
            "backends[0].weight",
            "expected a number of at least 0, got -1",
        )

    def test_weight_that_is_not_a_number_is_rejected(self) -> None:
        self.assert_error(
            "backends:\n  - hostname: db1\n    weight: heavy\n",
            3,
            "backends[0].weight",
            "got 'heavy'",
        )

    def test_missing_hostname_names_the_backend(self) -> None:
        self.assert_error(
            "backends:\n  - hostname: db1\n  - port: 5433\n",
            3,
            "backends[1].hostname",
            "missing",
        )

    def test_empty_hostname_is_rejected(self) -> None:
        self.assert_error("backends:\n  - hostname: ''\n", 2, "backends[0].hostname", "non-empty")

    def test_backends_must_be_a_list(self) -> None:
        self.assert_error("backends:\n  hostname: db1\n", 1, "backends", "got a mapping")

    def test_an_empty_backends_list_loads_with_a_warning_at_its_line(self) -> None:
        path = self.write("port: 5433\nbackends: []\n")
        warnings: List[ConfigWarning] = []
        config = load_config(path, warnings)
        self.assertEqual((config.port, config.backends), (5433, ()))
        self.assertEqual([(w.line, w.key) for w in warnings], [(2, "backends")])
        self.assertIn("no backend is configured", warnings[0].reason)

    def test_at_most_128_backends(self) -> None:
        self.assert_error(
            "backends:\n" + "  - hostname: db1\n" * 129,
            1,
            "backends",
            "expected 0 to 128 entries, got 129",
        )

    def test_backend_entry_must_be_a_mapping(self) -> None:
        self.assert_error(
            "backends:\n  - db1\n", 2, "backends[0]", "expected a mapping", "got 'db1'"
        )

    def test_unix_socket_directory_is_a_hostname(self) -> None:
        config = self.load("backends:\n  - hostname: /var/run/postgresql\n")
        self.assertEqual(config.backends[0].hostname, "/var/run/postgresql")

    def test_data_directory_and_application_name_are_kept(self) -> None:
        config = self.load(
            "backends:\n  - hostname: db1\n"
            "    data_directory: /data\n    application_name: server0\n"
        )
        self.assertEqual(
            (config.backends[0].data_directory, config.backends[0].application_name),
            ("/data", "server0"),
        )

    def test_numeric_application_name_must_be_quoted(self) -> None:
        self.assert_error(
            "backends:\n  - hostname: db1\n    application_name: 1\n",
            3,
            "backends[0].application_name",
            "expected a string, got 1",
        )


class FlagTests(ConfigTestCase):
    def flag(self, flag: str) -> BackendConfig:
        return self.load(f"backends:\n  - hostname: db1\n    flag: {flag}\n").backends[0]

    def test_disallow_to_failover(self) -> None:
        backend = self.flag("DISALLOW_TO_FAILOVER")
        self.assertFalse(backend.allow_to_failover)
        self.assertEqual(backend.flag, "DISALLOW_TO_FAILOVER")

    def test_always_primary_keeps_failover_allowed(self) -> None:
        backend = self.flag("ALWAYS_PRIMARY")
        self.assertTrue(backend.always_primary)
        self.assertTrue(backend.allow_to_failover)
        self.assertEqual(backend.flag, "ALLOW_TO_FAILOVER|ALWAYS_PRIMARY")

    def test_always_master_is_an_alias_of_always_primary(self) -> None:
        backend = self.flag("'DISALLOW_TO_FAILOVER | ALWAYS_MASTER'")
        self.assertTrue(backend.always_primary)
        self.assertEqual(backend.flag, "DISALLOW_TO_FAILOVER|ALWAYS_PRIMARY")

    def test_flag_case_does_not_matter(self) -> None:
        self.assertTrue(self.flag("always_primary").always_primary)

    def test_allow_and_disallow_together_are_rejected(self) -> None:
        self.assert_error(
            "backends:\n  - hostname: db1\n    flag: ALLOW_TO_FAILOVER|DISALLOW_TO_FAILOVER\n",
            3,
            "backends[0].flag",
            "cannot both be set",
        )

    def test_unknown_flag_is_rejected(self) -> None:
        self.assert_error(
            "backends:\n  - hostname: db1\n    flag: ALWAYS_STANDBY\n",
            3,
            "backends[0].flag",
            "expected flags from ALLOW_TO_FAILOVER, DISALLOW_TO_FAILOVER, ALWAYS_PRIMARY",
        )

    def test_two_always_primary_backends_are_rejected(self) -> None:
        self.assert_error(
            "backends:\n"
            "  - {hostname: db1, flag: ALWAYS_PRIMARY}\n"
            "  - hostname: db2\n"
            "    flag: ALWAYS_MASTER\n",
            4,
            "backends[1].flag",
            "already set in backends[0].flag",
        )

    def test_properties_work_on_hand_built_backends(self) -> None:
        backend = BackendConfig(hostname="db1", flag="ALWAYS_MASTER")
        self.assertTrue(backend.always_primary)
        self.assertTrue(backend.allow_to_failover)


class NumberedBackendTests(ConfigTestCase):
    def test_numbered_keys_become_backends_by_number(self) -> None:
        config = self.load(
            """\
            backend_hostname1: db2
            backend_weight1: 0
            backend_hostname0: db1
            backend_port0: 5433
            backend_flag0: ALWAYS_PRIMARY
            backend_data_directory0: /data0
            backend_application_name0: server0
            """
        )
        self.assertEqual(
            config.backends,
            (
                BackendConfig(
                    hostname="db1",
                    port=5433,
                    flag="ALLOW_TO_FAILOVER|ALWAYS_PRIMARY",
                    data_directory="/data0",
                    application_name="server0",
                ),
                BackendConfig(hostname="db2", weight=0.0),
            ),
        )

    def test_mixing_numbered_keys_and_list_is_rejected(self) -> None:
        self.assert_error(
            ONE_BACKEND + "backend_hostname1: db2\n",
            3,
            "backend_hostname1",
            "cannot be mixed with a backends list",
        )

    def test_gap_in_numbers_is_rejected(self) -> None:
        self.assert_error(
            "backend_hostname0: db1\nbackend_hostname2: db3\n",
            2,
            "backend_hostname2",
            "there is no backend_hostname1",
        )

    def test_number_without_hostname_is_rejected(self) -> None:
        self.assert_error(
            "backend_hostname0: db1\nbackend_port1: 5433\n",
            2,
            "backend_hostname1",
            "missing",
        )

    def test_number_above_127_is_rejected(self) -> None:
        self.assert_error("backend_hostname128: db1\n", 1, "backend_hostname128", "from 0 to 127")

    def test_errors_name_the_numbered_key(self) -> None:
        self.assert_error(
            "backend_hostname0: db1\nbackend_port0: abc\n",
            2,
            "backend_port0",
            "expected an integer from 1 to 65535, got 'abc'",
        )

    def test_health_check_period0_is_a_per_node_override(self) -> None:
        # The spelling the documentation promises (Pgpool-II's); it was
        # refused as "unknown key; did you mean 'health_check_period'?".
        config = self.load(
            """\
            backend_hostname0: db1
            backend_hostname1: db2
            health_check_period0: 5
            health_check_timeout1: 3s
            health_check_max_retries1: 2
            health_check_retry_delay0: 500ms
            """
        )
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

    def test_backend_prefixed_spelling_is_still_accepted(self) -> None:
        config = self.load("backend_hostname0: db1\nbackend_health_check_period0: 5\n")
        self.assertEqual(config.backends[0].health_check_period, 5.0)

    def test_both_spellings_for_one_node_are_rejected(self) -> None:
        self.assert_error(
            "backend_hostname0: db1\nbackend_health_check_period0: 5\nhealth_check_period0: 6\n",
            3,
            "health_check_period0",
            "already given as backend_health_check_period0",
        )

    def test_errors_name_health_check_period0_as_written(self) -> None:
        self.assert_error(
            "backend_hostname0: db1\nhealth_check_period0: soon\n",
            2,
            "health_check_period0",
            "expected a duration",
        )

    def test_two_numbered_always_primary_backends_are_rejected(self) -> None:
        self.assert_error(
            "backend_hostname0: db1\nbackend_flag0: ALWAYS_PRIMARY\n"
            "backend_hostname1: db2\nbackend_flag1: ALWAYS_PRIMARY\n",
            4,
            "backend_flag1",
            "already set in backend_flag0",
        )


class ListenAddressesTests(ConfigTestCase):
    def test_star_means_all_interfaces(self) -> None:
        self.assertEqual(self.load_with_backend("listen_addresses: '*'\n").listen_addresses, "*")

    def test_empty_string_disables_tcp(self) -> None:
        self.assertEqual(self.load_with_backend("listen_addresses: ''\n").listen_addresses, "")

    def test_comma_list_is_normalised(self) -> None:
        config = self.load_with_backend("listen_addresses: 'localhost, 10.0.0.1'\n")
        self.assertEqual(config.listen_addresses, "localhost,10.0.0.1")

    def test_empty_list_item_is_rejected(self) -> None:
        self.assert_error(
            "listen_addresses: 'localhost,,db'\n" + ONE_BACKEND,
            1,
            "listen_addresses",
            "comma-separated list",
        )


class DurationTests(ConfigTestCase):
    def test_bare_authentication_timeout_is_seconds(self) -> None:
        self.assertEqual(
            self.load_with_backend("authentication_timeout: 30\n").authentication_timeout, 30.0
        )

    def test_bare_connect_timeout_is_milliseconds(self) -> None:
        self.assertEqual(self.load_with_backend("connect_timeout: 1500\n").connect_timeout, 1.5)

    def test_bare_busy_poll_time_is_microseconds(self) -> None:
        self.assertAlmostEqual(
            self.load_with_backend("busy_poll_time: 100\n").busy_poll_time, 100e-6
        )

    def test_busy_poll_time_is_off_by_default(self) -> None:
        self.assertEqual(self.load_with_backend("").busy_poll_time, 0.0)

    def test_quoted_bare_number_uses_the_parameter_unit(self) -> None:
        self.assertEqual(self.load_with_backend("connect_timeout: '250'\n").connect_timeout, 0.25)

    def test_units_are_converted_to_seconds(self) -> None:
        cases: Dict[str, float] = {
            "250us": 0.00025,
            "500ms": 0.5,
            "2s": 2.0,
            "5min": 300.0,
            "1h": 3600.0,
            "1d": 86400.0,
            "1.5 s": 1.5,
        }
        for text, seconds in cases.items():
            config = self.load_with_backend(f"authentication_timeout: {text}\n")
            self.assertEqual(config.authentication_timeout, seconds, text)

    def test_zero_disables(self) -> None:
        self.assertEqual(
            self.load_with_backend("authentication_timeout: 0\n").authentication_timeout, 0.0
        )

    def test_negative_duration_is_rejected(self) -> None:
        self.assert_error(
            "authentication_timeout: -1\n" + ONE_BACKEND,
            1,
            "authentication_timeout",
            "expected a duration",
            "a bare number means seconds",
        )

    def test_unknown_unit_is_rejected(self) -> None:
        self.assert_error(
            "connect_timeout: 5 weeks\n" + ONE_BACKEND,
            1,
            "connect_timeout",
            "a bare number means milliseconds",
            "got '5 weeks'",
        )

    def test_timedelta_is_accepted_from_embedding_applications(self) -> None:
        config = config_from_dict(
            {"backends": [{"hostname": "db1"}], "connect_timeout": datetime.timedelta(seconds=3)}
        )
        self.assertEqual(config.connect_timeout, 3.0)


class SizeTests(ConfigTestCase):
    def test_bare_number_is_bytes(self) -> None:
        self.assertEqual(
            self.load_with_backend("max_message_length: 20000\n").max_message_length, 20000
        )

    def test_units_are_powers_of_1024(self) -> None:
        cases = {"400kB": 400 * 1024, "64MB": 64 * 1024**2, "1GB": 1024**3, "12000B": 12000}
        for text, size in cases.items():
            config = self.load_with_backend(f"max_message_length: {text}\n")
            self.assertEqual(config.max_message_length, size, text)

    def test_below_minimum_is_rejected(self) -> None:
        self.assert_error(
            "max_message_length: 9999\n" + ONE_BACKEND,
            1,
            "max_message_length",
            "expected a size from 10000",
            "got 9999",
        )

    def test_unknown_unit_is_rejected(self) -> None:
        self.assert_error(
            "max_message_length: 64 megs\n" + ONE_BACKEND,
            1,
            "max_message_length",
            "got '64 megs'",
        )

    def test_max_buffered_message_length_takes_a_size(self) -> None:
        config = self.load_with_backend("max_buffered_message_length: 64MB\n")
        self.assertEqual(config.max_buffered_message_length, 64 * 1024**2)

    def test_larger_than_a_protocol_length_is_rejected(self) -> None:
        self.assert_error(
            "max_message_length: 2GB\n" + ONE_BACKEND, 1, "max_message_length", "got '2GB'"
        )


class BooleanTests(ConfigTestCase):
    def test_yaml_booleans(self) -> None:
        self.assertTrue(self.load_with_backend("log_statement: true\n").log_statement)
        self.assertFalse(self.load_with_backend("log_statement: no\n").log_statement)

    def test_pgpool_words_in_any_case(self) -> None:
        cases = {"'on'": True, "'OFF'": False, "'Yes'": True, "'no'": False, "'TRUE'": True}
        for text, expected in cases.items():
            config = self.load_with_backend(f"log_connections: {text}\n")
            self.assertEqual(config.log_connections, expected, text)

    def test_other_words_are_rejected(self) -> None:
        self.assert_error(
            "enable_pool_hba: maybe\n" + ONE_BACKEND,
            1,
            "enable_pool_hba",
            "expected a boolean (on/off, true/false, yes/no or 1/0), got 'maybe'",
        )

    def test_one_and_zero_as_pgpool_reads_them(self) -> None:
        cases = {"1": True, "0": False, "'1'": True, "'0'": False}
        for text, expected in cases.items():
            config = self.load_with_backend(f"log_connections: {text}\n")
            self.assertIs(config.log_connections, expected, text)

    def test_prefixes_as_pgpool_reads_them(self) -> None:
        # Pgpool-II's parse_bool_with_len: a prefix of a word is the word,
        # but "o" could be on or off.
        cases = {"t": True, "fal": False, "y": True, "n": False, "of": False}
        for text, expected in cases.items():
            config = self.load_with_backend(f"log_connections: '{text}'\n")
            self.assertIs(config.log_connections, expected, text)
        self.assert_error("log_connections: 'o'\n" + ONE_BACKEND, 1, "log_connections", "got 'o'")

    def test_other_numbers_are_rejected(self) -> None:
        self.assert_error("log_disconnections: 2\n" + ONE_BACKEND, 1, "log_disconnections", "got 2")


class LoggingTests(ConfigTestCase):
    def test_both_destinations_are_stored_canonically(self) -> None:
        config = self.load_with_backend("log_destination: 'syslog, stderr'\n")
        self.assertEqual(config.log_destination, "stderr,syslog")

    def test_unknown_destination_is_rejected(self) -> None:
        self.assert_error(
            "log_destination: eventlog\n" + ONE_BACKEND,
            1,
            "log_destination",
            "one or more of stderr, syslog",
        )

    def test_syslog_facility_is_upper_cased(self) -> None:
        self.assertEqual(
            self.load_with_backend("syslog_facility: local3\n").syslog_facility, "LOCAL3"
        )

    def test_unknown_syslog_facility_is_rejected(self) -> None:
        self.assert_error(
            "syslog_facility: LOCAL8\n" + ONE_BACKEND, 1, "syslog_facility", "one of LOCAL0"
        )

    def test_empty_syslog_ident_is_rejected(self) -> None:
        self.assert_error("syslog_ident: ''\n" + ONE_BACKEND, 1, "syslog_ident", "non-empty")

    def test_log_min_messages_is_lower_cased(self) -> None:
        self.assertEqual(
            self.load_with_backend("log_min_messages: DEBUG1\n").log_min_messages, "debug1"
        )

    def test_unknown_log_level_is_rejected(self) -> None:
        self.assert_error(
            "log_min_messages: verbose\n" + ONE_BACKEND,
            1,
            "log_min_messages",
            "one of debug5, debug4",
        )


class PathTests(ConfigTestCase):
    def test_relative_paths_are_resolved_against_the_config_directory(self) -> None:
        path = self.write("pool_hba_file: etc/hba.conf\npool_passwd: ''\n" + ONE_BACKEND)
        directory = os.path.dirname(os.path.abspath(path))
        self.assertEqual(
            load_config(path).pool_hba_file, os.path.join(directory, "etc", "hba.conf")
        )

    def test_absolute_paths_are_kept(self) -> None:
        hba = os.path.abspath(self.mktemp())
        self.assertEqual(self.load_with_backend(f"pool_hba_file: {hba}\n").pool_hba_file, hba)

    def test_empty_pool_passwd_disables_it(self) -> None:
        self.assertEqual(self.load_with_backend("pool_passwd: ''\n").pool_passwd, "")

    def test_missing_pool_passwd_at_default_path_is_accepted(self) -> None:
        path = self.write("pool_passwd: pool_passwd\n" + ONE_BACKEND)
        expected = os.path.join(os.path.dirname(os.path.abspath(path)), "pool_passwd")
        self.assertEqual(load_config(path).pool_passwd, expected)

    def test_missing_pool_passwd_named_explicitly_is_rejected(self) -> None:
        self.assert_error(
            "pool_passwd: secrets/passwd\n" + ONE_BACKEND,
            1,
            "pool_passwd",
            "does not exist",
        )

    def test_existing_pool_passwd_named_explicitly_is_accepted(self) -> None:
        path = self.write("pool_passwd: users\n" + ONE_BACKEND)
        users = os.path.join(os.path.dirname(os.path.abspath(path)), "users")
        with open(users, "w") as f:
            f.write("alice:md5abc\n")
        self.assertEqual(load_config(path).pool_passwd, users)

    def test_enabled_pool_hba_needs_its_file(self) -> None:
        self.assert_error(
            "enable_pool_hba: on\npool_hba_file: hba.conf\n" + ONE_BACKEND,
            2,
            "pool_hba_file",
            "enable_pool_hba is on",
            "does not exist",
        )

    def test_enabled_pool_hba_with_its_file_is_accepted(self) -> None:
        path = self.write("enable_pool_hba: on\n" + ONE_BACKEND)
        with open(os.path.join(os.path.dirname(path), "pool_hba.conf"), "w") as f:
            f.write("host all all 127.0.0.1/32 trust\n")
        self.assertTrue(load_config(path).enable_pool_hba)

    def test_empty_pool_hba_file_is_rejected(self) -> None:
        self.assert_error("pool_hba_file: ''\n" + ONE_BACKEND, 1, "pool_hba_file", "got ''")


class ConfigFromDictTests(SynchronousTestCase):
    def test_builds_the_same_model_as_the_file_loader(self) -> None:
        data: Dict[str, Any] = {"port": 6432, "backends": [{"hostname": "db1", "port": 5433}]}
        config = config_from_dict(data, base_dir="/etc/pgpool")
        self.assertEqual(config.port, 6432)
        self.assertEqual(config.backends, (BackendConfig(hostname="db1", port=5433),))
        self.assertEqual(config.source, "<dict>")
        self.assertEqual(config.pool_hba_file, "/etc/pgpool/pool_hba.conf")

    def test_errors_name_the_source_without_a_line(self) -> None:
        error = self.assertRaises(
            ConfigError,
            config_from_dict,
            {"backends": [{"hostname": "db1", "port": "abc"}]},
            "app-settings",
        )
        self.assertEqual(
            str(error),
            "app-settings: backends[0].port: expected an integer from 1 to 65535, got 'abc'",
        )
        self.assertIsNone(error.line)

    def test_relative_paths_default_to_the_current_directory(self) -> None:
        config = config_from_dict({"backends": [{"hostname": "db1"}]})
        self.assertEqual(config.pool_hba_file, os.path.abspath("pool_hba.conf"))

    def test_non_mapping_is_rejected(self) -> None:
        error = self.assertRaises(ConfigError, config_from_dict, ["port"])  # type: ignore[arg-type]
        self.assertIn("expected a mapping", str(error))


class ConfigErrorTests(SynchronousTestCase):
    def test_plain_message_is_kept(self) -> None:
        self.assertEqual(str(ConfigError("something is wrong")), "something is wrong")

    def test_parts_are_joined_into_one_line(self) -> None:
        error = ConfigError("bad", source="conf.yaml", line=3, key="port")
        self.assertEqual(str(error), "conf.yaml:3: port: bad")


class DocumentedKeysTests(SynchronousTestCase):
    def test_top_level_and_nested_keys_are_listed(self) -> None:
        keys = documented_keys()
        self.assertIn("port", keys)
        self.assertIn("backends", keys)
        self.assertIn("backends[].hostname", keys)
        self.assertIn("backends[].flag", keys)

    def test_source_is_not_a_key(self) -> None:
        self.assertNotIn("source", documented_keys())

    def test_every_model_field_but_source_is_a_key(self) -> None:
        fields = {f.name for f in attrs.fields(PgpoolConfig)} - {"source", "overrides"}
        backend_fields = {f"backends[].{f.name}" for f in attrs.fields(BackendConfig)}
        self.assertEqual(documented_keys(), fields | backend_fields | set(LEGACY_MODE_KEYS))


class LegacyModeTests(ConfigTestCase):
    def test_master_slave_stream_means_streaming_replication(self) -> None:
        config = config_from_dict(
            {
                "backends": [{"hostname": "db1"}],
                "master_slave_mode": "on",
                "master_slave_sub_mode": "stream",
            }
        )
        self.assertEqual(config.backend_clustering_mode, "streaming_replication")

    def test_master_slave_off_means_raw(self) -> None:
        config = config_from_dict(
            {
                "backends": [{"hostname": "db1"}],
                "master_slave_mode": False,
                "replication_mode": "off",
            }
        )
        self.assertEqual(config.backend_clustering_mode, "raw")

    def test_replication_mode_on_means_native_replication(self) -> None:
        config = config_from_dict({"backends": [{"hostname": "db1"}], "replication_mode": "on"})
        self.assertEqual(config.backend_clustering_mode, "native_replication")

    def test_replication_and_master_slave_mode_together_are_refused(self) -> None:
        self.assert_error(
            ONE_BACKEND + "replication_mode: on\nmaster_slave_mode: on\n",
            3,
            "replication_mode",
            "cannot both be on",
        )

    def test_native_replication_defaults_are_pgpool_iis(self) -> None:
        config = config_from_dict(
            {"backends": [{"hostname": "db1"}], "backend_clustering_mode": "native_replication"}
        )
        self.assertEqual(
            (
                config.backend_clustering_mode,
                config.replication_stop_on_mismatch,
                config.failover_if_affected_tuples_mismatch,
                config.replicate_select,
                config.insert_lock,
            ),
            ("native_replication", False, False, False, True),
        )

    def test_old_and_new_spelling_together_are_refused(self) -> None:
        self.assert_error(
            ONE_BACKEND + "master_slave_mode: on\nbackend_clustering_mode: raw\n",
            3,
            "master_slave_mode",
            "not both",
        )


class FunctionListTests(ConfigTestCase):
    def test_comma_separated_string_becomes_a_tuple(self) -> None:
        config = config_from_dict(
            {"backends": [{"hostname": "db1"}], "write_function_list": "nextval, setval"}
        )
        self.assertEqual(config.write_function_list, ("nextval", "setval"))

    def test_invalid_regular_expression_is_refused(self) -> None:
        self.assert_error(
            ONE_BACKEND + "write_function_list: ['(']\n",
            3,
            "write_function_list",
            "not a valid regular expression",
        )
