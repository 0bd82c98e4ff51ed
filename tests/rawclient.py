"""
A client that speaks the protocol over a plain socket, for tests and
benchmarks that must control exactly what a client sends (a malformed
start-up packet, a message announced long and sent slowly, or not at all)
and see exactly what comes back; the proxy's resident memory meanwhile is
sampled by L{twisted_pgpool.testing.processes.RssSampler}.

A session is either logged in by hand (a user the server trusts, relayed
by the proxy), or logged in by psycopg and then taken over: the socket is
duplicated once the connection is ready, so that the proxy authenticates
the client (what a load-balancing session needs) without this module
speaking any authentication method.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tests.wire import error_fields, frame, password_message, startup_packet

#: One send() of a long message: what a client writes at a time.
PIECE = 256 * 1024


class RawClient:
    """
    One client connection over a plain socket: it sends exactly the bytes
    it is given and reads back typed messages, as (type, payload) with the
    type as an int (as L{tests.wire.split_messages} gives them).

    @param terminate_on_close: C{close} sends a Terminate first (a session
        that logged in); a connection a test drives from its first byte is
        just closed.
    """

    def __init__(
        self, sock: socket.socket, keep: Any = None, terminate_on_close: bool = True
    ) -> None:
        self.sock = sock
        self._buffer = bytearray()
        # The psycopg connection whose socket this is, kept open (its
        # own socket object would close the descriptor when collected).
        self._keep = keep
        self.terminate_on_close = terminate_on_close

    @classmethod
    def connect(cls, host: str, port: int, timeout: Optional[float] = None) -> "RawClient":
        """
        A connection on which nothing is sent yet: the test sends the
        start-up packet (or whatever it is testing) itself.

        @param timeout: how long a read may wait (L{socket.timeout} then).
        """
        return cls(
            socket.create_connection((host, port), timeout=timeout), terminate_on_close=False
        )

    @classmethod
    def trusted(
        cls,
        host: str,
        port: int,
        user: str = "trustuser",
        database: str = "app",
        timeout: Optional[float] = None,
    ) -> "RawClient":
        """
        Log in as a user the server trusts (relayed by the proxy).

        @param timeout: how long a read may wait (L{socket.timeout} then).
        @raise AssertionError: If the login is refused.
        """
        sock = socket.create_connection((host, port), timeout=timeout)
        client = cls(sock)
        client.send(startup_packet({"user": user, "database": database}))
        greeting = client.until_ready()
        if greeting[-1][0] != ord("Z"):
            client.close()
            raise AssertionError(f"login failed: {error_fields(greeting[-1][1])}")
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

    # -- sending ---------------------------------------------------------------

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
                self.sock.sendall(view[start : start + piece])
        except (BrokenPipeError, ConnectionResetError):
            pass

    def exchange(self, data: bytes) -> List[Tuple[int, bytes]]:
        """
        Send C{data} and read the answer, up to the next ReadyForQuery (or
        a FATAL).
        """
        self.send(data)
        return self.until_ready()

    def authenticate_scram(self, password: str) -> Optional[Dict[str, str]]:
        """
        Answer the proxy's SCRAM-SHA-256 challenge (the start-up packet
        already sent), up to its AuthenticationSASLFinal; AuthenticationOk
        follows once the client has a session slot.

        @return: L{None} once authenticated, or the fields of the
            ErrorResponse the proxy refused the client with instead.
        """
        from twisted_pgpool.auth.scram import ScramClient

        message_type, payload = self.read_message()
        if message_type == ord("E"):
            return error_fields(payload)
        assert (message_type, payload[:4]) == (ord("R"), struct.pack("!i", 10)), payload
        scram = ScramClient(password=password)
        first = scram.client_first()
        self.send(password_message(b"SCRAM-SHA-256\x00" + struct.pack("!i", len(first)) + first))
        message_type, payload = self.read_message()
        assert (message_type, payload[:4]) == (ord("R"), struct.pack("!i", 11)), payload
        self.send(password_message(scram.handle_server_first(payload[4:])))
        message_type, payload = self.read_message()
        assert (message_type, payload[:4]) == (ord("R"), struct.pack("!i", 12)), payload
        scram.handle_server_final(payload[4:])
        return None

    # -- reading ---------------------------------------------------------------

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(
                f"the proxy closed the connection; unread: {bytes(self._buffer)!r}"
            )
        self._buffer += chunk

    def read_message(self) -> Tuple[int, bytes]:
        """
        The next message: (type, payload).

        @raise ConnectionError: If the proxy closes the connection first.
        """
        while len(self._buffer) < 5:
            self._receive()
        (length,) = struct.unpack_from("!I", self._buffer, 1)
        while len(self._buffer) < 1 + length:
            self._receive()
        message = (self._buffer[0], bytes(self._buffer[5 : 1 + length]))
        del self._buffer[: 1 + length]
        return message

    def read_exactly(self, size: int) -> bytes:
        """
        The next C{size} bytes, whatever they are (a one-byte answer to an
        SSLRequest, say).
        """
        while len(self._buffer) < size:
            self._receive()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

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

    def until_closed(self, timeout: float) -> bytes:
        """
        Everything the proxy sends until it hangs up.

        @raise AssertionError: If it has not hung up within C{timeout}
            seconds.
        """
        received, self._buffer = bytes(self._buffer), bytearray()
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError(
                    f"the proxy did not close the connection within {timeout:g}s; "
                    f"received {received!r}"
                )
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk

    @property
    def unread(self) -> bytes:
        """
        What was received and not read yet.
        """
        return bytes(self._buffer)

    def has_reply(self, timeout: float) -> bool:
        """
        Whether anything is there to read within C{timeout} seconds.
        """
        if self._buffer:
            return True
        readable, _, _ = select.select([self.sock], [], [], timeout)
        return bool(readable)

    # -- closing -----------------------------------------------------------------

    def close(self) -> None:
        if self.terminate_on_close:
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

    def close_and_wait(self, timeout: float = 5.0) -> None:
        """
        Close, and return once the proxy has closed its side too: by then
        it no longer counts this connection (it releases what the
        connection held in the same step as it closes the socket).
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(timeout)
            while self.sock.recv(4096):
                pass
        except OSError:
            pass
        finally:
            self.sock.close()


def all_at_once(clients: Sequence[RawClient], message: bytes) -> List[Any]:
    """
    Each client sends C{message} (in pieces, as L{RawClient.send_long}) and
    reads its answer up to the next ReadyForQuery, all at the same time,
    each in a thread of its own.

    @return: each client's answer, in order, or the exception it met.
    """
    answers: List[Any] = [None] * len(clients)

    def one(index: int) -> None:
        try:
            clients[index].send_long(message)
            answers[index] = clients[index].until_ready()
        except Exception as e:
            answers[index] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


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
    bind = frame(
        b"B",
        b"\x00\x00"
        + struct.pack("!hh", 1, 1)
        + struct.pack("!hi", 1, size)
        + b"\x00" * size
        + struct.pack("!h", 0),
    )
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
            values.append(payload[pos + 4 : pos + 4 + length])
    return values
