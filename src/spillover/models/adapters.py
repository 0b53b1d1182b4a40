"""LoRA adapters through peft: attach, save (PEFT format), load, and swap many adapters on one base model.

A study evaluates one base model with many adapters: load the base once, then `load_adapter` each adapter
under its own name, `activate` the one to score, and `base_only` to score the plain base model. Adapters
loaded for evaluation are frozen; `unload_adapter` frees one.

bf16 autocast and LoRA: peft adds the adapter's output to the base layer's bf16 output in bf16, and a
freshly trained adapter's contribution is usually below half a bf16 ulp of that output, so it rounds away
(measured on the embedded model: one LoRA step lowered the loss from 2.20 to 1.67 in fp32, but only to 2.12
under autocast). `apply_lora` and `load_adapter` therefore make every adapted layer's base output fp32
under autocast (`keep_adapter_sum_fp32`): the matmuls stay bf16, the sum is fp32. Outside autocast it is a
no-op.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spillover.atomic import atomic_dir
from spillover.errors import SpilloverError
from spillover.models.load import linears_in_fp32

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
    with torch.random.fork_rng(devices=[]), linears_in_fp32(model):  # fp32 init also on a bf16-stored base
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


def keep_adapter_sum_fp32(model: nn.Module) -> None:
    """Under autocast, make the base output of every LoRA-adapted layer fp32 while an adapter is being
    added, so peft adds the adapter's (bf16-computed) contribution in fp32 instead of rounding it away.

    Idempotent. Leaves no trace on the plain base model: with adapters disabled (`base_only`) or unloaded
    (`unload()`), the base layers compute exactly as without peft. peft's `lora.Linear` layers become
    `_Fp32SumLinear` (a subclass, see there); other LoRA layer types get the fp32 sum from hooks.
    """
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if not isinstance(module, LoraLayer) or getattr(module, "_spillover_fp32_sum", False):
            continue
        base = module.get_base_layer()
        if not getattr(base, "_spillover_fp32_hook", False):  # one hook per base layer, however many wrappers
            base.register_forward_hook(_upcast_inside_adapter)
            base._spillover_fp32_hook = True
        if type(module) is LoraLinear:
            module.__class__ = _fp32_sum_linear()
        else:
            module.register_forward_pre_hook(_enter_adapter)
            module.register_forward_hook(_leave_adapter, always_call=True)
        module._spillover_fp32_sum = True


@cache
def _fp32_sum_linear() -> type:
    """peft's `lora.Linear` with the fp32 adapter sum built in. A class, not per-layer hooks or a per-layer
    bound forward: `torch.compile` of a decoder layer then traces one function for every layer instead of
    recompiling per layer (it guards on hook and function identities). Built on first use because importing
    peft takes seconds; module `__getattr__` below lets pickle find it."""
    from peft.tuners.lora import Linear as LoraLinear

    class _Fp32SumLinear(LoraLinear):
        def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            name = _plain_adapter(self, x, args, kwargs)
            if name is not None:
                return _plain_forward(self, name, x)
            _enter_adapter(self, ())
            try:
                return super().forward(x, *args, **kwargs)
            finally:
                _leave_adapter(self, (), None)

    _Fp32SumLinear.__module__, _Fp32SumLinear.__qualname__ = __name__, "_Fp32SumLinear"
    return _Fp32SumLinear


def __getattr__(name: str):
    if name == "_Fp32SumLinear":
        return _fp32_sum_linear()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _plain_forward(module: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """A plain LoRA linear layer under autocast, computed directly: the same operations and roundings as
    peft's forward with the fp32 sum (bit-identical outputs and gradients, tested), minus what peft adds
    around them: an fp32 up-cast and bf16 down-cast of an input that is already bf16, a mixed-dtype add,
    and three hook calls. Without gradients one bf16 copy of the input feeds both matmuls; with them each
    path casts its own, as under peft, so the two input gradients are summed in the input's dtype."""
    base, lora_a, lora_b = module.get_base_layer(), module.lora_A[name], module.lora_B[name]
    dropout = module.lora_dropout[name]
    dev = x.device.type
    cd = torch.get_autocast_dtype(dev)
    # Every matmul input is cast to `cd` explicitly, so autocast (still on) has nothing left to cast. Not
    # turning it off here matters: an autocast region inside a compiled graph makes AOTAutograd bypass its
    # on-disk cache, and every process would re-trace the layer (~15 s) instead of loading it.
    xb = x.to(cd)  # what autocast feeds the base layer
    y = F.linear(xb, base.weight.to(cd), _to(base.bias, cd))
    if not isinstance(dropout, nn.Identity):  # peft's dropout sees the input in the adapter's dtype
        xa = dropout(x.to(lora_a.weight.dtype)).to(cd)
    else:
        xa = x.to(cd) if torch.is_grad_enabled() else xb
    t = F.linear(
        F.linear(xa, lora_a.weight.to(cd), _to(lora_a.bias, cd)),
        lora_b.weight.to(cd),
        _to(lora_b.bias, cd),
    )
    return y.float().add_(t * module.scaling[name])  # bf16 product, exact up-cast inside the fp32 add


def _plain_adapter(module: nn.Module, x: torch.Tensor, args, kwargs) -> str | None:
    """The active adapter's name when `_plain_forward` may compute the layer (else peft's forward does)."""
    if args or kwargs or not torch.is_autocast_enabled(x.device.type):
        return None
    if module.disable_adapters or module.merged or module.fan_in_fan_out or len(module.active_adapters) != 1:
        return None
    name = module.active_adapters[0]
    if (
        name not in module.lora_A
        or name in module.lora_variant
        or not getattr(module, "cast_input_dtype_enabled", True)
        or not isinstance(module.get_base_layer(), nn.Linear)
    ):
        return None
    return name


def _to(bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if bias is None else bias.to(dtype)


def _enter_adapter(module: nn.Module, args) -> None:
    module.get_base_layer()._spillover_inside = not module.disable_adapters and not module.merged


def _leave_adapter(module: nn.Module, args, output) -> None:
    module.get_base_layer()._spillover_inside = False


def _upcast_inside_adapter(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor | None:
    inside = getattr(module, "_spillover_inside", False)
    if inside and output.dtype != torch.float32 and torch.is_autocast_enabled(output.device.type):
        return output.float()
    return None  # unchanged


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
