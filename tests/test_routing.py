"""Entropy routing against brute-force references (loops, scikit-learn) on data with ties."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from engine import metrics
from engine.routing import (
    RouterData,
    binary_entropy,
    bucket_table,
    cost_per_1k,
    latencies,
    method_settings,
    mixed_probs,
    quality_curve,
    reliability,
    route_mask,
    share_for_threshold,
    threshold_for_share,
)


def make_data(n=600, seed=0, decimals=2):
    """Labels, p_crm, p_llm rounded so that both probabilities and entropies tie a lot
    (p and 1 - p share an entropy), with some p_crm exactly 0, 0.5 and 1."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(np.float64)
    p_crm = np.round(np.clip(0.3 + 0.3 * y + rng.normal(0, 0.2, n), 0, 1), decimals)
    p_crm[:3] = [0.0, 0.5, 1.0]
    p_llm = np.round(np.clip(0.25 + 0.4 * y + rng.normal(0, 0.25, n), 0, 1), decimals)
    return y, p_crm, p_llm


def ref_entropy(p):
    out = []
    for v in p:
        v = min(max(float(v), 0.0), 1.0)
        h = 0.0
        for q in (v, 1 - v):
            if q > 0:
                h -= q * math.log2(q)
        out.append(h)
    return np.array(out)


def ref_logloss(y, p):
    total = 0.0
    for yi, pi in zip(y, p):
        pi = min(max(pi, metrics.EPS), 1 - metrics.EPS)
        total -= math.log(pi) if yi else math.log(1 - pi)
    return total / len(y)


def ref_acc(y, p):
    return sum((pi >= 0.5) == bool(yi) for yi, pi in zip(y, p)) / len(y)


def ref_best_count(entropy, share):
    """Every achievable routed count (one per threshold at or below each entropy), the one
    closest to share * n; the smaller on a tie."""
    n = len(entropy)
    counts = {sum(e > t for e in entropy) for t in list(entropy) + [-1.0]}
    return min(counts, key=lambda k: (abs(k - share * n), k))


def test_binary_entropy_matches_loop():
    p = np.array([0.0, 1e-12, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, -0.2, 1.3])
    np.testing.assert_allclose(binary_entropy(p), ref_entropy(p), atol=1e-12)
    assert binary_entropy(np.array([0.5]))[0] == 1.0
    assert binary_entropy(np.array([0.0, 1.0])).tolist() == [0.0, 0.0]
    h = binary_entropy(np.random.default_rng(1).random(1000))
    assert h.min() >= 0 and h.max() <= 1


def test_mask_share_and_mix_match_loops():
    y, p_crm, p_llm = make_data()
    e = binary_entropy(p_crm)
    for t in (0.0, 0.3, float(e[5]), 0.97, 1.0):
        mask = route_mask(e, t)
        assert mask.tolist() == [v > t for v in e]
        assert share_for_threshold(e, t) == pytest.approx(sum(v > t for v in e) / len(e))
        mix = mixed_probs(p_crm, p_llm, mask)
        assert mix.tolist() == [pl if m else pc for pc, pl, m in zip(p_crm, p_llm, mask)]
    assert share_for_threshold(e, 1.0) == 0.0
    assert share_for_threshold(e, 0.0) == pytest.approx(np.mean(e > 0))
    assert share_for_threshold(np.array([]), 0.5) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_for_share_is_the_closest_achievable(seed):
    _, p_crm, _ = make_data(n=300, seed=seed)
    e = binary_entropy(p_crm)
    data = RouterData(np.zeros(len(e)), p_crm, p_crm)
    for share in np.linspace(0, 1, 41):
        t = threshold_for_share(e, share)
        assert data.threshold_for_share(share) == t
        routed = int(np.sum(e > t))
        assert routed == ref_best_count(e, share)
        # never more than the tie group the boundary cuts through beyond the budget
        if routed > share * len(e):
            group = int(np.sum(e == e[e > t].min()))
            assert routed - share * len(e) <= group


def test_share_threshold_round_trips():
    _, p_crm, _ = make_data(n=500, seed=3)
    e = binary_entropy(p_crm)
    data = RouterData(np.zeros(len(e)), p_crm, p_crm)
    for t in np.unique(e):  # a threshold's share maps back to a threshold routing the same set
        share = share_for_threshold(e, t)
        t2 = threshold_for_share(e, share)
        assert np.array_equal(route_mask(e, t2), route_mask(e, t))
        assert data.share_for_threshold(t2) == share
    for share in np.linspace(0, 1, 23):  # share -> threshold -> share is idempotent
        achieved = share_for_threshold(e, threshold_for_share(e, share))
        assert share_for_threshold(e, threshold_for_share(e, achieved)) == achieved


