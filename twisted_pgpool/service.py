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
from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger

from twisted_pgpool import logs
from twisted_pgpool.cancel import CancelRegistry
from twisted_pgpool.clientauth import ClientAuthenticator
from twisted_pgpool.cluster import Cluster
from twisted_pgpool.config import ConfigError, PgpoolConfig
from twisted_pgpool.frontend import FrontendFactory, FrontendProtocol
from twisted_pgpool.hba import HbaError, HbaFile
from twisted_pgpool.passwd import PasswdError, PoolPasswd

log = Logger(observer=logs.observer)


@attr.s(auto_attribs=True, eq=False)
class ProxyCore:
    """
    What every client session shares.

    @ivar config: the configuration in force.
    @ivar reactor: the reactor everything schedules and connects with.
    @ivar cluster: the backend nodes and their state.
    @ivar authenticator: checks clients against pool_hba.conf/pool_passwd.
    @ivar cancels: the proxy-issued cancel keys.
    @ivar sessions: the sessions that reached the relay phase.
    """

    config: PgpoolConfig
    reactor: object
    cluster: Cluster
    authenticator: ClientAuthenticator
    cancels: CancelRegistry
    sessions: Set[FrontendProtocol] = attr.ib(factory=set)

    @classmethod
    def from_config(cls, config: PgpoolConfig, reactor) -> "ProxyCore":
        """
        Load the files the configuration names (pool_passwd, pool_hba.conf)
        and build the shared state.
        """
        passwd, hba = load_auth_files(config)
        authenticator = ClientAuthenticator(
            passwd, hba, config.allow_clear_text_frontend_auth)
        return cls(
            config=config,
            reactor=reactor,
            cluster=Cluster.from_config(config.backends),
            authenticator=authenticator,
            cancels=CancelRegistry(reactor, config.connect_timeout),
        )


def load_auth_files(config: PgpoolConfig) -> Tuple[PoolPasswd, Optional[HbaFile]]:
    """
    Read pool_passwd and (when enabled) pool_hba.conf.

    @raise ConfigError: either file is malformed or unreadable; the message
        names the file and line.
    """
    try:
        passwd = PoolPasswd.load(config.pool_passwd or os.devnull)
        hba = HbaFile.load(config.pool_hba_file) if config.enable_pool_hba \
            else None
    except (PasswdError, HbaError, OSError) as e:
        raise ConfigError(str(e))
    return passwd, hba


def check_files(config: PgpoolConfig) -> None:
    """
    Check the files a configuration refers to, without starting anything.

    @raise ConfigError: as L{load_auth_files}.
    """
    load_auth_files(config)


class ListenService(Service):
    """
    Listens on one endpoint, and fails loudly if it cannot.

    A proxy that starts without its port open would look healthy to a
    supervisor while serving nobody, so a listen failure is raised from
    C{startService}: twistd exits with the error, and an embedding
    application sees the exception.
    """

    def __init__(self, description: str, endpoint: IStreamServerEndpoint,
                 factory: FrontendFactory) -> None:
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.port: Optional[IListeningPort] = None

    def startService(self) -> None:
        super().startService()
        d = self.endpoint.listen(self.factory)
        failures: List[object] = []
        d.addCallbacks(self._listening, failures.append)
        if failures:
            failure = failures[0]
            log.critical("could not listen on {where}: {reason}",
                         where=self.description,
                         reason=failure.getErrorMessage())  # type: ignore[attr-defined]
            failure.raiseException()  # type: ignore[attr-defined]

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        log.info("listening for clients on {where}", where=self.description)

    def stopService(self):
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


def listen_descriptions(config: PgpoolConfig) -> List[str]:
    """
    Endpoint strings for C{listen_addresses} and C{port}, as Pgpool-II
    reads them: C{*} is every address, C{''} disables TCP, otherwise a
    comma-separated list of host names or addresses.
    """
    descriptions = []
    for item in config.listen_addresses.split(","):
        address = item.strip()
        if not address:
            continue
        if address == "*":
            descriptions.append(f"tcp:{config.port}")
        elif address == "localhost":
            descriptions.append(f"tcp:{config.port}:interface=127.0.0.1")
        elif ":" in address:
            escaped = address.replace(":", "\\:")
            descriptions.append(f"tcp6:{config.port}:interface={escaped}")
        else:
            descriptions.append(f"tcp:{config.port}:interface={address}")
    return descriptions


class PgpoolService(MultiService):
    """
    The whole proxy: listeners plus (in later versions) the health monitor
    and other periodic workers, all sharing one L{ProxyCore}.

    @ivar core: the shared state, for inspection (e.g. from a manhole).
    """

    def __init__(self, core: ProxyCore) -> None:
        super().__init__()
        self.core = core
        self.factory = FrontendFactory(core)
        for description in listen_descriptions(core.config):
            endpoint = serverFromString(core.reactor, description)
            ListenService(description, endpoint, self.factory).setServiceParent(self)

    def startService(self) -> None:
        config = self.core.config
        logs.configure(config.log_min_messages, config.log_destination,
                       config.syslog_facility, config.syslog_ident)
        nodes = ", ".join(
            f"{n.node_id}={n.hostname}:{n.port}({n.role})"
            for n in self.core.cluster.nodes)
        log.info("twisted_pgpool starting with backends {nodes}", nodes=nodes)
        super().startService()

    def stopService(self):
        logs.unconfigure_syslog()
        return super().stopService()


def make_service(config: PgpoolConfig, reactor=None) -> PgpoolService:
    """
    Build the proxy service for a configuration.

    @param config: from L{twisted_pgpool.config.load_config} or
        L{twisted_pgpool.config.config_from_dict}.
    @param reactor: the reactor to use; the global one by default.
    @return: an C{IService}; add it to your application or start it.
    @raise twisted_pgpool.passwd.PasswdError: pool_passwd is malformed.
    @raise twisted_pgpool.hba.HbaError: pool_hba.conf is malformed.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor
        reactor = global_reactor
    return PgpoolService(ProxyCore.from_config(config, reactor))
