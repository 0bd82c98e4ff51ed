"""
The manhole: a Python prompt inside the running proxy, for live inspection.

An operator connects (by SSH, or by telnet on a local endpoint) and gets an
interactive interpreter whose names are the proxy's live objects: the
cluster model with every node's status and role, the connection pool, the
configuration in force, the reactor.  Reading them answers questions no
SHOW command was written for; since it is full Python it can also change
them, so access is as sensitive as the proxy's own user account.

The prompt itself is Twisted Conch's (L{twisted.conch.manhole}, on an
L{twisted.conch.insults} terminal, over L{twisted.conch.manhole_ssh} or
L{twisted.conch.telnet}, with the few pieces we add in
L{twisted_pgpool.admin.manhole_prompt}); this module only decides what it is offered on, who may log in, and what
names it starts with.  Conch is imported when the manhole starts, not when
this module is: parts of it import (and so install) the global reactor.
L{make_manhole_service} is the one entry point;
L{twisted_pgpool.service.PgpoolService} adds what it returns as a child
when C{manhole_endpoint} is set.

The rules that keep the prompt from being reachable by strangers live in
L{check_manhole_settings}, which the configuration loader runs so that a
refused setting is reported with its file and line: telnet (no login at
all) only on a loopback TCP interface or a Unix socket other users cannot
open, and SSH only with a password file.
"""

from __future__ import annotations

import ipaddress
import os
import pydoc
import stat
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, cast

import attr
from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from zope.interface import implementer

from twisted_pgpool import logs
from twisted_pgpool.config import ConfigError, PgpoolConfig, SettingError, register_check
from twisted_pgpool.interfaces import IManholeTransport
from twisted_pgpool.net.listening import ListenService

if TYPE_CHECKING:  # pragma: no cover
    from twisted.conch.ssh.keys import Key

    from twisted_pgpool.service import PgpoolService, ProxyCore

__all__ = [
    "HOST_KEY_NAME",
    "ManholeSettingError",
    "check_manhole_settings",
    "make_manhole_service",
    "manhole_namespace",
]

log = Logger(observer=logs.observer)

#: The file, in C{manhole_ssh_key_dir}, holding the SSH manhole's host key
#: (OpenSSH format); its public half is written next to it as C{.pub}.
HOST_KEY_NAME = "manhole_host_ed25519_key"

HELP = """\
twisted_pgpool manhole: Python running inside the live proxy process.
Anything typed here runs in the reactor thread: a slow expression stalls
every client session until it returns, and assignments change the proxy.

Names:
  core      the shared state (ProxyCore): core.config (the configuration
            in force, frozen; a reload replaces it), core.sessions,
            core.query_cache, core.health, core.failover, core.replication
  service   the proxy's service (PgpoolService) and its child services
  reactor   the reactor (reactor.busy_poll: the busy-poll window, or None)
  cluster   the backend nodes: cluster.nodes
  pool      the pooled backend connections
  help      this text; help(obj) shows obj's documentation

Examples:
  [(n.node_id, n.status, n.role) for n in cluster.nodes]
  len(core.sessions)
  core.config.num_init_children

A Deferred is shown as <Deferred #N> and reported again when it fires.
Ctrl-D (on an empty line) leaves; the proxy keeps running."""


class _Text(str):
    """
    A string the prompt shows as itself rather than as a quoted literal, so
    that multi-line documentation reads as text.
    """

    def __repr__(self) -> str:
        return str(self)


class ManholeHelp:
    """
    The prompt's C{help}: Python's own C{help()} would start an interactive
    pager on the proxy process's standard input, which no operator can type
    into (and which would block the reactor), so this one answers with text.
    """

    def __repr__(self) -> str:
        return HELP

    def __call__(self, obj: Any = None) -> _Text:
        """
        @return: this prompt's help, or C{obj}'s documentation as plain text.
        """
        if obj is None:
            return _Text(HELP)
        return _Text(pydoc.plain(pydoc.render_doc(obj)))


def manhole_namespace(core: "ProxyCore", service: "PgpoolService") -> Dict[str, Any]:
    """
    The names a manhole session starts with (see L{HELP}).
    """
    return {
        "core": core,
        "service": service,
        "reactor": core.reactor,
        "cluster": core.cluster,
        "pool": core.pool,
        # No "config": a reload replaces core.config, and a copy taken
        # here would go stale.
        "help": ManholeHelp(),
    }


