"""Study kinds: one subpackage each (transfer/, generalization/, tradeoff/, mixture/, multitask/), found by
name. Each subpackage registers a `StudyKind` (studies/contract.py) in `STUDIES` from its `__init__.py`;
the registry imports every subpackage the first time a kind is looked up, so a new kind is a new folder
and touches no other file. Kinds defined elsewhere (a plugin, a test) register with `STUDIES.register`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING

from spillover.registry import Registry

if TYPE_CHECKING:
    from spillover.studies.contract import StudyKind


class _Kinds(Registry["Callable[[], StudyKind]"]):
    """The registry of study kinds, filled from the subpackages on first use."""

    def __init__(self) -> None:
        super().__init__("study kind")
        self._found = False

    def _discover(self) -> None:
        if not self._found:
            self._found = True
            for module in pkgutil.iter_modules(__path__):
                if module.ispkg:
                    importlib.import_module(f"{__name__}.{module.name}")

    def get(self, name: str) -> Callable[[], StudyKind]:
        self._discover()
        return super().get(name)

    def names(self) -> list[str]:
        self._discover()
        return super().names()

    def __contains__(self, name: object) -> bool:
        self._discover()
        return super().__contains__(name)


STUDIES = _Kinds()
