"""
Tests for L{twisted_pgpool.auth.hba}: every field form of pool_hba.conf, record
order, IPv4 and IPv6 matching, the errors for what is not supported, and the
messages a refused client sees.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Optional

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.auth.hba import (
    VERIFY_CA,
    VERIFY_FULL,
    HbaError,
    HbaFile,
    HbaName,
    HbaRule,
    LocalNetworks,
    _parse_proc_fib_trie,
    _parse_proc_if_inet6,
    _parse_proc_route,
    discover_local_networks,
    no_match_message,
    reject_message,
)

LOCAL = LocalNetworks(
    addresses=frozenset(
        [
            ipaddress.ip_address("127.0.0.1"),
            ipaddress.ip_address("10.1.2.3"),
            ipaddress.ip_address("fd00::5"),
        ]
    ),
    networks=frozenset([ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("fd00::/64")]),
)


def parse(text: str) -> HbaFile:
    return HbaFile.parse(text, "pool_hba.conf", local_networks=LOCAL)


def match(
    hba: HbaFile,
    address: Optional[str] = "192.0.2.1",
    database: str = "db",
    user: str = "alice",
    ssl: bool = False,
) -> Optional[int]:
    """
    Match a connection (a Unix socket when C{address} is None) and return
    the line number of the deciding record.
    """
    rule = hba.match(
        connection_type="local" if address is None else "host",
        ssl=ssl,
        address=address,
        database=database,
        user=user,
    )
    return None if rule is None else rule.line_number


class ConnectionTypeTests(SynchronousTestCase):
    def test_local_matches_only_unix_sockets(self) -> None:
        hba = parse("local all all trust")
        self.assertEqual(match(hba, address=None), 1)
        self.assertIsNone(match(hba))

    def test_host_matches_tcp_with_or_without_ssl(self) -> None:
        hba = parse("host all all all md5")
        self.assertEqual((match(hba), match(hba, ssl=True), match(hba, address=None)), (1, 1, None))

    def test_hostssl_matches_only_ssl(self) -> None:
        hba = parse("hostssl all all all md5")
        self.assertEqual((match(hba), match(hba, ssl=True)), (None, 1))

    def test_hostnossl_matches_only_plain(self) -> None:
        hba = parse("hostnossl all all all md5")
        self.assertEqual((match(hba), match(hba, ssl=True)), (1, None))

    def test_hostnogssenc_is_host(self) -> None:
        hba = parse("hostnogssenc all all all md5")
        self.assertEqual(hba.rules[0].connection_type, "host")
        self.assertEqual((match(hba), match(hba, ssl=True)), (1, 1))

    def test_match_refuses_unknown_connection_type(self) -> None:
        hba = parse("host all all all md5")
        self.assertRaises(
            ValueError,
            hba.match,
            connection_type="tcp",
            ssl=False,
            address="1.2.3.4",
            database="d",
            user="u",
        )

    def test_host_connection_needs_an_address(self) -> None:
        hba = parse("host all all all md5")
        for address in (None, "not-an-ip"):
            self.assertRaises(
                ValueError,
                hba.match,
                connection_type="host",
                ssl=False,
                address=address,
                database="d",
                user="u",
            )


class DatabaseFieldTests(SynchronousTestCase):
    def test_all(self) -> None:
        self.assertEqual(match(parse("host all all all trust"), database="anything"), 1)

    def test_name_is_exact_and_case_sensitive(self) -> None:
        hba = parse("host sales all all trust")
        self.assertEqual((match(hba, database="sales"), match(hba, database="Sales")), (1, None))

    def test_comma_list(self) -> None:
        # As in PostgreSQL, the blank after "hr" ends the field, and the
        # stray comma only leads into the next one: ops is the user.
        hba = parse("local sales,hr , ops trust")
        self.assertEqual(hba.rules[0].databases, (HbaName("sales"), HbaName("hr")))
        self.assertEqual(hba.rules[0].users, (HbaName("ops"),))
        hba = parse("host sales,hr,ops all all trust")
        self.assertEqual(
            [match(hba, database=d) for d in ("sales", "hr", "ops", "x")], [1, 1, 1, None]
        )

    def test_blank_after_comma_continues_the_list(self) -> None:
        hba = parse("host sales, hr all all trust")
        self.assertEqual(hba.rules[0].databases, (HbaName("sales"), HbaName("hr")))

    def test_quoted_keyword_is_a_name(self) -> None:
        hba = parse('host "all" all all trust')
        self.assertEqual((match(hba, database="all"), match(hba, database="db")), (1, None))

    def test_quoted_name_with_blanks_commas_and_hash(self) -> None:
        hba = parse('host "my db, #1",other all all trust')
        self.assertEqual(hba.rules[0].databases, (HbaName("my db, #1"), HbaName("other")))
        self.assertEqual(match(hba, database="my db, #1"), 1)

    def test_doubled_quote_is_a_literal_quote(self) -> None:
        hba = parse('host "say ""hi""" all all trust')
        self.assertEqual(hba.rules[0].databases, (HbaName('say "hi"'),))

    def test_sameuser(self) -> None:
        hba = parse("host sameuser all all trust")
        self.assertEqual((match(hba, database="alice"), match(hba, database="bob")), (1, None))

    def test_quoted_sameuser_is_a_name(self) -> None:
        hba = parse('host "sameuser" all all trust')
        self.assertEqual((match(hba, database="alice"), match(hba, database="sameuser")), (None, 1))

    def test_replication_matches_no_proxied_connection(self) -> None:
        hba = parse("host replication all all trust")
        self.assertIsNone(match(hba, database="replication"))
        self.assertEqual(
            match(parse('host "replication" all all trust'), database="replication"), 1
        )

    def test_samerole_and_samegroup_are_refused(self) -> None:
        for keyword in ("samerole", "samegroup"):
            error = self.assertRaises(HbaError, parse, f"# x\nhost {keyword} all all trust")
            self.assertEqual(error.line_number, 2)
            self.assertIn("role membership", str(error))

    def test_file_inclusion_is_refused(self) -> None:
        error = self.assertRaises(HbaError, parse, "host @dbs all all trust")
        self.assertIn("pool_hba.conf:1: file inclusion", str(error))

    def test_regular_expression_is_refused(self) -> None:
        error = self.assertRaises(HbaError, parse, "host /^db all all trust")
        self.assertIn("regular expressions", str(error))


