"""
Tests for L{twisted_pgpool.wire.messages}: the v3 wire codec.

Known messages are checked against bytes written out by hand from the
protocol documentation (not produced by the encoders under test); every
message type is round-tripped through its encoder (or, for the types the
proxy never says itself, a hand-built payload) and decoder; and every decoder
is fed truncated and random payloads, which must fail with
L{MessageFormatError} and nothing else.
"""

from __future__ import annotations

import struct
from typing import Callable, Dict, List, Tuple

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.wire import errors, messages
from twisted_pgpool.wire.messages import MessageFormatError

# -- helpers ---------------------------------------------------------------------


def split_message(data: bytes) -> Tuple[int, bytes]:
    """
    Split one complete typed message into its type and payload, checking
    that its length word counts exactly the bytes after the type byte.
    """
    if len(data) < 5:
        raise AssertionError(f"not a message: {data!r}")
    (length,) = struct.unpack("!I", data[1:5])
    if length != len(data) - 1:
        raise AssertionError(f"length word {length} does not match {len(data) - 1}")
    return data[0], data[5:]


def split_startup(data: bytes) -> bytes:
    """
    Check the length word of an untyped startup packet and return its body.
    """
    (length,) = struct.unpack("!I", data[:4])
    if length != len(data):
        raise AssertionError(f"length word {length} does not match {len(data)}")
    return data[4:]


def backend_roundtrip(data: bytes):
    message_type, payload = split_message(data)
    return messages.decode_backend(message_type, payload)


def frontend_roundtrip(data: bytes):
    message_type, payload = split_message(data)
    return messages.decode_frontend(message_type, payload)


def framed(type_char: bytes, payload: bytes) -> bytes:
    """
    Frame a message by hand, independently of L{messages.message}.
    """
    return type_char + struct.pack("!I", len(payload) + 4) + payload


# Text the codec can carry in a C string: no NUL, and encodable as UTF-8.
texts = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
    max_size=30,
)
int32s = st.integers(min_value=-(2**31), max_value=2**31 - 1)
int16s = st.integers(min_value=-(2**15), max_value=2**15 - 1)
oids = st.integers(min_value=0, max_value=2**31 - 1)
nullable_values = st.one_of(st.none(), st.binary(max_size=40))
format_codes = st.sampled_from([0, 1])


# -- exact bytes -----------------------------------------------------------------


