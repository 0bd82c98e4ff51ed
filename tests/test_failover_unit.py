"""
Failover decisions and orchestration without a server: the command
escapes, the status file, the command runner (with a fake process reactor,
and once with real processes), and L{FailoverManager} driven with a
L{Clock}, a fake primary-search query and a fake command runner.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twisted_pgpool.cluster.failover import (
    STATUS_FILE_NAME,
    CommandFacts,
    CommandResult,
    CommandRunner,
    FailoverError,
    FailoverManager,
    command_facts,
    expand_command,
    format_status_file,
    main_node_id,
    parse_status_file,
    statuses_to_restore,
)
from twisted_pgpool.cluster.model import (
    ROLE_PRIMARY,
    STATUS_DOWN,
    STATUS_UNUSED,
    STATUS_UP,
    STATUS_WAITING,
    Cluster,
)
from twisted_pgpool.config import config_from_dict
from twisted_pgpool.testing.doubles import FakeCheckQuery, FakeCore, FakeFrontend, FakeSession
from twisted_pgpool.wire import errors

ALL_ESCAPES = "%d %h %p %D %m %H %M %P %r %R %N %S"


def sh_words(command: str) -> List[str]:
    """
    The words C{/bin/sh} makes of C{command} (its first word dropped).
    """
    script = "set -- " + command + "; shift; printf '%s\\0' \"$@\""
    output = subprocess.run(["/bin/sh", "-c", script], check=True, capture_output=True).stdout
    return output.decode().split("\0")[:-1]


def facts(**overrides: Any) -> CommandFacts:
    values: Dict[str, Any] = dict(
        node_id=0,
        host="db0",
        port=5432,
        data_directory="/data/0",
        new_main_id=1,
        new_main_host="db1",
        new_main_port=5433,
        new_main_data_directory="/data/1",
        old_main_id=0,
        old_primary_id=0,
        old_primary_host="db0",
        old_primary_port=5432,
    )
    values.update(overrides)
    return CommandFacts(**values)


class ExpandCommandTests(SynchronousTestCase):
    def test_every_escape(self) -> None:
        self.assertEqual(
            expand_command("failover.sh " + ALL_ESCAPES, facts()),
            "failover.sh 0 db0 5432 /data/0 1 db1 0 0 5433 /data/1 db0 5432",
        )

    def test_percent_percent_is_a_percent(self) -> None:
        self.assertEqual(expand_command("echo 100%% %d%%", facts()), "echo 100% 0%")

    def test_unknown_escape_is_kept(self) -> None:
        self.assertEqual(expand_command("echo %x %", facts()), "echo %x %")

    def test_no_new_main_gives_minus_one_and_empty_words(self) -> None:
        command = expand_command(
            "f %m %H %r %R",
            facts(new_main_id=-1, new_main_host="", new_main_port=None, new_main_data_directory=""),
        )
        self.assertEqual(command, "f -1 '' '' ''")
        self.assertEqual(shlex.split(command), ["f", "-1", "", "", ""])

    def test_values_are_one_word_whatever_they_hold(self) -> None:
        nasty = "/data/my dir; rm -rf / $(reboot) 'x' \"y\" `z` \\n *"
        command = expand_command("f %D %d", facts(data_directory=nasty))
        self.assertEqual(shlex.split(command), ["f", nasty, "0"])
        self.assertEqual(sh_words(command), [nasty, "0"])

    def test_inside_single_quotes(self) -> None:
        nasty = "it's $HOME"
        command = expand_command("f '%D-x' %d", facts(data_directory=nasty))
        self.assertEqual(sh_words(command), [nasty + "-x", "0"])

    def test_inside_double_quotes(self) -> None:
        nasty = 'say "hi" $HOME `id` \\n'
        command = expand_command('f "%D-x" %d', facts(data_directory=nasty))
        self.assertEqual(sh_words(command), [nasty + "-x", "0"])

    def test_quotes_in_template_are_tracked(self) -> None:
        command = expand_command("f \"a'b\" %h 'c\"d' %h", facts(host="x y"))
        self.assertEqual(sh_words(command), ["a'b", "x y", 'c"d', "x y"])

    def test_escaped_quote_does_not_open_a_string(self) -> None:
        command = expand_command("f \\' %h", facts(host="x y"))
        self.assertEqual(sh_words(command), ["'", "x y"])


class FactsTests(SynchronousTestCase):
    def setUp(self) -> None:
        config = config_from_dict(
            {
                "backends": [
                    {"hostname": f"db{i}", "port": 5432 + i, "data_directory": f"/d/{i}"}
                    for i in range(3)
                ],
                "pool_passwd": "",
            }
        )
        self.cluster = Cluster.from_config(config.backends)

    def test_main_node_is_the_lowest_live_id(self) -> None:
        nodes = self.cluster.nodes
        self.assertEqual(main_node_id(nodes), 0)
        self.cluster.set_status(nodes[0], STATUS_DOWN, "t")
        self.assertEqual(main_node_id(nodes), 1)
        self.cluster.set_status(nodes[1], STATUS_UNUSED, "t")
        self.cluster.set_status(nodes[2], STATUS_DOWN, "t")
        self.assertEqual(main_node_id(nodes), -1)

    def test_facts_name_the_nodes(self) -> None:
        nodes = self.cluster.nodes
        result = command_facts(nodes, nodes[0], new_main_id=1, old_main_id=0, old_primary_id=0)
        self.assertEqual(
            result, CommandFacts(0, "db0", 5432, "/d/0", 1, "db1", 5433, "/d/1", 0, 0, "db0", 5432)
        )

    def test_missing_nodes_give_empty_values(self) -> None:
        nodes = self.cluster.nodes
        result = command_facts(nodes, nodes[2], new_main_id=-1, old_main_id=2, old_primary_id=-1)
        self.assertEqual(result.escapes()["m"], "-1")
        self.assertEqual(result.escapes()["H"], "")
        self.assertEqual(result.escapes()["P"], "-1")
        self.assertEqual(result.escapes()["N"], "")
        self.assertEqual(result.escapes()["S"], "")


class StatusFileTests(SynchronousTestCase):
    def test_format_is_one_word_per_node(self) -> None:
        config = config_from_dict({"backends": [{"hostname": "a"}] * 4, "pool_passwd": ""})
        cluster = Cluster.from_config(config.backends)
        nodes = cluster.nodes
        cluster.set_status(nodes[1], STATUS_DOWN, "t")
        cluster.set_status(nodes[2], STATUS_UNUSED, "t")
        cluster.set_status(nodes[3], STATUS_UP, "t")
        self.assertEqual(format_status_file(nodes), "up\ndown\nunused\nup\n")

    def test_parse_ignores_case_and_junk(self) -> None:
        self.assertEqual(
            parse_status_file("UP\ndown \nunused\nfoo\n\n"), ["up", "down", "unused", None, None]
        )

    def test_down_and_unused_are_restored(self) -> None:
        self.assertEqual(
            statuses_to_restore(["up", "down", "unused"], 3), {1: STATUS_DOWN, 2: STATUS_UNUSED}
        )

    def test_extra_lines_are_ignored(self) -> None:
        self.assertEqual(statuses_to_restore(["up", "down", "down"], 2), {1: STATUS_DOWN})

    def test_all_down_is_bogus(self) -> None:
        self.assertEqual(statuses_to_restore(["down", "down"], 2), {})
        self.assertEqual(statuses_to_restore(["down", None, "up"], 2), {})

    def test_empty_file_restores_nothing(self) -> None:
        self.assertEqual(statuses_to_restore([], 2), {})


# -- the runner --------------------------------------------------------------------


class FakeProcessTransport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: List[str] = []
        self.lost = False

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def loseConnection(self) -> None:
        self.lost = True


class FakeProcessReactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.spawned: List[Tuple[Any, str, List[str], Dict[str, str]]] = []

    def spawnProcess(self, protocol, executable, args, env=None, path=None):
        transport = FakeProcessTransport(40000 + len(self.spawned))
        self.spawned.append((protocol, executable, list(args), env))
        protocol.makeConnection(transport)
        return transport


def exited(code: int) -> Failure:
    if code == 0:
        return Failure(error.ProcessDone(0))
    return Failure(error.ProcessTerminated(exitCode=code))


class CommandRunnerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeProcessReactor()
        self.runner = CommandRunner(self.reactor, 10.0, setsid=None)

    def test_runs_the_command_with_sh(self) -> None:
        d = self.runner.run("failover_command", "echo hi")
        protocol, executable, args, env = self.reactor.spawned[0]
        self.assertEqual((executable, args), ("/bin/sh", ["/bin/sh", "-c", "echo hi"]))
        self.assertEqual(env.get("PATH"), os.environ.get("PATH"))
        protocol.childDataReceived(1, b"hel")
        protocol.childDataReceived(2, b"oops\n")
        protocol.childDataReceived(1, b"lo\npartial")
        protocol.processExited(exited(0))
        self.assertNoResult(d)
        protocol.processEnded(exited(0))
        result = self.successResultOf(d)
        self.assertEqual(result.exit_code, 0)
        self.assertTrue(result.succeeded)
        self.assertEqual(result.output.splitlines(), ["oops", "hello", "partial"])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_setsid_wraps_the_shell(self) -> None:
        runner = CommandRunner(self.reactor, 10.0, setsid="/usr/bin/setsid")
        self.assertEqual(runner.argv("x"), ["/usr/bin/setsid", "/bin/sh", "-c", "x"])

    def test_failure_status_is_reported_not_raised(self) -> None:
        d = self.runner.run("failover_command", "exit 3")
        protocol = self.reactor.spawned[0][0]
        protocol.processEnded(exited(3))
        result = self.successResultOf(d)
        self.assertEqual(result.exit_code, 3)
        self.assertFalse(result.succeeded)

    def test_a_command_running_too_long_is_killed(self) -> None:
        d = self.runner.run("failover_command", "sleep 100")
        protocol, _, _, _ = self.reactor.spawned[0]
        transport = protocol.transport
        self.reactor.advance(9.9)
        self.assertEqual(transport.signals, [])
        self.reactor.advance(0.1)
        self.assertEqual(transport.signals, ["KILL"])
        # A grandchild may keep the pipes open: the exit is enough.
        protocol.processExited(Failure(error.ProcessTerminated(signal=9)))
        result = self.successResultOf(d)
        self.assertTrue(result.timed_out)
        self.assertTrue(transport.lost)
        self.assertEqual(result.exit_code, None)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_a_killed_command_never_reaped_is_given_up(self) -> None:
        d = self.runner.run("failover_command", "sleep 100")
        self.reactor.advance(10)
        self.assertNoResult(d)
        self.reactor.advance(5)
        self.assertTrue(self.successResultOf(d).timed_out)
        self.flushLoggedErrors()

    def test_cancelling_stops_the_timers_and_leaves_the_command(self) -> None:
        d = self.runner.run("failover_command", "sleep 100")
        protocol = self.reactor.spawned[0][0]
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(protocol.transport.signals, [])
        protocol.processEnded(exited(0))

    def test_spawn_failure_is_a_result(self) -> None:
        def broken(*args: Any, **kwargs: Any) -> None:
            raise OSError("no /bin/sh")

        self.reactor.spawnProcess = broken  # type: ignore[assignment]
        result = self.successResultOf(self.runner.run("failover_command", "x"))
        self.assertEqual(result.exit_code, None)
        self.assertIn("no /bin/sh", result.output)


class RealCommandRunnerTests(TestCase):
    """
    The runner against real processes, in the real reactor.
    """

    async def test_output_and_status(self) -> None:
        from twisted.internet import reactor

        runner = CommandRunner(reactor, 10.0)
        result = await runner.run("test", "echo out; echo err >&2; exit 3")
        self.assertEqual(result.exit_code, 3)
        self.assertEqual(sorted(result.output.splitlines()), ["err", "out"])

    async def test_timeout_kills_the_command_and_its_children(self) -> None:
        from twisted.internet import reactor

        runner = CommandRunner(reactor, 0.5)
        if not runner.setsid:
            self.skipTest("no setsid program")
        started = time.monotonic()
        # The inner sleep keeps stdout open: only a group kill ends it.
        result = await runner.run("test", "sleep 30 & echo $!; wait")
        self.assertTrue(result.timed_out)
        self.assertLess(time.monotonic() - started, 5)
        child = int(result.output.split()[0])
        for _ in range(50):
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            with open(f"/proc/{child}/stat") as f:
                if f.read().split()[2] == "Z":
                    break
            time.sleep(0.02)
        else:
            self.fail(f"the command's child {child} survived the timeout")


# -- the manager --------------------------------------------------------------------


class FakeRunner:
    """
    Records commands; each returns a Deferred the test may hold.
    """

    def __init__(self) -> None:
        self.commands: List[Tuple[str, str]] = []
        self.hold = False
        self.held: List[defer.Deferred] = []
        self.on_run: Optional[Any] = None

    def run(self, what: str, command: str) -> defer.Deferred:
        self.commands.append((what, command))
        if self.on_run is not None:
            self.on_run(what, command)
        result = CommandResult(what, command, 0)
        if self.hold:
            d: defer.Deferred = defer.Deferred()
            d.addCallback(lambda _: result)
            self.held.append(d)
            return d
        return defer.succeed(result)

    def release(self) -> None:
        held, self.held = self.held, []
        for d in held:
            d.callback(None)


class ManagerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.runner = FakeRunner()
        # The primary search: a node is up once the test says whether it is
        # in recovery; the others refuse.
        self.search = FakeCheckQuery(default="down")
        self.logdir = self.mktemp()
        os.makedirs(self.logdir)
        # What the probe of a node whose session connection broke finds:
        # node id -> Deferred (or bool) the probe returns.
        self.probed: List[int] = []
        self.probe_answers: Dict[int, Any] = {}

    def probe(self, reactor: Any, node: Any, user: str, timeout: float) -> defer.Deferred:
        self.probed.append(node.node_id)
        answer = self.probe_answers.get(node.node_id, False)
        return answer if isinstance(answer, defer.Deferred) else defer.succeed(answer)

    def manager(
        self,
        nodes: int = 2,
        discard_status: bool = False,
        backends: Optional[List[Dict[str, Any]]] = None,
        start: bool = True,
        **settings: Any,
    ) -> FailoverManager:
        data: Dict[str, Any] = {
            "backends": backends
            or [
                {"hostname": f"db{i}", "port": 5432 + i, "data_directory": f"/d/{i}"}
                for i in range(nodes)
            ],
            "pool_passwd": "",
            "logdir": self.logdir,
            "failover_command": "failover.sh " + ALL_ESCAPES,
            "failback_command": "failback.sh %d %m",
            "search_primary_node_timeout": 10,
        }
        data.update(settings)
        self.core = FakeCore(config_from_dict(data))
        self.cluster = self.core.cluster
        self.nodes = self.cluster.nodes
        manager = FailoverManager(
            self.clock,
            self.core,
            discard_status,
            query=self.search,
            runner=self.runner,  # type: ignore[arg-type]
            probe=self.probe,
        )
        if start:
            manager.startService()
            self.addCleanup(manager.stopService)
        return manager

    def status_file(self) -> str:
        with open(os.path.join(self.logdir, STATUS_FILE_NAME)) as f:
            return f.read()

    def test_standby_failure_detaches_it_and_runs_failover_command(self) -> None:
        manager = self.manager()
        self.assertTrue(self.successResultOf(manager.node_failed(1, "health check failed")))
        self.assertEqual(self.nodes[1].status, STATUS_DOWN)
        self.assertEqual(self.nodes[1].status_reason, "health check failed")
        self.assertEqual(
            self.runner.commands,
            [("failover_command", "failover.sh 1 db1 5433 /d/1 0 db0 0 0 5432 /d/0 db0 5432")],
        )
        [(node_id, error)] = self.core.ended
        self.assertEqual(
            (node_id, error.sqlstate, error.severity), (1, errors.CONNECTION_FAILURE, "FATAL")
        )
        self.assertIn("backend node 1", error.message)
        self.assertEqual(self.search.nodes, [])
        self.assertEqual(self.status_file(), "up\ndown\n")
        self.assertEqual(manager.history, [("failover", 1)])

    def test_session_failure_of_a_node_that_answers_fails_nothing_over(self) -> None:
        # A session's connection ended (client garbage the server closed
        # on, a terminated process...) but the node takes connections.
        manager = self.manager()
        self.probe_answers[0] = True
        self.assertFalse(
            self.successResultOf(
                manager.session_saw_failure(0, "connection to backend node 0 lost")
            )
        )
        self.assertEqual(
            (self.nodes[0].status, self.runner.commands, self.probed), ("waiting", [], [0])
        )

    def test_session_failure_of_a_node_that_does_not_answer_fails_it_over(self) -> None:
        manager = self.manager()
        self.probe_answers[1] = False
        self.assertTrue(
            self.successResultOf(
                manager.session_saw_failure(1, "connection to backend node 1 lost")
            )
        )
        self.assertEqual(self.nodes[1].status, STATUS_DOWN)

    def test_many_sessions_seeing_one_node_go_probe_it_once(self) -> None:
        manager = self.manager()
        probing: defer.Deferred = defer.Deferred()
        self.probe_answers[1] = probing
        reports = [manager.session_saw_failure(1, "lost") for _ in range(5)]
        probing.callback(False)
        self.assertEqual(
            ([self.successResultOf(d) for d in reports], self.probed),
            ([True, False, False, False, False], [1]),
        )

    def test_primary_failure_finds_the_new_primary(self) -> None:
        manager = self.manager()
        self.search.in_recovery = {1: False}
        self.successResultOf(manager.node_failed(0, "health check failed"))
        self.assertEqual(
            self.runner.commands[0][1], "failover.sh 0 db0 5432 /d/0 1 db1 0 0 5433 /d/1 db0 5432"
        )
        self.assertIs(self.cluster.primary(), self.nodes[1])
        self.assertEqual(self.nodes[0].status, STATUS_DOWN)

    def test_search_retries_every_second_until_a_primary_appears(self) -> None:
        manager = self.manager()
        self.search.in_recovery = {1: True}
        d = manager.node_failed(0, "gone")
        self.assertNoResult(d)
        self.assertIsNone(self.cluster.primary())
        self.clock.advance(1)
        self.assertEqual(self.search.nodes, [1, 1])
        self.search.in_recovery = {1: False}
        self.clock.advance(1)
        self.assertTrue(self.successResultOf(d))
        self.assertIs(self.cluster.primary(), self.nodes[1])

    def test_waiting_search_reports_every_ten_seconds_not_every_attempt(self) -> None:
        from twisted.logger import globalLogPublisher

        events: List[str] = []

        def observe(event: Dict[str, Any]) -> None:
            text = event.get("log_format") or ""
            if "find_primary_node" in text:
                events.append(text)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        manager = self.manager(search_primary_node_timeout=0)
        self.search.in_recovery = {1: True}
        manager.node_failed(0, "gone")
        self.clock.pump([1] * 25)
        self.assertEqual(len(self.search.nodes), 26)
        self.assertEqual(
            (
                sum("no primary node found (asked" in e for e in events),
                sum("still no primary" in e for e in events),
            ),
            (3, 2),
        )

    def test_search_gives_up_after_search_primary_node_timeout(self) -> None:
        manager = self.manager(search_primary_node_timeout=3)
        self.search.in_recovery = {1: True}
        d = manager.node_failed(0, "gone")
        self.clock.pump([1, 1, 1])
        self.assertTrue(self.successResultOf(d))
        self.assertIsNone(self.cluster.primary())
        # Asked at 0, 1, 2 and 3 s.
        self.assertEqual(len(self.search.nodes), 4)
        self.assertFalse(manager.busy)

    def test_a_second_report_during_the_failover_is_ignored(self) -> None:
        manager = self.manager()
        self.runner.hold = True
        first = manager.node_failed(1, "health check failed")
        second = manager.node_failed(1, "backend error")
        self.assertTrue(manager.busy)
        self.runner.release()
        self.assertTrue(self.successResultOf(first))
        self.assertFalse(self.successResultOf(second))
        third = manager.node_failed(1, "backend error, later")
        self.assertFalse(self.successResultOf(third))
        self.assertEqual(len(self.runner.commands), 1)
        self.assertEqual(manager.history, [("failover", 1)])

    def test_failovers_run_one_at_a_time_in_order(self) -> None:
        manager = self.manager(nodes=3)
        self.search.in_recovery = {1: False, 2: True}
        self.runner.hold = True
        manager.node_failed(0, "primary gone")
        manager.node_failed(2, "standby gone too")
        self.assertEqual(
            [c for _, c in self.runner.commands],
            ["failover.sh 0 db0 5432 /d/0 1 db1 0 0 5433 /d/1 db0 5432"],
        )
        self.assertEqual(self.nodes[2].status, STATUS_WAITING)
        self.runner.release()
        # The primary's failover finished (search included) before node 2's
        # began, so node 2's command sees the new primary.
        self.assertEqual(
            self.runner.commands[1][1], "failover.sh 2 db2 5434 /d/2 1 db1 1 1 5433 /d/1 db1 5433"
        )
        self.runner.release()
        self.assertEqual(manager.history, [("failover", 0), ("failover", 2)])

    def test_disallow_to_failover_is_never_detached_automatically(self) -> None:
        manager = self.manager(
            backends=[{"hostname": "db0"}, {"hostname": "db1", "flag": "DISALLOW_TO_FAILOVER"}]
        )
        self.assertFalse(self.successResultOf(manager.node_failed(1, "x")))
        self.assertEqual(self.nodes[1].status, STATUS_WAITING)
        self.assertEqual(self.runner.commands, [])

    def test_admin_detach_is_allowed_even_when_failover_is_not(self) -> None:
        manager = self.manager(
            backends=[{"hostname": "db0"}, {"hostname": "db1", "flag": "DISALLOW_TO_FAILOVER"}]
        )
        self.assertTrue(self.successResultOf(manager.detach(1, "maintenance")))
        self.assertEqual(self.nodes[1].status, STATUS_DOWN)
        self.assertEqual(self.core.ended[0][1].sqlstate, errors.ADMIN_SHUTDOWN)

    def test_detach_of_a_down_node_does_nothing(self) -> None:
        manager = self.manager()
        self.successResultOf(manager.detach(1, "x"))
        self.assertFalse(self.successResultOf(manager.detach(1, "again")))
        self.assertEqual(len(self.runner.commands), 1)

    def test_unknown_node(self) -> None:
        manager = self.manager()
        self.failureResultOf(manager.detach(7, "x"), FailoverError)
        self.failureResultOf(manager.attach(-1, "x"), FailoverError)
        self.assertFalse(self.successResultOf(manager.node_failed(7, "x")))

    def test_graceful_detach_waits_for_sessions(self) -> None:
        manager = self.manager()
        frontend = FakeFrontend(self.core.sessions, FakeSession(busy=True))
        d = manager.detach(1, "maintenance", gracefully=True)
        self.assertEqual(self.nodes[1].status, STATUS_DOWN)
        self.clock.advance(0.5)
        self.assertEqual(self.core.ended, [])
        frontend.session.busy = False
        self.clock.advance(0.1)
        self.assertTrue(self.successResultOf(d))
        self.assertEqual(len(self.core.ended), 1)

    def test_attach_marks_up_and_runs_failback_command(self) -> None:
        manager = self.manager()
        self.successResultOf(manager.detach(1, "x"))
        self.assertTrue(self.successResultOf(manager.attach(1, "repaired")))
        self.assertEqual(self.nodes[1].status, STATUS_UP)
        self.assertEqual(self.runner.commands[-1], ("failback_command", "failback.sh 1 0"))
        self.assertEqual(self.status_file(), "up\nup\n")
        self.assertFalse(self.successResultOf(manager.attach(1, "again")))

    def test_attach_searches_the_primary_when_none_is_known(self) -> None:
        manager = self.manager(search_primary_node_timeout=1)
        self.search.in_recovery = {}
        d = manager.node_failed(0, "gone")
        self.clock.advance(1)
        self.successResultOf(d)
        self.assertIsNone(self.cluster.primary())
        self.search.in_recovery = {0: False, 1: True}
        self.successResultOf(manager.attach(0, "back"))
        self.assertIs(self.cluster.primary(), self.nodes[0])

    def test_always_primary_is_never_searched_away_from(self) -> None:
        manager = self.manager(
            backends=[{"hostname": "db0", "flag": "ALWAYS_PRIMARY"}, {"hostname": "db1"}]
        )
        self.search.in_recovery = {1: False}
        self.successResultOf(manager.node_failed(0, "gone"))
        self.assertIsNone(self.cluster.primary())
        self.assertEqual(self.nodes[0].role, ROLE_PRIMARY)
        self.assertEqual(self.search.nodes, [])

    def test_follow_primary_command_runs_for_each_other_standby(self) -> None:
        manager = self.manager(nodes=3, follow_primary_command="follow.sh %d %m %H %P")
        self.search.in_recovery = {1: False, 2: True}
        self.successResultOf(manager.node_failed(0, "gone"))
        self.assertEqual(
            self.runner.commands[1:], [("follow_primary_command", "follow.sh 2 1 db1 0")]
        )
        self.assertEqual(self.nodes[2].status, STATUS_DOWN)
        self.assertEqual(manager.history, [("failover", 0), ("follow", 2)])

    def test_standby_failure_runs_no_follow_command(self) -> None:
        manager = self.manager(nodes=3, follow_primary_command="follow.sh %d")
        self.successResultOf(manager.node_failed(2, "gone"))
        self.assertEqual([w for w, _ in self.runner.commands], ["failover_command"])

    def test_promote_changes_the_view_only(self) -> None:
        manager = self.manager(nodes=3)
        self.assertTrue(self.successResultOf(manager.promote(1)))
        self.assertIs(self.cluster.primary(), self.nodes[1])
        self.assertEqual([n.status for n in self.nodes], [STATUS_DOWN, STATUS_WAITING, STATUS_DOWN])
        self.assertEqual(self.runner.commands, [])

    def test_promote_with_follow_runs_it_for_the_others(self) -> None:
        manager = self.manager(nodes=3, follow_primary_command="follow.sh %d %m")
        self.successResultOf(manager.promote(2))
        self.assertEqual(
            sorted(c for _, c in self.runner.commands), ["follow.sh 0 2", "follow.sh 1 2"]
        )

    def test_switchover_runs_failover_command_for_the_chosen_node(self) -> None:
        manager = self.manager(nodes=3)
        self.search.in_recovery = {1: True, 2: True}
        self.runner.on_run = lambda what, command: self.search.in_recovery.update({2: False})
        self.assertTrue(self.successResultOf(manager.promote(2, switchover=True)))
        self.assertEqual(
            self.runner.commands,
            [("failover_command", "failover.sh 0 db0 5432 /d/0 2 db2 0 0 5434 /d/2 db0 5432")],
        )
        self.assertIs(self.cluster.primary(), self.nodes[2])
        self.assertEqual(self.nodes[0].status, STATUS_DOWN)

    def test_promote_a_down_node_is_refused(self) -> None:
        manager = self.manager()
        self.successResultOf(manager.detach(1, "x"))
        self.failureResultOf(manager.promote(1), FailoverError)
        self.assertFalse(manager.busy)

    def test_promote_the_primary_does_nothing(self) -> None:
        manager = self.manager()
        self.assertFalse(self.successResultOf(manager.promote(0)))

    def test_an_error_in_a_failover_is_logged_and_frees_the_queue(self) -> None:
        manager = self.manager()

        def broken(node_id: int, error: errors.PgError) -> int:
            raise RuntimeError("boom")

        self.core.end_sessions_using = broken  # type: ignore[assignment]
        self.assertFalse(self.successResultOf(manager.node_failed(1, "x")))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(manager.busy)

    def test_stopping_cancels_the_running_failover(self) -> None:
        manager = self.manager()
        self.search.in_recovery = {1: True}
        d = manager.node_failed(0, "gone")
        manager.stopService()
        self.assertFalse(self.successResultOf(d))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    # -- the status file --------------------------------------------------------

    def write_status(self, text: str) -> None:
        with open(os.path.join(self.logdir, STATUS_FILE_NAME), "w") as f:
            f.write(text)

    def test_status_is_written_at_start_and_on_every_change(self) -> None:
        self.manager()
        self.assertEqual(self.status_file(), "up\nup\n")
        self.cluster.set_status(self.nodes[1], STATUS_DOWN, "by hand")
        self.assertEqual(self.status_file(), "up\ndown\n")
        self.cluster.set_status(self.nodes[1], STATUS_WAITING, "by hand")
        self.assertEqual(self.status_file(), "up\nup\n")

    def test_recorded_down_node_stays_down(self) -> None:
        self.write_status("up\ndown\n")
        self.manager()
        self.assertEqual(self.nodes[1].status, STATUS_DOWN)
        self.assertIn(STATUS_FILE_NAME, self.nodes[1].status_reason)
        self.assertEqual(self.nodes[0].status, STATUS_WAITING)

    def test_discard_status_starts_every_node_up(self) -> None:
        self.write_status("up\ndown\n")
        self.manager(discard_status=True)
        self.assertEqual([n.status for n in self.nodes], [STATUS_WAITING] * 2)
        self.assertEqual(self.status_file(), "up\nup\n")

    def test_all_down_status_file_is_ignored(self) -> None:
        self.write_status("down\ndown\n")
        self.manager()
        self.assertEqual([n.status for n in self.nodes], [STATUS_WAITING] * 2)

    def test_load_status_before_start_is_not_repeated(self) -> None:
        self.write_status("up\ndown\n")
        manager = self.manager(start=False)
        manager.load_status()
        self.assertEqual(self.nodes[1].status, STATUS_DOWN)
        self.successResultOf(manager.attach(1, "back"))
        manager.startService()
        self.addCleanup(manager.stopService)
        self.assertEqual(self.nodes[1].status, STATUS_UP)

    def test_unwritable_logdir_is_logged_not_raised(self) -> None:
        self.logdir = os.path.join(self.logdir, "missing")
        manager = self.manager()
        self.successResultOf(manager.node_failed(1, "x"))
        self.assertEqual(self.nodes[1].status, STATUS_DOWN)
