"""
Statements the proxy answers itself: C{SHOW POOL_*} and C{PGPOOL SHOW}.

As in Pgpool-II these are recognised in the simple query protocol only and
never reach a server; every value is returned as text, so psql, psycopg,
asyncpg and pg8000 read them like any result set.  Column names are
Pgpool-II's where it has the same report.
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

import attr

from twisted_pgpool import __version__
from twisted_pgpool.backend.stats import BACKEND_STATS_COLUMNS
from twisted_pgpool.cluster.replication import format_lsn, pool_nodes_columns
from twisted_pgpool.config import describe_setting, settings_for_display
from twisted_pgpool.routing.replication_mode import is_native, role_name
from twisted_pgpool.wire import errors, messages

if TYPE_CHECKING:  # pragma: no cover
    from twisted_pgpool.proxy.frontend import FrontendProtocol
    from twisted_pgpool.service import ProxyCore

_COMMAND = re.compile(
    rb"\s*(?:show\s+(pool_[a-z_]+)|pgpool\s+show\s+([a-z_][a-z_0-9]*))\s*;?\s*\x00?\Z",
    re.IGNORECASE,
)
# A fast first filter: the proxy only looks closer at queries starting so.
_FIRST_WORDS = (b"show", b"pgpool")
_FIRST_BYTES = frozenset([b"s", b"S", b"p", b"P", b" ", b"\t", b"\n", b"\r"])
#: The first bytes a statement the proxy answers itself can start with.
LOCAL_FIRST_BYTES = _FIRST_BYTES

#: The Pgpool-II release whose reports these mimic.
COMPATIBLE_PGPOOL = "4.3"


def _timestamp(seconds: Optional[float]) -> str:
    if not seconds:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def result_set(
    columns: Sequence[str], rows: Sequence[Sequence[Optional[str]]], tag: Optional[str] = None
) -> List[bytes]:
    """
    Encode a text result set (without the final ReadyForQuery).
    """
    out = [messages.row_description(columns)]
    out.extend(messages.data_row(row) for row in rows)
    out.append(messages.command_complete(tag or f"SELECT {len(rows)}"))
    return out


@attr.s(auto_attribs=True, frozen=True)
class Report:
    """
    One report's columns and its rows of text, before encoding.

    The C{SHOW POOL_*} answers and the metrics endpoint
    (L{twisted_pgpool.admin.metrics}) both start from these, so a number read
    with SQL and the same number scraped by Prometheus cannot disagree.
    """

    columns: Sequence[str]
    rows: List[List[str]]

    def records(self) -> List[Dict[str, str]]:
        """
        Each row as a mapping from column name to value.
        """
        return [dict(zip(self.columns, row)) for row in self.rows]

    def encode(self) -> List[bytes]:
        """
        The result set messages answering the report's statement.
        """
        return result_set(self.columns, self.rows)


@attr.s(auto_attribs=True)
class Inspector:
    """
    Recognises and answers the proxy's own statements.

    @ivar core: the shared proxy state the reports read.
    @ivar started_at: when the proxy started (POSIX time).
    """

    core: "ProxyCore"
    started_at: float = attr.ib(factory=time.time)

    def match(self, payload: bytes) -> Optional[str]:
        """
        If a Query message's payload is one of our statements, its name
        (C{pool_nodes}, C{pgpool show all}...); else None.  Cheap for the
        common case: most queries fail the first-word test.
        """
        if payload[:1] not in _FIRST_BYTES:
            return None
        head = payload[:16].lstrip().lower()
        if not head.startswith(_FIRST_WORDS):
            return None
        found = _COMMAND.match(payload)
        if found is None:
            return None
        if found.group(1) is not None:
            return found.group(1).decode("ascii").lower()
        return "pgpool show " + found.group(2).decode("ascii").lower()

    def answer(self, command: str, session: "FrontendProtocol") -> List[bytes]:
        """
        The messages answering C{command} (an ErrorResponse for an unknown
        report), without the ReadyForQuery.
        """
        handler = self._handlers().get(command)
        if handler is None:
            if command.startswith("pgpool show "):
                return self._pgpool_show(command[len("pgpool show ") :])
            return [
                errors.error(
                    "42704",
                    f'unrecognized report "{command.upper()}"',
                    hint="twisted_pgpool knows: "
                    + ", ".join(sorted(c.upper() for c in self._handlers())),
                ).to_bytes()
            ]
        return handler(session)

    def _handlers(self) -> Dict[str, Callable[["FrontendProtocol"], List[bytes]]]:
        return {
            "pool_version": self.pool_version,
            "pool_pools": self.pool_pools,
            "pool_processes": self.pool_processes,
            "pool_nodes": self.pool_nodes,
            "pool_health_check_stats": self.pool_health_check_stats,
            "pool_backend_stats": self.pool_backend_stats,
            "pool_causal_stats": self.pool_causal_stats,
            "pool_cache": self.pool_cache,
            # The older spelling of PGPOOL SHOW ALL.
            "pool_status": lambda session: self._pgpool_show("all"),
        }

    # -- reports -------------------------------------------------------------

    def pool_version(self, session: "FrontendProtocol") -> List[bytes]:
        return result_set(
            ["pool_version"],
            [[f"{__version__} (twisted_pgpool; Pgpool-II {COMPATIBLE_PGPOOL} compatible)"]],
        )

    def pool_nodes(self, session: "FrontendProtocol") -> List[bytes]:
        lb_node = session.session.lb_node if session.session else None
        return self.nodes_report(lb_node.node_id if lb_node is not None else None).encode()

    def nodes_report(self, this_node: Optional[int] = None) -> Report:
        """
        C{SHOW POOL_NODES}: one row per node.

        @param this_node: the asking session's load balancing node, the one
            marked C{true} in C{load_balance_node}; None for none.
        """
        from twisted_pgpool.cluster.health import pg_status

        cluster = self.core.cluster
        total = sum(n.config.weight for n in cluster.nodes) or 1.0
        rows = []
        native = is_native(self.core.config)
        health = getattr(self.core, "health", None)
        for node in cluster.nodes:
            pg_role, delay, state, sync_state = pool_nodes_columns(node, self.core.config)
            role = node.role
            if native:
                # Pgpool-II shows main/replica in both columns in this mode.
                role = pg_role = role_name(node)
            rows.append(
                [
                    str(node.node_id),
                    node.hostname,
                    str(node.port),
                    node.status,
                    pg_status(health, node.node_id),
                    f"{node.config.weight / total:f}",
                    role,
                    pg_role,
                    str(node.select_count),
                    "true" if node.node_id == this_node else "false",
                    delay,
                    state,
                    sync_state,
                    _timestamp(node.last_status_change),
                    _lsn(node.replay_lsn),
                ]
            )
        # Pgpool-II's 14 columns, in its order, then the standby's replayed
        # WAL position (what read-your-writes compares against).
        return Report(
            [
                "node_id",
                "hostname",
                "port",
                "status",
                "pg_status",
                "lb_weight",
                "role",
                "pg_role",
                "select_cnt",
                "load_balance_node",
                "replication_delay",
                "replication_state",
                "replication_sync_state",
                "last_status_change",
                "replay_lsn",
            ],
            rows,
        )

    def pool_backend_stats(self, session: "FrontendProtocol") -> List[bytes]:
        return self.backend_stats_report().encode()

    def backend_stats_report(self) -> Report:
        """
        C{SHOW POOL_BACKEND_STATS}: Pgpool-II's 14 columns, one row per
        node: the statements sent to it since the proxy started by type,
        and the errors it returned by severity
        (L{twisted_pgpool.backend.stats}).  C{role} is as in C{SHOW
        POOL_NODES}.
        """
        native = is_native(self.core.config)
        rows = []
        for node in self.core.cluster.nodes:
            role = role_name(node) if native else node.role
            rows.append(
                [str(node.node_id), node.hostname, str(node.port), node.status, role]
                + [str(n) for n in node.statement_counts]
                + [str(n) for n in node.error_counts]
            )
        return Report(list(BACKEND_STATS_COLUMNS), rows)

    def pool_causal_stats(self, session: "FrontendProtocol") -> List[bytes]:
        return self.causal_stats_report().encode()

    def causal_stats_report(self) -> Report:
        """
        Read-your-writes per node: the last replayed position known, how
        often sessions asked a standby for it, and how many reads went to
        the primary instead (or waited) because it was behind.
        """
        rows = []
        for node in self.core.cluster.nodes:
            rows.append(
                [
                    str(node.node_id),
                    node.hostname,
                    str(node.port),
                    node.role,
                    _lsn(node.replay_lsn),
                    str(node.freshness_probes),
                    str(node.reads_moved_to_primary),
                    str(node.reads_waited),
                    f"{node.read_wait_seconds * 1000:.3f}",
                ]
            )
        return Report(
            [
                "node_id",
                "hostname",
                "port",
                "role",
                "replay_lsn",
                "position_queries",
                "reads_moved_to_primary",
                "reads_waited",
                "wait_time_total_ms",
            ],
            rows,
        )

    def pool_health_check_stats(self, session: "FrontendProtocol") -> List[bytes]:
        return self.health_check_stats_report().encode()

    def health_check_stats_report(self) -> Report:
        """
        Pgpool-II's 20 columns of health check statistics, one row per node
        (none without a health monitor).
        """
        from twisted_pgpool.cluster.health import (
            HEALTH_CHECK_STATS_COLUMNS,
            health_check_stats_rows,
        )

        if self.core.health is None:
            return Report(HEALTH_CHECK_STATS_COLUMNS, [])
        columns, rows = health_check_stats_rows(self.core.health)
        return Report(columns, rows)

    def pool_cache(self, session: "FrontendProtocol") -> List[bytes]:
        return self.cache_report().encode()

    def cache_report(self) -> Report:
        """
        Pgpool-II's nine query cache columns; zeros (and a 0.00 ratio) when
        the cache is off, as Pgpool-II shows.
        """
        from twisted_pgpool.cache.querycache import POOL_CACHE_COLUMNS, pool_cache_row
        from twisted_pgpool.cache.store import CacheStatistics

        cache = getattr(self.core, "query_cache", None)
        if cache is None:
            row = pool_cache_row(0, 0, CacheStatistics())
        else:
            row = cache.pool_cache_row()
        return Report(list(POOL_CACHE_COLUMNS), [row])

    def pool_pools(self, session: "FrontendProtocol") -> List[bytes]:
        return self.pools_report().encode()

    def pools_report(self) -> Report:
        """
        One row per backend connection the proxy holds, busy or idle
        (Pgpool-II lists fixed slots; here there are no empty ones).
        """
        now = time.time()
        clock = self.core.reactor.seconds()
        owners = {s.connection: s for s in self.core.sessions if s.connection}
        rows = []
        for conn in self.core.pool:
            backend = conn.backend
            owner = owners.get(conn)
            idle = "0" if conn.in_use else str(int(clock - conn.last_used_at))
            rows.append(
                [
                    str(os.getpid()),
                    _timestamp(self.started_at),
                    str(conn.sessions_served),
                    str(conn.pool_id),
                    str(conn.key.node_id),
                    conn.key.database,
                    conn.key.user,
                    _timestamp(now - (clock - conn.created_at)),
                    _timestamp(now - (clock - conn.client_connected_at))
                    if conn.client_connected_at
                    else "",
                    _timestamp(now - (clock - conn.client_disconnected_at))
                    if conn.client_disconnected_at
                    else "",
                    idle,
                    "3",
                    "0",
                    str(conn.sessions_served),
                    str(backend.process_id),
                    "1" if conn.in_use else "0",
                    _status(backend, owner is not None),
                ]
            )
        return Report(
            [
                "pool_pid",
                "start_time",
                "client_connection_count",
                "pool_id",
                "backend_id",
                "database",
                "username",
                "backend_connection_time",
                "client_connection_time",
                "client_disconnection_time",
                "client_idle_duration",
                "majorversion",
                "minorversion",
                "pool_counter",
                "pool_backendpid",
                "pool_connected",
                "status",
            ],
            rows,
        )

    def pool_processes(self, session: "FrontendProtocol") -> List[bytes]:
        return self.processes_report().encode()

    def processes_report(self) -> Report:
        """
        One row per session slot (C{num_init_children} of them), as
        Pgpool-II has one per child; C{pool_pid} is the process id the
        proxy gave that client in its BackendKeyData.
        """
        now = time.time()
        clock = self.core.reactor.seconds()
        rows = []
        for s in sorted(self.core.sessions, key=lambda s: s.process_id):
            conn = s.connection
            rows.append(
                [
                    str(s.process_id),
                    _timestamp(s.connected_at),
                    str(conn.sessions_served + 1) if conn else "0",
                    s.database or "",
                    s.user or "",
                    _timestamp(now - (clock - conn.created_at)) if conn else "",
                    str(conn.sessions_served + 1) if conn else "0",
                    _status(s.backend, True),
                ]
            )
        free = max(0, self.core.config.num_init_children - len(rows))
        rows.extend(
            [["", _timestamp(self.started_at), "0", "", "", "", "0", "Wait for connection"]] * free
        )
        return Report(
            [
                "pool_pid",
                "start_time",
                "client_connection_count",
                "database",
                "username",
                "backend_connection_time",
                "pool_counter",
                "status",
            ],
            rows,
        )

    def _pgpool_show(self, name: str) -> List[bytes]:
        # Secret settings come out masked (settings_for_display), as
        # Pgpool-II's VAR_HIDDEN_VALUE parameters do.
        settings = settings_for_display(self.core.config)
        if name == "all":
            rows = [[n, value, describe_setting(n)] for n, value in settings]
            return result_set(["item", "value", "description"], rows)
        values = dict(settings)
        if name not in values:
            return [
                errors.error("42704", f'unrecognized configuration parameter "{name}"').to_bytes()
            ]
        return result_set([name], [[values[name]]])


def _lsn(position: Optional[int]) -> str:
    return "" if position is None else format_lsn(position)


def _status(backend, connected: bool) -> str:
    if backend is None or not connected:
        return "Idle" if backend is not None else "Wait for connection"
    if backend.busy:
        return "Execute command"
    if backend.transaction_status != messages.TRANSACTION_IDLE:
        return "Idle in transaction"
    return "Idle"
