"""
Framing a PostgreSQL byte stream into messages, cheaply.

A proxy sees every byte of every result set, so this is the hot path.  The
framer reads only the five-byte header of each message (type and length).  A
message whose type nobody asked to see is forwarded as the original bytes, in
as few writes as possible, and without waiting for it to arrive whole: a
1 GB DataRow is passed on chunk by chunk as it comes and never held in
memory.  Only I{watched} types (ReadyForQuery, authentication, queries the
router must classify...) are assembled whole and handed to a callback, which
may let them through, drop them or replace them.

Incomplete data is kept as a list of chunks and joined once, when the
message it belongs to is complete, so assembling a large message costs linear
time rather than the quadratic cost of C{buffer = buffer[n:]} loops.
"""

from __future__ import annotations

import struct
from typing import Callable, FrozenSet, List, Optional

_LENGTH = struct.Struct("!I")
_unpack_length = _LENGTH.unpack_from

#: Returned by a message callback to forward the message unchanged.
FORWARD = None


class FramingError(Exception):
    """
    The stream does not frame as PostgreSQL messages (bad length, bad type,
    or a message longer than allowed).  The connection cannot continue.
    """


MessageCallback = Callable[[int, bytes], Optional[bytes]]
ForwardCallback = Callable[[bytes], None]
ErrorCallback = Callable[[Exception], None]


