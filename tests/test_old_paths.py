"""
The module paths embedding applications were told about before the package
was split into subpackages still work: C{twisted_pgpool.reactor} is
L{twisted_pgpool.net.reactor} and C{twisted_pgpool.reload} is
L{twisted_pgpool.admin.reload}, the very same modules.
"""

# relayout: keep old names

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

import twisted_pgpool

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(twisted_pgpool.__file__)))


class OldPathTests(SynchronousTestCase):
    def test_reactor_is_the_net_reactor_module(self) -> None:
        from twisted_pgpool import reactor as pgpool_reactor
        from twisted_pgpool.net import reactor

        self.assertIs(pgpool_reactor, reactor)
        self.assertIs(pgpool_reactor.ProxyReactor, reactor.ProxyReactor)

    def test_reload_error_is_the_same_class(self) -> None:
        import twisted_pgpool.reload
        from twisted_pgpool.admin.reload import ReloadError

        self.assertIs(twisted_pgpool.reload.ReloadError, ReloadError)

    def test_old_paths_in_a_fresh_interpreter_install_no_reactor(self) -> None:
        """
        As the embedding guide says: importing the proxy's reactor module
        first, by its old name, must not install Twisted's default reactor.
        """
        program = (
            "import sys\n"
            "from twisted_pgpool import reactor as pgpool_reactor\n"
            "import twisted_pgpool.net.reactor\n"
            "import twisted_pgpool.reload, twisted_pgpool.admin.reload\n"
            "assert pgpool_reactor is twisted_pgpool.net.reactor\n"
            "assert twisted_pgpool.reload is twisted_pgpool.admin.reload\n"
            "print('twisted.internet.reactor' in sys.modules)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", program],
            env=dict(os.environ, PYTHONPATH=PACKAGE_ROOT),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual((done.returncode, done.stdout, done.stderr), (0, "False\n", ""))
