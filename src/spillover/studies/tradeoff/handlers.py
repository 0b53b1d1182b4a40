"""The tradeoff study's own job kinds (`StudyKind.handlers`): `tokens` and `codelen`.

- `tokens`: the base model's probability p_t of every target token of a domain's training data (the
  sequences training sees: same limit, max_len and supervision format), plus a few example sequences with
  their tokens as text, for the token-level analysis (methods.md §4.5).
- `codelen`: one model's (base, tuned, or a WiSE-FT interpolation) code length — mean target-token
  cross-entropy in bits — on the test split (first `limit` rows) of each listed task, scoring the task's
  target as rendered for training (methods.md §4.6).
"""

from __future__ import annotations

import math

import torch

from spillover.data.collate import pad_id
from spillover.data.sft import build_sequences
from spillover.engine.plan import Job, Plan
from spillover.studies.context import StudyContext
from spillover.studies.contract import JobOutput
from spillover.studies.jobs import trained_artifact
from spillover.studies.tradeoff.plan import CodelenJob, TokensJob
from spillover.training.sequence_nll import sequence_nll


def tokens_job(ctx: StudyContext, plan: Plan, job: Job) -> JobOutput:
    """Result: p (every target token's probability under the base model, rounded to 1e-6), and `examples`
    [{id, tokens: [str], p: [float]}] for the first `examples` sequences."""
    p: TokensJob = job.params
    task = ctx.tasks[p.task]
    examples = ctx.examples(p.task, "train", p.limit, p.transforms)
    seqs = build_sequences(task, ctx.tokenizer, examples, p.max_len, 0, ctx.spec.seed)
    nll = sequence_nll(ctx.base_model(), seqs, pad_id(ctx.tokenizer), ctx.precision)
    probs = [torch.exp(-n) for n in nll]
    shown = []
    for ex, seq, pr in list(zip(examples, seqs, probs, strict=True))[: p.examples]:
        target_ids = seq.input_ids[len(seq.input_ids) - len(pr) :]
        shown.append(
            {
                "id": ex.id,
                "tokens": [ctx.tokenizer.decode([i]) for i in target_ids],
                "p": [round(float(v), 6) for v in pr],
            }
        )
    flat = torch.cat(probs) if probs else torch.zeros(0)
    return {
        "task": task.name,
        "format": p.format,
        "p": [round(float(v), 6) for v in flat],
        "n_sequences": len(seqs),
        "examples": shown,
    }, []


def codelen_job(ctx: StudyContext, plan: Plan, job: Job) -> JobOutput:
    """The model is the base or the artifact of the job's training dependency (mixed with the base when
    `alpha` < 1). Result: {label, code_length: {task: {bits, n_tokens, n, rows}}}: `bits` per target token
    over all rows (token-weighted), `rows` {example id: that row's bits per token} for the paired test of
    ΔCL (`comparisons.code_length_comparisons`)."""
    p: CodelenJob = job.params
    _, artifact = trained_artifact(ctx, plan, job)
    out = {}
    with ctx.loaded(artifact, p.alpha) as model:
        for item in p.datasets:
            task = ctx.tasks[item.task]
            examples = ctx.examples(task.name, "test", p.limit)
            seqs = build_sequences(task, ctx.tokenizer, examples, p.max_len, 0, ctx.spec.seed)
            per_row = sequence_nll(model, seqs, pad_id(ctx.tokenizer), ctx.precision, p.batch_size)
            nll = torch.cat(per_row)
            out[task.name] = {
                "bits": float(nll.mean()) / math.log(2),
                "n_tokens": int(nll.numel()),
                "n": len(seqs),
                "rows": {
                    ex.id: float(r.mean()) / math.log(2)
                    for ex, r in zip(examples, per_row, strict=True)
                    if r.numel()
                },
            }
    return {"label": p.label, "code_length": out}, []


HANDLERS = {"tokens": tokens_job, "codelen": codelen_job}
