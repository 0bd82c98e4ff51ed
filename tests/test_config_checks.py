"""
Tests for the checks features register with the configuration loader
(L{twisted_pgpool.config.register_check}): a setting a feature refuses is
reported with its file and line, the checks run in the order of their
switches, and loading through the package's public functions in a fresh
interpreter runs the TLS and manhole checks although
L{twisted_pgpool.config} imports neither feature.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import List

from twisted.trial.unittest import SynchronousTestCase

import twisted_pgpool
from tests.test_config import ConfigTestCase
from twisted_pgpool.config import (
    ConfigError,
    PgpoolConfig,
    checks as config_checks,
    load_config,
    register_check,
)

ONE_BACKEND = "backends:\n  - hostname: db1\n"

#: The directory that holds the package under test, for child interpreters.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(twisted_pgpool.__file__)))


class FeatureSettingError(Exception):
    """
    What the fake features' checks raise: a key and a reason, like
    L{twisted_pgpool.net.tls.TLSSettingError}.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def refuse(key: str, reason: str):
    """
    A check that refuses C{key} whenever it is called.
    """

    def check(config: PgpoolConfig) -> None:
        raise FeatureSettingError(key, reason)

    return check


class RegisteredCheckTests(ConfigTestCase):
    """
    L{register_check} with fake features, on an empty registry.
    """

    def setUp(self) -> None:
        self.patch(config_checks, "_feature_checks", {})

    def test_refused_setting_is_reported_at_its_line(self) -> None:
        register_check(
            "manhole_endpoint", refuse("manhole_protocol", "no, thanks"), FeatureSettingError
        )
        path = self.write(ONE_BACKEND + "manhole_endpoint: 'tcp:1'\nmanhole_protocol: ssh\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(
            (error.source, error.line, error.key, error.reason),
            (path, 4, "manhole_protocol", "no, thanks"),
        )

    def test_refused_default_is_reported_at_the_switch_line(self) -> None:
        register_check(
            "manhole_endpoint", refuse("manhole_protocol", "no, thanks"), FeatureSettingError
        )
        path = self.write(ONE_BACKEND + "manhole_endpoint: 'tcp:1'\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual((error.line, error.key), (3, "manhole_protocol"))

    def test_checks_run_in_the_order_of_their_switches(self) -> None:
        # Registered last, but ssl comes before manhole_endpoint in the model.
        register_check(
            "manhole_endpoint", refuse("manhole_endpoint", "second"), FeatureSettingError
        )
        register_check("ssl", refuse("ssl_key", "first"), FeatureSettingError)
        path = self.write(ONE_BACKEND)
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual((error.key, error.reason), ("ssl_key", "first"))

    def test_check_gets_the_loaded_configuration(self) -> None:
        seen: List[PgpoolConfig] = []
        register_check("ssl", seen.append, FeatureSettingError)
        config = load_config(self.write(ONE_BACKEND + "ssl: off\n"))
        self.assertEqual(seen, [config])

    def test_other_exceptions_are_not_turned_into_config_errors(self) -> None:
        def broken(config: PgpoolConfig) -> None:
            raise ZeroDivisionError()

        register_check("ssl", broken, FeatureSettingError)
        self.assertRaises(ZeroDivisionError, load_config, self.write(ONE_BACKEND))


class FreshInterpreterTests(SynchronousTestCase):
    """
    The public C{twisted_pgpool.load_config} in an interpreter that imported
    nothing else: the features' checks run, with file and line.
    """

    def load_in_child(self, text: str) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "conf.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        program = (
            "import sys, twisted_pgpool\n"
            "try:\n"
            "    twisted_pgpool.load_config(sys.argv[1])\n"
            "except twisted_pgpool.ConfigError as e:\n"
            "    print(e)\n"
            "else:\n"
            "    print('loaded')\n"
        )
        env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
        done = subprocess.run(
            [sys.executable, "-c", program, path],
            env=env,
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout.strip().replace(path, "conf.yaml")

    def test_telnet_manhole_off_loopback_is_refused_at_its_line(self) -> None:
        output = self.load_in_child(
            ONE_BACKEND + "manhole_protocol: telnet\nmanhole_endpoint: 'tcp:6022'\n"
        )
        self.assertTrue(output.startswith("conf.yaml:4: manhole_endpoint: "), output)

    def test_missing_ssl_certificate_is_refused_at_its_line(self) -> None:
        output = self.load_in_child(ONE_BACKEND + "ssl: on\nssl_cert: missing.crt\n")
        self.assertTrue(output.startswith("conf.yaml:4: ssl_cert: "), output)
        self.assertIn("missing.crt", output)
