"""
Tests for L{twisted_pgpool.backend.replies}: which reply unit belongs to
whom, with nothing but calls (no transport, no protocol).
"""

from __future__ import annotations

from typing import List, Tuple

from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.backend.replies import (
    FORWARD,
    FORWARD_BUT_READY,
    SWALLOW,
    Capture,
    Recorded,
    ReplyUnits,
)
from twisted_pgpool.wire import messages


class _Recorder:
    def __init__(self) -> None:
        self.data: List[bytes] = []
        self.failed = False
        self.statuses: List[int] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def finished(self, status: int) -> None:
        self.statuses.append(status)


def _ignore_message(message_type: int, payload: bytes) -> None:
    pass


def _ignore_status(status: int) -> None:
    pass


class ExpectTests(SynchronousTestCase):
    """
    Announcing units: how many are owed, how many go to the client, and
    when the connection stops being idle.
    """

    def setUp(self) -> None:
        self.replies = ReplyUnits()

    def test_a_new_connection_owes_nothing(self) -> None:
        self.assertEqual(
            (list(self.replies.units), self.replies.forwarding, self.replies.forwarding_now()),
            ([], 0, False),
        )

    def test_only_the_first_unit_changes_where_bytes_go(self) -> None:
        self.assertEqual(
            [self.replies.expect(True), self.replies.expect(False), self.replies.expect(True)],
            [True, False, False],
        )

    def test_forwarded_units_count_swallowed_ones_do_not(self) -> None:
        self.replies.expect(True)
        self.replies.expect(False)
        self.replies.expect(True)
        self.assertEqual(
            (list(self.replies.units), self.replies.forwarding), ([FORWARD, SWALLOW, FORWARD], 2)
        )

    def test_a_capture_counts_only_when_it_holds_the_client(self) -> None:
        self.replies.expect_capture(_ignore_message, _ignore_status, holds_client=False)
        self.replies.expect_capture(_ignore_message, _ignore_status, holds_client=True)
        self.assertEqual((len(self.replies.units), self.replies.forwarding), (2, 1))

    def test_a_capture_announced_first_changes_where_bytes_go(self) -> None:
        self.assertTrue(self.replies.expect_capture(_ignore_message, _ignore_status, False))

    def test_a_recorded_unit_is_forwarded(self) -> None:
        recorder = _Recorder()
        self.assertTrue(self.replies.expect_recorded(recorder))
        head = self.replies.units[0]
        self.assertEqual(
            (
                head.__class__,
                head.recorder,
                self.replies.forwarding,  # type: ignore[union-attr]
                self.replies.forwarding_now(),
            ),
            (Recorded, recorder, 1, True),
        )

    def test_the_head_says_whether_the_current_reply_is_the_clients(self) -> None:
        self.replies.expect(False)
        self.replies.expect(True)
        self.assertFalse(self.replies.forwarding_now())
        self.replies.ready()
        self.assertTrue(self.replies.forwarding_now())

    def test_a_capture_at_the_head_is_the_clients_if_it_holds_the_client(self) -> None:
        self.replies.expect_capture(_ignore_message, _ignore_status, holds_client=True)
        self.replies.expect_capture(_ignore_message, _ignore_status, holds_client=False)
        self.assertTrue(self.replies.forwarding_now())
        self.replies.ready()
        self.assertFalse(self.replies.forwarding_now())