class StreamFramer:
    """
    Incremental framer for typed v3 messages (type byte, int32 length).

    @ivar watched: the message types handed to C{on_message}; may be replaced
        at any time (for example when a session leaves the startup phase).
    """

    def __init__(
        self,
        on_message: MessageCallback,
        on_forward: ForwardCallback,
        watched: FrozenSet[int] = frozenset(),
        max_length: Optional[int] = None,
        valid_types: Optional[FrozenSet[int]] = None,
        on_error: Optional[ErrorCallback] = None,
        in_order: bool = False,
    ) -> None:
        """
        @param on_message: called as C{on_message(type, payload)} for each
            complete watched message; returns L{FORWARD} (None) to pass the
            original bytes on, or bytes to send in their place (C{b""} drops
            the message).
        @param on_forward: receives the bytes to pass on, in order.
        @param max_length: the largest message length word accepted.
        @param valid_types: if given, any other type byte is a framing error
            (PostgreSQL rejects unknown frontend message types the same way).
        @param on_error: receives what L{resume} raises while it replays
            the data kept during a pause.  L{resume} is called by whoever
            ended the pause -- typically the code handling I{another}
            connection's bytes (a backend's ReadyForQuery) -- so an error in
            this stream must go to this stream's owner, never up that other
            stack, where it would be taken for that connection's failure.
            L{feed} raises as usual: its caller is the owner.
        @param in_order: pass on the bytes in front of a watched message
            before its callback runs.  Needed where a callback sends the
            message somewhere itself (a client's session writes a Query to
            the backend it chose, while COPY data passes through to the
            primary): otherwise the message would overtake the data.  Off
            where callbacks only decide (a backend's replies), so that a
            reply and its ReadyForQuery leave in one write.
        """
        self.watched = watched
        self._on_message = on_message
        self._on_forward = on_forward
        self.max_length = max_length if max_length is not None else 0x7FFFFFFF
        self._valid_types = valid_types
        # Bytes of a pass-through message still to come from the peer.
        self._skip = 0
        # Chunks of an incomplete header or watched message, and how many
        # bytes the buffer must reach before it is worth looking at again.
        self._pending: List[bytes] = []
        self._pending_length = 0
        self._needed = 0
        self._paused = False
        self._in_process = False
        self._stopped = False
        self._on_error = on_error
        self._in_order = in_order

    def redirect(self, on_message: MessageCallback, on_forward: ForwardCallback,
                 watched: FrozenSet[int]) -> None:
        """
        Send later messages to new callbacks, keeping any partial message
        already received.  Safe to call from inside a callback: the messages
        after the current one go to the new callbacks.
        """
        self._on_message = on_message
        self._on_forward = on_forward
        self.watched = watched

    @property
    def buffered(self) -> int:
        """
        How many received bytes are held, not yet forwarded or delivered.
        """
        return self._pending_length

    @property
    def mid_message(self) -> bool:
        """
        Whether part of a passed-on message has been forwarded and the
        rest has not: whoever received that part is in the middle of a
        message, so the connection it went to cannot be used for anything
        else (the next bytes it gets would be read as the rest of it).
        """
        return self._skip > 0

    def stop(self) -> None:
        """
        Deliver nothing more, ever: the stream failed (or its connection is
        closing) and whatever follows is to be dropped, not framed.
        """
        self._stopped = True
        self._paused = True
        self._pending = []
        self._pending_length = 0
        self._needed = 0

    def pause(self) -> None:
        """
        Stop delivering messages after the current one; later data is kept
        until L{resume}.  Used while a decision about the next message waits
        on something asynchronous (a backend to connect, say).
        """
        self._paused = True

    def resume(self) -> None:
        """
        Continue delivering messages, starting with any kept while paused.
        """
        if not self._paused or self._stopped:
            return
        self._paused = False
        if self._in_process or not self._pending:
            return
        if self._on_error is None:
            self._replay_pending()
            return
        try:
            self._replay_pending()
        except Exception as e:
            self.stop()
            self._on_error(e)

    def _replay_pending(self) -> None:
        """
        Feed the data kept while paused back through L{feed}, which knows
        whether it starts inside a passed-on message.
        """
        data = b"".join(self._pending)
        self._pending = []
        self._pending_length = 0
        self._needed = 0
        self.feed(data)

    def feed(self, data: bytes) -> None:
        """
        Take bytes received from the peer.

        @raise FramingError: if the stream cannot be framed.
        """
        if self._stopped:
            return
        if self._pending or self._paused:
            self._pending.append(data)
            self._pending_length += len(data)
            if self._paused or self._pending_length < self._needed:
                return
            data = b"".join(self._pending)
            self._pending = []
            self._pending_length = 0
            self._needed = 0
            self._process(data, 0)
            return
        skip = self._skip
        if skip:
            size = len(data)
            if size <= skip:
                self._skip = skip - size
                self._on_forward(data)
                return
            self._skip = 0
            self._process(data, skip)
            return
        self._process(data, 0)

    def _process(self, data: bytes, pos: int) -> None:
        """
        Frame C{data} from C{pos}; bytes before C{pos} are already known to
        belong to forwarded messages.
        """
        end = len(data)
        forward_from = 0
        watched = self.watched
        valid = self._valid_types
        max_length = self.max_length
        self._in_process = True
        try:
            while end - pos >= 5:
                message_type = data[pos]
                (length,) = _unpack_length(data, pos + 1)
                if length < 4 or length > max_length:
                    raise FramingError(
                        f"invalid message length {_signed(length)} for "
                        f"message type {chr(message_type)!r}")
                if valid is not None and message_type not in valid:
                    raise FramingError(
                        f"invalid message type {chr(message_type)!r}")
                message_end = pos + 1 + length
                if message_type in watched:
                    if message_end > end:
                        break
                    if self._in_order and pos > forward_from:
                        self._on_forward(data[forward_from:pos])
                        forward_from = pos
                    on_forward = self._on_forward
                    replacement = self._on_message(message_type,
                                                   data[pos + 5:message_end])
                    if replacement is not None:
                        if pos > forward_from:
                            on_forward(data[forward_from:pos])
                        if replacement:
                            on_forward(replacement)
                        forward_from = message_end
                    elif on_forward is not self._on_forward:
                        # Redirected by the callback: what came before,
                        # this message included, belongs to the old target.
                        on_forward(data[forward_from:message_end])
                        forward_from = message_end
                    pos = message_end
                    # The callback may have changed what we watch.
                    watched = self.watched
                    if self._paused:
                        break
                else:
                    if message_end > end:
                        self._skip = message_end - end
                        pos = end
                        break
                    pos = message_end
        finally:
            self._in_process = False
        if pos > forward_from:
            if forward_from == 0 and pos == end:
                self._on_forward(data)
            else:
                self._on_forward(data[forward_from:pos])
        if pos < end:
            rest = data[pos:]
            self._pending = [rest]
            self._pending_length = len(rest)
            if end - pos >= 5:
                (length,) = _unpack_length(data, pos + 1)
                self._needed = 1 + length
            else:
                self._needed = 5
        if self._paused is False and self._pending and \
                self._pending_length >= self._needed and not self._in_process:
            # A callback paused and resumed within one call: go on.
            self._replay_pending()


def _signed(length: int) -> int:
    """
    A length word as the peer meant it: the protocol's lengths are signed
    32-bit integers, so 0xFFFFFFFF is -1 (as PostgreSQL reports it), not
    4294967295.
    """
    return length - (1 << 32) if length >= 1 << 31 else length


def read_startup_packet(buffer: bytearray, max_length: int) -> Optional[bytes]:
    """
    Take one untyped startup packet (int32 length then body) off the front of
    C{buffer}, which is modified in place.

    Startup packets come once or twice per connection, so a bytearray is
    fine here.

    @return: the packet body (after the length word), or None if the packet
        is not complete yet.
    @raise FramingError: if the length is impossible.
    """
    if len(buffer) < 4:
        return None
    (length,) = _LENGTH.unpack_from(buffer, 0)
    if length < 8 or length > max_length:
        raise FramingError(
            f"invalid length of startup packet: {_signed(length)}")
    if len(buffer) < length:
        return None
    body = bytes(buffer[4:length])
    del buffer[:length]
    return body
