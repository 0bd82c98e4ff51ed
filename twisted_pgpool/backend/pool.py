"""
The connection pool: backend connections kept after their client leaves and
handed to the next client with the same user and database.

Pgpool-II's parameters keep their meaning, mapped onto one event-driven
process instead of forked children (see docs/pooling.md).  In Pgpool-II
each of C{num_init_children} children caches up to C{max_pool} (user,
database) pairs, one connection per node each; so one pair can have up to
C{num_init_children} cached connections to a node, and all pairs together
up to C{num_init_children * max_pool}.  Here:

  - C{num_init_children}: idle connections kept per (user, database,
    node), as many as Pgpool-II's children could cache for one pair;
  - C{num_init_children * max_pool}: the most connections the proxy ever
    holds to one node, idle and busy together (Pgpool-II's worst case).
    When it is reached, the least recently used idle connection to that
    node, of any pair, is closed to make room (a Pgpool-II child closes
    its own least recently used pair);
  - C{connection_life_time}: an idle connection is closed after this long;
  - C{child_life_time}: a connection is retired after this long in total;
  - C{child_max_connections}: a connection is retired after serving this
    many clients;
  - C{reset_query_list}: run before a connection is pooled; a connection
    whose reset fails is closed, never reused.  A connection no statement
    of the session reached (the primary of a session whose reads all went
    to a standby) is pooled at once when the list only undoes session state
    (L{STATE_ONLY_RESETS}, as the default C{ABORT; DISCARD ALL} does): its
    state is the one its last reset left, so running it would change
    nothing but cost a round trip.

Reuse is safe without a byte-identical startup packet (Pgpool-II's rule):
a pooled connection is opened with only the user and database, so after
the reset its settings are the server's defaults, and each client's own
startup settings (application_name, client_encoding, C{-c} options...) are
applied with SET when it takes the connection.
"""

from __future__ import annotations

import re
from typing import (
    TYPE_CHECKING,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    cast,
)

import attr
from twisted.internet import defer
from twisted.internet.interfaces import IConsumer, IDelayedCall
from twisted.logger import Logger

from twisted_pgpool import logs
from twisted_pgpool.wire import messages

if TYPE_CHECKING:  # pragma: no cover
    from twisted_pgpool.backend.protocol import BackendProtocol

log = Logger(observer=logs.observer)

#: Reset statements (upper case, single spaces) whose only effect is to
#: undo session state a client's own statements created: an open
#: transaction, settings, prepared statements and plans, cursors, LISTEN,
#: temporary tables, advisory locks, the session user.  A connection that
#: no statement reached since its last reset has none of it to undo.  Any
#: other statement in C{reset_query_list} (a function of the site's, say)
#: runs at every release, as in Pgpool-II.
STATE_ONLY_RESETS = frozenset(
    [
        "ABORT",
        "ROLLBACK",
        "DISCARD ALL",
        "DISCARD PLANS",
        "DISCARD SEQUENCES",
        "DISCARD TEMP",
        "DISCARD TEMPORARY",
        "RESET ALL",
        "DEALLOCATE ALL",
        "DEALLOCATE PREPARE ALL",
        "CLOSE ALL",
        "UNLISTEN *",
        "SET SESSION AUTHORIZATION DEFAULT",
        "RESET SESSION AUTHORIZATION",
        "SELECT PG_ADVISORY_UNLOCK_ALL()",
    ]
)

#: Pgpool-II never caches connections to these databases.
NEVER_POOLED_DATABASES = frozenset(["template0", "template1", "postgres", "regression"])

#: Startup parameters that are not session settings.
_IDENTITY_PARAMETERS = frozenset(["user", "database"])
#: Startup parameters that can only be given at connection start.
_STARTUP_ONLY_PARAMETERS = frozenset(["replication"])

#: Settings PostgreSQL accepts only when a connection starts (PGC_BACKEND
#: and the like): a client giving them gets a connection opened with them.
_BACKEND_ONLY_SETTINGS = frozenset(
    [
        "ignore_system_indexes",
        "post_auth_delay",
        "log_connections",
        "log_disconnections",
        "jit_debugging_support",
        "jit_profiling_support",
    ]
)

