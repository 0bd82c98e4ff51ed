"""
Balancer: the weighted choice of a session's load-balance node, redirect
preference lists, and what happens to reads when the chosen standby lags
(Pgpool-II's C{select_load_balancing_node} and C{where_to_send_main_replica},
reference sections 1.5 and 3.3).  The random source is injected.
"""

from __future__ import annotations

import random
from typing import Callable, Iterable, Optional

from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.cluster.model import STATUS_DOWN, Cluster
from twisted_pgpool.config import BackendConfig
from twisted_pgpool.routing.balancer import (
    Balancer,
    PreferenceListError,
    is_primary,
    parse_preference_list,
)


def make_cluster(*weights: float) -> Cluster:
    """
    Node 0 is the primary, the others standbys, with these weights.
    """
    return Cluster.from_config(
        [BackendConfig(hostname=f"db{i}", port=5432 + i, weight=w) for i, w in enumerate(weights)]
    )


def constant(value: float) -> Callable[[], float]:
    return lambda: value


def sequence(values: Iterable[float]) -> Callable[[], float]:
    """
    A random source returning C{values} in order (then failing loudly).
    """
    it = iter(values)
    return lambda: next(it)


def balancer(
    cluster: Cluster,
    rand: Callable[[], float] = constant(0.0),
    user: str = "",
    database: str = "",
    app: str = "",
    prefer_lower_delay_standby: bool = False,
) -> Balancer:
    return Balancer(
        cluster,
        user_redirects=parse_preference_list(user),
        database_redirects=parse_preference_list(database),
        app_name_redirects=parse_preference_list(app),
        prefer_lower_delay_standby=prefer_lower_delay_standby,
        random=rand,
    )


def node_id(node) -> Optional[int]:
    return None if node is None else node.node_id


class ParsePreferenceListTests(SynchronousTestCase):
    def test_entries_with_targets_and_ratios(self) -> None:
        entries = parse_preference_list("postgres:primary, mydb[0-4]:1(0.3), test:standby")
        self.assertEqual(
            [(e.pattern.pattern, e.target, e.ratio) for e in entries],
            [
                ("^(?:postgres)$", "primary", 1.0),
                ("^(?:mydb[0-4])$", "1", 0.3),
                ("^(?:test)$", "standby", 1.0),
            ],
        )

    def test_empty_list(self) -> None:
        self.assertEqual(parse_preference_list(""), ())
        self.assertEqual(parse_preference_list(" , "), ())

    def test_pattern_is_anchored(self) -> None:
        (entry,) = parse_preference_list("app:primary")
        self.assertIsNotNone(entry.pattern.match("app"))
        self.assertIsNone(entry.pattern.match("myapp"))
        self.assertIsNone(entry.pattern.match("apps"))

    def test_targets_are_case_insensitive(self) -> None:
        (entry,) = parse_preference_list("app:PRIMARY")
        self.assertEqual(entry.target, "primary")

    def test_pattern_may_contain_a_colon(self) -> None:
        (entry,) = parse_preference_list("a:b:standby")
        self.assertEqual((entry.pattern.pattern, entry.target), ("^(?:a:b)$", "standby"))

    def test_bad_target_is_an_error(self) -> None:
        self.assertRaises(PreferenceListError, parse_preference_list, "app:replica")

    def test_missing_target_is_an_error(self) -> None:
        self.assertRaises(PreferenceListError, parse_preference_list, "app")

    def test_ratio_above_one_is_an_error(self) -> None:
        self.assertRaises(PreferenceListError, parse_preference_list, "app:1(1.5)")

    def test_bad_regular_expression_is_an_error(self) -> None:
        self.assertRaises(PreferenceListError, parse_preference_list, "ap(p:primary")


