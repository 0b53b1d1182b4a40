"""Training-seed replicates (`train.seeds`, issue 24): the plan trains every model once per seed and shares
what does not depend on the seed; the tables average over seeds, compare with a seeds-then-rows bootstrap
and report the seed-to-seed spread."""

from __future__ import annotations

import pandas as pd
import pytest

from spillover.errors import SpilloverError
from spillover.studies.run import load_study, prepare, run_study


def _plan(study_file, *overrides):
    kind, spec = load_study(study_file, list(overrides))
    return prepare(kind, spec)[1]


def test_seeds_replicate_trained_jobs_and_share_the_rest(study_file):
    one = _plan(study_file)
    two = _plan(study_file, "train.seeds=[0, 7]")
    trains = two.by_kind("train")
    assert len(trains) == 2 * len(one.by_kind("train"))
    assert sorted({j.params.train.seed for j in trains}) == [0, 7]
    # the first seed's jobs keep the ids a study without `seeds` has: adding seeds re-runs nothing done
    assert set(one.jobs) - {j.id for j in one.by_kind("analyse")} <= set(two.jobs)
    base = [j for j in two.by_kind("eval") if j.params.label == "base"]
    assert len(base) == len([j for j in one.by_kind("eval") if j.params.label == "base"])
    assert all(two.seed_of.get(j.id) is None for j in base + two.by_kind("stats"))
    seven = [j for j in two if two.seed_of.get(j.id) == 7]
    assert seven and all(j.name.endswith("[seed 7]") for j in seven)
    assert all(two.jobs[two.replica_of[j.id]].kind == j.kind for j in seven)
    (analyse,) = two.by_kind("analyse")
    assert set(analyse.deps) == {j.id for j in two if j.kind in ("stats", "eval")}


def test_one_seed_in_seeds_is_the_same_plan_as_seed(study_file):
    assert list(_plan(study_file, "train.seeds=[3]").jobs) == list(_plan(study_file, "train.seed=3").jobs)


@pytest.mark.parametrize(
    ("value", "says"), [("[0, 0]", "duplicates"), ("[]", "at least 1"), ("[-1]", "outside")]
)
def test_bad_seeds_are_refused_with_the_field(study_file, value, says):
    with pytest.raises(SpilloverError) as err:
        load_study(study_file, [f"train.seeds={value}"])
    assert "train.seeds" in str(err.value) and says in str(err.value)


@pytest.mark.integration
def test_replicated_transfer_study_averages_compares_and_reports_spread(make_study):
    study = make_study(sources="[toy_a, toy_b]", targets="[toy_a, toy_b]")
    kind, spec = load_study(study, ["train.seeds=[0, 1]"])
    summary, out = run_study(kind, spec)
    assert summary.ok
    tables = out / "tables"
    stats = pd.read_csv(tables / "delta_stats.csv")
    assert (stats["seeds"] == 2).all() and len(stats) == 4
    spread = pd.read_csv(tables / "seed_spread.csv")
    assert set(spread["model"]) == {"toy_a", "toy_b"} and (spread["seeds"] == 2).all()
    # the matrix holds the mean over seeds of each cell's score
    matrix = pd.read_csv(tables / "matrix.csv", index_col=0)
    accuracy = spread[spread["metric"] == "accuracy"].set_index(["model", "target"])["mean"]
    for (model, target), mean in accuracy.items():
        assert matrix.at[model, target] == pytest.approx(mean)
    html = (out / "report.html").read_text()
    assert "Seed-to-seed spread" in html


def _study(kind: str, folder, model_dir):
    """The toy study of each other kind, from its own test module."""
    if kind == "generalization":
        from tests.studies.conftest import TASKS, write_toy_study
        from tests.studies.test_generalization_study import EXTRA_TASK, STUDY

        write_toy_study(folder, model_dir)
        (folder / "tasks.yaml").write_text(TASKS + EXTRA_TASK)
        path = folder / "gen.yaml"
        path.write_text(STUDY.format(model=model_dir, out=folder / "out"))
        return path
    if kind == "tradeoff":
        from tests.studies.test_tradeoff_study import write_tradeoff_study

        return write_tradeoff_study(folder, model_dir)
    if kind == "mixture":
        from tests.studies.test_mixture_study import write_mixture_study

        return write_mixture_study(folder, model_dir)
    from tests.studies.test_multitask_study import write_multitask_study

    return write_multitask_study(folder, model_dir)


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["generalization", "tradeoff", "mixture", "multitask"])
def test_every_kind_runs_with_seed_replicates(kind, tmp_path, tiny_model_dir):
    kind_, spec = load_study(_study(kind, tmp_path, tiny_model_dir), ["train.seeds=[0, 1]"])
    summary, out = run_study(kind_, spec)
    assert summary.ok, summary
    spread = pd.read_csv(out / "tables" / "seed_spread.csv")
    assert len(spread) and (spread["seeds"] == 2).all()
    comparisons = pd.read_csv(out / "tables" / "comparisons.csv")
    assert (comparisons["seeds"] == 2).any()  # trained models' differences average both seeds
    assert "Seed-to-seed spread" in (out / "report.html").read_text()
