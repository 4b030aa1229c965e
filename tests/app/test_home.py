"""The home page through Streamlit's AppTest, on an empty store and on a smoke store."""

from __future__ import annotations

import pandas as pd
import pytest

from engine import compare
from engine.store import open_run
from tests.app.format_rules import table_problems
from tests.app.pages import open_page
from ui.demo_run import demo_command, progress_of, stored_runs


def run_app(monkeypatch, runs_dir):
    return open_page(monkeypatch, runs_dir, "app.py")


@pytest.mark.parametrize(("bf16", "expected"), [(False, "about 1 h"),
                                               (True, "about 13 min 20 s")])
def test_empty_store_says_how_to_make_a_run(monkeypatch, tmp_path, bf16, expected):
    from engine import profiles

    monkeypatch.setattr(profiles, "cpu_has_bf16", lambda: bf16)  # the ETA follows the CPU
    at = run_app(monkeypatch, tmp_path / "none")
    assert "No runs" in at.info[0].value
    assert "python -m engine run" in at.info[0].value
    assert at.button(key="home_start_demo").label.startswith("Start the demo run")
    assert any(f"{expected} (the profile's typical time" in c.value for c in at.caption)


def same_sample_table(reader, split: str) -> pd.DataFrame:
    """method x metric (and n) on the samples every method scored."""
    long, n = compare.run_metrics(reader, split)
    overall = long[long["segment"] == "all"]
    table = overall.pivot(index="method", columns="metric", values="value")
    table["n"] = overall.groupby("method")["n"].max()
    assert set(table["n"]) == {n}  # one sample set for every method
    return table


def test_home_shows_summary_and_metrics(monkeypatch, smoke_store):
    at = run_app(monkeypatch, smoke_store)
    assert at.selectbox(key="sidebar_run").value == "smoke-run"
    assert "Run smoke-run" in at.subheader[0].value
    figures = {m.label: m.value for m in at.metric}
    with open_run(smoke_store, "smoke-run") as reader:
        expected = reader.summary()
        metrics = same_sample_table(reader, "test")
    assert figures["Samples"] == f"{expected['samples']:,.0f}"
    assert figures["Click rate"] == f"{100 * expected['click_rate']:.1f}%"
    assert figures["Items with text"] == "100.0%"
    table = at.dataframe[0].value.set_index("Method")
    assert {"dcnv2", "deepfm", "corella", "corella_no_align"} <= set(table.index)
    # the CRMs on the analysed subset the LLM methods scored, like every other row (smoke:
    # 32 of the test split), and the caption says so
    assert set(table["Samples"]) == {"32"}
    assert any("on the same 32 test samples" in c.value for c in at.caption)
    for method in table.index:  # display text: 4 decimals, a mark where the n is low
        assert table.loc[method, "AUC"].split()[0] == f"{metrics.loc[method, 'auc']:.4f}"
        assert table.loc[method, "ECE"].split()[0] == f"{metrics.loc[method, 'ece']:.4f}"
        assert table.loc[method, "Samples"] == f"{metrics.loc[method, 'n']:,.0f}"
        assert table.loc[method, "What it is"]  # every variant explained
    assert table.loc["corella_budget20", "What it is"].startswith("CoReLLa at a fixed LLM")
    duration = r"^\d+(\.\d)? (ms|s)$|^\d+ min( \d+ s)?$|^\d+ h( \d+ min)?$"
    assert table["Train time"].str.match(duration).all(), table["Train time"]
    assert table["Inference / 1k"].str.match(duration).all(), table["Inference / 1k"]
    low = table[table["AUC"].str.endswith("⚠")]
    assert set(low["Note"].str[:6]) <= {"low n:"} and (table["Note"] == "").sum() + len(
        low) == len(table)
    segments = at.dataframe[1].value
    assert any(c.startswith("cold_user (n=") for c in segments.columns)
    stages = at.dataframe[2].value
    assert stages["stage"].iloc[-1] == "total" and stages["time"].str.match(duration).all()
    assert table_problems(at) == []


