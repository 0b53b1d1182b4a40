"""Behaviour statistics of a model's outputs on one target (methods §1.3): did it inherit a source's
length or label prior?

Input is the per-example prediction rows the evaluation stores: dicts with at least `prediction` (the
generated text, or the predicted label / option index), and for classification `options` (the candidate
labels) plus `gold` (index into options, or the gold label text) or `target` (gold text).
A prediction that matches none of the options is counted under `OTHER`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from spillover.data.stats import LengthSummary, entropy_bits, length_summary, token_lengths

OTHER = "(other)"


@dataclass(frozen=True)
class BehaviourStats:
    """Output lengths and, for classification, the predicted-label distribution and its prior shift.

    `label_prior_shift` is the total variation distance ½ Σ |p_pred − p_gold| over the labels.
    """

    n: int
    char_length: LengthSummary
    token_length: LengthSummary | None
    label_counts: dict[str, int] | None = None
    label_proportions: dict[str, float] | None = None
    label_entropy_bits: float | None = None
    gold_proportions: dict[str, float] | None = None
    label_prior_shift: float | None = None

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


def behaviour_stats(rows: Sequence[Mapping[str, Any]], tokenizer=None) -> BehaviourStats:
    """Length and label-prior statistics of one (model, target) cell's predictions."""
    texts = [str(r["prediction"]) for r in rows]
    chars = length_summary([len(t) for t in texts])
    tokens = length_summary(token_lengths(texts, tokenizer)) if tokenizer is not None else None
    labels = _label_universe(rows)
    if not labels:
        return BehaviourStats(len(rows), chars, tokens)
    opts = [tuple(str(o) for o in r.get("options") or labels) for r in rows]
    pred = Counter(_as_label(r["prediction"], o) for r, o in zip(rows, opts, strict=True))
    gold = Counter(_as_label(_gold(r), o) for r, o in zip(rows, opts, strict=True) if _gold(r) is not None)
    names = labels + ([OTHER] if pred[OTHER] or gold[OTHER] else [])
    pred_counts = {k: pred.get(k, 0) for k in names}
    props = _proportions(pred_counts)
    gold_props = _proportions({k: gold.get(k, 0) for k in names}) if gold else None
    return BehaviourStats(
        n=len(rows),
        char_length=chars,
        token_length=tokens,
        label_counts=pred_counts,
        label_proportions=props,
        label_entropy_bits=entropy_bits(list(pred_counts.values())),
        gold_proportions=gold_props,
        label_prior_shift=total_variation(props, gold_props) if gold_props else None,
    )
