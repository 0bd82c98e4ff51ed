"""
The relay phase of a client session: each client message goes to the
primary, to the session's load-balance node, or to every node the session
uses, and the replies reach the client in the order it asked for them.

The client sees one server.  Behind it a session holds at most one
connection per node: the primary's from the start, others opened when a
read first needs them.  Ordering is kept with one rule: only one node at a
time ("the owner") may send reply bytes to the client; a statement for
another node waits (the client's stream is paused) until the owner has
finished.  Statements that must reach several nodes (BEGIN, COMMIT, SET...)
are sent to all of them, and only the primary's reply is passed on.

Extended-protocol messages are held until the client's Sync (or Flush) so
that a whole batch is routed at once, and a prepared statement used on a
node that has not seen it is prepared there first, transparently.

A long message is not held when the session needs only its start: the
framer hands over its first 64 KiB (L{_direct_head}, L{_routed_head}) and
the rest is passed on as it arrives (L{_Stream}), so a 1 GB Bind value
crosses the proxy without being buffered.

The query cache's part in each statement (answering it, catalog lookups,
recording a miss, invalidations) is L{twisted_pgpool.cache.steps}, which
uses only the operations L{twisted_pgpool.interfaces.ICachingSession}
names; the hit of a statement seen before stays in L{Session.query}, where
it costs no call into that module.
"""

from __future__ import annotations

import re
import struct
from collections import deque
from typing import TYPE_CHECKING, Callable, Deque, Dict, List, Optional, Set, Tuple

import attr
from twisted.internet import defer
from twisted.internet.error import ConnectError
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_pgpool import logs
from twisted_pgpool.routing import causal, replication_mode
from twisted_pgpool.wire import errors, messages
from twisted_pgpool.backend.protocol import BackendProtocol
from twisted_pgpool.backend.stats import DDL, counter_of_kind, counter_of_text
from twisted_pgpool.cache.policy import InvalidationPlan
from twisted_pgpool.cache.session import ReplyRecorder, SessionCache, match_cache_delete
from twisted_pgpool.cache.steps import HANDLED, CachedQueries, answer_cache_delete
from twisted_pgpool.cache.store import FetchResult
from twisted_pgpool.proxy.cancel import CancelTarget
from twisted_pgpool.sql.classifier import databases_to_free
from twisted_pgpool.cluster.model import STATUS_UP, STATUS_WAITING, Node
from twisted_pgpool.wire.framing import FORWARD, WHOLE, StreamFramer
from twisted_pgpool.proxy.inspection import LOCAL_FIRST_BYTES
from twisted_pgpool.interfaces import ICachingSession, IReplySink
from twisted_pgpool.backend.pool import PooledConnection
from twisted_pgpool.cluster.replication import format_lsn
from twisted_pgpool.routing.router import ALL, BALANCE, PRIMARY, Route, SessionRouter

if TYPE_CHECKING:  # pragma: no cover
    from twisted_pgpool.proxy.frontend import FrontendProtocol
    from twisted_pgpool.service import ProxyCore

log = Logger(observer=logs.observer)

#: Client message types the session handles one by one.  Only COPY data
#: (CopyData, CopyDone, CopyFail) is passed straight to the primary.
CLIENT_WATCHED = frozenset(
    [messages.QUERY, messages.PARSE, messages.BIND, messages.DESCRIBE,
     messages.EXECUTE, messages.CLOSE, messages.SYNC, messages.FLUSH,
     messages.FUNCTION_CALL, messages.TERMINATE, messages.PASSWORD_MESSAGE])

#: What a session that routes nothing (L{Session._direct_head}) lets pass
#: by its head when long: it needs only names and the first words of a
#: statement, so even a 1 GB Query or Bind streams through.
_DIRECT_HEADS = frozenset([messages.QUERY, messages.PARSE, messages.BIND,
                           messages.FUNCTION_CALL])
#: What a routing session (L{Session._routed_head}) streams when long: a
#: Bind's values and a function call's arguments are only passed on; a
#: Query or Parse must be read whole (classified, kept to prepare again).
_ROUTED_HEADS = frozenset([messages.BIND, messages.FUNCTION_CALL])

_USABLE = (STATUS_UP, STATUS_WAITING)

_BATCHED = frozenset([messages.PARSE, messages.BIND, messages.DESCRIBE,
                      messages.EXECUTE, messages.CLOSE])
#: What a session that routes nothing decodes names from, so that each
#: Execute counts in its statement's counter (SHOW POOL_BACKEND_STATS).
_NAMES_COUNTED = frozenset([messages.PARSE, messages.BIND, messages.CLOSE])

#: Reading from a client stops while this many of its messages await a
#: reply from one server (each Query, Sync or FunctionCall is one), and
#: goes on once fewer than L{BACKLOG_RESUME} do.  This bounds the work done
#: for one connection in one reactor turn: a client that writes 100,000
#: Syncs at once is handled a few dozen at a time, interleaved with
#: everyone else's turns, instead of holding the reactor for a second
#: (measured: other clients' select 1 p99 from 1.58 s to under 25 ms).
MAX_UNANSWERED = 64
BACKLOG_RESUME = 16

#: An extended-protocol batch is held until Sync or Flush, or until it
#: grows this large; then it is routed with what is known so far.
MAX_BATCH_BYTES = 1 << 20

#: Statement kinds that may be DROP/ALTER/CREATE DATABASE.
_DATABASE_DDL = frozenset(["drop", "alter", "create"])

_SET_LOCAL = re.compile(r"\s*set\s+local\b", re.IGNORECASE)

#: Where a cacheable statement the cache could not answer goes: only the
#: primary's result may be stored (a lagging standby's could be old).
_CACHE_MISS = Route(PRIMARY, "query cache miss")
#: Where a batch ending with a Bind too long to hold goes when it could be
#: balanced: its node is chosen before the rest of the batch is known, and
#: a write later in the same batch would have to move the batch (and the
#: portal just bound) to the primary.
_STREAMED_BIND = Route(PRIMARY, "batch with a Bind streamed through")
_HEADER = struct.Struct("!BI")
#: The most of a committing write's reply kept back to leave with its
#: position token in one send (client_write).
_COMMIT_REPLY_KEPT = 16384
_READY_IDLE = messages.ready_for_query(messages.TRANSACTION_IDLE)


def dml_relationships(entries) -> Dict[str, Set[str]]:
    """
    C{dml_adaptive_object_relationship_list} as written table -> the
    objects whose reads must follow it to the primary.
    """
    result: Dict[str, Set[str]] = {}
    for entry in entries:
        left, _, right = entry.partition(":")
        if right:
            result.setdefault(left.strip().lower(), set()).add(right.strip().lower())
    return result


@attr.s(auto_attribs=True)
class _Statement:
    """
    A prepared statement as the client defined it: its Parse payload (to
    prepare it on another node), its classification and its text.
    """

    parse_payload: bytes
    classification: object
    sql: str = ""


