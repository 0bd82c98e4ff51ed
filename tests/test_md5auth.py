"""
Tests for L{twisted_pgpool.auth.md5}: the stored MD5 hash and the answer to
an MD5 challenge, checked against fixed values computed independently.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.auth.md5 import (
    is_md5_hash,
    md5_challenge_response,
    md5_password_hash,
    verify_md5_response,
)

# md5("postgres" + "postgres"), the hash PostgreSQL stores for the
# "postgres" role with password "postgres".
POSTGRES_HASH = "md53175bce1d3201d16594cebf9d7eb3f9d"
SALT = b"\x01\x02\x03\x04"
# b"md5" + md5(hex part of POSTGRES_HASH + SALT)
POSTGRES_RESPONSE = b"md568be9ed08db75f318087ab337aaea044"


class MD5PasswordHashTests(SynchronousTestCase):
    def test_hash_of_password_and_user(self) -> None:
        self.assertEqual(md5_password_hash("postgres", "postgres"), POSTGRES_HASH)

    def test_user_name_salts_the_hash(self) -> None:
        self.assertNotEqual(
            md5_password_hash("secret", "alice"), md5_password_hash("secret", "bob")
        )

    def test_non_ascii_password_is_hashed_as_utf8(self) -> None:
        import hashlib

        expected = "md5" + hashlib.md5("pässwordü".encode("utf-8")).hexdigest()
        self.assertEqual(md5_password_hash("pässword", "ü"), expected)


class IsMD5HashTests(SynchronousTestCase):
    def test_prefix_and_32_lowercase_hex_digits(self) -> None:
        self.assertTrue(is_md5_hash(POSTGRES_HASH))

    def test_uppercase_hex_is_not_a_hash(self) -> None:
        # PostgreSQL only recognises lowercase hex.
        self.assertFalse(is_md5_hash(POSTGRES_HASH.upper()))

    def test_wrong_length_is_not_a_hash(self) -> None:
        self.assertFalse(is_md5_hash(POSTGRES_HASH[:-1]))
        self.assertFalse(is_md5_hash(POSTGRES_HASH + "0"))

    def test_missing_prefix_is_not_a_hash(self) -> None:
        self.assertFalse(is_md5_hash(POSTGRES_HASH[3:]))


class ChallengeResponseTests(SynchronousTestCase):
    def test_response_to_challenge(self) -> None:
        self.assertEqual(md5_challenge_response(POSTGRES_HASH, SALT), POSTGRES_RESPONSE)

    def test_salt_changes_response(self) -> None:
        self.assertNotEqual(
            md5_challenge_response(POSTGRES_HASH, b"\x00\x00\x00\x00"), POSTGRES_RESPONSE
        )

    def test_rejects_non_hash(self) -> None:
        self.assertRaises(ValueError, md5_challenge_response, "postgres", SALT)

    def test_rejects_salt_of_wrong_length(self) -> None:
        self.assertRaises(ValueError, md5_challenge_response, POSTGRES_HASH, b"abc")


class VerifyResponseTests(SynchronousTestCase):
    def test_correct_response_is_accepted(self) -> None:
        self.assertTrue(verify_md5_response(POSTGRES_HASH, SALT, POSTGRES_RESPONSE))

    def test_trailing_nul_is_tolerated(self) -> None:
        self.assertTrue(verify_md5_response(POSTGRES_HASH, SALT, POSTGRES_RESPONSE + b"\x00"))

    def test_wrong_password_is_refused(self) -> None:
        response = md5_challenge_response(md5_password_hash("wrong", "postgres"), SALT)
        self.assertFalse(verify_md5_response(POSTGRES_HASH, SALT, response))

    def test_response_to_another_salt_is_refused(self) -> None:
        self.assertFalse(verify_md5_response(POSTGRES_HASH, b"\x09\x09\x09\x09", POSTGRES_RESPONSE))

    def test_truncated_and_empty_responses_are_refused(self) -> None:
        self.assertFalse(verify_md5_response(POSTGRES_HASH, SALT, POSTGRES_RESPONSE[:-1]))
        self.assertFalse(verify_md5_response(POSTGRES_HASH, SALT, b""))

    def test_clear_text_password_is_refused(self) -> None:
        self.assertFalse(verify_md5_response(POSTGRES_HASH, SALT, b"postgres"))
