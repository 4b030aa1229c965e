"""Methods side by side on the same samples (engine.compare): the rows kept, the metrics and
segments on them, costs, the Pareto front, head-to-head wins and disagreements."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from engine import compare
from engine.metrics import auc


def run_frames(seed: int = 0, n: int = 400) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A CRM on every sample, an LLM method on the first 300 only (NaN elsewhere)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    crm = np.clip(0.5 + 0.3 * (label - 0.5) + rng.normal(0, 0.2, n), 0.01, 0.99)
    llm = np.clip(0.5 + 0.1 * (label - 0.5) + rng.normal(0, 0.2, n), 0.01, 0.99)
    llm[300:] = np.nan
    predictions = pd.DataFrame({"sample_id": np.arange(n), "label": label, "dcnv2": crm,
                                "coco": llm})
    samples = pd.DataFrame({"sample_id": np.arange(n), "user": rng.integers(0, 40, n),
                            "cold_user": np.arange(n) % 10 == 0,
                            "long_tail_item": np.arange(n) % 4 == 0})
    return predictions, samples


def test_only_samples_every_method_scored_are_kept():
    predictions, samples = run_frames()
    common = compare.same_samples(predictions, samples, ["dcnv2", "coco"])
    assert common["sample_id"].tolist() == list(range(300))
    assert len(compare.same_samples(predictions, samples, ["dcnv2"])) == 400
    with pytest.raises(KeyError, match="no predictions for cora"):
        compare.same_samples(predictions, samples, ["dcnv2", "cora"])


def test_metrics_are_on_the_common_rows_for_every_method_and_segment():
    predictions, samples = run_frames()
    common = compare.same_samples(predictions, samples, ["dcnv2", "coco"])
    long = compare.metrics(common, ["dcnv2", "coco"], reference="dcnv2")
    overall = long[(long["segment"] == "all") & (long["metric"] == "auc")].set_index("method")
    assert overall["n"].tolist() == [300, 300]
    assert overall.loc["dcnv2", "value"] == pytest.approx(
        roc_auc_score(predictions["label"][:300], predictions["dcnv2"][:300]))
    # the CRM on all 400 differs from the CRM on the common 300: the reason for this module
    assert overall.loc["dcnv2", "value"] != pytest.approx(
        auc(predictions["label"], predictions["dcnv2"]))
    cold = long[(long["segment"] == "cold_user") & (long["metric"] == "auc")]
    assert set(cold["n"]) == {30}
    buckets = long[long["segment"].str.startswith("entropy")].groupby("segment")["n"].max()
    assert buckets.sum() == 300 and list(buckets.index) == compare.entropy_labels()
    assert (buckets >= 70).all()


def test_entropy_buckets_follow_the_reference_uncertainty():
    p = np.array([0.01, 0.99, 0.2, 0.8, 0.4, 0.6, 0.5, 0.5])
    buckets = compare.entropy_buckets(p)
    assert buckets[0] == buckets[1] == "entropy q1 (sure)"
    assert buckets[6] == buckets[7] == "entropy q4 (unsure)"


def test_costs_read_columns_and_the_offline_seconds_from_the_cost_json():
    methods = pd.DataFrame({
        "method": ["dcnv2", "llmcf_kd", "coco"], "kind": ["crm", "hybrid", "hybrid"],
        "train_seconds": [10.0, 40.0, 90.0], "infer_ms_per_1k": [30.0, 200.0, 9000.0],
        "llm_calls_per_1k": [0.0, 0.0, 1000.0],
        "cost": [json.dumps({}), json.dumps({"offline_llm_seconds": 130.0}), None]})
    out = compare.costs(methods).set_index("method")
    assert out.loc["llmcf_kd", "family"] == "llmcf" and out.loc["dcnv2", "family"] == "crm"
    assert out["offline_llm_seconds"].tolist() == [0.0, 130.0, 0.0]
    assert out.loc["coco", "llm_calls_per_1k"] == 1000.0


def test_pareto_front():
    cost = np.array([1.0, 2.0, 3.0, 3.0, np.nan, 0.5])
    quality = np.array([0.70, 0.75, 0.74, 0.80, 0.99, 0.60])
    assert compare.pareto_front(cost, quality).tolist() == [True, True, False, True, False,
                                                            True]


def test_family_and_missing_methods():
    assert [compare.family(m) for m in ("corella_budget20", "cora", "coco_k16", "din",
                                        "coral")] == ["corella", "cora", "coco", "crm", "crm"]
    assert compare.missing_hybrids(["dcnv2", "corella", "coco_crm", "coco"]) == [
        "sllmr", "llmcf", "cora"]


def test_delong_standard_error_matches_the_explicit_pairwise_form():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 120).astype(bool)
    a = np.round(rng.random(120), 1)  # ties on purpose
    b = np.clip(a + 0.3 * y + rng.normal(0, 0.1, 120), 0, 1)

    def components(p):
        x, z = p[y], p[~y]
        psi = (x[:, None] > z[None]) + 0.5 * (x[:, None] == z[None])
        return psi.mean(1), psi.mean(0)

    (a10, a01), (b10, b01) = components(a), components(b)
    want = np.sqrt(np.var(b10 - a10, ddof=1) / y.sum() + np.var(b01 - a01, ddof=1) / (~y).sum())
    assert compare.auc_difference_se(y, a, b) == pytest.approx(want, rel=1e-12)
    assert np.isnan(compare.auc_difference_se(np.ones(5, bool), a[:5], b[:5]))


def test_head_to_head_calls_ties_inside_the_standard_error():
    predictions, samples = run_frames()
    common = compare.same_samples(predictions, samples, ["dcnv2", "coco"])
    table = compare.head_to_head(common, "coco", "dcnv2").set_index("segment")
    assert table.loc["all", "winner"] == "dcnv2"  # the CRM carries 3x the signal
    assert table.loc["all", "gap"] == pytest.approx(table.loc["all", "auc_b"]
                                                    - table.loc["all", "auc_a"])
    same = common.assign(twin=common["dcnv2"] + 1e-9)
    assert (compare.head_to_head(same, "dcnv2", "twin")["winner"] == "tie").all()
    assert table.loc["cold_user", "shaky"] and not table.loc["all", "shaky"]


def test_disagreements_come_largest_first_with_the_closer_method():
    predictions, samples = run_frames()
    common = compare.same_samples(predictions, samples, ["dcnv2", "coco"])
    top = compare.disagreements(common, "coco", "dcnv2", k=5)
    assert len(top) == 5 and top["gap"].abs().is_monotonic_decreasing
    row = top.iloc[0]
    closer = "dcnv2" if abs(row["dcnv2"] - row["label"]) < abs(row["coco"] - row["label"]) \
        else "coco"
    assert row["closer"] == closer
