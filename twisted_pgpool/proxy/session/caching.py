"""
What the query cache's steps (L{twisted_pgpool.cache.steps}) use of a
session beyond its queue (L{twisted_pgpool.interfaces.ICachingSession}):
whether the cache may serve now, a catalog lookup on the primary, and a
ReadyForQuery held until a remote cache has a write's invalidations.
"""

from __future__ import annotations

from typing import Callable, List

from twisted.internet import defer

from twisted_pgpool.proxy.session.state import SessionState
from twisted_pgpool.wire import messages


class CacheHooks(SessionState):
    """
    A part of L{twisted_pgpool.proxy.session.Session}: the query cache's
    hooks.
    """

    def cache_usable(self) -> bool:
        """
        Whether the cache may answer or store now: outside explicit
        transactions, before any role change.
        """
        cache = self._cache
        return cache is not None and cache.disabled is None and \
            not self.router.in_transaction and \
            self._primary_backend.transaction_status == messages.TRANSACTION_IDLE

    def ask_primary(self, sql: str, message_received: Callable[[int, bytes], None],
                    ready: Callable[[int], None]) -> None:
        """
        Send a query of the proxy's own (a query cache catalog lookup) on
        the session's primary connection; its replies go to
        C{message_received} and C{ready}, never to the client.
        """
        backend = self._primary_backend
        backend.write(messages.query(sql))
        backend.expect_capture(message_received, ready, holds_client=False)

    def hold_ready_for_query(self) -> None:
        """
        Keep the primary's next ReadyForQuery back, and the client's next
        message out, until a remote cache has the write's invalidations
        (L{_release_ready}).
        """
        if self._hold_ready:
            return
        self._primary_backend.keep_last_ready_for_query()
        self._hold_ready = True
        self._hold_client()

    def _release_ready(self, status: int, waits: List[defer.Deferred]) -> None:
        """
        Send the held ReadyForQuery once the remote cache has the write's
        invalidations, and let the client's next message in.
        """
        def release(_: object) -> None:
            self._hold_ready = False
            if self.closed:
                return
            self.frontend.transport.write(messages.ready_for_query(status))
            if self._held and self.owner is None:
                held, self._held = self._held, []
                self.frontend.transport.writeSequence(held)
            self.unblock()

        defer.DeferredList(waits).addCallback(release)