class KnownBytesTests(SynchronousTestCase):
    """
    Encoders produce the bytes the protocol documentation describes.
    """

    def test_ready_for_query_idle(self) -> None:
        self.assertEqual(messages.ready_for_query(ord("I")), b"Z\x00\x00\x00\x05I")

    def test_ready_for_query_in_transaction(self) -> None:
        self.assertEqual(
            messages.ready_for_query(messages.TRANSACTION_IN_BLOCK), b"Z\x00\x00\x00\x05T"
        )

    def test_startup_message(self) -> None:
        self.assertEqual(
            messages.encode_startup_message({"user": "alice", "database": "db"}),
            b"\x00\x00\x00\x20"  # length 32, counting itself
            b"\x00\x03\x00\x00"  # protocol 3.0
            b"user\x00alice\x00database\x00db\x00"
            b"\x00",
        )

    def test_cancel_request(self) -> None:
        self.assertEqual(
            messages.encode_cancel_request(1234, 5678),
            b"\x00\x00\x00\x10"  # length 16
            b"\x04\xd2\x16\x2e"  # 80877102
            b"\x00\x00\x04\xd2"  # 1234
            b"\x00\x00\x16\x2e",  # 5678
        )

    def test_cancel_request_with_negative_key(self) -> None:
        self.assertEqual(
            messages.encode_cancel_request(1, -1),
            b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x00\x01\xff\xff\xff\xff",
        )

    def test_ssl_request(self) -> None:
        self.assertEqual(messages.encode_ssl_request(), b"\x00\x00\x00\x08\x04\xd2\x16\x2f")

    def test_gssenc_request(self) -> None:
        self.assertEqual(messages.encode_gssenc_request(), b"\x00\x00\x00\x08\x04\xd2\x16\x30")

    def test_query(self) -> None:
        self.assertEqual(messages.query("select 1"), b"Q\x00\x00\x00\x0dselect 1\x00")

    def test_terminate(self) -> None:
        self.assertEqual(messages.terminate(), b"X\x00\x00\x00\x04")

    def test_sync(self) -> None:
        self.assertEqual(messages.sync(), b"S\x00\x00\x00\x04")

    def test_authentication_ok(self) -> None:
        self.assertEqual(messages.authentication_ok(), b"R\x00\x00\x00\x08\x00\x00\x00\x00")

    def test_authentication_md5_password(self) -> None:
        self.assertEqual(
            messages.authentication_md5_password(b"\x01\x02\x03\x04"),
            b"R\x00\x00\x00\x0c\x00\x00\x00\x05\x01\x02\x03\x04",
        )

    def test_authentication_sasl(self) -> None:
        self.assertEqual(
            messages.authentication_sasl(["SCRAM-SHA-256"]),
            b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00",
        )

    def test_parameter_status(self) -> None:
        self.assertEqual(
            messages.parameter_status("TimeZone", "UTC"),
            b"S\x00\x00\x00\x11TimeZone\x00UTC\x00",
        )

    def test_backend_key_data(self) -> None:
        self.assertEqual(
            messages.backend_key_data(7, -2),
            b"K\x00\x00\x00\x0c\x00\x00\x00\x07\xff\xff\xff\xfe",
        )

    def test_password_message(self) -> None:
        self.assertEqual(messages.password_message(b"secret"), b"p\x00\x00\x00\x0bsecret\x00")

    def test_sasl_initial_response(self) -> None:
        self.assertEqual(
            messages.sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc"),
            b"p\x00\x00\x00\x21SCRAM-SHA-256\x00\x00\x00\x00\x0bn,,n=,r=abc",
        )

    def test_data_row_with_null(self) -> None:
        self.assertEqual(
            messages.data_row(["ab", None]),
            b"D\x00\x00\x00\x10\x00\x02\x00\x00\x00\x02ab\xff\xff\xff\xff",
        )

    def test_row_description_of_one_text_column(self) -> None:
        self.assertEqual(
            messages.row_description(["x"]),
            b"T\x00\x00\x00\x1a\x00\x01x\x00"
            b"\x00\x00\x00\x00"  # table oid
            b"\x00\x00"  # column number
            b"\x00\x00\x00\x19"  # type oid 25 (text)
            b"\xff\xff"  # type size -1
            b"\xff\xff\xff\xff"  # type modifier -1
            b"\x00\x00",  # text format
        )

    def test_command_complete(self) -> None:
        self.assertEqual(messages.command_complete("SELECT 1"), b"C\x00\x00\x00\x0dSELECT 1\x00")

    def test_parse(self) -> None:
        self.assertEqual(
            messages.parse("s1", "select $1", [23]),
            b"P\x00\x00\x00\x17s1\x00select $1\x00\x00\x01\x00\x00\x00\x17",
        )

    def test_execute(self) -> None:
        self.assertEqual(messages.execute("", 10), b"E\x00\x00\x00\x09\x00\x00\x00\x00\x0a")

    def test_error_response(self) -> None:
        self.assertEqual(
            errors.fatal("28000", "no").to_bytes(),
            b"E\x00\x00\x00\x1eSFATAL\x00VFATAL\x00C28000\x00Mno\x00\x00",
        )


class EncoderRefusalTests(SynchronousTestCase):
    """
    Encoders refuse what the wire format cannot carry.
    """

    def test_nul_in_query_text_is_refused(self) -> None:
        self.assertRaises(MessageFormatError, messages.query, "select\x001")

    def test_nul_in_parameter_name_is_refused(self) -> None:
        self.assertRaises(MessageFormatError, messages.encode_startup_message, {"us\x00er": "x"})

    def test_md5_salt_of_wrong_length_is_refused(self) -> None:
        self.assertRaises(MessageFormatError, messages.authentication_md5_password, b"\x01\x02\x03")


# -- startup packets -------------------------------------------------------------


