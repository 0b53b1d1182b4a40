"""report.plots.heatmap's `significant` mask: marked cells at full colour with a "*", the rest faded."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spillover.report import plots
from spillover.report.matrix_plots import FADED


def _matrix() -> pd.DataFrame:
    return pd.DataFrame([[0.5, -0.1], [np.nan, 0.3]], index=["a", "b"], columns=["t1", "t2"])


def test_marked_cells_get_a_star_and_full_colour_the_rest_fade() -> None:
    # reordered labels and a missing row: aligned by label, missing = not significant
    marks = pd.DataFrame([[True, False]], index=["a"], columns=["t2", "t1"])
    fig = plots.heatmap(_matrix(), "Δ", diverging=True, fmt=".1f", significant=marks)
    faded, full = fig.data
    assert faded.opacity == FADED and full.opacity is None
    assert [list(r) for r in faded.text] == [["0.5", ""], ["–", "0.3"]]
    assert [list(r) for r in full.text] == [["", "-0.1*"], ["", ""]]
    assert [list(r) for r in full.z] == [[None, -0.1], [None, None]]
    assert full.hoverongaps is False and "not significant" in faded.hovertemplate
    assert faded.coloraxis == full.coloraxis == "coloraxis"  # one colour scale for both layers
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (-0.5, 0.5)


def test_mask_works_under_a_base_row_and_without_a_mask_nothing_changes() -> None:
    base = pd.Series({"t1": 0.2, "t2": 0.9})
    marks = pd.DataFrame(True, index=["a", "b"], columns=["t1", "t2"])
    fig = plots.heatmap(_matrix(), "Δ", diverging=True, base_row=base, significant=marks)
    assert len(fig.data) == 3 and fig.data[2].text[0][0] == "0.50*"
    (plain,) = plots.heatmap(_matrix(), "Δ", diverging=True).data
    assert plain.opacity is None and "*" not in str(plain.text)
