"""
Client authentication: the proxy checks who the client is before it hands
over any backend connection.

Because pooled backend connections are shared between clients, the proxy
cannot leave authentication to PostgreSQL: it verifies the client itself
(pool_hba.conf decides the method, pool_passwd holds the secrets) and then
logs in to the backend with whatever it learned (a clear-text password, an
md5 hash, or a SCRAM ClientKey).  Only when it knows nothing about a user does
it relay the backend's own challenge to the client, which is then as safe as
a direct connection and never reused for another client.

The C{cert} method (and the C{clientcert} option of C{hostssl} records)
relies on the TLS handshake: the proxy asks clients for a certificate when
C{ssl_ca_cert}/C{ssl_ca_cert_dir} is set and the handshake fails on one
that does not verify, so a certificate that reaches this module is a
verified one and only its Common Name is left to check.  The backend login
of a certificate-authenticated client then uses the user's pool_passwd
entry, or the backend's own C{trust}, as for C{trust} clients.
"""

from __future__ import annotations

import hmac
import os
import secrets
from typing import Mapping, Optional, Tuple

import attr
from cryptography import x509
from cryptography.x509.oid import NameOID
from twisted.logger import Logger
from zope.interface import implementer

from twisted_pgpool import logs
from twisted_pgpool.auth.hba import (
    VERIFY_FULL,
    HbaFile,
    no_match_message,
    reject_message,
)
from twisted_pgpool.auth.md5 import md5_password_hash, verify_md5_response
from twisted_pgpool.auth.passwd import KIND_SCRAM, PasswdEntry, PoolPasswd
from twisted_pgpool.auth.scram import (
    ScramAuthenticationError,
    ScramError,
    ScramServer,
    mock_verifier,
    verify_plain_password,
)
from twisted_pgpool.backend.protocol import BackendCredentials, CredentialResponder
from twisted_pgpool.interfaces import IBackendAuthResponder, IClientConversation
from twisted_pgpool.wire import errors, messages

log = Logger(observer=logs.observer)

TRUST = "trust"
REJECT = "reject"
PASSWORD = "password"
MD5 = "md5"
SCRAM = "scram-sha-256"
CERT = "cert"


@attr.s(auto_attribs=True, frozen=True)
class AuthResult:
    """
    The outcome of a successful client authentication.

    @ivar method: the method the client passed (C{trust}, C{md5}...), or
        C{relay} when the backend's own challenge was relayed.
    @ivar responder: answers the backend's challenge at login.
    @ivar verified: True when the proxy itself checked the client's secret
        (or the method is trust); False for a relayed login, which only the
        backend checked and which therefore must never be reused for
        another client.
    """

    method: str
    responder: IBackendAuthResponder
    verified: bool


@implementer(IBackendAuthResponder)
class RelayResponder:
    """
    Passes the backend's authentication requests to the client and the
    client's answers back, unchanged.
    """

    def __init__(self, conversation: IClientConversation) -> None:
        self.conversation = conversation

    async def respond(self, code: int, data: bytes) -> Optional[bytes]:
        self.conversation.send(messages.authentication(code, data))
        if code == messages.AUTH_SASL_FINAL:
            return None
        payload = await self.conversation.receive_password_message()
        return messages.message(messages.PASSWORD_MESSAGE, payload)


@implementer(IBackendAuthResponder)
class ForwardedPasswordResponder(CredentialResponder):
    """
    Logs in with the clear-text password a client gave the proxy (the
    C{password} method, for a user pool_passwd does not know), which only
    the server can check; remembers whether the server asked for it.

    @ivar challenged: the server asked for a password: it checked the
        client's, and what it says afterwards is no more than a direct
        connection would be told.
    """

    challenged = False

    def respond(self, code: int, data: bytes) -> Optional[bytes]:
        self.challenged = True
        return super().respond(code, data)


