"""
Services that listen on endpoints and fail loudly when they cannot: the
proxy's client listeners, and those of PCP, the metrics and the manhole.
"""

from __future__ import annotations

from typing import Iterable, List, Optional

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_pgpool import logs

__all__ = ["ListenService", "listen_services"]

log = Logger(observer=logs.observer)


class ListenService(Service):
    """
    Listens on one endpoint, and fails loudly if it cannot.

    A proxy that starts without its port open would look healthy to a
    supervisor while serving nobody, so a listen failure is raised from
    C{startService}: twistd exits with the error, and an embedding
    application sees the exception.

    @ivar factory: what serves the connections; None only in a subclass
        that builds it in its own C{startService}, before calling this one's.
    """

    def __init__(
        self, description: str, endpoint: IStreamServerEndpoint, factory: Optional[IProtocolFactory]
    ) -> None:
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.port: Optional[IListeningPort] = None

    def startService(self) -> None:
        super().startService()
        assert self.factory is not None, "a subclass builds its factory before listening"
        d = self.endpoint.listen(self.factory)
        failures: List[Failure] = []
        d.addCallbacks(self._listening, failures.append)
        if failures:
            failure = failures[0]
            log.critical(
                "could not listen on {where}: {reason}",
                where=self.description,
                reason=failure.getErrorMessage(),
            )
            failure.raiseException()

    def _listening(self, port: IListeningPort) -> None:
        """
        Keep the port, and say where clients can connect now.
        """
        self.port = port
        log.info("listening for clients on {where}", where=self.description)

    def stopService(self) -> Optional[Deferred[None]]:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


def listen_services(
    name: str, label: str, descriptions: Iterable[str], factory: IProtocolFactory, reactor: object
) -> MultiService:
    """
    One L{ListenService} per endpoint description, all serving C{factory},
    gathered in a L{MultiService} called C{name}; C{label} prefixes each
    listener's description in the log.
    """
    service = MultiService()
    service.setName(name)
    for description in descriptions:
        endpoint = serverFromString(reactor, description)
        ListenService(f"{label} {description}", endpoint, factory).setServiceParent(service)
    return service
