"""
Configuration: read a user's C{conf.yaml} into frozen attrs objects.

The file is a flat YAML mapping that uses Pgpool-II's parameter names, so a
user porting a C{pgpool.conf} recognises every key. Each setting is one attrs
field whose metadata holds a I{kind}: the object that knows how to turn a YAML
value into the model's value (units, ranges, allowed words) and how to say
what it expected when it cannot. One generic loader walks the fields, so a new
setting is one new field and nothing else: the loader, the list of allowed
keys in error messages and L{documented_keys} all follow from it.

Errors are raised as L{ConfigError}, one line each, naming the file, the line
YAML gives for the key, the dotted key path and what would have been accepted.
"""

from __future__ import annotations

import datetime
import difflib
import math
import os
import re
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Type,
    cast,
)

import attrs
import yaml
from twisted.logger import Logger

from twisted_pgpool.config import pgpool_conf as pgpoolconf

__all__ = [
    "BackendConfig",
    "ConfigError",
    "ConfigWarning",
    "PgpoolConfig",
    "RELOAD",
    "SECRET_MASK",
    "START",
    "SettingError",
    "config_from_dict",
    "documented_keys",
    "is_secret",
    "secret_settings",
    "settings_for_display",
    "show_setting",
    "setting_context",
    "setting_contexts",
    "convert_pgpool_conf",
    "load_config",
    "log_warnings",
    "register_check",
    "unclassified_settings",
    "yaml_plain_keeps_value",
]

log = Logger()


class ConfigError(Exception):
    """
    The configuration cannot be used; C{str()} is one line meant for the user.

    The parts are also kept apart so that a caller (the CLI, a reload) can
    show or log them in its own way.

    @ivar reason: What is wrong and what would be accepted.
    @ivar source: The file (or C{<dict>}) the setting came from, if known.
    @ivar line: The 1-based line of the key in that file, if YAML gave one.
    @ivar key: The dotted key path, e.g. C{backends[0].port}, if any.
    """

    def __init__(
        self,
        reason: str,
        source: Optional[str] = None,
        line: Optional[int] = None,
        key: Optional[str] = None,
    ) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        self.key = key
        where = ""
        if source is not None:
            where = source if line is None else f"{source}:{line}"
        parts = [part for part in (where, key, reason) if part]
        super().__init__(": ".join(parts))

    def __str__(self) -> str:
        return str(self.args[0])


@attrs.frozen
class ConfigWarning:
    """
    A setting that was read but is not used, or not used as written (a
    Pgpool-II parameter that does not apply here, an old name); the start
    goes on.  C{str()} is one line, in the form of L{ConfigError}'s.
    """

    reason: str
    source: str
    line: Optional[int]
    key: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.key}: {self.reason}"


def _deliver(found: Sequence[ConfigWarning],
             warnings: Optional[List[ConfigWarning]]) -> None:
    """
    Hand warnings to the caller's list, or log them, in the order of the
    file's lines, all together.
    """
    ordered = sorted(found, key=lambda w: (w.line is None, w.line or 0))
    if warnings is not None:
        warnings.extend(ordered)
    else:
        log_warnings(ordered)


def log_warnings(warnings: Sequence[ConfigWarning]) -> None:
    """
    Log configuration warnings, one event each, as one block.
    """
    for warning in warnings:
        # (Not a field named "warning": Twisted's legacy observers take an
        # event with one for a Python warning.)
        where = warning.source if warning.line is None else \
            f"{warning.source}:{warning.line}"
        log.warn("{where}: {key}: {reason}", where=where, source=warning.source,
                 line=warning.line, key=warning.key, reason=warning.reason)


# ---------------------------------------------------------------------------
# Where a value came from, for error messages.


@attrs.frozen
class _Where:
    """
    The place of one value: its dotted path and, from YAML, its line.
    """

    path: str
    line: Optional[int]


@attrs.frozen
class _Context:
    """
    What every kind may need while reading one document.

    @ivar source: Shown at the start of every error message.
    @ivar base_dir: Absolute directory that relative paths are resolved
        against (the configuration file's directory), so that a later
        C{chdir} (daemonising) does not change what a path means.
    """

    source: str
    base_dir: str

    def error(self, where: _Where, reason: str) -> ConfigError:
        return ConfigError(reason, source=self.source, line=where.line, key=where.path)


class _Invalid(Exception):
    """
    Raised by a kind that refuses a value; the loader adds file, line and key.
    """


