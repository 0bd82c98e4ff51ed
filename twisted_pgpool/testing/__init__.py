"""
Support for testing against real servers, and the tests' shared doubles:
used by the end-to-end and unit tests, the benchmarks and
C{twisted-pgpool demo}.

  - L{localcluster}: a throw-away PostgreSQL primary and streaming
    standby;
  - L{memcached}: a throw-away memcached;
  - L{processes}: free ports, waiting for a child process to listen,
    stopping it, the end of its log, its resident memory;
  - L{waiting}: polling for a condition, blocking or in the reactor;
  - L{doubles}: the unit tests' stand-ins for the proxy's parts (a server
    connection, the core, a client connection, the failover manager, the
    check query).

Nothing on the proxy's own paths imports this package (checked by
C{tests/test_layering.py}).  What only the tests use and needs their own
modules (the proxy run as a child process, raw protocol bytes, a raw
socket client) stays in C{tests/}; what only the benchmarks share is in
C{benchmarks/harness.py}.
"""