def refusal_for_client(
    auth: Optional[AuthResult], user: str, fields: Mapping[str, str]
) -> Optional[errors.PgError]:
    """
    The error a client is told instead of the server's own refusal of its
    backend login, or L{None} for the server's own.

    A server's C{28P01} says what the proxy says to a wrong password, but
    with fields of its own (file, line, routine): a client comparing the
    two could tell the users the proxy checks (pool_passwd) from the
    others.  It becomes the proxy's own, field for field.

    And a client whose clear-text password the proxy passed on to the
    server to check (L{ForwardedPasswordResponder}): a server that never
    asked for it (it trusts the proxy's address, or has no pg_hba.conf line
    for the role) speaks about a role the client has proven nothing about,
    and C{role "x" does not exist} (28000) would tell an unknown user from
    a known one with a wrong password.  PostgreSQL checks the password
    first and says C{password authentication failed} to both: so does the
    proxy, for every class-28 refusal that came without a password check.
    After the server checked and accepted the password (a role that may
    not log in), its words are passed on, as on a direct connection.

    @param auth: the client's authentication (L{None} before it ended).
    @param fields: the server's ErrorResponse fields.
    """
    if auth is None:
        return None
    code = fields.get("C", "")
    unchecked = (
        isinstance(auth.responder, ForwardedPasswordResponder) and not auth.responder.challenged
    )
    if code == errors.INVALID_PASSWORD or (code.startswith("28") and unchecked):
        log.info(
            "authentication failed for user {user}: the server refused "
            "the login: {message} (SQLSTATE {code})",
            user=user,
            message=fields.get("M", ""),
            code=code,
        )
        return _auth_failed(user)
    return None


def _auth_failed(user: str) -> errors.PgError:
    return errors.password_failed(user)


def _method_failed(method: str, user: str) -> errors.PgError:
    """
    PostgreSQL's error when a client passed its method but not the
    C{clientcert=verify-full} check that follows (C{auth_failed} in
    PostgreSQL's C{auth.c}).
    """
    if method == CERT:
        return errors.fatal(
            errors.INVALID_AUTHORIZATION_SPECIFICATION,
            f'certificate authentication failed for user "{user}"',
        )
    if method == TRUST:
        return errors.fatal(
            errors.INVALID_AUTHORIZATION_SPECIFICATION,
            f'"trust" authentication failed for user "{user}"',
        )
    return _auth_failed(user)


