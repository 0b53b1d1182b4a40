"""spillover vs lm-evaluation-harness on the same multiple-choice task, prompt, rows and model.

    python benchmarks/eval_vs_lm_eval.py [--precision fp32|bf16] [--lm-eval-precision fp32|bf16] [--limit N]
                                         [--threads 2] [--repeats 2] [--compile auto|on|off] [--chat]

Task: sst2's 1000 test rows (the built-in copy), prompt `Review: {input}\\nSentiment:`, choices
negative/positive, raw prompts (`chat_template: false`), i.e. lm-eval's `multiple_choice` output type.
Model: the embedded SmolLM2-135M-Instruct checkpoint (converted once). Both run in this process, one after
the other, `--repeats` times alternating (default 2; each side's fastest run counts, every run's time is
printed). Times exclude model loading and start-up, as the issue quotes lm-eval's time "after start-up":
each side's time runs from its first forward pass to the end. `startup_s` is what came before (task
set-up, data loading, tokenising; lm-eval's ~14 s are mostly its task and dataset machinery), and
`speedup_incl_startup` the ratio with it. Prints both accuracies, their difference, per-example agreement
and the throughput ratio. lm-eval runs with `dtype=float32` for fp32 and `dtype=bfloat16` (bf16 weights) for
bf16; spillover uses its own precision handling (`--precision`). `--compile on`: spillover's scoring runs
its decoder layers compiled (`eval.compile`); the first run then includes the compile (~10-30 s), later
runs reuse it, as a study's later evaluations do. `auto` (spillover's default) stays eager for one sst2.
`--chat`: both sides wrap the prompt in the model's chat template (lm-eval `apply_chat_template=True`, the
answer right after the template's generation prompt, as spillover's `chat_template: true` tasks do): the
template's system prompt then starts every context, which spillover computes once per evaluation
(`models/prefix_cache.py`).

After each pair of runs a 4096x4096 matmul loop measures the machine's peak (bf16 when either side runs
bf16); the highest counts. `positions_run`: the token positions each side's decoder ran (padding and a
cached prefix included, `_machine.py`); `mfu_run`: 2·N FLOPs per position (N = decoder linear weights)
over the time and the peak; `five_x`: lm-eval's time / 5, the time spillover's FLOPs would take at the
peak, and the fraction of the peak 5x would need.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from _machine import PositionCounter, five_x, linear_params, matmul_peak_tflops

from spillover.data.tasks import BUILTIN_FILE, load_task_file
from spillover.evaluation.evaluate import evaluate_task
from spillover.models.compile import COMPILE_CHOICES
from spillover.models.load import ensure_embedded, load_model, resolve_precision

SST2_TEST = BUILTIN_FILE.parent / "sst2" / "test.jsonl"
PROMPT = "Review: {input}\nSentiment:"

LM_EVAL_TASK = """task: sst2_spillover_bench
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
target_delimiter: "{delimiter}"
doc_to_text: "Review: {{{{input}}}}\\nSentiment:"
doc_to_choice: ["negative", "positive"]
doc_to_target: "{{{{['negative', 'positive'].index(label)}}}}"
metric_list:
  - metric: acc
"""

SPILLOVER_TASK = """tasks:
  - name: sst2_raw
    type: classification
    test: {data}
    input: "Review: {{input}}\\nSentiment:"
    target: label
    labels: [negative, positive]
    metric: accuracy
    chat_template: {chat}