# ---------------------------------------------------------------------------
# Checking the settings.


class ManholeSettingError(SettingError):
    """
    A manhole setting cannot be used.

    @ivar key: the configuration key at fault (C{manhole_endpoint}...).
    @ivar reason: what is wrong, readable on its own.
    """


def _split_description(description: str) -> Tuple[str, List[str], Dict[str, str]]:
    """
    Split a server endpoint description into its type, positional
    arguments and keyword arguments, with Twisted's grammar: C{:} separates
    arguments, the first C{=} of an argument separates a keyword from its
    value, and a backslash makes the next character literal
    (C{tcp6:6022:interface=\\:\\:1}).

    Twisted has no public function for this; the checks need the interface
    and mode as the user wrote them.
    """
    parts: List[List[str]] = [[""]]
    chars = iter(description)
    for char in chars:
        if char == "\\":
            parts[-1][-1] += next(chars, "")
        elif char == ":":
            parts.append([""])
        elif char == "=" and len(parts[-1]) == 1:
            parts[-1].append("")
        else:
            parts[-1][-1] += char
    kind = parts[0][0].strip().lower()
    args = [part[0] for part in parts[1:] if len(part) == 1]
    kwargs = {part[0]: part[1] for part in parts[1:] if len(part) == 2}
    return kind, args, kwargs


def _is_loopback(interface: str) -> bool:
    try:
        return ipaddress.ip_address(interface.strip("[]")).is_loopback
    except ValueError:
        return False


def _telnet_exposure(description: str) -> Optional[str]:
    """
    Why a telnet manhole on C{description} would let people other than the
    proxy's operators in, or None when it would not.

    Telnet has no login, so whoever can open the endpoint owns the process:
    only a loopback TCP interface (the machine's own users) or a Unix socket
    closed to other users is acceptable.  A host name is refused even when
    it means loopback today, because what it resolves to can change.
    """
    kind, args, kwargs = _split_description(description)
    if kind in ("tcp", "tcp6"):
        interface = kwargs.get("interface", args[1] if len(args) > 1 else "")
        if _is_loopback(interface):
            return None
        shown = repr(interface) if interface else "every interface"
        return (
            "a telnet manhole has no login, so it may only listen on a loopback "
            f"address (interface=127.0.0.1, or interface=\\:\\:1 with tcp6) or on a "
            f"Unix socket, not on {shown}; use manhole_protocol: ssh to reach it "
            "from elsewhere"
        )
    if kind == "unix":
        mode = int(kwargs.get("mode", "666"), 8)
        if mode & stat.S_IWOTH:
            return (
                f"a telnet manhole has no login, and mode {mode:o} lets every local "
                "user connect to its Unix socket; add :mode=600 (or 660 to let "
                "the proxy's group in)"
            )
        return None
    return (
        f"a telnet manhole has no login, so it may only listen on tcp: with a "
        f"loopback interface or on unix:, not on {kind or 'an empty description'}:; "
        "use manhole_protocol: ssh"
    )


def check_manhole_settings(config: PgpoolConfig) -> None:
    """
    Check the manhole settings of a configuration, without touching any
    socket: the configuration loader calls this so a mistake is reported
    with its file and line, and L{make_manhole_service} again for
    configurations built without the loader.

    @raise ManholeSettingError: the endpoint is not a server endpoint
        description, a telnet manhole would be reachable by others, or an
        SSH manhole has no password file.
    """
    description = config.manhole_endpoint
    if not description:
        return
    try:
        # Parsing only: the endpoint object is dropped, and the built-in
        # kinds only keep the reactor for later.
        serverFromString(None, description)
    except Exception as e:
        raise ManholeSettingError(
            "manhole_endpoint",
            f"not a usable server endpoint description ({e}); expected e.g. "
            "tcp:6022:interface=127.0.0.1 or unix:/run/pgpool/manhole.sock:mode=600",
        ) from None
    if config.manhole_protocol == "telnet":
        exposure = _telnet_exposure(description)
        if exposure is not None:
            raise ManholeSettingError("manhole_endpoint", exposure)
        return
    if not config.manhole_passwd_file:
        raise ManholeSettingError(
            "manhole_passwd_file",
            "an ssh manhole needs a file of user:password lines to check logins "
            "against; set manhole_passwd_file",
        )
    if not os.path.isfile(config.manhole_passwd_file):
        raise ManholeSettingError(
            "manhole_passwd_file", f"file {config.manhole_passwd_file} does not exist"
        )


