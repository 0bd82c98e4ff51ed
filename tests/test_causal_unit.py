"""
Read-your-writes decisions (twisted_pgpool.routing.causal) with a fake clock, and
the statements the proxy answers about C{pgpool.min_lsn}.
"""

from __future__ import annotations

from typing import List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.cluster.model import Cluster
from twisted_pgpool.config import config_from_dict
from twisted_pgpool.routing import causal
from twisted_pgpool.routing.causal import CausalState, MinLsnStatement, match_statement
from twisted_pgpool.wire import errors, messages


def standby():
    config = config_from_dict(
        {
            "backends": [{"hostname": "p", "port": 1}, {"hostname": "s", "port": 2}],
            "pool_passwd": "",
        }
    )
    return Cluster.from_config(config.backends).nodes[1]


class Prober:
    """
    Records position queries; C{possible} says whether one can be sent.
    """

    def __init__(self, possible: bool = True) -> None:
        self.possible = possible
        self.sent = 0

    def __call__(self, node: object) -> bool:
        if self.possible:
            self.sent += 1
        return self.possible


class StatementTests(SynchronousTestCase):
    def test_set_forms(self) -> None:
        for sql, value in [
            ("SET pgpool.min_lsn = '0/3000060'", "0/3000060"),
            ("set pgpool.min_lsn to '16/B374D848';", "16/B374D848"),
            ("SET SESSION pgpool.min_lsn = 0/5", "0/5"),
            ("  SET LOCAL pgpool.min_lsn='1/2'  ", "1/2"),
            ("SET pgpool.min_lsn = 'it''s'", "it's"),
        ]:
            self.assertEqual(
                match_statement(sql.encode() + b"\x00"), MinLsnStatement("set", value), sql
            )

    def test_default_reset_and_show(self) -> None:
        self.assertEqual(
            match_statement(b"SET pgpool.min_lsn TO DEFAULT\x00"), MinLsnStatement("set", None)
        )
        self.assertEqual(match_statement(b"RESET pgpool.min_lsn\x00"), MinLsnStatement("reset"))
        self.assertEqual(match_statement(b"show pgpool.min_lsn;\x00"), MinLsnStatement("show"))

    def test_other_statements_are_not_ours(self) -> None:
        for sql in [
            b"SELECT 1\x00",
            b"SET search_path = x\x00",
            b"SELECT 'SET pgpool.min_lsn = 1'\x00",
            b"SET pgpool.min_lsn = '0/1'; SELECT 1\x00",
        ]:
            self.assertIsNone(match_statement(sql), sql)

    def test_answers(self) -> None:
        state = CausalState(Clock())
        reply = causal.answer_statement(MinLsnStatement("set", "0/3000060"), state)
        self.assertEqual(reply, [messages.command_complete("SET")])
        self.assertEqual(state.min_lsn, 0x3000060)
        shown = causal.answer_statement(MinLsnStatement("show"), state)
        self.assertEqual(shown[1], messages.data_row(["0/3000060"]))
        causal.answer_statement(MinLsnStatement("reset"), state)
        self.assertEqual(state.min_lsn, 0)

    def test_a_bad_value_is_an_error_and_keeps_the_floor(self) -> None:
        state = CausalState(Clock(), min_lsn=5)
        reply = causal.answer_statement(MinLsnStatement("set", "tomorrow"), state)
        self.assertEqual(reply[0][:1], b"E")
        self.assertIn(b"C22P02\x00", reply[0])
        self.assertEqual(state.min_lsn, 5)
        with self.assertRaises(errors.PgError):
            causal.parse_floor("1/2/3")

    def test_startup_floor_is_taken_out_of_the_parameters(self) -> None:
        parameters = {"user": "u", "options": "-c pgpool.min_lsn=0/10 -c work_mem=64MB"}
        self.assertEqual(causal.take_startup_floor(parameters), "0/10")
        self.assertEqual(parameters, {"user": "u", "options": "-c work_mem=64MB"})
        parameters = {"user": "u", "pgpool.min_lsn": "0/20", "options": "--pgpool.min_lsn=0/10"}
        self.assertEqual(causal.take_startup_floor(parameters), "0/20")
        self.assertEqual(parameters, {"user": "u"})
        parameters = {"user": "u", "options": "-c geqo=off"}
        self.assertIsNone(causal.take_startup_floor(parameters))
        self.assertEqual(parameters, {"user": "u", "options": "-c geqo=off"})


class VerdictTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.node = standby()
        self.woken: List[int] = []

    def wake(self) -> None:
        self.woken.append(1)

    def test_no_write_no_question(self) -> None:
        state = CausalState(self.clock)
        prober = Prober()
        self.assertTrue(state.verdict(self.node, prober, self.wake))
        self.assertEqual(prober.sent, 0)

    def test_a_standby_known_to_be_far_enough_serves_at_once(self) -> None:
        state = CausalState(self.clock, commit_lsn=100)
        self.node.replay_lsn = 100
        prober = Prober()
        self.assertTrue(state.verdict(self.node, prober, self.wake))
        self.assertEqual(prober.sent, 0)

    def test_a_pending_commit_position_is_waited_for(self) -> None:
        state = CausalState(self.clock)
        state.commit_pending = True
        self.assertIsNone(state.verdict(self.node, Prober(), self.wake))
        self.assertEqual(state.committed(300), 300)
        self.assertFalse(state.commit_pending)
        self.assertEqual(state.required, 300)
        self.assertIsNone(state.committed(200), "an older position is no token")

    def test_an_old_position_is_asked_for_and_the_answer_decides(self) -> None:
        state = CausalState(self.clock, commit_lsn=100)
        self.node.replay_lsn = 50
        prober = Prober()
        self.assertIsNone(state.verdict(self.node, prober, self.wake))
        self.assertEqual((prober.sent, self.node.freshness_probes), (1, 1))
        # Asked once: a second look while the answer is out waits.
        self.assertIsNone(state.verdict(self.node, prober, self.wake))
        self.assertEqual(prober.sent, 1)
        state.probed(self.node, 120)
        self.assertEqual(self.node.replay_lsn, 120)
        self.assertTrue(state.verdict(self.node, prober, self.wake))
        self.assertEqual(self.node.reads_moved_to_primary, 0)

    def test_a_standby_still_behind_sends_the_read_to_the_primary(self) -> None:
        state = CausalState(self.clock, commit_lsn=100)
        prober = Prober()
        state.verdict(self.node, prober, self.wake)
        state.probed(self.node, 90)
        self.assertIs(state.verdict(self.node, prober, self.wake), False)
        self.assertEqual(self.node.reads_moved_to_primary, 1)
        # Within the probe interval no new question: straight to the primary.
        self.clock.advance(causal.PROBE_INTERVAL / 2)
        self.assertIs(state.verdict(self.node, prober, self.wake), False)
        self.assertEqual(prober.sent, 1)
        # After it, the standby is asked again.
        self.clock.advance(causal.PROBE_INTERVAL)
        self.assertIsNone(state.verdict(self.node, prober, self.wake))
        self.assertEqual(prober.sent, 2)

    def test_a_later_write_needs_a_new_question(self) -> None:
        state = CausalState(self.clock, commit_lsn=100)
        prober = Prober()
        state.verdict(self.node, prober, self.wake)
        state.probed(self.node, 90)
        state.committed(200)
        self.assertIsNone(state.verdict(self.node, prober, self.wake))
        self.assertEqual(prober.sent, 2)

    def test_a_floor_counts_like_a_write(self) -> None:
        state = CausalState(self.clock, commit_lsn=10, min_lsn=500)
        self.node.replay_lsn = 400
        self.assertEqual(state.required, 500)
        self.assertIsNone(state.verdict(self.node, Prober(), self.wake))

    def test_no_way_to_ask_means_the_primary(self) -> None:
        state = CausalState(self.clock, commit_lsn=100)
        self.assertIs(state.verdict(self.node, Prober(possible=False), self.wake), False)
        self.assertEqual(self.node.reads_moved_to_primary, 1)

    def test_an_unanswered_question_means_the_primary(self) -> None:
        state = CausalState(self.clock, commit_lsn=100)
        prober = Prober()
        state.verdict(self.node, prober, self.wake)
        state.probed(self.node, None)
        self.assertIs(state.verdict(self.node, prober, self.wake), False)

    def test_waiting_asks_again_until_the_standby_catches_up(self) -> None:
        state = CausalState(self.clock, wait_timeout=0.1, commit_lsn=100)
        prober = Prober()
        self.assertIsNone(state.verdict(self.node, prober, self.wake))
        state.probed(self.node, 90)
        # Behind: wait a little, then ask again.
        self.assertIsNone(state.verdict(self.node, prober, self.wake))
        self.assertEqual(prober.sent, 1)
        self.clock.advance(causal.FIRST_RETRY_DELAY)
        self.assertEqual(self.woken, [1])
        self.assertIsNone(state.verdict(self.node, prober, self.wake))
        self.assertEqual(prober.sent, 2)
        self.clock.advance(0.01)
        state.probed(self.node, 100)
        self.assertTrue(state.verdict(self.node, prober, self.wake))
        self.assertEqual(self.node.reads_waited, 1)
        self.assertAlmostEqual(self.node.read_wait_seconds, causal.FIRST_RETRY_DELAY + 0.01)
        self.assertEqual(self.node.reads_moved_to_primary, 0)

    def test_waiting_gives_up_at_the_timeout(self) -> None:
        state = CausalState(self.clock, wait_timeout=0.05, commit_lsn=100)
        prober = Prober()
        decision = state.verdict(self.node, prober, self.wake)
        while decision is None:
            if state._probing:
                state.probed(self.node, 90)
            elif self.clock.getDelayedCalls():
                self.clock.advance(self.clock.getDelayedCalls()[0].getTime() - self.clock.seconds())
            decision = state.verdict(self.node, prober, self.wake)
        self.assertIs(decision, False)
        self.assertGreaterEqual(self.clock.seconds(), 0.05)
        self.assertLess(self.clock.seconds(), 0.06)
        self.assertEqual((self.node.reads_waited, self.node.reads_moved_to_primary), (1, 1))
        self.assertGreater(prober.sent, 3, "asked again and again with backoff")

    def test_close_stops_the_wait_timer(self) -> None:
        state = CausalState(self.clock, wait_timeout=1.0, commit_lsn=100)
        prober = Prober()
        state.verdict(self.node, prober, self.wake)
        state.probed(self.node, 90)
        state.verdict(self.node, prober, self.wake)
        self.assertEqual(len(self.clock.getDelayedCalls()), 2, "retry and deadline")
        state.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_read_answered_by_its_first_question_did_not_wait(self) -> None:
        state = CausalState(self.clock, wait_timeout=0.1, commit_lsn=100)
        prober = Prober()
        state.verdict(self.node, prober, self.wake)
        self.clock.advance(0.002)
        state.probed(self.node, 100)
        self.assertTrue(state.verdict(self.node, prober, self.wake))
        self.assertEqual((self.node.reads_waited, self.node.read_wait_seconds), (0, 0.0))

    def test_the_deadline_holds_while_a_question_is_out(self) -> None:
        state = CausalState(self.clock, wait_timeout=0.01, commit_lsn=100)
        prober = Prober()
        state.verdict(self.node, prober, self.wake)
        state.probed(self.node, 90)
        self.assertIsNone(state.verdict(self.node, prober, self.wake))
        self.clock.advance(causal.FIRST_RETRY_DELAY)
        self.assertIsNone(state.verdict(self.node, prober, self.wake))
        self.assertEqual(prober.sent, 2, "asked again; the answer is slow")
        self.clock.advance(0.01)
        self.assertEqual(len(self.woken), 2, "woken by the retry, then the deadline")
        self.assertIs(state.verdict(self.node, prober, self.wake), False)
        self.assertAlmostEqual(self.node.read_wait_seconds, 0.01 + causal.FIRST_RETRY_DELAY)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # The late answer changes nothing for the read already moved.
        state.probed(self.node, 100)
        self.assertEqual(self.node.reads_moved_to_primary, 1)