class UserFieldTests(SynchronousTestCase):
    def test_all(self) -> None:
        self.assertEqual(match(parse("host all all all trust"), user="anyone"), 1)

    def test_names_and_lists(self) -> None:
        hba = parse('host all alice,"Bob Smith" all trust')
        self.assertEqual(
            [match(hba, user=u) for u in ("alice", "Bob Smith", "bob smith", "carol")],
            [1, 1, None, None],
        )

    def test_quoted_all_is_a_name(self) -> None:
        hba = parse('host all "all" all trust')
        self.assertEqual((match(hba, user="all"), match(hba, user="alice")), (1, None))

    def test_group_membership_is_refused(self) -> None:
        error = self.assertRaises(HbaError, parse, "host all +admins all trust")
        self.assertIn("pool_hba.conf:1: group membership", str(error))
        self.assertIn("+admins", str(error))

    def test_quoted_plus_is_a_name(self) -> None:
        self.assertEqual(match(parse('host all "+admins" all trust'), user="+admins"), 1)

    def test_file_inclusion_is_refused(self) -> None:
        self.assertRaises(HbaError, parse, "host all @users all trust")

    def test_user_field_sameuser_is_a_name(self) -> None:
        self.assertEqual(match(parse("host all sameuser all trust"), user="sameuser"), 1)