_OPTION_TOKEN = re.compile(r"(?:\\.|[^\s\\])+")


@attr.s(auto_attribs=True, frozen=True, cache_hash=True)
class PoolKey:
    """
    What two clients must share to use the same backend connection.

    @ivar startup_only: parameters that can only be set when a connection
        starts (C{replication}, C{options} the proxy cannot turn into SET);
        usually empty.
    """

    user: str
    database: str
    node_id: int
    startup_only: Tuple[Tuple[str, str], ...] = ()


def parse_options(options: str) -> Optional[Dict[str, str]]:
    """
    Turn a startup C{options} value (C{-c name=value --name=value}) into
    settings, as PostgreSQL reads it (backslash escapes a space).

    @return: the settings, or None if it holds anything but settings
        (command-line switches only a new server process can take).
    """
    tokens = [re.sub(r"\\(.)", r"\1", t) for t in _OPTION_TOKEN.findall(options)]
    settings: Dict[str, str] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "-c" and i + 1 < len(tokens):
            assignment = tokens[i + 1]
            i += 2
        elif token.startswith("-c") and len(token) > 2:
            assignment = token[2:]
            i += 1
        elif token.startswith("--") and "=" in token:
            assignment = token[2:]
            i += 1
        else:
            return None
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            return None
        settings[name.replace("-", "_")] = value
    return settings


def split_startup_parameters(
    parameters: Dict[str, str],
) -> Tuple[Dict[str, str], Tuple[Tuple[str, str], ...]]:
    """
    Split a client's startup parameters into session settings (which SET
    can apply to a reused connection) and startup-only parameters.
    """
    settings: Dict[str, str] = {}
    from_options: Dict[str, str] = {}
    startup_only: List[Tuple[str, str]] = []
    for name, value in parameters.items():
        if name in _IDENTITY_PARAMETERS:
            continue
        if (
            name in _STARTUP_ONLY_PARAMETERS
            or name.startswith("_pq_.")
            or name.lower() in _BACKEND_ONLY_SETTINGS
        ):
            startup_only.append((name, value))
        elif name == "options":
            parsed = parse_options(value)
            if parsed is None or any(n.lower() in _BACKEND_ONLY_SETTINGS for n in parsed):
                startup_only.append((name, value))
            else:
                from_options.update(parsed)
        else:
            settings[name] = value
    # PostgreSQL applies options first: an explicit parameter wins.
    return {**from_options, **settings}, tuple(sorted(startup_only))


def _quote_literal(value: str) -> str:
    if "\\" in value:
        return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    return "'" + value.replace("'", "''") + "'"


def settings_statement(
    wanted: Dict[str, str], applied: Dict[str, str], reported: Dict[str, str]
) -> Optional[str]:
    """
    The statement that gives a connection a client's settings.

    It uses C{set_config()}, which reads each value exactly as a startup
    option or the configuration file would (C{search_path=a,b} is a list
    of two schemas; C{SET search_path = 'a,b'} would be one schema), and
    C{RESET} for settings the previous client had and this one has not.
    Settings that already have the wanted value are skipped: usually
    everything, since clients of one application send the same settings.

    @param wanted: the client's settings.
    @param applied: the settings the connection carries now, beyond the
        server's defaults.
    @param reported: the connection's current ParameterStatus values (the
        defaults of the reported settings).
    @return: a query, or None when nothing needs doing.
    """
    lowered = {name.lower(): value for name, value in reported.items()}
    calls = []
    # A setting the last client changed is reset before this client's value
    # is set: some settings merge a new value with the current one
    # (DateStyle 'SQL' keeps the previous client's 'DMY' order), and a
    # client must see the server's defaults plus its own options, nothing
    # of another client's.
    changed = set()
    for name, value in wanted.items():
        current = applied.get(name, lowered.get(name.lower()))
        if current == value:
            continue
        if name in applied:
            changed.add(name)
        calls.append(
            f"pg_catalog.set_config({_quote_literal(name)}, {_quote_literal(value)}, false)"
        )
    resets = [
        f"RESET {_quote_identifier(name)}"
        for name in applied
        if name not in wanted or name in changed
    ]
    statements = resets + (["SELECT " + ", ".join(calls)] if calls else [])
    if not statements:
        return None
    return "; ".join(statements)