class StartupPacketRoundTripTests(SynchronousTestCase):
    @given(st.dictionaries(texts.filter(bool), texts, max_size=6))
    @settings(max_examples=100)
    def test_startup_message_round_trip(self, parameters: Dict[str, str]) -> None:
        packet = messages.decode_startup_packet(
            split_startup(messages.encode_startup_message(parameters))
        )
        self.assertEqual(packet, messages.StartupMessage(messages.PROTOCOL_VERSION_3_0, parameters))

    def test_startup_message_version_fields(self) -> None:
        packet = messages.decode_startup_packet(
            split_startup(messages.encode_startup_message({"user": "u"}, (3 << 16) | 2))
        )
        self.assertEqual((packet.major, packet.minor), (3, 2))

    @given(int32s, int32s)
    @settings(max_examples=100)
    def test_cancel_request_round_trip(self, process_id: int, secret_key: int) -> None:
        packet = messages.decode_startup_packet(
            split_startup(messages.encode_cancel_request(process_id, secret_key))
        )
        self.assertEqual(packet, messages.CancelRequest(process_id, secret_key))

    def test_ssl_request_round_trip(self) -> None:
        self.assertEqual(
            messages.decode_startup_packet(split_startup(messages.encode_ssl_request())),
            messages.SSLRequest(),
        )

    def test_gssenc_request_round_trip(self) -> None:
        self.assertEqual(
            messages.decode_startup_packet(split_startup(messages.encode_gssenc_request())),
            messages.GSSENCRequest(),
        )

    def test_ssl_request_with_trailing_bytes_is_refused(self) -> None:
        self.assertRaises(
            MessageFormatError,
            messages.decode_startup_packet,
            b"\x04\xd2\x16\x2f\x00",
        )

    def test_startup_message_without_final_nul_is_refused(self) -> None:
        self.assertRaises(
            MessageFormatError,
            messages.decode_startup_packet,
            b"\x00\x03\x00\x00user\x00alice\x00",
        )

    def test_startup_message_with_name_but_no_value_is_refused(self) -> None:
        self.assertRaises(
            MessageFormatError,
            messages.decode_startup_packet,
            b"\x00\x03\x00\x00user\x00",
        )

    def test_every_truncation_of_a_cancel_request_is_refused(self) -> None:
        body = split_startup(messages.encode_cancel_request(1, 2))
        for end in range(len(body)):
            self.assertRaises(MessageFormatError, messages.decode_startup_packet, body[:end])

    def test_every_truncation_of_a_startup_message_is_refused(self) -> None:
        body = split_startup(messages.encode_startup_message({"user": "u", "a": "b"}))
        for end in range(len(body)):
            self.assertRaises(MessageFormatError, messages.decode_startup_packet, body[:end])


# -- backend messages ------------------------------------------------------------


