"""
A real memcached for the tests: started as a child process on a free
loopback port, waited for by polling connections from the reactor (no
sleeping), stopped at clean-up.

CI installs the Debian package (C{.ci/install-postgres.sh}); where the
binary is missing the tests that need it are skipped with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Optional

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SkipTest

from tests.support import free_port

MEMCACHED_CANDIDATES = ("/usr/bin/memcached", "/usr/local/bin/memcached")


def find_memcached() -> Optional[str]:
    for path in MEMCACHED_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("memcached")


def memcached_or_skip() -> str:
    """
    The memcached binary, or skip the test where it is not installed.
    """
    path = find_memcached()
    if path is None:
        raise SkipTest("memcached is not installed (apt-get install memcached; CI installs it)")
    return path


class MemcachedProcess:
    """
    One memcached server on C{127.0.0.1:port}.

    @ivar port: its TCP port (kept across L{stop}/L{start}, so a client can
        reconnect to the same address).
    """

    def __init__(self, port: Optional[int] = None) -> None:
        self.binary = memcached_or_skip()
        self.port = port or free_port()
        self.process: Optional[subprocess.Popen] = None

    def command(self) -> list:
        command = [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "16"]
        if os.geteuid() == 0:
            # memcached refuses to run as root without a user to switch to.
            command += ["-u", "nobody"]
        return command

    def start(self, reactor) -> defer.Deferred:
        """
        Start it; the Deferred fires once it accepts connections (or fails
        after 10 s, or if the process exits).
        """
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return defer.ensureDeferred(self._wait_until_listening(reactor))

    async def _wait_until_listening(self, reactor) -> None:
        deadline = reactor.seconds() + 10.0
        while True:
            if self.process is None or self.process.poll() is not None:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process else ""
                raise RuntimeError(f"memcached exited at start: {stderr}")
            try:
                protocol = await connectProtocol(
                    TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=1), Protocol())
            except Exception:
                if reactor.seconds() > deadline:
                    raise RuntimeError(f"memcached did not listen on port {self.port} within 10 s")
                await task.deferLater(reactor, 0.02, lambda: None)
                continue
            protocol.transport.loseConnection()
            return

    def stop(self) -> None:
        """
        Kill it (SIGKILL: an abrupt outage, as in production) and reap it.
        """
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()
