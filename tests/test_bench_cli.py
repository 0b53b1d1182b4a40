"""`spillover bench`: unknown names are refused with exit code 2 before anything runs."""

from __future__ import annotations

from spillover.cli import main


def test_unknown_benchmark_exits_2_listing_names(capsys):
    code = main(["bench", "nope"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown benchmark 'nope'" in err
    for name in ("eval", "train", "generate", "all"):
        assert name in err


def test_extra_arguments_refused_outside_bench(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["models", "--bogus"])
    assert exc.value.code == 2