def _show(value: Any) -> str:
    """
    Render a refused value the way the user wrote it, shortly.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "an empty value"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _show_type(value: Any) -> str:
    """
    Name what sort of value was refused without showing it, for a secret
    setting: a password YAML read as a number or a boolean (C{123456},
    C{yes}) would otherwise be echoed in the error.
    """
    if isinstance(value, bool):
        return "a boolean"
    if _is_number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None or isinstance(value, (Mapping, list, tuple)):
        return _show(value)
    return f"a value of type {type(value).__name__}"


# ---------------------------------------------------------------------------
# Kinds: how one YAML value becomes one model value.


class _Kind:
    """
    Parse and check the value of one setting.

    Subclasses implement L{describe} (the words after "expected" in an error
    message, and the only description of the accepted values a user sees)
    and L{parse}.
    """

    def describe(self) -> str:
        raise NotImplementedError()

    def parse(self, value: Any, ctx: _Context, where: _Where) -> Any:
        """
        @return: The value to store in the model.
        @raise _Invalid: If the value is not acceptable.
        @raise ConfigError: For nested settings that report their own place.
        """
        raise NotImplementedError()

    def default(self, value: Any, ctx: _Context) -> Any:
        """
        Adjust the attrs default for a document that omits the key (paths
        must be resolved like given ones).
        """
        return value

    def reject(self, value: Any) -> _Invalid:
        return _Invalid(f"expected {self.describe()}, got {_show(value)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*\Z")
_DECIMAL = re.compile(r"\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*\Z")


@attrs.frozen
class _Integer(_Kind):
    minimum: int
    maximum: int

    def describe(self) -> str:
        return f"an integer from {self.minimum} to {self.maximum}"

    def parse(self, value: Any, ctx: _Context, where: _Where) -> int:
        number: Optional[int] = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and _INTEGER.match(value):
            number = int(value)
        if number is None or not self.minimum <= number <= self.maximum:
            raise self.reject(value)
        return number


@attrs.frozen
class _Number(_Kind):
    minimum: float

    def describe(self) -> str:
        return f"a number of at least {self.minimum:g}"

    def parse(self, value: Any, ctx: _Context, where: _Where) -> float:
        number: Optional[float] = None
        if _is_number(value):
            number = float(value)
        elif isinstance(value, str) and _DECIMAL.match(value):
            number = float(value)
        if number is None or not math.isfinite(number) or number < self.minimum:
            raise self.reject(value)
        return number


# Pgpool-II's parse_bool_with_len (PostgreSQL's): these words, any prefix
# of them (of at least two letters for on and off), and 1 and 0.
_BOOLEAN_WORDS = (("true", True, 1), ("false", False, 1), ("yes", True, 1),
                  ("no", False, 1), ("on", True, 2), ("off", False, 2),
                  ("1", True, 1), ("0", False, 1))


@attrs.frozen
class _Boolean(_Kind):
    def describe(self) -> str:
        return "a boolean (on/off, true/false, yes/no or 1/0)"

    def parse(self, value: Any, ctx: _Context, where: _Where) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            word = value.strip().lower()
            for full, meaning, shortest in _BOOLEAN_WORDS:
                if len(word) >= shortest and full.startswith(word):
                    return meaning
        raise self.reject(value)


_TIME_UNITS: Dict[str, float] = {
    "us": 0.000001,
    "ms": 0.001,
    "s": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_UNIT_WORDS = {"us": "microseconds", "ms": "milliseconds", "s": "seconds"}
_DURATION = re.compile(
    r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(us|ms|s|min|h|d)?\s*\Z", re.IGNORECASE
)


@attrs.frozen
class _Duration(_Kind):
    """
    A length of time, stored as float seconds whatever the input unit.

    @ivar unit: The unit Pgpool-II uses for this parameter, applied to bare
        numbers so that values copied from C{pgpool.conf} keep their meaning.
    """

    unit: str

    def describe(self) -> str:
        return (
            "a duration such as 500ms, 30s or 5min "
            f"(a bare number means {_UNIT_WORDS[self.unit]})"
        )

    def parse(self, value: Any, ctx: _Context, where: _Where) -> float:
        seconds: Optional[float] = None
        if isinstance(value, datetime.timedelta):
            seconds = value.total_seconds()
        elif _is_number(value):
            seconds = float(value) * _TIME_UNITS[self.unit]
        elif isinstance(value, str):
            match = _DURATION.match(value)
            if match:
                unit = (match.group(2) or self.unit).lower()
                seconds = float(match.group(1)) * _TIME_UNITS[unit]
        if seconds is None or not math.isfinite(seconds) or seconds < 0:
            raise self.reject(value)
        return seconds


_SIZE_UNITS: Dict[str, int] = {
    "b": 1,
    "kb": 1024,
    "mb": 1024**2,
    "gb": 1024**3,
    "tb": 1024**4,
}
_SIZE = re.compile(r"\s*([0-9]+)\s*([kmgt]?b)?\s*\Z", re.IGNORECASE)


@attrs.frozen
class _Size(_Kind):
    """
    A number of bytes; units are PostgreSQL's (C{kB} = 1024 bytes).
    """

    minimum: int
    maximum: int

    def describe(self) -> str:
        return (
            f"a size from {self.minimum} to {self.maximum} bytes, such as "
            "400kB or 64MB (a bare number means bytes)"
        )

    def parse(self, value: Any, ctx: _Context, where: _Where) -> int:
        size: Optional[int] = None
        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        elif isinstance(value, str):
            match = _SIZE.match(value)
            if match:
                unit = (match.group(2) or "b").lower()
                size = int(match.group(1)) * _SIZE_UNITS[unit]
        if size is None or not self.minimum <= size <= self.maximum:
            raise self.reject(value)
        return size


@attrs.frozen
class _Text(_Kind):
    """
    A string; quoting is the user's job, so numbers are refused rather than
    silently turned into text.
    """

    allow_empty: bool = True
    what: str = "a string"

    def describe(self) -> str:
        return self.what if self.allow_empty else f"a non-empty {self.what[2:]}"

    def parse(self, value: Any, ctx: _Context, where: _Where) -> str:
        if not isinstance(value, str) or not (self.allow_empty or value.strip()):
            raise self.reject(value)
        return value


@attrs.frozen
class _TextList(_Kind):
    """
    A list of strings, written as a YAML list or as Pgpool-II's
    comma-separated string; stored as a tuple without empty items.

    @ivar regex: check that every item compiles as a regular expression.
    """

    regex: bool = False

    def describe(self) -> str:
        what = "regular expressions" if self.regex else "strings"
        return f"a list of {what} (a YAML list or a comma-separated string)"

    def parse(self, value: Any, ctx: _Context, where: _Where) -> Tuple[str, ...]:
        if isinstance(value, str):
            items = [item.strip() for item in value.split(",")]
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            items = [item.strip() for item in value]
        else:
            raise self.reject(value)
        items = [item for item in items if item]
        if self.regex:
            for item in items:
                try:
                    re.compile(item)
                except re.error as e:
                    raise _Invalid(f"{item!r} is not a valid regular expression: {e}")
        return tuple(items)


@attrs.frozen
class _Optional(_Kind):
    """
    Another kind, or absent: C{None} in the model means "use the global
    setting" (per-backend overrides such as C{health_check_period}).
    """

    inner: _Kind

    def describe(self) -> str:
        return self.inner.describe()

    def parse(self, value: Any, ctx: _Context, where: _Where) -> Any:
        if value is None:
            return None
        return self.inner.parse(value, ctx, where)


@attrs.frozen
class _Choice(_Kind):
    """
    One word from a fixed list, matched without regard to case and stored in
    the case of the list.
    """

    choices: Tuple[str, ...]

    def describe(self) -> str:
        return "one of " + ", ".join(self.choices)

    def parse(self, value: Any, ctx: _Context, where: _Where) -> str:
        if isinstance(value, str):
            for choice in self.choices:
                if value.strip().lower() == choice.lower():
                    return choice
        raise self.reject(value)


@attrs.frozen
class _ChoiceSet(_Kind):
    """
    Several words from a fixed list joined by C{separator}; stored in the
    list's order without repeats, so consumers compare one canonical string.
    """

    choices: Tuple[str, ...]
    separator: str = ","

    def describe(self) -> str:
        return (
            f"one or more of {', '.join(self.choices)} "
            f"separated by '{self.separator}'"
        )

    def parse(self, value: Any, ctx: _Context, where: _Where) -> str:
        if not isinstance(value, str):
            raise self.reject(value)
        words = {word.strip().lower() for word in value.split(self.separator)}
        known = {choice.lower(): choice for choice in self.choices}
        if not words <= set(known):
            raise self.reject(value)
        return self.separator.join(c for c in self.choices if c.lower() in words)


@attrs.frozen
class _AddressList(_Kind):
    """
    C{listen_addresses}: C{*}, C{''} or a comma-separated list of host names
    and addresses, stored with the spaces around commas removed.
    """

    def describe(self) -> str:
        return (
            "'*' (all interfaces), '' (no TCP) or a comma-separated list of "
            "host names and IP addresses"
        )

    def parse(self, value: Any, ctx: _Context, where: _Where) -> str:
        if not isinstance(value, str):
            raise self.reject(value)
        if not value.strip():
            return ""
        items = [item.strip() for item in value.split(",")]
        if any(not item or any(c.isspace() for c in item) for item in items):
            raise self.reject(value)
        return ",".join(items)


@attrs.frozen
class _Path(_Kind):
    """
    A file name, made absolute against the configuration file's directory.

    @ivar allow_empty: Whether C{''} (the feature is off) is accepted.
    @ivar must_exist_unless_default: A file the user named explicitly must
        exist (a typo should not silently mean "no file"); a missing file at
        the default place is fine and means an empty file.
    @ivar default_name: The field's default, to recognise that place.
    """

    allow_empty: bool = False
    must_exist_unless_default: bool = False
    default_name: str = ""

    def describe(self) -> str:
        empty = " or '' to turn it off" if self.allow_empty else ""
        return f"a file path{empty}"

    def resolve(self, name: str, ctx: _Context) -> str:
        return os.path.normpath(os.path.join(ctx.base_dir, name))

    def parse(self, value: Any, ctx: _Context, where: _Where) -> str:
        if not isinstance(value, str) or not (self.allow_empty or value):
            raise self.reject(value)
        if not value:
            return ""
        path = self.resolve(value, ctx)
        if (
            self.must_exist_unless_default
            and path != self.resolve(self.default_name, ctx)
            and not os.path.exists(path)
        ):
            raise _Invalid(f"file {path} does not exist")
        return path

    def default(self, value: Any, ctx: _Context) -> Any:
        return self.resolve(value, ctx) if value else value


_FAILOVER_FLAGS = ("ALLOW_TO_FAILOVER", "DISALLOW_TO_FAILOVER", "ALWAYS_PRIMARY")
_FLAG_ALIASES = {"ALWAYS_MASTER": "ALWAYS_PRIMARY"}


@attrs.frozen
class _FailoverFlags(_Kind):
    """
    C{backend_flag}: C{|}-separated flags, stored canonically (implied
    C{ALLOW_TO_FAILOVER} spelled out, aliases replaced, fixed order) so that
    equal meanings compare equal.
    """

    def describe(self) -> str:
        return "flags from " + ", ".join(_FAILOVER_FLAGS) + " separated by '|'"

    def parse(self, value: Any, ctx: _Context, where: _Where) -> str:
        if not isinstance(value, str):
            raise self.reject(value)
        flags = set()
        for word in value.split("|"):
            flag = word.strip().upper()
            if flag in _FLAG_ALIASES:
                log.warn(
                    "{source}:{line}: {key}: {old} is the old name of {new}",
                    source=ctx.source,
                    line=where.line,
                    key=where.path,
                    old=flag,
                    new=_FLAG_ALIASES[flag],
                )
                flag = _FLAG_ALIASES[flag]
            if flag not in _FAILOVER_FLAGS:
                raise self.reject(value)
            flags.add(flag)
        if {"ALLOW_TO_FAILOVER", "DISALLOW_TO_FAILOVER"} <= flags:
            raise _Invalid(
                "ALLOW_TO_FAILOVER and DISALLOW_TO_FAILOVER cannot both be set, "
                f"got {_show(value)}"
            )
        if "DISALLOW_TO_FAILOVER" not in flags:
            flags.add("ALLOW_TO_FAILOVER")
        return "|".join(flag for flag in _FAILOVER_FLAGS if flag in flags)


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
    check: Optional[
        Callable[[Sequence[Any], Callable[[int, str], _Where], _Context], None]
    ] = None

    def describe(self) -> str:
        return (
            f"a list of {self.minimum} to {self.maximum} mappings with the keys "
            + ", ".join(_settings(self.cls))
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
                    f"expected a mapping of {', '.join(_settings(self.cls))}, "
                    f"got {_show(item)}",
                )
            items.append((item, line, _key_lines(item), _naming(prefix + ".", "")))
        return self.build_items(items, ctx, where)

    def build_items(
        self, items: Sequence[_Item], ctx: _Context, where: _Where
    ) -> Tuple[Any, ...]:
        if not self.minimum <= len(items) <= self.maximum:
            raise ctx.error(
                where,
                f"expected {self.minimum} to {self.maximum} entries, got {len(items)}",
            )
        built = tuple(
            _build(self.cls, item, ctx, name, line, lines)
            for item, line, lines, name in items
        )
        if self.check is not None:

            def place(index: int, key: str) -> _Where:
                item, line, lines, name = items[index]
                return _Where(name(key), lines.get(key, line))

            self.check(built, place, ctx)
        return built


# ---------------------------------------------------------------------------
# The model.

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
_SHOWN_UNITS = (("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0),
                ("ms", 0.001), ("us", 0.000001))


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


_PORT = _Integer(1, 65535)


@attrs.frozen
class BackendConfig:
    """
    One PostgreSQL server behind the proxy (Pgpool-II's C{backend_*N}).

    The position in L{PgpoolConfig.backends} is the node id.

    @ivar flag: Canonical C{|}-joined failover flags, e.g.
        C{ALLOW_TO_FAILOVER|ALWAYS_PRIMARY}; use the properties to ask.
    """

    hostname: str = attrs.field(
        metadata=_kind(
            _Text(
                allow_empty=False,
                what="a host name, IP address or Unix socket directory",
            ),
            START,
        )
    )
    port: int = attrs.field(default=5432, metadata=_kind(_PORT, START))
    weight: float = attrs.field(default=1.0, metadata=_kind(_Number(0.0), RELOAD))
    flag: str = attrs.field(default="ALLOW_TO_FAILOVER", metadata=_kind(_FailoverFlags(), RELOAD))
    data_directory: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    application_name: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    # Per-node health check overrides (Pgpool-II's health_check_periodN...);
    # None means the global setting.
    health_check_period: Optional[float] = attrs.field(
        default=None, metadata=_kind(_Optional(_Duration("s")), RELOAD))
    health_check_timeout: Optional[float] = attrs.field(
        default=None, metadata=_kind(_Optional(_Duration("s")), RELOAD))
    health_check_max_retries: Optional[int] = attrs.field(
        default=None, metadata=_kind(_Optional(_Integer(0, 2**31 - 1)), RELOAD))
    health_check_retry_delay: Optional[float] = attrs.field(
        default=None, metadata=_kind(_Optional(_Duration("s")), RELOAD))

    @property
    def flags(self) -> FrozenSet[str]:
        """
        The flag names, for code that builds a L{BackendConfig} by hand with
        a non-canonical L{flag}.
        """
        return frozenset(
            _FLAG_ALIASES.get(word.strip().upper(), word.strip().upper())
            for word in self.flag.split("|")
        )

    @property
    def always_primary(self) -> bool:
        """
        Treat this node as the primary without asking it (fixed endpoints
        such as Aurora's), skipping primary detection.
        """
        return "ALWAYS_PRIMARY" in self.flags

    @property
    def allow_to_failover(self) -> bool:
        """
        Whether this proxy may detach the node when it fails; false when an
        external HA tool owns failover.
        """
        return "DISALLOW_TO_FAILOVER" not in self.flags


def _at_most_one_always_primary(
    backends: Sequence[BackendConfig],
    place: Callable[[int, str], _Where],
    ctx: _Context,
) -> None:
    """
    Two fixed primaries would make every write's destination a guess.
    """
    first: Optional[int] = None
    for index, backend in enumerate(backends):
        if backend.always_primary:
            if first is not None:
                raise ctx.error(
                    place(index, "flag"),
                    f"ALWAYS_PRIMARY is already set in {place(first, 'flag').path}; "
                    "at most one backend may be ALWAYS_PRIMARY",
                )
            first = index


_MAX_BACKENDS = 128
_DEFAULT_POOL_HBA_FILE = "pool_hba.conf"
_DEFAULT_POOL_PASSWD = "pool_passwd"
_LOG_LEVELS = (
    "debug5",
    "debug4",
    "debug3",
    "debug2",
    "debug1",
    "info",
    "notice",
    "warning",
    "error",
    "log",
    "fatal",
    "panic",
)


@attrs.frozen(kw_only=True)
class PgpoolConfig:
    """
    The whole configuration, as read from one file.

    Field names are the keys users write; see C{docs/configuration.md} for
    their meaning. Durations are float seconds and sizes are bytes, whatever
    unit the user wrote. Paths are absolute.

    @ivar source: The file this was read from (C{<dict>} when built by
        L{config_from_dict} without a name); not a setting.
    @ivar overrides: Settings given on the command line in place of the
        file's (C{-a pool_hba.conf}, C{-F pcp.conf}), as C{(key, value)}
        pairs; a reload reads the file with them again.  Not a setting.
    """

    listen_addresses: str = attrs.field(default="localhost", metadata=_kind(_AddressList(), START))
    port: int = attrs.field(default=9999, metadata=_kind(_PORT, START))
    backends: Tuple[BackendConfig, ...] = attrs.field(
        metadata=_kind(
            _Nested(BackendConfig, 1, _MAX_BACKENDS, _at_most_one_always_primary),
            # Nodes may be added at the end; see twisted_pgpool.admin.reload.
            RELOAD,
        )
    )
    enable_pool_hba: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    pool_hba_file: str = attrs.field(
        default=_DEFAULT_POOL_HBA_FILE, metadata=_kind(_Path(), RELOAD)
    )
    pool_passwd: str = attrs.field(
        default=_DEFAULT_POOL_PASSWD,
        metadata=_kind(
            _Path(
                allow_empty=True,
                must_exist_unless_default=True,
                default_name=_DEFAULT_POOL_PASSWD,
            ),
            START,
        ),
    )
    allow_clear_text_frontend_auth: bool = attrs.field(
        default=False, metadata=_kind(_Boolean(), RELOAD)
    )
    authentication_timeout: float = attrs.field(
        default=60.0, metadata=_kind(_Duration("s"), RELOAD)
    )
    # Connections not yet authenticated hold no session slot; this bounds
    # them instead (docs/pooling.md, "Clients that never authenticate").
    max_unauthenticated_clients: int = attrs.field(
        default=256, metadata=_kind(_Integer(1, 1000000), RELOAD)
    )
    # TLS to clients and to backends, one switch as in Pgpool-II (docs/tls.md).
    ssl: bool = attrs.field(default=False, metadata=_kind(_Boolean(), START))
    ssl_key: str = attrs.field(default="server.key", metadata=_kind(_Path(), START))
    ssl_cert: str = attrs.field(default="server.crt", metadata=_kind(_Path(), START))
    ssl_ca_cert: str = attrs.field(default="", metadata=_kind(_Path(allow_empty=True), START))
    ssl_ca_cert_dir: str = attrs.field(
        default="", metadata=_kind(_Path(allow_empty=True), START))
    ssl_crl_file: str = attrs.field(
        default="", metadata=_kind(_Path(allow_empty=True), START))
    ssl_ciphers: str = attrs.field(
        default="HIGH:MEDIUM:+3DES:!aNULL", metadata=_kind(_Text(allow_empty=False), START))
    ssl_prefer_server_ciphers: bool = attrs.field(
        default=False, metadata=_kind(_Boolean(), START))
    ssl_ecdh_curve: str = attrs.field(
        default="prime256v1", metadata=_kind(_Text(allow_empty=False), START))
    ssl_dh_params_file: str = attrs.field(
        default="", metadata=_kind(_Path(allow_empty=True), START))
    connect_timeout: float = attrs.field(default=10.0, metadata=_kind(_Duration("ms"), RELOAD))
    max_message_length: int = attrs.field(
        default=1073741823, metadata=_kind(_Size(10000, 2**31 - 1), RELOAD)
    )
    # The longest client message read whole (docs/protocol.md, "Limits").
    max_buffered_message_length: int = attrs.field(
        default=16 * 1024 * 1024, metadata=_kind(_Size(10000, 2**31 - 1), RELOAD)
    )
    # Latency: spin before sleeping (docs/performance.md, "Busy polling").
    busy_poll_time: float = attrs.field(default=0.0, metadata=_kind(_Duration("us"), RELOAD))
    log_destination: str = attrs.field(
        default="stderr", metadata=_kind(_ChoiceSet(("stderr", "syslog")), RELOAD)
    )
    syslog_facility: str = attrs.field(
        default="LOCAL0",
        metadata=_kind(_Choice(tuple(f"LOCAL{n}" for n in range(8))), RELOAD),
    )
    syslog_ident: str = attrs.field(
        default="pgpool", metadata=_kind(_Text(allow_empty=False), RELOAD)
    )
    log_min_messages: str = attrs.field(
        default="warning", metadata=_kind(_Choice(_LOG_LEVELS), RELOAD)
    )
    log_connections: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    log_disconnections: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    log_statement: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    log_per_node_statement: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    # Connection pooling and limiting exceeding connections (docs/pooling.md).
    connection_cache: bool = attrs.field(default=True, metadata=_kind(_Boolean(), START))
    max_pool: int = attrs.field(default=4, metadata=_kind(_Integer(1, 10000), START))
    num_init_children: int = attrs.field(default=32, metadata=_kind(_Integer(1, 100000), START))
    listen_backlog_multiplier: int = attrs.field(
        default=2, metadata=_kind(_Integer(0, 1000), START)
    )
    reserved_connections: int = attrs.field(default=0, metadata=_kind(_Integer(0, 100000), START))
    client_queue_timeout: float = attrs.field(default=60.0, metadata=_kind(_Duration("s"), RELOAD))
    connection_life_time: float = attrs.field(default=0.0, metadata=_kind(_Duration("s"), START))
    child_life_time: float = attrs.field(default=300.0, metadata=_kind(_Duration("s"), START))
    child_max_connections: int = attrs.field(
        default=0, metadata=_kind(_Integer(0, 2**31 - 1), START)
    )
    client_idle_limit: float = attrs.field(default=0.0, metadata=_kind(_Duration("s"), RELOAD))
    reset_query_list: str = attrs.field(
        default="ABORT; DISCARD ALL", metadata=_kind(_Text(), RELOAD)
    )
    # Not Pgpool-II's: a reset that does not answer marks a connection
    # whose state is unknown; closed instead of waited on (docs/pooling.md).
    reset_timeout: float = attrs.field(default=10.0, metadata=_kind(_Duration("s"), START))
    # Clustering mode and load balancing (docs/routing.md).
    backend_clustering_mode: str = attrs.field(
        default="streaming_replication",
        metadata=_kind(_Choice(("streaming_replication", "native_replication", "raw")),
                       START),
    )
    # Native replication mode only (docs/routing.md, "Native replication mode").
    replication_stop_on_mismatch: bool = attrs.field(
        default=False, metadata=_kind(_Boolean(), RELOAD)
    )
    failover_if_affected_tuples_mismatch: bool = attrs.field(
        default=False, metadata=_kind(_Boolean(), RELOAD)
    )
    replicate_select: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    insert_lock: bool = attrs.field(default=True, metadata=_kind(_Boolean(), RELOAD))
    load_balance_mode: bool = attrs.field(default=True, metadata=_kind(_Boolean(), START))
    statement_level_load_balance: bool = attrs.field(
        default=False, metadata=_kind(_Boolean(), RELOAD)
    )
    disable_load_balance_on_write: str = attrs.field(
        default="transaction",
        metadata=_kind(_Choice(("off", "transaction", "trans_transaction", "always",
                                "dml_adaptive")), RELOAD),
    )
    dml_adaptive_object_relationship_list: Tuple[str, ...] = attrs.field(
        default=(), metadata=_kind(_TextList(), RELOAD)
    )
    write_function_list: Tuple[str, ...] = attrs.field(
        default=(), metadata=_kind(_TextList(regex=True), RELOAD)
    )
    read_only_function_list: Tuple[str, ...] = attrs.field(
        default=(), metadata=_kind(_TextList(regex=True), RELOAD)
    )
    primary_routing_query_pattern_list: Tuple[str, ...] = attrs.field(
        default=(), metadata=_kind(_TextList(regex=True), RELOAD)
    )
    database_redirect_preference_list: str = attrs.field(
        default="", metadata=_kind(_Text(), RELOAD))
    app_name_redirect_preference_list: str = attrs.field(
        default="", metadata=_kind(_Text(), RELOAD))
    user_redirect_preference_list: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    allow_sql_comments: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    ignore_leading_white_space: bool = attrs.field(
        default=True, metadata=_kind(_Boolean(), RELOAD))
    # The relation cache: catalog facts routing looks up (docs/routing.md).
    check_unlogged_table: bool = attrs.field(default=True, metadata=_kind(_Boolean(), RELOAD))
    relcache_expire: float = attrs.field(default=0.0, metadata=_kind(_Duration("s"), START))
    relcache_size: int = attrs.field(
        default=256, metadata=_kind(_Integer(10, 2**31 - 1), START))
    # Read-your-writes under load balancing (docs/routing.md).
    read_your_writes: str = attrs.field(
        default="session", metadata=_kind(_Choice(("off", "session")), RELOAD))
    causal_wait_timeout: float = attrs.field(
        default=0.0, metadata=_kind(_Duration("ms"), RELOAD))
    # In-memory query cache (docs/query-cache.md).
    memory_cache_enabled: bool = attrs.field(default=False, metadata=_kind(_Boolean(), START))
    memqcache_method: str = attrs.field(
        default="shmem", metadata=_kind(_Choice(("shmem", "memcached")), START))
    memqcache_memcached_host: str = attrs.field(
        default="localhost", metadata=_kind(_Text(allow_empty=False), START))
    memqcache_memcached_port: int = attrs.field(
        default=11211, metadata=_kind(_Integer(1, 65535), START))
    memqcache_total_size: int = attrs.field(
        default=64 * 1024 * 1024, metadata=_kind(_Size(1024, 2**40), START))
    memqcache_max_num_cache: int = attrs.field(
        default=1000000, metadata=_kind(_Integer(1, 2**31 - 1), START))
    memqcache_expire: float = attrs.field(default=0.0, metadata=_kind(_Duration("s"), START))
    memqcache_maxcache: int = attrs.field(
        default=400 * 1024, metadata=_kind(_Size(0, 2**31 - 1), START))
    memqcache_auto_cache_invalidation: bool = attrs.field(
        default=True, metadata=_kind(_Boolean(), RELOAD))
    cache_safe_memqcache_table_list: Tuple[str, ...] = attrs.field(
        default=(), metadata=_kind(_TextList(regex=True), RELOAD))
    cache_unsafe_memqcache_table_list: Tuple[str, ...] = attrs.field(
        default=(), metadata=_kind(_TextList(regex=True), RELOAD))
    # Streaming replication check (docs/routing.md).
    sr_check_period: float = attrs.field(default=10.0, metadata=_kind(_Duration("s"), RELOAD))
    sr_check_user: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    sr_check_password: str = _secret_setting(_Text(), RELOAD)
    sr_check_database: str = attrs.field(
        default="postgres", metadata=_kind(_Text(allow_empty=False), RELOAD))
    delay_threshold: int = attrs.field(default=0, metadata=_kind(_Size(0, 2**62), RELOAD))
    delay_threshold_by_time: float = attrs.field(
        default=0.0, metadata=_kind(_Duration("ms"), RELOAD))
    prefer_lower_delay_standby: bool = attrs.field(
        default=False, metadata=_kind(_Boolean(), RELOAD))
    log_standby_delay: str = attrs.field(
        default="if_over_threshold",
        metadata=_kind(_Choice(("none", "always", "if_over_threshold")), RELOAD),
    )
    # Health check (docs/failover.md).
    health_check_period: float = attrs.field(default=0.0, metadata=_kind(_Duration("s"), RELOAD))
    health_check_timeout: float = attrs.field(default=20.0, metadata=_kind(_Duration("s"), RELOAD))
    health_check_user: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    health_check_password: str = _secret_setting(_Text(), RELOAD)
    health_check_database: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    health_check_max_retries: int = attrs.field(
        default=0, metadata=_kind(_Integer(0, 2**31 - 1), RELOAD))
    health_check_retry_delay: float = attrs.field(
        default=1.0, metadata=_kind(_Duration("s"), RELOAD))
    # Failover and failback (docs/failover.md).
    failover_command: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    failback_command: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    follow_primary_command: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    failover_command_timeout: float = attrs.field(
        default=60.0, metadata=_kind(_Duration("s"), RELOAD))
    failover_on_backend_error: bool = attrs.field(default=True, metadata=_kind(_Boolean(), RELOAD))
    failover_on_backend_shutdown: bool = attrs.field(
        default=False, metadata=_kind(_Boolean(), RELOAD))
    search_primary_node_timeout: float = attrs.field(
        default=300.0, metadata=_kind(_Duration("s"), RELOAD))
    primary_wait_timeout: float = attrs.field(default=10.0, metadata=_kind(_Duration("s"), RELOAD))
    auto_failback: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    auto_failback_interval: float = attrs.field(
        default=60.0, metadata=_kind(_Duration("s"), RELOAD))
    detach_false_primary: bool = attrs.field(default=False, metadata=_kind(_Boolean(), RELOAD))
    # Online recovery (docs/recovery.md).
    recovery_user: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    recovery_password: str = _secret_setting(_Text(), RELOAD)
    recovery_database: str = attrs.field(
        default="postgres", metadata=_kind(_Text(allow_empty=False), RELOAD))
    recovery_1st_stage_command: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    recovery_2nd_stage_command: str = attrs.field(default="", metadata=_kind(_Text(), RELOAD))
    recovery_timeout: float = attrs.field(default=90.0, metadata=_kind(_Duration("s"), RELOAD))
    client_idle_limit_in_recovery: int = attrs.field(
        default=0, metadata=_kind(_Integer(-1, 2**31 - 1), RELOAD))
    logdir: str = attrs.field(default="/tmp", metadata=_kind(_Path(), START))
    # Administration (docs/administration.md).
    pcp_listen_addresses: str = attrs.field(
        default="localhost", metadata=_kind(_AddressList(), START))
    pcp_port: int = attrs.field(default=9898, metadata=_kind(_Integer(0, 65535), START))
    pcp_socket_dir: str = attrs.field(default="", metadata=_kind(_Text(), START))
    pcp_conf_file: str = attrs.field(
        default="pcp.conf", metadata=_kind(_Path(allow_empty=True), RELOAD))
    # Metrics for Prometheus (docs/metrics.md); off unless addresses are given.
    metrics_listen_addresses: str = attrs.field(default="", metadata=_kind(_AddressList(), START))
    metrics_port: int = attrs.field(default=9719, metadata=_kind(_PORT, START))
    # Live inspection with a Python prompt (docs/administration.md); off
    # unless an endpoint is given; checked by twisted_pgpool.admin.manhole.
    manhole_endpoint: str = attrs.field(
        default="", metadata=_kind(_Text(what="a server endpoint description such as "
                                          "tcp:6022:interface=127.0.0.1"), START))
    manhole_protocol: str = attrs.field(
        default="ssh", metadata=_kind(_Choice(("ssh", "telnet")), START))
    manhole_passwd_file: str = attrs.field(
        default="", metadata=_kind(_Path(allow_empty=True), START))
    manhole_ssh_key_dir: str = attrs.field(default=".", metadata=_kind(_Path(), START))
    source: str = "<dict>"
    overrides: Tuple[Tuple[str, Any], ...] = ()

    @property
    def reset_queries(self) -> Tuple[str, ...]:
        """
        C{reset_query_list} split into its statements.
        """
        return tuple(q.strip() for q in self.reset_query_list.split(";") if q.strip())


def _check_pool_hba_file(
    config: PgpoolConfig, place: Callable[[str], _Where], ctx: _Context
) -> None:
    """
    With pool_hba on, a missing file would reject every client; say so now.
    """
    if config.enable_pool_hba and not os.path.isfile(config.pool_hba_file):
        where = place("pool_hba_file")
        if where.line is None:
            where = place("enable_pool_hba")
        raise ctx.error(
            where,
            f"enable_pool_hba is on but the pool_hba_file {config.pool_hba_file} "
            "does not exist",
        )


def _check_reserved_connections(
    config: PgpoolConfig, place: Callable[[str], _Where], ctx: _Context
) -> None:
    """
    C{reserved_connections} is taken from C{num_init_children}: at least
    one session must remain.
    """
    if config.reserved_connections >= config.num_init_children:
        raise ctx.error(
            place("reserved_connections"),
            f"reserved_connections ({config.reserved_connections}) must be less "
            f"than num_init_children ({config.num_init_children})",
        )


class SettingError(Exception):
    """
    What a feature's check (L{register_check}) raises for a setting it
    refuses; the loader reports it at the setting's line.

    @ivar key: the configuration key at fault.
    @ivar reason: what is wrong, readable on its own.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


#: The checks features registered with L{register_check}, by switch.
_feature_checks: Dict[str, Tuple[Callable[["PgpoolConfig"], object], Type[SettingError]]] = {}


def register_check(switch: str, check: Callable[["PgpoolConfig"], object],
                   error: Type[SettingError]) -> None:
    """
    Have the loader run a feature's own check of its settings, so that a
    mistake is reported with the file and line of the setting rather than
    when the service is built (or, for TLS, at the first client's handshake).

    The features whose settings the model alone cannot judge (TLS files
    tried on OpenSSL, a manhole others could reach) register here when
    their module is imported -- L{twisted_pgpool.net.tls},
    L{twisted_pgpool.admin.manhole} -- so that this module imports none of
    them.  Whoever loads a configuration for a proxy imports them first:
    the service wiring (and so the twistd plugin, the C{twisted-pgpool}
    command and the reloader) and the package's L{twisted_pgpool.load_config}
    and L{twisted_pgpool.config_from_dict}.  The checks run in the order of
    their switches in L{PgpoolConfig}.

    @param switch: the setting that turns the feature on; an error about a
        setting left at its default is reported at the switch's line.
    @param check: called with each configuration loaded; does nothing when
        the feature is off.
    @param error: what C{check} raises for a setting it refuses.
    """
    _feature_checks[switch] = (check, error)


def _check_features(
    config: PgpoolConfig, place: Callable[[str], _Where], ctx: _Context
) -> None:
    """
    Run the checks features registered (L{register_check}).
    """
    order = {name: i for i, name in enumerate(attrs.fields_dict(PgpoolConfig))}
    for switch in sorted(_feature_checks, key=order.__getitem__):
        check, error = _feature_checks[switch]
        try:
            check(config)
        except error as e:
            raise _setting_error(e.key, e.reason, switch, place, ctx) from None


def _setting_error(key: str, reason: str, switch: str,
                   place: Callable[[str], _Where], ctx: _Context) -> ConfigError:
    """
    The error for a setting a feature's own check refused, at the line of
    that setting; for a default the user never wrote, at the line of the
    setting that turned the feature on (C{switch}).
    """
    where = place(key)
    if where.line is None:
        where = _Where(key, place(switch).line)
    return ctx.error(where, reason)


# ---------------------------------------------------------------------------
# The generic loader.


def _settings(cls: Type[Any]) -> Dict[str, _Kind]:
    """
    The user settings of an attrs class, in field order, with their kinds.
    """
    return {
        field.name: field.metadata[_KIND]
        for field in attrs.fields(cls)
        if _KIND in field.metadata
    }


def _key_lines(mapping: Any) -> Mapping[Any, int]:
    return getattr(mapping, "key_lines", {})


#: How alike (difflib's ratio) a known key must be to be suggested: 0.75
#: offers port for prot and health_check_period for health_check_perod, and
#: nothing for bogus_key (ssl_key is 0.625).
_SUGGESTION_CUTOFF = 0.75
#: Longer lists of allowed keys are left to docs/configuration.md.
_LISTED_KEYS = 12


def _unknown_key(
    key: Any, allowed: Sequence[str], candidates: Sequence[str], also: str
) -> str:
    """
    One short line: a suggestion when a known key is close (in any case),
    and the allowed keys only when there are few of them.
    """
    by_lower = {candidate.lower(): candidate for candidate in candidates}
    close = difflib.get_close_matches(
        str(key).lower(), list(by_lower), n=1, cutoff=_SUGGESTION_CUTOFF)
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
                    reason = (f"expected {kind.describe()}, got "
                              f"{_show_type(raw[field.name])} (the value of a "
                              "secret setting is not shown)")
                raise ctx.error(where, reason) from None
        elif field.default is attrs.NOTHING:
            raise ctx.error(where, f"missing; expected {kind.describe()}")
        else:
            values[field.name] = kind.default(field.default, ctx)
    values.update(given)
    return cls(**values)


# Pgpool-II's spelling, backend_portN etc., for configs ported from pgpool.conf;
# the per-node health check settings are health_check_periodN there (the
# backend_health_check_periodN spelling is accepted too).
_PER_NODE_HEALTH_CHECK = ("health_check_period", "health_check_timeout",
                          "health_check_max_retries", "health_check_retry_delay")
_NUMBERED = re.compile(
    r"(?:backend_(%s)|(%s))(0|[1-9][0-9]*)\Z"
    % ("|".join(sorted(_settings(BackendConfig), key=len, reverse=True)),
       "|".join(_PER_NODE_HEALTH_CHECK))
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
            raise ctx.error(_Where(key, lines.get(key)),
                            f"already given as {written[setting]}")
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

        def name(setting: str, written: Dict[str, str] = written,
                 number: int = number) -> str:
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
            where, "use either backend_clustering_mode or the older "
            "master_slave_mode/replication_mode spelling, not both")
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
            "replication_mode and master_slave_mode cannot both be on")
    if master_slave and sub_mode not in ("stream", "logical"):
        raise ctx.error(
            _Where("master_slave_sub_mode", lines.get("master_slave_sub_mode")),
            f"expected stream or logical, got {_show(sub_mode)}")
    converted = {k: v for k, v in data.items() if k not in LEGACY_MODE_KEYS}
    converted["backend_clustering_mode"] = "native_replication" if replication else \
        "streaming_replication" if master_slave else "raw"
    if isinstance(data, _LineDict) or hasattr(data, "key_lines"):
        result = _LineDict(converted)
        result.key_lines = dict(_key_lines(data))
        result.key_lines.setdefault("backend_clustering_mode", where.line or 0)
        return result
    return converted


def config_from_dict(
    data: Mapping[Any, Any], source: str = "<dict>", base_dir: Optional[str] = None,
    warnings: Optional[List[ConfigWarning]] = None,
) -> PgpoolConfig:
    """
    Build a configuration from already-parsed data, checking it exactly as
    L{load_config} does; for applications that embed the proxy and keep
    their settings elsewhere.

    @param data: Keys and values as they would appear in C{conf.yaml}.
    @param source: The name shown in error messages and kept in
        L{PgpoolConfig.source}.
    @param base_dir: Directory for relative paths; the current directory
        when omitted (captured now, so a later C{chdir} does not matter).
    @param warnings: Receives a L{ConfigWarning} for each Pgpool-II
        parameter that does not apply here (and each old name), also when
        an error is raised; when omitted they are logged.
    @raise ConfigError: If anything is missing, unknown or out of range.
    """
    ctx = _Context(source, os.path.abspath(base_dir if base_dir is not None else "."))
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"expected a mapping of setting names to values, got {_show(data)}",
            source=source,
        )
    found: List[ConfigWarning] = []
    try:
        data = _sort_out_pgpool_names(data, source, found)
    finally:
        _deliver(found, warnings)
    lines = _key_lines(data)
    data = _resolve_legacy_mode(data, lines, ctx)
    numbered = [key for key in data if _numbered_key(key)]
    raw = {key: value for key, value in data.items() if key not in numbered}
    given: Dict[str, Any] = {"source": source}
    if numbered:
        if "backends" in raw:
            raise ctx.error(
                _Where(numbered[0], lines.get(numbered[0])),
                "numbered backend keys cannot be mixed with a backends list; "
                "use one spelling",
            )
        backends_kind = cast(_Nested, _settings(PgpoolConfig)["backends"])
        given["backends"] = backends_kind.build_items(
            _numbered_backends(data, lines, ctx), ctx, _Where("backends", None)
        )
    numbers = {
        match.group(1)
        for match in (_TRAILING_NUMBER.search(str(key)) for key in raw)
        if match
    }
    candidates = [
        _numbered_spelling(sub, int(number))
        for number in numbers for sub in _settings(BackendConfig)
    ]
    config: PgpoolConfig = _build(
        PgpoolConfig,
        raw,
        ctx,
        lambda key: key,
        None,
        lines,
        given,
        candidates,
        " (or backend_hostname0-style numbered backend keys)",
    )
    _check_pool_hba_file(config, lambda key: _Where(key, lines.get(key)), ctx)
    _check_reserved_connections(config, lambda key: _Where(key, lines.get(key)), ctx)
    _check_features(config, lambda key: _Where(key, lines.get(key)), ctx)
    return config


