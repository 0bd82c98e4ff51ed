"""
Listening addresses as Pgpool-II writes them, turned into Twisted endpoint
strings (shared by the client listener and the PCP listener).
"""

from __future__ import annotations

from typing import List


def tcp_descriptions(addresses: str, port: int) -> List[str]:
    """
    Endpoint strings for a Pgpool-II address list (C{listen_addresses},
    C{pcp_listen_addresses}): C{*} is every address, C{''} disables TCP,
    otherwise a comma-separated list of host names or addresses.
    """
    descriptions = []
    for item in addresses.split(","):
        address = item.strip()
        if not address:
            continue
        if address == "*":
            descriptions.append(f"tcp:{port}")
        elif address == "localhost":
            descriptions.append(f"tcp:{port}:interface=127.0.0.1")
        elif ":" in address:
            escaped = address.replace(":", "\\:")
            descriptions.append(f"tcp6:{port}:interface={escaped}")
        else:
            descriptions.append(f"tcp:{port}:interface={address}")
    return descriptions
