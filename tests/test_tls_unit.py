"""
Tests for TLS without sockets: the frontend's answer to an SSLRequest and
its guard against plaintext sent before the handshake, the backend
connection's own SSLRequest, the C{ssl_*} settings and the options
L{twisted_pgpool.net.tls} builds from them.

Transports are L{StringTransport}s that record C{startTLS} instead of
encrypting: what matters here is which bytes go out in the clear, and when
TLS starts.  Real handshakes are in C{tests.test_e2e_tls}.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.inmemory import MemoryClient
from tests.support import write_certificate
from tests.test_frontend_protocol import (
    AUTH_OK,
    GSSENC_REQUEST,
    READY_IDLE,
    SERVER_KEY,
    SERVER_VERSION,
    SSL_REQUEST,
    Proxy,
    fatal,
)
from tests.wire import startup_packet
from twisted_pgpool.backend.protocol import (
    BackendConnectionLost,
    BackendCredentials,
    CredentialResponder,
    connect_backend,
)
from twisted_pgpool.config import ConfigError, config_from_dict, load_config
from twisted_pgpool.net.tls import TLSSettingError, backend_options, frontend_options
from twisted_pgpool.wire import errors

STARTUP = startup_packet({"user": "alice", "database": "db"})


class TLSStringTransport(StringTransport):
    """
    A L{StringTransport} that records C{startTLS} calls, and what had been
    written in the clear by then.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tls_options: Optional[Any] = None
        self.clear_text_before_tls: Optional[bytes] = None

    def startTLS(self, options: Any) -> None:
        self.tls_options = options
        self.clear_text_before_tls = self.value()


def certificate_dir(test: SynchronousTestCase) -> str:
    directory = test.mktemp()
    os.makedirs(directory)
    write_certificate(directory, "server")
    return directory


def ssl_settings(directory: str, **settings: Any) -> dict:
    values = {
        "ssl": True,
        "ssl_key": os.path.join(directory, "server.key"),
        "ssl_cert": os.path.join(directory, "server.crt"),
    }
    values.update(settings)
    return values


def TLSClient(proxy: Proxy) -> MemoryClient:
    """
    A client connection to the proxy on a L{TLSStringTransport}.
    """
    return MemoryClient(proxy, TLSStringTransport())


# -- the frontend -------------------------------------------------------------


