"""
Tests for L{twisted_pgpool.net.jit}: on PyPy the proxy's process compiles
what each client connection runs once after a few hundred connections
instead of leaving it interpreted (issue 16); elsewhere nothing changes.
"""

from __future__ import annotations

import platform
import sys
from types import ModuleType
from typing import List

from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.net import jit

ON_PYPY = platform.python_implementation() == "PyPy"


class FakePyPyJit(ModuleType):
    """
    Stands in for PyPy's C{pypyjit} on CPython: records C{set_param}.
    """

    def __init__(self) -> None:
        super().__init__("pypyjit")
        self.calls: List[str] = []

    def set_param(self, parameters: str) -> None:
        self.calls.append(parameters)


class TuneJitTests(SynchronousTestCase):
    def fake_pypyjit(self) -> FakePyPyJit:
        """
        Put a recording C{pypyjit} in C{sys.modules} for this test.
        """
        fake = FakePyPyJit()
        real = sys.modules.get("pypyjit")
        sys.modules["pypyjit"] = fake
        if real is None:
            self.addCleanup(sys.modules.pop, "pypyjit", None)
        else:
            self.addCleanup(sys.modules.__setitem__, "pypyjit", real)
        return fake

    def on_pypy(self) -> FakePyPyJit:
        """
        Make L{jit.tune_jit} see PyPy and a C{pypyjit} that records.
        """
        self.patch(platform, "python_implementation", lambda: "PyPy")
        return self.fake_pypyjit()

    def test_pypy_gets_the_proxy_thresholds(self) -> None:
        fake = self.on_pypy()
        self.assertEqual(jit.tune_jit({}), jit.PROXY_JIT_PARAMETERS)
        self.assertEqual(fake.calls, [jit.PROXY_JIT_PARAMETERS])

    def test_thresholds_are_lower_than_pypys_defaults(self) -> None:
        """
        Each threshold the proxy sets is below PyPy 7.3's default
        (threshold 1039, function_threshold 1619, trace_eagerness 200).
        """
        values = dict(item.split("=") for item in jit.PROXY_JIT_PARAMETERS.split(","))
        self.assertEqual(set(values), {"threshold", "function_threshold", "trace_eagerness"})
        self.assertLess(int(values["threshold"]), 1039)
        self.assertLess(int(values["function_threshold"]), 1619)
        self.assertLess(int(values["trace_eagerness"]), 200)

    def test_the_environment_replaces_them(self) -> None:
        fake = self.on_pypy()
        self.assertEqual(jit.tune_jit({jit.ENVIRONMENT: "default"}), "default")
        self.assertEqual(fake.calls, ["default"])

    def test_cpython_is_left_alone(self) -> None:
        self.patch(platform, "python_implementation", lambda: "CPython")
        fake = self.fake_pypyjit()
        self.assertEqual(jit.tune_jit({}), "")
        self.assertEqual(fake.calls, [])

    def test_real_interpreter(self) -> None:
        """
        On the interpreter running the tests: PyPy's own C{pypyjit} takes
        the parameters (and is given its defaults back); CPython is left
        alone.
        """
        if ON_PYPY:
            import pypyjit  # type: ignore[import-not-found]

            self.addCleanup(pypyjit.set_param, "default")
            self.assertEqual(jit.tune_jit({}), jit.PROXY_JIT_PARAMETERS)
        else:
            self.assertEqual(jit.tune_jit({}), "")
