"""
The cluster: the configured nodes with their status and roles
(L{model}, plain state), and what watches and changes it -- the health
check (L{health}), the primary search and streaming replication check
(L{replication}), failover, failback and promotion (L{failover}), and the
short queries they run on a node (L{nodecheck}).

The model is read by routing, the client side and the admin reports; the
watchers open their own server connections through
L{twisted_pgpool.backend.protocol}.
"""
