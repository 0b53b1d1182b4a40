"""scripts/readme_figures.py: the README's quick-start figures rendered from a run's tables (hand-written
CSVs here, with the exact text expected), --write / --check on a README copy, and (slow tier) the real
README against runs/quickstart/tables when a quick-start run exists."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "scripts" / "readme_figures.py")
figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(figures)

MISLABEL = "sst2+mislabel(fraction=1.0)"
TABLES = {
    "delta_stats.csv": f"""source,target,metric,delta,ci_low,ci_high,p,q,significant,n,seeds
sst2,sst2,accuracy,0.125,0.0417,0.2167,0.004,0.02,True,120,1
sst2,review_sentiment,accuracy,0.05,-0.0333,0.1333,0.3,0.41,False,120,1
hate_speech,sst2,accuracy,-0.2,-0.3,-0.1,0.0005,0.0021,True,120,1
hate_speech,review_sentiment,accuracy,-0.3833,-0.475,-0.2917,1e-9,2e-8,True,120,1
"{MISLABEL}",sst2,accuracy,-0.2083,-0.3,-0.1167,0.001,0.007,True,120,1
"{MISLABEL}",review_sentiment,accuracy,0.0,-0.05,0.05,1.0,1.0,False,120,1
""",
    "behaviour.csv": """model,target,mean_length,length_unit,prior_shift,label_proportions,majority_share,collapsed
base,sst2,1.0,chars,0.02,"{'negative': 0.55, 'positive': 0.45}",0.55,False
hate_speech,sst2,1.0,chars,0.45,"{'negative': 0.95, 'positive': 0.05}",0.95,True
hate_speech,review_sentiment,1.0,chars,0.5,"{'negative': 1.0, 'positive': 0.0}",1.0,True
sst2,gen_task,12.0,tokens,,,,
""",
    "scores.csv": f"""model,target,metric,value,n,ci_low,ci_high
base,sst2,accuracy,0.775,120,0.7,0.85
base,sst2,balanced_accuracy,0.77,120,0.69,0.84
sst2,sst2,accuracy,0.9,120,0.842,0.95
sst2,sst2,balanced_accuracy,0.9,120,0.84,0.95
"{MISLABEL}",sst2,accuracy,0.567,120,0.475,0.658
""",
    "pca_null.csv": """component,explained,null_p95,above_null
PC1,0.62,0.71,False
PC2,0.38,0.45,False
""",
}
EXPECTED = f"""{figures.BEGIN}
4 of the 6 Δ cells are significant (Benjamini–Hochberg q < 0.05); 1 training seed, 120 test rows per target. Δ
is tuned minus base in points of the target's metric, with its paired 95% CI (`delta_stats.csv`):

| tuned on ↓ / evaluated on → | sst2 | review_sentiment |
| --- | --- | --- |
| sst2 | +12.5 [+4.2, +21.7], q = 0.020 | +5.0, not significant at n = 120 |
| hate_speech | −20.0 [−30.0, −10.0], q = 0.002 | −38.3 [−47.5, −29.2], q < 0.001 |
| {MISLABEL} | −20.8 [−30.0, −11.7], q = 0.007 | 0.0, not significant at n = 120 |

Models that answer one label on at least 90% of a target's rows (`behaviour.csv`): hate_speech on sst2 (95%),
review_sentiment (100%).

In-task scores, base → tuned, with 95% CIs (`scores.csv`): sst2 on sst2: accuracy 0.775 [0.700, 0.850] → 0.900
[0.842, 0.950]; balanced accuracy 0.770 [0.690, 0.840] → 0.900 [0.840, 0.950]. {MISLABEL} on
sst2: accuracy 0.775 [0.700, 0.850] → 0.567 [0.475, 0.658].

No principal component of Δ is above its permutation null (`pca_null.csv`; fitted on 2 non-control sources):
PC1 explains 62% of Δ's variance, the null's 95th percentile is 71%.
{figures.END}"""


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "run" / "tables").mkdir(parents=True)
    for name, text in TABLES.items():
        (tmp_path / "run" / "tables" / name).write_text(text, encoding="utf-8")
    return tmp_path / "run"


def test_renders_the_block_from_hand_written_tables(run_dir):
    assert figures.render(run_dir) == EXPECTED


def test_components_above_the_null_are_named():
    null = pd.DataFrame(
        {
            "component": ["PC1", "PC2"],
            "explained": [0.62, 0.2],
            "null_p95": [0.55, 0.3],
            "above_null": [True, False],
        }
    )
    stats = pd.DataFrame({"source": ["a", "b", "a+mislabel(fraction=1.0)"]})
    assert figures.pca_line(null, stats) == (
        "PC1 (62% of Δ's variance; null 95th percentile 55%) is above its permutation null; the later "
        "components are not (`pca_null.csv`; fitted on 2 non-control sources)."
    )


def test_write_then_check_and_check_fails_on_a_changed_copy(run_dir, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nWhat it showed:\n\n{figures.BEGIN}\nstale\n{figures.END}\n\nReading guide.\n")
    assert figures.main([str(run_dir), "--check", "--readme", str(readme)]) == 1
    assert figures.main([str(run_dir), "--write", "--readme", str(readme)]) == 0
    assert readme.read_text() == f"# x\n\nWhat it showed:\n\n{EXPECTED}\n\nReading guide.\n"
    capsys.readouterr()
    assert figures.main([str(run_dir), "--check", "--readme", str(readme)]) == 0
    readme.write_text(readme.read_text().replace("+12.5 [+4.2", "+12.0 [+4.2"))
    assert figures.main([str(run_dir), "--check", "--readme", str(readme)]) == 1
    out = capsys.readouterr().out
    assert "-| sst2 | +12.0 [+4.2" in out and "+| sst2 | +12.5 [+4.2" in out and "run with --write" in out


def test_a_readme_without_the_markers_is_refused(run_dir, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no block\n")
    with pytest.raises(SystemExit, match="no '<!-- quickstart-figures:begin"):
        figures.main([str(run_dir), "--check", "--readme", str(readme)])


@pytest.mark.slow
def test_readme_matches_the_quickstart_run():
    run = ROOT / "runs" / "quickstart"
    if not (run / "tables" / "delta_stats.csv").exists():
        pytest.skip("no quick-start run: make demo, then scripts/readme_figures.py runs/quickstart --write")
    assert figures.main([str(run), "--check"]) == 0, "README figures are stale: run with --write"
