"""
Properties of L{twisted_pgpool.wire.framing.StreamFramer} as the proxy drives it,
beyond the ones in L{tests.test_framing} (any split delivers the same
messages and bytes; garbage raises only L{FramingError}):

  - the callbacks see the stream in order: a message callback that takes a
    message (answers C{b""} and writes it itself, as the session does) is
    never called before the passed-on bytes in front of that message have
    reached the forward callback;
  - pausing in any callback and resuming at any later point, or pausing
    between any two chunks, delivers the same messages and passes on the
    same bytes as a run that never pauses;
  - redirecting at any message splits the stream between the old and the
    new callbacks at that message;
  - the framer agrees with the fuzzer's model of framing
    (L{tests.fuzzing.model_frame}): it raises L{FramingError} exactly when
    the model finds an invalid header, after delivering exactly the
    messages before it.
"""

from __future__ import annotations

import struct
from typing import Any, FrozenSet, List, Optional, Set, Tuple

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.fuzzing import model_frame
from tests.wire import frame, frames, message_lists, split_at
from twisted_pgpool.wire import messages
from twisted_pgpool.wire.framing import FORWARD, FramingError, StreamFramer

#: What the proxy watches from a client in a session (COPY data, COPY done
#: and COPY fail are passed on as they come).
WATCHED = frozenset(b"QPBDECSHFXp")
TYPES = b"QPBDECSHFXpdcf"

#: Take a message: the callback writes it itself and drops it from the stream.
TAKE = b""


def streams() -> Any:
    """
    Client messages of the session's types, watched and passed-on mixed,
    some large enough to arrive in several chunks.
    """
    return message_lists(TYPES, small=10, large=(200, 600), count=10)


cuts = st.lists(st.integers(min_value=0, max_value=10**6), max_size=12)


class EventLog:
    """
    Callbacks that record, in the order they happen, the bytes passed on and
    the messages taken (re-framed, as the session would write them).

    @ivar take: the indices (among watched messages) that are taken rather
        than forwarded.
    @ivar pause_on: the indices at whose delivery the callback pauses.
    """

    def __init__(
        self, take: Set[int] = frozenset(), pause_on: Set[int] = frozenset(), in_order: bool = False
    ) -> None:
        self.events: List[bytes] = []
        self.in_order = in_order
        self.delivered: List[Tuple[int, bytes]] = []
        self.take = take
        self.pause_on = pause_on
        self.framer: Optional[StreamFramer] = None

    def on_message(self, message_type: int, payload: bytes) -> Optional[bytes]:
        index = len(self.delivered)
        self.delivered.append((message_type, payload))
        if index in self.pause_on:
            assert self.framer is not None
            self.framer.pause()
        if index in self.take:
            self.events.append(frame(message_type, payload))
            return TAKE
        return FORWARD

    def on_forward(self, data: bytes) -> None:
        self.events.append(data)

    def make(self, watched: FrozenSet[int] = WATCHED, **kwargs) -> StreamFramer:
        kwargs.setdefault("in_order", self.in_order)
        self.framer = StreamFramer(self.on_message, self.on_forward, watched=watched, **kwargs)
        return self.framer

    @property
    def output(self) -> bytes:
        return b"".join(self.events)


def feed_all(
    log: EventLog,
    pieces: List[bytes],
    resume_after: Set[int] = frozenset(),
    pause_before: Set[int] = frozenset(),
) -> StreamFramer:
    framer = log.make()
    for n, piece in enumerate(pieces):
        if n in pause_before:
            framer.pause()
        framer.feed(piece)
        if n in resume_after:
            framer.resume()
    # Resume until nothing held is left (a resumed message may pause again).
    for _ in range(len(log.pause_on) + len(pause_before) + 2):
        framer.resume()
    return framer


indices = st.sets(st.integers(min_value=0, max_value=12), max_size=6)


class StreamOrderTests(SynchronousTestCase):
    """
    The session takes most client messages (it writes them to the backend
    it chose) while COPY data passes straight through: if the framer called
    the callback for a message before passing on the COPY data in front of
    it, the backend would get them out of order (a query inside a COPY).
    """

    # As the client side's framer is made (twisted_pgpool.proxy.frontend).
    @given(streams(), cuts, indices)
    @settings(max_examples=300)
    def test_taken_messages_and_passed_on_bytes_keep_stream_order(
        self, items, points, take
    ) -> None:
        log = EventLog(take=take, in_order=True)
        feed_all(log, split_at(frames(items), points))
        self.assertEqual(log.output, frames(items))

    def test_query_after_copy_data_reaches_callbacks_after_it(self) -> None:
        # The shape the fuzzer found (sequence warmup:8): COPY data, then a
        # query the session takes, in one chunk.
        stream = frame(ord("d"), b"1\tx\n") + frame(ord("c"), b"") + frame(ord("Q"), b"begin\x00")
        log = EventLog(take={0}, in_order=True)
        feed_all(log, [stream])
        self.assertEqual(
            log.events,
            [stream[: -len(frame(ord("Q"), b"begin\x00"))], frame(ord("Q"), b"begin\x00")],
        )


