"""Batched log-likelihood scoring of answer options (classification and multiple choice).

One forward pass per example covers all of its options. Each example becomes ONE packed row:

    [prompt tokens][option 0 tokens but its last][option 1 tokens but its last]...

(an option's last token predicts nothing that is scored, so like lm-evaluation-harness it is not fed; a
one-token option adds no token at all) with a 4-D attention mask (B, 1, T, T) that lets an option token
see the prompt and the earlier tokens of its own option only, and `position_ids` that restart at
len(prompt) for every option. Every option is then scored exactly as if it were appended to the prompt
alone (tested against separate forwards), while the prompt, usually most of the tokens, is computed once.
transformers passes a ready 4-D mask through unchanged (`masking_utils._preprocess_mask_arguments`);
`sdpa` takes it as booleans (True = attend), `eager` adds it, so it gets an additive float mask. Several
examples share a batch, right-padded, grouped by packed length: `batch_size` rows, or more when they are
short, up to `batch_size` × `TOKENS_PER_ROW` padded tokens per forward pass (at most `MAX_ROWS_FACTOR` ×
`batch_size` rows), because small matmuls waste the CPU (sst2's ~30-token rows ran ~1.4× faster 64 to a
batch than 16). Only the positions that predict option tokens go through the LM head
(`logits_to_keep` as a boolean (B, T) mask), so the (B, T, V) logits tensor is never built.

Under bf16 autocast on a CPU, the decoder layers may run compiled (`models.compile`; Inductor fuses the
elementwise ops and casts around the matmuls): 1.4× (base model) to 1.6× (LoRA adapter) faster once a
compile is paid (~9 s with warm on-disk caches, ~20 s cold), which a process earns back after half a
minute or so of scoring. `compile="auto"` therefore works like a JIT's hotness
counter: it compiles once the scoring work done in this process, counting the current call, reaches 15 TFLOP
(`HOTNESS`; a study's first evaluations run eagerly, the rest compiled; one big evaluation compiles at
once). Compiled and eager scores agree within bf16 rounding, not bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from spillover.data.collate import encode_pair
from spillover.data.prompts import answer_prefix, render_context, uses_chat
from spillover.data.tasks import Example, TaskSpec
from spillover.errors import SpilloverError
from spillover.models.compile import CompiledLayers, Hotness

log = logging.getLogger(__name__)

Request = tuple[list[int], Sequence[list[int]]]  # (context ids, one id list per option)


@dataclass(frozen=True)
class OptionScore:
    """Log-likelihood of one option given its context."""

    logprob: float  # sum of log p(token) over the option's tokens
    n_tokens: int
    is_greedy: bool  # every option token is the argmax of its next-token distribution


@dataclass(frozen=True)
class ScoredExample:
    """All options of one example. acc uses `predicted`, acc_norm uses `predicted_norm`."""

    logprobs: tuple[float, ...]
    n_tokens: tuple[int, ...]
    n_bytes: tuple[int, ...]  # UTF-8 length of each option text (without the target delimiter)
    is_greedy: tuple[bool, ...]

    @property
    def predicted(self) -> int:
        return max(range(len(self.logprobs)), key=lambda i: self.logprobs[i])

    @property
    def predicted_norm(self) -> int:
        return max(range(len(self.logprobs)), key=lambda i: self.logprobs[i] / max(1, self.n_bytes[i]))


@dataclass(frozen=True)
class PackedRow:
    """One example packed into a single sequence (see the module docstring)."""

    input_ids: list[int]  # (T,)
    segments: list[int]  # (T,) 0 = prompt, j + 1 = option j
    positions: list[int]  # (T,) position ids; every option restarts at len(prompt)
    sources: list[list[int]]  # per option: the row positions whose logits predict its tokens
    targets: list[list[int]]  # per option: its token ids


def pack_row(context: list[int], options: Sequence[list[int]]) -> PackedRow:
    """Pack a context and its options (all but their last tokens). Needs a non-empty context and options."""
    assert context and all(options), "context and every option need at least one token"
    n_prompt = len(context)
    ids, segments, positions = list(context), [0] * n_prompt, list(range(n_prompt))
    sources, targets = [], []
    for j, option in enumerate(options):
        start, fed = len(ids), option[:-1]
        sources.append([n_prompt - 1, *range(start, start + len(fed))])
        targets.append(list(option))
        ids += fed
        segments += [j + 1] * len(fed)
        positions += range(n_prompt, n_prompt + len(fed))
    return PackedRow(ids, segments, positions, sources, targets)


def packed_attention_mask(segments: torch.Tensor) -> torch.Tensor:
    """segments: (B, T) with -1 on padding -> boolean mask (B, 1, T, T), True where query may attend key.

    Causal, and a key is visible if it is in the prompt (segment 0) or in the query's own segment. Every
    row keeps its diagonal so padding queries never attend to nothing (an all-masked row gives NaN).
    """
    n = segments.shape[1]
    q, k = segments[:, :, None], segments[:, None, :]
    causal = torch.ones(n, n, dtype=torch.bool, device=segments.device).tril()
    visible = ((k == 0) | (k == q)) & (k >= 0) & causal
    visible |= torch.eye(n, dtype=torch.bool, device=segments.device)
    return visible[:, None]


def _model_mask(model, mask: torch.Tensor) -> torch.Tensor:
    """The 4-D mask in the form the model's attention implementation reads."""
    impl = getattr(model.config, "_attn_implementation", "sdpa")
    if impl == "sdpa":
        return mask
    if impl == "eager":
        dtype = next(model.parameters()).dtype
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min
        )
    raise SpilloverError(
        f"log-likelihood scoring needs attn_implementation 'sdpa' or 'eager' (custom 4-D masks); got '{impl}'"
    )


