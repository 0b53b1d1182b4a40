"""Compiled forward passes through public `torch.compile`, chosen by an explicit setting.

`Compiled(model)` wraps the model's forward in `torch.compile` (Inductor) without changing the model:
only calls made through the wrapper (the training loop's forward, log-likelihood scoring) run compiled;
every other forward pass of the same model (generation, a cached prefix, another job's evaluation) stays
eager, and the model's parameters, state dict and modules are the model's own. A PeftModel is compiled
through its base model (`get_base_model()`: the transformers model with peft's LoRA layers in it), so
peft's layers run unmodified inside the graph.

Whether to compile is the caller's explicit choice (`compile: true | false`; "auto", the default, runs
eagerly): nothing counts work or decides per process. This needs a C++ compiler for Inductor's CPU
kernels; if compiling fails, the work goes on eagerly with one warning per wrapper (`Compiled.__call__`).
Inductor keeps its own on-disk caches; spillover writes nothing into them.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

BACKEND = "inductor"
# the command-line spelling of a compile setting (`--compile auto|on|off`) -> the setting itself
COMPILE_CHOICES: dict[str, bool | str] = {"auto": "auto", "on": True, "off": False}


def wants_compile(setting: bool | str) -> bool:
    """True only for an explicit `True`: "auto" (the default) and False run eagerly."""
    return setting is True


class Compiled:
    """Calls `model(**inputs)` through `torch.compile`; eagerly once compiling has failed (see the module
    docstring). `work` names what runs compiled, for the warning."""

    def __init__(self, model: nn.Module, work: str = "training"):
        self.model = model
        target = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.compiled = torch.compile(target, backend=BACKEND, dynamic=True)
        self.work = work
        self.failed = False
        self.proven = False  # a compiled call went through

    def __call__(self, **inputs: Any) -> Any:
        if self.failed:
            return self.model(**inputs)
        try:
            out = self.compiled(**inputs)
        except Exception as err:
            if self.proven:  # compiling worked before: this error is the model's, not the compiler's
                raise
            self.failed = True
            first_line = (str(err).splitlines() or [""])[0]
            log.warning(
                "compile: compiling the model failed (%s: %s); %s runs eagerly",
                type(err).__name__,
                first_line,
                self.work,
            )
            return self.model(**inputs)
        self.proven = True
        return out