def reapply_statement(applied: Dict[str, str]) -> Optional[str]:
    """
    After the reset (DISCARD ALL), give a connection back the settings its
    last client had, so that the next client of the same application finds
    them in place and its connection needs no round trip.
    """
    if not applied:
        return None
    if len(applied) == 1 and "application_name" in applied:
        # What most clients set (libpq's fallback_application_name): a
        # plain string, for which SET means what set_config() does, and
        # which the server runs without planning a SELECT.
        return "SET application_name TO " + _quote_literal(applied["application_name"])
    return "SELECT " + ", ".join(
        f"pg_catalog.set_config({_quote_literal(name)}, {_quote_literal(value)}, false)"
        for name, value in applied.items()
    )


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@attr.s(auto_attribs=True, eq=False)
class PooledConnection:
    """
    A backend connection the pool knows, busy or idle.

    @ivar poolable: whether it may serve another client after this one
        (False for connections opened for clients the proxy could not
        authenticate itself, or with connection_cache off).
    @ivar sessions_served: clients that used it so far.
    @ivar applied: the client settings it carries beyond the server's
        defaults (kept across the reset, see L{reapply_statement}).
    @ivar greeting: the ParameterStatus messages last sent to a client,
        built from the server settings in C{greeting_parameters}.
    """

    backend: "BackendProtocol"
    key: PoolKey
    created_at: float
    poolable: bool
    last_used_at: float = 0.0
    client_connected_at: Optional[float] = None
    client_disconnected_at: Optional[float] = None
    sessions_served: int = 0
    in_use: bool = True
    resetting: bool = False
    pool_id: int = 0
    applied: Dict[str, str] = attr.ib(factory=dict)
    greeting: bytes = attr.ib(default=b"", repr=False)
    greeting_parameters: Dict[str, str] = attr.ib(factory=dict, repr=False)
    _idle_timer: Optional[IDelayedCall] = None

    def parameter_status_messages(self) -> bytes:
        """
        The ParameterStatus part of a client's greeting: the server's
        current settings.

        The reset of the last client changes and restores some of them
        (C{DISCARD ALL} then the last client's C{application_name}), so the
        encoded messages are kept here as long as the settings are equal
        to the ones they were built from, rather than rebuilt for each
        client.
        """
        parameters = self.backend.parameters
        if parameters != self.greeting_parameters or not self.greeting:
            self.greeting = self.backend.parameter_status_messages()
            self.greeting_parameters = dict(parameters)
        return self.greeting


