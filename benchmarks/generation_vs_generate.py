"""spillover's batched greedy decoding vs transformers `model.generate(do_sample=False)` one prompt at a time.

    .venv/bin/python benchmarks/generation_vs_generate.py [--precision fp32|bf16] [--n 32] [--batch-size 16]

Prompts: the first `--n` rows of the built-in gsm8k test split, rendered by `prompts.render_context` (the
task's chat template), tokenised without special tokens. Both sides decode greedily up to
`--max-new-tokens` (64) and stop at the same EOS ids (`generation.eos_ids`); no stop strings, so the
comparison is of token ids only. spillover: `evaluation.generation.generate` (left-padded batches of
similar-length prompts, KV cache, finished rows leave the batch). transformers: `model.generate` per prompt
(batch 1, no padding). Same model object on both sides (weights fp32; bf16 = autocast on both). Times
exclude model loading; tokens/s = generated tokens (EOS excluded) / seconds. Agreement: the fraction of
prompts whose generated token ids are identical, and of generated positions that match.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import torch

from spillover.data.prompts import render_context
from spillover.data.tasks import builtin_tasks, load_examples
from spillover.evaluation.generation import eos_ids, generate
from spillover.models.load import load_model, resolve_precision


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    prec = resolve_precision(args.precision)
    model, tokenizer = load_model("embedded", prec, frozen=True)  # shared by both sides
    task = builtin_tasks()["gsm8k"]
    examples = load_examples(task, "test", limit=args.n)
    prompts = [
        tokenizer(render_context(task, tokenizer, ex), add_special_tokens=False)["input_ids"]
        for ex in examples
    ]
    stop = eos_ids(model, tokenizer)
    amp = (
        (lambda: torch.autocast("cpu", dtype=prec.compute_dtype)) if prec.autocast else contextlib.nullcontext
    )

    with amp():
        t0 = time.perf_counter()
        gens = generate(model, tokenizer, prompts, None, args.max_new_tokens, args.batch_size, stop)
        ours_s = time.perf_counter() - t0
    ours = [g.token_ids for g in gens]

    theirs = []
    with amp(), torch.inference_mode():
        t0 = time.perf_counter()
        for p in prompts:
            ids = torch.tensor([p])
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=args.max_new_tokens,
                eos_token_id=sorted(stop),
                pad_token_id=tokenizer.pad_token_id,
                temperature=None,
                top_p=None,
                top_k=None,
            )
            new = out[0, len(p) :].tolist()
            cut = next((i for i, t in enumerate(new) if t in stop), len(new))
            theirs.append(new[:cut])
        hf_s = time.perf_counter() - t0

    n_ours, n_hf = sum(map(len, ours)), sum(map(len, theirs))
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    positions = sum(max(len(a), len(b)) for a, b in zip(ours, theirs, strict=True))
    matching = sum(sum(x == y for x, y in zip(a, b, strict=False)) for a, b in zip(ours, theirs, strict=True))
    first_diff = [
        next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        for a, b in zip(ours, theirs, strict=True)
        if a != b
    ]
    summary = {
        "precision": args.precision,
        "threads": args.threads,
        "prompts": len(prompts),
        "mean_prompt_tokens": round(sum(map(len, prompts)) / len(prompts), 1),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "spillover": {
            "seconds": round(ours_s, 2),
            "generated_tokens": n_ours,
            "tokens_per_s": round(n_ours / ours_s, 1),
        },
        "hf_generate": {
            "seconds": round(hf_s, 2),
            "generated_tokens": n_hf,
            "tokens_per_s": round(n_hf / hf_s, 1),
        },
        "speedup": round((n_ours / ours_s) / (n_hf / hf_s), 2),
        "identical_sequences": round(same / len(prompts), 4),
        "matching_positions": round(matching / max(positions, 1), 4),
        "first_divergence_positions": first_diff,
        "load_average_1m": os.getloadavg()[0],
    }
    json.dump(summary, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
