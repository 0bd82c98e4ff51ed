"""
What a client session holds, and how it starts.

L{SessionState} sets up everything a session keeps -- its connections,
its routing state, the order of replies, the extended-protocol batch and
prepared statements, read-your-writes and the query cache's part -- and
picks the framer callbacks the client's messages arrive by.  The parts of
the session (one module each in this package) are mixins of it, composed
into L{twisted_pgpool.proxy.session.Session}; they are never used apart.
"""

from __future__ import annotations

from collections import deque
from typing import (
    TYPE_CHECKING,
    Callable,
    Deque,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    cast,
)

from twisted.internet import defer

from twisted_pgpool.backend.pool import PooledConnection
from twisted_pgpool.backend.protocol import BackendProtocol
from twisted_pgpool.cache.session import SessionCache
from twisted_pgpool.cache.steps import CachedQueries
from twisted_pgpool.cluster.model import Node
from twisted_pgpool.routing import causal, replication_mode
from twisted_pgpool.routing.catalog import CatalogRouting
from twisted_pgpool.routing.router import SessionRouter
from twisted_pgpool.wire import messages
from twisted_pgpool.wire.framing import StreamFramer

if TYPE_CHECKING:  # pragma: no cover
    from twisted_pgpool.cache.policy import InvalidationPlan
    from twisted_pgpool.cache.session import ReplyRecorder
    from twisted_pgpool.interfaces import ICachingSession, IReplySink
    from twisted_pgpool.proxy.frontend import FrontendProtocol
    from twisted_pgpool.proxy.session.extended import _BatchItem, _Statement
    from twisted_pgpool.proxy.session.streams import _Stream
    from twisted_pgpool.routing.router import Route
    from twisted_pgpool.service import ProxyCore
    from twisted_pgpool.sql.classifier import Classification

#: Client message types the session handles one by one.  Only COPY data
#: (CopyData, CopyDone, CopyFail) is passed straight to the primary.
CLIENT_WATCHED = frozenset(
    [
        messages.QUERY,
        messages.PARSE,
        messages.BIND,
        messages.DESCRIBE,
        messages.EXECUTE,
        messages.CLOSE,
        messages.SYNC,
        messages.FLUSH,
        messages.FUNCTION_CALL,
        messages.TERMINATE,
        messages.PASSWORD_MESSAGE,
        # One each per COPY: where the client's copy ends, for routing what
        # comes after it (CopyData, the bulk, passes through unwatched).
        messages.COPY_DONE,
        messages.COPY_FAIL,
    ]
)

#: What a session that routes nothing (C{relay.DirectRelay._direct_head})
#: lets pass by its head when long: it needs only names and the first words
#: of a statement, so even a 1 GB Query or Bind streams through.
_DIRECT_HEADS = frozenset([messages.QUERY, messages.PARSE, messages.BIND, messages.FUNCTION_CALL])

#: What a routing session (C{routed.RoutedMessages._routed_head}) streams
#: when long: a Bind's values and a function call's arguments are only
#: passed on; a Query or Parse must be read whole (classified, kept to
#: prepare again).
_ROUTED_HEADS = frozenset([messages.BIND, messages.FUNCTION_CALL])


def dml_relationships(entries: Iterable[str]) -> Dict[str, Set[str]]:
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


