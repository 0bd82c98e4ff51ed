"""
Settings as people are shown them: values the way they would be written
(L{show_setting}, with secrets masked), the one-line descriptions, every
setting of a configuration (L{settings_for_display}), and the lists of keys,
contexts and secrets the documentation and its tests read.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterator, List, Set, Tuple, Type

import attrs

from twisted_pgpool.config.fields import (
    _CONTEXT,
    _KIND,
    SECRET_MASK,
    START,
    _Nested,
    _settings,
    is_secret,
    setting_context,
)
from twisted_pgpool.config.kinds import _Duration
from twisted_pgpool.config.model import BackendConfig, PgpoolConfig
from twisted_pgpool.config.spellings import LEGACY_MODE_KEYS


def show_setting(field: "attrs.Attribute[Any]", value: Any) -> str:
    """
    A setting's value as people are shown it, the way they would write it
    in the file: booleans C{on}/C{off}, lists comma-separated, whole
    numbers without C{.0}, nothing for an unset per-backend override, and
    L{SECRET_MASK} for a secret setting whatever its value.

    The one renderer of settings for display, so that no report can show a
    password by forgetting to check.

    @param field: The setting's attrs field (from C{attrs.fields}).
    @param value: Its value in a configuration.
    """
    if is_secret(field):
        return SECRET_MASK
    if isinstance(field.metadata.get(_KIND), _Duration) and isinstance(value, (int, float)):
        return show_duration(value)
    return _display(value)


#: Units a duration is shown in, largest first: the largest that shows it
#: exactly is used (7.0 s is "7s", 0.5 s "500ms", 300 s "5min"), and
#: seconds with decimals above a second (1.5 s is "1.5s").
_SHOWN_UNITS = (
    ("d", 86400.0),
    ("h", 3600.0),
    ("min", 60.0),
    ("s", 1.0),
    ("ms", 0.001),
    ("us", 0.000001),
)


def show_duration(seconds: float) -> str:
    """
    A duration as it would be written in the configuration, with its unit.
    """
    if seconds == 0:
        return "0"
    for unit, size in _SHOWN_UNITS:
        if unit == "s" and seconds >= 1:
            # 1.5 s stays "1.5s" rather than becoming "1500ms".
            return f"{seconds:g}s"
        count = seconds / size
        if abs(count - round(count)) < 1e-9 * max(1.0, abs(count)) and round(count) >= 1:
            return f"{int(round(count))}{unit}"
    return f"{seconds:g}s"


_BACKEND_NUMBER = re.compile(r"(?<=^backend_)([a-z_]+?)\d+$")


def describe_setting(name: str) -> str:
    """
    One line about a setting (C{backend_weight1} is described as
    C{backend_weight}): the first sentence of its row in
    docs/configuration.md, for the description column of C{PGPOOL SHOW
    ALL} and C{SHOW POOL_STATUS}.
    """
    from twisted_pgpool.config.descriptions import DESCRIPTIONS

    found = DESCRIPTIONS.get(name)
    if found is None:
        found = DESCRIPTIONS.get(_BACKEND_NUMBER.sub(r"\1", name), "")
    return found


def settings_for_display(config: "PgpoolConfig") -> List[Tuple[str, str]]:
    """
    Every setting of C{config} with its value as L{show_setting} shows it,
    named as in C{pgpool.conf}: a backend's settings are spelled
    C{backend_hostname0}, C{backend_weight1}...  What C{PGPOOL SHOW},
    C{SHOW POOL_STATUS} and C{pcp_pool_status} list.
    """
    rows = [
        (field.name, show_setting(field, getattr(config, field.name)))
        for field in attrs.fields(PgpoolConfig)
        if _KIND in field.metadata and field.name != "backends"
    ]
    for node_id, backend in enumerate(config.backends):
        rows.extend(
            (f"backend_{field.name}{node_id}", show_setting(field, getattr(backend, field.name)))
            for field in attrs.fields(BackendConfig)
            if _KIND in field.metadata
        )
    return rows


def _display(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return ""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(_display(item) for item in value)
    return str(value)


def documented_keys() -> Set[str]:
    """
    Every key a user may write, from the model itself, so the documentation
    test fails when a setting is added without being documented (or the
    reverse). Nested settings appear as C{backends[].hostname}.
    """

    def keys(cls: Type[Any], prefix: str) -> Iterator[str]:
        for name, kind in _settings(cls).items():
            yield prefix + name
            if isinstance(kind, _Nested):
                yield from keys(kind.cls, f"{prefix}{name}[].")

    return set(keys(PgpoolConfig, "")) | set(LEGACY_MODE_KEYS)


def _setting_fields(
    cls: Type[Any] = PgpoolConfig, prefix: str = ""
) -> Iterator[Tuple[str, "attrs.Attribute[Any]"]]:
    """
    Every setting's field with its key as L{documented_keys} spells it
    (C{backends[].weight} for a backend's), nested ones after their list.
    """
    for field in attrs.fields(cls):
        if _KIND not in field.metadata:
            continue
        yield prefix + field.name, field
        kind = field.metadata[_KIND]
        if isinstance(kind, _Nested):
            yield from _setting_fields(kind.cls, f"{prefix}{field.name}[].")


def unclassified_settings() -> Set[str]:
    """
    The keys (as L{documented_keys} spells them) whose field has no context
    yet; a test keeps this empty.
    """
    return {key for key, field in _setting_fields() if field.metadata.get(_CONTEXT) is None}


def setting_contexts() -> Dict[str, str]:
    """
    The context of every key a user may write (the keys of
    L{documented_keys}), for the documentation and its test.  The spellings
    before Pgpool-II 4.2 of the clustering mode take effect at start, like
    C{backend_clustering_mode}.
    """
    result = {key: setting_context(field) for key, field in _setting_fields()}
    result.update((key, START) for key in LEGACY_MODE_KEYS)
    return result


def secret_settings() -> Set[str]:
    """
    The keys (as L{documented_keys} spells them) of the settings whose
    values are never shown (L{is_secret}), for the documentation and the
    test that no password-like setting is left unmarked.
    """
    return {key for key, field in _setting_fields() if is_secret(field)}
