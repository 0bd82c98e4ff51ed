"""
YAML with line numbers: mappings and sequences that remember where each key
and item was, so that an error names the line.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Set

import yaml


class _LineDict(Dict[Any, Any]):
    """
    A YAML mapping that remembers the line of each key.
    """

    key_lines: Dict[Any, int]


class _LineList(List[Any]):
    """
    A YAML sequence that remembers the line of each item.
    """

    item_lines: List[int]


class _LineLoader(yaml.SafeLoader):
    """
    A safe loader whose mappings and sequences carry line numbers, and which
    refuses duplicate keys (YAML would silently keep the last one, hiding a
    setting the user believes is in effect).
    """

    def construct_line_mapping(self, node: Any) -> Iterator[_LineDict]:
        data = _LineDict()
        yield data
        seen: Set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        self.flatten_mapping(node)
        data.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=False)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain word", key_node.start_mark
                )
            data[key] = self.construct_object(value_node, deep=False)
            data.key_lines[key] = key_node.start_mark.line + 1

    def construct_line_sequence(self, node: Any) -> Iterator[_LineList]:
        data = _LineList()
        yield data
        data.extend(self.construct_sequence(node))
        data.item_lines = [child.start_mark.line + 1 for child in node.value]


_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader.construct_line_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _LineLoader.construct_line_sequence)
