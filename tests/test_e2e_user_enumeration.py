"""
End-to-end: a client cannot tell an unknown user from a known one by the
error it gets.  For every authentication method the proxy offers, an
unknown user and a wrong password get the same ErrorResponse: the same
fields, FATAL 28P01 C{password authentication failed for user "..."}, as
PostgreSQL answers both.

The hard case is the C{password} method for a user pool_passwd does not
know: the proxy passes the client's clear-text password on for the server
to check, and a server that trusts the proxy checks nothing and answers an
unknown user with C{role "..." does not exist}.  Here the proxy reaches the
server over its Unix socket, which the test cluster trusts for every role.

Three real clients (pg8000, psycopg, asyncpg) each compare what they are
told.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Optional, Tuple

from twisted.trial.unittest import TestCase

from tests.support import LazyProxy, ProxyProcess, cluster_or_skip
from twisted_pgpool.testing.localcluster import MD5_USER, LocalCluster

try:
    import pg8000.native
except ImportError:  # pragma: no cover
    pg8000 = None  # type: ignore[assignment]
try:
    import psycopg
except ImportError:  # pragma: no cover - e.g. PyPy
    psycopg = None  # type: ignore[assignment]
try:
    import asyncpg
except ImportError:  # pragma: no cover
    asyncpg = None  # type: ignore[assignment]

UNKNOWN = "no_such_user"
#: pool_passwd: app (TEXT), and erin, whose AES entry the proxy cannot use.
POOL_PASSWD = "app:TEXTapp\nerin:AESdGhpcyBpcyBub3QgcmVhbA==\n"


def _proxy(method: Optional[str], over_socket: bool = False):
    """
    A proxy in front of the shared primary whose pool_hba.conf gives every
    client C{method} (L{None}: no pool_hba.conf, the entry's kind decides
    and unknown users get the server's own challenge).
    """

    def make(cluster: LocalCluster) -> ProxyProcess:
        backends = cluster.backends_config()[:1]
        if over_socket:
            # "local all all trust": the server checks no password.
            backends[0]["hostname"] = cluster.socket_directory
        config = {"backends": backends, "pool_passwd": "pool_passwd"}
        files = {"pool_passwd": POOL_PASSWD}
        if method is not None:
            config.update(enable_pool_hba=True, pool_hba_file="pool_hba.conf")
            files["pool_hba.conf"] = f"host all all 127.0.0.1/32 {method}\n"
        return ProxyProcess(config, extra_files=files)

    return LazyProxy(make)


class EnumerationTestCase(TestCase):
    """
    Subclasses name the proxy; each test compares the refusal of an unknown
    user with that of a known user's wrong password, through each client.
    """

    lazy_proxy: LazyProxy

    def setUp(self) -> None:
        cluster_or_skip()
        self.proxy = self.lazy_proxy.get()

    # -- what each client is told, with the user's name taken out ---------------

    def pg8000_refusal(self, user: str, password: str) -> Dict[str, str]:
        if pg8000 is None:
            self.skipTest("pg8000 is not installed")
        with self.assertRaises(pg8000.native.DatabaseError) as caught:
            pg8000.native.Connection(
                user=user,
                password=password,
                host=self.proxy.host,
                port=self.proxy.port,
                database="app",
                timeout=10,
            )
        fields = dict(caught.exception.args[0])
        return {code: text.replace(f'"{user}"', '"USER"') for code, text in fields.items()}

    def psycopg_refusal(self, user: str, password: str) -> str:
        if psycopg is None:
            self.skipTest("psycopg is not installed")
        with self.assertRaises(psycopg.OperationalError) as caught:
            psycopg.connect(self.proxy.dsn(user=user, password=password), connect_timeout=10)
        return str(caught.exception).replace(f'"{user}"', '"USER"')

    def asyncpg_refusal(self, user: str, password: str) -> Tuple[str, str, str]:
        if asyncpg is None:
            self.skipTest("asyncpg is not installed")

        async def connect() -> Any:
            return await asyncpg.connect(
                host=self.proxy.host,
                port=self.proxy.port,
                user=user,
                password=password,
                database="app",
                timeout=10,
            )

        with self.assertRaises(asyncpg.PostgresError) as caught:
            asyncio.run(connect())
        error = caught.exception
        return (type(error).__name__, error.sqlstate, error.args[0].replace(f'"{user}"', '"USER"'))

    def assert_same_refusal(self, known: str) -> None:
        """
        C{known} with a wrong password and an unknown user are told the
        same, word for word, by every client.
        """
        expected = {
            "S": "FATAL",
            "V": "FATAL",
            "C": "28P01",
            "M": 'password authentication failed for user "USER"',
        }
        self.assertEqual(self.pg8000_refusal(known, "wrong"), expected)
        self.assertEqual(self.pg8000_refusal(UNKNOWN, "wrong"), expected)
        self.assertEqual(
            self.psycopg_refusal(UNKNOWN, "wrong"), self.psycopg_refusal(known, "wrong")
        )
        self.assertEqual(
            self.asyncpg_refusal(UNKNOWN, "wrong"), self.asyncpg_refusal(known, "wrong")
        )
        self.assertEqual(
            self.asyncpg_refusal(UNKNOWN, "wrong"),
            ("InvalidPasswordError", "28P01", 'password authentication failed for user "USER"'),
        )


class ClearTextToATrustingServerTests(EnumerationTestCase):
    """
    C{password}, and the server trusts the proxy: it would say
    C{role "no_such_user" does not exist}.
    """

    lazy_proxy = _proxy("password", over_socket=True)

    def test_unknown_user_is_told_what_a_wrong_password_is_told(self) -> None:
        self.assert_same_refusal("app")

    def test_the_right_password_still_logs_in(self) -> None:
        conn = pg8000.native.Connection(
            user="app",
            password="app",
            host=self.proxy.host,
            port=self.proxy.port,
            database="app",
            timeout=10,
        )
        self.addCleanup(conn.close)
        self.assertEqual(conn.run("SELECT current_user"), [["app"]])

    def test_an_unknown_database_of_a_known_user_is_still_named(self) -> None:
        # The password was checked (pool_passwd): the server's words pass.
        fields = self.pg8000_refusal_for_database()
        self.assertEqual(
            (fields["C"], fields["M"]), ("3D000", 'database "no_such_database" does not exist')
        )

    def pg8000_refusal_for_database(self) -> Dict[str, str]:
        with self.assertRaises(pg8000.native.DatabaseError) as caught:
            pg8000.native.Connection(
                user="app",
                password="app",
                host=self.proxy.host,
                port=self.proxy.port,
                database="no_such_database",
                timeout=10,
            )
        return dict(caught.exception.args[0])


class ClearTextToACheckingServerTests(EnumerationTestCase):
    """
    C{password}, and the server checks the password itself (SCRAM, md5):
    its refusals already read the same, and must also carry the same
    fields as the proxy's own.
    """

    lazy_proxy = _proxy("password")

    def test_unknown_user_is_told_what_a_wrong_password_is_told(self) -> None:
        self.assert_same_refusal("app")

    def test_a_user_the_server_checks_is_told_the_same(self) -> None:
        # md5user is not in pool_passwd: the server checks its password.
        self.assert_same_refusal(MD5_USER)


class Md5Tests(EnumerationTestCase):
    lazy_proxy = _proxy("md5")

    def test_unknown_user_is_told_what_a_wrong_password_is_told(self) -> None:
        # pool_passwd's TEXT entry serves md5 as well.
        self.assert_same_refusal("app")

    def test_a_user_with_an_unusable_entry_is_told_the_same(self) -> None:
        self.assert_same_refusal("erin")


class ScramTests(EnumerationTestCase):
    lazy_proxy = _proxy("scram-sha-256")

    def test_unknown_user_is_told_what_a_wrong_password_is_told(self) -> None:
        self.assert_same_refusal("app")

    def test_a_user_with_an_unusable_entry_is_told_the_same(self) -> None:
        # erin's AES entry: the proxy used to say so before asking for a
        # password, telling that erin is a user.
        self.assert_same_refusal("erin")


class WithoutPoolHbaTests(EnumerationTestCase):
    """
    No pool_hba.conf: app (in pool_passwd) is checked by the proxy with
    SCRAM, an unknown user by the server, whose SCRAM challenge is relayed.
    """

    lazy_proxy = _proxy(None)

    def test_unknown_user_is_told_what_a_wrong_password_is_told(self) -> None:
        # The server's 28P01 carries its own fields (file, line, routine).
        self.assert_same_refusal("app")