def certificate_user_name(certificate: x509.Certificate) -> Optional[str]:
    """
    The user name a client certificate stands for: the first Common Name of
    its subject, as PostgreSQL reads it, or L{None} without one.
    """
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    value = names[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


class ClientAuthenticator:
    """
    Decides how a client must authenticate and carries the exchange out.

    @ivar enable_pool_hba: whether pool_hba.conf picks the method.
    @ivar hba: the parsed pool_hba.conf (None when disabled).
    @ivar passwd: the parsed pool_passwd.
    @ivar verifies_client_certificates: whether the TLS handshake asks
        clients for a certificate and verifies it (C{ssl_ca_cert} or
        C{ssl_ca_cert_dir} set); without it no record requiring one can be
        passed.
    """

    def __init__(
        self,
        passwd: PoolPasswd,
        hba: Optional[HbaFile],
        allow_clear_text_frontend_auth: bool = False,
        verifies_client_certificates: bool = False,
    ) -> None:
        self.passwd = passwd
        self.hba = hba
        self.allow_clear_text_frontend_auth = allow_clear_text_frontend_auth
        self.verifies_client_certificates = verifies_client_certificates
        # A per-process secret makes the fake SCRAM salts for unknown users
        # stable (like PostgreSQL's mock authentication) yet unguessable.
        self._mock_secret = secrets.token_bytes(16)

    def choose_method(self, user: str, database: str, host: Optional[str], ssl: bool) -> str:
        """
        The method this client must use, per pool_hba.conf or, without it,
        per the kind of the user's pool_passwd entry.

        @raise errors.PgError: no pool_hba.conf line matches, or it rejects.
        """
        return self._choose(user, database, host, ssl)[0]

    def _choose(
        self, user: str, database: str, host: Optional[str], ssl: bool
    ) -> Tuple[str, Optional[str]]:
        """
        The method and the C{clientcert} requirement (L{None}, C{verify-ca}
        or C{verify-full}) for this client.
        """
        if self.hba is not None:
            rule = self.hba.match(
                connection_type="local" if host is None else "host",
                ssl=ssl,
                address=host,
                database=database,
                user=user,
            )
            if rule is None:
                raise errors.fatal(
                    errors.INVALID_AUTHORIZATION_SPECIFICATION,
                    no_match_message(host, user, database, ssl),
                )
            if rule.method == REJECT:
                raise errors.fatal(
                    errors.INVALID_AUTHORIZATION_SPECIFICATION,
                    reject_message(host, user, database, ssl),
                )
            return rule.method, rule.clientcert
        entry = self.passwd.lookup(user)
        if entry is None:
            return (PASSWORD if self.allow_clear_text_frontend_auth else "relay"), None
        if entry.kind == "md5":
            return MD5, None
        return SCRAM, None

    async def authenticate(
        self,
        conversation: IClientConversation,
        user: str,
        database: str,
        host: Optional[str],
        ssl: bool = False,
        client_certificate: Optional[x509.Certificate] = None,
    ) -> AuthResult:
        """
        Authenticate one client.

        @param client_certificate: the certificate the client presented in
            the TLS handshake, which verified it; L{None} without one.
        @raise errors.PgError: authentication failed; the error is the one
            to send to the client.
        """
        method, clientcert = self._choose(user, database, host, ssl)
        if clientcert is not None:
            self._require_certificate(client_certificate)
        result = await self._authenticate(conversation, method, user)
        if clientcert == VERIFY_FULL:
            assert client_certificate is not None
            name = certificate_user_name(client_certificate)
            if name != user:
                log.info(
                    "certificate authentication failed for user {user}: "
                    "the certificate's Common Name is {name}",
                    user=user,
                    name=name if name is not None else "(none)",
                )
                raise _method_failed(method, user)
        return result

    def _require_certificate(self, certificate: Optional[x509.Certificate]) -> None:
        """
        PostgreSQL's checks before a record that requires a client
        certificate is tried.
        """
        if not self.verifies_client_certificates:
            log.warn(
                "pool_hba.conf requires a client certificate but "
                "neither ssl_ca_cert nor ssl_ca_cert_dir is set"
            )
            raise errors.fatal(
                errors.CONFIG_FILE_ERROR,
                "client certificates can only be checked if a root certificate store is available",
                hint="set ssl_ca_cert or ssl_ca_cert_dir",
            )
        if certificate is None:
            raise errors.fatal(
                errors.INVALID_AUTHORIZATION_SPECIFICATION,
                "connection requires a valid client certificate",
            )

    async def _authenticate(
        self, conversation: IClientConversation, method: str, user: str
    ) -> AuthResult:
        entry = self.passwd.lookup(user)
        if entry is not None and entry.kind == "aes":
            log.warn(
                "the pool_passwd entry of user {user} is AES-encrypted, "
                "which is not supported: the user cannot log in; store the "
                "password as a TEXT or SCRAM entry instead",
                user=user,
            )
            if method not in (PASSWORD, MD5, SCRAM):
                raise errors.fatal(
                    errors.INVALID_PASSWORD,
                    f'unable to use the pool_passwd entry of user "{user}"',
                    detail="AES-encrypted pool_passwd entries are not supported",
                    hint="store the password as a TEXT or SCRAM entry instead",
                )
            # Saying so before asking for a password would tell that the
            # user exists: ask, as for a user pool_passwd does not know,
            # and fail as a wrong password does.
            if method == PASSWORD:
                await self._clear_text(conversation, user, None)
            elif method == MD5:
                await self._md5(conversation, user, None)
            else:
                await self._scram(conversation, user, None)
            raise _auth_failed(user)
        if method == MD5 and entry is not None and entry.kind == KIND_SCRAM:
            # As PostgreSQL does: md5 in pool_hba.conf with a SCRAM verifier
            # stored for the user means SCRAM (an md5 answer could not be
            # checked against a verifier).
            method = SCRAM
        if method == "relay":
            return AuthResult("relay", RelayResponder(conversation), False)
        if method in (TRUST, CERT):
            # The certificate's name is checked by the caller; the backend
            # login is the same as trust's.
            if entry is None:
                return AuthResult(method, RelayResponder(conversation), True)
            return AuthResult(method, _responder_for_entry(entry), True)
        if method == PASSWORD:
            password = await self._clear_text(conversation, user, entry)
            if entry is None:
                return AuthResult(
                    PASSWORD,
                    ForwardedPasswordResponder(BackendCredentials(user, password=password)),
                    False,
                )
            return AuthResult(
                PASSWORD, CredentialResponder(BackendCredentials(user, password=password)), True
            )
        if method == MD5:
            await self._md5(conversation, user, entry)
            assert entry is not None
            return AuthResult(MD5, _responder_for_entry(entry), True)
        if method == SCRAM:
            server = await self._scram(conversation, user, entry)
            assert entry is not None
            if entry.plaintext is not None:
                return AuthResult(SCRAM, _responder_for_entry(entry), True)
            verifier = entry.scram_verifier
            return AuthResult(
                SCRAM,
                CredentialResponder(
                    BackendCredentials(
                        user, scram_client_key=server.client_key, scram_verifier=verifier
                    )
                ),
                True,
            )
        raise errors.fatal(
            errors.INVALID_AUTHORIZATION_SPECIFICATION,
            f'authentication method "{method}" is not supported',
        )

    async def _clear_text(
        self, conversation: IClientConversation, user: str, entry: Optional[PasswdEntry]
    ) -> str:
        conversation.send(messages.authentication_cleartext_password())
        payload = await conversation.receive_password_message()
        try:
            password = messages.decode_password(payload).decode("utf-8")
        except (messages.MessageFormatError, UnicodeDecodeError):
            raise errors.fatal(errors.PROTOCOL_VIOLATION, "invalid password packet")
        if entry is not None and not _password_matches(entry, user, password):
            raise _auth_failed(user)
        return password

    async def _md5(
        self, conversation: IClientConversation, user: str, entry: Optional[PasswdEntry]
    ) -> None:
        salt = os.urandom(4)
        conversation.send(messages.authentication_md5_password(salt))
        payload = await conversation.receive_password_message()
        stored = entry.md5_hash if entry is not None else None
        try:
            response = messages.decode_password(payload)
        except messages.MessageFormatError:
            raise errors.fatal(errors.PROTOCOL_VIOLATION, "invalid password packet")
        if stored is None or not verify_md5_response(stored, salt, response):
            raise _auth_failed(user)

    async def _scram(
        self, conversation: IClientConversation, user: str, entry: Optional[PasswdEntry]
    ) -> ScramServer:
        verifier = entry.scram_verifier if entry is not None else None
        known = verifier is not None
        if verifier is None:
            # Go through a whole exchange against a verifier nobody knows the
            # password of, so an unknown user fails exactly like a wrong
            # password does.
            verifier = mock_verifier(user, self._mock_secret)
        server = ScramServer(verifier)
        conversation.send(messages.authentication_sasl(["SCRAM-SHA-256"]))
        payload = await conversation.receive_password_message()
        try:
            initial = messages.decode_sasl_initial_response(payload)
        except messages.MessageFormatError:
            raise errors.fatal(errors.PROTOCOL_VIOLATION, "malformed SASL initial response")
        if initial.mechanism != "SCRAM-SHA-256":
            raise errors.fatal(
                errors.PROTOCOL_VIOLATION,
                "client selected an invalid SASL authentication mechanism",
            )
        try:
            server_first = server.handle_client_first(initial.data or b"")
            conversation.send(messages.authentication_sasl_continue(server_first))
            payload = await conversation.receive_password_message()
            server_final = server.handle_client_final(payload)
        except ScramAuthenticationError:
            raise _auth_failed(user)
        except ScramError as e:
            raise errors.fatal(errors.PROTOCOL_VIOLATION, f"malformed SCRAM message: {e}")
        if not known:
            raise _auth_failed(user)
        conversation.send(messages.authentication_sasl_final(server_final))
        return server


def _password_matches(entry: PasswdEntry, user: str, password: str) -> bool:
    if entry.plaintext is not None:
        return hmac.compare_digest(entry.plaintext.encode("utf-8"), password.encode("utf-8"))
    if entry.kind == "md5" and entry.md5_hash is not None:
        return hmac.compare_digest(entry.md5_hash, md5_password_hash(password, user))
    verifier = entry.scram_verifier
    if verifier is not None:
        return verify_plain_password(verifier, password)
    return False


def _responder_for_entry(entry: PasswdEntry) -> CredentialResponder:
    """
    Credentials for the backend from a pool_passwd entry alone (trust and
    md5 clients, and SCRAM clients whose entry holds the clear text).
    """
    return CredentialResponder(
        BackendCredentials(entry.user, password=entry.plaintext, md5_hash=entry.md5_hash)
    )
