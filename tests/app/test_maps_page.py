"""The embedding-maps page and its data shaping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.store import open_run
from tests.app.pages import open_page
from ui import maps


def test_item_signals_winner_and_entropy():
    items = pd.DataFrame({"item": ["a", "b", "c"], "title": ["A", "B", "C"],
                          "popularity": [5, 1, 0], "tags": [["Drama"], [], ["War", "Drama"]],
                          "long_tail": [False, True, True]})
    samples = pd.DataFrame({"sample_id": [1, 2, 3], "item": ["a", "a", "b"]})
    routing = pd.DataFrame({"sample_id": [1, 2, 3], "label": [1.0, 0.0, 1.0],
                            "p_crm": [0.9, 0.2, 0.3], "p_llm": [0.6, 0.5, 0.8],
                            "entropy": [0.4, 0.6, 0.9]})
    out = maps.item_signals(items, samples, routing).set_index("item")
    assert out.loc["a", "genre"] == "Drama" and out.loc["b", "genre"] == "(none)"
    assert out.loc["a", "mean entropy"] == pytest.approx(0.5)
    assert out.loc["a", "CRM vs LLM"] == "CRM better"  # errors 0.15 vs 0.45
    assert out.loc["b", "CRM vs LLM"] == "LLM better"  # 0.7 vs 0.2
    assert out.loc["c", "CRM vs LLM"] == "not scored" and np.isnan(out.loc["c", "mean entropy"])


def test_pair_agreement_is_order_free():
    agreement = pd.DataFrame({"entity_id": ["a", "b"], "space_a": "semantic",
                              "space_b": "behavioural", "k": 5, "agreement": [0.2, 0.8]})
    assert maps.pair_agreement(agreement, "behavioural", "semantic").to_dict() == {
        "a": 0.2, "b": 0.8}


def test_selected_items_from_a_selection_event():
    frame = pd.DataFrame({"entity_id": ["a", "b", "c"], "x": [0, 1, 2]})
    event = {"selection": {"points": [{"customdata": ["c", 3]}, {"customdata": ["a", 1]}]}}
    assert maps.selected_items(frame, event)["entity_id"].tolist() == ["a", "c"]
    assert maps.selected_items(frame, None).empty


def test_page_draws_both_spaces(monkeypatch, smoke_store):
    at = open_page(monkeypatch, smoke_store, "pages/4_Embedding_maps.py")
    assert at.selectbox(key="maps_left").value == "semantic"
    assert at.selectbox(key="maps_right").value == "behavioural"
    with open_run(smoke_store, "smoke-run") as reader:
        agreement = reader.frame("map_agreement")
    mean = maps.pair_agreement(agreement, "semantic", "behavioural").mean()
    assert any(f"Mean agreement {mean:.2f} over 60 items" in c.value for c in at.caption)
    at.selectbox(key="maps_colour").set_value("CRM vs LLM").run()
    assert not at.exception
    # CoReLLa's before/after-alignment comparison, the same numbers as the stored agreement
    summary = next(d.value for d in at.dataframe if "comparison" in d.value.columns)
    want = maps.alignment_summary(agreement, "corella")
    pd.testing.assert_frame_equal(summary.reset_index(drop=True), want)
    assert at.subheader[-1].value == "What corella's alignment changed"
    at.selectbox(key="maps_left").set_value("corella: aligned LLM")
    at.selectbox(key="maps_right").set_value("corella: aligned CRM").run()
    assert not at.exception
    n = int(want["items"].iloc[1])
    assert any(f"over {n} items" in c.value for c in at.caption)


def test_alignment_summary_compares_before_and_after():
    def rows(a, b, values):
        return pd.DataFrame({"entity_id": list("xyz")[:len(values)], "space_a": f"m: {a}",
                             "space_b": f"m: {b}", "k": 2, "agreement": values})

    agreement = pd.concat([rows("LLM state", "CRM state", [0.0, 0.5, 0.1]),
                           rows("aligned CRM", "aligned LLM", [1.0, 0.5, 0.6]),
                           rows("LLM state", "aligned LLM", [0.9, 0.9, 0.9])])
    out = maps.alignment_summary(agreement, "m")
    assert out["comparison"].tolist() == ["before: LLM state vs CRM state",
                                          "after: aligned LLM vs aligned CRM"]
    assert out["mean agreement"].tolist() == pytest.approx([0.2, 0.7])
    assert out["median agreement"].tolist() == pytest.approx([0.1, 0.6])
    assert out["items"].tolist() == [3, 3]
    assert maps.aligned_methods(["semantic", "m: aligned LLM", "m: LLM state", "n: x"]) == ["m"]


def test_page_without_maps_says_so(monkeypatch, tmp_path, ml100k_dir):
    from engine.pipeline import RunRequest, run

    run(RunRequest(path=str(ml100k_dir), profile="smoke", out=str(tmp_path), run_id="plain",
                   methods=("dcnv2",), maps=False), log=lambda _: None)
    at = open_page(monkeypatch, tmp_path, "pages/4_Embedding_maps.py")
    assert "no embedding maps" in at.info[0].value