# ---------------------------------------------------------------------------
# YAML with line numbers.


class _LineDict(Dict[Any, Any]):
    """
    A YAML mapping that remembers the line of each key.
    """

    key_lines: Dict[Any, int]


class _LineList(List[Any]):
    """
    A YAML sequence that remembers the line of each item.
    """

    item_lines: List[int]


class _LineLoader(yaml.SafeLoader):
    """
    A safe loader whose mappings and sequences carry line numbers, and which
    refuses duplicate keys (YAML would silently keep the last one, hiding a
    setting the user believes is in effect).
    """

    def construct_line_mapping(self, node: Any) -> Iterator[_LineDict]:
        data = _LineDict()
        yield data
        seen: Set[str] = set()
        for key_node, _ in node.value:
            if (
                isinstance(key_node, yaml.ScalarNode)
                and key_node.tag != "tag:yaml.org,2002:merge"
            ):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        self.flatten_mapping(node)
        data.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=False)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain word", key_node.start_mark
                )
            data[key] = self.construct_object(value_node, deep=False)
            data.key_lines[key] = key_node.start_mark.line + 1

    def construct_line_sequence(self, node: Any) -> Iterator[_LineList]:
        data = _LineList()
        yield data
        data.extend(self.construct_sequence(node))
        data.item_lines = [child.start_mark.line + 1 for child in node.value]


