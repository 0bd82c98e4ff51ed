"""
The README's first command: C{twisted-pgpool demo} starts a primary, a
standby and the proxy, prints a URI that works as is, and SIGTERM stops
everything it started.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.support import ROOT, free_port

try:
    import psycopg
except ImportError:  # PyPy: no binary build, and the tests run there too
    psycopg = None  # type: ignore[assignment]

URI = re.compile(r"^postgresql://\S+$")


class DemoTests(SynchronousTestCase):
    skip = None if psycopg is not None else "psycopg is not installed"

    def test_demo_prints_a_working_uri_and_stops_cleanly_on_sigterm(self) -> None:
        port = free_port()
        # The demo makes its work directory with tempfile: under a TMPDIR
        # of this test's own, so that the checks below see this demo's
        # files and servers only, not those of another demo running on
        # the machine.
        tmp = tempfile.mkdtemp(prefix="twisted-pgpool-demo-test-")
        os.chmod(tmp, 0o755)
        self.addCleanup(shutil.rmtree, tmp, True)
        env = dict(os.environ, PYTHONPATH=ROOT, TMPDIR=tmp)
        process = subprocess.Popen(
            [sys.executable, "-m", "twisted_pgpool", "demo", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        uri = None
        deadline = time.monotonic() + 60
        while uri is None and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 1.0)
            if ready:
                line = process.stdout.readline()
                if not line:
                    break
                if URI.match(line.strip()):
                    uri = line.strip()
        self.assertIsNotNone(uri, process.stderr.read() if process.poll() is not None else "")
        with psycopg.connect(uri, connect_timeout=10) as conn:
            self.assertEqual(conn.execute("select current_user").fetchone(), ("app",))
            conn.execute("create temp table demo_check (n int)")
            conn.execute("insert into demo_check values (1)")
            self.assertEqual(conn.execute("select count(*) from demo_check").fetchone(), (1,))
        running = subprocess.run(
            ["pgrep", "-f", tmp], capture_output=True, text=True
        ).stdout.split()
        self.assertNotEqual(running, [], "the demo's servers run from its work directory")
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(timeout=30), 0)
        # The work directory is gone, and no server of this demo is left.
        self.assertEqual(os.listdir(tmp), [])
        leftovers = subprocess.run(
            ["pgrep", "-f", tmp], capture_output=True, text=True
        ).stdout.split()
        self.assertEqual(leftovers, [])
