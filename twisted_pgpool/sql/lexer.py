"""
A tokenizer for PostgreSQL's SQL dialect, and the statement splitter built
on it.

The classifier (L{twisted_pgpool.sql.classifier}) decides from these tokens
whether a statement may run on a standby, so the lexing rules are
PostgreSQL's own (C{src/backend/parser/scan.l}), not an approximation: a
C{;} or C{FOR UPDATE} inside a string, a comment or a dollar-quoted body
must never be seen as code, and code must never be hidden inside what
looks like a string.  The rules that matter for that:

  - C{--} comments run to the end of the line; C{/* */} comments nest.
  - C{'...'} strings escape a quote by doubling it.  With
    C{standard_conforming_strings} off (not the default since PostgreSQL
    9.1) a backslash escapes too; C{E'...'} strings always use backslash
    escapes.  C{U&'...'}, C{N'...'}, C{B'...'} and C{X'...'} have their
    own prefixes; bit strings do not accept doubled quotes.
  - C{$tag$...$tag$} and C{$$...$$} bodies end only at the same tag; a
    C{$} inside an identifier (C{a$b}) is part of it, and C{$1} is a
    parameter.
  - Unquoted identifiers are folded to lower case (ASCII letters only, as
    PostgreSQL does for a multi-byte database encoding); C{"..."}
    identifiers keep their case and escape a double quote by doubling it.

The tokenizer never raises: text it cannot lex becomes C{other} tokens, and
a string, quoted identifier or comment that never ends runs to the end of
the input in one token flagged C{unterminated}.  Concatenating the C{text}
of every token gives back the input exactly.
"""

from __future__ import annotations

import re
from typing import List, NamedTuple, Optional, Sequence, Tuple

__all__ = [
    "BIT_STRING",
    "COMMENT",
    "DOLLAR_STRING",
    "IDENT",
    "KEYWORDS",
    "KEYWORD",
    "NUMBER",
    "OPERATOR",
    "OTHER",
    "PARAM",
    "PUNCT",
    "QUOTED_IDENT",
    "RESERVED_KEYWORDS",
    "STRING",
    "TRIVIA",
    "Token",
    "WHITESPACE",
    "first_keyword",
    "significant",
    "split_statements",
    "split_tokens",
    "tokenize",
]

# Token kinds.
WHITESPACE = "whitespace"
COMMENT = "comment"
IDENT = "ident"
KEYWORD = "keyword"
QUOTED_IDENT = "quoted_ident"
STRING = "string"  # '...', E'...', U&'...', N'...'
BIT_STRING = "bit_string"  # B'...', X'...'
DOLLAR_STRING = "dollar_string"
NUMBER = "number"
PARAM = "param"
OPERATOR = "operator"
PUNCT = "punct"  # ( ) [ ] , ; . : ::
OTHER = "other"

#: Kinds that carry no meaning for the grammar.
TRIVIA = frozenset([WHITESPACE, COMMENT])


class Token(NamedTuple):
    """
    One lexical token.

    A named tuple rather than an attrs class because a statement has dozens
    of them and they are built on the classifier's cold path.

    @ivar kind: one of the kind constants of this module.
    @ivar text: the exact source text of the token.
    @ivar value: the normalised value: identifiers and keywords folded to
        lower case, quoted identifiers and strings without their quotes and
        with their escapes resolved (best effort for C{U&} with
        C{UESCAPE}), dollar-quoted strings' bodies; otherwise C{text}.
    @ivar start: offset of the token in the input.
    @ivar unterminated: the input ended inside this string, quoted
        identifier or comment.
    """

    kind: str
    text: str
    value: str
    start: int
    unterminated: bool = False

    @property
    def end(self) -> int:
        return self.start + len(self.text)


#: PostgreSQL's reserved key words (kwlist.h category RESERVED): never an
#: unquoted column, table or function name.
RESERVED_KEYWORDS = frozenset(
    """
    all analyse analyze and any array as asc asymmetric both case cast check
    collate column constraint create current_catalog current_date current_role
    current_time current_timestamp current_user default deferrable desc
    distinct do else end except false fetch for foreign from grant group
    having in initially intersect into lateral leading limit localtime
    localtimestamp not null offset on only or order placing primary
    references returning select session_user some symmetric system_user
    table then to trailing true union unique user using variadic when where
    window with
    """.split()
)