class WeightedChoiceTests(SynchronousTestCase):
    def test_draw_follows_cumulative_weights(self) -> None:
        cluster = make_cluster(1, 2)
        # Cumulative weights: [0, 1) node 0, [1, 3) node 1; the draw is
        # random() * 3.
        picks = [node_id(balancer(cluster, constant(r)).choose()) for r in (0.0, 0.33, 0.34, 0.99)]
        self.assertEqual(picks, [0, 0, 1, 1])

    def test_primary_is_a_candidate_like_any_standby(self) -> None:
        cluster = make_cluster(1, 1)
        self.assertTrue(is_primary(balancer(cluster, constant(0.1)).choose()))

    def test_zero_weight_is_never_chosen(self) -> None:
        cluster = make_cluster(0, 1)
        self.assertEqual(
            {node_id(balancer(cluster, constant(r)).choose()) for r in (0.0, 0.5, 0.999)}, {1}
        )

    def test_down_node_is_never_chosen(self) -> None:
        cluster = make_cluster(1, 1, 1)
        cluster.set_status(cluster.nodes[1], STATUS_DOWN, "test")
        self.assertEqual(
            {node_id(balancer(cluster, constant(r)).choose()) for r in (0.0, 0.4, 0.6, 0.999)},
            {0, 2},
        )

    def test_all_weights_zero_falls_back_to_the_primary(self) -> None:
        self.assertEqual(node_id(balancer(make_cluster(0, 0)).choose()), 0)

    def test_shares_converge_to_the_weights(self) -> None:
        cluster = make_cluster(1, 2)
        choose = balancer(cluster, random.Random(20240101).random).choose
        picks = [node_id(choose()) for _ in range(6000)]
        share = picks.count(1) / len(picks)
        self.assertTrue(abs(share - 2 / 3) < 0.03, share)

    def test_default_random_source_is_usable(self) -> None:
        node = Balancer(make_cluster(1, 1)).choose()
        self.assertIn(node_id(node), (0, 1))


class RedirectTests(SynchronousTestCase):
    def test_database_redirect_to_the_primary(self) -> None:
        b = balancer(make_cluster(0, 1), database="app:primary")
        self.assertEqual(node_id(b.choose(database="app")), 0)
        self.assertEqual(node_id(b.choose(database="other")), 1)

    def test_redirect_to_a_node_id_even_with_weight_zero(self) -> None:
        b = balancer(make_cluster(0, 1), app="reports:0")
        self.assertEqual(node_id(b.choose(application_name="reports")), 0)

    def test_redirect_to_standby_draws_among_standbys(self) -> None:
        cluster = make_cluster(5, 1, 1)
        picks = {
            node_id(balancer(cluster, constant(r), user="app:standby").choose(user="app"))
            for r in (0.0, 0.3, 0.7, 0.99)
        }
        self.assertEqual(picks, {1, 2})

    def test_redirect_to_an_invalid_node_id_uses_the_weights(self) -> None:
        b = balancer(make_cluster(0, 1), database="app:7")
        self.assertEqual(node_id(b.choose(database="app")), 1)

    def test_redirect_to_a_down_node_uses_the_weights(self) -> None:
        cluster = make_cluster(1, 1, 1)
        cluster.set_status(cluster.nodes[2], STATUS_DOWN, "test")
        b = balancer(cluster, constant(0.9), database="app:2")
        self.assertEqual(node_id(b.choose(database="app")), 1)

    def test_ratio_sends_that_share_to_the_suggested_node(self) -> None:
        cluster = make_cluster(1, 1)
        b = balancer(cluster, constant(0.2), database="app:primary(0.25)")
        self.assertEqual(node_id(b.choose(database="app")), 0)

    def test_beyond_the_ratio_the_suggested_node_is_excluded(self) -> None:
        cluster = make_cluster(1, 1)
        b = balancer(cluster, constant(0.3), database="app:primary(0.25)")
        self.assertEqual(node_id(b.choose(database="app")), 1)

    def test_beyond_the_ratio_a_standby_redirect_uses_the_primary(self) -> None:
        cluster = make_cluster(0, 1)
        b = balancer(cluster, constant(0.9), app="batch:standby(0.5)")
        self.assertEqual(node_id(b.choose(application_name="batch")), 0)

    def test_first_matching_entry_wins(self) -> None:
        b = balancer(make_cluster(0, 1), database="app:primary,a.*:1")
        self.assertEqual(node_id(b.choose(database="app")), 0)

    def test_empty_application_name_matches_nothing(self) -> None:
        b = balancer(make_cluster(0, 1), app=".*:primary")
        self.assertEqual(node_id(b.choose(application_name="")), 1)
        self.assertEqual(node_id(b.choose(application_name="psql")), 0)


class RedirectPrecedenceTests(SynchronousTestCase):
    """
    Pgpool-II (reference 1.5 and 3.3, C{select_load_balancing_node}): "the
    user match is overridden by a database match, which is overridden by an
    app-name match".
    """

    def setUp(self) -> None:
        self.balancer = balancer(
            make_cluster(1, 1, 1), user="app:2", database="app:1", app="psql:primary"
        )

    def test_application_name_beats_database_and_user(self) -> None:
        self.assertEqual(node_id(self.balancer.choose("app", "app", "psql")), 0)

    def test_database_beats_user(self) -> None:
        self.assertEqual(node_id(self.balancer.choose("app", "app", "other")), 1)

    def test_user_applies_when_nothing_else_matches(self) -> None:
        self.assertEqual(node_id(self.balancer.choose("app", "otherdb", "other")), 2)


