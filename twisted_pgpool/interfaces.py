"""
The zope interfaces of twisted_pgpool, gathered in one place.

Each interface here has several implementations, and its docstrings are the
contract they share; or, like L{ICachingSession}, it names the few
operations one part of the proxy uses of another, so that the dependency
is visible and stays narrow.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IBackendAuthResponder(Interface):
    """
    Answers a PostgreSQL server's authentication requests while the proxy
    logs in to it.

    Two kinds exist: one that computes the answers from credentials the proxy
    holds (pool_passwd, or a password the client gave the proxy), and one
    that relays each request to the client and its reply back, for users the
    proxy has no credentials for.
    """

    def respond(code, data):
        """
        Answer one Authentication request.

        @param code: the request code (C{AUTH_MD5_PASSWORD}, C{AUTH_SASL}...).
        @type code: L{int}
        @param data: the bytes after the code.
        @type data: L{bytes}
        @return: a Deferred (or coroutine result) firing with the complete
            frontend message to send, or None when the request needs no
            answer (C{AUTH_SASL_FINAL}).
        @raise twisted_pgpool.wire.errors.PgError: when it cannot answer.
        """


class IClientConversation(Interface):
    """
    The client end of an authentication exchange, as the authenticator sees
    it: send a message, wait for the client's next password-type message.
    """

    peer_host = Attribute("The client's address as text, or 'local'.")

    def send(data):
        """
        Send a complete backend-format message to the client.
        """

    def receive_password_message():
        """
        Wait for the client's next PasswordMessage/SASLResponse.

        @return: a Deferred firing with the message payload (L{bytes}); it
            fails with L{twisted_pgpool.wire.errors.PgError} if the client sends
            anything else or goes away.
        """


class IReplySink(Interface):
    """
    Where an attached backend connection sends what it receives: the
    session that owns it.
    """

    def client_write(data):
        """
        Pass bytes of a forwarded reply to the client, unchanged.
        """

    def async_message(backend, data):
        """
        A complete asynchronous message (NotificationResponse, NoticeResponse,
        ParameterStatus, or a FATAL ErrorResponse) arrived from C{backend}
        while it owed no reply.
        """

    def backend_ready(backend):
        """
        C{backend} finished at least one reply unit (its ReadyForQuery has
        been passed on or swallowed).
        """

    def backend_lost(backend, reason):
        """
        The backend connection went away (C{reason} is a Failure).
        """


class ICachingSession(Interface):
    """
    What the query cache's steps in a session
    (L{twisted_pgpool.cache.steps.CachedQueries}) use of the session
    (L{twisted_pgpool.proxy.session.Session}): its routing state, the client's
    transport, the queue that keeps answers in order, and re-running a
    statement once a catalog lookup or a remote cache has answered.
    """

    router = Attribute(
        "The session's L{twisted_pgpool.routing.router.SessionRouter}: whether a "
        "transaction is open (C{in_transaction}) or failed "
        "(C{transaction_failed}), and the session's C{temp_tables}."
    )
    frontend = Attribute(
        "The client's protocol: its C{transport} (answers that need no "
        "queueing are written there) and C{log_statement}."
    )
    core = Attribute("The proxy's shared state: C{config} (C{memqcache_maxcache}) and C{classify}.")
    links = Attribute("The session's backend connections by node id.")
    primary_id = Attribute("The primary's node id.")
    statements = Attribute(
        "The client's prepared statements by name, each with its C{parse_payload}."
    )
    owner = Attribute("The backend whose reply is being passed to the client, or None.")
    closed = Attribute("Whether the session has ended.")

    def cache_usable():
        """
        Whether the cache may answer or store now: outside explicit
        transactions, before any role change.
        """

    def submit_local(answer, ready=True):
        """
        Answer a statement without a server (C{answer}, a list of complete
        messages), after any reply the client is still receiving; end with
        a ReadyForQuery if C{ready}.
        """

    def run_or_wait(attempt):
        """
        Run C{attempt()} now if nothing waits before it and it returns
        True; otherwise queue it and pause the client's stream until it
        does.
        """

    def unblock():
        """
        Run the queued attempts again (something they wait for arrived).
        """

    def query(payload, lookup=None, fetched=None):
        """
        Run a simple Query again.

        @param lookup: whether the catalog lookup it waited for succeeded.
        @param fetched: the remote cache's answer it waited for.
        """

    def send_batch(sync, lookup=None, fetched=None):
        """
        Route the held extended-protocol batch again (same parameters as
        L{query}, and C{sync}: it ends with a Sync).
        """

    def executed_sql(batch):
        """
        The text of each statement a batch executes, in order.
        """

    def batch_answered(batch, record):
        """
        The held C{batch} was answered without a server: drop it, and if
        C{record}, the statements it parses exist for the session from now.
        """

    def ask_primary(sql, message_received, ready):
        """
        Send a query of the proxy's own on the session's primary connection,
        after what was sent there before; its replies go to
        C{message_received(message_type, payload)} and C{ready(status)},
        never to the client.
        """

    def hold_ready_for_query():
        """
        Keep the primary's next ReadyForQuery from the client, and the
        client's next message out, until a remote cache has the
        invalidations of the write it ends (nothing if already held).
        """


class IQueryCacheStore(Interface):
    """
    Where the in-memory query cache keeps complete backend replies, keyed by
    an opaque digest (see L{twisted_pgpool.cache.policy}), each entry
    registered under the tables (L{twisted_pgpool.cache.store.TableRef}) its
    statement read so that a write can obsolete it.

    Two kinds exist: one inside the proxy process (answers synchronously,
    because a hit must cost microseconds) and one in a memcached server
    shared by several proxy processes (answers with Deferreds).  Neither
    ever raises to its caller: a store that cannot answer answers "miss".
    """

    def fetch(key, tables):
        """
        Look an entry up.

        @param key: the cache key (L{bytes}).
        @param tables: the tables the statement reads, in the order the
            caller will pass to L{store}; an entry registered under other
            tables is a miss (the names resolved differently when it was
            stored).
        @return: a L{twisted_pgpool.cache.store.FetchResult} (in-process
            stores) or a Deferred that never fails firing with one (remote
            stores).  Its C{reply} is None on a miss; its C{token} must be
            handed back to L{store} with the reply the backend gives.
        """

    def store(key, reply, tables, token):
        """
        Remember C{reply} for C{key}, unless one of C{tables} was
        invalidated since the L{fetch} that returned C{token} (a write that
        committed while the query ran: its result may predate the write), or
        the reply is larger than the store's maximum entry size.

        Fire and forget: returns None or a Deferred that never fails, which
        callers may ignore (tests wait on it).
        """

    def invalidate(tables):
        """
        Obsolete every entry registered under any of C{tables}, and make
        stores still pending for them (with older tokens) refuse.

        @return: None when done, or a Deferred (never failing) firing once
            the invalidation is visible to every proxy sharing the store; a
            session may hold the client's ReadyForQuery until then.
        """

    def delete(key):
        """
        Remove the one entry stored under C{key}, if there is one (Pgpool-II
        4.6's C{PGPOOL SET CACHE DELETE}).  Other entries, and stores still
        pending for C{key}, are not affected.

        @param key: the cache key (L{bytes}).
        @return: whether an entry was there: a L{bool} (in-process stores)
            or a Deferred that never fails firing with one (remote stores;
            a store that cannot be reached answers False).
        """

    def clear():
        """
        Obsolete every entry.  Same return convention as L{invalidate}.
        """

    def statistics():
        """
        @return: a L{twisted_pgpool.cache.store.CacheStatistics} with the
            storage columns of Pgpool-II's SHOW POOL_CACHE.
        """


class IManholeTransport(Interface):
    """
    How an operator reaches the manhole's Python prompt
    (L{twisted_pgpool.admin.manhole}): the protocol spoken on the manhole's
    endpoint, and whether and how users log in.

    Two kinds exist: SSH, which checks a user name and password and
    encrypts the session, and telnet, which does neither and so is only
    allowed on endpoints that other machines cannot reach.
    """

    name = Attribute("The C{manhole_protocol} word for this kind (L{str}).")

    def factory(namespace):
        """
        Build what accepts connections on the manhole's endpoint.

        Called when the manhole service starts, not before, so the files a
        kind needs (an SSH host key, which may be generated now) are read
        at start-up and their errors stop the start.

        @param namespace: the names the prompt starts with; each connection
            gets its own copy, so one operator's variables never show up in
            another's session.
        @type namespace: L{dict}
        @return: an L{twisted.internet.interfaces.IProtocolFactory}.
        @raise OSError: a file the kind needs cannot be read or written.
        """
