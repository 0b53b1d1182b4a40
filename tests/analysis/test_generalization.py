"""Cell labelling and the generalization tables, against hand-computed values."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from spillover.analysis import generalization as g

TYPES = {
    "sst2": "sentiment",
    "review": "sentiment",
    "imdb": "sentiment",
    "hate": "toxicity",
    "tldr": "summarisation",
    "nodomain": "sentiment",
}
DOMAINS = {"sst2": "movie reviews", "imdb": "movie reviews", "review": "product reviews", "nodomain": None}


@pytest.mark.parametrize(
    ("trained_on", "target", "expected"),
    [
        ("sst2", "sst2", g.ID),
        ("sst2", "imdb", g.ID),  # another dataset, same task type and domain
        ("imdb", "sst2", g.ID),
        ("sst2", "review", g.OOD),  # same task type, other domain
        ("review", "sst2", g.OOD),
        ("sst2", "nodomain", g.OOD),  # no domain: a domain of its own
        ("nodomain", "nodomain", g.ID),
        ("tldr", "review", g.CROSS),  # no domain for tldr, and another task type
        ("sst2", "hate", g.CROSS),
        ("tldr", "tldr", g.ID),
        ("tldr", "sst2", g.CROSS),
    ],
)
def test_cell_setting(trained_on, target, expected):
    assert g.cell_setting(trained_on, target, TYPES, DOMAINS) == expected


def test_cell_setting_without_domains_counts_only_the_dataset_itself_in_domain():
    assert g.cell_setting("sst2", "sst2", TYPES) == g.ID
    assert g.cell_setting("sst2", "imdb", TYPES) == g.OOD
    assert g.cell_setting("sst2", "hate", TYPES) == g.CROSS


def test_builtin_tasks_carry_a_type_and_domain_so_in_domain_spans_datasets():
    from spillover.data.tasks import builtin_tasks

    tasks = builtin_tasks()
    assert all(t.task_type and t.domain for t in tasks.values()), [
        n for n, t in tasks.items() if not t.domain
    ]
    types = {n: t.task_type for n, t in tasks.items()}
    domains = {n: t.domain for n, t in tasks.items()}
    assert g.cell_setting("hate_speech", "tweet_hate", types, domains) == g.ID  # toxicity on tweets, both
    assert g.cell_setting("sst2", "review_sentiment", types, domains) == g.OOD
    assert g.cell_setting("sst2", "tweet_sentiment", types, domains) == g.OOD
    assert g.cell_setting("sst2", "hate_speech", types, domains) == g.CROSS


def _cells() -> pd.DataFrame:
    rows = []
    base = {
        ("sst2", 0): 0.5,
        ("review", 0): 0.6,
        ("hate", 0): 0.2,
        ("sst2", 2): 0.7,
        ("review", 2): 0.7,
        ("hate", 2): 0.3,
    }
    for (t, k), v in base.items():
        rows.append(dict(source=None, method=None, size=None, target=t, shots=k, value=v))
    tuned = {  # (method, size, target, shots) -> score, all trained on "pos" = sst2
        ("ft", 8, "sst2", 0): 0.9,
        ("ft", 8, "review", 0): 0.8,
        ("ft", 8, "hate", 0): 0.1,
        ("ft", 8, "sst2", 2): 0.9,
        ("ft", 8, "review", 2): 0.9,
        ("ft", 8, "hate", 2): 0.2,
        ("fticl", 8, "sst2", 0): 0.8,
        ("fticl", 8, "review", 0): 0.8,
        ("fticl", 8, "hate", 0): 0.3,
        ("ft", 4, "sst2", 0): 0.6,
    }
    for (m, n, t, k), v in tuned.items():
        rows.append(dict(source="pos", method=m, size=n, target=t, shots=k, value=v))
    frame = pd.DataFrame(rows).astype({"size": "Int64"})
    return g.label_cells(frame, {"pos": "sst2"}, TYPES, DOMAINS)


def test_label_cells_adds_setting_base_and_delta():
    cells = _cells()
    row = cells[
        (cells["method"] == "ft")
        & (cells["size"] == 8)
        & (cells["target"] == "review")
        & (cells["shots"] == 2)
    ]
    assert (
        row["setting"].item() == g.OOD
        and row["base"].item() == 0.7
        and row["delta"].item() == pytest.approx(0.2)
    )
    assert cells[cells["source"].isna()]["setting"].isna().all()


def test_label_cells_uses_domains():
    frame = pd.DataFrame(
        [
            dict(source=None, method=None, size=None, target="imdb", shots=0, value=0.5),
            dict(source="pos", method="ft", size=8, target="imdb", shots=0, value=0.75),
        ]
    ).astype({"size": "Int64"})
    assert g.label_cells(frame, {"pos": "sst2"}, TYPES, DOMAINS)["setting"].tolist() == [None, g.ID]
    assert g.label_cells(frame, {"pos": "sst2"}, TYPES)["setting"].tolist() == [None, g.OOD]


def test_generalization_table_means_per_setting_and_base_row():
    table = g.generalization_table(_cells(), 8)
    assert list(table.index) == ["base", "pos · FT", "pos · FTICL"]
    assert table.loc["pos · FT", "0-shot in-domain"] == pytest.approx(0.9)
    assert table.loc["pos · FT", "2-shot cross-task"] == pytest.approx(0.2)
    assert table.loc["base", "0-shot out-of-domain"] == pytest.approx(0.6)
    assert math.isnan(table.loc["pos · FTICL", "2-shot in-domain"])  # FTICL was not evaluated 2-shot
    delta = g.generalization_table(_cells(), 8, value="delta")
    assert "base" not in delta.index
    assert delta.loc["pos · FTICL", "0-shot cross-task"] == pytest.approx(0.1)
    assert delta.loc["pos · FT", "0-shot in-domain"] == pytest.approx(0.4)


def test_fticl_comparison_and_size_curves():
    cmp = g.fticl_comparison(_cells())
    row = cmp[(cmp["size"] == 8) & (cmp["shots"] == 0) & (cmp["setting"] == g.CROSS)]
    assert row["ft"].item() == pytest.approx(0.1) and row["fticl_minus_ft"].item() == pytest.approx(0.2)
    curves = g.size_curves(_cells())
    ft_id = curves[(curves["method"] == "ft") & (curves["shots"] == 0) & (curves["setting"] == g.ID)]
    assert list(ft_id["size"]) == [4, 8] and list(ft_id["score"]) == pytest.approx([0.6, 0.9])
    assert list(ft_id["delta"]) == pytest.approx([0.1, 0.4])