def test_thresholds_are_short_decimals_inside_their_interval():
    e = np.array([0.2, 0.4, 0.6, 0.8])
    assert threshold_for_share(e, 0.5) == 0.4  # routes 0.6 and 0.8; 0.4 itself stays
    assert threshold_for_share(e, 0.25) == 0.6
    assert threshold_for_share(e, 0.0) == 1.0
    assert threshold_for_share(e, 1.0) == 0.0
    e = np.array([0.123456, 0.1234567])
    t = threshold_for_share(e, 0.5)
    assert e[0] <= t < e[1]


def test_edge_cases():
    e = np.full(10, 0.7)  # all tied: either no sample or all of them
    assert share_for_threshold(e, threshold_for_share(e, 0.3)) == 0.0
    assert share_for_threshold(e, threshold_for_share(e, 0.5)) == 0.0  # as close: smaller
    assert share_for_threshold(e, threshold_for_share(e, 0.7)) == 1.0
    assert share_for_threshold(e, threshold_for_share(e, 1.0)) == 1.0
    zeros = np.array([0.0, 0.0, 0.5, 1.0])  # p exactly 0 or 1: all routed needs t < 0
    t = threshold_for_share(zeros, 1.0)
    assert t < 0 and share_for_threshold(zeros, t) == 1.0
    assert threshold_for_share(zeros, 0.0) == 1.0 and share_for_threshold(zeros, 1.0) == 0.0
    assert threshold_for_share(np.array([]), 0.4) == 1.0
    assert threshold_for_share(np.array([0.3]), 2.0) == 0.0  # share is clipped to [0, 1]


