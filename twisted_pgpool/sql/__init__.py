"""
Reading SQL text: PostgreSQL's lexical rules (L{lexer}) and, on its
tokens, what a statement is -- read-only or a write, which relations and
functions it names, whether it may run on a standby (L{classifier}).

Pure: no sockets, no Twisted (checked by C{tests/test_layering.py}).
"""
