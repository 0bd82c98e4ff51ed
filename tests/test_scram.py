"""
Tests for L{twisted_pgpool.auth.scram}: the RFC 7677 test vector, round trips
between our client and server, every kind of malformed or dishonest message,
and cross-checks against C{scramp}, an independent implementation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Tuple

import scramp
from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.auth.scram import (
    DEFAULT_ITERATIONS,
    SCRAM_SHA_256,
    ScramAuthenticationError,
    ScramClient,
    ScramError,
    ScramServer,
    ScramVerifier,
    format_verifier,
    make_verifier,
    mock_verifier,
    parse_verifier,
    prepare_password,
    verify_plain_password,
)

# RFC 7677 section 3.
RFC_PASSWORD = "pencil"
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

RFC_VERIFIER = make_verifier(RFC_PASSWORD, salt=RFC_SALT, iterations=4096)

# The same verifier, in the form pg_authid.rolpassword shows it.
RFC_VERIFIER_TEXT = (
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
)


def _rfc_server() -> ScramServer:
    return ScramServer(RFC_VERIFIER, nonce=RFC_SERVER_NONCE)


def _exchange(client: ScramClient, server: ScramServer) -> None:
    """
    Run a whole exchange; raises whatever either side raises.
    """
    server_first = server.handle_client_first(client.client_first())
    server_final = server.handle_client_final(client.handle_server_first(server_first))
    client.handle_server_final(server_final)


def _server_after_first(data: bytes = b"n,,n=,r=abc") -> Tuple[ScramServer, bytes]:
    server = ScramServer(RFC_VERIFIER, nonce="xyz")
    return server, server.handle_client_first(data)


class RFC7677VectorTests(SynchronousTestCase):
    def test_client_messages(self) -> None:
        client = ScramClient(RFC_PASSWORD, nonce=RFC_CLIENT_NONCE, username="user")
        self.assertEqual(client.client_first(), RFC_CLIENT_FIRST)
        self.assertEqual(client.handle_server_first(RFC_SERVER_FIRST), RFC_CLIENT_FINAL)
        client.handle_server_final(RFC_SERVER_FINAL)

    def test_server_messages(self) -> None:
        server = _rfc_server()
        self.assertEqual(server.handle_client_first(RFC_CLIENT_FIRST), RFC_SERVER_FIRST)
        self.assertEqual(server.handle_client_final(RFC_CLIENT_FINAL), RFC_SERVER_FINAL)

    def test_verifier_text(self) -> None:
        self.assertEqual(format_verifier(RFC_VERIFIER), RFC_VERIFIER_TEXT)

    def test_server_recovers_client_key(self) -> None:
        server = _rfc_server()
        server.handle_client_first(RFC_CLIENT_FIRST)
        server.handle_client_final(RFC_CLIENT_FINAL)
        salted = hashlib.pbkdf2_hmac("sha256", b"pencil", RFC_SALT, 4096)
        expected = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        self.assertEqual(server.client_key, expected)


class VerifierTests(SynchronousTestCase):
    def test_parse_then_format_round_trips(self) -> None:
        self.assertEqual(format_verifier(parse_verifier(RFC_VERIFIER_TEXT)), RFC_VERIFIER_TEXT)

    def test_parse_gives_fields(self) -> None:
        self.assertEqual(parse_verifier(RFC_VERIFIER_TEXT), RFC_VERIFIER)
        self.assertEqual(RFC_VERIFIER.iterations, 4096)
        self.assertEqual(RFC_VERIFIER.salt, RFC_SALT)

    def test_make_verifier_defaults(self) -> None:
        verifier = make_verifier("secret")
        self.assertEqual(verifier.iterations, DEFAULT_ITERATIONS)
        self.assertEqual(len(verifier.salt), 16)
        self.assertNotEqual(make_verifier("secret").salt, verifier.salt)

    def test_make_verifier_agrees_with_scramp(self) -> None:
        salt, stored_key, server_key, iterations = scramp.ScramMechanism().make_auth_info(
            "correct horse", iteration_count=5000, salt=b"0123456789abcdef"
        )
        ours = make_verifier("correct horse", salt=b"0123456789abcdef", iterations=5000)
        self.assertEqual(ours, ScramVerifier(iterations, salt, stored_key, server_key))

    def test_repr_hides_keys(self) -> None:
        text = repr(RFC_VERIFIER)
        self.assertNotIn(repr(RFC_VERIFIER.stored_key), text)
        self.assertNotIn(repr(RFC_VERIFIER.server_key), text)

    def test_malformed_verifiers_are_refused(self) -> None:
        stored, server = RFC_VERIFIER_TEXT.split("$")[2].split(":")
        for text in [
            "",
            "md53175bce1d3201d16594cebf9d7eb3f9d",
            "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$" + stored + ":" + server,
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$" + stored,
            "SCRAM-SHA-256$4096$W22ZaJ0SNY7soEsUEjb6gQ==$" + stored + ":" + server,
            "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$" + stored + ":" + server,
            "SCRAM-SHA-256$-1:W22ZaJ0SNY7soEsUEjb6gQ==$" + stored + ":" + server,
            "SCRAM-SHA-256$x:W22ZaJ0SNY7soEsUEjb6gQ==$" + stored + ":" + server,
            "SCRAM-SHA-256$4096:not base64!$" + stored + ":" + server,
            "SCRAM-SHA-256$4096:$" + stored + ":" + server,
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:" + server,
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$" + stored + ":" + server + "$",
        ]:
            self.assertRaises(ScramError, parse_verifier, text)

    def test_verifier_validates_key_lengths(self) -> None:
        self.assertRaises(
            ValueError, ScramVerifier, 4096, b"salt", b"short", RFC_VERIFIER.server_key
        )


class RoundTripTests(SynchronousTestCase):
    def test_password_client_and_server_agree(self) -> None:
        verifier = make_verifier("s3cret")
        server = ScramServer(verifier)
        _exchange(ScramClient("s3cret"), server)
        self.assertEqual(hashlib.sha256(server.client_key or b"").digest(), verifier.stored_key)

    def test_client_sends_empty_user_name_like_libpq(self) -> None:
        self.assertTrue(ScramClient("x", nonce="abc").client_first().startswith(b"n,,n=,r=abc"))

    def test_user_name_is_escaped(self) -> None:
        client = ScramClient("x", nonce="abc", username="a=b,c")
        self.assertEqual(client.client_first(), b"n,,n=a=3Db=2Cc,r=abc")
        _exchange(ScramClient("x", username="a=b,c"), ScramServer(make_verifier("x")))

    def test_non_ascii_user_name_round_trips(self) -> None:
        _exchange(ScramClient("x", username="jérôme"), ScramServer(make_verifier("x")))

    def test_recovered_client_key_logs_in_without_password(self) -> None:
        verifier = make_verifier("s3cret")
        front = ScramServer(verifier)
        _exchange(ScramClient("s3cret"), front)
        assert front.client_key is not None
        backend = ScramServer(verifier)
        _exchange(ScramClient.from_verifier(verifier, front.client_key), backend)
        self.assertEqual(backend.client_key, front.client_key)

    def test_client_keys_work_without_verifier(self) -> None:
        verifier = make_verifier("s3cret")
        front = ScramServer(verifier)
        _exchange(ScramClient("s3cret"), front)
        client = ScramClient(client_key=front.client_key, server_key=verifier.server_key)
        _exchange(client, ScramServer(verifier))

    def test_client_key_for_another_salt_is_reported_before_proof(self) -> None:
        verifier = make_verifier("s3cret")
        front = ScramServer(verifier)
        _exchange(ScramClient("s3cret"), front)
        assert front.client_key is not None
        client = ScramClient.from_verifier(verifier, front.client_key)
        backend = ScramServer(make_verifier("s3cret"))
        server_first = backend.handle_client_first(client.client_first())
        error = self.assertRaises(ScramError, client.handle_server_first, server_first)
        self.assertIn("different salt", str(error))

    def test_bare_client_key_for_another_salt_fails_the_proof(self) -> None:
        verifier = make_verifier("s3cret")
        front = ScramServer(verifier)
        _exchange(ScramClient("s3cret"), front)
        client = ScramClient(client_key=front.client_key, server_key=verifier.server_key)
        self.assertRaises(
            ScramAuthenticationError, _exchange, client, ScramServer(make_verifier("s3cret"))
        )

    def test_from_verifier_refuses_foreign_client_key(self) -> None:
        self.assertRaises(ValueError, ScramClient.from_verifier, RFC_VERIFIER, b"\x00" * 32)

    def test_y_flag_is_accepted(self) -> None:
        server = ScramServer(RFC_VERIFIER, nonce="srv")
        first = server.handle_client_first(b"y,,n=,r=cli")
        self.assertTrue(first.startswith(b"r=clisrv,"))
        # Build a correct proof for the "y,," header by hand.
        auth_message = b"n=,r=cli," + first + b",c=eSws,r=clisrv"
        salted = hashlib.pbkdf2_hmac("sha256", b"pencil", RFC_SALT, 4096)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        signature = hmac.new(
            hashlib.sha256(client_key).digest(), auth_message, hashlib.sha256
        ).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        final = b"c=eSws,r=clisrv,p=" + base64.b64encode(proof)
        self.assertTrue(server.handle_client_final(final).startswith(b"v="))

    def test_client_first_extensions_are_ignored(self) -> None:
        server = ScramServer(RFC_VERIFIER, nonce=RFC_SERVER_NONCE)
        self.assertEqual(server.handle_client_first(RFC_CLIENT_FIRST + b",x=ext"), RFC_SERVER_FIRST)

    def test_client_key_is_none_before_success(self) -> None:
        server = _rfc_server()
        self.assertIsNone(server.client_key)
        server.handle_client_first(RFC_CLIENT_FIRST)
        self.assertIsNone(server.client_key)

    def test_client_needs_password_or_keys(self) -> None:
        self.assertRaises(ValueError, ScramClient)
        self.assertRaises(
            ValueError, ScramClient, "pw", client_key=b"\x00" * 32, server_key=b"\x00" * 32
        )
        self.assertRaises(ValueError, ScramClient, client_key=b"\x00" * 32)
        self.assertRaises(ValueError, ScramClient, client_key=b"\x00", server_key=b"\x00")

    def test_nonce_arguments_must_be_printable(self) -> None:
        self.assertRaises(ValueError, ScramServer, RFC_VERIFIER, nonce="a,b")
        self.assertRaises(ValueError, ScramClient, "pw", nonce="")
        self.assertRaises(ValueError, ScramClient, "pw", nonce="a b")


class ServerRefusalTests(SynchronousTestCase):
    def test_wrong_password_is_an_authentication_error(self) -> None:
        server = ScramServer(make_verifier("right"))
        self.assertRaises(ScramAuthenticationError, _exchange, ScramClient("wrong"), server)
        self.assertIsNone(server.client_key)

    def test_tampered_nonce_is_refused(self) -> None:
        server = _rfc_server()
        server.handle_client_first(RFC_CLIENT_FIRST)
        tampered = RFC_CLIENT_FINAL.replace(b"k0,p=", b"k1,p=")
        error = self.assertRaises(ScramError, server.handle_client_final, tampered)
        self.assertNotIsInstance(error, ScramAuthenticationError)
        self.assertIn("nonce", str(error))

    def test_tampered_proof_is_an_authentication_error(self) -> None:
        server = _rfc_server()
        server.handle_client_first(RFC_CLIENT_FIRST)
        tampered = RFC_CLIENT_FINAL.replace(b"p=dHzb", b"p=eHzb")
        self.assertRaises(ScramAuthenticationError, server.handle_client_final, tampered)

    def test_channel_binding_must_repeat_the_gs2_header(self) -> None:
        server = ScramServer(RFC_VERIFIER, nonce=RFC_SERVER_NONCE)
        server.handle_client_first(b"y,," + RFC_CLIENT_FIRST[3:])
        # c=biws is "n,," but the client said "y,,".
        self.assertRaises(ScramError, server.handle_client_final, RFC_CLIENT_FINAL)

    def test_channel_binding_flag_p_is_refused(self) -> None:
        error = self.assertRaises(
            ScramError,
            ScramServer(RFC_VERIFIER).handle_client_first,
            b"p=tls-server-end-point,,n=,r=abc",
        )
        self.assertIn("channel binding", str(error))

    def test_authorization_identity_is_refused(self) -> None:
        error = self.assertRaises(
            ScramError, ScramServer(RFC_VERIFIER).handle_client_first, b"n,a=admin,n=,r=abc"
        )
        self.assertIn("authorization identity", str(error))

    def test_mandatory_extension_is_refused(self) -> None:
        error = self.assertRaises(
            ScramError, ScramServer(RFC_VERIFIER).handle_client_first, b"n,,m=ext,n=,r=abc"
        )
        self.assertIn("extension", str(error))

    def test_malformed_client_first_messages(self) -> None:
        for data in [
            b"",
            b"n",
            b"n,,",
            b"x,,n=,r=abc",
            b"n,x,n=,r=abc",
            b"n,,r=abc",
            b"n,,n=",
            b"n,,n=,r=",
            b"n,,n=,r=a b",
            b"n,,n=,r=ab\x7f",
            b"n,,n=,r=abc,",
            b"n,,n=,r=abc,1=x",
            b"n,,n=,r=ab\x00c",
            b"n,,n=user",
        ]:
            self.assertRaises(ScramError, ScramServer(RFC_VERIFIER).handle_client_first, data)

    def test_malformed_client_final_messages(self) -> None:
        good_proof = base64.b64encode(b"\x00" * 32)
        for data in [
            b"",
            b"r=abcxyz,p=" + good_proof,
            b"c=biws,p=" + good_proof,
            b"c=biws,r=abcxyz",
            b"c=biws,r=abcxyz,p=" + good_proof + b",x=1",
            b"c=biws,r=abcxyz,p=notbase64!",
            b"c=biws,r=abcxyz,p=" + base64.b64encode(b"\x00" * 31),
            b"c=biws,r=abcxyz,p=" + good_proof[:-1],
            b"c=bad,r=abcxyz,p=" + good_proof,
            b"c=biws,r=abc,p=" + good_proof,
            b"c=biws,r=abcxyzz,p=" + good_proof,
        ]:
            server, _ = _server_after_first()
            error = self.assertRaises(ScramError, server.handle_client_final, data)
            self.assertNotIsInstance(error, ScramAuthenticationError)

    def test_extensions_before_proof_are_part_of_the_signed_message(self) -> None:
        server = _rfc_server()
        server.handle_client_first(RFC_CLIENT_FIRST)
        with_extension = RFC_CLIENT_FINAL.replace(b",p=", b",x=ext,p=")
        self.assertRaises(ScramAuthenticationError, server.handle_client_final, with_extension)

    def test_messages_out_of_order_are_refused(self) -> None:
        server = ScramServer(RFC_VERIFIER)
        self.assertRaises(ScramError, server.handle_client_final, RFC_CLIENT_FINAL)

    def test_nothing_is_accepted_after_a_failure(self) -> None:
        server = _rfc_server()
        self.assertRaises(ScramError, server.handle_client_first, b"garbage")
        self.assertRaises(ScramError, server.handle_client_first, RFC_CLIENT_FIRST)

    def test_nothing_is_accepted_after_success(self) -> None:
        server = _rfc_server()
        server.handle_client_first(RFC_CLIENT_FIRST)
        server.handle_client_final(RFC_CLIENT_FINAL)
        self.assertRaises(ScramError, server.handle_client_final, RFC_CLIENT_FINAL)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=80))
    def test_any_client_first_either_parses_or_raises_scram_error(self, data: bytes) -> None:
        try:
            ScramServer(RFC_VERIFIER).handle_client_first(data)
        except ScramError:
            pass

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=120))
    def test_any_client_final_raises_scram_error(self, data: bytes) -> None:
        server, _ = _server_after_first()
        self.assertRaises(ScramError, server.handle_client_final, data)


class ClientRefusalTests(SynchronousTestCase):
    def _client_after_first(self) -> ScramClient:
        client = ScramClient(RFC_PASSWORD, nonce=RFC_CLIENT_NONCE, username="user")
        client.client_first()
        return client

    def test_wrong_server_signature_is_an_authentication_error(self) -> None:
        client = self._client_after_first()
        client.handle_server_first(RFC_SERVER_FIRST)
        forged = b"v=" + base64.b64encode(b"\x00" * 32)
        self.assertRaises(ScramAuthenticationError, client.handle_server_final, forged)

    def test_server_that_does_not_know_the_verifier_is_caught(self) -> None:
        impostor = ScramServer(ScramVerifier(4096, RFC_SALT, RFC_VERIFIER.stored_key, b"\x01" * 32))
        self.assertRaises(ScramAuthenticationError, _exchange, ScramClient(RFC_PASSWORD), impostor)

    def test_server_error_is_reported(self) -> None:
        client = self._client_after_first()
        client.handle_server_first(RFC_SERVER_FIRST)
        error = self.assertRaises(ScramError, client.handle_server_final, b"e=invalid-proof")
        self.assertIn("invalid-proof", str(error))

    def test_malformed_server_first_messages(self) -> None:
        for data in [
            b"",
            b"r=otherNonce%hv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            b"r=rOprNGfwEbeRWgbNEkqOx,s=!!,i=4096",
            b"r=rOprNGfwEbeRWgbNEkqOx,s=,i=4096",
            b"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
            b"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1",
            b"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=x",
            b"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,x=1",
            b"r=rOprNGfwEbeRWgbNEkqOx,i=4096,s=W22ZaJ0SNY7soEsUEjb6gQ==",
            b"m=ext,r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        ]:
            client = self._client_after_first()
            self.assertRaises(ScramError, client.handle_server_first, data)

    def test_malformed_server_final_messages(self) -> None:
        for data in [b"", b"v=", b"v=!!", b"x=1", RFC_SERVER_FINAL + b",x=1"]:
            client = self._client_after_first()
            client.handle_server_first(RFC_SERVER_FIRST)
            self.assertRaises(ScramError, client.handle_server_final, data)

    def test_messages_out_of_order_are_refused(self) -> None:
        client = ScramClient(RFC_PASSWORD)
        self.assertRaises(ScramError, client.handle_server_first, RFC_SERVER_FIRST)
        client = self._client_after_first()
        self.assertRaises(ScramError, client.handle_server_final, RFC_SERVER_FINAL)
        self.assertRaises(ScramError, client.client_first)


class ScrampCrossCheckTests(SynchronousTestCase):
    """
    Our client against scramp's server and scramp's client against our
    server: a shared misreading of the RFC would not survive this.
    """

    def _scramp_server(self, password: str) -> "scramp.core.ScramServer":
        mechanism = scramp.ScramMechanism(SCRAM_SHA_256)
        auth_info = mechanism.make_auth_info(password, iteration_count=4096)
        return mechanism.make_server(lambda username: auth_info)

    def test_our_client_logs_in_to_scramp_server(self) -> None:
        server = self._scramp_server("hunter2")
        client = ScramClient("hunter2", username="alice")
        server.set_client_first(client.client_first().decode())
        final = client.handle_server_first(server.get_server_first().encode())
        server.set_client_final(final.decode())
        client.handle_server_final(server.get_server_final().encode())

    def test_scramp_server_refuses_our_client_with_wrong_password(self) -> None:
        server = self._scramp_server("hunter2")
        client = ScramClient("hunter3", username="alice")
        server.set_client_first(client.client_first().decode())
        final = client.handle_server_first(server.get_server_first().encode())
        self.assertRaises(scramp.ScramException, server.set_client_final, final.decode())

    def test_scramp_client_logs_in_to_our_server(self) -> None:
        client = scramp.ScramClient([SCRAM_SHA_256], "alice", "hunter2")
        server = ScramServer(make_verifier("hunter2"))
        first = server.handle_client_first(client.get_client_first().encode())
        client.set_server_first(first.decode())
        final = server.handle_client_final(client.get_client_final().encode())
        client.set_server_final(final.decode())

    def test_our_server_refuses_scramp_client_with_wrong_password(self) -> None:
        client = scramp.ScramClient([SCRAM_SHA_256], "alice", "hunter3")
        server = ScramServer(make_verifier("hunter2"))
        client.set_server_first(
            server.handle_client_first(client.get_client_first().encode()).decode()
        )
        self.assertRaises(
            ScramAuthenticationError, server.handle_client_final, client.get_client_final().encode()
        )

    def test_client_key_recovered_from_scramp_client_logs_in_to_scramp_server(self) -> None:
        mechanism = scramp.ScramMechanism(SCRAM_SHA_256)
        salt, stored_key, server_key, iterations = mechanism.make_auth_info(
            "hunter2", iteration_count=4096
        )
        verifier = ScramVerifier(iterations, salt, stored_key, server_key)
        front = ScramServer(verifier)
        client = scramp.ScramClient([SCRAM_SHA_256], "alice", "hunter2")
        client.set_server_first(
            front.handle_client_first(client.get_client_first().encode()).decode()
        )
        client.set_server_final(
            front.handle_client_final(client.get_client_final().encode()).decode()
        )
        assert front.client_key is not None

        backend = mechanism.make_server(lambda username: (salt, stored_key, server_key, iterations))
        ours = ScramClient.from_verifier(verifier, front.client_key, username="alice")
        backend.set_client_first(ours.client_first().decode())
        final = ours.handle_server_first(backend.get_server_first().encode())
        backend.set_client_final(final.decode())
        ours.handle_server_final(backend.get_server_final().encode())

    @settings(max_examples=25, deadline=None)
    @given(
        st.text(
            alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20
        )
    )
    def test_verifiers_agree_for_any_ascii_password(self, password: str) -> None:
        salt, stored_key, server_key, _ = scramp.ScramMechanism().make_auth_info(
            password, iteration_count=4096, salt=b"fixed salt 16 by"
        )
        self.assertEqual(
            make_verifier(password, salt=b"fixed salt 16 by"),
            ScramVerifier(4096, salt, stored_key, server_key),
        )


class SASLprepTests(SynchronousTestCase):
    def test_ascii_is_unchanged_even_with_control_characters(self) -> None:
        # PostgreSQL skips SASLprep entirely for ASCII input.
        self.assertEqual(prepare_password("pencil"), b"pencil")
        self.assertEqual(prepare_password("tab\there"), b"tab\there")

    def test_non_ascii_space_becomes_space(self) -> None:
        self.assertEqual(prepare_password("a\u00a0b\u3000c"), b"a b c")

    def test_mapped_to_nothing_characters_are_removed(self) -> None:
        self.assertEqual(prepare_password("ab\u00adc\u200dd\ufeff"), b"abcd")

    def test_nfkc_normalisation(self) -> None:
        self.assertEqual(prepare_password("\u2168"), b"IX")  # ROMAN NUMERAL NINE
        self.assertEqual(prepare_password("\ufb01"), b"fi")  # LATIN SMALL LIGATURE FI
        self.assertEqual(prepare_password("e\u0301"), "\u00e9".encode("utf-8"))

    def test_prohibited_characters_fall_back_to_raw_bytes(self) -> None:
        for password in ["caf\u00e9\u0007", "\u00e9\ue000", "\u00e9\u200e"]:
            self.assertEqual(prepare_password(password), password.encode("utf-8"), repr(password))

    def test_bad_bidi_falls_back_to_raw_bytes(self) -> None:
        # An Arabic letter next to a Latin one.
        self.assertEqual(prepare_password("\u0627a"), "\u0627a".encode("utf-8"))

    def test_good_bidi_is_normalised(self) -> None:
        self.assertEqual(prepare_password("\u0627\u0628"), "\u0627\u0628".encode("utf-8"))

    def test_empty_after_mapping_falls_back_to_raw_bytes(self) -> None:
        self.assertEqual(prepare_password("\u00ad"), "\u00ad".encode("utf-8"))

    def test_invalid_utf8_bytes_are_used_raw(self) -> None:
        self.assertEqual(prepare_password(b"caf\xe9"), b"caf\xe9")

    def test_surrogate_escaped_text_stands_for_raw_bytes(self) -> None:
        self.assertEqual(
            prepare_password(b"caf\xe9".decode("utf-8", "surrogateescape")), b"caf\xe9"
        )

    def test_utf8_bytes_are_prepared(self) -> None:
        self.assertEqual(prepare_password("a\u00a0b".encode("utf-8")), b"a b")

    def test_agrees_with_scramp_on_valid_input(self) -> None:
        # scramp SASLpreps the password before deriving its verifier.
        for password in ["I\u00adX", "user", "\u00aa", "x\u00a0y", "\u2168", "\u00e9t\u00e9"]:
            salt, stored_key, server_key, _ = scramp.ScramMechanism().make_auth_info(
                password, iteration_count=4096, salt=RFC_SALT
            )
            self.assertEqual(
                make_verifier(password, salt=RFC_SALT),
                ScramVerifier(4096, salt, stored_key, server_key),
                repr(password),
            )

    def test_zero_width_space_becomes_space_like_postgresql(self) -> None:
        # U+200B is both a non-ASCII space and "mapped to nothing" in
        # RFC 3454; PostgreSQL checks the space table first.
        self.assertEqual(prepare_password("a\u200bb\u00e9"), "a b\u00e9".encode("utf-8"))

    def test_verifier_of_equivalent_passwords_is_the_same(self) -> None:
        self.assertEqual(make_verifier("\u2168", salt=RFC_SALT), make_verifier("IX", salt=RFC_SALT))


class PlainPasswordTests(SynchronousTestCase):
    def test_right_password_matches(self) -> None:
        self.assertTrue(verify_plain_password(RFC_VERIFIER, "pencil"))

    def test_wrong_password_does_not_match(self) -> None:
        self.assertFalse(verify_plain_password(RFC_VERIFIER, "pencil2"))

    def test_bytes_password_matches(self) -> None:
        self.assertTrue(verify_plain_password(RFC_VERIFIER, b"pencil"))


class MockVerifierTests(SynchronousTestCase):
    def test_same_user_gets_the_same_salt(self) -> None:
        self.assertEqual(mock_verifier("ghost", b"k" * 32), mock_verifier("ghost", b"k" * 32))

    def test_users_and_secrets_get_different_salts(self) -> None:
        self.assertNotEqual(
            mock_verifier("ghost", b"k" * 32).salt, mock_verifier("ghost2", b"k" * 32).salt
        )
        self.assertNotEqual(
            mock_verifier("ghost", b"k" * 32).salt, mock_verifier("ghost", b"j" * 32).salt
        )

    def test_looks_like_a_real_verifier(self) -> None:
        verifier = mock_verifier("ghost", b"k" * 32)
        self.assertEqual((verifier.iterations, len(verifier.salt)), (DEFAULT_ITERATIONS, 16))

    def test_no_password_gets_in(self) -> None:
        for password in ["", "ghost", "password"]:
            server = ScramServer(mock_verifier("ghost", b"k" * 32))
            self.assertRaises(
                ScramAuthenticationError, _exchange, ScramClient(password or "x"), server
            )