_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader.construct_line_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _LineLoader.construct_line_sequence)


def _yaml_error(error: yaml.YAMLError, text: str, source: str) -> ConfigError:
    """
    One line from PyYAML's multi-line report, with a hint for the most common
    slip (an unquoted C{*}, which YAML reads as an alias).
    """
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is None:
        return ConfigError(f"invalid YAML: {problem}", source=source)
    reason = f"invalid YAML: {problem}"
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    key = _LINE_KEY.match(line)
    if key is not None and _names_a_secret(key.group(1)):
        # PyYAML quotes part of the value in some problems ("found
        # undefined alias 's3cret'" for a password starting with '*').
        reason = ("invalid YAML in the value of a secret setting (not shown); "
                  "write the value in quotes")
    elif re.search(r":\s*\*\s*(#.*)?$", line):
        reason += "; write '*' in quotes"
    return ConfigError(reason, source=source, line=mark.line + 1)


# The key at the start of a YAML line, also as an item of a list.
_LINE_KEY = re.compile(r"\s*(?:-\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*:")


def _names_a_secret(key: str) -> bool:
    """
    Whether C{key}, the first word of a YAML line, names a secret setting:
    a top-level one, one in a C{backends} item, or a backend's in the
    numbered spelling (C{backend_<name>0}).
    """
    names = {name.rsplit(".", 1)[-1] for name in secret_settings()}
    numbered = _numbered_key(key)
    return key in names or (numbered is not None and numbered[0] in names)


