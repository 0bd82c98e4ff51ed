"""
What the metrics endpoint reports, gathered from the running proxy.

Users coming from Pgpool-II monitor it with pgpool2_exporter, which runs
C{SHOW POOL_NODES}, C{POOL_HEALTH_CHECK_STATS}, C{POOL_BACKEND_STATS}, C{POOL_CACHE},
C{POOL_PROCESSES} and C{POOL_POOLS} and turns their columns into metrics
named C{pgpool2_<report>_<column>}.  The same names, labels and types are
produced here, from the very reports the proxy answers those statements
with (L{twisted_pgpool.proxy.inspection.Inspector}), so their dashboards and
alerts keep working and a value read with SQL always equals the scraped
one.  What Pgpool-II cannot tell (clients waiting for a session slot,
pooled connections, cache lookups as counters, read-your-writes) is
reported under the C{twisted_pgpool_} prefix.

Everything here is plain calls on the proxy's state: no socket, no
reactor.  L{twisted_pgpool.admin.metrics_web} serves the result over HTTP.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Sequence, Tuple

import attr
from twisted.logger import Logger, LogLevel

from twisted_pgpool import __version__, logs
from twisted_pgpool.admin.exposition import COUNTER, GAUGE, MetricFamily, render
from twisted_pgpool.cluster.model import STATUS_DOWN, STATUS_UNUSED, STATUS_UP, STATUS_WAITING
from twisted_pgpool.proxy.inspection import COMPATIBLE_PGPOOL

if TYPE_CHECKING:  # pragma: no cover
    from twisted_pgpool.proxy.inspection import Report
    from twisted_pgpool.service import ProxyCore

__all__ = ["MetricsCollector", "SECTIONS", "node_status_value"]

log = Logger(observer=logs.observer)

#: pgpool2_exporter's labels on every per-node metric.
_PGPOOL2_NODE_LABELS = ("hostname", "port", "role")
#: Our own per-node labels: the node id is stable across failovers, the
#: role is not (pgpool2_exporter's series change name when it changes).
_NODE_LABELS = ("node_id", "hostname", "port")
_STATUSES = (STATUS_UP, STATUS_WAITING, STATUS_DOWN, STATUS_UNUSED)

Section = Callable[["ProxyCore"], Iterable[MetricFamily]]


def node_status_value(status: str) -> int:
    """
    pgpool2_exporter's reading of a node status: 1 for C{up} or C{waiting}
    (a node no session used yet is still in service), 0 otherwise.
    """
    return 1 if status in (STATUS_UP, STATUS_WAITING) else 0


def _number(text: str) -> float:
    """
    A report cell as a number.  C{replication_delay} reads
    C{"0.250000 second(s)"} when measured by time: its leading number is
    the value.  An empty cell is not a number.
    """
    words = text.split()
    return float(words[0]) if words else math.nan


def _labels(record: Dict[str, str], names: Sequence[str]) -> Dict[str, str]:
    return {name: record[name] for name in names}


# -- Pgpool-II's reports under pgpool2_exporter's names ------------------------------


def pool_nodes(core: "ProxyCore") -> Iterable[MetricFamily]:
    """
    C{SHOW POOL_NODES}: status, SELECTs sent and replication delay per node.
    """
    status = MetricFamily(
        "pgpool2_pool_nodes_status",
        GAUGE,
        "Whether the node is in service: 1 when up or waiting, 0 when down or unused.",
    )
    select = MetricFamily(
        "pgpool2_pool_nodes_select_cnt",
        COUNTER,
        "SELECT statements sent to the node since the proxy started.",
    )
    delay = MetricFamily(
        "pgpool2_pool_nodes_replication_delay",
        GAUGE,
        "How far the standby lags the primary: bytes of WAL, or seconds when "
        "delay_threshold_by_time is set; 0 on the primary.",
    )
    for record in core.inspector.nodes_report().records():
        labels = _labels(record, _PGPOOL2_NODE_LABELS)
        status.add(node_status_value(record["status"]), **labels)
        select.add(int(record["select_cnt"]), **labels)
        delay.add(_number(record["replication_delay"]), **labels)
    return [status, select, delay]


#: C{SHOW POOL_BACKEND_STATS} columns pgpool2_exporter turns into
#: counters, with what they mean.
_BACKEND_STATS_COLUMNS = (
    ("select_cnt", "SELECT statements sent to the node since the proxy started."),
    ("insert_cnt", "INSERT statements sent to the node since the proxy started."),
    ("update_cnt", "UPDATE statements sent to the node since the proxy started."),
    ("delete_cnt", "DELETE statements sent to the node since the proxy started."),
    ("ddl_cnt", "DDL statements (everything not counted elsewhere) sent to the node."),
    (
        "other_cnt",
        "Other statements (SET, SHOW, BEGIN, COMMIT, EXPLAIN, LOCK ...) sent to the node.",
    ),
    ("panic_cnt", "PANIC errors the node returned."),
    ("fatal_cnt", "FATAL errors the node returned."),
    ("error_cnt", "ERROR errors the node returned."),
)


def _per_node_report(
    prefix: str,
    kind: str,
    columns: Sequence[Tuple[str, str]],
    report: "Report",
    value: Callable[[str], float],
) -> List[MetricFamily]:
    """
    One family per column of a per-node report, labelled as
    pgpool2_exporter labels nodes, plus its C{<prefix>status} gauge.

    @param kind: the columns' metric type (C{COUNTER} or C{GAUGE}).
    @param value: turns a column's text into the number reported.
    """
    status = MetricFamily(
        prefix + "status",
        GAUGE,
        "Whether the node is in service: 1 when up or waiting, 0 when down or unused.",
    )
    families = [(column, MetricFamily(prefix + column, kind, text)) for column, text in columns]
    for record in report.records():
        labels = _labels(record, _PGPOOL2_NODE_LABELS)
        status.add(node_status_value(record["status"]), **labels)
        for column, family in families:
            family.add(value(record[column]), **labels)
    return [status] + [family for _, family in families]


def pool_backend_stats(core: "ProxyCore") -> Iterable[MetricFamily]:
    """
    C{SHOW POOL_BACKEND_STATS}: statements sent to each node by type and
    errors it returned by severity (counters, as pgpool2_exporter
    declares them), and its status gauge.
    """
    return _per_node_report(
        "pgpool2_pool_backend_stats_",
        COUNTER,
        _BACKEND_STATS_COLUMNS,
        core.inspector.backend_stats_report(),
        int,
    )


#: C{SHOW POOL_HEALTH_CHECK_STATS} columns pgpool2_exporter turns into
#: gauges, with what they mean.
_HEALTH_CHECK_COLUMNS = (
    ("total_count", "Health checks of the node since the proxy started."),
    ("success_count", "Health checks of the node that succeeded."),
    ("fail_count", "Health checks of the node that failed after all retries."),
    ("skip_count", "Health checks skipped because the node was already down."),
    ("retry_count", "Health check attempts that were retries."),
    ("average_retry_count", "Retries per health check, on average."),
    ("max_retry_count", "The most retries one health check needed."),
    ("max_duration", "The longest health check, in milliseconds."),
    ("min_duration", "The shortest health check, in milliseconds."),
    ("average_duration", "The average health check duration, in milliseconds."),
)


def pool_health_check_stats(core: "ProxyCore") -> Iterable[MetricFamily]:
    """
    C{SHOW POOL_HEALTH_CHECK_STATS}: the health check's counts and
    durations per node (all gauges, as pgpool2_exporter declares them).
    """
    return _per_node_report(
        "pgpool2_pool_health_check_stats_",
        GAUGE,
        _HEALTH_CHECK_COLUMNS,
        core.inspector.health_check_stats_report(),
        _number,
    )


_CACHE_COLUMNS = (
    ("num_cache_hits", "SELECTs answered from the query cache."),
    ("num_selects", "SELECTs looked up in the query cache, hits and misses."),
    ("cache_hit_ratio", "num_cache_hits / num_selects, to two decimals as SHOW POOL_CACHE."),
    ("num_hash_entries", "How many results the cache can hold."),
    ("used_hash_entries", "How many results the cache holds."),
    ("num_cache_entries", "How many valid results the cache holds."),
    ("used_cache_entries_size", "Bytes used by cached results."),
    ("free_cache_entries_size", "Bytes still free for cached results."),
    ("fragment_cache_entries_size", "Bytes held by obsolete results not yet reclaimed."),
)


def pool_cache(core: "ProxyCore") -> Iterable[MetricFamily]:
    """
    C{SHOW POOL_CACHE} under pgpool2_exporter's names (gauges, zeros when
    the cache is off), and the lookups again as counters, which
    C{rate()} can use.
    """
    record = core.inspector.cache_report().records()[0]
    families = [
        MetricFamily("pgpool2_pool_cache_" + column, GAUGE, text).add(_number(record[column]))
        for column, text in _CACHE_COLUMNS
    ]
    lookups = int(record["num_selects"])
    hits = int(record["num_cache_hits"])
    families += [
        MetricFamily(
            "twisted_pgpool_query_cache_enabled",
            GAUGE,
            "1 when the query cache is on (memory_cache_enabled).",
        ).add(int(getattr(core, "query_cache", None) is not None)),
        MetricFamily(
            "twisted_pgpool_query_cache_lookups_total",
            COUNTER,
            "Cacheable SELECTs looked up in the query cache.",
        ).add(lookups),
        MetricFamily(
            "twisted_pgpool_query_cache_hits_total",
            COUNTER,
            "Lookups answered from the query cache.",
        ).add(hits),
        MetricFamily(
            "twisted_pgpool_query_cache_misses_total",
            COUNTER,
            "Lookups the query cache could not answer.",
        ).add(lookups - hits),
    ]
    return families


def pool_processes(core: "ProxyCore") -> Iterable[MetricFamily]:
    """
    C{SHOW POOL_PROCESSES} as pgpool2_exporter counts it: slots in all
    (C{num_init_children}), slots serving a client by user and database,
    and the share in use.
    """
    records = core.inspector.processes_report().records()
    by_client: Dict[Tuple[str, str], int] = {}
    for record in records:
        if record["username"] and record["database"]:
            key = (record["username"], record["database"])
            by_client[key] = by_client.get(key, 0) + 1
    used = MetricFamily(
        "pgpool2_frontend_used", GAUGE, "Client sessions being served, by user and database."
    )
    for (username, database), count in sorted(by_client.items()):
        used.add(count, username=username, database=database)
    total = len(records)
    return [
        MetricFamily(
            "pgpool2_frontend_total", GAUGE, "Client session slots (num_init_children)."
        ).add(total),
        used,
        MetricFamily(
            "pgpool2_frontend_used_ratio", GAUGE, "Share of client session slots in use (0 to 1)."
        ).add(sum(by_client.values()) / total if total else 0.0),
    ]


def pool_pools(core: "ProxyCore") -> Iterable[MetricFamily]:
    """
    C{SHOW POOL_POOLS}: backend connections held (busy or idle) against
    Pgpool-II's slot count, C{num_init_children * max_pool} per node; and
    per node, how many are idle and how many serve a client.
    """
    config = core.config
    nodes = core.cluster.nodes
    records = core.inspector.pools_report().records()
    held = sum(1 for r in records if r["username"])
    slots = config.num_init_children * config.max_pool * len(nodes)
    by_state = {(str(n.node_id), state): 0 for n in nodes for state in ("idle", "in_use")}
    for record in records:
        state = "in_use" if record["pool_connected"] == "1" else "idle"
        key = (record["backend_id"], state)
        by_state[key] = by_state.get(key, 0) + 1
    connections = MetricFamily(
        "twisted_pgpool_pool_connections",
        GAUGE,
        "Backend connections the proxy holds, by node and state (idle: pooled for reuse).",
    )
    for (node_id, state), count in sorted(
        by_state.items(), key=lambda kv: (int(kv[0][0]), kv[0][1])
    ):
        connections.add(count, node_id=node_id, state=state)
    pool = core.pool
    return [
        MetricFamily(
            "pgpool2_backend_total",
            GAUGE,
            "Backend connection slots: num_init_children * max_pool per node.",
        ).add(slots),
        MetricFamily("pgpool2_backend_used", GAUGE, "Backend connections held, busy or idle.").add(
            held
        ),
        MetricFamily(
            "pgpool2_backend_used_ratio", GAUGE, "pgpool2_backend_used / pgpool2_backend_total."
        ).add(held / slots if slots else 0.0),
        connections,
        MetricFamily(
            "twisted_pgpool_pool_connections_opened_total", COUNTER, "Backend connections opened."
        ).add(pool.opened),
        MetricFamily(
            "twisted_pgpool_pool_connections_reused_total",
            COUNTER,
            "Times a pooled connection was given to a new client.",
        ).add(pool.reused),
        MetricFamily(
            "twisted_pgpool_pool_connections_closed_total",
            COUNTER,
            "Backend connections closed, for any reason.",
        ).add(pool.closed),
    ]


# -- the proxy's own -----------------------------------------------------------------


def session_slots(core: "ProxyCore") -> Iterable[MetricFamily]:
    """
    The session limiter: Pgpool-II's clients wait unseen in the kernel's
    listen queue when all children are busy; here they are counted.
    """
    limiter = core.limiter
    return [
        MetricFamily(
            "twisted_pgpool_client_sessions", GAUGE, "Client sessions holding a slot."
        ).add(limiter.active),
        MetricFamily(
            "twisted_pgpool_client_sessions_limit",
            GAUGE,
            "Most client sessions served at once (num_init_children).",
        ).add(limiter.max_sessions),
        MetricFamily(
            "twisted_pgpool_clients_waiting", GAUGE, "Clients waiting for a session slot."
        ).add(limiter.waiting),
        MetricFamily(
            "twisted_pgpool_clients_waiting_peak",
            GAUGE,
            "The most clients that waited for a slot at once.",
        ).add(limiter.peak_waiting),
        MetricFamily(
            "twisted_pgpool_clients_rejected_total",
            COUNTER,
            "Clients refused with 53300 (queue full, waited too long, or "
            "too many connections authenticating).",
        ).add(limiter.rejected),
        MetricFamily(
            "twisted_pgpool_clients_unauthenticated",
            GAUGE,
            "Client connections not yet authenticated (they hold no slot).",
        ).add(limiter.unauthenticated),
        MetricFamily(
            "twisted_pgpool_clients_unauthenticated_limit",
            GAUGE,
            "Most client connections authenticating at once (max_unauthenticated_clients).",
        ).add(limiter.max_unauthenticated),
    ]


def busy_polling(core: "ProxyCore") -> Iterable[MetricFamily]:
    """
    The reactor's busy polling (C{busy_poll_time}, docs/performance.md): how
    long it spins now, and how often a spin caught an event or ended in a
    sleep.  Zeros when busy polling is off or the reactor cannot do it.
    """
    window = getattr(core.reactor, "busy_poll", None)
    current, caught, slept = (
        (0.0, 0, 0) if window is None else (window.current, window.caught, window.slept)
    )
    return [
        MetricFamily(
            "twisted_pgpool_busy_poll_window_seconds",
            GAUGE,
            "How long the reactor spins before it sleeps now (adapts up to busy_poll_time).",
        ).add(current),
        MetricFamily(
            "twisted_pgpool_busy_poll_caught_total",
            COUNTER,
            "Waits that ended with an event during the spin.",
        ).add(caught),
        MetricFamily(
            "twisted_pgpool_busy_poll_slept_total",
            COUNTER,
            "Waits whose spin found nothing and slept.",
        ).add(slept),
    ]


def nodes(core: "ProxyCore") -> Iterable[MetricFamily]:
    """
    Each node's status as a set of 0/1 series, one per status, and which
    node is the primary in service (none during a failover), with labels
    that do not change on failover.
    """
    status = MetricFamily(
        "twisted_pgpool_node_status",
        GAUGE,
        "1 for the node's current status (up, waiting, down, unused), 0 for the others.",
    )
    primary = MetricFamily(
        "twisted_pgpool_node_primary",
        GAUGE,
        "1 for the primary the proxy writes to: the primary role and in service.",
    )
    for record in core.inspector.nodes_report().records():
        labels = _labels(record, _NODE_LABELS)
        for name in _STATUSES:
            status.add(int(record["status"] == name), **labels, status=name)
        primary.add(
            int(record["role"] == "primary" and node_status_value(record["status"]) == 1), **labels
        )
    return [status, primary]


def health_check_refusals(core: "ProxyCore") -> Iterable[MetricFamily]:
    """
    Health checks a node answered by refusing the connection for want of a
    free slot (53300): not failures, so not in Pgpool-II's C{fail_count},
    but the sign of a server at C{max_connections}.
    """
    refused = MetricFamily(
        "twisted_pgpool_health_check_refused_total",
        COUNTER,
        "Health checks the node answered with 53300 (no free connection slot): "
        "the node is up, so they are not failures.",
    )
    health = core.health
    for node in core.cluster.nodes:
        count = (
            health.stats(node.node_id).refused_count
            if health is not None and node.node_id < len(health.checks)
            else 0
        )
        refused.add(count, node_id=str(node.node_id), hostname=node.hostname, port=str(node.port))
    return [refused]


def read_your_writes(core: "ProxyCore") -> Iterable[MetricFamily]:
    """
    C{SHOW POOL_CAUSAL_STATS}: what keeping reads after writes consistent
    cost, per node.
    """
    prefix = "twisted_pgpool_causal_"
    queries = MetricFamily(
        prefix + "position_queries_total",
        COUNTER,
        "Questions to the standby for its replayed WAL position.",
    )
    moved = MetricFamily(
        prefix + "reads_moved_to_primary_total",
        COUNTER,
        "Reads sent to the primary because the standby was behind.",
    )
    waited = MetricFamily(
        prefix + "reads_waited_total", COUNTER, "Reads that waited for the standby to catch up."
    )
    wait_time = MetricFamily(
        prefix + "read_wait_seconds_total",
        COUNTER,
        "Time reads spent waiting for the standby to catch up.",
    )
    for record in core.inspector.causal_stats_report().records():
        labels = _labels(record, _NODE_LABELS)
        queries.add(int(record["position_queries"]), **labels)
        moved.add(int(record["reads_moved_to_primary"]), **labels)
        waited.add(int(record["reads_waited"]), **labels)
        wait_time.add(float(record["wait_time_total_ms"]) / 1000, **labels)
    return [queries, moved, waited, wait_time]


def build_info(core: "ProxyCore") -> Iterable[MetricFamily]:
    """
    Which proxy this is and since when it runs.
    """
    return [
        MetricFamily(
            "twisted_pgpool_info",
            GAUGE,
            "Always 1; the labels name the proxy's version and the "
            "Pgpool-II release whose behaviour it follows.",
        ).add(1, version=__version__, pgpool_compatible=COMPATIBLE_PGPOOL),
        MetricFamily(
            "twisted_pgpool_start_time_seconds",
            GAUGE,
            "When the proxy started, in seconds since the epoch.",
        ).add(core.inspector.started_at),
    ]


#: What a scrape reports, in order; each part fails on its own.
SECTIONS: Tuple[Section, ...] = (
    pool_nodes,
    pool_health_check_stats,
    pool_backend_stats,
    pool_cache,
    pool_processes,
    pool_pools,
    nodes,
    health_check_refusals,
    session_slots,
    read_your_writes,
    busy_polling,
    build_info,
)


@attr.s(auto_attribs=True, eq=False)
class MetricsCollector:
    """
    Gathers every section for one scrape, and keeps pgpool2_exporter's
    account of the scrapes themselves (C{pgpool2_up},
    C{pgpool2_scrapes_total}, C{pgpool2_last_scrape_duration_seconds},
    C{pgpool2_last_scrape_error}), which alerts written for it use.

    A section that raises is left out of that scrape and logged, and
    C{pgpool2_last_scrape_error} is 1: one broken number must not hide
    all the others.

    @ivar core: the proxy whose state is reported.
    @ivar sections: the parts of a scrape.
    @ivar timer: a monotonic clock in seconds, for the scrape's duration.
    @ivar scrapes: scrapes so far.
    """

    core: "ProxyCore"
    sections: Sequence[Section] = SECTIONS
    timer: Callable[[], float] = time.perf_counter
    scrapes: int = 0

    def collect(self) -> List[MetricFamily]:
        """
        Every metric, as of now.
        """
        started = self.timer()
        self.scrapes += 1
        families: List[MetricFamily] = []
        failed = False
        for section in self.sections:
            try:
                families.extend(section(self.core))
            except Exception:
                failed = True
                log.failure(
                    "metrics: {section} could not be collected",
                    level=LogLevel.error,
                    section=section.__name__,
                )
        families += [
            MetricFamily(
                "pgpool2_up", GAUGE, "Whether the proxy answered (always 1 when this is read)."
            ).add(1),
            MetricFamily("pgpool2_scrapes_total", COUNTER, "Times the metrics were read.").add(
                self.scrapes
            ),
            MetricFamily(
                "pgpool2_last_scrape_error",
                GAUGE,
                "1 when part of this scrape could not be collected (see the log).",
            ).add(int(failed)),
            MetricFamily(
                "pgpool2_last_scrape_duration_seconds",
                GAUGE,
                "How long collecting this scrape took.",
            ).add(self.timer() - started),
        ]
        return families

    def render(self) -> bytes:
        """
        Every metric in Prometheus' text format.
        """
        return render(self.collect())