def check_metrics(m, y, p_crm, p_llm, e, t):
    mask = np.array([v > t for v in e])
    mix = np.array([pl if r else pc for pc, pl, r in zip(p_crm, p_llm, mask)])
    assert m["n_llm"] == mask.sum() and m["llm_share"] == pytest.approx(mask.mean())
    for prefix, p in (("crm", p_crm), ("llm", p_llm), ("routed", mix)):
        assert m[f"{prefix}_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert m[f"{prefix}_logloss"] == pytest.approx(ref_logloss(y, p), abs=1e-10)
        assert m[f"{prefix}_acc"] == pytest.approx(ref_acc(y, p), abs=1e-12)
        assert m[f"{prefix}_auc"] == pytest.approx(metrics.auc(y, p), abs=1e-12)
        assert m[f"{prefix}_logloss"] == pytest.approx(metrics.logloss(y, p), abs=1e-10)


@pytest.mark.parametrize("seed", [0, 4])
def test_metrics_at_matches_sklearn_and_loops(seed):
    y, p_crm, p_llm = make_data(seed=seed)
    e = binary_entropy(p_crm)
    data = RouterData(y, p_crm, p_llm)
    np.testing.assert_array_equal(data.entropy, e)
    for t in (-0.5, 0.0, 0.2, float(np.median(e)), float(e[7]), 0.99, 1.0):
        check_metrics(data.metrics_at(t), y, p_crm, p_llm, e, t)
    # the stored entropy column is used as given
    given = RouterData(y, p_crm, p_llm, entropy=np.linspace(0, 1, len(y)))
    check_metrics(given.metrics_at(0.5), y, p_crm, p_llm, np.linspace(0, 1, len(y)), 0.5)


def test_metrics_at_one_class_is_nan_not_an_error():
    data = RouterData(np.ones(5), np.full(5, 0.6), np.full(5, 0.9))
    m = data.metrics_at(0.5)
    assert math.isnan(m["routed_auc"]) and m["routed_acc"] == 1.0
    with pytest.raises(ValueError):
        RouterData(np.ones(3), np.ones(3), np.ones(2))


def test_quality_curve_rows_are_metrics_at_their_threshold():
    y, p_crm, p_llm = make_data(seed=5)
    data = RouterData(y, p_crm, p_llm)
    curve = quality_curve(data, points=11)
    assert list(curve.columns) == ["target_share", "llm_share", "threshold", "auc", "logloss",
                                   "acc"]
    np.testing.assert_allclose(curve["target_share"], np.linspace(0, 1, 11))
    assert curve["llm_share"].iloc[0] == 0 and curve["llm_share"].iloc[-1] == 1
    assert curve["llm_share"].is_monotonic_increasing
    e = data.entropy
    for row in curve.itertuples():
        mask = e > row.threshold
        mix = np.where(mask, p_llm, p_crm)
        assert row.llm_share == pytest.approx(ref_best_count(e, row.target_share) / len(e))
        assert row.auc == pytest.approx(roc_auc_score(y, mix), abs=1e-12)
        assert row.logloss == pytest.approx(ref_logloss(y, mix), abs=1e-10)
        assert row.acc == pytest.approx(ref_acc(y, mix), abs=1e-12)
    assert curve["auc"].iloc[0] == pytest.approx(roc_auc_score(y, p_crm))
    assert curve["auc"].iloc[-1] == pytest.approx(roc_auc_score(y, p_llm))


def test_bucket_table_matches_loops():
    y, p_crm, p_llm = make_data(seed=6)
    data = RouterData(y, p_crm, p_llm)
    table = bucket_table(data)
    assert table["bucket"].tolist() == ["low uncertainty", "medium uncertainty",
                                        "high uncertainty"]
    e = data.entropy
    lo, hi = np.quantile(e, [1 / 3, 2 / 3])
    groups = [[i for i, v in enumerate(e) if v <= lo], [i for i, v in enumerate(e) if lo < v <= hi],
              [i for i, v in enumerate(e) if v > hi]]
    assert table["n"].sum() == len(y)
    for row, idx in zip(table.itertuples(), groups):
        assert row.n == len(idx)
        assert row.crm_auc == pytest.approx(roc_auc_score(y[idx], p_crm[idx]))
        assert row.llm_auc == pytest.approx(roc_auc_score(y[idx], p_llm[idx]))
        assert row.crm_acc == pytest.approx(ref_acc(y[idx], p_crm[idx]))
        assert row.llm_acc == pytest.approx(ref_acc(y[idx], p_llm[idx]))
        assert row.entropy_min == e[idx].min() and row.entropy_max == e[idx].max()
    four = bucket_table(data, edges=(0.25, 0.5, 0.75))
    assert len(four) == 4 and four["n"].sum() == len(y)


def test_reliability_matches_loops():
    rng = np.random.default_rng(7)
    p = np.round(rng.random(500), 2)
    p[:4] = [0.0, 1.0, 0.1, 0.95]
    y = (rng.random(500) < p).astype(float)
    table = reliability(p, y, bins=10)
    rows = []
    for b in range(10):
        idx = [i for i, v in enumerate(p) if min(int(v * 10), 9) == b]
        if idx:
            rows.append((b, sum(p[idx]) / len(idx), sum(y[idx]) / len(idx), len(idx)))
    assert table["bin"].tolist() == [r[0] for r in rows]
    np.testing.assert_allclose(table["mean_pred"], [r[1] for r in rows])
    np.testing.assert_allclose(table["click_rate"], [r[2] for r in rows])
    assert table["count"].tolist() == [r[3] for r in rows]
    assert table["count"].sum() == 500
    sparse = reliability(np.array([0.05, 0.07, 0.95]), np.array([0, 1, 1]))
    assert sparse["bin"].tolist() == [0, 9]  # empty bins are left out


def test_cost_per_1k_and_latencies():
    assert cost_per_1k(0.2, 0.01, 40.0) == {"llm_calls_per_1k": 200.0,
                                            "ms_per_1k": pytest.approx(10.0 + 200 * 40.0)}
    assert cost_per_1k(0.0, 0.01, 40.0)["ms_per_1k"] == pytest.approx(10.0)
    assert cost_per_1k(1.0, 0.0, 2.0) == {"llm_calls_per_1k": 1000.0, "ms_per_1k": 2000.0}
    assert math.isnan(cost_per_1k(0.5, None, 3.0)["ms_per_1k"])
    assert cost_per_1k(0.5, None, None)["llm_calls_per_1k"] == 500.0
    assert latencies(json.dumps({"crm_ms_per_sample": 0.02, "llm_ms_per_sample": 35})) == (
        0.02, 35.0)
    assert latencies({"llm_ms_per_sample": "x"}) == (None, None)
    assert latencies("not json") == (None, None) and latencies(None) == (None, None)
    methods = pd.DataFrame({
        "method": ["corella", "dcnv2"],
        "config": [json.dumps({"threshold": 0.8}), "{}"],
        "cost": [json.dumps({"crm_ms_per_sample": 0.1, "llm_ms_per_sample": 20.0}), None]})
    assert method_settings(methods, "corella") == {"crm_ms": 0.1, "llm_ms": 20.0,
                                                   "threshold": 0.8}
    assert method_settings(methods, "dcnv2") == {"crm_ms": None, "llm_ms": None,
                                                 "threshold": None}
    assert method_settings(methods, "absent")["threshold"] is None
    assert method_settings(pd.DataFrame(), "corella")["crm_ms"] is None


def test_metrics_at_is_fast_at_100k():
    rng = np.random.default_rng(8)
    n = 100_000
    y = (rng.random(n) < 0.4).astype(float)
    data = RouterData(y, np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1), rng.random(n))
    data.metrics_at(0.9)
    times = []
    for t in np.linspace(0.5, 1.0, 7):
        start = time.perf_counter()
        data.metrics_at(float(t))
        times.append(time.perf_counter() - start)
    assert np.median(times) < 0.1, times
