"""
PostgreSQL's MD5 password authentication, as arithmetic.

PostgreSQL (and Pgpool-II's pool_passwd) store an MD5 "password" as
C{"md5" + hex(md5(password + user))}.  When a server asks for MD5
authentication it sends a four-byte salt, and the client answers with
C{"md5" + hex(md5(stored_hex + salt))}, where C{stored_hex} is the stored hash
without its C{md5} prefix.  The stored hash is therefore a password
equivalent: whoever holds it can answer any challenge.  That is what lets the
proxy log in to an md5 backend on the client's behalf with nothing but the
pool_passwd entry.

This module is pure computation: no sockets, no reactor.
"""

from __future__ import annotations

import hashlib
import hmac
import re

__all__ = [
    "MD5_SALT_LENGTH",
    "is_md5_hash",
    "md5_password_hash",
    "md5_challenge_response",
    "verify_md5_response",
]

MD5_SALT_LENGTH = 4
"""
Length in bytes of the salt in an AuthenticationMD5Password message.
"""

_MD5_HASH = re.compile(r"md5[0-9a-f]{32}\Z")


def is_md5_hash(text: str) -> bool:
    """
    Tell whether C{text} has the shape of a stored MD5 hash.

    PostgreSQL recognises a stored MD5 secret by the C{md5} prefix followed by
    exactly 32 lowercase hex digits; anything else is taken as something else
    (usually clear text), so we apply the same test.

    @param text: A candidate stored secret.
    @return: C{True} if C{text} is C{"md5"} followed by 32 lowercase hex digits.
    """
    return _MD5_HASH.match(text) is not None


def md5_password_hash(password: str, user: str) -> str:
    """
    Compute the MD5 secret PostgreSQL stores for C{user}.

    This is what C{pg_authid.rolpassword} holds under
    C{password_encryption = md5}, and what C{pg_md5 --md5auth} writes into
    pool_passwd.

    @param password: The clear-text password.
    @param user: The role name; PostgreSQL uses it as the salt.
    @return: C{"md5"} followed by 32 lowercase hex digits.
    """
    digest = hashlib.md5((password + user).encode("utf-8")).hexdigest()
    return "md5" + digest


def md5_challenge_response(stored_hash: str, salt: bytes) -> bytes:
    """
    Answer an AuthenticationMD5Password challenge from a stored hash.

    @param stored_hash: The stored secret, as returned by
        L{md5_password_hash} (with its C{md5} prefix).
    @param salt: The four-byte salt sent by the server.
    @return: The PasswordMessage payload without its NUL terminator:
        C{b"md5"} followed by 32 lowercase hex digits.
    @raise ValueError: If C{stored_hash} is not an MD5 hash or the salt is not
        four bytes long; either is a programming error in the caller.
    """
    if not is_md5_hash(stored_hash):
        raise ValueError("not an md5 password hash")
    if len(salt) != MD5_SALT_LENGTH:
        raise ValueError(f"md5 salt must be {MD5_SALT_LENGTH} bytes, got {len(salt)}")
    digest = hashlib.md5(stored_hash[3:].encode("ascii") + salt).hexdigest()
    return b"md5" + digest.encode("ascii")


def verify_md5_response(stored_hash: str, salt: bytes, response: bytes) -> bool:
    """
    Check a client's answer to an MD5 challenge, in constant time.

    The comparison does not stop at the first differing byte, so the time it
    takes tells an attacker nothing about how close a guess was.

    @param stored_hash: The stored secret for the user (C{md5...}).
    @param salt: The salt that was sent to the client.
    @param response: The client's PasswordMessage payload.  One trailing NUL
        (the C string terminator of the wire format) is tolerated so callers
        may pass the payload with or without it.
    @return: C{True} if the response proves knowledge of the stored hash.
    @raise ValueError: As L{md5_challenge_response}.
    """
    expected = md5_challenge_response(stored_hash, salt)
    if response.endswith(b"\x00"):
        response = response[:-1]
    return hmac.compare_digest(expected, response)
