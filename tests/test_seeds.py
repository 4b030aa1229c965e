"""`engine run --seeds`: one run per seed linked as a group, and the mean ± std over it in
`show`, the closing output and the Compare page; and `engine demo`, the app's first-start
chain (a quick run, then the demo run, each only when missing)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import compare
from engine.cli import main
from engine.store import open_run


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, ml100k_dir):
    out = tmp_path_factory.mktemp("runs")
    code = main(["run", "--path", str(ml100k_dir), "--profile", "smoke", "--out", str(out),
                 "--run-id", "grp", "--seeds", "0,1", "--methods", "dcnv2,deepfm",
                 "--no-maps"])
    assert code == 0
    return out


def test_one_run_per_seed_linked_as_a_group(seeded, capsys):
    with open_run(seeded, "grp-seed1") as reader:
        assert reader.run_info()["seed"] == 1
        assert compare.group_of(reader) == "grp"
        assert compare.group_runs(seeded, reader) == ["grp-seed0", "grp-seed1"]
    spread = compare.seed_spread(seeded, ["grp-seed0", "grp-seed1"], "test")
    aucs = []
    for run_id in ("grp-seed0", "grp-seed1"):
        with open_run(seeded, run_id) as reader:
            long, _ = compare.run_metrics(reader, "test")
        aucs.append(long.query("method == 'dcnv2' and segment == 'all' and metric == 'auc'")
                    ["value"].iloc[0])
    row = spread.query("method == 'dcnv2' and segment == 'all' and metric == 'auc'").iloc[0]
    assert aucs[0] != aucs[1]  # the seed changes the model
    assert row["mean"] == pytest.approx(np.mean(aucs)) and row["runs"] == 2
    assert row["std"] == pytest.approx(np.std(aucs, ddof=1))
    text = compare.spread_text(spread)
    assert text.loc["dcnv2", "auc"] == f"{np.mean(aucs):.4f} ± {np.std(aucs, ddof=1):.4f}"
    assert main(["show", "grp-seed0", "--out", str(seeded)]) == 0
    shown = capsys.readouterr().out
    assert "over 2 seeds (grp-seed0, grp-seed1)" in shown and text.loc["dcnv2", "auc"] in shown


def test_inside_the_spread():
    import pandas as pd

    spread = pd.DataFrame({"method": ["a", "b", "c"], "segment": "all", "metric": "auc",
                           "mean": [0.70, 0.705, 0.80], "std": [0.01, 0.02, 0.01]})
    assert compare.inside_spread(spread, "a", "b")
    assert not compare.inside_spread(spread, "a", "c")


def test_the_compare_page_shows_the_seed_spread(monkeypatch, seeded):
    from tests.app.pages import open_page

    at = open_page(monkeypatch, seeded, "pages/1_Compare.py")
    over = next(d.value for d in at.dataframe if "runs" in d.value.columns)
    assert set(over["method"]) == {"dcnv2", "deepfm"} and set(over["runs"]) == {2}
    assert any(m.value == "#### Over 2 seeds" for m in at.markdown)


@pytest.mark.parametrize("seeds", ["0,x", "1,1", "-1"])
def test_bad_seeds_are_one_line_errors(seeds, capsys, tmp_path):
    assert main(["run", "--profile", "smoke", "--out", str(tmp_path), "--seeds", seeds]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --seeds") and err.count("\n") == 1


def test_the_home_page_shows_the_seed_spread(monkeypatch, seeded):
    from tests.app.pages import open_page

    at = open_page(monkeypatch, seeded, "app.py")
    over = next(d.value for d in at.dataframe if "runs" in d.value.columns)
    assert set(over["method"]) == {"dcnv2", "deepfm"}
    assert all(" ± " in v for v in over["auc"])


def test_engine_demo_makes_the_quick_run_then_the_next_only_when_missing(tmp_path, ml100k_dir,
                                                                          capsys):
    out = tmp_path / "runs"
    assert main(["demo", "--out", str(out), "--path", str(ml100k_dir), "--first", "smoke",
                 "--then", "smoke", "--methods", "dcnv2", "--no-maps"]) == 0
    text = capsys.readouterr().out
    assert text.index("[phase 1/2] smoke run") < text.index("[phase 2/2] smoke run")
    assert "exists; nothing to do" in text.split("[phase 2/2]")[1]
    from engine.store import list_runs

    assert list_runs(out)["profile"].tolist() == ["smoke"]
