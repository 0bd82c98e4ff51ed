"""
Test doubles shared by the unit tests: stand-ins for the proxy's parts
that record what the code under test asks of them and answer at once, or
when the test says so.  No sockets, no reactor: a test drives them with
plain calls and a L{twisted.internet.task.Clock}.

One double per part, each covering every test that needs that part; a test
chooses the behaviour it needs with the constructor's arguments or by
setting attributes, rather than by keeping a copy of its own (copies drift
apart, and a fix reaches one of them only):

  - L{FakeBackend}: a server connection (L{BackendProtocol}) as the
    session, the pool and native replication mode use it;
  - L{FakeCore}: the proxy's core (L{ProxyCore}), with only what the code
    under test reads;
  - L{FakeFrontend}: a client connection (L{FrontendProtocol}) as the
    session, the shutdown, online recovery and the reports see it, with
    its L{FakeSession};
  - L{FakeFailover}: the failover manager, recording each request;
  - L{FakeCheckQuery}: L{run_check_query}, the short query the health
    check, the replication check and the primary search send to a node.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import attr
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from twisted_pgpool.backend.protocol import BackendCredentials, InternalResult
from twisted_pgpool.cluster.model import Cluster
from twisted_pgpool.cluster.nodecheck import CheckFailed
from twisted_pgpool.cluster.replication import SQL_REPLICATION_STATUS
from twisted_pgpool.sql.classifier import ClassifierConfig, classify
from twisted_pgpool.wire import messages

__all__ = [
    "Capture",
    "FakeBackend",
    "FakeCheckQuery",
    "FakeCore",
    "FakeFailover",
    "FakeFramer",
    "FakeFrontend",
    "FakeInspector",
    "FakeLimiter",
    "FakePool",
    "FakeSession",
    "FakeTransport",
    "HANG",
    "describe",
]

IDLE = messages.TRANSACTION_IDLE
IN_TRANSACTION = messages.TRANSACTION_IN_BLOCK


def _frames(data: bytes) -> List[Tuple[str, bytes]]:
    """
    The whole frontend messages in C{data}, as (type letter, payload).
    """
    out = []
    offset = 0
    while offset < len(data):
        kind, length = struct.unpack_from("!BI", data, offset)
        out.append((chr(kind), data[offset + 5 : offset + 1 + length]))
        offset += 1 + length
    return out


def describe(kind: str, payload: bytes) -> str:
    """
    A readable form of one frontend message: C{Q:sql}, C{P:sql},
    C{F:function oid}, or the type letter alone.
    """
    if kind == "Q":
        return "Q:" + messages.decode_query(payload).sql
    if kind == "P":
        return "P:" + messages.decode_parse(payload).sql
    if kind == "F":
        return "F:" + str(messages.decode_function_call(payload).function_oid)
    return kind


# -- a server connection ------------------------------------------------------


@attr.s(auto_attribs=True)
class Capture:
    """
    A reply unit of the proxy's own (L{BackendProtocol.expect_capture}):
    its messages go to C{on_message}, its ReadyForQuery to C{on_ready}.
    """

    on_message: Callable[[int, bytes], Any]
    on_ready: Callable[[int], Any]
    holds_client: bool


#: What L{FakeBackend.run_internal} may be told to answer for a statement.
Reply = Union[InternalResult, Exception, "defer.Deferred[Any]"]


class FakeBackend:
    """
    Stands in for L{twisted_pgpool.backend.protocol.BackendProtocol}.

    It records what it is sent and told, and answers only when the test
    says so: L{ready} answers the oldest reply unit it owes to its session,
    L{answer} a unit of the proxy's own with the given messages.

    @ivar units: the reply units it owes, oldest first: C{True} (the
        client's), C{False} (swallowed) or a L{Capture}.
    @ivar received: the whole messages written to it, as L{describe} shows
        them (C{"Q:SELECT 1"}, C{"B"}, ...); C{written} and C{raw} hold the
        bytes.
    @ivar internal: the statements of the proxy's own (C{run_internal}),
        in order; C{internal_bytes}, each as it would be sent.
    @ivar replies: what C{run_internal} answers for a statement (by its
        text, else by the first key it starts with): an L{InternalResult},
        an exception to fail with, or a Deferred to return as it is.
        Anything else succeeds with an empty result.
    @ivar status_after_internal: the transaction status the server reports
        after each internal statement other than BEGIN (which always leaves
        a transaction open); L{None} leaves the status as it was.
    @ivar detach_forgets_work: the real C{detach()} clears its record of
        pending replies; a fake that does so checks the pool reads it
        before.
    @ivar terminated: how often C{terminate()} was called (C{aborted}:
        C{abort()}, C{detached}: C{detach()}).
    """

    def __init__(
        self,
        node_id: int = 0,
        process_id: Optional[int] = None,
        status_after_internal: Optional[int] = None,
    ) -> None:
        self.node_id = node_id
        self.process_id = 1000 + node_id if process_id is None else process_id
        self.secret_key = 7
        self.sink: Any = None
        self.transaction_status = IDLE
        self.status_after_internal = status_after_internal
        self.parameters: Dict[str, str] = {}
        self.units: List[Union[bool, Capture]] = []
        self.hidden: List[int] = []
        self.received: List[str] = []
        self.internal: List[str] = []
        self.internal_bytes: List[bytes] = []
        self.replies: Dict[str, Reply] = {}
        self.unsynced = False
        # Statements of the session the server answered since attach: 1
        # (the session used the connection) unless a test says 0.
        self.units_since_attach = 1
        self.unsynced_execute = False
        self.closed = False
        self.kept_ready = False
        self.copy_abandoned: Optional[str] = None
        self.sent_fatal = False
        self.fatal_message: Optional[bytes] = None
        self.fatal_relayed = False
        self.client_codec = messages.UTF8_CODEC
        self.written = b""
        # Every byte written, and the part of a message not complete yet
        # (a long message streamed through arrives in pieces).
        self.raw = bytearray()
        self._partial = bytearray()
        self.terminated = 0
        self.aborted = 0
        self.detached = 0
        self.on_lost: Optional[Callable[[Failure], Any]] = None
        self.detach_forgets_work = False

    # -- what the session and the pool call -----------------------------------

    def attach(self, sink: Any) -> None:
        self.sink = sink

    def detach(self, on_lost: Optional[Callable[[Failure], Any]] = None) -> None:
        self.detached += 1
        self.on_lost = on_lost
        if self.detach_forgets_work:
            self.units.clear()
            self.unsynced = self.unsynced_execute = False

    def expect(self, forward: bool) -> None:
        self.units.append(forward)

    def expect_capture(
        self,
        on_message: Callable[[int, bytes], Any],
        on_ready: Callable[[int], Any],
        holds_client: bool,
    ) -> None:
        self.units.append(Capture(on_message, on_ready, holds_client))

    def hide(self, message_type: int) -> None:
        self.hidden.append(message_type)

    def keep_last_ready_for_query(self) -> None:
        self.kept_ready = True

    def abandon_copy_in(self, reason: str) -> None:
        self.copy_abandoned = reason

    def write(self, data: bytes) -> None:
        self.written += data
        self.raw += data
        self._partial += data
        complete = 0
        while len(self._partial) - complete >= 5:
            (length,) = struct.unpack_from("!I", self._partial, complete + 1)
            if len(self._partial) - complete < 1 + length:
                break
            complete += 1 + length
        if complete:
            whole = bytes(self._partial[:complete])
            del self._partial[:complete]
            self.received.extend(describe(kind, payload) for kind, payload in _frames(whole))

    def run_internal(self, sql: str, client_text: bool = False) -> "defer.Deferred[Any]":
        self.internal.append(sql)
        self.internal_bytes.append(
            messages.query(sql, self.client_codec if client_text else messages.UTF8_CODEC)
        )
        reply = self.replies.get(sql)
        if reply is None:
            reply = next((r for start, r in self.replies.items() if sql.startswith(start)), None)
        if isinstance(reply, defer.Deferred):
            return reply
        if isinstance(reply, Exception):
            return defer.fail(reply)
        if sql.upper().startswith("BEGIN"):
            self.transaction_status = IN_TRANSACTION
        elif self.status_after_internal is not None:
            self.transaction_status = self.status_after_internal
        return defer.succeed(reply if reply is not None else InternalResult())

    def run_internal_pipeline(self, statements: Sequence[str]) -> "defer.Deferred[Any]":
        """
        The statements one after the other (the real one sends them at
        once; the order of the answers is the same).
        """

        async def one_by_one() -> List[InternalResult]:
            return [await self.run_internal(sql) for sql in statements]

        return defer.Deferred.fromCoroutine(one_by_one())

    def terminate(self) -> None:
        self.terminated += 1
        self.closed = True

    def abort(self) -> None:
        self.aborted += 1
        self.closed = True

    @property
    def pending_ready(self) -> int:
        return len(self.units)

    @property
    def forwarding_units(self) -> int:
        return sum(1 for u in self.units if (u.holds_client if isinstance(u, Capture) else u))

    @property
    def busy(self) -> bool:
        return bool(self.units) or self.unsynced

    # -- what the test calls ---------------------------------------------------

    def ready(self, status: int = IDLE, value: Optional[str] = None) -> None:
        """
        The server answered the oldest outstanding unit with
        ReadyForQuery(C{status}), and the session hears of it; a unit of
        the proxy's own gets one row holding C{value} first, when given.
        """
        unit = self.units.pop(0)
        self.transaction_status = status
        if isinstance(unit, Capture):
            if value is not None:
                # A FunctionCallResponse: int32 length, then the text.
                unit.on_message(ord("V"), struct.pack("!i", len(value)) + value.encode())
            unit.on_ready(status)
        self.sink.backend_ready(self)

    def answer(self, status: int, *replies: Tuple[int, bytes]) -> None:
        """
        The server answered the oldest outstanding unit, which must be one
        of the proxy's own (L{Capture}), with C{replies} (message type,
        payload) and ReadyForQuery(C{status}); no session hears of it.
        """
        unit = self.units.pop(0)
        assert isinstance(unit, Capture), f"the oldest unit is not a capture: {unit!r}"
        self.transaction_status = status
        for message_type, payload in replies:
            unit.on_message(message_type, payload)
        unit.on_ready(status)

    def sent_queries(self) -> List[str]:
        """
        The SQL of each simple Query written to it, in order.
        """
        return [text[2:] for text in self.received if text.startswith("Q:")]

    def lose(self) -> None:
        """
        The server closed the connection (while detached).
        """
        self.closed = True
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost(Failure(ConnectionDone()))


# -- a client connection ------------------------------------------------------


class FakeTransport:
    """
    A client's transport: what was written, and what would leave in each
    send (one entry per C{write} or C{writeSequence}).
    """

    def __init__(self) -> None:
        self.data: List[bytes] = []
        self.sends: List[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)
        self.sends.append(data)

    def writeSequence(self, data: Sequence[bytes]) -> None:  # noqa: N802 (Twisted's name)
        self.data.extend(data)
        self.sends.append(b"".join(data))


class FakeFramer:
    """
    The client's L{StreamFramer} as the session pauses and resumes it.
    """

    def __init__(self) -> None:
        self.paused = False

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def stop(self) -> None:
        self.paused = True


class FakeSession:
    """
    A client's session as the failover manager and online recovery ask
    about it: is it working on a statement (C{busy}), in which transaction
    status.  While busy, it cannot go on without any node (C{depends_on}).
    """

    def __init__(self, busy: bool = False, status: int = IDLE) -> None:
        self.busy = busy
        self.transaction_status = status

    def depends_on(self, node_id: int) -> bool:
        return self.busy


class FakeFrontend:
    """
    Stands in for L{twisted_pgpool.proxy.frontend.FrontendProtocol}: a
    client connection as its session, the reports (C{SHOW POOL_PROCESSES},
    the metrics), the shutdown and online recovery see it.

    @param sessions: the core's set of client connections: the fake joins
        it, as a connection does once it has a session.
    @param session: its session (what online recovery asks whether it is
        busy), if any.
    @param leaves_when_failed: C{fail} takes it out of C{sessions} (its
        connection closes), instead of leaving that to the test.
    @ivar failures: the errors it was failed with (C{fail},
        C{end_after_replies}, C{backend_lost}), in order;
        C{ended_after_replies}, those of C{end_after_replies} alone.
    """

    def __init__(
        self,
        sessions: Optional[Set[Any]] = None,
        session: Any = None,
        *,
        user: str = "app",
        database: str = "app",
        process_id: int = 0,
        leaves_when_failed: bool = False,
    ) -> None:
        self.sessions = sessions
        self.session = session
        self.user = user
        self.database = database
        self.process_id = process_id
        self.application_name = ""
        self.connected_at = 0.0
        # The pooled connection and the server connection it has taken:
        # none yet.
        self.connection: Any = None
        self.backend: Any = None
        self.leaves_when_failed = leaves_when_failed
        self.transport = FakeTransport()
        self.failures: List[Any] = []
        self.ended_after_replies: List[Any] = []
        if sessions is not None:
            sessions.add(self)

    def fail(self, error: Any) -> None:
        self.failures.append(error)
        if self.leaves_when_failed and self.sessions is not None:
            self.sessions.discard(self)

    def end_after_replies(self, error: Any) -> None:
        self.failures.append(error)
        self.ended_after_replies.append(error)

    def log_statement(self, *args: Any) -> None:
        pass

    def terminate_session(self) -> None:
        pass

    def backend_lost(self, backend: Any, reason: Any) -> None:
        self.failures.append(reason)


# -- the core ---------------------------------------------------------------------


class FakeInspector:
    """
    The C{SHOW POOL_*} matcher: records what it was asked, matches nothing.
    """

    def __init__(self) -> None:
        self.asked: List[bytes] = []

    def match(self, payload: bytes) -> Optional[str]:
        self.asked.append(payload)
        return None


class FakePool:
    """
    A connection pool that takes every connection back and does nothing.
    """

    async def release(self, connection: Any) -> None:
        pass


class FakeLimiter:
    """
    The session limiter's counters, set by the test.
    """

    def __init__(self) -> None:
        self.active = 0
        self.waiting = 0
        self.unauthenticated = 0


class FakeCore:
    """
    Stands in for L{twisted_pgpool.service.ProxyCore}: the configuration,
    the cluster model built from it, and small fakes for the rest.

    @param config: the configuration; the cluster is built from its
        backends unless C{cluster} is given.
    @param wall_clock: the cluster's clock (its nodes' status change
        times), when the cluster is built here.
    @ivar ended: (node id, error) of each C{end_sessions_using} call.
    """

    def __init__(
        self,
        config: Any = None,
        *,
        cluster: Optional[Cluster] = None,
        wall_clock: Optional[Callable[[], float]] = None,
        balancer: Any = None,
        reactor: Optional[Clock] = None,
    ) -> None:
        self.config = config
        if cluster is None and config is not None:
            if wall_clock is None:
                cluster = Cluster.from_config(config.backends)
            else:
                cluster = Cluster.from_config(config.backends, clock=wall_clock)
        self.cluster = cluster
        self.balancer = balancer
        self.reactor = reactor if reactor is not None else Clock()
        self.sessions: Set[Any] = set()
        self.sr_check_credentials = BackendCredentials("postgres")
        self.authenticator: Any = None
        self.inspector = FakeInspector()
        self.pool = FakePool()
        self.limiter = FakeLimiter()
        self.ended: List[Tuple[int, Any]] = []

    def classify(self, sql: str) -> Any:
        return classify(sql, ClassifierConfig())

    def end_sessions_using(self, node_id: int, error: Any) -> int:
        """
        Record the request; report one session ended.
        """
        self.ended.append((node_id, error))
        return 1


# -- the failover manager -------------------------------------------------------------


class FakeFailover:
    """
    Stands in for L{twisted_pgpool.cluster.failover.FailoverManager}:
    records each request in C{calls} and grants it at once.

    @ivar calls: C{("node_failed", node_id, reason)},
        C{("attach", node_id, reason)},
        C{("detach", node_id, reason, gracefully)},
        C{("promote", node_id, switchover)}, in order.
    @ivar busy: what the manager says while a failover runs.
    """

    def __init__(self) -> None:
        self.calls: List[Tuple[Any, ...]] = []
        self.busy = False

    def node_failed(self, node_id: int, reason: str) -> "defer.Deferred[bool]":
        self.calls.append(("node_failed", node_id, reason))
        return defer.succeed(True)

    def attach(self, node_id: int, reason: str) -> "defer.Deferred[bool]":
        self.calls.append(("attach", node_id, reason))
        return defer.succeed(True)

    def detach(self, node_id: int, reason: str, gracefully: bool = False) -> "defer.Deferred[bool]":
        self.calls.append(("detach", node_id, reason, gracefully))
        return defer.succeed(True)

    def promote(self, node_id: int, switchover: bool = False) -> "defer.Deferred[bool]":
        self.calls.append(("promote", node_id, switchover))
        return defer.succeed(True)

    def _requests(self, kind: str) -> List[Tuple[int, str]]:
        return [(call[1], call[2]) for call in self.calls if call[0] == kind]

    @property
    def failed(self) -> List[Tuple[int, str]]:
        """
        (node id, reason) of each C{node_failed}.
        """
        return self._requests("node_failed")

    @property
    def attached(self) -> List[Tuple[int, str]]:
        """
        (node id, reason) of each C{attach}.
        """
        return self._requests("attach")


# -- the check query --------------------------------------------------------------------


#: An answer of L{FakeCheckQuery.answers}: a Deferred that never fires by
#: itself (the query hangs; it is kept in C{pending}).
HANG = object()

#: Logins a server refuses, by L{FakeCheckQuery} behaviour: (SQLSTATE, message).
REFUSALS = {
    "full": ("53300", "sorry, too many clients already"),
    "starting": ("57P03", "the database system is starting up"),
}


def rows(*values: Tuple[Optional[bytes], ...]) -> InternalResult:
    """
    A query's result of these rows.
    """
    return InternalResult(rows=list(values), tags=["SELECT"])


class FakeCheckQuery:
    """
    Stands in for L{twisted_pgpool.cluster.nodecheck.run_check_query}
    (called as C{query(reactor, node, credentials, database, sql,
    timeout)}).

    What a call gets, first that applies:

      1. C{answers[(node id, sql)]}: an L{InternalResult}, an exception to
         fail with, or L{HANG};
      2. for L{SQL_REPLICATION_STATUS}, C{replication_rows} (unless
         L{None});
      3. a L{CheckFailed} with SQLSTATE 3D000 for a database in
         C{refused_databases[node id]};
      4. the node's behaviour: C{behaviour[node id]}, else C{"up"} for a
         node in C{in_recovery}, else C{default}:
           - C{"up"}: answers at once, one row: whether the node is in
             recovery (C{in_recovery[node id]}, by default every node but
             0), whatever the SQL;
           - C{"down"}: connection refused at once;
           - C{"full"}, C{"starting"}: the server refuses the login
             (53300: no free slot; 57P03: starting up);
           - C{"raise"}: a bug (RuntimeError);
           - C{"hang"} (or anything else): a Deferred the test may fire,
             kept in C{pending}.

    @ivar calls: (node id, database, sql) of each call, in order.
    """

    def __init__(
        self,
        default: str = "up",
        replication_rows: Optional[List[Tuple[Optional[bytes], ...]]] = None,
    ) -> None:
        self.default = default
        self.behaviour: Dict[int, str] = {}
        self.in_recovery: Dict[int, bool] = {}
        self.answers: Dict[Tuple[int, str], Any] = {}
        self.refused_databases: Dict[int, Set[str]] = {}
        self.replication_rows = replication_rows
        self.calls: List[Tuple[int, str, str]] = []
        self.pending: List[defer.Deferred[Any]] = []

    def set(self, node_id: int, sql: str, answer: Any) -> None:
        """
        Answer C{sql} on node C{node_id} with C{answer} from now on.
        """
        self.answers[(node_id, sql)] = answer

    def __call__(
        self, reactor: Any, node: Any, credentials: Any, database: str, sql: str, timeout: float
    ) -> "defer.Deferred[Any]":
        node_id = node.node_id
        self.calls.append((node_id, database, sql))
        if (node_id, sql) in self.answers:
            return self._hand(self.answers[(node_id, sql)])
        if sql == SQL_REPLICATION_STATUS and self.replication_rows is not None:
            return defer.succeed(rows(*self.replication_rows))
        if database in self.refused_databases.get(node_id, set()):
            return defer.fail(
                CheckFailed(node_id, f'database "{database}" does not exist', "3D000")
            )
        behaviour = self.behaviour.get(
            node_id, "up" if node_id in self.in_recovery else self.default
        )
        if behaviour == "up":
            value = b"t" if self.in_recovery.get(node_id, node_id != 0) else b"f"
            return defer.succeed(rows((value,)))
        if behaviour == "down":
            return defer.fail(
                CheckFailed(node_id, f"could not connect to node {node_id}: Connection refused")
            )
        if behaviour in REFUSALS:
            code, message = REFUSALS[behaviour]
            return defer.fail(
                CheckFailed(
                    node_id, f"node {node_id} refused the login: {message} (SQLSTATE {code})", code
                )
            )
        if behaviour == "raise":
            raise RuntimeError("a bug in the check")
        return self._hand(HANG)

    def _hand(self, answer: Any) -> "defer.Deferred[Any]":
        if answer is HANG:
            d: defer.Deferred[Any] = defer.Deferred()
            self.pending.append(d)
            return d
        if isinstance(answer, BaseException):
            return defer.fail(answer)
        return defer.succeed(answer)

    @property
    def nodes(self) -> List[int]:
        """
        The node id of each call, in order.
        """
        return [node_id for node_id, _, _ in self.calls]

    @property
    def databases(self) -> List[str]:
        """
        The database of each call, in order.
        """
        return [database for _, database, _ in self.calls]

    def count(self, node_id: int, sql: Optional[str] = None) -> int:
        """
        How many calls went to C{node_id} (with C{sql}, when given).
        """
        return sum(1 for n, _, s in self.calls if n == node_id and (sql is None or s == sql))

    def checks_of(self, node_id: int) -> int:
        """
        How many calls went to C{node_id}, the replication check's
        L{SQL_REPLICATION_STATUS} aside.
        """
        return sum(1 for n, _, sql in self.calls if n == node_id and sql != SQL_REPLICATION_STATUS)
