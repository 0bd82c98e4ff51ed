"""
The proxy's use of the network, below any PostgreSQL logic: its reactor
(L{reactor}), eager writes on socket transports (L{transports}), TLS
contexts for both sides (L{tls}), listeners that fail loudly
(L{listening}) and Pgpool-II's listen addresses as endpoint strings
(L{addresses}).
"""
