"""
The test suite.

On PyPy, Hypothesis generates its examples with code the JIT has not
compiled yet, several times slower than CPython, and CI runs the suite
there beside other work: the health check that fails a test whose
I{generation} is slow, and the per-example deadline, would then fail
tests whose properties hold.  Neither changes what is checked or how many
examples are tried, so on PyPy both are off.
"""

import platform

if platform.python_implementation() == "PyPy":
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "pypy", deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("pypy")
