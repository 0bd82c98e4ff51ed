"""
End-to-end tests of client certificates: the real proxy (C{ssl} on,
C{ssl_ca_cert}, C{ssl_crl_file}, a C{cert} line in pool_hba.conf) in front
of the suite's shared cluster, with psql presenting certificates through
libpq's C{PGSSLCERT}/C{PGSSLKEY}, and a raw TLS socket where the SQLSTATE
of a refusal is needed (libpq does not show it).

The proxy logs in to the backend with the user's pool_passwd entry, as for
C{trust}: certificates only concern the client side.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from typing import Dict, Optional

from twisted.trial.unittest import TestCase

from tests.support import KEEP_ENV, LazyProxy, ProxyProcess, run_psql, write_certificate
from tests.test_cert_auth import write_crl
from tests.test_e2e_tls import read, read_error_fields
from tests.wire import startup_packet
from twisted_pgpool.testing.localcluster import MD5_PASSWORD, MD5_USER, LocalCluster
from twisted_pgpool.testing.waiting import wait_for

#: app only by certificate; md5user by password, with or without one.
PROXY_HBA = f"""\
hostssl all app 127.0.0.1/32 cert
hostssl all {MD5_USER} 127.0.0.1/32 md5
"""

PASSWD = f"app:TEXTapp\n{MD5_USER}:TEXT{MD5_PASSWORD}\n"

_files: Optional[Dict[str, str]] = None


def files() -> Dict[str, str]:
    """
    A test authority with the proxy's certificate and client certificates
    it signed (C{app}, C{md5user}, and a revoked C{app}), a list revoking
    the last, and a certificate for C{app} from another authority: file
    names by role (C{<role>} the certificate, C{<role>_key} its key).
    """
    global _files
    if _files is None:
        directory = tempfile.mkdtemp(prefix="twisted_pgpool-certauth-")
        if not os.environ.get(KEEP_ENV):
            atexit.register(shutil.rmtree, directory, True)
        ca = write_certificate(directory, "ca", "twisted_pgpool client CA", is_ca=True)
        other_ca = write_certificate(directory, "other-ca", "another CA", is_ca=True)
        result = {"ca": ca[0]}
        result["server"], result["server_key"] = write_certificate(
            directory, "server", "localhost", issuer=ca
        )
        for role, name, issuer in (
            ("app", "app", ca),
            ("md5user", MD5_USER, ca),
            ("revoked", "app", ca),
            ("stranger", "app", other_ca),
        ):
            result[role], result[f"{role}_key"] = write_certificate(
                directory, role, name, issuer=issuer
            )
        result["crl"] = write_crl(directory, ca, [result["revoked"]])
        _files = result
    return _files


def _proxy(cluster: LocalCluster) -> ProxyProcess:
    certificates = files()
    return ProxyProcess(
        {
            "backends": cluster.backends_config()[:1],
            "ssl": True,
            "ssl_ca_cert": "ca.crt",
            "ssl_crl_file": "ca.crl",
            "enable_pool_hba": True,
            "pool_hba_file": "pool_hba.conf",
            "pool_passwd": "pool_passwd",
        },
        extra_files={
            "server.key": read(certificates["server_key"]),
            "server.crt": read(certificates["server"]),
            "ca.crt": read(certificates["ca"]),
            "ca.crl": read(certificates["crl"]),
            "pool_hba.conf": PROXY_HBA,
            "pool_passwd": PASSWD,
        },
    )


_PROXY = LazyProxy(_proxy)


class ClientCertificateTests(TestCase):
    def setUp(self) -> None:
        self.proxy = _PROXY.get()

    def psql(
        self, certificate: Optional[str], user: str = "app", password: str = "wrong"
    ) -> "subprocess.CompletedProcess[str]":
        """
        psql with C{sslmode=require}, presenting the certificate of role
        C{certificate} (none when L{None}).  The password is wrong unless
        given, so a login can only succeed by certificate.
        """
        environment = {"PGSSLMODE": "require"}
        if certificate is None:
            environment.update(PGSSLCERT=os.devnull + "/none", PGSSLKEY=os.devnull + "/none")
        else:
            environment.update(
                PGSSLCERT=files()[certificate], PGSSLKEY=files()[f"{certificate}_key"]
            )
        return run_psql(
            self.proxy,
            "-c",
            "SELECT current_user",
            "-c",
            "\\conninfo",
            user=user,
            password=password,
            **environment,
        )

    def refusal(self, certificate: Optional[str], user: str = "app") -> Dict[str, str]:
        """
        The ErrorResponse fields the proxy answers a startup packet for
        C{user} with, over TLS with the certificate of role C{certificate}.
        """
        context = ssl.create_default_context(cafile=files()["ca"])
        context.check_hostname = False
        if certificate is not None:
            context.load_cert_chain(files()[certificate], files()[f"{certificate}_key"])
        with socket.create_connection((self.proxy.host, self.proxy.port), timeout=5) as raw:
            raw.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
            self.assertEqual(raw.recv(1), b"S")
            with context.wrap_socket(raw) as sock:
                sock.sendall(startup_packet({"user": user, "database": "app"}))
                return read_error_fields(sock)

    def test_psql_logs_in_by_certificate(self) -> None:
        result = self.psql("app")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0], "app")
        self.assertIn("SSL connection (protocol: TLSv1.", result.stdout)

    def test_certificate_of_another_user_is_refused(self) -> None:
        result = self.psql("md5user")
        self.assertEqual(result.returncode, 2)
        self.assertIn('certificate authentication failed for user "app"', result.stderr)

    def test_certificate_of_another_user_is_refused_with_28000(self) -> None:
        fields = self.refusal("md5user")
        self.assertEqual(
            (fields["S"], fields["C"], fields["M"]),
            ("FATAL", "28000", 'certificate authentication failed for user "app"'),
        )

    def test_refusal_is_logged(self) -> None:
        self.psql("md5user")
        log = self.proxy.log_text()
        self.assertIn(f"the certificate's Common Name is {MD5_USER}", log)
        self.assertIn(
            "authentication failed for user app from 127.0.0.1: "
            'certificate authentication failed for user "app"',
            log,
        )

    def test_no_certificate_is_refused(self) -> None:
        result = self.psql(None, password="app")
        self.assertEqual(result.returncode, 2)
        self.assertIn("connection requires a valid client certificate", result.stderr)

    def test_no_certificate_is_refused_with_28000(self) -> None:
        fields = self.refusal(None)
        self.assertEqual(
            (fields["C"], fields["M"]), ("28000", "connection requires a valid client certificate")
        )

    def test_certificate_from_another_authority_fails_the_handshake(self) -> None:
        result = self.psql("stranger")
        self.assertEqual(result.returncode, 2)
        self.assertIn("unknown ca", result.stderr)
        wait_for(
            lambda: (
                "could not accept SSL connection from 127.0.0.1: "
                "certificate verify failed" in self.proxy.log_text()
            ),
            what="the handshake failure in the log",
            interval=0.05,
        )

    def test_revoked_certificate_fails_the_handshake(self) -> None:
        result = self.psql("revoked")
        self.assertEqual(result.returncode, 2)
        self.assertIn("certificate revoked", result.stderr)
        wait_for(
            lambda: (
                self.proxy.log_text().count("could not accept SSL connection from 127.0.0.1") >= 1
            ),
            what="the handshake failure in the log",
            interval=0.05,
        )

    def test_md5_user_without_certificate_still_logs_in(self) -> None:
        result = self.psql(None, user=MD5_USER, password=MD5_PASSWORD)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines()[0], MD5_USER)

    def test_md5_user_with_a_certificate_still_logs_in(self) -> None:
        result = self.psql("app", user=MD5_USER, password=MD5_PASSWORD)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines()[0], MD5_USER)

    def test_md5_user_with_a_wrong_password_is_refused(self) -> None:
        result = self.psql("md5user", user=MD5_USER, password="wrong")
        self.assertEqual(result.returncode, 2)
        self.assertIn(f'password authentication failed for user "{MD5_USER}"', result.stderr)
