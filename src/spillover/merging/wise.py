"""WiSE-FT (methods.md §4.4): after fine-tuning, θ(α) = α·θ_ft + (1 − α)·θ0, evaluated for several α.

Pure tensor maths plus two thin in-place wrappers, so no interpolated model is ever written to disk:

- full fine-tuning: `interpolate_(tuned, base, α)` overwrites the tuned copy's parameters with
  lerp(θ0, θ_ft, α) one tensor at a time (only one extra tensor in memory at once);
- LoRA: the adapter's update ΔW = s·B·A is linear in B, so scaling every `lora_B` by α gives exactly
  W0 + α·ΔW = α·W_ft + (1 − α)·W0 (`scale_adapter_`). Apply it to a loaded copy of the adapter.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from spillover.errors import SpilloverError


def wise(theta_ft: Tensor, theta_0: Tensor, alpha: float) -> Tensor:
    """α·θ_ft + (1 − α)·θ0 (computed in fp32, returned in θ_ft's dtype)."""
    return torch.lerp(theta_0.float(), theta_ft.float(), alpha).to(theta_ft.dtype)


def check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise SpilloverError(f"WiSE-FT alpha={alpha!r} is not allowed; use a number in [0, 1]")


@torch.no_grad()
def interpolate_(tuned: nn.Module, base: nn.Module, alpha: float) -> nn.Module:
    """Overwrite `tuned`'s parameters and buffers with `wise(tuned, base, α)` in place; returns `tuned`.
    Both must have the same architecture (parameter names and shapes)."""
    check_alpha(alpha)
    reference = dict(base.named_parameters()) | dict(base.named_buffers())
    for name, p in [*tuned.named_parameters(), *tuned.named_buffers()]:
        if name not in reference or reference[name].shape != p.shape:
            raise SpilloverError(
                f"WiSE-FT: the base model has no parameter '{name}' of shape {tuple(p.shape)}"
            )
        if p.is_floating_point():
            p.copy_(wise(p, reference[name].to(p.device), alpha))
    return tuned


@torch.no_grad()
def scale_adapter_(model: nn.Module, alpha: float) -> int:
    """Multiply every LoRA `lora_B` weight of `model` by α in place: the adapter's update becomes α·ΔW.
    Returns how many tensors were scaled (0 means the model has no LoRA adapter: an error)."""
    check_alpha(alpha)
    scaled = 0
    for name, p in model.named_parameters():
        if ".lora_B." in name:
            p.mul_(alpha)
            scaled += 1
    if not scaled:
        raise SpilloverError("WiSE-FT on an adapter: the model has no LoRA weights (lora_B) to scale")
    return scaled
