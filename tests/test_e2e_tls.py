"""
End-to-end tests of TLS (C{ssl: on}) with real PostgreSQL servers, psql and
psycopg.

Two kinds of backend are used:

  - a one-node cluster of this module with TLS on and a C{pg_hba.conf} that
    admits TCP connections only over TLS (C{hostssl}), so every connection
    the proxy makes to it (sessions, health checks, the replication check,
    the primary search) must be encrypted or it fails.  Its certificate is
    signed by a test authority the proxy is told about (C{ssl_ca_cert});
  - the suite's shared cluster, which has TLS off, to see the proxy go on in
    plain text when a backend answers the SSLRequest with C{N}.

The cluster and each proxy are started once, on first use, and stopped when
the test process exits.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
from typing import Dict, Optional

from twisted.trial.unittest import TestCase

from tests.rawclient import RawClient
from tests.support import (
    KEEP_ENV,
    LazyProxy,
    ProxyProcess,
    ProxyProcessError,
    cluster_or_skip,
    postgres_or_skip,
    run_psql,
    write_certificate,
)
from tests.wire import error_fields, startup_packet
from twisted_pgpool.testing.localcluster import (
    MD5_PASSWORD,
    MD5_USER,
    LocalCluster,
)
from twisted_pgpool.testing.waiting import wait_for

try:
    import psycopg
except ImportError:  # pragma: no cover
    psycopg = None  # type: ignore[assignment]

HEALTH_CHECK_PERIOD = 0.3

#: The TLS cluster's pg_hba.conf: over TCP, TLS or nothing.
BACKEND_HBA = """\
local all all trust
hostssl all postgres 127.0.0.1/32 trust
hostssl all md5user 127.0.0.1/32 md5
hostssl all all 127.0.0.1/32 scram-sha-256
"""

#: The proxy's pool_hba.conf: app only over TLS, md5user either way.
PROXY_HBA = """\
hostssl all app 127.0.0.1/32 scram-sha-256
host all md5user 127.0.0.1/32 md5
"""

PASSWD = f"app:TEXTapp\n{MD5_USER}:TEXT{MD5_PASSWORD}\n"


# -- certificates and the TLS cluster ---------------------------------------------


_certificates: Optional[Dict[str, str]] = None


def certificates() -> Dict[str, str]:
    """
    A test authority, a server certificate it signed (for C{localhost}),
    and another authority that signed nothing: file names by role.
    """
    global _certificates
    if _certificates is None:
        directory = tempfile.mkdtemp(prefix="twisted_pgpool-tls-")
        if not os.environ.get(KEEP_ENV):
            atexit.register(shutil.rmtree, directory, True)
        ca_cert, ca_key = write_certificate(directory, "ca", "twisted_pgpool test CA", is_ca=True)
        cert, key = write_certificate(directory, "server", "localhost", issuer=(ca_cert, ca_key))
        other_ca, _ = write_certificate(directory, "other-ca", "another CA", is_ca=True)
        _certificates = {"ca": ca_cert, "cert": cert, "key": key, "other_ca": other_ca}
    return _certificates


_tls_cluster: Optional[LocalCluster] = None


def tls_cluster() -> LocalCluster:
    """
    This module's one-node cluster with TLS on and hostssl-only TCP access.
    """
    global _tls_cluster
    if _tls_cluster is None:
        postgres_or_skip()
        files = certificates()
        cluster = LocalCluster(
            with_standby=False, ssl_files=(files["cert"], files["key"]), pg_hba_conf=BACKEND_HBA
        )
        cluster.start()
        atexit.register(cluster.stop)
        _tls_cluster = cluster
    return _tls_cluster


def read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def tls_proxy_files(**extra: str) -> Dict[str, str]:
    """
    The proxy's key and certificate at their default names (C{server.key},
    C{server.crt}, next to C{conf.yaml}), and C{extra} files.
    """
    files = certificates()
    result = {"server.key": read(files["key"]), "server.crt": read(files["cert"])}
    result.update(extra)
    return result


def _verifying_proxy(_: LocalCluster) -> ProxyProcess:
    cluster = tls_cluster()
    return ProxyProcess(
        {
            "backends": cluster.backends_config(),
            "ssl": True,
            "ssl_ca_cert": "ca.crt",
            "enable_pool_hba": True,
            "pool_hba_file": "pool_hba.conf",
            "pool_passwd": "pool_passwd",
            "health_check_period": f"{HEALTH_CHECK_PERIOD}s",
            "health_check_user": "postgres",
            "health_check_timeout": 5,
            "sr_check_period": f"{HEALTH_CHECK_PERIOD}s",
            "sr_check_user": "postgres",
        },
        extra_files=tls_proxy_files(
            **{
                "ca.crt": read(certificates()["ca"]),
                "pool_hba.conf": PROXY_HBA,
                "pool_passwd": PASSWD,
            }
        ),
    )


def _plaintext_backend_proxy(cluster: LocalCluster) -> ProxyProcess:
    return ProxyProcess(
        {"backends": cluster.backends_config()[:1], "ssl": True, "pool_passwd": "pool_passwd"},
        extra_files=tls_proxy_files(pool_passwd="app:TEXTapp\n"),
    )


_VERIFYING_PROXY = LazyProxy(_verifying_proxy)
_PLAINTEXT_BACKEND_PROXY = LazyProxy(_plaintext_backend_proxy)


def read_error_fields(sock: socket.socket) -> Dict[str, str]:
    """
    Read one ErrorResponse and return its fields by code letter.
    """
    message_type, payload = RawClient(sock, terminate_on_close=False).read_message()
    assert message_type == ord("E"), (message_type, payload)
    return error_fields(payload)


class TLSTestCase(TestCase):
    skip = None if psycopg is not None else "psycopg is not installed"
    lazy_proxy = _VERIFYING_PROXY

    def setUp(self) -> None:
        self.proxy = self.lazy_proxy.get()

    def connect(
        self, user: str = "app", password: str = "app", **params: object
    ) -> "psycopg.Connection":
        conn = psycopg.connect(
            self.proxy.dsn(user=user, password=password, connect_timeout=5, **params),
            autocommit=True,
        )
        self.addCleanup(conn.close)
        return conn

    def backend_ssl(self, conn: "psycopg.Connection") -> bool:
        """
        Whether the server sees the session's connection (the proxy's) as TLS.
        """
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row is not None
        return bool(row[0])

    def psql(
        self, *args: str, sslmode: str, user: str = "app", password: str = "app"
    ) -> subprocess.CompletedProcess:
        return run_psql(self.proxy, *args, user=user, password=password, PGSSLMODE=sslmode)


# -- both sides encrypted -------------------------------------------------------------


class EncryptedBothSidesTests(TLSTestCase):
    def test_psycopg_sslmode_require_is_encrypted_to_the_proxy(self) -> None:
        conn = self.connect(sslmode="require")
        self.assertTrue(conn.pgconn.ssl_in_use)

    def test_backend_sees_the_proxy_connection_as_tls(self) -> None:
        conn = self.connect(sslmode="require")
        self.assertTrue(self.backend_ssl(conn))

    def test_psql_sslmode_require(self) -> None:
        result = self.psql("-c", "SELECT 6 * 7", "-c", "\\conninfo", sslmode="require")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0], "42")
        self.assertIn("SSL connection (protocol: TLSv1.", result.stdout)

    def test_many_rows_over_tls(self) -> None:
        conn = self.connect(sslmode="require")
        rows = conn.execute(
            "SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g"
        ).fetchall()
        self.assertEqual((len(rows), rows[-1][0]), (20000, 20000))

    def test_pooled_connection_is_reused_over_tls(self) -> None:
        first = self.connect(sslmode="require")
        pid = first.execute("SELECT pg_backend_pid()").fetchone()
        first.close()
        # The reset runs after the close; a pooled connection may take a
        # moment to come back.
        wait_for(
            lambda: (
                self.connect(sslmode="require").execute("SELECT pg_backend_pid()").fetchone() == pid
            ),
            what="the pooled connection",
            interval=0.05,
        )

    def test_plaintext_client_is_still_served_where_hba_allows(self) -> None:
        conn = self.connect(user=MD5_USER, password=MD5_PASSWORD, sslmode="disable")
        self.assertEqual((conn.pgconn.ssl_in_use, self.backend_ssl(conn)), (False, True))

    def test_hostssl_line_rejects_a_plaintext_client_with_28000(self) -> None:
        # libpq does not show the SQLSTATE of a refused connection: read the
        # ErrorResponse off the wire.
        with socket.create_connection((self.proxy.host, self.proxy.port), timeout=5) as sock:
            sock.sendall(startup_packet({"user": "app", "database": "app"}))
            fields = read_error_fields(sock)
        self.assertEqual(
            (fields["S"], fields["C"], fields["M"]),
            (
                "FATAL",
                "28000",
                'no pool_hba.conf entry for host "127.0.0.1", '
                'user "app", database "app", no encryption',
            ),
        )

    def test_hostssl_line_rejects_psql_with_sslmode_disable(self) -> None:
        result = self.psql("-c", "SELECT 1", sslmode="disable")
        self.assertEqual(result.returncode, 2)
        self.assertIn("no pool_hba.conf entry", result.stderr)

    def test_health_and_replication_checks_use_tls(self) -> None:
        """
        The backend admits TCP only over TLS, so checks made in plain text
        would fail (and say so in the log).
        """
        conn = self.connect(sslmode="require")

        def stats() -> Dict[str, str]:
            cursor = conn.execute("SHOW POOL_HEALTH_CHECK_STATS")
            columns = [column.name for column in cursor.description or ()]
            return dict(zip(columns, cursor.fetchone() or ()))

        wait_for(
            lambda: int(stats()["success_count"]) >= 2, what="two health checks", interval=0.05
        )
        self.assertEqual(stats()["fail_count"], "0")
        log = self.proxy.log_text()
        self.assertNotIn("no encryption", log)
        self.assertNotIn("could not log in", log)
        self.assertNotIn("failed for node", log)


class PlaintextBackendTests(TLSTestCase):
    """
    A backend with TLS off answers the proxy's SSLRequest with C{N}: the
    proxy goes on in plain text, as Pgpool-II does.
    """

    lazy_proxy = _PLAINTEXT_BACKEND_PROXY

    def test_client_is_encrypted_and_backend_is_not(self) -> None:
        conn = self.connect(sslmode="require")
        self.assertEqual((conn.pgconn.ssl_in_use, self.backend_ssl(conn)), (True, False))

    def test_plaintext_client_without_hba(self) -> None:
        conn = self.connect(sslmode="disable")
        self.assertEqual(conn.execute("SELECT 1").fetchone(), (1,))


class BackendVerificationTests(TestCase):
    skip = None if psycopg is not None else "psycopg is not installed"

    def test_backend_certificate_from_another_authority_is_refused(self) -> None:
        cluster = tls_cluster()
        proxy = ProxyProcess(
            {
                "backends": cluster.backends_config(),
                "ssl": True,
                "ssl_ca_cert": "other-ca.crt",
                "pool_passwd": "pool_passwd",
            },
            extra_files=tls_proxy_files(
                **{"other-ca.crt": read(certificates()["other_ca"]), "pool_passwd": "app:TEXTapp\n"}
            ),
        )
        proxy.start()
        self.addCleanup(proxy.stop)
        # trustuser has no pool_passwd entry: only the server could
        # authenticate it, and the proxy will not talk to that server.
        with self.assertRaises(psycopg.OperationalError) as caught:
            psycopg.connect(
                proxy.dsn(user="trustuser", sslmode="require", connect_timeout=5)
            ).close()
        self.assertIn("unable to connect to the PostgreSQL server", str(caught.exception))
        wait_for(
            lambda: "certificate verify failed" in proxy.log_text(),
            what="the verification failure in the log",
            interval=0.05,
        )
        # app is authenticated by the proxy itself: with no node it can
        # use, its session answers the proxy's own statements only, and
        # nothing reaches a server (docs/failover.md, "Without any node").
        with psycopg.connect(
            proxy.dsn(sslmode="require", connect_timeout=5), autocommit=True
        ) as conn:
            self.assertEqual({row[3] for row in conn.execute("SHOW POOL_NODES")}, {"waiting"})
            with self.assertRaises(psycopg.errors.CannotConnectNow):
                conn.execute("SELECT 1")


class ConfigurationTests(TestCase):
    def test_ssl_on_with_a_missing_key_file_stops_the_start(self) -> None:
        cluster = cluster_or_skip()
        proxy = ProxyProcess(
            {"backends": cluster.backends_config(), "ssl": True, "ssl_key": "missing.key"},
            extra_files={"server.crt": read(certificates()["cert"])},
            start_timeout=10,
        )
        with self.assertRaises(ProxyProcessError) as caught:
            proxy.start()
        message = str(caught.exception)
        self.assertIn("conf.yaml:", message)
        self.assertIn("ssl_key: cannot read", message)
        self.assertIn("missing.key", message)
