"""
The processes a test or a benchmark starts, seen from outside: a free port
to give one, waiting until it listens, stopping it, the end of its log,
and its resident memory.

Shared by the end-to-end tests (C{tests/support.py}, C{tests/rawclient.py},
the memory and fuzz tests), the benchmarks (C{benchmarks/harness.py}),
L{twisted_pgpool.testing.localcluster} and
L{twisted_pgpool.testing.memcached}.  Everything here blocks, and reads
Linux's C{/proc}.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from typing import Any, Dict, Optional

__all__ = [
    "ProcessExited",
    "RssSampler",
    "free_port",
    "listening",
    "python_environ",
    "rss",
    "settled_rss",
    "stop_process",
    "tail",
    "wait_until_listening",
]


def free_port(host: str = "127.0.0.1") -> int:
    """
    Return a TCP port on C{host} that nothing listens on right now.

    Another process may take it before ours binds it; what starts a server
    on it should say so loudly (a proxy that cannot listen exits).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def python_environ(root: str) -> Dict[str, str]:
    """
    Our environment with C{root} first on C{PYTHONPATH}: a Python child
    process imports the C{twisted_pgpool} of that source tree (and its
    C{twisted/plugins}), whatever this process was started with.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    return env


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """
    Whether something accepts TCP connections on C{host:port} now (on the
    loopback interface a connection is accepted or refused at once).
    """
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


class ProcessExited(Exception):
    """
    A process exited before it did what was awaited.

    @ivar returncode: its exit status, as L{subprocess.Popen.returncode}.
    """

    def __init__(self, returncode: int) -> None:
        super().__init__(f"exited with status {returncode}")
        self.returncode = returncode


def wait_until_listening(
    process: "subprocess.Popen[Any]",
    port: int,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
    interval: float = 0.05,
) -> None:
    """
    Return once C{process} accepts connections on C{host:port}.

    @raise ProcessExited: If it exits first.
    @raise TimeoutError: If the port does not open within C{timeout}
        seconds (the process is left running).
    """
    deadline = time.monotonic() + timeout
    while True:
        returncode = process.poll()
        if returncode is not None:
            raise ProcessExited(returncode)
        if listening(port, host):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g} s")
        time.sleep(interval)


def stop_process(
    process: "subprocess.Popen[Any]", signum: int = signal.SIGTERM, timeout: float = 10.0
) -> int:
    """
    Send C{signum} to C{process} unless it has exited, give it C{timeout}
    seconds, then SIGKILL it; reap it either way.

    @return: its exit status (negative for a signal).
    """
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def tail(path: str, lines: int = 30) -> str:
    """
    The last C{lines} lines of the text file at C{path}, for an error
    message; if it cannot be read, a line saying why.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(could not read {path}: {e})"


def rss(pid: int) -> int:
    """
    The resident set size of process C{pid}, in bytes (C{VmRSS} of
    C{/proc/PID/status}).

    @raise OSError: If the process is gone: no such process, or one that
        has exited and not been reaped yet (a zombie has no C{VmRSS}).
    """
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ProcessLookupError(f"process {pid} has no VmRSS: it has exited")


def settled_rss(
    pid: int, tolerance: int = 64 * 1024, interval: float = 0.1, attempts: int = 50
) -> int:
    """
    The RSS of process C{pid} once it has stopped moving: two readings
    C{interval} seconds apart within C{tolerance} bytes, or the last of
    C{attempts} readings.  A proxy frees a closed session's memory a moment
    after the socket closes, in its reactor's next turns.
    """
    last = rss(pid)
    for _ in range(attempts):
        time.sleep(interval)
        now = rss(pid)
        if abs(now - last) < tolerance:
            return now
        last = now
    return last


class RssSampler:
    """
    Samples a process's RSS every few milliseconds in a thread, while a
    C{with} block runs, keeping the peak (C{peak}, in bytes).

    A process that exits stops the sampling; the peak is what was seen
    until then.
    """

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss(self.pid))
            except OSError:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = rss(self.pid)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, rss(self.pid))
