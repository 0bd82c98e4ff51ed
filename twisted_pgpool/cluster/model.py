"""
The cluster model: the configured backend nodes, their status and roles.

This is plain state with no sockets: the health monitor and the primary
search change it, the router and balancer read it, and C{SHOW POOL_NODES}
reports it.  Status and role names are Pgpool-II's.
"""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional, Sequence

import attr
from twisted.internet import defer

from twisted_pgpool.config import BackendConfig

# Node status as Pgpool-II reports it.
STATUS_WAITING = "waiting"  # configured, not yet used by any session
STATUS_UP = "up"
STATUS_DOWN = "down"
STATUS_UNUSED = "unused"

ROLE_PRIMARY = "primary"
ROLE_STANDBY = "standby"


@attr.s(auto_attribs=True)
class Node:
    """
    One backend server as the proxy sees it.

    @ivar node_id: the backend's position in the configuration (from 0).
    @ivar config: its configuration block.
    @ivar status: C{waiting}, C{up}, C{down} or C{unused}.
    @ivar role: C{primary} or C{standby}.
    @ivar last_status_change: POSIX time of the last status or role change.
    @ivar status_reason: why the status last changed, for logs and SHOW.
    @ivar statement_counts: statements sent to the node since the proxy
        started, by type (C{SHOW POOL_BACKEND_STATS}; indexed by
        L{twisted_pgpool.backend.stats.SELECT} ... C{OTHER}).
    @ivar error_counts: ErrorResponses the node returned to statements,
        by severity (indexed by L{twisted_pgpool.backend.stats.PANIC},
        C{FATAL}, C{ERROR}).
    """

    node_id: int
    config: BackendConfig
    status: str = STATUS_WAITING
    role: str = ROLE_STANDBY
    last_status_change: float = attr.ib(factory=time.time)
    status_reason: str = "configured"
    statement_counts: List[int] = attr.ib(factory=lambda: [0] * 6)
    error_counts: List[int] = attr.ib(factory=lambda: [0] * 3)
    # What the servers themselves say, from the replication check
    # (twisted_pgpool.cluster.replication); "unknown" until it has run.
    pg_role: str = "unknown"
    replay_lsn: Optional[int] = None
    replication_delay: int = 0
    replication_delay_seconds: Optional[float] = None
    replication_state: str = ""
    replication_sync_state: str = ""
    delayed: bool = False
    # Read-your-writes (twisted_pgpool.routing.causal): position queries sent to
    # this standby, reads sent to the primary instead because it had not
    # replayed far enough, reads that waited for it, and how long in all.
    freshness_probes: int = 0
    reads_moved_to_primary: int = 0
    reads_waited: int = 0
    read_wait_seconds: float = 0.0
    # The furthest position some session wants this standby to have
    # replayed (0: none beyond what is known), and when a question riding
    # along with a read last went to it (twisted_pgpool.routing.causal.ride_along).
    replay_wanted: int = 0
    replay_asked_at: float = float("-inf")
    # What connections to this node start TLS with after the server agrees
    # (twisted_pgpool.net.tls, from the ssl settings); None: no SSLRequest.
    tls: Optional[Any] = attr.ib(default=None, repr=False, eq=False)

    @property
    def select_count(self) -> int:
        """
        SELECTs sent to the node (C{select_cnt} of both C{SHOW POOL_NODES}
        and C{SHOW POOL_BACKEND_STATS}: one counter, as in Pgpool-II).
        """
        return self.statement_counts[0]

    @select_count.setter
    def select_count(self, value: int) -> None:
        self.statement_counts[0] = value

    @property
    def weight(self) -> float:
        return self.config.weight

    @property
    def hostname(self) -> str:
        return self.config.hostname

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def is_usable(self) -> bool:
        return self.status in (STATUS_UP, STATUS_WAITING)


def _assumed_primary(nodes: Sequence[Node]) -> Optional[Node]:
    """
    The primary until a search says otherwise: the node flagged
    ALWAYS_PRIMARY, or node 0; L{None} without nodes.
    """
    flagged = [n for n in nodes if n.config.always_primary]
    if flagged:
        return flagged[0]
    return nodes[0] if nodes else None


