"""
Waiting for a condition in tests that run real servers and processes:
poll it until it holds, and fail with what was awaited after a timeout.

Two forms: L{wait_for} blocks (test code around the reactor: a test that
drives a proxy child process, a cluster's set-up); L{wait_in_reactor}
lets the reactor run between the polls (a test whose proxy or client runs
in the test's own reactor).  A unit test has no business here: it advances
a L{twisted.internet.task.Clock} instead.
"""

from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

__all__ = ["wait_for", "wait_in_reactor", "wait_until"]

_T = TypeVar("_T")


def wait_for(
    predicate: Callable[[], _T],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.02,
) -> _T:
    """
    Call C{predicate} every C{interval} seconds until it returns something
    true, and return that.

    @param what: what is awaited, for the failure's message.
    @raise AssertionError: If it has not held after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> bool:
    """
    L{wait_for}'s outcome as a bool, for tests that say themselves what
    they waited for (C{assert wait_until(...), "why"}).
    """
    try:
        wait_for(predicate, timeout)
    except AssertionError:
        return False
    return True


def wait_in_reactor(
    reactor: IReactorTime,
    predicate: Callable[[], Any],
    what: str = "condition",
    timeout: float = 10.0,
    interval: float = 0.02,
) -> "defer.Deferred[float]":
    """
    Call C{predicate} every C{interval} seconds, letting C{reactor} run in
    between, until it returns something true.

    @param what: what is awaited, for the failure's message.
    @return: a Deferred (to C{await}, or to C{yield} in C{inlineCallbacks})
        that fires with the C{time.monotonic()} at which it first held,
        or fails with L{AssertionError} after C{timeout} seconds.
    """

    async def poll() -> float:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            await deferLater(reactor, interval, lambda: None)
        return time.monotonic()

    return defer.Deferred.fromCoroutine(poll())
