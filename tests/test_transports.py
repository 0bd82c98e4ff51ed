"""
Tests for L{twisted_pgpool.net.transports}: eager writes on a Twisted TCP
connection over a real socket pair, with a memory reactor that records
which descriptors would be watched for writability; what
L{IRelayTransport} says of Twisted's socket connections.
"""

from __future__ import annotations

import socket

from twisted.internet import tcp, unix
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.net.transports import IRelayTransport, write_eagerly


class Recorder(Protocol):
    def __init__(self) -> None:
        self.lost = []

    def connectionLost(self, reason) -> None:
        self.lost.append(reason)


class EagerWriteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ours, self.peer = socket.socketpair()
        self.addCleanup(self.ours.close)
        self.addCleanup(self.peer.close)
        self.peer.settimeout(5)
        self.reactor = MemoryReactorClock()
        self.protocol = Recorder()
        self.transport = tcp.Connection(self.ours, self.protocol, self.reactor)
        self.transport.connected = True
        self.protocol.makeConnection(self.transport)

    def received(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            data += self.peer.recv(size - len(data))
        return data

    def test_write_with_nothing_queued_sends_at_once(self) -> None:
        self.assertTrue(write_eagerly(self.transport))
        self.transport.write(b"hello")
        self.assertEqual(self.received(5), b"hello")
        self.assertEqual(self.reactor.getWriters(), [])

    def test_write_sequence_sends_at_once_in_one_piece(self) -> None:
        write_eagerly(self.transport)
        self.transport.writeSequence([b"he", b"llo"])
        self.assertEqual(self.received(5), b"hello")
        self.assertEqual(self.reactor.getWriters(), [])

    def test_write_after_queued_bytes_keeps_the_order(self) -> None:
        tcp.Connection.write(self.transport, b"first ")
        write_eagerly(self.transport)
        self.transport.write(b"second")
        self.assertEqual(self.reactor.getWriters(), [self.transport])
        self.transport.doWrite()
        self.assertEqual(self.received(12), b"first second")

    def test_what_the_kernel_does_not_take_is_queued(self) -> None:
        self.ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        write_eagerly(self.transport)
        data = bytes(range(256)) * 8192
        self.transport.write(data)
        self.assertEqual(self.reactor.getWriters(), [self.transport])
        received = b""
        while len(received) < len(data):
            self.transport.doWrite()
            received += self.peer.recv(65536)
        self.assertEqual(received, data)
        self.assertEqual(self.reactor.getWriters(), [])

    def test_full_queue_pauses_a_streaming_producer(self) -> None:
        class Producer:
            paused = 0

            def pauseProducing(self) -> None:
                self.paused += 1

            def resumeProducing(self) -> None:
                pass

            def stopProducing(self) -> None:
                pass

        producer = Producer()
        self.ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        write_eagerly(self.transport)
        self.transport.registerProducer(producer, True)
        self.transport.write(b"x" * (4 * 1024 * 1024))
        self.assertEqual(producer.paused, 1)

    def test_failed_send_is_left_to_the_transport(self) -> None:
        write_eagerly(self.transport)
        self.peer.close()
        for _ in range(3):
            # The first send after the peer closed may still succeed.
            self.transport.write(b"x" * 65536)
        self.assertEqual(self.reactor.getWriters(), [self.transport])
        result = None
        while result is None:
            result = self.transport.doWrite()
        self.assertIsInstance(result, Exception)

    def test_writes_after_lose_connection_are_queued(self) -> None:
        write_eagerly(self.transport)
        self.transport.loseConnection()
        self.transport.write(b"bye")
        self.assertEqual(self.transport._tempDataBuffer, [b"bye"])

    def test_nothing_is_sent_after_an_abort(self) -> None:
        write_eagerly(self.transport)
        self.transport.abortConnection()
        self.transport.write(b"late")
        self.peer.setblocking(False)
        self.assertRaises(BlockingIOError, self.peer.recv, 10)

    def test_write_when_disconnected_is_dropped(self) -> None:
        write_eagerly(self.transport)
        self.transport.connected = False
        self.transport.write(b"lost")
        self.assertEqual((self.transport._tempDataBuffer, self.reactor.getWriters()), ([], []))

    def test_text_is_refused_as_by_twisted(self) -> None:
        write_eagerly(self.transport)
        self.assertRaises(TypeError, self.transport.write, "text")

    def test_other_transports_are_left_alone(self) -> None:
        transport = StringTransport()
        self.assertFalse(write_eagerly(transport))
        self.assertNotIn("write", vars(transport))

    def test_tls_connection_is_left_alone(self) -> None:
        self.transport.TLS = True
        self.assertFalse(write_eagerly(self.transport))


class RelayTransportTests(SynchronousTestCase):
    """
    L{IRelayTransport} is declared by no class; what it claims is that
    Twisted's TCP and UNIX-socket connections, which the relaying protocols
    get, provide every interface it combines.
    """

    def test_socket_connections_provide_what_it_combines(self) -> None:
        combined = IRelayTransport.__bases__
        self.assertTrue(combined)
        for connection in (tcp.Server, tcp.Client, unix.Server, unix.Client):
            for interface in combined:
                self.assertTrue(
                    interface.implementedBy(connection),
                    f"{connection.__name__} lacks {interface.__name__}",
                )
