"""The Compare page: its shaping on small frames, and the page on the smoke run (all five
methods) and on a run holding only some of them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from engine import compare
from tests.app.pages import open_page
from ui import compare as cmp


def small() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = 300
    label = rng.integers(0, 2, n)
    common = pd.DataFrame({
        "sample_id": np.arange(n), "label": label, "user": rng.integers(0, 30, n),
        "cold_user": np.arange(n) % 20 == 0, "long_tail_item": np.arange(n) % 3 == 0,
        "dcnv2": np.clip(0.5 + 0.3 * (label - 0.5) + rng.normal(0, 0.2, n), 0, 1),
        "coco": np.clip(0.5 + 0.1 * (label - 0.5) + rng.normal(0, 0.2, n), 0, 1)})
    methods = pd.DataFrame({"method": ["dcnv2", "coco"], "kind": ["crm", "hybrid"],
                            "train_seconds": [10.0, 400.0], "infer_ms_per_1k": [30.0, 9e3],
                            "llm_calls_per_1k": [0.0, 1000.0], "cost": ["{}", "{}"]})
    return common, compare.costs(methods)


def test_overall_segment_and_frontier_tables():
    common, costs = small()
    long = compare.metrics(common, ["dcnv2", "coco"], "dcnv2")
    table = cmp.overall_table(long, costs)
    assert table["Method"].tolist() == ["dcnv2", "coco"]  # best AUC first
    assert table["Samples"].tolist() == ["300", "300"]
    assert table.loc[1, "LLM calls / 1k"] == "1,000" and table.loc[0, "Offline LLM"] == "—"
    segments = cmp.segment_table(long)
    assert segments.columns[1] == "all (n=300)" and "cold_user (n=15)" in segments.columns
    assert segments.set_index("Method").filter(like="cold_user").iloc[0, 0].endswith("⚠")
    points = cmp.frontier(long, costs, "infer_ms_per_1k")
    assert points.set_index("method")["front"].to_dict() == {"dcnv2": True, "coco": False}
    fig = cmp.frontier_figure(points, "infer_ms_per_1k")
    assert fig.layout.xaxis.type == "log" and {t.name for t in fig.data} == {"crm", "coco"}


def test_head_to_head_summary_and_figure():
    common, _ = small()
    duel = compare.head_to_head(common, "coco", "dcnv2")
    line = cmp.wins_summary(duel, "coco", "dcnv2")
    assert line.startswith("coco wins in nowhere; dcnv2 wins in all")
    fig = cmp.head_to_head_figure(duel, "coco", "dcnv2")
    assert list(fig.data[0].x) == duel["segment"].tolist()
    assert cmp.default_methods(["dcnv2", "coco", "coco_crm", "cora_mf", "cora"]) == [
        "dcnv2", "coco", "cora"]


def table_with(at, column: str) -> pd.DataFrame:
    """The page's table holding `column` (st.dataframe without selection has no widget key)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_the_page_on_the_smoke_run(monkeypatch, smoke_store):
    at = open_page(monkeypatch, smoke_store, "pages/1_Compare.py")
    assert not at.info  # all five methods are in the smoke run
    overall = table_with(at, "LLM calls / 1k").set_index("Method")
    assert set(compare.HYBRIDS) | {"dcnv2", "deepfm"} == set(overall.index)
    # every method on the same 32 analysed test samples, the CRMs included
    assert set(overall["Samples"]) == {"32"}
    assert any("32** samples scored by every chosen method" in c.value for c in at.caption)
    segments = table_with(at, "all (n=32)")
    assert "entropy q1 (sure) (n=8)" in segments.columns
    assert len(table_with(at, "closer")) == 25
    at.radio(key="compare_cost").set_value("train_seconds").run()
    assert not at.exception
    at.selectbox(key="compare_b").set_value("dcnv2").run()
    duel = table_with(at, "winner")
    assert duel["segment"].iloc[0] == "all" and duel["n"].iloc[0] == 32


def test_a_run_with_some_methods_says_which_are_missing(monkeypatch, tmp_path_factory):
    from engine.pipeline import RunRequest, run
    from tests.synthetic import write_ml100k

    data = write_ml100k(tmp_path_factory.mktemp("some"))
    out = tmp_path_factory.mktemp("runs")
    run(RunRequest(dataset="ml-100k", path=str(data), profile="smoke", out=str(out),
                   run_id="crms", task_options={"max_users": None}, llm_map=False,
                   methods=("dcnv2", "deepfm")), log=lambda _: None)
    at = open_page(monkeypatch, out, "pages/1_Compare.py")
    assert "no corella, sllmr, llmcf, cora, coco" in at.info[0].value
    overall = table_with(at, "LLM calls / 1k")
    assert overall["Method"].tolist()[0] in {"dcnv2", "deepfm"}
    assert len(set(overall["Samples"])) == 1  # both CRMs on the whole test split


def test_report_sections_one_per_method_on_the_same_samples():
    common, _ = small()
    predictions = common[["sample_id", "label", "dcnv2", "coco"]].assign(
        coco_crm=common["dcnv2"], cora=np.where(np.arange(len(common)) < 100, 0.5, np.nan))
    samples = common[["sample_id", "user", "cold_user", "long_tail_item"]]
    methods = pd.DataFrame({"method": ["dcnv2", "coco", "coco_crm", "cora"],
                            "kind": ["crm", "hybrid", "crm", "llm"],
                            "train_seconds": 1.0, "infer_ms_per_1k": [1.0, 9.0, 1.0, 5.0],
                            "llm_calls_per_1k": [0.0, 1e3, 0.0, 1e3], "cost": "{}"})
    sections = cmp.report_sections(predictions, samples, methods, ["all", "cold_user"])
    assert list(sections) == ["report_frontier", "report_cora", "report_coco"]
    coco = sections["report_coco"][1]
    assert [t.name for t in coco.data] == ["dcnv2", "coco", "coco_crm"]
    assert "same 300 samples" in coco.layout.title.text
    assert "same 100 samples" in sections["report_cora"][1].layout.title.text
    frontier_methods = {m for t in sections["report_frontier"][1].data if t.text is not None
                        for m in t.text}
    assert frontier_methods == {"dcnv2", "coco", "cora"}
    from ui import export
    report = export.report_html("r", pd.DataFrame({"Method": ["dcnv2"]}), {}, sections)
    assert report.count("<h2>") == 4 and 'id="report_coco"' in report
