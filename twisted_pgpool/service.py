"""
Service wiring: from a configuration to a running proxy.

L{make_service} is the one public entry point; the twistd plugin and
embedding applications both call it and get an
L{twisted.application.service.IService} to start and stop.
"""

from __future__ import annotations

import os
from typing import List, Optional, Set, Tuple

import attr
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_pgpool import logs
from twisted_pgpool.admin.manhole import make_manhole_service
from twisted_pgpool.admin.metrics_web import make_metrics_service
from twisted_pgpool.admin.operations import ProxyAdminBackend
from twisted_pgpool.admin.pcp import make_pcp_service
from twisted_pgpool.admin.reload import ConfigReloader, ReloadOnSighup
from twisted_pgpool.admin.shutdown import ProxyShutdown, ShutdownOnSignals, stop_reactor
from twisted_pgpool.auth.hba import HbaError, HbaFile
from twisted_pgpool.auth.passwd import PasswdError, PoolPasswd
from twisted_pgpool.backend.pool import ConnectionPool
from twisted_pgpool.backend.protocol import BackendCredentials
from twisted_pgpool.cache.catalog import CatalogCaches
from twisted_pgpool.cache.querycache import QueryCache
from twisted_pgpool.cluster.failover import FailoverManager
from twisted_pgpool.cluster.health import HealthMonitor
from twisted_pgpool.cluster.model import Cluster
from twisted_pgpool.cluster.nodecheck import check_credentials
from twisted_pgpool.cluster.replication import ReplicationMonitor
from twisted_pgpool.config import ConfigError, PgpoolConfig
from twisted_pgpool.net.addresses import tcp_descriptions
from twisted_pgpool.net.listening import ListenService
from twisted_pgpool.net.tls import ProxyTLS, TLSSettingError, proxy_tls
from twisted_pgpool.proxy.cancel import CancelRegistry, CancelTarget
from twisted_pgpool.proxy.clientauth import ClientAuthenticator
from twisted_pgpool.proxy.frontend import FrontendFactory, FrontendProtocol
from twisted_pgpool.proxy.inspection import Inspector
from twisted_pgpool.proxy.limits import SessionLimiter
from twisted_pgpool.routing.balancer import Balancer, PreferenceListError, parse_preference_list
from twisted_pgpool.routing.replication_mode import follow_main_node, is_native
from twisted_pgpool.sql.classifier import Classification, ClassifierConfig, classify
from twisted_pgpool.wire import errors

log = Logger(observer=logs.observer)