class RideAlongTests(SynchronousTestCase):
    """
    A standby's position wanted by a session is asked by the next reads
    that go there, at most once per L{causal.RIDE_ALONG_INTERVAL}.
    """

    def setUp(self) -> None:
        self.node = standby()
        self.state = CausalState(Clock(), commit_lsn=100)

    def test_nothing_wanted_nothing_asked(self) -> None:
        self.assertFalse(causal.ride_along(self.node, 10.0))
        self.assertEqual(self.node.freshness_probes, 0)

    def test_a_commit_makes_its_position_wanted(self) -> None:
        self.state.ask_ahead(self.node)
        self.assertEqual(self.node.replay_wanted, 100)
        # An older position does not lower what is wanted.
        CausalState(Clock(), commit_lsn=50).ask_ahead(self.node)
        self.assertEqual(self.node.replay_wanted, 100)

    def test_a_standby_known_far_enough_is_not_wanted(self) -> None:
        self.node.replay_lsn = 100
        self.state.ask_ahead(self.node)
        self.assertEqual(self.node.replay_wanted, 0)

    def test_asked_once_per_interval_until_known(self) -> None:
        self.state.ask_ahead(self.node)
        self.assertTrue(causal.ride_along(self.node, 10.0))
        self.assertFalse(causal.ride_along(self.node, 10.0 + causal.RIDE_ALONG_INTERVAL / 2))
        causal.replayed(self.node, 90)
        self.assertTrue(causal.ride_along(self.node, 10.0 + 2 * causal.RIDE_ALONG_INTERVAL))
        causal.replayed(self.node, 100)
        self.assertFalse(causal.ride_along(self.node, 20.0))
        self.assertEqual((self.node.replay_wanted, self.node.freshness_probes), (0, 2))

    def test_an_older_answer_never_moves_the_position_back(self) -> None:
        causal.replayed(self.node, 100)
        causal.replayed(self.node, 90)
        causal.replayed(self.node, None)
        self.assertEqual(self.node.replay_lsn, 100)