@implementer(IReplySink, ICachingSession)
class Session:
    """
    One authenticated client session in the relay phase.

    @ivar links: the session's backend connections by node id.
    @ivar router: the session's routing state.
    @ivar lb_node: the node chosen for this session's reads.
    @ivar owner: the backend whose reply is being passed to the client.
    """

    def __init__(self, frontend: "FrontendProtocol", core: "ProxyCore",
                 primary: PooledConnection, framer: StreamFramer,
                 open_connection: Optional[Callable[[Node], defer.Deferred]]) -> None:
        self.frontend = frontend
        self.core = core
        self.framer = framer
        self.primary_id = primary.key.node_id
        self.links: Dict[int, PooledConnection] = {self.primary_id: primary}
        self._open_connection = open_connection
        self._connecting: Dict[int, defer.Deferred] = {}
        self._unusable: Set[int] = set()
        config = core.config
        # Native replication mode: writes go to every node (see _replicate).
        self._native = native = replication_mode.is_native(config)
        self._refusing_batch = False
        self.router = SessionRouter(
            load_balance=config.load_balance_mode
            and config.backend_clustering_mode in ("streaming_replication",
                                                   "native_replication")
            and open_connection is not None,
            disable_load_balance_on_write=config.disable_load_balance_on_write,
            dml_relationships=dml_relationships(
                config.dml_adaptive_object_relationship_list),
            native=native, replicate_select=native and config.replicate_select)
        self.statement_level = config.statement_level_load_balance
        self._log_statements = config.log_statement or config.log_per_node_statement
        self._track_idle = config.client_idle_limit > 0
        usable = sum(1 for n in core.cluster.nodes if n.is_usable)
        self.direct = (not self.router.load_balance and not native) or usable <= 1
        self.lb_node: Optional[Node] = None
        if not self.direct:
            self.lb_node = core.balancer.choose(
                frontend.user or "", frontend.database or "",
                frontend.application_name)
        self._primary_backend = primary.backend
        # Read-your-writes: only where reads may leave the primary.
        self.causal = causal.CausalState(
            core.reactor, wait_timeout=config.causal_wait_timeout,
            min_lsn=getattr(frontend, "startup_min_lsn", 0))
        self._read_your_writes = config.read_your_writes == "session" and \
            not self.direct and not native
        self._local_statements: Dict[str, str] = {}
        self._local_portals: Dict[str, str] = {}
        # Whether this batch (since the last Sync) reached a server; a Sync
        # ending a batch of the proxy's own statements only is answered here.
        self._batch_reached_server = False
        self._match_local = core.inspector.match
        self._classify = core.classify
        self._cache: Optional[SessionCache] = None
        # The query cache's steps in this session's statements.
        self._cache_steps: Optional[CachedQueries] = None
        # The primary's current reply ends without its ReadyForQuery until
        # a remote cache confirms the reply's invalidations.
        self._hold_ready = False
        # While a statement is being sent: what else goes in the same write.
        self._outbox: Optional[List[bytes]] = None
        # A committing write's reply, kept until its position is in so that
        # reply, token and ReadyForQuery leave in one send (see client_write).
        self._commit_reply: Optional[List[bytes]] = None
        self._commit_reply_size = 0
        query_cache = getattr(core, "query_cache", None)
        if query_cache is not None:
            self._cache = SessionCache(
                query_cache, frontend.user or "", frontend.database or "",
                getattr(frontend, "_settings", None) or {})
            self._cache_steps = CachedQueries(self, self._cache,
                                              self._log_statements, native)
            # The cache needs every statement classified: even a session
            # with a single node takes the routed path (all to the primary).
            if self.direct:
                self.router.load_balance = False
        self.client_message = self._direct_message \
            if self.direct and self._cache is None \
            else self._routed_message  # type: ignore[assignment]
        # Long messages seen by their head only (StreamFramer.redirect).  A
        # session replicating writes (native) or caching results reads
        # them whole, within max_buffered_message_length.
        if self.direct and self._cache is None:
            self.heads = _DIRECT_HEADS
            self.client_head = self._direct_head
        else:
            self.heads = _ROUTED_HEADS if not native and self._cache is None \
                else frozenset()
            self.client_head = self._routed_head
        # The rest of a long client message being passed on as it arrives.
        self._stream: Optional[_Stream] = None
        self.owner: Optional[BackendProtocol] = None
        self._failing_primary = False
        self._held: List[bytes] = []
        self._waiting: Deque[Callable[[], bool]] = deque()
        self._unblocking = False
        # Too many unanswered messages (MAX_UNANSWERED): the client waits.
        self._throttled = False
        # A statement that may start COPY FROM STDIN went to the primary and
        # has not been answered yet (cleared at its ReadyForQuery).
        self._copy_in_sent = False
        # The client's stream ended (finish_with): it is never read again.
        self._finishing = False
        self.closed = False
        # Extended protocol bookkeeping.
        self._batch: List["_BatchItem"] = []
        self._batch_bytes = 0
        self._batch_route: Optional[Tuple[int, Tuple[int, ...]]] = None
        self._batch_opened: Set[int] = set()
        self.statements: Dict[str, _Statement] = {}
        self._node_statements: Dict[int, Dict[str, bytes]] = {self.primary_id: {}}
        self._portals: Dict[str, int] = {}
        # Native replication mode: the statement each named portal runs.
        self._portal_statements: Dict[str, str] = {}
        # What a node opened mid-session must replay to match the others.
        self._session_sql: List[str] = []
        self._begin_sql: Optional[str] = None
        self._transaction_sql: List[str] = []
        # SHOW POOL_BACKEND_STATS: the primary's statement counters, and
        # where a session that routes nothing (_direct_message) keeps the
        # counter of each prepared statement and portal, by name.
        self._primary_counts = core.cluster.nodes[self.primary_id].statement_counts
        self._direct_statements: Dict[bytes, int] = {}
        self._direct_portals: Dict[bytes, int] = {}
        primary.backend.error_counts = \
            core.cluster.nodes[self.primary_id].error_counts
        primary.backend.attach(self)

    # -- the client side ---------------------------------------------------

    def client_message(self, message_type: int, payload: bytes) -> bytes:
        """
        The framer's callback for every watched client message (replaced
        per session by L{_direct_message} or L{_routed_message}).
        """
        raise NotImplementedError()

    def _direct_message(self, message_type: int, payload: bytes) -> Optional[bytes]:
        """
        Everything goes to the primary (one usable node, balancing off, or
        a client the proxy cannot open a second connection for): messages
        pass through as they came, only counted, so that the pool knows
        whether the connection is idle when the client leaves.
        """
        if self.closed:
            return b""
        backend = self._primary_backend
        if message_type == messages.QUERY:
            if self._answer_own_statement(payload):
                return b""
            index = counter_of_text(payload)
            if index is None:
                index = self._counter_of_sql(payload[:-1])
            if index == DDL:
                self._free_databases(payload[:-1].decode("utf-8", "surrogateescape"))
            self._primary_counts[index] += 1
            backend.expect(True)
            self.owner = backend
            if self._log_statements:
                self._log_direct(payload, "")
            if backend.pending_ready >= MAX_UNANSWERED:
                self._throttle()
        elif message_type == messages.SYNC:
            if not self._batch_reached_server and (
                    self._local_statements or self._local_portals):
                self.submit_local([])
                return b""
            self._batch_reached_server = False
            backend.expect(True)
            self.owner = backend
            backend.unsynced = backend.unsynced_execute = False
            if backend.pending_ready >= MAX_UNANSWERED:
                self._throttle()
        elif message_type in _BATCHED and self._extended_local(message_type, payload):
            return b""
        elif message_type == messages.EXECUTE:
            self._batch_reached_server = True
            backend.unsynced = backend.unsynced_execute = True
            index = self._direct_portals.get(payload[:payload.find(b"\x00")])
            if index is not None:
                self._primary_counts[index] += 1
        elif message_type == messages.FUNCTION_CALL:
            backend.expect(True)
            self.owner = backend
            if backend.pending_ready >= MAX_UNANSWERED:
                self._throttle()
        elif message_type == messages.TERMINATE:
            self.frontend.terminate_session()
            return b""
        elif message_type == messages.PASSWORD_MESSAGE:
            return self._routed_message(message_type, payload)
        elif message_type == messages.FLUSH:
            # Starts nothing on the server: it only asks for pending output.
            pass
        else:
            self._batch_reached_server = True
            backend.unsynced = True
            if message_type in _NAMES_COUNTED:
                self._direct_names(message_type, payload)
            if message_type == messages.PARSE and self._log_statements:
                self._log_direct(payload, "Parse: ")
        return None

    def _direct_head(self, message_type: int, head: bytes, length: int) -> object:
        """
        The framer's head callback in a session that routes nothing: a
        Query, Parse, Bind or FunctionCall longer than the head is counted
        (and logged) from its head and passed on as it arrives; it is never
        one of the proxy's own statements, which are short.

        @param length: the payload's length (the head is its start).
        @return: L{FORWARD}; the sink that drops the rest, for a Bind of
            one of the proxy's own statements; L{WHOLE} when the names do
            not fit in the head.
        """
        if self._track_idle:
            self.frontend.last_activity = self.core.reactor.seconds()
        if self.closed:
            return self._start_stream(length - len(head)).write
        backend = self._primary_backend
        if message_type == messages.QUERY:
            index = counter_of_text(head)
            if index is None:
                index = self._counter_of_sql(head)
            self._primary_counts[index] += 1
            backend.expect(True)
            self.owner = backend
            if self._log_statements:
                self._log_head(head, "", length)
            return FORWARD
        if message_type == messages.PARSE:
            end = head.find(b"\x00")
            if end < 0:
                return WHOLE
            if self._local_statements:
                self._local_statements.pop(
                    head[:end].decode("utf-8", "surrogateescape"), None)
            self._batch_reached_server = True
            backend.unsynced = True
            index = counter_of_text(head, end + 1)
            if index is None:
                index = self._counter_of_sql(head[end + 1:])
            self._direct_statements[head[:end]] = index
            if self._log_statements:
                self._log_head(head[end + 1:], "Parse: ", length - end - 1)
            return FORWARD
        if message_type == messages.BIND and \
                head.find(b"\x00", head.find(b"\x00") + 1) < 0:
            return WHOLE
        # A Bind (by its names) or a FunctionCall: as if whole.
        if self._direct_message(message_type, head) is None:
            return FORWARD
        return self._start_stream(length - len(head)).write

    def _log_head(self, text: bytes, prefix: str, length: int) -> None:
        """
        C{log_statement} for a statement only the start of which is read.
        """
        sql = text.decode("utf-8", "replace")
        self.frontend.log_statement(
            f"{sql}... ({length} bytes, cut)", prefix, (self.primary_id,),
            self.links)

    def _direct_names(self, message_type: int, payload: bytes) -> None:
        """
        What an Execute counts in (L{_direct_message}): the counter of
        each statement a Parse names, and of the statement each portal a
        Bind names runs; a Close forgets the name.
        """
        end = payload.find(b"\x00")
        if message_type == messages.PARSE:
            index = counter_of_text(payload, end + 1)
            if index is None:
                index = self._counter_of_sql(
                    payload[end + 1:payload.find(b"\x00", end + 1)])
            if index == DDL:
                self._free_databases(payload[end + 1:payload.find(b"\x00", end + 1)]
                                     .decode("utf-8", "surrogateescape"))
            self._direct_statements[payload[:end]] = index
        elif message_type == messages.BIND:
            index = self._direct_statements.get(
                payload[end + 1:payload.find(b"\x00", end + 1)])
            if index is None:
                self._direct_portals.pop(payload[:end], None)
            else:
                self._direct_portals[payload[:end]] = index
        else:
            names = self._direct_statements if payload[:1] == b"S" \
                else self._direct_portals
            names.pop(payload[1:end], None)

    def _free_databases(self, sql: str) -> None:
        """
        Before DROP DATABASE (ALTER DATABASE ... RENAME, CREATE DATABASE
        ... TEMPLATE): close the pool's idle connections to it, which the
        server would count as other users of it.
        """
        for name in databases_to_free(sql):
            self.core.pool.close_database(name)

    def _counter_of_sql(self, sql: bytes) -> int:
        # Text starting with a comment: its first word is the classifier's.
        return counter_of_kind(self._classify(
            sql.decode(self._primary_backend.client_codec, "surrogateescape")).kind)

    def _log_direct(self, payload: bytes, prefix: str) -> None:
        try:
            codec = self._primary_backend.client_codec
            if prefix:
                sql = messages.decode_parse(payload, codec).sql
            else:
                sql = messages.decode_query(payload, codec).sql
        except messages.MessageFormatError:
            return
        self.frontend.log_statement(sql, prefix, (self.primary_id,), self.links)

    def _routed_message(self, message_type: int, payload: bytes) -> bytes:
        if self.closed:
            return b""
        if self._copy_in_sent and message_type != messages.TERMINATE:
            # The primary reads COPY data until the copy ends, and takes
            # whatever else comes as part of it (PostgreSQL answers a Query
            # there with "unexpected message type during COPY"): to the
            # primary as it came, like the copy data, never routed
            # elsewhere to wait behind the copy.
            self._copy_to_primary(messages.message(message_type, payload))
            return b""
        if message_type == messages.QUERY:
            if self._batch or self._batch_route is not None:
                self._end_unsynced_batch()
            self.query(payload)
        elif self._refusing_batch and message_type != messages.SYNC:
            # A refused extended-protocol write: skip to its Sync.
            return b""
        elif message_type in _BATCHED:
            if not self._batch and self._batch_route is None and \
                    self._extended_local(message_type, payload):
                return b""
            try:
                item = _BatchItem.decode(message_type, payload,
                                         self._primary_backend.client_codec)
            except messages.MessageFormatError as e:
                self.frontend.end_after_replies(errors.fatal(
                    errors.PROTOCOL_VIOLATION,
                    f"invalid {chr(message_type)!r} message: {e}"))
                return b""
            self._batch.append(item)
            self._batch_bytes += len(payload) + 5
            if self._batch_bytes > MAX_BATCH_BYTES:
                self.send_batch(sync=False)
        elif message_type == messages.SYNC:
            if self._refusing_batch:
                self._refusing_batch = False
                self.submit_local([])
                return b""
            if not self._batch and self._batch_route is None and (
                    self._local_statements or self._local_portals):
                # A batch of the proxy's own statements only.
                self.submit_local([])
                return b""
            self._batch.append(_BatchItem(message_type, payload))
            self.send_batch(sync=True)
        elif message_type == messages.FLUSH:
            self._batch.append(_BatchItem(message_type, payload))
            self.send_batch(sync=False)
        elif message_type == messages.FUNCTION_CALL:
            if self._native:
                # It may write (large objects do), and is not replicated.
                self.submit_local([replication_mode.refused("function call").to_bytes()])
                return b""
            frame = messages.message(message_type, payload)
            self._submit(Route(PRIMARY, "function call"),
                         lambda node_id: [frame], True, None)
        elif message_type == messages.TERMINATE:
            self.frontend.terminate_session()
        else:
            self.frontend.end_after_replies(errors.fatal(
                errors.PROTOCOL_VIOLATION,
                f"unexpected message type {chr(message_type)!r}"))
        return b""

    def _routed_head(self, message_type: int, head: bytes, length: int) -> object:
        """
        The framer's head callback in a routing session: a Bind or
        FunctionCall longer than the head is sent on with its head, and the
        rest passed on as it arrives, to where it went (L{_Stream}).  A
        Bind ends its batch so far (as C{MAX_BATCH_BYTES} does): the batch
        is routed before its values are in, to the primary when it could
        have been balanced (L{_STREAMED_BIND}).

        @param length: the payload's length (the head is its start).
        @return: the sink for the rest, or L{WHOLE} when the Bind's names
            do not fit in the head (it is then read whole, and refused
            past C{max_buffered_message_length}).
        """
        if self._track_idle:
            self.frontend.last_activity = self.core.reactor.seconds()
        rest = length - len(head)
        if self.closed or self._refusing_batch:
            return self._start_stream(rest).write
        if message_type == messages.FUNCTION_CALL:
            stream = self._start_stream(rest)
            frame = _HEADER.pack(message_type, length + 4) + head
            self._submit(Route(PRIMARY, "function call"),
                         lambda node_id: self._streamed_to(node_id, [frame]),
                         True, None)
            return stream.write
        try:
            portal, statement = messages.decode_bind_names(head)
        except messages.MessageFormatError:
            return WHOLE
        if not self._batch and self._batch_route is None and \
                self._extended_local(message_type, head):
            return self._start_stream(rest).write
        stream = self._start_stream(rest)
        self._batch.append(_BatchItem(message_type, head, name=statement,
                                      portal=portal, rest=rest))
        self.send_batch(sync=False)
        return stream.write

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

    def copy_data(self, data: bytes) -> None:
        """
        COPY data from the client: always for the primary, where every
        COPY FROM is sent.
        """
        if self._batch or self._waiting:
            # The statement this data belongs to (COPY ... FROM STDIN by
            # Parse/Bind/Execute) is still held in the batch, or queued:
            # the data must not overtake it.
            if self._batch:
                self.send_batch(sync=False)
            self.run_or_wait(lambda: self._copy_to_primary(data))
            return
        self._copy_to_primary(data)

    def _copy_to_primary(self, data: bytes) -> bool:
        link = self.links.get(self.primary_id)
        if link is not None:
            link.backend.write(data)
        return True

    def _answer_own_statement(self, payload: bytes) -> bool:
        """
        Answer a simple Query that is one of the proxy's own statements
        (C{SHOW POOL_*} and C{PGPOOL SHOW}, C{SET/RESET/SHOW pgpool.min_lsn},
        C{PGPOOL SET CACHE DELETE}); False for any other, after a few cheap
        first-byte tests.
        """
        command = self._match_local(payload)
        if command is not None:
            self.submit_local(self.core.inspector.answer(command, self.frontend))
            return True
        floor = causal.match_statement(payload)
        if floor is not None:
            self.submit_local(causal.answer_statement(floor, self.causal))
            return True
        query = match_cache_delete(payload)
        if query is None:
            return False
        answer_cache_delete(self, self._cache, query)
        return True

    def query(self, payload: bytes, lookup: Optional[bool] = None,
              fetched=None) -> None:
        """
        A simple Query from the client.

        @param lookup: when the query cache made the statement wait for a
            catalog lookup: whether it succeeded.
        @param fetched: when it waited for a remote cache: the answer.
        """
        cache = self._cache
        if cache is not None and fetched is None and lookup is None and \
                not self.router.temp_tables and self.cache_usable():
            # First, before anything else looks at the text: a statement
            # this session found cacheable before (so a valid SELECT, and
            # none of the proxy's own) goes straight to the cache.
            known = cache.remembered(payload)
            if known is not None:
                fetched = cache.cache.fetch(*known)
                if fetched.__class__ is FetchResult and fetched.reply is not None:
                    if self.owner is None and not self._waiting:
                        # The cache serves only outside transactions: the
                        # status is idle.
                        self.frontend.transport.write(fetched.reply + _READY_IDLE)
                    else:
                        self.submit_local([fetched.reply])
                    return
                if isinstance(fetched, defer.Deferred):
                    steps = self._cache_steps
                    assert steps is not None
                    steps.wait(fetched, lambda answer: self.query(payload, None, answer))
                    return
        if self._answer_own_statement(payload):
            return
        if payload[-1:] != b"\x00" or payload.find(b"\x00") != len(payload) - 1:
            self.frontend.end_after_replies(errors.fatal(
                errors.PROTOCOL_VIOLATION, "invalid Query message"))
            return
        # Read in the client's encoding; forwarded as it came (frame).
        sql = payload[:-1].decode(self._primary_backend.client_codec,
                                  "surrogateescape")
        classification = self._classify(sql)
        if classification.kind in _DATABASE_DDL:
            self._free_databases(sql)
        recorder = None
        plan = None
        steps = self._cache_steps
        if steps is not None:
            outcome = steps.query(payload, sql, classification, lookup, fetched)
            if outcome is HANDLED:
                return
            if isinstance(outcome, ReplyRecorder):
                recorder = outcome
            else:
                plan = outcome
        route = _CACHE_MISS if recorder is not None \
            else self.router.route(classification)
        frame = messages.message(messages.QUERY, payload)
        if self._native and route.target == ALL:
            self._replicate(frame, classification, sql, route, plan)
            return
        if route.target != ALL and not self._waiting:
            # The common case, kept short: one node, nothing queued.
            targets = self._targets(route)
            if targets is not None:
                link = self.links[targets[0]]
                backend = link.backend
                if self.owner is None or self.owner is backend:
                    if recorder is None:
                        backend.expect(True)
                    else:
                        backend.expect_recorded(recorder)
                    self.owner = backend
                    # What the bookkeeping adds (a position query) goes in
                    # the same write as the statement.
                    self._outbox = outbox = [frame]
                    self._query_sent(classification, route, sql, targets[0],
                                     (targets[0],), plan)
                    self._outbox = None
                    if targets[0] != self.primary_id:
                        question = self._ride_along(targets[0], backend)
                        if question is not None:
                            outbox.append(question)
                    backend.write(frame if len(outbox) == 1 else b"".join(outbox))
                    return
        rewrite = classification.standby_rewrite
        standby_frame = messages.query(rewrite) if rewrite else frame

        def frames_for(node_id: int) -> List[bytes]:
            return [frame if node_id == self.primary_id else standby_frame]

        def sent(forward_id: int, node_ids: Tuple[int, ...]) -> None:
            self._query_sent(classification, route, sql, forward_id, node_ids, plan)

        self._submit(route, frames_for, True, sent, recorder=recorder)

    def _query_sent(self, classification, route: Route, sql: str,
                    forward_id: int, node_ids: Tuple[int, ...],
                    plan: Optional[InvalidationPlan] = None) -> None:
        if forward_id == self.primary_id and _enters_copy_in(classification):
            self._copy_in_sent = True
        if classification.to_all_session_nodes or \
                classification.is_transaction_start:
            self._remember_session_state(classification, sql)
        if self._cache_steps is not None:
            self._cache_steps.sent(classification, sql, plan)
        # A cache miss is a read by the cache's rules (its functions are
        # IMMUTABLE), whatever routing would have made of it.
        if route is not _CACHE_MISS and not (
                classification.is_read_only and
                not classification.marks_transaction_writing):
            if self._read_your_writes and forward_id == self.primary_id and \
                    self._may_commit_a_write(classification):
                if _enters_copy_in(classification):
                    # Nothing may follow a COPY FROM STDIN on the wire
                    # before its data: the position is asked later.
                    self.causal.position_unknown = True
                else:
                    self._ask_commit_position()
            self.router.dispatched(classification, route)
        # SHOW POOL_BACKEND_STATS (and POOL_NODES' select_cnt): on every
        # node the statement was sent to.
        index = counter_of_kind(classification.kind)
        nodes = self.core.cluster.nodes
        for node_id in node_ids:
            nodes[node_id].statement_counts[index] += 1
        if self._log_statements:
            self.frontend.log_statement(sql, "", node_ids, self.links)

    def _remember_session_state(self, classification, sql: str) -> None:
        # Called before the router records the statement: its state is the
        # one the statement runs in.
        c = classification
        if c.is_transaction_start:
            self._begin_sql = sql
            self._transaction_sql = []
        elif c.is_commit or (c.is_rollback and not c.is_savepoint_op):
            if c.is_commit and not self.router.transaction_failed:
                self._session_sql.extend(self._transaction_sql)
            self._transaction_sql = []
            self._begin_sql = None
        if c.to_all_session_nodes and c.is_session_state:
            if c.kind == "discard":
                self._session_sql.clear()
            elif self.router.in_transaction:
                if not _SET_LOCAL.match(sql):
                    self._transaction_sql.append(sql)
            else:
                self._session_sql.append(sql)
        if self._cache is not None:
            self._cache.settings_changed(self._session_sql)

    # -- what the query cache's steps use (ICachingSession) ------------------

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

    # -- extended protocol ---------------------------------------------------

    def send_batch(self, sync: bool, lookup: Optional[bool] = None,
                   fetched=None) -> None:
        recorder: Optional[ReplyRecorder] = None
        plans: Dict[str, InvalidationPlan] = {}
        steps = self._cache_steps
        if steps is not None and self._batch_route is None:
            outcome = steps.batch(self._batch, sync, lookup, fetched)
            if outcome is HANDLED:
                return
            recorder, plans = outcome  # type: ignore[misc]
        batch, self._batch = self._batch, []
        self._batch_bytes = 0
        if not sync and self._batch_route is None and \
                all(item.type == messages.FLUSH for item in batch):
            # A Flush with nothing before it (psycopg sends one after each
            # Sync): ask the nodes still working to send what they have;
            # nothing new is started, so no reply unit opens.
            for link in self.links.values():
                if link.backend.pending_ready:
                    link.backend.write(messages.flush())
            return
        # A Bind whose values are still to come (_routed_head): always last.
        streamed = batch[-1] if batch and batch[-1].rest else None
        classifications = []
        # Per classification: the SQL, once an Execute in this batch runs a
        # statement that changes session or transaction state.
        state_sql: List[Optional[str]] = []
        in_batch: Dict[str, int] = {}
        portal_statement: Dict[str, str] = {}
        forced: Optional[int] = None
        # An Execute of a portal bound earlier whose statement writes.
        forced_write = False
        executed: Set[int] = set()
        # The classification of what each Execute runs, in order (for
        # SHOW POOL_BACKEND_STATS).
        execute_classes = []
        parsed = {item.name for item in batch if item.type == messages.PARSE}
        bound = {item.portal for item in batch if item.type == messages.BIND}
        for item in batch:
            if item.type == messages.PARSE:
                in_batch[item.name] = len(classifications)
                classification = self.core.classify(item.sql)
                if classification.kind in _DATABASE_DDL:
                    self._free_databases(item.sql)
                classifications.append(classification)
                state_sql.append(None)
            elif item.type == messages.BIND:
                portal_statement[item.portal] = item.name
                known = self.statements.get(item.name)
                if known is not None and item.name not in parsed:
                    in_batch[item.name] = len(classifications)
                    classifications.append(known.classification)
                    state_sql.append(None)
            elif item.type == messages.EXECUTE:
                index = in_batch.get(portal_statement.get(item.portal, "\0"))
                if index is None and item.portal not in portal_statement:
                    # A portal bound by an earlier batch.
                    known = self.statements.get(
                        self._portal_statements.get(item.portal, "\0"))
                    if known is not None:
                        execute_classes.append(known.classification)
                if index is not None:
                    executed.add(index)
                    c = classifications[index]
                    execute_classes.append(c)
                    if c.to_all_session_nodes or c.is_transaction_start:
                        name = portal_statement[item.portal]
                        payload = next((i.payload for i in batch
                                        if i.type == messages.PARSE and i.name == name),
                                       None) or self.statements[name].parse_payload
                        state_sql[index] = messages.decode_parse(
                            payload, self._primary_backend.client_codec).sql
                if item.portal and item.portal in self._portals and \
                        item.portal not in bound:
                    forced = self._portals[item.portal]
                    if self._native:
                        known = self.statements.get(
                            self._portal_statements.get(item.portal, "\0"))
                        if known is None or self.router.route(
                                known.classification).target == ALL:
                            forced_write = True
        if self._batch_route is not None and \
                self._batch_route[0] != self.primary_id and (
                    streamed is not None or classifications and
                    self.router.route_batch(classifications).target != BALANCE):
            self._move_batch_to_primary()
        if self._batch_route is not None:
            route = Route(PRIMARY, "rest of a flushed batch")
            pinned: Optional[Tuple[int, Tuple[int, ...]]] = self._batch_route
        else:
            route = self.router.route_batch(classifications) if classifications \
                else Route(PRIMARY, "no statement")
            pinned = None
            if forced is not None:
                pinned = (forced, ())
            elif recorder is not None:
                route = _CACHE_MISS
            elif streamed is not None and route.target == BALANCE:
                route = _STREAMED_BIND
        # Whether every node gets the whole batch (a write replicated in
        # native replication mode), not only its control part.
        replicated = False

        def frames_for(node_id: int) -> List[bytes]:
            if route.target == ALL and node_id != self.primary_id:
                part = self._control_part(batch)
                if streamed is not None and part and part[-1] is streamed:
                    self._streamed_to(node_id, [])
                return self._frames_for_node(node_id, part)
            if streamed is not None:
                self._streamed_to(node_id, [])
            return self._frames_for_node(node_id, batch)

        def sent(forward_id: int, node_ids: Tuple[int, ...]) -> None:
            commits_write = sync and recorder is None and self._read_your_writes and \
                forward_id == self.primary_id and any(
                    self._may_commit_a_write(classifications[i]) for i in executed)
            if steps is not None:
                for sql, plan in plans.items():
                    steps.sent(self._classify(sql), sql, plan)
                for classification, sql in zip(classifications, state_sql):
                    if sql is not None and sql not in plans:
                        steps.sent(classification, sql, None)
            for classification, sql in zip(classifications, state_sql):
                if sql is not None:
                    self._remember_session_state(classification, sql)
                self.router.dispatched(classification, route)
            self._record_batch(batch, node_ids, forward_id)
            executes = sum(1 for item in batch if item.type == messages.EXECUTE)
            if execute_classes:
                self._count_executes(execute_classes, node_ids,
                                     route.target == ALL and not replicated)
            for node_id in node_ids:
                backend = self.links[node_id].backend
                if sync:
                    backend.unsynced = backend.unsynced_execute = False
                else:
                    backend.unsynced = True
                    if executes:
                        backend.unsynced_execute = True
            if sync:
                self._batch_route = None
            else:
                self._batch_route = (forward_id, tuple(n for n in node_ids
                                                       if n != forward_id))
            for item in batch:
                if item.type == messages.PARSE:
                    self.frontend.log_statement(item.sql, "Parse: ", node_ids,
                                                self.links)
            if commits_write:
                if any(_enters_copy_in(classifications[i]) for i in executed):
                    self.causal.position_unknown = True
                else:
                    self._ask_commit_position()

        if self._native and (forced_write or any(
                not classifications[i].to_all_session_nodes and
                self.router.route(classifications[i]).target == ALL
                for i in executed)):
            # A write: replicated as a whole when it ends with Sync, after
            # the part of the batch flushed before it (Parse/Describe, or
            # reads) is ended; never sent to one node only.
            if not sync or forced_write:
                self._refuse_batch(sync)
                return
            if self._batch_route is not None:
                self._move_batch_to_primary()
            route = Route(ALL, "write replicated to every node")
            replicated = True
            sqls = self.executed_sql(batch)
            self._run_replicated(
                lambda node_ids: {n: b"".join(self._frames_for_node(n, batch))
                                  for n in node_ids},
                bool(sqls) and all(
                    replication_mode.needs_internal_transaction(self._classify(sql), sql)
                    for sql in sqls),
                lambda node_ids: sent(self.primary_id, node_ids))
            return
        self._submit(route, frames_for, sync, sent, pinned=pinned,
                     batch_unit=True, recorder=recorder)

    def _count_executes(self, execute_classes, node_ids: Tuple[int, ...],
                        control_part: bool) -> None:
        """
        Count each Execute of a batch on each node it was sent to: with
        C{control_part}, nodes other than the primary got only the
        Executes of statements for every session node (L{_control_part}).
        """
        nodes = self.core.cluster.nodes
        for node_id in node_ids:
            counts = nodes[node_id].statement_counts
            partial = control_part and node_id != self.primary_id
            for c in execute_classes:
                if not partial or c.to_all_session_nodes:
                    counts[counter_of_kind(c.kind)] += 1

    def executed_sql(self, batch: List["_BatchItem"]) -> List[str]:
        """
        The text of each statement a batch executes, in order.
        """
        statements: Dict[str, str] = {}
        portals: Dict[str, str] = {}
        executed = []
        for item in batch:
            if item.type == messages.PARSE:
                statements[item.name] = item.sql
            elif item.type == messages.BIND:
                sql = statements.get(item.name)
                if sql is None and item.name in self.statements:
                    sql = statements[item.name] = self.statements[item.name].sql
                if sql is not None:
                    portals[item.portal] = sql
            elif item.type == messages.EXECUTE and item.portal in portals:
                executed.append(portals[item.portal])
        return executed

    def _control_part(self, batch: List["_BatchItem"]) -> List["_BatchItem"]:
        """
        What a node other than the primary gets of a batch routed to every
        session node: every Parse (preparing is harmless and keeps the
        statement bookkeeping true), but only the Bind/Execute/Describe of
        statements that change session or transaction state.  Its replies
        are swallowed anyway.
        """
        control: Dict[str, bool] = {}
        portals: Dict[str, bool] = {}
        part = []
        for item in batch:
            if item.type == messages.PARSE:
                control[item.name] = self.core.classify(item.sql).to_all_session_nodes
                part.append(item)
                continue
            if item.type == messages.BIND:
                keep = control.get(item.name)
                if keep is None:
                    known = self.statements.get(item.name)
                    keep = known is not None and known.classification.to_all_session_nodes
                portals[item.portal] = keep
            elif item.type == messages.EXECUTE or (
                    item.type == messages.DESCRIBE and item.kind == "P"):
                keep = portals.get(item.portal if item.type == messages.EXECUTE
                                   else item.name, False)
            else:
                keep = True
            if keep:
                part.append(item)
        return part

    def _end_unsynced_batch(self) -> None:
        """
        A simple Query comes after extended-protocol messages with no Sync
        (asyncpg's C{prepare()} is Parse, Describe, Flush).  A server runs
        them in order and answers the Query with a ReadyForQuery; no Sync
        is owed.  Here the held part of the batch is sent first, and the
        batch is then ended on its nodes with a Sync of the proxy's own,
        whose ReadyForQuery the client does not see -- otherwise the node
        that has the batch would keep the client's replies waiting for a
        Sync that is not coming, and a Query for another node would wait
        behind it forever.
        """
        if self._batch:
            self.send_batch(sync=False)

        def attempt() -> bool:
            if self._batch_route is not None:
                self._move_batch_to_primary()
            return True

        self.run_or_wait(attempt)

    def _move_batch_to_primary(self) -> None:
        """
        A batch already flushed to a standby goes on with a statement only
        the primary may run (psycopg's pipeline fetches a read's result
        with a Flush, then queues a write): end the standby's part with a
        Sync of our own (it ran only reads, so nothing is committed there),
        hide that Sync's ReadyForQuery from the client, and route the rest
        of the batch afresh.  Replies stay in order: the primary's start
        after the standby's part is finished.
        """
        assert self._batch_route is not None
        forward_id, others = self._batch_route
        for node_id in (forward_id,) + others:
            link = self.links.get(node_id)
            if link is None:
                continue
            link.backend.write(messages.sync())
            link.backend.keep_last_ready_for_query()
            link.backend.unsynced = link.backend.unsynced_execute = False
            self._batch_opened.discard(node_id)
        self._batch_route = None

    def _frames_for_node(self, node_id: int, batch: List["_BatchItem"]) -> List[bytes]:
        """
        The batch as node C{node_id} must receive it: statements it has not
        prepared (or prepared differently) are prepared first, and their
        replies hidden from the client.
        """
        known = self._node_statements.setdefault(node_id, {})
        backend = self.links[node_id].backend
        frames: List[bytes] = []
        defined: Set[str] = set()
        for item in batch:
            if item.type == messages.PARSE:
                if item.name and item.name in known:
                    # The client closed it on another node; close it here.
                    frames.append(messages.close("S", item.name))
                    backend.hide(messages.CLOSE_COMPLETE)
                    del known[item.name]
                defined.add(item.name)
            elif item.type == messages.BIND or (
                    item.type == messages.DESCRIBE and item.kind == "S"):
                name = item.name
                if name not in defined:
                    statement = self.statements.get(name)
                    if statement is not None and \
                            known.get(name) != statement.parse_payload:
                        if name and name in known:
                            frames.append(messages.close("S", name))
                            backend.hide(messages.CLOSE_COMPLETE)
                        frames.append(messages.message(
                            messages.PARSE, statement.parse_payload))
                        backend.hide(messages.PARSE_COMPLETE)
                        known[name] = statement.parse_payload
                    defined.add(name)
            frames.append(item.frame())
        return frames

    def batch_answered(self, batch: List["_BatchItem"], record: bool) -> None:
        """
        The held C{batch} was answered without a server (from the query
        cache): drop it, and if C{record}, its statements exist for the
        session from now on, on no server yet.
        """
        self._batch = []
        self._batch_bytes = 0
        if record:
            self._record_batch(batch, (), self.primary_id)

    def _record_batch(self, batch: List["_BatchItem"],
                      node_ids: Tuple[int, ...], forward_id: int) -> None:
        if self._cache is not None and any(
                item.type in (messages.PARSE, messages.CLOSE) for item in batch):
            self._cache.statements_changed()
        for item in batch:
            if item.type == messages.PARSE:
                self.statements[item.name] = _Statement(
                    item.payload, self.core.classify(item.sql), item.sql)
                for node_id in node_ids:
                    self._node_statements.setdefault(node_id, {})[
                        item.name] = item.payload
            elif item.type == messages.BIND:
                # The unnamed portal's too: an Execute after a Flush may
                # run it (counted by its statement).
                self._portal_statements[item.portal] = item.name
                if item.portal:
                    self._portals[item.portal] = forward_id
            elif item.type == messages.CLOSE:
                if item.kind == "S":
                    self.statements.pop(item.name, None)
                    for node_id in node_ids:
                        self._node_statements.get(node_id, {}).pop(item.name, None)
                else:
                    self._portals.pop(item.name, None)
                    self._portal_statements.pop(item.name, None)

    # -- native replication mode ---------------------------------------------

    def _replicate(self, frame: bytes, classification, sql: str, route: Route,
                   plan: Optional[InvalidationPlan]) -> None:
        """
        Send a simple Query to every node that is up, the main node (the
        session's first node) first, and give the client the main node's
        reply once the nodes agree (L{replication_mode.ReplicatedStatement}).
        """
        if replication_mode.copy_from_stdin(classification, sql):
            self.submit_local([replication_mode.refused("copy").to_bytes()])
            return
        self._run_replicated(
            lambda node_ids: {n: frame for n in node_ids},
            replication_mode.needs_internal_transaction(classification, sql),
            lambda node_ids: self._query_sent(classification, route, sql,
                                              self.primary_id, node_ids, plan))

    def _run_replicated(self, frames_for: Callable[[Tuple[int, ...]], Dict[int, bytes]],
                        may_wrap: bool,
                        sent: Callable[[Tuple[int, ...]], None]) -> None:
        """
        Run one replicated statement (or batch) once the nodes before it
        have answered and every node that is up has a connection.

        @param frames_for: what each node gets, asked once when sending.
        @param may_wrap: outside an explicit transaction it runs inside
            one of the proxy's own.
        @param sent: the session's bookkeeping once it is sent.
        """
        config = self.core.config
        statement: List[replication_mode.ReplicatedStatement] = []

        def deliver(reply: List[bytes]) -> None:
            if not self.closed:
                self.frontend.transport.writeSequence(reply)

        def fail(error: errors.PgError) -> None:
            log.error("native replication: {message} ({detail})",
                      message=error.message, detail=error.detail)
            if not self.closed:
                self.frontend.fail(error)

        def degenerate(node_ids, reason: str) -> None:
            failover = self.core.failover
            for node_id in node_ids:
                log.warn("native replication: degenerating node {node_id}: "
                         "{reason}", node_id=node_id, reason=reason)
                if node_id != self.primary_id:
                    self.drop_node(node_id)
                if failover is not None:
                    failover.node_failed(node_id, reason)

        def attempt() -> bool:
            if self.closed:
                return True
            if statement:
                return statement[0].finished
            if self.owner is not None:
                return False
            node_ids = self._replication_nodes()
            if node_ids is None:
                return False
            if isinstance(node_ids, errors.PgError):
                self.submit_local([node_ids.to_bytes()])
                return True
            internal = may_wrap and not self.router.in_transaction and \
                self._primary_backend.transaction_status == messages.TRANSACTION_IDLE
            job = replication_mode.ReplicatedStatement(
                frames_for(node_ids), self.primary_id,
                {n: self.links[n].backend for n in node_ids}, internal,
                config.replication_stop_on_mismatch,
                config.failover_if_affected_tuples_mismatch,
                deliver, fail, degenerate)
            statement.append(job)
            job.start()
            sent(node_ids)
            return job.finished

        self.run_or_wait(attempt)

    def _replication_nodes(self):
        """
        The ids of every node that is up, the main node first, each with a
        connection of this session (L{replication_mode.replication_targets});
        None while one is being opened; or the error to answer with.
        """
        targets = replication_mode.replication_targets(
            self.core.cluster.nodes, self.primary_id, self.links, self._unusable,
            self._open_connection is not None)
        if targets.error is not None:
            return targets.error
        for node in targets.to_open:
            self._connect(node)
        if any(node.node_id not in self.links for node in targets.to_open):
            return None
        return targets.node_ids

    def _refuse_batch(self, sync: bool) -> None:
        """
        An extended-protocol write this mode cannot replicate: answered
        with an error and sent to no node (never to one node only); the
        rest of the batch is skipped up to its Sync.
        """
        if self._batch_route is not None:
            # Parts of the batch flushed earlier: end them (their replies
            # stay the client's), then refuse the rest.
            self._move_batch_to_primary()
        self._refusing_batch = not sync
        self.submit_local([replication_mode.refused("extended").to_bytes()],
                          ready=sync)

    # -- sending -------------------------------------------------------------

    def _submit(self, route: Route, frames_for: Callable[[int], List[bytes]],
                opens_unit: bool,
                sent: Optional[Callable[[int, Tuple[int, ...]], None]],
                pinned: Optional[Tuple[int, Tuple[int, ...]]] = None,
                batch_unit: bool = False,
                recorder: Optional[ReplyRecorder] = None) -> None:
        """
        Send now if the target nodes are connected and no other node is
        passing a reply to the client; otherwise pause the client's stream
        and try again when that changes.
        """
        def attempt() -> bool:
            if self.closed:
                return True
            if pinned is not None:
                forward_id, others = pinned
            else:
                targets = self._targets(route)
                if targets is None:
                    return False
                forward_id, others = targets
            forward_link = self.links.get(forward_id)
            if forward_link is None:
                # The pinned node went away.
                self.frontend.fail(errors.fatal(
                    errors.CONNECTION_FAILURE,
                    f"backend node {forward_id} went away in the middle of "
                    "an extended-protocol batch"))
                return True
            forward_backend = forward_link.backend
            if self.owner is not None and self.owner is not forward_backend:
                return False
            node_ids = (forward_id,) + tuple(n for n in others if n in self.links)
            for node_id in node_ids:
                backend = self.links[node_id].backend
                frames = frames_for(node_id)
                ends_unit = not batch_unit or opens_unit
                if not batch_unit:
                    if recorder is not None and node_id == forward_id:
                        backend.expect_recorded(recorder)
                    else:
                        backend.expect(node_id == forward_id)
                elif node_id not in self._batch_opened:
                    # A batch's reply unit opens with its first part and
                    # ends with the ReadyForQuery that answers its Sync.
                    if recorder is not None and node_id == forward_id:
                        backend.expect_recorded(recorder)
                    else:
                        backend.expect(node_id == forward_id)
                    self._batch_opened.add(node_id)
                if ends_unit and node_id != self.primary_id and node_id == forward_id:
                    question = self._ride_along(node_id, backend)
                    if question is not None:
                        frames = [*frames, question]
                backend.write(b"".join(frames))
                if backend.pending_ready >= MAX_UNANSWERED:
                    self._throttle()
            if batch_unit and opens_unit:
                # The Sync: nodes that got earlier parts of this batch need
                # it too.
                for node_id in self._batch_opened:
                    link = self.links.get(node_id)
                    if link is not None and node_id not in node_ids:
                        link.backend.write(messages.sync())
                self._batch_opened.clear()
            if forward_backend.forwarding_units:
                self.owner = forward_backend
            if sent is not None:
                sent(forward_id, node_ids)
            return True

        self.run_or_wait(attempt)

    def submit_local(self, answer: List[bytes], ready: bool = True) -> None:
        """
        Answer a statement the proxy handles itself, after any reply the
        client is still receiving.

        @param ready: end with a ReadyForQuery (a simple query, or a Sync).
        """
        def attempt() -> bool:
            if self.owner is not None:
                return False
            if ready:
                status = self.links[self.primary_id].backend.transaction_status
                answer.append(messages.ready_for_query(status))
            self.frontend.transport.writeSequence(answer)
            return True

        self.run_or_wait(attempt)

    # -- the proxy's own statements in the extended protocol -----------------
    #
    # Pgpool-II answers SHOW POOL_* only in the simple protocol, so drivers
    # that always use the extended protocol (asyncpg's fetch, psycopg after
    # it prepares a statement) cannot read them.  Here a Parse of such a
    # statement is answered by the proxy, and so are the Bind, Describe,
    # Execute and Close that refer to it, and a Sync that ends a batch of
    # nothing else.

    def _extended_local(self, message_type: int, payload: bytes) -> bool:
        """
        Answer an extended-protocol message about one of the proxy's own
        statements; return False when the message is not about one.
        """
        if message_type == messages.PARSE:
            # Cheap test first: the query text starts after the name.
            start = payload.find(b"\x00") + 1
            if payload[start:start + 1] not in LOCAL_FIRST_BYTES and \
                    not self._local_statements:
                return False
        elif not (self._local_statements or self._local_portals):
            return False
        try:
            if message_type == messages.PARSE:
                parse = messages.decode_parse(payload)
                # The text as the client sent it (with its NUL, as in a
                # Query): encoding the decoded text again fails on bytes
                # that are not UTF-8, which the server must see and refuse.
                command = self._match_local(
                    payload[start:payload.index(b"\x00", start) + 1])
                if command is None:
                    self._local_statements.pop(parse.statement, None)
                    return False
                self._local_statements[parse.statement] = command
                self.submit_local([messages.message(messages.PARSE_COMPLETE)],
                                  ready=False)
                return True
            if message_type == messages.BIND:
                portal, statement = messages.decode_bind_names(payload)
                command = self._local_statements.get(statement)
                if command is None:
                    self._local_portals.pop(portal, None)
                    return False
                self._local_portals[portal] = command
                self.submit_local([messages.message(messages.BIND_COMPLETE)],
                                  ready=False)
                return True
            if message_type in (messages.DESCRIBE, messages.CLOSE):
                described = (messages.decode_describe(payload)
                             if message_type == messages.DESCRIBE
                             else messages.decode_close(payload))
                kind, name = described.kind, described.name
                table = self._local_statements if kind == "S" else self._local_portals
                command = table.get(name)
                if command is None:
                    return False
                if message_type == messages.CLOSE:
                    del table[name]
                    reply = [messages.message(messages.CLOSE_COMPLETE)]
                else:
                    answer = self.core.inspector.answer(command, self.frontend)
                    reply = answer[:1] if answer[0][:1] == b"T" else \
                        [messages.message(messages.NO_DATA)]
                    if kind == "S":
                        reply.insert(0, messages.message(
                            messages.PARAMETER_DESCRIPTION, b"\x00\x00"))
                self.submit_local(reply, ready=False)
                return True
            if message_type == messages.EXECUTE:
                portal = messages.decode_execute(payload).portal
                command = self._local_portals.get(portal)
                if command is None:
                    return False
                answer = self.core.inspector.answer(command, self.frontend)
                # The rows and the completion: the description was Describe's.
                self.submit_local(answer[1:] if answer[0][:1] == b"T" else answer,
                                  ready=False)
                return True
        except messages.MessageFormatError:
            return False
        return False



    def finish_with(self, last: Callable[[], None]) -> None:
        """
        The client's stream has ended (its next bytes were bad): read
        nothing more from it, and run C{last} (which sends the FATAL) once
        every reply owed for what it sent before is out, in order.

        A server reading COPY data from the client would wait for it
        forever: it is told the copy failed, so its error (and its
        ReadyForQuery) come back like any other reply.
        """
        self._finishing = True
        self.framer.stop()
        for link in self.links.values():
            link.backend.abandon_copy_in(
                "the client's connection to the proxy broke off")

        def attempt() -> bool:
            if self._hold_ready or (
                    self.owner is not None and not self._only_unsynced_left()):
                return False
            last()
            return True

        self.run_or_wait(attempt)

    def _only_unsynced_left(self) -> bool:
        """
        Whether all the node passing replies to the client still owes is the
        ReadyForQuery of an extended batch whose Sync never came (a Flush
        sent its first part): that answer will not come, and must not be
        asked for with a Sync of the proxy's own, which would commit what
        the batch did.  The connection is closed, not reset, when the
        session ends (it is unsynced).
        """
        owner = self.owner
        return owner is not None and self._batch_route is not None and \
            owner.node_id in self._batch_opened and owner.forwarding_units <= 1

    def run_or_wait(self, attempt: Callable[[], bool]) -> None:
        """
        Run C{attempt} now if nothing waits before it and it can go;
        otherwise queue it and pause the client's stream until it has run.
        """
        if not self._waiting and attempt():
            return
        self._waiting.append(attempt)
        self._hold_client()

    def _hold_client(self) -> None:
        """
        Read nothing more from the client for now: neither the messages
        already received (the framer keeps them) nor its socket.
        """
        self.framer.pause()
        gate = getattr(self.frontend, "read_gate", None)
        if gate is not None:
            gate.close(self)

    def _let_client_in(self) -> None:
        """
        Go on reading from the client, unless the session still has a
        reason to hold it (a ReadyForQuery held for the cache, a backlog).
        """
        if self.closed or self._hold_ready or self._throttled or self._finishing:
            return
        gate = getattr(self.frontend, "read_gate", None)
        if gate is not None:
            gate.open(self)
        self.framer.resume()

    def _throttle(self) -> None:
        """
        The client has L{MAX_UNANSWERED} messages waiting for a server:
        stop reading its messages until the replies catch up.
        """
        if not self._throttled:
            self._throttled = True
            self._hold_client()

    def _backlog_drained(self) -> None:
        if all(link.backend.pending_ready < BACKLOG_RESUME
               for link in self.links.values()):
            self._throttled = False
            if not self._waiting:
                self._let_client_in()

    def unblock(self) -> None:
        if self._unblocking:
            # Called from inside a queued step (a remote cache that answered
            # at once, say): the loop below goes on when that step returns.
            return
        self._unblocking = True
        try:
            while self._waiting and not self.closed:
                if not self._waiting[0]():
                    return
                self._waiting.popleft()
        finally:
            self._unblocking = False
        self._let_client_in()

    def _targets(self, route: Route) -> Optional[Tuple[int, Tuple[int, ...]]]:
        """
        Node ids for a route: (the node whose reply the client gets, the
        others); None while a needed connection is being opened.
        """
        if route.target == PRIMARY:
            return self.primary_id, ()
        if route.target == ALL:
            others = tuple(n for n in self.links if n != self.primary_id)
            return self.primary_id, others
        node = self._read_node()
        if node is None or node.node_id == self.primary_id:
            return self.primary_id, ()
        if node.node_id not in self.links:
            self._connect(node)
            if node.node_id in self._unusable:
                return self.primary_id, ()
            if node.node_id not in self.links:
                return None
        # Connected (perhaps just now: a pooled connection needing no
        # preparation is handed over at once).
        state = self.causal
        if self._read_your_writes and (state.commit_lsn or state.min_lsn or
                                       state.commit_pending or state.position_unknown):
            if self.causal.position_unknown:
                if not self.causal.commit_pending and \
                        not self._primary_backend.pending_ready:
                    self._ask_commit_position(for_client=False)
                return None
            fresh = state.verdict(node, self._ask_replay_position, self.unblock)
            if fresh is None:
                return None
            if not fresh:
                return self.primary_id, ()
        return node.node_id, ()

    # -- read-your-writes ------------------------------------------------------

    def _may_commit_a_write(self, c) -> bool:
        """
        Whether a statement just sent to the primary may commit a write:
        a write outside an explicit transaction, or the COMMIT of one that
        wrote.  (Decided before the router records it.)
        """
        if c.is_commit or c.is_prepare_transaction:
            return self.router.changed_data_in_transaction
        if c.is_read_only or c.is_transaction_start or c.to_all_session_nodes:
            return c.is_multi_statement and not c.is_read_only
        return not self.router.in_transaction or c.is_multi_statement

    def _ask_commit_position(self, for_client: bool = True) -> None:
        """
        Ask the primary its WAL position right behind the statement just
        sent (one more query in the same write: no extra round trip), and
        hold that statement's ReadyForQuery until the answer is in, so the
        client has its C{pgpool.commit_lsn} token when its commit returns.

        @param for_client: False when nothing was just sent (the position
            after a COPY FROM, asked when a read needs it): the answer only
            updates the session's position.
        """
        backend = self._primary_backend
        answer = causal.PositionReply()

        def ready(status: int) -> None:
            # Inside a transaction (a multi-statement query that began one)
            # nothing was committed yet.
            position = answer.position if status == messages.TRANSACTION_IDLE else None
            token = self.causal.committed(position)
            node = self.lb_node
            if token is not None and node is not None and \
                    node.node_id != self.primary_id:
                self.causal.ask_ahead(node)
            if not for_client:
                return
            reply = self._take_commit_reply()
            if token is not None:
                reply.append(messages.parameter_status(
                    causal.COMMIT_LSN_PARAMETER, format_lsn(token)))
            if not self._hold_ready:
                reply.append(messages.ready_for_query(status))
            self.frontend.transport.writeSequence(reply)

        if for_client:
            backend.keep_last_ready_for_query()
            if self._commit_reply is None:
                self._commit_reply = []
        if self._outbox is not None:
            self._outbox.append(causal.COMMIT_POSITION_QUERY)
        else:
            backend.write(causal.COMMIT_POSITION_QUERY)
        backend.expect_capture(answer.message, ready, holds_client=for_client)
        self.causal.commit_pending = True

    def _ride_along(self, node_id: int, backend: BackendProtocol) -> Optional[bytes]:
        """
        The question about a standby's replayed position that a read about
        to go there should carry (L{causal.ride_along}), its answer
        expected behind the read's reply; None when none is due.
        """
        node = self.core.cluster.nodes[node_id]
        if not node.replay_wanted or \
                not causal.ride_along(node, self.core.reactor.seconds()):
            return None
        answer = causal.PositionReply()
        backend.expect_capture(
            answer.message, lambda status: causal.replayed(node, answer.position),
            holds_client=False)
        return causal.REPLAY_POSITION_QUERY

    def _ask_replay_position(self, node: Node) -> bool:
        """
        Ask a standby how far it has replayed, on the session's own
        connection to it; False when there is none to ask on.
        """
        link = self.links.get(node.node_id)
        if link is None or link.backend.closed:
            return False
        answer = causal.PositionReply()
        link.backend.write(causal.REPLAY_POSITION_QUERY)
        link.backend.expect_capture(
            answer.message, lambda status: self.causal.probed(node, answer.position),
            holds_client=False)
        return True

    def _read_node(self) -> Optional[Node]:
        chosen = self.lb_node
        if chosen is not None and not self.statement_level and \
                chosen.status in _USABLE and not chosen.delayed and \
                chosen.node_id not in self._unusable:
            # The session's node, healthy: the usual case, kept short.
            linked = self.links.get(chosen.node_id)
            if linked is None or linked.backend.transaction_status != \
                    messages.TRANSACTION_FAILED:
                return chosen
        if self.statement_level:
            chosen = self.core.balancer.choose(
                self.frontend.user or "", self.frontend.database or "",
                self.frontend.application_name)
        else:
            chosen = self.lb_node
        node = self.core.balancer.read_node(chosen)
        if node is not None and node.node_id in self._unusable:
            return self.core.cluster.nodes[self.primary_id]
        if node is not None and self.links.get(self.primary_id) is not None:
            linked = self.links.get(node.node_id)
            if linked is not None and linked.backend.transaction_status == \
                    messages.TRANSACTION_FAILED:
                return self.core.cluster.nodes[self.primary_id]
        return node

    # -- opening another node -------------------------------------------------

    def _connect(self, node: Node) -> None:
        if node.node_id in self._connecting or self._open_connection is None:
            return
        d = self._open_connection(node)
        self._connecting[node.node_id] = d

        async def prepare(connection: PooledConnection) -> PooledConnection:
            backend = connection.backend
            replay = list(self._session_sql)
            if self._begin_sql is not None and self.router.in_transaction:
                replay.append(self._begin_sql)
                replay.extend(self._transaction_sql)
            for sql in replay:
                result = await backend.run_internal(sql, client_text=True)
                if result.error is not None:
                    raise RuntimeError(
                        f"replaying {sql!r} failed: {result.error.get('M')}")
            return connection

        d.addCallback(lambda connection: defer.Deferred.fromCoroutine(
            prepare(connection)))

        def connected(connection: PooledConnection) -> None:
            del self._connecting[node.node_id]
            if self.closed:
                defer.Deferred.fromCoroutine(self.core.pool.release(connection))
                return
            self.links[node.node_id] = connection
            self._node_statements.setdefault(node.node_id, {})
            connection.backend.error_counts = node.error_counts
            connection.backend.attach(self)
            self.unblock()

        def failed(failure: Failure) -> None:
            self._connecting.pop(node.node_id, None)
            if failure.check(ConnectError, defer.TimeoutError):
                self.frontend.report_node_failure(
                    node.node_id, f"failed to connect to backend node "
                    f"{node.node_id}: {failure.getErrorMessage()}")
            log.warn("could not use backend node {node_id} for reads: "
                     "{reason}; reading from the primary",
                     node_id=node.node_id, reason=failure.getErrorMessage())
            self._unusable.add(node.node_id)
            self.unblock()

        d.addCallbacks(connected, failed)

    # -- IReplySink ----------------------------------------------------------

    def client_write(self, data: bytes) -> None:
        kept = self._commit_reply
        if kept is None:
            self.frontend.transport.write(data)
            return
        # A committing write's reply (usually a CommandComplete of a few
        # bytes) waits for the position query right behind it, so that the
        # client gets reply, token and ReadyForQuery in one send instead of
        # two; a large reply (INSERT ... RETURNING) is passed on as it comes.
        kept.append(data)
        self._commit_reply_size += len(data)
        if self._commit_reply_size > _COMMIT_REPLY_KEPT:
            self.frontend.transport.writeSequence(self._take_commit_reply())

    def _take_commit_reply(self) -> List[bytes]:
        kept, self._commit_reply = self._commit_reply, None
        self._commit_reply_size = 0
        return kept or []

    def async_message(self, backend: BackendProtocol, data: bytes) -> None:
        if backend.node_id != self.primary_id:
            if self._native:
                # Every node sends the same notices and notifications: the
                # main node's are the client's.
                return
            if data[:1] == b"E":
                # A standby going away is handled when its connection
                # closes; its FATAL is not the client's business.
                return
        if self.owner is None or self.owner is backend:
            self.client_write(data)
            if backend.sent_fatal and data == backend.fatal_message:
                backend.fatal_relayed = True
        else:
            self._held.append(data)

    def backend_ready(self, backend: BackendProtocol) -> None:
        if self._track_idle:
            # client_idle_limit counts from the end of the last reply.
            self.frontend.last_activity = self.core.reactor.seconds()
        primary = backend.node_id == self.primary_id
        if not primary and not self._native and \
                backend.transaction_status == messages.TRANSACTION_FAILED:
            self._fail_primary_transaction()
        if backend is self.owner and not backend.forwarding_units:
            self.owner = None
            if self._held:
                held, self._held = self._held, []
                self.frontend.transport.writeSequence(held)
        if primary and not backend.pending_ready:
            self._copy_in_sent = False
            self._failing_primary = False
            self.router.ready(backend.transaction_status)
            cache = self._cache
            waits: List[defer.Deferred] = []
            if cache is not None and cache.pending and \
                    backend.transaction_status == messages.TRANSACTION_IDLE:
                waits = cache.committed()
            if self._hold_ready:
                self._release_ready(backend.transaction_status, waits)
        if self._throttled:
            self._backlog_drained()
        if self._waiting:
            self.unblock()

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

    def _fail_primary_transaction(self) -> None:
        """
        A statement failed inside the transaction on a load-balance node.
        PostgreSQL would now refuse everything but ROLLBACK, and a COMMIT
        must not commit the primary's part: make the primary's transaction
        fail too, with a statement that can only raise an error.
        """
        link = self.links.get(self.primary_id)
        if link is None or self._failing_primary:
            return
        backend = link.backend
        if backend.transaction_status != messages.TRANSACTION_IN_BLOCK:
            return
        stream = self._stream
        if stream is not None and backend in stream.targets:
            # The primary is in the middle of a message the client is
            # streaming to it: the statement goes in after it.
            stream.then = self._fail_primary_transaction
            return
        self._failing_primary = True
        # The statement exists to fail: its error is expected, so its reply
        # is taken in as the proxy's own (not logged as a failure nobody
        # sees, not counted in the node's error statistics).
        backend.expect_capture(_ignore_message, _ignore_status, holds_client=False)
        backend.write(messages.query(
            "ROLLBACK TO SAVEPOINT twisted_pgpool_abort_transaction"))

    def backend_lost(self, backend: BackendProtocol, reason: Failure) -> None:
        if self.closed:
            return
        node_id = backend.node_id
        link = self.links.pop(node_id, None)
        if link is not None:
            defer.Deferred.fromCoroutine(self.core.pool.release(link))
        if node_id == self.primary_id or backend is self.owner or \
                backend.pending_ready:
            if self._commit_reply is not None:
                # What the client would have had without the wait for the
                # position: the write's reply, before the error.
                self.frontend.transport.writeSequence(self._take_commit_reply())
            self._pass_last_words(backend)
            self.frontend.backend_lost(backend, reason)
            return
        log.info("load-balance node {node_id} of a session went away; its "
                 "reads go elsewhere now", node_id=node_id)
        self._unusable.add(node_id)

    def _pass_last_words(self, backend: BackendProtocol) -> None:
        """
        The session ends because C{backend} went away: give the client
        what it would have had from a server of its own -- the messages
        held for it, then the server's FATAL (57P01 after
        C{pg_terminate_backend}, say) if it came between replies, while
        a query of the proxy's own ran, or from a load-balance node --
        rather than a bare "server closed the connection unexpectedly".
        Nothing is written while another node is mid-reply.
        """
        if self.owner is not None and self.owner is not backend:
            return
        out, self._held = self._held, []
        fatal = backend.fatal_message
        if fatal is not None and not backend.fatal_relayed and fatal not in out:
            out.append(fatal)
        if out:
            backend.fatal_relayed = fatal is not None
            self.frontend.transport.writeSequence(out)

    # -- lifecycle -----------------------------------------------------------

    def depends_on(self, node_id: int) -> bool:
        """
        Whether the session cannot go on without C{node_id}: its primary,
        or a node working on one of its statements.
        """
        if node_id == self.primary_id:
            return True
        link = self.links.get(node_id)
        return link is not None and (link.backend.pending_ready > 0
                                     or link.backend is self.owner
                                     or self._batch_route is not None
                                     and node_id in (self._batch_route[0],)
                                     + self._batch_route[1])

    def drop_node(self, node_id: int) -> None:
        """
        Stop using an idle connection to a node that went down; reads go
        elsewhere from now on.
        """
        link = self.links.pop(node_id, None)
        self._unusable.add(node_id)
        if link is not None:
            link.backend.transport.unregisterProducer()
            self.core.pool.discard(link)

    def cancel_targets(self) -> List[CancelTarget]:
        """
        The backend processes working for the client right now.
        """
        busy = [(node_id, link) for node_id, link in self.links.items()
                if link.backend.pending_ready or link.backend is self.owner]
        if not busy and self.primary_id in self.links:
            # Nothing running: signal the primary anyway, as a direct
            # connection's cancel would (the server ignores it).
            busy = [(self.primary_id, self.links[self.primary_id])]
        targets = []
        for node_id, link in busy:
            node = self.core.cluster.nodes[node_id]
            targets.append(CancelTarget(node_id, node.hostname, node.port,
                                        link.backend.process_id,
                                        link.backend.secret_key))
        return targets

    def close(self) -> List[PooledConnection]:
        """
        End the session; returns its connections for the pool.
        """
        self.closed = True
        self._waiting.clear()
        self.causal.close()
        # The session is in reference cycles (its bound methods are kept
        # on it), so it is freed by the garbage collector, some time
        # later: the client's messages it holds (statements kept to
        # prepare elsewhere, up to max_buffered_message_length each, a
        # held batch) are let go now.
        self.statements = {}
        self._node_statements = {}
        self._batch = []
        self._batch_bytes = 0
        links = list(self.links.values())
        self.links.clear()
        for pending in self._connecting.values():
            pending.addErrback(lambda f: None)
        return links

    @property
    def busy(self) -> bool:
        return any(link.backend.busy for link in self.links.values())

    @property
    def transaction_status(self) -> int:
        link = self.links.get(self.primary_id)
        return link.backend.transaction_status if link else messages.TRANSACTION_IDLE


