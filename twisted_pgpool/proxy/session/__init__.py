"""
The relay phase of a client session: each client message goes to the
primary, to the session's load-balance node, or to every node the session
uses, and the replies reach the client in the order it asked for them.

The client sees one server.  Behind it a session holds at most one
connection per node: the primary's from the start, others opened when a
read first needs them.  Ordering is kept with one rule: only one node at a
time ("the owner") may send reply bytes to the client; a statement for
another node waits (the client's stream is paused) until the owner has
finished.  Statements that must reach several nodes (BEGIN, COMMIT, SET...)
are sent to all of them, and only the primary's reply is passed on.

Extended-protocol messages are held until the client's Sync (or Flush) so
that a whole batch is routed at once, and a prepared statement used on a
node that has not seen it is prepared there first, transparently.

A long message is not held when the session needs only its start: the
framer hands over its first 64 KiB (C{_direct_head}, C{_routed_head}) and
the rest is passed on as it arrives (L{streams}), so a 1 GB Bind value
crosses the proxy without being buffered.

The query cache's part in each statement (answering it, catalog lookups,
recording a miss, invalidations) is L{twisted_pgpool.cache.steps}, which
uses only the operations L{twisted_pgpool.interfaces.ICachingSession}
names; the hit of a statement seen before stays in L{Session.query}, where
it costs no call into that module.

L{Session} is one class made of parts, one module each, all working on
the state L{state.SessionState} sets up (mixins: a call from one part to
another is a plain method call on the session, so the per-message path
costs what it did as one class):

  - L{state}: what a session holds; which callbacks the framer calls.
  - L{relay}: the session that routes nothing -- messages pass through to
    the primary, counted (C{_direct_message}).
  - L{routed}: the session that routes -- each message to its handler
    (C{_routed_message}).
  - L{simple}: a simple Query (L{Session.query}).
  - L{extended}: extended-protocol batches, statements prepared again on
    other nodes (L{Session.send_batch}).
  - L{names}: SQL commands naming a statement or portal (EXECUTE,
    DEALLOCATE, FETCH, MOVE, CLOSE) sent where it is.
  - L{native}: native replication mode's replicated writes.
  - L{own}: the proxy's own statements (C{SHOW POOL_*}, C{pgpool.min_lsn},
    C{PGPOOL SET CACHE DELETE}), in both protocols.
  - L{causal_reads}: read-your-writes: position questions, the commit
    token.
  - L{ordering}: the order of replies (the owner, the queue, held
    messages), reading from the client stopped and resumed, and the
    replies coming back (L{IReplySink}).
  - L{streams}: COPY data and the rest of long messages, passed on as
    they arrive.
  - L{links}: the session's connections: chosen for a route, opened on
    demand, lost, dropped, given back.
  - L{caching}: the query cache's hooks (L{ICachingSession}).
  - L{no_primary}: a session served by a standby because no primary was
    usable when it began: writes refused (25006), sent to no node.

L{nodeless.NodelessSession} is apart: the session of a client that logged
in while no node at all could be used, answering only the proxy's own
statements.
"""

from zope.interface import implementer

from twisted_pgpool.interfaces import ICachingSession, IReplySink
from twisted_pgpool.proxy.session.caching import CacheHooks
from twisted_pgpool.proxy.session.causal_reads import CausalReads
from twisted_pgpool.proxy.session.extended import (  # noqa: F401
    MAX_BATCH_BYTES,
    ExtendedBatches,
    _BatchItem,  # named in annotations of cache/steps.py
    _Statement,
)
from twisted_pgpool.proxy.session.links import Links
from twisted_pgpool.proxy.session.names import NamedObjects
from twisted_pgpool.proxy.session.native import NativeReplication
from twisted_pgpool.proxy.session.no_primary import NoPrimary
from twisted_pgpool.proxy.session.ordering import BACKLOG_RESUME, MAX_UNANSWERED, ReplyOrder
from twisted_pgpool.proxy.session.own import OwnStatements
from twisted_pgpool.proxy.session.relay import DirectRelay
from twisted_pgpool.proxy.session.routed import RoutedMessages
from twisted_pgpool.proxy.session.simple import SimpleQueries
from twisted_pgpool.proxy.session.state import CLIENT_WATCHED, SessionState, dml_relationships
from twisted_pgpool.proxy.session.streams import Streams

__all__ = [
    "Session",
    "CLIENT_WATCHED",
    "MAX_UNANSWERED",
    "BACKLOG_RESUME",
    "MAX_BATCH_BYTES",
    "dml_relationships",
]


@implementer(IReplySink, ICachingSession)
class Session(
    DirectRelay,
    RoutedMessages,
    SimpleQueries,
    ExtendedBatches,
    NamedObjects,
    NativeReplication,
    NoPrimary,
    OwnStatements,
    CausalReads,
    ReplyOrder,
    Streams,
    Links,
    CacheHooks,
    SessionState,
):
    """
    One authenticated client session in the relay phase.

    Built by L{twisted_pgpool.proxy.frontend.FrontendProtocol} once the
    client is authenticated and has its primary connection
    (L{SessionState.__init__}); the framer then calls C{client_message}
    for each watched client message, C{client_head} for the head of a long
    one, and L{pass_to_primary} with the bytes it passes through; the
    attached backend connections call the L{IReplySink} methods.

    @ivar links: the session's backend connections by node id.
    @ivar router: the session's routing state.
    @ivar lb_node: the node chosen for this session's reads.
    @ivar owner: the backend whose reply is being passed to the client.
    @ivar direct: whether the session routes nothing (L{relay}).
    @ivar no_primary: the session is served by a standby (L{no_primary}).
    @ivar closed: whether the session has ended (L{Links.close}).
    """
