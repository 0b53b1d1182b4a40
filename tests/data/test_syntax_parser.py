"""The syntactic profile with the real English parser that `make setup` installs (`spillover[syntax]`),
and the note that replaces it when spaCy or the parser is absent (simulated)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from spillover.data import stats
from spillover.data.tasks import Example
from spillover.studies.tables import write_tables
from spillover.studies.transfer.analysis import dataset_stats_table

SYNTAX_COLUMNS = [
    "syntax_relations",
    "syntax_entropy_bits",
    "syntax_tokens_per_sentence",
    "syntax_clauses_per_sentence",
    "syntax_top_relations",
]
TEXTS = ["The dog chased the cat.", "A man who smiled bought two books because they were cheap."]


def _examples() -> list[Example]:
    return [Example(str(i), t, "positive", {}, ("negative", "positive"), 1) for i, t in enumerate(TEXTS)]


def _char_tokenizer(texts, add_special_tokens=False):
    return {"input_ids": [list(t) for t in texts]}


def _table_csv(s: stats.DatasetStats, folder) -> pd.DataFrame:
    """`tables/dataset_stats.csv` as a study writes it (`contract` → `write_tables`)."""
    write_tables({"dataset_stats": dataset_stats_table({"toy (train)": s})}, folder / "tables")
    return pd.read_csv(folder / "tables" / "dataset_stats.csv", index_col="dataset")


@pytest.fixture(scope="module")
def parser():
    if stats.installed_parser() is None:
        pytest.skip("spaCy's English parser is not installed: pip install 'spillover[syntax]' (make setup)")
    nlp, note = stats.load_parser()
    assert note is None
    return nlp


def test_installed_parser_parses_dependencies(parser):
    doc = parser(TEXTS[0])
    assert [(t.text, t.dep_, t.head.text) for t in doc] == [
        ("The", "det", "dog"),
        ("dog", "nsubj", "chased"),
        ("chased", "ROOT", "chased"),
        ("the", "det", "cat"),
        ("cat", "dobj", "chased"),
        (".", "punct", "chased"),
    ]


def test_syntax_columns_land_in_dataset_stats_csv(parser, tmp_path):
    s = stats.dataset_stats(_examples(), _char_tokenizer, ["negative", "positive"], parser=parser)
    assert s.syntax and math.isclose(sum(s.syntax.values()), 1.0)
    assert not any("syntactic profile" in n for n in s.notes)
    row = _table_csv(s, tmp_path).loc["toy (train)"]
    assert bool(row["syntactic_profile"]) and row[SYNTAX_COLUMNS].notna().all()
    # two input sentences and each target "positive" parsed as its own sentence: 4 ROOTs
    assert row["syntax_tokens_per_sentence"] == pytest.approx(1 / s.syntax["ROOT"])
    assert row["syntax_clauses_per_sentence"] > 1  # the relative clause and the "because" clause
    assert row["syntax_top_relations"].startswith(max(s.syntax, key=s.syntax.get))


@pytest.mark.parametrize("missing", ["spacy", "model"])
def test_absent_parser_leaves_a_note_and_empty_columns(missing, monkeypatch, tmp_path):
    if missing == "spacy":
        monkeypatch.setattr(stats, "spacy_available", lambda: False)
    else:
        monkeypatch.setattr(stats, "PARSER_MODELS", ("spillover_no_such_parser",))
    assert stats.installed_parser() is None
    assert stats.load_parser() == (None, stats.SYNTAX_INSTALL_NOTE)
    s = stats.dataset_stats(_examples(), _char_tokenizer, ["negative", "positive"], parser=None)
    assert s.syntax is None and stats.SYNTAX_INSTALL_NOTE in s.notes
    assert "pip install 'spillover[syntax]'" in stats.SYNTAX_INSTALL_NOTE
    row = _table_csv(s, tmp_path).loc["toy (train)"]
    assert not row["syntactic_profile"] and row[SYNTAX_COLUMNS].isna().all()
