"""LoRA adapters through peft: attach, save (PEFT format), load, and swap many adapters on one base model.

A study evaluates one base model with many adapters: load the base once, then `load_adapter` each adapter
under its own name, `activate` the one to score, and `base_only` to score the plain base model. Adapters
loaded for evaluation are frozen; `unload_adapter` frees one.

bf16 autocast and LoRA: peft adds the adapter's output to the base layer's bf16 output in bf16, and a
freshly trained adapter's contribution is usually below half a bf16 ulp of that output, so it rounds away
(measured on the embedded model: one LoRA step lowered the loss from 2.20 to 1.67 in fp32, but only to 2.12
under autocast). `apply_lora` and `load_adapter` therefore make every adapted layer's base output fp32
under autocast (`keep_adapter_sum_fp32`): the matmuls stay bf16, the sum is fp32. Outside autocast it is a
no-op. This uses torch's public module hooks around peft's own layers; peft's forward runs unmodified.
"""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from spillover.atomic import atomic_dir
from spillover.errors import SpilloverError

log = logging.getLogger(__name__)
DEFAULT = "default"
_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")  # peft keeps adapters in ModuleDicts: no dots


def is_peft(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def apply_lora(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    target_modules: str | list[str] = "all-linear",
    seed: int = 0,
):
    """Wrap `model` in a PeftModel with one trainable LoRA adapter named "default"; the base is frozen.

    `all-linear` targets every linear layer except the output head. The adapter's random init (A; B is
    zero) is drawn from `seed` without touching the global RNG, so the same call gives the same adapter.
    """
    from peft import LoraConfig, get_peft_model

    if r < 1:
        raise SpilloverError(f"LoRA rank r={r} is not allowed; use an integer ≥ 1")
    config = LoraConfig(
        task_type="CAUSAL_LM", r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
    keep_adapter_sum_fp32(peft_model)
    n_train = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    log.info("LoRA r=%d alpha=%g on %s: %d trainable parameters", r, alpha, target_modules, n_train)
    return peft_model


def save_adapter(model: nn.Module, directory: str | Path, name: str | None = None) -> Path:
    """Save one adapter (default: the active one) in PEFT format, atomically: `PeftModel.from_pretrained`
    and `load_adapter` read it back. Returns the folder."""
    if not is_peft(model):
        raise SpilloverError("save_adapter needs a model with LoRA adapters (see apply_lora)")
    name = name or model.active_adapter
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        model.save_pretrained(str(tmp), selected_adapters=[name])
        if name != DEFAULT:  # peft puts non-default adapters in a subfolder named after them
            for item in (tmp / name).iterdir():
                item.rename(tmp / item.name)
            (tmp / name).rmdir()
    return directory


def load_adapter(base_model: nn.Module, directory: str | Path, name: str | None = None):
    """Load a saved adapter onto `base_model` (a plain model or a PeftModel that has adapters) and make it
    active. Frozen (for evaluation). Returns the PeftModel; the adapter is `model.active_adapter`.

    `name` defaults to "default"; give each adapter its own name to hold several on one base.
    """
    from peft import PeftModel

    directory, name = Path(directory), name or DEFAULT
    if not (directory / "adapter_config.json").exists():
        raise SpilloverError(f"{directory} is not a saved adapter (no adapter_config.json in it)")
    if not _NAME.match(name):
        raise SpilloverError(f"adapter name '{name}' is not allowed; use letters, digits, _ and -")
    if not is_peft(base_model):
        model = PeftModel.from_pretrained(base_model, str(directory), adapter_name=name, is_trainable=False)
    elif name in base_model.peft_config:
        raise SpilloverError(f"an adapter named '{name}' is already loaded; pass another name or unload it")
    else:
        model = base_model
        model.load_adapter(str(directory), adapter_name=name, is_trainable=False)
        activate(model, name)
    keep_adapter_sum_fp32(model)
    return model


class _Fp32Sum:
    """The fp32 adapter sum of one base layer: `enter`/`leave` (hooks on the LoRA layers wrapping it) mark
    when an adapter is being added; meanwhile `upcast` (a forward hook on the base layer) returns its output
    in fp32 under autocast. peft then adds the adapter's contribution to an fp32 tensor and keeps the
    result in that dtype."""

    def __init__(self) -> None:
        self.inside = False

    def enter(self, module: nn.Module, args) -> None:
        self.inside = not module.disable_adapters and not module.merged

    def leave(self, module: nn.Module, args, output) -> None:
        self.inside = False

    def upcast(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor | None:
        if self.inside and output.dtype != torch.float32 and torch.is_autocast_enabled(output.device.type):
            return output.float()
        return None  # unchanged


# which base layers and LoRA layers carry the hooks already (weak: freed with their modules)
_SUMS: weakref.WeakKeyDictionary[nn.Module, _Fp32Sum] = weakref.WeakKeyDictionary()
_HOOKED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def keep_adapter_sum_fp32(model: nn.Module) -> None:
    """Under autocast, make the base output of every LoRA-adapted layer fp32 while an adapter is being
    added, so peft adds the adapter's (bf16-computed) contribution in fp32 instead of rounding it away.

    Idempotent, and only public module hooks: peft's layers and their forward are untouched. Leaves no
    trace on the plain base model: with adapters disabled (`base_only`) or unloaded (`unload()`), the base
    layers compute exactly as without peft (their hook changes nothing outside an adapter's forward).
    """
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if not isinstance(module, LoraLayer) or module in _HOOKED:
            continue
        base = module.get_base_layer()
        if base not in _SUMS:  # one hook per base layer, however many LoRA layers wrap it over time
            _SUMS[base] = _Fp32Sum()
            base.register_forward_hook(_SUMS[base].upcast)
        module.register_forward_pre_hook(_SUMS[base].enter)
        module.register_forward_hook(_SUMS[base].leave, always_call=True)
        _HOOKED.add(module)


def activate(model: nn.Module, name: str) -> None:
    """Make adapter `name` the one used by forward passes (kept frozen)."""
    if name not in model.peft_config:
        raise SpilloverError(f"no adapter named '{name}' is loaded; loaded: {', '.join(model.peft_config)}")
    model.set_adapter(name, inference_mode=True)


def unload_adapter(model: nn.Module, name: str) -> None:
    """Remove adapter `name` from the model and free its weights."""
    model.delete_adapter(name)


@contextmanager
def base_only(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, forward passes use the plain base model (every adapter bypassed)."""
    if not is_peft(model):
        yield model
        return
    frozen = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        with model.disable_adapter():
            yield model
    finally:  # peft re-enables gradients on the active adapter when it re-enables the layers: undo that
        for n, p in model.named_parameters():
            p.requires_grad_(frozen[n])
