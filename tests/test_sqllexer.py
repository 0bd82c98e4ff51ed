"""
Tests for L{twisted_pgpool.sql.lexer}: every literal form PostgreSQL's
scanner knows, comments, identifiers, statement splitting, and that no
input makes it raise.
"""

from __future__ import annotations

from typing import List, Tuple

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.sql.lexer import (
    BIT_STRING,
    COMMENT,
    DOLLAR_STRING,
    IDENT,
    KEYWORD,
    NUMBER,
    OPERATOR,
    OTHER,
    PARAM,
    PUNCT,
    QUOTED_IDENT,
    STRING,
    WHITESPACE,
    first_keyword,
    significant,
    split_statements,
    split_tokens,
    tokenize,
)


def kinds(sql: str, **kwargs: bool) -> List[Tuple[str, str]]:
    """
    The significant tokens of C{sql} as (kind, value) pairs.
    """
    return [(t.kind, t.value) for t in tokenize(sql, skip_trivia=True, **kwargs)]


class IdentifierTests(SynchronousTestCase):
    def test_unquoted_identifiers_fold_to_lower_case(self) -> None:
        self.assertEqual(kinds("MyTable"), [(IDENT, "mytable")])

    def test_keywords_are_recognised_in_any_case(self) -> None:
        self.assertEqual(kinds("SeLeCt"), [(KEYWORD, "select")])

    def test_quoted_identifier_keeps_case_and_is_not_a_keyword(self) -> None:
        self.assertEqual(kinds('"Select"'), [(QUOTED_IDENT, "Select")])

    def test_doubled_double_quote_inside_quoted_identifier(self) -> None:
        self.assertEqual(kinds('"a""b"'), [(QUOTED_IDENT, 'a"b')])

    def test_quoted_identifier_may_contain_semicolon_and_quote(self) -> None:
        self.assertEqual(kinds('"x;\'y"'), [(QUOTED_IDENT, "x;'y")])

    def test_only_ascii_letters_fold(self) -> None:
        self.assertEqual(kinds("ÄbC"), [(IDENT, "Äbc")])

    def test_dollar_inside_identifier(self) -> None:
        self.assertEqual(kinds("a$b$c"), [(IDENT, "a$b$c")])

    def test_unicode_escaped_identifier(self) -> None:
        self.assertEqual(kinds('U&"d\\0061t\\+000061"'), [(QUOTED_IDENT, "data")])

    def test_qualified_name_is_three_tokens(self) -> None:
        self.assertEqual(
            kinds("pg_catalog.pg_class"),
            [(IDENT, "pg_catalog"), (PUNCT, "."), (IDENT, "pg_class")],
        )


class StringTests(SynchronousTestCase):
    def test_doubled_quote_escapes(self) -> None:
        self.assertEqual(kinds("'it''s'"), [(STRING, "it's")])

    def test_semicolon_and_comment_markers_inside_string(self) -> None:
        self.assertEqual(kinds("'a;b -- c /* d'"), [(STRING, "a;b -- c /* d")])

    def test_backslash_is_literal_in_standard_strings(self) -> None:
        self.assertEqual(kinds("'a\\' 'b'"), [(STRING, "a\\"), (STRING, "b")])

    def test_backslash_escapes_without_standard_conforming_strings(self) -> None:
        self.assertEqual(kinds("'a\\'b'", standard_conforming_strings=False), [(STRING, "a'b")])

    def test_escape_string_backslash_quote(self) -> None:
        self.assertEqual(kinds("E'\\''"), [(STRING, "'")])

    def test_escape_string_lower_case_prefix_and_escapes(self) -> None:
        self.assertEqual(kinds("e'a\\nb\\x41\\101\\u00e9\\\\'"), [(STRING, "a\nbAAé\\")])

    def test_escape_string_doubled_quote(self) -> None:
        self.assertEqual(kinds("E'a''b'"), [(STRING, "a'b")])

    def test_escape_string_hides_semicolon_after_escaped_quote(self) -> None:
        self.assertEqual(kinds("E'\\'; DELETE'"), [(STRING, "'; DELETE")])

    def test_unicode_string(self) -> None:
        self.assertEqual(kinds("U&'d\\0061t\\+000061'"), [(STRING, "data")])

    def test_national_string(self) -> None:
        self.assertEqual(kinds("N'abc'"), [(STRING, "abc")])

    def test_bit_strings(self) -> None:
        self.assertEqual(kinds("B'1010' x'1F'"), [(BIT_STRING, "1010"), (BIT_STRING, "1F")])

    def test_bit_string_has_no_doubled_quote(self) -> None:
        # As in scan.l: the bit string ends at the first quote and a new
        # plain string starts at the next.
        self.assertEqual(kinds("B'1'' ;x'"), [(BIT_STRING, "1"), (STRING, " ;x")])

    def test_identifier_ending_in_prefix_letter_then_string(self) -> None:
        self.assertEqual(kinds("colb'x'"), [(IDENT, "colb"), (STRING, "x")])

    def test_unterminated_string_runs_to_the_end(self) -> None:
        tokens = tokenize("SELECT 'abc; DELETE")
        self.assertEqual(tokens[-1].kind, STRING)
        self.assertTrue(tokens[-1].unterminated)
        self.assertEqual(tokens[-1].text, "'abc; DELETE")

    def test_unterminated_escape_string_ending_in_backslash(self) -> None:
        tokens = tokenize("E'abc\\")
        self.assertEqual((tokens[-1].kind, tokens[-1].unterminated), (STRING, True))


