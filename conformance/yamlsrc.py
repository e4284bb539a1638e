"""A safe YAML loader that remembers where every mapping key and value came from.

Mappings load as ``SourceMap`` (a dict) and sequences as ``SourceList`` (a list); both carry the
location of themselves and of each member, so every error can point at ``file:line:col``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import Location, SourceError


class SourceMap(dict[str, Any]):
    location: Location
    key_locations: dict[str, Location]
    value_locations: dict[str, Location]


class SourceList(list[Any]):
    location: Location
    item_locations: list[Location]


def _loc(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Loader(yaml.SafeLoader):
    file = "<string>"


# Dates stay strings (the schemas check them): a YAML timestamp would not be JSON.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> SourceMap:
    result = SourceMap()
    result.location = _loc(loader.file, node)
    result.key_locations = {}
    result.value_locations = {}
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise SourceError(
                f"mapping keys must be strings, got {key!r}", _loc(loader.file, key_node)
            )
        if key in result:
            raise SourceError(f"duplicate key {key!r}", _loc(loader.file, key_node))
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_locations[key] = _loc(loader.file, key_node)
        result.value_locations[key] = _loc(loader.file, value_node)
    return result


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> SourceList:
    result = SourceList(loader.construct_object(child, deep=True) for child in node.value)
    result.location = _loc(loader.file, node)
    result.item_locations = [_loc(loader.file, child) for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


def load_yaml(path: Path, error: type[SourceError] = SourceError) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read the file: {exc.strerror}", Location(str(path), 1, 1)) from None
    return loads(text, str(path), error)


def loads(text: str, file: str, error: type[SourceError] = SourceError) -> Any:
    loader = _Loader(text)
    loader.file = file
    try:
        return loader.get_single_data()
    except SourceError as exc:
        raise error(exc.message, exc.location, excerpt_at(text, exc.location)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        location = Location(file, mark.line + 1, mark.column + 1) if mark else None
        problem = exc.problem or exc.context or "malformed YAML"
        raise error(f"not valid YAML: {problem}", location, excerpt_at(text, location)) from None
    except yaml.YAMLError as exc:
        raise error(f"not valid YAML: {exc}", Location(file, 1, 1)) from None
    finally:
        loader.dispose()


def excerpt_at(text: str, location: Location | None, context: int = 1) -> str:
    """The lines around a location with a caret under the column, for error messages."""
    if location is None:
        return ""
    lines = text.splitlines()
    index = location.line - 1
    if not 0 <= index < len(lines):
        return ""
    out = []
    for i in range(max(0, index - context), min(len(lines), index + context + 1)):
        out.append(f"{i + 1:>5} | {lines[i]}")
        if i == index:
            out.append("      | " + " " * (location.column - 1) + "^")
    return "\n".join(out)


def locate(document: Any, path: list[str | int]) -> Location | None:
    """The most precise location known for a JSON path into a loaded document."""
    node = document
    best: Location | None = getattr(document, "location", None)
    for part in path:
        if isinstance(node, SourceMap) and isinstance(part, str) and part in node:
            best = node.value_locations.get(part, best)
            node = node[part]
        elif isinstance(node, SourceList) and isinstance(part, int) and part < len(node):
            best = node.item_locations[part]
            node = node[part]
        else:
            break
    return best


def key_location(document: Any, path: list[str | int], key: str) -> Location | None:
    node = document
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return locate(document, path)
    if isinstance(node, SourceMap) and key in node.key_locations:
        return node.key_locations[key]
    return locate(document, path)
