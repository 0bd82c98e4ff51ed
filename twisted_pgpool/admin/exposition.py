"""
Prometheus' text exposition format (version 0.0.4), written by hand.

The format is a few lines of text per metric: C{# HELP}, C{# TYPE}, then
one C{name{label="value"} number} line per sample.  Writing it here is
about as long as the glue a client library would need, and it keeps the
proxy free of a dependency (and of that library's process-global
registry, which an embedding application may already use for its own
metrics).  What a library would otherwise guarantee is kept here: names
are checked, label values and help texts are escaped, and numbers use the
spellings Prometheus parses (C{NaN}, C{+Inf}, C{-Inf}).
"""

from __future__ import annotations

import math
import re
from typing import Iterable, List, Tuple, Union

import attr

__all__ = [
    "CONTENT_TYPE",
    "COUNTER",
    "GAUGE",
    "MetricFamily",
    "Sample",
    "escape_help",
    "escape_label_value",
    "format_value",
    "render",
]

#: The media type of the format, as Prometheus asks for it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

COUNTER = "counter"
GAUGE = "gauge"
_TYPES = frozenset([COUNTER, GAUGE, "untyped"])

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

Number = Union[int, float]


def escape_label_value(value: str) -> str:
    """
    A label value as it goes between double quotes: backslash, double
    quote and line feed are the three characters the format escapes.
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """
    A C{# HELP} text: backslash and line feed escaped (quotes stay as they
    are there).
    """
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: Number) -> str:
    """
    A sample value: whole numbers without a fraction (counters read
    naturally), other floats in Python's shortest round-tripping form,
    and Prometheus' own words for the special values.
    """
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


@attr.s(auto_attribs=True, frozen=True)
class Sample:
    """
    One value of a metric, with its labels in the order they are written.
    """

    labels: Tuple[Tuple[str, str], ...]
    value: Number


@attr.s(auto_attribs=True)
class MetricFamily:
    """
    A metric: its name, type and help text, and its samples.

    A family may have no samples (say, no client is connected): it is still
    written with its C{HELP} and C{TYPE} lines, so that a scrape always
    declares the same metrics.

    @ivar name: the metric name, as it appears on every sample line.
    @ivar type: C{counter}, C{gauge} or C{untyped}.
    @ivar help: one line saying what it measures.
    """

    name: str
    type: str
    help: str
    samples: List[Sample] = attr.ib(factory=list)

    def __attrs_post_init__(self) -> None:
        if not _METRIC_NAME.match(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        if self.type not in _TYPES:
            raise ValueError(f"invalid metric type {self.type!r}")

    def add(self, value: Number, **labels: object) -> "MetricFamily":
        """
        Add a sample; label values are turned into text with C{str}.

        @return: the family, so that one-sample families read as one line.
        """
        for label in labels:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} for {self.name}")
        self.samples.append(Sample(tuple((k, str(v)) for k, v in labels.items()), value))
        return self


def _sample_line(name: str, sample: Sample) -> str:
    if sample.labels:
        labels = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sample.labels)
        return f"{name}{{{labels}}} {format_value(sample.value)}\n"
    return f"{name} {format_value(sample.value)}\n"


def render(families: Iterable[MetricFamily]) -> bytes:
    """
    The exposition of C{families}, in the order given, as UTF-8.
    """
    lines: List[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {escape_help(family.help)}\n")
        lines.append(f"# TYPE {family.name} {family.type}\n")
        lines.extend(_sample_line(family.name, s) for s in family.samples)
    return "".join(lines).encode("utf-8")