class FrontendSSLRequestTests(SynchronousTestCase):
    def proxy(self, hba: Optional[str] = None) -> Proxy:
        return Proxy(self, hba=hba, **ssl_settings(certificate_dir(self)))

    def test_ssl_request_is_answered_s_and_tls_starts_when_ssl_is_on(self) -> None:
        proxy = self.proxy()
        client = TLSClient(proxy)
        client.says(SSL_REQUEST)
        self.assertEqual(
            (
                client.transport.clear_text_before_tls,
                client.transport.tls_options,
                client.protocol.ssl_in_use,
                client.transport.disconnecting,
            ),
            (b"S", proxy.core.tls.server, True, False),
        )

    def test_ssl_request_is_answered_n_when_ssl_is_off(self) -> None:
        client = TLSClient(Proxy(self))
        client.says(SSL_REQUEST)
        self.assertEqual(
            (client.take(), client.transport.tls_options, client.protocol.ssl_in_use),
            (b"N", None, False),
        )

    def test_startup_packet_after_the_handshake_logs_in(self) -> None:
        proxy = self.proxy()
        client = TLSClient(proxy)
        client.says(SSL_REQUEST)
        client.take()
        client.says(STARTUP)
        self.assertEqual(
            [(host, port) for host, port, *_ in proxy.reactor.tcpClients], [("127.0.0.1", 5432)]
        )

    def test_bytes_after_ssl_request_in_the_same_read_end_the_connection(self) -> None:
        """
        Plaintext that arrived with the SSLRequest, before any handshake,
        could have been injected (CVE-2021-23214): an error instead of 'S',
        and no TLS.
        """
        proxy = self.proxy()
        client = TLSClient(proxy)
        client.says(SSL_REQUEST + STARTUP)
        self.assertEqual(
            (
                client.take(),
                client.transport.tls_options,
                client.transport.disconnecting,
                proxy.reactor.tcpClients,
            ),
            (
                fatal(
                    "08P01",
                    "received unencrypted data after SSL request",
                    "This could be either a client-software bug or evidence of "
                    "an attempted man-in-the-middle attack.",
                ),
                None,
                True,
                [],
            ),
        )

    def test_partial_packet_after_ssl_request_ends_the_connection(self) -> None:
        client = TLSClient(self.proxy())
        client.says(SSL_REQUEST + STARTUP[:3])
        self.assertEqual(
            (client.transport.tls_options, client.transport.disconnecting), (None, True)
        )

    def test_ssl_request_split_over_reads_is_answered(self) -> None:
        client = TLSClient(self.proxy())
        client.says(SSL_REQUEST[:5], SSL_REQUEST[5:])
        self.assertEqual(client.transport.clear_text_before_tls, b"S")

    def test_second_ssl_request_over_tls_is_an_unknown_protocol(self) -> None:
        client = TLSClient(self.proxy())
        client.says(SSL_REQUEST)
        client.take()
        client.says(SSL_REQUEST)
        self.assertEqual(
            (client.take(), client.transport.disconnecting),
            (
                fatal(
                    "0A000", "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.0"
                ),
                True,
            ),
        )

    def test_gssenc_request_is_still_answered_n(self) -> None:
        client = TLSClient(self.proxy())
        client.says(GSSENC_REQUEST)
        self.assertEqual((client.take(), client.transport.tls_options), (b"N", None))

    def test_ssl_request_after_declined_gssenc_request_starts_tls(self) -> None:
        client = TLSClient(self.proxy())
        client.says(GSSENC_REQUEST)
        client.take()
        client.says(SSL_REQUEST)
        self.assertEqual(client.transport.clear_text_before_tls, b"S")

    def test_hostssl_line_admits_an_encrypted_client(self) -> None:
        proxy = self.proxy(hba="hostssl all all 0.0.0.0/0 trust\n")
        client = TLSClient(proxy)
        client.says(SSL_REQUEST)
        client.take()
        client.says(STARTUP)
        self.assertEqual(
            (len(proxy.reactor.tcpClients), client.transport.disconnecting), (1, False)
        )

    def test_hostssl_line_does_not_admit_a_plaintext_client(self) -> None:
        proxy = self.proxy(hba="hostssl all all 0.0.0.0/0 trust\n")
        client = TLSClient(proxy)
        client.says(STARTUP)
        self.assertEqual(
            (client.take(), client.transport.disconnecting, proxy.reactor.tcpClients),
            (
                fatal(
                    "28000",
                    'no pool_hba.conf entry for host "192.168.1.1", user '
                    '"alice", database "db", no encryption',
                ),
                True,
                [],
            ),
        )

    def test_hostnossl_line_does_not_admit_an_encrypted_client(self) -> None:
        proxy = self.proxy(hba="hostnossl all all 0.0.0.0/0 trust\n")
        client = TLSClient(proxy)
        client.says(SSL_REQUEST)
        client.take()
        client.says(STARTUP)
        self.assertEqual(
            (client.take(), client.transport.disconnecting),
            (
                fatal(
                    "28000",
                    'no pool_hba.conf entry for host "192.168.1.1", user '
                    '"alice", database "db", SSL encryption',
                ),
                True,
            ),
        )

    def test_backend_connection_asks_for_tls_when_ssl_is_on(self) -> None:
        proxy = self.proxy()
        client = TLSClient(proxy)
        client.says(SSL_REQUEST)
        client.says(STARTUP)
        host, port, factory, _, _ = proxy.reactor.tcpClients[0]
        backend = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = TLSStringTransport()
        backend.makeConnection(transport)
        self.assertEqual(transport.value(), SSL_REQUEST)


# -- the backend connection --------------------------------------------------


