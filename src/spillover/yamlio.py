"""YAML at the edge: parse with line numbers in errors, validate into pydantic models with field paths."""

from __future__ import annotations

import collections.abc
import reprlib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from spillover.errors import SpilloverError

M = TypeVar("M", bound=BaseModel)

# A YAML document may reuse anchored values (`*alias`), but expanded it must stay small: a "billion laughs"
# file of a few hundred bytes expands to 10^9 values, and any code that walks it (validation, an error
# message) would run out of memory. Far above any real spec (a 100-source study is ~10^4 values).
MAX_EXPANDED_NODES = 1_000_000
# Error messages quote a bad value at most this long (nested values are cut per level, not expanded).
_QUOTE = reprlib.Repr()  # keyword arguments need Python 3.12
_QUOTE.maxlevel, _QUOTE.maxlist, _QUOTE.maxdict, _QUOTE.maxstring, _QUOTE.maxother = 3, 6, 6, 120, 120


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden, by design
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, collections.abc.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key '{key}' is given twice (first on line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            if isinstance(key, collections.abc.Hashable):
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise SpilloverError(f"file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpilloverError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    loader = UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            check_expansion(node, path)
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise SpilloverError(f"{where}: malformed YAML: {problem}") from None
    finally:
        loader.dispose()
    if data is None:
        raise SpilloverError(f"{path}: the file is empty")
    return data


def check_expansion(root: yaml.Node, path: Path, limit: int = MAX_EXPANDED_NODES) -> None:
    """Refuse a document whose aliases expand to more than `limit` values. Counted on the composed node
    graph (an alias is the same node object as its anchor), each distinct node once: linear in the file."""
    size: dict[int, int] = {}

    def expanded(node: yaml.Node) -> int:
        if id(node) not in size:
            size[id(node)] = 0  # a recursive alias counts as one value here, not forever
            children = node.value if isinstance(node, yaml.CollectionNode) else []
            pairs = [c for pair in children for c in pair] if isinstance(node, yaml.MappingNode) else children
            size[id(node)] = min(1 + sum(expanded(c) for c in pairs), limit + 1)
        return size[id(node)]

    if expanded(root) > limit:
        raise SpilloverError(
            f"{path}:{root.start_mark.line + 1}: the document's aliases (*name) expand to more than {limit:,} "
            "values; write the values out, or reuse anchors less deeply"
        )


def quote(value: Any) -> str:
    """A bad value for an error message: its repr, cut short (never expands a large or aliased value)."""
    return _QUOTE.repr(value)


def validate(model: type[M], data: Any, origin: str) -> M:
    """`model.model_validate(data)` with one readable message per problem, naming the field path."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise SpilloverError(format_validation_error(e, model, origin)) from None


def format_validation_error(e: ValidationError, model: type[BaseModel], origin: str) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(model, err["loc"][:-1]))
            lines.append(f"unknown key '{loc}'; allowed keys: {allowed}")
        elif err["type"] == "missing":
            lines.append(f"missing required key '{loc}'")
        elif not err["loc"]:  # a whole-spec check: its message names the fields, the input is the whole file
            lines.append(err["msg"].removeprefix("Value error, "))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if isinstance(err.get("input"), bool) and err["type"] == "string_type":
                msg += " (YAML reads yes/no/on/off as booleans; quote it: 'yes')"
            lines.append(f"{loc} = {quote(err.get('input'))}: {msg}")
    return f"{origin}: " + "; ".join(lines)


def _allowed_keys(model: type[BaseModel], path: tuple) -> list[str]:
    """Walk nested pydantic models along `path` to list the keys allowed at that level."""
    current: Any = model
    for part in path:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part)
        ann = field.annotation if field else None
        current = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)), None)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []
