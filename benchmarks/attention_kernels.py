"""Which attention kernel a short-sequence LoRA training step should use on a CPU: sdpa vs eager.

    .venv/bin/python benchmarks/attention_kernels.py [--rows 64] [--repeats 3] [--threads 2] [--fp32]

The same run as benchmarks/train_vs_trl.py's spillover side (embedded model, LoRA r=8 all-linear, the
first 64 sst2 train rows, batch 8, 1 epoch, bf16 autocast), trained with spillover's loop `--repeats` times
per kernel in ONE process, alternating, so a busy shared host slows both alike. `eager` is what the loop
picks for these batches (`models.attention`: B·T² ≤ 8·128²); `sdpa` forces PyTorch's kernel by setting the
bound to 0. Prints tokens/s per run, each kernel's median and the ratio, and both loss curves.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from train_vs_trl import BATCH, LORA, build_data

from spillover.models import attention
from spillover.models.adapters import apply_lora
from spillover.models.load import Precision, load_model
from spillover.training.loop import train
from spillover.training.types import TrainParams


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fp32", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    _, seqs, _ = build_data(args.rows)
    precision = Precision(torch.device("cpu"), torch.float32 if args.fp32 else torch.bfloat16)
    base, tokenizer = load_model("embedded", precision, frozen=True)
    n_tokens = sum(len(s.input_ids) for s in seqs)
    bound = attention.EAGER_MAX_SCORES
    params = TrainParams(lr=2e-4, epochs=1, batch_size=BATCH, warmup_ratio=0.0, precision=precision)
    runs: dict[str, list[float]] = {"sdpa": [], "eager": []}
    losses: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for kernel in runs:
                attention.EAGER_MAX_SCORES = bound if kernel == "eager" else 0
                model = apply_lora(
                    base, r=LORA["r"], alpha=LORA["alpha"], target_modules=LORA["target_modules"]
                )
                result = train(model, tokenizer, seqs, params, Path(tmp) / f"{kernel}-{i}")
                runs[kernel].append(n_tokens / result.seconds)
                losses[kernel] = [
                    json.loads(line)["loss"] for line in result.log_path.read_text().splitlines()
                ]
                base = model.unload()  # the plain base again, for the next run's fresh adapter
    median = {k: statistics.median(v) for k, v in runs.items()}
    print(
        json.dumps(
            {
                "precision": "fp32" if args.fp32 else "bf16 autocast",
                "threads": args.threads,
                "tokens": n_tokens,
                "tokens_per_s": {k: [round(x, 1) for x in v] for k, v in runs.items()},
                "median_tokens_per_s": {k: round(v, 1) for k, v in median.items()},
                "eager_over_sdpa": round(median["eager"] / median["sdpa"], 2),
                "losses": {k: [round(x, 4) for x in v] for k, v in losses.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