def load_config(
    path: str,
    warnings: Optional[List[ConfigWarning]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
) -> PgpoolConfig:
    """
    Read and check a C{conf.yaml}, or Pgpool-II's own C{pgpool.conf}.

    A file named C{*.conf}, or one whose first setting is C{name = value},
    is read as a C{pgpool.conf} (L{twisted_pgpool.config.pgpool_conf}); C{*.yaml},
    C{*.yml} and anything else as YAML.

    @param path: The file; relative paths inside it are resolved against its
        directory, and it is named as given in error messages.
    @param warnings: Receives a L{ConfigWarning} for each setting that is
        read but not used (see L{config_from_dict}), also when an error is
        raised; when omitted they are logged.
    @param overrides: Settings that replace the file's, from the command
        line (C{pool_hba_file}, C{pcp_conf_file}); kept in
        L{PgpoolConfig.overrides}.
    @raise ConfigError: If the file cannot be read, is not valid YAML (or
        C{pgpool.conf}), or holds an unknown key or an unusable value.
    """
    text = _read_text(path)
    found: List[ConfigWarning] = []
    try:
        pgpool_conf = _is_pgpool_conf(path, text)
        if pgpool_conf:
            document: Any = _read_pgpool_conf(text, path, found)
        else:
            document = _read_yaml(text, path)
        if overrides:
            lines = _key_lines(document)
            document = _LineDict({**document, **overrides})
            document.key_lines = {key: line for key, line in lines.items()
                                  if key not in overrides}
        try:
            config = config_from_dict(
                document, source=path, base_dir=os.path.dirname(os.path.abspath(path)),
                warnings=found)
        except ConfigError as e:
            if pgpool_conf and e.key == "backends" and e.reason.startswith("missing"):
                # "backends: missing; expected a list of mappings" would
                # speak YAML to a pgpool.conf user.
                raise ConfigError(
                    "no backend is configured: set backend_hostname0 and "
                    "backend_port0 to the first PostgreSQL server", source=path) from None
            raise
    finally:
        _deliver(found, warnings)
    if overrides:
        config = attrs.evolve(config, overrides=tuple(sorted(overrides.items())))
    return config


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(
            f"cannot read the configuration file: {e.strerror or e}", source=path
        ) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"not UTF-8 text (bad byte at offset {e.start})", source=path
        ) from None


