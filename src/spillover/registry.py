"""One small name -> object registry used for metrics, objectives, regularisers, studies, transforms.

Names are short and stable: they appear in user YAML and in cache keys, never import paths.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

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
        if not isinstance(name, str) or name not in self._items:
            raise SpilloverError(unknown_name_message(self.kind, str(name), self._items))
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def check_params(kind: str, name: str, fn: Callable, params: Mapping[str, Any], skip: int) -> None:
    """Check `params` against `fn`'s signature after its first `skip` arguments, before any work: unknown
    and missing names, and each value against its annotation (strictly: "0.5" is not a float, nan and inf
    are not allowed; `Annotated[float, Field(ge=0)]` bounds are honoured). Raises SpilloverError."""
    import pydantic

    allowed = dict(list(inspect.signature(fn, eval_str=True).parameters.items())[skip:])
    for key in params:
        if key not in allowed:
            raise SpilloverError(
                f"{kind} '{name}': unknown parameter '{key}'; allowed: {', '.join(allowed) or '(none)'}"
            )
    missing = [k for k, p in allowed.items() if p.default is inspect.Parameter.empty and k not in params]
    if missing:
        raise SpilloverError(f"{kind} '{name}': missing parameter(s) {', '.join(missing)}")
    config = pydantic.ConfigDict(strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)
    for key, value in params.items():
        annotation = allowed[key].annotation
        if annotation is inspect.Parameter.empty:
            continue
        try:
            pydantic.TypeAdapter(annotation, config=config).validate_python(value)
        except pydantic.ValidationError as e:
            problem = e.errors()[0]["msg"]
            raise SpilloverError(f"{kind} '{name}': {key} = {value!r}: {problem}") from None
