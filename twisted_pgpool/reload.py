"""
The old name of L{twisted_pgpool.admin.reload}, kept for applications
written against it (C{except twisted_pgpool.reload.ReloadError}): importing
it gives that very module, so its exceptions are the same classes.
"""

# relayout: keep old names

import sys

from twisted_pgpool.admin import reload as _reload

sys.modules[__name__] = _reload