"""


def run_lm_eval(
    model_dir: Path, workdir: Path, precision: str, limit: int | None, batch_size: int, chat: bool
) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    delimiter = "" if chat else " "  # spillover: the answer follows the chat template's generation prompt
    (workdir / "sst2_spillover_bench.yaml").write_text(
        LM_EVAL_TASK.format(data=SST2_TEST, delimiter=delimiter)
    )
    dtype = "float32" if precision == "fp32" else "bfloat16"
    lm = HFLM(pretrained=str(model_dir), dtype=dtype, batch_size=batch_size, device="cpu")
    start = time.perf_counter()
    with PositionCounter(lm.model) as counter:
        out = simple_evaluate(
            model=lm,
            tasks=["sst2_spillover_bench"],
            task_manager=TaskManager(include_path=str(workdir)),
            limit=limit,
            log_samples=True,
            bootstrap_iters=0,
            apply_chat_template=chat,
        )
    end = time.perf_counter()
    samples = out["samples"]["sst2_spillover_bench"]
    preds = {int(s["doc_id"]): int(max(range(2), key=lambda i: s["filtered_resps"][i][0])) for s in samples}
    return {
        "acc": out["results"]["sst2_spillover_bench"]["acc,none"],
        "n": len(samples),
        "seconds": end - counter.first,
        "startup": counter.first - start,
        "preds": [preds[i] for i in sorted(preds)],
        "positions": counter.positions,
        "n_linear_params": linear_params(lm.model),
    }


def run_spillover(
    workdir: Path, precision: str, limit: int | None, batch_size: int, compile, chat: bool
) -> dict:
    (workdir / "tasks.yaml").write_text(SPILLOVER_TASK.format(data=SST2_TEST, chat=str(chat).lower()))
    task = load_task_file(workdir / "tasks.yaml")["sst2_raw"]
    prec = resolve_precision(precision)
    model, tokenizer = load_model("embedded", prec, frozen=True)  # as `spillover eval` loads it
    start = time.perf_counter()
    with PositionCounter(model) as counter:
        r = evaluate_task(
            model,
            tokenizer,
            task,
            limit=limit,
            batch_size=batch_size,
            precision=prec,
            predictions_path=workdir / "predictions.jsonl",
            compile=compile,
        )
    end = time.perf_counter()
    rows = [json.loads(line) for line in (workdir / "predictions.jsonl").read_text().splitlines()]
    labels = ["negative", "positive"]
    return {
        "acc": r.value,
        "seconds": end - counter.first,
        "n": r.n,
        "preds": [labels.index(x["prediction"]) for x in rows],
        "positions": counter.positions,
        "startup": counter.first - start,
        "n_linear_params": linear_params(model),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--limit", type=int, default=None, help="first N rows (default: all 1000)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--lm-eval-precision",
        choices=["fp32", "bf16"],
        default=None,
        help="lm-eval's dtype when it differs from --precision (e.g. each tool's default: spillover "
        "bf16 autocast on a bf16 CPU, lm-eval the checkpoint's fp32)",
    )
    p.add_argument("--repeats", type=int, default=2, help="runs per side, alternating; the fastest counts")
    p.add_argument(
        "--compile", choices=list(COMPILE_CHOICES), default="auto", help="spillover's eval.compile"
    )
    p.add_argument("--chat", action="store_true", help="both sides use the model's chat template")
    args = p.parse_args()
    compile = COMPILE_CHOICES[args.compile]
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    model_dir = ensure_embedded()
    theirs_precision = args.lm_eval_precision or args.precision
    with tempfile.TemporaryDirectory() as tmp:
        runs: dict[str, list[dict]] = {"spillover": [], "lm_eval": []}
        peaks: list[float] = []
        precisions = {args.precision, theirs_precision}
        for _ in range(args.repeats):  # alternate, so load from other processes hits both sides alike
            runs["spillover"].append(
                run_spillover(Path(tmp), args.precision, args.limit, args.batch_size, compile, args.chat)
            )
            runs["lm_eval"].append(
                run_lm_eval(model_dir, Path(tmp), theirs_precision, args.limit, args.batch_size, args.chat)
            )
            peaks.append(matmul_peak_tflops(torch.bfloat16 if "bf16" in precisions else torch.float32))
    ours, theirs = (min(rs, key=lambda r: r["seconds"]) for rs in runs.values())  # the least disturbed run
    agree = sum(a == b for a, b in zip(ours["preds"], theirs["preds"], strict=True)) / max(
        1, len(ours["preds"])
    )
    result = {
        "precision": args.precision,
        "lm_eval_precision": theirs_precision,
        "threads": args.threads,
        "rows": ours["n"],
        "repeats": args.repeats,
        "compile": args.compile,
        "chat": args.chat,
        "spillover_acc": round(ours["acc"], 4),
        "lm_eval_acc": round(theirs["acc"], 4),
        "acc_diff_points": round(100 * (ours["acc"] - theirs["acc"]), 2),
        "prediction_agreement": round(agree, 4),
        "spillover_s": round(ours["seconds"], 1),
        "lm_eval_s": round(theirs["seconds"], 1),
        "spillover_s_all_runs": [round(r["seconds"], 1) for r in runs["spillover"]],
        "lm_eval_s_all_runs": [round(r["seconds"], 1) for r in runs["lm_eval"]],
        "speedup": round(theirs["seconds"] / ours["seconds"], 2),
        "startup_s": {"spillover": round(ours["startup"], 1), "lm_eval": round(theirs["startup"], 1)},
        "speedup_incl_startup": round(
            (theirs["seconds"] + theirs["startup"]) / (ours["seconds"] + ours["startup"]), 2
        ),
        "matmul_peak_tflops": round(max(peaks), 3),
        "matmul_peak_tflops_all": [round(x, 3) for x in peaks],
        "positions_run": {"spillover": ours["positions"], "lm_eval": theirs["positions"]},
        "mfu_run": {
            name: round(2 * r["n_linear_params"] * r["positions"] / r["seconds"] / (max(peaks) * 1e12), 4)
            for name, r in (("spillover", ours), ("lm_eval", theirs))
        },
        "five_x": five_x(2 * ours["n_linear_params"] * ours["positions"], theirs["seconds"], max(peaks)),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
