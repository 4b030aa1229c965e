"""The embedding-maps page and its data shaping."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest
from plotly.utils import PlotlyJSONEncoder

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


def test_selection_ids_from_a_selection_event():
    event = {"selection": {"points": [{"customdata": ["c", 3]}, {"customdata": ["a", 1]},
                                      {"x": 1}]}}
    assert maps.selection_ids(event) == {"a", "c"}
    assert maps.selection_ids(None) == set()


def test_find_items_and_genre_filter():
    signals = pd.DataFrame({"item": ["1", "2", "3"], "title": ["Toy Story", "Heat", "Up"],
                            "genres": ["Animation | Comedy", "Crime", "Animation"]})
    assert maps.find_items(signals, "story") == {"1"}
    assert maps.find_items(signals, "3") == {"3"} and maps.find_items(signals, " ") == set()
    assert maps.all_genres(signals) == ["Animation", "Comedy", "Crime"]
    assert maps.with_genres(signals, ["Comedy", "Crime"])["item"].tolist() == ["1", "2"]
    assert len(maps.with_genres(signals, [])) == 3


def test_scatter_rings_highlighted_items_and_greys_unscored():
    frame = pd.DataFrame({"entity_id": ["a", "b", "c"], "x": [0.0, 1, 2], "y": [0.0, 1, 2],
                          "title": ["A", "B", "C"], "popularity": [1, 2, 3],
                          "genres": ["x", "y", "z"], "genre": ["x", "y", "z"],
                          "CRM vs LLM": ["CRM better", "not scored", "LLM better"]})
    fig = maps.scatter(frame, "CRM vs LLM", "t", {"b", "c"})
    ringed = [t for t in fig.data if t.name.startswith("highlighted")]
    assert len(ringed) == 1 and list(ringed[0].customdata[:, 0]) == ["b", "c"]
    colours = {t.name: t.marker.color for t in fig.data if t.name in maps.WINNER_COLOURS}
    assert colours["not scored"] == maps.WINNER_COLOURS["not scored"]  # grey, not red


def test_agreement_histogram_marks_the_chance_level():
    values = pd.Series([0.1, 0.2, 0.3, 0.4, 0.5] * 4)
    fig = maps.agreement_histogram(values, "a", "b", k=5)
    texts = [a.text for a in fig.layout.annotations]
    assert f"chance {5 / 19:.3f}" in texts and f"mean {values.mean():.3f}" in texts


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
    # a selection on one map rings the same items on both (linked state), and lists them
    with open_run(smoke_store, "smoke-run") as reader:
        embeddings = reader.frame("embeddings")
    semantic = embeddings[embeddings["space"] == "semantic"]
    items = semantic["entity_id"].astype(str).head(3).tolist()
    at.session_state["maps_highlight"] = items
    at.run()
    charts = at.get("plotly_chart")
    for chart in charts[:2]:
        spec = json.loads(chart.proto.spec)
        ringed = [t for t in spec["data"] if t.get("name", "").startswith("highlighted")]
        assert len(ringed) == 1 and sorted(c[0] for c in ringed[0]["customdata"]) == sorted(
            items)
    listed = next(d.value for d in at.dataframe if "genres" in d.value.columns)
    assert sorted(listed["entity_id"].astype(str)) == sorted(items)
    # finding by title highlights instead
    title = listed["title"].iloc[0]
    at.text_input(key="maps_find").input(title).run()
    listed = next(d.value for d in at.dataframe if "genres" in d.value.columns)
    assert title in set(listed["title"])
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


def test_a_highlight_rings_a_copy_of_the_built_map():
    frame = pd.DataFrame({"entity_id": ["a", "b", "c"], "x": [0.0, 1, 2], "y": [0.0, 1, 2],
                          "title": ["A", "B", "C"], "popularity": [1, 2, 3],
                          "genres": ["x", "y", "z"], "genre": ["x", "y", "z"],
                          "CRM vs LLM": ["CRM better", "not scored", "LLM better"]})
    base = maps.scatter_base(frame, "genre", "t").to_dict()
    kept = json.dumps(base, cls=PlotlyJSONEncoder)
    plain = maps.with_highlight(base, frame, set())
    assert [t.marker.opacity for t in plain.data] == [0.8] * 3 and len(plain.data) == 3
    ringed = maps.with_highlight(base, frame, {"c", "a"})
    assert [t.marker.opacity for t in ringed.data[:3]] == [0.35] * 3  # the rest faded
    ring = ringed.data[3]
    assert ring.name == "highlighted (2)" and list(ring.x) == [0.0, 2.0]
    assert [row[0] for row in ring.customdata] == ["a", "c"]  # what a selection reads back
    assert json.dumps(base, cls=PlotlyJSONEncoder) == kept  # the cached map never changes
    # a highlight that matches nothing fades nothing away from what is drawn: no ring
    assert len(maps.with_highlight(base, frame, {"zz"}).data) == 3
    json.loads(ringed.to_json())  # serialisable as Streamlit sends it


def test_large_maps_draw_a_stable_sample():
    frame = pd.DataFrame({"entity_id": [str(i) for i in range(50)], "x": np.arange(50.0)})
    assert maps.downsampled(frame, 60) is frame
    sample = maps.downsampled(frame, 20)
    assert len(sample) == 20 and sample["x"].is_monotonic_increasing  # the frame's order
    pd.testing.assert_frame_equal(sample, maps.downsampled(frame, 20))  # every rerun
    assert len(set(sample["entity_id"])) == 20


def test_a_large_run_draws_sampled_maps_and_all_points_on_request(monkeypatch, smoke_store):
    monkeypatch.setattr(maps, "MAX_POINTS", 10)  # the smoke run's 60 items count as large
    at = open_page(monkeypatch, smoke_store, "pages/4_Embedding_maps.py")
    toggle = at.toggle(key="maps_all_points")
    assert toggle.value is False and "Draw all 60 items" in toggle.label

    def drawn() -> list[tuple[str, int]]:
        out = []
        for chart in at.get("plotly_chart")[:2]:
            spec = json.loads(chart.proto.spec)
            points = sum(_length(t.get("x", [])) for t in spec["data"]
                         if not t.get("name", "").startswith("highlighted"))
            out.append((spec["layout"]["title"]["text"], points))
        return out

    assert [n for _, n in drawn()] == [10, 10]
    assert "(10 of 60 items)" in drawn()[0][0]
    # an item left out of the sample is still ringed when found
    with open_run(smoke_store, "smoke-run") as reader:
        semantic = reader.frame("embeddings").query("space == 'semantic'")
    frame = maps.space_frame(semantic, pd.DataFrame({"item": semantic["entity_id"]}),
                             "semantic")
    missing = sorted(set(frame["entity_id"].astype(str))
                     - set(maps.downsampled(frame, 10)["entity_id"].astype(str)))[0]
    at.session_state["maps_highlight"] = [missing]
    at.run()
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    ring = [t for t in spec["data"] if t.get("name", "").startswith("highlighted")]
    assert [c[0] for c in ring[0]["customdata"]] == [missing]
    at.toggle(key="maps_all_points").set_value(True).run()
    assert [n for _, n in drawn()] == [60, 60] and "(60 items)" in drawn()[0][0]


def _length(values) -> int:
    """Points in a trace's x: a list, or plotly's base64 typed array ({"dtype", "bdata"})."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).size
    return len(values)
