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

A watched type may also be watched by its I{head}: a message of such a type
longer than C{head_size} is offered to a second callback as its first
C{head_size} bytes and its length, before the rest has arrived.  That
callback decides from the head: pass the message on (the rest then streams
through like an unwatched message), send the rest somewhere else (or
nowhere), or have the message read whole after all.  So a client's 200 MB
Bind can cross the proxy in 64 KiB pieces while the proxy still sees the
statement and portal names at its start.  A message that must be read whole
is refused, at its header, when it is longer than C{max_whole_length}.

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

#: PostgreSQL's C{PQ_SMALL_MESSAGE_LIMIT}: the longest length word it
#: accepts for the frontend messages that carry little (L{StreamFramer}'s
#: C{small_types}).
SMALL_MESSAGE_LIMIT = 10000

#: How many payload bytes of a long message a head callback is given: its
#: names and the start of its text, never the bulk of its data.
HEAD_SIZE = 64 * 1024

#: How much a paused framer keeps before it asks for reading to stop.
BACKLOG_LIMIT = 256 * 1024


class _Whole:
    def __repr__(self) -> str:
        return "WHOLE"


#: Returned by a head callback: read the message whole after all and hand it
#: to the message callback (subject to C{max_whole_length}).
WHOLE = _Whole()


class FramingError(Exception):
    """
    The stream does not frame as PostgreSQL messages (bad length, bad type,
    or a message longer than allowed).  The connection cannot continue.
    """


class MessageTooLarge(FramingError):
    """
    A message that would have to be read whole is longer than
    C{max_whole_length}.  Raised at its header (or at its head, when a head
    callback asked for it whole), before the bulk of it is read.

    @ivar message_type: the message's type byte.
    @ivar length: its length word.
    @ivar limit: the C{max_whole_length} it exceeds.
    """

    def __init__(self, message_type: int, length: int, limit: int) -> None:
        super().__init__(
            f"message of type {chr(message_type)!r} and length {length} is "
            f"longer than the {limit} bytes allowed for a message read whole"
        )
        self.message_type = message_type
        self.length = length
        self.limit = limit


MessageCallback = Callable[[int, bytes], Optional[bytes]]
ForwardCallback = Callable[[bytes], None]
ErrorCallback = Callable[[Exception], None]
#: C{on_head(type, head, payload_length)}: returns L{FORWARD}, L{WHOLE}, or
#: a callable that takes the rest of the message (after the head) as it comes.
HeadCallback = Callable[[int, bytes, int], object]
BacklogCallback = Callable[[bool], None]


