"""
Where a statement goes: the per-session rules (L{router}: primary, the
session's load-balance node, or every node), the choice of that node
(L{balancer}), read-your-writes under load balancing (L{causal}) and
native replication mode's decisions (L{replication_mode}).

Decisions only: they read the cluster model and the classifier's facts and
are driven by the client session (L{twisted_pgpool.proxy.session}), which
does the sending.
"""
