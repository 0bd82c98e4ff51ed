"""
A real memcached for the query cache's tests and benchmarks: a child
process on a loopback port, started, waited for and killed by our code.

The tests of L{twisted_pgpool.cache.store} start and stop it from the
reactor (L{MemcachedProcess.start_in_reactor}); the end-to-end tests and
C{benchmarks/query_cache_bench.py} start it before anything runs
(L{MemcachedProcess.start}).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from typing import IO, List, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from twisted_pgpool.testing.processes import (
    ProcessExited,
    free_port,
    listening,
    stop_process,
    wait_until_listening,
)
from twisted_pgpool.testing.waiting import wait_in_reactor

__all__ = ["MemcachedProcess", "find_memcached"]

#: Where Debian's package and a local build put it.
MEMCACHED_CANDIDATES = ("/usr/bin/memcached", "/usr/local/bin/memcached")

#: Seconds a memcached gets to listen.
START_TIMEOUT = 10.0


def find_memcached() -> Optional[str]:
    """
    The memcached binary, or L{None} where it is not installed.
    """
    for path in MEMCACHED_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("memcached")


class MemcachedProcess:
    """
    One memcached server on C{127.0.0.1:port}.

    @ivar port: its TCP port (kept across L{stop} and a new start, so a
        client can reconnect to the same address).
    @ivar log_path: where its output goes; by default nowhere, except what
        it says when it exits at start (kept for the error).
    """

    def __init__(
        self,
        binary: str,
        port: Optional[int] = None,
        memory_mb: int = 16,
        log_path: Optional[str] = None,
    ) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.memory_mb = memory_mb
        self.log_path = log_path
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> List[str]:
        command = [
            self.binary,
            "-l",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "0",
            "-m",
            str(self.memory_mb),
        ]
        if os.geteuid() == 0:
            # memcached refuses to run as root without a user to switch to.
            command += ["-u", "nobody"]
        return command

    def _spawn(self) -> None:
        log: Optional[IO[bytes]] = None
        if self.log_path is not None:
            log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log if log is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()

    def _exited(self) -> RuntimeError:
        said = ""
        if self.process is not None and self.process.stderr is not None:
            said = self.process.stderr.read().decode(errors="replace")
        return RuntimeError(f"memcached exited at start: {said}")

    def listening(self) -> bool:
        """
        Whether it accepts connections (which does not hold up a reactor:
        on the loopback interface a connection is accepted or refused at
        once).

        @raise RuntimeError: If the process has exited, with what it said.
        """
        if self.process is None or self.process.poll() is not None:
            raise self._exited()
        return listening(self.port)

    def start(self) -> None:
        """
        Start it and return once it accepts connections.

        @raise RuntimeError: If it exits first, or does not listen within
            L{START_TIMEOUT} seconds.
        """
        self._spawn()
        assert self.process is not None
        try:
            wait_until_listening(self.process, self.port, timeout=START_TIMEOUT)
        except ProcessExited:
            raise self._exited()
        except TimeoutError as e:
            raise RuntimeError(f"memcached: {e}")

    def start_in_reactor(self, reactor: IReactorTime) -> "defer.Deferred[float]":
        """
        Start it; the Deferred fires once it accepts connections, letting
        C{reactor} run meanwhile, or fails with L{RuntimeError} if it exits
        first, L{AssertionError} if it does not listen within
        L{START_TIMEOUT} seconds.
        """
        self._spawn()
        return wait_in_reactor(
            reactor, self.listening, f"memcached to listen on port {self.port}", START_TIMEOUT
        )

    def stop(self) -> None:
        """
        Kill it (SIGKILL: an abrupt outage, as in production) and reap it.
        Idempotent.
        """
        process, self.process = self.process, None
        if process is None:
            return
        stop_process(process, signal.SIGKILL)
        if process.stderr is not None:
            process.stderr.close()
