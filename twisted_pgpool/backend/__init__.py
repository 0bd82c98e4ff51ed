"""
The proxy's connections to PostgreSQL servers: one connection, its login
and its relay (L{protocol}), the pool that keeps them between clients
(L{pool}), and the per-node statement and error counts
(L{stats}, C{SHOW POOL_BACKEND_STATS}).

This is below the cluster model and the client side: the health check, the
primary search and the replication check open connections with
L{protocol}, and client sessions borrow them from L{pool}; nothing here
knows about either.
"""