class StreamFramer:
    """
    Incremental framer for typed v3 messages (type byte, int32 length).

    @ivar watched: the message types handed to C{on_message}; may be replaced
        at any time (for example when a session leaves the startup phase).
    @ivar heads: the watched types whose long messages (payload longer than
        C{head_size}) go to C{on_head} by their head instead (see
        L{redirect}).
    @ivar head_size: how many payload bytes a head callback is given (set
        at construction).
    @ivar on_backlog: if set, called with True when data kept during a
        pause passes C{backlog_limit} (the owner should stop reading from
        the peer: the data is not going anywhere yet), and with False on
        the L{resume} after that.  Called again with True for each further
        chunk while it stays above the limit, so that a transport resumed
        by someone else (flow control of the other side) is paused again.
    """

    def __init__(
        self,
        on_message: MessageCallback,
        on_forward: ForwardCallback,
        watched: FrozenSet[int] = frozenset(),
        max_length: Optional[int] = None,
        valid_types: Optional[FrozenSet[int]] = None,
        on_error: Optional[ErrorCallback] = None,
        head_size: int = HEAD_SIZE,
        in_order: bool = False,
        small_types: FrozenSet[int] = frozenset(),
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
        @param head_size: see L{heads}.
        @param small_types: message types whose length word may be at most
            L{SMALL_MESSAGE_LIMIT} (PostgreSQL's C{PQ_SMALL_MESSAGE_LIMIT}
            for Sync, Flush, Execute...).  The server closes a connection
            that sends a longer one without a word (it only logs "invalid
            message length"), which must not reach it: the peer gets the
            FramingError instead.
        @param in_order: pass on the bytes in front of a watched message
            before its callback runs.  Needed where a callback sends the
            message somewhere itself (a client's session writes a Query to
            the backend it chose, while COPY data passes through to the
            primary): otherwise the message would overtake the data.  Off
            where callbacks only decide (a backend's replies), so that a
            reply and its ReadyForQuery leave in one write.
        """
        self.watched = watched
        self.heads: FrozenSet[int] = frozenset()
        self.head_size = head_size
        self._on_message = on_message
        self._on_forward = on_forward
        self._on_head: Optional[HeadCallback] = None
        self.max_length = max_length if max_length is not None else 0x7FFFFFFF
        self._max_whole_length = 0x7FFFFFFF
        # Watched messages longer than this take the slow path: offered by
        # their head, or refused as too large to read whole.
        self._long_length = min(self._max_whole_length, head_size + 4)
        self._valid_types = valid_types
        # Bytes of a pass-through message still to come from the peer, and
        # where they go (on_forward, or what a head callback chose).
        self._skip = 0
        self._skip_to: ForwardCallback = on_forward
        # Chunks of an incomplete header or watched message, and how many
        # bytes the buffer must reach before it is worth looking at again.
        self._pending: List[bytes] = []
        self._pending_length = 0
        self._needed = 0
        # The message at the start of _pending was offered by its head and
        # is to be read whole: it is not offered again.
        self._whole_decided = False
        self._paused = False
        self._in_process = False
        self._stopped = False
        self._on_error = on_error
        self.on_backlog: Optional[BacklogCallback] = None
        self.backlog_limit = BACKLOG_LIMIT
        self._backlogged = False
        #: The most bytes ever joined into one buffer (a message read
        #: whole, or what was kept during a pause): its owner may want to
        #: give the memory back to the system afterwards.
        self.largest_assembled = 0
        self._in_order = in_order
        self._small_types = small_types

    @property
    def max_whole_length(self) -> int:
        """
        The largest length word of a message read whole (a watched one, or
        one a head callback asked for whole); a longer one raises
        L{MessageTooLarge} before its body is read.
        """
        return self._max_whole_length

    @max_whole_length.setter
    def max_whole_length(self, value: int) -> None:
        self._max_whole_length = value
        self._long_length = min(value, self.head_size + 4)

    def redirect(
        self,
        on_message: MessageCallback,
        on_forward: ForwardCallback,
        watched: FrozenSet[int],
        heads: FrozenSet[int] = frozenset(),
        on_head: Optional[HeadCallback] = None,
    ) -> None:
        """
        Send later messages to new callbacks, keeping any partial message
        already received.  Safe to call from inside a callback: the messages
        after the current one go to the new callbacks.

        @param heads: the watched types whose messages longer than
            C{head_size} are given to C{on_head} as C{on_head(type, head,
            payload_length)} once their first C{head_size} payload bytes are
            in.  Before it is called, everything before the message has
            been passed on.  It returns L{FORWARD} to pass the message on
            (the rest streams through as it arrives, never held), L{WHOLE}
            to have it assembled and given to C{on_message} after all, or a
            callable: the head is then the callback's (to send or not) and
            the callable gets the rest of the message, in pieces, as it
            arrives.  If the callback pauses the framer, the rest waits
            for L{resume}.
        """
        if self._skip_to is self._on_forward:
            self._skip_to = on_forward
        self._on_message = on_message
        self._on_forward = on_forward
        self.watched = watched
        self.heads = heads
        self._on_head = on_head

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
        self._whole_decided = False

    @property
    def paused(self) -> bool:
        """
        Whether delivery is paused (or stopped): data may be kept, not yet
        delivered.
        """
        return self._paused

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
        if self._backlogged:
            # Reading may go on: if the data replayed below pauses us
            # again, the next chunk that finds us over the limit says so.
            self._backlogged = False
            assert self.on_backlog is not None
            self.on_backlog(False)
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
        if self._pending_length > self.largest_assembled:
            self.largest_assembled = self._pending_length
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
            if self._paused:
                if self._pending_length > self.backlog_limit and self.on_backlog is not None:
                    self._backlogged = True
                    self.on_backlog(True)
                return
            if self._pending_length < self._needed:
                return
            data = b"".join(self._pending)
            if self._pending_length > self.largest_assembled:
                self.largest_assembled = self._pending_length
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
                self._skip_to(data)
                return
            self._skip = 0
            if self._skip_to is self._on_forward:
                self._process(data, skip)
                return
            # The end of a message a head callback sent elsewhere.
            self._skip_to(data[:skip])
            rest = data[skip:]
            if self._paused:
                self._pending = [rest]
                self._pending_length = len(rest)
                self._needed = 0
                return
            self._process(rest, 0)
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
        long_length = self._long_length
        self._in_process = True
        try:
            while end - pos >= 5:
                message_type = data[pos]
                (length,) = _unpack_length(data, pos + 1)
                if (
                    length < 4
                    or length > max_length
                    or (length > SMALL_MESSAGE_LIMIT and message_type in self._small_types)
                ):
                    raise FramingError(
                        f"invalid message length {_signed(length)} for "
                        f"message type {chr(message_type)!r}"
                    )
                if valid is not None and message_type not in valid:
                    raise FramingError(f"invalid message type {chr(message_type)!r}")
                message_end = pos + 1 + length
                if message_type in watched:
                    if length > long_length:
                        # Rare: a long message of a watched type.
                        if length > self.head_size + 4 and message_type in self.heads:
                            if self._whole_decided:
                                # Asked for whole at its head, earlier.
                                if message_end > end:
                                    break
                                self._whole_decided = False
                            else:
                                head_end = pos + 5 + self.head_size
                                if head_end > end:
                                    break
                                if pos > forward_from:
                                    self._on_forward(data[forward_from:pos])
                                forward_from = pos
                                assert self._on_head is not None
                                decision = self._on_head(
                                    message_type, data[pos + 5 : head_end], length - 4
                                )
                                if decision is WHOLE:
                                    if length > self._max_whole_length:
                                        raise MessageTooLarge(
                                            message_type, length, self._max_whole_length
                                        )
                                    if message_end > end:
                                        self._whole_decided = True
                                        break
                                    # Complete already: delivered below.
                                else:
                                    if decision is FORWARD:
                                        # The header and head go with it.
                                        sink = self._on_forward
                                        start = pos
                                    else:
                                        sink = decision  # type: ignore[assignment]
                                        start = head_end
                                    if self._paused:
                                        # The rest waits for resume().
                                        if start < head_end:
                                            sink(data[start:head_end])
                                        self._skip = message_end - head_end
                                        self._skip_to = sink
                                        rest = data[head_end:]
                                        self._pending = [rest] if rest else []
                                        self._pending_length = len(rest)
                                        self._needed = 0
                                        forward_from = pos = end
                                        break
                                    if message_end > end:
                                        sink(data[start:end])
                                        self._skip = message_end - end
                                        self._skip_to = sink
                                        forward_from = pos = end
                                        break
                                    sink(data[start:message_end])
                                    forward_from = pos = message_end
                                    watched = self.watched
                                    continue
                        elif length > self._max_whole_length:
                            raise MessageTooLarge(message_type, length, self._max_whole_length)
                    if message_end > end:
                        break
                    if self._in_order and pos > forward_from:
                        self._on_forward(data[forward_from:pos])
                        forward_from = pos
                    on_forward = self._on_forward
                    replacement = self._on_message(message_type, data[pos + 5 : message_end])
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
                        self._skip_to = self._on_forward
                        pos = end
                        break
                    pos = message_end
        except FramingError:
            # What came before the bad bytes is the peer's, whole messages
            # (or the end of one passed on): pass it on before the error,
            # as PostgreSQL would have read it.  Kept back, the server would
            # wait for the rest of a message forever.
            if pos > forward_from:
                self._on_forward(data[forward_from:pos])
            raise
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
                message_type = data[pos]
                (length,) = _unpack_length(data, pos + 1)
                if (
                    length > self.head_size + 4
                    and message_type in self.heads
                    and message_type in self.watched
                    and not self._whole_decided
                ):
                    # Worth looking at again once its head is in.
                    self._needed = 5 + self.head_size
                else:
                    self._needed = 1 + length
            else:
                self._needed = 5
        if (
            self._paused is False
            and self._pending
            and self._pending_length >= self._needed
            and not self._in_process
        ):
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
        raise FramingError(f"invalid length of startup packet: {_signed(length)}")
    if len(buffer) < length:
        return None
    body = bytes(buffer[4:length])
    del buffer[:length]
    return body
