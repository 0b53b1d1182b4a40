"""The machine's matmul peak next to the rate of the embedded model's own linear layers at batch sizes the
training loop and the scorer use: what "MFU against the peak" can reach here at best.

    .venv/bin/python benchmarks/matmul_shapes.py [--precision bf16|fp32] [--rows 340 2280] [--repeats 3]

Peak: a 4096x4096 matmul loop (`_machine.matmul_peak_tflops`, the peak the side-by-side benchmarks divide
by). Model-shaped: one decoder layer's seven linear products (q, k, v, o, gate, up, down: `x @ W.T` with
the embedded model's dimensions, from its config) on M rows, looped for ~3 s. M = 340 is a training batch
of the quick-start's sst2 (8 sequences, shared prefix computed once), 2280 a scoring batch (57 rows × 40
tokens). Peak and model-shaped loops alternate `--repeats` times, since this VM's rate moves minute to
minute; every measurement is printed with its ratio to the peak measured just before it.
"""

from __future__ import annotations

import argparse
import json

import torch
from _machine import loop_tflops, matmul_peak_tflops
from transformers import AutoConfig

from spillover.models.load import ensure_embedded


def layer_shapes() -> dict[str, tuple[int, int]]:
    """(out, in) features of one decoder layer's linear layers in the embedded model."""
    c = AutoConfig.from_pretrained(str(ensure_embedded()))
    head_dim = c.hidden_size // c.num_attention_heads
    h, kv, ffn = c.hidden_size, c.num_key_value_heads * head_dim, c.intermediate_size
    return {
        "q": (h, h),
        "k": (kv, h),
        "v": (kv, h),
        "o": (h, h),
        "gate": (ffn, h),
        "up": (ffn, h),
        "down": (h, ffn),
    }


def layer_tflops(
    shapes: dict[str, tuple[int, int]], rows: int, dtype: torch.dtype, seconds: float = 3.0
) -> float:
    weights = [torch.randn(o, i, dtype=dtype) for o, i in shapes.values()]
    inputs = {i: torch.randn(rows, i, dtype=dtype) for _, i in shapes.values()}

    def layer() -> None:
        for w in weights:
            inputs[w.shape[1]] @ w.t()

    return loop_tflops(layer, 2 * rows * sum(w.numel() for w in weights), seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--rows", type=int, nargs="+", default=[340, 2280], help="M: rows per matmul")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    shapes = layer_shapes()
    runs = []
    for _ in range(args.repeats):
        for rows in args.rows:
            peak = matmul_peak_tflops(dtype)
            rate = layer_tflops(shapes, rows, dtype)
            runs.append(
                {
                    "rows": rows,
                    "peak_tflops": round(peak, 3),
                    "layer_tflops": round(rate, 3),
                    "ratio": round(rate / peak, 2),
                }
            )
            print(json.dumps(runs[-1]), flush=True)
    summary = {
        rows: {
            "best_layer_tflops": max(r["layer_tflops"] for r in runs if r["rows"] == rows),
            "ratios": [r["ratio"] for r in runs if r["rows"] == rows],
        }
        for rows in args.rows
    }
    print(
        json.dumps(
            {
                "precision": args.precision,
                "threads": args.threads,
                "shapes (out x in)": {n: f"{o}x{i}" for n, (o, i) in shapes.items()},
                "best_peak_tflops": max(r["peak_tflops"] for r in runs),
                "by_rows": summary,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