@attr.s(auto_attribs=True)
class Cluster:
    """
    All configured nodes.

    @ivar clock: gives the current POSIX time (injected for tests).
    """

    nodes: List[Node]
    clock: Callable[[], float] = time.time
    observers: List[Callable[[Node], None]] = attr.ib(factory=list)

    @classmethod
    def from_config(
        cls,
        backends: Sequence[BackendConfig],
        clock: Callable[[], float] = time.time,
        tls: Optional[Any] = None,
    ) -> "Cluster":
        """
        Build the model from configuration.  Until a later check says
        otherwise, the node flagged ALWAYS_PRIMARY is the primary, or node 0
        when none is flagged.  There may be no node at all (until a reload
        adds one).

        @param tls: the backend side's TLS options for every node (see
            L{twisted_pgpool.net.tls.ProxyTLS.client}), or L{None}.
        """
        nodes = [
            Node(i, backend, last_status_change=clock(), tls=tls)
            for i, backend in enumerate(backends)
        ]
        primary = _assumed_primary(nodes)
        if primary is not None:
            primary.role = ROLE_PRIMARY
        return cls(nodes, clock)

    def assume_primary(self, reason: str) -> None:
        """
        Make the node L{from_config} would have made the primary the
        primary: for the first backends of a proxy that started without
        any (a reload added them), as if it had started with them.
        """
        primary = _assumed_primary(self.nodes)
        if primary is not None:
            self.set_primary(primary, reason)

    def add_node(
        self, backend: BackendConfig, status: str, reason: str, tls: Optional[Any] = None
    ) -> Node:
        """
        Add a backend after the others (a reload that lists a new one, as
        Pgpool-II allows): it gets the next node id and the standby role.
        Observers hear of it as of a status change, so the status file
        lists it at once.

        @param status: usually C{down}: the node serves nothing until an
            administrator attaches it.
        @param tls: as for L{from_config}.
        """
        node = Node(
            len(self.nodes),
            backend,
            status=status,
            status_reason=reason,
            last_status_change=self.clock(),
            tls=tls,
        )
        self.nodes.append(node)
        self._changed(node)
        return node

    def primary(self) -> Optional[Node]:
        """
        The usable primary node, or None while no primary is known.
        """
        for node in self.nodes:
            if node.role == ROLE_PRIMARY and node.is_usable:
                return node
        return None

    def standbys(self) -> List[Node]:
        """
        The usable nodes that are not the primary.
        """
        return [n for n in self.nodes if n.role != ROLE_PRIMARY and n.is_usable]

    def set_primary(self, node: Node, reason: str) -> None:
        """
        Make C{node} the primary (every other node a standby).
        """
        for other in self.nodes:
            role = ROLE_PRIMARY if other is node else ROLE_STANDBY
            if other.role != role:
                other.role = role
                other.last_status_change = self.clock()
                other.status_reason = reason
                self._changed(other)

    def set_status(self, node: Node, status: str, reason: str) -> None:
        """
        Change a node's status, remembering when and why.
        """
        if node.status != status:
            node.status = status
            node.status_reason = reason
            node.last_status_change = self.clock()
            self._changed(node)

    def _changed(self, node: Node) -> None:
        for observer in list(self.observers):
            observer(node)

    def wait_for_primary(self, reactor, timeout: float) -> "defer.Deferred[Optional[Node]]":
        """
        The usable primary, as soon as there is one (after a failover), or
        None after C{timeout} seconds without one.
        """
        primary = self.primary()
        if primary is not None or timeout <= 0:
            return defer.succeed(primary)
        d: defer.Deferred = defer.Deferred()

        def changed(node: Node) -> None:
            found = self.primary()
            if found is not None and not d.called:
                finish(found)

        def finish(result: Optional[Node]) -> None:
            self.observers.remove(changed)
            if timer.active():
                timer.cancel()
            d.callback(result)

        def expire() -> None:
            if not d.called:
                finish(None)

        self.observers.append(changed)
        timer = reactor.callLater(timeout, expire)
        return d
