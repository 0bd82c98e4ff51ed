"""
A setting as an attrs field, and the generic reader of a mapping of them.

A setting is an attrs field whose metadata holds its kind
(L{twisted_pgpool.config.kinds}), its context (L{START} or L{RELOAD}) and,
for a password, that it is secret.  L{_build} walks a class's fields and
reads one mapping through their kinds, so a new setting is one new field and
nothing else; L{_Nested}, the kind of a list of mappings (C{backends}),
reads each item with it.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import attrs

from twisted_pgpool.config.kinds import _Context, _Invalid, _Kind, _show, _show_type, _Where

_KIND = "twisted_pgpool.config.kind"
_CONTEXT = "twisted_pgpool.config.context"

#: The setting takes effect only when the proxy starts; a reload that finds
#: it changed warns and keeps the value in force (Pgpool-II's [start]).
START = "start"
#: A reload applies the setting: new sessions and the next periodic checks
#: use the new value (Pgpool-II's [reload]).
RELOAD = "reload"


def _kind(kind: _Kind, context: Optional[str] = None) -> Dict[str, Any]:
    """
    Field metadata marking an attrs field as a user setting read by C{kind},
    taking effect at C{context} (L{START} or L{RELOAD}; see
    L{twisted_pgpool.admin.reload}).  A setting without a context is treated as
    L{START}, and a test insists every setting has one.
    """
    return {_KIND: kind, _CONTEXT: context}


_SECRET = "twisted_pgpool.config.secret"

#: What every display of a secret setting shows instead of its value, set
#: or not: Pgpool-II's C{PGPOOL SHOW} answers C{*****} for its
#: C{VAR_HIDDEN_VALUE} parameters without looking at the value.
SECRET_MASK = "*****"


def _masked_repr(value: Any) -> str:
    return SECRET_MASK


def _secret_setting(kind: _Kind, context: str, default: Any = "") -> Any:
    """
    An attrs field for a setting whose value is a password (or anything
    else that lets its reader in somewhere).

    The one mark is in the metadata (L{is_secret}): L{show_setting}, which
    every report of settings goes through (C{PGPOOL SHOW}, C{SHOW
    POOL_STATUS}, C{pcp_pool_status}, the reload log), shows it as
    L{SECRET_MASK}, and the loader never echoes a refused value of it.  The
    field's C{repr} is masked too, so the configuration shown at the
    manhole's prompt or put in a log does not carry it.
    """
    metadata = _kind(kind, context)
    metadata[_SECRET] = True
    return attrs.field(default=default, metadata=metadata, repr=_masked_repr)


def is_secret(field: "attrs.Attribute[Any]") -> bool:
    """
    Whether a setting's value must never be shown (see L{_secret_setting}).
    """
    return bool(field.metadata.get(_SECRET))


def setting_context(field: "attrs.Attribute[Any]") -> str:
    """
    When a change of this setting takes effect: L{RELOAD} or L{START}.  A
    setting nobody has classified yet counts as L{START}, the safe answer: a
    reload then keeps its value and says a restart is needed.
    """
    return field.metadata.get(_CONTEXT) or START


# ---------------------------------------------------------------------------
# The generic loader.


def _settings(cls: Type[Any]) -> Dict[str, _Kind]:
    """
    The user settings of an attrs class, in field order, with their kinds.
    """
    return {
        field.name: field.metadata[_KIND] for field in attrs.fields(cls) if _KIND in field.metadata
    }


def _key_lines(mapping: Any) -> Mapping[Any, int]:
    return getattr(mapping, "key_lines", {})


#: How alike (difflib's ratio) a known key must be to be suggested: 0.75
#: offers port for prot and health_check_period for health_check_perod, and
#: nothing for bogus_key (ssl_key is 0.625).
_SUGGESTION_CUTOFF = 0.75
#: Longer lists of allowed keys are left to docs/configuration.md.
_LISTED_KEYS = 12


def _unknown_key(key: Any, allowed: Sequence[str], candidates: Sequence[str], also: str) -> str:
    """
    One short line: a suggestion when a known key is close (in any case),
    and the allowed keys only when there are few of them.
    """
    by_lower = {candidate.lower(): candidate for candidate in candidates}
    close = difflib.get_close_matches(
        str(key).lower(), list(by_lower), n=1, cutoff=_SUGGESTION_CUTOFF
    )
    if close:
        return f"unknown key; did you mean '{by_lower[close[0]]}'?"
    if len(allowed) <= _LISTED_KEYS:
        return f"unknown key; allowed keys: {', '.join(sorted(allowed))}{also}"
    return "unknown key (docs/configuration.md lists the settings)"


def _build(
    cls: Type[Any],
    raw: Mapping[Any, Any],
    ctx: _Context,
    name: Callable[[str], str],
    line: Optional[int],
    lines: Mapping[Any, int],
    given: Optional[Mapping[str, Any]] = None,
    candidates: Sequence[str] = (),
    also: str = "",
) -> Any:
    """
    Read one mapping into C{cls}, field by field, through each field's kind.

    @param name: Turns a key into the path shown in messages.
    @param line: The mapping's own line, for keys it lacks.
    @param lines: The line of each key present.
    @param given: Values already built elsewhere, passed straight on.
    @param candidates: Extra spellings offered for unknown keys.
    @param also: Appended to the allowed-keys list of unknown-key messages.
    """
    kinds = _settings(cls)
    given = dict(given or {})
    for key in raw:
        if key not in kinds:
            reason = _unknown_key(key, list(kinds), list(kinds) + list(candidates), also)
            raise ctx.error(_Where(name(str(key)), lines.get(key, line)), reason)
    values: Dict[str, Any] = {}
    for field in attrs.fields(cls):
        kind = kinds.get(field.name)
        if kind is None or field.name in given:
            continue
        where = _Where(name(field.name), lines.get(field.name, line))
        if field.name in raw:
            try:
                values[field.name] = kind.parse(raw[field.name], ctx, where)
            except _Invalid as e:
                reason = str(e)
                if is_secret(field):
                    reason = (
                        f"expected {kind.describe()}, got "
                        f"{_show_type(raw[field.name])} (the value of a "
                        "secret setting is not shown)"
                    )
                raise ctx.error(where, reason) from None
        elif field.default is attrs.NOTHING:
            raise ctx.error(where, f"missing; expected {kind.describe()}")
        else:
            values[field.name] = kind.default(field.default, ctx)
    values.update(given)
    return cls(**values)


def _naming(prefix: str, suffix: str) -> Callable[[str], str]:
    """
    How the keys of one nested item are shown: C{backends[0].port} for the
    list spelling, C{backend_port0} for the numbered one.
    """
    return lambda key: f"{prefix}{key}{suffix}"


# An item of a nested list, ready to build: its mapping, the line of the
# item, the line of each key, and how to name one of its keys in messages.
_Item = Tuple[Mapping[Any, Any], Optional[int], Mapping[Any, int], Callable[[str], str]]


@attrs.frozen
class _Nested(_Kind):
    """
    A list of mappings, each read into C{cls} by the same generic loader.

    @ivar check: Called with the built items and a function giving the place
        of an item's key, for rules that span items.
    """

    cls: Type[Any]
    minimum: int
    maximum: int
    check: Optional[Callable[[Sequence[Any], Callable[[int, str], _Where], _Context], None]] = None

    def describe(self) -> str:
        return f"a list of {self.minimum} to {self.maximum} mappings with the keys " + ", ".join(
            _settings(self.cls)
        )

    def parse(self, value: Any, ctx: _Context, where: _Where) -> Tuple[Any, ...]:
        if not isinstance(value, (list, tuple)):
            raise self.reject(value)
        item_lines: Sequence[Optional[int]] = getattr(
            value, "item_lines", [where.line] * len(value)
        )
        items: List[_Item] = []
        for index, (item, line) in enumerate(zip(value, item_lines)):
            prefix = f"{where.path}[{index}]"
            if not isinstance(item, Mapping):
                raise ctx.error(
                    _Where(prefix, line),
                    f"expected a mapping of {', '.join(_settings(self.cls))}, got {_show(item)}",
                )
            items.append((item, line, _key_lines(item), _naming(prefix + ".", "")))
        return self.build_items(items, ctx, where)

    def build_items(self, items: Sequence[_Item], ctx: _Context, where: _Where) -> Tuple[Any, ...]:
        if not self.minimum <= len(items) <= self.maximum:
            raise ctx.error(
                where,
                f"expected {self.minimum} to {self.maximum} entries, got {len(items)}",
            )
        built = tuple(
            _build(self.cls, item, ctx, name, line, lines) for item, line, lines, name in items
        )
        if self.check is not None:

            def place(index: int, key: str) -> _Where:
                item, line, lines, name = items[index]
                return _Where(name(key), lines.get(key, line))

            self.check(built, place, ctx)
        return built
