"""Batched log-likelihood scoring of answer options (classification and multiple choice).

One forward pass per example covers all of its options. Each example is packed (`models.packing`) as

    [context tokens][option 0 tokens but its last][option 1 tokens but its last]...

(an option's last token predicts nothing that is scored, so like lm-evaluation-harness it is not fed; a
one-token option adds no token at all); an option token sees the context and the earlier tokens of its own
option only, with `position_ids` that restart at len(context) for every option. When the contexts of a
call start with the same tokens (a chat template's system prompt and the task's instruction: 41–52 tokens
on the embedded model, 40–68% of a classification context), those are computed once for the whole call
and every row reads their keys and values as its KV cache (`models.prefix_cache`): a row holds
only its example's own tokens, positions continuing after the prefix. Every option is scored exactly as if it were appended
to its context alone (tested against separate forwards). Rows are right-padded into batches grouped by
length: `batch_size` rows, or more when they are short, up to `batch_size` × `TOKENS_PER_ROW` padded tokens
per forward pass (at most `MAX_ROWS_FACTOR` × `batch_size` rows), because small matmuls waste the CPU
(sst2's ~30-token rows ran ~1.4× faster 64 to a batch than 16). Only the positions that predict option
tokens go through the LM head (`logits_to_keep` as a boolean (B, T) mask), so the (B, T, V) logits tensor
is never built.

`compile=True` runs the forward passes through `torch.compile` (`models.compile`); "auto" (the default) and
False run them eagerly. Compiled and eager scores agree within bf16 rounding, not bit for bit.
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
from spillover.models import prefix_cache
from spillover.models.compile import Compiled, wants_compile
from spillover.models.packing import PAD, common_prefix, model_mask, tree_attention_mask

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
    """One example's context and options in a single sequence (see the module docstring)."""

    input_ids: list[int]  # (T,)
    branches: list[int]  # (T,) 0 = context, j + 1 = option j
    positions: list[int]  # (T,) position ids as in the full prompt; options restart after the context
    sources: list[list[int]]  # per option: the positions whose logits predict its tokens
    targets: list[list[int]]  # per option: its token ids


def pack_row(context: list[int], options: Sequence[list[int]], n_cached: int = 0) -> PackedRow:
    """One example (its options all but their last tokens). Needs a non-empty context and options. The first
    `n_cached` context tokens are not in the row: their keys and values come from a prefix computed before
    (`models.prefix_cache`), and the row's positions continue after them."""
    assert len(context) > n_cached, "the row must keep some of the context"
    assert all(options), "every option needs at least one token"
    n_ctx = len(context)
    ids, positions = list(context[n_cached:]), list(range(n_cached, n_ctx))
    branches = [0] * len(ids)
    sources, targets = [], []
    last = len(ids) - 1  # the context's last token predicts every option's first
    for j, option in enumerate(options):
        start, fed = len(ids), option[:-1]
        sources.append([last, *range(start, start + len(fed))])
        targets.append(list(option))
        ids += fed
        branches += [j + 1] * len(fed)
        positions += range(n_ctx, n_ctx + len(fed))
    return PackedRow(ids, branches, positions, sources, targets)


def _collate(rows: Sequence[PackedRow], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad packed rows: input_ids, groups (1, or PAD for padding), branches, position_ids, keep: (B, T)."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    groups = torch.full((len(rows), width), PAD, dtype=torch.long)
    branches = torch.zeros((len(rows), width), dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    keep = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n] = torch.tensor(r.input_ids)
        groups[i, :n] = 1
        branches[i, :n] = torch.tensor(r.branches)
        positions[i, :n] = torch.tensor(r.positions)
        keep[i, [p for src in r.sources for p in src]] = True
    tensors = {
        "input_ids": ids,
        "groups": groups,
        "branches": branches,
        "position_ids": positions,
        "keep": keep,
    }
    return {k: v.to(device) for k, v in tensors.items()}


@torch.inference_mode()
def score_batch(
    model,
    rows: Sequence[PackedRow],
    pad_id: int = 0,
    compiled: Compiled | None = None,
    prefix: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> list[list[OptionScore]]:
    """One forward pass for a batch of packed rows; per row (an example), per option, its score.
    `compiled`: run the forward pass compiled. `prefix`: the cached keys and values (`prefix_cache`)
    of the context tokens the rows leave out (`pack_row`'s `n_cached`)."""
    if compiled is not None and len(rows) == 1:
        # a batch of one row would compile another graph (dynamo specialises size 1): score it twice
        return score_batch(model, [rows[0], rows[0]], pad_id, compiled, prefix)[:1]
    device = next(model.parameters()).device
    batch = _collate(rows, pad_id, device)
    mask = tree_attention_mask(batch["groups"], batch["branches"])  # (B, 1, T, T)
    inputs = {
        "input_ids": batch["input_ids"],
        "position_ids": batch["position_ids"],
        "logits_to_keep": batch["keep"],
    }
    if prefix is not None:  # every token sees the whole prefix, read from the cache
        mask = torch.cat([mask.new_ones((*mask.shape[:3], prefix[0][0].shape[2])), mask], dim=-1)
        inputs["past_key_values"] = prefix_cache.prefix_cache(model, prefix, len(rows))
    inputs["attention_mask"] = model_mask(model, mask)
    out = (compiled or model)(**inputs, use_cache=False)
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
    model,
    requests: Sequence[Request],
    batch_size: int = 16,
    pad_id: int = 0,
    max_length: int | None = None,
    compile: Literal["auto"] | bool = False,
) -> list[list[OptionScore]]:
    """Score every (context, options) request; batches hold requests of similar packed length.

    Contexts longer than `max_length` minus the longest option are cut from the left (the start of a
    k-shot prompt matters least), with a warning. `compile=True`: run the forward passes compiled.
    """
    fitted = [(_fit(ctx, opts, max_length), opts) for ctx, opts in requests]
    prefix = _shared_prefix([ctx for ctx, _ in fitted])
    states = prefix_cache.prefix_states(model, prefix) if prefix else None
    rows = [pack_row(ctx, opts, len(prefix)) for ctx, opts in fitted]
    lengths = [len(r.input_ids) for r in rows]
    compiled = Compiled(model, "scoring") if wants_compile(compile) else None
    order = sorted(range(len(rows)), key=lambda i: lengths[i], reverse=True)  # big batches first
    results: list[list[OptionScore]] = [[] for _ in requests]
    for chunk in _token_batches(order, lengths, batch_size):
        for i, scores in zip(
            chunk, score_batch(model, [rows[i] for i in chunk], pad_id, compiled, states), strict=True
        ):
            results[i] = scores
    return results


def _shared_prefix(contexts: Sequence[list[int]]) -> list[int]:
    """The tokens every context starts with, short of the shortest context (each keeps one of its own);
    none when there is nothing to share."""
    if len(contexts) < 2:
        return []
    return contexts[0][: common_prefix(contexts, min(len(c) for c in contexts) - 1)]


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
    scored = score_requests(
        model, requests, batch_size=batch_size, pad_id=pad_id, max_length=max_length, compile=compile
    )
    return [_summarise(ex, scores) for ex, scores in zip(examples, scored, strict=True)]


def _summarise(example: Example, scores: list[OptionScore]) -> ScoredExample:
    return ScoredExample(
        logprobs=tuple(s.logprob for s in scores),
        n_tokens=tuple(s.n_tokens for s in scores),
        n_bytes=tuple(len(o.encode("utf-8")) for o in example.options or ()),
        is_greedy=tuple(s.is_greedy for s in scores),
    )