def test_glossary_explains_terms_and_the_runs_variants(monkeypatch, smoke_store):
    at = run_app(monkeypatch, smoke_store)
    elements = at.sidebar.expander[0].markdown
    assert len(elements) == 1  # one element per page run, not one per term
    glossary = elements[0].value.split("\n\n")
    assert any(text.startswith("**UAUC**: user-averaged AUC") for text in glossary)
    assert any(text.startswith("**Entropy (bits)**") for text in glossary)
    assert any(text.startswith("**corella\\_no\\_align**: ablation without stage 2")
               for text in glossary)


def test_switching_split_and_metric(monkeypatch, smoke_store):
    at = run_app(monkeypatch, smoke_store)
    at.radio(key="home_split").set_value("valid").run()
    with open_run(smoke_store, "smoke-run") as reader:
        valid = same_sample_table(reader, "valid")
    table = at.dataframe[0].value.set_index("Method")
    assert table.loc["dcnv2", "AUC"].split()[0] == f"{valid.loc['dcnv2', 'auc']:.4f}"
    at.selectbox(key="home_metric").set_value("logloss").run()
    segments = at.dataframe[1].value.set_index("Method")
    all_col = [c for c in segments.columns if c.startswith("all")][0]
    assert segments.loc["dcnv2", all_col].split()[0] == (
        f"{valid.loc['dcnv2', 'logloss']:.4f}")
    assert table_problems(at) == []


def test_demo_progress_parsing(tmp_path):
    assert progress_of("") == (0.02, "loading data")
    frac, what = progress_of("[load] 1s\n[task] 1s\n[method 2/3] deepfm\n")
    assert frac == pytest.approx(2 / 5) and what == "training deepfm (2/3)"
    assert progress_of("...\nrun x -> runs/x.duckdb\n")[0] == 1.0
    cmd = demo_command(tmp_path)
    assert cmd[1:] == ["-m", "engine", "demo", "--out", str(tmp_path)]
    # `engine demo`: the quick run is the first 5% of the bar, the demo run the rest
    quick = "[phase 1/2] smoke run\n[load] 1s\n[task] 1s\n[method 2/4] deepfm\n"
    frac, what = progress_of(quick)
    assert frac == pytest.approx(0.05 * 2 / 6) and what == "quick smoke run: training deepfm (2/4)"
    landed = quick + "run smoke-1 -> runs/smoke-1.duckdb\n"
    assert progress_of(landed) == (0.05, "quick smoke run stored")
    assert stored_runs(landed) == ["smoke-1"]
    demo = landed + "[phase 2/2] demo run\n[load] 1s\n[task] 1s\n[method 3/5] corella\n"
    frac, what = progress_of(demo)
    assert frac == pytest.approx(0.05 + 0.95 * 3 / 7) and what == "demo run: training corella (3/5)"
    done = demo + "run demo-1 -> runs/demo-1.duckdb\n"
    assert progress_of(done) == (1.0, "stored") and stored_runs(done) == ["smoke-1", "demo-1"]
    skipped = landed + "[phase 2/2] demo run\nrun demo-0 exists; nothing to do\n"
    assert progress_of(skipped)[0] == 1.0


def test_demo_panel_follows_a_failed_engine_process(monkeypatch, tmp_path):
    """The panel reads the engine's log and reports its exit; the app trains nothing."""
    import subprocess
    import sys

    from streamlit.testing.v1 import AppTest

    from tests.app.pages import ROOT
    from ui.demo_run import PROC_KEY

    log = tmp_path / "demo.log"
    log.write_text("[load] 0.2s\n[task] 1.0s\n[method 1/4] dcnv2\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    monkeypatch.setenv("DUET_RUNS_DIR", str(tmp_path / "none"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state[PROC_KEY] = (proc, log)
    at.run()
    assert not at.exception
    assert "failed (exit 3)" in at.error[0].value
    assert "[method 1/4] dcnv2" in at.code[0].value
    assert PROC_KEY not in at.session_state