def _ignore_message(message_type: int, payload: bytes) -> None:
    """
    A reply message of the proxy's own that nobody needs.
    """


def _ignore_status(status: int) -> None:
    """
    The ReadyForQuery of such a reply.
    """


def _enters_copy_in(classification) -> bool:
    """
    Whether a statement may start a COPY FROM STDIN (after which the server
    takes nothing but COPY data until the copy ends).
    """
    c = classification
    if c.kind == "copy" and not c.is_read_only:
        return True
    return any(_enters_copy_in(part) for part in c.parts)


@attr.s(auto_attribs=True, slots=True)
class _BatchItem:
    """
    One held extended-protocol message, with the names routing needs
    (decoded once, when it arrives).

    @ivar name: the statement a Parse defines or a Bind uses, or what a
        Describe/Close names.
    @ivar portal: the portal a Bind defines or an Execute runs.
    @ivar kind: C{S} or C{P} for Describe and Close.
    @ivar sql: a Parse's query text.
    @ivar rest: for a Bind too long to hold (L{Session._routed_head}):
        C{payload} is its head, and this many bytes of it are still to come
        from the client, streamed behind the head.
    """

    type: int
    payload: bytes
    name: str = ""
    portal: str = ""
    kind: str = ""
    sql: str = ""
    rest: int = 0

    @classmethod
    def decode(cls, message_type: int, payload: bytes,
               codec: str = messages.UTF8_CODEC) -> "_BatchItem":
        """
        @param codec: the session's client codec, for a Parse's text.
        @raise messages.MessageFormatError: the message is malformed.
        """
        if message_type == messages.PARSE:
            parse = messages.decode_parse(payload, codec)
            return cls(message_type, payload, name=parse.statement, sql=parse.sql)
        if message_type == messages.BIND:
            portal, statement = messages.decode_bind_names(payload)
            return cls(message_type, payload, name=statement, portal=portal)
        if message_type == messages.EXECUTE:
            return cls(message_type, payload,
                       portal=messages.decode_execute(payload).portal)
        if message_type == messages.DESCRIBE:
            describe = messages.decode_describe(payload)
            return cls(message_type, payload, name=describe.name, kind=describe.kind)
        close = messages.decode_close(payload)
        return cls(message_type, payload, name=close.name, kind=close.kind)

    def frame(self) -> bytes:
        if self.rest:
            # The header announces the whole message; the rest follows.
            return _HEADER.pack(self.type, len(self.payload) + self.rest + 4) + \
                self.payload
        return messages.message(self.type, self.payload)


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

    def __init__(self, session: Session, remaining: int) -> None:
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