class ConnectionPool:
    """
    Keeps idle backend connections and enforces the connection budget.

    @ivar reactor: schedules idle timeouts and gives the time.
    @ivar enabled: C{connection_cache}.
    @ivar max_idle_per_key: idle connections kept per key
        (C{num_init_children}: one per Pgpool-II child); keeping one more
        closes the key's least recently used.
    @ivar budget_per_node: the most connections held to one node, busy
        and idle, of all keys together (C{num_init_children * max_pool});
        see L{make_room}.
    @ivar reset_timeout: how long a reset may take (C{reset_timeout});
        a connection whose reset has not answered by then is in a state
        nobody knows (a server still reading the rest of a message, say)
        and is closed, so that clients waiting for it (L{wait_for_reset})
        go on.  0 waits forever.
    """

    #: Whether every statement of L{reset_query_list} is in
    #: L{STATE_ONLY_RESETS} (kept up to date by its setter).
    _reset_state_only: bool

    def __init__(
        self,
        reactor,
        enabled: bool,
        max_idle_per_key: int,
        budget_per_node: int,
        connection_life_time: float,
        child_life_time: float,
        child_max_connections: int,
        reset_query_list: Sequence[str],
        cancel: Callable[["BackendProtocol"], object],
        reset_timeout: float = 10.0,
    ) -> None:
        self.reactor = reactor
        self.enabled = enabled
        self.max_idle_per_key = max_idle_per_key
        self.budget_per_node = budget_per_node
        self.connection_life_time = connection_life_time
        self.child_life_time = child_life_time
        self.child_max_connections = child_max_connections
        self.reset_query_list = list(reset_query_list)
        self.reset_timeout = reset_timeout
        self._cancel = cancel
        self._idle: Dict[PoolKey, List[PooledConnection]] = {}
        self._all: Set[PooledConnection] = set()
        # Per key, one list per reset in progress of the clients waiting
        # for it.
        self._resetting: Dict[PoolKey, List[List[defer.Deferred]]] = {}
        self._next_pool_id = 0
        self.opened = 0
        self.reused = 0
        self.closed = 0

    @property
    def reset_query_list(self) -> List[str]:
        """
        The statements of C{reset_query_list}, in order.
        """
        return self._reset_query_list

    @reset_query_list.setter
    def reset_query_list(self, queries: Sequence[str]) -> None:
        self._reset_query_list = list(queries)
        self._reset_state_only = all(
            " ".join(query.upper().split()) in STATE_ONLY_RESETS for query in queries
        )

    # -- inspection ------------------------------------------------------------

    def __iter__(self) -> Iterator[PooledConnection]:
        return iter(sorted(self._all, key=lambda c: c.pool_id))

    def count(self, node_id: Optional[int] = None, idle: Optional[bool] = None) -> int:
        """
        How many connections the pool holds (to one node; idle or busy).
        """
        return sum(
            1
            for c in self._all
            if (node_id is None or c.key.node_id == node_id)
            and (idle is None or c.in_use is not idle)
        )

    # -- taking and adding ---------------------------------------------------

    def is_poolable(self, user: str, database: str, verified: bool) -> bool:
        """
        Whether a connection for this client may be shared later.
        """
        return self.enabled and verified and database not in NEVER_POOLED_DATABASES

    def checkout(self, key: PoolKey) -> Optional[PooledConnection]:
        """
        Take the most recently used idle connection for C{key}, if any.
        """
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not idle:
                del self._idle[key]
            self._cancel_timer(conn)
            if conn.backend.closed:
                self._forget(conn)
                continue
            conn.in_use = True
            conn.client_connected_at = self.reactor.seconds()
            self.reused += 1
            return conn
        return None

    def make_room(self, node_id: int) -> None:
        """
        Before opening a connection to a node, close the least recently
        used idle one, of any key, if the node's budget is used up.

        Idle connections of one key may fill most of the budget (up to
        L{max_idle_per_key}); a client of another key then takes the place
        of the connection nobody has used for longest, as a Pgpool-II
        child gives up its least recently used pool slot.
        """
        while self.count(node_id) >= self.budget_per_node:
            candidates = [c for c in self._all if not c.in_use and c.key.node_id == node_id]
            if not candidates:
                log.warn(
                    "connection budget of node {node_id} ({budget}) is "
                    "exhausted by busy connections",
                    node_id=node_id,
                    budget=self.budget_per_node,
                )
                return
            self.discard(min(candidates, key=lambda c: c.last_used_at))

    def add(self, backend: "BackendProtocol", key: PoolKey, poolable: bool) -> PooledConnection:
        """
        Register a newly opened connection, in use by the client that
        asked for it.
        """
        now = self.reactor.seconds()
        self._next_pool_id += 1
        conn = PooledConnection(
            backend,
            key,
            created_at=now,
            poolable=poolable,
            last_used_at=now,
            client_connected_at=now,
            pool_id=self._next_pool_id,
        )
        self._all.add(conn)
        self.opened += 1
        return conn

    # -- giving back ---------------------------------------------------------

    async def release(self, conn: PooledConnection) -> None:
        """
        The client is done with C{conn}: reset it and keep it, or close it.

        A connection still working for the client (a query running, a
        COPY in progress, an Execute not yet followed by Sync) is cancelled
        and closed, never reset: resetting would wait for, or even commit,
        work the client abandoned.
        """
        resetting = self.give_back(conn)
        if resetting is not None:
            await resetting

    def give_back(self, conn: PooledConnection) -> Optional[defer.Deferred]:
        """
        L{release} without a coroutine, for the once-per-client path.

        @return: None when the connection was closed, forgotten or kept at
            once, or a Deferred that fires (with None) once its reset is over
            and it is kept or closed.
        """
        backend = conn.backend
        now = self.reactor.seconds()
        conn.sessions_served += 1
        conn.client_disconnected_at = now
        conn.last_used_at = now
        if backend.closed:
            self._forget(conn)
            return None
        # Read before detaching, which forgets the outstanding replies.
        busy = backend.busy
        owes_reply = backend.pending_ready > 0 or backend.unsynced_execute
        backend.detach(lambda reason: self._forget(conn))
        if busy:
            if owes_reply:
                # A query may be running: stop it, or the server would go
                # on until it ends (it does not notice a closed socket).
                self._cancel(backend)
            self.discard(conn)
            return None
        if not conn.poolable or self._retired(conn, now):
            self.discard(conn)
            return None
        if (
            backend.units_since_attach == 0
            and self._reset_state_only
            and backend.transaction_status == messages.TRANSACTION_IDLE
        ):
            # Nothing of the session's reached the server: it is as its
            # last reset (and the client's settings, in conn.applied) left it.
            self._keep(conn)
            return None
        return self._reset(conn)

    def wait_for_reset(self, key: PoolKey) -> Optional[defer.Deferred]:
        """
        A Deferred that fires when a connection for C{key} now being reset
        is done (kept or closed), or None if none is being reset that
        another client does not already wait for: a client reconnecting at
        once can wait for it instead of opening another.

        A reset gives back one connection, so each is waited for by one
        client at most.  Queued clients, which are already authenticated,
        reach this together when several sessions end at once; all waiting
        for the first reset, all but one found nothing when it ended and
        opened new connections, past the node's budget.
        """
        for waiters in self._resetting.get(key, ()):
            if not waiters:
                waiter: defer.Deferred = defer.Deferred()
                waiters.append(waiter)
                return waiter
        return None

    def _reset(self, conn: PooledConnection) -> defer.Deferred:
        """
        Run C{reset_query_list} (and give back the last client's settings)
        in one round trip; keep the connection if all went well.
        """
        backend = conn.backend
        queries = [
            q
            for q in self.reset_query_list
            if not (
                q.strip().upper() in ("ABORT", "ROLLBACK")
                and backend.transaction_status == messages.TRANSACTION_IDLE
            )
        ]
        reapply = reapply_statement(conn.applied)
        conn.resetting = True
        # Clients waiting for this reset (see wait_for_reset).
        waiters: List[defer.Deferred] = []
        self._resetting.setdefault(conn.key, []).append(waiters)
        try:
            d = backend.run_internal_pipeline(queries + [reapply] if reapply else queries)
        except Exception:
            d = defer.fail()
        if self.reset_timeout:
            d.addTimeout(self.reset_timeout, self.reactor)
        d.addCallbacks(
            self._reset_done, self._reset_lost, callbackArgs=(conn, queries), errbackArgs=(conn,)
        )
        d.addBoth(self._reset_over, conn.key, waiters)

        def over(result: object) -> object:
            conn.resetting = False
            return result

        d.addBoth(over)
        return d

    def _reset_done(self, results: list, conn: PooledConnection, queries: List[str]) -> None:
        backend = conn.backend
        for query, result in zip(queries + ["(settings of the last client)"], results):
            if result.error is not None:
                log.warn(
                    "reset query {query!r} failed on backend node "
                    "{node_id}: {message}; closing the connection",
                    query=query,
                    node_id=backend.node_id,
                    message=result.error.get("M", ""),
                )
                self.discard(conn)
                return
        if backend.transaction_status != messages.TRANSACTION_IDLE:
            self.discard(conn)
            return
        self._keep(conn)

    def _reset_lost(self, failure, conn: PooledConnection) -> None:
        if failure.check(defer.TimeoutError):
            log.warn(
                "reset of a backend connection to node {node_id} did "
                "not finish within reset_timeout ({timeout:g} s); "
                "closing it",
                node_id=conn.key.node_id,
                timeout=self.reset_timeout,
            )
            conn.backend.abort()
        else:
            log.info("backend connection lost during reset: {error}", error=failure.value)
        self._forget(conn)

    def _reset_over(self, result: object, key: PoolKey, waiters: List[defer.Deferred]) -> object:
        pending = self._resetting[key]
        # By identity: another reset's list of waiters may be equal.
        for i, entry in enumerate(pending):
            if entry is waiters:
                del pending[i]
                break
        if not pending:
            del self._resetting[key]
        for waiter in waiters:
            waiter.callback(None)
        return result

    def _retired(self, conn: PooledConnection, now: float) -> bool:
        if self.child_max_connections and conn.sessions_served >= self.child_max_connections:
            return True
        if self.child_life_time and now - conn.created_at >= self.child_life_time:
            return True
        return False

    def _keep(self, conn: PooledConnection) -> None:
        if conn.backend.closed:
            self._forget(conn)
            return
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= self.max_idle_per_key:
            self.discard(idle[0])
            idle = self._idle.setdefault(conn.key, [])
        conn.in_use = False
        idle.append(conn)
        timeout = self._idle_timeout(conn)
        if timeout is not None:
            conn._idle_timer = self.reactor.callLater(timeout, self._expire, conn)

    def _idle_timeout(self, conn: PooledConnection) -> Optional[float]:
        limits = []
        if self.connection_life_time:
            limits.append(self.connection_life_time)
        if self.child_life_time:
            limits.append(max(0.0, conn.created_at + self.child_life_time - self.reactor.seconds()))
        return min(limits) if limits else None

    def _expire(self, conn: PooledConnection) -> None:
        conn._idle_timer = None
        if not conn.in_use:
            log.debug("closing idle backend connection to node {node_id}", node_id=conn.key.node_id)
            self.discard(conn)

    def discard(self, conn: PooledConnection) -> None:
        """
        Close a connection and forget it.
        """
        self._forget(conn)
        conn.backend.terminate()

    def discard_broken(self, conn: PooledConnection) -> None:
        """
        Close a connection whose state is unknown (its client left in the
        middle of a message to it): at once, with nothing more sent, and
        never to be handed out again.
        """
        # A pooled connection is connected, and its transport (TCP, UNIX,
        # TLS) is also the consumer a client's producer was registered on.
        cast(IConsumer, conn.backend.transport).unregisterProducer()
        self._forget(conn)
        conn.backend.abort()

    def close_node(self, node_id: int) -> None:
        """
        Close the idle connections to a node (it went down); busy ones end
        with their sessions.
        """
        for conn in [c for c in self._all if not c.in_use and c.key.node_id == node_id]:
            self.discard(conn)

    def close_database(self, database: str) -> int:
        """
        Close every idle connection to C{database}, on every node: a
        client is about to drop, rename or copy it, which the server
        refuses while other sessions are connected to it.

        @return: how many were closed.
        """
        # Idle ones, and ones being reset (given back by their client, not
        # yet idle): neither serves anybody.
        idle = [
            c for c in self._all if c.key.database == database and (not c.in_use or c.resetting)
        ]
        for conn in idle:
            self.discard(conn)
        if idle:
            log.info(
                "closed {count} idle pooled connection(s) to database "
                "{database} before a statement that needs it free",
                count=len(idle),
                database=database,
            )
        return len(idle)

    def close_all(self) -> None:
        """
        Close every idle connection (busy ones end with their sessions).
        """
        for conn in [c for c in self._all if not c.in_use]:
            self.discard(conn)

    def _forget(self, conn: PooledConnection) -> None:
        self._cancel_timer(conn)
        if conn in self._all:
            self._all.discard(conn)
            self.closed += 1
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.key]

    @staticmethod
    def _cancel_timer(conn: PooledConnection) -> None:
        timer, conn._idle_timer = conn._idle_timer, None
        if timer is not None and timer.active():
            timer.cancel()
