"""
pool_hba.conf: which clients may connect, and how they must authenticate.

The file has PostgreSQL's pg_hba.conf syntax and the same meaning: records
are tried in order, the first whose connection type, database, user and
address fit the connection decides the authentication method, and there is
no fall-through to later records; when none fits, the connection is refused.

Supported::

    local      DATABASE USER METHOD
    host       DATABASE USER ADDRESS METHOD
    hostssl    DATABASE USER ADDRESS METHOD
    hostnossl  DATABASE USER ADDRESS METHOD
    host...    DATABASE USER IP-ADDRESS IP-MASK METHOD

  - DATABASE: C{all}, C{sameuser} (the database is named like the user),
    C{replication} (never matches: the proxy carries no replication
    connections), names, comma-separated lists; double quotes make a
    keyword an ordinary name.
  - USER: C{all}, names, comma-separated lists.
  - ADDRESS: IPv4 or IPv6 in CIDR form or followed by a mask, C{all},
    C{samehost}, C{samenet}.
  - METHOD: C{trust}, C{reject}, C{password}, C{md5}, C{scram-sha-256},
    and C{cert} (C{hostssl} records only, as in PostgreSQL: the client
    certificate's Common Name must be the user name).
  - OPTIONS: C{clientcert=verify-ca} or C{clientcert=verify-full} on
    C{hostssl} records (PostgreSQL's meaning: a valid client certificate is
    required, and with C{verify-full} its Common Name must also be the user
    name); C{cert} records are always C{verify-full}.
  - C{#} comments, and C{\\} at the end of a line to continue it.

Refused with an error naming the line, rather than silently treated as
something else (which could let a connection through that the
administrator meant to stop): C{+group} and C{samerole}/C{samegroup} (the
proxy does not know role membership), C{@file} inclusion, C{/regex} names,
host names, C{include} directives, C{hostgssenc}, authentication options
other than C{clientcert}, and the methods the proxy does not implement
(C{pam}, C{ldap}, C{gss}, ...).

C{samehost} and C{samenet} need this machine's addresses and networks,
which no portable API gives: see L{discover_local_networks}.

Parsing is pure; only L{HbaFile.load} reads a file and only
L{discover_local_networks} (called when the file uses C{samehost} or
C{samenet}) looks at the system.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Dict, FrozenSet, Iterable, Iterator, List, Optional, Tuple, Union

import attr

__all__ = [
    "SUPPORTED_METHODS",
    "VERIFY_CA",
    "VERIFY_FULL",
    "HbaError",
    "HbaName",
    "HbaRule",
    "HbaFile",
    "LocalNetworks",
    "discover_local_networks",
    "no_match_message",
    "reject_message",
]

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

SUPPORTED_METHODS = ("trust", "reject", "password", "md5", "scram-sha-256", "cert")
"""
The authentication methods a record may name.
"""

_UNSUPPORTED_METHODS = frozenset(
    ["pam", "ldap", "gss", "sspi", "ident", "peer", "radius", "bsd", "oauth", "krb5", "crypt"]
)
#: The values of the C{clientcert} option (PostgreSQL 14's).
VERIFY_CA = "verify-ca"
VERIFY_FULL = "verify-full"

_CONNECTION_TYPES = frozenset(["local", "host", "hostssl", "hostnossl"])
_ADDRESS_KEYWORDS = frozenset(["all", "samehost", "samenet"])
_BLANKS = " \t\r\n\f\v"


class HbaError(Exception):
    """
    pool_hba.conf could not be read or has a record the proxy cannot honour.

    @ivar source: The file name.
    @ivar line_number: The line the record starts on, or 0 for the whole
        file.
    @ivar reason: What is wrong, without the location.
    """

    def __init__(self, source: str, line_number: int, reason: str) -> None:
        self.source = source
        self.line_number = line_number
        self.reason = reason
        location = f"{source}:{line_number}" if line_number else source
        super().__init__(f"{location}: {reason}")


@attr.frozen
class _Token:
    text: str
    quoted: bool


@attr.frozen
class HbaName:
    """
    One entry of a DATABASE or USER field.

    @ivar value: The name, or the keyword.
    @ivar keyword: C{True} for an unquoted keyword (C{all}, C{sameuser},
        C{replication}); C{False} for a name, compared exactly.
    """

    value: str
    keyword: bool = False


@attr.frozen
class LocalNetworks:
    """
    What C{samehost} and C{samenet} compare client addresses with.

    @ivar addresses: This machine's own addresses.
    @ivar networks: The networks this machine is directly attached to.
    """

    addresses: FrozenSet[IPAddress]
    networks: FrozenSet[IPNetwork]

    def is_same_host(self, address: IPAddress) -> bool:
        return address in self.addresses

    def is_same_net(self, address: IPAddress) -> bool:
        return any(
            network.version == address.version and address in network for network in self.networks
        )


@attr.frozen
class HbaRule:
    """
    One record of pool_hba.conf.

    @ivar source: The file the record comes from.
    @ivar line_number: The line it starts on.
    @ivar connection_type: C{local}, C{host}, C{hostssl} or C{hostnossl}.
    @ivar databases: The DATABASE field.
    @ivar users: The USER field.
    @ivar address: C{None} for C{local}; C{"all"}, C{"samehost"},
        C{"samenet"} or a network otherwise.
    @ivar method: One of L{SUPPORTED_METHODS}.
    @ivar text: The record as written, for logs.
    @ivar clientcert: C{None} when a client certificate is not required;
        L{VERIFY_CA} when a valid one is; L{VERIFY_FULL} when its Common
        Name must also be the user name (always so for C{cert} records).
    """

    source: str
    line_number: int
    connection_type: str
    databases: Tuple[HbaName, ...]
    users: Tuple[HbaName, ...]
    address: Union[None, str, IPNetwork]
    method: str
    text: str
    clientcert: Optional[str] = None

    def matches(
        self,
        *,
        connection_type: str,
        ssl: bool,
        address: Optional[IPAddress],
        database: str,
        user: str,
        local_networks: Optional[LocalNetworks],
    ) -> bool:
        """
        Tell whether this record applies to a connection.

        @param connection_type: C{"local"} or C{"host"}.
        @param ssl: Whether the connection is encrypted.
        @param address: The client's address for C{host} connections,
            IPv4-mapped IPv6 addresses already turned into IPv4.
        @param local_networks: Required if this record uses C{samehost} or
            C{samenet}.
        """
        return (
            self._type_matches(connection_type, ssl)
            and _database_matches(self.databases, database, user)
            and _user_matches(self.users, user)
            and self._address_matches(address, local_networks)
        )

    def _type_matches(self, connection_type: str, ssl: bool) -> bool:
        if self.connection_type == "local":
            return connection_type == "local"
        if connection_type != "host":
            return False
        if self.connection_type == "hostssl":
            return ssl
        if self.connection_type == "hostnossl":
            return not ssl
        return True

    def _address_matches(
        self, address: Optional[IPAddress], local_networks: Optional[LocalNetworks]
    ) -> bool:
        if self.address is None or self.address == "all":
            return True
        if address is None:
            return False
        if self.address == "samehost" or self.address == "samenet":
            if local_networks is None:
                raise ValueError(f"{self.address} needs the local networks")
            if self.address == "samehost":
                return local_networks.is_same_host(address)
            return local_networks.is_same_net(address)
        assert not isinstance(self.address, str)
        return self.address.version == address.version and address in self.address


def _database_matches(names: Iterable[HbaName], database: str, user: str) -> bool:
    for name in names:
        if name.keyword:
            if name.value == "all":
                return True
            if name.value == "sameuser" and database == user:
                return True
            # "replication" matches only replication connections, which the
            # proxy does not carry.
        elif name.value == database:
            return True
    return False


def _user_matches(names: Iterable[HbaName], user: str) -> bool:
    return any(
        (name.keyword and name.value == "all") or (not name.keyword and name.value == user)
        for name in names
    )


def _logical_lines(text: str) -> Iterator[Tuple[int, str]]:
    """
    Join continued lines (a C{\\} as last character) and yield each logical
    line with the number of the line it starts on.
    """
    physical = text.split("\n")
    index = 0
    while index < len(physical):
        start = index + 1
        line = physical[index]
        if line.endswith("\r"):
            line = line[:-1]
        while line.endswith("\\"):
            line = line[:-1]
            index += 1
            if index >= len(physical):
                break
            following = physical[index]
            line += following[:-1] if following.endswith("\r") else following
        index += 1
        yield start, line


def _tokenize(line: str) -> List[List[_Token]]:
    """
    Split a logical line into fields, each a list of comma-separated tokens,
    the way PostgreSQL does: blanks separate fields, commas separate tokens
    within a field, double quotes protect blanks, commas and C{#}, and a
    doubled double quote inside quotes is a literal one.

    @raise ValueError: For an unterminated quoted string.
    """
    fields: List[List[_Token]] = []
    field: List[_Token] = []
    position = 0
    end = len(line)
    while True:
        while position < end and line[position] in _BLANKS:
            position += 1
        characters: List[str] = []
        in_quote = saw_quote = was_quote = saw_comma = False
        while position < end and (in_quote or line[position] not in _BLANKS):
            character = line[position]
            position += 1
            if character == "#" and not in_quote:
                position = end
                break
            if character == "," and not in_quote:
                saw_comma = True
                break
            if character != '"' or was_quote:
                characters.append(character)
            was_quote = (not was_quote) if (in_quote and character == '"') else False
            if character == '"':
                in_quote = not in_quote
                saw_quote = True
        if in_quote:
            raise ValueError("unterminated quoted string")
        if characters or saw_quote:
            field.append(_Token("".join(characters), saw_quote))
        if saw_comma:
            continue
        if field:
            fields.append(field)
            field = []
        if position >= end:
            return fields


class _RecordParser:
    """
    Turns one tokenised record into an L{HbaRule}, with PostgreSQL's error
    wording where there is one.
    """

    def __init__(
        self, source: str, line_number: int, text: str, fields: List[List[_Token]]
    ) -> None:
        self.source = source
        self.line_number = line_number
        self.text = text
        self.fields = fields
        self.index = 0

    def error(self, reason: str) -> HbaError:
        return HbaError(self.source, self.line_number, reason)

    def next_field(self, before: str) -> List[_Token]:
        if self.index >= len(self.fields):
            raise self.error(f"end-of-line before {before}")
        field = self.fields[self.index]
        self.index += 1
        return field

    def single(self, field: List[_Token], what: str) -> _Token:
        if len(field) != 1:
            raise self.error(f"multiple values specified for {what}")
        return field[0]

    def parse(self) -> HbaRule:
        connection_type = self.parse_connection_type()
        databases = tuple(self.parse_database(t) for t in self.next_field("database specification"))
        users = tuple(self.parse_user(t) for t in self.next_field("role specification"))
        address: Union[None, str, IPNetwork] = None
        if connection_type != "local":
            address = self.parse_address()
        method = self.parse_method()
        if method == "cert" and connection_type != "hostssl":
            raise self.error("cert authentication is only supported on hostssl connections")
        clientcert = VERIFY_FULL if method == "cert" else None
        while self.index < len(self.fields):
            option = ",".join(t.text for t in self.fields[self.index])
            self.index += 1
            if "=" not in option:
                raise self.error(f"authentication option not in name=value format: {option}")
            name, value = option.split("=", 1)
            if name != "clientcert":
                raise self.error(f'authentication option "{name}" is not supported')
            clientcert = self.parse_clientcert(connection_type, method, value)
        return HbaRule(
            source=self.source,
            line_number=self.line_number,
            connection_type=connection_type,
            databases=databases,
            users=users,
            address=address,
            method=method,
            text=self.text,
            clientcert=clientcert,
        )

    def parse_clientcert(self, connection_type: str, method: str, value: str) -> str:
        """
        The C{clientcert} option, with PostgreSQL's checks and wording.
        """
        if connection_type != "hostssl":
            raise self.error('clientcert can only be configured for "hostssl" rows')
        if value == VERIFY_FULL:
            return VERIFY_FULL
        if value == VERIFY_CA:
            if method == "cert":
                raise self.error(
                    'clientcert only accepts "verify-full" when using "cert" authentication'
                )
            return VERIFY_CA
        raise self.error(f'invalid value for clientcert: "{value}"')

    def parse_connection_type(self) -> str:
        token = self.single(self.next_field("connection type"), "connection type")
        value = token.text
        if not token.quoted and value in ("include", "include_if_exists", "include_dir"):
            raise self.error(f'"{value}" directives are not supported')
        if value == "hostnogssenc":
            # No connection through the proxy uses GSSAPI encryption, so
            # this means the same as "host".
            return "host"
        if value == "hostgssenc":
            raise self.error(
                "hostgssenc records are not supported: the proxy does not offer GSSAPI encryption"
            )
        if value not in _CONNECTION_TYPES:
            raise self.error(f'invalid connection type "{value}"')
        return value

    def parse_database(self, token: _Token) -> HbaName:
        value = token.text
        if token.quoted:
            return HbaName(value)
        if value in ("all", "sameuser", "replication"):
            return HbaName(value, keyword=True)
        if value in ("samerole", "samegroup"):
            raise self.error(f'"{value}" is not supported: the proxy does not know role membership')
        self.refuse_special(value)
        return HbaName(value)

    def parse_user(self, token: _Token) -> HbaName:
        value = token.text
        if token.quoted:
            return HbaName(value)
        if value == "all":
            return HbaName(value, keyword=True)
        if value.startswith("+"):
            raise self.error(
                f'group membership ("{value}") is not supported: the proxy does not know role membership'
            )
        self.refuse_special(value)
        return HbaName(value)

    def refuse_special(self, value: str) -> None:
        if value.startswith("@"):
            raise self.error(f'file inclusion ("{value}") is not supported')
        if value.startswith("/"):
            raise self.error(f'regular expressions ("{value}") are not supported')

    def parse_address(self) -> Union[str, IPNetwork]:
        token = self.single(self.next_field("IP address"), "host address")
        value = token.text
        if not token.quoted and value in _ADDRESS_KEYWORDS:
            return value
        if "/" in value:
            address_text, prefix_text = value.split("/", 1)
            address = self.ip_address(address_text)
            if (
                not (prefix_text.isascii() and prefix_text.isdigit())
                or int(prefix_text) > address.max_prefixlen
            ):
                raise self.error(f'invalid CIDR mask in address "{value}"')
            return ipaddress.ip_network(f"{address}/{int(prefix_text)}", strict=False)
        address = self.ip_address(value)
        mask_token = self.single(self.next_field("netmask specification"), "netmask")
        mask = self.ip_address(mask_token.text, what="IP mask")
        if mask.version != address.version:
            raise self.error("IP address and mask do not match")
        prefix = _prefix_length(mask)
        if prefix is None:
            raise self.error(f'invalid IP mask "{mask_token.text}"')
        return ipaddress.ip_network(f"{address}/{prefix}", strict=False)

    def ip_address(self, text: str, what: str = "IP address") -> IPAddress:
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            pass
        if what == "IP address" and text and not text[0].isdigit() and ":" not in text:
            raise self.error(
                f'host names ("{text}") are not supported; use an IP address, '
                "all, samehost or samenet"
            )
        raise self.error(f'invalid {what} "{text}"')

    def parse_method(self) -> str:
        method = self.single(self.next_field("authentication method"), "authentication type").text
        if method in SUPPORTED_METHODS:
            return method
        if method in _UNSUPPORTED_METHODS:
            raise self.error(f'authentication method "{method}" is not supported')
        raise self.error(f'invalid authentication method "{method}"')


def _prefix_length(mask: IPAddress) -> Optional[int]:
    """
    @return: The prefix length a netmask stands for, or C{None} if its one
        bits are not contiguous.
    """
    bits = int(mask)
    inverted = bits ^ ((1 << mask.max_prefixlen) - 1)
    if inverted & (inverted + 1):
        return None
    return mask.max_prefixlen - inverted.bit_length()


#: How many decisions an L{HbaFile} remembers before it forgets them all.
_MAX_DECISIONS = 4096


def _client_address(address: str) -> IPAddress:
    # Twisted may report "fe80::1%eth0"; the zone does not take part in
    # matching.  Dual-stack listeners report IPv4 clients as ::ffff:a.b.c.d,
    # which IPv4 records are meant to match.
    parsed = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


@attr.frozen
class HbaFile:
    """
    A parsed pool_hba.conf.

    @ivar source: The file name, for messages.
    @ivar rules: The records, in file order.
    @ivar local_networks: This machine's addresses and networks, present
        when a record uses C{samehost} or C{samenet}.  Discovered when the
        file is parsed, so a reload picks up changed interfaces.
    """

    source: str
    rules: Tuple[HbaRule, ...]
    local_networks: Optional[LocalNetworks] = None
    # The decisions made so far, by (connection type, ssl, address,
    # database, user): the rules and local_networks never change, so a
    # client connecting again (connection churn) is decided by one lookup
    # (issue 16).  A reload parses a new HbaFile, with no decisions.
    _decisions: Dict[Tuple[str, bool, Optional[str], str, str], Optional[HbaRule]] = attr.field(
        factory=dict, init=False, eq=False, repr=False
    )

    @classmethod
    def parse(
        cls,
        text: str,
        source: str = "pool_hba.conf",
        local_networks: Optional[LocalNetworks] = None,
    ) -> "HbaFile":
        """
        Parse pool_hba.conf text.

        @param text: The file's contents.
        @param source: Name used in error messages.
        @param local_networks: What C{samehost}/C{samenet} compare with;
            discovered with L{discover_local_networks} when needed and not
            given.
        @raise HbaError: C{source:line: reason} for the first bad record.
        """
        rules = []
        for line_number, line in _logical_lines(text):
            try:
                fields = _tokenize(line)
            except ValueError as e:
                raise HbaError(source, line_number, str(e)) from None
            if fields:
                rules.append(_RecordParser(source, line_number, line.strip(), fields).parse())
        if local_networks is None and any(r.address in ("samehost", "samenet") for r in rules):
            local_networks = discover_local_networks()
        return cls(source, tuple(rules), local_networks)

    @classmethod
    def load(cls, path: str, local_networks: Optional[LocalNetworks] = None) -> "HbaFile":
        """
        Read and parse a pool_hba.conf file.

        @raise HbaError: If the file cannot be read or has a bad record.
        """
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise HbaError(path, 0, f"cannot read: {e.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise HbaError(path, data[: e.start].count(b"\n") + 1, "not valid UTF-8") from None
        return cls.parse(text, path, local_networks)

    def match(
        self,
        *,
        connection_type: str,
        ssl: bool,
        address: Optional[str],
        database: str,
        user: str,
    ) -> Optional[HbaRule]:
        """
        Find the record that decides how a connection authenticates.

        The first record that fits wins, even if its method is C{reject}
        or the client then fails it: there is no fall-through.

        @param connection_type: C{"local"} (Unix socket) or C{"host"} (TCP).
        @param ssl: Whether the client connection is encrypted.
        @param address: The client's IP address (C{host} only).
        @param database: The database name from the startup packet.
        @param user: The user name from the startup packet.
        @return: The deciding record, or C{None}: refuse the connection with
            L{no_match_message}.
        @raise ValueError: For a connection type other than C{local}/C{host},
            or a C{host} connection without a valid IP address.
        """
        key = (connection_type, ssl, address, database, user)
        decisions = self._decisions
        try:
            return decisions[key]
        except KeyError:
            pass
        if connection_type not in ("local", "host"):
            raise ValueError(f"connection_type must be 'local' or 'host', not {connection_type!r}")
        if len(decisions) >= _MAX_DECISIONS:
            # Many addresses or names: start again rather than grow.
            decisions.clear()
        decisions[key] = rule = self._decide(connection_type, ssl, address, database, user)
        return rule

    def _decide(
        self, connection_type: str, ssl: bool, address: Optional[str], database: str, user: str
    ) -> Optional[HbaRule]:
        """
        L{match} without the memory of decisions.
        """
        client: Optional[IPAddress] = None
        if connection_type == "host":
            if address is None:
                raise ValueError("a host connection needs the client's address")
            client = _client_address(address)
        for rule in self.rules:
            if rule.matches(
                connection_type=connection_type,
                ssl=ssl,
                address=client,
                database=database,
                user=user,
                local_networks=self.local_networks,
            ):
                return rule
        return None


def _describe_connection(host: Optional[str], user: str, database: str, ssl: bool) -> str:
    encryption = "SSL encryption" if ssl else "no encryption"
    return (
        f'host "{host if host is not None else "[local]"}", user "{user}", '
        f'database "{database}", {encryption}'
    )


def no_match_message(host: Optional[str], user: str, database: str, ssl: bool) -> str:
    """
    The message for a connection no record matches, in PostgreSQL's words
    (SQLSTATE 28000, invalid_authorization_specification).

    @param host: The client's address, or C{None} for a Unix socket
        (shown as C{[local]}, as PostgreSQL does).
    @return: E.g. C{no pool_hba.conf entry for host "127.0.0.1", user "x",
        database "y", no encryption}.
    """
    return "no pool_hba.conf entry for " + _describe_connection(host, user, database, ssl)


def reject_message(host: Optional[str], user: str, database: str, ssl: bool) -> str:
    """
    The message for a connection a C{reject} record matches, in PostgreSQL's
    words (SQLSTATE 28000).
    """
    return "pool_hba.conf rejects connection for " + _describe_connection(host, user, database, ssl)


# Discovery of this machine's addresses, for samehost and samenet.

_LOOPBACK_ADDRESSES = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
_LOOPBACK_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _parse_proc_if_inet6(text: str) -> Iterator[Tuple[IPAddress, IPNetwork]]:
    """
    Read Linux's C{/proc/net/if_inet6}: one IPv6 interface address per line,
    32 hex digits then the prefix length in hex.
    """
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or len(fields[0]) != 32:
            continue
        try:
            address = ipaddress.IPv6Address(int(fields[0], 16))
            prefix = int(fields[2], 16)
            yield address, ipaddress.ip_network(f"{address}/{prefix}", strict=False)
        except ValueError:
            continue


def _parse_proc_fib_trie(text: str) -> Iterator[IPAddress]:
    """
    Read Linux's C{/proc/net/fib_trie}: the IPv4 addresses of this machine
    are the leaves marked C{/32 host LOCAL}.
    """
    last: Optional[str] = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            last = stripped[3:].strip()
        elif stripped.startswith("/32 host LOCAL") and last is not None:
            try:
                yield ipaddress.IPv4Address(last)
            except ValueError:
                continue


def _parse_proc_route(text: str) -> Iterator[IPNetwork]:
    """
    Read Linux's C{/proc/net/route}: routes with no gateway lead to directly
    attached IPv4 networks.  Destination and mask are printed as host-order
    integers, so their bytes in host order are the address in network
    order.  The default route (mask 0) is skipped, since it would make the
    whole Internet "samenet".
    """
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            destination = int(fields[1], 16)
            gateway = int(fields[2], 16)
            flags = int(fields[3], 16)
            mask = int(fields[7], 16)
        except ValueError:
            continue
        if gateway != 0 or mask == 0 or not flags & 1:
            continue
        try:
            network_address = ipaddress.IPv4Address(destination.to_bytes(4, sys.byteorder))
            netmask = ipaddress.IPv4Address(mask.to_bytes(4, sys.byteorder))
        except OverflowError:
            continue
        prefix = _prefix_length(netmask)
        if prefix is not None:
            yield ipaddress.ip_network(f"{network_address}/{prefix}", strict=False)


def _hostname_addresses() -> Iterator[IPAddress]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        return
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            try:
                yield _client_address(str(sockaddr[0]))
            except ValueError:
                continue


def discover_local_networks(proc_net: str = "/proc/net") -> LocalNetworks:
    """
    Find this machine's addresses and attached networks, for C{samehost}
    and C{samenet}.

    PostgreSQL enumerates network interfaces with C{getifaddrs}, which
    Python does not expose.  We use what can be had without it:

      - the loopback addresses and networks;
      - the addresses C{getaddrinfo(gethostname())} returns (which may miss
        interfaces the host name does not resolve to);
      - on Linux, the interface addresses and attached networks listed in
        C{/proc/net} (C{if_inet6}, C{fib_trie}, C{route}).

    Elsewhere C{samenet} is no wider than the known addresses themselves,
    so a C{samenet} record may match fewer clients than PostgreSQL's would.
    This runs when the file is (re)loaded; reload after changing
    interfaces.

    @param proc_net: Where Linux's network tables are; tests point it
        elsewhere.
    """
    addresses = set(_LOOPBACK_ADDRESSES)
    networks = set(_LOOPBACK_NETWORKS)
    addresses.update(_hostname_addresses())
    for address, network in _parse_proc_if_inet6(_read_text(f"{proc_net}/if_inet6")):
        addresses.add(address)
        networks.add(network)
    addresses.update(_parse_proc_fib_trie(_read_text(f"{proc_net}/fib_trie")))
    networks.update(_parse_proc_route(_read_text(f"{proc_net}/route")))
    networks.update(ipaddress.ip_network(address) for address in addresses)
    return LocalNetworks(frozenset(addresses), frozenset(networks))
