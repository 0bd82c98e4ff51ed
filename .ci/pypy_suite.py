"""
CI's PyPy run (issue 16): trial over the unit tests (every
C{tests/test_*.py} not named C{test_e2e_*}) and the pg8000 end-to-end
tests, with the interpreter running this script.

The other end-to-end suites drive the proxy with psycopg or asyncpg,
which have no PyPy build, or measure the proxy's resident memory, which
PyPy's garbage collector holds differently (docs/testing.md).  Run as
C{pypy3 .ci/pypy_suite.py [trial options] [test names]}: names given
replace the selection, options go to trial as they are, each as one word
(C{-j2}, C{--reporter=text}; C{.ci/run} and C{tox -e pypy3} pass C{-j2}).
"""

import os
import sys

from twisted.scripts.trial import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The end-to-end modules that run on PyPy too.
E2E_ON_PYPY = ["tests.test_e2e_pg8000"]


def selection() -> list:
    """
    The unit-test modules and L{E2E_ON_PYPY}, by name, sorted.
    """
    names = sorted(
        "tests." + name[:-3]
        for name in os.listdir(os.path.join(ROOT, "tests"))
        if name.startswith("test_") and name.endswith(".py")
        and not name.startswith("test_e2e_"))
    return names + E2E_ON_PYPY


def main(argv: list) -> None:
    options = [arg for arg in argv if arg.startswith("-")]
    names = [arg for arg in argv if not arg.startswith("-")]
    os.chdir(ROOT)
    sys.path.insert(0, ROOT)
    sys.argv = ["trial"] + options + (names or selection())
    run()


if __name__ == "__main__":
    main(sys.argv[1:])