def _read_yaml(text: str, path: str) -> Mapping[Any, Any]:
    try:
        document = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as e:
        raise _yaml_error(e, text, path) from None
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise ConfigError(
            f"expected a mapping of setting names to values, got {_show(document)}",
            source=path,
            line=1,
        )
    return document


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


def setting_context(field: "attrs.Attribute[Any]") -> str:
    """
    When a change of this setting takes effect: L{RELOAD} or L{START}.  A
    setting nobody has classified yet counts as L{START}, the safe answer: a
    reload then keeps its value and says a restart is needed.
    """
    return field.metadata.get(_CONTEXT) or START


def unclassified_settings() -> Set[str]:
    """
    The keys (as L{documented_keys} spells them) whose field has no context
    yet; a test keeps this empty.
    """
    return {key for key, field in _setting_fields()
            if field.metadata.get(_CONTEXT) is None}


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


# ---------------------------------------------------------------------------
# Pgpool-II's pgpool.conf and parameter names (twisted_pgpool.config.pgpool_conf).


def _is_pgpool_conf(path: str, text: str) -> bool:
    """
    Whether to read C{path} as a C{pgpool.conf}: by its extension, else by
    its content.
    """
    extension = os.path.splitext(path)[1].lower()
    if extension in (".yaml", ".yml"):
        return False
    return extension == ".conf" or pgpoolconf.looks_like_pgpool_conf(text)


