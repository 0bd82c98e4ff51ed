"""
Tests for the administration interface without a network:
L{twisted_pgpool.admin.pcp} (the PCP server, driven with a StringTransport and
asserted on exact bytes), L{twisted_pgpool.admin.operations} (the operations and the
proxy's admin backend), L{twisted_pgpool.admin.pcp_client} (against the server
through an in-memory pump) and the pure parts of
L{twisted_pgpool.admin.cli}.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import stat
import struct
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from hypothesis import given, settings, strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.logfile import LogFile
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.wire import frame
from twisted_pgpool import logs
from twisted_pgpool.admin import (
    cli as admin_cli,
    operations as admin,
    pcp,
    pcp_client as pcpclient,
    shutdown as shutdown_module,
)
from twisted_pgpool.admin.operations import AdminError, IAdminBackend, NodeInfo
from twisted_pgpool.admin.pcp import PcpFactory, encode
from twisted_pgpool.admin.shutdown import ProxyShutdown
from twisted_pgpool.cache.policy import CachePolicy
from twisted_pgpool.cache.querycache import QueryCache
from twisted_pgpool.cache.store import ShmemCacheStore, TableRef
from twisted_pgpool.cluster.model import STATUS_DOWN, STATUS_WAITING
from twisted_pgpool.config import config_from_dict
from twisted_pgpool.testing.doubles import FakeCore, FakeFailover, FakeFrontend

SALT = b"\x01\x02\x03\x04"
PASSWORD = "s3cret"


def answer(user: str, password: str, salt: bytes = SALT) -> bytes:
    """
    What Pgpool-II's client sends in its R message, computed the long way.
    """
    stored = hashlib.md5(password.encode()).hexdigest()
    inner = hashlib.md5((stored + user).encode()).hexdigest()
    return hashlib.md5(inner.encode() + salt).hexdigest().encode()


def login(user: str = "admin", password: str = PASSWORD) -> bytes:
    return frame(b"M", b"") + frame(
        b"R", user.encode() + b"\x00" + answer(user, password) + b"\x00"
    )


def read_messages(data: bytes) -> List[Tuple[bytes, bytes]]:
    """
    Split server output into (tag, payload) pairs.
    """
    out = []
    offset = 0
    while offset < len(data):
        tag = data[offset : offset + 1]
        (length,) = struct.unpack_from("!I", data, offset + 1)
        out.append((tag, data[offset + 5 : offset + 1 + length]))
        offset += 1 + length
    return out


def error_fields(payload: bytes) -> Dict[str, str]:
    return pcpclient.parse_error_fields(payload)


NODES = [
    NodeInfo(
        0, "10.0.0.1", 5432, "up", "up", 0.5, "primary", "primary", 7, "0", 0, "", "", 1700000000.0
    ),
    NodeInfo(
        1,
        "/tmp",
        5433,
        "waiting",
        "unknown",
        0.5,
        "standby",
        "standby",
        3,
        "1024",
        1024,
        "streaming",
        "async",
        1700000100.0,
    ),
]


@implementer(IAdminBackend)
class FakeAdminBackend:
    """
    Records node operations; each returns C{self.result} (a Deferred the
    test may fire later, or None for an immediate success).
    """

    def __init__(self, clustering_mode: str = "streaming_replication") -> None:
        self.config = config_from_dict(
            {
                "backends": [{"hostname": "10.0.0.1"}, {"hostname": "/tmp", "port": 5433}],
                "pool_passwd": "",
                "sr_check_password": "hidden",
                "backend_clustering_mode": clustering_mode,
            }
        )
        self.node_list = list(NODES)
        self.calls: List[Tuple[Any, ...]] = []
        self.result: Optional[defer.Deferred] = None
        self.reload_error: Optional[AdminError] = None
        self.log_file = True

    def nodes(self) -> List[NodeInfo]:
        return self.node_list

    def _op(self, *call: Any) -> defer.Deferred:
        self.calls.append(call)
        return self.result if self.result is not None else defer.succeed(None)

    def attach(self, node_id: int) -> defer.Deferred:
        return self._op("attach", node_id)

    def detach(self, node_id: int, gracefully: bool) -> defer.Deferred:
        return self._op("detach", node_id, gracefully)

    def promote(self, node_id: int, switchover: bool) -> defer.Deferred:
        return self._op("promote", node_id, switchover)

    def recover(self, node_id: int) -> defer.Deferred:
        return self._op("recover", node_id)

    def invalidate_query_cache(self) -> defer.Deferred:
        return self._op("invalidate_query_cache")

    def reload_config(self) -> None:
        self.calls.append(("reload_config",))
        if self.reload_error is not None:
            raise self.reload_error

    def shutdown(self, mode: str) -> None:
        self.calls.append(("shutdown", mode))

    def rotate_log(self) -> bool:
        self.calls.append(("rotate_log",))
        return self.log_file

    def health_check_stats(self, node_id: int) -> admin.HealthCheckStats:
        node = self.node_list[node_id]
        return admin.HealthCheckStats(
            node_id,
            node.hostname,
            node.port,
            node.status,
            node.role,
            total_count=5,
            success_count=4,
            fail_count=1,
            max_duration=30,
            min_duration=2,
            average_duration=12.5,
            average_retry_count=0.25,
        )

    def process_ids(self) -> List[int]:
        return [7001, 7002]

    def process_info(self, pid: int) -> List[admin.ProcessInfo]:
        rows = [admin.ProcessInfo(tuple([str(p)] + ["x"] * 16)) for p in (7001, 7002)]
        if pid:
            rows = [r for r in rows if r.pool_pid == pid]
            if not rows:
                raise AdminError("informing process info failed", f"invalid process ID : {pid}")
        return rows


class PcpConfMixin:
    def make_pcp_conf(self, text: Optional[str] = None) -> str:
        fd, path = tempfile.mkstemp(prefix="pcp.conf.")
        with os.fdopen(fd, "w") as f:
            f.write(
                text
                if text is not None
                else "# administrators\n\nadmin:"
                + hashlib.md5(PASSWORD.encode()).hexdigest()
                + "\n"
            )
        self.addCleanup(os.unlink, path)  # type: ignore[attr-defined]
        return path


class ServerMixin(PcpConfMixin):
    """
    A PCP server protocol on a StringTransport with a fake backend, a
    fixed salt and a Clock.
    """

    def make_server(
        self,
        backend: Optional[FakeAdminBackend] = None,
        pcp_conf: Optional[str] = None,
        timeout: float = 60.0,
    ):
        self.backend = backend or FakeAdminBackend()
        self.clock = Clock()
        self.factory = PcpFactory(
            self.backend,
            self.make_pcp_conf() if pcp_conf is None else pcp_conf,
            self.clock,
            timeout,
            random_bytes=lambda n: SALT,
        )
        self.proto = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        return self.proto

    def authenticated(self, backend: Optional[FakeAdminBackend] = None):
        proto = self.make_server(backend)
        proto.dataReceived(login())
        assert proto.user == "admin"
        self.transport.clear()
        return proto

    def request(self, data: bytes) -> List[Tuple[bytes, bytes]]:
        self.proto.dataReceived(data)
        out = read_messages(self.transport.value())
        self.transport.clear()
        return out


# -- codec ---------------------------------------------------------------------------


class CodecTests(SynchronousTestCase):
    def test_encode_frames_nul_terminated_strings_with_inclusive_length(self) -> None:
        self.assertEqual(
            encode(b"l", "CommandComplete", "2"), b"l\x00\x00\x00\x16CommandComplete\x002\x00"
        )

    def test_encode_with_no_fields_is_just_tag_and_length(self) -> None:
        self.assertEqual(encode(b"X"), b"X\x00\x00\x00\x04")

    def test_split_strings_reads_an_unterminated_tail(self) -> None:
        self.assertEqual(pcp.split_strings(b"a\x00b\x00c"), [b"a", b"b", b"c"])

    def test_parse_int_reads_like_atoi(self) -> None:
        self.assertEqual(
            [pcp.parse_int(t) for t in (b"1 ", b"-1", b" 12x", b"x", b"")], [1, -1, 12, None, None]
        )

    def test_node_info_fields_are_the_4_3_5_layout(self) -> None:
        self.assertEqual(
            pcp.node_info_fields(NODES[1]),
            [
                "/tmp",
                "5433",
                "1",
                "0",
                "unknown",
                f"{0.5 * pcp.RAND_MAX:f}",
                "3",
                "standby",
                "1024",
                "streaming",
                "async",
                "1700000100",
                "3",
            ],
        )

    def test_response_is_md5_of_md5_of_stored_hash_and_user_then_salt(self) -> None:
        stored = hashlib.md5(b"pw").hexdigest()
        self.assertEqual(pcp.pcp_response("bob", stored, SALT).encode(), answer("bob", "pw"))


class PcpConfTests(PcpConfMixin, SynchronousTestCase):
    def test_comments_and_blank_lines_are_ignored(self) -> None:
        path = self.make_pcp_conf("# c\n\n  \nbob:ABCDEF\n")
        self.assertEqual(pcp.load_pcp_conf(path), {"bob": ["abcdef"]})

    def test_a_user_may_have_several_lines(self) -> None:
        path = self.make_pcp_conf("bob:aa\nbob:bb\n")
        self.assertEqual(pcp.load_pcp_conf(path), {"bob": ["aa", "bb"]})


# -- authentication ----------------------------------------------------------------------


class AuthenticationTests(ServerMixin, SynchronousTestCase):
    def test_salt_request_is_answered_with_four_bytes(self) -> None:
        self.make_server()
        self.assertEqual(self.request(frame(b"M", b"")), [(b"m", SALT)])

    def test_right_password_is_answered_authentication_ok(self) -> None:
        self.make_server()
        self.proto.dataReceived(login())
        self.assertEqual(
            self.transport.value(),
            b"m\x00\x00\x00\x08" + SALT + b"r\x00\x00\x00\x15AuthenticationOK\x00",
        )
        self.assertEqual(self.proto.user, "admin")
        self.assertFalse(self.transport.disconnecting)

    def test_wrong_password_gets_fatal_error_and_close(self) -> None:
        self.make_server()
        self.proto.dataReceived(login(password="wrong"))
        messages = read_messages(self.transport.value())
        self.assertEqual(messages[-1][0], b"E")
        fields = error_fields(messages[-1][1])
        self.assertEqual(
            (fields["S"], fields["C"], fields["M"]), ("FATAL", "28P01", "authentication failed")
        )
        self.assertTrue(self.transport.disconnecting)
        self.assertIsNone(self.proto.user)

    def test_unknown_user_gets_the_same_error_as_a_wrong_password(self) -> None:
        self.make_server()
        self.proto.dataReceived(login(user="mallory"))
        fields = error_fields(read_messages(self.transport.value())[-1][1])
        self.assertEqual(fields["D"], "username and/or password does not match")
        self.assertTrue(self.transport.disconnecting)

    def test_response_without_a_salt_request_fails(self) -> None:
        self.make_server()
        self.proto.dataReceived(login()[9:])  # R only
        self.assertEqual(read_messages(self.transport.value())[0][0], b"E")
        self.assertTrue(self.transport.disconnecting)

    def test_a_salt_is_used_once(self) -> None:
        self.make_server()
        self.proto.dataReceived(login())
        self.transport.clear()
        self.proto.dataReceived(login()[9:])  # the same R again
        self.assertEqual(read_messages(self.transport.value())[0][0], b"E")
        self.assertTrue(self.transport.disconnecting)

    def test_missing_pcp_conf_lets_nobody_in(self) -> None:
        self.make_server(pcp_conf="/nonexistent/pcp.conf")
        self.proto.dataReceived(login())
        self.assertEqual(read_messages(self.transport.value())[-1][0], b"E")
        self.assertTrue(self.transport.disconnecting)

    def test_empty_pcp_conf_setting_lets_nobody_in(self) -> None:
        self.make_server(pcp_conf="")
        self.proto.dataReceived(login())
        self.assertTrue(self.transport.disconnecting)

    def test_command_before_authentication_is_fatal(self) -> None:
        self.make_server()
        messages = self.request(frame(b"L", b""))
        fields = error_fields(messages[0][1])
        self.assertEqual(
            (fields["S"], fields["M"]), ("FATAL", "authentication failed for new PCP connection")
        )
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.backend.calls, [])

    def test_client_that_does_not_log_in_is_disconnected(self) -> None:
        self.make_server(timeout=5)
        self.clock.advance(5)
        fields = error_fields(read_messages(self.transport.value())[0][1])
        self.assertEqual(fields["M"], "authentication timeout")
        self.assertTrue(self.transport.disconnecting)

    def test_logging_in_stops_the_timeout(self) -> None:
        self.make_server(timeout=5)
        self.proto.dataReceived(login())
        self.clock.advance(10)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connection_lost_stops_the_timeout(self) -> None:
        self.make_server(timeout=5)
        self.proto.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])


# -- commands --------------------------------------------------------------------------


class CommandTests(ServerMixin, SynchronousTestCase):
    def test_node_count(self) -> None:
        self.authenticated()
        self.assertEqual(self.request(frame(b"L", b"")), [(b"l", b"CommandComplete\x002\x00")])

    def test_node_info_of_one_node_is_an_array_of_one(self) -> None:
        self.authenticated()
        self.proto.dataReceived(frame(b"I", b"1\x00"))
        row = b"\x00".join(f.encode() for f in pcp.node_info_fields(NODES[1])) + b"\x00"
        self.assertEqual(
            self.transport.value(),
            encode(b"i", "ArraySize", "1")
            + frame(b"i", b"NodeInfo\x00" + row)
            + encode(b"i", "CommandComplete"),
        )

    def test_node_info_minus_one_is_every_node(self) -> None:
        self.authenticated()
        messages = self.request(frame(b"I", b"-1\x00"))
        self.assertEqual(
            [m[1].split(b"\x00")[0] for m in messages],
            [b"ArraySize", b"NodeInfo", b"NodeInfo", b"CommandComplete"],
        )
        self.assertEqual(messages[0][1], b"ArraySize\x002\x00")

    def test_unknown_node_is_an_error_and_the_connection_stays(self) -> None:
        self.authenticated()
        messages = self.request(frame(b"I", b"5\x00"))
        fields = error_fields(messages[0][1])
        self.assertEqual(
            (fields["S"], fields["C"], fields["M"]),
            ("ERROR", "22023", "informing node info failed"),
        )
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.request(frame(b"L", b""))[0][0], b"l")

    def test_node_id_that_is_not_a_number_is_an_error(self) -> None:
        self.authenticated()
        self.assertEqual(self.request(frame(b"C", b"one\x00"))[0][0], b"E")
        self.assertEqual(self.backend.calls, [])

    def test_health_check_stats_has_the_twenty_columns(self) -> None:
        self.authenticated()
        messages = self.request(frame(b"H", b"0\x00"))
        self.assertEqual(messages[0][0], b"h")
        strings = pcp.split_strings(messages[0][1])
        self.assertEqual(strings[0], b"CommandComplete")
        self.assertEqual(len(strings) - 1, len(admin.HEALTH_CHECK_COLUMNS))
        self.assertEqual(strings[1:8], [b"0", b"10.0.0.1", b"5432", b"up", b"primary", b"", b"5"])
        self.assertEqual(strings[12], b"0.250000")

    def test_attach_calls_the_backend_and_answers_c(self) -> None:
        self.authenticated()
        self.assertEqual(self.request(frame(b"C", b"1\x00")), [(b"c", b"CommandComplete\x00")])
        self.assertEqual(self.backend.calls, [("attach", 1)])

    def test_invalidate_query_cache_calls_the_backend_and_answers_g(self) -> None:
        self.authenticated()
        self.assertEqual(self.request(frame(b"G", b"")), [(b"g", b"CommandComplete\x00")])
        self.assertEqual(self.backend.calls, [("invalidate_query_cache",)])

    def test_detach_answers_d(self) -> None:
        self.authenticated()
        self.assertEqual(self.request(frame(b"D", b"1\x00")), [(b"d", b"CommandComplete\x00")])
        self.assertEqual(self.backend.calls, [("detach", 1, False)])

    def test_lower_case_d_detaches_gracefully(self) -> None:
        self.authenticated()
        self.request(frame(b"d", b"1\x00"))
        self.assertEqual(self.backend.calls, [("detach", 1, True)])

    def test_detaching_a_down_node_is_refused(self) -> None:
        backend = FakeAdminBackend()
        backend.node_list[1] = NodeInfo(1, "/tmp", 5433, STATUS_DOWN)
        self.authenticated(backend)
        fields = error_fields(self.request(frame(b"D", b"1\x00"))[0][1])
        self.assertEqual(fields["D"], "node 1 is already down")
        self.assertEqual(backend.calls, [])

    def test_promote_reads_node_and_option_and_answers_d(self) -> None:
        self.authenticated()
        self.assertEqual(self.request(frame(b"J", b"1 \x00n")), [(b"d", b"CommandComplete\x00")])
        self.request(frame(b"j", b"1 \x00s"))
        self.assertEqual(self.backend.calls, [("promote", 1, False), ("promote", 1, True)])

    def test_promoting_the_primary_is_refused(self) -> None:
        self.authenticated()
        fields = error_fields(self.request(frame(b"J", b"0 \x00n"))[0][1])
        self.assertIn("already primary", fields["D"])
        self.assertEqual(self.backend.calls, [])

    def test_promote_outside_streaming_replication_is_refused(self) -> None:
        self.authenticated(FakeAdminBackend(clustering_mode="raw"))
        fields = error_fields(self.request(frame(b"J", b"1 \x00n"))[0][1])
        self.assertEqual(fields["C"], "0A000")

    def test_pool_status_sends_a_binary_count_then_rows(self) -> None:
        self.authenticated()
        messages = self.request(frame(b"B", b""))
        rows = admin.config_parameters(self.backend.config)
        self.assertEqual(messages[0], (b"b", b"ArraySize\x00" + struct.pack("!i", len(rows))))
        self.assertEqual(len(messages), len(rows) + 2)
        self.assertEqual(
            messages[1], (b"b", b"ProcessConfig\x00listen_addresses\x00localhost\x00\x00")
        )
        self.assertEqual(messages[-1], (b"b", b"CommandComplete\x00"))

    def test_pool_status_never_shows_a_password(self) -> None:
        self.authenticated()
        self.proto.dataReceived(frame(b"B", b""))
        output = self.transport.value()
        self.assertNotIn(b"hidden", output)
        self.assertIn(b"sr_check_password\x00*****\x00", output)

    def test_process_count_lists_the_session_ids(self) -> None:
        self.authenticated()
        self.assertEqual(
            self.request(frame(b"N", b"")), [(b"n", b"CommandComplete\x002\x007001\x007002\x00")]
        )

    def test_process_info_of_all_sessions(self) -> None:
        self.authenticated()
        messages = self.request(frame(b"P", b"0\x00"))
        self.assertEqual(messages[0], (b"p", b"ArraySize\x002\x00"))
        self.assertEqual(len(pcp.split_strings(messages[1][1])), 18)
        self.assertEqual(messages[-1], (b"p", b"CommandComplete\x00"))

    def test_process_info_of_an_unknown_pid_is_an_error(self) -> None:
        self.authenticated()
        fields = error_fields(self.request(frame(b"P", b"99\x00"))[0][1])
        self.assertEqual(fields["D"], "invalid process ID : 99")

    def test_quit_closes(self) -> None:
        self.authenticated()
        self.assertEqual(self.request(frame(b"X", b"")), [])
        self.assertTrue(self.transport.disconnecting)

    def test_unknown_command_is_an_error_and_the_connection_stays(self) -> None:
        self.authenticated()
        fields = error_fields(self.request(frame(b"Q", b""))[0][1])
        self.assertEqual(
            (fields["S"], fields["C"], fields["M"]),
            ("ERROR", "08P01", 'unknown PCP packet type "Q"'),
        )
        self.assertFalse(self.transport.disconnecting)

    def test_reload_config_calls_the_backend_and_answers_z(self) -> None:
        self.authenticated()
        # Pgpool-II's client sends one scope byte: l(ocal) or c(luster).
        self.assertEqual(self.request(frame(b"Z", b"l")), [(b"z", b"CommandComplete\x00")])
        self.assertEqual(self.backend.calls, [("reload_config",)])

    def test_reload_config_of_the_cluster_reloads_this_proxy(self) -> None:
        self.authenticated()
        self.assertEqual(self.request(frame(b"Z", b"c")), [(b"z", b"CommandComplete\x00")])
        self.assertEqual(self.backend.calls, [("reload_config",)])

    def test_refused_reload_is_an_error_and_the_connection_stays(self) -> None:
        backend = FakeAdminBackend()
        backend.reload_error = AdminError(
            "process reload config request failed",
            "conf.yaml:3: port: expected an integer from 1 to 65535, got 'x'",
            admin.CONFIG_FILE_ERROR,
        )
        self.authenticated(backend)
        fields = error_fields(self.request(frame(b"Z", b"l"))[0][1])
        self.assertEqual(
            (fields["S"], fields["C"], fields["M"], fields["D"]),
            (
                "ERROR",
                "F0000",
                "process reload config request failed",
                "conf.yaml:3: port: expected an integer from 1 to 65535, got 'x'",
            ),
        )
        self.assertFalse(self.transport.disconnecting)

    def test_recovery_calls_the_backend_and_answers_c(self) -> None:
        # Pgpool-II's pcp_recovery_node sends "O", the id NUL-terminated,
        # and expects attach's "c" CommandComplete.
        self.authenticated()
        self.assertEqual(self.request(frame(b"O", b"1\x00")), [(b"c", b"CommandComplete\x00")])
        self.assertEqual(self.backend.calls, [("recover", 1)])

    def test_recovery_answers_when_the_node_is_attached(self) -> None:
        backend = FakeAdminBackend()
        backend.result = defer.Deferred()
        self.authenticated(backend)
        self.assertEqual(self.request(frame(b"O", b"1\x00")), [])
        backend.result.callback(None)
        self.assertEqual(read_messages(self.transport.value()), [(b"c", b"CommandComplete\x00")])

    def test_failed_recovery_is_an_error_and_the_connection_stays(self) -> None:
        backend = FakeAdminBackend()
        backend.result = defer.fail(
            AdminError(
                'executing recovery, execution of command failed at "1st stage"',
                'command:"recovery_1st_stage"',
            )
        )
        self.authenticated(backend)
        fields = error_fields(self.request(frame(b"O", b"1\x00"))[0][1])
        self.assertEqual(
            (fields["S"], fields["M"], fields["D"]),
            (
                "ERROR",
                'executing recovery, execution of command failed at "1st stage"',
                'command:"recovery_1st_stage"',
            ),
        )
        self.assertFalse(self.transport.disconnecting)

    def test_recovery_of_an_unknown_node_is_refused_in_pgpool_words(self) -> None:
        self.authenticated()
        fields = error_fields(self.request(frame(b"O", b"7\x00"))[0][1])
        self.assertEqual(
            (fields["C"], fields["M"], fields["D"]),
            ("22023", "process recovery request failed", "node id 7 is not valid"),
        )
        self.assertEqual(self.backend.calls, [])

    def test_oversized_packet_is_fatal(self) -> None:
        self.authenticated()
        fields = error_fields(self.request(b"L" + struct.pack("!I", 100000))[0][1])
        self.assertEqual((fields["S"], fields["D"]), ("FATAL", "incorrect packet length (100000)"))
        self.assertTrue(self.transport.disconnecting)

    def test_length_below_four_is_fatal(self) -> None:
        self.make_server()
        self.request(b"M" + struct.pack("!I", 2))
        self.assertTrue(self.transport.disconnecting)


class PendingOperationTests(ServerMixin, SynchronousTestCase):
    def test_requests_wait_for_a_running_operation_and_keep_order(self) -> None:
        self.authenticated()
        self.backend.result = defer.Deferred()
        self.proto.dataReceived(frame(b"D", b"1\x00") + frame(b"L", b""))
        self.assertEqual(self.transport.value(), b"")
        self.backend.result.callback(None)
        self.assertEqual([m[0] for m in read_messages(self.transport.value())], [b"d", b"l"])

    def test_failed_operation_with_admin_error_is_an_error(self) -> None:
        self.authenticated()
        self.backend.result = defer.fail(AdminError("detach node failed", "busy"))
        fields = error_fields(self.request(frame(b"D", b"1\x00"))[0][1])
        self.assertEqual((fields["M"], fields["D"]), ("detach node failed", "busy"))

    def test_unexpected_failure_is_an_internal_error_and_logged(self) -> None:
        self.authenticated()
        self.backend.result = defer.fail(RuntimeError("script crashed"))
        fields = error_fields(self.request(frame(b"C", b"1\x00"))[0][1])
        self.assertEqual((fields["C"], fields["D"]), ("XX000", "script crashed"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(self.transport.disconnecting)

    def test_nothing_is_written_after_the_client_left(self) -> None:
        self.authenticated()
        self.backend.result = defer.Deferred()
        self.proto.dataReceived(frame(b"C", b"1\x00"))
        self.proto.connectionLost(None)
        self.backend.result.callback(None)
        self.assertEqual(self.transport.value(), b"")


class QueryCacheInvalidationTests(ServerMixin, SynchronousTestCase):
    """
    C{G} (C{pcp_invalidate_query_cache}) against the admin backend of a
    proxy core, with a real query cache.
    """

    KEY = b"k" * 32
    TABLES = [TableRef("db", 16384)]

    def make_core(self, query_cache: Optional[QueryCache]) -> admin.ProxyAdminBackend:
        from twisted_pgpool.service import ProxyCore

        config = config_from_dict({"backends": [{"hostname": "10.0.0.1"}], "pool_passwd": ""})
        self.core = ProxyCore.from_config(config, Clock())
        self.core.query_cache = query_cache
        return admin.ProxyAdminBackend(self.core)

    def cache_with_an_entry(self) -> QueryCache:
        cache = QueryCache(ShmemCacheStore(1024 * 1024, 100, clock=Clock()), CachePolicy())
        miss = cache.fetch(self.KEY, self.TABLES)
        cache.store_reply(self.KEY, b"reply", self.TABLES, miss.token)
        assert cache.fetch(self.KEY, self.TABLES).reply == b"reply"
        return cache

    def test_request_empties_the_query_cache(self) -> None:
        cache = self.cache_with_an_entry()
        self.authenticated(self.make_core(cache))
        self.assertEqual(self.request(frame(b"G", b"")), [(b"g", b"CommandComplete\x00")])
        self.assertIsNone(cache.fetch(self.KEY, self.TABLES).reply)

    def test_store_started_before_the_request_is_refused(self) -> None:
        cache = QueryCache(ShmemCacheStore(1024 * 1024, 100, clock=Clock()), CachePolicy())
        miss = cache.fetch(self.KEY, self.TABLES)
        self.authenticated(self.make_core(cache))
        self.request(frame(b"G", b""))
        cache.store_reply(self.KEY, b"stale", self.TABLES, miss.token)
        self.assertIsNone(cache.fetch(self.KEY, self.TABLES).reply)

    def test_cache_off_is_an_error_and_the_connection_stays(self) -> None:
        self.authenticated(self.make_core(None))
        [(tag, payload)] = self.request(frame(b"G", b""))
        fields = error_fields(payload)
        self.assertEqual(
            (tag, fields["S"], fields["C"], fields["M"], fields["D"]),
            (b"E", "ERROR", "55000", "query cache is not enabled", "memory_cache_enabled is off"),
        )
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.request(frame(b"L", b"")), [(b"l", b"CommandComplete\x001\x00")])

    def test_answer_waits_for_a_shared_store(self) -> None:
        pending: defer.Deferred = defer.Deferred()

        class SharedStore(ShmemCacheStore):
            def clear(self) -> defer.Deferred:  # type: ignore[override]
                super().clear()
                return pending

        cache = QueryCache(SharedStore(1024 * 1024, 100, clock=Clock()), CachePolicy())
        self.authenticated(self.make_core(cache))
        self.assertEqual(self.request(frame(b"G", b"") + frame(b"L", b"")), [])
        pending.callback(None)
        self.assertEqual([tag for tag, _ in read_messages(self.transport.value())], [b"g", b"l"])

    def test_invalidation_is_logged(self) -> None:
        events: List[dict] = []
        self.patch(admin, "log", Logger(observer=events.append))
        self.authenticated(self.make_core(self.cache_with_an_entry()))
        self.request(frame(b"G", b""))
        self.assertEqual(
            [e["log_format"] for e in events],
            ["query cache invalidated by PCP request (memqcache_method: {method})"],
        )


class StopAndLogRotateTests(ServerMixin, SynchronousTestCase):
    """
    C{T}/C{t} (C{pcp_stop_pgpool}) and C{V} (C{pcp_log_rotate}) on the
    wire, against the fake backend.
    """

    def test_smart_stop_answers_t_and_asks_the_backend(self) -> None:
        self.authenticated()
        # Pgpool-II's client sends the mode as one byte, no NUL.
        self.assertEqual(self.request(frame(b"T", b"s")), [(b"t", b"CommandComplete\x00")])
        self.assertEqual(self.backend.calls, [("shutdown", "smart")])

    def test_mode_letters_name_fast_and_immediate(self) -> None:
        self.authenticated()
        self.request(frame(b"T", b"f") + frame(b"T", b"i"))
        self.assertEqual(self.backend.calls, [("shutdown", "fast"), ("shutdown", "immediate")])

    def test_cluster_scope_stops_this_proxy_and_answers_t(self) -> None:
        self.authenticated()
        self.assertEqual(self.request(frame(b"t", b"f")), [(b"t", b"CommandComplete\x00")])
        self.assertEqual(self.backend.calls, [("shutdown", "fast")])

    def test_invalid_mode_is_pgpools_error_and_nothing_stops(self) -> None:
        self.authenticated()
        [(tag, payload)] = self.request(frame(b"T", b"x"))
        fields = error_fields(payload)
        self.assertEqual(
            (tag, fields["S"], fields["M"], fields["D"]),
            (
                b"E",
                "ERROR",
                "PCP: error while processing shutdown request",
                'invalid shutdown mode "x"',
            ),
        )
        self.assertEqual(self.backend.calls, [])
        self.assertFalse(self.transport.disconnecting)

    def test_stop_before_authentication_is_fatal_and_nothing_stops(self) -> None:
        self.make_server()
        fields = error_fields(self.request(frame(b"T", b"f"))[0][1])
        self.assertEqual(fields["S"], "FATAL")
        self.assertEqual(self.backend.calls, [])

    def test_log_rotate_answers_v(self) -> None:
        self.authenticated()
        self.assertEqual(self.request(frame(b"V", b"l")), [(b"v", b"CommandComplete\x00")])
        self.assertEqual(self.backend.calls, [("rotate_log",)])

    def test_log_rotate_without_a_log_file_still_succeeds(self) -> None:
        backend = FakeAdminBackend()
        backend.log_file = False
        self.authenticated(backend)
        self.assertEqual(self.request(frame(b"V", b"c")), [(b"v", b"CommandComplete\x00")])


class FakeListener:
    def __init__(self) -> None:
        self.stopped = 0

    def stopService(self) -> None:
        self.stopped += 1


class ProxyShutdownTests(SynchronousTestCase):
    """
    L{twisted_pgpool.admin.shutdown.ProxyShutdown} with a Clock and fakes.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.core = FakeCore()
        self.listener = FakeListener()
        self.events: List[str] = []
        self.shutdown = ProxyShutdown(
            self.clock,
            self.core,
            [self.listener],
            stop=lambda: self.events.append("stop"),
            save_status=lambda: self.events.append("save_status"),
            interval=0.1,
            fast_timeout=5.0,
        )

    def test_smart_stops_listening_and_waits_for_the_sessions(self) -> None:
        session = FakeFrontend(self.core.sessions)
        self.core.limiter.active = 1
        self.shutdown.shutdown("smart")
        self.assertEqual(self.listener.stopped, 1)
        self.clock.advance(60)
        self.assertEqual(self.events, [])
        self.assertEqual(session.failures, [])
        self.core.limiter.active = 0
        self.clock.advance(0.1)
        self.assertEqual(self.events, ["save_status", "stop"])

    def test_smart_waits_for_clients_queued_for_a_slot(self) -> None:
        self.core.limiter.waiting = 1
        self.shutdown.shutdown("smart")
        self.clock.advance(1)
        self.assertEqual(self.events, [])

    def test_smart_waits_for_clients_still_authenticating(self) -> None:
        """
        A client in the middle of its login holds no slot, yet a smart
        shutdown lets it finish, as PostgreSQL does.
        """
        self.core.limiter.unauthenticated = 1
        self.shutdown.shutdown("smart")
        self.clock.advance(1)
        self.assertEqual(self.events, [])
        self.core.limiter.unauthenticated = 0
        self.clock.advance(0.1)
        self.assertEqual(self.events, ["save_status", "stop"])

    def test_stop_comes_one_interval_later_so_the_reply_is_sent(self) -> None:
        self.shutdown.shutdown("fast")
        self.assertEqual(self.events, [])
        self.clock.advance(0.1)
        self.assertEqual(self.events, ["save_status", "stop"])

    def test_fast_ends_sessions_with_admin_shutdown(self) -> None:
        session = FakeFrontend(self.core.sessions)
        self.shutdown.shutdown("fast")
        [error] = session.failures
        self.assertEqual(
            (error.severity, error.sqlstate, error.message),
            ("FATAL", "57P01", "terminating connection due to administrator command"),
        )
        self.clock.advance(0.1)
        self.assertEqual(self.events, [])
        self.core.sessions.clear()
        self.clock.advance(0.1)
        self.assertEqual(self.events, ["save_status", "stop"])

    def test_fast_stops_after_its_timeout_when_sessions_linger(self) -> None:
        FakeFrontend(self.core.sessions)
        self.shutdown.shutdown("immediate")
        self.clock.advance(4.9)
        self.assertEqual(self.events, [])
        self.clock.pump([0.1] * 2)
        self.assertEqual(self.events, ["save_status", "stop"])

    def test_fast_during_smart_ends_the_sessions(self) -> None:
        session = FakeFrontend(self.core.sessions)
        self.core.limiter.active = 1
        self.shutdown.shutdown("smart")
        self.clock.advance(1)
        self.shutdown.shutdown("fast")
        self.assertEqual(len(session.failures), 1)
        self.assertEqual(self.listener.stopped, 1)
        self.core.sessions.clear()
        self.clock.advance(0.1)
        self.assertEqual(self.events, ["save_status", "stop"])

    def test_smart_after_fast_changes_nothing(self) -> None:
        self.shutdown.shutdown("fast")
        self.shutdown.shutdown("smart")
        self.assertEqual(self.shutdown.mode, "fast")
        self.clock.advance(0.1)
        self.assertEqual(self.events, ["save_status", "stop"])

    def test_stops_once(self) -> None:
        self.shutdown.shutdown("fast")
        self.clock.advance(0.1)
        self.shutdown.shutdown("fast")
        self.clock.advance(1)
        self.assertEqual(self.events, ["save_status", "stop"])

    def test_unknown_mode_is_refused(self) -> None:
        self.assertRaises(ValueError, self.shutdown.shutdown, "gentle")
        self.assertEqual(self.listener.stopped, 0)

    def test_request_is_logged_as_pgpool_does(self) -> None:
        events: List[dict] = []
        self.patch(shutdown_module, "log", Logger(observer=events.append))
        self.shutdown.shutdown("fast")
        self.clock.advance(0.1)
        self.assertEqual(
            [e["log_format"].format(**e) for e in events],
            ["received fast shutdown request", "shutting down"],
        )

    def test_a_failing_status_file_does_not_stop_the_stop(self) -> None:
        def broken() -> None:
            raise OSError("disk full")

        self.shutdown._save_status = broken
        self.shutdown.shutdown("fast")
        self.clock.advance(0.1)
        self.assertEqual(self.events, ["stop"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class LogRotationRequestTests(SynchronousTestCase):
    """
    L{twisted_pgpool.logs.request_log_rotation}: what SIGUSR1 does.
    """

    def test_calls_the_sigusr1_handler(self) -> None:
        calls: List[Any] = []
        self.assertTrue(logs.request_log_rotation(lambda signum: lambda *args: calls.append(args)))
        self.assertEqual(calls, [(signal.SIGUSR1, None)])

    def test_no_handler_means_nothing_to_rotate(self) -> None:
        for handler in (signal.SIG_DFL, signal.SIG_IGN, None):
            # Called by request_log_rotation, before the loop moves on.
            self.assertFalse(logs.request_log_rotation(lambda signum: handler))  # noqa: B023

    def test_twistd_logfile_is_rotated(self) -> None:
        """
        With the handler twistd installs for C{--logfile} (a rotation of
        its L{LogFile} in the reactor's next turn), the file is renamed to
        C{.1} and a new one opened.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        log_file = LogFile.fromFullPath(os.path.join(directory, "proxy.log"))
        self.addCleanup(log_file.close)
        log_file.write("before\n")
        clock_calls: List[Any] = []

        def twistd_handler(signum: int, frame: Any) -> None:
            clock_calls.append(log_file.rotate)

        self.assertTrue(logs.request_log_rotation(lambda signum: twistd_handler))
        for call in clock_calls:
            call()
        log_file.write("after\n")
        log_file.flush()
        with open(os.path.join(directory, "proxy.log.1")) as f:
            self.assertEqual(f.read(), "before\n")
        with open(os.path.join(directory, "proxy.log")) as f:
            self.assertEqual(f.read(), "after\n")


class FramingPropertyTests(ServerMixin, SynchronousTestCase):
    STREAM = (
        login()
        + frame(b"L", b"")
        + frame(b"I", b"-1\x00")
        + frame(b"H", b"1\x00")
        + frame(b"C", b"1\x00")
        + frame(b"J", b"1 \x00s")
        + frame(b"G", b"")
        + frame(b"Q", b"")
        + frame(b"X", b"")
    )

    def output_of(self, chunks: List[bytes]) -> bytes:
        self.make_server()
        for chunk in chunks:
            self.proto.dataReceived(chunk)
        return self.transport.value()

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.integers(0, len(STREAM)), max_size=12))
    def test_any_split_of_a_stream_gives_the_same_answers(self, cuts: List[int]) -> None:
        whole = self.output_of([self.STREAM])
        points = sorted(set(cuts))
        chunks = [self.STREAM[a:b] for a, b in zip([0] + points, points + [len(self.STREAM)])]
        self.assertEqual(self.output_of(chunks), whole)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.binary(max_size=40), max_size=8), st.booleans())
    def test_garbage_never_raises(self, chunks: List[bytes], logged_in: bool) -> None:
        self.make_server()
        if logged_in:
            self.proto.dataReceived(login())
        for chunk in chunks:
            self.proto.dataReceived(chunk)

    @settings(max_examples=200, deadline=None)
    @given(st.sampled_from(b"LIHCDdJjBNPGXOTZWQ\x00\xff"), st.binary(max_size=30))
    def test_any_authenticated_request_is_answered_or_closes(
        self, tag: int, payload: bytes
    ) -> None:
        self.authenticated()
        self.proto.dataReceived(frame(bytes([tag]), payload))
        self.assertTrue(self.transport.value() or self.transport.disconnecting)


# -- the operations and the proxy's backend ----------------------------------------------


class StatsObject:
    total_count = 3
    success_count = 2
    fail_count = 1
    max_health_check_duration = 0.0404  # seconds
    last_failed_health_check = 1700000000.0


class FakeHealthMonitor:
    def __init__(self, stats: Any) -> None:
        self.stats_value = stats

    def stats(self, node_id: int) -> Any:
        return self.stats_value


class ProxyAdminBackendTests(SynchronousTestCase):
    def make_backend(
        self, failover: Any = None, health: Any = None, **settings: Any
    ) -> admin.ProxyAdminBackend:
        from twisted_pgpool.service import ProxyCore

        config = config_from_dict(
            dict(
                {
                    "backends": [
                        {"hostname": "10.0.0.1", "weight": 1},
                        {"hostname": "10.0.0.2", "weight": 3},
                    ],
                    "pool_passwd": "",
                },
                **settings,
            )
        )
        self.core = ProxyCore.from_config(config, Clock())
        return admin.ProxyAdminBackend(self.core, failover, health)

    def test_provides_the_interface(self) -> None:
        self.assertTrue(verifyObject(IAdminBackend, self.make_backend()))

    def test_fake_provides_the_interface(self) -> None:
        self.assertTrue(verifyObject(IAdminBackend, FakeAdminBackend()))

    def test_nodes_report_the_cluster_model(self) -> None:
        backend = self.make_backend()
        self.core.cluster.nodes[1].select_count = 9
        nodes = backend.nodes()
        self.assertEqual(
            [
                (n.node_id, n.hostname, n.status, n.role, n.lb_weight, n.pg_status, n.select_cnt)
                for n in nodes
            ],
            [
                (0, "10.0.0.1", STATUS_WAITING, "primary", 0.25, "unknown", 0),
                (1, "10.0.0.2", STATUS_WAITING, "standby", 0.75, "unknown", 9),
            ],
        )

    def test_detach_without_failover_manager_marks_the_node_down(self) -> None:
        backend = self.make_backend()
        self.successResultOf(admin.detach_node(backend, 1))
        self.assertEqual(self.core.cluster.nodes[1].status, STATUS_DOWN)

    def test_recovery_of_the_primary_is_refused_in_pgpool_words(self) -> None:
        backend = self.make_backend()
        self.core.cluster.set_status(self.core.cluster.nodes[0], "up", "test")
        failure = self.failureResultOf(admin.recover_node(backend, 0), AdminError)
        self.assertEqual(
            (failure.value.message, failure.value.detail),
            (
                "process recovery request failed",
                "primary server cannot be recovered by online recovery.",
            ),
        )

    def test_recovery_in_raw_mode_is_refused_in_pgpool_words(self) -> None:
        backend = self.make_backend(backend_clustering_mode="raw")
        failure = self.failureResultOf(admin.recover_node(backend, 1), AdminError)
        self.assertEqual(
            failure.value.detail,
            "recovery request is only allowed in replication and streaming replication modes.",
        )

    def test_recovery_of_a_node_that_is_up_is_refused(self) -> None:
        backend = self.make_backend()
        self.core.cluster.set_status(self.core.cluster.nodes[0], "up", "test")
        failure = self.failureResultOf(admin.recover_node(backend, 1), AdminError)
        self.assertEqual(failure.value.message, "node recovery failed, node id: 1 is alive")

    def test_attach_without_failover_manager_makes_a_down_node_waiting(self) -> None:
        backend = self.make_backend()
        self.core.cluster.set_status(self.core.cluster.nodes[1], STATUS_DOWN, "test")
        self.successResultOf(admin.attach_node(backend, 1))
        self.assertEqual(self.core.cluster.nodes[1].status, STATUS_WAITING)

    def test_promote_without_failover_manager_relabels_the_primary(self) -> None:
        backend = self.make_backend()
        self.successResultOf(admin.promote_node(backend, 1))
        self.assertEqual([n.role for n in self.core.cluster.nodes], ["standby", "primary"])

    def test_switchover_without_failover_manager_is_refused(self) -> None:
        backend = self.make_backend()
        failure = self.failureResultOf(admin.promote_node(backend, 1, True), AdminError)
        self.assertEqual(failure.value.sqlstate, "0A000")

    def test_node_operations_go_to_the_failover_manager(self) -> None:
        manager = FakeFailover()
        backend = self.make_backend(failover=manager)
        self.successResultOf(admin.detach_node(backend, 1, gracefully=True))
        self.successResultOf(admin.attach_node(backend, 1))
        self.successResultOf(admin.promote_node(backend, 1, switchover=True))
        self.assertEqual(
            manager.calls,
            [
                ("detach", 1, "detached by pcp_detach_node", True),
                ("attach", 1, "attached by pcp_attach_node"),
                ("promote", 1, True),
            ],
        )
        self.assertEqual(self.core.cluster.nodes[1].status, STATUS_WAITING)

    def test_invalid_node_id_never_reaches_the_failover_manager(self) -> None:
        manager = FakeFailover()
        backend = self.make_backend(failover=manager)
        self.failureResultOf(admin.detach_node(backend, 2), AdminError)
        self.failureResultOf(admin.attach_node(backend, -1), AdminError)
        self.assertEqual(manager.calls, [])

    def test_health_stats_are_zero_without_a_monitor(self) -> None:
        stats = admin.health_check_stats(self.make_backend(), 0)
        self.assertEqual(
            (stats.hostname, stats.total_count, stats.last_health_check), ("10.0.0.1", 0, None)
        )

    def test_health_stats_are_read_from_the_monitors_object(self) -> None:
        backend = self.make_backend(health=FakeHealthMonitor(StatsObject()), health_check_period=10)
        stats = admin.health_check_stats(backend, 1)
        self.assertEqual(
            (
                stats.total_count,
                stats.fail_count,
                stats.max_duration,
                stats.last_failed_health_check,
            ),
            (3, 1, 40, 1700000000.0),
        )
        self.assertEqual(backend.nodes()[1].pg_status, "down")

    def test_health_stats_are_read_from_a_mapping(self) -> None:
        backend = self.make_backend(
            health=FakeHealthMonitor(
                {"success_count": 5, "last_successful_health_check": 1700000001.0}
            ),
            health_check_period=10,
        )
        self.assertEqual(admin.health_check_stats(backend, 0).success_count, 5)
        self.assertEqual(backend.nodes()[0].pg_status, "up")

    def test_health_stats_of_the_health_monitor_are_shown_in_milliseconds(self) -> None:
        from twisted_pgpool.cluster import health

        record = health.HealthCheckStats(
            total_count=4,
            skip_count=1,
            retry_count=3,
            total_duration=0.3,
            max_duration=0.2,
            min_duration=0.05,
            last_successful_health_check=1700000002.0,
        )
        backend = self.make_backend(health=FakeHealthMonitor(record), health_check_period=10)
        columns = admin.health_check_stats(backend, 0).columns()
        self.assertEqual(columns[11:16], ["1.000000", "0", "200", "50", "100.000000"])
        self.assertEqual(backend.nodes()[0].pg_status, "up")

    def test_failover_manager_refusal_is_an_admin_error(self) -> None:
        from twisted_pgpool.cluster.failover import FailoverError

        manager = FakeFailover()
        manager.promote = lambda node_id, switchover=False: defer.fail(  # type: ignore[method-assign]
            FailoverError("node 1 is not up")
        )
        backend = self.make_backend(failover=manager)
        failure = self.failureResultOf(admin.promote_node(backend, 1), AdminError)
        self.assertEqual(
            (failure.value.message, failure.value.detail),
            ("promote node failed", "node 1 is not up"),
        )

    def test_shutdown_without_a_stopper_is_refused(self) -> None:
        backend = self.make_backend()
        error = self.assertRaises(AdminError, admin.stop_pgpool, backend, "f")
        self.assertEqual(
            (error.message, error.sqlstate),
            ("PCP: error while processing shutdown request", "0A000"),
        )

    def test_shutdown_goes_to_the_stopper_by_name(self) -> None:
        backend = self.make_backend()
        modes: List[str] = []

        class Stopper:
            def shutdown(self, mode: str) -> None:
                modes.append(mode)

        backend.stopper = Stopper()
        self.assertEqual(admin.stop_pgpool(backend, "i"), "immediate")
        self.assertEqual(modes, ["immediate"])

    def test_rotate_log_reports_whether_there_was_a_file(self) -> None:
        backend = self.make_backend()
        backend.rotate_log_file = lambda: True
        self.assertTrue(admin.log_rotate(backend))
        backend.rotate_log_file = lambda: False
        self.assertFalse(admin.log_rotate(backend))

    def test_proxy_service_wires_the_stopper_to_its_client_listeners(self) -> None:
        from twisted_pgpool.net.listening import ListenService
        from twisted_pgpool.service import make_service

        config = config_from_dict(
            {"backends": [{"hostname": "10.0.0.1"}], "pool_passwd": "", "port": 9999, "pcp_port": 0}
        )
        # Built, not started: nothing listens.
        service = make_service(config, reactor=Clock())
        self.assertIs(service.admin_backend.stopper, service.shutdown)
        self.assertEqual(
            service.shutdown.listeners, [s for s in service if isinstance(s, ListenService)]
        )
        self.assertTrue(service.shutdown.listeners)

    def test_reload_without_a_reloader_is_refused(self) -> None:
        backend = self.make_backend()
        error = self.assertRaises(AdminError, admin.reload_config, backend)
        self.assertEqual(
            (error.message, error.sqlstate), ("process reload config request failed", "0A000")
        )

    def test_reload_refused_by_the_reloader_is_a_config_file_error(self) -> None:
        from twisted_pgpool.admin.reload import ReloadError

        class RefusingReloader:
            def reload(self) -> None:
                raise ReloadError("conf.yaml:7: bogus: unknown key")

        backend = self.make_backend()
        backend.reloader = RefusingReloader()
        error = self.assertRaises(AdminError, admin.reload_config, backend)
        self.assertEqual(
            (error.sqlstate, error.detail), ("F0000", "conf.yaml:7: bogus: unknown key")
        )

    def test_node_count_counts_down_nodes_too(self) -> None:
        backend = self.make_backend()
        self.core.cluster.set_status(self.core.cluster.nodes[0], STATUS_DOWN, "test")
        self.assertEqual(admin.node_count(backend), 2)

    def test_config_parameters_spell_backends_like_pgpool_conf(self) -> None:
        rows = {r.name: r.value for r in admin.config_parameters(self.make_backend().config)}
        self.assertEqual(
            (rows["backend_hostname1"], rows["backend_port0"], rows["load_balance_mode"]),
            ("10.0.0.2", "5432", "on"),
        )
        self.assertNotIn("backends", rows)

    def test_health_columns_format_like_pgpool(self) -> None:
        stats = admin.HealthCheckStats(0, "h", 5432, "up", "primary", average_retry_count=0.5)
        columns = stats.columns()
        self.assertEqual(len(columns), 20)
        self.assertEqual((columns[5], columns[11], columns[16]), ("", "0.500000", ""))


# -- the client, against the server ----------------------------------------------------


class ClientTests(ServerMixin, SynchronousTestCase):
    def connect_client(self, backend: Optional[FakeAdminBackend] = None):
        server = self.make_server(backend)
        client = pcpclient.PcpClientProtocol()
        self.pump = iosim.connect(
            server,
            iosim.FakeTransport(server, isServer=True),
            client,
            iosim.FakeTransport(client, isServer=False),
        )
        return client

    def finish(self, d: defer.Deferred) -> Any:
        self.pump.flush()
        return self.successResultOf(d)

    def logged_in(self):
        client = self.connect_client()
        self.finish(client.authenticate("admin", PASSWORD))
        return client

    def test_authenticate_with_the_right_password(self) -> None:
        self.logged_in()
        self.assertEqual(self.proto.user, "admin")

    def test_authenticate_with_a_wrong_password_fails_with_the_servers_error(self) -> None:
        client = self.connect_client()
        d = client.authenticate("admin", "nope")
        self.pump.flush()
        failure = self.failureResultOf(d, pcpclient.PcpError)
        self.assertEqual(
            failure.value.describe(),
            "FATAL:  authentication failed\nDETAIL:  username and/or password does not match",
        )

    def test_node_info_decodes_every_node(self) -> None:
        client = self.logged_in()
        nodes = self.finish(client.node_info())
        self.assertEqual(nodes, NODES)

    def test_node_info_of_one_node_keeps_its_id(self) -> None:
        client = self.logged_in()
        self.assertEqual(self.finish(client.node_info(1)), [NODES[1]])

    def test_node_count(self) -> None:
        self.assertEqual(self.finish(self.logged_in().node_count()), 2)

    def test_health_check_stats_by_column(self) -> None:
        stats = self.finish(self.logged_in().health_check_stats(0))
        self.assertEqual((stats["hostname"], stats["average_duration"]), ("10.0.0.1", "12.500000"))

    def test_node_operations_reach_the_backend(self) -> None:
        client = self.logged_in()
        self.finish(client.detach(1, gracefully=True))
        self.finish(client.attach(1))
        self.finish(client.promote(1, switchover=True))
        self.finish(client.recover(1))
        self.assertEqual(
            self.backend.calls,
            [("detach", 1, True), ("attach", 1), ("promote", 1, True), ("recover", 1)],
        )

    def test_refused_operation_fails_with_pcp_error(self) -> None:
        client = self.logged_in()
        d = client.promote(0)
        self.pump.flush()
        failure = self.failureResultOf(d, pcpclient.PcpError)
        self.assertEqual(failure.value.message, "promote node failed")

    def test_pool_status_process_count_and_info(self) -> None:
        client = self.logged_in()
        rows = self.finish(client.pool_status())
        self.assertEqual(rows[0], admin.ConfigParameter("listen_addresses", "localhost"))
        self.assertEqual(self.finish(client.process_count()), [7001, 7002])
        self.assertEqual(self.finish(client.process_info(7002))[0][0], "7002")

    def test_invalidate_query_cache_reaches_the_backend(self) -> None:
        client = self.logged_in()
        self.assertIsNone(self.finish(client.invalidate_query_cache()))
        self.assertEqual(self.backend.calls, [("invalidate_query_cache",)])

    def test_invalidate_query_cache_refused_fails_with_pcp_error(self) -> None:
        client = self.logged_in()
        self.backend.result = defer.fail(
            AdminError(
                "query cache is not enabled",
                "memory_cache_enabled is off",
                admin.OBJECT_NOT_IN_PREREQUISITE_STATE,
            )
        )
        d = client.invalidate_query_cache()
        self.pump.flush()
        failure = self.failureResultOf(d, pcpclient.PcpError)
        self.assertEqual(
            failure.value.describe(),
            "ERROR:  query cache is not enabled\nDETAIL:  memory_cache_enabled is off",
        )

    def test_reload_config_reaches_the_backend(self) -> None:
        client = self.logged_in()
        self.assertIsNone(self.finish(client.reload_config()))
        self.assertEqual(self.backend.calls, [("reload_config",)])

    def test_refused_reload_fails_with_pcp_error(self) -> None:
        client = self.logged_in()
        self.backend.reload_error = AdminError(
            "process reload config request failed",
            "conf.yaml:7: bogus: unknown key",
            admin.CONFIG_FILE_ERROR,
        )
        d = client.reload_config()
        self.pump.flush()
        failure = self.failureResultOf(d, pcpclient.PcpError)
        self.assertEqual(
            failure.value.describe(),
            "ERROR:  process reload config request failed\n"
            "DETAIL:  conf.yaml:7: bogus: unknown key",
        )

    def test_stop_pgpool_sends_the_mode_letter(self) -> None:
        client = self.logged_in()
        self.assertIsNone(self.finish(client.stop_pgpool("immediate")))
        self.assertIsNone(self.finish(client.stop_pgpool("f", cluster=True)))
        self.assertEqual(self.backend.calls, [("shutdown", "immediate"), ("shutdown", "fast")])

    def test_log_rotate_reaches_the_backend(self) -> None:
        client = self.logged_in()
        self.assertIsNone(self.finish(client.log_rotate()))
        self.assertEqual(self.backend.calls, [("rotate_log",)])

    def test_requests_pending_when_the_connection_closes_fail(self) -> None:
        client = self.logged_in()
        d = client.node_count()
        client.connectionLost(None)
        self.failureResultOf(d, pcpclient.PcpConnectionLost)


# -- command line, without a network -----------------------------------------------------


class PcppassTests(SynchronousTestCase):
    def write(self, text: str, mode: int = 0o600) -> Dict[str, str]:
        fd, path = tempfile.mkstemp(prefix="pcppass.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        self.addCleanup(os.unlink, path)
        return {"PCPPASSFILE": path}

    def test_first_matching_line_wins_and_star_matches_anything(self) -> None:
        env = self.write("db:9898:admin:one\n*:9898:admin:two\n*:*:*:three\n")
        self.assertEqual(admin_cli.find_pcppass_password("localhost", 9898, "admin", env), "two")
        self.assertEqual(admin_cli.find_pcppass_password("db", 9898, "admin", env), "one")
        self.assertEqual(admin_cli.find_pcppass_password("db", 1, "x", env), "three")

    def test_backslash_escapes_a_colon(self) -> None:
        env = self.write("*:*:admin:pa\\:ss\\\\\n")
        self.assertEqual(admin_cli.find_pcppass_password("h", 1, "admin", env), "pa:ss\\")

    def test_file_readable_by_others_is_ignored_with_a_warning(self) -> None:
        env = self.write("*:*:*:pw\n", mode=0o644)
        warnings: List[str] = []
        self.assertIsNone(admin_cli.find_pcppass_password("h", 1, "u", env, warnings.append))
        self.assertIn("group or world access", warnings[0])

    def test_missing_file_gives_no_password(self) -> None:
        self.assertIsNone(
            admin_cli.find_pcppass_password("h", 1, "u", {"PCPPASSFILE": "/nonexistent/pcppass"})
        )


class PcpPasswdTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp()
        self.path = os.path.join(self.directory, "pcp.conf")
        self.addCleanup(shutil.rmtree, self.directory)

    def run_command(self, *argv: str, password: str = "pw\n") -> Tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        code = admin_cli.run_pcp_passwd_command(
            list(argv), stdin=io.StringIO(password), stdout=stdout, stderr=stderr
        )
        return code, stdout.getvalue(), stderr.getvalue()

    def test_adds_a_plain_md5_line_with_mode_0600(self) -> None:
        code, out, _ = self.run_command("admin", "-f", self.path, "--password-stdin")
        self.assertEqual(code, 0)
        with open(self.path) as f:
            self.assertEqual(f.read(), "admin:" + hashlib.md5(b"pw").hexdigest() + "\n")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertIn('added user "admin"', out)

    def test_replaces_the_users_line_and_keeps_the_others(self) -> None:
        with open(self.path, "w") as f:
            f.write("# admins\nadmin:old\nbob:keep\n")
        code, out, _ = self.run_command(
            "admin", "-f", self.path, "--password-stdin", password="new\n"
        )
        with open(self.path) as f:
            self.assertEqual(
                f.read(), "# admins\nadmin:" + hashlib.md5(b"new").hexdigest() + "\nbob:keep\n"
            )
        self.assertIn("replaced", out)

    def test_written_line_logs_in(self) -> None:
        self.run_command("admin", "-f", self.path, "--password-stdin")
        factory = PcpFactory(FakeAdminBackend(), self.path, Clock())
        stored = hashlib.md5(b"pw").hexdigest()
        self.assertTrue(
            factory.check_password("admin", pcp.pcp_response("admin", stored, SALT).encode(), SALT)
        )

    def test_user_name_with_a_colon_is_refused(self) -> None:
        code, _, err = self.run_command("a:b", "-f", self.path, "--password-stdin")
        self.assertEqual(code, 1)
        self.assertIn("invalid user name", err)


class CommandLineTests(SynchronousTestCase):
    def run_command(self, *argv: str) -> Tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        d = admin_cli.run_admin_command_async(
            list(argv), Clock(), stdout=stdout, stderr=stderr, getpass=lambda prompt: "", environ={}
        )
        return self.successResultOf(d), stdout.getvalue(), stderr.getvalue()

    def test_node_id_is_required_for_attach(self) -> None:
        code, _, err = self.run_command("attach", "-w")
        self.assertEqual(code, 2)
        self.assertIn("missing node id", err)

    def test_node_id_is_required_for_recover(self) -> None:
        code, _, err = self.run_command("recover", "-w")
        self.assertEqual(code, 2)
        self.assertIn("missing node id", err)

    def test_recover_help_names_pcp_recovery_node(self) -> None:
        code, out, _ = self.run_command("recover", "--help")
        self.assertEqual(code, 0)
        self.assertIn("pcp_recovery_node", out)

    def test_negative_node_id_is_a_usage_error(self) -> None:
        self.assertEqual(self.run_command("detach", "-n", "-3", "-w")[0], 2)

    def test_unknown_subcommand_is_a_usage_error(self) -> None:
        self.assertEqual(self.run_command("frobnicate")[0], 2)

    def test_invalidate_query_cache_takes_no_node_id(self) -> None:
        code, _, err = self.run_command("invalidate-query-cache", "1", "-w")
        self.assertEqual(code, 2)
        self.assertIn("unrecognized arguments: 1", err)

    def test_invalidate_query_cache_help_has_the_pcp_options(self) -> None:
        code, out, _ = self.run_command("invalidate-query-cache", "--help")
        self.assertEqual(code, 0)
        self.assertIn("pcp_invalidate_query_cache", out)
        self.assertNotIn("--node-id", out)
        for option in ("-h HOST", "-p PORT", "-U USERNAME", "-w"):
            self.assertIn(option, out)

    def test_reload_takes_no_node_id(self) -> None:
        code, _, err = self.run_command("reload", "0", "-w")
        self.assertEqual(code, 2)
        self.assertIn("unrecognized arguments: 0", err)

    def test_stop_refuses_an_unknown_mode(self) -> None:
        code, _, err = self.run_command("stop", "-m", "gentle", "-w")
        self.assertEqual(code, 2)
        self.assertIn("invalid shutdown mode 'gentle'", err)

    def test_stop_help_names_the_modes(self) -> None:
        code, out, _ = self.run_command("stop", "--help")
        self.assertEqual(code, 0)
        self.assertIn("pcp_stop_pgpool", out)
        self.assertIn("-m MODE", out)
        self.assertNotIn("--node-id", out)

    def test_log_rotate_takes_no_node_id(self) -> None:
        code, _, err = self.run_command("log-rotate", "0", "-w")
        self.assertEqual(code, 2)
        self.assertIn("unrecognized arguments: 0", err)

    def test_main_command_dispatches_every_admin_command(self) -> None:
        from twisted_pgpool import cli

        self.assertEqual(cli._ADMIN_COMMANDS, admin_cli.ADMIN_COMMANDS)

    def test_help_exits_zero(self) -> None:
        code, out, _ = self.run_command("promote", "--help")
        self.assertEqual(code, 0)
        self.assertIn("--switchover", out)

    def test_table_is_aligned_with_a_row_count(self) -> None:
        self.assertEqual(
            admin_cli.format_table(["a", "bb"], [["xyz", "1"]]),
            " a  | bb\n----+---\nxyz | 1\n(1 row)\n",
        )
