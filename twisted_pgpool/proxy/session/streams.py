"""
Client bytes the session passes on without holding them: COPY data (always
for the primary), and the rest of a long message whose head was enough to
route it (L{_Stream}), so that a 1 GB Bind value crosses the proxy without
being buffered.
"""

from __future__ import annotations

import struct
from typing import Callable, List, Optional, Tuple

from twisted_pgpool.backend.protocol import BackendProtocol
from twisted_pgpool.proxy.session.state import SessionState

_HEADER = struct.Struct("!BI")


class Streams(SessionState):
    """
    A part of L{twisted_pgpool.proxy.session.Session}: bytes passed on as
    they arrive.
    """

    def _start_stream(self, rest: int) -> "_Stream":
        """
        The sink for the rest of a long message; it goes to the
        connections L{_streamed_to} adds (none: it is dropped).
        """
        stream = self._stream = _Stream(self, rest)
        return stream

    def _streamed_to(self, node_id: int, frames: List[bytes]) -> List[bytes]:
        """
        C{frames}, ending with the head of the message being streamed, go
        to C{node_id}: so does the rest of that message.
        """
        stream = self._stream
        if stream is not None:
            stream.targets.append(self.links[node_id].backend)
        return frames

    def mid_message_backends(self) -> Tuple[BackendProtocol, ...]:
        """
        The connections that have part of a client message and not the
        rest (the client broke off in the middle of it): they cannot be
        pooled, the server would read the next client's bytes as that
        message's rest.
        """
        if not self.framer.mid_message:
            return ()
        if self._stream is not None:
            return tuple(self._stream.targets)
        # Passed on through the framer: only ever to the primary.
        return (self._primary_backend,)

    def pass_to_primary(self, data: bytes) -> None:
        """
        The framer's pass-through: client bytes it forwards untouched, for
        the primary -- COPY data (every COPY FROM goes there) and, in a
        session that routes nothing (L{relay}), each message
        C{_direct_message} let pass, as it came.
        """
        if self._batch or self._waiting:
            # The statement this data belongs to (COPY ... FROM STDIN by
            # Parse/Bind/Execute) is still held in the batch, or queued:
            # the data must not overtake it.
            if self._batch:
                self.send_batch(sync=False)
            self.run_or_wait(lambda: self._write_to_primary(data))
            return
        self._write_to_primary(data)

    #: The name L{pass_to_primary} had when it only carried COPY data.
    copy_data = pass_to_primary

    def _write_to_primary(self, data: bytes) -> bool:
        link = self.links.get(self.primary_id)
        if link is not None:
            link.backend.write(data)
        return True


class _Stream:
    """
    The rest of a long client message (after its head), passed on as it
    arrives to the connections its head went to (none: dropped).  The
    framer hands over exactly the message's bytes, so the stream knows
    when the message is complete: the session may then use those
    connections again (C{then}: a statement of the proxy's own that had to
    wait behind the message).

    @ivar targets: the backends that got the head.
    @ivar remaining: bytes of the message still to come.
    """

    def __init__(self, session: Streams, remaining: int) -> None:
        self.session = session
        self.remaining = remaining
        self.targets: List[BackendProtocol] = []
        self.then: Optional[Callable[[], None]] = None

    def write(self, data: bytes) -> None:
        for backend in self.targets:
            backend.write(data)
        self.remaining -= len(data)
        if self.remaining <= 0:
            session = self.session
            if session._stream is self:
                session._stream = None
            then, self.then = self.then, None
            if then is not None and not session.closed:
                then()
