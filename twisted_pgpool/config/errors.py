"""
How the configuration reports what is wrong with it: L{ConfigError} for a
setting that cannot be used, L{ConfigWarning} for one that is read but not
used as written, and the logging of warnings.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import attrs
from twisted.logger import Logger

# The namespace the configuration's warnings were always logged under
# (docs/configuration.md shows it), whichever module of the package logs.
log = Logger(namespace="twisted_pgpool.config")


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


def _deliver(found: Sequence[ConfigWarning], warnings: Optional[List[ConfigWarning]]) -> None:
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
        where = warning.source if warning.line is None else f"{warning.source}:{warning.line}"
        log.warn(
            "{where}: {key}: {reason}",
            where=where,
            source=warning.source,
            line=warning.line,
            key=warning.key,
            reason=warning.reason,
        )
