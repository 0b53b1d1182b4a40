#!/usr/bin/env python3
"""Build the built-in task suite shipped in ``spillover/data/builtin``.

Reads the normalised task copies in ``<shared>/<source_task>/{train,test}.jsonl`` (+ ``meta.json``)
and writes small, deterministic subsets to ``src/spillover/data/builtin/<task>/{train,test}.jsonl``.
``tasks.yaml`` and ``ATTRIBUTION.md`` next to the data are maintained by hand; update the row
counts there if you change the sizes below.

Sampling rules (all deterministic, stdlib only, independent of the Python version):

* Each row gets a rank key ``sha256("20240601:<task>:<split>:<row id>")``; within a stratum the
  rows with the smallest keys are taken. No ``random`` state is involved, so a rerun on the same
  source files gives byte-identical output.
* Classification tasks are stratified by label (``review_sentiment`` by source domain x label)
  with largest-remainder proportional allocation, so the subset keeps the label proportions of
  the source split.
* The test subset is drawn first; train candidates whose normalised input (lower-cased,
  whitespace-collapsed) also occurs in the chosen test subset are dropped, so the subset has no
  exact train/test input overlap even where the source splits do (tweet_hate, scitldr,
  review_sentiment).
* Output order interleaves the strata (each row is placed at its quantile inside its stratum),
  so every prefix of a file is itself roughly stratified (e.g. the first 500 sst2 test rows are
  ~50/50). Ties are broken by the rank key.
* Rows are copied unchanged (all original fields), written as UTF-8 JSONL with
  ``ensure_ascii=False``, one object per line.

Usage::

    python scripts/build_builtin_suite.py [--shared ../shared/data] [--out src/spillover/data/builtin]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

SEED = 20240601
REPO_ROOT = Path(__file__).resolve().parent.parent

# name -> (source folder in the shared data, train rows, test rows, stratification fields)
# Stratification fields: () = simple (unstratified) sample.
TASKS: dict[str, tuple[str, int, int, tuple[str, ...]]] = {
    "sst2": ("sst2", 1000, 1000, ("label",)),
    "review_sentiment": ("review_sentiment_amazon_yelp", 600, 400, ("source_domain", "label")),
    "tweet_sentiment": ("tweet_sentiment", 600, 400, ("label",)),
    "snli": ("snli", 800, 400, ("label",)),
    "rte": ("rte", 600, 277, ("label",)),
    "mrpc": ("mrpc", 800, 400, ("label",)),
    "hate_speech": ("hate_speech_davidson", 800, 400, ("label",)),
    "tweet_hate": ("tweet_hate", 600, 400, ("label",)),
    "ag_news": ("ag_news", 800, 400, ("label",)),
    "gsm8k": ("gsm8k", 600, 300, ()),
    "mbpp": ("mbpp", 170, 257, ()),
    "squad_rc": ("squad_rc", 500, 300, ()),
    "scitldr": ("scitldr", 500, 300, ()),
}

MAX_TOTAL_BYTES = 8 * 1024 * 1024


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def rank_key(task: str, split: str, row: dict) -> str:
    return hashlib.sha256(f"{SEED}:{task}:{split}:{row['id']}".encode()).hexdigest()


def norm_text(text: str) -> str:
    return " ".join(str(text).lower().split())


def allocate(counts: dict[tuple, int], n: int) -> dict[tuple, int]:
    """Largest-remainder proportional allocation of n rows over strata (ties: stratum order)."""
    total = sum(counts.values())
    if n >= total:
        return dict(counts)
    exact = {k: n * c / total for k, c in counts.items()}
    quota = {k: int(v) for k, v in exact.items()}
    order = sorted(counts, key=lambda k: (-(exact[k] - quota[k]), list(counts).index(k)))
    for k in order[: n - sum(quota.values())]:
        quota[k] += 1
    return quota


def sample(task: str, split: str, rows: list[dict], n: int, strata_fields: tuple[str, ...]) -> list[dict]:
    """Stratified, hash-ranked sample of n rows, ordered so every prefix stays stratified."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:  # insertion order = first appearance in the source: deterministic
        groups.setdefault(tuple(row[f] for f in strata_fields), []).append(row)
    quota = allocate({k: len(v) for k, v in groups.items()}, n)
    placed: list[tuple[float, str, dict]] = []
    for key, members in groups.items():
        k = quota[key]
        chosen = sorted(members, key=lambda r: rank_key(task, split, r))[:k]
        for i, row in enumerate(chosen):
            placed.append(((i + 0.5) / k, rank_key(task, split, row), row))
    placed.sort(key=lambda t: (t[0], t[1]))
    return [row for _, _, row in placed]


def write_jsonl(path: Path, rows: list[dict]) -> bytes:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def label_counts(rows: list[dict]) -> str:
    if not rows or "label" not in rows[0]:
        return ""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--shared",
        type=Path,
        default=REPO_ROOT / ".." / "shared" / "data",
        help="folder with the shared task copies (default: ../shared/data from the repo root)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "src" / "spillover" / "data" / "builtin",
        help="output folder (default: src/spillover/data/builtin)",
    )
    args = ap.parse_args()
    shared = args.shared.resolve()
    out = args.out.resolve()

    total_bytes = 0
    for name, (source, n_train, n_test, strata) in TASKS.items():
        src = shared / source
        meta = json.loads((src / "meta.json").read_text(encoding="utf-8"))
        labels = meta.get("labels")
        train_rows = read_jsonl(src / "train.jsonl")
        test_rows = read_jsonl(src / "test.jsonl")

        test = sample(name, "test", test_rows, n_test, strata)
        test_inputs = {norm_text(r["input"]) for r in test}
        candidates = [r for r in train_rows if norm_text(r["input"]) not in test_inputs]
        dropped = len(train_rows) - len(candidates)
        train = sample(name, "train", candidates, n_train, strata)

        for split, rows in (("train", train), ("test", test)):
            ids = [r["id"] for r in rows]
            assert len(ids) == len(set(ids)), f"{name}/{split}: duplicate ids"
            if labels:
                bad = [
                    r["id"]
                    for r in rows
                    if r["output"] not in labels or r.get("label", r["output"]) != r["output"]
                ]
                assert not bad, f"{name}/{split}: outputs not in meta labels: {bad[:5]}"
            data = write_jsonl(out / name / f"{split}.jsonl", rows)
            total_bytes += len(data)
            digest = hashlib.sha256(data).hexdigest()[:12]
            print(
                f"{name:17s} {split:5s} {len(rows):5d} rows  {len(data) / 1024:7.1f} KiB  sha256:{digest}  "
                f"{label_counts(rows)}"
            )
        if dropped:
            print(f"{name:17s} (dropped {dropped} train candidates whose input is in the test subset)")

    print(f"total {total_bytes / 1024 / 1024:.2f} MiB of JSONL in {out}")
    if total_bytes > MAX_TOTAL_BYTES:
        raise SystemExit(f"built-in suite is {total_bytes} bytes, over the {MAX_TOTAL_BYTES} byte budget")


if __name__ == "__main__":
    main()