def _warning(note: pgpoolconf.Note, source: str) -> ConfigWarning:
    return ConfigWarning(note.message, source, note.line, note.key)


def _read_pgpool_conf(text: str, path: str, found: List[ConfigWarning]) -> "_LineDict":
    """
    A C{pgpool.conf} as the mapping with lines that YAML gives: every value
    is a string, which each setting's kind reads as it reads a YAML string.
    """
    try:
        _, settings, notes = pgpoolconf.read(text)
    except pgpoolconf.PgpoolConfError as e:
        raise ConfigError(e.reason, source=path, line=e.line, key=e.key) from None
    found.extend(_warning(note, path) for note in notes)
    document = _LineDict((key, value) for key, value, _ in settings)
    document.key_lines = {key: line for key, _, line in settings}
    return document


def _sort_out_pgpool_names(
    data: Mapping[Any, Any], source: str, found: List[ConfigWarning]
) -> Mapping[Any, Any]:
    """
    Drop the Pgpool-II parameters that do not apply here and rename the
    old ones (L{pgpoolconf.sort_out}), for a C{conf.yaml} as for a
    C{pgpool.conf}, with a warning each.
    """
    lines = _key_lines(data)
    kept, notes = pgpoolconf.sort_out(
        [(key, value, lines.get(key)) for key, value in data.items()], _our_names())
    found.extend(_warning(note, source) for note in notes)
    if not notes:
        return data
    result = _LineDict((key, value) for key, (value, _) in kept.items())
    result.key_lines = {key: line for key, (_, line) in kept.items() if line is not None}
    return result