class PositionReplyTests(SynchronousTestCase):
    """
    The answer to a position question: a FunctionCallResponse with the
    position as text.
    """

    def answer(self, *replies: bytes) -> causal.PositionReply:
        reply = causal.PositionReply()
        for raw in replies:
            reply.message(raw[0], raw[5:])
        return reply

    def test_the_questions_are_function_calls_of_the_builtin_functions(self) -> None:
        for frame, oid in [
            (causal.COMMIT_POSITION_QUERY, 2852),
            (causal.REPLAY_POSITION_QUERY, 3821),
        ]:
            call = messages.decode_function_call(frame[5:])
            self.assertEqual(
                (frame[:1], call.function_oid, call.arguments, call.result_format),
                (b"F", oid, (), 0),
            )

    def test_a_position(self) -> None:
        reply = self.answer(
            messages.message(messages.FUNCTION_CALL_RESPONSE, b"\x00\x00\x00\x090/3000060")
        )
        self.assertEqual(reply.position, 0x3000060)

    def test_null_an_error_or_nothing_is_no_position(self) -> None:
        null = messages.message(messages.FUNCTION_CALL_RESPONSE, b"\xff\xff\xff\xff")
        garbage = messages.message(messages.FUNCTION_CALL_RESPONSE, b"\x00\x00\x00\x03abc")
        error = errors.error(errors.INVALID_TEXT_REPRESENTATION, "no").to_bytes()
        for replies in [(null,), (garbage,), (error,), ()]:
            self.assertIsNone(self.answer(*replies).position, replies)
