"""
Running client libraries' own test suites through the proxy; see
docs/conformance.md and L{conformance.run}.
"""
