"""
Routing that needs the catalog, as Pgpool-II does it with its relation
cache: a read calling user functions is balanced when every one of them is
STABLE or IMMUTABLE (C{pg_proc.provolatile}, with both function lists
empty), and a read of an unlogged table goes to the primary
(C{pg_class.relpersistence}, C{check_unlogged_table}), since a standby
refuses it ("cannot access temporary or unlogged relations during
recovery").

The facts come from the L{CatalogCache} the query cache uses too, one per
database (and settings); a name is looked up once, on the primary, and
answered from the cache afterwards.  This module only decides: it says
which names are missing (L{CatalogQuestion}) and the session runs the
lookup and asks again, the statement waiting meanwhile.
"""

from __future__ import annotations

from typing import Callable, List, Tuple, Union, cast

import attr

from twisted_pgpool.cache.policy import CatalogCache, RelationFacts
from twisted_pgpool.routing.router import BALANCE, PRIMARY, Route, SessionRouter
from twisted_pgpool.sql.classifier import Classification

_READS_AN_UNLOGGED_TABLE = Route(PRIMARY, "reads an unlogged table")
_READS_A_TEMPORARY_TABLE = Route(PRIMARY, "reads a temporary table")
_RELATION_NOT_LOOKED_UP = Route(PRIMARY, "relation could not be looked up")
_UNKNOWN = object()


@attr.s(frozen=True, slots=True, auto_attribs=True)
class CatalogQuestion:
    """
    What a statement's route still needs from the catalog: look these names
    up (L{twisted_pgpool.cache.policy.lookup_sql}), record the answer, and
    route again.
    """

    missing_relations: Tuple[str, ...] = ()
    missing_functions: Tuple[str, ...] = ()


@attr.s(auto_attribs=True)
class CatalogRouting:
    """
    One session's catalog-dependent routing rules.

    @ivar relaxed_classify: classifies as the session does, except that a
        call of a function of unknown volatility does not make a statement
        a write (L{ClassifierConfig.unknown_functions_are_writes} off).
    @ivar check_functions: look up the volatility of such functions (both
        C{write_function_list} and C{read_only_function_list} empty, as in
        Pgpool-II).
    @ivar check_unlogged_table: Pgpool-II's setting of that name.
    """

    relaxed_classify: Callable[[str], Classification]
    check_functions: bool = True
    check_unlogged_table: bool = True

    def route(
        self,
        router: SessionRouter,
        classification: Classification,
        sql: str,
        route: Route,
        catalog: CatalogCache,
        looked_up: bool,
    ) -> Union[Tuple[Classification, Route], CatalogQuestion]:
        """
        Correct a statement's route with what the catalog says.

        @param route: the router's route for C{classification}.
        @param looked_up: a lookup was made for this statement already;
            names still missing are then taken at their worst (a function
            that may write, a relation that may be unlogged) instead of
            asked about again.
        @return: the classification to go on with (a read, when its only
            write was a call of functions found STABLE or IMMUTABLE) and its
            route; or the names to look up first.
        """
        c = classification
        if self.check_functions and c.unknown_functions and not c.is_read_only:
            relaxed = self.relaxed_classify(sql)
            if relaxed.is_read_only:
                relaxed_route = router.route(relaxed)
                # Only a read that would be balanced is worth a lookup.
                if relaxed_route.target == BALANCE:
                    _, missing_functions = catalog.missing((), relaxed.unknown_functions)
                    if not missing_functions and all(
                        catalog.functions[name] in ("s", "i") for name in relaxed.unknown_functions
                    ):
                        c, route = relaxed, relaxed_route
                    elif missing_functions and not looked_up:
                        # The relations too, in the same lookup: the read
                        # may well be balanced afterwards.
                        return CatalogQuestion(
                            self._missing_relations(relaxed, catalog), missing_functions
                        )
        if (
            self.check_unlogged_table
            and route.target == BALANCE
            and c.touches_temp_table_candidates
        ):
            # The common case, a known read, in one pass without copies.
            catalog.expire_if_due()
            relations = catalog.relations
            missing: List[str] = []
            for name in c.touches_temp_table_candidates:
                facts = relations.get(name, _UNKNOWN)
                if facts is _UNKNOWN:
                    if name.count(".") <= 1:
                        missing.append(name)
                elif facts is not None:
                    persistence = cast(RelationFacts, facts).relpersistence
                    if persistence == "u":
                        return c, _READS_AN_UNLOGGED_TABLE
                    if persistence == "t":
                        return c, _READS_A_TEMPORARY_TABLE
            if missing:
                if looked_up:
                    return c, _RELATION_NOT_LOOKED_UP
                return CatalogQuestion(tuple(missing))
        return c, route

    def _missing_relations(self, c: Classification, catalog: CatalogCache) -> Tuple[str, ...]:
        if not self.check_unlogged_table:
            return ()
        return catalog.missing(_relation_names(c), ())[0]


def _relation_names(c: Classification) -> Tuple[str, ...]:
    """
    The relation names of a statement that a lookup can resolve: three-part
    names (another database's) are left out, as PostgreSQL refuses them.
    """
    names = c.touches_temp_table_candidates
    if not names:
        return names
    return tuple(n for n in names if n.count(".") <= 1)
