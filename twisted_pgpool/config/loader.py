"""
The loader: a C{conf.yaml} (or Pgpool-II's C{pgpool.conf}) or a mapping
into a checked L{PgpoolConfig}.

The spellings of Pgpool-II are turned into the model's first
(L{twisted_pgpool.config.spellings}), then the generic reader builds the
model (L{twisted_pgpool.config.fields._build}), then the checks run
(L{twisted_pgpool.config.checks}).
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple, cast

import attrs
import yaml

from twisted_pgpool.config import pgpool_conf as pgpoolconf
from twisted_pgpool.config.checks import (
    _check_features,
    _check_pool_hba_file,
    _check_reserved_connections,
)
from twisted_pgpool.config.display import secret_settings
from twisted_pgpool.config.errors import ConfigError, ConfigWarning, _deliver
from twisted_pgpool.config.fields import _build, _key_lines, _Nested, _settings
from twisted_pgpool.config.kinds import _Context, _Invalid, _show, _Where
from twisted_pgpool.config.model import BackendConfig, PgpoolConfig
from twisted_pgpool.config.spellings import (
    _TRAILING_NUMBER,
    LEGACY_MODE_KEYS,
    _numbered_backends,
    _numbered_key,
    _numbered_spelling,
    _resolve_legacy_mode,
)
from twisted_pgpool.config.yamlfile import _LineDict, _LineLoader


def config_from_dict(
    data: Mapping[Any, Any],
    source: str = "<dict>",
    base_dir: Optional[str] = None,
    warnings: Optional[List[ConfigWarning]] = None,
) -> PgpoolConfig:
    """
    Build a configuration from already-parsed data, checking it exactly as
    L{load_config} does; for applications that embed the proxy and keep
    their settings elsewhere.

    @param data: Keys and values as they would appear in C{conf.yaml}.
    @param source: The name shown in error messages and kept in
        L{PgpoolConfig.source}.
    @param base_dir: Directory for relative paths; the current directory
        when omitted (captured now, so a later C{chdir} does not matter).
    @param warnings: Receives a L{ConfigWarning} for each Pgpool-II
        parameter that does not apply here (and each old name), also when
        an error is raised; when omitted they are logged.
    @raise ConfigError: If anything is missing, unknown or out of range.
    """
    ctx = _Context(source, os.path.abspath(base_dir if base_dir is not None else "."))
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"expected a mapping of setting names to values, got {_show(data)}",
            source=source,
        )
    found: List[ConfigWarning] = []
    try:
        data = _sort_out_pgpool_names(data, source, found)
    finally:
        _deliver(found, warnings)
    lines = _key_lines(data)
    data = _resolve_legacy_mode(data, lines, ctx)
    numbered = [key for key in data if _numbered_key(key)]
    raw = {key: value for key, value in data.items() if key not in numbered}
    given: Dict[str, Any] = {"source": source}
    if numbered:
        if "backends" in raw:
            raise ctx.error(
                _Where(numbered[0], lines.get(numbered[0])),
                "numbered backend keys cannot be mixed with a backends list; use one spelling",
            )
        backends_kind = cast(_Nested, _settings(PgpoolConfig)["backends"])
        given["backends"] = backends_kind.build_items(
            _numbered_backends(data, lines, ctx), ctx, _Where("backends", None)
        )
    numbers = {
        match.group(1) for match in (_TRAILING_NUMBER.search(str(key)) for key in raw) if match
    }
    candidates = [
        _numbered_spelling(sub, int(number))
        for number in numbers
        for sub in _settings(BackendConfig)
    ]
    config: PgpoolConfig = _build(
        PgpoolConfig,
        raw,
        ctx,
        lambda key: key,
        None,
        lines,
        given,
        candidates,
        " (or backend_hostname0-style numbered backend keys)",
    )
    _check_pool_hba_file(config, lambda key: _Where(key, lines.get(key)), ctx)
    _check_reserved_connections(config, lambda key: _Where(key, lines.get(key)), ctx)
    _check_features(config, lambda key: _Where(key, lines.get(key)), ctx)
    if not config.backends:
        _deliver(
            [ConfigWarning(NO_BACKEND_WARNING, source, lines.get("backends"), "backends")], warnings
        )
    return config


#: The warning for a configuration without backends (Debian's sample
#: pgpool.conf as shipped): the proxy starts, as Pgpool-II does.
NO_BACKEND_WARNING = (
    "no backend is configured (backend_hostname0 and backend_port0, or a backends list): "
    "clients are refused until a reload adds one and it is attached (pcp_attach_node)"
)


def _yaml_error(error: yaml.YAMLError, text: str, source: str) -> ConfigError:
    """
    One line from PyYAML's multi-line report, with a hint for the most common
    slip (an unquoted C{*}, which YAML reads as an alias).
    """
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is None:
        return ConfigError(f"invalid YAML: {problem}", source=source)
    reason = f"invalid YAML: {problem}"
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    key = _LINE_KEY.match(line)
    if key is not None and _names_a_secret(key.group(1)):
        # PyYAML quotes part of the value in some problems ("found
        # undefined alias 's3cret'" for a password starting with '*').
        reason = (
            "invalid YAML in the value of a secret setting (not shown); write the value in quotes"
        )
    elif re.search(r":\s*\*\s*(#.*)?$", line):
        reason += "; write '*' in quotes"
    return ConfigError(reason, source=source, line=mark.line + 1)


# The key at the start of a YAML line, also as an item of a list.
_LINE_KEY = re.compile(r"\s*(?:-\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*:")


def _names_a_secret(key: str) -> bool:
    """
    Whether C{key}, the first word of a YAML line, names a secret setting:
    a top-level one, one in a C{backends} item, or a backend's in the
    numbered spelling (C{backend_<name>0}).
    """
    names = {name.rsplit(".", 1)[-1] for name in secret_settings()}
    numbered = _numbered_key(key)
    return key in names or (numbered is not None and numbered[0] in names)


def load_config(
    path: str,
    warnings: Optional[List[ConfigWarning]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
) -> PgpoolConfig:
    """
    Read and check a C{conf.yaml}, or Pgpool-II's own C{pgpool.conf}.

    A file named C{*.conf}, or one whose first setting is C{name = value},
    is read as a C{pgpool.conf} (L{twisted_pgpool.config.pgpool_conf}); C{*.yaml},
    C{*.yml} and anything else as YAML.

    @param path: The file; relative paths inside it are resolved against its
        directory, and it is named as given in error messages.
    @param warnings: Receives a L{ConfigWarning} for each setting that is
        read but not used (see L{config_from_dict}), also when an error is
        raised; when omitted they are logged.
    @param overrides: Settings that replace the file's, from the command
        line (C{pool_hba_file}, C{pcp_conf_file}); kept in
        L{PgpoolConfig.overrides}.
    @raise ConfigError: If the file cannot be read, is not valid YAML (or
        C{pgpool.conf}), or holds an unknown key or an unusable value.
    """
    text = _read_text(path)
    found: List[ConfigWarning] = []
    try:
        pgpool_conf = _is_pgpool_conf(path, text)
        if pgpool_conf:
            document: Any = _read_pgpool_conf(text, path, found)
        else:
            document = _read_yaml(text, path)
        if overrides:
            lines = _key_lines(document)
            document = _LineDict({**document, **overrides})
            document.key_lines = {key: line for key, line in lines.items() if key not in overrides}
        config = config_from_dict(
            document, source=path, base_dir=os.path.dirname(os.path.abspath(path)), warnings=found
        )
    finally:
        _deliver(found, warnings)
    if overrides:
        config = attrs.evolve(config, overrides=tuple(sorted(overrides.items())))
    return config


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(
            f"cannot read the configuration file: {e.strerror or e}", source=path
        ) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (bad byte at offset {e.start})", source=path) from None


def _read_yaml(text: str, path: str) -> Mapping[Any, Any]:
    try:
        document = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as e:
        raise _yaml_error(e, text, path) from None
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise ConfigError(
            f"expected a mapping of setting names to values, got {_show(document)}",
            source=path,
            line=1,
        )
    return document


# ---------------------------------------------------------------------------
# Pgpool-II's pgpool.conf and parameter names (twisted_pgpool.config.pgpool_conf).


def _is_pgpool_conf(path: str, text: str) -> bool:
    """
    Whether to read C{path} as a C{pgpool.conf}: by its extension, else by
    its content.
    """
    extension = os.path.splitext(path)[1].lower()
    if extension in (".yaml", ".yml"):
        return False
    return extension == ".conf" or pgpoolconf.looks_like_pgpool_conf(text)


def _warning(note: pgpoolconf.Note, source: str) -> ConfigWarning:
    return ConfigWarning(note.message, source, note.line, note.key)


def _read_pgpool_conf(text: str, path: str, found: List[ConfigWarning]) -> "_LineDict":
    """
    A C{pgpool.conf} as the mapping with lines that YAML gives: every value
    is a string, which each setting's kind reads as it reads a YAML string.
    """
    try:
        _, settings, notes = pgpoolconf.read(text)
    except pgpoolconf.PgpoolConfError as e:
        raise ConfigError(e.reason, source=path, line=e.line, key=e.key) from None
    found.extend(_warning(note, path) for note in notes)
    document = _LineDict((key, value) for key, value, _ in settings)
    document.key_lines = {key: line for key, _, line in settings}
    return document


def _sort_out_pgpool_names(
    data: Mapping[Any, Any], source: str, found: List[ConfigWarning]
) -> Mapping[Any, Any]:
    """
    Drop the Pgpool-II parameters that do not apply here and rename the
    old ones (L{pgpoolconf.sort_out}), for a C{conf.yaml} as for a
    C{pgpool.conf}, with a warning each.
    """
    lines = _key_lines(data)
    kept, notes = pgpoolconf.sort_out(
        [(key, value, lines.get(key)) for key, value in data.items()], _our_names()
    )
    found.extend(_warning(note, source) for note in notes)
    if not notes:
        return data
    result = _LineDict((key, value) for key, (value, _) in kept.items())
    result.key_lines = {key: line for key, (_, line) in kept.items() if line is not None}
    return result


def _our_names() -> Set[str]:
    return set(_settings(PgpoolConfig)) | set(LEGACY_MODE_KEYS)


def convert_pgpool_conf(path: str) -> Tuple[str, List[ConfigWarning]]:
    """
    The C{conf.yaml} form of a C{pgpool.conf}, comments included
    (L{pgpoolconf.to_yaml}), for C{twisted-pgpool convert}.

    @return: The YAML text, and a warning for each setting not carried
        over as it was written.
    @raise ConfigError: The file cannot be read or is not a valid
        C{pgpool.conf}.  Values are not checked here; L{load_config} does.
    """
    text = _read_text(path)
    try:
        lines, settings, notes = pgpoolconf.read(text)
    except pgpoolconf.PgpoolConfError as e:
        raise ConfigError(e.reason, source=path, line=e.line, key=e.key) from None
    _, more = pgpoolconf.sort_out(settings, _our_names())
    yaml_text = pgpoolconf.to_yaml(lines, notes + more, yaml_plain_keeps_value, path)
    found: List[ConfigWarning] = []
    _deliver([_warning(note, path) for note in notes + more], found)
    return yaml_text, found


def yaml_plain_keeps_value(key: str, text: str) -> bool:
    """
    Whether C{key: text}, unquoted in YAML, gives the setting the value the
    string C{text} gives it; for C{twisted-pgpool convert}, which writes
    C{port: 9999} and C{load_balance_mode: on} but C{sr_check_user: '123'}
    and C{read_your_writes: 'off'}.
    """
    try:
        loaded = yaml.safe_load(f"{key}: {text}\n")
    except yaml.YAMLError:
        return False
    if not isinstance(loaded, dict) or list(loaded) != [key]:
        return False
    value = loaded[key]
    if isinstance(value, str):
        return value == text
    numbered = _numbered_key(key)
    kinds = _settings(BackendConfig) if numbered else _settings(PgpoolConfig)
    kind = kinds.get(numbered[0] if numbered else key)
    if kind is None:
        return False
    ctx = _Context("<convert>", os.path.abspath("."))
    where = _Where(key, None)
    try:
        return bool(kind.parse(value, ctx, where) == kind.parse(text, ctx, where))
    except (_Invalid, ConfigError):
        return False