class DollarQuoteTests(SynchronousTestCase):
    def test_empty_tag(self) -> None:
        self.assertEqual(kinds("$$a;b$$"), [(DOLLAR_STRING, "a;b")])

    def test_named_tag_ignores_other_tags(self) -> None:
        self.assertEqual(kinds("$fn$ $$ ; $x$ $fn$"), [(DOLLAR_STRING, " $$ ; $x$ ")])

    def test_tag_is_case_sensitive(self) -> None:
        self.assertEqual(kinds("$a$ $A$ $a$"), [(DOLLAR_STRING, " $A$ ")])

    def test_closing_tag_found_inside_a_longer_run(self) -> None:
        self.assertEqual(kinds("$a$x$b$a$"), [(DOLLAR_STRING, "x$b")])

    def test_parameter_is_not_a_dollar_quote(self) -> None:
        self.assertEqual(kinds("$1 + $23"), [(PARAM, "$1"), (OPERATOR, "+"), (PARAM, "$23")])

    def test_unterminated_dollar_quote(self) -> None:
        tokens = tokenize("SELECT $q$ never")
        self.assertEqual((tokens[-1].kind, tokens[-1].unterminated), (DOLLAR_STRING, True))


class CommentTests(SynchronousTestCase):
    def test_line_comment_to_end_of_line(self) -> None:
        self.assertEqual(
            [(t.kind, t.text) for t in tokenize("a -- b; c\nd") if t.kind != WHITESPACE],
            [(IDENT, "a"), (COMMENT, "-- b; c"), (IDENT, "d")],
        )

    def test_block_comments_nest(self) -> None:
        tokens = tokenize("/* a /* b */ c ; */ x")
        self.assertEqual(tokens[0].kind, COMMENT)
        self.assertEqual(tokens[0].text, "/* a /* b */ c ; */")
        self.assertEqual(significant(tokens)[0].value, "x")

    def test_unterminated_nested_comment(self) -> None:
        tokens = tokenize("x /* /* */ still open")
        self.assertEqual((tokens[-1].kind, tokens[-1].unterminated), (COMMENT, True))

    def test_unterminated_comment_is_kept_when_skipping_trivia(self) -> None:
        tokens = tokenize("x /* open", skip_trivia=True)
        self.assertEqual((tokens[-1].kind, tokens[-1].unterminated), (COMMENT, True))

    def test_comment_start_ends_an_operator(self) -> None:
        self.assertEqual(
            [(t.kind, t.text) for t in tokenize("a+--c") if t.kind != WHITESPACE],
            [(IDENT, "a"), (OPERATOR, "+"), (COMMENT, "--c")],
        )
        self.assertEqual([t.text for t in tokenize("a*/*c*/b")], ["a", "*", "/*c*/", "b"])


class NumberAndOperatorTests(SynchronousTestCase):
    def test_numeric_forms(self) -> None:
        for text in (
            "42",
            "3.5",
            ".5",
            "5.",
            "1e10",
            "2.5E-3",
            "0x1F",
            "0o17",
            "0b101",
            "1_000_000",
        ):
            self.assertEqual(kinds(text), [(NUMBER, text)], text)

    def test_operator_may_not_end_in_minus_unless_special(self) -> None:
        self.assertEqual([t.text for t in tokenize("a=-1")], ["a", "=", "-", "1"])
        self.assertEqual([t.text for t in tokenize("a@-1")], ["a", "@-", "1"])

    def test_punctuation(self) -> None:
        self.assertEqual(
            [(t.kind, t.text) for t in tokenize("a::int[1:2],(b);")],
            [
                (IDENT, "a"),
                (PUNCT, "::"),
                (KEYWORD, "int"),
                (PUNCT, "["),
                (NUMBER, "1"),
                (PUNCT, ":"),
                (NUMBER, "2"),
                (PUNCT, "]"),
                (PUNCT, ","),
                (PUNCT, "("),
                (IDENT, "b"),
                (PUNCT, ")"),
                (PUNCT, ";"),
            ],
        )

    def test_named_argument_arrow_and_colon_equals(self) -> None:
        self.assertEqual(
            [t.kind for t in tokenize("f(a => 1, b := 2)") if t.kind != WHITESPACE][3], OPERATOR
        )
        self.assertIn((OPERATOR, ":="), [(t.kind, t.text) for t in tokenize("b := 2")])

    def test_unknown_character_is_other(self) -> None:
        self.assertEqual(kinds("\\"), [(OTHER, "\\")])

    def test_token_offsets(self) -> None:
        tokens = tokenize("SELECT  x")
        self.assertEqual([(t.start, t.end) for t in tokens], [(0, 6), (6, 8), (8, 9)])


