"""The case browser: its pandas helpers on small frames, and the page through AppTest on the
smoke run (expected rows read from the store with the older, independent reader methods)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from engine.store import RunWriter, open_run
from tests.app.format_rules import table_problems
from ui import cases

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "3_Case_browser.py")


# --- helpers on small frames ----------------------------------------------------------------

def methods_frame(rows: dict[str, dict | None]) -> pd.DataFrame:
    return pd.DataFrame([{"method": m, "kind": "hybrid", "config": json.dumps(c) if c else None}
                         for m, c in rows.items()])


def test_route_at_is_strictly_above_the_threshold():
    entropy = pd.Series([0.2, 0.5, 0.50001, 0.9, np.nan])
    assert cases.route_at(entropy, 0.5).tolist() == ["CRM", "CRM", "LLM", "LLM", None]
    assert cases.route_at(entropy, 0.95).tolist() == ["CRM", "CRM", "CRM", "CRM", None]
    assert cases.route_at(entropy, 0.0).tolist() == ["LLM", "LLM", "LLM", "LLM", None]


def test_shared_threshold_prefers_the_router_lab_then_the_configuration():
    methods = methods_frame({"corella": {"threshold": 0.85}, "other": {"threshold": 0.3},
                             "dcnv2": None})
    assert cases.shared_threshold(0.7, methods) == (0.7, "router lab")
    assert cases.shared_threshold(None, methods) == (0.85, "corella's configured threshold")
    assert cases.shared_threshold(None, methods, "other") == (0.3,
                                                              "other's configured threshold")
    assert cases.shared_threshold(None, methods, "dcnv2")[0] == 0.85  # falls back to corella
    assert cases.shared_threshold(None, methods_frame({"dcnv2": None})) == (0.5, "default")
    assert cases.shared_threshold("junk", methods_frame({"dcnv2": None}))[0] == 0.5


def test_search_matches_exact_ids_then_user_prefix_then_item_id_then_title():
    users = pd.DataFrame({"user": ["1", "2", "10", "21"], "age": ["18-24"] * 4,
                          "zip": ["8"] * 4, "idx": [1, 2, 3, 4]})
    items = pd.DataFrame({"item": ["1", "12", "3", "7"],
                          "title": ["Toy Story (1995)", "Heat (1995)", "Story of Us (1999)",
                                    "Apollo 13 (1995)"]})
    found = cases.search(users, items, "1")
    # exact ids, user id prefix, item id prefix, then titles ("(1999)"): in id order each
    assert found["key"].tolist() == ["user:1", "item:1", "user:10", "item:12", "item:3",
                                     "item:7"]
    # attributes by name; the store's internal idx is no attribute
    assert found["label"].tolist()[:3] == ["user 1 · age 18-24 · zip region 8",
                                           "item 1 · Toy Story (1995)",
                                           "user 10 · age 18-24 · zip region 8"]
    assert cases.search(users, items, " STORY ")["key"].tolist() == ["item:1", "item:3"]
    assert cases.search(users, items, "2")["key"].tolist() == ["user:2", "user:21"]
    assert cases.search(users, items, "13")["key"].tolist() == ["item:7"]
    assert cases.search(users, items, "").empty
    assert cases.search(users, items, "zzz").empty
    assert cases.parse_key("user:10") == ("user", "10")
    assert cases.parse_key("item:a:b") == ("item", "a:b")
    assert cases.parse_key(None) is None and cases.parse_key("movie:1") is None


def small_run() -> dict[str, pd.DataFrame]:
    """Five evaluation samples; routing (with entropy) for four of them."""
    samples = pd.DataFrame({
        "sample_id": [10, 11, 12, 13, 14], "user": ["u1", "u1", "u2", "u2", "u3"],
        "item": ["a", "b", "a", "c", "b"], "rating": [5.0, 1.0, 4.0, 2.0, 5.0],
        "label": [1.0, 0.0, 1.0, 0.0, 1.0],
        "timestamp": [1_000_000_000, 1_000_000_100, 1_000_000_200, 1_000_000_300,
                      1_000_000_400],
        "split": ["test", "test", "valid", "test", "test"],
        "cold_user": [False, False, True, True, False],
        "long_tail_item": [False, False, False, True, False]})
    items = pd.DataFrame({"item": ["a", "b", "c"], "title": ["Alpha", "Beta", "Gamma"]})
    predictions = pd.DataFrame({
        "sample_id": [10, 10, 11, 11, 12, 13, 14],
        "method": ["m2", "m1", "m1", "m2", "m1", "m1", "m1"],
        "prob": [0.6, 0.9, 0.8, 0.3, 0.2, 0.45, 0.7]})
    # p_crm: 10 right and sure, 11 wrong and sure, 12 wrong and sure, 13 right, unsure
    routing = pd.DataFrame({
        "method": "corella", "sample_id": [10, 11, 12, 13], "split": "x",
        "label": [1.0, 0.0, 1.0, 0.0], "p_crm": [0.95, 0.9, 0.05, 0.45],
        "p_llm": [0.7, 0.2, 0.8, 0.9], "entropy": [0.29, 0.47, 0.29, 0.99],
        "answer": [None, "No", "Yes", None]})
    return {"samples": samples, "items": items, "predictions": predictions,
            "routing": routing}


def test_case_table_has_every_method_and_the_route():
    run = small_run()
    table = cases.case_table(run["samples"], run["items"], run["predictions"], run["routing"],
                             threshold=0.4)
    assert table.columns.tolist() == (cases.BASE_COLUMNS + ["m1", "m2", "p_crm", "p_llm"]
                                      + cases.ROUTE_COLUMNS + ["cold_user", "long_tail_item",
                                                               "timestamp"])
    assert table["sample_id"].tolist() == [10, 11, 12, 13, 14]
    assert table["title"].tolist() == ["Alpha", "Beta", "Alpha", "Gamma", "Beta"]
    assert table["time"].iloc[0] == pd.Timestamp("2001-09-09 01:46:40")
    assert table["m1"].tolist() == [0.9, 0.8, 0.2, 0.45, 0.7]
    assert table["m2"].iloc[:2].tolist() == [0.6, 0.3] and table["m2"].iloc[2:].isna().all()
    assert table["route"].tolist() == ["CRM", "LLM", "CRM", "LLM", None]
    assert table["answer"].tolist() == [None, "No", "Yes", None, None]
    # the decisive columns first: no sideways scrolling to see entropy and route
    assert cases.shown_columns(table) == ["sample_id", "split", "title", "label", "entropy",
                                          "route", "m1", "m2", "answer", "time", "user",
                                          "item", "rating"]
    # no routing at all: the columns are there, empty
    bare = cases.case_table(run["samples"], run["items"], run["predictions"], None, 0.4)
    assert bare["route"].isna().all() and bare["entropy"].isna().all()
    assert cases.method_columns(bare) == ["m1", "m2"]


def test_hardest_cases_filters_and_order():
    run = small_run()
    routed = run["samples"][run["samples"]["sample_id"] < 14]
    table = cases.case_table(routed, run["items"], run["predictions"], run["routing"], 0.4)
    # routed p: 10 CRM 0.95, 11 LLM 0.2, 12 CRM 0.05, 13 LLM 0.9 -> errors .05 .2 .95 .9
    every = cases.hardest_cases(table)
    assert every["sample_id"].tolist() == [12, 13, 11, 10]
    assert every["error"].round(6).tolist() == [0.95, 0.9, 0.2, 0.05]
    assert every.columns.tolist()[:8] == ["sample_id", "p", "error", "label", "entropy",
                                          "route", "p_crm", "p_llm"]
    assert cases.hardest_cases(table, route="LLM")["sample_id"].tolist() == [13, 11]
    assert cases.hardest_cases(table, route="CRM")["sample_id"].tolist() == [12, 10]
    # confident and wrong: routed p wrong only for 12 and 13; 13's CRM entropy is high
    wrong = cases.hardest_cases(table, wrong_only=True, max_entropy=0.5)
    assert wrong["sample_id"].tolist() == [12]
    assert cases.hardest_cases(table, wrong_only=True, max_entropy=1.0)[
        "sample_id"].tolist() == [12, 13]
    assert cases.hardest_cases(table, wrong_only=True, max_entropy=0.29).empty  # strictly below
    # judged by the CRM alone: 11 (0.9 for label 0) and 12 are confidently wrong
    crm = cases.hardest_cases(table, judged="p_crm", wrong_only=True, max_entropy=0.5)
    assert crm["sample_id"].tolist() == [12, 11]
    assert crm["p"].tolist() == [0.05, 0.9]
    # m1 errors: 11 and 12 tie at 0.8 (then by sample id), 13 0.45, 10 0.1
    assert cases.hardest_cases(table, judged="m1")["sample_id"].tolist() == [11, 12, 13, 10]
    assert cases.hardest_cases(table, segments=["cold-start user"])["sample_id"].tolist() == [
        12, 13]
    assert cases.hardest_cases(table, segments=["cold-start user", "long-tail item"])[
        "sample_id"].tolist() == [13]
    assert cases.confident_wrong(pd.Series([0.9, np.nan]), pd.Series([0.0, 0.0]),
                                 pd.Series([np.nan, 0.1]), 0.5).tolist() == [False, False]
    # disagreement: 13's CRM is right (0.45 for 0) and its LLM wrong; 11 and 12 the reverse
    assert cases.hardest_cases(table, disagree="crm_right")["sample_id"].tolist() == [13]
    assert cases.hardest_cases(table, disagree="llm_right")["sample_id"].tolist() == [12, 11]
    with pytest.raises(ValueError):
        cases.hardest_cases(table, route="both")
    with pytest.raises(ValueError):
        cases.hardest_cases(table, disagree="sometimes")


def test_timeline_colours_samples_by_split():
    history = pd.DataFrame({"user": "u1", "item": ["a", "b", "c"], "rating": [5.0, 1.0, 3.0],
                            "timestamp": [300, 100, 200]})
    samples = pd.DataFrame({"sample_id": [1, 2], "user": "u1", "item": ["b", "a"],
                            "timestamp": [100, 300], "split": ["train", "test"]})
    items = pd.DataFrame({"item": ["a", "b", "c"], "title": ["Alpha", "Beta", "Gamma"]})
    line = cases.timeline(history, samples, items)
    assert line["title"].tolist() == ["Beta", "Gamma", "Alpha"]
    assert line["kind"].tolist() == ["train", "history only", "test"]
    assert line["time"].iloc[0] == pd.Timestamp("1970-01-01 00:01:40")
    fig = cases.timeline_figure(line, "u1")
    assert [t.name for t in fig.data] == ["history only", "train", "test"]
    assert [t.marker.color for t in fig.data] == [cases.TIMELINE_COLOURS[k] for k in
                                                  ("history only", "train", "test")]
    assert list(fig.data[2].hovertext) == ["Alpha"]
    info = cases.item_info(pd.DataFrame({"item": ["a"], "title": ["Alpha"],
                                         "tags": [np.array(["x", "y"])]}), "a")
    assert info["tags"] == ["x", "y"]
    assert cases.user_attributes(pd.DataFrame({"user": [1], "age": ["18-24"], "zip": ["8"],
                                               "idx": [1]}), "1") == {
        "age": "18-24", "zip region": "8"}


# --- the page on the smoke run ----------------------------------------------------------------

def run_page(monkeypatch, runs_dir, state: dict | None = None) -> AppTest:
    monkeypatch.setenv("DUET_RUNS_DIR", str(runs_dir))
    at = AppTest.from_file(PAGE, default_timeout=60)
    for key, value in (state or {}).items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def samples_table(at) -> pd.DataFrame:
    tables = [d.value for d in at.dataframe if "error" not in d.value.columns
              and "sample_id" in d.value.columns]  # not the hardest cases, not LLM-CF's examples
    assert len(tables) == 1
    return tables[0]


def hard_table(at) -> pd.DataFrame:
    tables = [d.value for d in at.dataframe if "error" in d.value.columns]
    assert len(tables) == 1
    return tables[0]


@pytest.fixture(scope="module")
def smoke(smoke_store):
    """What the store says, read with the reader's general methods."""
    with open_run(smoke_store, "smoke-run") as reader:
        samples = reader.samples()
        wide = pd.concat([reader.predictions("valid"), reader.predictions("test")])
        routing = reader.frame("routing")
    routing = routing[routing["method"] == "corella"].set_index("sample_id")
    evaluation = samples[samples["split"].isin(["valid", "test"])]
    per_user = evaluation[evaluation["sample_id"].isin(routing.index)].groupby("user").size()
    return {"samples": samples, "eval": evaluation, "wide": wide.set_index("sample_id"),
            "routing": routing, "user": str(per_user.idxmax())}