#: Every PostgreSQL key word (reserved or not, as of PostgreSQL 17).  Words
#: in this set lex as C{keyword} tokens; anything else is an C{ident}.
KEYWORDS = RESERVED_KEYWORDS | frozenset(
    """
    abort absent absolute access action add admin after aggregate also alter
    always asensitive assertion assignment at atomic attach attribute
    authorization backward before begin between bigint binary bit boolean
    breadth by cache call called cascade cascaded catalog chain char
    character characteristics checkpoint class close cluster coalesce
    collation columns comment comments commit committed compression
    concurrently conditional configuration conflict connection constraints
    content continue conversion copy cost cross csv cube current
    current_schema cursor cycle data database day deallocate dec decimal
    declare defaults deferred definer delete delimiter delimiters depends
    depth detach dictionary disable discard document domain double drop each
    empty enable encoding encrypted enum error escape event exclude
    excluding exclusive execute exists explain expression extension
    external extract family filter finalize first float following force
    format forward freeze full function functions generated global granted
    greatest grouping groups handler header hold hour identity if ilike
    immediate immutable implicit import include including increment indent
    index indexes inherit inherits inline inner inout input insensitive
    insert instead int integer interval invoker is isnull isolation join
    json json_array json_arrayagg json_exists json_object json_objectagg
    json_query json_scalar json_serialize json_table json_value keep key
    keys label language large last leakproof least left level like listen
    load local location lock locked logged mapping match matched
    materialized maxvalue merge merge_action method minute minvalue mode
    month move name names national natural nchar nested new next nfc nfd
    nfkc nfkd no none normalize normalized nothing notify notnull nowait
    nullif nulls numeric object of off oids old omit operator option options
    ordinality others out outer over overlaps overlay overriding owned
    owner parallel parameter parser partial partition passing password path
    period plan plans policy position preceding precision prepare prepared
    preserve prior privileges procedural procedure procedures program
    publication quote quotes range read real reassign recheck recursive ref
    referencing refresh reindex relative release rename repeatable replace
    replica reset restart restrict return returns revoke right role rollback
    rollup routine routines row rows rule savepoint scalar schema schemas
    scroll search second security sequence sequences serializable server
    session set setof sets share show similar simple skip smallint snapshot
    source sql stable standalone start statement statistics stdin stdout
    storage stored strict string strip subscription substring support sysid
    system tables tablesample tablespace target temp template temporary text
    ties time timestamp transaction transform treat trigger trim truncate
    trusted type types uescape unbounded uncommitted unconditional
    unencrypted unknown unlisten unlogged until update vacuum valid validate
    validator value values varchar varying verbose version view views
    volatile whitespace within without work wrapper write xml xmlattributes
    xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi
    xmlroot xmlserialize xmltable year yes zone
    """.split()
)

_IDENT_START = "A-Za-z_\u0080-\U0010ffff"
_IDENT_CONT = _IDENT_START + "0-9$"
_DOLLAR_TAG = "[" + _IDENT_START + "][" + _IDENT_START + "0-9]*"

# One alternative per way a token can start.  Identifiers and whitespace,
# the most common tokens, are tried first; an identifier may not be the
# prefix of a string (E'...', U&'...', N'...', B'...', X'...'), and comment
# starts must be tried before the operators they are made of.  Strings,
# quoted identifiers, dollar quotes and block comments only match their
# opening here; their bodies are scanned separately so that nesting and
# unterminated input are handled without backtracking.
_MASTER = re.compile(
    "|".join(
        [
            r"(?P<ws>[ \t\n\r\f\v]+)",
            r"(?P<ident>(?![eEnNbBxX]'|[uU]&['\"])[" + _IDENT_START + "][" + _IDENT_CONT + "]*)",
            r"(?P<number>0[xX](?:_?[0-9a-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+"
            r"|(?:[0-9](?:_?[0-9])*(?:\.(?:[0-9](?:_?[0-9])*)?)?|\.[0-9](?:_?[0-9])*)"
            r"(?:[eE][+-]?[0-9]+)?)",
            r"(?P<punct>::|:=|[()\[\],;.:])",
            r"(?P<string>')",
            r"(?P<qident>\")",
            r"(?P<line_comment>--[^\n\r]*)",
            r"(?P<block_comment>/\*)",
            r"(?P<op>[~!@#^&|`?+\-*/%<>=]+)",
            r"(?P<estring>[eE]')",
            r"(?P<ustring>[uU]&')",
            r"(?P<uident>[uU]&\")",
            r"(?P<bitstring>[bBxX]')",
            r"(?P<nstring>[nN]')",
            r"(?P<dollar>\$(?:" + _DOLLAR_TAG + r")?\$)",
            r"(?P<param>\$[0-9]+)",
            r"(?P<other>.)",
        ]
    ),
    re.DOTALL,
)

# Bodies, matched from the opening quote.  Each is an "unrolled loop" so
# that long literals cost linear time and no recursion.
_STANDARD_STRING = re.compile(r"'[^']*(?:''[^']*)*'")
_ESCAPE_STRING = re.compile(r"'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'", re.DOTALL)
_BIT_STRING = re.compile(r"'[^']*'")
_QUOTED_IDENT = re.compile(r'"[^"]*(?:""[^"]*)*"')
_COMMENT_DELIMITER = re.compile(r"/\*|\*/")

# Characters that let a multi-character operator end in + or - (scan.l).
_OPERATOR_SPECIAL = frozenset("~!@#%^&|`?")

# Unquoted identifiers fold to lower case the way PostgreSQL folds them for
# a multi-byte encoding: ASCII letters only.
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


# In an escape string: a doubled quote, or a backslash escape (octal, hex,
# 16- and 32-bit Unicode, or any other character standing for itself).
_STRING_ESCAPE = re.compile(
    r"''|\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.))",
    re.DOTALL,
)
_SIMPLE_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _chr(code: int, fallback: str) -> str:
    try:
        return chr(code)
    except (ValueError, OverflowError):
        return fallback


def _escape_replacement(m: "re.Match[str]") -> str:
    octal, hex2, u4, u8, other = m.groups()
    if octal is not None:
        return _chr(int(octal, 8) & 0xFF, m.group())
    if hex2 is not None:
        return _chr(int(hex2, 16), m.group())
    if u4 is not None:
        return _chr(int(u4, 16), m.group())
    if u8 is not None:
        return _chr(int(u8, 16), m.group())
    if other is not None:
        return _SIMPLE_ESCAPES.get(other, other)
    return "'"


def _decode_escape_string(body: str) -> str:
    """
    The value of an C{E'...'} string body (best effort: an escape that
    names no valid character is kept as written).
    """
    if "\\" not in body:
        return body.replace("''", "'")
    return _STRING_ESCAPE.sub(_escape_replacement, body)


_UNICODE_ESCAPE = re.compile(r"\\(?:\\|([0-9a-fA-F]{4})|\+([0-9a-fA-F]{6}))")


def _decode_unicode_escapes(body: str) -> str:
    """
    Resolve C{U&} escapes with the default escape character (a later
    C{UESCAPE} clause is not applied: the value is best effort).
    """
    if "\\" not in body:
        return body

    def replace(m: "re.Match[str]") -> str:
        code = m.group(1) or m.group(2)
        if code is None:
            return "\\"
        return _chr(int(code, 16), m.group())

    return _UNICODE_ESCAPE.sub(replace, body)


