"""One small name -> object registry used for metrics, objectives, regularisers, studies, transforms.

Names are short and stable: they appear in user YAML and in cache keys, never import paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from spillover.errors import SpilloverError, unknown_name_message

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection: `@reg.register("name")` to add, `reg.get("name")` to look up."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            raise SpilloverError(unknown_name_message(self.kind, name, self._items))
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
