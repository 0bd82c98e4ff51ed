"""
Which reply belongs to whom on one backend connection.

A session sends a server statements whose replies come back in order, each
ending with a ReadyForQuery: one reply unit per Query, Sync or FunctionCall
sent.  L{ReplyUnits} keeps the units still owed, oldest first, and what each
one is for: the client (forwarded), nobody (swallowed: the client sees
another node's answer to the same statement), the client except its
ReadyForQuery (a batch the session ended early with a Sync of its own), the
client with a copy for the query cache (recorded), or a query of the
proxy's own whose messages go to callbacks (captured).  It also keeps the
reply messages to drop because they answer a message the proxy added (a
statement prepared again before a batch).

The class holds no transport and sends nothing: the connection
(L{twisted_pgpool.backend.protocol.BackendProtocol}) tells it what was sent
and what came back, and reads from it where the next bytes go -- as
Twisted's C{_http2.py} drives h2's connection object.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Dict, Protocol, Union

import attr

#: A reply unit swallowed: the client sees none of it.
SWALLOW = 0
#: A reply unit forwarded to the client.
FORWARD = 1
#: A reply unit forwarded to the client except its ReadyForQuery.
FORWARD_BUT_READY = 2


class IReplyRecorder(Protocol):
    """
    What L{ReplyUnits.expect_recorded} needs of a recorder: a copy of
    every byte of one forwarded reply (the query cache keeps it).  A
    structural type: L{twisted_pgpool.cache.session.ReplyRecorder} has
    these members without naming this class.

    @ivar failed: set when the reply holds an ErrorResponse.
    """

    failed: bool

    def write(self, data: bytes) -> None:
        """
        Called with each piece of the reply as it is forwarded, its final
        ReadyForQuery included.
        """

    def finished(self, status: int) -> None:
        """
        Called with the ReadyForQuery's status once the whole reply has
        been written.
        """


@attr.s(auto_attribs=True, slots=True, eq=False)
class Capture:
    """
    A reply unit of the proxy's own whose messages are handed to callbacks
    instead of the client (a WAL position asked for after a commit, or of
    a standby before a read).

    @ivar on_message: called with each message's type and payload.
    @ivar on_ready: called with the transaction status of the unit's
        ReadyForQuery.
    @ivar holds_client: whether the client waits for this unit: while it is
        outstanding the connection keeps the session's reply order (it
        counts as a forwarding unit), as when it completes a reply whose
        ReadyForQuery was kept back.
    """

    on_message: Callable[[int, bytes], None]
    on_ready: Callable[[int], None]
    holds_client: bool


@attr.s(auto_attribs=True, slots=True, eq=False)
class Recorded:
    """
    A forwarded reply unit whose bytes are also handed to a recorder.
    """

    recorder: IReplyRecorder


#: What a unit is: L{SWALLOW}, L{FORWARD}, L{FORWARD_BUT_READY}, or one of
#: the two objects.  A L{Recorded} unit is true (forwarded), a L{SWALLOW}
#: false; a L{Capture} is true too, so whether it holds the client is its
#: own attribute.
Unit = Union[int, Capture, Recorded]


class ReplyUnits:
    """
    The reply units one backend connection owes, oldest first.

    The connection reads C{units}, C{forwarding} and C{hidden} directly
    where it decides, per message, where bytes go; only these methods
    change them.

    @ivar units: the units still owed, oldest first: the head is the one
        the server is answering now.
    @ivar forwarding: how many of them go to the client (forwarded, kept
        back but for the ReadyForQuery, recorded, or captured while
        holding the client): the connection keeps the session's reply
        order until none is left.
    @ivar hidden: message type -> how many of the next reply messages of
        that type to drop.
    """

    __slots__ = ("units", "forwarding", "hidden")

    def __init__(self) -> None:
        self.units: Deque[Unit] = deque()
        self.forwarding = 0
        self.hidden: Dict[int, int] = {}

    def expect(self, forward: bool) -> bool:
        """
        One more unit, forwarded to the client or swallowed.

        @return: whether it is the only one (the connection was idle: where
            the next bytes go changes).
        """
        units = self.units
        units.append(FORWARD if forward else SWALLOW)
        if forward:
            self.forwarding += 1
        return len(units) == 1

    def expect_capture(
        self,
        on_message: Callable[[int, bytes], None],
        on_ready: Callable[[int], None],
        holds_client: bool,
    ) -> bool:
        """
        One more unit, a query of the proxy's own sent in line with the
        session's: its messages go to C{on_message}, its ReadyForQuery's
        status to C{on_ready}, none to the client.

        @param holds_client: the client waits for this unit (L{Capture}).
        @return: whether it is the only one.
        """
        self.units.append(Capture(on_message, on_ready, holds_client))
        if holds_client:
            self.forwarding += 1
        return len(self.units) == 1

    def expect_recorded(self, recorder: IReplyRecorder) -> bool:
        """
        One more unit for the client, of which C{recorder} gets a copy.

        @return: whether it is the only one.
        """
        self.units.append(Recorded(recorder))
        self.forwarding += 1
        return len(self.units) == 1

    def keep_last_ready_for_query(self) -> None:
        """
        The last unit's ReadyForQuery is not the client's: the session
        ended a batch early (with a Sync of its own) and moved the rest of
        it elsewhere.  Its other replies still go to the client, and it
        still counts as forwarding until it is answered.
        """
        if self.units and self.units[-1] == FORWARD:
            self.units[-1] = FORWARD_BUT_READY

    def hide(self, message_type: int) -> None:
        """
        Drop the next reply message of this type: the answer to a message
        the proxy added on its own (a re-sent Parse, say).
        """
        self.hidden[message_type] = self.hidden.get(message_type, 0) + 1

    def take_hidden(self, message_type: int) -> bool:
        """
        A reply message of this type came: whether it is one to drop
        (counted as dropped).
        """
        count = self.hidden.get(message_type)
        if not count:
            return False
        if count == 1:
            del self.hidden[message_type]
        else:
            self.hidden[message_type] = count - 1
        return True

    def ready(self) -> Unit:
        """
        A ReadyForQuery came: the head unit is answered.

        @return: that unit, for the connection to do with its
            ReadyForQuery what the unit says.
        @raise IndexError: no unit was owed.
        """
        unit = self.units.popleft()
        if unit.__class__ is Capture:
            if unit.holds_client:
                self.forwarding -= 1
        elif unit:
            self.forwarding -= 1
        return unit

    def forwarding_now(self) -> bool:
        """
        Whether the reply the server is sending now goes to the client.
        """
        if not self.units:
            return False
        head = self.units[0]
        if head.__class__ is Capture:
            return head.holds_client
        return bool(head)

    def clear(self) -> None:
        """
        Forget every unit and hidden message: the connection starts (or
        stops) serving a session.
        """
        self.units.clear()
        self.forwarding = 0
        self.hidden.clear()