class BackendRoundTripTests(SynchronousTestCase):
    """
    Every backend message type decodes to what was encoded.
    """

    def test_authentication_ok(self) -> None:
        self.assertEqual(
            backend_roundtrip(messages.authentication_ok()),
            messages.Authentication(messages.AUTH_OK, b""),
        )

    def test_authentication_cleartext_password(self) -> None:
        self.assertEqual(
            backend_roundtrip(messages.authentication_cleartext_password()),
            messages.Authentication(messages.AUTH_CLEARTEXT_PASSWORD, b""),
        )

    @given(st.binary(min_size=4, max_size=4))
    @settings(max_examples=50)
    def test_authentication_md5_password(self, salt: bytes) -> None:
        self.assertEqual(
            backend_roundtrip(messages.authentication_md5_password(salt)),
            messages.Authentication(messages.AUTH_MD5_PASSWORD, salt),
        )

    @given(st.lists(texts.filter(bool), max_size=4))
    @settings(max_examples=50)
    def test_authentication_sasl(self, mechanisms: List[str]) -> None:
        decoded = backend_roundtrip(messages.authentication_sasl(mechanisms))
        self.assertEqual(decoded.code, messages.AUTH_SASL)
        self.assertEqual(messages.decode_sasl_mechanisms(decoded.data), mechanisms)

    @given(st.binary(max_size=100))
    @settings(max_examples=50)
    def test_authentication_sasl_continue(self, data: bytes) -> None:
        self.assertEqual(
            backend_roundtrip(messages.authentication_sasl_continue(data)),
            messages.Authentication(messages.AUTH_SASL_CONTINUE, data),
        )

    @given(st.binary(max_size=100))
    @settings(max_examples=50)
    def test_authentication_sasl_final(self, data: bytes) -> None:
        self.assertEqual(
            backend_roundtrip(messages.authentication_sasl_final(data)),
            messages.Authentication(messages.AUTH_SASL_FINAL, data),
        )

    @given(texts, texts)
    @settings(max_examples=100)
    def test_parameter_status(self, name: str, value: str) -> None:
        self.assertEqual(
            backend_roundtrip(messages.parameter_status(name, value)),
            messages.ParameterStatus(name, value),
        )

    @given(int32s, int32s)
    @settings(max_examples=100)
    def test_backend_key_data(self, process_id: int, secret_key: int) -> None:
        self.assertEqual(
            backend_roundtrip(messages.backend_key_data(process_id, secret_key)),
            messages.BackendKeyData(process_id, secret_key),
        )

    @given(st.sampled_from(b"ITE"))
    def test_ready_for_query(self, status: int) -> None:
        self.assertEqual(
            backend_roundtrip(messages.ready_for_query(status)),
            messages.ReadyForQuery(status),
        )

    @given(int32s, st.lists(texts, max_size=4))
    @settings(max_examples=100)
    def test_negotiate_protocol_version(self, newest: int, options: List[str]) -> None:
        self.assertEqual(
            backend_roundtrip(messages.negotiate_protocol_version(newest, options)),
            messages.NegotiateProtocolVersion(newest, tuple(options)),
        )

    @given(st.lists(texts, max_size=5), oids)
    @settings(max_examples=100)
    def test_row_description(self, names: List[str], type_oid: int) -> None:
        self.assertEqual(
            backend_roundtrip(messages.row_description(names, type_oid)),
            messages.RowDescription(
                tuple(messages.Column(n, 0, 0, type_oid, -1, -1, 0) for n in names)
            ),
        )

    @given(st.lists(st.one_of(st.none(), texts), max_size=6))
    @settings(max_examples=100)
    def test_data_row(self, values: List) -> None:
        self.assertEqual(
            backend_roundtrip(messages.data_row(values)),
            messages.DataRow(tuple(None if v is None else v.encode("utf-8") for v in values)),
        )

    @given(texts)
    @settings(max_examples=50)
    def test_command_complete(self, tag: str) -> None:
        self.assertEqual(
            backend_roundtrip(messages.command_complete(tag)),
            messages.CommandComplete(tag),
        )

    def test_empty_query_response(self) -> None:
        self.assertEqual(
            backend_roundtrip(messages.empty_query_response()),
            messages.Empty(messages.EMPTY_QUERY_RESPONSE),
        )

    @given(
        st.sampled_from(["ERROR", "FATAL", "PANIC"]),
        st.text(alphabet="0123456789ABCDEFP", min_size=5, max_size=5),
        texts,
        st.one_of(st.none(), texts),
        st.one_of(st.none(), texts),
    )
    @settings(max_examples=100)
    def test_error_response(self, severity, sqlstate, text, detail, hint) -> None:
        error = errors.PgError(severity, sqlstate, text, detail, hint)
        decoded = backend_roundtrip(error.to_bytes())
        self.assertEqual(decoded.fields, error.fields())
        self.assertEqual(
            (decoded.severity, decoded.sqlstate, decoded.message),
            (severity, sqlstate, text),
        )

    def test_notice_response(self) -> None:
        data = errors.PgError("WARNING", "01000", "careful").to_notice()
        self.assertEqual(data[:1], b"N")
        self.assertEqual(
            backend_roundtrip(data).fields,
            {"S": "WARNING", "V": "WARNING", "C": "01000", "M": "careful"},
        )

    @given(st.binary(max_size=200))
    @settings(max_examples=50)
    def test_copy_data(self, data: bytes) -> None:
        self.assertEqual(
            backend_roundtrip(messages.copy_data(data)),
            messages.Raw(messages.COPY_DATA, data),
        )

    def test_copy_done(self) -> None:
        self.assertEqual(
            backend_roundtrip(messages.copy_done()), messages.Empty(messages.COPY_DONE)
        )

    def test_empty_messages(self) -> None:
        """
        The backend messages whose type says everything decode from an empty
        payload.
        """
        for type_char in b"23nIs1c":
            self.assertEqual(messages.decode_backend(type_char, b""), messages.Empty(type_char))

    @given(st.sampled_from(b"GHW"), format_codes, st.lists(format_codes, max_size=5))
    @settings(max_examples=50)
    def test_copy_responses(self, type_char: int, overall: int, columns: List[int]) -> None:
        payload = struct.pack("!bh", overall, len(columns)) + b"".join(
            struct.pack("!h", c) for c in columns
        )
        self.assertEqual(
            messages.decode_backend(type_char, payload),
            messages.CopyResponse(type_char, overall, tuple(columns)),
        )

    @given(int32s, texts, texts)
    @settings(max_examples=50)
    def test_notification_response(self, pid: int, channel: str, payload: str) -> None:
        data = framed(
            b"A",
            struct.pack("!i", pid)
            + channel.encode("utf-8")
            + b"\x00"
            + payload.encode("utf-8")
            + b"\x00",
        )
        self.assertEqual(
            backend_roundtrip(data), messages.NotificationResponse(pid, channel, payload)
        )

    @given(st.lists(oids, max_size=6))
    @settings(max_examples=50)
    def test_parameter_description(self, type_oids: List[int]) -> None:
        data = framed(
            b"t",
            struct.pack("!h", len(type_oids)) + b"".join(struct.pack("!i", o) for o in type_oids),
        )
        self.assertEqual(backend_roundtrip(data), messages.ParameterDescription(tuple(type_oids)))

    @given(nullable_values)
    @settings(max_examples=50)
    def test_function_call_response(self, result) -> None:
        body = struct.pack("!i", -1) if result is None else struct.pack("!i", len(result)) + result
        self.assertEqual(
            backend_roundtrip(framed(b"V", body)), messages.FunctionCallResponse(result)
        )