@attr.s(auto_attribs=True, eq=False)
class ProxyCore:
    """
    What every client session shares.

    @ivar config: the configuration in force.
    @ivar reactor: the reactor everything schedules and connects with: its
        clock is used here, the rest (C{IReactorTCP}, C{IReactorUNIX}) by
        the endpoints it is handed to.
    @ivar cluster: the backend nodes and their state.
    @ivar authenticator: checks clients against pool_hba.conf/pool_passwd.
    @ivar cancels: the proxy-issued cancel keys.
    @ivar sessions: the sessions that reached the relay phase.
    """

    config: PgpoolConfig
    reactor: IReactorTime
    cluster: Cluster
    authenticator: ClientAuthenticator
    cancels: CancelRegistry
    limiter: SessionLimiter
    pool: ConnectionPool
    balancer: Balancer
    classifier_config: ClassifierConfig
    sessions: Set[FrontendProtocol] = attr.ib(factory=set)
    inspector: Inspector = attr.ib(default=None)
    sr_check_credentials: BackendCredentials = attr.ib(factory=lambda: BackendCredentials(""))
    health_check_credentials: BackendCredentials = attr.ib(factory=lambda: BackendCredentials(""))
    replication: Optional[ReplicationMonitor] = attr.ib(default=None)
    failover: Optional[FailoverManager] = attr.ib(default=None)
    health: Optional[HealthMonitor] = attr.ib(default=None)
    #: The in-memory query cache, when C{memory_cache_enabled}.
    query_cache: Optional[QueryCache] = attr.ib(default=None)
    #: TLS for clients and backends, when C{ssl} is on.
    tls: Optional[ProxyTLS] = attr.ib(default=None)
    #: What served the last new session: C{primary}, C{standby} (no
    #: primary was usable) or C{proxy} (no node was): a change is logged
    #: once, not every session.
    new_sessions_served_by: str = "primary"
    #: The relation cache: catalog facts per database, shared by routing
    #: and the query cache (relcache_expire, relcache_size).
    catalogs: CatalogCaches = attr.ib(factory=CatalogCaches)
    _relaxed_config: Optional[Tuple[ClassifierConfig, ClassifierConfig]] = attr.ib(default=None)

    def __attrs_post_init__(self) -> None:
        if self.inspector is None:
            self.inspector = Inspector(self)

    def end_sessions_using(self, node_id: int, error: errors.PgError) -> int:
        """
        A node went down: end the sessions that depend on it (it was their
        primary, or it owes them a reply) with C{error}; sessions that only
        had an idle connection to it keep going without it.  Idle pooled
        connections to the node are closed.

        @return: how many sessions were ended.
        """
        ended = 0
        for frontend in list(self.sessions):
            session = frontend.session
            if session is None or node_id not in session.links:
                continue
            if session.depends_on(node_id):
                frontend.fail(error)
                ended += 1
            else:
                session.drop_node(node_id)
        self.pool.close_node(node_id)
        return ended

    def classify(self, sql: str) -> Classification:
        """
        Classify a statement with this proxy's settings (cached by shape).
        """
        return classify(sql, self.classifier_config)

    def classify_relaxed(self, sql: str) -> Classification:
        """
        L{classify}, except that a call of a function of unknown volatility
        does not make the statement a write: for routing that looks the
        volatility up (L{twisted_pgpool.routing.catalog}).
        """
        relaxed = self._relaxed_config
        if relaxed is None or relaxed[0] is not self.classifier_config:
            # Made again after a reload changed the settings.
            # Its cache a quarter of the main one's: only reads calling user
            # functions are classified this way, and each entry of a full
            # cache holds about 850 bytes (10,000 entries: 8.5 MB more RSS
            # in the fuzzer's long run, docs/robustness.md).
            relaxed = self._relaxed_config = (
                self.classifier_config,
                attr.evolve(
                    self.classifier_config,
                    unknown_functions_are_writes=False,
                    cache_size=self.classifier_config.cache_size // 4,
                ),
            )
        return classify(sql, relaxed[1])

    @classmethod
    def from_config(cls, config: PgpoolConfig, reactor) -> "ProxyCore":
        """
        Load the files the configuration names (pool_passwd, pool_hba.conf)
        and build the shared state.
        """
        passwd, hba = load_auth_files(config)
        try:
            sr_check_credentials = check_credentials(
                config, passwd, config.sr_check_user, config.sr_check_password
            )
        except PasswdError as e:
            raise ConfigError(f"{config.source}: password of sr_check_user: {e}")
        try:
            health_check_credentials = check_credentials(
                config, passwd, config.health_check_user, config.health_check_password
            )
        except PasswdError as e:
            raise ConfigError(f"{config.source}: password of health_check_user: {e}")
        try:
            tls = proxy_tls(config)
        except TLSSettingError as e:
            raise ConfigError(e.reason, source=config.source, key=e.key)
        authenticator = ClientAuthenticator(
            passwd,
            hba,
            config.allow_clear_text_frontend_auth,
            verifies_client_certificates=tls is not None and tls.verifies_clients,
        )
        cluster = Cluster.from_config(config.backends, tls=tls.client if tls else None)
        if is_native(config):
            follow_main_node(cluster)
        cancels = CancelRegistry(reactor, config.connect_timeout)

        def cancel_backend(backend) -> None:
            node = cluster.nodes[backend.node_id]
            cancels.send(
                CancelTarget(
                    node.node_id, node.hostname, node.port, backend.process_id, backend.secret_key
                )
            )

        limiter = SessionLimiter(
            # Pgpool-II: with reserved_connections R, a client that makes
            # the count exceed num_init_children - R is refused.
            reactor,
            config.num_init_children - config.reserved_connections,
            queue_limit=config.num_init_children * config.listen_backlog_multiplier,
            queue_timeout=config.client_queue_timeout,
            reject_when_full=config.reserved_connections > 0,
            max_unauthenticated=config.max_unauthenticated_clients,
        )
        # Pgpool-II: each child caches max_pool (user, database) pairs, so
        # one pair can have a cached connection in every child.
        pool = ConnectionPool(
            reactor,
            enabled=config.connection_cache,
            max_idle_per_key=config.num_init_children,
            budget_per_node=config.num_init_children * config.max_pool,
            connection_life_time=config.connection_life_time,
            child_life_time=config.child_life_time,
            child_max_connections=config.child_max_connections,
            reset_query_list=config.reset_queries,
            cancel=cancel_backend,
            reset_timeout=config.reset_timeout,
        )
        try:
            balancer = Balancer(
                cluster,
                user_redirects=parse_preference_list(config.user_redirect_preference_list),
                database_redirects=parse_preference_list(config.database_redirect_preference_list),
                app_name_redirects=parse_preference_list(config.app_name_redirect_preference_list),
                prefer_lower_delay_standby=config.prefer_lower_delay_standby,
            )
            classifier_config = ClassifierConfig(
                write_function_list=config.write_function_list,
                read_only_function_list=config.read_only_function_list,
                primary_routing_query_pattern_list=config.primary_routing_query_pattern_list,
                allow_sql_comments=config.allow_sql_comments,
                ignore_leading_white_space=config.ignore_leading_white_space,
            )
        except (PreferenceListError, ValueError) as e:
            raise ConfigError(f"{config.source}: {e}")
        catalogs = CatalogCaches(
            clock=reactor, expire=config.relcache_expire, size=config.relcache_size
        )
        query_cache = (
            QueryCache.from_config(config, reactor, catalogs)
            if config.memory_cache_enabled
            else None
        )
        return cls(
            config=config,
            reactor=reactor,
            cluster=cluster,
            authenticator=authenticator,
            cancels=cancels,
            limiter=limiter,
            pool=pool,
            balancer=balancer,
            classifier_config=classifier_config,
            sr_check_credentials=sr_check_credentials,
            health_check_credentials=health_check_credentials,
            query_cache=query_cache,
            tls=tls,
            catalogs=catalogs,
        )


