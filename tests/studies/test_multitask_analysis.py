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
    overlap_rows,
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


def _cores(masks: dict[str, dict[str, torch.Tensor]]) -> dict:
    """A cores-job result for hand-made boolean masks (as `cores_job` records it)."""
    from spillover.training.stages import jaccard_matrix

    tasks = list(masks)
    init = {n: m for n, m in next(iter(masks.values())).items()}
    return {
        "tasks": tasks,
        "n_params": sum(m.numel() for m in init.values()),
        "core_sizes": {t: int(sum(int(m.sum()) for m in masks[t].values())) for t in tasks},
        "jaccard": jaccard_matrix([masks[t] for t in tasks]).tolist(),
        "location": core_location_rows(masks, init),
    }


def test_core_overlap_against_both_nulls():
    # tensor w (1000 elements) holds both cores; tensor v (9000) none: 100 core elements each, 50 shared
    w_a = torch.zeros(1000, dtype=torch.bool)
    w_a[:100] = True
    w_b = torch.zeros(1000, dtype=torch.bool)
    w_b[50:150] = True
    v = torch.zeros(9000, dtype=torch.bool)
    out = overlap_rows(_cores({"a": {"w": w_a, "v": v}, "b": {"w": w_b, "v": v.clone()}}))
    (row,) = out
    assert row["intersection"] == 50 and row["jaccard"] == pytest.approx(50 / 150)
    p = 100 / 10_000
    assert row["chance_jaccard_uniform"] == pytest.approx(p / (2 - p))  # E[I] = 1 → 1 / 199
    assert row["ratio_uniform"] == pytest.approx(50.0)
    assert row["chance_jaccard_per_tensor"] == pytest.approx(10 / 190)  # E[I] = 100·100/1000 = 10
    assert row["ratio_per_tensor"] == pytest.approx(5.0)
    assert row["p_uniform"] < 1e-30 and row["p_per_tensor"] < 1e-20
    assert row["q_uniform"] == row["p_uniform"]  # one pair: BH leaves p unchanged


def test_core_overlap_at_chance_inside_the_tensors_is_not_significant():
    # both cores are random 10% subsets of the same small tensor: far above the uniform null over all
    # elements, at chance per tensor — the per-tensor null must say so
    gen = torch.Generator().manual_seed(0)
    w = [torch.randperm(2000, generator=gen) < 200 for _ in range(3)]
    v = torch.zeros(50_000, dtype=torch.bool)
    out = overlap_rows(_cores({t: {"w": m, "v": v.clone()} for t, m in zip("abc", w, strict=True)}))
    assert len(out) == 3
    for row in out:
        assert row["q_uniform"] < 1e-10
        assert row["q_per_tensor"] > 0.05
        assert 0.5 < row["ratio_per_tensor"] < 1.5  # E[I] = 20, sd ≈ 3.8


def test_core_overlap_per_tensor_moments_match_simulation():
    # the normal approximation's mean and variance against 4000 draws of random per-tensor positions
    gen = torch.Generator().manual_seed(1)
    shapes = {"w": 300, "u": 500, "v": 40}
    counts = {"a": {"w": 30, "u": 100, "v": 20}, "b": {"w": 60, "u": 10, "v": 25}}

    def draw(k: int, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=gen) < k

    sims = []
    for _ in range(4000):
        a = {t: draw(counts["a"][t], n) for t, n in shapes.items()}
        b = {t: draw(counts["b"][t], n) for t, n in shapes.items()}
        sims.append(sum(int((a[t] & b[t]).sum()) for t in shapes))
    masks = {s: {t: draw(counts[s][t], n) for t, n in shapes.items()} for s in "ab"}
    (row,) = overlap_rows(_cores(masks))
    mean = row["intersection"] / row["ratio_per_tensor"]
    sd = (row["intersection"] - mean) / row["z_per_tensor"]
    assert mean == pytest.approx(sum(sims) / len(sims), rel=0.02)
    assert sd == pytest.approx(float(torch.tensor(sims, dtype=torch.float64).std()), rel=0.05)