def tokenize(
    sql: str,
    standard_conforming_strings: bool = True,
    skip_trivia: bool = False,
) -> List[Token]:
    """
    Split SQL text into tokens.

    @param sql: any text; nothing raises.
    @param standard_conforming_strings: the server setting of that name.
        When off, a backslash escapes the next character in C{'...'} and
        C{N'...'} strings as it always does in C{E'...'} strings.
    @param skip_trivia: leave out whitespace and comments.
    @return: the tokens in order.  Without C{skip_trivia}, their texts
        concatenate to C{sql}.
    """
    tokens: List[Token] = []
    append = tokens.append
    match = _MASTER.match
    new = tuple.__new__  # Token(...) without the named tuple's Python-level __new__
    n = len(sql)
    pos = 0
    while pos < n:
        m = match(sql, pos)
        # The final "other" alternative matches any character, so m is set.
        assert m is not None
        group = m.lastgroup
        end = m.end()
        if group == "ws":
            if not skip_trivia:
                text = m.group()
                append(new(Token, (WHITESPACE, text, text, pos, False)))
        elif group == "ident":
            word = m.group()
            value = word.lower() if word.isascii() else word.translate(_ASCII_LOWER)
            append(new(Token, (KEYWORD if value in KEYWORDS else IDENT, word, value, pos, False)))
        elif group == "punct":
            text = m.group()
            append(new(Token, (OPERATOR if text == ":=" else PUNCT, text, text, pos, False)))
        elif group == "number":
            text = m.group()
            append(new(Token, (NUMBER, text, text, pos, False)))
        elif group == "op":
            text = m.group()
            cut = _operator_length(text)
            end = pos + cut
            text = text[:cut]
            append(Token(OPERATOR, text, text, pos))
        elif group == "string" or group == "nstring":
            quote = end - 1
            if standard_conforming_strings:
                body = _STANDARD_STRING.match(sql, quote)
                if body is not None:
                    end = body.end()
                    append(
                        Token(
                            STRING, sql[pos:end], sql[quote + 1 : end - 1].replace("''", "'"), pos
                        )
                    )
                else:
                    end = n
                    append(Token(STRING, sql[pos:], sql[quote + 1 :], pos, True))
            else:
                end = _escape_string(sql, pos, quote, tokens)
        elif group == "estring":
            end = _escape_string(sql, pos, end - 1, tokens)
        elif group == "ustring":
            quote = end - 1
            body = _STANDARD_STRING.match(sql, quote)
            if body is not None:
                end = body.end()
                raw = sql[quote + 1 : end - 1].replace("''", "'")
                append(Token(STRING, sql[pos:end], _decode_unicode_escapes(raw), pos))
            else:
                end = n
                append(Token(STRING, sql[pos:], sql[quote + 1 :], pos, True))
        elif group == "qident" or group == "uident":
            quote = end - 1
            body = _QUOTED_IDENT.match(sql, quote)
            if body is not None:
                end = body.end()
                value = sql[quote + 1 : end - 1].replace('""', '"')
                if group == "uident":
                    value = _decode_unicode_escapes(value)
                append(Token(QUOTED_IDENT, sql[pos:end], value, pos))
            else:
                end = n
                append(Token(QUOTED_IDENT, sql[pos:], sql[quote + 1 :], pos, True))
        elif group == "bitstring":
            quote = end - 1
            body = _BIT_STRING.match(sql, quote)
            if body is not None:
                end = body.end()
                append(Token(BIT_STRING, sql[pos:end], sql[quote + 1 : end - 1], pos))
            else:
                end = n
                append(Token(BIT_STRING, sql[pos:], sql[quote + 1 :], pos, True))
        elif group == "line_comment":
            if not skip_trivia:
                append(Token(COMMENT, m.group(), m.group(), pos))
        elif group == "block_comment":
            end, unterminated = _block_comment_end(sql, end)
            if not skip_trivia:
                append(Token(COMMENT, sql[pos:end], sql[pos:end], pos, unterminated))
            elif unterminated:
                # Keep the one fact a caller needs even without trivia.
                append(Token(COMMENT, sql[pos:end], sql[pos:end], pos, True))
        elif group == "dollar":
            tag = m.group()
            close = sql.find(tag, end)
            if close >= 0:
                stop = close + len(tag)
                append(Token(DOLLAR_STRING, sql[pos:stop], sql[end:close], pos))
                end = stop
            else:
                append(Token(DOLLAR_STRING, sql[pos:], sql[end:], pos, True))
                end = n
        elif group == "param":
            append(Token(PARAM, m.group(), m.group(), pos))
        else:
            append(Token(OTHER, m.group(), m.group(), pos))
        pos = end
    return tokens


def _operator_length(text: str) -> int:
    """
    How much of a run of operator characters is one operator, by scan.l's
    rules: a comment start ends it, and it may end in C{+} or C{-} only if
    it contains one of C{~!@#%^&|`?}.
    """
    cut = len(text)
    for opener in ("--", "/*"):
        found = text.find(opener)
        if 0 < found < cut:
            cut = found
    if cut > 1 and text[cut - 1] in "+-" and not _OPERATOR_SPECIAL.intersection(text[:cut]):
        while cut > 1 and text[cut - 1] in "+-":
            cut -= 1
    return cut


