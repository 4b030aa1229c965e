"""The router lab page through AppTest, on a store written by hand with known probabilities."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from engine.formatting import duration_ms
from engine.routing import threshold_for_share
from engine.store import RunWriter
from tests.app.pages import open_page

N_TEST, N_VALID = 400, 200
CRM_MS, LLM_MS = 0.02, 35.0


def bits(p):
    p = np.clip(p, 1e-300, 1 - 1e-16)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def routing_rows(seed=0):
    rng = np.random.default_rng(seed)
    n = N_TEST + N_VALID
    y = (rng.random(n) < 0.4).astype(float)
    p_crm = np.clip(0.35 + 0.25 * y + rng.normal(0, 0.18, n), 0.01, 0.99)
    p_llm = np.clip(0.3 + 0.35 * y + rng.normal(0, 0.2, n), 0.01, 0.99)
    return pd.DataFrame({
        "method": "corella", "sample_id": np.arange(n, dtype=np.int64),
        "split": ["test"] * N_TEST + ["valid"] * N_VALID, "label": y, "p_crm": p_crm,
        "p_llm": p_llm, "entropy": bits(p_crm),
        "answer": [("Yes" if p > 0.5 else "No") if i % 10 == 0 else None
                   for i, p in enumerate(p_llm)]})


def write_store(out, run_id="routed", with_routing=True):
    rows = routing_rows()
    with RunWriter(out, run_id) as writer:
        writer.write_run(dataset="toy", profile="smoke", source="memory", seed=0,
                         config={}, versions={"duet": "test"})
        writer.write_frame("samples", rows[["sample_id", "split", "label"]].assign(user="u"))
        writer.append("methods", pd.DataFrame([{
            "method": "corella", "kind": "routed", "config": json.dumps({"threshold": 0.85}),
            "train_seconds": 1.0, "infer_ms_per_1k": 100.0, "llm_calls_per_1k": 200.0,
            "cost": json.dumps({"crm_ms_per_sample": CRM_MS, "llm_ms_per_sample": LLM_MS}),
            "weights_file": None}]))
        if with_routing:
            writer.write_frame("routing", rows)
        writer.finish(1.0)
    return rows


def run_page(monkeypatch, runs_dir):
    return open_page(monkeypatch, runs_dir, "pages/2_Router_lab.py")


def shown(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def expected(rows, split, threshold):
    part = rows[rows["split"] == split]
    routed = part["entropy"].to_numpy() > threshold
    mix = np.where(routed, part["p_llm"], part["p_crm"])
    return {"LLM share": f"{100 * routed.mean():.1f}%",
            "Routed AUC": f"{roc_auc_score(part['label'], mix):.4f}",
            "CRM AUC": f"{roc_auc_score(part['label'], part['p_crm']):.4f}",
            "LLM AUC": f"{roc_auc_score(part['label'], part['p_llm']):.4f}"}


def test_threshold_slider_drives_share_and_metrics(monkeypatch, tmp_path):
    rows = write_store(tmp_path)
    at = run_page(monkeypatch, tmp_path)
    assert at.selectbox(key="router_method").value == "corella"
    assert at.radio(key="router_split").value == "test"
    assert at.slider(key="router_threshold").value == 0.85  # the method's configured setting
    values = shown(at)
    for label, value in expected(rows, "test", 0.85).items():
        assert values[label] == value, label
    assert {"Routed LogLoss", "Routed ACC", "CRM LogLoss", "LLM ACC"} <= set(values)

    at.slider(key="router_threshold").set_value(0.93).run()
    assert not at.exception, at.exception
    values = shown(at)
    want = expected(rows, "test", 0.93)
    assert values["LLM share"] == want["LLM share"]
    assert values["Routed AUC"] == want["Routed AUC"]
    test = rows[rows["split"] == "test"]
    share = np.mean(test["entropy"] > 0.93)
    assert at.slider(key="router_budget").value == round(100 * share)
    assert values["LLM calls / 1k samples"] == f"{1000 * share:.0f}"
    assert len(at.get("plotly_chart")) == 4


def test_budget_slider_moves_the_threshold(monkeypatch, tmp_path):
    rows = write_store(tmp_path)
    at = run_page(monkeypatch, tmp_path)
    at.slider(key="router_budget").set_value(20).run()
    assert not at.exception, at.exception
    entropy = rows.loc[rows["split"] == "test", "entropy"].to_numpy()
    want = threshold_for_share(entropy, 0.2)
    threshold = at.slider(key="router_threshold").value
    assert f"{threshold:.3f}" == f"{want:.3f}"  # as the slider shows it
    assert threshold == pytest.approx(want)
    assert np.mean(entropy > threshold) == pytest.approx(0.2)
    values = shown(at)
    assert values["LLM share"] == "20.0%"
    assert values["LLM calls / 1k samples"] == "200"
    assert values["Est. time / 1k samples"] == duration_ms(1000 * CRM_MS + 200 * LLM_MS)
    assert values["Routed AUC"] == expected(rows, "test", threshold)["Routed AUC"]


def test_switching_split_keeps_the_threshold(monkeypatch, tmp_path):
    rows = write_store(tmp_path)
    at = run_page(monkeypatch, tmp_path)
    at.slider(key="router_threshold").set_value(0.9).run()
    at.radio(key="router_split").set_value("valid").run()
    assert not at.exception, at.exception
    assert at.slider(key="router_threshold").value == 0.9
    values = shown(at)
    for label, value in expected(rows, "valid", 0.9).items():
        assert values[label] == value, label


def test_run_without_routing_says_so(monkeypatch, tmp_path):
    write_store(tmp_path, with_routing=False)
    at = run_page(monkeypatch, tmp_path)
    assert "no routed method" in at.info[0].value
    assert not at.metric


def test_a_slider_step_adds_its_line_and_marker_to_charts_built_once():
    import copy

    from ui import router_charts as charts

    entropy = np.array([0.1, 0.5, 0.9, 0.95])
    counts = charts.entropy_counts(entropy, np.array([True, False, True, False]))
    base = charts.entropy_histogram_base(counts).to_dict()
    kept = copy.deepcopy(base)
    fig = charts.with_threshold(base, 0.8)
    assert base == kept  # the cached base is never touched
    assert [(s.x0, s.x1, s.yref) for s in fig.layout.shapes] == [(0.8, 0.8, "y domain")]
    label = fig.layout.annotations[0]
    assert label.text == "threshold 0.800 → LLM" and label.xanchor == "right"  # inside
    assert charts.with_threshold(base, 0.2).layout.annotations[0].xanchor == "left"
    assert fig.to_dict()["data"] == base["data"]
    assert fig.layout.title.text == "CRM uncertainty (entropy of p_crm, bits)"
    assert charts.entropy_histogram(counts, 0.8).to_dict() == fig.to_dict()  # as built whole

    curve = pd.DataFrame({"llm_share": [0.0, 0.5, 1.0], "auc": [0.7, 0.75, 0.6],
                          "threshold": [1.0, 0.5, 0.0]})
    whole = charts.quality_vs_share(curve, 0.5, 0.75, 0.7, 0.6)
    marked = charts.with_setting(charts.quality_curve_base(curve, 0.7, 0.6).to_dict(), 0.5,
                                 0.75)
    assert whole.to_dict() == marked.to_dict()
    assert [t.name for t in marked.data] == ["routed mix", "current setting"]
    assert list(marked.data[1].x) == [50.0] and list(marked.data[1].y) == [0.75]
