"""
Flow control through the proxy with a real server and a deliberately slow
client: the proxy must not hold a result set the client has not read.
"""

from __future__ import annotations

import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.rawclient import RawClient
from tests.support import ProxyProcess, shared_cluster
from twisted_pgpool.testing.processes import rss
from twisted_pgpool.wire import messages

#: The size of the result streamed through the proxy (bytes of row data).
RESULT_BYTES = 256 * 1024 * 1024
ROW_WIDTH = 8192
#: The proxy may grow by at most this much while streaming the result.
MEMORY_BOUND = 20 * 1024 * 1024


class SlowClientTests(SynchronousTestCase):
    """
    A client reading a large result slowly keeps the proxy's memory flat.
    """

    def setUp(self) -> None:
        cluster = shared_cluster()
        # trustuser has no pool_passwd entry, so the server's trust login is
        # relayed and the raw-socket client needs no password exchange.
        self.proxy = ProxyProcess({"backends": cluster.backends_config()[:1], "pool_passwd": ""})
        self.proxy.start()
        self.addCleanup(self.proxy.stop)

    def _connect(self) -> RawClient:
        client = RawClient.connect(self.proxy.host, self.proxy.port)
        # A small receive buffer makes the client's slowness visible to the
        # proxy quickly, as a slow consumer on a real network would.
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.send(messages.encode_startup_message({"user": "trustuser", "database": "app"}))
        while True:
            message_type, payload = client.read_message()
            if message_type == messages.ERROR_RESPONSE:
                self.fail(messages.decode_error_fields(payload).fields)
            if message_type == messages.READY_FOR_QUERY:
                break
        self.assertEqual(client.unread, b"")
        return client

    def test_large_result_to_slow_reader_keeps_proxy_memory_flat(self) -> None:
        client = self._connect()
        self.addCleanup(client.close)
        pid = self.proxy.pid
        assert pid is not None
        baseline = rss(pid)
        rows = RESULT_BYTES // ROW_WIDTH
        client.send(
            messages.query(f"SELECT repeat('x', {ROW_WIDTH}) FROM generate_series(1, {rows})")
        )

        # Do not read for a while: without flow control the proxy would pull
        # the whole result from the server into memory now.
        peak = baseline
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            peak = max(peak, rss(pid))
            time.sleep(0.05)

        # Then read it all, slowly (small reads), sampling the proxy.
        received = 0
        data_rows = 0
        sampled_at = 0
        while True:
            message_type, payload = client.read_message()
            received += 5 + len(payload)
            if message_type == messages.DATA_ROW:
                data_rows += 1
            elif message_type == messages.READY_FOR_QUERY:
                break
            if received - sampled_at > 4 * 1024 * 1024:
                sampled_at = received
                peak = max(peak, rss(pid))

        self.assertEqual(data_rows, rows)
        self.assertGreater(received, RESULT_BYTES)
        growth = peak - baseline
        self.assertLess(
            growth,
            MEMORY_BOUND,
            f"proxy grew by {growth / 1e6:.1f} MB while streaming "
            f"{received / 1e6:.0f} MB to a slow client",
        )
