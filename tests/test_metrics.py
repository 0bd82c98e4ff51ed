"""
The metrics endpoint without a network: the text format
(L{twisted_pgpool.admin.exposition}), what is collected from a real
L{ProxyCore} (L{twisted_pgpool.admin.metrics}), the HTTP resource driven through
a L{StringTransport} (L{twisted_pgpool.admin.metrics_web}), the configuration and
the wiring.  The end-to-end test is C{tests.test_e2e_metrics}.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.promparse import ExpositionError, parse, value
from twisted_pgpool.admin.exposition import (
    CONTENT_TYPE,
    COUNTER,
    GAUGE,
    MetricFamily,
    escape_help,
    escape_label_value,
    format_value,
    render,
)
from twisted_pgpool.admin.metrics import MetricsCollector, node_status_value
from twisted_pgpool.admin.metrics_web import (
    make_metrics_service,
    metrics_listen_descriptions,
    metrics_site,
)
from twisted_pgpool.backend.pool import PoolKey
from twisted_pgpool.cluster.model import STATUS_DOWN, STATUS_UP
from twisted_pgpool.config import ConfigError, config_from_dict
from twisted_pgpool.net.reactor import BusyPollWindow
from twisted_pgpool.service import ListenService, PgpoolService, ProxyCore
from twisted_pgpool.testing.doubles import FakeFrontend

#: Every name pgpool2_exporter (its current release) derives from the
#: reports the proxy has, which a scrape must carry.
PGPOOL2_EXPORTER_NAMES = [
    "pgpool2_up",
    "pgpool2_scrapes_total",
    "pgpool2_last_scrape_error",
    "pgpool2_last_scrape_duration_seconds",
    "pgpool2_pool_nodes_status",
    "pgpool2_pool_nodes_select_cnt",
    "pgpool2_pool_nodes_replication_delay",
    "pgpool2_pool_health_check_stats_status",
    "pgpool2_pool_health_check_stats_total_count",
    "pgpool2_pool_health_check_stats_success_count",
    "pgpool2_pool_health_check_stats_fail_count",
    "pgpool2_pool_health_check_stats_skip_count",
    "pgpool2_pool_health_check_stats_retry_count",
    "pgpool2_pool_health_check_stats_average_retry_count",
    "pgpool2_pool_health_check_stats_max_retry_count",
    "pgpool2_pool_health_check_stats_max_duration",
    "pgpool2_pool_health_check_stats_min_duration",
    "pgpool2_pool_health_check_stats_average_duration",
    "pgpool2_pool_backend_stats_status",
    "pgpool2_pool_backend_stats_select_cnt",
    "pgpool2_pool_backend_stats_insert_cnt",
    "pgpool2_pool_backend_stats_update_cnt",
    "pgpool2_pool_backend_stats_delete_cnt",
    "pgpool2_pool_backend_stats_ddl_cnt",
    "pgpool2_pool_backend_stats_other_cnt",
    "pgpool2_pool_backend_stats_panic_cnt",
    "pgpool2_pool_backend_stats_fatal_cnt",
    "pgpool2_pool_backend_stats_error_cnt",
    "pgpool2_pool_cache_num_cache_hits",
    "pgpool2_pool_cache_num_selects",
    "pgpool2_pool_cache_cache_hit_ratio",
    "pgpool2_pool_cache_num_hash_entries",
    "pgpool2_pool_cache_used_hash_entries",
    "pgpool2_pool_cache_num_cache_entries",
    "pgpool2_pool_cache_used_cache_entries_size",
    "pgpool2_pool_cache_free_cache_entries_size",
    "pgpool2_pool_cache_fragment_cache_entries_size",
    "pgpool2_frontend_total",
    "pgpool2_frontend_used",
    "pgpool2_frontend_used_ratio",
    "pgpool2_backend_total",
    "pgpool2_backend_used",
    "pgpool2_backend_used_ratio",
]


def make_core(**settings: Any) -> ProxyCore:
    data: Dict[str, Any] = {
        "backends": [
            {"hostname": "db1.example", "port": 5432},
            {"hostname": "db2.example", "port": 5433},
        ],
        "pool_passwd": "",
    }
    data.update(settings)
    return ProxyCore.from_config(config_from_dict(data, source="<test>"), MemoryReactorClock())


def scrape(core: ProxyCore) -> Dict[str, Any]:
    return parse(MetricsCollector(core).render().decode("utf-8"))


def node_labels(core: ProxyCore, node_id: int) -> Dict[str, str]:
    node = core.cluster.nodes[node_id]
    return {"hostname": node.hostname, "port": str(node.port), "role": node.role}


# -- the text format ---------------------------------------------------------------


class ExpositionTests(SynchronousTestCase):
    def test_label_values_escape_backslash_quote_and_line_feed(self) -> None:
        self.assertEqual(escape_label_value('a\\b"c\nd'), 'a\\\\b\\"c\\nd')

    def test_help_escapes_backslash_and_line_feed_but_not_quotes(self) -> None:
        self.assertEqual(escape_help('say "hi"\\\nbye'), 'say "hi"\\\\\\nbye')

    def test_values(self) -> None:
        self.assertEqual(
            [format_value(v) for v in (3, 2.0, 0.25, True, math.nan, math.inf, -math.inf, 1e20)],
            ["3", "2", "0.25", "1", "NaN", "+Inf", "-Inf", "1e+20"],
        )

    def test_render_writes_help_type_and_samples_in_order(self) -> None:
        families = [
            MetricFamily("a_total", COUNTER, "Things.").add(3, kind="x").add(4, kind="y"),
            MetricFamily("b", GAUGE, "Level.").add(0.5),
        ]
        self.assertEqual(
            render(families),
            (
                b"# HELP a_total Things.\n# TYPE a_total counter\n"
                b'a_total{kind="x"} 3\na_total{kind="y"} 4\n'
                b"# HELP b Level.\n# TYPE b gauge\nb 0.5\n"
            ),
        )

    def test_a_family_without_samples_is_still_declared(self) -> None:
        self.assertEqual(
            render([MetricFamily("c", GAUGE, "None yet.")]), b"# HELP c None yet.\n# TYPE c gauge\n"
        )

    def test_awkward_label_values_read_back_unchanged(self) -> None:
        awkward = 'host "quoted"\\path\nsecond line, {braces}=é'
        text = render(
            [MetricFamily("m", GAUGE, "Help with \\ and\nnewline.").add(1, host=awkward, other="x")]
        ).decode("utf-8")
        families = parse(text)
        self.assertEqual(
            (value(families, "m", host=awkward, other="x"), families["m"].help),
            (1.0, "Help with \\ and\nnewline."),
        )

    def test_invalid_names_are_refused(self) -> None:
        self.assertRaises(ValueError, MetricFamily, "bad-name", GAUGE, "x")
        self.assertRaises(ValueError, MetricFamily, "ok", "histogramish", "x")
        family = MetricFamily("ok", GAUGE, "x")
        self.assertRaises(ValueError, family.add, 1, **{"bad-label": "v"})
        self.assertRaises(ValueError, family.add, 1, __reserved="v")

    def test_the_test_parser_rejects_malformed_text(self) -> None:
        for text in (
            "m 1\n",  # no TYPE
            "# TYPE m gauge\nm 1",  # no final line feed
            '# TYPE m gauge\nm{a="x} 1\n',  # unterminated value
            '# TYPE m gauge\nm{a="\\t"} 1\n',  # unknown escape
            '# TYPE m gauge\nm{a="1"} 1\nm{a="1"} 2\n',  # series twice
            "# TYPE m gauge\n# TYPE n gauge\nn 1\nm 1\n",  # m split
        ):
            self.assertRaises(ExpositionError, parse, text)


# -- what is collected --------------------------------------------------------------


class CollectionTests(SynchronousTestCase):
    def test_every_scrape_is_valid_and_has_pgpool2_exporters_names(self) -> None:
        core = make_core()
        PgpoolService(core)  # gives the core its health monitor
        families = scrape(core)
        self.assertEqual([n for n in PGPOOL2_EXPORTER_NAMES if n not in families], [])
        for name, family in families.items():
            self.assertTrue(name.startswith(("pgpool2_", "twisted_pgpool_")), name)
            self.assertTrue(family.help, name)

    def test_node_status_is_one_for_up_or_waiting(self) -> None:
        self.assertEqual(
            [node_status_value(s) for s in ("up", "waiting", "down", "unused")], [1, 1, 0, 0]
        )

    def test_node_status_follows_the_cluster(self) -> None:
        core = make_core()
        core.cluster.set_status(core.cluster.nodes[0], STATUS_UP, "test")
        core.cluster.set_status(core.cluster.nodes[1], STATUS_DOWN, "test")
        families = scrape(core)
        self.assertEqual(
            (
                value(families, "pgpool2_pool_nodes_status", **node_labels(core, 0)),
                value(families, "pgpool2_pool_nodes_status", **node_labels(core, 1)),
                value(
                    families,
                    "twisted_pgpool_node_status",
                    node_id="1",
                    hostname="db2.example",
                    port="5433",
                    status="down",
                ),
                value(
                    families,
                    "twisted_pgpool_node_status",
                    node_id="1",
                    hostname="db2.example",
                    port="5433",
                    status="up",
                ),
            ),
            (1.0, 0.0, 1.0, 0.0),
        )

    def test_primary_is_the_one_in_service(self) -> None:
        core = make_core()
        before = scrape(core)
        core.cluster.set_status(core.cluster.nodes[0], STATUS_DOWN, "test")
        after = scrape(core)
        self.assertEqual(
            [
                value(
                    families,
                    "twisted_pgpool_node_primary",
                    node_id=str(n),
                    hostname=core.cluster.nodes[n].hostname,
                    port=str(core.cluster.nodes[n].port),
                )
                for families in (before, after)
                for n in (0, 1)
            ],
            [1.0, 0.0, 0.0, 0.0],
        )

    def test_labels_are_pgpool2_exporters_hostname_port_role(self) -> None:
        families = scrape(make_core())
        self.assertEqual(
            sorted(families["pgpool2_pool_nodes_status"].samples),
            [
                (("hostname", "db1.example"), ("port", "5432"), ("role", "primary")),
                (("hostname", "db2.example"), ("port", "5433"), ("role", "standby")),
            ],
        )

    def test_select_cnt_is_what_show_pool_nodes_says(self) -> None:
        core = make_core()
        core.cluster.nodes[1].select_count = 7
        families = scrape(core)
        shown = {r["hostname"]: r["select_cnt"] for r in core.inspector.nodes_report().records()}
        self.assertEqual(
            (
                families["pgpool2_pool_nodes_select_cnt"].type,
                value(families, "pgpool2_pool_nodes_select_cnt", **node_labels(core, 1)),
                shown["db2.example"],
            ),
            ("counter", 7.0, "7"),
        )

    def test_replication_delay_in_bytes(self) -> None:
        core = make_core()
        core.cluster.nodes[1].replication_delay = 123456
        self.assertEqual(
            value(scrape(core), "pgpool2_pool_nodes_replication_delay", **node_labels(core, 1)),
            123456.0,
        )

    def test_replication_delay_in_seconds_when_measured_by_time(self) -> None:
        core = make_core(delay_threshold_by_time="100ms")
        core.cluster.nodes[1].replication_delay_seconds = 0.25
        self.assertEqual(
            value(scrape(core), "pgpool2_pool_nodes_replication_delay", **node_labels(core, 1)),
            0.25,
        )

    def test_health_check_stats_are_the_reports_numbers(self) -> None:
        core = make_core()
        service = PgpoolService(core)
        stats = service.health.stats(0)
        stats.total_count, stats.success_count, stats.fail_count = 5, 4, 1
        stats.retry_count, stats.max_duration, stats.total_duration = 2, 0.030, 0.050
        stats.min_duration = 0.005
        families = scrape(core)
        labels = node_labels(core, 0)
        self.assertEqual(
            [
                value(families, "pgpool2_pool_health_check_stats_" + column, **labels)
                for column in (
                    "total_count",
                    "success_count",
                    "fail_count",
                    "retry_count",
                    "average_retry_count",
                    "max_duration",
                    "min_duration",
                    "average_duration",
                )
            ],
            [5.0, 4.0, 1.0, 2.0, 0.4, 30.0, 5.0, 10.0],
        )

    def test_health_checks_refused_for_want_of_slots_are_counted_per_node(self) -> None:
        core = make_core()
        service = PgpoolService(core)
        service.health.stats(1).refused_count = 3
        families = scrape(core)
        self.assertEqual(
            (
                families["twisted_pgpool_health_check_refused_total"].type,
                [
                    value(
                        families,
                        "twisted_pgpool_health_check_refused_total",
                        node_id=str(n),
                        hostname=core.cluster.nodes[n].hostname,
                        port=str(core.cluster.nodes[n].port),
                    )
                    for n in (0, 1)
                ],
            ),
            ("counter", [0.0, 3.0]),
        )

    def test_query_cache_counts(self) -> None:
        core = make_core(memory_cache_enabled=True)
        core.query_cache.num_selects, core.query_cache.num_cache_hits = 10, 4
        families = scrape(core)
        self.assertEqual(
            [
                value(families, name)
                for name in (
                    "pgpool2_pool_cache_num_cache_hits",
                    "pgpool2_pool_cache_num_selects",
                    "pgpool2_pool_cache_cache_hit_ratio",
                    "twisted_pgpool_query_cache_enabled",
                    "twisted_pgpool_query_cache_lookups_total",
                    "twisted_pgpool_query_cache_hits_total",
                    "twisted_pgpool_query_cache_misses_total",
                )
            ],
            [4.0, 10.0, 0.4, 1.0, 10.0, 4.0, 6.0],
        )

    def test_query_cache_off_reports_zeros(self) -> None:
        families = scrape(make_core())
        self.assertEqual(
            (
                value(families, "twisted_pgpool_query_cache_enabled"),
                value(families, "pgpool2_pool_cache_num_hash_entries"),
            ),
            (0.0, 0.0),
        )

    def test_clients_waiting_for_a_slot(self) -> None:
        core = make_core(num_init_children=1, client_queue_timeout=0)
        core.limiter.acquire()
        core.limiter.acquire()
        families = scrape(core)
        self.assertEqual(
            [
                value(families, name)
                for name in (
                    "twisted_pgpool_client_sessions",
                    "twisted_pgpool_client_sessions_limit",
                    "twisted_pgpool_clients_waiting",
                    "twisted_pgpool_clients_waiting_peak",
                    "twisted_pgpool_clients_rejected_total",
                )
            ],
            [1.0, 1.0, 1.0, 1.0, 0.0],
        )

    def test_busy_polling(self) -> None:
        core = make_core()
        names = (
            "twisted_pgpool_busy_poll_window_seconds",
            "twisted_pgpool_busy_poll_caught_total",
            "twisted_pgpool_busy_poll_slept_total",
        )
        off = scrape(core)
        core.reactor.busy_poll = BusyPollWindow(  # type: ignore[attr-defined]
            200e-6, current=40e-6, caught=7, slept=3
        )
        on = scrape(core)
        self.assertEqual(
            ([value(off, name) for name in names], [value(on, name) for name in names]),
            ([0.0, 0.0, 0.0], [40e-6, 7.0, 3.0]),
        )

    def test_frontend_by_user_and_database(self) -> None:
        core = make_core(num_init_children=4)
        for pid, (user, database) in enumerate(
            [("app", "app"), ("app", "app"), ('o"dd', "db\\x")], 1
        ):
            # Clients that have not taken a backend connection yet.
            FakeFrontend(core.sessions, user=user, database=database, process_id=pid)
        families = scrape(core)
        self.assertEqual(
            (
                value(families, "pgpool2_frontend_total"),
                value(families, "pgpool2_frontend_used", username="app", database="app"),
                value(families, "pgpool2_frontend_used", username='o"dd', database="db\\x"),
                value(families, "pgpool2_frontend_used_ratio"),
            ),
            (4.0, 2.0, 1.0, 0.75),
        )

    def test_pooled_connections_by_node_and_state(self) -> None:
        core = make_core(num_init_children=2, max_pool=3)
        busy = core.pool.add(SimpleNamespace(process_id=11), PoolKey("app", "app", 1), True)
        idle = core.pool.add(SimpleNamespace(process_id=12), PoolKey("app", "app", 1), True)
        idle.in_use = False
        self.assertTrue(busy.in_use)
        families = scrape(core)
        self.assertEqual(
            [
                value(families, "twisted_pgpool_pool_connections", node_id=n, state=s)
                for n, s in (("0", "idle"), ("0", "in_use"), ("1", "idle"), ("1", "in_use"))
            ]
            + [
                value(families, name)
                for name in (
                    "pgpool2_backend_total",
                    "pgpool2_backend_used",
                    "twisted_pgpool_pool_connections_opened_total",
                )
            ],
            [0.0, 0.0, 1.0, 1.0, 12.0, 2.0, 2.0],
        )
        self.assertAlmostEqual(value(families, "pgpool2_backend_used_ratio"), 2 / 12)

    def test_scrapes_are_counted_and_timed(self) -> None:
        ticks = iter([10.0, 10.5, 20.0, 20.25])
        collector = MetricsCollector(make_core(), timer=lambda: next(ticks))
        collector.render()
        families = parse(collector.render().decode("utf-8"))
        self.assertEqual(
            [
                value(families, name)
                for name in (
                    "pgpool2_up",
                    "pgpool2_scrapes_total",
                    "pgpool2_last_scrape_error",
                    "pgpool2_last_scrape_duration_seconds",
                )
            ],
            [1.0, 2.0, 0.0, 0.25],
        )

    def test_a_failing_part_is_logged_and_leaves_the_rest(self) -> None:
        def broken(core: ProxyCore) -> List[MetricFamily]:
            raise RuntimeError("no numbers today")

        def working(core: ProxyCore) -> List[MetricFamily]:
            return [MetricFamily("twisted_pgpool_test", GAUGE, "Works.").add(1)]

        collector = MetricsCollector(make_core(), sections=(broken, working))
        families = parse(collector.render().decode("utf-8"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(
            (value(families, "twisted_pgpool_test"), value(families, "pgpool2_last_scrape_error")),
            (1.0, 1.0),
        )


# -- HTTP ---------------------------------------------------------------------------


def http_get(
    core: ProxyCore, path: bytes, method: bytes = b"GET"
) -> Tuple[int, Dict[bytes, bytes], bytes]:
    """
    One HTTP/1.0 request to the metrics site over a L{StringTransport}:
    the status code, headers (lower-case names) and body.
    """
    site = metrics_site(MetricsCollector(core), core.reactor)
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    channel = site.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    channel.makeConnection(transport)
    channel.dataReceived(method + b" " + path + b" HTTP/1.0\r\nHost: test\r\n\r\n")
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    headers = {}
    for line in header_lines:
        name, _, field = line.partition(b":")
        headers[name.strip().lower()] = field.strip()
    return int(status_line.split()[1]), headers, body


class ResourceTests(SynchronousTestCase):
    def test_metrics_are_served_as_prometheus_text(self) -> None:
        core = make_core()
        code, headers, body = http_get(core, b"/metrics")
        families = parse(body.decode("utf-8"))
        self.assertEqual(
            (
                code,
                headers[b"content-type"].decode(),
                int(headers[b"content-length"]),
                value(families, "pgpool2_pool_nodes_status", **node_labels(core, 0)),
            ),
            (200, CONTENT_TYPE, len(body), 1.0),
        )

    def test_other_paths_are_not_found(self) -> None:
        core = make_core()
        self.assertEqual(
            [http_get(core, p)[0] for p in (b"/nope", b"/metrics/x", b"/metricsx")], [404, 404, 404]
        )

    def test_landing_page_links_to_the_metrics(self) -> None:
        code, headers, body = http_get(make_core(), b"/")
        self.assertEqual(
            (code, headers[b"content-type"], b'href="/metrics"' in body),
            (200, b"text/html; charset=utf-8", True),
        )

    def test_health_is_ok_while_the_proxy_answers(self) -> None:
        core = make_core()
        for node in core.cluster.nodes:
            core.cluster.set_status(node, STATUS_DOWN, "test")
        self.assertEqual(http_get(core, b"/health")[::2], (200, b"ok\n"))

    def test_ready_when_a_node_is_usable(self) -> None:
        import json

        core = make_core()
        code, headers, body = http_get(core, b"/ready")
        self.assertEqual(
            (code, headers[b"content-type"], json.loads(body)["ready"]),
            (200, b"application/json", True),
        )

    def test_ready_with_only_a_standby_usable(self) -> None:
        # Without a primary a standby serves new sessions (reads only).
        import json

        core = make_core()
        core.cluster.set_status(core.cluster.nodes[0], STATUS_DOWN, "test")
        code, _, body = http_get(core, b"/ready")
        self.assertEqual(
            (code, json.loads(body)),
            (200, {"ready": True, "primary_node_id": None, "usable_node_ids": [1]}),
        )

    def test_not_ready_when_every_node_is_down(self) -> None:
        import json

        core = make_core()
        for node in core.cluster.nodes:
            core.cluster.set_status(node, STATUS_DOWN, "test")
        code, _, body = http_get(core, b"/ready")
        self.assertEqual(
            (code, json.loads(body)),
            (503, {"ready": False, "primary_node_id": None, "usable_node_ids": []}),
        )

    def test_only_reading_is_allowed(self) -> None:
        self.assertEqual(http_get(make_core(), b"/metrics", method=b"POST")[0], 405)

    def test_head_has_no_body(self) -> None:
        code, headers, body = http_get(make_core(), b"/metrics", method=b"HEAD")
        self.assertEqual((code, body), (200, b""))


# -- configuration and wiring ------------------------------------------------------------


class ConfigurationTests(SynchronousTestCase):
    def test_off_by_default_on_pgpool2_exporters_port(self) -> None:
        config = make_core().config
        self.assertEqual(
            (
                config.metrics_listen_addresses,
                config.metrics_port,
                metrics_listen_descriptions(config),
            ),
            ("", 9719, []),
        )

    def test_addresses_mean_what_listen_addresses_mean(self) -> None:
        core = make_core(metrics_listen_addresses="localhost, 10.0.0.5,::1", metrics_port=9100)
        self.assertEqual(
            metrics_listen_descriptions(core.config),
            [
                "tcp:9100:interface=127.0.0.1",
                "tcp:9100:interface=10.0.0.5",
                "tcp6:9100:interface=\\:\\:1",
            ],
        )
        self.assertEqual(
            metrics_listen_descriptions(make_core(metrics_listen_addresses="*").config),
            ["tcp:9719"],
        )

    def test_bad_values_name_the_key(self) -> None:
        for key, bad in (
            ("metrics_port", 0),
            ("metrics_port", "http"),
            ("metrics_listen_addresses", "a b"),
        ):
            with self.assertRaises(ConfigError) as raised:
                make_core(**{key: bad})
            self.assertIn(key, str(raised.exception))


def listeners(service: Any) -> Iterator[ListenService]:
    for child in service:
        if isinstance(child, ListenService):
            yield child
        elif hasattr(child, "__iter__"):
            yield from listeners(child)


class WiringTests(SynchronousTestCase):
    def test_no_metrics_listener_by_default(self) -> None:
        service = PgpoolService(make_core())
        self.assertEqual(
            (
                service.metrics,
                [
                    listener.description
                    for listener in listeners(service)
                    if "metrics" in listener.description
                ],
            ),
            (None, []),
        )

    def test_one_listener_per_address(self) -> None:
        service = PgpoolService(
            make_core(metrics_listen_addresses="127.0.0.2,localhost", metrics_port=9200)
        )
        self.assertEqual(
            [listener.description for listener in listeners(service.metrics)],
            ["metrics tcp:9200:interface=127.0.0.2", "metrics tcp:9200:interface=127.0.0.1"],
        )

    def test_listens_with_the_metrics_site(self) -> None:
        core = make_core()
        service = make_metrics_service(core, ["tcp:9300:interface=127.0.0.1"])
        service.startService()
        self.addCleanup(service.stopService)
        port, factory, _, interface = core.reactor.tcpServers[0]
        self.assertEqual((port, interface, factory), (9300, "127.0.0.1", service.site))
