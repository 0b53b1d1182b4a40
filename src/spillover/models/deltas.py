"""Full fine-tunes stored as deltas: θ − θ0 in bf16, next to the model's config and tokenizer files.

A full fine-tune of a model kept in fp32 costs 4 bytes per parameter on disk; a study that trains a dozen
of them fills gigabytes for a 135M model and ~100 GB at 1.5B. Storing the update instead of the weights in
bf16 halves that, and is exact where it matters: bf16 keeps 8 significant bits of Δ (relative error ≤ 2⁻⁹
of each element of the update), while bf16 *weights* would round θ itself and can lose a small fine-tune's
whole update (|Δ| ≪ 2⁻⁹|θ|). Reading back adds Δ to θ0 in fp32.

`compact_model_dir` turns a saved model folder (`save_pretrained`) into a delta folder, atomically;
`DeltaState` reads a delta folder as a lazy name → θ mapping (one tensor in memory at a time), and
`load_delta_into_` adds the deltas to a freshly loaded base model. `FileState` reads a state saved as it
is (`save_file`, e.g. CPI-FT's fused start in fp32) the same lazy way.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from spillover.atomic import atomic_dir

DELTA_FILE = "delta.safetensors"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def is_delta_dir(folder: str | Path) -> bool:
    return (Path(folder) / DELTA_FILE).exists()


def _weights(files: list[Path]) -> Iterator[tuple[str, Tensor]]:
    """(name, tensor) of safetensors files, one tensor at a time."""
    for shard in files:
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                yield name, f.get_tensor(name)


def compact_model_dir(folder: str | Path, base: Mapping[str, Tensor]) -> None:
    """Replace the weights of the saved model in `folder` by Δ = θ − θ0 (bf16) for every tensor of `base`
    (θ0 by name, as `named_parameters` gives them). Atomic; a folder that is already a delta is left alone.
    Tensors the folder holds that `base` lacks (none for a model of the same architecture) are an error."""
    folder = Path(folder)
    if is_delta_dir(folder):
        return
    delta = {}
    for name, value in _weights(sorted(folder.glob("*.safetensors"))):
        if name not in base:
            raise ValueError(f"{folder}: tensor {name} has no counterpart in the base model")
        delta[name] = (value.float() - base[name].detach().float().cpu()).to(torch.bfloat16).contiguous()
    with atomic_dir(folder) as tmp:
        for item in folder.iterdir():
            if item.name not in WEIGHT_FILES and not item.name.endswith(".safetensors"):
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        save_file(delta, str(tmp / DELTA_FILE))


class DeltaState(Mapping):
    """θ = θ0 + Δ of a delta folder, by parameter name, computed on access (fp32; nothing cached)."""

    def __init__(self, folder: str | Path, base: Mapping[str, Tensor]) -> None:
        self.path, self.base = str(Path(folder) / DELTA_FILE), base
        with safe_open(self.path, framework="pt") as f:
            self._names = list(f.keys())

    def __getitem__(self, name: str) -> Tensor:
        with safe_open(self.path, framework="pt") as f:
            delta = f.get_tensor(name)
        base = self.base[name].detach()
        return base.float() + delta.to(device=base.device, dtype=torch.float32)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class FileState(Mapping):
    """The tensors of one safetensors file by name, read on access (as stored; nothing cached)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        with safe_open(self.path, framework="pt") as f:
            self._names = dict.fromkeys(f.keys())

    def __getitem__(self, name: str) -> Tensor:
        if name not in self._names:
            raise KeyError(name)
        with safe_open(self.path, framework="pt") as f:
            return f.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@torch.no_grad()
def load_delta_into_(model: nn.Module, folder: str | Path) -> nn.Module:
    """Add a delta folder's Δ to `model` (a fresh copy of its base) in place; returns the model."""
    params = dict(model.named_parameters())
    for name, delta in _weights([Path(folder) / DELTA_FILE]):
        params[name].add_(delta.to(device=params[name].device, dtype=params[name].dtype))
    return model
