"""
Secret settings (passwords) are never shown: not by C{PGPOOL SHOW}, C{SHOW
POOL_STATUS}, C{pcp_pool_status}, the metrics, the C{repr} the manhole
prints, nor the loader's error messages.  Each test sets a distinctive
password and looks for it where a user could read it.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List

import attrs
from twisted.trial.unittest import SynchronousTestCase

from tests.test_metrics import make_core
from twisted_pgpool.admin import operations as admin
from twisted_pgpool.admin.manhole import manhole_namespace
from twisted_pgpool.admin.metrics import MetricsCollector
from twisted_pgpool.backend.protocol import BackendCredentials
from twisted_pgpool.config import (
    SECRET_MASK,
    ConfigError,
    PgpoolConfig,
    config_from_dict,
    describe_setting,
    documented_keys,
    load_config,
    secret_settings,
    settings_for_display,
    show_setting,
)
from twisted_pgpool.proxy.inspection import result_set
from twisted_pgpool.wire import messages

SECRET = "s3cr3t-XYZ"

#: Words that make a setting's name look like it holds a secret value.
#: (Settings naming a file of secrets, C{pool_passwd} and
#: C{manhole_passwd_file}, hold a path, which Pgpool-II shows.)
_SECRET_WORDS = re.compile(r"password|passphrase|secret")


def with_passwords(**settings: Any) -> Dict[str, Any]:
    data: Dict[str, Any] = {
        "backends": [{"hostname": "db1.example"}],
        "pool_passwd": "",
        "health_check_user": "checker",
        "health_check_password": SECRET,
        "sr_check_user": "checker",
        "sr_check_password": SECRET,
    }
    data.update(settings)
    return data


def field_of(cls: type, name: str) -> "attrs.Attribute[Any]":
    return next(f for f in attrs.fields(cls) if f.name == name)


class MarkingTests(SynchronousTestCase):
    def test_every_password_like_setting_is_marked_secret(self) -> None:
        """
        A password setting added later without the mark fails here.
        """
        password_like = {
            key for key in documented_keys() if _SECRET_WORDS.search(key.rsplit(".", 1)[-1])
        }
        self.assertEqual(password_like - secret_settings(), set())

    def test_the_check_users_passwords_are_secret(self) -> None:
        self.assertEqual(
            secret_settings(), {"health_check_password", "sr_check_password", "recovery_password"}
        )

    def test_a_secret_shows_the_mask(self) -> None:
        field = field_of(PgpoolConfig, "health_check_password")
        self.assertEqual(show_setting(field, SECRET), SECRET_MASK)

    def test_an_empty_secret_shows_the_mask_too(self) -> None:
        """
        As in Pgpool-II, whose C{PGPOOL SHOW} answers C{*****} for a hidden
        parameter without looking at its value.
        """
        field = field_of(PgpoolConfig, "sr_check_password")
        self.assertEqual(show_setting(field, ""), SECRET_MASK)

    def test_other_settings_show_as_written(self) -> None:
        shown = dict(
            settings_for_display(
                config_from_dict(
                    with_passwords(
                        health_check_period="1.5s",
                        load_balance_mode=False,
                        write_function_list="nextval,setval",
                    )
                )
            )
        )
        self.assertEqual(
            (
                shown["health_check_period"],
                shown["health_check_timeout"],
                shown["load_balance_mode"],
                shown["write_function_list"],
                shown["health_check_user"],
                shown["backend_weight0"],
                shown["backend_health_check_period0"],
            ),
            ("1.5s", "20s", "off", "nextval,setval", "checker", "1", ""),
        )


class ShowTests(SynchronousTestCase):
    """
    The statements any client may send, answered by the proxy.
    """

    def ask(self, sql: str) -> List[bytes]:
        core = make_core(**with_passwords())
        command = core.inspector.match(sql.encode("ascii") + b"\x00")
        assert command is not None, sql
        return core.inspector.answer(command, None)  # type: ignore[arg-type]

    def test_pgpool_show_health_check_password_is_masked(self) -> None:
        self.assertEqual(
            self.ask("PGPOOL SHOW health_check_password"),
            result_set(["health_check_password"], [[SECRET_MASK]]),
        )

    def test_pgpool_show_sr_check_password_is_masked(self) -> None:
        self.assertEqual(
            self.ask("pgpool show sr_check_password;"),
            result_set(["sr_check_password"], [[SECRET_MASK]]),
        )

    def test_show_pool_status_masks_the_passwords(self) -> None:
        answer = self.ask("SHOW POOL_STATUS")
        self.assertEqual(
            (
                SECRET.encode() in b"".join(answer),
                messages.data_row(
                    [
                        "health_check_password",
                        SECRET_MASK,
                        describe_setting("health_check_password"),
                    ]
                )
                in answer,
                messages.data_row(
                    ["sr_check_password", SECRET_MASK, describe_setting("sr_check_password")]
                )
                in answer,
            ),
            (False, True, True),
        )

    def test_pgpool_show_all_masks_the_passwords(self) -> None:
        answer = self.ask("PGPOOL SHOW ALL")
        self.assertEqual(
            (
                SECRET.encode() in b"".join(answer),
                messages.data_row(
                    ["sr_check_password", SECRET_MASK, describe_setting("sr_check_password")]
                )
                in answer,
            ),
            (False, True),
        )

    def test_pgpool_show_reads_a_backend_setting_by_its_pgpool_conf_name(self) -> None:
        self.assertEqual(
            self.ask("PGPOOL SHOW backend_hostname0"),
            result_set(["backend_hostname0"], [["db1.example"]]),
        )


class PcpPoolStatusTests(SynchronousTestCase):
    def test_pool_status_rows_mask_the_passwords(self) -> None:
        rows = {
            row.name: row.value
            for row in admin.config_parameters(config_from_dict(with_passwords()))
        }
        self.assertEqual(
            (SECRET in rows.values(), rows["health_check_password"], rows["sr_check_password"]),
            (False, SECRET_MASK, SECRET_MASK),
        )


class ReprTests(SynchronousTestCase):
    """
    What the manhole prints for an expression is its C{repr}, and a
    configuration or credentials object may end up in a log.
    """

    def test_repr_of_the_configuration_masks_the_passwords(self) -> None:
        shown = repr(config_from_dict(with_passwords()))
        self.assertEqual(
            (
                SECRET in shown,
                f"health_check_password={SECRET_MASK}" in shown,
                f"sr_check_password={SECRET_MASK}" in shown,
            ),
            (False, True, True),
        )

    def test_repr_of_credentials_says_a_password_is_there_but_not_which(self) -> None:
        credentials = BackendCredentials(
            "checker", password=SECRET, md5_hash="md5" + "0" * 32, scram_client_key=b"k" * 32
        )
        self.assertEqual(
            repr(credentials),
            (
                f"BackendCredentials(user='checker', password={SECRET_MASK}, "
                f"md5_hash={SECRET_MASK}, scram_client_key={SECRET_MASK}, "
                "scram_verifier=None)"
            ),
        )

    def test_repr_of_absent_credentials_says_none(self) -> None:
        self.assertEqual(
            repr(BackendCredentials("checker")),
            (
                "BackendCredentials(user='checker', password=None, md5_hash=None, "
                "scram_client_key=None, scram_verifier=None)"
            ),
        )

    def test_the_manhole_core_does_not_print_the_passwords(self) -> None:
        core = make_core(**with_passwords())
        namespace = manhole_namespace(core, None)  # type: ignore[arg-type]
        self.assertNotIn(SECRET, repr(namespace["core"]))


class ErrorMessageTests(SynchronousTestCase):
    """
    A password YAML reads as something other than a string is refused
    without being echoed.
    """

    def refused(self, **settings: Any) -> str:
        error = self.assertRaises(ConfigError, config_from_dict, with_passwords(**settings))
        return str(error)

    def test_a_numeric_password_is_not_echoed(self) -> None:
        self.assertEqual(
            self.refused(health_check_password=31337424242),
            "<dict>: health_check_password: expected a string, got a number "
            "(the value of a secret setting is not shown)",
        )

    def test_a_password_yaml_reads_as_a_boolean_is_not_echoed(self) -> None:
        message = self.refused(sr_check_password=True)
        self.assertEqual(
            (
                message.endswith("got a boolean (the value of a secret setting is not shown)"),
                "true" in message,
            ),
            (True, False),
        )

    def test_a_list_password_still_says_what_it_got(self) -> None:
        self.assertIn("got a list", self.refused(sr_check_password=[SECRET]))

    def test_other_settings_still_echo_the_refused_value(self) -> None:
        self.assertIn("got 31337424242", self.refused(health_check_user=31337424242))

    def write(self, text: str) -> str:
        path = os.path.join(os.path.abspath(self.mktemp()) + ".yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_invalid_yaml_in_a_password_is_not_echoed(self) -> None:
        """
        PyYAML quotes an undefined alias in its message, and a password
        that starts with C{*} is one.
        """
        path = self.write(f"backends:\n  - hostname: db1\nhealth_check_password: *{SECRET}\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(
            str(error),
            (
                f"{path}:3: invalid YAML in the value of a secret setting (not "
                "shown); write the value in quotes"
            ),
        )

    def test_invalid_yaml_elsewhere_keeps_pyyamls_words(self) -> None:
        path = self.write("backends:\n  - hostname: db1\nhealth_check_user: *nobody\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertIn("found undefined alias 'nobody'", str(error))


class MetricsTests(SynchronousTestCase):
    def test_a_scrape_does_not_carry_the_passwords(self) -> None:
        core = make_core(**with_passwords())
        self.assertNotIn(SECRET.encode(), MetricsCollector(core).render())
