"""Training throughput on the embedded model: LoRA r=8 all-linear on sst2 rows, 2 threads.

    SPILLOVER_HOME=/tmp/sphome .venv/bin/python benchmarks/train_lora_embedded.py [--rows 64] [--fp32]

Reports tokens/s (prompt + target tokens, padding excluded) over the whole run and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from spillover.data.sft import build_sequences
from spillover.data.tasks import BUILTIN_FILE, load_examples, load_task_file
from spillover.models.adapters import apply_lora
from spillover.models.load import Precision, load_model
from spillover.training.loop import train
from spillover.training.types import TrainParams

TASK_YAML = """tasks:
  - name: sst2_bench
    type: classification
    train: {data}/train.jsonl
    test: {data}/test.jsonl
    input: input
    target: output
    labels: [negative, positive]
    metric: accuracy
    instruction: Is the sentiment of this movie review negative or positive?
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument(
        "--data", default=str(BUILTIN_FILE.parent / "sst2"), help="folder with train.jsonl, test.jsonl"
    )
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="spillover-bench-"))
    (work / "tasks.yaml").write_text(TASK_YAML.format(data=args.data))
    task = load_task_file(work / "tasks.yaml")["sst2_bench"]
    compute = torch.float32 if args.fp32 else torch.bfloat16
    precision = Precision(torch.device("cpu"), compute)
    model, tokenizer = load_model("embedded", precision, frozen=True)
    model = apply_lora(model, r=8, alpha=16, target_modules="all-linear")
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seqs = build_sequences(task, tokenizer, load_examples(task, "train", limit=args.rows), max_len=256)
    params = TrainParams(lr=2e-4, epochs=1, batch_size=8, warmup_ratio=0.0, precision=precision)
    t0 = time.perf_counter()
    result = train(model, tokenizer, seqs, params, work / "run")
    wall = time.perf_counter() - t0
    n_input = sum(len(s.input_ids) for s in seqs)
    steps = [json.loads(line) for line in result.log_path.read_text().splitlines()]
    summary = {
        "precision": "bf16 autocast" if precision.autocast else "fp32",
        "threads": args.threads,
        "rows": len(seqs),
        "steps": result.n_steps,
        "input_tokens": n_input,
        "target_tokens": result.n_tokens,
        "mean_len": round(n_input / len(seqs), 1),
        "train_seconds": round(result.seconds, 2),
        "wall_seconds_incl_save": round(wall, 2),
        "tokens_per_s": round(n_input / result.seconds, 1),
        "median_step_tokens_per_s": round(sorted(s["tokens_per_s"] for s in steps)[len(steps) // 2], 1),
        "step_tokens_per_s": [round(s["tokens_per_s"]) for s in steps],
        "losses": [round(s["loss"], 3) for s in steps],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_after_load_mb": round(rss_loaded, 1),
        "load_average_1m": os.getloadavg()[0],
    }
    json.dump(summary, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