# -- frontend messages -----------------------------------------------------------


class FrontendRoundTripTests(SynchronousTestCase):
    """
    Every frontend message type decodes to what was encoded.
    """

    @given(texts)
    @settings(max_examples=100)
    def test_query(self, sql: str) -> None:
        self.assertEqual(frontend_roundtrip(messages.query(sql)), messages.Query(sql))

    def test_terminate(self) -> None:
        self.assertEqual(
            frontend_roundtrip(messages.terminate()), messages.Empty(messages.TERMINATE)
        )

    def test_sync(self) -> None:
        self.assertEqual(frontend_roundtrip(messages.sync()), messages.Empty(messages.SYNC))

    def test_flush(self) -> None:
        self.assertEqual(frontend_roundtrip(messages.flush()), messages.Empty(messages.FLUSH))

    @given(st.binary(max_size=60).filter(lambda b: b"\x00" not in b))
    @settings(max_examples=50)
    def test_password_message(self, password: bytes) -> None:
        decoded = frontend_roundtrip(messages.password_message(password))
        self.assertEqual(decoded.message_type, messages.PASSWORD_MESSAGE)
        self.assertEqual(messages.decode_password(decoded.data), password)

    @given(texts, st.binary(max_size=60))
    @settings(max_examples=50)
    def test_sasl_initial_response(self, mechanism: str, data: bytes) -> None:
        decoded = frontend_roundtrip(messages.sasl_initial_response(mechanism, data))
        self.assertEqual(
            messages.decode_sasl_initial_response(decoded.data),
            messages.SASLInitialResponse(mechanism, data),
        )

    def test_sasl_initial_response_without_data(self) -> None:
        self.assertEqual(
            messages.decode_sasl_initial_response(b"SCRAM-SHA-256\x00\xff\xff\xff\xff"),
            messages.SASLInitialResponse("SCRAM-SHA-256", None),
        )

    @given(st.binary(max_size=60))
    @settings(max_examples=50)
    def test_sasl_response(self, data: bytes) -> None:
        self.assertEqual(
            frontend_roundtrip(messages.sasl_response(data)),
            messages.Raw(messages.PASSWORD_MESSAGE, data),
        )

    @given(texts, texts, st.lists(oids, max_size=5))
    @settings(max_examples=100)
    def test_parse(self, name: str, sql: str, types: List[int]) -> None:
        self.assertEqual(
            frontend_roundtrip(messages.parse(name, sql, types)),
            messages.Parse(name, sql, tuple(types)),
        )

    @given(
        texts,
        texts,
        st.lists(nullable_values, max_size=5),
        st.lists(format_codes, max_size=5),
        st.lists(format_codes, max_size=5),
    )
    @settings(max_examples=100)
    def test_bind(self, portal, statement, parameters, parameter_formats, result_formats) -> None:
        self.assertEqual(
            frontend_roundtrip(
                messages.bind(portal, statement, parameters, parameter_formats, result_formats)
            ),
            messages.Bind(
                portal,
                statement,
                tuple(parameter_formats),
                tuple(parameters),
                tuple(result_formats),
            ),
        )

    @given(st.sampled_from("SP"), texts)
    @settings(max_examples=50)
    def test_describe(self, kind: str, name: str) -> None:
        self.assertEqual(
            frontend_roundtrip(messages.describe(kind, name)),
            messages.Describe(kind, name),
        )

    @given(st.sampled_from("SP"), texts)
    @settings(max_examples=50)
    def test_close(self, kind: str, name: str) -> None:
        self.assertEqual(frontend_roundtrip(messages.close(kind, name)), messages.Close(kind, name))

    @given(texts, int32s)
    @settings(max_examples=50)
    def test_execute(self, portal: str, max_rows: int) -> None:
        self.assertEqual(
            frontend_roundtrip(messages.execute(portal, max_rows)),
            messages.Execute(portal, max_rows),
        )

    @given(st.binary(max_size=200))
    @settings(max_examples=50)
    def test_copy_data(self, data: bytes) -> None:
        self.assertEqual(
            frontend_roundtrip(messages.copy_data(data)),
            messages.Raw(messages.COPY_DATA, data),
        )

    def test_copy_done(self) -> None:
        self.assertEqual(
            frontend_roundtrip(messages.copy_done()), messages.Empty(messages.COPY_DONE)
        )

    @given(texts)
    @settings(max_examples=50)
    def test_copy_fail(self, reason: str) -> None:
        self.assertEqual(frontend_roundtrip(messages.copy_fail(reason)), messages.CopyFail(reason))

    @given(
        oids,
        st.lists(nullable_values, max_size=5),
        st.lists(format_codes, max_size=5),
        format_codes,
    )
    @settings(max_examples=100)
    def test_function_call(self, oid, arguments, argument_formats, result_format) -> None:
        self.assertEqual(
            frontend_roundtrip(
                messages.function_call(oid, arguments, argument_formats, result_format)
            ),
            messages.FunctionCall(oid, tuple(argument_formats), tuple(arguments), result_format),
        )