class SessionState:
    """
    What one client session holds, grouped by the part of the session
    that keeps it; see L{twisted_pgpool.proxy.session.Session}.

    @ivar client_message: the framer's callback for each watched client
        message (L{CLIENT_WATCHED}): C{_direct_message} in a session that
        routes nothing (L{relay}), C{_routed_message} otherwise
        (L{routed}).  Chosen once, when the session starts; an attribute,
        not a method, so that the framer calls the handler itself.
    @ivar client_head: the framer's callback for the head of a long
        message of a type in C{heads}: C{_direct_head} or C{_routed_head}.
    @ivar heads: the message types read by their head only when long.
    """

    client_message: Callable[[int, bytes], Optional[bytes]]
    client_head: Callable[[int, bytes, int], object]
    heads: FrozenSet[int]

    if TYPE_CHECKING:  # pragma: no cover
        # What the parts call of each other on self: they are only ever
        # used composed, as Session, where each of these is the method of
        # the part named (which the type checker holds to the signature
        # declared here).  Declared for the checker only: at run time a
        # call finds the part's method as before.

        # relay.py
        def _direct_message(self, message_type: int, payload: bytes) -> Optional[bytes]: ...
        def _direct_head(self, message_type: int, head: bytes, length: int) -> object: ...

        # routed.py
        def _routed_message(self, message_type: int, payload: bytes) -> bytes: ...
        def _routed_head(self, message_type: int, head: bytes, length: int) -> object: ...
        def client_read_ended(self) -> None: ...

        # simple.py
        def query(
            self, payload: bytes, lookup: Optional[bool] = None, fetched: object = None
        ) -> None: ...
        def _query_sent(
            self,
            classification: Classification,
            route: Route,
            sql: str,
            forward_id: int,
            node_ids: Tuple[int, ...],
            plan: Optional[InvalidationPlan] = None,
        ) -> None: ...
        def _remember_session_state(self, classification: Classification, sql: str) -> None: ...
        def _free_databases(self, sql: str) -> None: ...

        # extended.py
        def send_batch(
            self, sync: bool, lookup: Optional[bool] = None, fetched: object = None
        ) -> None: ...
        def _end_unsynced_batch(self) -> None: ...
        def _move_batch_to_primary(self) -> None: ...

        # no_primary.py
        def _refuse_write(self, classification: Classification, ready: bool) -> None: ...
        def _refuse_write_batch(self, classification: Classification, sync: bool) -> None: ...

        # names.py
        def _named_holders(
            self, classification: Classification
        ) -> Optional[Tuple[int, Tuple[int, ...]]]: ...
        def _named_batch_holders(
            self, classifications: Sequence[Classification], batch: Sequence[_BatchItem] = ()
        ) -> Optional[Tuple[int, Tuple[int, ...]]]: ...
        def _named_sent(
            self, classification: Classification, node_ids: Tuple[int, ...]
        ) -> None: ...

        # native.py
        def _replicate(
            self,
            frame: bytes,
            classification: Classification,
            sql: str,
            route: Route,
            plan: Optional[InvalidationPlan],
        ) -> None: ...
        def _run_replicated(
            self,
            frames_for: Callable[[Tuple[int, ...]], Dict[int, bytes]],
            may_wrap: bool,
            sent: Callable[[Tuple[int, ...]], None],
        ) -> None: ...
        def _refuse_batch(self, sync: bool) -> None: ...

        # own.py
        def _answer_own_statement(self, payload: bytes) -> bool: ...
        def _extended_local(self, message_type: int, payload: bytes) -> bool: ...

        # causal_reads.py
        def _may_commit_a_write(self, c: Classification) -> bool: ...
        def _ask_commit_position(self, for_client: bool = True) -> None: ...
        def _take_commit_reply(self) -> List[bytes]: ...
        def _ride_along(self, node_id: int, backend: BackendProtocol) -> Optional[bytes]: ...
        def _ask_replay_position(self, node: Node) -> bool: ...

        # ordering.py
        def _submit(
            self,
            route: Route,
            frames_for: Callable[[int], List[bytes]],
            opens_unit: bool,
            sent: Optional[Callable[[int, Tuple[int, ...]], None]],
            pinned: Optional[Tuple[int, Tuple[int, ...]]] = None,
            batch_unit: bool = False,
            recorder: Optional[ReplyRecorder] = None,
        ) -> None: ...
        def submit_local(self, answer: List[bytes], ready: bool = True) -> None: ...
        def run_or_wait(self, attempt: Callable[[], bool]) -> None: ...
        def unblock(self) -> None: ...
        def _hold_client(self) -> None: ...
        def _throttle(self) -> None: ...

        # streams.py
        def _start_stream(self, rest: int) -> _Stream: ...
        def _streamed_to(self, node_id: int, frames: List[bytes]) -> List[bytes]: ...
        def pass_to_primary(self, data: bytes) -> None: ...
        def _write_to_primary(self, data: bytes) -> bool: ...

        # links.py
        def _targets(self, route: Route) -> Optional[Tuple[int, Tuple[int, ...]]]: ...
        def _connect(self, node: Node) -> None: ...
        def _fail_primary_transaction(self) -> None: ...
        def drop_node(self, node_id: int) -> None: ...

        # caching.py
        def cache_usable(self) -> bool: ...
        def _release_ready(self, status: int, waits: List[defer.Deferred]) -> None: ...
        def _route_with_catalog(
            self,
            classification: Classification,
            sql: str,
            route: Route,
            lookup: Optional[bool],
            retry: Callable[[bool], None],
        ) -> Optional[Tuple[Classification, Route]]: ...
        def _batch_with_catalog(
            self, batch: List[_BatchItem], lookup: Optional[bool], retry: Callable[[bool], None]
        ) -> Optional[Tuple[Dict[str, Classification], Optional[Route]]]: ...
        def _catalog_sent(self, classification: Classification, sql: str) -> None: ...

    def __init__(
        self,
        frontend: "FrontendProtocol",
        core: "ProxyCore",
        primary: PooledConnection,
        framer: StreamFramer,
        open_connection: Optional[Callable[[Node], defer.Deferred]],
        no_primary: bool = False,
    ) -> None:
        """
        @param primary: the session's first connection: to the primary, or
            with C{no_primary} to the standby that serves the session.
        @param no_primary: no primary was usable when the session began
            (L{no_primary}): writes are refused, never sent to a standby.
        """
        self.frontend = frontend
        self.core = core
        self.framer = framer
        config = core.config

        # -- the connections (links.py) ---------------------------------
        self.primary_id = primary.key.node_id
        self.links: Dict[int, PooledConnection] = {self.primary_id: primary}
        self._primary_backend = primary.backend
        self._open_connection = open_connection
        self._connecting: Dict[int, defer.Deferred] = {}
        # Nodes this session stopped reading from (down, or failed to open).
        self._unusable: Set[int] = set()
        # The primary's transaction is being failed after a statement
        # failed inside it on a load-balance node.
        self._failing_primary = False
        self.closed = False
        # Served by a standby (no_primary.py): primary_id is that standby.
        self.no_primary = no_primary

        # -- routing ------------------------------------------------------
        # Native replication mode: writes go to every node (native.py).
        self._native = native = replication_mode.is_native(config)
        # A refused extended-protocol write: the rest of its batch is
        # skipped up to its Sync.
        self._refusing_batch = False
        self.router = SessionRouter(
            load_balance=config.load_balance_mode
            and config.backend_clustering_mode in ("streaming_replication", "native_replication")
            and open_connection is not None,
            disable_load_balance_on_write=config.disable_load_balance_on_write,
            dml_relationships=dml_relationships(config.dml_adaptive_object_relationship_list),
            native=native,
            replicate_select=native and config.replicate_select,
            no_primary=no_primary,
        )
        self.statement_level = config.statement_level_load_balance
        self._log_statements = config.log_statement or config.log_per_node_statement
        self._track_idle = config.client_idle_limit > 0
        usable = sum(1 for n in core.cluster.nodes if n.is_usable)
        # A session with no primary classifies every statement, to refuse
        # the writes.
        self.direct = not no_primary and (
            (not self.router.load_balance and not native) or usable <= 1
        )
        self.lb_node: Optional[Node] = None
        if no_primary:
            # Its standby was chosen for it (by the balancer, when it could
            # be reached): the session's reads go there too.
            self.lb_node = core.cluster.nodes[self.primary_id]
        elif not self.direct:
            self.lb_node = core.balancer.choose(
                frontend.user or "", frontend.database or "", frontend.application_name
            )
        self._match_local = core.inspector.match
        self._classify = core.classify

        # -- read-your-writes (causal_reads.py) ---------------------------
        # Only where reads may leave the primary.
        self.causal = causal.CausalState(
            core.reactor,
            wait_timeout=config.causal_wait_timeout,
            min_lsn=getattr(frontend, "startup_min_lsn", 0),
        )
        self._read_your_writes = (
            config.read_your_writes == "session"
            and not self.direct
            and not native
            and not no_primary
        )
        # While a statement is being sent: what else goes in the same write.
        self._outbox: Optional[List[bytes]] = None
        # A committing write's reply, kept until its position is in so that
        # reply, token and ReadyForQuery leave in one send (see client_write).
        self._commit_reply: Optional[List[bytes]] = None
        self._commit_reply_size = 0

        # -- the proxy's own statements in the extended protocol (own.py) --
        self._local_statements: Dict[str, str] = {}
        self._local_portals: Dict[str, str] = {}
        # Whether this batch (since the last Sync) reached a server; a Sync
        # ending a batch of the proxy's own statements only is answered here.
        self._batch_reached_server = False

        # -- the query cache (caching.py, cache/steps.py) ------------------
        self._cache: Optional[SessionCache] = None
        # The query cache's steps in this session's statements.
        self._cache_steps: Optional[CachedQueries] = None
        # The primary's current reply ends without its ReadyForQuery until
        # a remote cache confirms the reply's invalidations.
        self._hold_ready = False
        # Not without a primary: only the primary's results may be stored
        # (a lagging standby's could be old), and nothing writes.
        query_cache = None if no_primary else getattr(core, "query_cache", None)
        if query_cache is not None:
            self._cache = SessionCache(
                query_cache,
                frontend.user or "",
                frontend.database or "",
                getattr(frontend, "_settings", None) or {},
            )
            # (The casts: self is part of Session, which implements
            # ICachingSession and IReplySink; a part alone does not.)
            self._cache_steps = CachedQueries(
                cast("ICachingSession", self), self._cache, self._log_statements, native
            )
            # The cache needs every statement classified: even a session
            # with a single node takes the routed path (all to the primary).
            if self.direct:
                self.router.load_balance = False

        # -- routing that needs the catalog (routing/catalog.py) -----------
        # Only where reads are balanced; the facts are the query cache's.
        self._catalog_routing: Optional[CatalogRouting] = None
        self._catalog_changed_in_transaction = False
        if (
            self.router.load_balance
            and not self.direct
            and getattr(core, "catalogs", None) is not None
        ):
            self._catalog_routing = CatalogRouting(
                core.classify_relaxed,
                check_functions=not (config.write_function_list or config.read_only_function_list),
                check_unlogged_table=config.check_unlogged_table,
            )

        # -- how client messages arrive (relay.py, routed.py) --------------
        # Long messages seen by their head only (StreamFramer.redirect).  A
        # session replicating writes (native) or caching results reads
        # them whole, within max_buffered_message_length.
        if self.direct and self._cache is None:
            self.client_message = self._direct_message
            self.client_head = self._direct_head
            self.heads = _DIRECT_HEADS
        else:
            self.client_message = self._routed_message
            self.client_head = self._routed_head
            self.heads = _ROUTED_HEADS if not native and self._cache is None else frozenset()
        # The rest of a long client message being passed on as it arrives
        # (streams.py).
        self._stream: Optional[_Stream] = None

        # -- the order of replies (ordering.py) ----------------------------
        # The backend whose reply is being passed to the client.
        self.owner: Optional[BackendProtocol] = None
        # Asynchronous messages of other nodes, held until the owner is done.
        self._held: List[bytes] = []
        # What waits for its turn, in order (run_or_wait).
        self._waiting: Deque[Callable[[], bool]] = deque()
        self._unblocking = False
        # Too many unanswered messages (MAX_UNANSWERED): the client waits.
        self._throttled = False
        # The client's stream is inside a COPY FROM STDIN, as far as the
        # proxy can tell: a statement that may start one was submitted (in
        # the client's order, even if it waits to leave), and neither the
        # client's CopyDone/CopyFail nor the primary's last ReadyForQuery
        # with nothing queued has ended it.
        self._copy_in_sent = False
        # The client's stream ended (finish_with): it is never read again.
        self._finishing = False

        # -- extended-protocol batches (extended.py) -----------------------
        self._batch: List[_BatchItem] = []
        self._batch_bytes = 0
        # A batch flushed without a Sync yet: (the node whose replies the
        # client gets, the others); the rest of it must follow there.
        self._batch_route: Optional[Tuple[int, Tuple[int, ...]]] = None
        # Nodes whose reply unit for the current batch is open.
        self._batch_opened: Set[int] = set()
        self.statements: Dict[str, _Statement] = {}
        # What each node has prepared: name -> Parse payload.
        self._node_statements: Dict[int, Dict[str, bytes]] = {self.primary_id: {}}
        # The node each named portal was bound on.
        self._portals: Dict[str, int] = {}
        # The nodes each statement prepared by SQL PREPARE was sent to
        # (EXECUTE and DEALLOCATE go there: names.py).
        self._sql_statements: Dict[str, Tuple[int, ...]] = {}
        # Native replication mode: the statement each named portal runs.
        self._portal_statements: Dict[str, str] = {}
        # What a node opened mid-session must replay to match the others.
        self._session_sql: List[str] = []
        self._begin_sql: Optional[str] = None
        self._transaction_sql: List[str] = []

        # -- counters (relay.py) -------------------------------------------
        # SHOW POOL_BACKEND_STATS: the primary's statement counters, and
        # where a session that routes nothing (_direct_message) keeps the
        # counter of each prepared statement and portal, by name.
        self._primary_counts = core.cluster.nodes[self.primary_id].statement_counts
        self._direct_statements: Dict[bytes, int] = {}
        self._direct_portals: Dict[bytes, int] = {}
        primary.backend.error_counts = core.cluster.nodes[self.primary_id].error_counts
        primary.backend.attach(cast("IReplySink", self))
