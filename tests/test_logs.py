"""
log_min_messages filters twisted_pgpool's events in PostgreSQL's order of
levels; log_destination adds syslog.
"""

from __future__ import annotations

from typing import Dict, List

from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool import logs


class MinimumLevelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: List[Dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.addCleanup(logs.configure, "warning", "stderr")
        self.log = Logger(namespace="twisted_pgpool.test", observer=logs.observer)

    def emitted(self, threshold: str) -> List[LogLevel]:
        logs.configure(threshold, "stderr")
        del self.events[:]
        self.log.debug("d")
        self.log.info("i")
        self.log.warn("w")
        self.log.error("e")
        self.log.critical("c")
        return [
            e["log_level"] for e in self.events if e.get("log_namespace") == "twisted_pgpool.test"
        ]

    def test_default_warning_keeps_log_level_operational_messages(self) -> None:
        # Like PostgreSQL's server log: LOG (our info events, such as
        # log_connections) ranks above ERROR, so it passes at WARNING.
        self.assertEqual(
            self.emitted("warning"),
            [LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical],
        )

    def test_debug_threshold_lets_everything_through(self) -> None:
        self.assertEqual(
            self.emitted("debug1"),
            [LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical],
        )

    def test_error_threshold_drops_warnings(self) -> None:
        self.assertEqual(self.emitted("error"), [LogLevel.info, LogLevel.error, LogLevel.critical])

    def test_fatal_threshold_keeps_only_critical(self) -> None:
        self.assertEqual(self.emitted("fatal"), [LogLevel.critical])


class SyslogDestinationTests(SynchronousTestCase):
    def test_syslog_destination_adds_and_removes_an_observer(self) -> None:
        self.addCleanup(logs.unconfigure_syslog)
        logs.configure("warning", "stderr,syslog", "LOCAL3", "pgpool-test")
        self.assertIsNotNone(logs._syslog_observer)
        logs.configure("warning", "stderr")
        self.assertIsNone(logs._syslog_observer)


class PrintableTests(SynchronousTestCase):
    """
    A client's text with bytes that were not valid in its encoding (lone
    surrogates) still makes a line a UTF-8 log file can hold.
    """

    def test_invalid_bytes_are_shown_escaped(self) -> None:
        text = b"SELECT '\xff\xfe' || '\xc3\xa9'".decode("utf-8", "surrogateescape")
        self.assertEqual(logs.printable(text), "SELECT '\\xff\\xfe' || 'é'")
        logs.printable(text).encode("utf-8")  # raises if a surrogate is left

    def test_valid_text_is_unchanged(self) -> None:
        self.assertEqual(logs.printable("SELECT 'café'"), "SELECT 'café'")
