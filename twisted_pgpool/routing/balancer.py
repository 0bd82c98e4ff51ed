"""
Choosing the node that serves a session's reads.

Pgpool-II's rules: a weighted random draw over the usable nodes with a
weight above zero (the primary is a candidate like any standby), unless a
redirect preference list (by user, database or application name) names a
node for this session.  A standby that lags beyond the delay threshold is
skipped at read time: its reads go to the primary, or with
C{prefer_lower_delay_standby} to the least delayed standby.

Everything here is plain computation on the cluster model; the random
source is injected so tests are deterministic.
"""

from __future__ import annotations

import random
import re
from typing import Callable, List, Optional, Pattern, Sequence, Tuple

import attr

from twisted_pgpool.cluster.model import ROLE_PRIMARY, Cluster, Node

#: A redirect target: a node number, or the words primary/standby.
PRIMARY = "primary"
STANDBY = "standby"


class PreferenceListError(ValueError):
    """
    A redirect preference list does not parse.
    """


@attr.s(auto_attribs=True, frozen=True)
class Redirect:
    """
    One C{pattern:target(ratio)} entry of a redirect preference list.
    """

    pattern: Pattern[str]
    target: str
    ratio: float = 1.0


_ENTRY = re.compile(
    r"^(?P<pattern>.+):(?P<target>primary|standby|[0-9]+)"
    r"(?:\((?P<ratio>[0-9.]+)\))?$",
    re.IGNORECASE,
)


def parse_preference_list(text: str) -> Tuple[Redirect, ...]:
    """
    Parse Pgpool-II's C{regex:target(ratio),...} syntax.

    The regular expression is anchored at both ends, as Pgpool-II anchors
    it; the ratio (0 to 1, default 1) is the share of reads redirected.

    @raise PreferenceListError: for an entry that does not parse.
    """
    entries = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = _ENTRY.match(item)
        if match is None:
            raise PreferenceListError(
                f"{item!r} is not pattern:node, pattern:primary or "
                "pattern:standby with an optional (ratio)"
            )
        ratio = float(match.group("ratio")) if match.group("ratio") else 1.0
        if not 0.0 <= ratio <= 1.0:
            raise PreferenceListError(f"ratio in {item!r} must be from 0 to 1")
        try:
            pattern = re.compile(f"^(?:{match.group('pattern')})$")
        except re.error as e:
            raise PreferenceListError(f"{item!r}: {e}")
        entries.append(Redirect(pattern, match.group("target").lower(), ratio))
    return tuple(entries)


@attr.s(auto_attribs=True)
class Balancer:
    """
    Picks load-balance nodes.

    @ivar cluster: the nodes and their state.
    @ivar user_redirects: from C{user_redirect_preference_list}.
    @ivar database_redirects: from C{database_redirect_preference_list}.
    @ivar app_name_redirects: from C{app_name_redirect_preference_list}.
    @ivar prefer_lower_delay_standby: see module docstring.
    @ivar random: returns a float in [0, 1).
    """

    cluster: Cluster
    user_redirects: Sequence[Redirect] = ()
    database_redirects: Sequence[Redirect] = ()
    app_name_redirects: Sequence[Redirect] = ()
    prefer_lower_delay_standby: bool = False
    random: Callable[[], float] = attr.ib(factory=lambda: random.SystemRandom().random)

    def choose(
        self, user: str = "", database: str = "", application_name: str = ""
    ) -> Optional[Node]:
        """
        The node for a session's (or a statement's) reads, or None when no
        node is usable.
        """
        redirect = (
            _first_match(self.app_name_redirects, application_name)
            or _first_match(self.database_redirects, database)
            or _first_match(self.user_redirects, user)
        )
        excluded: Optional[Node] = None
        if redirect is not None:
            suggested = self._redirect_target(redirect)
            if self.random() < redirect.ratio or redirect.ratio >= 1.0:
                if suggested is not None:
                    return suggested
            elif redirect.target == STANDBY:
                return self.cluster.primary()
            else:
                excluded = suggested
        candidates = [
            n for n in self.cluster.nodes if n.is_usable and n.weight > 0 and n is not excluded
        ]
        return self._draw(candidates)

    def read_node(self, chosen: Optional[Node]) -> Optional[Node]:
        """
        Where a read for a session whose load-balance node is C{chosen}
        goes right now: C{chosen} unless it is down or lagging beyond the
        delay threshold.
        """
        if chosen is not None and chosen.is_usable and not chosen.delayed:
            return chosen
        if self.prefer_lower_delay_standby:
            standbys = [n for n in self.cluster.standbys() if n.weight > 0 and not n.delayed]
            if standbys:
                least = min(n.replication_delay for n in standbys)
                return self._draw([n for n in standbys if n.replication_delay == least])
        return self.cluster.primary()

    def _redirect_target(self, redirect: Redirect) -> Optional[Node]:
        if redirect.target == PRIMARY:
            return self.cluster.primary()
        if redirect.target == STANDBY:
            return self._draw([n for n in self.cluster.standbys() if n.weight > 0])
        node_id = int(redirect.target)
        if node_id < len(self.cluster.nodes) and self.cluster.nodes[node_id].is_usable:
            return self.cluster.nodes[node_id]
        return None

    def _draw(self, candidates: List[Node]) -> Optional[Node]:
        total = sum(n.weight for n in candidates)
        if not candidates or total <= 0:
            return self.cluster.primary()
        point = self.random() * total
        for node in candidates:
            point -= node.weight
            if point < 0:
                return node
        return candidates[-1]


def _first_match(redirects: Sequence[Redirect], value: str) -> Optional[Redirect]:
    if not value:
        return None
    for redirect in redirects:
        if redirect.pattern.match(value):
            return redirect
    return None


def is_primary(node: Optional[Node]) -> bool:
    return node is not None and node.role == ROLE_PRIMARY
