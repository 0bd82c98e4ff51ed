"""
Eager writes on the socket transports the proxy relays through.

A Twisted transport never sends from C{write}: it queues the bytes, asks
the reactor to watch the socket for writability (an C{epoll_ctl}), sends
on the next reactor iteration, and stops watching (another C{epoll_ctl}).
For a proxy, whose every write is a small message answering a read, that
is two system calls and a trip through the reactor's dispatch layers per
write, on top of the C{send} itself: measured under connection churn,
C{epoll_ctl} was a third of the proxy's system-call time (16 calls per
client connection).

asyncio's socket transports do what L{write_eagerly} makes a Twisted
transport do: when nothing is queued, send at once, and queue only what the
kernel did not take.  Everything else stays Twisted's: bytes queued before
go first (an eager send happens only when the queue is empty), the
remainder of a partial send is queued by the transport's own C{write}
(which applies flow control to a registered producer as usual), and a send
that fails is retried by the transport, which then reports the error
through C{connectionLost} the usual way.  TLS connections, connections
being closed, aborted or half-closed, and anything that is not a plain TCP
or UNIX-socket connection keep the stock behaviour.

L{IRelayTransport} names, for the type checker, what the two relaying
protocols use of their transports.
"""

from __future__ import annotations

from typing import Iterable

from twisted.internet import tcp
from twisted.internet.interfaces import IConsumer, IPushProducer, ITLSTransport

__all__ = ["IRelayTransport", "write_eagerly"]


class IRelayTransport(ITLSTransport, IConsumer, IPushProducer):
    """
    The transport of a connection the proxy relays through (the client's,
    L{twisted_pgpool.proxy.frontend.FrontendProtocol}, and a server's,
    L{twisted_pgpool.backend.protocol.BackendProtocol}), as the type checker
    sees it: a TCP or UNIX-socket connection (C{twisted.internet.tcp} and
    C{twisted.internet.unix} connections provide each of these interfaces)
    that is written to and closed, started TLS on, and paired with the
    other side's for flow control (registered producers, paused and
    resumed).

    No class declares it: it only types the protocols' C{transport}
    attribute, where C{Protocol} says C{Optional[ITransport]}, so that
    every use need not be cast or checked for None.
    """


def write_eagerly(transport: object) -> bool:
    """
    Make C{transport.write} and C{transport.writeSequence} send at once when
    the transport has nothing queued.

    @param transport: a connected transport; anything but a Twisted TCP (or
        UNIX-socket) connection is left alone.
    @return: whether the transport now writes eagerly.
    """
    if not isinstance(transport, tcp.Connection):
        return False
    if getattr(transport, "TLS", False) or not all(
        hasattr(transport, name)
        for name in (
            "socket",
            "dataBuffer",
            "offset",
            "_tempDataBuffer",
            "_writeDisconnected",
            "_writeDisconnecting",
            "_aborting",
        )
    ):
        return False
    base = type(transport)
    queued_write = base.write
    queued_write_sequence = base.writeSequence
    send = transport.socket.send

    def write(data: bytes) -> None:
        t = transport
        if (
            t._tempDataBuffer
            or t.offset != len(t.dataBuffer)
            or t.TLS
            or not t.connected
            or t.disconnecting
            or t._aborting
            or t._writeDisconnecting
            or t._writeDisconnected
            or getattr(t, "_sendmsgQueue", None)
            or not data
            or data.__class__ is not bytes
        ):
            queued_write(t, data)
            return
        try:
            sent = send(data)
        except OSError:
            # Full (EAGAIN) or failed: the transport queues it and, if the
            # connection is broken, finds out and closes it as usual.
            sent = 0
        if sent < len(data):
            queued_write(t, data[sent:] if sent else data)

    def write_sequence(iovec: Iterable[bytes]) -> None:
        if transport.TLS:
            queued_write_sequence(transport, iovec)
            return
        write(b"".join(iovec))

    transport.write = write  # type: ignore[method-assign]
    transport.writeSequence = write_sequence  # type: ignore[method-assign]
    return True
