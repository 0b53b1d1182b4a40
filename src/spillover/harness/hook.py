"""Make `lm_eval --model spillover` work on lm-eval releases that do not read plugin entry points.

spillover declares its model in the `lm_eval.models` entry-point group (pyproject.toml), which lm-eval
reads from the release that carries its plugin discovery (EleutherAI/lm-evaluation-harness#4013). lm-eval
0.4.13 and earlier only know the models listed in `lm_eval/models/__init__.py`. For them, the
`spillover-lm-eval.pth` file installed beside spillover imports this module at interpreter start; it
adds one finder to `sys.meta_path` that waits for `lm_eval.models` (the module lm-eval imports to fill
its model registry) and, once that module has run, registers `spillover` there as a lazy placeholder
(`model_registry.register(name, target="module:Class")`, lm-eval's documented lazy registration). Nothing
of spillover, torch or lm-eval is imported until lm-eval itself asks for the model.

Costs every interpreter of the environment one small module import (stdlib only); a name registered
already (by the entry point, or by importing `spillover.harness.backend`) is left alone.
"""

from __future__ import annotations

import importlib.machinery
import sys

WATCHED = "lm_eval.models"
MODEL_NAME = "spillover"
MODEL_TARGET = "spillover.harness.backend:SpilloverLM"


def register_model() -> None:
    """Register spillover's model in lm-eval's registry unless the name is taken."""
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=MODEL_TARGET)


class _ThenRegister:
    """Wraps the loader of `lm_eval.models`: runs the module, then `register_model`."""

    def __init__(self, loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        register_model()

    def __getattr__(self, name: str):
        return getattr(self.loader, name)


class LmEvalModelsFinder:
    """A `sys.meta_path` finder that only answers for `lm_eval.models`, then steps aside."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname != WATCHED:
            return None
        remove()
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegister(spec.loader)
        return spec


def install() -> None:
    """Put the finder first on `sys.meta_path` (once); if lm-eval's models are loaded already, register."""
    if WATCHED in sys.modules:
        register_model()
    elif not any(isinstance(f, LmEvalModelsFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, LmEvalModelsFinder())


def remove() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, LmEvalModelsFinder)]


install()