def load_auth_files(config: PgpoolConfig) -> Tuple[PoolPasswd, Optional[HbaFile]]:
    """
    Read pool_passwd and (when enabled) pool_hba.conf.

    @raise ConfigError: either file is malformed or unreadable; the message
        names the file and line.
    """
    try:
        passwd = PoolPasswd.load(config.pool_passwd or os.devnull)
        hba = HbaFile.load(config.pool_hba_file) if config.enable_pool_hba else None
    except (PasswdError, HbaError, OSError) as e:
        raise ConfigError(str(e))
    return passwd, hba


def check_files(config: PgpoolConfig) -> None:
    """
    Check the files a configuration refers to and the settings only the
    proxy's parts can check, without starting anything.

    @raise ConfigError: as L{load_auth_files}, or for a bad redirect
        preference list or conflicting function lists.
    """
    from twisted.internet.task import Clock

    ProxyCore.from_config(config, Clock())


def listen_descriptions(config: PgpoolConfig) -> List[str]:
    """
    Endpoint strings for C{listen_addresses} and C{port}.
    """
    return tcp_descriptions(config.listen_addresses, config.port)


class PgpoolService(MultiService):
    """
    The whole proxy: listeners plus (in later versions) the health monitor
    and other periodic workers, all sharing one L{ProxyCore}.

    @ivar core: the shared state, for inspection (e.g. from a manhole).
    @ivar metrics: the Prometheus endpoint's listeners, when
        C{metrics_listen_addresses} is set (docs/metrics.md); else None.
    @ivar manhole: the Python prompt for live inspection, when
        C{manhole_endpoint} is set (L{twisted_pgpool.admin.manhole}); else None.
    @ivar reloader: reloads the configuration file
        (L{twisted_pgpool.admin.reload}): on SIGHUP when C{reload_on_sighup},
        on C{pcp_reload_config}, or when called.
    """

    def __init__(
        self,
        core: ProxyCore,
        discard_status: bool = False,
        reload_on_sighup: bool = False,
        exit_on_listen_failure: bool = False,
    ) -> None:
        super().__init__()
        self.core = core
        self.exit_on_listen_failure = exit_on_listen_failure
        self.factory = FrontendFactory(core)
        # First child: the status file is applied before the primary search.
        self.failover = FailoverManager(core.reactor, core, discard_status)
        self.failover.setServiceParent(self)
        core.failover = self.failover
        self.replication = ReplicationMonitor(
            core.reactor, core.cluster, core.config, core.sr_check_credentials
        )
        self.replication.setServiceParent(self)
        core.replication = self.replication
        self.health = HealthMonitor(core.reactor, core, credentials=core.health_check_credentials)
        self.health.setServiceParent(self)
        core.health = self.health
        self.reloader = ConfigReloader(
            core, set_busy_poll=lambda maximum: _set_busy_poll(core.reactor, maximum)
        )
        if reload_on_sighup:
            ReloadOnSighup(core.reactor, self.reloader.reload).setServiceParent(self)
        # pcp_stop_pgpool: the client listeners are added below.
        self.shutdown = ProxyShutdown(
            core.reactor,
            core,
            [],
            stop=lambda: stop_reactor(core.reactor),
            save_status=self.failover.save_status,
        )
        if reload_on_sighup:
            # Run as Pgpool-II is (twistd pgpool, twisted-pgpool run): its
            # signals stop it as they stop Pgpool-II.
            ShutdownOnSignals(core.reactor, self.shutdown.shutdown).setServiceParent(self)
        self.admin_backend = ProxyAdminBackend(
            core, self.failover, self.health, reloader=self.reloader, stopper=self.shutdown
        )
        self.pcp = make_pcp_service(core, self.admin_backend)
        self.pcp.setServiceParent(self)
        self.reloader.pcp_factory = self.pcp.factory  # type: ignore[attr-defined]
        self.metrics: Optional[IService] = None
        if core.config.metrics_listen_addresses:
            self.metrics = make_metrics_service(core)
            self.metrics.setServiceParent(self)
        # Before the client listeners: once clients can connect, so can
        # an operator.
        self.manhole: Optional[IService] = make_manhole_service(core, self)
        if self.manhole is not None:
            self.manhole.setServiceParent(self)
        for description in listen_descriptions(core.config):
            endpoint = serverFromString(core.reactor, description)
            listener = ListenService(description, endpoint, self.factory)
            listener.setServiceParent(self)
            self.shutdown.listeners.append(listener)

    def startService(self) -> None:
        config = self.core.config
        logs.configure(
            config.log_min_messages,
            config.log_destination,
            config.syslog_facility,
            config.syslog_ident,
        )
        nodes = ", ".join(
            f"{n.node_id}={n.hostname}:{n.port}({n.role})" for n in self.core.cluster.nodes
        )
        log.info(
            "twisted_pgpool starting with backends {nodes}",
            nodes=nodes or "(none: clients are refused until a reload adds one)",
        )
        if self.core.query_cache is not None:
            self.core.query_cache.start()
        _set_busy_poll(self.core.reactor, config.busy_poll_time)
        try:
            super().startService()
        except CannotListenError:
            if not self.exit_on_listen_failure:
                raise
            # The listener logged the one line that says why ("could not
            # listen on ..."); a traceback would only bury it.
            raise SystemExit(1)

    def stopService(self):
        logs.unconfigure_syslog()
        if self.core.config.busy_poll_time > 0:
            _set_busy_poll(self.core.reactor, 0.0)
        d = super().stopService()
        self.core.pool.close_all()
        if self.core.query_cache is not None:
            self.core.query_cache.stop()
        return d