def _our_names() -> Set[str]:
    return set(_settings(PgpoolConfig)) | set(LEGACY_MODE_KEYS)


def convert_pgpool_conf(path: str) -> Tuple[str, List[ConfigWarning]]:
    """
    The C{conf.yaml} form of a C{pgpool.conf}, comments included
    (L{pgpoolconf.to_yaml}), for C{twisted-pgpool convert}.

    @return: The YAML text, and a warning for each setting not carried
        over as it was written.
    @raise ConfigError: The file cannot be read or is not a valid
        C{pgpool.conf}.  Values are not checked here; L{load_config} does.
    """
    text = _read_text(path)
    try:
        lines, settings, notes = pgpoolconf.read(text)
    except pgpoolconf.PgpoolConfError as e:
        raise ConfigError(e.reason, source=path, line=e.line, key=e.key) from None
    _, more = pgpoolconf.sort_out(settings, _our_names())
    yaml_text = pgpoolconf.to_yaml(lines, notes + more, yaml_plain_keeps_value, path)
    found: List[ConfigWarning] = []
    _deliver([_warning(note, path) for note in notes + more], found)
    return yaml_text, found


def yaml_plain_keeps_value(key: str, text: str) -> bool:
    """
    Whether C{key: text}, unquoted in YAML, gives the setting the value the
    string C{text} gives it; for C{twisted-pgpool convert}, which writes
    C{port: 9999} and C{load_balance_mode: on} but C{sr_check_user: '123'}
    and C{read_your_writes: 'off'}.
    """
    try:
        loaded = yaml.safe_load(f"{key}: {text}\n")
    except yaml.YAMLError:
        return False
    if not isinstance(loaded, dict) or list(loaded) != [key]:
        return False
    value = loaded[key]
    if isinstance(value, str):
        return value == text
    numbered = _numbered_key(key)
    kinds = _settings(BackendConfig) if numbered else _settings(PgpoolConfig)
    kind = kinds.get(numbered[0] if numbered else key)
    if kind is None:
        return False
    ctx = _Context("<convert>", os.path.abspath("."))
    where = _Where(key, None)
    try:
        return bool(kind.parse(value, ctx, where) == kind.parse(text, ctx, where))
    except (_Invalid, ConfigError):
        return False
