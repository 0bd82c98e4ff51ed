"""
The classification cache's key: a statement's I{shape}, its text with string
and number literals replaced by a marker, computed by one regular-expression
pass (L{statement_shape}).
"""

from __future__ import annotations

import re
from typing import Optional

__all__ = ["statement_shape"]


# Texts with anything that makes a cheap regular-expression view of the
# literals disagree with the tokenizer -- comments, backslashes (E'' strings,
# standard_conforming_strings), dollar quotes, bit strings (no doubled
# quotes), NUL -- have no shape and are cached by their exact text only.

# What PostgreSQL's scanner takes as part of an identifier.
_IDENT_CHAR = "A-Za-z0-9_$\u0080-\U0010ffff"
_DOLLAR_QUOTE = re.compile(r"\$(?![0-9])")
# A quote right after B or X that does not continue an identifier.
_BIT_STRING_START = re.compile(r"'(?<=[bBxX]')(?<![" + _IDENT_CHAR + r"'][bBxX]')")

# String literals, and decimal numbers that are tokens of their own: only
# whitespace, punctuation or an operator character may come before and after
# a number (not a letter, "_", "$", ".", a quote or any non-ASCII character,
# which PostgreSQL takes as part of an identifier).  A comma-separated run of
# literals (an IN list, a VALUES row, arguments) becomes one marker: no rule
# depends on how many literals such a run has, and every match costs time.
# Likewise a run of quoted identifiers joined by "." or "," is one match,
# kept as it is.
#
# Every pattern starts with one character class and picks its branch with a
# lookbehind: CPython's re module only skips ahead to possible first
# characters when a pattern starts with a literal or a class, which makes
# these patterns several times faster.
_BEFORE_NUMBER = r" \t\n\r\f\v(,=<>+\-*/%\[:;|^!~@#&?"
_AFTER_NUMBER = r" \t\n\r\f\v),;=<>+\-*/%\]:|^!~@#&?"
_SPACE = "[ \t\n\r\f\v]*"
_STRING_REST = r"(?<=')[^']*(?:''[^']*)*'"
_NUMBER_REST = (
    r"(?<=[0-9])(?<![^"
    + _BEFORE_NUMBER
    + r"][0-9])[0-9]*(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?(?![^"
    + _AFTER_NUMBER
    + r"])"
)
_FRACTION_REST = (
    r"(?<=\.)(?<![^"
    + _BEFORE_NUMBER
    + r"]\.)[0-9]+(?:[eE][+-]?[0-9]+)?(?![^"
    + _AFTER_NUMBER
    + r"])"
)
_ONE_LITERAL = "['0-9.](?:" + _STRING_REST + "|" + _NUMBER_REST + "|" + _FRACTION_REST + ")"
_MORE_LITERALS = "(?:" + _SPACE + "," + _SPACE + _ONE_LITERAL + ")*"
_QUOTED_IDENT_REST = r'(?<=")[^"]*(?:""[^"]*)*"'
_MORE_QUOTED_IDENTS = "(?:" + _SPACE + "[.,]" + _SPACE + '"' + _QUOTED_IDENT_REST + ")*"
_SHAPE_LITERALS = re.compile(_ONE_LITERAL + _MORE_LITERALS)
_SHAPE_LITERALS_AND_IDENTS = re.compile(
    "[\"'0-9.](?:"
    + _QUOTED_IDENT_REST
    + _MORE_QUOTED_IDENTS
    + "|(?:"
    + _STRING_REST
    + "|"
    + _NUMBER_REST
    + "|"
    + _FRACTION_REST
    + ")"
    + _MORE_LITERALS
    + ")"
)
_MAX_CACHED_LENGTH = 32768


def _keep_quoted_identifiers(m: "re.Match[str]") -> str:
    text = m.group()
    return text if text[0] == '"' else "\x00"


def statement_shape(sql: str) -> Optional[str]:
    """
    The cache key for texts that differ only in literal values: C{sql} with
    each string and number literal -- or each comma-separated run of them --
    replaced by NUL (which no query text can contain).

    @return: the shape, or None when the text has something a regular
        expression cannot lex reliably (comments, backslashes, dollar
        quotes, bit strings).
    """
    if "--" in sql or "/*" in sql or "\\" in sql or "\x00" in sql:
        return None
    if "$" in sql and _DOLLAR_QUOTE.search(sql) is not None:
        return None
    if "'" in sql and _BIT_STRING_START.search(sql) is not None:
        return None
    if '"' in sql:
        return _SHAPE_LITERALS_AND_IDENTS.sub(_keep_quoted_identifiers, sql)
    return _SHAPE_LITERALS.sub("\x00", sql)
