"""YAML at the edge: parse with line numbers in errors, validate into pydantic models with field paths."""

from __future__ import annotations

import collections.abc
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from spillover.errors import SpilloverError

M = TypeVar("M", bound=BaseModel)


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
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise SpilloverError(f"{where}: malformed YAML: {problem}") from None
    if data is None:
        raise SpilloverError(f"{path}: the file is empty")
    return data


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
            lines.append(f"{loc} = {err.get('input')!r}: {msg}")
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
