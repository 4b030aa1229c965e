"""The Prompt pool page: its pandas helpers on small frames, and the page (and the case
browser's link to it) on the smoke run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.store import open_run
from tests.app.format_rules import table_problems
from tests.app.pages import open_page, open_sample_case
from ui import prompt_pool as pp


def small() -> tuple[pd.DataFrame, pd.DataFrame]:
    n = 40
    usage = pd.DataFrame({
        "method": "coco", "sample_id": np.arange(n), "split": "test", "user": n * ["7"],
        "label": (np.arange(n) % 2).astype(float),
        "prompt_ids": ["0,2"] * 20 + ["1"] * 20, "prompt_cosines": ["0.9,0.4"] * 20 + ["0.8"] * 20,
        "prompt_weights": ["0.99,0.01"] * 20 + ["1.0"] * 20,
        "n_selected": [2] * 20 + [1] * 20, "top_prompt": [0] * 20 + [1] * 20,
        "top_cosine": 0.9, "llm_share": 0.25,
        "p_crm": 0.5, "p_coco": np.where(np.arange(n) % 2 == 1, 0.6, 0.45)})
    samples = pd.DataFrame({"sample_id": np.arange(n), "item": "i",
                            "cold_user": np.arange(n) < 10, "long_tail_item": False})
    return usage, samples


def test_helped_and_segments():
    usage, samples = small()
    frame = pp.with_segments(usage, samples)
    assert frame["helped"].all()  # every sample moved toward its label
    np.testing.assert_allclose(frame["move"], usage["p_coco"] - 0.5)
    table = pp.helped_by_segment(frame).set_index("segment")
    assert table.loc["cold user · head item", "samples"] == 10
    assert table.loc["warm user · head item", "helped"] == 1.0


def test_gain_flags_prompts_with_few_samples_and_case_prompts():
    pool = pd.DataFrame({"prompt": [0, 1, 2], "n_test": [50, 5, 0], "auc_crm": [0.6, 0.7, None],
                         "auc_coco": [0.65, 0.6, None], "nearest_tokens": ["a", "b", "c"],
                         "cos_0": [1.0, 0.1, 0.2], "cos_1": [0.1, 1.0, -0.3],
                         "cos_2": [0.2, -0.3, 1.0], "share_train": [0.5, 0.5, 0.1],
                         "share_valid": [0.4, 0.6, 0.0], "share_test": [0.3, 0.7, 0.0]})
    gain = pp.auc_gain(pool)
    assert gain["gain"].round(4).tolist()[:2] == [0.05, -0.1]
    assert gain["reliable"].tolist() == [True, False, False]
    matrix = pp.cosine_matrix(pool)
    assert matrix.shape == (3, 3) and sorted(pp.off_diagonal(matrix).round(1)) == [
        -0.3, -0.3, 0.1, 0.1, 0.2, 0.2]
    long = pp.usage_long(pool)
    assert set(long["split"]) == {"train", "valid", "test"} and len(long) == 9
    usage, _ = small()
    case = pp.case_prompts(usage.iloc[0], pool)
    assert case["prompt"].tolist() == [0, 2] and case["nearest_tokens"].tolist() == ["a", "c"]
    assert case["weight"].tolist() == [0.99, 0.01]


def test_training_log_shaping():
    log = pd.DataFrame({"stage": ["coco:prompts"] * 4 + ["coco:lora"],
                        "epoch": [1, 1, 2, 2, 1],
                        "metric": ["mask_rate", "perplexity", "mask_rate", "perplexity",
                                   "mask_rate"], "value": [0.3, 4.0, 0.4, 5.0, 0.6]})
    curves = pp.mask_curves(log)
    assert curves["stage"].tolist() == ["coco:prompts", "coco:prompts", "coco:lora"]
    summary = pp.codebook_log(log)
    assert summary["perplexity"] == 5.0 and np.isnan(summary["dead_codes"])
    assert [t.name for t in pp.mask_figure(curves).data] == ["coco:prompts", "coco:lora"]
    by_segment = pp.mask_by_segment(pd.concat([log, pd.DataFrame({
        "stage": ["coco:lora", "coco:lora", "coco:prompts"], "epoch": [1, 1, 1],
        "metric": ["mask_rate:head_item", "mask_rate:long_tail_item", "mask_rate:head_item"],
        "value": [0.5, 0.8, 0.1]})]), "coco:lora")
    assert by_segment.to_dict("list") == {"step": [1, 1], "segment": ["head_item",
                                                                     "long_tail_item"],
                                          "value": [0.5, 0.8]}
    assert [t.name for t in pp.mask_segment_figure(by_segment, "coco:lora").data] == [
        "head_item", "long_tail_item"]
    assert pp.mask_by_segment(log, "coco:lora").empty  # runs stored before it was logged


def test_variant_order_puts_the_k_sweep_by_size():
    metrics = pd.DataFrame({"method": ["coco", "coco_k16", "coco_k8", "coco_crm"]})
    assert pp.variant_order(metrics, "coco") == ["crm", "shared_only", "mean_pool",
                                                 "no_elimination", "k8", "k16", "coco"]


def test_the_page_on_the_smoke_run(monkeypatch, smoke_store):
    at = open_page(monkeypatch, smoke_store, "pages/8_Prompt_pool.py")
    assert not at.exception, at.exception
    with open_run(smoke_store, "smoke-run") as reader:
        usage = reader.frame("prompt_usage")
        metrics = reader.metrics("test")
    values = {m.label: m.value for m in at.metric}
    auc = metrics[(metrics["method"] == "coco") & (metrics["segment"] == "all")
                  & (metrics["metric"] == "auc")]["value"].iloc[0]
    assert values["CoCo AUC"] == f"{auc:.4f}"
    assert float(values["Prompts per user"]) == pytest.approx(usage["n_selected"].mean(),
                                                               abs=0.005)
    variants = next(d.value for d in at.dataframe if "variant" in d.value.columns)
    assert set(variants["variant"]) == {"crm", "shared_only", "mean_pool", "no_elimination",
                                        "coco"}
    shown = next(d.value for d in at.dataframe if "p_coco" in d.value.columns)
    assert len(shown) == len(usage) and shown["move"].abs().is_monotonic_decreasing
    charts = [c.key for c in at.get("plotly_chart")]
    assert len(charts) == 8 and "pool_mask_segments" in charts  # the mask rate by segment
    assert table_problems(at) == []
    case = next(d.value for d in at.dataframe if "nearest_tokens" in d.value.columns
                and "weight" in d.value.columns)
    first = shown.iloc[0]
    assert case["prompt"].astype(str).str.cat(sep=",") == str(first["prompt_ids"])


def test_the_case_browser_shows_a_samples_prompts(monkeypatch, smoke_store):
    with open_run(smoke_store, "smoke-run") as reader:
        usage = reader.frame("prompt_usage")
    sample = int(usage[usage["split"] == "test"]["sample_id"].iloc[0])
    at = open_sample_case(monkeypatch, smoke_store, sample)
    values = {m.label: m.value for m in at.metric}
    row = usage.set_index("sample_id").loc[sample]
    assert values["CRM alone"] == f"{row['p_crm']:.4f}"
    assert values["CoCo"] == f"{row['p_coco']:.4f}"
    assert values["Prompts"] == row["prompt_ids"]
    at.button(key="cases_open_pool").click().run()
    assert at.session_state["pool_sample"] == sample
