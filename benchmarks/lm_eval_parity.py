"""lm_eval:TASK targets vs lm-evaluation-harness's own `hf` model, on the embedded model (issue 27 item 1).

    python benchmarks/lm_eval_parity.py [--mc-limit 200] [--gen-limit 50] [--threads 2] [--batch-size 16]

Run from the repository root: the two local lm-eval tasks in tests/fixtures/lm_eval_tasks read their data
relative to it. `spillover_sst2_mc` (multiple_choice: sst2's shipped test rows, `Review: ...\\nSentiment:`,
acc and acc_norm) and `spillover_squad_gen` (generate_until: squad_rc's shipped test rows, greedy, at most
16 tokens, exact match under the `none` and `first-line` filters). Both sides in fp32 on the CPU, in this
process, one after the other: spillover evaluates `lm_eval:TASK` (`evaluate_task`: lm-eval builds the
task, spillover's scorer answers, lm-eval's metrics score), lm-eval runs `simple_evaluate` with its `hf`
model (`HFLM(dtype=float32)`). Prints each metric on both sides, the difference in points, per-document
agreement (same chosen option / same generated text) and each side's time (task set-up and evaluation;
model loading excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from spillover.evaluation.evaluate import evaluate_task
from spillover.harness.tasks import LmEvalTarget
from spillover.models.load import ensure_embedded, load_model, resolve_precision

TASKS_DIR = Path("tests/fixtures/lm_eval_tasks")
MC, GEN = "spillover_sst2_mc", "spillover_squad_gen"


def run_spillover(model, tokenizer, task: str, limit: int, batch_size: int, folder: Path) -> dict:
    start = time.perf_counter()
    r = evaluate_task(
        model,
        tokenizer,
        LmEvalTarget(task, (str(TASKS_DIR.resolve()),)),
        limit=limit,
        batch_size=batch_size,
        precision=resolve_precision("fp32"),
        predictions_path=folder / f"{task}.jsonl",
    )
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in (folder / f"{task}.jsonl").read_text().splitlines()]
    scores = {r.metric: r.value, **{b.metric: b.value for b in r.beside}}
    return {"scores": scores, "seconds": seconds, "answers": [_answer(row) for row in rows], "n": r.n}


def _answer(row: dict):
    return row.get("prediction_index", row["prediction"])


def run_lm_eval(lm, task: str, limit: int) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    out = simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
    )
    seconds = time.perf_counter() - start
    results = out["results"][task]
    scores = {
        (k.split(",")[0] if k.endswith(",none") else k): v
        for k, v in results.items()
        if "," in k and "_stderr" not in k
    }
    samples = sorted((s for s in out["samples"][task] if s["filter"] == "none"), key=lambda s: s["doc_id"])
    answers = [
        max(range(len(s["filtered_resps"])), key=lambda i: s["filtered_resps"][i][0])
        if task == MC
        else s["filtered_resps"][0]
        for s in samples
    ]
    return {"scores": scores, "seconds": seconds, "answers": answers, "n": len(samples)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mc-limit", type=int, default=200)
    p.add_argument("--gen-limit", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    if not TASKS_DIR.is_dir():
        raise SystemExit(f"run from the repository root ({TASKS_DIR} not found)")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval.models.huggingface import HFLM

    model_dir = ensure_embedded()
    model, tokenizer = load_model("embedded", resolve_precision("fp32"), frozen=True)
    theirs_lm = HFLM(pretrained=str(model_dir), dtype="float32", batch_size=args.batch_size, device="cpu")
    report = []
    with tempfile.TemporaryDirectory() as tmp:
        for task, limit in ((MC, args.mc_limit), (GEN, args.gen_limit)):
            ours = run_spillover(model, tokenizer, task, limit, args.batch_size, Path(tmp))
            theirs = run_lm_eval(theirs_lm, task, limit)
            agree = sum(a == b for a, b in zip(ours["answers"], theirs["answers"], strict=True))
            for metric, value in ours["scores"].items():
                report.append(
                    {
                        "task": task,
                        "metric": metric,
                        "rows": ours["n"],
                        "spillover": round(value, 4),
                        "lm_eval_hf": round(theirs["scores"][metric], 4),
                        "diff_points": round(100 * (value - theirs["scores"][metric]), 2),
                        "same_answer_rows": f"{agree}/{ours['n']}",
                        "spillover_s": round(ours["seconds"], 1),
                        "lm_eval_s": round(theirs["seconds"], 1),
                    }
                )
    print(json.dumps({"threads": args.threads, "batch_size": args.batch_size, "results": report}, indent=2))


if __name__ == "__main__":
    main()
