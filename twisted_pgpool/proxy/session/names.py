"""
SQL commands that name a prepared statement or a portal: C{EXECUTE} and
C{DEALLOCATE} go to the nodes holding the statement, C{FETCH}, C{MOVE} and
C{CLOSE} to the node holding the cursor -- whichever protocol created it.

With load balancing a statement may exist on a standby only (a read
prepared there, by C{PREPARE} or by a Parse message; psycopg deallocates
the latter with C{DEALLOCATE}), and a portal too (asyncpg binds a cursor's
portal with the extended protocol, then moves it with C{MOVE FORWARD n
name}).  Sent to the primary, these commands fail with "prepared statement
... does not exist" or "cursor ... does not exist" although the client
did create them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Sequence, Set, Tuple

from twisted_pgpool.proxy.session.state import SessionState
from twisted_pgpool.sql.classifier import Classification
from twisted_pgpool.wire import messages

if TYPE_CHECKING:  # pragma: no cover
    from twisted_pgpool.proxy.session.extended import _BatchItem

#: The statement kinds that name a statement or a portal
#: (C{Classification.prepared_name}).
NAMED_KINDS = frozenset(["prepare", "execute", "deallocate", "declare", "fetch", "move", "close"])


class NamedObjects(SessionState):
    """
    A part of L{twisted_pgpool.proxy.session.Session}: where the statements
    and portals a SQL command names are, and keeping that true.
    """

    def _named_holders(
        self, classification: Classification
    ) -> Optional[Tuple[int, Tuple[int, ...]]]:
        """
        Where a command naming a statement or portal must go, when that is
        not the primary alone: (the node whose reply the client gets, the
        other nodes that run it too).

        EXECUTE runs on one node (the primary when it holds the statement);
        DEALLOCATE and CLOSE on every node holding the name, so that none
        keeps it.  None: the router's route stands (the name is unknown,
        or only the primary holds it).
        """
        kind = classification.kind
        name = classification.prepared_name
        if name is None:
            return None
        holders: Set[int] = set()
        if kind == "execute" or kind == "deallocate":
            holders.update(self._sql_statements.get(name, ()))
            holders.update(
                node_id for node_id, known in self._node_statements.items() if name in known
            )
        elif kind == "fetch" or kind == "move" or kind == "close":
            node_id = self._portals.get(name)
            if node_id is not None:
                holders.add(node_id)
        else:
            return None
        linked = sorted(node_id for node_id in holders if node_id in self.links)
        if not linked or linked == [self.primary_id]:
            return None
        forward = self.primary_id if self.primary_id in linked else linked[0]
        if kind == "execute" or kind == "fetch" or kind == "move":
            return forward, ()
        return forward, tuple(node_id for node_id in linked if node_id != forward)

    def _named_batch_holders(
        self, classifications: Sequence[Classification], batch: Sequence["_BatchItem"] = ()
    ) -> Optional[Tuple[int, Tuple[int, ...]]]:
        """
        L{_named_holders} of the first statement of a batch that names a
        statement or portal held elsewhere than on the primary alone; one
        pass over the batch, no allocation when nothing is named (it runs
        for every batch).

        A Parse of a name the client already has (and has not closed) is an
        error on the server that holds it -- 42P05, "prepared statement ...
        already exists" -- which a node without it would not report
        (asyncpg's test_prepare_explicitly_named): the batch goes there.  A
        Close of a statement goes to every node holding it (psycopg
        deallocates with a Close; sent to the primary alone, a statement
        prepared on a standby stayed there, in its pg_prepared_statements).
        """
        closed: Optional[List[str]] = None
        for item in batch:
            kind = item.type
            if kind == messages.PARSE:
                name = item.name
                if name and name in self.statements:
                    having = sorted(
                        node_id
                        for node_id, known in self._node_statements.items()
                        if name in known and node_id in self.links
                    )
                    if having:
                        return (self.primary_id if self.primary_id in having else having[0]), ()
            elif kind == messages.CLOSE and item.kind == "S":
                if closed is None:
                    closed = []
                closed.append(item.name)
        if closed:
            having_closed = sorted(
                {
                    node_id
                    for node_id, known in self._node_statements.items()
                    for name in closed
                    if name in known and node_id in self.links
                }
            )
            if having_closed and having_closed != [self.primary_id]:
                forward = self.primary_id if self.primary_id in having_closed else having_closed[0]
                return forward, tuple(n for n in having_closed if n != forward)
        for classification in classifications:
            if classification.prepared_name is not None:
                holders = self._named_holders(classification)
                if holders is not None:
                    return holders
        return None

    def _named_sent(self, classification: Classification, node_ids: Tuple[int, ...]) -> None:
        """
        A command of L{NAMED_KINDS} went to C{node_ids}: what now exists
        where.
        """
        kind = classification.kind
        name = classification.prepared_name
        if kind == "prepare":
            if name is not None:
                self._sql_statements[name] = node_ids
        elif kind == "deallocate":
            if name is None:
                # DEALLOCATE ALL: the protocol's statements go too.
                self._sql_statements.clear()
                self.statements.clear()
                for known in self._node_statements.values():
                    known.clear()
                return
            self._sql_statements.pop(name, None)
            self.statements.pop(name, None)
            for node_id in node_ids:
                self._node_statements.get(node_id, {}).pop(name, None)
        elif kind == "declare" or kind == "close":
            # A cursor declared now is on the primary (cursor commands go
            # there); a closed one is nowhere.
            if name is not None:
                self._portals.pop(name, None)
