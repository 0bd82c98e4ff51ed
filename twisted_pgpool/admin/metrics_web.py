"""
The metrics endpoint: Prometheus' text format over HTTP at C{/metrics}.

Off unless C{metrics_listen_addresses} is set; C{metrics_port} defaults to
9719, pgpool2_exporter's port, so a scrape configuration written for
Pgpool-II's exporter only needs the host changed.  The endpoint is served
by the proxy process itself: nothing to deploy beside it, and a scrape
reads the live state instead of running C{SHOW} statements through a
client session.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Iterable, List, Optional

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from twisted_pgpool import logs
from twisted_pgpool.admin.exposition import CONTENT_TYPE
from twisted_pgpool.admin.metrics import MetricsCollector
from twisted_pgpool.config import PgpoolConfig
from twisted_pgpool.net.addresses import tcp_descriptions
from twisted_pgpool.net.listening import listen_services

if TYPE_CHECKING:  # pragma: no cover
    from twisted_pgpool.service import ProxyCore

__all__ = [
    "HealthResource",
    "MetricsResource",
    "MetricsSite",
    "ReadyResource",
    "make_metrics_service",
    "metrics_listen_descriptions",
    "metrics_site",
]

log = Logger(observer=logs.observer)

_LANDING_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>twisted_pgpool metrics</title></head>\n"
    b'<body><h1>twisted_pgpool metrics</h1><p><a href="/metrics">/metrics</a> '
    b'&middot; <a href="/health">/health</a> &middot; <a href="/ready">/ready</a></p>'
    b"</body></html>\n"
)


class MetricsResource(Resource):
    """
    C{GET /metrics}: a fresh collection at every request.
    """

    def __init__(self, collector: MetricsCollector) -> None:
        super().__init__()
        self.collector = collector

    def render_GET(self, request: Request) -> bytes:
        body = self.collector.render()
        request.setHeader(b"content-type", CONTENT_TYPE.encode("ascii"))
        return body


class HealthResource(Resource):
    """
    C{GET /health}: liveness.  C{200 ok} whenever the proxy's event loop
    answers at all -- what a container orchestrator's liveness probe or a
    load balancer's TCP-plus-HTTP check needs to know.  It does not look
    at the servers: a proxy whose servers are down is alive (restarting
    it would not help), just not ready.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"ok\n"


class ReadyResource(Resource):
    """
    C{GET /ready}: readiness.  C{200} when a client would be served: a
    primary or a standby is usable (without a primary, sessions are served
    by a standby, reads only; C{primary_node_id} is then C{null}); C{503}
    when no node is.  The body says which nodes are usable, as JSON.
    """

    isLeaf = True

    def __init__(self, core: "ProxyCore") -> None:
        super().__init__()
        self.core = core

    def render_GET(self, request: Request) -> bytes:
        cluster = self.core.cluster
        primary = cluster.primary()
        usable = [node.node_id for node in cluster.nodes if node.is_usable]
        ready = bool(usable)
        request.setResponseCode(200 if ready else 503)
        request.setHeader(b"content-type", b"application/json")
        return (
            json.dumps(
                {
                    "ready": ready,
                    "primary_node_id": primary.node_id if primary is not None else None,
                    "usable_node_ids": usable,
                }
            ).encode("ascii")
            + b"\n"
        )


class _LandingPage(Resource):
    """
    C{/}: a link to the metrics, as exporters commonly show a browser.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return _LANDING_PAGE


class MetricsSite(Site):
    """
    The HTTP side, quiet: Prometheus reads the endpoint every few seconds,
    and an access-log line for each read (what L{Site} writes by default)
    would bury the proxy's own log.  Reads are logged at debug level.
    """

    noisy = False

    def log(self, request: Request) -> None:  # type: ignore[override]
        log.debug(
            "metrics: {method} {path} from {client}: {code}",
            method=request.method.decode("ascii", "replace"),
            path=request.uri.decode("ascii", "replace"),
            client=request.getClientAddress(),
            code=request.code,
        )


def metrics_site(collector: MetricsCollector, reactor: object) -> MetricsSite:
    """
    The web site: C{/metrics}, C{/health}, C{/ready}, a landing page at
    C{/}, 404 elsewhere.

    @param reactor: the proxy's reactor (the site keeps its clock on it).
    """
    root = Resource()
    root.putChild(b"", _LandingPage())
    root.putChild(b"metrics", MetricsResource(collector))
    root.putChild(b"health", HealthResource())
    root.putChild(b"ready", ReadyResource(collector.core))
    site = MetricsSite(root, reactor=reactor)
    site.displayTracebacks = False
    return site


def metrics_listen_descriptions(config: PgpoolConfig) -> List[str]:
    """
    Endpoint strings for C{metrics_listen_addresses} and C{metrics_port}
    (the same address syntax as C{listen_addresses}); none when the
    addresses are empty, the default.
    """
    return tcp_descriptions(config.metrics_listen_addresses, config.metrics_port)


def make_metrics_service(
    core: "ProxyCore", descriptions: Optional[Iterable[str]] = None
) -> IService:
    """
    The metrics listeners of a proxy, as one service to add to the proxy's
    C{MultiService}.  Like the client and PCP listeners, each fails loudly
    (at C{startService}) when its address is taken.

    @param core: the proxy to report on; gives the configuration and the
        reactor too.
    @param descriptions: endpoint strings to listen on instead of those of
        the configuration (tests).
    """
    site = metrics_site(MetricsCollector(core), core.reactor)
    if descriptions is None:
        descriptions = metrics_listen_descriptions(core.config)
    service = listen_services("metrics", "metrics", descriptions, site, core.reactor)
    service.site = site  # type: ignore[attr-defined]
    return service
