"""
The systemd unit shipped in docs/examples: its reload is SIGHUP, its stop
is SIGTERM (a smart shutdown), and the command it starts names the plugin
and the configuration as twistd reads them (issue 17).
"""

from __future__ import annotations

import configparser
import os
import shlex

from twisted.trial.unittest import SynchronousTestCase

UNIT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    os.pardir,
    "docs",
    "examples",
    "twisted-pgpool.service",
)


class ServiceUnitTests(SynchronousTestCase):
    def setUp(self) -> None:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        with open(UNIT, encoding="utf-8") as f:
            parser.read_file(f)
        self.service = parser["Service"]

    def test_reload_is_sighup(self) -> None:
        self.assertEqual(self.service["ExecReload"], "/bin/kill -HUP $MAINPID")

    def test_stop_is_sigterm_which_is_a_smart_shutdown(self) -> None:
        from twisted_pgpool.admin.shutdown import SIGNAL_MODES

        self.assertEqual(
            (self.service["KillSignal"], SIGNAL_MODES["SIGTERM"]), ("SIGTERM", "smart")
        )

    def test_twistd_runs_in_the_foreground_with_the_plugin(self) -> None:
        words = shlex.split(shlex.split(self.service["ExecStart"])[2])
        self.assertEqual(words[2:7], ["--nodaemon", "--pidfile=", "--logfile=-", "pgpool", "-c"])