def _set_busy_poll(reactor: object, maximum: float) -> None:
    """
    Turn the reactor's busy polling on for up to C{maximum} seconds, or off
    with C{0}, when the reactor can (L{twisted_pgpool.net.reactor.ProxyReactor});
    say so when it cannot.
    """
    set_busy_poll = getattr(reactor, "set_busy_poll", None)
    if set_busy_poll is None:
        if maximum > 0:
            log.warn(
                "busy_poll_time is set but the reactor ({reactor}) cannot busy poll; "
                "run on the pgpool-epoll reactor to use it",
                reactor=type(reactor).__name__,
            )
        return
    set_busy_poll(maximum)
    if maximum > 0:
        log.info(
            "busy polling for up to {usecs:.0f} microseconds before sleeping", usecs=maximum * 1e6
        )


def make_service(
    config: PgpoolConfig,
    reactor=None,
    discard_status: bool = False,
    reload_on_sighup: bool = False,
    exit_on_listen_failure: bool = False,
) -> PgpoolService:
    """
    Build the proxy service for a configuration.

    @param config: from L{twisted_pgpool.config.load_config} or
        L{twisted_pgpool.config.config_from_dict}.
    @param reactor: the reactor to use; the global one by default.
    @param discard_status: ignore the saved node status (pgpool_status),
        as Pgpool-II's C{-D}: every node starts up.
    @param reload_on_sighup: reload the configuration file on SIGHUP, as
        Pgpool-II does (C{twistd pgpool} and C{twisted-pgpool run} ask for
        it; an application that handles SIGHUP itself leaves it off and
        calls C{service.reloader.reload()}).
    @param exit_on_listen_failure: when a port cannot be opened, exit the
        process (C{SystemExit(1)}) after the one log line that says why,
        instead of raising the error (C{twistd pgpool} and C{twisted-pgpool
        run}); an embedding application gets the exception.
    @return: an C{IService}; add it to your application or start it.
    @raise twisted_pgpool.auth.passwd.PasswdError: pool_passwd is malformed.
    @raise twisted_pgpool.auth.hba.HbaError: pool_hba.conf is malformed.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    return PgpoolService(
        ProxyCore.from_config(config, reactor),
        discard_status,
        reload_on_sighup,
        exit_on_listen_failure,
    )
