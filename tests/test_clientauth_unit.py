"""
Client authentication's decisions about what a refused client is told,
with a fake conversation and no sockets: an unknown user must be told what
a wrong password is told, whatever the method and whoever checks.
"""

from __future__ import annotations

from typing import List

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from twisted_pgpool.auth.hba import HbaFile
from twisted_pgpool.auth.passwd import PoolPasswd
from twisted_pgpool.backend.protocol import BackendCredentials, CredentialResponder
from twisted_pgpool.interfaces import IClientConversation
from twisted_pgpool.proxy.clientauth import (
    PASSWORD,
    AuthResult,
    ClientAuthenticator,
    ForwardedPasswordResponder,
    RelayResponder,
    refusal_for_client,
)
from twisted_pgpool.wire import errors, messages

ROLE_MISSING = {
    "S": "FATAL",
    "V": "FATAL",
    "C": "28000",
    "M": 'role "nobody" does not exist',
    "F": "miscinit.c",
    "L": "694",
    "R": "InitializeSessionUserId",
}
NO_HBA_LINE = {
    "S": "FATAL",
    "C": "28000",
    "M": 'no pg_hba.conf entry for host "127.0.0.1", user "nobody", database "app", no encryption',
}
NO_LOGIN = {"S": "FATAL", "C": "28000", "M": 'role "nobody" is not permitted to log in'}
WRONG_PASSWORD = {
    "S": "FATAL",
    "C": "28P01",
    "F": "auth.c",
    "L": "323",
    "R": "auth_failed",
    "M": 'password authentication failed for user "nobody"',
}
NO_DATABASE = {"S": "FATAL", "C": "3D000", "M": 'database "nope" does not exist'}


def forwarded(challenged: bool) -> AuthResult:
    responder = ForwardedPasswordResponder(BackendCredentials("nobody", password="secret"))
    if challenged:
        responder.respond(messages.AUTH_CLEARTEXT_PASSWORD, b"")
    return AuthResult(PASSWORD, responder, False)


class RefusalForClientTests(SynchronousTestCase):
    """
    L{refusal_for_client}: the server's refusal of the backend login,
    passed on or replaced.
    """

    def assert_replaced(self, auth: AuthResult, fields: dict) -> None:
        error = refusal_for_client(auth, "nobody", fields)
        self.assertEqual(error, errors.password_failed("nobody"))

    def test_unknown_role_without_a_password_check_is_a_wrong_password(self) -> None:
        self.assert_replaced(forwarded(challenged=False), ROLE_MISSING)

    def test_missing_hba_line_without_a_password_check_is_a_wrong_password(self) -> None:
        self.assert_replaced(forwarded(challenged=False), NO_HBA_LINE)

    def test_the_servers_wrong_password_becomes_the_proxys_word_for_word(self) -> None:
        # Same text, but the server's carries file, line and routine.
        self.assert_replaced(forwarded(challenged=True), WRONG_PASSWORD)

    def test_after_a_password_check_the_servers_words_pass(self) -> None:
        self.assertIsNone(refusal_for_client(forwarded(challenged=True), "nobody", NO_LOGIN))

    def test_other_refusals_pass(self) -> None:
        self.assertIsNone(refusal_for_client(forwarded(challenged=False), "nobody", NO_DATABASE))

    def test_a_client_the_proxy_verified_gets_the_servers_words(self) -> None:
        verified = AuthResult(PASSWORD, CredentialResponder(BackendCredentials("nobody")), True)
        self.assertIsNone(refusal_for_client(verified, "nobody", ROLE_MISSING))

    def test_a_relayed_login_gets_the_servers_words(self) -> None:
        # The server asked the client itself, as on a direct connection.
        relayed = AuthResult("relay", RelayResponder(Conversation([])), False)
        self.assertIsNone(refusal_for_client(relayed, "nobody", ROLE_MISSING))

    def test_any_wrong_password_from_the_server_is_the_proxys_word_for_word(self) -> None:
        relayed = AuthResult("relay", RelayResponder(Conversation([])), False)
        self.assert_replaced(relayed, WRONG_PASSWORD)

    def test_no_authentication_yet_gets_the_servers_words(self) -> None:
        self.assertIsNone(refusal_for_client(None, "nobody", ROLE_MISSING))


@implementer(IClientConversation)
class Conversation:
    """
    A client that answers each password request with the next reply.
    """

    def __init__(self, replies: List[bytes]) -> None:
        self.sent: List[bytes] = []
        self.replies = list(replies)

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def receive_password_message(self) -> defer.Deferred:
        return defer.succeed(self.replies.pop(0))


class UnusableEntryTests(SynchronousTestCase):
    """
    A user whose pool_passwd entry is AES-encrypted (which the proxy cannot
    read) is asked for a password like anyone, and told what a wrong
    password is told: saying why before asking would tell the user exists.
    """

    def authenticate(self, method: str, user: str, replies: List[bytes]):
        passwd = PoolPasswd.parse("erin:AESdGhpcyBpcyBub3QgcmVhbA==\n")
        hba = HbaFile.parse(f"host all all 0.0.0.0/0 {method}\n")
        conversation = Conversation(replies)
        result = defer.ensureDeferred(
            ClientAuthenticator(passwd, hba).authenticate(conversation, user, "app", "127.0.0.1")
        )
        error = self.failureResultOf(result, errors.PgError).value
        return conversation.sent, error

    def test_md5_asks_then_refuses_as_for_an_unknown_user(self) -> None:
        sent, error = self.authenticate("md5", "erin", [b"md5" + b"0" * 32 + b"\x00"])
        self.assertEqual(error, errors.password_failed("erin"))
        self.assertEqual([m[:1] + m[5:9] for m in sent], [b"R\x00\x00\x00\x05"])

    def test_clear_text_asks_then_refuses(self) -> None:
        sent, error = self.authenticate("password", "erin", [b"guess\x00"])
        self.assertEqual(
            (sent, error),
            ([messages.authentication_cleartext_password()], errors.password_failed("erin")),
        )

    def test_scram_asks_like_for_an_unknown_user(self) -> None:
        erin, _ = self.authenticate("scram-sha-256", "erin", [b"garbage"])
        nobody, _ = self.authenticate("scram-sha-256", "nobody", [b"garbage"])
        self.assertEqual(erin, [messages.authentication_sasl(["SCRAM-SHA-256"])])
        self.assertEqual(erin, nobody)

    def test_trust_still_says_why(self) -> None:
        sent, error = self.authenticate("trust", "erin", [])
        self.assertEqual(
            (sent, error.sqlstate, error.message),
            ([], "28P01", 'unable to use the pool_passwd entry of user "erin"'),
        )
