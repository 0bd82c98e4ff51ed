"""
Keep C{docs/configuration.md} and the configuration model in step: a setting
added to one and not the other fails here.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Set

from twisted.trial.unittest import SynchronousTestCase

from twisted_pgpool.config import documented_keys, secret_settings, setting_contexts

DOC = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "configuration.md"
)

# A table row whose first cell is exactly one code span: | `key` | ...
_KEY_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|")
# A cell boundary: a bar not escaped as \| (flags are shown as `A\|B`).
_CELL_BAR = re.compile(r"(?<!\\)\|")


def _cells(line: str) -> List[str]:
    return [cell.strip() for cell in _CELL_BAR.split(line.strip())[1:-1]]


def keys_in_settings_tables(text: str) -> List[str]:
    """
    The key names in the first cell of table rows under the C{## Settings}
    heading; earlier sections (porting notes) may show other names in code.
    """
    keys: List[str] = []
    in_settings = False
    for line in text.splitlines():
        if line.startswith("## "):
            in_settings = line.strip() == "## Settings"
            continue
        match = _KEY_ROW.match(line)
        if in_settings and match:
            keys.append(match.group(1))
    return keys


def contexts_in_settings_tables(text: str) -> Dict[str, str]:
    """
    The C{Context} cell of each key row under C{## Settings}, by key; a row
    of a table without that column maps to C{""}.
    """
    contexts: Dict[str, str] = {}
    in_settings = False
    column = None
    for line in text.splitlines():
        if line.startswith("## "):
            in_settings = line.strip() == "## Settings"
            continue
        if not in_settings or not line.startswith("|"):
            continue
        match = _KEY_ROW.match(line)
        cells = _cells(line)
        if match is None:
            if "Key" in cells:
                column = cells.index("Context") if "Context" in cells else None
            continue
        contexts[match.group(1)] = cells[column] if column is not None else ""
    return contexts


#: What the row of a secret setting says (see the C{Settings} section).
SECRET_NOTE = "Secret: shown as `*****`."


def keys_marked_secret(text: str) -> Set[str]:
    """
    The keys under C{## Settings} whose row says L{SECRET_NOTE}.
    """
    marked: Set[str] = set()
    in_settings = False
    for line in text.splitlines():
        if line.startswith("## "):
            in_settings = line.strip() == "## Settings"
            continue
        match = _KEY_ROW.match(line)
        if in_settings and match and SECRET_NOTE in line:
            marked.add(match.group(1))
    return marked


class ConfigurationDocsTests(SynchronousTestCase):
    def setUp(self) -> None:
        with open(DOC, encoding="utf-8") as f:
            text = f.read()
        self.secret_in_docs: Set[str] = keys_marked_secret(text)
        self.documented: List[str] = keys_in_settings_tables(text)
        self.contexts: Dict[str, str] = contexts_in_settings_tables(text)
        self.model: Set[str] = documented_keys()

    def test_each_key_shows_the_context_of_the_code(self) -> None:
        model = setting_contexts()
        wrong = {
            key: (shown, model.get(key))
            for key, shown in self.contexts.items()
            if shown != model.get(key)
        }
        self.assertEqual(wrong, {}, "key: (docs/configuration.md, code)")

    def test_context_parser_reads_the_column_by_its_header(self) -> None:
        text = (
            "## Settings\n"
            "| Key | Type | Default | Context | Meaning |\n"
            "|---|---|---|---|---|\n"
            "| `port` | integer | `9999` | start | TCP port. |\n"
            "| `backends[].flag` | flags joined by `\\|` | x | reload | y |\n"
            "| Key | Meaning |\n"
            "|---|---|\n"
            "| `other` | no context column |\n"
        )
        self.assertEqual(
            contexts_in_settings_tables(text),
            {"port": "start", "backends[].flag": "reload", "other": ""},
        )

    def test_the_secret_settings_are_the_ones_the_docs_say_are_masked(self) -> None:
        self.assertEqual(
            self.secret_in_docs,
            secret_settings(),
            f"mark these rows of docs/configuration.md with {SECRET_NOTE!r}",
        )

    def test_every_setting_in_the_model_is_documented(self) -> None:
        missing = self.model - set(self.documented)
        self.assertEqual(missing, set(), "add these keys to docs/configuration.md")

    def test_every_documented_key_exists_in_the_model(self) -> None:
        extra = set(self.documented) - self.model
        self.assertEqual(extra, set(), "docs/configuration.md lists unknown keys")

    def test_each_key_is_documented_once(self) -> None:
        repeated = sorted({key for key in self.documented if self.documented.count(key) > 1})
        self.assertEqual(repeated, [])

    def test_nested_backend_keys_are_documented_with_their_path(self) -> None:
        self.assertIn("backends[].hostname", self.documented)
        self.assertIn("backends[].flag", self.documented)

    def test_parser_reads_only_the_settings_section(self) -> None:
        text = (
            "## Porting\n"
            "| `backend_hostnameN` | x |\n"
            "## Settings\n"
            "### Connections\n"
            "| Key | Type |\n"
            "|---|---|\n"
            "| `port` | integer |\n"
            "| not code | x |\n"
        )
        self.assertEqual(keys_in_settings_tables(text), ["port"])


class SettingDescriptionsTests(SynchronousTestCase):
    """
    twisted_pgpool/config/descriptions.py (the description column of
    PGPOOL SHOW ALL) is generated from docs/configuration.md: regenerate it
    with tools/setting_descriptions.py when the docs change.
    """

    def test_descriptions_match_the_docs(self) -> None:
        import importlib.util

        from twisted_pgpool.config.descriptions import DESCRIPTIONS

        tool = os.path.join(os.path.dirname(DOC), os.pardir, "tools", "setting_descriptions.py")
        spec = importlib.util.spec_from_file_location("setting_descriptions", tool)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        self.assertEqual(
            DESCRIPTIONS, module.descriptions(DOC), "run python tools/setting_descriptions.py"
        )

    def test_every_setting_is_described(self) -> None:
        from twisted_pgpool.config import config_from_dict, describe_setting, settings_for_display

        config = config_from_dict({"backends": [{"hostname": "h"}], "pool_passwd": ""})
        undescribed = [
            name for name, _ in settings_for_display(config) if not describe_setting(name)
        ]
        self.assertEqual(undescribed, [])