class AddressFieldTests(SynchronousTestCase):
    def test_ipv4_cidr(self) -> None:
        hba = parse("host all all 192.0.2.0/24 trust")
        self.assertEqual((match(hba, "192.0.2.200"), match(hba, "192.0.3.1")), (1, None))

    def test_host_bits_in_cidr_are_ignored(self) -> None:
        hba = parse("host all all 192.0.2.77/24 trust")
        self.assertEqual(match(hba, "192.0.2.1"), 1)

    def test_single_host_and_everything(self) -> None:
        hba = parse("host all all 192.0.2.1/32 trust\nhost all all 0.0.0.0/0 md5")
        self.assertEqual((match(hba, "192.0.2.1"), match(hba, "8.8.8.8")), (1, 2))

    def test_ipv4_address_and_mask(self) -> None:
        hba = parse("host all all 192.0.2.0 255.255.255.0 trust")
        self.assertEqual(hba.rules[0].address, ipaddress.ip_network("192.0.2.0/24"))
        self.assertEqual((match(hba, "192.0.2.9"), match(hba, "192.0.9.9")), (1, None))

    def test_ipv6_cidr(self) -> None:
        hba = parse("host all all 2001:db8::/32 trust")
        self.assertEqual((match(hba, "2001:db8:1::1"), match(hba, "2001:db9::1")), (1, None))

    def test_ipv6_loopback(self) -> None:
        hba = parse("host all all ::1/128 trust")
        self.assertEqual((match(hba, "::1"), match(hba, "127.0.0.1")), (1, None))

    def test_ipv6_address_and_mask(self) -> None:
        hba = parse("host all all 2001:db8:: ffff:ffff:: trust")
        self.assertEqual(hba.rules[0].address, ipaddress.ip_network("2001:db8::/32"))

    def test_ipv4_record_does_not_match_ipv6_client(self) -> None:
        self.assertIsNone(match(parse("host all all 0.0.0.0/0 trust"), "2001:db8::1"))

    def test_ipv6_record_does_not_match_ipv4_client(self) -> None:
        self.assertIsNone(match(parse("host all all ::/0 trust"), "192.0.2.1"))

    def test_ipv4_mapped_client_matches_ipv4_record(self) -> None:
        self.assertEqual(match(parse("host all all 192.0.2.0/24 trust"), "::ffff:192.0.2.5"), 1)

    def test_zone_of_client_address_is_ignored(self) -> None:
        self.assertEqual(match(parse("host all all fe80::/10 trust"), "fe80::1%eth0"), 1)

    def test_all(self) -> None:
        hba = parse("host all all all trust")
        self.assertEqual((match(hba, "192.0.2.1"), match(hba, "2001:db8::1")), (1, 1))

    def test_samehost(self) -> None:
        hba = parse("host all all samehost trust")
        self.assertEqual(
            [match(hba, a) for a in ("10.1.2.3", "fd00::5", "127.0.0.1", "10.1.2.4")],
            [1, 1, 1, None],
        )

    def test_samenet(self) -> None:
        hba = parse("host all all samenet trust")
        self.assertEqual(
            [match(hba, a) for a in ("10.1.200.1", "fd00::99", "10.2.0.1", "fe80::1")],
            [1, 1, None, None],
        )

    def test_samehost_discovers_networks_when_not_given(self) -> None:
        hba = HbaFile.parse("host all all samehost trust")
        assert hba.local_networks is not None
        self.assertEqual(match(hba, "127.0.0.1"), 1)

    def test_no_discovery_without_samehost_or_samenet(self) -> None:
        self.assertIsNone(HbaFile.parse("host all all all trust").local_networks)

    def test_bad_addresses(self) -> None:
        for record, reason in [
            ("host all all 192.0.2.0/33 trust", 'invalid CIDR mask in address "192.0.2.0/33"'),
            ("host all all 192.0.2.0/x trust", "invalid CIDR mask"),
            ("host all all ::/129 trust", "invalid CIDR mask"),
            ("host all all 300.0.0.0/8 trust", 'invalid IP address "300.0.0.0"'),
            ("host all all 192.0.2.0 255.0.255.0 trust", 'invalid IP mask "255.0.255.0"'),
            ("host all all 192.0.2.0 ffff:: trust", "IP address and mask do not match"),
            ("host all all 192.0.2.0 nonsense trust", 'invalid IP mask "nonsense"'),
            ("host all all 192.0.2.0", "end-of-line before netmask specification"),
            ("host all all", "end-of-line before IP address"),
            ("host all all db.example.com trust", "host names"),
            ("host all all .example.com trust", "host names"),
            (
                "host all all 192.0.2.0/24,10.0.0.0/8 trust",
                "multiple values specified for host address",
            ),
        ]:
            error = self.assertRaises(HbaError, parse, record)
            self.assertIn(reason, str(error), record)
            self.assertTrue(str(error).startswith("pool_hba.conf:1: "), str(error))


