"""
The client side: one connection from a PostgreSQL client (L{frontend}:
startup, TLS, authentication through L{clientauth}, then relaying), the
relay phase that sends each message where routing says and keeps the
replies in order (L{session}), the statements the proxy answers itself
(L{inspection}: C{SHOW POOL_*}, C{PGPOOL SHOW}), query cancellation
(L{cancel}), the limit on concurrent clients (L{limits}), and giving memory
back after a session read a large message (L{memory}).

This is the top of the data path: it uses routing, the cluster model, the
backend connections and pool, and the query cache; only the service
wiring and the admin layer are above it.
"""
