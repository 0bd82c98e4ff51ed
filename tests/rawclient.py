"""
A client that speaks the protocol over a plain socket, for tests and
benchmarks that must control exactly what a client sends (a message
announced long and sent slowly, or not at all); the proxy's resident memory
meanwhile is sampled by L{twisted_pgpool.testing.processes.RssSampler}.

A session is either logged in by hand (a user the server trusts, relayed
by the proxy), or logged in by psycopg and then taken over: the socket is
duplicated once the connection is ready, so that the proxy authenticates
the client (what a load-balancing session needs) without this module
speaking any authentication method.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any, List, Tuple

from tests.wire import error_fields, frame, startup_packet

#: One send() of a long message: what a client writes at a time.
PIECE = 256 * 1024


class RawClient:
    """
    One session over a plain socket.
    """

    def __init__(self, sock: socket.socket, keep: Any = None) -> None:
        self.sock = sock
        self._buffer = bytearray()
        # The psycopg connection whose socket this is, kept open (its
        # own socket object would close the descriptor when collected).
        self._keep = keep

    @classmethod
    def trusted(cls, host: str, port: int, user: str = "trustuser",
                database: str = "app") -> "RawClient":
        """
        Log in as a user the server trusts (relayed by the proxy).
        """
        sock = socket.create_connection((host, port))
        client = cls(sock)
        client.send(startup_packet({"user": user, "database": database}))
        client.until_ready()
        return client

    @classmethod
    def taken_over(cls, dsn: str) -> "RawClient":
        """
        Log in with psycopg (which answers whatever authentication the
        proxy asks for), then go on over a duplicate of its socket.
        """
        import psycopg

        connection = psycopg.connect(dsn, autocommit=True, sslmode="disable")
        sock = socket.socket(fileno=os.dup(connection.fileno()))
        sock.setblocking(True)
        return cls(sock, keep=connection)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_long(self, data: bytes, piece: int = PIECE) -> None:
        """
        Send C{data} a piece at a time, as a client streaming a large
        value does; stops quietly if the proxy closes the connection.
        """
        view = memoryview(data)
        try:
            for start in range(0, len(data), piece):
                self.sock.sendall(view[start:start + piece])
        except (BrokenPipeError, ConnectionResetError):
            pass

    def read_message(self) -> Tuple[int, bytes]:
        while len(self._buffer) < 5:
            self._receive()
        (length,) = struct.unpack_from("!I", self._buffer, 1)
        while len(self._buffer) < 1 + length:
            self._receive()
        message = (self._buffer[0], bytes(self._buffer[5:1 + length]))
        del self._buffer[:1 + length]
        return message

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the proxy closed the connection")
        self._buffer += chunk

    def until_ready(self) -> List[Tuple[int, bytes]]:
        """
        The messages up to and including the next ReadyForQuery (or a
        FATAL, after which the proxy closes the connection).
        """
        received = []
        while True:
            message_type, payload = self.read_message()
            received.append((message_type, payload))
            if message_type == ord("Z"):
                return received
            if message_type == ord("E") and error_fields(payload).get("S") == "FATAL":
                return received

    def close(self) -> None:
        try:
            self.sock.sendall(b"X\x00\x00\x00\x04")
        except OSError:
            pass
        self.sock.close()
        if self._keep is not None:
            try:
                self._keep.close()
            except Exception:
                pass


def long_query(size: int) -> bytes:
    """
    A Query of C{size} bytes whose answer is the length of its text.
    """
    head = b"SELECT length('"
    tail = b"')\x00"
    return frame(b"Q", head + b"x" * (size - len(head) - len(tail) - 5) + tail)


def long_bind_batch(size: int, sql: str = "SELECT length($1::bytea)") -> bytes:
    """
    Parse, Bind (one bytea parameter of C{size} bytes, binary), Execute,
    Sync: a large value uploaded through the extended protocol.
    """
    parse = frame(b"P", b"\x00" + sql.encode() + b"\x00\x00\x00")
    bind = frame(b"B", b"\x00\x00" + struct.pack("!hh", 1, 1) + struct.pack("!hi", 1, size)
                 + b"\x00" * size + struct.pack("!h", 0))
    return parse + bind + frame(b"E", b"\x00\x00\x00\x00\x00") + frame(b"S", b"")


def row_values(received: List[Tuple[int, bytes]], column: int = 0) -> List[bytes]:
    """
    Column C{column} (text, not NULL) of each DataRow in C{received}.
    """
    values = []
    for message_type, payload in received:
        if message_type == ord("D"):
            pos = 2
            for _ in range(column):
                (length,) = struct.unpack_from("!i", payload, pos)
                pos += 4 + max(length, 0)
            (length,) = struct.unpack_from("!i", payload, pos)
            values.append(payload[pos + 4:pos + 4 + length])
    return values
