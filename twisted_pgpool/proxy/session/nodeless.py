"""
A session with no backend connection at all: no node could be used when
the client logged in (every node down or unreachable, or none configured),
and the proxy had authenticated the client itself (pool_passwd, or a
pool_hba.conf method that needs no server).

It answers what the proxy answers without a server -- C{SHOW POOL_*},
C{PGPOOL SHOW}, C{SET/RESET/SHOW pgpool.min_lsn}, C{PGPOOL SET CACHE
DELETE} -- in both protocols, because those reports are what an operator
needs when the servers are gone; any other statement gets an error
(L{no_backend_statement_error}).  Pgpool-II refuses such a client at login
(C{pgpool is not accepting any new connections}); a client whose password
only a server could check is still refused: so when no node is usable
(L{no_backend_error}, sent by L{twisted_pgpool.proxy.frontend}), with
C{08006 unable to connect} when the nodes are up but none answers.

It never gains a server: once a node is usable again, new sessions use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Sequence, Tuple

from twisted_pgpool import __version__
from twisted_pgpool.cache.session import cache_delete_reply, match_cache_delete
from twisted_pgpool.cluster.model import Node
from twisted_pgpool.proxy.session.extended import _BATCHED
from twisted_pgpool.proxy.session.own import OwnStatements
from twisted_pgpool.routing import causal
from twisted_pgpool.wire import errors, messages
from twisted_pgpool.wire.framing import StreamFramer

if TYPE_CHECKING:  # pragma: no cover
    from twisted_pgpool.backend.pool import PooledConnection
    from twisted_pgpool.backend.protocol import BackendProtocol
    from twisted_pgpool.proxy.cancel import CancelTarget
    from twisted_pgpool.proxy.frontend import FrontendProtocol

_READY_IDLE = messages.ready_for_query(messages.TRANSACTION_IDLE)


def no_backend_statement_error() -> errors.PgError:
    """
    What a statement other than the proxy's own gets in a session without
    a backend: Pgpool-II's words for the state of the nodes, and what this
    session can still do.
    """
    return errors.error(
        errors.CANNOT_CONNECT_NOW,
        "no backend node is available to run this statement",
        detail="all backend nodes are down, pgpool requires at least one "
        "valid node; this session was opened without one and answers "
        "only the proxy's own statements (SHOW POOL_NODES and the "
        "other SHOW POOL_* reports, PGPOOL SHOW)",
        hint="once a node is up again (pcp_attach_node, twisted-pgpool "
        "attach N), reconnect: new sessions use it",
    )


def no_backend_error(nodes: Sequence[Node]) -> errors.PgError:
    """
    Pgpool-II's refusal when no node is usable -- every node down or
    detached, or none configured -- (C{pgpool is not accepting any new
    connections}, with its detail), for a client the proxy cannot
    authenticate without a server.  Pgpool-II sends it as an ERROR with
    the non-standard SQLSTATE 08S01; here it is PostgreSQL's FATAL for a
    server not accepting connections, 57P03.  The hint says what to do in
    this case.
    """
    if not nodes:
        hint = (
            "no backend is configured: add backend_hostname0 and "
            "backend_port0 to the configuration, reload it, and attach the "
            "node (pcp_attach_node, twisted-pgpool attach 0)"
        )
    elif not any(n.is_usable for n in nodes):
        hint = (
            "repair the backend nodes and attach them again "
            "(pcp_attach_node, twisted-pgpool attach N)"
        )
    else:
        hint = "repair the backend nodes: none of them could be reached"
    return errors.fatal(
        errors.CANNOT_CONNECT_NOW,
        "pgpool is not accepting any new connections",
        detail="all backend nodes are down, pgpool requires at least one valid node",
        hint=hint,
    )


def nodeless_parameters(parameters: Dict[str, str]) -> List[Tuple[str, str]]:
    """
    The ParameterStatus values a session without a server reports: the
    proxy's version in C{server_version} (as PgBouncer's admin console
    does, so nobody mistakes it for a server's), UTF-8, ISO dates, and the
    client's own C{application_name} and C{client_encoding}.
    """
    return [
        ("application_name", parameters.get("application_name", "")),
        ("client_encoding", parameters.get("client_encoding", "UTF8")),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("server_encoding", "UTF8"),
        ("server_version", f"{__version__}/twisted_pgpool (no backend)"),
        ("session_authorization", parameters.get("user", "")),
        ("standard_conforming_strings", "on"),
    ]


class NodelessSession(OwnStatements):
    """
    The session of a client that logged in while no node could be used.

    It offers what L{twisted_pgpool.proxy.frontend.FrontendProtocol} and the
    reports ask of a session (C{links}, C{lb_node}, C{close}, C{busy},
    C{depends_on}...), all empty: it holds no connection.

    @ivar skipping: an error ended the extended-protocol batch so far: the
        client's messages are skipped up to its Sync, as PostgreSQL does.
    """

    heads = frozenset()

    def __init__(self, frontend: "FrontendProtocol", framer: StreamFramer) -> None:
        # Not SessionState's: there is no primary connection to set up.
        self.frontend = frontend
        self.core = core = frontend.core
        self.framer = framer
        self.links: Dict[int, PooledConnection] = {}
        self.lb_node = None
        self.closed = False
        self.skipping = False
        # Never holds a batch (the frontend looks at the session's after
        # each read: routed.client_read_ended).
        self._batch = []
        self._match_local = core.inspector.match
        self._local_statements: Dict[str, str] = {}
        self._local_portals: Dict[str, str] = {}
        self.causal = causal.CausalState(
            core.reactor,
            wait_timeout=core.config.causal_wait_timeout,
            min_lsn=frontend.startup_min_lsn,
        )

    # -- the framer's callbacks ----------------------------------------------

    def client_message(self, message_type: int, payload: bytes) -> bytes:
        """
        Each watched client message (L{twisted_pgpool.proxy.session.CLIENT_WATCHED}).
        """
        if self.closed:
            return b""
        if message_type == messages.QUERY:
            self._query(payload)
        elif message_type == messages.SYNC:
            self.skipping = False
            self.frontend.transport.write(_READY_IDLE)
        elif message_type == messages.FLUSH:
            pass
        elif message_type == messages.TERMINATE:
            self.frontend.terminate_session()
        elif self.skipping:
            pass
        elif message_type in _BATCHED:
            if not self._extended_local(message_type, payload):
                self.skipping = True
                self.frontend.transport.write(no_backend_statement_error().to_bytes())
        elif message_type == messages.FUNCTION_CALL:
            self.submit_local([no_backend_statement_error().to_bytes()])
        elif message_type in (messages.COPY_DONE, messages.COPY_FAIL):
            # No COPY runs here: PostgreSQL ignores these outside one.
            pass
        else:
            self.frontend.end_after_replies(
                errors.fatal(
                    errors.PROTOCOL_VIOLATION, f"unexpected message type {chr(message_type)!r}"
                )
            )
        return b""

    def client_head(self, message_type: int, head: bytes, length: int) -> object:
        """
        Never called: no message is read by its head here (L{heads} is empty).
        """
        raise AssertionError("a nodeless session reads every message whole")

    def pass_to_primary(self, data: bytes) -> None:
        """
        COPY data the framer passes through: there is no COPY to take it
        (PostgreSQL ignores CopyData outside one).
        """

    def _query(self, payload: bytes) -> None:
        command = self._match_local(payload)
        if command is not None:
            self.submit_local(self.core.inspector.answer(command, self.frontend))
            return
        floor = causal.match_statement(payload)
        if floor is not None:
            self.submit_local(causal.answer_statement(floor, self.causal))
            return
        query = match_cache_delete(payload)
        if query is not None:
            # No cache entry can be read without a server: none exists.
            self.submit_local(cache_delete_reply(query, False))
            return
        if not payload.strip(b" \t\n\r\f\v;\x00"):
            self.submit_local([messages.empty_query_response()])
            return
        self.submit_local([no_backend_statement_error().to_bytes()])

    # -- what the proxy's own statements and the frontend use ------------------

    def submit_local(self, answer: List[bytes], ready: bool = True) -> None:
        """
        Write an answer at once: with no server, nothing is ever owed before it.
        """
        if ready:
            answer.append(_READY_IDLE)
        self.frontend.transport.writeSequence(answer)

    def finish_with(self, last: Callable[[], None]) -> None:
        """
        The client's stream ended: nothing is owed to it, so C{last} runs now.
        """
        self.framer.stop()
        last()

    def close(self) -> List["PooledConnection"]:
        self.closed = True
        return []

    def mid_message_backends(self) -> Tuple["BackendProtocol", ...]:
        return ()

    def cancel_targets(self) -> List["CancelTarget"]:
        return []

    def depends_on(self, node_id: int) -> bool:
        return False

    def drop_node(self, node_id: int) -> None:
        """
        Nothing to drop: the session has no connection.
        """

    @property
    def busy(self) -> bool:
        return False

    @property
    def transaction_status(self) -> int:
        return messages.TRANSACTION_IDLE