class MethodTests(SynchronousTestCase):
    def test_supported_methods(self) -> None:
        for method in ("trust", "reject", "password", "md5", "scram-sha-256"):
            rule = parse(f"local all all {method}").rules[0]
            self.assertEqual(rule.method, method)

    def test_unsupported_methods_name_line_and_method(self) -> None:
        for method in ("pam", "ldap", "gss", "sspi", "ident", "peer", "radius"):
            error = self.assertRaises(HbaError, parse, f"\n\nlocal all all {method}")
            self.assertEqual(
                str(error), f'pool_hba.conf:3: authentication method "{method}" is not supported'
            )

    def test_invalid_method(self) -> None:
        error = self.assertRaises(HbaError, parse, "local all all letmein")
        self.assertIn('invalid authentication method "letmein"', str(error))

    def test_missing_method(self) -> None:
        self.assertIn(
            "end-of-line before authentication method",
            str(self.assertRaises(HbaError, parse, "local all all")),
        )

    def test_options_other_than_clientcert_are_refused(self) -> None:
        error = self.assertRaises(HbaError, parse, "hostssl all all all md5 clientname=DN")
        self.assertIn('authentication option "clientname" is not supported', str(error))
        error = self.assertRaises(HbaError, parse, "local all all trust extra")
        self.assertIn("not in name=value format", str(error))


class SyntaxTests(SynchronousTestCase):
    def test_comments_and_blank_lines(self) -> None:
        hba = parse("# header\n\n   \t\nlocal all all trust # why\n  # indented\n")
        self.assertEqual([r.line_number for r in hba.rules], [4])
        self.assertEqual(hba.rules[0].text, "local all all trust # why")

    def test_hash_inside_a_word_starts_a_comment(self) -> None:
        self.assertEqual(parse("local all all trust#comment").rules[0].method, "trust")

    def test_line_continuation(self) -> None:
        hba = parse(
            "# c\nhost all all \\\n    192.0.2.0 255.255.255.0 \\\n md5\nlocal all all trust"
        )
        self.assertEqual([(r.line_number, r.method) for r in hba.rules], [(2, "md5"), (5, "trust")])
        self.assertEqual(hba.rules[0].address, ipaddress.ip_network("192.0.2.0/24"))

    def test_continuation_inside_a_list(self) -> None:
        hba = parse("host db1,\\\ndb2 all all trust")
        self.assertEqual(hba.rules[0].databases, (HbaName("db1"), HbaName("db2")))

    def test_crlf_line_endings(self) -> None:
        hba = parse("local all all trust\r\nhost all all ::1/128 md5 \\\r\n\r\n")
        self.assertEqual([r.method for r in hba.rules], ["trust", "md5"])

    def test_error_in_continued_record_names_its_first_line(self) -> None:
        error = self.assertRaises(
            HbaError, parse, "local all all trust\nhost all \\\n all \\\n all pam"
        )
        self.assertEqual((error.source, error.line_number), ("pool_hba.conf", 2))

    def test_unterminated_quote(self) -> None:
        error = self.assertRaises(HbaError, parse, 'local "all all trust')
        self.assertIn("pool_hba.conf:1: unterminated quoted string", str(error))

    def test_invalid_connection_type(self) -> None:
        self.assertIn(
            'invalid connection type "hots"',
            str(self.assertRaises(HbaError, parse, "hots all all all trust")),
        )

    def test_multiple_connection_types(self) -> None:
        error = self.assertRaises(HbaError, parse, "local,host all all trust")
        self.assertIn("multiple values specified for connection type", str(error))

    def test_include_directives_are_refused(self) -> None:
        error = self.assertRaises(HbaError, parse, "include other.conf")
        self.assertIn('"include" directives are not supported', str(error))

    def test_hostgssenc_is_refused(self) -> None:
        self.assertIn(
            "hostgssenc", str(self.assertRaises(HbaError, parse, "hostgssenc all all all trust"))
        )

    def test_missing_fields(self) -> None:
        for record, reason in [
            ("local", "end-of-line before database specification"),
            ("local all", "end-of-line before role specification"),
        ]:
            self.assertIn(reason, str(self.assertRaises(HbaError, parse, record)))

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet='lochstanmd5rejc ",#\\\n/+@.:0123456789', max_size=80))
    def test_any_text_parses_or_raises_hba_error(self, text: str) -> None:
        try:
            parse(text)
        except HbaError:
            pass


