"""The Collaborative weights page: its pandas helpers on small frames, and the page (and the
case browser's link to it) on the smoke run."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from engine.store import open_run
from tests.app.format_rules import table_problems
from tests.app.pages import open_page, open_sample_case
from ui import collab


def small() -> tuple[pd.DataFrame, pd.DataFrame]:
    n = 40
    p_mf = np.linspace(0.05, 0.95, n)
    deltas = pd.DataFrame({
        "method": "cora", "sample_id": np.arange(n), "split": "test",
        "label": (np.arange(n) % 2).astype(float), "p_base": 0.5,
        "p_cora": 0.5 + 0.2 * (p_mf - 0.5), "p_mf": p_mf, "user_norm": 1.0, "item_norm": 2.0,
        "a_cos_mean": 0.9, "delta_q_proj": np.linspace(0.1, 0.2, n), "delta_v_proj": 0.05})
    samples = pd.DataFrame({"sample_id": np.arange(n), "user": [str(i % 4) for i in range(n)],
                            "item": "i", "cold_user": np.arange(n) < 10,
                            "long_tail_item": np.arange(n) % 5 == 0})
    return deltas, samples


def test_with_delta_adds_the_move_the_total_norm_and_the_segment():
    deltas, samples = small()
    frame = collab.with_delta(deltas, samples)
    np.testing.assert_allclose(frame["delta_norm"], deltas["delta_q_proj"] + 0.05)
    np.testing.assert_allclose(frame["move"], deltas["p_cora"] - 0.5)
    assert frame.loc[0, "segment"] == "cold user · long-tail item"
    assert frame.loc[11, "segment"] == "warm user · head item"
    assert set(frame["label_name"]) == {"clicked", "not clicked"}


def test_module_norms_segments_and_mf_deciles():
    deltas, samples = small()
    frame = collab.with_delta(deltas, samples)
    norms = collab.module_norms(frame).set_index("module")
    assert list(norms.index) == ["q_proj", "v_proj"]
    assert abs(norms.loc["q_proj", "mean"] - 0.15) < 1e-12
    assert norms.loc["v_proj", "p10"] == norms.loc["v_proj", "p90"] == 0.05
    segments = collab.by_segment(frame).set_index("segment")
    assert segments["samples"].sum() == 40
    assert segments.index[0] == "warm user · head item"  # the fixed order first
    deciles = collab.mf_deciles(frame, bins=4)
    assert deciles["decile"].tolist() == [1, 2, 3, 4]
    assert deciles["move"].is_monotonic_increasing  # the planted move follows the MF score
    assert collab.mf_deciles(frame.iloc[:0]).empty


def test_sample_view_orders_by_move_or_delta():
    deltas, samples = small()
    frame = collab.with_delta(deltas, samples)
    by_move = collab.sample_view(frame, "largest move")
    assert by_move["move"].abs().is_monotonic_decreasing
    by_delta = collab.sample_view(frame, "largest delta")
    assert by_delta["delta_norm"].is_monotonic_decreasing
    assert by_delta["sample_id"].iloc[0] == 39


def test_training_curves_keep_the_llm_loss_per_variant():
    log = pd.DataFrame({"stage": ["mf", "cora", "cora", "crm"], "epoch": [1, 1, 2, 1],
                        "metric": ["valid_auc", "llm_loss", "llm_loss", "llm_loss"],
                        "value": [0.7, 0.69, 0.65, 0.7]})
    curves = collab.training_curves(log)
    assert curves["variant"].tolist() == ["cora", "cora", "crm"]
    figure = collab.training_figure(curves)
    assert [t.name for t in figure.data] == ["cora", "crm"]


def test_the_page_on_the_smoke_run(monkeypatch, smoke_store):
    at = open_page(monkeypatch, smoke_store, "pages/7_Collaborative_weights.py")
    assert not at.exception, at.exception
    with open_run(smoke_store, "smoke-run") as reader:
        deltas = reader.frame("deltas")
        metrics = reader.metrics("test")
    values = {m.label: m.value for m in at.metric}
    auc = metrics[(metrics["method"] == "cora") & (metrics["segment"] == "all")
                  & (metrics["metric"] == "auc")]["value"].iloc[0]
    assert values["CoRA AUC"] == f"{auc:.4f}"
    test = deltas[deltas["split"] == "test"]  # MF on the same analysed samples as CoRA
    assert values["MF alone AUC"] == f"{roc_auc_score(test['label'], test['p_mf']):.4f}"
    assert values["Layers with weights"] == "top 4"
    variants = next(d.value for d in at.dataframe if "variant" in d.value.columns)
    assert set(variants["variant"]) == {"base", "zero_pair", "shuffled_user", "crm", "mf",
                                        "cora"}
    shown = next(d.value for d in at.dataframe if "p_cora" in d.value.columns)
    assert len(shown) == len(deltas) and shown["move"].abs().is_monotonic_decreasing
    assert len(at.get("plotly_chart")) == 6
    assert table_problems(at) == []
    at.radio(key="collab_order").set_value("largest delta").run()
    assert not at.exception
    shown = next(d.value for d in at.dataframe if "p_cora" in d.value.columns)
    assert shown["delta_norm"].is_monotonic_decreasing


def test_the_case_browser_shows_a_samples_generated_weights(monkeypatch, smoke_store):
    with open_run(smoke_store, "smoke-run") as reader:
        deltas = reader.frame("deltas")
    sample = int(deltas[deltas["split"] == "test"]["sample_id"].iloc[0])
    at = open_sample_case(monkeypatch, smoke_store, sample)
    values = {m.label: m.value for m in at.metric}
    row = deltas.set_index("sample_id").loc[sample]
    assert values["Base LLM P(yes)"] == f"{row['p_base']:.4f}"
    assert values["With the weights"] == f"{row['p_cora']:.4f}"
    at.button(key="cases_open_collab").click().run()
    assert at.session_state["collab_sample"] == sample


def test_the_live_panel_rescores_a_pair_with_another_users_weights(monkeypatch, smoke_store):
    with open_run(smoke_store, "smoke-run") as reader:
        samples = reader.samples("test")
    user, item = str(samples["user"].iloc[0]), str(samples["item"].iloc[0])
    at = open_page(monkeypatch, smoke_store, "pages/3_Case_browser.py")
    at.text_input(key="cases_query").input(user).run()
    at.toggle(key="cases_live_llm").set_value(False).run()
    at.selectbox(key="cases_live_item").set_value(item).run()
    at.button(key="cases_live_score").click().run()
    assert not at.exception, at.exception
    at.button(key="cases_live_cora").click().run(timeout=120)
    assert not at.exception, at.exception
    values = {m.label: m.value for m in at.metric}
    assert "Base LLM P(yes)" in values
    assert any(label.startswith("With user ") for label in values)
