"""The gating page: its pandas helpers on small frames, and the page on the smoke run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from engine.store import open_run
from tests.app.format_rules import table_problems
from tests.app.pages import open_page
from ui import gating


def small_pairs() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    alpha = np.linspace(0.05, 0.95, 40)
    agree = rng.random(40) < alpha  # the teacher is right more often where alpha is high
    return pd.DataFrame({"user": [str(i % 5) for i in range(40)], "item_i": "a",
                         "item_j": "b", "kind_i": "labelled", "kind_j": "labelled",
                         "s_llm_i": 0.9, "s_llm_j": np.linspace(0.1, 0.8, 40),
                         "label_i": 1.0, "label_j": 0.0, "alpha": alpha, "gap_before": 0.1,
                         "gap_after": 0.3, "cold": False, "anchor_sample": 1,
                         "labelled": [True] * 38 + [False] * 2, "agree": agree})


def test_pair_accuracy_by_alpha_decile():
    table = gating.pair_accuracy_by_alpha(small_pairs(), bins=4)
    assert table["decile"].tolist() == [1, 2, 3, 4]
    assert table["pairs"].sum() == 38  # unlabelled pairs say nothing about accuracy
    assert table["alpha_lo"].is_monotonic_increasing
    assert gating.pair_accuracy_by_alpha(small_pairs().assign(labelled=False)).empty


def test_pair_view_filters_and_orders():
    pairs = small_pairs()
    wrong = gating.pair_view(pairs, "teacher wrong", "alpha")
    assert len(wrong) == int((pairs["labelled"] & ~pairs["agree"]).sum())
    assert wrong["alpha"].is_monotonic_decreasing
    by_gap = gating.pair_view(pairs, "all", "teacher gap")
    gaps = by_gap["s_llm_i"] - by_gap["s_llm_j"]
    assert gaps.is_monotonic_decreasing


def test_cells_and_weights():
    gates = pd.DataFrame({"sample_id": range(4), "alpha": [0.1, 0.2, 0.8, 0.9],
                          "cold": [False, False, True, True], "tail": [False, True, False, True],
                          "q": [0.5] * 4, "hist_len": 5, "item_popularity": 3})
    cells = gating.alpha_by_cell(gates).set_index("cell")
    assert cells.loc["cold user · long-tail item", "mean_alpha"] == 0.9
    config = {"gate_w": {"cold": 1.5, "tail": 0.2, "q": -0.3}, "gate_b": -1.0, "q": "entropy",
              "reliability_gate_w": {"cold": 1.5, "tail": 0.2, "q": -0.3},
              "reliability_gate_b": -1.0, "joint_gate_w": {"cold": -0.01, "tail": 0, "q": 0}}
    weights = gating.gate_weights(config).set_index("feature")
    assert weights.loc["cold", "applied"] == 1.5 and weights.loc["q (entropy)", "applied"] == -0.3
    assert weights.loc["bias b", "applied"] == -1.0


def test_training_curves_keep_the_regulariser_log_per_variant():
    log = pd.DataFrame({"stage": ["joint"] * 4 + ["gated"] * 2 + ["none"],
                        "epoch": [1, 2, 1, 2, 1, 2, 1],
                        "metric": ["mean_alpha", "mean_alpha", "l_llm", "l_llm", "mean_alpha",
                                   "mean_alpha", "val_auc"],
                        "value": [0.5, 0.3, 0.2, 0.1, 0.6, 0.6, 0.7]})
    curves = gating.training_curves(log)
    assert set(curves["variant"]) == {"joint", "gated"}  # val_auc is not the regulariser's
    figure = gating.training_curves_figure(curves, "mean_alpha")
    assert [t.name for t in figure.data] == ["gated", "joint"]
    assert list(figure.data[1].y) == [0.5, 0.3]


def test_the_page_on_the_smoke_run(monkeypatch, smoke_store):
    at = open_page(monkeypatch, smoke_store, "pages/5_Gating.py")
    with open_run(smoke_store, "smoke-run") as reader:
        methods = reader.methods().set_index("method")
        gates = reader.frame("gates")
    config = json.loads(methods.at["sllmr", "config"])
    values = {m.label: m.value for m in at.metric}
    assert values["Teacher pair accuracy"] == f"{config['teacher_pair_accuracy']:.4f}"
    assert values["Gate"] == "reliability"
    weights = at.dataframe[0].value.set_index("feature")
    assert weights.loc["cold", "applied"] == pytest.approx(config["gate_w"]["cold"])
    variants = next(d.value for d in at.dataframe if "variant" in d.value.columns)
    assert set(variants["variant"]) == {"none", "global", "pointwise", "kd", "joint", "gated"}
    charts = at.get("plotly_chart")
    assert len(charts) == 5
    with open_run(smoke_store, "smoke-run") as reader:
        log = reader.training_log("sllmr")
    joint = log[(log["stage"] == "joint") & (log["metric"] == "mean_alpha")]
    assert len(joint) >= 2  # the joint gate's collapse, one point per epoch
    assert len(gates) == len(gates[gates["method"] == "sllmr"])
    assert table_problems(at) == []
    at.radio(key="gating_pairs_filter").set_value("teacher wrong").run()
    assert not at.exception


def test_the_case_browser_shows_alpha_and_the_teacher_pairs(monkeypatch, smoke_store):
    with open_run(smoke_store, "smoke-run") as reader:
        pairs = reader.frame("pairs")
    user = str(pairs["user"].iloc[0])
    at = open_page(monkeypatch, smoke_store, "pages/3_Case_browser.py")
    at.text_input(key="cases_query").input(user).run()
    assert not at.exception, at.exception
    samples = next(d.value for d in at.dataframe if "alpha" in d.value.columns)
    assert samples["alpha"].notna().all()
    teacher = next(d.value for d in at.dataframe if "s_llm_i" in d.value.columns)
    assert len(teacher) == (pairs["user"].astype(str) == user).sum()


def test_teacher_labels_are_short():
    assert gating.teacher_label("corella's LoRA adapter") == "corella adapter"
    assert gating.teacher_label("smollm2-135m zero-shot") == "smollm2-135m (zero-shot)"
