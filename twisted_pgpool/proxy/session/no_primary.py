"""
A session served by a standby: it began while no primary was usable (down,
detached, none found, or unreachable at login), as Pgpool-II's sessions
then have only the standbys.  Its first connection, C{primary_id}, is a
standby; reads are served; a statement that certainly writes
(C{Classification.writes}, routed L{twisted_pgpool.routing.router.NOWHERE})
is answered here with C{25006 read_only_sql_transaction} -- PostgreSQL's
SQLSTATE for a write a standby refuses -- and sent to no node.  Pgpool-II
would send it to the standby, which refuses it with the same SQLSTATE.

The session keeps its standby for life: when a primary is back, new
sessions use it.
"""

from __future__ import annotations

from typing import List

from twisted_pgpool.proxy.session.state import SessionState
from twisted_pgpool.sql.classifier import Classification
from twisted_pgpool.wire import errors, messages

#: SQLSTATE of a write in a read-only transaction (a standby's refusal).
READ_ONLY_SQL_TRANSACTION = "25006"

#: Fails the standby's open transaction, as the refused statement would
#: have (the savepoint never exists).
_FAIL_TRANSACTION = messages.query("ROLLBACK TO SAVEPOINT twisted_pgpool_abort_transaction")


def write_refused(statement: str, node_id: int) -> errors.PgError:
    """
    The error for a write in a session that has no primary.

    @param statement: the statement's command word(s), as the classifier
        names its kind (C{insert}, C{create}...).
    @param node_id: the standby serving the session.
    """
    return errors.error(
        READ_ONLY_SQL_TRANSACTION,
        f"cannot execute {statement.upper()} in a read-only session: no primary node is available",
        detail=f"The session began while no primary node was usable and is "
        f"served by standby node {node_id}, which only reads; the "
        "statement was sent to no node.",
        hint="Reconnect once a primary is up (SHOW POOL_NODES shows the "
        "nodes): new sessions use it.",
    )


def writing_kind(classification) -> str:
    """
    The command word of the statement that writes: for a multi-statement
    query, of the first part that does.
    """
    for part in classification.parts:
        if part.writes:
            return str(part.kind)
    return str(classification.kind)


def _ignore_message(message_type: int, payload: bytes) -> None:
    """
    The expected error of L{_FAIL_TRANSACTION}: nobody's business.
    """


def _ignore_status(status: int) -> None:
    """
    Its ReadyForQuery (the status is read off the connection).
    """


class NoPrimary(SessionState):
    """
    A part of L{twisted_pgpool.proxy.session.Session}: writes refused in a
    session that has no primary (C{no_primary}).
    """

    def _refuse_write(self, classification: Classification, ready: bool) -> None:
        """
        Answer a write with L{write_refused}, in its turn (after the replies
        the client is owed), as PostgreSQL answers an error: inside a
        transaction block the transaction fails -- the standby's too, so a
        COMMIT after it rolls back and the next statement gets 25P02 --
        and the ReadyForQuery (with C{ready}) says so.

        @param ready: end with a ReadyForQuery (a simple Query, or a batch
            that ends with its Sync); otherwise the Sync that ends the
            skipped batch gives it.
        """
        error = write_refused(writing_kind(classification), self.primary_id)
        failing: List[bool] = []

        def attempt() -> bool:
            if self.closed:
                return True
            if self.owner is not None:
                return False
            link = self.links.get(self.primary_id)
            if link is None:
                return True
            backend = link.backend
            if backend.transaction_status == messages.TRANSACTION_IN_BLOCK and not failing:
                # The client waits for this query of the proxy's own (its
                # reply is swallowed); the error follows its ReadyForQuery.
                failing.append(True)
                backend.expect_capture(_ignore_message, _ignore_status, holds_client=True)
                self.owner = backend
                backend.write(_FAIL_TRANSACTION)
                return False
            answer = [error.to_bytes()]
            if ready:
                answer.append(messages.ready_for_query(backend.transaction_status))
            self.frontend.transport.writeSequence(answer)
            return True

        self.run_or_wait(attempt)

    def _refuse_write_batch(self, classification: Classification, sync: bool) -> None:
        """
        An extended-protocol batch that writes, in a session with no
        primary: refused like a simple Query (L{_refuse_write}); the rest
        of the batch is skipped up to its Sync, as after any error.  A part
        of the batch flushed to the standby before is ended first, its
        replies still the client's (as native replication does).
        """
        if self._batch_route is not None:
            self._move_batch_to_primary()
        self._refusing_batch = not sync
        self._refuse_write(classification, ready=sync)