class ReadyTests(SynchronousTestCase):
    """
    A ReadyForQuery answers the oldest unit.
    """

    def setUp(self) -> None:
        self.replies = ReplyUnits()

    def test_units_are_answered_oldest_first(self) -> None:
        self.replies.expect(True)
        self.replies.expect(False)
        self.replies.expect_capture(_ignore_message, _ignore_status, holds_client=True)
        answered = [self.replies.ready() for _ in range(3)]
        self.assertEqual(
            (
                [answered[0], answered[1], answered[2].__class__],
                list(self.replies.units),
                self.replies.forwarding,
            ),
            ([FORWARD, SWALLOW, Capture], [], 0),
        )

    def test_each_answered_unit_for_the_client_is_counted_off(self) -> None:
        recorder = _Recorder()
        self.replies.expect(True)
        self.replies.expect_recorded(recorder)
        counts = []
        for _ in range(2):
            self.replies.ready()
            counts.append(self.replies.forwarding)
        self.assertEqual(counts, [1, 0])

    def test_a_capture_that_does_not_hold_the_client_is_not_counted_off(self) -> None:
        self.replies.expect(True)
        self.replies.expect_capture(_ignore_message, _ignore_status, holds_client=False)
        self.replies.expect(True)
        self.replies.ready()
        self.replies.ready()
        self.assertEqual(self.replies.forwarding, 1)

    def test_a_ready_for_query_nobody_waited_for_is_an_error(self) -> None:
        self.assertRaises(IndexError, self.replies.ready)


class KeepLastReadyTests(SynchronousTestCase):
    """
    A batch ended early with a Sync of the session's own: its reply stays
    the client's, its ReadyForQuery does not.
    """

    def setUp(self) -> None:
        self.replies = ReplyUnits()

    def test_the_last_forwarded_unit_keeps_its_ready_for_query_back(self) -> None:
        self.replies.expect(True)
        self.replies.expect(True)
        self.replies.keep_last_ready_for_query()
        self.assertEqual(list(self.replies.units), [FORWARD, FORWARD_BUT_READY])

    def test_it_still_counts_for_the_client_until_answered(self) -> None:
        self.replies.expect(True)
        self.replies.keep_last_ready_for_query()
        before = (self.replies.forwarding, self.replies.forwarding_now())
        unit = self.replies.ready()
        self.assertEqual((before, unit, self.replies.forwarding), ((1, True), FORWARD_BUT_READY, 0))

    def test_a_swallowed_unit_is_left_alone(self) -> None:
        self.replies.expect(False)
        self.replies.keep_last_ready_for_query()
        self.assertEqual(list(self.replies.units), [SWALLOW])

    def test_a_capture_is_left_alone(self) -> None:
        self.replies.expect_capture(_ignore_message, _ignore_status, holds_client=True)
        self.replies.keep_last_ready_for_query()
        self.assertEqual(self.replies.units[0].__class__, Capture)

    def test_nothing_owed_nothing_kept(self) -> None:
        self.replies.keep_last_ready_for_query()
        self.assertEqual(list(self.replies.units), [])


class HiddenTests(SynchronousTestCase):
    """
    Replies to messages the proxy added are dropped, as many as were added.
    """

    def setUp(self) -> None:
        self.replies = ReplyUnits()

    def test_each_hidden_message_is_taken_once(self) -> None:
        self.replies.hide(messages.PARSE_COMPLETE)
        self.replies.hide(messages.PARSE_COMPLETE)
        taken = [self.replies.take_hidden(messages.PARSE_COMPLETE) for _ in range(3)]
        self.assertEqual((taken, self.replies.hidden), ([True, True, False], {}))

    def test_other_types_are_not_taken(self) -> None:
        self.replies.hide(messages.CLOSE_COMPLETE)
        taken = self.replies.take_hidden(messages.PARSE_COMPLETE)
        self.assertEqual((taken, self.replies.hidden), (False, {messages.CLOSE_COMPLETE: 1}))

    def test_hiding_owes_no_unit(self) -> None:
        self.replies.hide(messages.PARSE_COMPLETE)
        self.assertEqual((list(self.replies.units), self.replies.forwarding), ([], 0))


class ClearTests(SynchronousTestCase):
    def test_clear_forgets_units_counts_and_hidden_messages(self) -> None:
        replies = ReplyUnits()
        replies.expect(True)
        replies.expect_capture(_ignore_message, _ignore_status, holds_client=True)
        replies.hide(messages.PARSE_COMPLETE)
        replies.clear()
        state: Tuple[list, int, dict] = (list(replies.units), replies.forwarding, replies.hidden)
        self.assertEqual(state, ([], 0, {}))
