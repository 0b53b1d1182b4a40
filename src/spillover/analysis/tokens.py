"""Token-level and code-length analysis (methods.md §4.5–4.6): pure functions over probabilities and bits.

Code length here is the mean cross-entropy of the target tokens in bits per token (−log₂ p averaged over
tokens, pooled over a task's scored sequences); ΔCL = tuned − base, so ΔCL_domain < 0 is learning and
ΔCL_general > 0 is forgetting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def probability_summary(p: Sequence[float], thresholds: Sequence[float]) -> dict[str, float]:
    """n_tokens, mean/median of p, mean bits (−log₂ p), and `frac_p<t` (hard-token fraction) per threshold."""
    arr = np.asarray(p, float)
    if not arr.size:
        return {"n_tokens": 0} | {f"frac_p<{t:g}": float("nan") for t in thresholds}
    out = {
        "n_tokens": int(arr.size),
        "mean_p": float(arr.mean()),
        "median_p": float(np.median(arr)),
        "mean_bits": float(np.mean(-np.log2(np.clip(arr, 1e-12, 1.0)))),
    }
    return out | {f"frac_p<{t:g}": float(np.mean(arr < t)) for t in thresholds}


def empirical_cdf(p: Sequence[float], grid: Sequence[float]) -> pd.DataFrame:
    """F(x) = fraction of tokens with p ≤ x, at every x of `grid`: columns p, cdf."""
    arr = np.sort(np.asarray(p, float))
    xs = np.asarray(grid, float)
    cdf = np.searchsorted(arr, xs, side="right") / max(arr.size, 1)
    return pd.DataFrame({"p": xs, "cdf": cdf})


def code_length_table(
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    base: str,
    domain_of: Mapping[str, str],
    general: Sequence[str],
) -> pd.DataFrame:
    """One row per model: bits per token on its domain and on each general task, their mean over general
    tasks, and ΔCL against `base` (tuned − base; the base row has 0).

    results[model][task]["bits"]; domain_of[model] = the domain it was tuned on (the base model gets one row
    per domain, labelled `base`, so each domain's rows compare against it).
    """
    rows = []
    for model, domain in domain_of.items():
        if model not in results or base not in results:
            continue
        r, b = results[model], results[base]
        gen = [t for t in general if t in r and t in b]
        cl_gen = float(np.mean([r[t]["bits"] for t in gen])) if gen else float("nan")
        base_gen = float(np.mean([b[t]["bits"] for t in gen])) if gen else float("nan")
        row = {
            "model": model,
            "domain": domain,
            "CL_domain": r.get(domain, {}).get("bits", float("nan")),
            "CL_general": cl_gen,
        }
        row["dCL_domain"] = row["CL_domain"] - b.get(domain, {}).get("bits", float("nan"))
        row["dCL_general"] = cl_gen - base_gen
        rows.append(
            row
            | {f"CL_{t}": r[t]["bits"] for t in gen}
            | {f"dCL_{t}": r[t]["bits"] - b[t]["bits"] for t in gen}
        )
    return pd.DataFrame(rows)
