"""TRL `SFTTrainer` vs spillover's training loop: same model, data, batches, LoRA, optimiser settings.

    .venv/bin/python benchmarks/train_vs_trl.py [--precision auto|bf16|fp32] [--rows 64] [--threads 2] [--lr 2e-4]
                                                [--compile auto|on|off] [--repeats 3]
                                                [--trl-gradient-checkpointing] [--trl-fp32-adapter-sum]

Model: the embedded SmolLM2-135M-Instruct checkpoint (`ensure_embedded`). Data: the first `--rows` rows of
the built-in sst2 train split, rendered by spillover (`prompts.render_training`, the task's chat template)
and tokenised once by `sft.build_sequences` (max_len 256). Both sides train on exactly these token
sequences: TRL gets them as an already-tokenised prompt-completion dataset (`input_ids` + `completion_mask`,
`completion_only_loss=True`) rather than as text, because TRL's own text path re-tokenises prompt and
completion and appends an EOS token, which would change the sequences. The dataset is handed to TRL in the
order of spillover's length-bucketed batch plan with `train_sampling_strategy="sequential"`, so step k of
both runs sees the same 8 sequences and the loss curves compare step by step.

Settings on both sides: LoRA r=8, alpha=16, dropout 0, peft `target_modules="all-linear"`, adapter init
from seed 0; batch 8, 1 epoch, AdamW (0.9, 0.999, eps 1e-8, no weight decay), cosine schedule without
warm-up, grad-norm clip 1.0; bf16 autocast with fp32 weights (TRL: `bf16=True, use_cpu=True`) or fp32,
by `--precision` (default auto: what a study would pick on this machine, `models.load.resolve_precision` —
bf16 only where the CPU has AVX512-BF16 or AMX; without them bf16 matmuls are emulated, ~80x slower than
fp32 on an AVX2-only EPYC, and a bf16 run measures that emulation, not either tool); `--threads` torch
threads. TRL: no reporting, eval, checkpoint saving, packing, padding-free or
gradient checkpointing (TRL turns the last on by default; `--trl-gradient-checkpointing` keeps it).
`--trl-fp32-adapter-sum`: TRL's peft model gets spillover's fp32 adapter sum (`keep_adapter_sum_fp32`),
the one computational difference between the two sides under bf16 autocast (plain peft adds LoRA's update
to the bf16 base output in bf16, where much of it rounds away): with it the loss curves agree step by step
within bf16 rounding, without it TRL's falls more slowly. For that check, not for timing.

Each side runs in its own child process so peak RSS is per side, `--repeats` times (default 3), alternating
spillover / TRL / matmul peak, and each side's fastest run counts (the least disturbed by other processes on
a shared host; every run's time is printed). tokens/s = prompt + completion tokens without padding / train
seconds (model load and dataset preparation excluded). spillover's `--compile` is its `train.compile`
setting (default auto: compiled decoder layers for CPU bf16 runs of >= 4 TFLOP, e.g. `--rows 256`, not
the default 64); its compile time falls in the first step, so both sides also report "steady" tokens/s:
steps 2..n over the time from the end of step 1 to the end of the run.

MFU (both sides): model FLOPs per token = 4·N, N = parameters of the decoder's linear layers (embeddings
and lm_head excluded: spillover computes the head only on completion positions). 2·N for the forward pass,
2·N for the activation gradients through the frozen weights in backward; LoRA's own weight gradients
(~0.4% of N) and attention score FLOPs are ignored. Peak = a 4096x4096 bf16 matmul loop timed for ~3 s on
the same threads in this process (fp32 runs: an fp32 loop) after each pair of runs; the highest counts
(conservative for MFU). spillover computes a batch's shared prefix (the chat template's system prompt and
instruction) once per packed row (`training/shared_prefix.py`), so it runs fewer tokens than it trains on:
`positions_run` (both sides) counts every position the decoder ran, padding included (`_machine.py`);
`mfu_run` is the MFU of those FLOPs over the whole run and `steady_mfu_executed` spillover's in steps
2..n. `five_x`: TRL's time / 5, the time spillover's `positions_run` FLOPs would take at the matmul peak,
and the fraction of the peak 5x would need.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _machine import PositionCounter, five_x, linear_params, matmul_peak_tflops

from spillover.models.compile import COMPILE_CHOICES
from spillover.models.load import resolve_precision

LORA = {"r": 8, "alpha": 16, "target_modules": "all-linear"}
BATCH, MAX_LEN = 8, 256
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def build_data(rows: int):
    """(tokenizer, sequences, batch plan order) shared by both sides."""
    from spillover.data.sft import build_sequences
    from spillover.data.tasks import builtin_tasks, load_examples
    from spillover.models.load import load_tokenizer
    from spillover.training.batches import BatchPlan

    task = builtin_tasks()["sst2"]
    tokenizer = load_tokenizer("embedded")
    seqs = build_sequences(task, tokenizer, load_examples(task, "train", limit=rows), max_len=MAX_LEN)
    plan = BatchPlan([len(s.input_ids) for s in seqs], BATCH, 1, seed=0, epochs=1)
    order = [i for step in range(plan.n_steps) for mb in plan.micro_batches(step) for i in mb]
    return tokenizer, seqs, order


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_spillover(args) -> dict:
    from spillover.models.adapters import apply_lora
    from spillover.models.load import Precision, load_model
    from spillover.training.loop import train
    from spillover.training.types import TrainParams

    tokenizer, seqs, _ = build_data(args.rows)
    precision = Precision(torch.device("cpu"), DTYPES[args.precision])
    model, tokenizer = load_model("embedded", precision, frozen=True)  # as a study loads its base
    model = apply_lora(model, r=LORA["r"], alpha=LORA["alpha"], target_modules=LORA["target_modules"], seed=0)
    compile_setting = COMPILE_CHOICES[args.compile]
    params = TrainParams(
        lr=args.lr, epochs=1, batch_size=BATCH, warmup_ratio=0.0, precision=precision, compile=compile_setting
    )
    out = Path(tempfile.mkdtemp(prefix="spillover-bench-")) / "run"
    with PositionCounter(model) as counter:
        result = train(model, tokenizer, seqs, params, out)
    steps = [json.loads(line) for line in result.log_path.read_text().splitlines()]
    return {
        "seconds": result.seconds,
        "losses": [s["loss"] for s in steps],
        "n_linear_params": linear_params(model),
        "step_end_s": [s["elapsed_s"] for s in steps],
        "peak_rss_mb": peak_rss_mb(),
        "positions": counter.positions,
    }


def run_trl(args) -> dict:
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from spillover.models.load import ensure_embedded

    tokenizer, seqs, order = build_data(args.rows)
    rows = [seqs[i] for i in order]
    data = Dataset.from_dict(
        {
            "input_ids": [s.input_ids for s in rows],
            "completion_mask": [[0] * s.n_prompt + [1] * (len(s.input_ids) - s.n_prompt) for s in rows],
        }
    )
    model = AutoModelForCausalLM.from_pretrained(
        str(ensure_embedded()), dtype=torch.float32, attn_implementation="sdpa"
    )
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=0.0,
        target_modules=LORA["target_modules"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = get_peft_model(model, config)
    if args.trl_fp32_adapter_sum:
        from spillover.models.adapters import keep_adapter_sum_fp32

        keep_adapter_sum_fp32(model)
    out = tempfile.mkdtemp(prefix="trl-bench-")
    sft_args = SFTConfig(
        output_dir=out,
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1,
        num_train_epochs=1,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        optim="adamw_torch",
        seed=0,
        bf16=args.precision == "bf16",
        use_cpu=True,
        max_length=MAX_LEN,
        packing=False,
        padding_free=False,
        completion_only_loss=True,
        gradient_checkpointing=args.trl_gradient_checkpointing,
        train_sampling_strategy="sequential",
        report_to=[],
        eval_strategy="no",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    times, losses = {}, []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            times["start"] = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.setdefault("step_end", []).append(time.perf_counter() - times["start"])

        def on_train_end(self, *a, **k):
            times["end"] = time.perf_counter()

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    trainer = SFTTrainer(
        model=model, args=sft_args, train_dataset=data, processing_class=tokenizer, callbacks=[Clock()]
    )
    with PositionCounter(model) as counter:
        trainer.train()
    return {
        "seconds": times["end"] - times["start"],
        "losses": losses,
        "n_linear_params": linear_params(model),
        "step_end_s": times["step_end"],
        "peak_rss_mb": peak_rss_mb(),
        "positions": counter.positions,
    }


def child(side: str, args) -> dict:
    cmd = (
        [
            sys.executable,
            __file__,
            "--side",
            side,
            "--rows",
            str(args.rows),
            "--threads",
            str(args.threads),
            "--lr",
            str(args.lr),
            "--compile",
            args.compile,
            "--precision",
            args.precision,
        ]
        + (["--trl-gradient-checkpointing"] if args.trl_gradient_checkpointing else [])
        + (["--trl-fp32-adapter-sum"] if args.trl_fp32_adapter_sum else [])
    )
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{side} run failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="both sides: bf16 autocast or fp32 (auto: the study default on this CPU)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--trl-gradient-checkpointing", action="store_true", help="keep TRL's default")
    ap.add_argument(
        "--trl-fp32-adapter-sum",
        action="store_true",
        help="TRL's LoRA sum in fp32 like spillover's (loss check)",
    )
    ap.add_argument(
        "--compile", choices=list(COMPILE_CHOICES), default="auto", help="spillover's train.compile"
    )
    ap.add_argument("--repeats", type=int, default=3, help="runs per side, alternating; the fastest counts")
    ap.add_argument("--side", choices=["spillover", "trl"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.precision = (
        "bf16" if resolve_precision(args.precision, "cpu").compute_dtype == torch.bfloat16 else "fp32"
    )
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.side:
        res = (run_spillover if args.side == "spillover" else run_trl)(args)
        print(json.dumps(res))
        return

    _, seqs, order = build_data(args.rows)
    n_tokens = sum(len(s.input_ids) for s in seqs)
    first_step_tokens = sum(len(seqs[i].input_ids) for i in order[:BATCH])
    runs: dict[str, list[dict]] = {"spillover": [], "trl": []}
    peaks = []
    for _ in range(args.repeats):  # alternate, so load from other processes hits both sides alike
        for name in runs:
            runs[name].append(child(name, args))
        peaks.append(matmul_peak_tflops(DTYPES[args.precision]))
    peak = max(peaks)  # conservative: MFU against the best peak seen
    sides = {
        name: min(rs, key=lambda r: r["seconds"]) | {"all_seconds": [r["seconds"] for r in rs]}
        for name, rs in runs.items()
    }
    out: dict = {
        "precision": "bf16 autocast" if args.precision == "bf16" else "fp32",
        "threads": args.threads,
        "rows": len(seqs),
        "tokens": n_tokens,
        "completion_tokens": sum(len(s.input_ids) - s.n_prompt for s in seqs),
        "repeats": args.repeats,
        "matmul_peak_tflops": round(peak, 3),
        "matmul_peak_tflops_all": [round(x, 3) for x in peaks],
    }
    for name, r in sides.items():
        tps = n_tokens / r["seconds"]
        ends = r["step_end_s"]
        steady = (n_tokens - first_step_tokens) / (ends[-1] - ends[0]) if len(ends) > 1 else float("nan")
        out[name] = {
            "train_seconds": round(r["seconds"], 2),
            "train_seconds_all_runs": [round(x, 2) for x in r["all_seconds"]],
            "tokens_per_s": round(tps, 1),
            "first_step_seconds": round(ends[0], 2),
            "steady_tokens_per_s": round(steady, 1),
            "final_loss": round(r["losses"][-1], 4),
            "mean_loss": round(sum(r["losses"]) / len(r["losses"]), 4),
            "losses": [round(x, 4) for x in r["losses"]],
            "peak_rss_mb": r["peak_rss_mb"],
            "mfu": round(4 * r["n_linear_params"] * tps / (peak * 1e12), 4),
            "positions_run": r["positions"],
            "mfu_run": round(4 * r["n_linear_params"] * r["positions"] / r["seconds"] / (peak * 1e12), 4),
        }
    s, t = out["spillover"], out["trl"]
    out["n_linear_params"] = sides["spillover"]["n_linear_params"]
    out["speedup_vs_trl"] = round(s["tokens_per_s"] / t["tokens_per_s"], 2)
    out["steady_speedup_vs_trl"] = round(s["steady_tokens_per_s"] / t["steady_tokens_per_s"], 2)
    out["steady_mfu"] = {
        name: round(4 * sides[name]["n_linear_params"] * out[name]["steady_tokens_per_s"] / (peak * 1e12), 4)
        for name in sides
    }
    out["steady_mfu_executed"] = round(out["steady_mfu"]["spillover"] * s["positions_run"] / n_tokens, 4)
    out["five_x"] = five_x(4 * out["n_linear_params"] * s["positions_run"], t["train_seconds"], peak)
    out["max_abs_step_loss_diff"] = round(
        max(abs(a - b) for a, b in zip(s["losses"], t["losses"], strict=True)), 4
    )
    out["load_average_1m"] = os.getloadavg()[0]
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
