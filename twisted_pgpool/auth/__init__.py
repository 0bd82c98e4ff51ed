"""
Authentication mechanisms and the files that configure them: MD5
arithmetic (L{md5}), SCRAM-SHA-256 in both roles (L{scram}),
pool_hba.conf (L{hba}) and pool_passwd (L{passwd}).

Pure: no sockets, no Twisted (checked by C{tests/test_layering.py}).  The
conversation with a client that uses them is
L{twisted_pgpool.proxy.clientauth}, above the backend connection whose
credentials it fills in; the backend's side of a login is in
L{twisted_pgpool.backend.protocol}.
"""
