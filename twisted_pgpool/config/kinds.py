"""
Kinds: how one YAML value becomes one model value.

Each setting's attrs field carries a kind in its metadata
(L{twisted_pgpool.config.fields}): the object that turns the value a user
wrote into the model's value (units, ranges, allowed words) and says what it
expected when it cannot.  Also the place of a value (L{_Where}) and what
every kind may need while reading one document (L{_Context}), for the error
messages.
"""

from __future__ import annotations

import datetime
import math
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple

import attrs

from twisted_pgpool.config.errors import ConfigError, log

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
_BOOLEAN_WORDS = (
    ("true", True, 1),
    ("false", False, 1),
    ("yes", True, 1),
    ("no", False, 1),
    ("on", True, 2),
    ("off", False, 2),
    ("1", True, 1),
    ("0", False, 1),
)


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
            f"a duration such as 500ms, 30s or 5min (a bare number means {_UNIT_WORDS[self.unit]})"
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
        return f"one or more of {', '.join(self.choices)} separated by '{self.separator}'"

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
                f"ALLOW_TO_FAILOVER and DISALLOW_TO_FAILOVER cannot both be set, got {_show(value)}"
            )
        if "DISALLOW_TO_FAILOVER" not in flags:
            flags.add("ALLOW_TO_FAILOVER")
        return "|".join(flag for flag in _FAILOVER_FLAGS if flag in flags)
