"""
The C{pgpool_status} file, which remembers node statuses across restarts
(Pgpool-II's text format): writing it, reading it, and which statuses a
start restores from it.  Pure; L{twisted_pgpool.cluster.failover} reads and
writes the file.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from twisted_pgpool.cluster.model import (
    STATUS_DOWN,
    STATUS_UNUSED,
    STATUS_UP,
    STATUS_WAITING,
    Node,
)

__all__ = [
    "STATUS_FILE_NAME",
    "format_status_file",
    "parse_status_file",
    "statuses_to_restore",
]


#: The file under C{logdir} that remembers node statuses across restarts.
STATUS_FILE_NAME = "pgpool_status"


# -- the status file (pure) ------------------------------------------------------

#: How each node status is written: C{waiting} counts as C{up}.
_STATUS_WORDS = {
    STATUS_UP: "up",
    STATUS_WAITING: "up",
    STATUS_DOWN: "down",
    STATUS_UNUSED: "unused",
}


def format_status_file(nodes: Sequence[Node]) -> str:
    """
    The C{pgpool_status} text for the nodes: one line per node, in id
    order, C{up}, C{down} or C{unused} (Pgpool-II's text format).
    """
    return "".join(_STATUS_WORDS.get(node.status, "up") + "\n" for node in nodes)


def parse_status_file(text: str) -> List[Optional[str]]:
    """
    Read C{pgpool_status}: the word on each line (C{up}, C{down} or
    C{unused}, case ignored), L{None} for a line that is none of them.
    """
    recorded: List[Optional[str]] = []
    for line in text.splitlines():
        word = line.strip().lower()
        # Pgpool-II compares prefixes ("up", "down", "unused").
        for known in ("up", "down", "unused"):
            if word.startswith(known):
                recorded.append(known)
                break
        else:
            recorded.append(None)
    return recorded


def statuses_to_restore(recorded: Sequence[Optional[str]], node_count: int) -> Dict[int, str]:
    """
    Which nodes start C{down} or C{unused} because the status file says so.

    Lines beyond the configured nodes are ignored, as are nodes the file
    does not mention.  A file in which no configured node is up is taken
    as bogus (Pgpool-II: "if no one woke up, we regard the status file
    bogus"): nothing is restored, every node starts as configured.

    @return: node id to C{down} or C{unused}.
    """
    relevant = list(recorded[:node_count])
    if not any(word == "up" for word in relevant):
        return {}
    restore = {}
    for node_id, word in enumerate(relevant):
        if word == "down":
            restore[node_id] = STATUS_DOWN
        elif word == "unused":
            restore[node_id] = STATUS_UNUSED
    return restore