# ---------------------------------------------------------------------------
# The two ways in.


def _warn_if_others_can_read(path: str, what: str) -> None:
    """
    A password file or private key readable by other users gives them the
    manhole; say so (the proxy still starts: the file is the operator's).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warn(
            "{what} {path} can be read by other users (mode {mode:o}); make it 0600",
            what=what,
            path=path,
            mode=stat.S_IMODE(mode),
        )


def load_or_create_host_key(path: str) -> "Key":
    """
    The SSH host key at C{path}, generated first (Ed25519, mode 0600, with
    its public half in C{path}.pub) when there is none, so a manhole works
    without preparation and keeps its identity across restarts: an operator
    who accepted the key once is not asked again.

    @raise OSError: the key cannot be read, or the directory is not writable.
    @raise twisted.conch.ssh.keys.BadKeyError: the file is not a key.
    """
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from twisted.conch.ssh.keys import Key

    if not os.path.exists(path):
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        key = Key(ed25519.Ed25519PrivateKey.generate())
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another process made one meanwhile: use that.
            return Key.fromFile(path)
        with os.fdopen(fd, "wb") as f:
            f.write(key.toString("OPENSSH"))
        with open(path + ".pub", "wb") as f:
            f.write(key.public().toString("OPENSSH", comment=b"twisted_pgpool manhole") + b"\n")
        log.info("generated the manhole's SSH host key {path}", path=path)
    return Key.fromFile(path)


@implementer(IManholeTransport)
@attr.s(auto_attribs=True, frozen=True)
class TelnetManhole:
    """
    The prompt over telnet, with no login at all: for a loopback interface
    or a private Unix socket (L{check_manhole_settings} refuses anything
    else), reached with C{telnet 127.0.0.1 PORT} or C{socat}.
    """

    name = "telnet"

    def factory(self, namespace: Dict[str, Any]) -> IProtocolFactory:
        from twisted.conch.insults import insults
        from twisted.conch.telnet import TelnetBootstrapProtocol

        from twisted_pgpool.admin.manhole_prompt import ProxyManhole, ProxyTelnetTransport

        def build() -> ProxyTelnetTransport:
            return ProxyTelnetTransport(
                TelnetBootstrapProtocol, insults.ServerProtocol, ProxyManhole, namespace
            )

        factory = ServerFactory.forProtocol(build)
        factory.noisy = False
        return factory


def _no_empty_password(user: bytes, given: bytes, stored: bytes) -> Optional[bytes]:
    """
    C{FilePasswordDB}'s comparison hook (it lets in whoever's password,
    passed through this, equals the stored one): what was given, except
    that an empty stored password matches nothing.  Without this, a line
    such as C{admin:} would let anyone in as C{admin} with an empty
    password.
    """
    return given if stored else None


@implementer(IManholeTransport)
@attr.s(auto_attribs=True, frozen=True)
class SSHManhole:
    """
    The prompt over SSH: logins are checked against C{passwd_file}
    (C{user:password} lines, read again at every login so edits apply at
    once), and the server proves its identity with a host key kept in
    C{key_dir}.

    @ivar passwd_file: C{manhole_passwd_file}.
    @ivar key_dir: C{manhole_ssh_key_dir}.
    """

    passwd_file: str
    key_dir: str
    name = "ssh"

    @property
    def host_key_path(self) -> str:
        return os.path.join(self.key_dir, HOST_KEY_NAME)

    def factory(self, namespace: Dict[str, Any]) -> IProtocolFactory:
        from twisted.conch.insults import insults
        from twisted.conch.manhole_ssh import ConchFactory, TerminalRealm
        from twisted.conch.ssh.keys import FingerprintFormats
        from twisted.cred.checkers import FilePasswordDB
        from twisted.cred.portal import IRealm, Portal

        from twisted_pgpool.admin.manhole_prompt import ProxyManhole, ProxyTerminalSession

        key = load_or_create_host_key(self.host_key_path)
        _warn_if_others_can_read(self.host_key_path, "the manhole's SSH host key")
        _warn_if_others_can_read(self.passwd_file, "manhole_passwd_file")
        # Shown the way ssh and ssh-keygen -l show it, for comparing.
        fingerprint = key.fingerprint(FingerprintFormats.SHA256_BASE64).rstrip("=")
        log.info(
            "manhole SSH host key SHA256:{fingerprint} ({path})",
            fingerprint=fingerprint,
            path=self.host_key_path,
        )
        realm = TerminalRealm()
        realm.sessionFactory = ProxyTerminalSession

        def terminal() -> insults.ServerProtocol:
            return insults.ServerProtocol(ProxyManhole, namespace)

        realm.chainedProtocolFactory = terminal  # type: ignore[assignment]
        checker = FilePasswordDB(self.passwd_file, cache=False, hash=_no_empty_password)
        # TerminalRealm has IRealm's requestAvatar but does not declare the
        # interface (twisted.conch.manhole_ssh).
        factory = ConchFactory(Portal(cast(IRealm, realm), [checker]))
        factory.noisy = False
        # Instance attributes: ConchFactory's class-level dicts are shared.
        # (Conch annotates them as bytes, but reads Key objects from them.)
        factory.publicKeys = {key.sshType(): key.public()}
        factory.privateKeys = {key.sshType(): key}  # type: ignore[dict-item]
        return factory


def manhole_transport(config: PgpoolConfig) -> IManholeTransport:
    """
    The way in that C{manhole_protocol} names.
    """
    if config.manhole_protocol == "telnet":
        return TelnetManhole()
    return SSHManhole(config.manhole_passwd_file, config.manhole_ssh_key_dir)


# ---------------------------------------------------------------------------
# The service.


class ManholeService(ListenService):
    """
    Listens on the manhole's endpoint, and fails loudly if it cannot.

    An operator who configured a manhole counts on it when something goes
    wrong, so a manhole that cannot listen (or cannot read its host key)
    stops the start: twistd exits with the error, an embedding application
    sees the exception.  The protocol factory is built at start, not
    before: building it imports Conch, which installs the global reactor.

    @ivar port: the listening port while running.
    """

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        transport: IManholeTransport,
        namespace: Dict[str, Any],
    ) -> None:
        super().__init__(description, endpoint, None)
        self.transport = transport
        self.namespace = namespace
        self.setName("manhole")

    def startService(self) -> None:
        try:
            self.factory = self.transport.factory(self.namespace)
        except Exception as e:
            log.critical(
                "cannot start the {protocol} manhole: {reason}",
                protocol=self.transport.name,
                reason=str(e),
            )
            raise
        super().startService()

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        log.info(
            "manhole ({protocol}) listening on {where}",
            protocol=self.transport.name,
            where=self.description,
        )


def make_manhole_service(
    core: "ProxyCore",
    service: "PgpoolService",
    config: Optional[PgpoolConfig] = None,
) -> Optional[IService]:
    """
    Build the manhole the configuration asks for.

    @param core: the proxy's shared state, offered at the prompt.
    @param service: the proxy's service, offered at the prompt.
    @param config: the settings to follow; C{core.config} by default.
    @return: a service to add to the proxy's, or None when
        C{manhole_endpoint} is empty (the manhole is off).
    @raise ConfigError: the settings are refused (see
        L{check_manhole_settings}).
    """
    if config is None:
        config = core.config
    if not config.manhole_endpoint:
        return None
    try:
        check_manhole_settings(config)
    except ManholeSettingError as e:
        raise ConfigError(e.reason, source=config.source, key=e.key) from None
    endpoint = serverFromString(core.reactor, config.manhole_endpoint)
    return ManholeService(
        config.manhole_endpoint,
        endpoint,
        manhole_transport(config),
        manhole_namespace(core, service),
    )


# The loader refuses a manhole others could reach (telnet off loopback, ssh
# without passwords) with the line of the setting, before any service is
# built.
register_check("manhole_endpoint", check_manhole_settings, ManholeSettingError)