# -- malformed payloads ----------------------------------------------------------

#: One valid message of each structured type, whose every proper prefix is
#: malformed.
_STRUCTURED_BACKEND = [
    messages.parameter_status("TimeZone", "UTC"),
    messages.backend_key_data(1, 2),
    messages.ready_for_query(),
    messages.negotiate_protocol_version(0, ["_pq_.x"]),
    messages.row_description(["a", "b"]),
    messages.data_row(["x", None]),
    messages.command_complete("SELECT 1"),
    errors.fatal("08P01", "bad").to_bytes(),
    errors.fatal("08P01", "bad").to_notice(),
    framed(b"G", b"\x00\x00\x01\x00\x00"),
    framed(b"A", b"\x00\x00\x00\x01ch\x00hello\x00"),
    framed(b"t", b"\x00\x01\x00\x00\x00\x17"),
    framed(b"V", b"\x00\x00\x00\x02ok"),
    messages.authentication_ok(),
]

_STRUCTURED_FRONTEND = [
    messages.query("select 1"),
    messages.parse("s", "select $1", [23]),
    messages.bind("p", "s", [b"1", None], [0], [1]),
    messages.describe("S", "s"),
    messages.close("P", "p"),
    messages.execute("p", 5),
    messages.copy_fail("oops"),
    messages.function_call(1, [b"a", None], [0], 0),
]


