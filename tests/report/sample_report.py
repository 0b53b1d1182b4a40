"""A realistic transfer-study report for the report tests, with hostile text planted in labels and cells."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spillover.report import plots
from spillover.report.html import Section

SCRIPT_PAYLOAD = "<script>window.__pwned=1</script>"
IMG_PAYLOAD = '<img src=x onerror="window.__pwned=1">'


def transfer_frames(seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """M (5 sources × 6 targets) and the base row b; one target name carries the script payload."""
    rng = np.random.default_rng(seed)
    targets = ["sst2", "boolq", "gsm8k", "mbpp", "xsum", f"evil{SCRIPT_PAYLOAD}"]
    sources = ["sst2-lora", "boolq-lora", "gsm8k-lora", "mbpp-lora", IMG_PAYLOAD]
    base = pd.Series(rng.uniform(0.2, 0.7, len(targets)), index=targets)
    m = pd.DataFrame(
        base.to_numpy() + rng.normal(0, 0.08, (len(sources), len(targets))), index=sources, columns=targets
    )
    m.iloc[1, 3] = np.nan
    return m.clip(0, 1), base


def sample_sections() -> list[Section]:
    """Six kinds of figure (heatmap with base row ×2, scree, biplot, scatter, bars, pareto) plus tables."""
    m, base = transfer_frames()
    delta = m - base
    z = delta.fillna(0.0) - delta.fillna(0.0).mean()
    u, s, vt = np.linalg.svd(z.to_numpy(), full_matrices=False)
    pcs = [f"PC{i + 1}" for i in range(len(s))]
    ratio = s**2 / (s**2).sum()
    loadings = pd.DataFrame(vt.T, index=m.columns, columns=pcs)
    projections = pd.DataFrame(z.to_numpy() @ vt.T, index=m.index, columns=pcs)
    attribution = pd.DataFrame(
        {
            "pair": [f"{a} → {b}" for a in m.index[:3] for b in m.columns[:4]],
            "semantic similarity": np.linspace(0.1, 0.9, 12),
            "delta": np.sin(np.arange(12)) / 10,
        }
    )
    tradeoff = pd.DataFrame(
        {
            "forgetting": [0.02, 0.05, 0.08, 0.12, 0.03, 0.07, 0.10],
            "target gain": [0.05, 0.11, 0.15, 0.16, 0.08, 0.12, 0.17],
            "method": ["lora", "lora", "lora", "lora", "talr", "talr", "talr"],
        }
    )
    frontier = tradeoff.iloc[[0, 4, 5, 6]]
    table = pd.DataFrame(
        {
            "source": [SCRIPT_PAYLOAD, IMG_PAYLOAD, "plain"],
            "delta": [0.0123456, np.nan, -1.5],
            "n": [10, 20, 30],
        }
    )
    matrix = Section(
        id="matrix",
        title="Transfer matrix",
        intro="Rows are fine-tuned adapters, columns target tasks.\n\nThe top row is the base model.",
        figures=[
            plots.heatmap(
                m,
                "Scores M (base row on top)",
                diverging=False,
                base_row=base,
                x_title="target",
                y_title="source",
                value_label="score",
            ),
            plots.heatmap(
                delta,
                "Transfer Δ = M − base",
                diverging=True,
                base_row=base,
                x_title="target",
                y_title="source",
                value_label="Δ",
            ),
        ],
        tables=[(f"Anomalies {SCRIPT_PAYLOAD}", table)],
        notes=[f"Note with {IMG_PAYLOAD}", "Cells with no score are shown as a dash."],
    )
    traits = Section(
        id="traits",
        title="Latent traits",
        columns=2,
        figures=[
            plots.scree(ratio, np.cumsum(ratio)),
            plots.biplot(projections, loadings, axis_titles=("PC1 · classification", "PC2 · reasoning")),
        ],
    )
    attrib = Section(
        id="attribution",
        title="Attribution",
        figures=[
            plots.scatter(
                attribution,
                "semantic similarity",
                "delta",
                text="pair",
                title="Transfer vs semantic similarity",
            ),
            plots.bars(attribution.iloc[:6], "pair", "delta", title="Δ per pair"),
        ],
        subsections=[
            Section(
                id="tradeoff",
                title="Trade-off",
                figures=[
                    plots.pareto(
                        tradeoff,
                        "forgetting",
                        "target gain",
                        color="method",
                        frontier=frontier,
                        marker=(0.0, 0.0),
                        title="Gain vs forgetting",
                    )
                ],
            )
        ],
    )
    return [matrix, traits, attrib]


SETTINGS = {"study": "transfer", "sources": [SCRIPT_PAYLOAD], "lr": 1e-4, "note": IMG_PAYLOAD}
N_FIGURES = 7
