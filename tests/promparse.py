"""
A strict reader of Prometheus' text exposition format (version 0.0.4), for
the tests of the metrics endpoint.

Stricter than Prometheus on purpose: every metric must be declared with
C{# TYPE} before its samples, and the file must be exactly what the
format allows (escapes, one group of lines per metric, no series twice),
so a test that parses a scrape also proves the scrape is well formed.
prometheus_client's parser would do too, but it is not a dependency of
the project, and it accepts more than this.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

import attr

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}

Labels = Tuple[Tuple[str, str], ...]


@attr.s(auto_attribs=True)
class Family:
    """
    One metric as read: its type, help text and samples by label set
    (labels sorted by name).
    """

    name: str
    type: str
    help: Optional[str] = None
    samples: Dict[Labels, float] = attr.ib(factory=dict)


class ExpositionError(ValueError):
    """
    The text is not valid exposition format; the message names the line.
    """


def _unescape_help(text: str) -> str:
    return re.sub(r"\\(\\|n)", lambda m: "\\" if m.group(1) == "\\" else "\n", text)


def parse_labels(text: str) -> Dict[str, str]:
    """
    The inside of C{{...}}: C{name="value"} pairs separated by commas (a
    trailing comma is allowed), values with C{\\\\}, C{\\"} and C{\\n}
    escapes and nothing else escaped.
    """
    labels: Dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _LABEL_NAME.match(text, pos)
        if match is None or text[match.end() : match.end() + 2] != '="':
            raise ExpositionError(f"bad label at {text[pos:]!r}")
        name = match.group()
        pos = match.end() + 2
        value: List[str] = []
        while True:
            if pos >= len(text):
                raise ExpositionError(f"unterminated value of label {name}")
            char = text[pos]
            if char == "\\":
                escaped = text[pos + 1 : pos + 2]
                if escaped not in _ESCAPES:
                    raise ExpositionError(f"bad escape \\{escaped} in label {name}")
                value.append(_ESCAPES[escaped])
                pos += 2
            elif char == '"':
                pos += 1
                break
            elif char == "\n":
                raise ExpositionError(f"raw line feed in label {name}")
            else:
                value.append(char)
                pos += 1
        if name in labels:
            raise ExpositionError(f"label {name} given twice")
        labels[name] = "".join(value)
        if pos < len(text):
            if text[pos] != ",":
                raise ExpositionError(f"expected ',' after label {name}")
            pos += 1
    return labels


def _split_sample(line: str) -> Tuple[str, Dict[str, str], str]:
    brace = line.find("{")
    if brace == -1:
        name, _, rest = line.partition(" ")
        return name, {}, rest
    name = line[:brace]
    # The closing brace is the last one outside a quoted value.
    pos, quoted = brace + 1, False
    while pos < len(line):
        char = line[pos]
        if char == "\\" and quoted:
            pos += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == "}" and not quoted:
            break
        pos += 1
    else:
        raise ExpositionError("unterminated label set")
    if line[pos + 1 : pos + 2] != " ":
        raise ExpositionError("expected a space before the value")
    return name, parse_labels(line[brace + 1 : pos]), line[pos + 2 :]


def parse(text: str) -> Dict[str, Family]:
    """
    Read a whole exposition.

    @raise ExpositionError: anything the format does not allow, or a
        sample of an undeclared metric, or a metric's samples split into
        several groups.
    """
    if text and not text.endswith("\n"):
        raise ExpositionError("the exposition must end with a line feed")
    families: Dict[str, Family] = {}
    finished: set = set()
    current: Optional[str] = None
    for number, line in enumerate(text.split("\n")[:-1], 1):
        try:
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    name = parts[2]
                    if not _NAME.match(name):
                        raise ExpositionError(f"bad metric name {name!r}")
                    if name in finished:
                        raise ExpositionError(f"{name} declared again after other metrics")
                    family = families.setdefault(name, Family(name, "untyped"))
                    if parts[1] == "HELP":
                        if family.help is not None:
                            raise ExpositionError(f"second HELP for {name}")
                        family.help = _unescape_help(parts[3] if len(parts) > 3 else "")
                    else:
                        if family.samples:
                            raise ExpositionError(f"TYPE of {name} after its samples")
                        if len(parts) != 4 or parts[3] not in _TYPES:
                            raise ExpositionError(f"bad TYPE line for {name}")
                        if family.type != "untyped" and family.type != parts[3]:
                            raise ExpositionError(f"second TYPE for {name}")
                        family.type = parts[3]
                    if current is not None and current != name:
                        finished.add(current)
                    current = name
                continue
            name, labels, value_text = _split_sample(line)
            if not _NAME.match(name):
                raise ExpositionError(f"bad metric name {name!r}")
            if name not in families or families[name].type == "untyped":
                raise ExpositionError(f"sample of {name} without a TYPE line")
            if name in finished:
                raise ExpositionError(f"samples of {name} are not one group")
            if current is not None and current != name:
                finished.add(current)
            current = name
            if " " in value_text.strip():
                raise ExpositionError("unexpected text after the value")
            value = float(value_text)
            key = tuple(sorted(labels.items()))
            if key in families[name].samples:
                raise ExpositionError(f"{name}{dict(key)} given twice")
            families[name].samples[key] = value
        except ValueError as e:
            raise ExpositionError(f"line {number}: {e}: {line!r}") from None
    return families


def value(families: Dict[str, Family], name: str, **labels: str) -> float:
    """
    The one sample of C{name} with exactly these labels.

    @raise KeyError: there is no such sample.
    """
    return families[name].samples[tuple(sorted(labels.items()))]
