"""The reasoning page: its pandas helpers on small frames, and the page on the smoke run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from engine.store import open_run
from tests.app.format_rules import table_problems
from tests.app.pages import open_page, open_sample_case
from ui import reasoning

ITEMS = pd.DataFrame({"item": ["1", "2", "3"], "title": ["Alien (1979)", "Heat (1995)",
                                                         "Babe (1995)"],
                      "tags": [["Horror", "Sci-Fi"], ["Action"], ["Children's", "Comedy"]]})


def small_cot() -> pd.DataFrame:
    return pd.DataFrame({"method": "llmcf", "cot_id": [0, 1, 2, 3], "sample_id": [10, 11, 12, 13],
                         "user": ["u1", "u2", "u3", "u4"], "item": ["1", "2", "3", "1"],
                         "label": [1.0, 0.0, 1.0, 0.0], "text": ["a", "b", "c", "d"],
                         "completeness": 0.3, "relevance": 0.4, "consistency": 0.5,
                         "repetition": [0.9, 0.8, 0.7, 0.6], "quality": [0.6, 0.5, 0.4, 0.3],
                         "tokens": 10, "times_retrieved": [3, 2, 1, 0]})


def small_neighbours() -> pd.DataFrame:
    """Two samples with 2 examples each; sample 100's examples point at a click."""
    return pd.DataFrame({
        "method": "llmcf", "sample_id": [100, 100, 101, 101], "split": "test",
        "rank": [1, 2, 1, 2], "cot_id": [0, 1, 2, 3], "neighbour_label": [1.0, 0.0, 1.0, 0.0],
        "similarity": [0.9, 0.8, 0.7, 0.6], "sim_history": 0.5, "sim_target": 0.5,
        "attention": [0.6, 0.2, 0.1, 0.5], "attention_self": [0.2, 0.2, 0.4, 0.4],
        "recon_cos": 0.3, "label": [1.0, 1.0, 0.0, 0.0], "p_backbone": [0.4, 0.4, 0.45, 0.45],
        "p_llmcf": [0.7, 0.7, 0.46, 0.46]})


def test_cot_browser_filters():
    cot = small_cot()
    assert reasoning.cot_view(cot, ITEMS)["cot_id"].tolist() == [0, 1, 2, 3]
    assert reasoning.cot_view(cot, ITEMS, "clicked")["cot_id"].tolist() == [0, 2]
    assert reasoning.cot_view(cot, ITEMS, quality=(0.45, 1.0))["cot_id"].tolist() == [0, 1]
    assert reasoning.cot_view(cot, ITEMS, item_query="alien")["cot_id"].tolist() == [0, 3]
    assert reasoning.cot_view(cot, ITEMS, item_query="2")["cot_id"].tolist() == [1]
    assert reasoning.cot_view(cot, ITEMS, genre="Comedy")["cot_id"].tolist() == [2]
    assert reasoning.genres(ITEMS) == ["Action", "Children's", "Comedy", "Horror", "Sci-Fi"]


def test_a_sample_reads_its_examples_in_order_with_their_text():
    examples = reasoning.sample_examples(small_neighbours(), small_cot(), ITEMS, 100)
    assert examples["rank"].tolist() == [1, 2] and examples["text"].tolist() == ["a", "b"]
    assert examples["decision"].tolist() == ["clicked", "not clicked"]
    assert examples["title"].tolist() == ["Alien (1979)", "Heat (1995)"]
    summary = reasoning.sample_summary(small_neighbours(), 100)
    assert summary["vote"] == pytest.approx(0.75) and summary["p_llmcf"] == 0.7
    moved = reasoning.moved_samples(small_neighbours())
    assert moved["sample_id"].tolist() == [100, 101]  # moved 0.3, then 0.01


def test_votes_and_their_bins():
    votes = reasoning.neighbour_votes(small_neighbours()).set_index("sample_id")
    assert votes.loc[100, "vote"] == pytest.approx(0.75)
    assert votes.loc[101, "vote"] == pytest.approx(1 / 6)
    assert bool(votes.loc[100, "llmcf_right"]) and not bool(votes.loc[100, "backbone_right"])
    table = reasoning.vote_table(votes.reset_index(), bins=2)
    assert table["samples"].tolist() == [1, 1] and table["click_rate"].tolist() == [0.0, 1.0]
    assert table["llmcf_accuracy"].tolist() == [1.0, 1.0]
    assert reasoning.vote_table(votes.reset_index().assign(vote=np.nan)).empty


def test_quality_by_decision_is_long_form():
    table = reasoning.quality_by_decision(small_cot())
    row = table[(table["decision"] == "clicked") & (table["part"] == "repetition")]
    assert row["mean"].iloc[0] == pytest.approx(0.8)


def test_the_page_on_the_smoke_run(monkeypatch, smoke_store):
    at = open_page(monkeypatch, smoke_store, "pages/6_Reasoning.py")
    with open_run(smoke_store, "smoke-run") as reader:
        config = json.loads(reader.methods().set_index("method").at["llmcf", "config"])
        cot = reader.frame("cot")
    values = {m.label: m.value for m in at.metric}
    assert values["Explanations"] == str(len(cot))
    assert any(f"Written by **{config['writer']}**" in c.value for c in at.caption)
    variants = next(d.value for d in at.dataframe if "variant" in d.value.columns)
    assert set(variants["variant"]) == {"none", "kd", "random", "mean_pool", "no_cot", "llmcf"}
    shown = next(d.value for d in at.dataframe if "times_retrieved" in d.value.columns)
    assert len(shown) == len(cot) and set(shown["text"]) == set(cot["text"])
    examples = next(d.value for d in at.dataframe if "attention" in d.value.columns)
    assert len(examples) == config["k"] and examples["text"].notna().all()
    assert len(at.get("plotly_chart")) == 4
    assert table_problems(at) == []
    at.radio(key="reasoning_label").set_value("clicked").run()
    assert not at.exception
    shown = next(d.value for d in at.dataframe if "times_retrieved" in d.value.columns)
    assert set(shown["decision"]) == {"clicked"}


def test_the_case_browser_shows_a_samples_examples(monkeypatch, smoke_store):
    with open_run(smoke_store, "smoke-run") as reader:
        neighbours = reader.frame("neighbours")
    sample = int(neighbours[neighbours["split"] == "test"]["sample_id"].iloc[0])
    at = open_sample_case(monkeypatch, smoke_store, sample)
    examples = next(d.value for d in at.dataframe if "recon_cos" in d.value.columns)
    assert len(examples) == (neighbours["sample_id"] == sample).sum()