def test_user_search_shows_the_users_samples(monkeypatch, smoke_store, smoke):
    user = smoke["user"]
    at = run_page(monkeypatch, smoke_store)
    assert at.selectbox(key="cases_method").value == "corella"
    assert not [d for d in at.dataframe if "error" not in d.value.columns]  # nothing chosen
    at.text_input(key="cases_query").input(user).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="cases_match").value == f"user:{user}"
    assert at.subheader[0].value == f"User {user}"
    table = samples_table(at)
    want = smoke["eval"][smoke["eval"]["user"].astype(str) == user]
    assert len(table) == len(want) > 0
    assert sorted(table["sample_id"]) == sorted(want["sample_id"])
    assert (table["user"] == user).all()
    methods = [c for c in smoke["wide"].columns if c != "label"]
    assert set(methods) <= set(table.columns)
    expected = smoke["wide"].reindex(table["sample_id"])
    for method in methods:
        np.testing.assert_allclose(table[method].to_numpy(float),
                                   expected[method].to_numpy(float), rtol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(table["label"], expected["label"])
    # the default threshold is corella's configured one
    with open_run(smoke_store, "smoke-run") as reader:
        config = reader.methods().set_index("method").at["corella", "config"]
    configured = json.loads(config)["threshold"]
    assert f"**{configured:.3f}**" in at.caption[1].value
    assert not at.warning
    assert len(at.get("plotly_chart")) == 1
    assert at.selectbox(key="cases_prompt_sample").value in set(table["sample_id"])


def test_route_column_follows_the_shared_threshold(monkeypatch, smoke_store, smoke):
    user = smoke["user"]
    routing = smoke["routing"]
    want = smoke["eval"][smoke["eval"]["user"].astype(str) == user]
    entropy = routing["entropy"].reindex(want["sample_id"]).dropna()
    threshold = float(np.median(entropy))
    at = run_page(monkeypatch, smoke_store, {"router_threshold": threshold})
    at.text_input(key="cases_query").input(user).run()
    assert "router lab" in at.caption[1].value
    table = samples_table(at).set_index("sample_id")
    routed = table.index.isin(routing.index)
    assert routed.sum() == len(entropy) > 0
    got = table.loc[routed, "route"]
    np.testing.assert_allclose(table.loc[routed, "entropy"],
                               routing.loc[got.index, "entropy"], rtol=1e-12)
    assert got.tolist() == np.where(routing.loc[got.index, "entropy"] > threshold,
                                    "LLM", "CRM").tolist()
    assert table.loc[~routed, "route"].isna().all()
    # a new threshold on a later run moves the routes with it
    at.session_state["router_threshold"] = 0.0
    at.run()
    assert (samples_table(at).dropna(subset=["entropy"])["route"] == "LLM").all()


def test_hardest_cases_filters_and_opening_a_case(monkeypatch, smoke_store, smoke):
    routing = smoke["routing"]
    samples = smoke["samples"].set_index("sample_id").loc[routing.index]
    threshold = float(np.quantile(routing["entropy"], 0.75))
    at = run_page(monkeypatch, smoke_store, {"router_threshold": threshold})
    assert len(hard_table(at)) == len(routing)
    llm = routing["entropy"] > threshold
    at.radio(key="cases_hard_route").set_value("LLM").run()
    assert len(hard_table(at)) == llm.sum()
    at.radio(key="cases_hard_route").set_value("CRM").run()
    assert len(hard_table(at)) == (~llm).sum()
    at.radio(key="cases_hard_route").set_value("any").run()

    p = np.where(llm, routing["p_llm"], routing["p_crm"])
    wrong = np.abs(p - routing["label"]) > 0.5
    at.checkbox(key="cases_hard_wrong").check().run()
    assert at.slider(key="cases_hard_entropy").value == 0.5
    assert len(hard_table(at)) == (wrong & (routing["entropy"] < 0.5)).sum()
    at.slider(key="cases_hard_entropy").set_value(1.0).run()
    hard = hard_table(at)
    assert len(hard) == (wrong & (routing["entropy"] < 1.0)).sum()
    assert set(hard["sample_id"]) == set(routing.index[wrong & (routing["entropy"] < 1.0)])
    assert hard["error"].is_monotonic_decreasing
    at.checkbox(key="cases_hard_wrong").uncheck().run()

    at.multiselect(key="cases_hard_segments").select("cold-start user").run()
    assert len(hard_table(at)) == samples["cold_user"].sum()
    at.multiselect(key="cases_hard_segments").select("long-tail item").run()
    both = samples["cold_user"] & samples["long_tail_item"]
    assert len(hard_table(at)) == both.sum()
    at.multiselect(key="cases_hard_segments").set_value([]).run()

    first = hard_table(at).iloc[0]
    at.selectbox(key="cases_hard_pick").set_value(first["sample_id"]).run()
    at.button(key="cases_open_item").click().run()
    assert not at.exception, at.exception
    item = str(first["item"])
    assert at.text_input(key="cases_query").value == item
    assert at.selectbox(key="cases_match").value == f"item:{item}"
    table = samples_table(at)
    want = smoke["eval"][smoke["eval"]["item"].astype(str) == item]
    assert sorted(table["sample_id"]) == sorted(want["sample_id"])
    assert at.selectbox(key="cases_prompt_sample").value == first["sample_id"]
    assert not at.warning
    at.button(key="cases_open_user").click().run()
    assert at.selectbox(key="cases_match").value == f"user:{first['user']}"
    assert first["sample_id"] in set(samples_table(at)["sample_id"])


def test_hardest_cases_of_any_method_over_its_whole_split(monkeypatch, smoke_store, smoke):
    at = run_page(monkeypatch, smoke_store)
    at.selectbox(key="cases_hard_judged").set_value("dcnv2").run()
    hard = hard_table(at)
    assert len(hard) == len(smoke["eval"])  # every valid and test sample, not the analysed
    assert hard["error"].is_monotonic_decreasing
    analysed = hard["sample_id"].isin(smoke["routing"].index)
    assert hard.loc[analysed, "entropy"].notna().all() and hard.loc[~analysed,
                                                                    "entropy"].isna().all()
    # the picker follows the filter: a pick the filter removed is not kept
    last = int(hard["sample_id"].iloc[-1])
    at.selectbox(key="cases_hard_pick").set_value(last).run()
    at.selectbox(key="cases_hard_disagree").set_value("llm_right").run()
    shown = hard_table(at)
    assert last not in set(shown["sample_id"]) or len(shown) == 0
    if len(shown):
        assert at.selectbox(key="cases_hard_pick").value == shown["sample_id"].iloc[0]
    assert table_problems(at) == []


def test_asking_the_llm_for_a_case_is_generated_once(monkeypatch, smoke_store, smoke,
                                                      tmp_path):
    from engine.models.llm import LLM

    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = LLM.generate

    def counted(self, texts, max_new_tokens=32, **options):
        calls.append(max_new_tokens)
        return real(self, texts, max_new_tokens=max_new_tokens, **options)

    monkeypatch.setattr(LLM, "generate", counted)
    at = run_page(monkeypatch, smoke_store)
    valid = smoke["eval"][smoke["eval"]["split"] == "valid"]  # no stored prompt: rebuilt
    user = str(valid["user"].iloc[0])
    at.text_input(key="cases_query").input(user).run()
    at.selectbox(key="cases_prompt_sample").set_value(int(valid["sample_id"].iloc[0])).run()
    at.button(key="cases_ask").click().run()
    assert not at.exception, at.exception
    answer = at.code[-1].value
    assert calls == [16] and answer
    at.button(key="cases_ask").click().run()  # the same case again: from the cache
    assert calls == [16] and at.code[-1].value == answer
    assert len(list((tmp_path / "cache" / "generations").rglob("*.json"))) == 1
    at.radio(key="cases_ask_style").set_value("reasoning").run()
    at.button(key="cases_ask").click().run()
    assert calls == [16, 96]


def test_title_search_opens_an_item(monkeypatch, smoke_store, smoke):
    with open_run(smoke_store, "smoke-run") as reader:
        items = reader.frame("items")
    item = items.iloc[4]
    at = run_page(monkeypatch, smoke_store)
    at.text_input(key="cases_query").input(item["title"].upper()).run()
    assert at.selectbox(key="cases_match").value == f"item:{item['item']}"
    assert at.subheader[0].value == f"Item {item['item']} · {item['title']}"
    want = smoke["eval"][smoke["eval"]["item"].astype(str) == str(item["item"])]
    assert sorted(samples_table(at)["sample_id"]) == sorted(want["sample_id"])


def test_run_without_routing(monkeypatch, tmp_path):
    with RunWriter(tmp_path, "plain") as writer:
        writer.write_run(dataset="toy", profile="smoke", source="memory", seed=0, config={},
                         versions={})
        run = small_run()
        writer.write_frame("users", pd.DataFrame({"user": ["u1", "u2", "u3"]}))
        writer.write_frame("items", run["items"])
        writer.write_frame("samples", run["samples"])
        writer.write_frame("interactions", run["samples"][["user", "item", "rating",
                                                           "timestamp"]])
        writer.write_frame("prompts", pd.DataFrame({"sample_id": [10], "prompt": ["Hello?"]}))
        writer.append("predictions", run["predictions"])
        writer.append("methods", methods_frame({"m1": None, "m2": None}))
        writer.finish(1.0)
    at = run_page(monkeypatch, tmp_path)
    assert "no routed method" in at.caption[1].value
    assert "cannot score new pairs" in at.info[-1].value  # no feature tables stored
    # hardest cases need no routed method: any stored method over what it scored
    assert at.selectbox(key="cases_hard_judged").value == "m1"
    assert hard_table(at)["sample_id"].tolist() == [11, 12, 13, 14, 10]
    at.text_input(key="cases_query").input("u1").run()
    assert not at.exception, at.exception
    table = samples_table(at)
    assert table["sample_id"].tolist() == [10, 11]
    assert table["m1"].tolist() == [0.9, 0.8] and table["route"].isna().all()
    assert at.code[0].value == "Hello?"


def test_live_table_names_the_route_and_the_threshold():
    from engine.scoring import RoutedScore

    routed = {"corella": RoutedScore(p_crm=0.4, p_llm=0.7, entropy=0.97, route="LLM", p=0.7)}
    table = cases.live_table({"dcnv2": 0.31, "corella_crm": 0.4}, routed, threshold=0.9)
    assert table["model"].tolist() == ["dcnv2", "corella_crm", "corella_llm", "corella"]
    assert table["p"].tolist() == [0.31, 0.4, 0.7, 0.7]
    assert table["note"].iat[3] == "routed to the LLM: CRM entropy 0.970 > threshold 0.900"
    assert cases.live_table({"dcnv2": 0.5}).shape == (1, 3)


def test_scoring_a_pair_live_uses_the_saved_models(monkeypatch, smoke_store, smoke):
    from engine.scoring import PairScorer

    user = smoke["user"]
    at = run_page(monkeypatch, smoke_store, {"router_threshold": 2.0})  # nothing to the LLM
    at.text_input(key="cases_query").input(user).run()
    assert at.selectbox(key="cases_live_user").value == user  # follows the opened case
    rated = set(smoke["samples"].loc[smoke["samples"]["user"].astype(str) == user, "item"]
                .astype(str))
    item = next(i for i in sorted(smoke["samples"]["item"].astype(str).unique())
                if i not in rated)
    at.selectbox(key="cases_live_item").set_value(item).run()
    at.button(key="cases_live_score").click().run()
    assert not at.exception, at.exception
    live = next(d.value for d in at.dataframe if "note" in d.value.columns)
    with open_run(smoke_store, "smoke-run") as reader:
        scorer = PairScorer(reader)
        pair = scorer.pair(user, item)
        want = scorer.score_crms(pair)
    got = dict(zip(live["model"], live["p"]))
    for name, p in want.items():
        assert got[name] == pytest.approx(p, abs=1e-6)
    assert got["corella"] == pytest.approx(want["corella_crm"], abs=1e-6)  # routed to the CRM
    assert 0 < got["corella_llm"] < 1
    assert "routed to the CRM" in live["note"].iat[-1]
    assert any(c.value == pair.prompt for c in at.code)


def test_pick_labels_name_each_hard_case():
    rows = pd.DataFrame({"user": ["7", "12"], "title": ["Heat (1995)", "Up"],
                         "error": [0.98765, 0.5]}, index=pd.Index([31, 4], name="sample_id"))
    assert cases.pick_labels(rows) == {31: "#31 · user 7 · Heat (1995) · error 0.988",
                                       4: "#4 · user 12 · Up · error 0.500"}
