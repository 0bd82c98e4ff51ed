"""
Operating the running proxy: the administration operations as plain
functions over an admin backend (L{operations}); the ways in -- Pgpool-II's
PCP protocol (L{pcp}, and its client L{pcp_client}), the
C{twisted-pgpool nodes|attach|...} commands (L{cli}), the Python prompt
(L{manhole}, L{manhole_prompt}) and the Prometheus endpoint (L{metrics},
L{metrics_web}, L{exposition}); and what they can ask for besides node
operations: reloading the configuration (L{reload}) and stopping the
proxy (L{shutdown}).

Nothing on the data path imports this package; the service wiring
(L{twisted_pgpool.service}) hands it the live objects.
"""
