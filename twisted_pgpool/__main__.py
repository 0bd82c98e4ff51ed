"""
C{python -m twisted_pgpool} is the C{twisted-pgpool} command.
"""

import sys

from twisted_pgpool.cli import main

sys.exit(main())
