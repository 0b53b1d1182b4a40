"""The multitask study's analysis tables against hand-computed values."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from spillover.studies.multitask.analysis import (
    comparison_table,
    core_location_rows,
    forgetting_summary,
    forgetting_table,
    location_tables,
    module_of,
    sweep_rows,
)
from spillover.training.masks import top_p_mask


def _scores(rows):
    return pd.DataFrame([{"model": m, "target": t, "value": v} for m, t, v in rows])


def test_module_of():
    assert module_of("model.layers.3.self_attn.q_proj.weight") == (3, "self_attn.q_proj")
    assert module_of("base_model.model.model.layers.0.mlp.up_proj.lora_A.default.weight") == (
        0,
        "mlp.up_proj.lora_A",
    )
    assert module_of("model.embed_tokens.weight") == (None, "embed_tokens")
    assert module_of("model.norm.weight") == (None, "norm")


def test_comparison_normalises_by_the_single_task_score():
    scores = _scores(
        [
            ("base", "a", 0.5),
            ("base", "b", 0.2),
            ("single:a", "a", 0.8),
            ("single:a", "b", 0.1),
            ("single:b", "a", 0.4),
            ("single:b", "b", 0.5),
            ("joint", "a", 0.6),
            ("joint", "b", 0.5),
            ("cpi", "a", 0.8),
            ("cpi", "b", 0.25),
        ]
    )
    t = comparison_table(scores, ["a", "b"], ["joint", "cpi"])
    assert list(t.index) == ["base", "single:a", "single:b", "joint", "cpi"]
    assert t.at["joint", "norm/a"] == pytest.approx(0.6 / 0.8) and t.at["joint", "norm/b"] == pytest.approx(
        1.0
    )
    assert t.at["joint", "normalised_average"] == pytest.approx((0.75 + 1.0) / 2)
    assert t.at["cpi", "normalised_average"] == pytest.approx((1.0 + 0.5) / 2)
    assert t.at["base", "mean"] == pytest.approx(0.35)
    zero = comparison_table(
        _scores([("single:a", "a", 0.0), ("single:b", "b", 0.5), ("joint", "a", 0.3), ("joint", "b", 0.5)]),
        ["a", "b"],
        ["joint"],
    )
    assert math.isnan(zero.at["joint", "norm/a"]) and math.isnan(zero.at["joint", "normalised_average"])


def test_forgetting_table_by_hand():
    scores = _scores(
        [
            ("base", "a", 0.5),
            ("base", "b", 0.3),
            ("single:a", "a", 0.9),
            ("single:a", "b", 0.35),
            ("single:b", "b", 0.8),
            ("seq:sft:a>b", "a", 0.6),
            ("seq:sft:a>b", "b", 0.85),
            ("seq:cpi:a>b", "a", 0.85),
            ("seq:cpi:a>b", "b", 0.7),
        ]
    )
    t = forgetting_table(scores, [("a", "b"), ("b", "a")], ["sft", "cpi"]).set_index("method")
    assert len(t) == 2  # b > a has no scores
    assert t.at["sft", "delta_A"] == pytest.approx(0.6 - 0.9) and t.at["sft", "delta_B"] == pytest.approx(
        0.85 - 0.35
    )
    assert t.at["cpi", "delta_A"] == pytest.approx(-0.05) and t.at["cpi", "delta_B"] == pytest.approx(0.35)
    summary = forgetting_summary(t.reset_index())
    assert summary.at["cpi", "delta_A"] == pytest.approx(-0.05)


def test_core_location_and_sweep_by_hand():
    init = {
        "model.layers.0.mlp.up_proj.weight": torch.zeros(4),
        "model.layers.1.mlp.up_proj.weight": torch.zeros(4),
        "model.embed_tokens.weight": torch.zeros(2),
    }
    mask = {
        "model.layers.0.mlp.up_proj.weight": torch.tensor([True, True, False, False]),
        "model.layers.1.mlp.up_proj.weight": torch.tensor([True, False, False, False]),
        "model.embed_tokens.weight": torch.tensor([True, False]),
    }
    other = {n: torch.zeros_like(m) for n, m in mask.items()}
    other["model.embed_tokens.weight"] = torch.tensor([True, True])
    rows = core_location_rows({"t": mask, "u": other}, init)
    assert len(rows) == 6  # every tensor, with or without core elements
    tables = location_tables(rows)
    assert tables["core_by_layer"].loc["t"].to_dict() == {"0": 0.5, "1": 0.25, "other": 0.25}
    assert tables["core_by_module"].loc["t"].to_dict() == {"embed_tokens": 0.25, "mlp.up_proj": 0.75}
    assert tables["core_density_by_module"].loc["t"].to_dict() == {"embed_tokens": 0.5, "mlp.up_proj": 3 / 8}
    assert tables["core_density_by_module"].loc["u"].to_dict() == {"embed_tokens": 1.0, "mlp.up_proj": 0.0}
    mags = {"a": {"w": torch.tensor([4.0, 3.0, 2.0, 1.0])}, "b": {"w": torch.tensor([4.0, 1.0, 3.0, 2.0])}}
    cores = {p: [top_p_mask(mags[t], p) for t in ["a", "b"]] for p in [25.0, 50.0]}
    out = sweep_rows(cores, [0.0, 0.5, 1.0], ["a", "b"])
    # p = 25%: both {0} → J = 1; p = 50%: {0, 1} vs {0, 2} → J = 1/3
    assert [r["jaccard"] for r in out["pairs"]] == [1.0, pytest.approx(1 / 3)]
    assert [r["n_groups"] for r in out["groups"]] == [1, 1, 1, 1, 2, 2]