def _collate(rows: Sequence[PackedRow], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad packed rows: input_ids, segments, position_ids, keep: (B, T)."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    segments = torch.full((len(rows), width), -1, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    keep = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n] = torch.tensor(r.input_ids)
        segments[i, :n] = torch.tensor(r.segments)
        positions[i, :n] = torch.tensor(r.positions)
        keep[i, [p for src in r.sources for p in src]] = True
    tensors = {"input_ids": ids, "segments": segments, "position_ids": positions, "keep": keep}
    return {k: v.to(device) for k, v in tensors.items()}


@torch.inference_mode()
def score_batch(
    model, rows: Sequence[PackedRow], pad_id: int = 0, compiled: CompiledLayers | None = None
) -> list[list[OptionScore]]:
    """One forward pass for a batch of packed rows; per row, per option, its score. `compiled`: run the
    decoder layers compiled."""
    if compiled is not None and len(rows) == 1:
        # a batch of one row would compile another graph (dynamo specialises size 1): score it twice
        return score_batch(model, [rows[0], rows[0]], pad_id, compiled)[:1]
    device = next(model.parameters()).device
    batch = _collate(rows, pad_id, device)
    inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": _model_mask(model, packed_attention_mask(batch["segments"])),
        "position_ids": batch["position_ids"],
        "logits_to_keep": batch["keep"],
    }
    run = lambda: model(**inputs, use_cache=False)  # noqa: E731
    out = run() if compiled is None else compiled.call(run)
    logits = out.logits.float()  # (K, V): K = kept positions, row-major over (B, T)
    row_of = (batch["keep"].flatten().cumsum(0) - 1).view(batch["keep"].shape)  # (B, T) -> row of `logits`
    src = torch.cat([row_of[b, s] for b, r in enumerate(rows) for s in map(torch.tensor, r.sources)])  # (N,)
    tgt = torch.tensor([t for r in rows for opt in r.targets for t in opt], device=device)  # (N,)
    lengths = _option_lengths(rows)
    owner = torch.repeat_interleave(
        torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device)
    )
    token_lp = torch.log_softmax(logits, dim=-1)[src, tgt].double()  # (N,) N = option tokens in the batch
    sums = torch.zeros(len(lengths), dtype=torch.float64, device=device).index_add_(0, owner, token_lp)
    misses = torch.zeros(len(lengths), dtype=torch.long, device=device)
    misses.index_add_(0, owner, (logits[src].argmax(-1) != tgt).long())
    scores = [
        OptionScore(s, n, m == 0) for s, n, m in zip(sums.tolist(), lengths, misses.tolist(), strict=True)
    ]
    return _regroup(scores, [len(r.targets) for r in rows])


def _option_lengths(rows: Sequence[PackedRow]) -> list[int]:
    return [len(opt) for r in rows for opt in r.targets]


def _regroup(items: list, sizes: list[int]) -> list[list]:
    out, start = [], 0
    for n in sizes:
        out.append(items[start : start + n])
        start += n
    return out


def score_requests(
    model, requests: Sequence[Request], batch_size: int = 16, pad_id: int = 0, max_length: int | None = None,
    compile: Literal["auto"] | bool = False,
) -> list[list[OptionScore]]:  # fmt: skip
    """Score every (context, options) request; batches hold requests of similar packed length.

    Contexts longer than `max_length` minus the longest option are cut from the left (the start of a
    k-shot prompt matters least), with a warning. `compile`: run the decoder layers compiled (see the
    module docstring for "auto").
    """
    rows = [pack_row(_fit(ctx, opts, max_length), opts) for ctx, opts in requests]
    lengths = [len(r.input_ids) for r in rows]
    compiled = _compiled_layers(model, compile, sum(lengths))
    order = sorted(range(len(rows)), key=lambda i: lengths[i], reverse=True)  # big batches first
    results: list[list[OptionScore]] = [[] for _ in rows]
    for chunk in _token_batches(order, lengths, batch_size):
        scored = score_batch(model, [rows[i] for i in chunk], pad_id, compiled)
        for i, scores in zip(chunk, scored, strict=True):
            results[i] = scores
    return results