class MalformedPayloadTests(SynchronousTestCase):
    """
    Truncated or impossible payloads raise L{MessageFormatError}.
    """

    def test_every_truncation_of_a_backend_message_is_refused(self) -> None:
        for data in _STRUCTURED_BACKEND:
            message_type, payload = split_message(data)
            for end in range(len(payload)):
                with self.assertRaises(MessageFormatError, msg=f"{data!r}[:{end}]"):
                    messages.decode_backend(message_type, payload[:end])

    def test_every_truncation_of_a_frontend_message_is_refused(self) -> None:
        for data in _STRUCTURED_FRONTEND:
            message_type, payload = split_message(data)
            for end in range(len(payload)):
                with self.assertRaises(MessageFormatError, msg=f"{data!r}[:{end}]"):
                    messages.decode_frontend(message_type, payload[:end])

    def test_trailing_bytes_are_refused(self) -> None:
        for data, decode in [(d, messages.decode_backend) for d in _STRUCTURED_BACKEND[:7]] + [
            (d, messages.decode_frontend) for d in _STRUCTURED_FRONTEND
        ]:
            message_type, payload = split_message(data)
            with self.assertRaises(MessageFormatError, msg=repr(data)):
                decode(message_type, payload + b"\x00")

    def test_payload_on_an_empty_message_is_refused(self) -> None:
        self.assertRaises(MessageFormatError, messages.decode_frontend, messages.SYNC, b"x")

    def test_unknown_backend_type_is_refused(self) -> None:
        self.assertRaises(MessageFormatError, messages.decode_backend, ord("y"), b"")

    def test_unknown_frontend_type_is_refused(self) -> None:
        self.assertRaises(MessageFormatError, messages.decode_frontend, ord("y"), b"")

    def test_ready_for_query_with_unknown_status_is_refused(self) -> None:
        self.assertRaises(MessageFormatError, messages.decode_ready_for_query, b"X")

    def test_describe_of_unknown_kind_is_refused(self) -> None:
        self.assertRaises(MessageFormatError, messages.decode_describe, b"Xname\x00")

    def test_data_row_value_longer_than_payload_is_refused(self) -> None:
        self.assertRaises(
            MessageFormatError,
            messages.decode_data_row,
            b"\x00\x01\x00\x00\x00\x10ab",
        )

    def test_data_row_with_negative_value_length_is_refused(self) -> None:
        self.assertRaises(
            MessageFormatError,
            messages.decode_data_row,
            b"\x00\x01\xff\xff\xff\xfe",
        )

    def test_password_with_inner_nul_is_refused(self) -> None:
        self.assertRaises(MessageFormatError, messages.decode_password, b"a\x00b\x00")

    def test_password_without_nul_is_refused(self) -> None:
        self.assertRaises(MessageFormatError, messages.decode_password, b"secret")

    def test_negative_counts_are_refused(self) -> None:
        """
        A count word is an Int16 that cannot be negative; PostgreSQL reads it
        as such and fails.  A decoder that read -1 as "no items" would accept
        a malformed message as a valid empty one.
        """
        minus_one = b"\xff\xff"
        cases: List[Tuple[str, Callable[[bytes], object], bytes]] = [
            ("DataRow", messages.decode_data_row, minus_one),
            ("RowDescription", messages.decode_row_description, minus_one),
            ("ParameterDescription", messages.decode_parameter_description, minus_one),
            ("Parse", messages.decode_parse, b"\x00select 1\x00" + minus_one),
            (
                "Bind",
                messages.decode_bind,
                b"\x00\x00" + minus_one + b"\x00\x00\x00\x00",
            ),
            (
                "CopyInResponse",
                lambda p: messages.decode_copy_response(messages.COPY_IN_RESPONSE, p),
                b"\x00" + minus_one,
            ),
        ]
        accepted = []
        for name, decode, payload in cases:
            try:
                decode(payload)
            except MessageFormatError:
                pass
            else:
                accepted.append(name)
        self.assertEqual(accepted, [])


_EVERY_TYPE = st.integers(min_value=0, max_value=255)


class GarbageTests(SynchronousTestCase):
    """
    No payload, however malformed, makes a decoder raise anything but
    L{MessageFormatError}.
    """

    def assert_decodes_or_refuses(self, decode: Callable[..., object], *args: object) -> None:
        """
        C{decode(*args)} either returns or raises L{MessageFormatError}.
        """
        try:
            decode(*args)
        except MessageFormatError:
            pass
        except Exception as e:
            self.fail(f"{getattr(decode, '__name__', decode)}{args!r} raised {e!r}")

    @given(_EVERY_TYPE, st.binary(max_size=64))
    @settings(max_examples=200)
    def test_decode_backend_raises_only_message_format_error(
        self, message_type: int, payload: bytes
    ) -> None:
        self.assert_decodes_or_refuses(messages.decode_backend, message_type, payload)

    @given(st.sampled_from(sorted(messages.BACKEND_TYPES)), st.binary(max_size=64))
    @settings(max_examples=200)
    def test_known_backend_types_raise_only_message_format_error(
        self, message_type: int, payload: bytes
    ) -> None:
        self.assert_decodes_or_refuses(messages.decode_backend, message_type, payload)

    @given(st.sampled_from(sorted(messages.FRONTEND_TYPES)), st.binary(max_size=64))
    @settings(max_examples=200)
    def test_known_frontend_types_raise_only_message_format_error(
        self, message_type: int, payload: bytes
    ) -> None:
        self.assert_decodes_or_refuses(messages.decode_frontend, message_type, payload)

    @given(_EVERY_TYPE, st.binary(max_size=64))
    @settings(max_examples=200)
    def test_decode_frontend_raises_only_message_format_error(
        self, message_type: int, payload: bytes
    ) -> None:
        self.assert_decodes_or_refuses(messages.decode_frontend, message_type, payload)

    @given(
        st.one_of(
            st.binary(max_size=64),
            # Bodies that start with a meaningful request code are more
            # interesting than random ones.
            st.builds(
                lambda code, rest: struct.pack("!I", code) + rest,
                st.sampled_from(
                    [
                        messages.PROTOCOL_VERSION_3_0,
                        messages.CANCEL_REQUEST_CODE,
                        messages.SSL_REQUEST_CODE,
                        messages.GSSENC_REQUEST_CODE,
                    ]
                ),
                st.binary(max_size=40),
            ),
        )
    )
    @settings(max_examples=200)
    def test_decode_startup_packet_raises_only_message_format_error(self, body: bytes) -> None:
        self.assert_decodes_or_refuses(messages.decode_startup_packet, body)

    @given(st.binary(max_size=64))
    @settings(max_examples=200)
    def test_authentication_sub_decoders_raise_only_message_format_error(self, data: bytes) -> None:
        for decode in (
            messages.decode_sasl_mechanisms,
            messages.decode_sasl_initial_response,
            messages.decode_password,
        ):
            self.assert_decodes_or_refuses(decode, data)


