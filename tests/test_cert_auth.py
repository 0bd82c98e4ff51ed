"""
Tests for client certificates without sockets: the frontend options that
ask for and check them (C{ssl_ca_cert}, C{ssl_crl_file}), the C{cert}
method and the C{clientcert} option of pool_hba.conf as the frontend
applies them, and the Common Name rule.

The client's TLS is a L{StringTransport} that claims the certificate a
handshake would have verified; real handshakes, with psql, are in
C{tests.test_e2e_cert_auth}.
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Dict, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from OpenSSL.crypto import X509
from twisted.internet.interfaces import ISSLTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from tests.inmemory import MemoryClient
from tests.support import write_certificate
from tests.test_frontend_protocol import (
    ALICE_MD5,
    SSL_REQUEST,
    Proxy,
    fatal,
)
from tests.test_tls_unit import TLSStringTransport, build_frontend_options
from tests.wire import md5_answer, password_message, startup_packet
from twisted_pgpool.config import ConfigError, config_from_dict
from twisted_pgpool.net.tls import TLSSettingError, proxy_tls
from twisted_pgpool.proxy.clientauth import certificate_user_name

STARTUP = startup_packet({"user": "alice", "database": "db"})


def write_crl(
    directory: str, ca: "tuple[str, str]", revoked: "list[str]", name: str = "ca.crl"
) -> str:
    """
    Write a PEM revocation list signed by the authority C{ca}
    (certificate, key files) that revokes the certificates in the files
    C{revoked}.
    """
    with open(ca[0], "rb") as f:
        authority = x509.load_pem_x509_certificate(f.read())
    with open(ca[1], "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=1))
    )
    for path in revoked:
        with open(path, "rb") as f:
            serial = x509.load_pem_x509_certificate(f.read()).serial_number
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - datetime.timedelta(minutes=1))
            .build()
        )
    crl = builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(crl.public_bytes(serialization.Encoding.PEM))
    return path


class Certificates:
    """
    A test authority, the proxy's certificate, and client certificates it
    signed, in a fresh directory.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.directory = os.path.abspath(test.mktemp())
        os.makedirs(self.directory)
        self.ca = write_certificate(self.directory, "ca", "test CA", is_ca=True)
        self.server = write_certificate(self.directory, "server", issuer=self.ca)

    def client(self, common_name: str) -> x509.Certificate:
        cert_path, _ = write_certificate(
            self.directory, f"client-{common_name}", common_name, issuer=self.ca
        )
        with open(cert_path, "rb") as f:
            return x509.load_pem_x509_certificate(f.read())

    def settings(self, **extra: Any) -> Dict[str, Any]:
        values: Dict[str, Any] = {
            "ssl": True,
            "ssl_key": self.server[1],
            "ssl_cert": self.server[0],
            "ssl_ca_cert": self.ca[0],
        }
        values.update(extra)
        return values


class CertificateTransport(TLSStringTransport):
    """
    A client transport whose TLS handshake, once started, verified
    C{certificate} (or had none presented).
    """

    def __init__(self, certificate: Optional[x509.Certificate]) -> None:
        super().__init__()
        self.certificate = certificate

    def startTLS(self, options: Any) -> None:
        super().startTLS(options)
        directlyProvides(self, ISSLTransport)

    def getPeerCertificate(self) -> Optional[X509]:
        if self.certificate is None:
            return None
        return X509.from_cryptography(self.certificate)


# -- the options -----------------------------------------------------------------


class ClientVerificationOptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.certificates = Certificates(self)

    def build(self, **overrides: Any):
        return build_frontend_options(
            self.certificates.server[1], self.certificates.server[0], overrides
        )

    def test_without_authorities_clients_are_not_asked(self) -> None:
        context = self.build().getContext()
        self.assertEqual(context.get_verify_mode(), SSL.VERIFY_NONE)

    def test_authorities_ask_for_a_certificate_without_requiring_one(self) -> None:
        mode = self.build(ca_file=self.certificates.ca[0]).getContext().get_verify_mode()
        self.assertEqual(
            (bool(mode & SSL.VERIFY_PEER), bool(mode & SSL.VERIFY_FAIL_IF_NO_PEER_CERT)),
            (True, False),
        )

    def test_a_directory_of_authorities_asks_too(self) -> None:
        mode = self.build(ca_dir=self.certificates.directory).getContext().get_verify_mode()
        self.assertTrue(mode & SSL.VERIFY_PEER)

    def test_proxy_tls_verifies_clients_with_ssl_ca_cert(self) -> None:
        tls = proxy_tls(
            config_from_dict(
                dict(backends=[{"hostname": "127.0.0.1"}], **self.certificates.settings())
            )
        )
        assert tls is not None
        self.assertEqual((tls.verifies_clients, tls.verifies_backends), (True, True))

    def test_proxy_tls_does_not_verify_clients_without_authorities(self) -> None:
        tls = proxy_tls(
            config_from_dict(
                dict(
                    backends=[{"hostname": "127.0.0.1"}],
                    **self.certificates.settings(ssl_ca_cert=""),
                )
            )
        )
        assert tls is not None
        self.assertFalse(tls.verifies_clients)

    def test_crl_file_builds_a_context(self) -> None:
        crl = write_crl(self.certificates.directory, self.certificates.ca, [])
        context = self.build(ca_file=self.certificates.ca[0], crl_file=crl).getContext()
        self.assertIsInstance(context, SSL.Context)

    def test_crl_file_without_authorities_names_ssl_crl_file(self) -> None:
        crl = write_crl(self.certificates.directory, self.certificates.ca, [])
        error = self.assertRaises(TLSSettingError, self.build, crl_file=crl)
        self.assertEqual(error.key, "ssl_crl_file")
        self.assertIn("ssl_ca_cert", error.reason)

    def test_missing_crl_file_names_ssl_crl_file(self) -> None:
        error = self.assertRaises(
            TLSSettingError,
            self.build,
            ca_file=self.certificates.ca[0],
            crl_file=os.path.join(self.certificates.directory, "none.crl"),
        )
        self.assertEqual(error.key, "ssl_crl_file")
        self.assertIn("cannot read", error.reason)

    def test_crl_file_that_holds_no_crl_names_ssl_crl_file(self) -> None:
        error = self.assertRaises(
            TLSSettingError,
            self.build,
            ca_file=self.certificates.ca[0],
            crl_file=self.certificates.ca[0],
        )
        self.assertEqual(error.key, "ssl_crl_file")

    def test_bad_crl_file_is_a_config_error_naming_the_key(self) -> None:
        directory = self.certificates.directory
        with open(os.path.join(directory, "conf.yaml"), "w") as f:
            f.write(
                f"backends:\n  - hostname: 127.0.0.1\nssl: on\n"
                f"ssl_key: {self.certificates.server[1]}\n"
                f"ssl_cert: {self.certificates.server[0]}\n"
                f"ssl_ca_cert: {self.certificates.ca[0]}\n"
                f"ssl_crl_file: missing.crl\n"
            )
        from twisted_pgpool.config import load_config

        error = self.assertRaises(ConfigError, load_config, os.path.join(directory, "conf.yaml"))
        self.assertIn("ssl_crl_file", str(error))
        self.assertIn("missing.crl", str(error))

    def test_ssl_crl_file_defaults_to_empty(self) -> None:
        config = config_from_dict({"backends": [{"hostname": "127.0.0.1"}]})
        self.assertEqual(config.ssl_crl_file, "")


# -- the Common Name ----------------------------------------------------------------


class CommonNameTests(SynchronousTestCase):
    def test_the_common_name_is_the_user_name(self) -> None:
        self.assertEqual(certificate_user_name(Certificates(self).client("alice")), "alice")

    def test_a_certificate_without_common_name_has_no_user_name(self) -> None:
        certificates = Certificates(self)
        certificate = certificates.client("alice")
        with open(certificates.ca[1], "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "alice")])
        nameless = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(certificate.issuer)
            .public_key(certificate.public_key())
            .serial_number(1)
            .not_valid_before(certificate.not_valid_before_utc)
            .not_valid_after(certificate.not_valid_after_utc)
            .sign(key, hashes.SHA256())
        )  # type: ignore[arg-type]
        self.assertIsNone(certificate_user_name(nameless))


# -- pool_hba.conf's cert method and clientcert option at the frontend --------------


class CertAuthenticationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.certificates = Certificates(self)

    def client(
        self,
        hba: str,
        certificate: Optional[x509.Certificate],
        passwd: Optional[str] = None,
        **settings: Any,
    ) -> "tuple[Proxy, MemoryClient]":
        proxy = Proxy(self, passwd=passwd, hba=hba, **self.certificates.settings(**settings))
        client = MemoryClient(proxy, CertificateTransport(certificate))
        client.says(SSL_REQUEST)
        client.take()
        return proxy, client

    def test_certificate_with_the_user_name_logs_in(self) -> None:
        proxy, client = self.client(
            "hostssl all all 0.0.0.0/0 cert\n", self.certificates.client("alice")
        )
        client.says(STARTUP)
        self.assertEqual(
            (client.take(), client.closed, len(proxy.reactor.tcpClients)), (b"", False, 1)
        )

    def test_certificate_of_another_user_is_refused_with_28000(self) -> None:
        proxy, client = self.client(
            "hostssl all all 0.0.0.0/0 cert\n", self.certificates.client("bob")
        )
        client.says(STARTUP)
        self.assertEqual(
            (client.take(), client.closed, proxy.reactor.tcpClients),
            (fatal("28000", 'certificate authentication failed for user "alice"'), True, []),
        )

    def test_no_certificate_is_refused_with_28000(self) -> None:
        proxy, client = self.client("hostssl all all 0.0.0.0/0 cert\n", None)
        client.says(STARTUP)
        self.assertEqual(
            (client.take(), client.closed, proxy.reactor.tcpClients),
            (fatal("28000", "connection requires a valid client certificate"), True, []),
        )

    def test_cert_without_authorities_is_a_configuration_error(self) -> None:
        proxy, client = self.client(
            "hostssl all all 0.0.0.0/0 cert\n", self.certificates.client("alice"), ssl_ca_cert=""
        )
        client.says(STARTUP)
        data = client.take()
        self.assertIn(b"C" + b"F0000\x00", data)
        self.assertIn(
            b"client certificates can only be checked if a root certificate store is available",
            data,
        )
        self.assertEqual(proxy.reactor.tcpClients, [])

    def test_cert_line_does_not_serve_a_plaintext_client(self) -> None:
        proxy = Proxy(self, hba="hostssl all all 0.0.0.0/0 cert\n", **self.certificates.settings())
        client = MemoryClient(proxy, CertificateTransport(self.certificates.client("alice")))
        client.says(STARTUP)
        self.assertEqual(
            client.take(),
            fatal(
                "28000",
                'no pool_hba.conf entry for host "192.168.1.1", user "alice", '
                'database "db", no encryption',
            ),
        )

    def test_other_methods_admit_a_client_without_certificate(self) -> None:
        proxy, client = self.client("hostssl all all 0.0.0.0/0 trust\n", None)
        client.says(STARTUP)
        self.assertEqual((client.closed, len(proxy.reactor.tcpClients)), (False, 1))

    def md5_login(
        self, hba: str, certificate: Optional[x509.Certificate]
    ) -> "tuple[Proxy, MemoryClient]":
        proxy, client = self.client(hba, certificate, passwd=f"alice:{ALICE_MD5}\n")
        client.says(STARTUP)
        request = client.take()
        self.assertEqual(request[:9], b"R\x00\x00\x00\x0c\x00\x00\x00\x05")
        client.says(password_message(md5_answer("secret", "alice", request[9:13]) + b"\x00"))
        return proxy, client

    def test_clientcert_verify_ca_requires_a_certificate(self) -> None:
        proxy, client = self.client(
            "hostssl all all 0.0.0.0/0 md5 clientcert=verify-ca\n",
            None,
            passwd=f"alice:{ALICE_MD5}\n",
        )
        client.says(STARTUP)
        self.assertEqual(
            client.take(), fatal("28000", "connection requires a valid client certificate")
        )

    def test_clientcert_verify_ca_accepts_any_valid_certificate(self) -> None:
        proxy, client = self.md5_login(
            "hostssl all all 0.0.0.0/0 md5 clientcert=verify-ca\n", self.certificates.client("bob")
        )
        self.assertEqual((client.closed, len(proxy.reactor.tcpClients)), (False, 1))

    def test_clientcert_verify_full_accepts_the_users_certificate(self) -> None:
        proxy, client = self.md5_login(
            "hostssl all all 0.0.0.0/0 md5 clientcert=verify-full\n",
            self.certificates.client("alice"),
        )
        self.assertEqual((client.closed, len(proxy.reactor.tcpClients)), (False, 1))

    def test_clientcert_verify_full_refuses_another_users_certificate(self) -> None:
        proxy, client = self.md5_login(
            "hostssl all all 0.0.0.0/0 md5 clientcert=verify-full\n",
            self.certificates.client("bob"),
        )
        self.assertEqual(
            (client.take(), client.closed, proxy.reactor.tcpClients),
            (fatal("28P01", 'password authentication failed for user "alice"'), True, []),
        )

    def test_clientcert_verify_full_on_trust_reports_trust_failure(self) -> None:
        proxy, client = self.client(
            "hostssl all all 0.0.0.0/0 trust clientcert=verify-full\n",
            self.certificates.client("bob"),
        )
        client.says(STARTUP)
        self.assertEqual(
            (client.take(), proxy.reactor.tcpClients),
            (fatal("28000", '"trust" authentication failed for user "alice"'), []),
        )

    def test_failed_certificate_authentication_is_logged(self) -> None:
        from twisted.logger import globalLogPublisher

        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        _, client = self.client("hostssl all all 0.0.0.0/0 cert\n", self.certificates.client("bob"))
        client.says(STARTUP)
        from twisted.logger import formatEvent

        text = "\n".join(formatEvent(e) for e in events)
        self.assertIn(
            "certificate authentication failed for user alice: "
            "the certificate's Common Name is bob",
            text,
        )

    def test_failed_handshake_is_logged(self) -> None:
        from twisted.logger import formatEvent, globalLogPublisher
        from twisted.python.failure import Failure

        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        _, client = self.client("hostssl all all 0.0.0.0/0 cert\n", None)
        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        client.protocol.connectionLost(Failure(error))
        self.assertIn(
            "could not accept SSL connection from 192.168.1.1: certificate verify failed",
            [formatEvent(e) for e in events],
        )