class DelayedStandbyTests(SynchronousTestCase):
    def test_chosen_standby_serves_reads_while_in_sync(self) -> None:
        cluster = make_cluster(0, 1)
        b = balancer(cluster)
        self.assertEqual(node_id(b.read_node(cluster.nodes[1])), 1)

    def test_delayed_standby_sends_reads_to_the_primary(self) -> None:
        cluster = make_cluster(0, 1)
        cluster.nodes[1].delayed = True
        self.assertEqual(node_id(balancer(cluster).read_node(cluster.nodes[1])), 0)

    def test_standby_that_catches_up_serves_reads_again(self) -> None:
        cluster = make_cluster(0, 1)
        b = balancer(cluster)
        cluster.nodes[1].delayed = True
        b.read_node(cluster.nodes[1])
        cluster.nodes[1].delayed = False
        self.assertEqual(node_id(b.read_node(cluster.nodes[1])), 1)

    def test_down_standby_sends_reads_to_the_primary(self) -> None:
        cluster = make_cluster(0, 1)
        cluster.set_status(cluster.nodes[1], STATUS_DOWN, "test")
        self.assertEqual(node_id(balancer(cluster).read_node(cluster.nodes[1])), 0)

    def test_no_chosen_node_reads_from_the_primary(self) -> None:
        cluster = make_cluster(0, 1)
        self.assertEqual(node_id(balancer(cluster).read_node(None)), 0)

    def test_primary_is_never_delayed_away(self) -> None:
        cluster = make_cluster(1, 1)
        self.assertEqual(node_id(balancer(cluster).read_node(cluster.nodes[0])), 0)


class PreferLowerDelayStandbyTests(SynchronousTestCase):
    def lagging(self, *delays: Optional[int], threshold: int = 1000) -> Cluster:
        """
        Primary plus one standby per delay (None: a standby that is down).
        """
        cluster = make_cluster(0, *([1] * len(delays)))
        for node, delay in zip(cluster.nodes[1:], delays):
            if delay is None:
                cluster.set_status(node, STATUS_DOWN, "test")
                continue
            node.replication_delay = delay
            node.delayed = delay > threshold
        return cluster

    def test_delayed_standby_reads_go_to_the_least_delayed_standby(self) -> None:
        cluster = self.lagging(5000, 10, 200)
        b = balancer(cluster, prefer_lower_delay_standby=True)
        self.assertEqual(node_id(b.read_node(cluster.nodes[1])), 2)

    def test_ties_are_drawn_by_weight(self) -> None:
        cluster = self.lagging(5000, 10, 10)
        picks = {
            node_id(
                balancer(cluster, constant(r), prefer_lower_delay_standby=True).read_node(
                    cluster.nodes[1]
                )
            )
            for r in (0.1, 0.9)
        }
        self.assertEqual(picks, {2, 3})

    def test_standby_with_weight_zero_is_not_preferred(self) -> None:
        cluster = Cluster.from_config(
            [
                BackendConfig(hostname="p", weight=0),
                BackendConfig(hostname="s1", weight=1),
                BackendConfig(hostname="s2", weight=0),
                BackendConfig(hostname="s3", weight=1),
            ]
        )
        delays = [0, 5000, 0, 30]
        for node, delay in zip(cluster.nodes, delays):
            node.replication_delay = delay
            node.delayed = delay > 1000
        b = balancer(cluster, prefer_lower_delay_standby=True)
        self.assertEqual(node_id(b.read_node(cluster.nodes[1])), 3)

    def test_down_standby_is_not_preferred(self) -> None:
        cluster = self.lagging(5000, None, 300)
        b = balancer(cluster, prefer_lower_delay_standby=True)
        self.assertEqual(node_id(b.read_node(cluster.nodes[1])), 3)

    def test_every_standby_delayed_sends_reads_to_the_primary(self) -> None:
        # Pgpool-II only considers standbys within delay_threshold
        # (lowest_delay starts at the threshold); none qualify here, so the
        # read goes to the primary rather than to a standby known to lag.
        cluster = self.lagging(5000, 3000)
        b = balancer(cluster, prefer_lower_delay_standby=True)
        self.assertEqual(node_id(b.read_node(cluster.nodes[1])), 0)

    def test_only_standby_delayed_sends_reads_to_the_primary(self) -> None:
        cluster = self.lagging(5000)
        b = balancer(cluster, prefer_lower_delay_standby=True)
        self.assertEqual(node_id(b.read_node(cluster.nodes[1])), 0)

    def test_off_sends_reads_of_a_delayed_standby_to_the_primary(self) -> None:
        cluster = self.lagging(5000, 10)
        self.assertEqual(node_id(balancer(cluster).read_node(cluster.nodes[1])), 0)
