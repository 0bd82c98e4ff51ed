"""
SCRAM-SHA-256 (RFC 5802, RFC 7677) the way PostgreSQL speaks it.

The proxy plays both roles: L{ScramServer} authenticates a client against a
stored L{ScramVerifier}, and L{ScramClient} logs in to a backend.  PostgreSQL's
dialect differs from the bare RFC in a few ways that matter here:

  - the user name in the client-first-message is ignored (libpq sends an
    empty one); the role comes from the startup packet;
  - channel binding (C{SCRAM-SHA-256-PLUS}) is not offered by this proxy, so
    only the gs2 flags C{n} and C{y} are accepted and C{p=} is refused;
  - authorization identities (C{a=}) and mandatory extensions (C{m=}) are
    refused, as PostgreSQL refuses them;
  - errors are reported with an ErrorResponse, never a server-final
    C{e=} attribute, so the server side raises L{ScramError} and lets the
    caller build the ErrorResponse.

A successful exchange lets the server recover the client's ClientKey
(ClientProof XOR ClientSignature).  Together with the verifier's ServerKey that
is enough to run the client side against a backend whose verifier has the same
salt and iteration count, without ever knowing the password; PgBouncer uses the
same trick.

Passwords are normalised with SASLprep (RFC 4013) as PostgreSQL does it:
ASCII passwords are used as they are; other passwords are mapped, NFKC
normalised and checked for prohibited characters, and when that fails (or the
password is not valid UTF-8) the raw bytes are used instead.  The prohibition
tables come from Python's C{stringprep} module (Unicode 3.2, the version
RFC 3454 fixes) and NFKC from C{unicodedata}; PostgreSQL ships its own copy of
both, so a password using characters assigned after the Python release's
Unicode version may normalise differently from the server's.  ASCII passwords,
the overwhelming majority, are unaffected.

Pure computation: no sockets, no reactor.  Note that deriving keys from a
password runs PBKDF2 (4096 rounds of HMAC-SHA-256 by default, a few
milliseconds), so callers should cache verifiers rather than derive them per
login.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import string
import stringprep
import unicodedata
from typing import List, Optional, Tuple, Union

import attr

__all__ = [
    "SCRAM_SHA_256",
    "DEFAULT_ITERATIONS",
    "ScramError",
    "ScramAuthenticationError",
    "ScramVerifier",
    "parse_verifier",
    "format_verifier",
    "make_verifier",
    "mock_verifier",
    "verify_plain_password",
    "prepare_password",
    "ScramServer",
    "ScramClient",
]

SCRAM_SHA_256 = "SCRAM-SHA-256"
"""
The SASL mechanism name, as listed in AuthenticationSASL and echoed in
SASLInitialResponse.
"""

DEFAULT_ITERATIONS = 4096
"""
PBKDF2 iteration count PostgreSQL uses by default (C{scram_iterations}).
"""

SALT_LENGTH = 16
"""
Length of a freshly generated salt, as PostgreSQL generates them.
"""

_RAW_NONCE_LENGTH = 18
_KEY_LENGTH = hashlib.sha256().digest_size
_VERIFIER_PREFIX = SCRAM_SHA_256 + "$"

# The cbind-input for a session without channel binding is the gs2 header
# itself, base64-encoded: "n,," -> "biws", "y,," -> "eSws".
_GS2_HEADERS = {"n": "n,,", "y": "y,,"}


class ScramError(ValueError):
    """
    A SCRAM exchange could not go on: a malformed or out-of-order message,
    an unsupported feature, or a failed proof.

    PostgreSQL reports malformed messages as a protocol violation (SQLSTATE
    08P01); the subclass L{ScramAuthenticationError} marks the cases that are
    a wrong password instead.
    """


class ScramAuthenticationError(ScramError):
    """
    The peer's proof was well formed but wrong: the client does not know the
    password (server side), or the server does not hold the verifier it
    claims (client side).  PostgreSQL reports the former as
    C{password authentication failed} (SQLSTATE 28P01).
    """


def _check_key(instance: object, attribute: "attr.Attribute[bytes]", value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != _KEY_LENGTH:
        raise ValueError(f"{attribute.name} must be {_KEY_LENGTH} bytes")


def _check_iterations(instance: object, attribute: "attr.Attribute[int]", value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("iterations must be a positive integer")


def _check_salt(instance: object, attribute: "attr.Attribute[bytes]", value: bytes) -> None:
    if not isinstance(value, bytes) or not value:
        raise ValueError("salt must be non-empty bytes")


@attr.frozen
class ScramVerifier:
    """
    What a server stores to check SCRAM-SHA-256 logins, instead of the
    password.

    The keys are left out of C{repr} so a verifier that ends up in a log does
    not leak them.

    @ivar iterations: PBKDF2 iteration count.
    @ivar salt: PBKDF2 salt.
    @ivar stored_key: C{H(ClientKey)}; checks client proofs.
    @ivar server_key: C{HMAC(SaltedPassword, "Server Key")}; signs the
        server-final-message.
    """

    iterations: int = attr.field(validator=_check_iterations)
    salt: bytes = attr.field(validator=_check_salt)
    stored_key: bytes = attr.field(validator=_check_key, repr=False)
    server_key: bytes = attr.field(validator=_check_key, repr=False)


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode_or_none(text: str) -> Optional[bytes]:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError):
        return None


def _b64decode(text: str, what: str) -> bytes:
    decoded = _b64decode_or_none(text)
    if decoded is None:
        raise ScramError(f"malformed SCRAM message: invalid base64 in {what}")
    return decoded


def parse_verifier(text: str) -> ScramVerifier:
    """
    Parse PostgreSQL's text form of a SCRAM-SHA-256 secret.

    The form is C{SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>}
    with base64 salt and keys, as found in C{pg_authid.rolpassword} and in
    pool_passwd.

    @param text: The secret as text.
    @return: The parsed verifier.
    @raise ScramError: If C{text} is not a well-formed SCRAM-SHA-256 secret.
    """
    if not text.startswith(_VERIFIER_PREFIX):
        raise ScramError("not a SCRAM-SHA-256 secret")
    parts = text[len(_VERIFIER_PREFIX) :].split("$")
    if len(parts) != 2:
        raise ScramError("malformed SCRAM-SHA-256 secret: expected two '$' sections")
    iterations_and_salt = parts[0].split(":")
    keys = parts[1].split(":")
    if len(iterations_and_salt) != 2 or len(keys) != 2:
        raise ScramError("malformed SCRAM-SHA-256 secret: expected 'a:b' sections")
    iterations_text, salt_text = iterations_and_salt
    if not (iterations_text.isascii() and iterations_text.isdigit()):
        raise ScramError("malformed SCRAM-SHA-256 secret: bad iteration count")
    decoded = {}
    for name, field in (("salt", salt_text), ("StoredKey", keys[0]), ("ServerKey", keys[1])):
        value = _b64decode_or_none(field)
        if value is None:
            raise ScramError(f"malformed SCRAM-SHA-256 secret: invalid base64 in {name}")
        decoded[name] = value
    try:
        return ScramVerifier(
            iterations=int(iterations_text),
            salt=decoded["salt"],
            stored_key=decoded["StoredKey"],
            server_key=decoded["ServerKey"],
        )
    except ValueError as e:
        raise ScramError(f"malformed SCRAM-SHA-256 secret: {e}") from None


def format_verifier(verifier: ScramVerifier) -> str:
    """
    Render a verifier in PostgreSQL's text form, the inverse of
    L{parse_verifier}.

    @param verifier: The verifier.
    @return: C{SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>}.
    """
    return (
        f"{_VERIFIER_PREFIX}{verifier.iterations}:{_b64encode(verifier.salt)}"
        f"${_b64encode(verifier.stored_key)}:{_b64encode(verifier.server_key)}"
    )


def _map_character(ch: str) -> str:
    # RFC 4013 section 2.1: non-ASCII spaces become SPACE, and the
    # "commonly mapped to nothing" characters are removed.
    if stringprep.in_table_c12(ch):
        return " "
    if stringprep.in_table_b1(ch):
        return ""
    return ch


def _is_prohibited(ch: str) -> bool:
    # RFC 4013 section 2.3 (the C.1.2 non-ASCII spaces were mapped already),
    # plus unassigned code points, which PostgreSQL also refuses.
    return (
        stringprep.in_table_c12(ch)
        or stringprep.in_table_c21_c22(ch)
        or stringprep.in_table_c3(ch)
        or stringprep.in_table_c4(ch)
        or stringprep.in_table_c5(ch)
        or stringprep.in_table_c6(ch)
        or stringprep.in_table_c7(ch)
        or stringprep.in_table_c8(ch)
        or stringprep.in_table_c9(ch)
        or stringprep.in_table_a1(ch)
    )


def _saslprep(text: str) -> Optional[str]:
    """
    SASLprep C{text}, or return C{None} where PostgreSQL would fall back to
    the raw password.

    Like PostgreSQL, the prohibition and bidi checks look at the mapped
    characters before normalisation.
    """
    if text.isascii():
        return text
    mapped = "".join(_map_character(ch) for ch in text)
    if not mapped:
        return None
    if any(_is_prohibited(ch) for ch in mapped):
        return None
    if any(stringprep.in_table_d1(ch) for ch in mapped):
        if any(stringprep.in_table_d2(ch) for ch in mapped):
            return None
        if not (stringprep.in_table_d1(mapped[0]) and stringprep.in_table_d1(mapped[-1])):
            return None
    return unicodedata.normalize("NFKC", mapped)


def prepare_password(password: Union[str, bytes]) -> bytes:
    """
    Turn a password into the bytes PBKDF2 is fed, as PostgreSQL does.

    @param password: The password.  Bytes (as received on the wire) are
        decoded as UTF-8; a C{str} holding lone surrogates (from a
        C{surrogateescape} decode of non-UTF-8 input) stands for raw bytes.
    @return: The SASLprep'd password in UTF-8, or the raw bytes when the
        password is not valid UTF-8 or contains characters SASLprep
        prohibits.
    """
    if isinstance(password, bytes):
        raw = password
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    else:
        text = password
        try:
            raw = password.encode("utf-8")
        except UnicodeEncodeError:
            return password.encode("utf-8", "surrogateescape")
    prepared = _saslprep(text)
    if prepared is None:
        return raw
    return prepared.encode("utf-8")


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _xor(left: bytes, right: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(left, right))


def _salted_password(password: Union[str, bytes], salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", prepare_password(password), salt, iterations)


def _keys_from_salted_password(salted: bytes) -> Tuple[bytes, bytes]:
    """
    @return: C{(ClientKey, ServerKey)}.
    """
    return _hmac(salted, b"Client Key"), _hmac(salted, b"Server Key")


def make_verifier(
    password: Union[str, bytes],
    salt: Optional[bytes] = None,
    iterations: int = DEFAULT_ITERATIONS,
) -> ScramVerifier:
    """
    Derive the verifier PostgreSQL would store for C{password}.

    @param password: The clear-text password (see L{prepare_password}).
    @param salt: The salt; a fresh random 16-byte one when C{None}.
    @param iterations: PBKDF2 iteration count.
    @return: The verifier.
    """
    if salt is None:
        salt = secrets.token_bytes(SALT_LENGTH)
    client_key, server_key = _keys_from_salted_password(
        _salted_password(password, salt, iterations)
    )
    return ScramVerifier(
        iterations=iterations,
        salt=salt,
        stored_key=hashlib.sha256(client_key).digest(),
        server_key=server_key,
    )


def mock_verifier(user: str, secret: bytes) -> ScramVerifier:
    """
    Build a verifier for a user who does not exist, that no proof matches.

    Refusing an unknown user at once would tell an attacker which user names
    exist.  PostgreSQL instead runs the whole exchange against a made-up
    verifier whose salt is stable per user name (so two attempts look alike)
    but unpredictable without a server secret; this does the same.

    @param user: The user name the client asked for.
    @param secret: A random value kept for the life of the process.
    @return: A verifier with a per-user salt and keys nobody knows a
        password for.
    """
    name = user.encode("utf-8", "surrogateescape")
    return ScramVerifier(
        iterations=DEFAULT_ITERATIONS,
        salt=_hmac(secret, b"mock salt\x00" + name)[:SALT_LENGTH],
        stored_key=_hmac(secret, b"mock stored key\x00" + name),
        server_key=_hmac(secret, b"mock server key\x00" + name),
    )


def verify_plain_password(verifier: ScramVerifier, password: Union[str, bytes]) -> bool:
    """
    Check a clear-text password against a verifier, in constant time.

    This serves clients that authenticate with the C{password} method when
    only a SCRAM verifier is on file.

    @param verifier: The stored verifier.
    @param password: The password the client sent.
    @return: C{True} if the password matches.
    """
    client_key, _ = _keys_from_salted_password(
        _salted_password(password, verifier.salt, verifier.iterations)
    )
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), verifier.stored_key)


def _make_nonce() -> str:
    return _b64encode(secrets.token_bytes(_RAW_NONCE_LENGTH))


def _is_printable_nonce(nonce: str) -> bool:
    # RFC 5802 "printable": %x21-2B / %x2D-7E, i.e. visible ASCII but ','.
    return bool(nonce) and all("\x21" <= ch <= "\x7e" and ch != "," for ch in nonce)


def _check_nonce_argument(nonce: str) -> str:
    if not _is_printable_nonce(nonce):
        raise ValueError("a SCRAM nonce must be printable ASCII without ','")
    return nonce


def _decode(data: bytes, what: str) -> str:
    """
    Decode a message byte for byte, so slices of it re-encode to the exact
    bytes the peer sent (the AuthMessage must be reproduced exactly).
    """
    if not isinstance(data, bytes):
        raise TypeError(f"{what} must be bytes")
    if b"\x00" in data:
        raise ScramError(f"malformed SCRAM message: NUL byte in {what}")
    return data.decode("latin-1")


def _split_attributes(text: str, what: str) -> List[Tuple[str, str]]:
    """
    Split C{a=1,b=2} into C{[("a", "1"), ("b", "2")]}.

    Values cannot contain commas (user names escape them as C{=2C}), so a
    plain split is exact.
    """
    attributes = []
    for item in text.split(","):
        if len(item) < 2 or item[1] != "=" or item[0] not in string.ascii_letters:
            raise ScramError(f"malformed SCRAM message: bad attribute in {what}")
        attributes.append((item[0], item[2:]))
    return attributes


def _expect(attributes: List[Tuple[str, str]], index: int, name: str, what: str) -> str:
    if index >= len(attributes) or attributes[index][0] != name:
        raise ScramError(f"malformed SCRAM message: expected attribute '{name}' in {what}")
    return attributes[index][1]


def _auth_message(
    client_first_bare: str, server_first: str, client_final_without_proof: str
) -> bytes:
    return ",".join((client_first_bare, server_first, client_final_without_proof)).encode("latin-1")


class ScramServer:
    """
    The server side of one SCRAM-SHA-256 exchange.

    Call L{handle_client_first} with the SASLInitialResponse data and send the
    result as AuthenticationSASLContinue; call L{handle_client_final} with the
    SASLResponse data and send the result as AuthenticationSASLFinal, followed
    by AuthenticationOk.  Any L{ScramError} ends the exchange; further calls
    raise too.

    @ivar verifier: The verifier the client is checked against.
    """

    def __init__(self, verifier: ScramVerifier, nonce: Optional[str] = None) -> None:
        """
        @param verifier: The user's verifier (or a L{mock_verifier}).
        @param nonce: The server's part of the nonce; random when C{None}.
            Tests pass a fixed one.
        """
        self.verifier = verifier
        self._server_nonce = _make_nonce() if nonce is None else _check_nonce_argument(nonce)
        self._state = "start"
        self._gs2_header = ""
        self._nonce = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._client_key: Optional[bytes] = None

    @property
    def client_key(self) -> Optional[bytes]:
        """
        The client's ClientKey, recovered from its proof; C{None} until
        L{handle_client_final} has succeeded.

        It is a password equivalent for every verifier with the same salt and
        iteration count: keep it in memory only.
        """
        return self._client_key

    def _advance(self, expected: str) -> None:
        if self._state != expected:
            state = self._state
            self._state = "failed"
            raise ScramError(f"SCRAM message out of order (exchange is at '{state}')")

    def handle_client_first(self, data: bytes) -> bytes:
        """
        Read the client-first-message and produce the server-first-message.

        @param data: The SASLInitialResponse payload.
        @return: The server-first-message (C{r=...,s=...,i=...}).
        @raise ScramError: If the message is malformed or asks for channel
            binding, an authorization identity or a mandatory extension.
        """
        self._advance("start")
        self._state = "failed"
        text = _decode(data, "client-first-message")
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise ScramError("malformed SCRAM message: client-first-message is too short")
        flag, authzid, bare = parts
        if flag.startswith("p="):
            raise ScramError("client selected SCRAM channel binding, which is not supported")
        if flag not in _GS2_HEADERS:
            raise ScramError("malformed SCRAM message: unexpected channel-binding flag")
        if authzid.startswith("a="):
            raise ScramError("client uses authorization identity, but it is not supported")
        if authzid:
            raise ScramError("malformed SCRAM message: bad gs2 header")
        attributes = _split_attributes(bare, "client-first-message")
        if attributes[0][0] == "m":
            raise ScramError("client requires an unsupported SCRAM extension")
        _expect(attributes, 0, "n", "client-first-message")  # ignored, as in PostgreSQL
        client_nonce = _expect(attributes, 1, "r", "client-first-message")
        if not _is_printable_nonce(client_nonce):
            raise ScramError("malformed SCRAM message: non-printable characters in SCRAM nonce")
        # Further attributes are optional extensions; none is supported, so
        # they are ignored, as PostgreSQL ignores them.
        self._gs2_header = _GS2_HEADERS[flag]
        self._nonce = client_nonce + self._server_nonce
        self._client_first_bare = bare
        self._server_first = (
            f"r={self._nonce},s={_b64encode(self.verifier.salt)},i={self.verifier.iterations}"
        )
        self._state = "client-final"
        return self._server_first.encode("ascii")

    def handle_client_final(self, data: bytes) -> bytes:
        """
        Check the client-final-message and produce the server-final-message.

        @param data: The SASLResponse payload.
        @return: The server-final-message (C{v=...}).
        @raise ScramAuthenticationError: If the proof is wrong.
        @raise ScramError: If the message is malformed, the channel-binding
            data does not repeat the gs2 header, or the nonce was altered.
        """
        self._advance("client-final")
        self._state = "failed"
        text = _decode(data, "client-final-message")
        attributes = _split_attributes(text, "client-final-message")
        channel_binding = _expect(attributes, 0, "c", "client-final-message")
        if channel_binding != _b64encode(self._gs2_header.encode("ascii")):
            raise ScramError("unexpected SCRAM channel-binding attribute in client-final-message")
        nonce = _expect(attributes, 1, "r", "client-final-message")
        if not hmac.compare_digest(nonce.encode("latin-1"), self._nonce.encode("latin-1")):
            raise ScramError("invalid SCRAM response (nonce mismatch)")
        proof_index = next((i for i, (name, _) in enumerate(attributes) if name == "p"), None)
        if proof_index is None:
            raise ScramError("malformed SCRAM message: missing proof in client-final-message")
        if proof_index != len(attributes) - 1:
            raise ScramError("malformed SCRAM message: garbage at end of client-final-message")
        proof = _b64decode(attributes[proof_index][1], "client proof")
        if len(proof) != _KEY_LENGTH:
            raise ScramError("malformed SCRAM message: malformed proof in client-final-message")
        without_proof = text[: text.rindex(",p=")]
        auth_message = _auth_message(self._client_first_bare, self._server_first, without_proof)
        client_signature = _hmac(self.verifier.stored_key, auth_message)
        client_key = _xor(proof, client_signature)
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self.verifier.stored_key):
            raise ScramAuthenticationError("SCRAM client proof does not match")
        self._client_key = client_key
        self._state = "done"
        server_signature = _hmac(self.verifier.server_key, auth_message)
        return b"v=" + _b64encode(server_signature).encode("ascii")


class ScramClient:
    """
    The client side of one SCRAM-SHA-256 exchange, for logging in to a
    backend.

    Give it either the password, or the ClientKey and ServerKey of a verifier
    (see L{ScramClient.from_verifier}); the latter logs in without the
    password provided the backend holds a verifier with the same salt and
    iteration count.

    Send L{client_first} in SASLInitialResponse, answer
    AuthenticationSASLContinue with L{handle_server_first}, and check
    AuthenticationSASLFinal with L{handle_server_final}.
    """

    def __init__(
        self,
        password: Optional[Union[str, bytes]] = None,
        client_key: Optional[bytes] = None,
        server_key: Optional[bytes] = None,
        nonce: Optional[str] = None,
        username: str = "",
    ) -> None:
        """
        @param password: The clear-text password.
        @param client_key: The ClientKey, when logging in without a password.
        @param server_key: The ServerKey, needed with C{client_key} to check
            the server's signature.
        @param nonce: The client nonce; random when C{None}.  Tests pass a
            fixed one.
        @param username: Sent in the client-first-message.  PostgreSQL ignores
            it and libpq sends it empty; other servers may want it.
        @raise ValueError: Unless exactly one of C{password} and the pair
            C{client_key}/C{server_key} is given.
        """
        has_keys = client_key is not None or server_key is not None
        if (password is None) == (not has_keys):
            raise ValueError("give either a password or client_key and server_key")
        if has_keys:
            if client_key is None or server_key is None:
                raise ValueError("client_key and server_key go together")
            if len(client_key) != _KEY_LENGTH or len(server_key) != _KEY_LENGTH:
                raise ValueError(f"SCRAM keys must be {_KEY_LENGTH} bytes")
        self._password = password
        self._client_key = client_key
        self._server_key = server_key
        self._expected_salt: Optional[bytes] = None
        self._expected_iterations: Optional[int] = None
        self._client_nonce = _make_nonce() if nonce is None else _check_nonce_argument(nonce)
        escaped = username.replace("=", "=3D").replace(",", "=2C")
        # Kept byte for byte (as latin-1 text) like every other message, so
        # the AuthMessage reproduces exactly what was sent.
        self._client_first_bare = f"n={escaped},r={self._client_nonce}".encode("utf-8").decode(
            "latin-1"
        )
        self._expected_server_signature = b""
        self._state = "start"

    @classmethod
    def from_verifier(
        cls,
        verifier: ScramVerifier,
        client_key: bytes,
        nonce: Optional[str] = None,
        username: str = "",
    ) -> "ScramClient":
        """
        Build a client that logs in with a recovered ClientKey.

        The client also remembers the verifier's salt and iteration count, so
        a backend holding a different verifier is reported as such in
        L{handle_server_first}, instead of as a proof the server rejects.

        @param verifier: The verifier the ClientKey belongs to (from
            pool_passwd).
        @param client_key: The ClientKey, from L{ScramServer.client_key}.
        @param nonce: As for the constructor.
        @param username: As for the constructor.
        @raise ValueError: If C{client_key} does not belong to C{verifier}.
        """
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), verifier.stored_key):
            raise ValueError("client_key does not belong to this verifier")
        client = cls(
            client_key=client_key, server_key=verifier.server_key, nonce=nonce, username=username
        )
        client._expected_salt = verifier.salt
        client._expected_iterations = verifier.iterations
        return client

    def _advance(self, expected: str) -> None:
        if self._state != expected:
            state = self._state
            self._state = "failed"
            raise ScramError(f"SCRAM message out of order (exchange is at '{state}')")

    def client_first(self) -> bytes:
        """
        @return: The client-first-message, for SASLInitialResponse.
        """
        self._advance("start")
        self._state = "server-first"
        return ("n,," + self._client_first_bare).encode("latin-1")

    def handle_server_first(self, data: bytes) -> bytes:
        """
        Read the server-first-message and produce the client-final-message.

        @param data: The AuthenticationSASLContinue payload.
        @return: The client-final-message, for SASLResponse.
        @raise ScramError: If the message is malformed, the server did not
            extend our nonce, or (for a client built by L{from_verifier}) the
            server's salt or iteration count differ from the verifier's.
        """
        self._advance("server-first")
        self._state = "failed"
        text = _decode(data, "server-first-message")
        attributes = _split_attributes(text, "server-first-message")
        if attributes[0][0] == "m":
            raise ScramError("server requires an unsupported SCRAM extension")
        nonce = _expect(attributes, 0, "r", "server-first-message")
        if not (
            len(nonce) > len(self._client_nonce)
            and nonce.startswith(self._client_nonce)
            and _is_printable_nonce(nonce)
        ):
            raise ScramError("invalid SCRAM response (nonce mismatch)")
        salt = _b64decode(_expect(attributes, 1, "s", "server-first-message"), "salt")
        if not salt:
            raise ScramError("malformed SCRAM message: empty salt")
        iterations_text = _expect(attributes, 2, "i", "server-first-message")
        if (
            not (iterations_text.isascii() and iterations_text.isdigit())
            or int(iterations_text) < 1
        ):
            raise ScramError("malformed SCRAM message: invalid iteration count")
        if len(attributes) != 3:
            raise ScramError("malformed SCRAM message: garbage at end of server-first-message")
        iterations = int(iterations_text)
        if self._expected_salt is not None and (
            salt != self._expected_salt or iterations != self._expected_iterations
        ):
            raise ScramError(
                "the server's SCRAM secret has a different salt or iteration count"
                " from the verifier on file, so the client key cannot be reused"
            )
        if self._password is not None:
            client_key, server_key = _keys_from_salted_password(
                _salted_password(self._password, salt, iterations)
            )
        else:
            assert self._client_key is not None and self._server_key is not None
            client_key, server_key = self._client_key, self._server_key
        without_proof = "c=" + _b64encode(b"n,,") + ",r=" + nonce
        auth_message = _auth_message(self._client_first_bare, text, without_proof)
        client_signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
        proof = _xor(client_key, client_signature)
        self._expected_server_signature = _hmac(server_key, auth_message)
        self._state = "server-final"
        return (without_proof + ",p=" + _b64encode(proof)).encode("ascii")

    def handle_server_final(self, data: bytes) -> None:
        """
        Check the server-final-message.

        A server that gets this far without knowing the verifier is an
        impostor, so a wrong signature must end the connection even though
        the server may already have said AuthenticationOk.

        @param data: The AuthenticationSASLFinal payload.
        @raise ScramAuthenticationError: If the server's signature is wrong.
        @raise ScramError: If the message is malformed or reports an error.
        """
        self._advance("server-final")
        self._state = "failed"
        text = _decode(data, "server-final-message")
        attributes = _split_attributes(text, "server-final-message")
        if attributes[0][0] == "e":
            raise ScramError(f"error received from server in SCRAM exchange: {attributes[0][1]}")
        signature = _b64decode(
            _expect(attributes, 0, "v", "server-final-message"), "server signature"
        )
        if len(attributes) != 1:
            raise ScramError("malformed SCRAM message: garbage at end of server-final-message")
        if not hmac.compare_digest(signature, self._expected_server_signature):
            raise ScramAuthenticationError("incorrect server signature")
        self._state = "done"
