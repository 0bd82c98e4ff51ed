"""
Rewrite references to twisted_pgpool's old flat modules to the subpackages
they moved to (issue 14): imports, dotted names in strings, docstrings and
docs, and C{twisted_pgpool/<module>.py} paths.

Run it from the repository root after merging a branch that was written
against the flat layout::

    python tools/relayout.py            # every tracked text file
    python tools/relayout.py FILE...    # only these
    python tools/relayout.py --only wire,sql   # only the moves into these

It is idempotent: a name already rewritten is left alone.  It does not move
files (the moves were made with C{git mv}); a module a branch I{added} at the
top level still has to be moved by hand, and added to L{MOVES} if others
import it.
"""

import ast
import os
import re
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

PACKAGE = "twisted_pgpool"

#: Old flat module -> new module, both relative to the package.
MOVES: Dict[str, str] = {
    # wire: the protocol codec (pure)
    "messages": "wire.messages",
    "framing": "wire.framing",
    "errors": "wire.errors",
    # sql: reading SQL text (pure)
    "sqllexer": "sql.lexer",
    "classifier": "sql.classifier",
    # auth: the mechanisms and files (pure)
    "md5auth": "auth.md5",
    "scram": "auth.scram",
    "hba": "auth.hba",
    "passwd": "auth.passwd",
    # net: sockets, TLS, listeners, the reactor
    "reactor": "net.reactor",
    "transports": "net.transports",
    "tls": "net.tls",
    "listening": "net.listening",
    "addresses": "net.addresses",
    # backend: connections to the servers
    "backend": "backend.protocol",
    "pool": "backend.pool",
    "backendstats": "backend.stats",
    # cluster: the node model and what watches and changes it
    "cluster": "cluster.model",
    "nodecheck": "cluster.nodecheck",
    "replication": "cluster.replication",
    "health": "cluster.health",
    "failover": "cluster.failover",
    # routing: where a statement goes
    "router": "routing.router",
    "balancer": "routing.balancer",
    "causal": "routing.causal",
    "replication_mode": "routing.replication_mode",
    # cache: the query cache
    "cachepolicy": "cache.policy",
    "cachestore": "cache.store",
    "cachesession": "cache.session",
    "cachesteps": "cache.steps",
    # proxy: the client side
    "frontend": "proxy.frontend",
    "session": "proxy.session",
    "limits": "proxy.limits",
    "cancel": "proxy.cancel",
    "clientauth": "proxy.clientauth",
    "inspection": "proxy.inspection",
    "memory": "proxy.memory",
    # admin: operating the running proxy
    "admin": "admin.operations",
    "admin_cli": "admin.cli",
    "pcp": "admin.pcp",
    "pcpclient": "admin.pcp_client",
    "reload": "admin.reload",
    "shutdown": "admin.shutdown",
    "manhole": "admin.manhole",
    "manholeprompt": "admin.manhole_prompt",
    "metrics": "admin.metrics",
    "metricsweb": "admin.metrics_web",
    "exposition": "admin.exposition",
    # testing
    "localcluster": "testing.localcluster",
    # config: the configuration module itself became config/__init__.py
    "config_descriptions": "config.descriptions",
    "pgpoolconf": "config.pgpool_conf",
}

#: Modules that became a package's __init__ (their dotted name is
#: unchanged; only their file path is).
PACKAGE_MODULES = {"config"}

#: A file that holds this line deliberately keeps the old names (the
#: compatibility aliases at the old paths).
SKIP_MARK = "relayout: keep old names"

_NEW_PACKAGES = {new.split(".")[0] for new in MOVES.values()}
_SUBMODULES: Dict[str, List[str]] = {}
for _new in MOVES.values():
    _pkg, _leaf = _new.split(".")
    _SUBMODULES.setdefault(_pkg, []).append(_leaf)


def _dotted_pattern(old: str) -> "re.Pattern[str]":
    """
    C{twisted_pgpool.<old>} as a whole name; when C{old} is also the name of
    a new package (backend, cluster, admin), not when it is followed by one
    of that package's submodules (already rewritten), nor in C{from
    twisted_pgpool.backend import pool} (a submodule imported from the new
    package).
    """
    tail = ""
    if old in _SUBMODULES:
        names = "|".join(_SUBMODULES[old])
        tail = r"(?!\.(?:%s)\b)(?! import (?:%s)\b)" % (names, names)
    return re.compile(r"\b%s\.%s\b%s" % (PACKAGE, re.escape(old), tail))


_DOTTED = [(_dotted_pattern(old), f"{PACKAGE}.{new}") for old, new in MOVES.items()]
_PATHS = [
    (
        re.compile(r"\b%s/%s\.py\b" % (PACKAGE, re.escape(old))),
        f"{PACKAGE}/{new.replace('.', '/')}.py",
    )
    for old, new in MOVES.items()
] + [
    (re.compile(r"\b%s/%s\.py\b" % (PACKAGE, re.escape(old))), f"{PACKAGE}/{old}/__init__.py")
    for old in PACKAGE_MODULES
]


