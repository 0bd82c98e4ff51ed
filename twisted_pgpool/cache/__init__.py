"""
The in-memory query cache (Pgpool-II's C{memory_cache_enabled}): what may
be cached, under which key, and what a write invalidates (L{policy});
where entries live, in the process or in memcached (L{store}); one client
session's view of it (L{session}); and its steps in that session's flow
of statements (L{steps}), which the client session
(L{twisted_pgpool.proxy.session}) calls.
"""
