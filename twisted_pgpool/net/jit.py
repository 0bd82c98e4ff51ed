"""
PyPy's JIT thresholds for the proxy's own process.

PyPy compiles a loop after it has run C{threshold} times (1039 by
default), a function after C{function_threshold} calls (1619), and a
bridge for a guard after it has failed C{trace_eagerness} times (200);
counters decay as other code is compiled.  The query path reaches those
counts within a second, but the code a client connection runs once (accept,
startup, authentication, pool checkout, the reset, teardown) runs only as
often as clients connect.  Under C{pgbench -C -S} at about a hundred
connections a second it stayed mostly interpreted, and blackholed out of
the compiled code at every failing guard, for minutes: 4.5 ms of proxy CPU
per connection, falling to 2.1 ms after 40 seconds, against about 1.2 ms on
CPython in the same conditions (issue 16).  With the thresholds below the
same run costs 1.2 ms in its first 10 seconds and about 0.55 ms from then
on (docs/performance.md, "Running on PyPy").

A process runs the proxy when C{twistd pgpool} or C{twisted-pgpool run}
starts it; an application that embeds the proxy keeps its own settings.
"""

from __future__ import annotations

import os
import platform
from typing import Mapping, Optional

from twisted.logger import Logger

__all__ = ["PROXY_JIT_PARAMETERS", "tune_jit"]

#: What the proxy sets on PyPy (see the module docstring).
PROXY_JIT_PARAMETERS = "threshold=400,function_threshold=400,trace_eagerness=50"

#: An environment variable that replaces L{PROXY_JIT_PARAMETERS}: another
#: parameter string, C{default} for PyPy's own, or C{off}.  Parameters given
#: with C{pypy3 --jit} cannot be read back, so this is how to keep them.
ENVIRONMENT = "TWISTED_PGPOOL_PYPY_JIT"

_log = Logger()


def tune_jit(environ: Optional[Mapping[str, str]] = None) -> str:
    """
    On PyPy, set the JIT parameters for a proxy process.

    @param environ: where to look for L{ENVIRONMENT} (default
        C{os.environ}).
    @return: the parameter string set, or C{""} on an interpreter without
        PyPy's JIT (CPython), where nothing is done.
    """
    if platform.python_implementation() != "PyPy":
        return ""
    try:
        import pypyjit  # type: ignore[import-not-found]
    except ImportError:  # a PyPy built without the JIT
        return ""
    parameters = (os.environ if environ is None else environ).get(ENVIRONMENT, PROXY_JIT_PARAMETERS)
    pypyjit.set_param(parameters)
    _log.info("PyPy JIT parameters: {parameters}", parameters=parameters)
    return parameters