def _split_names(names: List[Tuple[str, Optional[str]]]) -> List[Tuple[str, List[str]]]:
    """
    The names of one C{from twisted_pgpool import ...}, grouped by the
    module they now come from, in the order they first appear.
    """
    groups: Dict[str, List[str]] = {}
    for name, asname in names:
        if name in MOVES:
            package, leaf = MOVES[name].split(".")
            target = f"{PACKAGE}.{package}"
            alias = asname or name
            text = leaf if alias == leaf else f"{leaf} as {alias}"
        else:
            target = PACKAGE
            text = name if asname is None else f"{name} as {asname}"
        groups.setdefault(target, []).append(text)
    # isort's order: the package itself, then its subpackages by name.
    return sorted(groups.items(), key=lambda item: (item[0] != PACKAGE, item[0]))


def _import_lines(indent: str, names: List[Tuple[str, Optional[str]]], comment: str) -> List[str]:
    lines = []
    for target, texts in _split_names(names):
        lines.append(f"{indent}from {target} import {', '.join(texts)}{comment}\n")
    return lines


def _rewrite_python_imports(text: str) -> str:
    """
    Rewrite every C{from twisted_pgpool import <old module>} statement.
    """
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    lines = text.splitlines(keepends=True)
    nodes = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.level == 0
        and node.module == PACKAGE
        and any(a.name in MOVES for a in node.names)
    ]
    for node in sorted(nodes, key=lambda n: n.lineno, reverse=True):
        first, last = node.lineno - 1, node.end_lineno - 1  # type: ignore[operator]
        indent = re.match(r"\s*", lines[first]).group(0)  # type: ignore[union-attr]
        tail = lines[last][node.end_col_offset :].rstrip("\n")  # type: ignore[index]
        comment = tail if tail.strip().startswith("#") else ""
        if tail.strip() and not comment:
            continue  # something else on the line: leave it to a human
        new = _import_lines(indent, [(a.name, a.asname) for a in node.names], comment)
        lines[first : last + 1] = new
    return "".join(lines)


_TEXT_IMPORT = re.compile(
    r"^(?P<indent>[ \t>]*)from %s import (?P<names>[\w ,]+?)(?P<comment>\s*#.*)?$" % PACKAGE, re.M
)


def _rewrite_text_imports(text: str) -> str:
    """
    The same for import lines in documentation (code blocks).
    """

    def one(match: "re.Match[str]") -> str:
        names: List[Tuple[str, Optional[str]]] = []
        for part in match.group("names").split(","):
            words = part.split()
            if len(words) == 1:
                names.append((words[0], None))
            elif len(words) == 3 and words[1] == "as":
                names.append((words[0], words[2]))
            else:
                return match.group(0)
        if not any(name in MOVES for name, _ in names):
            return match.group(0)
        return "".join(
            _import_lines(match.group("indent"), names, match.group("comment") or "")
        ).rstrip("\n")

    return _TEXT_IMPORT.sub(one, text)


def rewrite(path: str, text: str) -> str:
    if path.endswith(".py"):
        text = _rewrite_python_imports(text)
    else:
        text = _rewrite_text_imports(text)
    for pattern, new in _DOTTED:
        text = pattern.sub(new, text)
    for pattern, new in _PATHS:
        text = pattern.sub(new, text)
    return text


def only(packages: List[str]) -> None:
    """
    Keep only the moves into the given new packages (the restructuring was
    committed one package at a time).
    """
    global _DOTTED, _PATHS
    kept = {old: new for old, new in MOVES.items() if new.split(".")[0] in packages}
    _DOTTED = [(p, n) for p, n in _DOTTED if n[len(PACKAGE) + 1 :] in kept.values()]
    _PATHS = [
        (p, n)
        for p, n in _PATHS
        if n[len(PACKAGE) + 1 : -3].replace("/", ".") in kept.values()
        or n[len(PACKAGE) + 1 :].split("/")[0] in packages
    ]
    for old in list(MOVES):
        if old not in kept:
            del MOVES[old]


def main(argv: List[str]) -> int:
    if argv[:1] == ["--only"]:
        only(argv[1].split(","))
        argv = argv[2:]
    paths = (
        argv
        or subprocess.run(
            ["git", "ls-files"], check=True, capture_output=True, text=True
        ).stdout.split()
    )
    changed = 0
    for path in paths:
        if not os.path.isfile(path) or path == os.path.join("tools", "relayout.py"):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError:
            continue
        if SKIP_MARK in text:
            continue
        new = rewrite(path, text)
        if new != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            changed += 1
            print(path)
    print(f"{changed} files rewritten", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
