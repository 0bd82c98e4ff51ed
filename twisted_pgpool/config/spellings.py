"""
Pgpool-II's spellings of settings the model names otherwise, read as the
model's: numbered backend keys (C{backend_port0}, C{health_check_period1})
and the clustering mode's keys before Pgpool-II 4.2 (C{master_slave_mode}).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from twisted_pgpool.config.fields import _Item, _key_lines, _settings
from twisted_pgpool.config.kinds import _Boolean, _Context, _Invalid, _show, _Where
from twisted_pgpool.config.model import _MAX_BACKENDS, BackendConfig
from twisted_pgpool.config.yamlfile import _LineDict

# Pgpool-II's spelling, backend_portN etc., for configs ported from pgpool.conf;
# the per-node health check settings are health_check_periodN there (the
# backend_health_check_periodN spelling is accepted too).
_PER_NODE_HEALTH_CHECK = (
    "health_check_period",
    "health_check_timeout",
    "health_check_max_retries",
    "health_check_retry_delay",
)
_NUMBERED = re.compile(
    r"(?:backend_(%s)|(%s))(0|[1-9][0-9]*)\Z"
    % (
        "|".join(sorted(_settings(BackendConfig), key=len, reverse=True)),
        "|".join(_PER_NODE_HEALTH_CHECK),
    )
)
_TRAILING_NUMBER = re.compile(r"([0-9]+)\Z")


def _numbered_key(key: Any) -> Optional[Tuple[str, int]]:
    """
    C{(backend setting, node number)} for a numbered backend key:
    C{('port', 0)} for C{backend_port0}, C{('health_check_period', 1)} for
    C{health_check_period1}.
    """
    match = _NUMBERED.match(key) if isinstance(key, str) else None
    if match is None:
        return None
    return match.group(1) or match.group(2), int(match.group(3))


def _numbered_spelling(setting: str, number: int) -> str:
    """
    How Pgpool-II spells a backend's setting: C{backend_port0},
    C{health_check_period0}.
    """
    if setting in _PER_NODE_HEALTH_CHECK:
        return f"{setting}{number}"
    return f"backend_{setting}{number}"


def _numbered_backends(
    data: Mapping[Any, Any], lines: Mapping[Any, int], ctx: _Context
) -> List[_Item]:
    """
    Gather C{backend_hostname0}-style keys into one item per node number.
    """
    groups: Dict[int, Tuple[Dict[str, Any], Dict[str, int], Optional[int]]] = {}
    spellings: Dict[int, Dict[str, str]] = {}
    for key, value in data.items():
        numbered = _numbered_key(key)
        if numbered is None:
            continue
        setting, number = numbered
        if number >= _MAX_BACKENDS:
            raise ctx.error(
                _Where(key, lines.get(key)),
                f"backend numbers go from 0 to {_MAX_BACKENDS - 1}",
            )
        raw, key_lines, first_line = groups.setdefault(number, ({}, {}, lines.get(key)))
        written = spellings.setdefault(number, {})
        if setting in raw:
            raise ctx.error(_Where(key, lines.get(key)), f"already given as {written[setting]}")
        raw[setting] = value
        written[setting] = key
        if key in lines:
            key_lines[setting] = lines[key]
    items: List[_Item] = []
    for expected, number in enumerate(sorted(groups)):
        raw, key_lines, first_line = groups[number]
        written = spellings[number]
        if number != expected:
            first_key = written[next(iter(raw))]
            raise ctx.error(
                _Where(first_key, first_line),
                "numbered backends must go 0, 1, 2, ... without gaps; "
                f"there is no backend_hostname{expected}",
            )

        def name(setting: str, written: Dict[str, str] = written, number: int = number) -> str:
            return written.get(setting) or _numbered_spelling(setting, number)

        items.append((raw, first_line, key_lines, name))
    return items


#: Pgpool-II's spellings before 4.2 of the clustering mode, still accepted.
LEGACY_MODE_KEYS = ("master_slave_mode", "master_slave_sub_mode", "replication_mode")


def _resolve_legacy_mode(
    data: Mapping[Any, Any], lines: Mapping[Any, int], ctx: _Context
) -> Mapping[Any, Any]:
    """
    Turn C{master_slave_mode}/C{master_slave_sub_mode}/C{replication_mode}
    into C{backend_clustering_mode}, so a ported pgpool.conf keeps working.
    """
    present = [key for key in LEGACY_MODE_KEYS if key in data]
    if not present:
        return data
    where = _Where(present[0], lines.get(present[0]))
    if "backend_clustering_mode" in data:
        raise ctx.error(
            where,
            "use either backend_clustering_mode or the older "
            "master_slave_mode/replication_mode spelling, not both",
        )
    boolean = _Boolean()
    try:
        master_slave = boolean.parse(data.get("master_slave_mode", False), ctx, where)
        replication = boolean.parse(data.get("replication_mode", False), ctx, where)
    except _Invalid as e:
        raise ctx.error(where, str(e)) from None
    sub_mode = str(data.get("master_slave_sub_mode", "stream")).strip().lower()
    if replication and master_slave:
        raise ctx.error(
            _Where("replication_mode", lines.get("replication_mode")),
            "replication_mode and master_slave_mode cannot both be on",
        )
    if master_slave and sub_mode not in ("stream", "logical"):
        raise ctx.error(
            _Where("master_slave_sub_mode", lines.get("master_slave_sub_mode")),
            f"expected stream or logical, got {_show(sub_mode)}",
        )
    converted = {k: v for k, v in data.items() if k not in LEGACY_MODE_KEYS}
    converted["backend_clustering_mode"] = (
        "native_replication" if replication else "streaming_replication" if master_slave else "raw"
    )
    if isinstance(data, _LineDict) or hasattr(data, "key_lines"):
        result = _LineDict(converted)
        result.key_lines = dict(_key_lines(data))
        result.key_lines.setdefault("backend_clustering_mode", where.line or 0)
        return result
    return converted
