"""Behaviour statistics of a model's outputs on one target (methods §1.3, §5.3): did it inherit a source's
length or label prior, does it hedge or refuse, answer in the expected format, and which training task
does it sound like?

Input is the per-example prediction rows the evaluation stores: dicts with at least `prediction` (the
generated text, or the predicted label / option index), and for classification `options` (the candidate
labels) plus `gold` (index into options, or the gold label text) or `target` (gold text).
A prediction that matches none of the options is counted under `OTHER`. A row may also carry
`free_text`: what the model says when it generates freely on a classification prompt (log-likelihood
scoring always picks an option, so hedging, format and style are read from this text when present).
Hedging, format and style use `free_text` when present, else `prediction`. Lengths use generated text only
(`generated_text`): `free_text`, or the `prediction` of a generation row (no `options`) — never the chosen
label or option of a log-likelihood row, whose length is the label string's and would tie "length" to which
label was chosen (an artefact). A cell without generated text has lengths with n = 0 and mean None.

Majority collapse: `majority_share` is the share of the most frequent predicted label; a cell is
`collapsed` when it is ≥ `COLLAPSE_SHARE` (0.9), i.e. the model answers (nearly) one label whatever the input
(its accuracy then equals that label's gold share and says nothing about the task).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from spillover.data.stats import (
    LengthSummary,
    entropy_bits,
    length_summary,
    style_profile,
    style_similarity,
    token_lengths,
)

OTHER = "(other)"
COLLAPSE_SHARE = 0.9  # majority share of predicted labels at or above which a cell counts as collapsed
# Case-insensitive substrings that mark a hedged or refused answer (configurable per study).
DEFAULT_HEDGES = (
    "not sure",
    "i don't know",
    "i do not know",
    "i cannot",
    "i can't",
    "i'm unable",
    "i am unable",
    "unable to",
    "as an ai",
    "it depends",
    "hard to say",
    "difficult to determine",
    "cannot determine",
    "not possible to",
    "no way to know",
    "sorry",
)


@dataclass(frozen=True)
class BehaviourStats:
    """Output lengths and, for classification, the predicted-label distribution and its prior shift.

    `char_length` / `token_length`: lengths of the generated text only (n = 0 when there is none, see the
    module docstring). `label_prior_shift` is the total variation distance ½ Σ |p_pred − p_gold| over the
    labels. `majority_share`: share of the most frequent predicted label; `collapsed`: majority_share ≥
    `COLLAPSE_SHARE`.
    `hedge_rate`: share of outputs containing a hedge phrase; `format_fail_rate`: share not in the task's
    expected format; `style_similarity`: cosine (`data.stats.style_similarity`) of the outputs' style
    profile with each reference (e.g. each training task's outputs); `sounds_like`: the most similar.
    """

    n: int
    char_length: LengthSummary
    token_length: LengthSummary | None
    label_counts: dict[str, int] | None = None
    label_proportions: dict[str, float] | None = None
    label_entropy_bits: float | None = None
    gold_proportions: dict[str, float] | None = None
    label_prior_shift: float | None = None
    majority_share: float | None = None
    collapsed: bool | None = None
    hedge_rate: float | None = None
    format_fail_rate: float | None = None
    style_similarity: dict[str, float | None] | None = None
    sounds_like: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_label(value: Any, options: Sequence[str]) -> str:
    """A prediction or gold value as a label: an option index, an option text, or OTHER."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(options):
        return options[value]
    text = str(value).strip()
    return text if text in options else OTHER


def _proportions(counts: Mapping[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: (c / total if total else 0.0) for k, c in counts.items()}


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """½ Σ |p − q| over the union of names."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def _label_universe(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(str(o) for o in r.get("options") or ()))
    return list(seen)


def _gold(row: Mapping[str, Any]) -> Any:
    return row["gold"] if row.get("gold") is not None else row.get("target")


def output_text(row: Mapping[str, Any]) -> str:
    return str(row["free_text"] if row.get("free_text") is not None else row["prediction"])


def generated_text(row: Mapping[str, Any]) -> str | None:
    """The text the model generated for a row: `free_text`, else a generation row's `prediction`; None for a
    log-likelihood row (its prediction is a chosen label or option, not generated)."""
    if row.get("free_text") is not None:
        return str(row["free_text"])
    return None if row.get("options") else str(row["prediction"])


def majority_share(counts: Mapping[str, int]) -> float | None:
    """Share of the most frequent label among the counts; None when there are none."""
    total = sum(counts.values())
    return max(counts.values()) / total if total else None


def hedge_rate(texts: Sequence[str], phrases: Sequence[str]) -> float:
    """Share of texts containing any phrase (case-insensitive, apostrophes normalised)."""
    norm = lambda t: t.lower().replace("\u2019", "'")  # noqa: E731
    wanted = [norm(p) for p in phrases]
    return sum(any(p in norm(t) for p in wanted) for t in texts) / len(texts) if texts else 0.0


def sounds_like(texts: Sequence[str], references: Mapping[str, Sequence[float]]) -> tuple[dict, str | None]:
    """({reference: style cosine}, the most similar reference) for the outputs `texts`."""
    profile = style_profile(texts)
    sims = {name: style_similarity(profile, ref) for name, ref in references.items()}
    known = {k: v for k, v in sims.items() if v is not None}
    return sims, (max(known, key=known.get) if known else None)


def behaviour_stats(
    rows: Sequence[Mapping[str, Any]],
    tokenizer=None,
    *,
    hedges: Sequence[str] | None = None,
    format_ok: Callable[[str], bool] | None = None,
    styles: Mapping[str, Sequence[float]] | None = None,
) -> BehaviourStats:
    """Length and label-prior statistics of one (model, target) cell's predictions; with `hedges`,
    `format_ok` (text -> in the expected format?) and `styles` (reference style profiles) also the hedging
    rate, the format-failure rate and the style comparison."""
    texts = [output_text(r) for r in rows]
    generated = [t for t in map(generated_text, rows) if t is not None]
    chars = length_summary([len(t) for t in generated])
    tokens = length_summary(token_lengths(generated, tokenizer)) if tokenizer is not None else None
    extra: dict[str, Any] = {}
    if hedges is not None:
        extra["hedge_rate"] = hedge_rate(texts, hedges)
    if format_ok is not None:
        extra["format_fail_rate"] = sum(not format_ok(t) for t in texts) / len(texts) if texts else 0.0
    if styles:
        extra["style_similarity"], extra["sounds_like"] = sounds_like(texts, styles)
    labels = _label_universe(rows)
    if not labels:
        return BehaviourStats(len(rows), chars, tokens, **extra)
    opts = [tuple(str(o) for o in r.get("options") or labels) for r in rows]
    pred = Counter(_as_label(r["prediction"], o) for r, o in zip(rows, opts, strict=True))
    gold = Counter(_as_label(_gold(r), o) for r, o in zip(rows, opts, strict=True) if _gold(r) is not None)
    names = labels + ([OTHER] if pred[OTHER] or gold[OTHER] else [])
    pred_counts = {k: pred.get(k, 0) for k in names}
    props = _proportions(pred_counts)
    gold_props = _proportions({k: gold.get(k, 0) for k in names}) if gold else None
    share = majority_share(pred_counts)
    return BehaviourStats(
        n=len(rows),
        char_length=chars,
        token_length=tokens,
        label_counts=pred_counts,
        label_proportions=props,
        label_entropy_bits=entropy_bits(list(pred_counts.values())),
        gold_proportions=gold_props,
        label_prior_shift=total_variation(props, gold_props) if gold_props else None,
        majority_share=share,
        collapsed=None if share is None else share >= COLLAPSE_SHARE,
        **extra,
    )