def _escape_string(sql: str, pos: int, quote: int, tokens: List[Token]) -> int:
    """
    Scan a string with backslash escapes whose opening quote is at
    C{quote}; append its token and return where it ends.
    """
    body = _ESCAPE_STRING.match(sql, quote)
    if body is not None:
        end = body.end()
        tokens.append(
            Token(STRING, sql[pos:end], _decode_escape_string(sql[quote + 1 : end - 1]), pos)
        )
        return end
    tokens.append(Token(STRING, sql[pos:], sql[quote + 1 :], pos, True))
    return len(sql)


def _block_comment_end(sql: str, pos: int) -> Tuple[int, bool]:
    """
    Find the end of a (possibly nested) block comment whose opening
    C{/*} ends at C{pos}.

    @return: the offset after the closing C{*/} and False, or the length of
        the text and True when it never closes.
    """
    depth = 1
    search = _COMMENT_DELIMITER.search
    while True:
        m = search(sql, pos)
        if m is None:
            return len(sql), True
        pos = m.end()
        if m.group() == "/*":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return pos, False


def significant(tokens: Sequence[Token]) -> List[Token]:
    """
    The tokens without whitespace and comments.
    """
    return [t for t in tokens if t.kind not in TRIVIA]


def split_tokens(tokens: Sequence[Token]) -> List[List[Token]]:
    """
    Split a token list into statements at top-level semicolons.

    A semicolon separates statements unless it is inside parentheses or
    inside the C{BEGIN ... END} body of a SQL-standard function or
    procedure (C{CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ATOMIC
    ...; ...; END}), the same heuristic psql and Pgpool-II's copy of psql's
    scanner use.  (Semicolons inside strings, quoted identifiers, comments
    and dollar quotes are already part of those tokens.)

    @param tokens: tokens from L{tokenize}, with or without trivia.
    @return: one token list per statement, without the separating
        semicolons.  Statements with no significant token (empty
        statements, or only comments) are left out.
    """
    statements: List[List[Token]] = []
    current: List[Token] = []
    paren_depth = 0
    begin_depth = 0
    # The first words of the current statement, to recognise
    # CREATE [OR REPLACE] FUNCTION|PROCEDURE.
    words: List[str] = []
    routine = False
    has_content = False
    for token in tokens:
        kind = token.kind
        if kind == PUNCT:
            text = token.text
            if text == "(":
                paren_depth += 1
            elif text == ")":
                if paren_depth > 0:
                    paren_depth -= 1
            elif text == ";" and paren_depth == 0 and begin_depth == 0:
                if has_content:
                    statements.append(current)
                current = []
                paren_depth = 0
                words = []
                routine = False
                has_content = False
                continue
        elif kind == KEYWORD or kind == IDENT:
            value = token.value
            if len(words) < 4:
                words.append(value)
                routine = _is_routine_definition(words)
            if routine and paren_depth == 0:
                if value == "begin":
                    begin_depth += 1
                elif value == "case":
                    # CASE also closes with END; it only matters inside a
                    # BEGIN ... END body.
                    if begin_depth > 0:
                        begin_depth += 1
                elif value == "end" and begin_depth > 0:
                    begin_depth -= 1
        if kind not in TRIVIA:
            has_content = True
        current.append(token)
    if has_content:
        statements.append(current)
    return statements


def _is_routine_definition(words: List[str]) -> bool:
    if not words or words[0] != "create":
        return False
    if len(words) >= 2 and words[1] in ("function", "procedure"):
        return True
    return (
        len(words) >= 4
        and words[1] == "or"
        and words[2] == "replace"
        and words[3] in ("function", "procedure")
    )


def split_statements(sql: str, standard_conforming_strings: bool = True) -> List[str]:
    """
    Split SQL text into the texts of its statements.

    @return: each non-empty statement's text, from its first to its last
        token (leading and trailing whitespace removed, comments kept).
    """
    pieces = split_tokens(tokenize(sql, standard_conforming_strings))
    return ["".join(t.text for t in piece).strip() for piece in pieces]


def first_keyword(tokens: Sequence[Token]) -> Optional[str]:
    """
    The value of the first significant token if it is a word, else None.
    """
    for token in tokens:
        if token.kind in TRIVIA:
            continue
        if token.kind == KEYWORD or token.kind == IDENT:
            return token.value
        return None
    return None
