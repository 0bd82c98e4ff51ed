"""
Support for testing against real servers: a throw-away PostgreSQL primary
and streaming standby (L{localcluster}), used by the end-to-end tests, the
benchmarks and C{twisted-pgpool demo}.

Nothing on the proxy's own paths imports this package (checked by
C{tests/test_layering.py}); shared test doubles belong here too.
"""
