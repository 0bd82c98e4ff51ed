"""
Reloading the configuration while the proxy runs: SIGHUP,
C{pcp_reload_config} and C{twisted-pgpool reload}, as Pgpool-II's reload.

Every setting has a context in the configuration model
(L{twisted_pgpool.config.setting_context}): L{RELOAD} settings take the new
value, L{START} settings keep the value the proxy started with, and a
warning in PostgreSQL's words says a restart is needed.  Two steps, so that
a bad file changes nothing:

  - L{plan_reload} compares the configuration in force with the new one
    and returns the configuration to put in force (new values of reload
    settings, old values of start settings) with the list of changes.  It is
    plain computation.
  - L{ConfigReloader} reads the file, builds from the planned configuration
    everything the proxy derives from it, exactly as at start (pool_passwd,
    pool_hba.conf, the check users' passwords, the redirect lists, the
    routing rules), and only when all of that succeeded swaps
    C{core.config} and hands the new values to the parts that copied
    settings at start: the authenticator, the balancer, the pool and the
    limiter, the query cache's rules, the health check, the replication
    check, the failover manager, the PCP listener, logging, busy polling.

Backends follow Pgpool-II: a backend listed after the existing ones is added
(down, until C{pcp_attach_node} attaches it); an existing backend's host
and port need a restart, as does removing a backend; its weight, flag, data
directory, application name and health check overrides are reloaded.  New
sessions use the new settings; a session already running keeps its
load-balance node and routing settings until it ends.

L{ReloadOnSighup} makes SIGHUP trigger a reload, as in Pgpool-II.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple

import attrs
from twisted.application.service import Service
from twisted.internet.task import Clock
from twisted.logger import Logger

from twisted_pgpool import logs
from twisted_pgpool.cluster.model import STATUS_DOWN
from twisted_pgpool.config import (
    RELOAD,
    BackendConfig,
    ConfigError,
    PgpoolConfig,
    load_config,
    setting_context,
    show_setting,
)

__all__ = [
    "Change",
    "ConfigReloader",
    "ReloadError",
    "ReloadOnSighup",
    "ReloadPlan",
    "plan_reload",
]

log = Logger(observer=logs.observer)

#: The settings the query cache's rules are made of.
_CACHE_POLICY_KEYS = frozenset(
    [
        "cache_safe_memqcache_table_list",
        "cache_unsafe_memqcache_table_list",
        "allow_sql_comments",
        "ignore_leading_white_space",
        "memqcache_auto_cache_invalidation",
    ]
)

#: Why a backend added by a reload is down.
ADDED_NODE_REASON = "added by a configuration reload; attach it to use it"


@attrs.frozen(repr=False)
class Change:
    """
    One setting whose value differs between the configuration in force and
    the file.

    @ivar key: as the documentation spells it: C{health_check_period},
        C{backends[1].weight}; a whole backend is C{backends[2]}.
    @ivar old: the value in force (L{None} for a backend being added).
    @ivar new: the value in the file (L{None} for a backend removed).
    @ivar field: the setting's attrs field, which says how its values are
        shown (L{show_setting}); L{None} for a whole backend.
    """

    key: str
    old: Any
    new: Any
    field: "Optional[attrs.Attribute[Any]]" = attrs.field(default=None, eq=False)

    def _show(self, value: Any) -> str:
        if self.field is not None:
            return show_setting(self.field, value)
        if isinstance(value, BackendConfig):
            return f"{value.hostname}:{value.port}"
        return "" if value is None else str(value)

    def shown_value(self) -> str:
        """
        The new value for the log, as every report of settings shows it: a
        secret setting (a password) as C{*****}.
        """
        return self._show(self.new)

    def __repr__(self) -> str:
        # The values go through show_setting: a plan shown at the manhole's
        # prompt must not print the old and new password.
        return (
            f"Change(key={self.key!r}, old={self._show(self.old)!r}, new={self._show(self.new)!r})"
        )


@attrs.frozen
class ReloadPlan:
    """
    What a reload puts in force.

    @ivar config: the configuration to put in force: the file's values of
        reload settings, the running values of start settings.
    @ivar applied: the changes of reload settings, applied.
    @ivar kept: the changes that need a restart, not applied.
    @ivar added_nodes: the node ids of backends the file adds.
    """

    config: PgpoolConfig
    applied: Tuple[Change, ...]
    kept: Tuple[Change, ...]
    added_nodes: Tuple[int, ...]

    @property
    def changed_keys(self) -> frozenset:
        """
        The keys of the applied changes.
        """
        return frozenset(change.key for change in self.applied)


def _merge(
    current: Any,
    new: Any,
    prefix: str,
    applied: List[Change],
    kept: List[Change],
    skip: Sequence[str] = (),
) -> Dict[str, Any]:
    """
    The values of C{current}'s settings to put in force: C{new}'s for
    reload settings, C{current}'s for start settings, recording each
    difference in C{applied} or C{kept}.
    """
    values: Dict[str, Any] = {}
    for field in attrs.fields(type(current)):
        if field.name in skip or not field.metadata:
            continue
        old_value = getattr(current, field.name)
        new_value = getattr(new, field.name)
        if old_value == new_value:
            continue
        change = Change(prefix + field.name, old_value, new_value, field)
        if setting_context(field) == RELOAD:
            applied.append(change)
            values[field.name] = new_value
        else:
            kept.append(change)
    return values


def plan_reload(current: PgpoolConfig, new: PgpoolConfig) -> ReloadPlan:
    """
    Compare the configuration in force with a newly read one.

    Backends are compared by position: the settings of an existing backend
    are merged like the others (its host and port are start settings);
    backends after the last existing one are added; a backend missing from
    the new file stays, and its removal is reported as needing a restart.
    """
    applied: List[Change] = []
    kept: List[Change] = []
    values = _merge(current, new, "", applied, kept, skip=("backends",))
    backends: List[BackendConfig] = []
    for node_id, old_backend in enumerate(current.backends):
        prefix = f"backends[{node_id}]"
        if node_id >= len(new.backends):
            kept.append(Change(prefix, old_backend, None))
            backends.append(old_backend)
            continue
        merged = _merge(old_backend, new.backends[node_id], prefix + ".", applied, kept)
        backends.append(attrs.evolve(old_backend, **merged))
    added = []
    for node_id in range(len(current.backends), len(new.backends)):
        applied.append(Change(f"backends[{node_id}]", None, new.backends[node_id]))
        backends.append(new.backends[node_id])
        added.append(node_id)
    config = attrs.evolve(current, backends=tuple(backends), source=new.source, **values)
    return ReloadPlan(config, tuple(applied), tuple(kept), tuple(added))


class ReloadError(Exception):
    """
    The reload did not happen: the new configuration cannot be used (or
    there is no file to read).  The configuration in force is unchanged.
    C{str()} is one line for the user, such as the loader's
    C{file:line: key: reason}.
    """


class ConfigReloader:
    """
    Reloads a running proxy's configuration: the one place that swaps
    C{core.config} and tells the parts that copied settings at start.

    @ivar core: the proxy's shared state
        (L{twisted_pgpool.service.ProxyCore}); its C{health},
        C{replication}, C{failover} and C{query_cache} are updated when
        present.
    @ivar path: the configuration file, absolute (a later C{chdir} by
        twistd does not change it), or L{None} when the configuration was
        not read from a file (built with C{config_from_dict}): L{reload}
        then fails, and L{apply} is the way in.
    @ivar pcp_factory: the PCP listener's factory, whose C{pcp_conf_file}
        and C{authentication_timeout} follow the configuration, if any.
    @ivar set_busy_poll: turns the reactor's busy polling on for up to the
        given seconds, or off with 0; L{None} when busy polling is not
        managed.
    """

    def __init__(
        self,
        core: Any,
        path: Optional[str] = None,
        *,
        pcp_factory: Any = None,
        set_busy_poll: Optional[Callable[[float], None]] = None,
    ) -> None:
        self.core = core
        if path is None and os.path.isfile(core.config.source):
            path = core.config.source
        self.path = os.path.abspath(path) if path is not None else None
        self.pcp_factory = pcp_factory
        self.set_busy_poll = set_busy_poll

    def reload(self) -> ReloadPlan:
        """
        Read the configuration file (and the files it names) again and put
        in force what may change without a restart.

        @return: what was applied and what was kept.
        @raise ReloadError: the file is unusable; it was logged, and nothing
            changed.
        """
        log.info("reload config files.")
        if self.path is None:
            reason = (
                "the configuration was not read from a file "
                f"({self.core.config.source}); nothing to reload"
            )
            log.error("{reason}", reason=reason)
            raise ReloadError(reason)
        try:
            # The command line's -a/-F still replace the file's settings.
            new = load_config(self.path, overrides=dict(self.core.config.overrides) or None)
        except ConfigError as e:
            self._refused(e)
        return self.apply(new)

    def apply(self, new: PgpoolConfig) -> ReloadPlan:
        """
        Put a configuration in force as a reload would (for applications
        that embed the proxy and keep their settings elsewhere).

        @raise ReloadError: the files it names are unusable, or it fails a
            check that start-up would fail; logged, and nothing changed.
        """
        plan = plan_reload(self.core.config, new)
        try:
            # Everything derived from the settings, built exactly as at
            # start; nothing in force is touched until it all succeeded.
            fresh = type(self.core).from_config(plan.config, Clock())
        except ConfigError as e:
            self._refused(e)
        for change in plan.kept:
            log.warn(
                'parameter "{key}" cannot be changed without restarting the server', key=change.key
            )
        self._commit(plan, fresh)
        for change in plan.applied:
            if isinstance(change.new, BackendConfig):
                continue  # an added backend, reported below
            log.info(
                'parameter "{key}" changed to "{value}"', key=change.key, value=change.shown_value()
            )
        for node_id in plan.added_nodes:
            backend = plan.config.backends[node_id]
            log.info(
                "node {node_id} ({host}:{port}) added by reload; it is "
                "down until attached (pcp_attach_node)",
                node_id=node_id,
                host=backend.hostname,
                port=backend.port,
            )
        return plan

    def _refused(self, error: ConfigError) -> NoReturn:
        where = self.path or self.core.config.source
        log.error(
            'configuration file "{path}" contains errors; no changes were applied: {error}',
            path=where,
            error=str(error),
        )
        raise ReloadError(str(error)) from None

    def _commit(self, plan: ReloadPlan, fresh: Any) -> None:
        """
        Swap the configuration and hand the new values to every part that
        keeps its own copy.  Nothing here may fail: every check ran before.
        """
        core = self.core
        old: PgpoolConfig = core.config
        config = plan.config
        core.config = config

        # Backends: the weights and flags the balancer and the failover
        # manager read, then the nodes the file adds.
        cluster = core.cluster
        for node, backend in zip(cluster.nodes, config.backends):
            node.config = backend
        tls = core.tls.client if core.tls is not None else None
        started_without_nodes = not cluster.nodes
        for node_id in plan.added_nodes:
            cluster.add_node(config.backends[node_id], STATUS_DOWN, ADDED_NODE_REASON, tls=tls)
        if started_without_nodes and cluster.nodes:
            # The first backends (the proxy started with none): the primary
            # is assumed as at a start until a search says otherwise.
            cluster.assume_primary("first backend added by reload")

        # Authentication: the files were read again; the authenticator
        # object stays (it holds the per-process secret of its mock salts).
        authenticator, new_authenticator = core.authenticator, fresh.authenticator
        authenticator.passwd = new_authenticator.passwd
        authenticator.hba = new_authenticator.hba
        authenticator.allow_clear_text_frontend_auth = (
            new_authenticator.allow_clear_text_frontend_auth
        )
        core.sr_check_credentials = fresh.sr_check_credentials
        core.health_check_credentials = fresh.health_check_credentials

        # Routing, pooling, limits: read when a session starts.
        core.classifier_config = fresh.classifier_config
        balancer, new_balancer = core.balancer, fresh.balancer
        balancer.user_redirects = new_balancer.user_redirects
        balancer.database_redirects = new_balancer.database_redirects
        balancer.app_name_redirects = new_balancer.app_name_redirects
        balancer.prefer_lower_delay_standby = new_balancer.prefer_lower_delay_standby
        core.pool.reset_query_list = list(config.reset_queries)
        core.limiter.queue_timeout = config.client_queue_timeout
        core.limiter.max_unauthenticated = config.max_unauthenticated_clients
        core.cancels.connect_timeout = config.connect_timeout
        cache = core.query_cache
        if (
            cache is not None
            and fresh.query_cache is not None
            and _CACHE_POLICY_KEYS & plan.changed_keys
        ):
            cache.use_policy(fresh.query_cache.policy, config.memqcache_auto_cache_invalidation)

        # The periodic workers reschedule themselves.
        if core.health is not None:
            core.health.reconfigure(config, core.health_check_credentials)
        if core.replication is not None:
            core.replication.reconfigure(config, core.sr_check_credentials)
        if core.failover is not None:
            core.failover.reconfigure(config)

        if self.pcp_factory is not None:
            self.pcp_factory.pcp_conf_file = config.pcp_conf_file
            self.pcp_factory.authentication_timeout = config.authentication_timeout
        logs.configure(
            config.log_min_messages,
            config.log_destination,
            config.syslog_facility,
            config.syslog_ident,
        )
        if self.set_busy_poll is not None and config.busy_poll_time != old.busy_poll_time:
            self.set_busy_poll(config.busy_poll_time)


class ReloadOnSighup(Service):
    """
    Reloads the configuration when the process gets SIGHUP, as Pgpool-II
    does (C{pgpool reload} sends it; without a handler SIGHUP would end the
    process).  The handler is installed when the service starts and the
    previous one put back when it stops; the reload itself runs in the
    reactor, not in the signal handler.

    @ivar reload: what a SIGHUP does, usually L{ConfigReloader.reload}.
    """

    def __init__(self, reactor: Any, reload: Callable[[], object]) -> None:
        self.reactor = reactor
        self.reload = reload
        self._previous: Any = None
        self._installed = False

    def startService(self) -> None:
        super().startService()
        try:
            self._previous = signal.signal(signal.SIGHUP, self._received)
        except (AttributeError, ValueError) as e:
            # No SIGHUP on this platform, or not the main thread (an
            # application that embeds the proxy in a thread).
            log.warn("cannot reload the configuration on SIGHUP: {error}", error=e)
            return
        self._installed = True

    def stopService(self) -> None:
        super().stopService()
        if self._installed:
            signal.signal(signal.SIGHUP, self._previous)
            self._installed = False

    def _received(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self._reload)

    def _reload(self) -> None:
        log.info("received SIGHUP, reloading configuration files")
        try:
            self.reload()
        except ReloadError:
            pass  # logged by the reloader; the proxy runs on as before
        except Exception:
            log.failure("reloading the configuration failed")
