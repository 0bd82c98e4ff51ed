"""
The conformance harness's reading of pytest's JUnit XML and its list of
tests that pass directly but not through the proxy (conformance/run.py).
The suites themselves are not run here: they are not part of the project.
"""

from __future__ import annotations

import os
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from conformance import run

DIRECT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="tests.test_a" name="test_ok" time="0.1" />
<testcase classname="tests.test_a" name="test_breaks" time="0.1" />
<testcase classname="tests.test_a" name="test_hangs" time="0.1" />
<testcase classname="tests.test_a" name="test_skipped_there" time="0.1" />
<testcase classname="tests.test_a" name="test_not_run_there" time="0.1" />
<testcase classname="tests.test_a" name="test_fails_everywhere" time="0.1">
<failure message="assert 0 == 1">trace</failure></testcase>
<testcase classname="tests.test_a" name="test_xfail" time="0.1">
<skipped type="pytest.xfail" message="known" /></testcase>
</testsuite></testsuites>
"""

PROXIED = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="tests.test_a" name="test_ok" time="0.1" />
<testcase classname="tests.test_a" name="test_breaks" time="0.1">
<failure message="assert 22013 != 22013&#10;more">line 1
line 2</failure></testcase>
<testcase classname="tests.test_a" name="test_hangs" time="60">
<failure message="Failed: Timeout (&gt;60.0s) from pytest-timeout.">t</failure></testcase>
<testcase classname="tests.test_a" name="test_hangs" time="0.1">
<error message="failed on teardown with &quot;busy&quot;">t</error></testcase>
<testcase classname="tests.test_a" name="test_skipped_there" time="0.1">
<skipped type="pytest.skip" message="no pipeline" /></testcase>
<testcase classname="tests.test_a" name="test_fails_everywhere" time="0.1">
<failure message="assert 0 == 1">trace</failure></testcase>
<testcase classname="tests.test_a" name="test_xfail" time="0.1">
<skipped type="pytest.xfail" message="known" /></testcase>
</testsuite></testsuites>
"""


class JUnitTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        fd, path = tempfile.mkstemp(suffix=".xml")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        self.addCleanup(os.remove, path)
        return path

    def test_outcomes_and_first_message_line(self) -> None:
        results = run.read_junit(self.write(PROXIED))
        self.assertEqual(results["tests.test_a::test_ok"]["outcome"], "passed")
        self.assertEqual(
            results["tests.test_a::test_breaks"],
            {"outcome": "failed", "message": "assert 22013 != 22013", "detail": "line 1\nline 2"},
        )
        self.assertEqual(results["tests.test_a::test_skipped_there"]["outcome"], "skipped")
        self.assertEqual(results["tests.test_a::test_xfail"]["outcome"], "xfailed")

    def test_teardown_error_after_failure_is_one_failed_test(self) -> None:
        """
        pytest writes a tear-down error after a failed call as a second
        <testcase> of the same name: the test counts once, as failed, with
        both messages.
        """
        results = run.read_junit(self.write(PROXIED))
        self.assertEqual(results["tests.test_a::test_hangs"]["outcome"], "failed")
        self.assertEqual(
            results["tests.test_a::test_hangs"]["message"],
            'Failed: Timeout (>60.0s) from pytest-timeout. / failed on teardown with "busy"',
        )
        self.assertEqual(run.counts(results)["total"], 6)

    def test_regressions_are_direct_passes_not_passed_through_the_proxy(self) -> None:
        direct = run.read_junit(self.write(DIRECT))
        proxied = run.read_junit(self.write(PROXIED))
        lists = run.regressions(direct, proxied)
        self.assertEqual(
            [(entry["test"], entry["outcome"]) for entry in lists["broken"]],
            [
                ("tests.test_a::test_breaks", "failed"),
                ("tests.test_a::test_hangs", "failed"),
                ("tests.test_a::test_not_run_there", "missing"),
            ],
        )
        self.assertEqual(
            [entry["test"] for entry in lists["skipped"]], ["tests.test_a::test_skipped_there"]
        )

    def test_signature_blanks_numbers_and_names(self) -> None:
        self.assertEqual(
            run.signature("assert 22013 != 22013"), run.signature("assert 16262 != 16262")
        )
        self.assertEqual(
            run.signature('cursor "__asyncpg_portal_1e2__" does not exist'),
            'cursor "…" does not exist',
        )


class ProxyConfigTests(SynchronousTestCase):
    class FakeCluster:
        def backends_config(self):
            return [
                {"hostname": "127.0.0.1", "port": 1, "weight": 1},
                {"hostname": "127.0.0.1", "port": 2, "weight": 1},
            ]

    def test_single_is_the_primary_alone_without_balancing(self) -> None:
        config = run.proxy_config(self.FakeCluster(), "single", 128)  # type: ignore[arg-type]
        self.assertEqual([b["port"] for b in config["backends"]], [1])
        self.assertIs(config["load_balance_mode"], False)

    def test_balanced_is_both_nodes_weighted_one_to_two(self) -> None:
        config = run.proxy_config(
            self.FakeCluster(),
            "balanced",
            128,  # type: ignore[arg-type]
            {"connection_cache": False},
        )
        self.assertEqual([(b["port"], b["weight"]) for b in config["backends"]], [(1, 1), (2, 2)])
        self.assertIs(config["load_balance_mode"], True)
        self.assertEqual(config["read_your_writes"], "session")
        self.assertIs(config["connection_cache"], False)
