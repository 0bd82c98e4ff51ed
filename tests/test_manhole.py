"""
The manhole (L{twisted_pgpool.admin.manhole}): its settings and the rules that
keep it private, the prompt it offers, and, end to end, a real proxy
answering Python typed over telnet and SSH.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from typing import Dict, List

from twisted.conch.manhole_ssh import ConchFactory
from twisted.conch.ssh.keys import Key
from twisted.conch.telnet import DONT, ECHO, IAC, LINEMODE, WONT
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.manhole_support import LoginRefused, ssh_prompt, stream_prompt
from tests.support import LazyProxy, LocalCluster, ProxyProcess, cluster_or_skip, free_port
from tests.test_config import ONE_BACKEND, ConfigTestCase
from twisted_pgpool.admin.manhole import (
    HELP,
    HOST_KEY_NAME,
    ManholeService,
    SSHManhole,
    TelnetManhole,
    _split_description,
    load_or_create_host_key,
    make_manhole_service,
    manhole_namespace,
)
from twisted_pgpool.config import ConfigError, config_from_dict
from twisted_pgpool.interfaces import IManholeTransport
from twisted_pgpool.service import make_service


def _write(path: str, text: str, mode: int = 0o600) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


# -- settings -------------------------------------------------------------------


class ManholeSettingsTests(ConfigTestCase):
    """
    The manhole's keys, and the loader refusing a manhole others could
    reach, with the file, line and key of the setting at fault.
    """

    def test_off_by_default(self) -> None:
        config = self.load(ONE_BACKEND)
        self.assertEqual(
            (config.manhole_endpoint, config.manhole_protocol, config.manhole_passwd_file),
            ("", "ssh", ""),
        )
        self.assertEqual(
            config.manhole_ssh_key_dir, os.path.dirname(os.path.abspath(config.source))
        )

    def test_off_builds_no_service(self) -> None:
        config = config_from_dict({"backends": [{"hostname": "db1"}], "pool_passwd": ""})
        service = make_service(config, MemoryReactorClock())
        self.assertIsNone(service.manhole)
        self.assertNotIn("manhole", [child.name for child in service])

    def test_telnet_on_every_interface_is_refused(self) -> None:
        self.assert_error(
            ONE_BACKEND + "manhole_protocol: telnet\nmanhole_endpoint: 'tcp:6022'\n",
            4,
            "manhole_endpoint",
            "no login",
            "not on every interface",
        )

    def test_telnet_on_a_public_interface_is_refused(self) -> None:
        self.assert_error(
            ONE_BACKEND + "manhole_endpoint: 'tcp:6022:interface=192.0.2.7'\n"
            "manhole_protocol: telnet\n",
            3,
            "manhole_endpoint",
            "loopback",
            "'192.0.2.7'",
        )

    def test_telnet_on_a_host_name_is_refused(self) -> None:
        self.assert_error(
            ONE_BACKEND + "manhole_endpoint: 'tcp:6022:interface=localhost'\n"
            "manhole_protocol: telnet\n",
            3,
            "manhole_endpoint",
            "'localhost'",
        )

    def test_telnet_on_a_unix_socket_open_to_everyone_is_refused(self) -> None:
        self.assert_error(
            ONE_BACKEND + "manhole_endpoint: 'unix:/run/pgpool/manhole.sock'\n"
            "manhole_protocol: telnet\n",
            3,
            "manhole_endpoint",
            "mode 666",
            "mode=600",
        )

    def test_telnet_on_other_endpoint_kinds_is_refused(self) -> None:
        self.assert_error(
            ONE_BACKEND + "manhole_endpoint: 'systemd:domain=UNIX:index=0'\n"
            "manhole_protocol: telnet\n",
            3,
            "manhole_endpoint",
        )

    def test_telnet_on_loopback_or_a_private_socket_is_accepted(self) -> None:
        for endpoint in (
            "tcp:6022:interface=127.0.0.1",
            "tcp:6022:127.0.0.1",
            "tcp6:6022:interface=\\:\\:1",
            "unix:/run/pgpool/m.sock:mode=600",
            "unix:/run/pgpool/m.sock:mode=660",
        ):
            config = self.load(
                ONE_BACKEND + f"manhole_endpoint: '{endpoint}'\nmanhole_protocol: telnet\n"
            )
            self.assertEqual(config.manhole_endpoint, endpoint)

    def test_ssh_without_a_passwd_file_is_refused(self) -> None:
        # The key was never written: the message points at the endpoint's line.
        self.assert_error(
            ONE_BACKEND + "manhole_endpoint: 'tcp:6022:interface=127.0.0.1'\n",
            3,
            "manhole_passwd_file",
            "user:password",
        )

    def test_ssh_with_a_missing_passwd_file_is_refused(self) -> None:
        message = self.assert_error(
            ONE_BACKEND + "manhole_endpoint: 'tcp:6022'\nmanhole_passwd_file: nowhere\n",
            4,
            "manhole_passwd_file",
            "does not exist",
        )
        self.assertIn(os.sep + "nowhere", message)

    def test_ssh_on_any_interface_with_a_passwd_file_is_accepted(self) -> None:
        path = self.write(
            ONE_BACKEND + "manhole_endpoint: 'tcp:6022'\n"
            "manhole_passwd_file: manhole.passwd\n"
            "manhole_ssh_key_dir: keys\n"
        )
        directory = os.path.dirname(os.path.abspath(path))
        _write(os.path.join(directory, "manhole.passwd"), "admin:pw\n")
        from twisted_pgpool.config import load_config

        config = load_config(path)
        # Relative to the configuration file, like every other path.
        self.assertEqual(config.manhole_passwd_file, os.path.join(directory, "manhole.passwd"))
        self.assertEqual(config.manhole_ssh_key_dir, os.path.join(directory, "keys"))

    def test_an_unparseable_endpoint_is_refused(self) -> None:
        self.assert_error(
            ONE_BACKEND + "manhole_endpoint: 'tcp:ssh-port'\nmanhole_protocol: telnet\n",
            3,
            "manhole_endpoint",
            "not a usable server endpoint description",
        )

    def test_an_unknown_protocol_is_refused(self) -> None:
        self.assert_error(
            ONE_BACKEND + "manhole_protocol: http\n", 3, "manhole_protocol", "one of ssh, telnet"
        )

    def test_building_the_service_checks_again(self) -> None:
        # A configuration made without the loader cannot skip the rules.
        import attrs

        config = attrs.evolve(
            config_from_dict({"backends": [{"hostname": "db1"}], "pool_passwd": ""}),
            manhole_endpoint="tcp:6022",
            manhole_protocol="telnet",
        )
        error = self.assertRaises(ConfigError, make_service, config, MemoryReactorClock())
        self.assertIn("manhole_endpoint: a telnet manhole has no login", str(error))


class SplitDescriptionTests(SynchronousTestCase):
    def test_keywords_positionals_and_escapes(self) -> None:
        self.assertEqual(
            _split_description("TCP6:6022:interface=\\:\\:1:backlog=5"),
            ("tcp6", ["6022"], {"interface": "::1", "backlog": "5"}),
        )

    def test_an_equals_sign_in_a_value_is_kept(self) -> None:
        self.assertEqual(
            _split_description("unix:/a=b:mode=600"), ("unix", [], {"/a": "b", "mode": "600"})
        )
        self.assertEqual(
            _split_description("unix:/a\\=b:mode=600"), ("unix", ["/a=b"], {"mode": "600"})
        )


# -- the prompt and its transports ---------------------------------------------------


class PromptTests(SynchronousTestCase):
    """
    The prompt itself, driven through the telnet transport's protocol with
    an in-memory transport: what an operator types runs in the namespace.
    """

    def connect(self, namespace: Dict[str, object]) -> StringTransport:
        protocol = TelnetManhole().factory(namespace).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.protocol = protocol
        return transport

    def test_greets_with_the_names_on_offer(self) -> None:
        transport = self.connect({})
        self.assertIn(b"twisted_pgpool manhole (pid %d)" % os.getpid(), transport.value())
        self.assertIn(b"core, service, reactor, cluster, pool, config", transport.value())

    def test_evaluates_in_the_namespace(self) -> None:
        transport = self.connect({"x": 21})
        transport.clear()
        self.protocol.dataReceived(b"'answer-%d' % (x * 2)\r\n")
        self.assertIn(b"'answer-42'", transport.value())

    def test_each_session_has_its_own_variables(self) -> None:
        namespace: Dict[str, object] = {"x": 1}
        self.connect(namespace)
        self.protocol.dataReceived(b"x = 2\r\n")
        self.assertEqual(namespace, {"x": 1})

    def test_help_shows_what_is_there(self) -> None:
        config = config_from_dict({"backends": [{"hostname": "db1"}], "pool_passwd": ""})
        service = make_service(config, MemoryReactorClock())
        transport = self.connect(manhole_namespace(service.core, service))
        transport.clear()
        self.protocol.dataReceived(b"help\r\n")
        # Text, not a string's repr (telnet adds carriage returns of its own).
        self.assertIn(
            b"\n  [(n.node_id, n.status, n.role) for n in cluster.nodes]\r", transport.value()
        )

    def test_printing_the_configuration_and_credentials_masks_the_passwords(self) -> None:
        config = config_from_dict(
            {
                "backends": [{"hostname": "db1"}],
                "pool_passwd": "",
                "health_check_user": "checker",
                "health_check_password": "s3cr3t-XYZ",
                "sr_check_password": "s3cr3t-XYZ",
            }
        )
        service = make_service(config, MemoryReactorClock())
        transport = self.connect(manhole_namespace(service.core, service))
        transport.clear()
        self.protocol.dataReceived(b"core.config\r\n")
        self.protocol.dataReceived(b"core.health_check_credentials\r\n")
        shown = transport.value()
        self.assertEqual(
            (
                b"s3cr3t" in shown,
                b"health_check_password=*****" in shown,
                b"sr_check_password=*****" in shown,
                b"BackendCredentials(user='checker', password=*****" in shown,
            ),
            (False, True, True, True),
        )


class TelnetNegotiationTests(SynchronousTestCase):
    """
    Telnet options the client does not agree to are not errors: the
    prompt works without them, and the proxy's log stays clean.
    """

    def setUp(self) -> None:
        self.events: List[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.protocol = TelnetManhole().factory({}).buildProtocol(None)
        self.protocol.makeConnection(StringTransport())

    def errors(self) -> List[str]:
        return [
            formatEvent(e)
            for e in self.events
            if e["log_level"] in (LogLevel.error, LogLevel.critical)
        ]

    def test_a_refused_option(self) -> None:
        self.protocol.dataReceived(IAC + WONT + LINEMODE + IAC + DONT + ECHO)
        self.assertEqual(self.errors(), [])

    def test_a_hang_up_before_answering(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.errors(), [])


class NamespaceTests(SynchronousTestCase):
    def setUp(self) -> None:
        config = config_from_dict({"backends": [{"hostname": "db1"}], "pool_passwd": ""})
        self.service = make_service(config, MemoryReactorClock())
        self.namespace = manhole_namespace(self.service.core, self.service)

    def test_the_live_objects(self) -> None:
        core = self.service.core
        self.assertEqual(
            {name: value for name, value in self.namespace.items() if name != "help"},
            {
                "core": core,
                "service": self.service,
                "reactor": core.reactor,
                "cluster": core.cluster,
                "pool": core.pool,
            },
        )

    def test_help_is_text_and_documents_objects(self) -> None:
        help = self.namespace["help"]
        self.assertEqual(repr(help), HELP)
        for name in ("core", "service", "reactor", "cluster", "pool"):
            self.assertIn(f"\n  {name} ", HELP)
        documentation = help(self.service.core.cluster)  # type: ignore[operator]
        self.assertIn("class Cluster", repr(documentation))
        self.assertNotIn("\\n", repr(documentation))


class TransportTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.passwd = _write(os.path.join(self.directory, "passwd"), "admin:pw\n")

    def test_both_provide_the_interface(self) -> None:
        verifyObject(IManholeTransport, TelnetManhole())
        verifyObject(IManholeTransport, SSHManhole(self.passwd, self.directory))

    def test_ssh_serves_its_own_host_key(self) -> None:
        factory = SSHManhole(self.passwd, os.path.join(self.directory, "keys")).factory({})
        key = Key.fromFile(os.path.join(self.directory, "keys", HOST_KEY_NAME))
        self.assertEqual(factory.privateKeys, {b"ssh-ed25519": key})
        self.assertEqual(factory.publicKeys, {b"ssh-ed25519": key.public()})
        # Conch's class-level dictionaries are left alone.
        self.assertEqual((ConchFactory.publicKeys, ConchFactory.privateKeys), ({}, {}))

    def test_ssh_logs_its_fingerprint_as_openssh_shows_it(self) -> None:
        events: List[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        SSHManhole(self.passwd, self.directory).factory({})
        path = os.path.join(self.directory, HOST_KEY_NAME)
        digest = hashlib.sha256(Key.fromFile(path).blob()).digest()
        fingerprint = base64.b64encode(digest).decode().rstrip("=")
        self.assertIn(
            f"manhole SSH host key SHA256:{fingerprint} ({path})",
            [formatEvent(event) for event in events],
        )


class PasswordCheckTests(SynchronousTestCase):
    """
    The SSH manhole's logins, checked against the file as it is now.
    """

    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        self.passwd = _write(os.path.join(directory, "passwd"), "admin:pw\nnobody:\n")
        factory = SSHManhole(self.passwd, directory).factory({})
        self.checker = factory.portal.checkers[IUsernamePassword]

    def login(self, user: bytes, password: bytes):
        return self.checker.requestAvatarId(UsernamePassword(user, password))

    def test_the_right_password(self) -> None:
        self.assertEqual(self.successResultOf(self.login(b"admin", b"pw")), b"admin")

    def test_a_wrong_password(self) -> None:
        self.failureResultOf(self.login(b"admin", b"pW"), UnauthorizedLogin)

    def test_an_empty_password_in_the_file_lets_nobody_in(self) -> None:
        self.failureResultOf(self.login(b"nobody", b""), UnauthorizedLogin)

    def test_edits_apply_at_the_next_login(self) -> None:
        _write(self.passwd, "admin:new\n")
        self.failureResultOf(self.login(b"admin", b"pw"), UnauthorizedLogin)
        self.assertEqual(self.successResultOf(self.login(b"admin", b"new")), b"admin")


class HostKeyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp(), "sub", HOST_KEY_NAME)

    def test_generated_private_once_and_kept(self) -> None:
        key = load_or_create_host_key(self.path)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.path)).st_mode) & 0o077, 0)
        self.assertEqual(load_or_create_host_key(self.path), key)
        self.assertTrue(key.isPublic() is False)
        with open(self.path + ".pub", "rb") as f:
            self.assertEqual(Key.fromString(f.read()), key.public())


class ReadableFileWarningTests(SynchronousTestCase):
    def test_a_passwd_file_others_can_read_is_warned_about(self) -> None:
        events: List[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        directory = self.mktemp()
        os.makedirs(directory)
        passwd = _write(os.path.join(directory, "passwd"), "admin:pw\n", 0o644)
        SSHManhole(passwd, directory).factory({})
        messages = [formatEvent(event) for event in events]
        self.assertIn(
            f"manhole_passwd_file {passwd} can be read by other users (mode 644); make it 0600",
            messages,
        )
        self.assertFalse([m for m in messages if "pw" in m.split()])


# -- the service -------------------------------------------------------------------------


class _RefusingReactor(MemoryReactorClock):
    def listenTCP(self, port, factory, backlog=50, interface=""):
        raise CannotListenError(interface, port, OSError("address in use"))


class ServiceTests(SynchronousTestCase):
    def config(self, **settings: object):
        return config_from_dict(
            {
                "backends": [{"hostname": "db1"}],
                "pool_passwd": "",
                "manhole_protocol": "telnet",
                **settings,
            }
        )

    def test_a_child_of_the_proxy_before_its_client_listeners(self) -> None:
        reactor = MemoryReactorClock()
        service = make_service(
            self.config(manhole_endpoint="tcp:6022:interface=127.0.0.1"), reactor
        )
        self.assertIsInstance(service.manhole, ManholeService)
        self.assertIs(service.getServiceNamed("manhole"), service.manhole)
        children = list(service)
        self.assertLess(
            children.index(service.manhole),
            min(i for i, c in enumerate(children) if type(c).__name__ == "ListenService"),
        )

    def test_listens_on_its_endpoint_when_started(self) -> None:
        reactor = MemoryReactorClock()
        manhole = make_manhole_service(
            make_service(self.config(), reactor).core,
            None,  # type: ignore[arg-type]
            self.config(manhole_endpoint="unix:/run/pgpool/m.sock:mode=600"),
        )
        assert manhole is not None
        manhole.startService()
        self.assertEqual(
            [(path, mode) for path, _, _, mode, _ in reactor.unixServers],
            [("/run/pgpool/m.sock", 0o600)],
        )
        manhole.stopService()

    def test_cannot_listen_stops_the_start(self) -> None:
        reactor = _RefusingReactor()
        service = make_service(
            self.config(manhole_endpoint="tcp:6022:interface=127.0.0.1"), reactor
        )
        assert service.manhole is not None
        self.assertRaises(CannotListenError, service.manhole.startService)


# -- end to end ------------------------------------------------------------------------------


def _nodes_expression() -> bytes:
    # The answer differs from the line typed, so finding it in the output
    # means the expression ran (the prompt echoes what is typed).
    return b"'nodes-%d-%s' % (len(cluster.nodes), type(reactor).__name__)"


class TelnetEndToEndTests(TestCase):
    """
    A real proxy with a telnet manhole on a private Unix socket.
    """

    def test_evaluates_in_the_live_process(self) -> None:
        cluster: LocalCluster = cluster_or_skip()
        # A short directory: Unix socket paths are limited to ~100 bytes.
        directory = tempfile.mkdtemp(prefix="pgmh-")
        self.addCleanup(shutil.rmtree, directory, True)
        socket_path = os.path.join(directory, "manhole.sock")
        proxy = ProxyProcess(
            {
                "backends": cluster.backends_config(),
                "pool_passwd": "",
                "manhole_protocol": "telnet",
                "manhole_endpoint": f"unix:{socket_path}:mode=600",
            }
        )
        proxy.start()
        self.addCleanup(proxy.stop)
        self.assertEqual(stat.S_IMODE(os.stat(socket_path).st_mode), 0o600)
        expected = b"'nodes-%d-ProxyReactor'" % len(cluster.nodes)
        d = stream_prompt(
            reactor, UNIXClientEndpoint(reactor, socket_path), _nodes_expression(), expected
        )

        def check(output: bytes) -> None:
            self.assertIn(b"twisted_pgpool manhole (pid %d)" % proxy.pid, output)
            self.assertIn(expected, output)
            self.assertIn(f"manhole (telnet) listening on unix:{socket_path}", proxy.log_text())

        return d.addCallback(check)


_SSH_PASSWORD = "correct horse"


def _ssh_proxy(cluster: LocalCluster) -> ProxyProcess:
    return ProxyProcess(
        {
            "backends": cluster.backends_config(),
            "pool_passwd": "",
            "manhole_endpoint": f"tcp:{free_port()}:interface=127.0.0.1",
            "manhole_passwd_file": "manhole.passwd",
        },
        extra_files={"manhole.passwd": f"# operators\nadmin:{_SSH_PASSWORD}\n"},
    )


_ssh = LazyProxy(_ssh_proxy)


def _manhole_port(proxy: ProxyProcess) -> int:
    return int(proxy.config["manhole_endpoint"].split(":")[1])


def _host_key(proxy: ProxyProcess) -> Key:
    assert proxy.workdir is not None
    with open(os.path.join(proxy.workdir, HOST_KEY_NAME + ".pub"), "rb") as f:
        return Key.fromString(f.read())


class SSHEndToEndTests(TestCase):
    """
    A real proxy with an SSH manhole on loopback, its host key generated
    in the configuration's directory, logins from a password file.
    """

    def setUp(self) -> None:
        self.proxy = _ssh.get()
        self.cluster = cluster_or_skip()
        self.endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", _manhole_port(self.proxy))

    def test_evaluates_in_the_live_process_after_a_password_login(self) -> None:
        expected = b"'nodes-%d-ProxyReactor'" % len(self.cluster.nodes)
        d = ssh_prompt(
            reactor, self.endpoint, b"admin", _SSH_PASSWORD.encode(), _nodes_expression(), expected
        )

        def check(result) -> None:
            output, host_keys = result
            self.assertIn(expected, output)
            # The server proved itself with the key it generated and kept.
            self.assertEqual(host_keys, [_host_key(self.proxy).blob()])

        return d.addCallback(check)

    def test_resizing_the_terminal_is_not_an_error(self) -> None:
        expected = b"'nodes-%d-ProxyReactor'" % len(self.cluster.nodes)
        d = ssh_prompt(
            reactor,
            self.endpoint,
            b"admin",
            _SSH_PASSWORD.encode(),
            _nodes_expression(),
            expected,
            resize=True,
        )

        def check(result) -> None:
            self.assertIn(expected, result[0])
            # Conch's own session raises NotImplementedError on a resize.
            self.assertNotIn("NotImplementedError", self.proxy.log_text())

        return d.addCallback(check)

    def test_a_wrong_password_is_refused(self) -> None:
        d = ssh_prompt(reactor, self.endpoint, b"admin", b"wrong horse", b"1", b"never")
        d = self.assertFailure(d, LoginRefused)
        d.addCallback(lambda _: self.assertNotIn("wrong horse", self.proxy.log_text()))
        return d.addCallback(lambda _: self.assertNotIn(_SSH_PASSWORD, self.proxy.log_text()))

    def test_an_unknown_user_is_refused(self) -> None:
        d = ssh_prompt(reactor, self.endpoint, b"root", _SSH_PASSWORD.encode(), b"1", b"never")
        return self.assertFailure(d, LoginRefused)


SSH = shutil.which("ssh")


class OpenSSHClientTests(SynchronousTestCase):
    """
    What docs/administration.md tells operators to type works: OpenSSH's
    C{ssh}, checking the host key against the C{.pub} file the proxy wrote.
    """

    def test_ssh_command(self) -> None:
        if SSH is None:
            self.skipTest("OpenSSH's ssh is not installed")
        proxy = _ssh.get()
        cluster = cluster_or_skip()
        port = _manhole_port(proxy)
        home = self.mktemp()
        os.makedirs(home)
        askpass = _write(
            os.path.join(home, "askpass"), f"#!/bin/sh\necho '{_SSH_PASSWORD}'\n", 0o700
        )
        known_hosts = _write(
            os.path.join(home, "known_hosts"),
            f"[127.0.0.1]:{port} {_host_key(proxy).toString('OPENSSH').decode()}\n",
        )
        result = subprocess.run(
            [
                SSH,
                "-F",
                "/dev/null",
                "-tt",
                "-p",
                str(port),
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                f"UserKnownHostsFile={known_hosts}",
                "-o",
                "PreferredAuthentications=password",
                "-o",
                "NumberOfPasswordPrompts=1",
                "-o",
                "LogLevel=ERROR",
                "admin@127.0.0.1",
            ],
            # Ctrl-D on an empty line leaves the prompt, which ends ssh.
            input=_nodes_expression() + b"\r\x04",
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": home,
                "SSH_ASKPASS": askpass,
                "SSH_ASKPASS_REQUIRE": "force",
                "DISPLAY": ":0",
            },
            capture_output=True,
            timeout=60,
        )
        self.assertIn(
            b"'nodes-%d-ProxyReactor'" % len(cluster.nodes),
            result.stdout,
            result.stderr + proxy.log_text()[-5000:].encode(),
        )