class OrderTests(SynchronousTestCase):
    def test_first_match_wins(self) -> None:
        hba = parse("host all alice all reject\nhost all all all trust")
        rule = hba.match(
            connection_type="host", ssl=False, address="192.0.2.1", database="db", user="alice"
        )
        assert rule is not None
        self.assertEqual((rule.line_number, rule.method), (1, "reject"))
        self.assertEqual(match(hba, user="bob"), 2)

    def test_no_fall_through_after_a_matching_record(self) -> None:
        # Matching ignores methods: the md5 record decides even if the
        # client would fail it.
        hba = parse("host all all 192.0.2.0/24 md5\nhost all all all trust")
        self.assertEqual(match(hba, "192.0.2.1"), 1)

    def test_no_matching_record(self) -> None:
        hba = parse("local all all trust\nhost sales all all trust")
        self.assertIsNone(match(hba, database="hr"))

    def test_empty_file_matches_nothing(self) -> None:
        self.assertIsNone(match(parse("")))

    def test_pgpool_default_file(self) -> None:
        hba = parse(
            "local   all  all                trust\n"
            "host    all  all  127.0.0.1/32  trust\n"
            "host    all  all  ::1/128       trust\n"
        )
        self.assertEqual(
            [match(hba, a) for a in (None, "127.0.0.1", "::1", "192.0.2.1")], [1, 2, 3, None]
        )

    def test_rule_fields(self) -> None:
        rule = parse('hostssl "db",x all 10.0.0.0/8 scram-sha-256').rules[0]
        self.assertEqual(
            rule,
            HbaRule(
                source="pool_hba.conf",
                line_number=1,
                connection_type="hostssl",
                databases=(HbaName("db"), HbaName("x")),
                users=(HbaName("all", keyword=True),),
                address=ipaddress.ip_network("10.0.0.0/8"),
                method="scram-sha-256",
                text='hostssl "db",x all 10.0.0.0/8 scram-sha-256',
            ),
        )


class DecisionMemoryTests(SynchronousTestCase):
    """
    An L{HbaFile} remembers its decisions: a client connecting again with
    the same address, user, database and encryption is decided without
    walking the records (connection churn, issue 16).
    """

    def counting(self) -> list:
        """
        Count the records L{HbaRule.matches} is asked about.
        """
        asked: list = []
        real = HbaRule.matches

        def matches(rule: HbaRule, **kwargs) -> bool:
            asked.append(rule.line_number)
            return real(rule, **kwargs)

        self.patch(HbaRule, "matches", matches)
        return asked

    def test_the_same_client_again_walks_no_records(self) -> None:
        hba = parse("host all alice all reject\nhost all all 127.0.0.1/32 md5")
        asked = self.counting()
        first = [match(hba, "127.0.0.1", user="bob") for _ in range(3)]
        self.assertEqual((first, asked), ([2, 2, 2], [1, 2]))

    def test_each_part_of_the_connection_is_told_apart(self) -> None:
        hba = parse(
            "hostssl all all 127.0.0.1/32 cert\n"
            "host sales all 127.0.0.1/32 trust\n"
            "host all alice 127.0.0.1/32 reject\n"
            "host all all 127.0.0.1/32 md5\n"
            "local all all trust"
        )
        cases = [
            dict(address="127.0.0.1", user="bob", database="db", ssl=False),
            dict(address="127.0.0.1", user="bob", database="db", ssl=True),
            dict(address="127.0.0.1", user="bob", database="sales", ssl=False),
            dict(address="127.0.0.1", user="alice", database="db", ssl=False),
            dict(address="192.0.2.1", user="bob", database="db", ssl=False),
            dict(address=None, user="bob", database="db", ssl=False),
        ]
        expected = [4, 1, 2, 3, None, 5]
        self.assertEqual([match(hba, **case) for case in cases], expected)
        # And again, from memory, in another order.
        self.assertEqual([match(hba, **case) for case in reversed(cases)], expected[::-1])

    def test_a_bad_address_is_refused_every_time(self) -> None:
        hba = parse("host all all all trust")
        for _ in range(2):
            self.assertRaises(
                ValueError,
                hba.match,
                connection_type="host",
                ssl=False,
                address="not an address",
                database="db",
                user="bob",
            )

    def test_the_memory_is_bounded(self) -> None:
        from twisted_pgpool.auth import hba as module

        self.patch(module, "_MAX_DECISIONS", 10)
        hba = parse("host all all all md5")
        asked = self.counting()
        for n in range(25):
            self.assertEqual(match(hba, "127.0.0.1", user=f"user{n}"), 1)
        self.assertLessEqual(len(hba._decisions), 10)
        self.assertEqual(len(asked), 25)

    def test_a_reloaded_file_decides_anew(self) -> None:
        self.assertEqual(match(parse("host all all all md5"), "127.0.0.1"), 1)
        self.assertEqual(
            match(parse("host all all all reject\nhost all all all md5"), "127.0.0.1"), 1
        )
        self.assertEqual(parse("host all all all md5"), parse("host all all all md5"))


