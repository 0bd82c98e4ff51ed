"""
The PostgreSQL v3 wire protocol, with no sockets and no Twisted: message
codes, encoders and decoders (L{messages}), the framer that forwards what
nobody watches as the original bytes (L{framing}), and the ErrorResponses
the proxy itself sends (L{errors}).

Everything here is pure: C{tests/test_layering.py} checks that it imports
neither Twisted nor any other part of the proxy.
"""
