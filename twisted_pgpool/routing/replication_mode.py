"""
Native replication mode (Pgpool-II's C{backend_clustering_mode =
'native_replication'}, formerly C{replication_mode = on}): every node is an
independent primary holding the same data, and the proxy keeps them the
same by sending every write to every node that is up.

This module holds the mode's decisions and the sending of one replicated
statement; the session (L{twisted_pgpool.proxy.session}) only hands statements
over.  A replicated statement goes to the main node first and to the other
nodes once the main node has answered (as Pgpool-II does, so two sessions
writing the same rows cannot deadlock across nodes); the replies are then
compared (L{compare}), and only when they agree does the client get the
main node's reply.  A write outside an explicit transaction runs inside a
transaction of the proxy's own on every node, committed on the main node
first and then on the others, so that a write that fails on one node only
is rolled back everywhere instead of being kept on some nodes.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import attr

from twisted_pgpool.cluster.model import ROLE_PRIMARY, Cluster, Node
from twisted_pgpool.wire import errors, messages

#: Statement kinds run inside a transaction of the proxy's own when they
#: come outside an explicit transaction, one statement alone.
_INTERNAL_TRANSACTION_KINDS = frozenset(
    [
        "insert",
        "update",
        "delete",
        "merge",
        "with",
        "select",
        "values",
        "table",
        "truncate",
        "create",
        "alter",
        "drop",
        "comment",
        "grant",
        "revoke",
        "security",
        "refresh",
        "reindex",
        "cluster",
        "import",
    ]
)
#: Statements of those kinds that PostgreSQL refuses inside a transaction
#: block (CREATE DATABASE, ... CONCURRENTLY, ALTER SYSTEM, subscriptions).
_NOT_IN_A_BLOCK = re.compile(
    r"\b(database|tablespace|concurrently|system|subscription)\b", re.IGNORECASE
)
#: Command tags whose row count must agree (C{failover_if_affected_tuples_mismatch}).
_COUNTED = frozenset(["INSERT", "UPDATE", "DELETE", "MERGE"])
#: Makes a node's open transaction fail (the savepoint never exists), so
#: that a later COMMIT commits nothing there.
ABORT_TRANSACTION = "ROLLBACK TO SAVEPOINT twisted_pgpool_abort_transaction"


def is_native(config) -> bool:
    """
    Whether C{config} asks for native replication mode.
    """
    return config.backend_clustering_mode == "native_replication"


def main_node(cluster: Cluster) -> Optional[Node]:
    """
    Pgpool-II's main node: the usable node with the smallest id.
    """
    for node in cluster.nodes:
        if node.is_usable:
            return node
    return None


def follow_main_node(cluster: Cluster) -> None:
    """
    In native replication mode there is no primary to find: the node the
    proxy treats as one (sessions start there, reads fall back to it) is
    the main node.  Give it the primary role now and whenever a node's
    status changes.
    """

    def changed(node: Node) -> None:
        main = main_node(cluster)
        if main is not None and main.role != ROLE_PRIMARY:
            cluster.set_primary(main, "main node (the first node that is up)")

    cluster.observers.append(changed)
    if cluster.nodes:
        changed(cluster.nodes[0])


def role_name(node: Node) -> str:
    """
    The C{role} (and C{pg_role}) of a node in C{SHOW POOL_NODES} in this
    mode, as Pgpool-II shows it: C{main} or C{replica}.
    """
    return "main" if node.role == ROLE_PRIMARY else "replica"


def needs_internal_transaction(classification, sql: str) -> bool:
    """
    Whether a write sent outside an explicit transaction runs inside one of
    the proxy's own on every node (so that it can still be rolled back
    everywhere when the nodes disagree).
    """
    c = classification
    return (
        c.kind in _INTERNAL_TRANSACTION_KINDS
        and not c.is_read_only
        and not c.is_multi_statement
        and not c.to_all_session_nodes
        and not c.is_transaction_start
        and not _NOT_IN_A_BLOCK.search(sql)
    )


def copy_from_stdin(classification, sql: str) -> bool:
    """
    Whether a statement may start a COPY FROM STDIN, which this mode does
    not replicate.
    """
    return (
        classification.kind == "copy"
        and not classification.is_read_only
        and re.search(r"\bstdin\b", sql, re.IGNORECASE) is not None
    )


# -- what this mode refuses ------------------------------------------------------


def refused(what: str) -> errors.PgError:
    """
    The error for something this mode cannot replicate and therefore sends
    to no node: C{copy} (COPY FROM STDIN), C{function call} (fast path) or
    C{extended} (an extended-protocol write executed before a Flush, or in
    a portal bound in an earlier batch).
    """
    if what == "copy":
        return errors.error(
            errors.FEATURE_NOT_SUPPORTED,
            "COPY FROM STDIN is not supported in native replication mode",
            detail="the statement was sent to no node",
            hint="use INSERT statements, or COPY from a server-side file",
        )
    if what == "function call":
        return errors.error(
            errors.FEATURE_NOT_SUPPORTED,
            "function calls (fast-path) are not supported in native replication mode",
            detail="the call was sent to no node",
            hint="call the function in a SELECT",
        )
    return errors.error(
        errors.FEATURE_NOT_SUPPORTED,
        "this extended-protocol write cannot be replicated in native replication mode",
        detail="the statement was sent to no node; a write executed before a "
        "Flush, or in a portal bound in an earlier batch, is not "
        "replicated",
        hint="send the write in one Parse/Bind/Execute/Sync batch, or as a simple query",
    )


@attr.s(auto_attribs=True, frozen=True)
class Targets:
    """
    Where a replicated statement goes (L{replication_targets}).

    @ivar node_ids: every node that is up, the main node first.
    @ivar to_open: those of them the session has no connection to yet.
    @ivar error: why it cannot go anywhere, or L{None}.
    """

    node_ids: Tuple[int, ...]
    to_open: Tuple[Node, ...] = ()
    error: Optional[errors.PgError] = None


def replication_targets(
    nodes: Sequence[Node], main_id: int, linked, unusable, can_open: bool
) -> Targets:
    """
    The nodes a replicated statement must reach: every node that is up.
    A write must not reach some of them only, so a node the session cannot
    have a connection to is an error for the whole statement.

    @param linked: the node ids the session has connections to.
    @param unusable: the node ids the session failed to connect to.
    @param can_open: whether the session may open more connections.
    """
    node_ids = [main_id]
    to_open = []
    for node in nodes:
        if node.node_id == main_id or not node.is_usable:
            continue
        node_ids.append(node.node_id)
        if node.node_id in linked:
            continue
        if not can_open:
            return Targets(
                (),
                error=errors.error(
                    errors.FEATURE_NOT_SUPPORTED,
                    "cannot replicate: the proxy cannot open a connection to "
                    f"node {node.node_id} for this client",
                    detail="native replication needs credentials the proxy can "
                    "use again (pool_passwd, or a trust login)",
                ),
            )
        if node.node_id in unusable:
            return Targets(
                (),
                error=errors.error(
                    errors.CONNECTION_FAILURE,
                    f"cannot replicate: node {node.node_id} is up but this "
                    "session could not connect to it",
                    detail="the statement was sent to no node",
                ),
            )
        to_open.append(node)
    return Targets(tuple(node_ids), tuple(to_open))


# -- comparing the nodes' replies ---------------------------------------------


@attr.s(auto_attribs=True)
class NodeReply:
    """
    One node's reply to a replicated statement.

    @ivar frames: its messages, encoded (only the main node's reach the
        client), without the ReadyForQuery.
    @ivar results: per statement, C{"C <command word>"}, C{"E"} or C{"I"}
        (empty query): what is compared as the reply's kind.
    @ivar counts: the row counts of its INSERT/UPDATE/DELETE/MERGE tags.
    @ivar summary: the same in words, for the error a client gets.
    @ivar status: the transaction status of its ReadyForQuery.
    """

    frames: List[bytes] = attr.ib(factory=list)
    results: List[str] = attr.ib(factory=list)
    counts: List[int] = attr.ib(factory=list)
    summary: List[str] = attr.ib(factory=list)
    status: int = messages.TRANSACTION_IDLE

    @property
    def failed(self) -> bool:
        return "E" in self.results

    def add(self, message_type: int, payload: bytes, keep: bool) -> None:
        if keep:
            self.frames.append(messages.message(message_type, payload))
        if message_type == messages.COMMAND_COMPLETE:
            tag = payload.rstrip(b"\x00").decode("utf-8", "replace")
            words = tag.split()
            word = words[0] if words else ""
            self.results.append("C " + word)
            self.summary.append(tag)
            if word in _COUNTED and words[-1].isdigit():
                self.counts.append(int(words[-1]))
        elif message_type == messages.ERROR_RESPONSE:
            error = messages.decode_error_fields(payload)
            self.results.append("E")
            self.summary.append(f"ERROR {error.sqlstate}: {error.message}")
        elif message_type == messages.EMPTY_QUERY_RESPONSE:
            self.results.append("I")
            self.summary.append("empty query")


@attr.s(auto_attribs=True, frozen=True)
class Disagreement:
    """
    The nodes did not answer a replicated statement alike.

    @ivar what: C{"kind"} (an error on some nodes only, or different
        command tags) or C{"tuples"} (different row counts).
    @ivar majority: the node ids of the larger group (a tie goes to the
        group of the main node).
    @ivar minority: the others.
    @ivar detail: each node's outcome, for the client and the log.
    """

    what: str
    majority: Tuple[int, ...]
    minority: Tuple[int, ...]
    detail: str


def compare(replies: Dict[int, NodeReply], main_id: int) -> Optional[Disagreement]:
    """
    Compare the nodes' replies as Pgpool-II does: first their kinds, then
    the affected row counts.  L{None} when they agree.
    """
    for what, key in (("kind", lambda r: tuple(r.results)), ("tuples", lambda r: tuple(r.counts))):
        groups: Dict[object, List[int]] = {}
        for node_id in sorted(replies):
            groups.setdefault(key(replies[node_id]), []).append(node_id)
        if len(groups) < 2:
            continue
        ranked = sorted(groups.values(), key=lambda ids: (-len(ids), main_id not in ids, ids[0]))
        majority = tuple(ranked[0])
        minority = tuple(sorted(n for ids in ranked[1:] for n in ids))
        detail = "; ".join(
            f"node {node_id}: {', '.join(replies[node_id].summary) or 'no result'}"
            for node_id in sorted(replies)
        )
        return Disagreement(what, majority, minority, detail)
    return None


def mismatch_error(disagreement: Disagreement, undone: bool, fatal: bool = False) -> errors.PgError:
    """
    What the client gets when the nodes disagreed and the statement could
    not be kept.

    @param undone: it was rolled back on every node (or the transaction
        aborted on every node).
    """
    if disagreement.what == "kind":
        message = "replication mismatch: the nodes answered the statement differently"
    else:
        message = "replication mismatch: the nodes affected different numbers of rows"
    if undone:
        message += "; it was rolled back on every node"
    elif not fatal:
        message += "; the transaction is aborted on every node"
    build = errors.fatal if fatal else errors.error
    return build(errors.INTERNAL_ERROR, message, detail=disagreement.detail)


# -- sending one statement ------------------------------------------------------


class ReplicatedStatement:
    """
    One statement (a simple Query, or an extended-protocol batch ending
    with Sync) sent to every node: to the main node first, to the others
    after the main node's reply, compared, and committed or undone.

    The nodes' connections are passed as C{backends} (node id -> backend
    protocol, the main node's included); their replies are captured
    (L{BackendProtocol.expect_capture}), never forwarded: the client's
    reply is written once, by C{deliver}, when everything is settled.

    @ivar frames: what each node gets (node id -> bytes).
    @ivar finished: the client has its reply (or the session is ending).
    """

    def __init__(
        self,
        frames: Dict[int, bytes],
        main_id: int,
        backends: Dict[int, object],
        internal_transaction: bool,
        degenerate_on_kind: bool,
        degenerate_on_tuples: bool,
        deliver: Callable[[List[bytes]], None],
        fail: Callable[[errors.PgError], None],
        degenerate: Callable[[Sequence[int], str], None],
    ) -> None:
        self.frames = frames
        self.main_id = main_id
        self.backends = backends
        self.internal = internal_transaction
        self.degenerate_on_kind = degenerate_on_kind
        self.degenerate_on_tuples = degenerate_on_tuples
        self._deliver = deliver
        self._fail = fail
        self._degenerate = degenerate
        self.replies: Dict[int, NodeReply] = {}
        self.finished = False
        self._outstanding = 0

    # Each phase sends one query (or the statement) to some nodes and goes
    # on when all of them have answered.

    def start(self) -> None:
        self._send([self.main_id], None, self._main_answered, record=True)

    def _send(
        self,
        node_ids: Sequence[int],
        frame: Optional[bytes],
        then: Callable[[], None],
        record: bool = False,
        replies: Optional[Dict[int, NodeReply]] = None,
    ) -> None:
        self._outstanding = len(node_ids)
        if not node_ids:
            then()
            return
        for node_id in node_ids:
            backend = self.backends[node_id]
            data = self.frames[node_id] if frame is None else frame
            if record and self.internal:
                backend.write(messages.query("BEGIN") + data)  # type: ignore[attr-defined]
                backend.expect_capture(_ignore, _ignore, holds_client=False)  # type: ignore[attr-defined]
            else:
                backend.write(data)  # type: ignore[attr-defined]
            reply = NodeReply()
            if record:
                self.replies[node_id] = reply
            elif replies is not None:
                replies[node_id] = reply
            backend.expect_capture(  # type: ignore[attr-defined]
                self._collector(backend, reply, keep=record and node_id == self.main_id),
                self._ready_counter(reply, then),
                holds_client=False,
            )

    def _collector(self, backend, reply: NodeReply, keep: bool):
        def on_message(message_type: int, payload: bytes) -> None:
            if message_type in (messages.COPY_IN_RESPONSE, messages.COPY_BOTH_RESPONSE):
                # Nothing to copy from: end it (an error on every node alike).
                backend.write(
                    messages.copy_fail(
                        "COPY FROM STDIN is not replicated in native replication mode"
                    )
                )
                return
            if (
                message_type == messages.PARAMETER_STATUS
                or message_type == messages.NOTICE_RESPONSE
            ):
                if keep:
                    reply.frames.append(messages.message(message_type, payload))
                return
            reply.add(message_type, payload, keep)

        return on_message

    def _ready_counter(self, reply: NodeReply, then: Callable[[], None]):
        def on_ready(status: int) -> None:
            reply.status = status
            self._outstanding -= 1
            if self._outstanding == 0 and not self.finished:
                then()

        return on_ready

    def _others(self, among: Optional[Sequence[int]] = None) -> List[int]:
        ids = among if among is not None else self.backends
        return [n for n in ids if n != self.main_id and n in self.backends]

    def _main_answered(self) -> None:
        self._send(self._others(), None, self._all_answered, record=True)

    def _all_answered(self) -> None:
        disagreement = compare(self.replies, self.main_id)
        if disagreement is not None:
            degenerate = (
                self.degenerate_on_kind
                if disagreement.what == "kind"
                else self.degenerate_on_tuples
            )
            if degenerate and self.main_id in disagreement.majority:
                # Pgpool-II: the minority is detached, the majority goes on.
                self._degenerate(
                    disagreement.minority,
                    f"replication mismatch ({disagreement.what}): {disagreement.detail}",
                )
                for node_id in disagreement.minority:
                    self.backends.pop(node_id, None)
                    self.replies.pop(node_id, None)
            else:
                if degenerate:
                    self._degenerate(
                        disagreement.minority,
                        f"replication mismatch ({disagreement.what}): {disagreement.detail}",
                    )
                self._undo(disagreement)
                return
        main = self.replies[self.main_id]
        if not self.internal:
            self._finish(main.frames, main.status)
        elif main.failed:
            # Failed alike everywhere: end the proxy's transactions.
            self._send(
                [self.main_id] + self._others(),
                messages.query("ROLLBACK"),
                lambda: self._finish(main.frames, messages.TRANSACTION_IDLE),
            )
        else:
            self._commit()

    def _commit(self) -> None:
        commits: Dict[int, NodeReply] = {}

        def main_committed() -> None:
            if commits[self.main_id].results != ["C COMMIT"]:
                # Nothing committed anywhere: undo the others' part.
                self._send(
                    self._others(),
                    messages.query("ROLLBACK"),
                    lambda: self._finish(
                        commits[self.main_id].frames[:1]
                        or [
                            errors.error(
                                errors.INTERNAL_ERROR, "COMMIT failed on the main node"
                            ).to_bytes()
                        ],
                        messages.TRANSACTION_IDLE,
                    ),
                    replies={},
                )
                return
            self._send(self._others(), messages.query("COMMIT"), all_committed, replies=commits)

        def all_committed() -> None:
            failed = [n for n, r in commits.items() if r.results != ["C COMMIT"]]
            if failed:
                disagreement = Disagreement(
                    "kind",
                    (self.main_id,),
                    tuple(sorted(failed)),
                    "; ".join(
                        f"node {n}: COMMIT: {', '.join(commits[n].summary)}"
                        for n in sorted(commits)
                    ),
                )
                if self.degenerate_on_kind:
                    self._degenerate(
                        disagreement.minority,
                        f"replication mismatch at COMMIT: {disagreement.detail}",
                    )
                else:
                    self.finished = True
                    self._fail(mismatch_error(disagreement, undone=False, fatal=True))
                    return
            main = self.replies[self.main_id]
            self._finish(main.frames, messages.TRANSACTION_IDLE)

        self._send([self.main_id], messages.query("COMMIT"), main_committed, replies=commits)

    def _undo(self, disagreement: Disagreement) -> None:
        if self.internal:
            error = mismatch_error(disagreement, undone=True)
            self._send(
                [self.main_id] + self._others(),
                messages.query("ROLLBACK"),
                lambda: self._finish([error.to_bytes()], messages.TRANSACTION_IDLE),
                replies={},
            )
        elif all(r.status != messages.TRANSACTION_IDLE for r in self.replies.values()):
            # Inside a transaction on every node: abort it everywhere, so
            # that its COMMIT commits nothing anywhere.
            error = mismatch_error(disagreement, undone=False)
            going = [
                n for n, r in self.replies.items() if r.status == messages.TRANSACTION_IN_BLOCK
            ]
            self._send(
                going,
                messages.query(ABORT_TRANSACTION),
                lambda: self._finish([error.to_bytes()], messages.TRANSACTION_FAILED),
                replies={},
            )
        else:
            # Committed (or not) node by node: nothing to undo.
            self.finished = True
            self._fail(mismatch_error(disagreement, undone=False, fatal=True))

    def _finish(self, frames: List[bytes], status: int) -> None:
        self.finished = True
        self._deliver(frames + [messages.ready_for_query(status)])


def _ignore(*args: object) -> None:
    return None