class LoadTests(SynchronousTestCase):
    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_load_names_the_file(self) -> None:
        path = self.write(b"local all all trust\nlocal all all ldap\n")
        error = self.assertRaises(HbaError, HbaFile.load, path)
        self.assertEqual(str(error), f'{path}:2: authentication method "ldap" is not supported')

    def test_load_reads_rules(self) -> None:
        hba = HbaFile.load(self.write(b"local all all trust\n"), local_networks=LOCAL)
        self.assertEqual(len(hba.rules), 1)

    def test_missing_file_is_an_error(self) -> None:
        error = self.assertRaises(HbaError, HbaFile.load, self.mktemp())
        self.assertIn("cannot read", str(error))
        self.assertEqual(error.line_number, 0)

    def test_invalid_utf8_names_the_line(self) -> None:
        path = self.write(b"local all all trust\nlocal caf\xe9 all trust\n")
        self.assertEqual(
            str(self.assertRaises(HbaError, HbaFile.load, path)), f"{path}:2: not valid UTF-8"
        )


class MessageTests(SynchronousTestCase):
    def test_no_match_message(self) -> None:
        self.assertEqual(
            no_match_message("127.0.0.1", "x", "y", False),
            'no pool_hba.conf entry for host "127.0.0.1", user "x", database "y", no encryption',
        )

    def test_no_match_message_with_ssl(self) -> None:
        self.assertTrue(no_match_message("::1", "x", "y", True).endswith(", SSL encryption"))

    def test_no_match_message_for_unix_socket(self) -> None:
        self.assertEqual(
            no_match_message(None, "x", "y", False),
            'no pool_hba.conf entry for host "[local]", user "x", database "y", no encryption',
        )

    def test_reject_message(self) -> None:
        self.assertEqual(
            reject_message("10.0.0.1", "x", "y", False),
            'pool_hba.conf rejects connection for host "10.0.0.1", user "x", database "y", no encryption',
        )


IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000005 02 40 00 80     eth0
fe800000000000000000000000000001 02 40 20 80     eth0
garbage line
"""

FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.1.0.0/16 2 0 2
        |-- 10.1.0.0
           /16 link UNICAST
        |-- 10.1.2.3
           /32 host LOCAL
        |-- 10.1.255.255
           /32 link BROADCAST
Local:
  +-- 127.0.0.0/8 2 0 2
     |-- 127.0.0.1
        /32 host LOCAL
"""

ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101010A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000010A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth1\t0000A8C0\t00000000\t0000\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""