class PauseResumeTests(SynchronousTestCase):
    """
    Pausing (in a callback, or between chunks) and resuming anywhere never
    changes what is delivered or passed on.
    """

    @given(streams(), cuts, indices, indices)
    @settings(max_examples=300)
    def test_pause_in_any_callback_delivers_the_same_messages(
        self, items, points, pause_on, resume_after
    ) -> None:
        pieces = split_at(frames(items), points)
        plain = EventLog()
        feed_all(plain, pieces)
        paused = EventLog(pause_on=pause_on)
        feed_all(paused, pieces, resume_after)
        self.assertEqual(paused.delivered, plain.delivered)

    @given(streams(), cuts, indices, indices)
    @settings(max_examples=300)
    def test_pause_in_any_callback_passes_on_the_same_bytes(
        self, items, points, pause_on, resume_after
    ) -> None:
        pieces = split_at(frames(items), points)
        paused = EventLog(pause_on=pause_on)
        framer = feed_all(paused, pieces, resume_after)
        self.assertEqual((paused.output, framer.buffered), (frames(items), 0))

    @given(streams(), cuts, indices, indices)
    @settings(max_examples=300)
    def test_pause_between_any_chunks_delivers_the_same(
        self, items, points, pause_before, resume_after
    ) -> None:
        pieces = split_at(frames(items), points)
        log = EventLog()
        framer = feed_all(log, pieces, resume_after, pause_before)
        self.assertEqual(
            (log.delivered, log.output, framer.buffered),
            ([(t, p) for t, p in items if t in WATCHED], frames(items), 0),
        )

    @given(streams(), cuts, indices)
    @settings(max_examples=200)
    def test_nothing_is_delivered_while_paused(self, items, points, pause_on) -> None:
        log = EventLog(pause_on=pause_on)
        framer = log.make()
        for piece in split_at(frames(items), points):
            was_paused = framer._paused
            before = len(log.delivered)
            framer.feed(piece)
            if was_paused:
                self.assertEqual(len(log.delivered), before)


class RedirectPropertyTests(SynchronousTestCase):
    @given(streams(), cuts, st.integers(min_value=0, max_value=12))
    @settings(max_examples=300)
    def test_redirect_at_any_message_splits_the_stream_there(self, items, points, at) -> None:
        old, new = EventLog(), EventLog()
        framer = old.make()
        new.framer = framer

        def redirect_at(message_type: int, payload: bytes) -> Optional[bytes]:
            answer = EventLog.on_message(old, message_type, payload)
            if len(old.delivered) == at + 1:
                framer.redirect(new.on_message, new.on_forward, WATCHED)
            return answer

        framer._on_message = redirect_at
        for piece in split_at(frames(items), points):
            framer.feed(piece)
        watched = [(t, p) for t, p in items if t in WATCHED]
        # Everything up to and including the message at which the redirect
        # happened went to the old callbacks; the rest to the new ones.
        if at < len(watched):
            seen = 0
            boundary = 0
            for t, p in items:
                boundary += 5 + len(p)
                if t in WATCHED:
                    seen += 1
                    if seen == at + 1:
                        break
        else:
            boundary = len(frames(items))
        self.assertEqual(
            (old.delivered + new.delivered, old.output, new.output),
            (watched, frames(items)[:boundary], frames(items)[boundary:]),
        )


# -- the framer against the fuzzer's model -----------------------------------------------

MAX_LENGTH = 1000
VALID = messages.FRONTEND_TYPES


@st.composite
def damaged_streams(draw) -> bytes:
    """
    Valid messages with garbage (random bytes, or a header with a bad type
    or length) somewhere among them.
    """
    before = frames(draw(streams()))
    after = frames(draw(streams()))
    garbage = draw(
        st.one_of(
            st.binary(min_size=1, max_size=20),
            st.builds(
                lambda t, n: bytes((t,)) + struct.pack("!I", n),
                st.integers(0, 255),
                st.integers(0, 2**32 - 1),
            ),
        )
    )
    return before + garbage + after


def model_messages(stream: bytes, stop: int) -> List[Tuple[int, bytes]]:
    result, pos = [], 0
    while pos < stop:
        (length,) = struct.unpack_from("!I", stream, pos + 1)
        result.append((stream[pos], stream[pos + 5 : pos + 1 + length]))
        pos += 1 + length
    return result


class ModelAgreementTests(SynchronousTestCase):
    """
    The fuzzer decides from L{model_frame} whether the proxy must answer,
    may wait, or must close; the framer must frame exactly as the model.
    """

    @given(damaged_streams(), cuts)
    @settings(max_examples=400)
    def test_framer_raises_exactly_where_the_model_finds_an_invalid_header(
        self, stream, points
    ) -> None:
        verdict = model_frame(stream, MAX_LENGTH, VALID, stop_at_terminate=False)
        log = EventLog()
        framer = log.make(watched=VALID, max_length=MAX_LENGTH, valid_types=VALID)
        raised = False
        try:
            for piece in split_at(stream, points):
                framer.feed(piece)
        except FramingError:
            raised = True
        self.assertEqual(
            (raised, log.delivered),
            (verdict.kind == "invalid", model_messages(stream, verdict.position)),
        )

    @given(streams(), st.integers(min_value=0, max_value=10**6))
    @settings(max_examples=200)
    def test_model_calls_a_cut_valid_stream_incomplete_or_framed(self, items, cut) -> None:
        stream = frames([(t, p) for t, p in items if t in VALID])
        cut %= len(stream) + 1
        verdict = model_frame(stream[:cut], stop_at_terminate=False)
        self.assertIn(verdict.kind, ("framed", "incomplete"))
        if verdict.kind == "incomplete" and cut - verdict.position >= 5:
            # Once the header is there, the filler the fuzzer sends
            # completes exactly that message.
            completed = stream[:cut] + b"\x00" * verdict.missing
            self.assertEqual(model_frame(completed, stop_at_terminate=False).kind, "framed")