# -- client text -------------------------------------------------------------------


class ClientTextTests(SynchronousTestCase):
    """
    SQL text is read in the session's client_encoding, never fails to
    decode, and goes back out as the bytes it came as.
    """

    def test_codec_of_each_encoding_postgresql_reports(self) -> None:
        self.assertEqual(
            [
                messages.client_codec(name)
                for name in ("UTF8", "LATIN1", "WIN1252", "SJIS", "EUC_JP", "SQL_ASCII")
            ],
            ["utf-8", "latin-1", "cp1252", "cp932", "euc-jp", "utf-8"],
        )

    def test_every_codec_exists(self) -> None:
        for codec in messages.CLIENT_CODECS.values():
            "x".encode(codec)  # raises LookupError for an unknown codec

    def test_aliases_and_case_are_tolerated(self) -> None:
        self.assertEqual(
            (messages.client_codec("latin1"), messages.client_codec("euc-jp")),
            ("latin-1", "euc-jp"),
        )

    def test_an_encoding_without_a_codec_is_read_as_utf8(self) -> None:
        self.assertEqual(messages.client_codec("MULE_INTERNAL"), "utf-8")

    def test_query_is_read_in_the_given_codec(self) -> None:
        self.assertEqual(
            messages.decode_query(b"SELECT 'caf\xe9'\x00", "latin-1").sql, "SELECT 'café'"
        )

    def test_parse_text_is_read_in_the_given_codec(self) -> None:
        parse = messages.decode_parse(b"s1\x00SELECT '\x83\x5c'\x00\x00\x00", "cp932")
        self.assertEqual((parse.statement, parse.sql), ("s1", "SELECT 'ソ'"))

    @given(
        st.binary(max_size=64).filter(lambda b: b"\x00" not in b),
        st.sampled_from(["utf-8", "latin-1", "cp1252", "koi8-r", "iso8859-7"]),
    )
    @settings(max_examples=300)
    def test_any_bytes_decode_and_encode_back_unchanged(self, text: bytes, codec: str) -> None:
        payload = text + b"\x00"
        sql = messages.decode_query(payload, codec).sql
        self.assertEqual(messages.query(sql, codec), messages.message(messages.QUERY, payload))

    @given(
        st.binary(max_size=64).filter(lambda b: b"\x00" not in b),
        st.sampled_from(sorted(set(messages.CLIENT_CODECS.values()))),
    )
    @settings(max_examples=500)
    def test_any_bytes_decode_and_encode_back_to_the_same_text(
        self, text: bytes, codec: str
    ) -> None:
        """
        Some multi-byte encodings have two byte sequences for one character
        (CP932's NEC and IBM extensions): encoded again, such text may take
        the other one, which the server reads as the same character.  That
        is why the proxy forwards the bytes it received, and encodes text
        again only to replay a setting on another connection.
        """
        sql = messages.decode_query(text + b"\x00", codec).sql
        again = messages.decode_query(messages.query(sql, codec)[5:], codec).sql
        self.assertEqual(again, sql)
