"""
Read-your-writes under load balancing (C{read_your_writes: session}).

A standby replays the primary's WAL a little later than the primary
commits, so a read balanced to it right after a write may miss that write.
Here a session remembers the WAL position of its last committed write (and
any floor the client set with C{SET pgpool.min_lsn}), and a read goes to a
standby only once the standby has replayed at least that far; otherwise it
goes to the primary, or waits up to C{causal_wait_timeout} for the standby.
Reads never fail because of this: they only move.

This module holds the per-session decision (L{CausalState}) and the
statements the proxy answers itself (C{SET/RESET/SHOW pgpool.min_lsn});
the session (L{twisted_pgpool.proxy.session}) sends the position queries.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional, Set, Tuple

import attr
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from twisted_pgpool.backend.pool import parse_options
from twisted_pgpool.cluster.model import Node
from twisted_pgpool.cluster.replication import format_lsn, parse_lsn
from twisted_pgpool.wire import errors, messages

#: The ParameterStatus the proxy sends after each committed write: the
#: causal token a client may pass on to another session or service.
COMMIT_LSN_PARAMETER = "pgpool.commit_lsn"
#: The setting (startup parameter, C{-c} option or SET) that gives a
#: session's reads a floor.
MIN_LSN_PARAMETER = "pgpool.min_lsn"

#: The two position questions go as the protocol's function-call message
#: (FunctionCall, by the built-in functions' OIDs, which are fixed in
#: PostgreSQL's catalog: 9.6 had the same OIDs under the xlog names), not as
#: SQL: no parse and no plan on the server, and two reply messages
#: (FunctionCallResponse, ReadyForQuery) instead of four for the proxy to
#: frame.  They are asked once per committing write, so this is
#: measurable.
PG_CURRENT_WAL_INSERT_LSN_OID = 2852
PG_LAST_WAL_REPLAY_LSN_OID = 3821

#: What the proxy asks the primary right after a committing write:
#: pg_current_wal_insert_lsn().  The insert position, not
#: pg_current_wal_lsn(): with C{synchronous_commit = off} the write position
#: can lag behind a commit that has already happened, while the insert
#: position is past it.
COMMIT_POSITION_QUERY = messages.function_call(PG_CURRENT_WAL_INSERT_LSN_OID, [])
#: What it asks a standby whose last known position is too old:
#: pg_last_wal_replay_lsn().
REPLAY_POSITION_QUERY = messages.function_call(PG_LAST_WAL_REPLAY_LSN_OID, [])

#: A standby whose position some session wants is asked again, with the
#: question riding along in the same send as another session's read there,
#: at most this often: the reads of a busy standby keep its known position
#: fresh at the cost of one small query per interval, where a question of
#: its own per committing session would wake a sleeping server process.
#: Measured with 16 and 64 clients (benchmarks/read_your_writes_bench.py):
#: 0.25 ms cost more in questions than it saved, 3 ms did best; a session's
#: first read after its write mostly comes sooner than any interval, and
#: asks on its own.
RIDE_ALONG_INTERVAL = 0.003

#: After a probe found a standby behind, reads go to the primary without
#: asking again for this long (when they may not wait), so a lagging
#: standby costs one probe per interval, not one per read.
PROBE_INTERVAL = 0.005
#: First pause between probes while a read waits; doubled each time.
FIRST_RETRY_DELAY = 0.0005

_NULL_LENGTH = b"\xff\xff\xff\xff"

_STATEMENT = re.compile(
    r"\s*(?:(set)\s+(?:session\s+|local\s+)?pgpool\.min_lsn\s*(?:=|\s+to\s+)\s*"
    r"(?:'((?:[^']|'')*)'|([0-9A-Fa-f]+/[0-9A-Fa-f]+)|(default))"
    r"|(reset)\s+pgpool\.min_lsn|(show)\s+pgpool\.min_lsn)\s*;?\s*\Z",
    re.IGNORECASE,
)


@attr.s(auto_attribs=True, frozen=True)
class MinLsnStatement:
    """
    A statement about C{pgpool.min_lsn} that the proxy answers itself.

    @ivar action: C{set}, C{reset} or C{show}.
    @ivar value: the text after C{SET ... =}; None for C{DEFAULT}.
    """

    action: str
    value: Optional[str] = None


def match_statement(payload: bytes) -> Optional[MinLsnStatement]:
    """
    If a Query payload is C{SET}, C{RESET} or C{SHOW pgpool.min_lsn},
    what it asks.  Cheap when it is not: one substring search.
    """
    if b"min_lsn" not in payload:
        return None
    text = payload.rstrip(b"\x00").decode("utf-8", "replace")
    found = _STATEMENT.match(text)
    if found is None:
        return None
    if found.group(1):
        if found.group(4):
            return MinLsnStatement("set", None)
        quoted = found.group(2)
        value = quoted.replace("''", "'") if quoted is not None else found.group(3)
        return MinLsnStatement("set", value)
    if found.group(5):
        return MinLsnStatement("reset")
    return MinLsnStatement("show")


def parse_floor(value: Optional[str]) -> int:
    """
    A C{pgpool.min_lsn} value as a WAL position (empty or None: no floor).

    @raise errors.PgError: the value is not a C{pg_lsn}.
    """
    if value is None or not value.strip():
        return 0
    try:
        return parse_lsn(value.strip())
    except ValueError:
        raise errors.error(
            errors.INVALID_TEXT_REPRESENTATION,
            f'invalid input syntax for type pg_lsn: "{value}"',
            hint="use a position as pgpool.commit_lsn reports it, such as 0/3000060",
        )


def take_startup_floor(parameters: Dict[str, str]) -> Optional[str]:
    """
    Remove C{pgpool.min_lsn} from a client's startup parameters (given
    directly or as C{-c pgpool.min_lsn=...} in C{options}) so that it never
    reaches PostgreSQL, and return its value.
    """
    value = parameters.pop(MIN_LSN_PARAMETER, None)
    options = parameters.get("options")
    if options and MIN_LSN_PARAMETER in options:
        settings = parse_options(options)
        if settings is not None and MIN_LSN_PARAMETER in settings:
            found = settings.pop(MIN_LSN_PARAMETER)
            if value is None:
                value = found
            rest = " ".join(f"-c {name}={_escape_option(v)}" for name, v in settings.items())
            if rest:
                parameters["options"] = rest
            else:
                del parameters["options"]
    return value


def _escape_option(value: str) -> str:
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


def answer_statement(statement: MinLsnStatement, state: "CausalState") -> List[bytes]:
    """
    Carry out a C{pgpool.min_lsn} statement; the reply without its
    ReadyForQuery.
    """
    if statement.action == "show":
        shown = format_lsn(state.min_lsn) if state.min_lsn else ""
        return [
            messages.row_description([MIN_LSN_PARAMETER]),
            messages.data_row([shown]),
            messages.command_complete("SHOW"),
        ]
    try:
        state.min_lsn = parse_floor(statement.value) if statement.action == "set" else 0
    except errors.PgError as e:
        return [e.to_bytes()]
    return [messages.command_complete("SET" if statement.action == "set" else "RESET")]


class PositionReply:
    """
    The answer to one of the position queries above (a FunctionCallResponse
    holding a C{pg_lsn} as text), collected from a capture unit's messages.
    """

    def __init__(self) -> None:
        self._value: Optional[bytes] = None

    def message(self, message_type: int, payload: bytes) -> None:
        if message_type == messages.FUNCTION_CALL_RESPONSE:
            # An int32 length (-1: NULL, as on a primary) and the text.
            self._value = payload[4:] if payload[:4] != _NULL_LENGTH else None

    @property
    def position(self) -> Optional[int]:
        """
        The position, or None (NULL, an error, or no row at all).
        """
        if not self._value:
            return None
        try:
            return parse_lsn(self._value)
        except ValueError:
            return None


def node_is_fresh(node: Node, required: int) -> bool:
    """
    Whether C{node} is known to have replayed C{required}.
    """
    known = node.replay_lsn
    return known is not None and known >= required


def ride_along(node: Node, now: float) -> bool:
    """
    Whether a read about to go to standby C{node} should carry a question
    about its replayed position (L{REPLAY_POSITION_QUERY}, answered to
    L{replayed}): some session wants a position the standby is not known
    to have replayed, and no question went there in the last
    L{RIDE_ALONG_INTERVAL}.
    """
    wanted = node.replay_wanted
    if not wanted:
        return False
    known = node.replay_lsn
    if known is not None and known >= wanted:
        node.replay_wanted = 0
        return False
    if now - node.replay_asked_at < RIDE_ALONG_INTERVAL:
        return False
    node.replay_asked_at = now
    node.freshness_probes += 1
    return True


def replayed(node: Node, position: Optional[int]) -> None:
    """
    A standby answered a question about its replayed position (None: no
    usable answer).
    """
    if position is not None and (node.replay_lsn is None or position > node.replay_lsn):
        node.replay_lsn = position


@attr.s(auto_attribs=True)
class CausalState:
    """
    One session's read-your-writes bookkeeping and decisions.

    @ivar reactor: for the time and the retry timer.
    @ivar wait_timeout: C{causal_wait_timeout} in seconds.
    @ivar commit_lsn: the primary's position after the session's last
        committed write (0: none yet).
    @ivar min_lsn: the floor the client set (0: none).
    @ivar commit_pending: the commit position has been asked for and not
        yet answered; reads wait for it (it arrives right behind the
        commit's own reply).
    @ivar position_unknown: a write committed whose position was not asked
        for yet (a COPY FROM); the next balanced read asks first.
    """

    reactor: IReactorTime
    wait_timeout: float = 0.0
    commit_lsn: int = 0
    min_lsn: int = 0
    commit_pending: bool = False
    position_unknown: bool = False
    _probing: Set[int] = attr.ib(factory=set)
    _behind_at: Dict[int, Tuple[int, float]] = attr.ib(factory=dict)
    _wait_started: Optional[float] = None
    _retry_delay: float = FIRST_RETRY_DELAY
    _retry: Optional[IDelayedCall] = None
    _deadline: Optional[IDelayedCall] = None
    _expired: bool = False

    @property
    def required(self) -> int:
        """
        The position a standby must have replayed to serve this session.
        """
        return self.commit_lsn if self.commit_lsn > self.min_lsn else self.min_lsn

    def verdict(
        self, node: Node, probe: Callable[[Node], bool], wake: Callable[[], None]
    ) -> Optional[bool]:
        """
        May a read go to standby C{node} now?

        @param probe: ask a standby its replayed position now (the answer
            goes to L{probed}); returns False when it cannot be asked.
        @param wake: called when a wait timer fires, to decide again.
        @return: True: read there; False: read from the primary instead;
            None: not yet decided (a position query is on its way, or the
            read waits for the standby).
        """
        if self.commit_pending:
            return None
        # Called for every balanced read of a session that wrote: the
        # common answer (the standby is known to be far enough) comes first.
        required = self.commit_lsn if self.commit_lsn > self.min_lsn else self.min_lsn
        known = node.replay_lsn
        if not required or (known is not None and known >= required):
            if self._wait_started is not None:
                self._decided(node, moved=False)
            return True
        if self._expired:
            self._decided(node, moved=True)
            return False
        node_id = node.node_id
        if node_id in self._probing or self._retry is not None:
            return None
        now = self.reactor.seconds()
        behind = self._behind_at.get(node_id)
        if behind is not None and behind[0] >= required and now - behind[1] < PROBE_INTERVAL:
            # Known to be behind, just now.
            if self.wait_timeout <= 0:
                self._decided(node, moved=True)
                return False
            if self._wait_started is None:
                # The wait starts when the standby is found behind; the
                # deadline holds even while a position query is out.
                self._wait_started = behind[1]
                self._retry_delay = FIRST_RETRY_DELAY
                remaining = behind[1] + self.wait_timeout - now
                if remaining <= 0:
                    self._decided(node, moved=True)
                    return False
                self._deadline = self.reactor.callLater(remaining, self._expire, wake)
            self._retry = self.reactor.callLater(self._retry_delay, self._retry_now, wake)
            self._retry_delay *= 2
            return None
        if probe(node):
            node.freshness_probes += 1
            self._probing.add(node_id)
            return None
        self._decided(node, moved=True)
        return False

    def ask_ahead(self, node: Node) -> None:
        """
        The session just learnt its commit position: have its standby asked
        by the next reads that go there (L{ride_along}), so that its known
        position is (nearly) fresh enough when this session's next read
        comes.  A question of the session's own waits for that read, and is
        only sent if the standby is still not known to be far enough.
        """
        required = self.required
        if required > node.replay_wanted and not node_is_fresh(node, required):
            node.replay_wanted = required

    def _retry_now(self, wake: Callable[[], None]) -> None:
        self._retry = None
        # Forget the "found behind" note so that the next look asks again.
        self._behind_at.clear()
        wake()

    def _expire(self, wake: Callable[[], None]) -> None:
        self._deadline = None
        self._expired = True
        self._cancel(self._retry)
        self._retry = None
        wake()

    def probed(self, node: Node, position: Optional[int]) -> None:
        """
        A standby answered with its replayed position (None: no answer).
        """
        self._probing.discard(node.node_id)
        replayed(node, position)
        if position is None or position < self.required:
            self._behind_at[node.node_id] = (self.required, self.reactor.seconds())

    def committed(self, position: Optional[int]) -> Optional[int]:
        """
        The commit position arrived (None: it could not be read).

        @return: the new token to report, if it moved forward.
        """
        self.commit_pending = False
        self.position_unknown = False
        if position is not None and position > self.commit_lsn:
            self.commit_lsn = position
            return position
        return None

    def _decided(self, node: Node, moved: bool) -> None:
        if self._wait_started is not None:
            node.reads_waited += 1
            node.read_wait_seconds += self.reactor.seconds() - self._wait_started
            self._wait_started = None
            self._expired = False
            self._cancel(self._deadline)
            self._deadline = None
            self._cancel(self._retry)
            self._retry = None
        if moved:
            node.reads_moved_to_primary += 1

    @staticmethod
    def _cancel(call: Optional[IDelayedCall]) -> None:
        if call is not None and call.active():
            call.cancel()

    def close(self) -> None:
        """
        The session ended: stop any wait timer.
        """
        self._cancel(self._retry)
        self._cancel(self._deadline)
        self._retry = self._deadline = None