class BackendSSLRequestTests(SynchronousTestCase):
    """
    L{connect_backend} with TLS options: the SSLRequest goes first, and the
    StartupMessage after the server's answer.
    """

    def connect(self, tls: object = "options") -> tuple:
        reactor = MemoryReactorClock()
        result: List[Any] = []
        d = defer.Deferred.fromCoroutine(
            connect_backend(
                reactor,
                0,
                "127.0.0.1",
                5432,
                10,
                {"user": "alice", "database": "db"},
                CredentialResponder(BackendCredentials("alice")),
                tls=tls,
            )
        )
        d.addBoth(result.append)
        host, port, factory, _, _ = reactor.tcpClients[0]
        wrapper = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = TLSStringTransport()
        wrapper.makeConnection(transport)
        # The endpoint's wrapper passes bytes on; the test talks to what it
        # wraps (the BackendProtocol that connect_backend returns).
        return wrapper._wrappedProtocol, transport, result

    def test_ssl_request_goes_before_the_startup_message(self) -> None:
        protocol, transport, result = self.connect()
        self.assertEqual((transport.value(), result), (SSL_REQUEST, []))

    def test_s_starts_tls_then_sends_the_startup_message(self) -> None:
        protocol, transport, result = self.connect()
        transport.clear()
        protocol.dataReceived(b"S")
        self.assertEqual(
            (
                transport.clear_text_before_tls,
                transport.tls_options,
                transport.value()[:4] != b"",
                protocol.ssl_in_use,
            ),
            (b"", "options", True, True),
        )
        self.assertIn(b"user\x00alice\x00", transport.value())

    def test_login_completes_over_tls(self) -> None:
        protocol, transport, result = self.connect()
        protocol.dataReceived(b"S")
        protocol.dataReceived(AUTH_OK + SERVER_VERSION + SERVER_KEY + READY_IDLE)
        self.assertEqual((result, protocol.process_id), ([protocol], 4242))

    def test_n_goes_on_in_plain_text(self) -> None:
        protocol, transport, result = self.connect()
        transport.clear()
        protocol.dataReceived(b"N")
        self.assertEqual((transport.tls_options, protocol.ssl_in_use), (None, False))
        self.assertIn(b"user\x00alice\x00", transport.value())

    def test_bytes_after_s_abort_the_connection(self) -> None:
        """
        Bytes the server sent after 'S', before the handshake, could have
        been injected (CVE-2021-23222): no TLS, no login.
        """
        protocol, transport, result = self.connect()
        protocol.dataReceived(b"S" + AUTH_OK)
        self.assertEqual((transport.tls_options, len(result)), (None, 1))
        error = result[0].value
        self.assertIsInstance(error, errors.PgError)
        self.assertEqual(
            (error.sqlstate, error.message, transport.disconnecting or transport.disconnected),
            (
                "08P01",
                "backend node 0 sent unencrypted data after its answer to the SSL request",
                True,
            ),
        )

    def test_an_error_answer_fails_the_connection(self) -> None:
        protocol, transport, result = self.connect()
        protocol.dataReceived(b"E" + b"\x00\x00\x00\x05\x00")
        self.assertIsInstance(result[0].value, errors.PgError)
        self.assertIn("answered the SSL request with b'E'", result[0].value.message)

    def test_connection_lost_before_the_answer(self) -> None:
        protocol, transport, result = self.connect()
        protocol.connectionLost()
        self.assertIsInstance(result[0].value, BackendConnectionLost)

    def test_without_tls_the_startup_message_goes_first(self) -> None:
        protocol, transport, result = self.connect(tls=None)
        self.assertIn(b"user\x00alice\x00", transport.value())
        self.assertNotIn(SSL_REQUEST, transport.value())


# -- building the options -------------------------------------------------------


def build_frontend_options(key_file: str, cert_file: str, overrides: Dict[str, Any]) -> Any:
    """
    L{frontend_options} for this key and certificate, with the settings'
    defaults, unless C{overrides} says otherwise (the key and certificate
    files too).
    """
    settings = dict(
        key_file=key_file,
        cert_file=cert_file,
        ciphers="HIGH:MEDIUM:+3DES:!aNULL",
        prefer_server_ciphers=False,
        ecdh_curve="prime256v1",
        dh_params_file="",
    )
    settings.update(overrides)
    return frontend_options(**settings)


class FrontendOptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = certificate_dir(self)
        self.key = os.path.join(self.directory, "server.key")
        self.cert = os.path.join(self.directory, "server.crt")

    def build(self, **overrides: Any):
        return build_frontend_options(self.key, self.cert, overrides)

    def refused_key(self, **overrides: Any) -> str:
        return self.assertRaises(TLSSettingError, self.build, **overrides).key

    def test_pgpool_defaults_build_a_context(self) -> None:
        context = self.build().getContext()
        self.assertIsInstance(context, SSL.Context)

    def test_client_order_of_ciphers_by_default(self) -> None:
        # set_options(0) adds nothing and returns the options in force.
        self.assertFalse(self.build().getContext().set_options(0) & SSL.OP_CIPHER_SERVER_PREFERENCE)

    def test_prefer_server_ciphers_keeps_the_server_order(self) -> None:
        options = self.build(prefer_server_ciphers=True)
        self.assertTrue(options.getContext().set_options(0) & SSL.OP_CIPHER_SERVER_PREFERENCE)

    def test_other_curve_names_are_accepted(self) -> None:
        self.build(ecdh_curve="secp384r1")

    def test_missing_key_file_names_ssl_key(self) -> None:
        self.assertEqual(self.refused_key(key_file=self.key + ".missing"), "ssl_key")

    def test_missing_certificate_names_ssl_cert(self) -> None:
        self.assertEqual(self.refused_key(cert_file=self.cert + ".missing"), "ssl_cert")

    def test_key_of_another_certificate_names_ssl_key(self) -> None:
        _, other_key = write_certificate(self.directory, "other")
        self.assertEqual(self.refused_key(key_file=other_key), "ssl_key")

    def test_encrypted_key_names_ssl_key(self) -> None:
        with open(self.key, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
        encrypted = os.path.join(self.directory, "encrypted.key")
        with open(encrypted, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(b"phrase"),
                )
            )
        error = self.assertRaises(TLSSettingError, self.build, key_file=encrypted)
        self.assertIn("ssl_passphrase_command is not supported", error.reason)

    def test_certificate_file_that_is_not_pem_names_ssl_cert(self) -> None:
        self.assertEqual(self.refused_key(cert_file=self.key), "ssl_cert")

    def test_cipher_string_selecting_nothing_names_ssl_ciphers(self) -> None:
        self.assertEqual(self.refused_key(ciphers="NOSUCHCIPHER"), "ssl_ciphers")

    def test_unknown_curve_names_ssl_ecdh_curve(self) -> None:
        self.assertEqual(self.refused_key(ecdh_curve="nosuchcurve"), "ssl_ecdh_curve")

    def test_file_without_dh_parameters_names_ssl_dh_params_file(self) -> None:
        self.assertEqual(self.refused_key(dh_params_file=self.cert), "ssl_dh_params_file")


class BackendOptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = certificate_dir(self)

    def test_without_authorities_the_server_is_not_verified(self) -> None:
        context = backend_options("", "").getContext()
        self.assertEqual(context.get_verify_mode(), SSL.VERIFY_NONE)

    def test_ca_file_makes_the_server_verified(self) -> None:
        context = backend_options(os.path.join(self.directory, "server.crt"), "").getContext()
        self.assertTrue(context.get_verify_mode() & SSL.VERIFY_PEER)

    def test_ca_directory_makes_the_server_verified(self) -> None:
        context = backend_options("", self.directory).getContext()
        self.assertTrue(context.get_verify_mode() & SSL.VERIFY_PEER)

    def test_ca_directory_without_certificates_is_refused(self) -> None:
        empty = self.mktemp()
        os.makedirs(empty)
        error = self.assertRaises(TLSSettingError, backend_options, "", empty)
        self.assertEqual(error.key, "ssl_ca_cert_dir")


# -- configuration ------------------------------------------------------------


class SSLConfigTests(SynchronousTestCase):
    def write_config(self, text: str) -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "conf.yaml")
        with open(path, "w") as f:
            f.write("backends:\n  - hostname: 127.0.0.1\n" + text)
        return path

    def test_defaults_are_pgpools(self) -> None:
        config = config_from_dict({"backends": [{"hostname": "h"}]}, base_dir="/etc/pgpool")
        self.assertEqual(
            (
                config.ssl,
                config.ssl_key,
                config.ssl_cert,
                config.ssl_ca_cert,
                config.ssl_ca_cert_dir,
                config.ssl_ciphers,
                config.ssl_prefer_server_ciphers,
                config.ssl_ecdh_curve,
                config.ssl_dh_params_file,
            ),
            (
                False,
                "/etc/pgpool/server.key",
                "/etc/pgpool/server.crt",
                "",
                "",
                "HIGH:MEDIUM:+3DES:!aNULL",
                False,
                "prime256v1",
                "",
            ),
        )

    def test_ssl_off_does_not_need_the_files(self) -> None:
        config = load_config(self.write_config("ssl_key: nowhere.key\n"))
        self.assertFalse(config.ssl)

    def test_relative_paths_are_resolved_against_the_config_directory(self) -> None:
        path = self.write_config("ssl: on\n")
        directory = os.path.dirname(path)
        write_certificate(directory, "server")
        config = load_config(path)
        self.assertEqual(
            (config.ssl_key, config.ssl_cert),
            (
                os.path.join(os.path.abspath(directory), "server.key"),
                os.path.join(os.path.abspath(directory), "server.crt"),
            ),
        )

    def test_ssl_on_with_a_missing_key_names_file_line_and_key(self) -> None:
        path = self.write_config("ssl: on\nssl_key: missing.key\n")
        write_certificate(os.path.dirname(path), "server")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual((error.source, error.line, error.key), (path, 4, "ssl_key"))
        self.assertIn("cannot read", error.reason)
        self.assertIn("missing.key", error.reason)

    def test_ssl_on_with_default_files_missing_points_at_ssl(self) -> None:
        path = self.write_config("ssl: on\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual((error.line, error.key), (3, "ssl_cert"))

    def test_bad_cipher_string_is_a_config_error(self) -> None:
        path = self.write_config("ssl: on\nssl_ciphers: NOSUCHCIPHER\n")
        write_certificate(os.path.dirname(path), "server")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual((error.line, error.key), (4, "ssl_ciphers"))