class DiscoveryTests(SynchronousTestCase):
    def test_if_inet6(self) -> None:
        found = list(_parse_proc_if_inet6(IF_INET6))
        self.assertEqual(
            found,
            [
                (ipaddress.ip_address("::1"), ipaddress.ip_network("::1/128")),
                (ipaddress.ip_address("fd00::5"), ipaddress.ip_network("fd00::/64")),
                (ipaddress.ip_address("fe80::1"), ipaddress.ip_network("fe80::/64")),
            ],
        )

    def test_fib_trie_local_addresses(self) -> None:
        self.assertEqual(
            list(_parse_proc_fib_trie(FIB_TRIE)),
            [ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("127.0.0.1")],
        )

    def test_route_attached_networks(self) -> None:
        # Only the up, gatewayless, non-default route counts.  The file holds
        # host-order integers; build the sample for this machine's order.
        import sys

        text = ROUTE
        if sys.byteorder == "big":
            text = text.replace("0000010A", "0A010000").replace("0000FFFF", "FFFF0000")
        self.assertEqual(list(_parse_proc_route(text)), [ipaddress.ip_network("10.1.0.0/16")])

    def test_discover_from_proc_directory(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        for name, text in (("if_inet6", IF_INET6), ("fib_trie", FIB_TRIE)):
            with open(os.path.join(directory, name), "w") as f:
                f.write(text)
        found = discover_local_networks(proc_net=directory)
        self.assertTrue(found.is_same_host(ipaddress.ip_address("10.1.2.3")))
        self.assertTrue(found.is_same_net(ipaddress.ip_address("fd00::77")))
        self.assertTrue(found.is_same_host(ipaddress.ip_address("::1")))

    def test_discover_without_proc_still_knows_loopback(self) -> None:
        found = discover_local_networks(proc_net=self.mktemp())
        self.assertTrue(found.is_same_host(ipaddress.ip_address("127.0.0.1")))
        self.assertTrue(found.is_same_net(ipaddress.ip_address("127.0.0.2")))
        self.assertFalse(found.is_same_net(ipaddress.ip_address("192.0.2.254")))


class CertMethodTests(SynchronousTestCase):
    """
    The C{cert} method and the C{clientcert} option, with PostgreSQL's rules
    and wording.
    """

    def test_cert_on_a_hostssl_line_requires_a_full_verification(self) -> None:
        rule = parse("hostssl all all 127.0.0.1/32 cert").rules[0]
        self.assertEqual((rule.method, rule.clientcert), ("cert", VERIFY_FULL))

    def test_cert_on_a_host_line_is_refused_with_file_and_line(self) -> None:
        error = self.assertRaises(
            HbaError, parse, "local all all trust\nhost all all 127.0.0.1/32 cert"
        )
        self.assertEqual(
            str(error),
            "pool_hba.conf:2: cert authentication is only supported on hostssl connections",
        )

    def test_cert_on_hostnossl_and_local_lines_is_refused(self) -> None:
        for record in ("hostnossl all all all cert", "local all all cert"):
            error = self.assertRaises(HbaError, parse, record)
            self.assertIn(
                "cert authentication is only supported on hostssl connections", str(error)
            )

    def test_cert_with_clientcert_verify_full_is_accepted(self) -> None:
        rule = parse("hostssl all all all cert clientcert=verify-full").rules[0]
        self.assertEqual(rule.clientcert, VERIFY_FULL)

    def test_cert_with_clientcert_verify_ca_is_refused(self) -> None:
        error = self.assertRaises(HbaError, parse, "hostssl all all all cert clientcert=verify-ca")
        self.assertEqual(
            str(error),
            'pool_hba.conf:1: clientcert only accepts "verify-full" when using "cert" authentication',
        )

    def test_clientcert_on_another_method(self) -> None:
        for value, expected in (("verify-ca", VERIFY_CA), ("verify-full", VERIFY_FULL)):
            rule = parse(f"hostssl all all all md5 clientcert={value}").rules[0]
            self.assertEqual((rule.method, rule.clientcert), ("md5", expected))

    def test_other_methods_do_not_require_a_certificate(self) -> None:
        self.assertIsNone(parse("hostssl all all all scram-sha-256").rules[0].clientcert)

    def test_clientcert_outside_hostssl_is_refused(self) -> None:
        error = self.assertRaises(HbaError, parse, "host all all all md5 clientcert=verify-ca")
        self.assertEqual(
            str(error), 'pool_hba.conf:1: clientcert can only be configured for "hostssl" rows'
        )

    def test_invalid_clientcert_value_is_refused(self) -> None:
        error = self.assertRaises(HbaError, parse, "hostssl all all all md5 clientcert=1")
        self.assertEqual(str(error), 'pool_hba.conf:1: invalid value for clientcert: "1"')

    def test_cert_line_matches_only_encrypted_connections(self) -> None:
        hba = parse("hostssl all all 127.0.0.1/32 cert")
        arguments = dict(connection_type="host", address="127.0.0.1", database="app", user="app")
        self.assertEqual(hba.match(ssl=True, **arguments), hba.rules[0])
        self.assertIsNone(hba.match(ssl=False, **arguments))
