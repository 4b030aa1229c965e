"""Metrics against scikit-learn and brute-force references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from engine.metrics import accuracy, auc, binary_metrics, logloss, segment_metrics, uauc


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    p = np.clip(0.3 * y + rng.random(2000) * 0.7, 0, 1)
    p[:200] = np.round(p[:200], 1)  # ties
    users = rng.integers(0, 50, 2000)
    return y, p, users


def test_auc_logloss_acc_match_sklearn(data):
    y, p, _ = data
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert logloss(y, p) == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)), abs=1e-9)
    assert accuracy(y, p) == pytest.approx(accuracy_score(y, p >= 0.5))


def test_auc_single_class_is_nan():
    assert np.isnan(auc(np.ones(4), np.array([0.1, 0.2, 0.3, 0.4])))


def test_uauc_is_mean_of_per_user_sklearn_auc(data):
    y, p, users = data
    expected = []
    for u in np.unique(users):
        m = users == u
        if len(set(y[m])) == 2:
            expected.append(roc_auc_score(y[m], p[m]))
    assert uauc(y, p, users) == pytest.approx(np.mean(expected), abs=1e-12)


def test_binary_metrics_and_segments(data):
    y, p, users = data
    samples = pd.DataFrame({"label": y, "user": users, "cold_user": users < 10,
                            "long_tail_item": np.arange(len(y)) % 5 == 0})
    table = segment_metrics(samples, p)
    overall = binary_metrics(y, p, users)
    got = table[table["segment"] == "all"].set_index("metric")["value"]
    assert got["auc"] == pytest.approx(overall["auc"])
    cold = table[(table["segment"] == "cold_user") & (table["metric"] == "auc")]
    m = users < 10
    assert cold["value"].iloc[0] == pytest.approx(roc_auc_score(y[m], p[m]))
    assert cold["n"].iloc[0] == m.sum()
    assert set(table["segment"]) == {"all", "cold_user", "warm_user", "long_tail_item",
                                     "head_item"}


def test_metric_caveats_and_runs_without_class_counts():
    import pandas as pd

    from engine.formatting import metric_text
    from engine.metrics import metric_caveat

    assert metric_caveat("auc", float("nan"), 50, 50, "test") == "one class in test"
    assert metric_caveat("uauc", float("nan"), 500, 200) == "no user with both labels"
    assert metric_caveat("auc", 0.7, 42, 3) == "low n: 42 samples, 3 positives"
    assert metric_caveat("auc", 0.7, 1000, 400) == ""
    # runs before 0.3 stored no n_pos: DuckDB hands back NA, which must not raise
    assert metric_caveat("auc", 0.7, 1000, pd.NA) == ""
    assert metric_text("auc", float("nan"), 1000, pd.NA) == "n/a"
    assert metric_text("auc", 0.71234, 1000, 400) == "0.7123"
    assert metric_text("auc", 0.71234, 42, 3) == "0.7123 ⚠"


def test_ece_is_the_weighted_gap_between_prediction_and_click_rate():
    from engine.metrics import ece

    # bin [0.2, 0.3): mean p 0.25, click rate 0.5 (gap 0.25, 4 of 8 samples);
    # bin [0.8, 0.9): mean p 0.85, click rate 0.75 (gap 0.1, 4 of 8 samples)
    p = np.array([0.2, 0.25, 0.25, 0.3 - 1e-9, 0.8, 0.85, 0.85, 0.9 - 1e-9])
    y = np.array([1, 0, 1, 0, 1, 1, 1, 0])
    assert ece(y, p) == pytest.approx(0.5 * 0.25 + 0.5 * 0.1, abs=1e-6)
    assert ece(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0
