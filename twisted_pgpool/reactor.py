"""
The old name of L{twisted_pgpool.net.reactor}, kept for applications written
against it (C{from twisted_pgpool import reactor as pgpool_reactor}):
importing it gives that very module, so its names and state are the same.
"""

# relayout: keep old names

import sys

from twisted_pgpool.net import reactor as _reactor

sys.modules[__name__] = _reactor