class SplitTests(SynchronousTestCase):
    def test_top_level_semicolons_split(self) -> None:
        self.assertEqual(split_statements("SELECT 1; SELECT 2"), ["SELECT 1", "SELECT 2"])

    def test_trailing_and_empty_statements_are_dropped(self) -> None:
        self.assertEqual(split_statements(";; SELECT 1;;  ; "), ["SELECT 1"])

    def test_comment_only_statement_is_empty(self) -> None:
        self.assertEqual(split_statements("SELECT 1; /* nothing */"), ["SELECT 1"])

    def test_no_split_inside_strings_comments_and_dollar_quotes(self) -> None:
        sql = "SELECT ';', \";\", $$;$$, E'\\';' /* ; */ -- ;\n"
        self.assertEqual(len(split_statements(sql)), 1)

    def test_no_split_inside_parentheses(self) -> None:
        self.assertEqual(split_statements("SELECT (1; 2); SELECT 3"), ["SELECT (1; 2)", "SELECT 3"])

    def test_begin_atomic_body_is_one_statement(self) -> None:
        sql = (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; "
            "SELECT CASE WHEN true THEN 1 END; END; SELECT 3"
        )
        self.assertEqual(len(split_statements(sql)), 2)
        self.assertTrue(split_statements(sql)[0].endswith("END"))

    def test_create_or_replace_procedure_begin_atomic(self) -> None:
        sql = "create or replace procedure p() begin atomic insert into t values (1); end; select 1"
        self.assertEqual(len(split_statements(sql)), 2)

    def test_begin_outside_a_routine_definition_does_not_nest(self) -> None:
        self.assertEqual(split_statements("BEGIN; SELECT 1; END"), ["BEGIN", "SELECT 1", "END"])

    def test_split_tokens_drops_separators(self) -> None:
        pieces = split_tokens(tokenize("a;b", skip_trivia=True))
        self.assertEqual([[t.value for t in p] for p in pieces], [["a"], ["b"]])

    def test_first_keyword(self) -> None:
        self.assertEqual(first_keyword(tokenize("  /* c */ Insert into t")), "insert")
        self.assertIsNone(first_keyword(tokenize("(select 1)")))
        self.assertIsNone(first_keyword(tokenize("  ")))


SQLISH = st.lists(
    st.sampled_from(
        [
            "SELECT",
            " ",
            "\n",
            "'",
            "''",
            '"',
            "E'",
            "U&'",
            "B'",
            "$$",
            "$a$",
            "$1",
            "--",
            "/*",
            "*/",
            "\\",
            ";",
            "(",
            ")",
            "x",
            "1",
            ".",
            "::",
            "BEGIN",
            "ATOMIC",
            "END",
            "CASE",
            "CREATE",
            "FUNCTION",
            "é",
            "\x00",
        ]
    ),
    max_size=40,
).map("".join)


class NeverRaisesTests(SynchronousTestCase):
    @settings(max_examples=400, deadline=None)
    @given(st.text())
    def test_tokens_reassemble_any_text(self, sql: str) -> None:
        self.assertEqual("".join(t.text for t in tokenize(sql)), sql)
        self.assertEqual(
            "".join(t.text for t in tokenize(sql, standard_conforming_strings=False)), sql
        )
        split_statements(sql)

    @settings(max_examples=400, deadline=None)
    @given(SQLISH)
    def test_tokens_reassemble_sql_like_text(self, sql: str) -> None:
        tokens = tokenize(sql)
        self.assertEqual("".join(t.text for t in tokens), sql)
        # Only the last token can be unterminated.
        self.assertFalse(any(t.unterminated for t in tokens[:-1]))
        for piece in split_tokens(tokens):
            self.assertTrue(significant(piece))