# auto: ~35 s of eager bf16 scoring on 2 cores; compiled, that much work takes ~9 s (base model) to ~18 s
# (LoRA adapter) less, about one compile (~9 s with the on-disk caches warm, ~20 s cold)
HOTNESS = Hotness(threshold=1.5e13)


def _compiled_layers(model, want: Literal["auto"] | bool, n_tokens: int) -> CompiledLayers | None:
    """Compiled decoder layers when `want` says so; "auto": on a CPU under bf16 autocast, once this
    process's scoring work, this call's included, reaches HOTNESS's threshold."""
    device = next(model.parameters()).device.type
    bf16 = torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16
    if not HOTNESS.wants(want, model, n_tokens, cpu_bf16=device == "cpu" and bf16):
        return None
    return CompiledLayers(model, "scoring")


TOKENS_PER_ROW = 128
MAX_ROWS_FACTOR = 8


def _token_batches(order: list[int], lengths: list[int], batch_size: int) -> list[list[int]]:
    """Cut `order` (longest first) into batches: at least `batch_size` rows (fewer at the end), more while
    rows × longest ≤ batch_size × TOKENS_PER_ROW, never more than MAX_ROWS_FACTOR × batch_size rows."""
    budget, cap = batch_size * TOKENS_PER_ROW, batch_size * MAX_ROWS_FACTOR
    batches, start = [], 0
    while start < len(order):
        width, end = lengths[order[start]], start + batch_size
        while end < len(order) and end - start < cap and (end - start + 1) * width <= budget:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def _fit(context: list[int], options: Sequence[list[int]], max_length: int | None) -> list[int]:
    if max_length is None:
        return context
    room = max_length - max(len(o) for o in options)
    if len(context) > room:
        log.warning(
            "prompt of %d tokens cut to its last %d to fit max_length %d", len(context), room, max_length
        )
        return context[-room:] if room > 0 else context[-1:]
    return context


def encode_options(task: TaskSpec, tokenizer, example: Example, demos: Sequence[Example] = ()) -> Request:
    """Token ids of the example's context and of each option continuation (answer prefix + option)."""
    assert example.options is not None, "only classification / multiple-choice examples have options"
    context = render_context(task, tokenizer, example, demos)
    chat = uses_chat(task, tokenizer)
    prefix = answer_prefix(task, tokenizer)
    pairs = [encode_pair(tokenizer, context, prefix + option, chat=chat) for option in example.options]
    ctx = pairs[0][0]
    assert all(p[0] == ctx for p in pairs), "context tokens must not depend on the option"
    if not ctx:  # nothing to condition on: start from a document boundary, as lm-eval does
        ctx = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    empty = [o for o, (_, cont) in zip(example.options, pairs, strict=True) if not cont]
    if empty:
        raise SpilloverError(
            f"task '{task.name}', example {example.id}: option {empty[0]!r} encodes to no tokens"
        )
    return ctx, [cont for _, cont in pairs]


def score_examples(
    model,
    tokenizer,
    task: TaskSpec,
    examples: Sequence[Example],
    demos: Sequence[Sequence[Example]] | None = None,
    batch_size: int = 16,
    compile: Literal["auto"] | bool = False,
) -> list[ScoredExample]:
    """Score the options of every example; `demos[i]` are the k-shot demonstrations of `examples[i]`.
    `compile`: see `score_requests`."""
    demos = demos if demos is not None else [()] * len(examples)
    requests = [encode_options(task, tokenizer, ex, d) for ex, d in zip(examples, demos, strict=True)]
    max_length = getattr(model.config, "max_position_embeddings", None)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scored = score_requests(model, requests, batch_size=batch_size, pad_id=pad_id, max_length=max_length,
                            compile=compile)  # fmt: skip
    return [_summarise(ex, scores) for ex, scores in zip(examples, scored, strict=True)]


def _summarise(example: Example, scores: list[OptionScore]) -> ScoredExample:
    return ScoredExample(
        logprobs=tuple(s.logprob for s in scores),
        n_tokens=tuple(s.n_tokens for s in scores),
        n_bytes=tuple(len(o.encode("utf-8")) for o in example.options or ()),
        is_greedy=tuple(s.is_greedy for s in scores),
    )
